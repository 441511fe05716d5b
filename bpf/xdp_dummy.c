// xdp_dummy.c — the seed's pair: the smallest XDP programs, one passing every packet, one
// dropping it (the RFC's selftest loads "xdp_dummy" programs like these).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_dummy_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_dummy_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
