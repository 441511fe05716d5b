// tail_loop.c — a program that tail-calls itself through slot 0 of its prog array and
// counts every run: 1 + 33 runs per packet when slot 0 holds the program itself; then
// drops the packet (the bench's designs all drop).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jmp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} runs SEC(".maps");

SEC("xdp")
int tail_loop(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&runs, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	bpf_tail_call(ctx, &jmp_table, 0);
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
