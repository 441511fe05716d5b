// BPFPrograms.h — native program bodies: the stand-in for JIT output.
// Each body has the kernel's bpf_func(ctx, insnsi) shape (include/linux/filter.h);
// `insnsi` points at the program's data block, whose layout each body documents.
#ifndef BPF_PROGRAMS_H
#define BPF_PROGRAMS_H
#include <stdint.h>
#include "CBPFShims.h"
#include "bpf_htab.h"
#include "bpf_interpreter.h"

/// Returns XDP_PASS. Data block: unused.
uint32_t bpfp_xdp_pass(const void *ctx, const void *insnsi);
/// Returns XDP_DROP. Data block: unused.
uint32_t bpfp_xdp_drop(const void *ctx, const void *insnsi);
/// Returns XDP_TX. Data block: unused.
uint32_t bpfp_xdp_tx(const void *ctx, const void *insnsi);
/// Returns XDP_ABORTED. Data block: unused.
uint32_t bpfp_xdp_aborted(const void *ctx, const void *insnsi);
/// Sets ctx->redirect_ifindex and returns XDP_REDIRECT. Data block: u32 ifindex.
uint32_t bpfp_xdp_redirect(const void *ctx, const void *insnsi);
/// Returns the u32 at the start of its data block (any value, valid action or not).
uint32_t bpfp_ret_const(const void *ctx, const void *insnsi);

/// Returns (UDP source port of an Ethernet/IPv4/UDP frame) % modulus, or XDP_ABORTED if
/// the frame is too short. Data block: u32 modulus (non-zero). Lets flows get different
/// verdicts (and, with modulus > 5, invalid ones).
uint32_t bpfp_xdp_port_mod(const void *ctx, const void *insnsi);

/// Data block of bpfp_call_helper: a helper function and its argument.
typedef uint32_t (*bpfp_helper_fn)(const void *ctx, void *arg);
typedef struct bpfp_helper_data {
    bpfp_helper_fn fn;
    void *arg;
} bpfp_helper_data;
/// Calls data->fn(ctx, data->arg) and returns its result: a program calling a helper
/// (used to re-enter the runner and exercise the recursion guard).
uint32_t bpfp_call_helper(const void *ctx, const void *insnsi);

// ---------------------------------------------------------------------------------------
// Tail calls and step programs (tail_call.c, steps.c).
//
// A step program is a native body driven by its data block: a list of steps (count into a
// counter, tail-call, call a subprogram, set a variable, return). Two bodies run the same
// steps with the kernel's two tail-call engines:
//   bpfp_step_jit    — JIT style: a tail call is a real tail call (musttail: the frame is
//                      replaced, control never returns); the counter is checked before
//                      and incremented after the NULL check (current x86 JIT). A step
//                      with a poke descriptor is a *direct* tail call: count, then follow
//                      the patched jump (bypass / target) instead of loading the slot.
//   bpfp_step_interp — interpreter style: the tail call switches the interpreter loop to
//                      the target's steps in the same frame; the counter is incremented
//                      before the NULL check (kernel/bpf/core.c ___bpf_prog_run).

/// A direct tail call's patch site (struct bpf_jit_poke_descriptor + the text it patches).
typedef struct bpfp_poke_desc {
    cbpf_prog *target;        /* the jump's destination; NULL = none */
    uint32_t bypass;          /* 1 = the jump is bypassed (falls through) */
    uint32_t key;             /* the constant index */
    const cbpf_array *array;  /* the constant array */
} bpfp_poke_desc;

/// Re-points a direct jump at `target` (NULL: bypass). Safe against concurrent runners:
/// the target is published before the bypass is lifted.
void bpfp_poke_set(bpfp_poke_desc *d, cbpf_prog *target);
/// Restores the bypass (first half of a delete).
void bpfp_poke_bypass(bpfp_poke_desc *d);
/// Clears the target (second half of a delete, after a grace period).
void bpfp_poke_clear_target(bpfp_poke_desc *d);

enum {
    BPFP_OP_RET_CONST = 0,   /* return a */
    BPFP_OP_RET_LAST = 1,    /* return the last call's value */
    BPFP_OP_RET_VAR = 2,     /* return (u32)vars[a] */
    BPFP_OP_COUNT = 3,       /* counters[a] += 1 */
    BPFP_OP_TAIL_CALL = 4,   /* bpf_tail_call(ctx, array, index); falls through on failure */
    BPFP_OP_CALL = 5,        /* last = subprogs[a](ctx) */
    BPFP_OP_SET_VAR = 6,     /* vars[a] = b */
    BPFP_OP_RUN_PROG = 7,    /* last = run the program `prog` (a helper-style call) */
    BPFP_OP_INDIRECT_CALL = 8, /* p = array[b]; if p: last = p(ctx) (NULL-checked indirect call) */
    BPFP_OP_STATIC_BRANCH = 9, /* if static_branch_unlikely(ptr): last = subprogs[a](ctx) */
    BPFP_OP_KFUNC = 10,      /* last = ((bpfp_helper_fn)ptr)(ctx, arg) */
    BPFP_OP_STORE_COOKIE = 11, /* vars[a] = ctx->bpf_cookie */
    BPFP_OP_STORE_FUNC_RET = 12, /* vars[a] = ctx->func_ret (fexit: the traced function's value) */
};
/// Tail-call step: the index is vars[b] (64-bit, truncated to u32) instead of b.
#define BPFP_STEP_F_INDEX_FROM_VAR 1u

typedef struct bpfp_step {
    uint32_t op;
    uint32_t a;
    uint64_t b;
    uint32_t flags;
    uint32_t _pad;
    const cbpf_array *array;  /* tail call / indirect call: the array */
    bpfp_poke_desc *poke;     /* tail call: direct-jump descriptor, or NULL for indirect */
    const void *ptr;          /* static branch: its site; kfunc: the function */
    void *arg;                /* kfunc: its argument */
} bpfp_step;

typedef struct bpfp_step_block {
    uint64_t *counters;                             /* named counters (kernel-wide) */
    uint64_t *vars;                                 /* the program's variables */
    const cbpf_text *const *subprogs;               /* this program's global subprograms */
    uint32_t nsubprogs;
    uint32_t nsteps;
    bpfp_step steps[];
} bpfp_step_block;

uint32_t bpfp_step_jit(const void *ctx, const void *insnsi);
uint32_t bpfp_step_interp(const void *ctx, const void *insnsi);

/// Data block of the specialised tail-call bodies: what a JIT emits for a program that
/// is only "bpf_tail_call(ctx, array, K); return fallback".
typedef struct bpfp_tc_data {
    const cbpf_array *array;
    uint32_t index;
    uint32_t fallback;
    bpfp_poke_desc *poke;
} bpfp_tc_data;
/// Indirect JIT-style tail call (x86: bounds, count check, load, NULL check, count, jump).
uint32_t bpfp_tc_jit(const void *ctx, const void *insnsi);
/// Direct tail call through the poke descriptor (count, then the patched jump).
uint32_t bpfp_tc_direct(const void *ctx, const void *insnsi);

/// Data block of the other specialised bodies (what a JIT emits for two-step programs).
typedef struct bpfp_small_data {
    const cbpf_text *callee;        /* call: the global function called */
    const cbpf_static_site *site;   /* static branch: its site */
    const cbpf_array *array;        /* indirect call: the function table */
    uint32_t index;
    uint32_t fallback;              /* the constant returned after the call/branch */
    uint64_t *counters;             /* the kernel's counters ([0]: call-depth faults) */
} bpfp_small_data;
/// "return subprog()" — a call through the function's (pokeable) entry.
uint32_t bpfp_call_ret(const void *ctx, const void *insnsi);
/// "if (static_branch_unlikely(site)) subprog(); return fallback".
uint32_t bpfp_static_branch_ret(const void *ctx, const void *insnsi);
/// "p = array[index]; if (p) p(ctx); return fallback" — a NULL-checked indirect call.
uint32_t bpfp_indirect_call_ret(const void *ctx, const void *insnsi);


// ---------------------------------------------------------------------------------------
// Trampolines, extensions, dispatchers, run arrays (dispatch.c): the code the kernel
// generates at attach time (arch_prepare_bpf_trampoline, bpf_dispatcher_prepare) and the
// libxdp dispatcher program.

/// A patched entry for a function with a trampoline image: runs fentry programs, then
/// fmod_ret programs (the first non-zero value skips the function and becomes its value),
/// then the function itself, then fexit programs (which see the value in ctx->func_ret).
/// Each attached program runs under the recursion guard (a miss skips it and is counted)
/// with its link's cookie in ctx->bpf_cookie and a tail-call counter of its own; the
/// function's counter is restored before it runs (it survives the trampoline).
uint32_t bpfp_tramp_entry(const void *ctx, const void *insnsi);
/// A patched entry for a function replaced by an extension (freplace): jumps to it.
uint32_t bpfp_ext_entry(const void *ctx, const void *insnsi);

/// What a generated trampoline keeps on its stack while one attached program runs
/// (struct bpf_tramp_run_ctx: the saved run context).
typedef struct bpfp_tramp_run_ctx {
    uint64_t cookie;
    uint32_t tail_call_cnt;
    uint32_t _pad;
} bpfp_tramp_run_ctx;
/// __bpf_prog_enter_recur as generated trampolines call it (directly): the recursion
/// guard, then the run context set (cookie, the program's own tail-call counter) with the
/// old one saved in *rc. 0: skip the program (it is already running on this CPU); else its
/// start time, or 1 (NO_START_TIME) when stats are off.
uint64_t bpfp_tramp_prog_enter(const void *prog, void *ctx, uint64_t cookie, bpfp_tramp_run_ctx *rc);
/// __bpf_prog_exit_recur: the run context restored and the run accounted (when it ran
/// and stats were on), then the guard released.
void bpfp_tramp_prog_exit(const void *prog, void *ctx, uint64_t start, const bpfp_tramp_run_ctx *rc);

/// BPF_PROG_RUN_ARRAY: every program runs, in order, with its cookie; the verdict is the
/// first one that is not XDP_PASS (XDP_PASS if all pass).
uint32_t bpfp_run_array(const cbpf_run_array *arr, const void *ctx);

/// libxdp's dispatcher (xdp-dispatcher.c): XDP_DISPATCHER_MAX_PROGS placeholders.
#define BPFP_XDP_DISPATCHER_SLOTS 10
/// What an empty placeholder returns; every slot's mask includes it, so it continues.
#define BPFP_XDP_DISPATCHER_RETVAL 31
typedef struct bpfp_xdp_dispatcher_config {
    uint32_t num_progs_enabled;
    uint32_t chain_call_actions[BPFP_XDP_DISPATCHER_SLOTS];
    uint32_t run_prios[BPFP_XDP_DISPATCHER_SLOTS];
    uint32_t _pad;
    const cbpf_text *slots[BPFP_XDP_DISPATCHER_SLOTS];  /* prog0 … prog9 */
} bpfp_xdp_dispatcher_config;
/// The dispatcher's main function: for each enabled slot, call it; go on if the bit for
/// its value is set in the slot's chain_call_actions, else return the value. After the
/// last slot, XDP_PASS.
uint32_t bpfp_xdp_dispatcher(const void *ctx, const void *insnsi);
/// An empty placeholder slot (prog0 … prog9 before an extension replaces it).
uint32_t bpfp_xdp_dispatcher_stub(const void *ctx, const void *insnsi);

// ---------------------------------------------------------------------------------------
// Kernel functions trampolines attach to (kfuncs.c): net/bpf/test_run.c's test targets.
// Arguments come in ctx->kargs.

/// int bpf_fentry_test1(int a) { return a + 1; }
uint32_t bpfp_kfn_fentry_test1(const void *ctx, const void *insnsi);
/// int bpf_modify_return_test(int a, int *b) { *b += 1; return a + *b; }
/// (ALLOW_ERROR_INJECTION(bpf_modify_return_test, ERRNO): fmod_ret may replace its value.)
uint32_t bpfp_kfn_modify_return_test(const void *ctx, const void *insnsi);
/// The receive path of generic XDP (net/core/dev.c do_xdp_generic): runs the program in
/// kargs[0] with the BPF_PROG_RUN in kargs[1] (the lab's, in Swift) and returns its verdict.
typedef uint32_t (*bpfp_prog_run_fn)(const cbpf_prog *prog, cbpf_xdp_md *ctx);
uint32_t bpfp_kfn_do_xdp_generic(const void *ctx, const void *insnsi);

#endif
