// urcu_bench.h — liburcu-qsbr behind a few calls, for rcu-bench.
#ifndef URCU_BENCH_H
#define URCU_BENCH_H
#include <stdint.h>

void urcub_register(void);
void urcub_unregister(void);
/// urcu_qsbr_quiescent_state(), out of line (for the reader threads of the synchronize run).
void urcub_quiescent_state(void);
/// urcu_qsbr_synchronize_rcu().
void urcub_synchronize(void);
/// `n` quiescent states in a loop, inlined as a user's code gets them; TSC ticks taken.
uint64_t urcub_quiescent_state_loop(uint64_t n);
#endif
