// cbpf_atomic.h — the kernel's concurrency primitives, for Swift and for the native program
// bodies. Mirrors: include/asm-generic/rwonce.h (READ_ONCE/WRITE_ONCE),
// include/asm-generic/barrier.h (smp_mb/rmb/wmb, smp_load_acquire/smp_store_release),
// arch/x86/include/asm/cmpxchg.h (xchg, cmpxchg), include/linux/atomic/atomic-long.h
// (atomic64_*), include/linux/nospec.h (array_index_nospec), arch/x86/include/asm/msr.h
// (rdtsc).
//
// Every operation names its memory ordering; there is no default. All are static inline
// (always_inline) so they vanish into the Swift or C caller in every build.
#ifndef CBPF_ATOMIC_H
#define CBPF_ATOMIC_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

#define CBPF_INLINE static inline __attribute__((always_inline))

// ---- READ_ONCE / WRITE_ONCE: a single, untorn access the compiler may not merge or
// ---- re-load. Relaxed atomics give exactly that (and tell ThreadSanitizer it is intended).
CBPF_INLINE uint32_t cbpf_read_once_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
CBPF_INLINE uint64_t cbpf_read_once_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
CBPF_INLINE void *cbpf_read_once_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
CBPF_INLINE void cbpf_write_once_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
CBPF_INLINE void cbpf_write_once_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
CBPF_INLINE void cbpf_write_once_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

// ---- smp_load_acquire / smp_store_release. A release store pairs with the acquire load
// ---- that reads its value: everything before the store is visible after the load.
CBPF_INLINE uint32_t cbpf_load_acquire_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
CBPF_INLINE uint64_t cbpf_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
CBPF_INLINE void *cbpf_load_acquire_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
CBPF_INLINE void cbpf_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
CBPF_INLINE void cbpf_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
CBPF_INLINE void cbpf_store_release_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

// ---- rcu_dereference / rcu_assign_pointer. The kernel relies on address dependencies
// ---- (consume); C11 compilers promote consume to acquire, which on x86 is a plain load.
CBPF_INLINE void *cbpf_rcu_dereference(void *const *p) { return __atomic_load_n(p, __ATOMIC_CONSUME); }
CBPF_INLINE void cbpf_rcu_assign_pointer(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

// ---- xchg / cmpxchg: fully ordered, as in the kernel (a `lock`-prefixed op on x86).
CBPF_INLINE void *cbpf_xchg_ptr(void **p, void *v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
CBPF_INLINE uint64_t cbpf_xchg_u64(uint64_t *p, uint64_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
CBPF_INLINE uint32_t cbpf_xchg_u32(uint32_t *p, uint32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
/// Returns the value found; the swap happened iff it equals `old`.
CBPF_INLINE void *cbpf_cmpxchg_ptr(void **p, void *old, void *new_) {
    __atomic_compare_exchange_n(p, &old, new_, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return old;
}
CBPF_INLINE uint64_t cbpf_cmpxchg_u64(uint64_t *p, uint64_t old, uint64_t new_) {
    __atomic_compare_exchange_n(p, &old, new_, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return old;
}
CBPF_INLINE uint32_t cbpf_cmpxchg_u32(uint32_t *p, uint32_t old, uint32_t new_) {
    __atomic_compare_exchange_n(p, &old, new_, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return old;
}

// ---- atomic64: the refcount primitives. Value-returning forms are fully ordered
// ---- (kernel: atomic64_*_return); plain inc/add are relaxed (kernel: atomic64_inc).
CBPF_INLINE void cbpf_atomic64_inc_relaxed(uint64_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_RELAXED); }
CBPF_INLINE void cbpf_atomic64_add_relaxed(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
CBPF_INLINE uint64_t cbpf_atomic64_fetch_add_relaxed(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
CBPF_INLINE uint64_t cbpf_atomic64_fetch_add(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
CBPF_INLINE uint64_t cbpf_atomic64_add_return(uint64_t *p, uint64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
CBPF_INLINE uint64_t cbpf_atomic64_sub_return(uint64_t *p, uint64_t v) { return __atomic_sub_fetch(p, v, __ATOMIC_SEQ_CST); }
CBPF_INLINE bool cbpf_atomic64_dec_and_test(uint64_t *p) { return __atomic_sub_fetch(p, 1, __ATOMIC_SEQ_CST) == 0; }
/// atomic64_fetch_add_unless: add `a` unless the value is `u`; returns the value found.
CBPF_INLINE uint64_t cbpf_atomic64_fetch_add_unless(uint64_t *p, uint64_t a, uint64_t u) {
    uint64_t c = __atomic_load_n(p, __ATOMIC_RELAXED);
    do {
        if (c == u) break;
    } while (!__atomic_compare_exchange_n(p, &c, c + a, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return c;
}
/// atomic64_inc_not_zero: true iff the count was non-zero and has been incremented.
CBPF_INLINE bool cbpf_atomic64_inc_not_zero(uint64_t *p) { return cbpf_atomic64_fetch_add_unless(p, 1, 0) != 0; }
CBPF_INLINE uint32_t cbpf_atomic32_fetch_add_relaxed(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
CBPF_INLINE uint32_t cbpf_atomic32_fetch_sub_relaxed(uint32_t *p, uint32_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
CBPF_INLINE uint32_t cbpf_atomic32_add_return(uint32_t *p, uint32_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
CBPF_INLINE uint32_t cbpf_atomic32_sub_return(uint32_t *p, uint32_t v) { return __atomic_sub_fetch(p, v, __ATOMIC_SEQ_CST); }

// ---- Barriers. smp_mb is a full fence; smp_rmb/smp_wmb order loads/stores only;
// ---- barrier() stops the compiler alone.
CBPF_INLINE void cbpf_smp_mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
CBPF_INLINE void cbpf_smp_rmb(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
CBPF_INLINE void cbpf_smp_wmb(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
CBPF_INLINE void cbpf_barrier(void) { __asm__ __volatile__("" ::: "memory"); }

CBPF_INLINE void cbpf_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    cbpf_barrier();
#endif
}

// ---- Time-stamp counter. rdtsc is not ordered against surrounding loads; rdtscp waits
// ---- for earlier instructions. Time batches, never single packets (~10 / ~18 ns here).
CBPF_INLINE uint64_t cbpf_rdtsc(void) {
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
#else
    return __builtin_readcyclecounter();
#endif
}
CBPF_INLINE uint64_t cbpf_rdtscp(uint32_t *aux) {
#if defined(__x86_64__)
    uint32_t lo, hi, c;
    __asm__ __volatile__("rdtscp" : "=a"(lo), "=d"(hi), "=c"(c) :: "memory");
    if (aux) *aux = c;
    return ((uint64_t)hi << 32) | lo;
#else
    if (aux) *aux = 0;
    return __builtin_readcyclecounter();
#endif
}

// ---- array_index_nospec: clamp `index` to 0 when it is not below `size`, without a
// ---- branch the CPU could speculate past (Spectre v1). The mask is all ones when
// ---- index < size, else zero.
CBPF_INLINE unsigned long cbpf_array_index_mask_nospec(unsigned long index, unsigned long size) {
#if defined(__x86_64__)
    unsigned long mask;
    // cmp sets CF when index < size; sbb turns CF into 0 or ~0.
    __asm__ ("cmp %1,%2; sbb %0,%0;" : "=r"(mask) : "g"(size), "r"(index) : "cc");
    return mask;
#else
    return ~(long)(index | (size - 1UL - index)) >> (sizeof(long) * 8 - 1);
#endif
}
CBPF_INLINE unsigned long cbpf_array_index_nospec(unsigned long index, unsigned long size) {
    return index & cbpf_array_index_mask_nospec(index, size);
}

#endif
