// RCU.swift — user-space RCU, QSBR flavour.
//
// Mirrors: liburcu's urcu-qsbr (rcu_register_thread, rcu_quiescent_state,
// rcu_thread_offline/online, rcu_read_lock/unlock, rcu_dereference, rcu_assign_pointer,
// synchronize_rcu, call_rcu, rcu_barrier) and the kernel's kernel/rcu/tree.c contract.
//
// THE DEADLOCK RULE: never call `synchronize` or `barrier` inside a read-side section, nor
// while holding a lock a reader needs before its next quiescent state.
//
// The mechanism, its rules and why: BPFKernel.docc/rcu-and-deferred-free.md (the DocC article "RCU and deferred free").
import CBPFShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A rule the RCU user broke, named.
public enum RCUViolation: Equatable, Sendable, CustomStringConvertible {
    case synchronizeInsideReadSection
    case quiescentStateInsideReadSection
    case unbalancedReadUnlock
    case unregisterInsideReadSection

    public var description: String {
        switch self {
        case .synchronizeInsideReadSection:
            return "synchronize_rcu() called inside a read-side critical section (would deadlock)"
        case .quiescentStateInsideReadSection:
            return "quiescent state reported inside a read-side critical section"
        case .unbalancedReadUnlock:
            return "rcu_read_unlock() without a matching rcu_read_lock()"
        case .unregisterInsideReadSection:
            return "reader unregistered inside a read-side critical section"
        }
    }
}

/// The per-packet view of a registered reader: raw pointers, no ARC. Copy it into the
/// worker's loop.
public struct RCUReaderHandle: @unchecked Sendable {
    /// [0] = the reader's counter (0 = offline), [1] = read-side nesting (checked mode).
    @usableFromInline let rec: UnsafeMutablePointer<UInt64>
    @usableFromInline let gp: UnsafeMutablePointer<UInt64>
    /// The domain's wake-up word: `RCUDomain.futexWaiting` while a grace period sleeps.
    @usableFromInline let futex: UnsafeMutablePointer<UInt32>
    @usableFromInline let checked: Bool
    @usableFromInline let domain: Unmanaged<RCUDomain>

    /// rcu_quiescent_state(): "I hold no RCU-protected pointer now". The fast path, as
    /// liburcu-qsbr's: when no grace period has started since this reader's last report
    /// (its counter already equals the global one) there is nothing to report — one load
    /// and one compare. Otherwise the report, with its barriers, and the wake-up of a
    /// writer sleeping on the futex.
    @inlinable @inline(__always)
    public func quiescentState() {
        if checked && rec[1] != 0 {
            domain.takeUnretainedValue().record(.quiescentStateInsideReadSection)
        }
        let g = cbpf_read_once_u64(gp)
        if _fastPath(rec.pointee == g) { return }
        report(g)
    }

    /// The slow half of a quiescent state: publish `g` as this reader's counter.
    @usableFromInline @inline(never)
    func report(_ g: UInt64) {
        cbpf_smp_mb()  // order this thread's earlier reads before the report
        cbpf_store_release_u64(rec, g)  // pairs with synchronize's load-acquire
        cbpf_smp_mb()  // the report before the futex read (pairs with the writer's smp_mb after arming it)
        wakeWriter()
        cbpf_smp_mb()  // the report before later reads
    }

    /// urcu's wake_up_gp(): a writer armed the futex and may sleep on it — disarm, wake.
    @usableFromInline
    func wakeWriter() {
        if _slowPath(cbpf_read_once_u32(futex) == RCUDomain.futexWaiting) {
            cbpf_write_once_u32(futex, 0)
            _ = cbpf_futex_wake(futex, 1)
        }
    }

    /// The words a C twin of this reader uses (Perf/Twins): its counter, the domain's
    /// grace-period counter and its futex word. The twin must follow the same protocol.
    public var rawWords: (counter: UnsafeMutablePointer<UInt64>, gracePeriod: UnsafeMutablePointer<UInt64>, futex: UnsafeMutablePointer<UInt32>) {
        (rec, gp, futex)
    }

    /// rcu_read_lock(): a no-op in QSBR; checked mode counts nesting.
    @inlinable @inline(__always)
    public func readLock() {
        if checked { rec[1] &+= 1 }
        cbpf_barrier()
    }

    /// rcu_read_unlock(): a no-op in QSBR; checked mode verifies the nesting.
    @inlinable @inline(__always)
    public func readUnlock() {
        cbpf_barrier()
        if checked {
            if rec[1] == 0 {
                domain.takeUnretainedValue().record(.unbalancedReadUnlock)
            } else {
                rec[1] &-= 1
            }
        }
    }

    /// rcu_thread_offline(): the thread holds no pointers and will not report for a while
    /// (it is about to block). Grace periods no longer wait for it.
    public func offline() {
        cbpf_smp_mb()
        cbpf_store_release_u64(rec, 0)
        cbpf_smp_mb()
        wakeWriter()
        cbpf_smp_mb()
    }

    /// rcu_thread_online(): the thread resumes reading.
    public func online() {
        cbpf_store_release_u64(rec, cbpf_load_acquire_u64(gp))
        cbpf_smp_mb()
    }

    /// Whether the reader is online.
    public var isOnline: Bool { cbpf_load_acquire_u64(rec) != 0 }
    /// Current read-side nesting (checked mode only; 0 otherwise).
    public var nesting: UInt64 { rec[1] }
}

/// A registered reader thread. Keep the object alive while registered; use `handle` in
/// loops.
public final class RCUReader: @unchecked Sendable {
    public let handle: RCUReaderHandle
    public let name: String
    public let tid: Int32

    init(domain: RCUDomain, name: String) {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Int(CBPF_CACHELINE), alignment: Int(CBPF_CACHELINE))
        raw.initializeMemory(as: UInt64.self, repeating: 0, count: Int(CBPF_CACHELINE) / 8)
        let rec = raw.assumingMemoryBound(to: UInt64.self)
        handle = RCUReaderHandle(rec: rec, gp: domain.gp, futex: domain.futex, checked: domain.checked,
                                 domain: Unmanaged.passUnretained(domain))
        self.name = name
        self.tid = cbpf_gettid()
    }

    deinit { UnsafeMutableRawPointer(handle.rec).deallocate() }

    @inlinable public func quiescentState() { handle.quiescentState() }
    @inlinable public func readLock() { handle.readLock() }
    @inlinable public func readUnlock() { handle.readUnlock() }
    public func offline() { handle.offline() }
    public func online() { handle.online() }
}

/// One RCU domain: a global grace-period counter, its readers, and a call_rcu queue with
/// a reclaimer thread. The lab's `Kernel` owns one; tests may create their own.
public final class RCUDomain: @unchecked Sendable {
    /// The grace-period counter. Starts at 1; 0 means "offline" in a reader's counter.
    /// Alone on its cache line: every reader reads it on every quiescent state.
    @usableFromInline let gp: UnsafeMutablePointer<UInt64>
    /// The futex a writer sleeps on while readers are behind (urcu's gp.futex): it arms
    /// it with `futexWaiting`; the first reader to report after that disarms it and wakes
    /// the writer. On its own line, apart from `gp`.
    @usableFromInline let futex: UnsafeMutablePointer<UInt32>
    @usableFromInline static let futexWaiting = UInt32.max
    /// Polls of a late reader before the writer arms the futex and sleeps (liburcu's
    /// RCU_QS_ACTIVE_ATTEMPTS).
    static let activeAttempts = 100
    public let checked: Bool

    private let registry = KLock()          // rcu_registry_lock: readers list + grace periods
    private var readers: [RCUReader] = []
    private let queueLock = KLock()         // call_rcu queue
    private var queue: [() -> Void] = []
    private var enqueued: UInt64 = 0
    private var completed: UInt64 = 0
    private var reclaimer: pthread_t?
    private var stopping = false
    /// Set (on the reclaimer thread only) when the domain is shut down from a callback.
    private final class ExitBox: @unchecked Sendable { var exitNow = false }
    private let exitBox = ExitBox()

    private let violationsLock = KLock()
    private var _violations: [RCUViolation] = []

    /// Completed grace periods.
    public let gracePeriods = Atomic<UInt64>(0)
    /// Total nanoseconds spent waiting in grace periods, and the longest wait.
    public let gracePeriodNanos = Atomic<UInt64>(0)
    public let gracePeriodMaxNanos = Atomic<UInt64>(0)
    /// How long a grace period sleeps on the futex before it looks again by itself (a guard:
    /// a reader's report or going offline is what should wake it). Tests lengthen it, so a
    /// lost wake-up shows as a timeout however loaded the machine is.
    var futexGuardNanos: UInt64 = 1_000_000
    /// Futex sleeps of a grace period that ended by the guard rather than a reader's
    /// wake-up (a reader that went 1 ms without a quiescent state, or a lost wake-up).
    public let futexTimeouts = Atomic<UInt64>(0)
    /// Whether a grace period has armed the futex (it is, or is about to be, asleep).
    public var writerArmedFutex: Bool { cbpf_read_once_u32(futex) == RCUDomain.futexWaiting }
    /// Callbacks run by the reclaimer, and the largest batch behind one grace period.
    public let callbacksInvoked = Atomic<UInt64>(0)
    public let largestBatch = Atomic<UInt64>(0)

    /// TEST ONLY: when set, `synchronize` returns without waiting for readers. The torture
    /// test's negative control uses it to prove the test can catch a broken grace period.
    public let testOnlyBrokenGracePeriod = Atomic<Bool>(false)

    public init(checked: Bool) {
        self.checked = checked
        let line = Int(CBPF_CACHELINE)
        gp = UnsafeMutableRawPointer.allocate(byteCount: line, alignment: line).bindMemory(to: UInt64.self, capacity: line / 8)
        gp.initialize(to: 1)
        futex = UnsafeMutableRawPointer.allocate(byteCount: line, alignment: line).bindMemory(to: UInt32.self, capacity: line / 4)
        futex.initialize(to: 0)
    }

    deinit {
        shutdown()
        UnsafeMutableRawPointer(gp).deallocate()
        UnsafeMutableRawPointer(futex).deallocate()
    }

    /// Stops the reclaimer after running everything queued. Idempotent.
    public func shutdown() {
        let t: pthread_t? = queueLock.withLock {
            stopping = true
            queueLock.broadcast()
            let t = reclaimer
            reclaimer = nil
            return t
        }
        if let t {
            if pthread_equal(pthread_self(), t) != 0 {
                // The last reference to our owner went inside a callback on the reclaimer
                // itself: it cannot join itself. Tell it to leave without touching us.
                exitBox.exitNow = true
                pthread_detach(t)
            } else {
                kthreadJoin(t)
            }
        }
    }

    // MARK: readers

    /// rcu_register_thread(): the calling thread becomes an online reader.
    /// Balance with `unregisterThread`.
    public func registerThread(name: String = "reader") -> RCUReader {
        let r = RCUReader(domain: self, name: name)
        registry.withLock {
            readers.append(r)
            r.handle.online()
        }
        cbpf_rcu_tls_set(Unmanaged.passUnretained(r).toOpaque())
        return r
    }

    /// rcu_unregister_thread(): goes offline first (so a waiting writer is not blocked by
    /// us while we wait for the registry lock), then leaves the registry.
    public func unregisterThread(_ r: RCUReader) {
        if checked && r.handle.nesting != 0 { record(.unregisterInsideReadSection) }
        r.handle.offline()
        registry.withLock {
            readers.removeAll { $0 === r }
        }
        if cbpf_rcu_tls_get() == Unmanaged.passUnretained(r).toOpaque() {
            cbpf_rcu_tls_set(nil)
        }
    }

    /// The calling thread's reader in this domain, if it registered one.
    public func currentReader() -> RCUReader? {
        guard let p = cbpf_rcu_tls_get() else { return nil }
        let r = Unmanaged<RCUReader>.fromOpaque(p).takeUnretainedValue()
        return r.handle.domain.toOpaque() == Unmanaged.passUnretained(self).toOpaque() ? r : nil
    }

    /// Registered readers (a snapshot).
    public var readerCount: Int { registry.withLock { readers.count } }

    // MARK: publish / read

    /// rcu_assign_pointer(): publish `value` so that a reader who finds it also sees
    /// everything written before (store-release).
    @inlinable @inline(__always)
    public static func assignPointer(_ slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>,
                                     _ value: UnsafeMutableRawPointer?) {
        cbpf_rcu_assign_pointer(slot, value)
    }

    /// rcu_dereference(): read a published pointer (consume/acquire).
    @inlinable @inline(__always)
    public static func dereference(_ slot: UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> UnsafeMutableRawPointer? {
        cbpf_rcu_dereference(slot)
    }

    // MARK: grace periods

    /// synchronize_rcu(): returns once every reader that was online when it was called has
    /// reported a quiescent state or gone offline. See the deadlock rule above.
    public func synchronize() {
        let me = currentReader()
        var wasOnline = false
        if let me {
            if checked && me.handle.nesting != 0 { record(.synchronizeInsideReadSection) }
            wasOnline = me.handle.isOnline
            if wasOnline { me.handle.offline() }
        }
        defer { if wasOnline { me!.handle.online() } }

        if testOnlyBrokenGracePeriod.load(ordering: .acquiring) {
            gracePeriods.add(1, ordering: .relaxed)
            return
        }
        let start = cbpf_ktime_get_ns()
        registry.withLock {
            cbpf_smp_mb()  // order the caller's unpublish before advancing the counter
            let newgp = cbpf_read_once_u64(gp) + 1
            cbpf_store_release_u64(gp, newgp)
            cbpf_smp_mb()  // pairs with the smp_mb after a reader's report
            waitForReaders(readers, newgp)
            cbpf_smp_mb()  // the caller's frees come after every reader's report
        }
        let took = cbpf_ktime_get_ns() &- start
        gracePeriods.add(1, ordering: .relaxed)
        gracePeriodNanos.add(took, ordering: .relaxed)
        var m = gracePeriodMaxNanos.load(ordering: .relaxed)
        while took > m {
            let (ok, cur) = gracePeriodMaxNanos.compareExchange(expected: m, desired: took, ordering: .relaxed)
            if ok { break }
            m = cur
        }
    }

    /// Waits until every reader in `readers` has reported `newgp` or gone offline, as
    /// liburcu's wait_for_readers: passes over the readers still behind, a short busy poll
    /// first (a reader between two polls reports within a few hundred ns), then sleeps on
    /// the futex — armed before a last look, so that a report racing with the arming is
    /// never missed (the reader's smp_mb between its report and its futex read pairs with
    /// the smp_mb here). The sleep is bounded (1 ms) only as a guard: a reader's report or
    /// its going offline is what ends it.
    private func waitForReaders(_ readers: [RCUReader], _ newgp: UInt64) {
        var behind = readers.map(\.handle.rec)
        func drop() {
            behind.removeAll { rec in
                let c = cbpf_load_acquire_u64(rec)  // pairs with the report's store-release
                return c == 0 || c >= newgp
            }
        }
        var passes = 0
        while true {
            drop()
            if behind.isEmpty { break }
            passes += 1
            if passes < RCUDomain.activeAttempts {
                cbpf_cpu_relax()
                continue
            }
            cbpf_write_once_u32(futex, RCUDomain.futexWaiting)
            cbpf_smp_mb()
            drop()
            if behind.isEmpty { break }
            if cbpf_futex_wait(futex, RCUDomain.futexWaiting, futexGuardNanos) == ETIMEDOUT {
                futexTimeouts.add(1, ordering: .relaxed)
            }
        }
        cbpf_write_once_u32(futex, 0)
    }

    /// call_rcu(): run `callback` on the reclaimer thread after a grace period. Never
    /// blocks; may be called from anywhere, including from inside a callback.
    public func callRCU(_ callback: @escaping () -> Void) {
        queueLock.withLock {
            queue.append(callback)
            enqueued += 1
            if reclaimer == nil && !stopping {
                let me = Unmanaged.passUnretained(self)
                // No thread (EAGAIN/ENOMEM): the callback stays queued; the next callRCU
                // tries again, and barrier() runs the queue itself when there is no
                // reclaimer. Never a trap with the queue lock held.
                reclaimer = try? kthreadCreate(name: "rcu-reclaim") {
                    me.takeUnretainedValue().reclaimerLoop()
                }
                if reclaimer == nil { reclaimerCreateFailures += 1 }
            }
            queueLock.broadcast()
        }
    }

    /// rcu_barrier(): waits until every callback queued before the call has run.
    /// Do not call it from a callback or inside a read-side section.
    public func barrier() {
        let me = currentReader()
        let wasOnline = me?.handle.isOnline ?? false
        if wasOnline { me!.handle.offline() }
        defer { if wasOnline { me!.handle.online() } }
        queueLock.withLock {
            let target = enqueued
            while completed < target {
                if reclaimer == nil || stopping {
                    // No reclaimer (shut down): run what is left here, after a grace period.
                    let batch = queue
                    queue.removeAll()
                    queueLock.unlock()
                    synchronize()
                    for cb in batch { cb() }
                    queueLock.lock()
                    completed += UInt64(batch.count)
                    continue
                }
                queueLock.wait()
            }
        }
    }

    /// Times the reclaimer thread could not be created (its callbacks waited for the next
    /// attempt or a barrier). Read under the queue lock.
    private var reclaimerCreateFailures = 0
    public var reclaimerFailures: Int { queueLock.withLock { reclaimerCreateFailures } }

    /// Callbacks queued and not yet run.
    public var pendingCallbacks: UInt64 { queueLock.withLock { enqueued - completed } }

    private func reclaimerLoop() {
        let box = exitBox
        while true {
            queueLock.lock()
            while queue.isEmpty && !stopping { queueLock.wait() }
            if queue.isEmpty && stopping {
                queueLock.unlock()
                return
            }
            var batch = queue
            queue.removeAll(keepingCapacity: true)
            queueLock.unlock()

            // Keep the domain alive through the batch: a callback may drop the last
            // reference to the kernel that owns it.
            let keep = Unmanaged.passRetained(self)
            synchronize()
            for cb in batch { cb() }
            let n = UInt64(batch.count)
            // Drop the callbacks (and whatever they captured) before announcing completion:
            // a barrier() waiter may then release the last reference to this domain's
            // owner, whose deinit must not run on this thread.
            batch.removeAll()
            callbacksInvoked.add(n, ordering: .relaxed)
            var m = largestBatch.load(ordering: .relaxed)
            while n > m {
                let (ok, cur) = largestBatch.compareExchange(expected: m, desired: n, ordering: .relaxed)
                if ok { break }
                m = cur
            }
            queueLock.withLock {
                completed += n
                queueLock.broadcast()
            }
            keep.release()  // may run our deinit, on this thread
            if box.exitNow { return }
        }
    }

    // MARK: violations

    @usableFromInline
    func record(_ v: RCUViolation) {
        violationsLock.withLock { _violations.append(v) }
    }

    /// Rules broken so far (checked mode).
    public var violations: [RCUViolation] { violationsLock.withLock { _violations } }
}
