// ConformanceTests — the external bpf_conformance suite (../shared/bpf_conformance) through
// the lab's assembler, checks and interpreter: every test passes except those the lab
// declares unsupported (below, with the reason), and every negative file is refused (by the
// file reader, the assembler, the checks, a fault, or a result that differs).
import XCTest
import Foundation
import BPFInstructions
import BPFKernel

/// Where the suite is: $BPFLAB_CONFORMANCE_DIR, else ../shared/bpf_conformance beside the
/// project root, else /work/shared/bpf_conformance.
func conformanceDirectory() -> URL? {
    var candidates: [URL] = []
    if let env = ProcessInfo.processInfo.environment["BPFLAB_CONFORMANCE_DIR"] { candidates.append(URL(fileURLWithPath: env)) }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(root.deletingLastPathComponent().appendingPathComponent("shared/bpf_conformance"))
    candidates.append(URL(fileURLWithPath: "/work/shared/bpf_conformance"))
    return candidates.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("tests").path) }
}

/// The outcome of one conformance file.
enum ConformanceOutcome: Equatable {
    case passed
    case refused(String)          // file, assembler, or the lab's checks said no
    case faulted(String)          // the run ended with a fault
    case wrongResult(UInt64, UInt64?)  // got, expected
}

func runConformanceFile(_ text: String) -> ConformanceOutcome {
    let file: ConformanceFile
    let program: [BPFInsn]
    do {
        file = try ConformanceFile(text: text)
        program = try file.program()
    } catch {
        return .refused("\(error)")
    }
    let p: RawProgram
    do { p = try RawProgram(program) } catch { return .refused("\(error)") }
    let (r, _) = p.run(memory: file.memory)
    if let f = r.fault { return .faulted("\(f) at \(r.faultPC)") }
    guard let want = file.result, file.error == nil else { return .wrongResult(r.r0, nil) }
    return r.r0 == want ? .passed : .wrongResult(r.r0, want)
}

final class ConformanceTests: XCTestCase {
    /// Tests whose instructions the lab does not support, and why.
    static let unsupported: [String: String] = {
        var u = ["callx": "callx (BPF_CALL | BPF_X, 0x8d) is not in RFC 9669 and the kernel refuses it (unknown opcode 8d)"]
        // A constant shift by a negative amount or by the operand's width or more: the
        // kernel's check_alu_op refuses it ("invalid shift"), and so does the lab. These
        // are the 12 tests the live kernel fails (241 of 253).
        for op in ["lsh", "rsh", "arsh"] {
            for w in ["32", "64"] {
                for kind in ["high", "neg"] {
                    u["\(op)\(w)-imm-\(kind)"] = "a constant shift out of range is refused by the kernel's verifier (invalid shift)"
                }
            }
        }
        return u
    }()

    func testEveryConformanceFilePassesExceptTheDeclaredUnsupported() throws {
        guard let dir = conformanceDirectory() else {
            print("ConformanceTests: skipped — the bpf_conformance suite is not beside the project (set BPFLAB_CONFORMANCE_DIR)")
            return
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("tests").path)
            .filter { $0.hasSuffix(".data") }.sorted()
        XCTAssertGreaterThan(files.count, 250, "the suite has 313 test files")
        var passed = 0, failures: [String] = [], unsupportedSeen = 0
        for f in files {
            let name = String(f.dropLast(5))
            let text = try String(contentsOf: dir.appendingPathComponent("tests/\(f)"), encoding: .utf8)
            let outcome = runConformanceFile(text)
            if let why = Self.unsupported[name] {
                unsupportedSeen += 1
                XCTAssertNotEqual(outcome, .passed, "\(name) is declared unsupported (\(why)) but passes: take it off the list")
                continue
            }
            if outcome == .passed { passed += 1 } else { failures.append("\(name): \(outcome)") }
        }
        print("ConformanceTests: \(passed) of \(files.count) passed, \(unsupportedSeen) declared unsupported, \(failures.count) failed")
        XCTAssertEqual(failures, [], "conformance failures")
        XCTAssertGreaterThanOrEqual(passed, 241, "the live kernel passes 241 of 253 runnable tests; the lab passes at least as many")
    }

    func testEveryNegativeConformanceFileIsRefused() throws {
        guard let dir = conformanceDirectory() else {
            print("ConformanceTests: skipped — the bpf_conformance suite is not beside the project")
            return
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("negative").path)
            .filter { $0.hasSuffix(".data") }.sorted()
        XCTAssertGreaterThan(files.count, 50)
        var accepted: [String] = []
        for f in files {
            let text = try String(contentsOf: dir.appendingPathComponent("negative/\(f)"), encoding: .utf8)
            let outcome = runConformanceFile(text)
            if outcome == .passed { accepted.append(f) }
            // The "unused-*" files set a reserved field: the load-time checks must be the ones saying no.
            if f.hasPrefix("unused-") {
                guard case let .refused(why) = outcome, why.contains("reserved") || why.contains("unknown opcode") || why.contains("invalid") else {
                    XCTFail("\(f): a reserved field set must be refused at load, got \(outcome)")
                    continue
                }
            }
        }
        print("ConformanceTests: \(files.count - accepted.count) of \(files.count) negative files refused")
        XCTAssertEqual(accepted, [], "negative files that ran to their expected result")
    }
}
