// RCU torture in the style of rcutorture and liburcu's test_urcu: readers, one writer
// replacing a published object and ageing removed ones once per grace period, and fake
// writers calling synchronize. A reader that ever sees an object aged 2 or more (a full
// grace period passed while it held the object), or a poisoned object, proves the grace
// period broken. The negative control breaks it on purpose and must be caught.
import XCTest
import CBPFShims
import Synchronization
@testable import BPFKernel

/// One torture object: [0] magic, [1] pipe count (0 = current, 1 = removed, +1 per grace
/// period since). Freed objects are poisoned and kept until the end of the run, so a late
/// reader reads poison rather than reused memory.
private let liveMagic: UInt64 = 0x746f727475726521
private let pipeLength: UInt64 = 10

struct TortureResult {
    var histogram: [UInt64]     // reads per pipe age 0...10
    var poisonSeen: UInt64
    var gracePeriods: UInt64
    var updates: UInt64
    var broken: Bool { histogram[2...].contains { $0 > 0 } || poisonSeen > 0 }
}

func rcuTorture(seconds: Double, readers: Int = 2, fakeWriters: Int = 1, breakGracePeriod: Bool,
                stopOnFailure: Bool = false) throws -> TortureResult {
    let domain = RCUDomain(checked: true)
    domain.testOnlyBrokenGracePeriod.store(breakGracePeriod, ordering: .releasing)
    let current = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1)
    @Sendable func newObject() -> UnsafeMutableRawPointer {
        let o = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        let w = o.assumingMemoryBound(to: UInt64.self)
        cbpf_write_once_u64(w, liveMagic)
        cbpf_write_once_u64(w + 1, 0)
        return o
    }
    current.initialize(to: newObject())
    let stop = Atomic<Bool>(false)
    let failed = Atomic<Bool>(false)
    let hist = UnsafeMutablePointer<UInt64>.allocate(capacity: Int(pipeLength) + 1)
    hist.initialize(repeating: 0, count: Int(pipeLength) + 1)
    let poison = Atomic<UInt64>(0)
    let updates = Atomic<UInt64>(0)
    let lock = KLock()
    nonisolated(unsafe) let cur = current
    nonisolated(unsafe) let h = hist
    var threads: [pthread_t] = []

    for i in 0..<readers {
        threads.append(try kthreadCreate(name: "torture-r\(i)") {
            let r = domain.registerThread(name: "torture-r\(i)")
            var local = [UInt64](repeating: 0, count: Int(pipeLength) + 1)
            var poisoned: UInt64 = 0
            var n = 0
            while !stop.load(ordering: .relaxed) {
                r.readLock()
                let p = cbpf_rcu_dereference(UnsafeRawPointer(cur).assumingMemoryBound(to: UnsafeMutableRawPointer?.self))!
                let w = p.assumingMemoryBound(to: UInt64.self)
                if cbpf_read_once_u64(w) != liveMagic { poisoned += 1 }
                for _ in 0..<(n % 64) { cbpf_cpu_relax() }  // hold the object a little
                let age = min(cbpf_load_acquire_u64(w + 1), pipeLength)
                if cbpf_read_once_u64(w) != liveMagic { poisoned += 1 }
                local[Int(age)] += 1
                r.readUnlock()
                if (age >= 2 || poisoned > 0) && stopOnFailure { failed.store(true, ordering: .relaxed) }
                n += 1
                if n % 16 == 0 { r.quiescentState() }
            }
            domain.unregisterThread(r)
            lock.withLock { for j in 0...Int(pipeLength) { h[j] += local[j] } }
            poison.add(poisoned, ordering: .relaxed)
        })
    }
    for i in 0..<fakeWriters {
        threads.append(try kthreadCreate(name: "torture-f\(i)") {
            while !stop.load(ordering: .relaxed) {
                domain.synchronize()
                cbpf_usleep(50)
            }
        })
    }
    let writer = try kthreadCreate(name: "torture-w") {
        var removed: [UnsafeMutableRawPointer] = []
        var freed: [UnsafeMutableRawPointer] = []
        while !stop.load(ordering: .relaxed) {
            let old = cbpf_xchg_ptr(cur, newObject())!
            cbpf_store_release_u64(old.assumingMemoryBound(to: UInt64.self) + 1, 1)
            removed.append(old)
            domain.synchronize()
            var keep: [UnsafeMutableRawPointer] = []
            for o in removed {
                let w = o.assumingMemoryBound(to: UInt64.self)
                let age = cbpf_read_once_u64(w + 1) + 1
                cbpf_store_release_u64(w + 1, age)
                if age >= pipeLength {
                    cbpf_write_once_u64(w, CBPF_POISON_MAGIC)  // "free"
                    freed.append(o)
                } else {
                    keep.append(o)
                }
            }
            removed = keep
            updates.add(1, ordering: .relaxed)
        }
        // The run is over and every reader has stopped: release for real.
        for o in removed + freed { o.deallocate() }
    }
    let deadline = cbpf_ktime_get_ns() + UInt64(seconds * 1e9)
    while cbpf_ktime_get_ns() < deadline && !failed.load(ordering: .relaxed) { cbpf_usleep(2000) }
    stop.store(true, ordering: .relaxed)
    for t in threads { kthreadJoin(t) }
    kthreadJoin(writer)
    current.pointee?.deallocate()
    current.deallocate()
    let result = TortureResult(histogram: Array(UnsafeBufferPointer(start: hist, count: Int(pipeLength) + 1)),
                               poisonSeen: poison.load(ordering: .relaxed),
                               gracePeriods: domain.gracePeriods.load(ordering: .relaxed),
                               updates: updates.load(ordering: .relaxed))
    hist.deallocate()
    domain.shutdown()
    return result
}

final class ConcurrencyRCUTortureTests: XCTestCase {
    func testTorturePipeHistogramHasOnlyBuckets0And1() throws {
        let r = try rcuTorture(seconds: 1.5, breakGracePeriod: false)
        XCTAssertGreaterThan(r.histogram[0] + r.histogram[1], 1000, "readers made progress")
        XCTAssertGreaterThan(r.updates, 10, "the writer made progress")
        XCTAssertEqual(Array(r.histogram[2...]), Array(repeating: 0, count: Int(pipeLength) - 1),
                       "a reader saw an object older than one grace period: \(r.histogram)")
        XCTAssertEqual(r.poisonSeen, 0, "a reader reached a freed object")
        print("rcutorture: pipe histogram \(r.histogram), \(r.updates) updates, \(r.gracePeriods) grace periods")
    }

    /// Negative control: with grace periods broken (synchronize returns at once) the same
    /// test must fail — otherwise it could not catch a real bug.
    func testTortureCatchesABrokenGracePeriod() throws {
        let r = try rcuTorture(seconds: 5, breakGracePeriod: true, stopOnFailure: true)
        XCTAssertTrue(r.broken, "a broken grace period went unnoticed: \(r.histogram)")
        print("rcutorture (broken grace period): pipe histogram \(r.histogram), poison reads \(r.poisonSeen)")
    }
}

/// The grace period's futex (liburcu's gp.futex protocol): a writer whose readers are
/// behind arms the futex and sleeps; the reader's next report — or its going offline —
/// must wake it. A lost wake-up would show as a sleep ended by the guard instead.
final class ConcurrencyRCUFutexWakeUpTests: XCTestCase {
    private func writerSleepingOnReader(end: @escaping @Sendable (RCUReader) -> Void) throws -> (timeouts: UInt64, gracePeriods: UInt64) {
        let domain = RCUDomain(checked: false)
        // A guard far longer than any scheduling delay on a loaded machine (or under TSan):
        // a timeout can then only mean the wake-up was lost.
        domain.futexGuardNanos = 5_000_000_000
        defer { domain.shutdown() }
        let registered = Atomic<Bool>(false), release = Atomic<Bool>(false), finished = Atomic<Bool>(false)
        // The reader registers (online, at the current grace period) and then holds off its
        // quiescent state until told.
        let reader = try kthreadCreate(name: "late-reader") {
            let r = domain.registerThread(name: "late")
            registered.store(true, ordering: .releasing)
            while !release.load(ordering: .acquiring) { cbpf_cpu_relax() }
            end(r)
            while !finished.load(ordering: .acquiring) { cbpf_usleep(100) }
            domain.unregisterThread(r)
        }
        while !registered.load(ordering: .acquiring) { cbpf_usleep(100) }
        let writer = try kthreadCreate(name: "writer") {
            domain.synchronize()
            finished.store(true, ordering: .releasing)
        }
        // The writer has polled the late reader and gone to sleep on the futex.
        while !domain.writerArmedFutex { cbpf_usleep(50) }
        XCTAssertFalse(finished.load(ordering: .acquiring), "the grace period ended while a reader was behind")
        release.store(true, ordering: .releasing)
        kthreadJoin(writer)
        kthreadJoin(reader)
        return (domain.futexTimeouts.load(ordering: .relaxed), domain.gracePeriods.load(ordering: .relaxed))
    }

    func testAReportWakesTheWriterSleepingOnTheFutex() throws {
        for _ in 0..<20 {
            let r = try writerSleepingOnReader { $0.quiescentState() }
            XCTAssertEqual(r.gracePeriods, 1)
            XCTAssertEqual(r.timeouts, 0, "the writer slept until its guard: the report's wake-up was lost")
        }
    }

    func testGoingOfflineWakesTheWriterSleepingOnTheFutex() throws {
        for _ in 0..<20 {
            let r = try writerSleepingOnReader { $0.offline() }
            XCTAssertEqual(r.gracePeriods, 1)
            XCTAssertEqual(r.timeouts, 0, "the writer slept until its guard: going offline did not wake it")
        }
    }

    /// The fast path: with no grace period started since the last report, a quiescent
    /// state leaves the reader's counter as it is; once one starts, the next report
    /// publishes the new counter.
    func testAQuiescentStateReportsOnlyWhenAGracePeriodStarted() {
        let domain = RCUDomain(checked: false)
        defer { domain.shutdown() }
        let r = domain.registerThread()
        defer { domain.unregisterThread(r) }
        let before = r.handle.rec.pointee
        XCTAssertEqual(before, domain.gp.pointee)
        r.quiescentState()
        XCTAssertEqual(r.handle.rec.pointee, before)
        // A grace period started (as synchronize does first): the reader is behind until it reports.
        domain.gp.pointee += 1
        XCTAssertEqual(r.handle.rec.pointee, before)
        r.quiescentState()
        XCTAssertEqual(r.handle.rec.pointee, before + 1)
        domain.gp.pointee -= 1  // leave the domain consistent for unregister
        r.quiescentState()
    }
}
