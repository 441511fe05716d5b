// twins.c — the driver loop, BPF_PROG_RUN and the quiescent state in plain C (see
// bpflab_twins.h). Each piece does what its Swift original does, step for step:
//   napiPoll            → poll()           (Harness/Driver.swift)
//   bpfProgRun          → prog_run()       (Sources/BPFKernel/ProgRun.swift)
//   doChainCalls        → chain_calls()
//   quiescentState      → quiescent_state() (Sources/BPFKernel/RCU.swift)
#include "bpflab_twins.h"
#include "BPFPrograms.h"
#include "cbpf_sys.h"

#define TWIN_BUFFER_SIZE 2048u      /* RxRing.bufferSize */
#define TWIN_XDP_HEADROOM 256u      /* xdpPacketHeadroom */
#define TWIN_FUTEX_WAITING 0xffffffffu

static inline const cbpf_prog *chain_next(const cbpf_prog *prog, uint32_t ret) {
    uint32_t idx = ret + 1;
    if (idx >= CBPF_NUM_CHAIN_SLOTS) return cbpf_prog_chain_slot(prog, 0);
    idx = (uint32_t)cbpf_array_index_nospec(idx, CBPF_NUM_CHAIN_SLOTS);
    const cbpf_prog *n = cbpf_prog_chain_slot(prog, idx);
    return n ? n : cbpf_prog_chain_slot(prog, 0);
}

static inline uint32_t chain_calls(const cbpf_prog *prog, cbpf_xdp_md *ctx) {
    int budget = CBPF_MAX_CHAIN_CALLS;
    uint32_t ret;
    do {
        cbpf_xdp_run_reset(ctx);
        ret = cbpf_prog_call(prog, ctx);
        const cbpf_prog *next = chain_next(prog, ret);
        if (!next) break;
        prog = next;
    } while (--budget > 0);
    return ret;
}

__attribute__((noinline)) static uint32_t prog_run_with_stats(const cbpf_prog *prog, cbpf_xdp_md *ctx) {
    uint64_t start = cbpf_ktime_get_ns();
    uint32_t ret = cbpf_prog_call(prog, ctx);
    cbpf_prog_stats_account(prog, cbpf_ktime_get_ns() - start);
    return ret;
}

/* BPF_PROG_RUN for one kind; `kind` is a constant once inlined into its poll loop. */
static inline __attribute__((always_inline)) uint32_t prog_run(int kind, const twin_queue *q, const cbpf_prog *prog,
                                                               cbpf_xdp_md *ctx) {
    if (kind == TWIN_RUN_ARRAY) {
        const cbpf_run_array *a = (const cbpf_run_array *)cbpf_rcu_dereference(q->run_array);
        return bpfp_run_array(a, ctx);
    }
    if (!prog) return CBPF_XDP_PASS;
    cbpf_xdp_run_reset(ctx);
    if (__builtin_expect(cbpf_bpf_stats_enabled(), 0)) return prog_run_with_stats(prog, ctx);
    if (kind == TWIN_PATCHED && (prog->flags & CBPF_PROG_F_CHAIN_CALLS)) return chain_calls(prog, ctx);
    if (kind == TWIN_DISPATCHED) return cbpf_dispatcher_call(q->dispatcher, prog, ctx);
    if (kind == TWIN_MACHINE_DISPATCHED) return cbpf_dispatcher_image_call(q->dispatcher, prog, ctx);
    return cbpf_prog_call(prog, ctx);
}

__attribute__((noinline)) static void report(twin_queue *q, uint64_t g) {
    cbpf_smp_mb();
    cbpf_store_release_u64(q->rcu_rec, g);
    cbpf_smp_mb();
    if (cbpf_read_once_u32(q->rcu_futex) == TWIN_FUTEX_WAITING) {
        cbpf_write_once_u32(q->rcu_futex, 0);
        cbpf_futex_wake(q->rcu_futex, 1);
    }
    cbpf_smp_mb();
}

static inline void quiescent_state(twin_queue *q) {
    uint64_t g = cbpf_read_once_u64(q->rcu_gp);
    if (__builtin_expect(*q->rcu_rec == g, 1)) return;
    report(q, g);
}

/* One poll (napiPoll): the device's program read once, then up to `budget` packets. */
static inline __attribute__((always_inline)) void poll(int kind, twin_queue *q) {
    const cbpf_prog *prog = (const cbpf_prog *)cbpf_rcu_dereference(q->dev_prog);
    cbpf_xdp_md *const ctx = q->ctx;
    uint64_t *const counts = q->counts;
    uint8_t *const buffers = (uint8_t *)q->buffers;
    const int32_t *const lengths = q->lengths;
    const uint64_t mask = q->mask;
    const int budget = q->budget;
    uint64_t head = q->head;
    for (int n = 0; n < budget; n++) {
        uint64_t i = head & mask;
        head++;
        uint8_t *buf = buffers + i * TWIN_BUFFER_SIZE;
        uint8_t *data = buf + TWIN_XDP_HEADROOM;
        ctx->data_hard_start = buf;
        ctx->data = data;
        ctx->data_meta = data;
        ctx->data_end = data + lengths[i];
        uint32_t v = prog_run(kind, q, prog, ctx);
        if (__builtin_expect(v <= CBPF_XDP_REDIRECT, 1)) {
            counts[v]++;
        } else {
            counts[0]++;
            counts[5]++;
        }
    }
    q->head = head;
}

void twin_run_polls(twin_queue *q, uint64_t polls) {
    switch (q->kind) {
    case TWIN_PATCHED:
        for (uint64_t p = 0; p < polls; p++) { poll(TWIN_PATCHED, q); quiescent_state(q); }
        break;
    case TWIN_UNPATCHED:
        for (uint64_t p = 0; p < polls; p++) { poll(TWIN_UNPATCHED, q); quiescent_state(q); }
        break;
    case TWIN_DISPATCHED:
        for (uint64_t p = 0; p < polls; p++) { poll(TWIN_DISPATCHED, q); quiescent_state(q); }
        break;
    case TWIN_MACHINE_DISPATCHED:
        for (uint64_t p = 0; p < polls; p++) { poll(TWIN_MACHINE_DISPATCHED, q); quiescent_state(q); }
        break;
    default:
        for (uint64_t p = 0; p < polls; p++) { poll(TWIN_RUN_ARRAY, q); quiescent_state(q); }
        break;
    }
}
