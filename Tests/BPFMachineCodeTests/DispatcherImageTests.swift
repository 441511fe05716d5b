// The bpf_dispatcher image: for every known target a hit jumps to that target's function;
// anything else, and a target whose function changed, goes through the indirect jump —
// plainly or through the retpoline thunk, with the same results.
import XCTest
import CMachineCode
@testable import BPFMachineCode

final class DispatcherImageTests: XCTestCase {
    /// A function returning `v` (mov eax, v; ret), generated.
    private func returning(_ v: UInt32, _ region: CodeRegion) throws -> UInt64 {
        let b = try XCTUnwrap(region.allocate(16))
        var a = X86Assembler(origin: b.address)
        a.mov32(.rax, imm: v)
        a.ret()
        try CodeRegion.install(try a.finish(), in: b)
        return b.address
    }

    private func call(_ image: CodeBlock, key: UInt64, function: UInt64) -> UInt32 {
        typealias Entry = @convention(c) (UnsafeRawPointer?, UInt64, UInt64) -> UInt32
        return unsafeBitCast(image.rx, to: Entry.self)(nil, key, function)
    }

    func testHitsJumpToTheirTargetAndEverythingElseTakesTheIndirectJump() throws {
        let region = try CodeRegion(size: 1 << 20)
        let fallback = try returning(99, region)
        for count in [0, 1, 2, 3, 4, 7, 48] {
            var targets: [DispatcherImage.Target] = []
            for i in 0..<count {
                targets.append(DispatcherImage.Target(key: 0x1000 + UInt64(i) * 0x40, function: try returning(UInt32(i), region)))
            }
            for retpolines in [false, true] {
                let image = try DispatcherImage.build(targets.shuffled(), retpolines: retpolines, region: region)
                for (i, t) in targets.enumerated() {
                    XCTAssertEqual(call(image, key: t.key, function: t.function), UInt32(i), "\(count) targets: a hit on target \(i)")
                    XCTAssertEqual(call(image, key: t.key, function: fallback), 99, "a known key whose function changed goes indirect")
                }
                let misses: [UInt64] = [0, 0x1000 - 1, 0x1000 + 1, 0x1000 + UInt64(count) * 0x40, UInt64.max]
                for miss in misses {
                    XCTAssertEqual(call(image, key: miss, function: fallback), 99, "\(count) targets, retpolines \(retpolines): key \(miss) is a miss")
                }
                region.free(image)
            }
        }
    }

    /// The thunk is shaped like the kernel's __x86_indirect_thunk_<reg>: call, pause,
    /// lfence, jmp back, mov reg to (rsp), ret.
    func testTheRetpolineThunkIsTheKernelsShape() throws {
        let thunk = try Retpoline.thunk(.rdx)
        XCTAssertEqual(try Retpoline.thunk(.rdx), thunk, "one thunk per register")
        let bytes = Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: UInt(thunk)), count: 24))
        XCTAssertEqual(bytes[0], 0xe8, "call 1f")
        XCTAssertEqual(Array(bytes[5..<10]), [0xf3, 0x90, 0x0f, 0xae, 0xe8], "pause; lfence")
        XCTAssertEqual(bytes[10], 0xe9, "jmp 2b")
        XCTAssertEqual(Array(bytes[15..<23]), [0x48, 0x89, 0x94, 0x24, 0, 0, 0, 0], "mov %rdx, 0(%rsp)")
        XCTAssertEqual(bytes[23], 0xc3, "ret")
    }
}
