// Refcount, ID and free-after-grace-period rules of programs and maps.
import XCTest
import CBPFShims
import Synchronization
@testable import BPFKernel

final class RefcountTests: KernelTestCase {
    func testLoadGivesOneReferenceHeldByTheFd() throws {
        let fd = try loadReturning(2, name: "p")
        XCTAssertEqual(try bpf.progGetInfo(fd).refcnt, 1)
        let p = try bpf.prog(fd)
        defer { p.put() }
        XCTAssertEqual(p.refcnt, 2)  // the fd's, and ours
    }

    func testEveryGetPutPairBalances() throws {
        let fd = try loadReturning(2, name: "p")
        let p = try bpf.prog(fd)
        let id = p.id
        var fds: [Int32] = []
        for _ in 0..<5 { fds.append(try bpf.progGetFdById(id)) }
        p.add(3)
        XCTAssertEqual(p.refcnt, 1 + 1 + 5 + 3)
        for _ in 0..<3 { p.put() }
        for f in fds { try bpf.objClose(f) }
        XCTAssertEqual(p.refcnt, 2)
        try bpf.objClose(fd)
        XCTAssertEqual(p.refcnt, 1)
        XCTAssertEqual(p.objectState, .live)
        p.put()  // bpf.prog above
        settle()
        XCTAssertEqual(p.objectState, .freed)
        XCTAssertEqual(kernel.liveObjects, 0)
    }

    func testIncNotZeroOnDyingProgramFailsWithENOENT() throws {
        let reader = kernel.rcu.registerThread(name: "holder")  // holds the grace period open
        defer { kernel.rcu.unregisterThread(reader) }
        let fd = try loadReturning(2, name: "dying")
        let p = try bpf.prog(fd)
        try bpf.objClose(fd)
        p.put()  // last reference: dying, waiting for the grace period
        XCTAssertEqual(p.objectState, .dying)
        XCTAssertEqual(p.refcnt, 0)
        XCTAssertThrowsError(try p.incNotZero()) { e in
            XCTAssertEqual((e as? BPFError)?.errno, .ENOENT)
        }
        XCTAssertEqual(p.refcnt, 0, "incNotZero must not resurrect a dying program")
        reader.quiescentState()
        settle()
        XCTAssertEqual(p.objectState, .freed)
    }

    func testRefcountNeverIncrementsFromZero() throws {
        let fd = try loadReturning(2, name: "gone")
        let p = try bpf.prog(fd)
        try bpf.objClose(fd)
        p.put()
        settle()
        XCTAssertEqual(p.objectState, .freed)
        p.inc()  // a bug: the caller holds no reference
        XCTAssertEqual(kernel.violations, [.incrementFromZero(kind: "prog", name: "gone")])
        XCTAssertEqual(p.objectState, .freed, "a freed program stays freed")
        XCTAssertThrowsError(try p.incNotZero())
        p.put()
        XCTAssertEqual(kernel.violations.count, 2)
        XCTAssertEqual(kernel.violations.last, .putOnDeadObject(kind: "prog", name: "gone"))
        // These violations are the test's point; clear them for the teardown check.
        kernel.clearViolationsForTesting()
    }

    func testSubMustNotReachZero() throws {
        let fd = try loadReturning(2, name: "sub")
        let p = try bpf.prog(fd)
        p.add(2)
        p.sub(2)  // the legal use: undo an add on an error path
        XCTAssertEqual(p.refcnt, 2)
        XCTAssertEqual(kernel.violations, [])
        p.put()
        try bpf.objClose(fd)
        settle()
    }

    func testFreeingAProgramPutsTheMapsItUsed() throws {
        let mfd = try bpf.mapCreate(MapCreateAttr(type: .array, valueSize: 8, maxEntries: 4, name: "m"))
        let pfd = try load(ProgLoadAttr(body: .xdpPass, name: "user", mapFDs: [mfd, mfd]))
        let m = try bpf.map(mfd)
        XCTAssertEqual(m.refcnt, 3, "fd + program (deduplicated) + ours")
        XCTAssertEqual(m.usercnt, 1, "a program takes refcnt only")
        m.put()
        try bpf.objClose(mfd)
        XCTAssertEqual(m.objectState, .live, "the program keeps its map alive")
        XCTAssertEqual(m.refcnt, 1)
        try bpf.objClose(pfd)
        settle()
        XCTAssertEqual(m.objectState, .freed)
        XCTAssertEqual(kernel.liveObjects, 0)
    }

    func testMapsOutliveTheirProgramByOneGracePeriod() throws {
        kernel.startEventLog()
        let mfd = try bpf.mapCreate(MapCreateAttr(type: .array, maxEntries: 1, name: "m"))
        let pfd = try load(ProgLoadAttr(body: .xdpPass, name: "p", mapFDs: [mfd]))
        try bpf.objClose(mfd)
        try bpf.objClose(pfd)
        settle()
        let ev = kernel.events.map { "\($0.kind) \($0.stage.rawValue)" }
        let progAfterGP = ev.firstIndex(of: "prog after-gp")!
        let mapPut = ev.firstIndex(of: "map put")!
        let mapFreed = ev.firstIndex(of: "map freed")!
        XCTAssertLessThan(progAfterGP, mapPut, "the program's release drops the map's last reference: \(ev)")
        XCTAssertEqual(ev.last, "map freed", "the map is freed one grace period after the program: \(ev)")
        XCTAssertLessThan(mapPut, mapFreed)
    }
}

final class IDTests: KernelTestCase {
    func testIDsAreNeverZeroAndUniqueAmongLiveObjects() throws {
        var ids = Set<UInt32>()
        for i in 0..<50 {
            let fd = try loadReturning(UInt32(i))
            let id = try bpf.progGetInfo(fd).id
            XCTAssertNotEqual(id, 0)
            XCTAssertTrue(ids.insert(id).inserted, "ID \(id) handed out twice")
        }
    }

    func testIDsAreCyclicNotLowestFree() throws {
        let a = try loadReturning(1)
        let idA = try bpf.progGetInfo(a).id
        try bpf.objClose(a)
        settle()
        let b = try loadReturning(2)
        let idB = try bpf.progGetInfo(b).id
        XCTAssertEqual(idB, idA + 1, "a freed ID is not reused until the range wraps")
    }

    func testIDsWrapAroundToOneAtTheEndOfTheRange() throws {
        kernel = Kernel(KernelConfig(checked: true, idRange: 1...3))
        bpf = BPF(kernel: kernel)
        let f1 = try loadReturning(1), f2 = try loadReturning(2), f3 = try loadReturning(3)
        XCTAssertEqual(try [f1, f2, f3].map { try bpf.progGetInfo($0).id }, [1, 2, 3])
        try bpf.objClose(f1)
        settle()
        let f4 = try loadReturning(4)
        XCTAssertEqual(try bpf.progGetInfo(f4).id, 1, "after the highest ID the search wraps to 1")
        assertErrno(.ENOSPC, "every ID in use") { try loadReturning(5) }
    }

    func testLookupOfADeadIDIsENOENT() throws {
        let fd = try loadReturning(2)
        let id = try bpf.progGetInfo(fd).id
        try bpf.objClose(fd)
        assertErrno(.ENOENT, "unpublished at once") { try bpf.progGetFdById(id) }
        settle()
        assertErrno(.ENOENT, "after free") { try bpf.progGetFdById(id) }
        assertErrno(.ENOENT, "never used") { try bpf.progGetFdById(9999) }
    }

    func testIDIsUnpublishedBeforeTheFree() throws {
        kernel.startEventLog()
        let reader = kernel.rcu.registerThread(name: "holder")
        let fd = try loadReturning(2, name: "p")
        let id = try bpf.progGetInfo(fd).id
        try bpf.objClose(fd)
        XCTAssertThrowsError(try bpf.progGetFdById(id))
        XCTAssertEqual(kernel.liveProgs.load(ordering: .relaxed), 1, "not freed while a reader may hold it")
        reader.quiescentState()
        kernel.rcu.unregisterThread(reader)
        settle()
        let stages = kernel.events.filter { $0.kind == "prog" }.map(\.stage)
        XCTAssertEqual(stages, [.created, .published, .lastPut, .unpublished, .deferred, .afterGracePeriod, .freed])
    }

    func testGetNextIdVisitsEveryLiveProgram() throws {
        var ids: [UInt32] = []
        var fds: [Int32] = []
        for i in 0..<10 {
            let fd = try loadReturning(UInt32(i))
            fds.append(fd)
            ids.append(try bpf.progGetInfo(fd).id)
        }
        try bpf.objClose(fds[3])
        try bpf.objClose(fds[7])
        let want = Set(ids).subtracting([ids[3], ids[7]])
        var seen = Set<UInt32>()
        var cur: UInt32 = 0
        while let next = try? bpf.progGetNextId(cur) {
            seen.insert(next)
            cur = next
        }
        XCTAssertEqual(seen, want)
        assertErrno(.ENOENT, "past the last") { try bpf.progGetNextId(cur) }
    }
}

final class ConcurrencyGracePeriodTests: KernelTestCase {
    /// A reader thread that takes a program inside a read-side section can still run it
    /// until it reports a quiescent state; only then is it freed.
    func testFreeWaitsForAReaderThatHoldsTheProgram() throws {
        let fd = try loadReturning(7, name: "held")
        let p = try bpf.prog(fd)
        let raw = UnsafePointer(p.raw)
        p.put()

        let took = KLock(), step = Atomic<Int>(0), result = Atomic<UInt32>(0), live = Atomic<Bool>(false)
        nonisolated(unsafe) let rawPtr = raw
        let domain = kernel.rcu
        let t = try kthreadCreate(name: "reader") {
            let r = domain.registerThread(name: "reader")
            r.readLock()
            let prog = rawPtr  // "found" the program inside the section
            step.store(1, ordering: .releasing)
            while step.load(ordering: .acquiring) != 2 { cbpf_cpu_relax() }
            var md = cbpf_xdp_md()
            result.store(bpfProgRun(prog, &md), ordering: .relaxed)
            live.store(cbpf_prog_is_live(prog), ordering: .relaxed)
            r.readUnlock()
            r.quiescentState()
            step.store(3, ordering: .releasing)
            domain.unregisterThread(r)
        }
        _ = took
        while step.load(ordering: .acquiring) != 1 { cbpf_cpu_relax() }
        try bpf.objClose(fd)  // the last reference
        // Wait a while: the free must not happen while the reader is in its section.
        for _ in 0..<20 { cbpf_usleep(1000) }
        XCTAssertEqual(p.objectState, .dying)
        XCTAssertEqual(kernel.liveProgs.load(ordering: .relaxed), 1)
        step.store(2, ordering: .releasing)
        kthreadJoin(t)
        XCTAssertEqual(result.load(ordering: .relaxed), 7)
        XCTAssertTrue(live.load(ordering: .relaxed), "the reader saw a live record")
        settle()
        XCTAssertEqual(p.objectState, .freed)
        XCTAssertFalse(cbpf_prog_is_live(raw), "checked mode poisons the freed record")
    }

    func testSynchronizeWaitsForOnlineReadersButNotOfflineOnes() throws {
        let domain = RCUDomain(checked: true)
        let r = domain.registerThread(name: "me")
        r.offline()
        domain.synchronize()  // must not wait for an offline reader
        XCTAssertEqual(domain.gracePeriods.load(ordering: .relaxed), 1)
        r.online()
        // We are an online reader between sections: synchronize takes us offline for the wait.
        domain.synchronize()
        XCTAssertTrue(r.handle.isOnline)
        XCTAssertEqual(domain.violations, [])
        domain.unregisterThread(r)
        domain.shutdown()
    }

    func testSynchronizeInsideAReadSectionIsNamedAsAViolation() {
        let domain = RCUDomain(checked: true)
        let r = domain.registerThread()
        r.readLock()
        domain.synchronize()
        r.readUnlock()
        r.readUnlock()
        r.readLock()
        r.quiescentState()
        r.readUnlock()
        XCTAssertEqual(domain.violations, [.synchronizeInsideReadSection, .unbalancedReadUnlock, .quiescentStateInsideReadSection])
        domain.unregisterThread(r)
        domain.shutdown()
    }

    func testCallRCURunsAfterAGracePeriodAndBarrierWaitsForIt() {
        let domain = RCUDomain(checked: true)
        let ran = Atomic<Int>(0)
        for _ in 0..<100 { domain.callRCU { ran.add(1, ordering: .relaxed) } }
        domain.barrier()
        XCTAssertEqual(ran.load(ordering: .relaxed), 100)
        XCTAssertGreaterThanOrEqual(domain.gracePeriods.load(ordering: .relaxed), 1)
        XCTAssertEqual(domain.callbacksInvoked.load(ordering: .relaxed), 100)
        XCTAssertEqual(domain.pendingCallbacks, 0)
        domain.shutdown()
    }
}
