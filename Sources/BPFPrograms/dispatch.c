// dispatch.c — the code the kernel generates when programs are attached to other code.
//
// Mirrors: arch/x86/net/bpf_jit_comp.c (arch_prepare_bpf_trampoline: invoke_bpf for
// fentry, invoke_bpf_mod_ret, the call of the original function, fexit; the freplace jump
// bpf_arch_text_poke installs), kernel/bpf/trampoline.c (__bpf_prog_enter/__bpf_prog_exit:
// recursion guard and `misses`; the tail-call counter saved around the programs),
// include/linux/bpf.h (BPF_PROG_RUN_ARRAY, bpf_get_attach_cookie's run context) and
// xdp-tools lib/libxdp/xdp-dispatcher.c (the dispatcher program: chain_call_actions,
// placeholder functions returning XDP_DISPATCHER_RETVAL).
//
// A trampoline or extension is reached through a function's entry word (cbpf_text.func),
// which bpf_arch_text_poke's stand-in (cbpf_text_poke) switches between the function's own
// body, bpfp_tramp_entry and bpfp_ext_entry. Both entries find their image in the text
// header in front of the function's data block; the image is immutable and replaced whole
// (RCU), so a packet sees one complete configuration.
#include "BPFPrograms.h"

/// Runs one program attached to a trampoline, as the trampoline calls it: under the
/// recursion guard, with its cookie and its own tail-call counter, timed when stats are on.
static inline uint32_t run_attached(cbpf_xdp_md *md, const cbpf_tramp_item *it) {
    const cbpf_prog *p = it->prog;
    uint32_t ret = 0;
    if (cbpf_prog_enter_guard(p)) {
        uint64_t cookie = md->bpf_cookie;
        uint32_t tcc = md->tail_call_cnt;
        md->bpf_cookie = it->cookie;
        md->tail_call_cnt = 0;
        if (cbpf_bpf_stats_enabled_tracing()) {
            uint64_t start = cbpf_ktime_get_ns();
            ret = cbpf_prog_call(p, md);
            cbpf_prog_stats_account(p, cbpf_ktime_get_ns() - start);
        } else {
            ret = cbpf_prog_call(p, md);
        }
        md->tail_call_cnt = tcc;
        md->bpf_cookie = cookie;
    }
    cbpf_prog_exit_guard(p);
    return ret;
}

uint32_t bpfp_tramp_entry(const void *ctx, const void *insnsi) {
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    const cbpf_text_hdr *h = cbpf_text_hdr_of(insnsi);
    const cbpf_tramp_image *im = (const cbpf_tramp_image *)cbpf_rcu_dereference((void *const *)&h->image);
    if (__builtin_expect(im == NULL, 0)) return h->orig(ctx, insnsi);
    const uint32_t nentry = im->nfentry, nmod = im->nmodret, nexit = im->nfexit;
    const cbpf_tramp_item *items = im->items;
    for (uint32_t i = 0; i < nentry; i++) (void)run_attached(md, &items[i]);
    uint32_t ret = 0;
    int skip = 0;
    for (uint32_t i = 0; i < nmod; i++) {
        uint32_t r = run_attached(md, &items[nentry + i]);
        if (r != 0) {  /* fmod_ret: a non-zero value replaces the function's */
            ret = r;
            skip = 1;
            break;
        }
    }
    if (!skip) ret = h->orig(ctx, insnsi);  /* the counter the function sees is its own */
    if (nexit) {
        uint64_t saved = md->func_ret;
        md->func_ret = ret;
        for (uint32_t i = 0; i < nexit; i++) (void)run_attached(md, &items[nentry + nmod + i]);
        md->func_ret = saved;
    }
    return ret;
}

uint64_t bpfp_tramp_prog_enter(const void *prog, void *ctx, uint64_t cookie, bpfp_tramp_run_ctx *rc) {
    const cbpf_prog *p = (const cbpf_prog *)prog;
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    cbpf_text_observed();  /* `p` came as an immediate of patched-in code */
    if (!cbpf_prog_enter_guard(p)) return 0;
    rc->cookie = md->bpf_cookie;
    rc->tail_call_cnt = md->tail_call_cnt;
    md->bpf_cookie = cookie;
    md->tail_call_cnt = 0;
    if (cbpf_bpf_stats_enabled_tracing()) {
        uint64_t t = cbpf_ktime_get_ns();
        return t > 1 ? t : 2;
    }
    return 1;
}

void bpfp_tramp_prog_exit(const void *prog, void *ctx, uint64_t start, const bpfp_tramp_run_ctx *rc) {
    const cbpf_prog *p = (const cbpf_prog *)prog;
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    if (start) {
        md->tail_call_cnt = rc->tail_call_cnt;
        md->bpf_cookie = rc->cookie;
        if (start > 1) cbpf_prog_stats_account(p, cbpf_ktime_get_ns() - start);
    }
    cbpf_prog_exit_guard(p);
}

uint32_t bpfp_ext_entry(const void *ctx, const void *insnsi) {
    const cbpf_text_hdr *h = cbpf_text_hdr_of(insnsi);
    const cbpf_tramp_image *im = (const cbpf_tramp_image *)cbpf_rcu_dereference((void *const *)&h->image);
    if (__builtin_expect(im == NULL || im->ext == NULL, 0)) return h->orig(ctx, insnsi);
    const cbpf_prog *e = im->ext;
    __attribute__((musttail)) return cbpf_text_func(cbpf_prog_text(e))(ctx, e->insnsi);
}

uint32_t bpfp_run_array(const cbpf_run_array *arr, const void *ctx) {
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    uint32_t verdict = CBPF_XDP_PASS;
    if (!arr) return verdict;
    uint64_t cookie = md->bpf_cookie;
    for (uint32_t i = 0, n = arr->count; i < n; i++) {
        md->bpf_cookie = arr->items[i].cookie;
        md->tail_call_cnt = 0;
        uint32_t r = cbpf_prog_call(arr->items[i].prog, md);
        if (verdict == CBPF_XDP_PASS) verdict = r;
    }
    md->bpf_cookie = cookie;
    return verdict;
}

uint32_t bpfp_xdp_dispatcher(const void *ctx, const void *insnsi) {
    const bpfp_xdp_dispatcher_config *c = (const bpfp_xdp_dispatcher_config *)insnsi;
    const uint32_t n = c->num_progs_enabled;
    for (uint32_t i = 0; i < n && i < BPFP_XDP_DISPATCHER_SLOTS; i++) {
        uint32_t ret = cbpf_text_call(c->slots[i], ctx);
        /* libxdp: if (!((1U << ret) & chain_call_actions[i])) return ret; a value of 32 or
         * more has no bit and is returned. */
        if (ret >= 32 || !((1u << ret) & c->chain_call_actions[i])) return ret;
    }
    return CBPF_XDP_PASS;
}

__attribute__((noinline)) uint32_t bpfp_xdp_dispatcher_stub(const void *ctx, const void *insnsi) {
    (void)ctx;
    (void)insnsi;
    return BPFP_XDP_DISPATCHER_RETVAL;
}
