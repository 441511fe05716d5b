// shim.c — out-of-line parts of CBPFShims: the stats key, the per-thread CPU slot and the
// _GNU_SOURCE-only calls.
#include "CBPFShims.h"
#include <pthread.h>
#include <sched.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>

cbpf_static_site cbpf_stats_site_prog_run = {0};
cbpf_static_site cbpf_stats_site_tracing = {0};
cbpf_static_site *cbpf_stats_site_prog_run_ptr(void) { return &cbpf_stats_site_prog_run; }
cbpf_static_site *cbpf_stats_site_tracing_ptr(void) { return &cbpf_stats_site_tracing; }
uint64_t cbpf_text_generation = 0;
__thread int cbpf_this_cpu_slot __attribute__((tls_model("initial-exec"))) = -1;

int cbpf_this_cpu_slow(void) {
    int c = sched_getcpu();
    if (c < 0) c = 0;
    c %= CBPF_NR_CPUS;
    cbpf_this_cpu_slot = c;
    return c;
}

void cbpf_set_this_cpu(int cpu) {
    cbpf_this_cpu_slot = cpu < 0 ? -1 : cpu % CBPF_NR_CPUS;
}

int cbpf_set_affinity(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu < 0 || cpu >= CPU_SETSIZE) return EINVAL;
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int cbpf_sched_getcpu(void) { return sched_getcpu(); }
int cbpf_gettid(void) { return (int)syscall(SYS_gettid); }

int cbpf_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = 0;
    return pthread_setname_np(pthread_self(), buf);
}

int cbpf_nr_cpus_online(void) { return (int)sysconf(_SC_NPROCESSORS_ONLN); }

uint64_t cbpf_ktime_get_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t cbpf_ktime_get_boottime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void cbpf_spin_ns(uint64_t ns) {
    uint64_t end = cbpf_ktime_get_ns() + ns;
    while (cbpf_ktime_get_ns() < end) cbpf_cpu_relax();
}

static __thread void *cbpf_rcu_reader_tls;
void *cbpf_rcu_tls_get(void) { return cbpf_rcu_reader_tls; }
void cbpf_rcu_tls_set(void *reader) { cbpf_rcu_reader_tls = reader; }
void cbpf_sched_yield(void) { sched_yield(); }
void cbpf_usleep(unsigned int us) { usleep(us); }

int cbpf_futex_wait(uint32_t *addr, uint32_t expected, uint64_t timeout_ns) {
    struct timespec ts = { (time_t)(timeout_ns / 1000000000ull), (long)(timeout_ns % 1000000000ull) };
    long r = syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, timeout_ns ? &ts : NULL, NULL, 0);
    return r == 0 ? 0 : errno;
}

int cbpf_futex_wake(uint32_t *addr, int n) {
    long r = syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    return r < 0 ? 0 : (int)r;
}
