// Lock.swift — a pthread mutex and condition variable for the control plane (the kernel's
// mutexes and wait queues). Never taken on a per-packet path.
//
// Mirrors: include/linux/mutex.h and wait.h in spirit; kthread_create (kernel/kthread.c).
import CBPFShims
#if canImport(Glibc)
import Glibc
import Synchronization
#elseif canImport(Musl)
import Musl
#endif

/// A mutex with a condition variable. Reference type so it has a stable address.
public final class KLock: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline let cond: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    @inlinable public func lock() { pthread_mutex_lock(mutex) }
    @inlinable public func unlock() { pthread_mutex_unlock(mutex) }

    @inlinable
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits on the condition; the caller holds the lock.
    public func wait() { pthread_cond_wait(cond, mutex) }

    /// Waits at most `ns` nanoseconds; the caller holds the lock.
    public func wait(ns: UInt64) {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let total = UInt64(ts.tv_nsec) + ns
        ts.tv_sec += Int(total / 1_000_000_000)
        ts.tv_nsec = Int(total % 1_000_000_000)
        pthread_cond_timedwait(cond, mutex, &ts)
    }

    public func broadcast() { pthread_cond_broadcast(cond) }
}

/// Fault injection for thread creation (the kernel's fault-injection framework, in
/// spirit): while positive, each `kthreadCreate` fails with EAGAIN and decrements it.
/// Tests set it to show every caller answers with an errno instead of trapping.
public let kthreadCreateFailures = Atomic<Int>(0)

/// kthread_create: starts a joinable pthread running `body`. Returns the thread handle;
/// throws EAGAIN (as pthread_create and the kernel's copy_process answer) when no thread
/// can be created — e.g. under a process or memory limit.
/// (Foundation's Thread would do, but a pthread lets the caller pin and name it.)
public func kthreadCreate(name: String, _ body: @escaping @Sendable () -> Void) throws -> pthread_t {
    final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        let name: String
        init(_ b: @escaping @Sendable () -> Void, _ n: String) { body = b; name = n }
    }
    if kthreadCreateFailures.load(ordering: .relaxed) > 0 {
        kthreadCreateFailures.subtract(1, ordering: .relaxed)
        throw fail(.EAGAIN, "cannot create thread '\(name)' (fault injected)")
    }
    let box = Unmanaged.passRetained(Box(body, name)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        let b = Unmanaged<AnyObject>.fromOpaque(arg!).takeRetainedValue() as! Box
        _ = b.name.withCString { cbpf_set_thread_name($0) }
        b.body()
        return nil
    }, box)
    if rc != 0 {
        Unmanaged<AnyObject>.fromOpaque(box).release()  // the thread never started
        throw fail(rc == ENOMEM ? .ENOMEM : .EAGAIN, "cannot create thread '\(name)': pthread_create returned \(rc)")
    }
    return tid
}

/// Waits for a thread started by `kthreadCreate`.
public func kthreadJoin(_ t: pthread_t) {
    pthread_join(t, nil)
}
