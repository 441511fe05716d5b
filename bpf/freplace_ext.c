// freplace_ext.c — an extension replacing freplace_target.c's placeholder(): loaded with
// the target's fd as attach_prog_fd, attached with a link; from then on the target's
// packets get its verdict.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("freplace/placeholder")
int new_placeholder(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
