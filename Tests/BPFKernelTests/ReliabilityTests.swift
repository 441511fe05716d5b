// Findings of the reliability audit (issue 16), one test each; each failed before its fix.
import XCTest
import CBPFShims
import Synchronization
@testable import BPFKernel

final class ReliabilityTests: KernelTestCase {
    /// A prog array slot holding the program that indirect-calls through it: the run used
    /// to recurse until the stack overflowed. Now the 8th frame faults: ABORTED, counted.
    func testIndirectCallToItselfFaultsAtMaxCallFramesAndAborts() throws {
        let table = try progArray(2, name: "table")
        for shape in [[Step.indirectCall(arrayFD: table, index: .constant(0)), .returnConst(XDP_PASS)],
                      [.count("entered"), .indirectCall(arrayFD: table, index: .constant(0)), .returnConst(XDP_PASS)]] {
            kernel.resetCounters()
            let p = try load(ProgLoadAttr(steps: StepProgram(shape), name: "selfcall"))
            try setSlot(table, 0, p)
            XCTAssertEqual(try run(p), XDP_ABORTED, "the run faults, and every frame returns ABORTED")
            XCTAssertEqual(kernel.counter(faultCallDepthCounter), 1, "one fault per run")
            if shape.count == 3 {
                XCTAssertEqual(kernel.counter("entered"), UInt64(CBPF_MAX_CALL_FRAMES), "frames 1…8 ran")
            }
            XCTAssertEqual(try run(p), XDP_ABORTED, "the next run starts at depth 0 and faults again")
            XCTAssertEqual(kernel.counter(faultCallDepthCounter), 2)
            try bpf.mapDeleteElem(table, key: key(0))
            XCTAssertEqual(try run(p), XDP_PASS, "empty slot: the call is skipped")
            try bpf.objClose(p)
        }
    }

    /// A chain of indirect calls shorter than the bound runs to its end.
    func testIndirectCallsWithinSevenFramesRun() throws {
        var tables: [Int32] = []
        for i in 0..<7 { tables.append(try progArray(1, name: "t\(i)")) }
        let leaf = try load(ProgLoadAttr(steps: StepProgram([.count("leaf"), .returnConst(XDP_DROP)]), name: "leaf"))
        var callee = leaf
        for i in (0..<7).reversed() {
            try setSlot(tables[i], 0, callee)
            callee = try load(ProgLoadAttr(steps: StepProgram([.indirectCall(arrayFD: tables[i], index: .constant(0)), .returnLast]), name: "c\(i)"))
        }
        XCTAssertEqual(try run(callee), XDP_DROP, "main + 7 calls = 8 frames, the verifier's MAX_CALL_FRAMES")
        XCTAssertEqual(kernel.counter("leaf"), 1)
        XCTAssertEqual(kernel.counter(faultCallDepthCounter), 0)
    }

    /// The audit's leak: an fentry program on `a` chained after `a` (a → t through the
    /// chain slot, t → a through dst_prog): closing both left two objects for ever.
    func testChainAddRefusesAProgramOfAnotherTypeSoNoCycleThroughDstProg() throws {
        let a = try loadReturning(XDP_PASS, name: "a", flags: .chainCalls)
        let t = try load(.tracing(.traceFentry, on: a, steps: StepProgram([.returnConst(0)]), name: "t"))
        assertErrno(.EINVAL, "tracing program as a chain target") {
            try bpf.progChainAdd(prev: a, retcode: XDP_PASS, next: t)
        }
        try bpf.objClose(a)
        try bpf.objClose(t)
        settle()
        XCTAssertEqual(kernel.liveObjects, 0)
    }

    /// The cycle check follows dst_prog too (not only chain slots).
    func testChainCycleCheckFollowsDstProg() throws {
        let a = try loadReturning(XDP_PASS, name: "a", flags: .chainCalls)
        let t = try load(.tracing(.traceFentry, on: a, steps: StepProgram([.returnConst(0)]), name: "t"))
        let pa = try bpf.prog(a), pt = try bpf.prog(t)
        defer { pa.put(); pt.put() }
        XCTAssertTrue(pt.chainReachable().contains { $0 === pa }, "t reaches a through its dst_prog")
    }

    /// libxdp's registry is per kernel and keyed by program ID: after a teardown, plain
    /// programs loaded later are never taken for dispatchers.
    func testLibXDPNeverMistakesAPlainProgramForADispatcherAfterTeardown() throws {
        for round in 0..<20 {
            let k = Kernel(KernelConfig(checked: true))
            let b = BPF(kernel: k)
            let dev = NetDevice(kernel: k, name: "veth\(round)")
            let x = LibXDP(bpf: b)
            try x.attach([XDPProgramSpec(name: "p", body: .xdpPass)], to: dev)
            XCTAssertEqual(k.libxdpDispatcherCount, 1)
            if round % 2 == 0 {
                try x.detach(["p"], from: dev)
            } else {
                // The audit's case: a teardown that never told libxdp.
                dev.detachAll()
                k.unpinAll()
            }
            k.quiesce()
            XCTAssertEqual(k.libxdpDispatcherCount, 0, "the dispatcher's entry went with its program")
            for _ in 0..<20 {
                let fd = try b.progLoad(.returning(XDP_DROP, name: "plain"))
                try b.xdpAttach(dev, fd: fd)
                XCTAssertNil(x.programs(on: dev), "a plain program is not a dispatcher")
                XCTAssertThrowsError(try x.attach([XDPProgramSpec(name: "q", body: .xdpPass)], to: dev)) { e in
                    XCTAssertEqual((e as? BPFError)?.errno, .EBUSY)
                }
                XCTAssertEqual(dev.program?.name, "plain", "the user's program is still attached")
                try b.xdpAttach(dev, fd: -1)
                try b.objClose(fd)
            }
            dev.detachAll()
            b.closeAll()
            k.unpinAll()
            k.quiesce()
            XCTAssertEqual(k.liveObjects, 0)
        }
    }

    /// A thread that cannot be created is an errno, not a trap — and call_rcu, which
    /// cannot fail, keeps its callbacks until a barrier runs them.
    func testThreadCreationFailureIsEAGAINAndCallRCUStillFrees() throws {
        kthreadCreateFailures.store(1, ordering: .relaxed)
        XCTAssertThrowsError(try kthreadCreate(name: "x") {}) { e in
            XCTAssertEqual((e as? BPFError)?.errno, .EAGAIN)
        }
        let k = Kernel(KernelConfig(checked: true))
        let b = BPF(kernel: k)
        kthreadCreateFailures.store(1_000_000, ordering: .relaxed)
        defer { kthreadCreateFailures.store(0, ordering: .relaxed) }
        let fd = try b.progLoad(.returning(XDP_PASS, name: "p"))
        try b.objClose(fd)  // the last put: call_rcu with no reclaimer thread
        XCTAssertGreaterThan(k.rcu.reclaimerFailures, 0)
        XCTAssertEqual(k.liveObjects, 1, "deferred: waits for a grace period")
        k.quiesce()  // barrier runs the queue itself
        XCTAssertEqual(k.liveObjects, 0)
    }

    /// Map storage that cannot be allocated is ENOMEM, and nothing changes.
    func testMapStorageAllocationFailureIsENOMEMAndChangesNothing() throws {
        defer { allocRecordFailures.store(0, ordering: .relaxed) }
        for type in [MapType.array, .progArray] {
            allocRecordFailures.store(1, ordering: .relaxed)
            assertErrno(.ENOMEM, "\(type.name) storage") {
                try bpf.mapCreate(MapCreateAttr(type: type, maxEntries: 8, name: "m"))
            }
        }
        XCTAssertNoThrow(try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 8, name: "m")))
    }
}
