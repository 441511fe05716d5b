// kfuncs.c — kernel functions that trampolines can attach to.
//
// Mirrors: net/bpf/test_run.c (bpf_fentry_test1, bpf_modify_return_test and their
// ALLOW_ERROR_INJECTION mark), the functions the kernel's own selftests attach fentry,
// fexit and fmod_ret programs to and that BPF_PROG_TEST_RUN of a tracing program calls;
// and net/core/dev.c's do_xdp_generic, the receive path of generic (skb-mode) XDP.
// They have the lab's function shape (ctx, data block); their arguments are in
// ctx->kargs, where a trampoline would find them in the caller's registers.
#include "BPFPrograms.h"

__attribute__((noinline)) uint32_t bpfp_kfn_fentry_test1(const void *ctx, const void *insnsi) {
    (void)insnsi;
    const cbpf_xdp_md *md = (const cbpf_xdp_md *)ctx;
    return (uint32_t)((int32_t)md->kargs[0] + 1);
}

__attribute__((noinline)) uint32_t bpfp_kfn_modify_return_test(const void *ctx, const void *insnsi) {
    (void)insnsi;
    const cbpf_xdp_md *md = (const cbpf_xdp_md *)ctx;
    int32_t *b = (int32_t *)(uintptr_t)md->kargs[1];
    *b += 1;
    return (uint32_t)((int32_t)md->kargs[0] + *b);
}

__attribute__((noinline)) uint32_t bpfp_kfn_do_xdp_generic(const void *ctx, const void *insnsi) {
    (void)insnsi;
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    const cbpf_prog *p = (const cbpf_prog *)(uintptr_t)md->kargs[0];
    bpfp_prog_run_fn run = (bpfp_prog_run_fn)(uintptr_t)md->kargs[1];
    if (!p || !run) return CBPF_XDP_PASS;
    return run(p, md);
}
