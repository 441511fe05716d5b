// CMachineCode.h — the few things generated machine code needs from the system:
// executable memory within rel32 reach of the lab's own code (one memfd mapped twice:
// writable for the emitter and the patcher, executable for the CPUs — W^X), the core
// serialisation a cross-modifying write needs (membarrier SYNC_CORE), and text_poke_bp:
// live patching of an instruction other threads may be executing, with an int3 on its
// first byte while the rest changes and a SIGTRAP handler that emulates the new
// instruction for a thread that hits the int3 (arch/x86/kernel/alternative.c).
#ifndef CMACHINECODE_H
#define CMACHINECODE_H
#include <stddef.h>
#include <stdint.h>

/// An executable region: `rx` is where code runs, `rw` the same bytes, writable.
typedef struct cmc_region {
    uint8_t *rx;
    uint8_t *rw;
    size_t size;
} cmc_region;

/// Maps `size` bytes (a multiple of the page size) of code memory whose executable mapping
/// lies within ±1.5 GiB of `near` (so a rel32 call or jmp reaches between them both
/// ways). Returns 0 or an errno (ENOMEM: no free range near enough).
int cmc_region_map(size_t size, const void *near, cmc_region *out);
void cmc_region_unmap(cmc_region *r);

/// Serialises every CPU running a thread of this process (membarrier
/// MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE; registered on first use). Returns 0 or an
/// errno (then the patcher refuses to patch live code).
int cmc_sync_core(void);

/// text_poke_bp: replaces the `len` (1–15) bytes at `rx` (writing through `rw`, its writable
/// alias) with `insn`, while other threads may be executing them: int3 on the first byte,
/// sync, the tail, sync, the first byte, sync. A thread reaching the site meanwhile traps;
/// the handler emulates `insn` (a NOP of any length, jmp rel32/rel8, call rel32) or, if the
/// poke has already finished, restarts the thread at the site. One poke at a time (the
/// kernel's text_mutex). Returns 0 or an errno (EINVAL: an instruction the handler could
/// not emulate; the site is left unchanged).
int cmc_text_poke_bp(uint8_t *rx, uint8_t *rw, const uint8_t *insn, int len);

/// Patches bytes no thread can be executing yet (a new image), then syncs.
int cmc_text_poke_early(uint8_t *rw, const uint8_t *insn, int len);

/// Counters of the int3 handler: traps emulated (the new instruction run for the thread),
/// traps restarted (the poke had finished; the thread re-ran the site), pokes done.
typedef struct cmc_poke_stats {
    uint64_t emulated;
    uint64_t restarted;
    uint64_t pokes;
} cmc_poke_stats;
cmc_poke_stats cmc_poke_stats_get(void);

/// Calls generated code with the lab's program signature (for tests and the emitter's checks).
uint32_t cmc_call2(const void *fn, const void *a, const void *b);
#endif
