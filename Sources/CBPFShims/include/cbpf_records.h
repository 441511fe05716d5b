// cbpf_records.h — "kernel memory": the fixed-layout records every per-packet path reads.
// Mirrors: include/linux/filter.h (struct bpf_prog, BPF_PROG_RUN's inputs),
// include/linux/bpf.h (struct bpf_prog_aux, struct bpf_prog_stats, MAX_TAIL_CALL_CNT),
// include/uapi/linux/bpf.h (enum xdp_action, struct xdp_md).
//
// Swift creates, links, swaps and frees these records (Sources/BPFKernel); C program bodies
// (Sources/BPFPrograms) and the Swift run loops only read them. No ARC, lock or allocation
// is needed to run a packet through them.
#ifndef CBPF_RECORDS_H
#define CBPF_RECORDS_H

#include <stdint.h>
#include <stddef.h>
#include "cbpf_atomic.h"

#define CBPF_CACHELINE 64
/// Per-CPU arrays are sized for this many CPUs (the lab's NR_CPUS).
#define CBPF_NR_CPUS 64
/// include/linux/bpf.h (RFC v3): chain slots per program, slot = retcode + 1, 0 = wildcard.
#define CBPF_NUM_CHAIN_SLOTS 8
/// include/linux/filter.h (RFC v3): at most this many programs run in one chain.
#define CBPF_MAX_CHAIN_CALLS 32
/// include/linux/bpf.h: at most 33 tail calls succeed per top-level run.
#define CBPF_MAX_TAIL_CALL_CNT 33
/// include/uapi/linux/bpf.h: BPF_OBJ_NAME_LEN.
#define CBPF_OBJ_NAME_LEN 16
/// include/linux/poison.h: the byte the slab allocator writes over freed objects.
#define CBPF_POISON_FREE 0x6b
/// Magic words stamped into live records; checked mode verifies them on every reach.
#define CBPF_PROG_MAGIC 0x4250462d50524f47ULL /* "BPF-PROG" */
#define CBPF_AUX_MAGIC  0x4250462d41555821ULL /* "BPF-AUX!" */
#define CBPF_POISON_MAGIC 0x6b6b6b6b6b6b6b6bULL

/// enum xdp_action (include/uapi/linux/bpf.h).
enum {
    CBPF_XDP_ABORTED = 0,
    CBPF_XDP_DROP = 1,
    CBPF_XDP_PASS = 2,
    CBPF_XDP_TX = 3,
    CBPF_XDP_REDIRECT = 4,
};

/// Program flags kept in the read-only record (struct bpf_prog's bit fields).
enum {
    CBPF_PROG_F_JITED = 1u << 0,        /* bpf_func is "JIT output" (native, tail-calls by jumping) */
    CBPF_PROG_F_CHAIN_CALLS = 1u << 1,  /* RFC v3: BPF_PROG_RUN takes the chain-call loop */
    CBPF_PROG_F_IS_EXT = 1u << 2,       /* program extension (freplace) */
};

/// The run context every program body receives as `ctx`: struct xdp_buff's fields the
/// programs read, plus the per-run state the kernel keeps elsewhere — the tail-call counter
/// (the x86 JIT keeps it on the stack and passes it along in a register) and the link
/// cookie (the kernel's current->bpf_ctx). BPF_PROG_RUN resets the run state.
typedef struct cbpf_xdp_md {
    uint8_t *data;
    uint8_t *data_end;
    uint8_t *data_meta;
    uint8_t *data_hard_start;
    uint32_t ingress_ifindex;
    uint32_t rx_queue_index;
    uint32_t tail_call_cnt;     /* per top-level run; shared with subprograms */
    uint32_t redirect_ifindex;  /* set by a redirect body */
    uint64_t bpf_cookie;        /* the attaching link's cookie */
    void *run_ctx;              /* opaque per-run state for step programs */
} cbpf_xdp_md;

/// The kernel's bpf_func(ctx, insnsi) shape. `insnsi` is the program's data block.
typedef uint32_t (*cbpf_func_t)(const void *ctx, const void *insnsi);

/// struct bpf_prog_stats: one per CPU, one cache line each so CPUs never share a line.
/// (Records are allocated cache-line aligned; Swift cannot import over-aligned C types, so
/// the alignment is the allocator's job and the size is padded by hand.)
typedef struct cbpf_prog_stats {
    uint64_t cnt;     /* runs while stats were enabled */
    uint64_t nsecs;   /* time spent in those runs */
    uint64_t misses;  /* runs skipped because the program was already active on this CPU */
    uint32_t active;  /* recursion guard (kernel: prog->active, per CPU) */
    uint32_t _pad;
    uint64_t _pad2[4]; /* one cache line per CPU (the allocator aligns the array) */
} cbpf_prog_stats;

struct cbpf_prog_aux;

/// struct bpf_prog: read-only after load. Everything BPF_PROG_RUN touches is in the first
/// cache line.
typedef struct cbpf_prog {
    cbpf_func_t bpf_func;           /* entry: the native body */
    const void *insnsi;             /* the body's data block */
    struct cbpf_prog_aux *aux;      /* writable side: refcount, id, chain slots */
    cbpf_prog_stats *stats;         /* [CBPF_NR_CPUS] */
    uint32_t type;                  /* enum bpf_prog_type */
    uint32_t expected_attach_type;  /* enum bpf_attach_type */
    uint32_t flags;                 /* CBPF_PROG_F_* */
    uint32_t len;                   /* bytes in the data block */
    uint8_t tag[8];                 /* first 8 bytes of SHA-1 over the program image */
    uint64_t magic;                 /* CBPF_PROG_MAGIC while live, poison after free */
} cbpf_prog;

/// struct bpf_prog_aux: the writable side of a program.
typedef struct cbpf_prog_aux {
    uint64_t refcnt;                                   /* atomic64_t; never wraps */
    uint32_t id;                                       /* 0 until published, 0 again when unpublished */
    uint32_t used_map_cnt;
    cbpf_prog *chain_progs[CBPF_NUM_CHAIN_SLOTS];      /* RFC v3; replace only with xchg */
    cbpf_prog *dst_prog;                               /* extension target (held) */
    void *dst_trampoline;                              /* extension's trampoline (held) */
    cbpf_prog *prog;                                   /* back pointer */
    void *owner;                                       /* the Swift object (unretained) */
    uint64_t load_time;                                /* ns, CLOCK_BOOTTIME */
    char name[CBPF_OBJ_NAME_LEN];
    uint64_t magic;                                    /* CBPF_AUX_MAGIC while live */
} cbpf_prog_aux;

_Static_assert(offsetof(cbpf_prog, magic) < CBPF_CACHELINE, "hot prog fields fit one cache line");
_Static_assert(sizeof(cbpf_prog_stats) == CBPF_CACHELINE, "one stats line per CPU");

/// BPF_PROG_RUN's stats switch (kernel: the bpf_stats_enabled_key static key; enables are
/// counted, like BPF_ENABLE_STATS file descriptors). Non-zero = on.
extern uint32_t cbpf_bpf_stats_enabled_key;

/// static_key_slow_inc / static_key_slow_dec on the stats key; the new enable count.
CBPF_INLINE uint32_t cbpf_bpf_stats_key_inc(void) { return cbpf_atomic32_add_return(&cbpf_bpf_stats_enabled_key, 1); }
CBPF_INLINE uint32_t cbpf_bpf_stats_key_dec(void) { return cbpf_atomic32_sub_return(&cbpf_bpf_stats_enabled_key, 1); }
CBPF_INLINE uint32_t cbpf_bpf_stats_key_count(void) { return cbpf_read_once_u32(&cbpf_bpf_stats_enabled_key); }
CBPF_INLINE bool cbpf_bpf_stats_enabled(void) {
    return __builtin_expect(cbpf_read_once_u32(&cbpf_bpf_stats_enabled_key) != 0, 0);
}

/// The current thread's CPU slot for per-CPU data (this_cpu_ptr). A packet worker pinned
/// to CPU n sets n; other threads get their CPU from sched_getcpu() on first use.
extern __thread int cbpf_this_cpu_slot __attribute__((tls_model("initial-exec")));
int cbpf_this_cpu_slow(void);
CBPF_INLINE int cbpf_this_cpu(void) {
    int c = cbpf_this_cpu_slot;
    return __builtin_expect(c >= 0, 1) ? c : cbpf_this_cpu_slow();
}
CBPF_INLINE cbpf_prog_stats *cbpf_this_cpu_stats(const cbpf_prog *prog) {
    return &prog->stats[cbpf_this_cpu()];
}


/// struct bpf_array for BPF_MAP_TYPE_PROG_ARRAY: what bpf_tail_call reads.
typedef struct cbpf_array {
    uint32_t max_entries;
    uint32_t index_mask;         /* roundup_pow_of_two(max_entries) - 1 */
    uint64_t magic;              /* CBPF_ARRAY_MAGIC while live */
    void *owner;                 /* the Swift object (unretained) */
    uint64_t _pad[5];
    cbpf_prog *ptrs[];           /* replace only with xchg; NULL = empty */
} cbpf_array;
#define CBPF_ARRAY_MAGIC 0x4250462d41525259ULL /* "BPF-ARRY" */

/// rcu_dereference(array->ptrs[index]); the caller has bounds-checked and masked `index`.
CBPF_INLINE cbpf_prog *cbpf_array_slot(const cbpf_array *a, uint32_t index) {
    return (cbpf_prog *)cbpf_rcu_dereference((void *const *)&a->ptrs[index]);
}
CBPF_INLINE cbpf_prog *cbpf_array_xchg(cbpf_array *a, uint32_t index, cbpf_prog *p) {
    return (cbpf_prog *)cbpf_xchg_ptr((void **)&a->ptrs[index], p);
}

// ---- Accessors the Swift side uses on records (kept here so every access names its
// ---- ordering once).

/// rcu_dereference(prog->aux->chain_progs[idx]).
CBPF_INLINE cbpf_prog *cbpf_prog_chain_slot(const cbpf_prog *prog, unsigned long idx) {
    return (cbpf_prog *)cbpf_rcu_dereference((void *const *)&prog->aux->chain_progs[idx]);
}
/// xchg(&aux->chain_progs[idx], p): the only way a chain slot is written.
CBPF_INLINE cbpf_prog *cbpf_prog_chain_xchg(cbpf_prog_aux *aux, unsigned long idx, cbpf_prog *p) {
    return (cbpf_prog *)cbpf_xchg_ptr((void **)&aux->chain_progs[idx], p);
}
/// cmpxchg(&aux->chain_progs[idx], old, p); returns what was found.
CBPF_INLINE cbpf_prog *cbpf_prog_chain_cmpxchg(cbpf_prog_aux *aux, unsigned long idx, cbpf_prog *old, cbpf_prog *p) {
    return (cbpf_prog *)cbpf_cmpxchg_ptr((void **)&aux->chain_progs[idx], old, p);
}
CBPF_INLINE uint64_t *cbpf_prog_aux_refcnt(cbpf_prog_aux *aux) { return &aux->refcnt; }
CBPF_INLINE uint32_t *cbpf_prog_aux_id(cbpf_prog_aux *aux) { return &aux->id; }

/// Checked mode: is this a live program record (not poisoned)? Reads the program's magic
/// before following its aux pointer, so a poisoned record is never dereferenced further.
CBPF_INLINE bool cbpf_prog_is_live(const cbpf_prog *p) {
    if (cbpf_read_once_u64(&p->magic) != CBPF_PROG_MAGIC) return false;
    const cbpf_prog_aux *aux = (const cbpf_prog_aux *)cbpf_read_once_ptr((void *const *)&p->aux);
    return cbpf_read_once_u64(&aux->magic) == CBPF_AUX_MAGIC;
}

/// Accounts one run in this CPU's stats (the body of BPF_PROG_RUN's stats branch).
CBPF_INLINE void cbpf_prog_stats_account(const cbpf_prog *p, uint64_t nsecs) {
    cbpf_prog_stats *s = cbpf_this_cpu_stats(p);
    cbpf_atomic64_add_relaxed(&s->cnt, 1);
    cbpf_atomic64_add_relaxed(&s->nsecs, nsecs);
}

/// __bpf_prog_enter's recursion guard: true if this CPU was not already running `p`
/// (and marks it running); otherwise counts a miss.
CBPF_INLINE bool cbpf_prog_enter_guard(const cbpf_prog *p) {
    cbpf_prog_stats *s = cbpf_this_cpu_stats(p);
    if (cbpf_atomic32_fetch_add_relaxed(&s->active, 1) != 0) {
        cbpf_atomic64_add_relaxed(&s->misses, 1);
        return false;
    }
    return true;
}
/// __bpf_prog_exit: undoes the guard (called whether or not the enter succeeded).
CBPF_INLINE void cbpf_prog_exit_guard(const cbpf_prog *p) {
    cbpf_atomic32_fetch_sub_relaxed(&cbpf_this_cpu_stats(p)->active, 1);
}

#endif
