// steps.c — step programs and the two tail-call engines.
//
// Mirrors: kernel/bpf/core.c ___bpf_prog_run (JMP_TAIL_CALL: the interpreter's order —
// bounds, count, load, NULL check — and its "goto select_insn" into the target's
// instructions), arch/x86/net/bpf_jit_comp.c emit_bpf_tail_call_indirect (bounds, count
// check, load, NULL check, count increment, jump past the target's prologue) and
// emit_bpf_tail_call_direct (the patched bypass jump, taken for an empty slot before the
// counter is touched; then the count; then the patched jump to the target).
//
// bpf_tail_call's contract in every engine: index ≥ max_entries → fall through; 33 tail
// calls already made in this run → fall through; empty slot → fall through; otherwise the
// target runs on the same ctx and its return value is the run's — control never comes back.
// The counter lives in the ctx (reset by BPF_PROG_RUN) so it is shared with subprograms.
#include "BPFPrograms.h"

void bpfp_poke_set(bpfp_poke_desc *d, cbpf_prog *target) {
    if (!target) {
        bpfp_poke_bypass(d);
        return;
    }
    cbpf_store_release_ptr((void **)&d->target, target);
    cbpf_store_release_u32(&d->bypass, 0);
}

void bpfp_poke_bypass(bpfp_poke_desc *d) { cbpf_store_release_u32(&d->bypass, 1); }

void bpfp_poke_clear_target(bpfp_poke_desc *d) {
    if (cbpf_load_acquire_u32(&d->bypass)) cbpf_store_release_ptr((void **)&d->target, NULL);
}

/* The ops both engines run the same way. */
#define COMMON_OPS                                                                        \
        case BPFP_OP_INDIRECT_CALL: {                                                    \
            uint32_t i = step_index(blk, s);                                             \
            if (i >= s->array->max_entries) break;                                       \
            i = (uint32_t)cbpf_array_index_nospec(i, s->array->max_entries);             \
            const cbpf_prog *p = cbpf_array_slot(s->array, i);                           \
            if (p && indirect_call(p, md, blk->counters, &last)) return CBPF_XDP_ABORTED; \
            break;                                                                       \
        }                                                                                \
        case BPFP_OP_STATIC_BRANCH:                                                      \
            if (cbpf_static_branch_unlikely((const cbpf_static_site *)s->ptr))           \
                last = cbpf_text_call(blk->subprogs[s->a], ctx);                         \
            break;                                                                       \
        case BPFP_OP_KFUNC:                                                              \
            last = ((bpfp_helper_fn)s->ptr)(ctx, s->arg);                                \
            break;                                                                       \
        case BPFP_OP_STORE_COOKIE:                                                       \
            cbpf_write_once_u64(&blk->vars[s->a], ((const cbpf_xdp_md *)ctx)->bpf_cookie); \
            break;                                                                       \
        case BPFP_OP_STORE_FUNC_RET:                                                     \
            cbpf_write_once_u64(&blk->vars[s->a], ((const cbpf_xdp_md *)ctx)->func_ret);  \
            break;

/* An indirect call runs its callee in a new frame. The verifier bounds bpf-to-bpf calls
 * at MAX_CALL_FRAMES; a call through a prog array cannot be bounded at load (a slot may
 * come to hold the caller itself), so the bound is checked here: the call that would open
 * frame 9 faults the run — CBPF_FAULT_CALL_DEPTH is set in md->call_depth and counted in
 * the kernel's counter 0 ("fault.call_depth") — and every frame on the way out returns
 * XDP_ABORTED. Returns nonzero when the run has faulted. */
static inline int indirect_call(const cbpf_prog *p, cbpf_xdp_md *md, uint64_t *counters, uint32_t *ret) {
    if (md->call_depth >= CBPF_MAX_CALL_FRAMES - 1) {
        if (!(md->call_depth & CBPF_FAULT_CALL_DEPTH)) {
            md->call_depth |= CBPF_FAULT_CALL_DEPTH;
            cbpf_atomic64_add_relaxed(&counters[0], 1);
        }
        return 1;
    }
    md->call_depth++;
    uint32_t r = cbpf_prog_call(p, md);
    if (md->call_depth & CBPF_FAULT_CALL_DEPTH) return 1;
    md->call_depth--;
    *ret = r;
    return 0;
}

/* Where a tail call lands: past the target's entry word (the x86 JIT jumps to
 * bpf_func + X86_TAIL_CALL_OFFSET, skipping the patchable nop), so a trampoline attached
 * to the target does not run for tail calls — only for calls. */
static inline cbpf_func_t tail_entry(const cbpf_prog *t) {
    return cbpf_text_hdr_of(t->insnsi)->orig;
}

static inline uint32_t step_index(const bpfp_step_block *blk, const bpfp_step *s) {
    uint64_t idx = (s->flags & BPFP_STEP_F_INDEX_FROM_VAR) ? cbpf_read_once_u64(&blk->vars[s->b]) : s->b;
    return (uint32_t)idx;  /* the helper's index argument is a u32: truncate */
}

uint32_t bpfp_step_jit(const void *ctx, const void *insnsi) {
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    const bpfp_step_block *blk = (const bpfp_step_block *)insnsi;
    uint32_t last = 0;
    for (uint32_t pc = 0; pc < blk->nsteps; pc++) {
        const bpfp_step *s = &blk->steps[pc];
        switch (s->op) {
        case BPFP_OP_RET_CONST:
            return s->a;
        case BPFP_OP_RET_LAST:
            return last;
        case BPFP_OP_RET_VAR:
            return (uint32_t)cbpf_read_once_u64(&blk->vars[s->a]);
        case BPFP_OP_COUNT:
            cbpf_atomic64_add_relaxed(&blk->counters[s->a], 1);
            break;
        case BPFP_OP_SET_VAR:
            cbpf_write_once_u64(&blk->vars[s->a], s->b);
            break;
        case BPFP_OP_CALL:
            last = cbpf_text_call(blk->subprogs[s->a], ctx);  /* through its (pokeable) entry */
            break;
        case BPFP_OP_RUN_PROG:
            last = cbpf_prog_call((const cbpf_prog *)s->array, ctx);
            break;
        COMMON_OPS
        case BPFP_OP_TAIL_CALL: {
            if (s->poke) {
                /* Direct: the patched bypass jump first (taken while the slot is empty,
                 * before the counter is touched), then the count, then the jump. */
                const bpfp_poke_desc *d = s->poke;
                if (cbpf_load_acquire_u32(&d->bypass)) break;
                if (md->tail_call_cnt >= CBPF_MAX_TAIL_CALL_CNT) break;
                const cbpf_prog *t = (const cbpf_prog *)cbpf_rcu_dereference((void *const *)&d->target);
                if (!t) break;
                md->tail_call_cnt++;
                __attribute__((musttail)) return tail_entry(t)(ctx, t->insnsi);
            }
            const cbpf_array *arr = s->array;
            uint32_t index = step_index(blk, s);
            if (index >= arr->max_entries) break;
            if (md->tail_call_cnt >= CBPF_MAX_TAIL_CALL_CNT) break;
            index = (uint32_t)cbpf_array_index_nospec(index, arr->max_entries);
            const cbpf_prog *t = cbpf_array_slot(arr, index);
            if (!t) break;                       /* empty slot: not counted (x86 JIT) */
            md->tail_call_cnt++;
            __attribute__((musttail)) return tail_entry(t)(ctx, t->insnsi);
        }
        default:
            return CBPF_XDP_ABORTED;
        }
    }
    return last;
}

uint32_t bpfp_step_interp(const void *ctx, const void *insnsi) {
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    const bpfp_step_block *blk = (const bpfp_step_block *)insnsi;
    uint32_t last = 0;
    uint32_t pc = 0;
select_insn:
    for (; pc < blk->nsteps; pc++) {
        const bpfp_step *s = &blk->steps[pc];
        switch (s->op) {
        case BPFP_OP_RET_CONST:
            return s->a;
        case BPFP_OP_RET_LAST:
            return last;
        case BPFP_OP_RET_VAR:
            return (uint32_t)cbpf_read_once_u64(&blk->vars[s->a]);
        case BPFP_OP_COUNT:
            cbpf_atomic64_add_relaxed(&blk->counters[s->a], 1);
            break;
        case BPFP_OP_SET_VAR:
            cbpf_write_once_u64(&blk->vars[s->a], s->b);
            break;
        case BPFP_OP_CALL:
            last = cbpf_text_call(blk->subprogs[s->a], ctx);  /* through its (pokeable) entry */
            break;
        case BPFP_OP_RUN_PROG:
            last = cbpf_prog_call((const cbpf_prog *)s->array, ctx);
            break;
        COMMON_OPS
        case BPFP_OP_TAIL_CALL: {
            const cbpf_array *arr = s->array;
            uint32_t index = step_index(blk, s);
            if (index >= arr->max_entries) break;
            if (md->tail_call_cnt >= CBPF_MAX_TAIL_CALL_CNT) break;
            md->tail_call_cnt++;                 /* counted even if the slot is empty */
            index = (uint32_t)cbpf_array_index_nospec(index, arr->max_entries);
            const cbpf_prog *t = cbpf_array_slot(arr, index);
            if (!t) break;
            if (tail_entry(t) == bpfp_step_interp) {
                /* goto select_insn: continue in the target's steps, same frame */
                blk = (const bpfp_step_block *)t->insnsi;
                pc = 0;
                last = 0;
                goto select_insn;
            }
            return tail_entry(t)(ctx, t->insnsi);  /* a native target: run it, its value is ours */
        }
        default:
            return CBPF_XDP_ABORTED;
        }
    }
    return last;
}

uint32_t bpfp_tc_jit(const void *ctx, const void *insnsi) {
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    const bpfp_tc_data *d = (const bpfp_tc_data *)insnsi;
    const cbpf_array *arr = d->array;
    uint32_t index = d->index;
    if (index >= arr->max_entries) return d->fallback;
    if (md->tail_call_cnt >= CBPF_MAX_TAIL_CALL_CNT) return d->fallback;
    index = (uint32_t)cbpf_array_index_nospec(index, arr->max_entries);
    const cbpf_prog *t = cbpf_array_slot(arr, index);
    if (!t) return d->fallback;
    md->tail_call_cnt++;
    __attribute__((musttail)) return tail_entry(t)(ctx, t->insnsi);
}

uint32_t bpfp_tc_direct(const void *ctx, const void *insnsi) {
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    const bpfp_tc_data *d = (const bpfp_tc_data *)insnsi;
    const bpfp_poke_desc *pk = d->poke;
    if (cbpf_load_acquire_u32(&pk->bypass)) return d->fallback;   /* empty slot: not counted */
    if (md->tail_call_cnt >= CBPF_MAX_TAIL_CALL_CNT) return d->fallback;
    const cbpf_prog *t = (const cbpf_prog *)cbpf_rcu_dereference((void *const *)&pk->target);
    if (!t) return d->fallback;
    md->tail_call_cnt++;
    __attribute__((musttail)) return tail_entry(t)(ctx, t->insnsi);
}

uint32_t bpfp_call_ret(const void *ctx, const void *insnsi) {
    const bpfp_small_data *d = (const bpfp_small_data *)insnsi;
    return cbpf_text_call(d->callee, ctx);
}

uint32_t bpfp_static_branch_ret(const void *ctx, const void *insnsi) {
    const bpfp_small_data *d = (const bpfp_small_data *)insnsi;
    if (cbpf_static_branch_unlikely(d->site)) (void)cbpf_text_call(d->callee, ctx);
    return d->fallback;
}

uint32_t bpfp_indirect_call_ret(const void *ctx, const void *insnsi) {
    const bpfp_small_data *d = (const bpfp_small_data *)insnsi;
    const cbpf_array *arr = d->array;
    uint32_t i = d->index;
    if (i < arr->max_entries) {
        i = (uint32_t)cbpf_array_index_nospec(i, arr->max_entries);
        const cbpf_prog *p = cbpf_array_slot(arr, i);
        uint32_t ignored;
        if (p && indirect_call(p, (cbpf_xdp_md *)ctx, d->counters, &ignored)) return CBPF_XDP_ABORTED;
    }
    return d->fallback;
}
