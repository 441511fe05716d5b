// netdev.c — XDP attach on the live kernel's devices (rtnetlink RTM_SETLINK with a nested
// IFLA_XDP: the fd, the flags, the expected fd — what `ip link set … xdp` sends, and what
// dev_change_xdp_fd / dev_xdp_attach check), and entering a network namespace (setns) for
// the calling thread only.
#include "CLiveBPF.h"
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sched.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <errno.h>

struct req {
    struct nlmsghdr nh;
    struct ifinfomsg ifi;
    char attrs[64];
};

static struct rtattr *add_attr(struct nlmsghdr *nh, int type, const void *data, int len) {
    struct rtattr *rta = (struct rtattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));
    rta->rta_type = (unsigned short)type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len) memcpy(RTA_DATA(rta), data, (size_t)len);
    nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(rta->rta_len);
    return rta;
}

/* An rtnetlink request about one device (its ifinfomsg header, no attributes yet). */
static void init_req(struct req *r, int type, int flags, int ifindex) {
    memset(r, 0, sizeof *r);
    r->nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    r->nh.nlmsg_type = (unsigned short)type;
    r->nh.nlmsg_flags = (unsigned short)flags;
    r->nh.nlmsg_seq = 1;
    r->ifi.ifi_family = AF_UNSPEC;
    r->ifi.ifi_index = ifindex;
}

int clb_xdp_attach(int ifindex, int prog_fd, uint32_t flags, int expected_fd) {
    int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (sock < 0) return -errno;
    struct req r;
    init_req(&r, RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
    struct rtattr *nest = add_attr(&r.nh, IFLA_XDP | NLA_F_NESTED, NULL, 0);
    add_attr(&r.nh, IFLA_XDP_FD, &prog_fd, sizeof prog_fd);
    if (flags) add_attr(&r.nh, IFLA_XDP_FLAGS, &flags, sizeof flags);
    if (expected_fd >= 0) add_attr(&r.nh, IFLA_XDP_EXPECTED_FD, &expected_fd, sizeof expected_fd);
    nest->rta_len = (unsigned short)((char *)&r + r.nh.nlmsg_len - (char *)nest);
    int rc = 0;
    if (send(sock, &r, r.nh.nlmsg_len, 0) < 0) {
        rc = -errno;
    } else {
        char buf[4096];
        ssize_t n = recv(sock, buf, sizeof buf, 0);
        if (n < 0) {
            rc = -errno;
        } else {
            struct nlmsghdr *h = (struct nlmsghdr *)buf;
            if (NLMSG_OK(h, (unsigned)n) && h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = (struct nlmsgerr *)NLMSG_DATA(h);
                rc = e->error;  /* 0 or -errno */
            }
        }
    }
    close(sock);
    return rc;
}

int clb_netns_enter(const char *path) {
    int saved = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (saved < 0) return -errno;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { int e = errno; close(saved); return -e; }
    if (setns(fd, CLONE_NEWNET) < 0) { int e = errno; close(fd); close(saved); return -e; }
    close(fd);
    return saved;
}

int clb_netns_leave(int saved) {
    int r = setns(saved, CLONE_NEWNET) < 0 ? -errno : 0;
    close(saved);
    return r;
}

int clb_ifindex(const char *name) {
    unsigned idx = if_nametoindex(name);
    return idx ? (int)idx : -errno;
}

int clb_xdp_query(int ifindex, uint32_t *skb_id, uint32_t *drv_id, uint32_t *hw_id) {
    *skb_id = *drv_id = *hw_id = 0;
    int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (sock < 0) return -errno;
    struct req r;
    init_req(&r, RTM_GETLINK, NLM_F_REQUEST, ifindex);
    int rc = -ENOENT;
    char buf[32768];
    if (send(sock, &r, r.nh.nlmsg_len, 0) < 0) {
        rc = -errno;
    } else {
        ssize_t n = recv(sock, buf, sizeof buf, 0);
        if (n < 0) {
            rc = -errno;
        } else {
            for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
                if (h->nlmsg_type == NLMSG_ERROR) { rc = ((struct nlmsgerr *)NLMSG_DATA(h))->error; break; }
                if (h->nlmsg_type != RTM_NEWLINK) continue;
                struct ifinfomsg *ifi = NLMSG_DATA(h);
                int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(sizeof *ifi);
                rc = 0;
                for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
                    if ((a->rta_type & NLA_TYPE_MASK) != IFLA_XDP) continue;
                    int xl = (int)RTA_PAYLOAD(a);
                    uint8_t attached = 0;
                    uint32_t only = 0;
                    for (struct rtattr *x = RTA_DATA(a); RTA_OK(x, xl); x = RTA_NEXT(x, xl)) {
                        uint32_t v = 0;
                        if (RTA_PAYLOAD(x) >= 4) memcpy(&v, RTA_DATA(x), 4);
                        switch (x->rta_type) {
                        case IFLA_XDP_ATTACHED: attached = *(uint8_t *)RTA_DATA(x); break;
                        case IFLA_XDP_PROG_ID: only = v; break;
                        case IFLA_XDP_SKB_PROG_ID: *skb_id = v; break;
                        case IFLA_XDP_DRV_PROG_ID: *drv_id = v; break;
                        case IFLA_XDP_HW_PROG_ID: *hw_id = v; break;
                        }
                    }
                    /* One mode attached: the kernel sends only IFLA_XDP_PROG_ID and the mode. */
                    if (attached == XDP_ATTACHED_SKB && !*skb_id) *skb_id = only;
                    if (attached == XDP_ATTACHED_DRV && !*drv_id) *drv_id = only;
                    if (attached == XDP_ATTACHED_HW && !*hw_id) *hw_id = only;
                }
                break;
            }
        }
    }
    close(sock);
    return rc;
}
