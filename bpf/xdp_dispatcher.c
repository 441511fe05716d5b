// xdp_dispatcher.c — a dispatcher in libxdp's style (xdp-tools lib/libxdp/xdp-dispatcher.c,
// written anew): a configuration in .rodata, ten global placeholder functions that
// extensions replace, and a main function calling the enabled ones in order, going on
// while each one's verdict has its bit set in the slot's chain_call_actions.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_DISPATCHER_ACTIONS 10
#define XDP_DISPATCHER_RETVAL 31

struct xdp_dispatcher_config {
	__u8 num_progs_enabled;
	__u32 chain_call_actions[MAX_DISPATCHER_ACTIONS];
	__u32 run_prios[MAX_DISPATCHER_ACTIONS];
};

/* Filled in before load (the loader rewrites .rodata); here: one slot, go on on PASS. */
static volatile const struct xdp_dispatcher_config conf = {
	.num_progs_enabled = 1,
	.chain_call_actions = { [0 ... MAX_DISPATCHER_ACTIONS - 1] = (1U << XDP_PASS) | (1U << XDP_DISPATCHER_RETVAL) },
};

#define PLACEHOLDER(n)                                          \
	__attribute__((noinline)) int prog##n(struct xdp_md *ctx) \
	{                                                       \
		volatile int ret = XDP_DISPATCHER_RETVAL;       \
		if (!ctx)                                       \
			return XDP_ABORTED;                     \
		return ret;                                     \
	}
PLACEHOLDER(0) PLACEHOLDER(1) PLACEHOLDER(2) PLACEHOLDER(3) PLACEHOLDER(4)
PLACEHOLDER(5) PLACEHOLDER(6) PLACEHOLDER(7) PLACEHOLDER(8) PLACEHOLDER(9)

#define SLOT(n)                                                         \
	if (num_progs_enabled < (n) + 1)                                \
		goto out;                                               \
	ret = prog##n(ctx);                                             \
	if (!((1U << ret) & conf.chain_call_actions[n]))                \
		return ret;

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	__u8 num_progs_enabled = conf.num_progs_enabled;
	int ret;

	SLOT(0) SLOT(1) SLOT(2) SLOT(3) SLOT(4)
	SLOT(5) SLOT(6) SLOT(7) SLOT(8) SLOT(9)
out:
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
