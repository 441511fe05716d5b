// libxdp's dispatcher, the kernel's bpf_dispatcher, run arrays and indirect calls.
import XCTest
import CBPFShims
import BPFPrograms
@testable import BPFKernel

final class DispatcherTests: KernelTestCase {
    func spec(_ name: String, returns v: UInt32, prio: UInt32 = XDPProgramSpec.defaultRunPrio,
              actions: UInt32 = XDPProgramSpec.defaultChainCallActions) -> XDPProgramSpec {
        XDPProgramSpec(name: name, attr: ProgLoadAttr(steps: StepProgram([.count(name), .returnConst(v)]), name: name),
                       runPrio: prio, chainCallActions: actions)
    }

    func packet(_ dev: NetDevice) -> UInt32 {
        var md = cbpf_xdp_md()
        return dev.runXDP(&md)
    }

    func testLibXDPRunsByRunPrioThenNameAndStopsOnAnActionOutsideTheMask() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let x = LibXDP(bpf: bpf)
        try x.attach([spec("b", returns: XDP_DROP, prio: 20), spec("a", returns: XDP_PASS, prio: 10)], to: dev)
        XCTAssertEqual(x.programs(on: dev)!.map(\.name), ["a", "b"])
        XCTAssertEqual(packet(dev), XDP_DROP)
        XCTAssertEqual(kernel.counter("a"), 1)
        XCTAssertEqual(kernel.counter("b"), 1)
        try x.attach([spec("c", returns: XDP_TX, prio: 5)], to: dev)
        XCTAssertEqual(x.programs(on: dev)!.map(\.name), ["c", "a", "b"])
        XCTAssertEqual(packet(dev), XDP_TX, "TX is not in c's mask: the dispatcher returns it")
        XCTAssertEqual(kernel.counter("a"), 1, "a did not run")
        try x.attach([spec("aa", returns: XDP_PASS, prio: 10)], to: dev)
        XCTAssertEqual(x.programs(on: dev)!.map(\.name), ["c", "a", "aa", "b"], "ties broken by name")
        try x.detach(["c"], from: dev)
        XCTAssertEqual(packet(dev), XDP_DROP)
        try x.detach(["a", "aa", "b"], from: dev)
        XCTAssertNil(dev.program, "the last program out removes the dispatcher")
        settle()
        XCTAssertEqual(bpf.pinnedPaths, [], "every component link was unpinned")
    }

    func testChainCallActionsMaskAndXDPPassAfterTheLastSlot() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let x = LibXDP(bpf: bpf)
        let txOrPass = UInt32(1) << 3 | 1 << 2
        try x.attach([spec("a", returns: XDP_TX, prio: 1, actions: txOrPass), spec("b", returns: XDP_PASS, prio: 2)], to: dev)
        XCTAssertEqual(packet(dev), XDP_PASS, "TX in a's mask goes on; after the last slot, XDP_PASS")
        XCTAssertEqual(kernel.counter("b"), 1)
        try x.detach(["a", "b"], from: dev)
    }

    func testEmptyPlaceholderReturns31AndContinues() throws {
        // A dispatcher with two enabled slots but an extension only in prog1.
        var cfg = bpfp_xdp_dispatcher_config()
        cfg.num_progs_enabled = 2
        withUnsafeMutableBytes(of: &cfg.chain_call_actions) { b in
            for i in 0..<10 { b.storeBytes(of: UInt32(1 << 2 | 1 << 31), toByteOffset: i * 4, as: UInt32.self) }
        }
        var attr = ProgLoadAttr(body: .xdpDispatcher, data: withUnsafeBytes(of: &cfg) { Array($0) }, name: "disp")
        attr.functions = (0..<10).map { ProgFunction(name: "prog\($0)", body: .xdpDispatcherStub) }
        attr.functionTableOffset = MemoryLayout<bpfp_xdp_dispatcher_config>.offset(of: \.slots)!
        let d = try load(attr)
        XCTAssertEqual(try run(d), XDP_PASS, "two empty slots: 31, 31, then XDP_PASS")
        let ext = try load(.extension(of: d, function: "prog1", body: .xdpDrop, name: "e1"))
        let l = try bpf.linkCreate(LinkCreateAttr(progFD: ext, attachType: .unspecified))
        XCTAssertEqual(try run(d), XDP_DROP, "empty prog0 continued into prog1")
        try bpf.objClose(l)
        var one = cfg
        one.num_progs_enabled = 1
        var a1 = attr
        a1.data = withUnsafeBytes(of: &one) { Array($0) }
        let d1 = try load(a1)
        let e0 = try load(.extension(of: d1, function: "prog0", body: .retConst, data: [31, 0, 0, 0], name: "e0"))
        let l0 = try bpf.linkCreate(LinkCreateAttr(progFD: e0, attachType: .unspecified))
        XCTAssertEqual(try run(d1), XDP_PASS, "a program returning 31 continues like an empty slot")
        try bpf.objClose(l0)
    }

    func testEleventhProgramIsE2BIGAndChangesNothing() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let x = LibXDP(bpf: bpf)
        try x.attach((0..<10).map { spec("p\($0)", returns: XDP_PASS) }, to: dev)
        XCTAssertEqual(packet(dev), XDP_PASS)
        XCTAssertEqual((0..<10).map { kernel.counter("p\($0)") }, Array(repeating: 1, count: 10))
        assertErrno(.E2BIG, "an 11th program") { try x.attach([spec("p10", returns: XDP_DROP)], to: dev) }
        try x.detach(["p0"], from: dev)
        assertErrno(.EEXIST, "a name already running") { try x.attach([spec("p1", returns: XDP_DROP)], to: dev) }
        assertErrno(.ENOENT, "detaching a name not running") { try x.detach(["p0"], from: dev) }
        try x.detach((1..<10).map { "p\($0)" }, from: dev)
    }

    func testSwapRetriesWhenAnotherUserChangedTheDevice() throws {
        let dev = NetDevice(kernel: kernel, name: "veth0")
        defer { dev.detachAll() }
        let mine = LibXDP(bpf: bpf), theirs = LibXDP(bpf: bpf)
        try mine.attach([spec("a", returns: XDP_PASS, prio: 1)], to: dev)
        mine.beforeSwap = { attempt in
            if attempt == 0 { try! theirs.attach([self.spec("z", returns: XDP_PASS, prio: 9)], to: dev) }
        }
        try mine.attach([spec("b", returns: XDP_DROP, prio: 5)], to: dev)
        XCTAssertEqual(mine.retries, 1, "the first swap found another dispatcher and was retried")
        XCTAssertEqual(mine.programs(on: dev)!.map(\.name), ["a", "b", "z"], "nobody's program was lost")
        XCTAssertEqual(packet(dev), XDP_DROP)
        // A device that changes before every swap: 10 attempts, then EBUSY.
        var n = 0
        mine.beforeSwap = { _ in
            n += 1
            try! theirs.attach([self.spec("y\(n)", returns: XDP_PASS, prio: 99)], to: dev)
            try! theirs.detach(["y\(n)"], from: dev)
        }
        XCTAssertThrowsError(try mine.attach([spec("c", returns: XDP_TX)], to: dev)) {
            XCTAssertEqual(($0 as? BPFError)?.errno, .EBUSY)
        }
        XCTAssertEqual(n, xdpDispatcherMaxRetries)
        mine.beforeSwap = nil
        try mine.detach(["a", "b", "z"], from: dev)
        settle()
        XCTAssertEqual(bpf.pinnedPaths, [])
    }

    func testBPFDispatcherKnowsAtMost48TargetsAndEveryProgramStillRuns() throws {
        let d = kernel.xdpDispatcher!
        var progs: [BPFProg] = []
        for i in 0..<49 {
            let fd = try loadReturning(i == 48 ? XDP_TX : XDP_DROP)
            progs.append(try bpf.prog(fd))
            try bpf.objClose(fd)
        }
        defer { for p in progs { p.put() } }
        for p in progs.prefix(48) { XCTAssertTrue(d.change(from: nil, to: p)) }
        XCTAssertFalse(d.change(from: nil, to: progs[48]), "the 49th is not a known target")
        XCTAssertEqual(d.knownTargets.count, 48)
        let before = d.updates
        var md = cbpf_xdp_md()
        for p in progs.prefix(48) { XCTAssertEqual(bpfProgRunDispatched(d.raw, p.raw, &md), XDP_DROP) }
        XCTAssertEqual(bpfProgRunDispatched(d.raw, progs[48].raw, &md), XDP_TX, "a miss falls back to the indirect call")
        let gp0 = kernel.rcu.gracePeriods.load(ordering: .relaxed)
        XCTAssertTrue(d.change(from: progs[0], to: progs[48]), "replacing one makes room")
        XCTAssertFalse(d.isKnown(progs[0]))
        XCTAssertEqual(d.updates, before + 1, "one switch of halves")
        XCTAssertGreaterThan(kernel.rcu.gracePeriods.load(ordering: .relaxed), gp0, "the switch waited a grace period before the old half can be reused")
        d.reset()
        XCTAssertEqual(d.knownTargets.count, 0)
    }

    func testRunArrayRunsEveryProgramWithItsCookie() throws {
        let ra = RunArray(kernel: kernel)
        defer { ra.detachAll() }
        let a = try load(ProgLoadAttr(steps: StepProgram([.count("ra"), .storeCookie(0), .returnConst(XDP_PASS)]), name: "a"))
        let b = try load(ProgLoadAttr(steps: StepProgram([.count("rb"), .storeCookie(0), .returnConst(XDP_DROP)]), name: "b"))
        let c = try load(ProgLoadAttr(steps: StepProgram([.count("rc"), .returnConst(XDP_TX)]), name: "c"))
        let pa = try bpf.prog(a), pb = try bpf.prog(b), pc = try bpf.prog(c)
        defer { pa.put(); pb.put(); pc.put() }
        try ra.attach(pa, cookie: 11)
        try ra.attach(pb, cookie: 22)
        try ra.attach(pc)
        XCTAssertThrowsError(try ra.attach(pa)) { XCTAssertEqual(($0 as? BPFError)?.errno, .EEXIST) }
        var md = cbpf_xdp_md()
        XCTAssertEqual(bpfProgRunArray(ra.slot, &md), XDP_DROP, "the first verdict that is not PASS")
        XCTAssertEqual([kernel.counter("ra"), kernel.counter("rb"), kernel.counter("rc")], [1, 1, 1], "every program ran")
        XCTAssertEqual(try pa.getVar(0), 11)
        XCTAssertEqual(try pb.getVar(0), 22)
        try ra.detach(pb)
        XCTAssertEqual(bpfProgRunArray(ra.slot, &md), XDP_TX)
        XCTAssertThrowsError(try ra.detach(pb)) { XCTAssertEqual(($0 as? BPFError)?.errno, .ENOENT) }
    }

    func testIndirectCallTableSkipsEmptySlotsAndReturns() throws {
        let dbg = try progArray(2, name: "dbg")
        let p = try load(ProgLoadAttr(steps: StepProgram([.indirectCall(arrayFD: dbg, index: .constant(0)),
                                                         .indirectCall(arrayFD: dbg, index: .constant(5)),
                                                         .count("after"), .returnConst(XDP_DROP)]), name: "main"))
        XCTAssertEqual(try run(p), XDP_DROP, "empty slot: nothing is called")
        XCTAssertEqual(kernel.counter("after"), 1)
        let probe = try load(ProgLoadAttr(steps: StepProgram([.count("debugpoint"), .returnConst(XDP_TX)]), name: "probe"))
        try setSlot(dbg, 0, probe)
        XCTAssertEqual(try run(p), XDP_DROP, "the call comes back: the caller's verdict stands")
        XCTAssertEqual(kernel.counter("debugpoint"), 1)
        XCTAssertEqual(kernel.counter("after"), 2)
        try bpf.mapDeleteElem(dbg, key: key(0))
    }
}
