// freplace_target.c — a program whose verdict comes from a global function: the
// placeholder an extension (freplace_ext.c) replaces at run time, as libxdp's dispatcher
// slots are replaced.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__attribute__((noinline))
int placeholder(struct xdp_md *ctx)
{
	volatile int ret = XDP_PASS;  /* keeps the call from being folded away */
	return ctx ? ret : XDP_ABORTED;
}

SEC("xdp")
int freplace_target(struct xdp_md *ctx)
{
	return placeholder(ctx);
}

char _license[] SEC("license") = "GPL";
