// CLiveBPF.h — the live kernel's bpf(2), as raw syscalls: one thin wrapper per command the
// lab's live backend uses (kernel/bpf/syscall.c's __sys_bpf dispatch; union bpf_attr from
// the UAPI header <linux/bpf.h>). Every wrapper returns what the syscall returns, or
// -errno: the kernel's answer unmodified (no libbpf retries or feature probing between).
#ifndef CLIVEBPF_H
#define CLIVEBPF_H
#include <stdint.h>
#include <stddef.h>

/// BPF_PROG_LOAD. `insns` are `cnt` 8-byte instructions; the verifier's log goes to `log`.
int clb_prog_load(uint32_t type, uint32_t expected_attach_type, const void *insns, uint32_t cnt,
                  const char *license, char *log, uint32_t log_size, uint32_t prog_flags,
                  int attach_prog_fd, uint32_t attach_btf_id, const char *name);
/// BPF_MAP_CREATE.
int clb_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                   uint32_t flags, const char *name);
int clb_map_update(int fd, const void *key, const void *value, uint64_t flags);
int clb_map_lookup(int fd, const void *key, void *value);
int clb_map_delete(int fd, const void *key);
int clb_map_next_key(int fd, const void *key, void *next);
/// BPF_PROG_TEST_RUN: `repeat` runs of one packet; fills retval, the kernel's mean duration
/// per run (ns) and the packet out (its size in *size_out, at most its capacity on input).
int clb_test_run(int fd, const void *data, uint32_t size, uint32_t repeat, uint32_t *retval,
                 uint32_t *duration, void *data_out, uint32_t *size_out);
int clb_prog_get_fd_by_id(uint32_t id);
int clb_map_get_fd_by_id(uint32_t id);
/// BPF_PROG_GET_NEXT_ID / BPF_MAP_GET_NEXT_ID: the next ID in *next.
int clb_prog_get_next_id(uint32_t start, uint32_t *next);
int clb_map_get_next_id(uint32_t start, uint32_t *next);
int clb_link_get_next_id(uint32_t start, uint32_t *next);
/// BPF_OBJ_GET_INFO_BY_FD for a program: its ID, type and whether it is JIT-ed.
int clb_prog_info(int fd, uint32_t *id, uint32_t *type, uint32_t *jited_len, uint32_t *xlated_len);
int clb_map_info(int fd, uint32_t *id, uint32_t *type, uint32_t *key_size, uint32_t *value_size, uint32_t *max_entries);
/// One RCU grace period of the live kernel (membarrier MEMBARRIER_CMD_GLOBAL, which is
/// synchronize_rcu()): callbacks queued before it (a bpffs inode's free, which puts what
/// the pin held) run soon after it returns. ~15 ms here. 0 or -errno.
int clb_synchronize_rcu(void);
/// The number of possible CPUs (/sys/devices/system/cpu/possible), or -errno.
int clb_possible_cpus(void);
/// RLIMIT_MEMLOCK's soft limit in bytes (UINT64_MAX when unlimited).
uint64_t clb_memlock_limit(void);
int clb_obj_pin(int fd, const char *path);
int clb_obj_get(const char *path);
/// BPF_LINK_CREATE (target: an ifindex for XDP, a program fd for freplace/fentry).
int clb_link_create(int prog_fd, int target, uint32_t attach_type, uint32_t flags);
int clb_link_update(int link_fd, int new_prog_fd, int old_prog_fd, uint32_t flags);
int clb_close(int fd);
int clb_link_detach(int link_fd);
int clb_link_get_fd_by_id(uint32_t id);
int clb_link_info(int fd, uint32_t *id);
/// BPF_OBJ_GET_INFO_BY_FD on a link: its ID, type, program's ID and, for an XDP link, the
/// device's ifindex (0 once detached). Any pointer may be NULL.
int clb_link_info_full(int fd, uint32_t *id, uint32_t *type, uint32_t *prog_id, uint32_t *xdp_ifindex);
/// XDP attach through rtnetlink (IFLA_XDP: fd, flags, expected fd); 0 or -errno.
/// prog_fd -1 detaches.
int clb_xdp_attach(int ifindex, int prog_fd, uint32_t flags, int expected_fd);
/// What is attached (rtnetlink RTM_GETLINK, the IFLA_XDP nest rtnl_xdp_fill writes): the
/// program ID per mode (skb, drv, hw; 0: none). 0 or -errno.
int clb_xdp_query(int ifindex, uint32_t *skb_id, uint32_t *drv_id, uint32_t *hw_id);
/// Enters the network namespace at `path` (this thread only); returns a handle to the
/// namespace it left (for clb_netns_leave) or -errno.
int clb_netns_enter(const char *path);
int clb_netns_leave(int saved);
/// if_nametoindex in the current namespace, or -errno.
int clb_ifindex(const char *name);

/// The TSC (rdtsc) — to time a test-run syscall from user space.
uint64_t clb_rdtsc(void);

#endif
