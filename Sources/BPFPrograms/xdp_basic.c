// xdp_basic.c — the simplest native bodies: fixed XDP verdicts, a constant, a helper call.
// The kernel equivalents are one-instruction programs (r0 = N; exit) after JIT.
#include "BPFPrograms.h"

#define BODY __attribute__((noinline))

BODY uint32_t bpfp_xdp_pass(const void *ctx, const void *insnsi) { (void)ctx; (void)insnsi; return CBPF_XDP_PASS; }
BODY uint32_t bpfp_xdp_drop(const void *ctx, const void *insnsi) { (void)ctx; (void)insnsi; return CBPF_XDP_DROP; }
BODY uint32_t bpfp_xdp_tx(const void *ctx, const void *insnsi) { (void)ctx; (void)insnsi; return CBPF_XDP_TX; }
BODY uint32_t bpfp_xdp_aborted(const void *ctx, const void *insnsi) { (void)ctx; (void)insnsi; return CBPF_XDP_ABORTED; }

BODY uint32_t bpfp_xdp_redirect(const void *ctx, const void *insnsi) {
    cbpf_xdp_md *md = (cbpf_xdp_md *)ctx;
    md->redirect_ifindex = *(const uint32_t *)insnsi;
    return CBPF_XDP_REDIRECT;
}

BODY uint32_t bpfp_ret_const(const void *ctx, const void *insnsi) {
    (void)ctx;
    return *(const uint32_t *)insnsi;
}

BODY uint32_t bpfp_call_helper(const void *ctx, const void *insnsi) {
    const bpfp_helper_data *d = (const bpfp_helper_data *)insnsi;
    return d->fn(ctx, d->arg);
}

BODY uint32_t bpfp_xdp_port_mod(const void *ctx, const void *insnsi) {
    const cbpf_xdp_md *md = (const cbpf_xdp_md *)ctx;
    uint32_t mod = *(const uint32_t *)insnsi;
    if (md->data + 36 > md->data_end || mod == 0) return CBPF_XDP_ABORTED;
    uint32_t sport = ((uint32_t)md->data[34] << 8) | md->data[35];
    return sport % mod;
}
