// attach_data.c — seed 004's question: a program reading per-attachment data, four ways.
// Each is an fentry program (attached to the program whose packets it watches) that adds
// the value it reads to a sink, so the read cannot be optimised away:
//   by_cookie — bpf_get_attach_cookie(): the link's cookie;
//   by_array  — an array-map lookup;
//   by_hash   — a hash-map lookup;
//   by_global — a global variable (.data).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} data_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} data_hash SEC(".maps");

__u64 data_global = 7;
__u64 sink = 0;

SEC("fentry/target")
int by_cookie(void *ctx)
{
	sink += bpf_get_attach_cookie(ctx);
	return 0;
}

SEC("fentry/target")
int by_array(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&data_array, &key);

	if (v)
		sink += *v;
	return 0;
}

SEC("fentry/target")
int by_hash(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&data_hash, &key);

	if (v)
		sink += *v;
	return 0;
}

SEC("fentry/target")
int by_global(void *ctx)
{
	sink += data_global;
	return 0;
}

char _license[] SEC("license") = "GPL";
