// TextMutex.swift — the mutex generated-code bookkeeping takes (the code region's free list,
// the retpoline thunks): a pthread mutex, which ThreadSanitizer sees. Synchronization's
// Mutex is a futex word inside an uninstrumented library, so TSan reported the accesses it
// orders (a block freed by the RCU reclaimer, another allocated by the control plane) as
// races. Never taken on a per-packet path.
// Mirrors: kernel/extable.c's text_mutex in name and role.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

final class TextMutex<State>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var state: State

    init(_ initial: State) {
        state = initial
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<T>(_ body: (inout State) throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }
}
