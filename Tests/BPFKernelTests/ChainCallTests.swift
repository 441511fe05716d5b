// The RFC's chain calls (seed 001 patches 1, 2 and 5) and the review's fixes.
import XCTest
import CBPFShims
@testable import BPFKernel

final class ChainCallTests: KernelTestCase {
    /// Seed 001 patch 5, as behaviour: pass program alone → PASS; wildcard → drop → DROP;
    /// after DEL → PASS; XDP_PASS slot → drop → DROP; after detach → no program (PASS).
    func testRFCSelftestScenario() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let pass = try load(ProgLoadAttr(body: .xdpPass, name: "xdp_pass", flags: .chainCalls))
        let drop = try load(ProgLoadAttr(body: .xdpDrop, name: "xdp_drop", flags: .chainCalls))
        try bpf.xdpAttach(dev, fd: pass)
        func verdict() -> UInt32 {
            var md = cbpf_xdp_md()
            return dev.runXDP(&md)
        }
        XCTAssertEqual(verdict(), XDP_PASS)
        try bpf.progChainAdd(prev: pass, retcode: chainWildcard, next: drop)
        XCTAssertEqual(verdict(), XDP_DROP)
        XCTAssertEqual(try bpf.progChainGet(prev: pass, retcode: chainWildcard), try id(drop))
        try bpf.progChainDel(prev: pass, retcode: chainWildcard)
        XCTAssertEqual(verdict(), XDP_PASS)
        try bpf.progChainAdd(prev: pass, retcode: XDP_PASS, next: drop)
        XCTAssertEqual(verdict(), XDP_DROP)
        try bpf.xdpAttach(dev, fd: -1)
        XCTAssertNil(dev.program)
        XCTAssertEqual(verdict(), XDP_PASS, "no program attached: the driver passes")
    }

    /// Every return code 0…8, the wildcard and out-of-range codes, against every state of
    /// its own slot (filled / empty) and of the wildcard slot (filled / empty).
    func testSlotSelectionForEveryRetcodeAndWildcardFallback() throws {
        let codes: [UInt32] = Array(0...8) + [42, 0xffff_fffe, chainWildcard]
        for code in codes {
            for ownFilled in [false, true] {
                for wildcardFilled in [false, true] {
                    let prev = try loadReturning(code, flags: .chainCalls)
                    var fds = [prev]
                    let slot = chainSlotIndex(retcode: code)
                    if ownFilled && slot < 8 && slot != 0 {
                        let n = try loadReturning(1000 + slot)
                        try bpf.progChainAdd(prev: prev, retcode: code, next: n)
                        fds.append(n)
                    }
                    if wildcardFilled {
                        let w = try loadReturning(2000)
                        try bpf.progChainAdd(prev: prev, retcode: chainWildcard, next: w)
                        fds.append(w)
                    }
                    let expected: UInt32
                    if ownFilled && slot < 8 && slot != 0 { expected = 1000 + slot }
                    else if wildcardFilled { expected = 2000 }
                    else { expected = code }
                    XCTAssertEqual(try run(prev), expected, "retcode \(code), own slot filled: \(ownFilled), wildcard: \(wildcardFilled)")
                    for fd in fds { try bpf.objClose(fd) }
                }
            }
        }
    }

    func testChainLoopStopsAfter32Programs() throws {
        var fds: [Int32] = []
        for _ in 0..<40 {
            fds.append(try load(ProgLoadAttr(steps: StepProgram([.count("runs"), .returnConst(XDP_PASS)]), flags: .chainCalls)))
        }
        for i in 0..<39 { try bpf.progChainAdd(prev: fds[i], retcode: chainWildcard, next: fds[i + 1]) }
        XCTAssertEqual(try run(fds[0]), XDP_PASS)
        XCTAssertEqual(kernel.counter("runs"), 32, "BPF_MAX_CHAIN_CALLS")
        kernel.resetCounters()
        XCTAssertEqual(try run(fds[20]), XDP_PASS)
        XCTAssertEqual(kernel.counter("runs"), 20, "a shorter chain runs to its end")
    }

    func testChainCommandErrnosInTheRFCsOrder() throws {
        let prev = try load(ProgLoadAttr(body: .xdpPass, name: "prev", flags: .chainCalls))
        let plain = try load(ProgLoadAttr(body: .xdpPass, name: "plain"))
        let next = try load(ProgLoadAttr(body: .xdpDrop, name: "next"))
        let map = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1))
        assertErrno(.EINVAL, "trailing attribute bytes") {
            var a = ChainAttr(prev: prev, next: next, retcode: 1)
            a.trailing = [0, 0, 1]
            try bpf.progChain(.add, &a)
        }
        assertErrno(.E2BIG, "retcode 7 is slot 8") { try bpf.progChainAdd(prev: prev, retcode: 7, next: next) }
        assertErrno(.E2BIG, "E2BIG comes before the fd lookup") { try bpf.progChainAdd(prev: 999, retcode: 7, next: 998) }
        assertErrno(.E2BIG, "retcode ~1 is slot ~0") { try bpf.progChainGet(prev: prev, retcode: 0xffff_fffe) }
        assertErrno(.EBADF, "closed prev fd") { try bpf.progChainAdd(prev: 999, retcode: 1, next: next) }
        assertErrno(.EINVAL, "map fd as prev") { try bpf.progChainAdd(prev: map, retcode: 1, next: next) }
        assertErrno(.EOPNOTSUPP, "prev without BPF_F_CHAIN_CALLS") { try bpf.progChainAdd(prev: plain, retcode: 1, next: next) }
        assertErrno(.EOPNOTSUPP, "DEL on a program without the flag") { try bpf.progChainDel(prev: plain, retcode: 1) }
        assertErrno(.EBADF, "closed next fd") { try bpf.progChainAdd(prev: prev, retcode: 1, next: 998) }
        assertErrno(.EINVAL, "map fd as next") { try bpf.progChainAdd(prev: prev, retcode: 1, next: map) }
        assertErrno(.ENOENT, "DEL of an empty slot") { try bpf.progChainDel(prev: prev, retcode: 1) }
        assertErrno(.ENOENT, "GET of an empty slot") { try bpf.progChainGet(prev: prev, retcode: chainWildcard) }
    }

    func testAddOverAFilledSlotPutsTheOldProgram() throws {
        let prev = try loadReturning(XDP_PASS, name: "prev", flags: .chainCalls)
        let a = try loadReturning(XDP_DROP, name: "a"), b = try loadReturning(XDP_TX, name: "b")
        try bpf.progChainAdd(prev: prev, retcode: XDP_PASS, next: a)
        XCTAssertEqual(try refs(a), 2)
        try bpf.progChainAdd(prev: prev, retcode: XDP_PASS, next: b)
        XCTAssertEqual(try refs(a), 1, "the exchanged-out program was put")
        XCTAssertEqual(try refs(b), 2)
        XCTAssertEqual(try run(prev), XDP_TX)
        try bpf.progChainDel(prev: prev, retcode: XDP_PASS)
        XCTAssertEqual(try refs(b), 1)
    }

    func testAChainedProgramOutlivesItsFdAndIsFreedWithItsPrev() throws {
        let prev = try loadReturning(XDP_PASS, name: "prev", flags: .chainCalls)
        let next = try loadReturning(XDP_DROP, name: "next")
        try bpf.progChainAdd(prev: prev, retcode: chainWildcard, next: next)
        let nextID = try id(next)
        try bpf.objClose(next)
        XCTAssertEqual(try run(prev), XDP_DROP, "the slot keeps the program alive")
        try bpf.objClose(prev)
        settle()
        XCTAssertThrowsError(try bpf.progGetFdById(nextID))
        XCTAssertEqual(kernel.liveObjects, 0, "freeing prev put its chain slots")
    }

    func testCycleClosingAddIsRefusedWithELOOPAndChangesNothing() throws {
        let n = 5
        var fds: [Int32] = []
        for i in 0..<n { fds.append(try loadReturning(XDP_PASS, name: "p\(i)", flags: .chainCalls)) }
        assertErrno(.ELOOP, "self loop") { try bpf.progChainAdd(prev: fds[0], retcode: chainWildcard, next: fds[0]) }
        try bpf.progChainAdd(prev: fds[0], retcode: XDP_PASS, next: fds[1])
        assertErrno(.ELOOP, "two-program cycle") { try bpf.progChainAdd(prev: fds[1], retcode: chainWildcard, next: fds[0]) }
        try bpf.progChainAdd(prev: fds[1], retcode: XDP_DROP, next: fds[2])
        try bpf.progChainAdd(prev: fds[2], retcode: chainWildcard, next: fds[3])
        try bpf.progChainAdd(prev: fds[3], retcode: XDP_TX, next: fds[4])
        for from in 1..<n {
            assertErrno(.ELOOP, "cycle back through \(from)") { try bpf.progChainAdd(prev: fds[from], retcode: 5, next: fds[0]) }
        }
        assertErrno(.ELOOP, "cycle in the middle") { try bpf.progChainAdd(prev: fds[4], retcode: 0, next: fds[2]) }
        // Not a cycle: a diamond (two paths to the same program) is fine.
        try bpf.progChainAdd(prev: fds[0], retcode: XDP_TX, next: fds[4])
        try bpf.progChainAdd(prev: fds[0], retcode: XDP_TX, next: fds[4])  // replace with itself
        // Tearing down the accepted graph in any order leaves nothing behind (tearDown checks).
        for fd in fds.reversed() { try bpf.objClose(fd) }
    }

    func testEveryProgramInAChainKeepsItsOwnStats() throws {
        let a = try loadReturning(XDP_PASS, name: "a", flags: .chainCalls)
        let b = try loadReturning(XDP_DROP, name: "b", flags: .chainCalls)
        try bpf.progChainAdd(prev: a, retcode: XDP_PASS, next: b)
        let s = try bpf.enableStats()
        _ = try bpf.progTestRun(TestRunAttr(progFD: a, data: testPacket, repeat: 25))
        try bpf.objClose(s)
        XCTAssertEqual(try bpf.progGetInfo(a).runCount, 25)
        XCTAssertEqual(try bpf.progGetInfo(b).runCount, 25, "the chained program counts its own runs")
    }

    func testFlagSetButNoSlotsBehavesLikeThePlainProgram() throws {
        for v: UInt32 in [0, 1, 2, 3, 4, 99] {
            XCTAssertEqual(try run(try loadReturning(v, flags: .chainCalls)), v)
        }
    }
}
