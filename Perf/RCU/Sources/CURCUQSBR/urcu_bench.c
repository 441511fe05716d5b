// urcu_bench.c — liburcu-qsbr calls for rcu-bench (the library's own code; nothing copied).
#define _LGPL_SOURCE
#include <urcu-qsbr.h>
#include <x86intrin.h>
#include "urcu_bench.h"

void urcub_register(void) { urcu_qsbr_register_thread(); }
void urcub_unregister(void) { urcu_qsbr_unregister_thread(); }
void urcub_quiescent_state(void) { urcu_qsbr_quiescent_state(); }
void urcub_synchronize(void) { urcu_qsbr_synchronize_rcu(); }

uint64_t urcub_quiescent_state_loop(uint64_t n) {
    uint64_t t0 = __rdtsc();
    for (uint64_t i = 0; i < n; i++) {
        urcu_qsbr_quiescent_state();
        __asm__ __volatile__("" ::: "memory");
    }
    return __rdtsc() - t0;
}
