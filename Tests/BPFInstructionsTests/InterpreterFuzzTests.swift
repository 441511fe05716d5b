// InterpreterFuzzTests — random instruction sequences through the lab's checks and the
// interpreter (10^5 per CI run; BPFLAB_FUZZ_PROGRAMS changes it): no crash, every refusal
// a named errno with a sentence, every run ends (returns or faults with a named fault),
// and no run writes outside its memory (canaries on both sides stay intact).
import XCTest
import Foundation
import BPFInstructions
@testable import BPFKernel

final class InterpreterFuzzTests: XCTestCase {
    var count: Int { Int(ProcessInfo.processInfo.environment["BPFLAB_FUZZ_PROGRAMS"] ?? "") ?? 100_000 }

    func testRandomProgramsAreRefusedByNameOrRunWithoutStraying() throws {
        var r = SplitMix(state: 0xf022)
        var refused: [Errno: Int] = [:], ran = 0, faulted: [String: Int] = [:]
        let memSize = 64
        for n in 0..<count {
            // Every register written first, so the data flow lets more programs through to the run.
            var p: [BPFInsn] = n % 4 == 0 ? [] : (0..<10).map { BPFInsn.mov64(UInt8($0), imm: Int32(r.below(64))) }
            if n % 2 == 0 { p.append(.mov64(3, src: 1)) }  // a pointer into the memory
            p += RandomPrograms.program(&r, n: 2 + r.below(30))
            if n % 97 == 0 {  // and some pure noise
                p = (0..<(1 + r.below(8))).map { _ in BPFInsn(word: r.next()) }
            }
            let prog: RawProgram
            do {
                prog = try RawProgram(p)
            } catch let e as BPFError {
                XCTAssertFalse(e.message.isEmpty)
                refused[e.errno, default: 0] += 1
                continue
            }
            var memory = [UInt8](repeating: 0, count: memSize)
            for i in 0..<memSize { memory[i] = UInt8(truncatingIfNeeded: r.next()) }
            // Canaries: the run gets the middle third of a buffer; the outer thirds must not change.
            var guarded = [UInt8](repeating: 0xc5, count: memSize * 3)
            guarded.replaceSubrange(memSize..<(2 * memSize), with: memory)
            let result: RawProgram.Result = guarded.withUnsafeMutableBufferPointer { b in
                let out = bpfiRawRun(prog, b.baseAddress! + memSize, memSize)
                return out
            }
            XCTAssertTrue(guarded[0..<memSize].allSatisfy { $0 == 0xc5 } && guarded[(2 * memSize)...].allSatisfy { $0 == 0xc5 },
                          "a run wrote outside its memory:\n\(Disassembler.listing(p))")
            ran += 1
            if let f = result.fault { faulted[f, default: 0] += 1 }
        }
        print("InterpreterFuzzTests: \(count) programs: \(ran) ran (\(faulted.map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", "))), refused \(refused.map { "\($0.key.name) \($0.value)" }.sorted().joined(separator: ", "))")
        XCTAssertGreaterThan(ran, count / 20, "enough random programs get through the checks to exercise the interpreter")
    }
}

/// Runs a raw program over caller-owned memory (the fuzzer's canaries sit around it).
func bpfiRawRun(_ p: RawProgram, _ mem: UnsafeMutablePointer<UInt8>, _ len: Int) -> RawProgram.Result {
    p.run(memory: mem, length: len)
}
