// Live patching under fire: two threads run a generated function millions of times while a
// third patches its site back and forth (text_poke_bp: int3, sync, tail, sync, first byte,
// sync). Every run must take one of the two valid paths — never a torn instruction, a
// crash or a stray SIGTRAP — and the int3 handler must actually have been exercised.
import XCTest
import CMachineCode
import Synchronization
@testable import BPFMachineCode

final class TextPokeTests: XCTestCase {
    /// `site: nop5; mov eax, 1; ret; alt: mov eax, 2; ret` — the site's jmp goes to alt.
    private func twoPathFunction(_ region: CodeRegion) throws -> (CodeBlock, site: UnsafeMutableRawPointer, jmp: [UInt8]) {
        let b = try XCTUnwrap(region.allocate(64))
        var a = X86Assembler(origin: b.address)
        a.nop5()
        a.mov32(.rax, imm: 1); a.ret()
        let alt = a.address
        a.mov32(.rax, imm: 2); a.ret()
        try CodeRegion.install(try a.finish(), in: b)
        return (b, b.rx, try X86Assembler.jmpRel32(from: b.address, to: alt))
    }

    func testAPatchedSiteAlwaysRunsOneWholeInstructionWhileThreadsRunIt() throws {
        let region = try CodeRegion(size: 1 << 20)
        let (block, site, jmp) = try twoPathFunction(region)
        let fn = UnsafeRawPointer(block.rx)
        XCTAssertEqual(cmc_call2(fn, nil, nil), 1, "the NOP falls through")
        try TextPoke.poke(site, in: block, jmp)
        XCTAssertEqual(cmc_call2(fn, nil, nil), 2, "the jmp takes the other path")
        try TextPoke.poke(site, in: block, X86Assembler.nop5)
        XCTAssertEqual(cmc_call2(fn, nil, nil), 1)

        let before = TextPoke.stats
        let stop = Atomic<Bool>(false), bad = Atomic<Int>(0), runs = Atomic<Int>(0)
        let ones = Atomic<Int>(0), twos = Atomic<Int>(0)
        nonisolated(unsafe) let f = fn
        let runners = (0..<2).map { i in
            Thread {
                var local = (0, 0, 0)
                while !stop.load(ordering: .relaxed) {
                    for _ in 0..<1000 {
                        switch cmc_call2(f, nil, nil) {
                        case 1: local.0 += 1
                        case 2: local.1 += 1
                        default: local.2 += 1
                        }
                    }
                }
                ones.add(local.0, ordering: .relaxed); twos.add(local.1, ordering: .relaxed)
                bad.add(local.2, ordering: .relaxed); runs.add(local.0 + local.1 + local.2, ordering: .relaxed)
                _ = i
            }
        }
        runners.forEach { $0.start() }
        var pokes = 0
        let end = Date().addingTimeInterval(1.5)
        while Date() < end {
            try TextPoke.poke(site, in: block, pokes % 2 == 0 ? jmp : X86Assembler.nop5)
            pokes += 1
        }
        stop.store(true, ordering: .relaxed)
        while runs.load(ordering: .relaxed) == 0 || runners.contains(where: { !$0.isFinished }) { usleep(1000) }
        let after = TextPoke.stats
        print("text_poke_bp: \(pokes) pokes, \(runs.load(ordering: .relaxed)) runs (\(ones.load(ordering: .relaxed)) NOP, \(twos.load(ordering: .relaxed)) jmp), int3 emulated \(after.emulated - before.emulated), restarted \(after.restarted - before.restarted)")
        XCTAssertEqual(bad.load(ordering: .relaxed), 0, "a run returned neither path's value")
        XCTAssertGreaterThan(runs.load(ordering: .relaxed), 1_000_000)
        XCTAssertGreaterThan(ones.load(ordering: .relaxed), 0)
        XCTAssertGreaterThan(twos.load(ordering: .relaxed), 0)
        XCTAssertGreaterThan(pokes, 100)
        XCTAssertGreaterThan(after.emulated + after.restarted, before.emulated + before.restarted,
                             "no thread ever met the int3: the test did not exercise the handler")
        region.free(block)
    }

    /// A call poked into a site: the int3 handler must emulate the call (push the return
    /// address, go to the target) for a thread that meets the int3.
    func testAPokedCallIsEmulatedForAThreadThatHitsTheInt3() throws {
        let region = try CodeRegion(size: 1 << 20)
        let b = try XCTUnwrap(region.allocate(128))
        // f(counter): site (nop5 | call bump); mov eax, 1; ret.  bump: add qword [rdi], 1; ret.
        var a = X86Assembler(origin: b.address)
        a.nop5()
        a.mov32(.rax, imm: 1); a.ret()
        let bump = a.address
        a.addMem64(.rdi, 0, imm8: 1); a.ret()
        try CodeRegion.install(try a.finish(), in: b)
        var call = [UInt8](repeating: 0, count: 5)
        call[0] = 0xe8
        withUnsafeBytes(of: Int32(Int64(bump) - Int64(b.address + 5)).littleEndian) { for i in 0..<4 { call[1 + i] = $0[i] } }

        let counter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        counter.initialize(to: 0)
        defer { counter.deallocate() }
        nonisolated(unsafe) let f = UnsafeRawPointer(b.rx), c = counter
        let stop = Atomic<Bool>(false), runs = Atomic<Int>(0), bad = Atomic<Int>(0)
        let t = Thread {
            var n = 0, wrong = 0
            while !stop.load(ordering: .relaxed) {
                if cmc_call2(f, c, nil) != 1 { wrong += 1 }
                n += 1
            }
            runs.store(n, ordering: .relaxed); bad.store(wrong, ordering: .relaxed)
        }
        t.start()
        var pokes = 0
        let end = Date().addingTimeInterval(1.0)
        while Date() < end {
            try TextPoke.poke(b.rx, in: b, pokes % 2 == 0 ? call : X86Assembler.nop5)
            pokes += 1
        }
        stop.store(true, ordering: .relaxed)
        while !t.isFinished { usleep(1000) }
        XCTAssertEqual(bad.load(ordering: .relaxed), 0)
        XCTAssertGreaterThan(counter.pointee, 0, "the call ran")
        XCTAssertLessThan(counter.pointee, UInt64(runs.load(ordering: .relaxed)), "and not on every run")
        region.free(b)
    }

    func testAnInstructionTheHandlerCannotEmulateIsRefusedAndLeavesTheSite() throws {
        let region = try CodeRegion(size: 1 << 20)
        let (block, site, _) = try twoPathFunction(region)
        XCTAssertThrowsError(try TextPoke.poke(site, in: block, [0x48, 0x89, 0xc3])) { e in
            XCTAssertEqual((e as? MachineCodeError)?.errno, EINVAL)
        }
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: block.rx, count: 5)), X86Assembler.nop5)
        XCTAssertEqual(cmc_call2(UnsafeRawPointer(block.rx), nil, nil), 1)
    }

    /// The region hands out aligned int3-filled blocks near the lab's code and takes them back.
    func testTheRegionIsNearTheLabsCodeAndReusesFreedBlocks() throws {
        let region = try CodeRegion(size: 1 << 20)
        let near = UInt64(UInt(bitPattern: unsafeBitCast(cmc_call2 as @convention(c) (UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer?) -> UInt32, to: UnsafeRawPointer.self)))
        let b = try XCTUnwrap(region.allocate(100))
        XCTAssertEqual(b.size, 128)
        XCTAssertEqual(b.address % 64, 0)
        XCTAssertLessThan(b.address > near ? b.address - near : near - b.address, UInt64(1) << 31, "within rel32 reach")
        XCTAssertTrue(UnsafeRawBufferPointer(start: b.rx, count: b.size).allSatisfy { $0 == 0xcc })
        let all = region.freeBytes
        region.free(b)
        XCTAssertEqual(region.freeBytes, all + 128)
        XCTAssertEqual(region.allocate(128)?.rx, b.rx, "the freed block is handed out again")
        XCTAssertNil(region.allocate(2 << 20), "larger than the region")
    }
}
