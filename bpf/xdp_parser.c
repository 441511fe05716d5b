// xdp_parser.c — a realistic parser: Ethernet, IPv4, UDP; the verdict by UDP destination
// port (9000 — where the bench's frames go — is dropped, anything else passes), and a per-port packet count in a
// hash map.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} port_counts SEC(".maps");

__u64 packets_seen = 0;     /* .bss */
const __u16 drop_port = 9000;  /* .rodata: the bench's traffic goes to UDP port 9000 */

SEC("xdp")
int xdp_parser(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 port;
	__u64 one = 1, *count;

	__sync_fetch_and_add(&packets_seen, 1);
	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_ABORTED;
	if (ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_ABORTED;
	port = bpf_ntohs(udp->dest);
	count = bpf_map_lookup_elem(&port_counts, &port);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&port_counts, &port, &one, BPF_NOEXIST);
	return port == drop_port ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
