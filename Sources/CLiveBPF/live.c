// live.c — raw bpf(2) calls (see CLiveBPF.h).
#include "CLiveBPF.h"
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <errno.h>

static int sys_bpf(int cmd, union bpf_attr *a) {
    long r = syscall(__NR_bpf, cmd, a, sizeof *a);
    return r < 0 ? -errno : (int)r;
}

static void copy_name(char dst[BPF_OBJ_NAME_LEN], const char *name) {
    if (!name) return;
    strncpy(dst, name, BPF_OBJ_NAME_LEN - 1);
}

int clb_prog_load(uint32_t type, uint32_t expected_attach_type, const void *insns, uint32_t cnt,
                  const char *license, char *log, uint32_t log_size, uint32_t prog_flags,
                  int attach_prog_fd, uint32_t attach_btf_id, const char *name) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = type;
    a.expected_attach_type = expected_attach_type;
    a.insns = (uintptr_t)insns;
    a.insn_cnt = cnt;
    a.license = (uintptr_t)license;
    if (log && log_size) {
        log[0] = 0;
        a.log_buf = (uintptr_t)log;
        a.log_size = log_size;
        a.log_level = 1;
    }
    a.prog_flags = prog_flags;
    if (attach_prog_fd >= 0) a.attach_prog_fd = attach_prog_fd;
    a.attach_btf_id = attach_btf_id;
    copy_name(a.prog_name, name);
    int fd = sys_bpf(BPF_PROG_LOAD, &a);
    if (fd == -ENOSPC && log && log_size) {
        /* the log did not fit: load again without it, so the answer is the program's */
        a.log_buf = 0; a.log_size = 0; a.log_level = 0;
        fd = sys_bpf(BPF_PROG_LOAD, &a);
    }
    return fd;
}

int clb_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                   uint32_t flags, const char *name) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = type;
    a.key_size = key_size;
    a.value_size = value_size;
    a.max_entries = max_entries;
    a.map_flags = flags;
    copy_name(a.map_name, name);
    return sys_bpf(BPF_MAP_CREATE, &a);
}

static int elem(int cmd, int fd, const void *key, void *value, uint64_t flags) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_fd = fd;
    a.key = (uintptr_t)key;
    a.value = (uintptr_t)value;
    a.flags = flags;
    return sys_bpf(cmd, &a);
}
int clb_map_update(int fd, const void *key, const void *value, uint64_t flags) { return elem(BPF_MAP_UPDATE_ELEM, fd, key, (void *)value, flags); }
int clb_map_lookup(int fd, const void *key, void *value) { return elem(BPF_MAP_LOOKUP_ELEM, fd, key, value, 0); }
int clb_map_delete(int fd, const void *key) { return elem(BPF_MAP_DELETE_ELEM, fd, key, NULL, 0); }
int clb_map_next_key(int fd, const void *key, void *next) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_fd = fd;
    a.key = (uintptr_t)key;
    a.next_key = (uintptr_t)next;
    return sys_bpf(BPF_MAP_GET_NEXT_KEY, &a);
}

int clb_test_run(int fd, const void *data, uint32_t size, uint32_t repeat, uint32_t *retval,
                 uint32_t *duration, void *data_out, uint32_t *size_out) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.test.prog_fd = fd;
    a.test.data_in = (uintptr_t)data;
    a.test.data_size_in = size;
    a.test.repeat = repeat;
    if (data_out && size_out) {
        a.test.data_out = (uintptr_t)data_out;
        a.test.data_size_out = *size_out;
    }
    int r = sys_bpf(BPF_PROG_TEST_RUN, &a);
    if (retval) *retval = a.test.retval;
    if (duration) *duration = a.test.duration;
    if (size_out) *size_out = a.test.data_size_out;
    return r;
}

static int by_id(int cmd, uint32_t id) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_id = id;  /* shares its place with map_id and link_id */
    return sys_bpf(cmd, &a);
}
int clb_prog_get_fd_by_id(uint32_t id) { return by_id(BPF_PROG_GET_FD_BY_ID, id); }
int clb_map_get_fd_by_id(uint32_t id) { return by_id(BPF_MAP_GET_FD_BY_ID, id); }

static int next_id(int cmd, uint32_t start, uint32_t *next) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.start_id = start;
    int r = sys_bpf(cmd, &a);
    if (r == 0 && next) *next = a.next_id;
    return r;
}
int clb_prog_get_next_id(uint32_t start, uint32_t *next) { return next_id(BPF_PROG_GET_NEXT_ID, start, next); }
int clb_map_get_next_id(uint32_t start, uint32_t *next) { return next_id(BPF_MAP_GET_NEXT_ID, start, next); }
int clb_link_get_next_id(uint32_t start, uint32_t *next) { return next_id(BPF_LINK_GET_NEXT_ID, start, next); }

/* BPF_OBJ_GET_INFO_BY_FD into `info` (of `len` bytes, zeroed first). */
static int get_info(int fd, void *info, uint32_t len) {
    memset(info, 0, len);
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.info.bpf_fd = fd;
    a.info.info_len = len;
    a.info.info = (uintptr_t)info;
    return sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a);
}

int clb_prog_info(int fd, uint32_t *id, uint32_t *type, uint32_t *jited_len, uint32_t *xlated_len) {
    struct bpf_prog_info info;
    int r = get_info(fd, &info, sizeof info);
    if (r == 0) {
        if (id) *id = info.id;
        if (type) *type = info.type;
        if (jited_len) *jited_len = info.jited_prog_len;
        if (xlated_len) *xlated_len = info.xlated_prog_len;
    }
    return r;
}

int clb_map_info(int fd, uint32_t *id, uint32_t *type, uint32_t *key_size, uint32_t *value_size, uint32_t *max_entries) {
    struct bpf_map_info info;
    int r = get_info(fd, &info, sizeof info);
    if (r == 0) {
        if (id) *id = info.id;
        if (type) *type = info.type;
        if (key_size) *key_size = info.key_size;
        if (value_size) *value_size = info.value_size;
        if (max_entries) *max_entries = info.max_entries;
    }
    return r;
}

int clb_possible_cpus(void) {
    /* "0-1", "0,2-5": the kernel's num_possible_cpus(), which sizes a per-CPU map's
     * user-space value (round_up(value_size, 8) per possible CPU). */
    FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
    if (!f) return -errno;
    char buf[256];
    int n = 0;
    if (fgets(buf, sizeof buf, f)) {
        char *p = buf;
        while (*p && *p != '\n') {
            char *end;
            long a = strtol(p, &end, 10), b = a;
            if (end == p) break;
            if (*end == '-') { p = end + 1; b = strtol(p, &end, 10); }
            n += (int)(b - a + 1);
            p = *end == ',' ? end + 1 : end;
        }
    }
    fclose(f);
    return n > 0 ? n : -EINVAL;
}

uint64_t clb_memlock_limit(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_MEMLOCK, &r) != 0) return 8u << 20;
    return r.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)r.rlim_cur;
}

int clb_synchronize_rcu(void) {
    /* membarrier(MEMBARRIER_CMD_GLOBAL) is synchronize_rcu() in kernel/sched/membarrier.c. */
    return syscall(__NR_membarrier, 1 /* MEMBARRIER_CMD_GLOBAL */, 0, 0) < 0 ? -errno : 0;
}

int clb_obj_pin(int fd, const char *path) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.bpf_fd = fd;
    a.pathname = (uintptr_t)path;
    return sys_bpf(BPF_OBJ_PIN, &a);
}

int clb_obj_get(const char *path) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.pathname = (uintptr_t)path;
    return sys_bpf(BPF_OBJ_GET, &a);
}

int clb_link_create(int prog_fd, int target, uint32_t attach_type, uint32_t flags) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.link_create.prog_fd = prog_fd;
    a.link_create.target_fd = target;  /* target_ifindex shares the place */
    a.link_create.attach_type = attach_type;
    a.link_create.flags = flags;
    return sys_bpf(BPF_LINK_CREATE, &a);
}

int clb_link_update(int link_fd, int new_prog_fd, int old_prog_fd, uint32_t flags) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.link_update.link_fd = link_fd;
    a.link_update.new_prog_fd = new_prog_fd;
    a.link_update.flags = flags;
    if (old_prog_fd >= 0) a.link_update.old_prog_fd = old_prog_fd;
    return sys_bpf(BPF_LINK_UPDATE, &a);
}

int clb_close(int fd) { return close(fd) < 0 ? -errno : 0; }

uint64_t clb_rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

int clb_link_detach(int link_fd) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.link_detach.link_fd = link_fd;
    return sys_bpf(BPF_LINK_DETACH, &a);
}

int clb_link_get_fd_by_id(uint32_t id) { return by_id(BPF_LINK_GET_FD_BY_ID, id); }

int clb_link_info(int fd, uint32_t *id) {
    return clb_link_info_full(fd, id, NULL, NULL, NULL);
}

int clb_link_info_full(int fd, uint32_t *id, uint32_t *type, uint32_t *prog_id, uint32_t *xdp_ifindex) {
    struct bpf_link_info info;
    memset(&info, 0, sizeof info);
    int r = get_info(fd, &info, sizeof info);
    if (r != 0) return r;
    if (id) *id = info.id;
    if (type) *type = info.type;
    if (prog_id) *prog_id = info.prog_id;
    /* bpf_xdp_link_fill_link_info: the device's ifindex, 0 once the link is detached. */
    if (xdp_ifindex) *xdp_ifindex = info.type == BPF_LINK_TYPE_XDP ? info.xdp.ifindex : 0;
    return 0;
}
