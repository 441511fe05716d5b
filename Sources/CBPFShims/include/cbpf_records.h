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
    uint32_t call_depth;        /* indirect calls in progress; CBPF_FAULT_CALL_DEPTH once faulted */
    uint32_t redirect_ifindex;  /* set by a redirect body */
    uint64_t bpf_cookie;        /* the attaching link's cookie (bpf_get_attach_cookie) */
    void *run_ctx;              /* opaque per-run state for step programs */
    uint64_t func_ret;          /* what an fexit program sees: the traced function's return value */
    uint64_t kargs[2];          /* a kernel function's arguments (KernelFunction.swift), as a
                                   trampoline finds them in the caller's registers */
    uint8_t *data_hard_end;     /* end of the frame's buffer (xdp_data_hard_end: hard start +
                                   frame_sz - tailroom); NULL = no room past data_end */
} cbpf_xdp_md;

_Static_assert(offsetof(cbpf_xdp_md, call_depth) == offsetof(cbpf_xdp_md, tail_call_cnt) + 4,
               "the run state is reset with one 8-byte store");

/// BPF_PROG_RUN's reset of the per-run state (tail-call counter and call depth): one store.
CBPF_INLINE void cbpf_xdp_run_reset(cbpf_xdp_md *md) {
    uint64_t zero = 0;
    __builtin_memcpy(&md->tail_call_cnt, &zero, sizeof zero);
}

/// include/linux/bpf.h: MAX_CALL_FRAMES. The verifier refuses bpf-to-bpf call chains deeper
/// than this; an indirect call through a prog array (seed 001's "bpf indirect calls",
/// not mainline) cannot be bounded at load, so the lab checks it per call.
#define CBPF_MAX_CALL_FRAMES 8
/// Set in call_depth when a run went past CBPF_MAX_CALL_FRAMES: every frame then returns
/// XDP_ABORTED.
#define CBPF_FAULT_CALL_DEPTH 0x80000000u

/// The kernel's bpf_func(ctx, insnsi) shape. `insnsi` is the program's data block.
typedef uint32_t (*cbpf_func_t)(const void *ctx, const void *insnsi);

/// A function's text, as far as its callers and bpf_arch_text_poke are concerned: the
/// entry word every call goes through, and the function's data block. A program's main
/// function is its cbpf_prog (same first two fields); each global subprogram has one.
/// `func` is the only word of a function that is ever patched after load — the stand-in
/// for the 5-byte nop the x86 JIT leaves at every function's entry. Read it with
/// cbpf_text_func (acquire: whatever was published before the poke is visible).
typedef struct cbpf_text {
    cbpf_func_t func;
    const void *data;
} cbpf_text;

/// The 64 bytes in front of every function's data block: the writable "text" beside the
/// code, where a trampoline or extension entry finds its image (the kernel's trampoline
/// image is generated for one function, so it knows it; ours looks it up here).
typedef struct cbpf_text_hdr {
    void *image;                 /* rcu: the function's trampoline image, NULL if none */
    cbpf_func_t orig;            /* the function's own body (what detach restores) */
    uint64_t magic;              /* CBPF_TEXT_MAGIC */
    uint64_t _pad[5];
} cbpf_text_hdr;
#define CBPF_TEXT_MAGIC 0x4250462d54455854ULL /* "BPF-TEXT" */
_Static_assert(sizeof(cbpf_text_hdr) == 64, "text header is one cache line");

CBPF_INLINE cbpf_text_hdr *cbpf_text_hdr_of(const void *data) {
    return (cbpf_text_hdr *)((char *)data - sizeof(cbpf_text_hdr));
}
CBPF_INLINE cbpf_func_t cbpf_text_func(const cbpf_text *t) {
    return (cbpf_func_t)cbpf_load_acquire_ptr((void *const *)&t->func);
}
/// Calls a function through its entry word.
CBPF_INLINE uint32_t cbpf_text_call(const cbpf_text *t, const void *ctx) {
    return cbpf_text_func(t)(ctx, t->data);
}
/// bpf_arch_text_poke: replace the entry `old` by `new_` if the site still holds `old`.
/// Returns what the site held (== old on success). Threads executing the function see
/// either the old or the new entry, never a torn one.
CBPF_INLINE cbpf_func_t cbpf_text_poke(cbpf_text *t, cbpf_func_t old, cbpf_func_t new_) {
    return (cbpf_func_t)cbpf_cmpxchg_ptr((void **)&t->func, (void *)old, (void *)new_);
}

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
    /* The machine engine's generated entry (MachineStepJIT), NULL for other bodies: what the
     * kernel's bpf_func is. The lab's bpf_func is also the pokeable entry word a trampoline
     * or extension takes over, so the generated tail-call sequences jump past the prologue of
     * this one — as the kernel's jump past the patched NOP of bpf_func. */
    const void *jit_entry;
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
_Static_assert(offsetof(cbpf_prog, bpf_func) == offsetof(cbpf_text, func) &&
               offsetof(cbpf_prog, insnsi) == offsetof(cbpf_text, data), "a program is its main function's text");

CBPF_INLINE const cbpf_text *cbpf_prog_text(const cbpf_prog *p) { return (const cbpf_text *)(const void *)p; }
/// prog->bpf_func(ctx, prog->insnsi), through the (pokeable) entry word.
CBPF_INLINE uint32_t cbpf_prog_call(const cbpf_prog *p, const void *ctx) {
    return cbpf_text_call(cbpf_prog_text(p), ctx);
}
_Static_assert(sizeof(cbpf_prog_stats) == CBPF_CACHELINE, "one stats line per CPU");

/// A static branch site (include/linux/jump_label.h): one word the code tests with
/// static_branch_unlikely. The kernel patches a nop into a jmp; the lab flips a word that
/// the compiler keeps as a predicted-not-taken test. Sites are flipped one by one by their
/// key (StaticKey.swift); the key counts enables.
typedef struct cbpf_static_site { uint32_t enabled; } cbpf_static_site;
CBPF_INLINE bool cbpf_static_branch_unlikely(const cbpf_static_site *s) {
    return __builtin_expect(cbpf_read_once_u32(&s->enabled) != 0, 0);
}
CBPF_INLINE void cbpf_static_site_set(cbpf_static_site *s, uint32_t on) { cbpf_store_release_u32(&s->enabled, on); }

/// The branch sites of the bpf_stats_enabled_key static key: the stats branch of
/// BPF_PROG_RUN and the one in the trampoline's __bpf_prog_enter. The key itself (its
/// counted enables) is Swift's (StaticKey.bpfStats).
extern cbpf_static_site cbpf_stats_site_prog_run;
extern cbpf_static_site cbpf_stats_site_tracing;
cbpf_static_site *cbpf_stats_site_prog_run_ptr(void);
cbpf_static_site *cbpf_stats_site_tracing_ptr(void);
CBPF_INLINE bool cbpf_bpf_stats_enabled(void) { return cbpf_static_branch_unlikely(&cbpf_stats_site_prog_run); }
CBPF_INLINE bool cbpf_bpf_stats_enabled_tracing(void) { return cbpf_static_branch_unlikely(&cbpf_stats_site_tracing); }

/// Generated code publishes pointers as immediates and makes them reachable by patching
/// text, which membarrier(SYNC_CORE) orders on the hardware but ThreadSanitizer cannot see.
/// Whoever patches generated code to reach new objects calls cbpf_text_published() first;
/// C code that generated code calls and that reads those objects calls cbpf_text_observed()
/// first (an acquire load: a plain mov on x86) — the pair states the ordering the core sync
/// gives.
extern uint64_t cbpf_text_generation;
CBPF_INLINE void cbpf_text_published(void) { __atomic_fetch_add(&cbpf_text_generation, 1, __ATOMIC_RELEASE); }
CBPF_INLINE void cbpf_text_observed(void) { (void)__atomic_load_n(&cbpf_text_generation, __ATOMIC_ACQUIRE); }

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

/// struct bpf_map as programs reach it: what the helpers read. Built by the map's Swift
/// object at create time (Map.swift), freed with it after the grace period.
typedef struct cbpf_map {
    uint64_t magic;              /* CBPF_MAP_MAGIC while live */
    uint32_t type;               /* enum bpf_map_type */
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_entries;
    uint32_t elem_size;          /* array: value_size rounded up to 8 */
    uint32_t _pad;
    uint8_t *values;             /* array / per-CPU array: the elements; hash: the element pool */
    uint64_t values_bytes;       /* bytes at `values` (a program may touch only these) */
    cbpf_array *progs;           /* prog array: its slots */
    void *impl;                  /* hash: the table (cbpf_htab) */
    void *owner;                 /* the Swift object (unretained) */
} cbpf_map;
#define CBPF_MAP_MAGIC 0x4250462d4d415021ULL /* "BPF-MAP!" */

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

// ---- Trampolines, dispatchers, run arrays (kernel/bpf/trampoline.c, dispatcher.c, core.c).

/// include/linux/bpf.h: BPF_MAX_TRAMP_LINKS.
#define CBPF_MAX_TRAMP_LINKS 38
/// include/linux/bpf.h: BPF_DISPATCHER_MAX.
#define CBPF_DISPATCHER_MAX 48

/// One program attached to a trampoline or a run array, with its link's cookie.
typedef struct cbpf_tramp_item {
    const cbpf_prog *prog;
    uint64_t cookie;
} cbpf_tramp_item;

/// A trampoline image (arch_prepare_bpf_trampoline's output): immutable once published;
/// a change builds a new one. Items: fentry first, then fmod_ret, then fexit.
typedef struct cbpf_tramp_image {
    uint64_t magic;              /* CBPF_TRAMP_MAGIC while live */
    const cbpf_prog *ext;        /* freplace: the extension replacing the function, or NULL */
    uint32_t nfentry, nmodret, nfexit, _pad;
    cbpf_tramp_item items[];
} cbpf_tramp_image;
#define CBPF_TRAMP_MAGIC 0x4250462d5452414dULL /* "BPF-TRAM" */

/// bpf_prog_array (include/linux/bpf.h): an RCU-replaced, NULL-terminated list of
/// programs that all run (BPF_PROG_RUN_ARRAY).
typedef struct cbpf_run_array {
    uint32_t count;
    uint32_t _pad;
    cbpf_tramp_item items[];
} cbpf_run_array;

/// One half of a bpf_dispatcher image: its known targets sorted by address.
typedef struct cbpf_dispatcher_half {
    uint32_t num;
    uint32_t _pad;
    const cbpf_prog *progs[CBPF_DISPATCHER_MAX];
} cbpf_dispatcher_half;

/// struct bpf_dispatcher: the active half (rcu) — readers search it; updates fill the
/// other half and switch.
typedef struct cbpf_dispatcher {
    cbpf_dispatcher_half *active;
    /// rcu: the generated image (the machine engine: a compare tree ending in direct
    /// jumps, arch_prepare_bpf_dispatcher), called as image(ctx, insnsi, bpf_func); NULL
    /// when there is none.
    void *image;
} cbpf_dispatcher;

/// bpf_dispatcher_xdp_func: a binary search of the active half for `p`. A hit calls the
/// target the search found — the image's direct call; anything else takes the indirect
/// call (bpf_dispatcher_nop_func), so every program still runs. The empty asm hides from
/// the compiler that the found target equals `p`; without it the two calls are merged and
/// the equality exit disappears, making a hit cost exactly what a miss costs.
CBPF_INLINE uint32_t cbpf_dispatcher_call(const cbpf_dispatcher *d, const cbpf_prog *p, const void *ctx) {
    const cbpf_dispatcher_half *h = (const cbpf_dispatcher_half *)cbpf_rcu_dereference((void *const *)&d->active);
    if (h) {
        uint32_t lo = 0, hi = h->num;
        while (lo < hi) {
            uint32_t mid = (lo + hi) >> 1;
            const cbpf_prog *m = h->progs[mid];
            if (m == p) {
                __asm__("" : "+r"(m));
                return cbpf_prog_call(m, ctx);
            }
            if ((uintptr_t)m < (uintptr_t)p) lo = mid + 1; else hi = mid;
        }
    }
    return cbpf_prog_call(p, ctx);
}

/// bpf_dispatcher_xdp_func with the generated image: image(ctx, insnsi, bpf_func). The
/// image compares the program's insnsi (unique per program in the lab, as bpf_func is per
/// JIT image in the kernel) against its targets, jumps directly on a hit, and takes the
/// indirect jump through bpf_func (retpolined when retpolines are on) on a miss.
CBPF_INLINE uint32_t cbpf_dispatcher_image_call(const cbpf_dispatcher *d, const cbpf_prog *p, const void *ctx) {
    void *img = cbpf_rcu_dereference((void *const *)&d->image);
    if (!img) return cbpf_prog_call(p, ctx);
    return ((uint32_t (*)(const void *, const void *, cbpf_func_t))img)(ctx, p->insnsi, cbpf_text_func(cbpf_prog_text(p)));
}

#endif
