/* worker-manager/netns.c - a pod's network: a veth pair from the host into the pod's
 * network namespace, a /30 of the host's --pod-cidr (host end .1, pod end .2 as eth0, its default
 * route via the host end), and the pod's loopback up. Done by the spawner helper (root,
 * single-threaded) right after it clones a pod, so it is paid while the pod waits in the
 * warm pool, never on a cold start. rtnetlink through libmnl.
 *
 * The host end's name is the pod's lease on its /30: "fv" and the block's address / 4 in
 * hex (at most 8 digits, so it fits IFNAMSIZ). The kernel refuses a second link of one
 * name, so two worker managers on one host (or a stale pod of a killed one) never share
 * an address, whether their ranges are distinct or overlap; the pair goes when the pod's
 * namespace does. */
#include "worker-manager/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Random tries at a free block before giving up (a /28 has 3 blocks: 64 tries miss a free
 * one with odds (2/3)^64 when two are taken). */
#define TRIES 64

uint32_t wm_net_block_addr(uint32_t net, uint32_t block, int pod_end)
{
    return net + (block << 2) + (pod_end ? 2u : 1u);
}

void wm_net_host_ifname(uint32_t block_addr, char out[IFNAMSIZ])
{
    snprintf(out, IFNAMSIZ, "fv%x", block_addr >> 2);
}

/* The blocks of a range: 2^(32-prefix-2), block 0 left out (the network address). */
typedef struct {
    uint32_t net;
    uint32_t blocks;
} range_t;

typedef struct {
    struct mnl_socket *nl;
    uint32_t seq, portid;
} nl_t;

static int nl_open(nl_t *n)
{
    n->nl = mnl_socket_open(NETLINK_ROUTE);
    if (n->nl == NULL || mnl_socket_bind(n->nl, 0, MNL_SOCKET_AUTOPID) != 0) {
        if (n->nl != NULL)
            mnl_socket_close(n->nl);
        n->nl = NULL;
        return -1;
    }
    n->portid = mnl_socket_get_portid(n->nl);
    n->seq = (uint32_t)time(NULL);
    return 0;
}

static void nl_close(nl_t *n)
{
    if (n->nl != NULL)
        mnl_socket_close(n->nl);
    n->nl = NULL;
}

static struct nlmsghdr *msg(char *buf, nl_t *n, uint16_t type, uint16_t flags)
{
    struct nlmsghdr *h = mnl_nlmsg_put_header(buf);
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    h->nlmsg_seq = ++n->seq;
    return h;
}

/* Sends h and waits for its ack; data_cb sees the replies (RTM_GETLINK). 0 or -1 (errno). */
static int talk(nl_t *n, struct nlmsghdr *h, mnl_cb_t data_cb, void *data)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    if (mnl_socket_sendto(n->nl, h, h->nlmsg_len) < 0)
        return -1;
    for (;;) {
        ssize_t r = mnl_socket_recvfrom(n->nl, buf, sizeof(buf));
        if (r < 0)
            return -1;
        int rc = mnl_cb_run(buf, (size_t)r, h->nlmsg_seq, n->portid, data_cb, data);
        if (rc <= MNL_CB_STOP)
            return rc == MNL_CB_STOP ? 0 : -1;
    }
}

/* fv<block> in the host, its peer (named eth0 at once: a new namespace has none) in the
 * namespace of pid. */
static int add_veth(nl_t *n, const char *host, pid_t pid)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *h = msg(buf, n, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(h, sizeof(*ifm));
    ifm->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(h, IFLA_IFNAME, host);
    struct nlattr *info = mnl_attr_nest_start(h, IFLA_LINKINFO);
    mnl_attr_put_strz(h, IFLA_INFO_KIND, "veth");
    struct nlattr *data = mnl_attr_nest_start(h, IFLA_INFO_DATA);
    struct nlattr *peer = mnl_attr_nest_start(h, VETH_INFO_PEER);
    /* the peer's attributes follow an ifinfomsg of its own, inside the nest */
    struct ifinfomsg *pm = mnl_nlmsg_get_payload_tail(h);
    memset(pm, 0, sizeof(*pm));
    h->nlmsg_len += MNL_ALIGN(sizeof(*pm));
    mnl_attr_put_strz(h, IFLA_IFNAME, "eth0");
    mnl_attr_put_u32(h, IFLA_NET_NS_PID, (uint32_t)pid);
    mnl_attr_nest_end(h, peer);
    mnl_attr_nest_end(h, data);
    mnl_attr_nest_end(h, info);
    return talk(n, h, NULL, NULL);
}

static int link_up(nl_t *n, int ifindex)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *h = msg(buf, n, RTM_NEWLINK, 0);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(h, sizeof(*ifm));
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_index = ifindex;
    ifm->ifi_flags = IFF_UP;
    ifm->ifi_change = IFF_UP;
    return talk(n, h, NULL, NULL);
}

static int add_addr(nl_t *n, int ifindex, uint32_t addr)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *h = msg(buf, n, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(h, sizeof(*ifa));
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = 30;
    ifa->ifa_index = (uint32_t)ifindex;
    uint32_t be = htonl(addr);
    mnl_attr_put_u32(h, IFA_LOCAL, be);
    mnl_attr_put_u32(h, IFA_ADDRESS, be);
    return talk(n, h, NULL, NULL);
}

static int add_default_route(nl_t *n, int ifindex, uint32_t gw)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *h = msg(buf, n, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
    struct rtmsg *rt = mnl_nlmsg_put_extra_header(h, sizeof(*rt));
    rt->rtm_family = AF_INET;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_protocol = RTPROT_BOOT;
    rt->rtm_scope = RT_SCOPE_UNIVERSE;
    rt->rtm_type = RTN_UNICAST;
    mnl_attr_put_u32(h, RTA_GATEWAY, htonl(gw));
    mnl_attr_put_u32(h, RTA_OIF, (uint32_t)ifindex);
    return talk(n, h, NULL, NULL);
}

typedef struct {
    int index;
    uint8_t mac[6];
    int has_mac;
} link_t;

static int on_link_attr(const struct nlattr *a, void *data)
{
    link_t *l = data;
    if (mnl_attr_get_type(a) == IFLA_ADDRESS && mnl_attr_get_payload_len(a) == 6) {
        memcpy(l->mac, mnl_attr_get_payload(a), 6);
        l->has_mac = 1;
    }
    return MNL_CB_OK;
}

static int on_link(const struct nlmsghdr *h, void *data)
{
    const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(h);
    ((link_t *)data)->index = ifm->ifi_index;
    return mnl_attr_parse(h, sizeof(*ifm), on_link_attr, data);
}

/* The link's index and hardware address; 0 or -1. */
static int link_of(nl_t *n, const char *name, link_t *l)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *h = msg(buf, n, RTM_GETLINK, 0);
    struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(h, sizeof(*ifm));
    ifm->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(h, IFLA_IFNAME, name);
    memset(l, 0, sizeof(*l));
    return talk(n, h, on_link, l) == 0 && l->index > 0 && l->has_mac ? 0 : -1;
}

/* A permanent neighbour entry: the first packet each way after a cold start goes out
 * at once instead of waiting for an ARP exchange over the veth. */
static int add_neigh(nl_t *n, int ifindex, uint32_t addr, const uint8_t mac[6])
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *h = msg(buf, n, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
    struct ndmsg *nd = mnl_nlmsg_put_extra_header(h, sizeof(*nd));
    nd->ndm_family = AF_INET;
    nd->ndm_ifindex = ifindex;
    nd->ndm_state = NUD_PERMANENT;
    mnl_attr_put_u32(h, NDA_DST, htonl(addr));
    mnl_attr_put(h, NDA_LLADDR, 6, mac);
    return talk(n, h, NULL, NULL);
}

/* A netlink socket of the pod's namespace: created there, it stays bound to it after the
 * helper steps back (the helper is single-threaded, so it may setns). */
static int nl_open_in(nl_t *n, pid_t pid, int self_net)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = setns(fd, CLONE_NEWNET);
    close(fd);
    if (rc != 0)
        return -1;
    rc = nl_open(n);
    int e = errno;
    /* Ports below 1024 for anyone in the pod's own namespace, as Docker does: an image's
     * root has CAP_NET_BIND_SERVICE only in the images' user namespace, which does not
     * own this network namespace, so an nginx-style image on port 80 could not bind.
     * Nothing outside the pod sees these ports. */
    (void)wm_write_file("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
    if (setns(self_net, CLONE_NEWNET) != 0)
        return -2; /* every later link would land in the pod: the caller must stop */
    errno = e;
    return rc;
}

/* Inside the pod: lo and eth0 up, eth0's address, the default route via the host end,
 * the host end's hardware address. */
static int configure_pod(nl_t *pn, const range_t *R, uint32_t block, const link_t *host, link_t *eth0,
                         const char **what)
{
    *what = "pod loopback up";
    if (link_up(pn, 1) != 0)
        return -1;
    *what = "pod eth0";
    if (link_of(pn, "eth0", eth0) != 0)
        return -1;
    *what = "pod address";
    if (add_addr(pn, eth0->index, wm_net_block_addr(R->net, block, 1)) != 0)
        return -1;
    *what = "pod eth0 up";
    if (link_up(pn, eth0->index) != 0)
        return -1;
    *what = "pod neighbour";
    if (add_neigh(pn, eth0->index, wm_net_block_addr(R->net, block, 0), host->mac) != 0)
        return -1;
    *what = "pod default route";
    return add_default_route(pn, eth0->index, wm_net_block_addr(R->net, block, 0));
}

/* The host end: its address and up. */
static int configure_host(nl_t *hn, const range_t *R, const char *name, uint32_t block, link_t *host, const char **what)
{
    *what = "host veth";
    if (link_of(hn, name, host) != 0)
        return -1;
    *what = "host veth address";
    if (add_addr(hn, host->index, wm_net_block_addr(R->net, block, 0)) != 0)
        return -1;
    *what = "host veth up";
    return link_up(hn, host->index);
}

/* A free block: random tries, the link name is the lock. */
static int claim_block(nl_t *hn, const range_t *R, pid_t pid, uint32_t *block, char host[IFNAMSIZ])
{
    for (int i = 0; i < TRIES; i++) {
        uint32_t r;
        if (getrandom(&r, sizeof(r), 0) != sizeof(r))
            return -1;
        *block = 1 + r % (R->blocks - 1);
        wm_net_host_ifname(R->net + (*block << 2), host);
        if (add_veth(hn, host, pid) == 0)
            return 0;
        if (errno != EEXIST && errno != ENOTUNIQ)
            return -1;
    }
    errno = EADDRINUSE;
    return -1;
}

/* network: none: the pod's default route goes, so nothing beyond its /30 is routable
 * (and the host end drops what the pod opens: netrules.c). */
static int del_default_route(nl_t *n)
{
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *h = msg(buf, n, RTM_DELROUTE, 0);
    struct rtmsg *rt = mnl_nlmsg_put_extra_header(h, sizeof(*rt));
    rt->rtm_family = AF_INET;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_scope = RT_SCOPE_NOWHERE;
    return talk(n, h, NULL, NULL);
}

int wm_net_no_egress(pid_t pid, int self_net, char *err, size_t errcap)
{
    nl_t pn = {0};
    int in = nl_open_in(&pn, pid, self_net);
    if (in == -2) {
        snprintf(err, errcap, "lost the helper's network namespace: %s", strerror(errno));
        return -2;
    }
    int rc = in == 0 ? del_default_route(&pn) : -1;
    if (rc != 0)
        snprintf(err, errcap, "network none: %s", strerror(errno));
    nl_close(&pn);
    return rc;
}

int wm_net_setup(pid_t pid, int self_net, uint32_t net, int prefix, uint32_t *pod_addr, char *err, size_t errcap)
{
    const range_t R = {.net = net, .blocks = 1u << (32 - prefix - 2)};
    nl_t hn = {0}, pn = {0};
    uint32_t block = 0;
    char host[IFNAMSIZ];
    const char *what = "netlink";
    int rc = -1;
    if (nl_open(&hn) != 0)
        goto out;
    what = "veth pair";
    if (claim_block(&hn, &R, pid, &block, host) != 0)
        goto out;
    what = "enter the pod's network namespace";
    int in = nl_open_in(&pn, pid, self_net);
    if (in == -2) {
        snprintf(err, errcap, "lost the helper's network namespace: %s", strerror(errno));
        nl_close(&hn);
        return -2;
    }
    link_t hl, pl;
    if (in != 0 || configure_host(&hn, &R, host, block, &hl, &what) != 0 ||
        configure_pod(&pn, &R, block, &hl, &pl, &what) != 0)
        goto out;
    what = "host neighbour";
    if (add_neigh(&hn, hl.index, wm_net_block_addr(net, block, 1), pl.mac) != 0)
        goto out;
    *pod_addr = wm_net_block_addr(net, block, 1);
    rc = 0;
out:
    if (rc != 0)
        snprintf(err, errcap, "pod network: %s: %s", what, strerror(errno));
    nl_close(&pn);
    nl_close(&hn);
    return rc;
}
