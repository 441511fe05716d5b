// bpflab_twins.h — plain-C twins of the lab's packet driver (Harness/Driver.swift napiPoll
// and QueueWorker) and BPF_PROG_RUN (Sources/BPFKernel/ProgRun.swift): the same ring,
// the same program records and bodies, the same QSBR quiescent state after each poll —
// written in C, so `bpflab bench --twin` can measure what the Swift layers cost on top.
#ifndef BPFLAB_TWINS_H
#define BPFLAB_TWINS_H
#include <stdint.h>
#include "CBPFShims.h"

/// How the twin runs the device's program (Harness RunnerKind's cases).
enum twin_kind {
    TWIN_PATCHED = 0,    /* BPF_PROG_RUN with the RFC's chain_calls test, and the chain loop */
    TWIN_UNPATCHED = 1,  /* BPF_PROG_RUN before the patch */
    TWIN_DISPATCHED = 2, /* through the bpf_dispatcher */
    TWIN_RUN_ARRAY = 3,  /* BPF_PROG_RUN_ARRAY over a run array */
    TWIN_MACHINE_DISPATCHED = 4, /* through the dispatcher's generated image */
};

/// One queue as the twin sees it: all raw pointers into the lab's own objects.
typedef struct twin_queue {
    int kind;
    int budget;                          /* packets per poll (64) */
    void *buffers;                       /* the RX ring's buffers (RxRing.bufferSize apart) */
    const int32_t *lengths;
    uint64_t mask;
    uint64_t head;
    void *const *dev_prog;               /* &dev->xdp_prog (rcu) */
    const cbpf_dispatcher *dispatcher;   /* TWIN_DISPATCHED */
    void *const *run_array;              /* TWIN_RUN_ARRAY: the run array's rcu slot */
    cbpf_xdp_md *ctx;
    uint64_t *counts;                    /* ABORTED, DROP, PASS, TX, REDIRECT, invalid */
    uint64_t *rcu_rec;                   /* the reader's counter */
    const uint64_t *rcu_gp;              /* the domain's grace-period counter */
    uint32_t *rcu_futex;                 /* the domain's wake-up word */
} twin_queue;

/// `polls` polls of `budget` packets, each followed by a quiescent state.
void twin_run_polls(twin_queue *q, uint64_t polls);

#endif
