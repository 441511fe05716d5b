// cbpf_sys.h — the few glibc calls that need _GNU_SOURCE, which Swift cannot see directly:
// CPU affinity, sched_getcpu, gettid, thread names; plus the clocks the kernel uses.
#ifndef CBPF_SYS_H
#define CBPF_SYS_H
#include <stdint.h>

/// Pins the calling thread to `cpu` (pthread_setaffinity_np). Returns 0 or an errno.
int cbpf_set_affinity(int cpu);
/// sched_getcpu(), or -1.
int cbpf_sched_getcpu(void);
/// gettid().
int cbpf_gettid(void);
/// pthread_setname_np on the calling thread (truncated to 15 bytes). Returns 0 or an errno.
int cbpf_set_thread_name(const char *name);
/// Number of online CPUs (sysconf(_SC_NPROCESSORS_ONLN)).
int cbpf_nr_cpus_online(void);
/// Sets the calling thread's per-CPU slot (taken modulo CBPF_NR_CPUS); -1 to reset.
void cbpf_set_this_cpu(int cpu);
/// CLOCK_MONOTONIC in ns (the kernel's sched_clock / ktime_get_ns).
uint64_t cbpf_ktime_get_ns(void);
/// CLOCK_BOOTTIME in ns (ktime_get_boottime_ns: bpf_prog_aux->load_time).
uint64_t cbpf_ktime_get_boottime_ns(void);
/// Spins for roughly `ns` nanoseconds without sleeping (test and harness helper).
void cbpf_spin_ns(uint64_t ns);

/// The calling thread's RCU reader record (liburcu keeps it in a __thread variable).
void *cbpf_rcu_tls_get(void);
void cbpf_rcu_tls_set(void *reader);
/// sched_yield() / usleep(): the back-off of a grace-period wait.
void cbpf_sched_yield(void);
void cbpf_usleep(unsigned int us);
/// FUTEX_WAIT_PRIVATE on `addr` while it holds `expected`, for at most `timeout_ns`
/// (0 = no limit): a grace period's writer sleeps here until a reader wakes it.
/// Returns 0, or an errno (EAGAIN: the word had already changed; ETIMEDOUT; EINTR).
int cbpf_futex_wait(uint32_t *addr, uint32_t expected, uint64_t timeout_ns);
/// FUTEX_WAKE_PRIVATE: wakes up to `n` waiters on `addr`. Returns how many woke.
int cbpf_futex_wake(uint32_t *addr, int n);

#endif
