/* worker-manager/netrules.c - the host's packet filter for pods (nftables, through
 * libnftables): one table, inet faas_pods, shared by every worker manager of the host.
 * Pod links are the fv* veths of netns.c.
 *
 * - input: a pod opens no connection to the host, whatever the service listens on
 *   (discovery, worker managers, the gateway's internals, sshd); replies to the
 *   connections the host opened to a pod's agent pass.
 * - forward: no pod reaches another; a pod reaches the outside (network: egress) except
 *   the deny list (the control plane's addresses), NATed behind the host; nothing comes
 *   in that the pod did not open, except new connections from the allow list (the
 *   gateways' hosts, --allow-from), whose replies pass even to a denied address (a
 *   gateway's host is also a control-plane host). A function with network: none has no
 *   route out of its /30 at all (pods.c removes it at specialization).
 *
 * Each worker manager rewrites the chains and the deny and allow sets at start (the last
 * one's lists win: a host's worker managers serve the same gateways), but only adds its
 * own --pod-cidr to the set pod_nets that the masquerade rule matches: two worker managers
 * with distinct ranges on one host both keep egress, which a table rewritten whole (as
 * before issue 16) would take from the first. A range whose worker manager is gone stays
 * in the set: it NATs packets no pod sends, and goes at reboot. The sets auto-merge, so an
 * overlapping range or a deny list holding an address and its network is no error. The
 * set deny of earlier builds (no auto-merge, which a set cannot gain) is declared and
 * deleted, so an upgrade in place works.
 *
 * Egress needs IPv4 forwarding. If the host had it off, the worker manager turns it on
 * and the table drops every forwarded packet that is not a pod's, so the host routes
 * nothing else than before; the original setting is recorded in the table (set
 * fwd_before) and, in the machine's initial namespace, in /run/faas, so that a restart
 * does not mistake the worker manager's own change for the operator's. */
#include "worker-manager/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define FORWARD_FILE "/proc/sys/net/ipv4/ip_forward"
#define ORIG_DIR "/run/faas"
#define ORIG_FILE ORIG_DIR "/ip_forward.orig"

/* The initial network namespace's forwarding before any worker manager touched it,
 * kept in a file so that an older build's worker manager, which deletes the whole table,
 * does not lose it: 0 or 1. */
static int forwarding_before_file(void)
{
    char cur[8] = "0", orig[8];
    if (faas_read_small(ORIG_FILE, orig, sizeof(orig)) > 0)
        return orig[0] == '1';
    (void)faas_read_small(FORWARD_FILE, cur, sizeof(cur));
    (void)mkdir(ORIG_DIR, 0755);
    int fd = open(ORIG_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
        (void)!write(fd, cur, 1);
        close(fd);
    }
    return cur[0] == '1';
}

int wm_net_rules_recorded_forwarding(void)
{
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (nft == NULL)
        return -1;
    nft_ctx_buffer_output(nft);
    nft_ctx_buffer_error(nft);
    int v = -1;
    if (nft_run_cmd_from_buffer(nft, "list set inet faas_pods fwd_before") == 0) {
        const char *o = nft_ctx_get_output_buffer(nft), *e = o ? strstr(o, "elements = { ") : NULL;
        if (e != NULL)
            v = strtoul(e + 13, NULL, 0) != 0;
    }
    nft_ctx_free(nft);
    return v;
}

/* This process is in the network namespace of pid 1: the machine's (or its container's). */
static int initial_netns(void)
{
    struct stat a, b;
    return stat("/proc/self/ns/net", &a) == 0 && stat("/proc/1/ns/net", &b) == 0 && a.st_ino == b.st_ino &&
           a.st_dev == b.st_dev;
}

/* The namespace's forwarding before any worker manager: the table's record (it lives and
 * dies with the namespace, as the setting does), else the file of the initial namespace,
 * else the setting now. A file alone would be shared by every namespace of the machine:
 * a worker manager in another one (simulated hosts, a container) would record its own
 * namespace's setting as the machine's. */
static int forwarding_before(void)
{
    int v = wm_net_rules_recorded_forwarding();
    if (v >= 0)
        return v;
    if (initial_netns())
        return forwarding_before_file();
    char cur[8] = "0";
    (void)faas_read_small(FORWARD_FILE, cur, sizeof(cur));
    return cur[0] == '1';
}

/* The declarations every run makes (idempotent), then the emptying of what it rewrites. */
static const char DECLARE[] = "table inet faas_pods {\n"
                              "    set deny { type ipv4_addr; flags interval; }\n"
                              "    set pod_nets { type ipv4_addr; flags interval; auto-merge; }\n"
                              "    set cluster_nets { type ipv4_addr; flags interval; auto-merge; }\n"
                              "    set deny_nets { type ipv4_addr; flags interval; auto-merge; }\n"
                              "    set allow_nets { type ipv4_addr; flags interval; auto-merge; }\n"
                              "    set fwd_before { type mark; }\n"
                              "    chain input { type filter hook input priority filter; policy accept; }\n"
                              "    chain forward { type filter hook forward priority filter; policy accept; }\n"
                              "    chain postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
                              "}\n"
                              "flush chain inet faas_pods input\n"
                              "flush chain inet faas_pods forward\n"
                              "flush chain inet faas_pods postrouting\n"
                              "delete set inet faas_pods deny\n"
                              "flush set inet faas_pods deny_nets\n"
                              "flush set inet faas_pods allow_nets\n";

/* The rules; the forward chain ends with FORWARD_END (after an optional rule). */
static const char CHAINS[] =
    "table inet faas_pods {\n"
    "    chain input {\n"
    "        iifname \"fv*\" ct state established,related accept\n"
    "        iifname \"fv*\" counter drop comment \"a pod opens nothing on the host\"\n"
    "    }\n"
    "    chain forward {\n"
    "        iifname \"fv*\" oifname \"fv*\" counter drop comment \"no pod reaches another\"\n"
    "        oifname \"fv*\" ct state established,related accept\n"
    "        oifname \"fv*\" ip saddr @allow_nets ct state new accept comment \"the gateways' hosts\"\n"
    "        oifname \"fv*\" counter drop comment \"nothing comes in that a pod did not open\"\n"
    "        iifname \"fv*\" ip saddr != @pod_nets counter drop comment \"a pod sends from its own address\"\n"
    "        iifname \"fv*\" ct state established,related accept\n"
    "        iifname \"fv*\" ip daddr @cluster_nets counter drop comment \"no pod reaches another host's pods\"\n"
    "        iifname \"fv*\" ip daddr @deny_nets counter drop comment \"the control plane\"\n"
    "        iifname \"fv*\" meta nfproto ipv4 accept\n"
    "        iifname \"fv*\" counter drop\n";

static const char FORWARD_END[] = "    }\n"
                                  "    chain postrouting {\n"
                                  "        ip saddr @pod_nets oifname != \"fv*\" masquerade\n"
                                  "    }\n"
                                  "}\n";

int wm_net_rules_text(char *out, size_t cap, const wm_net_rules_t *r)
{
    uint32_t a = r->pod_net;
    int n =
        snprintf(out, cap,
                 "%sadd element inet faas_pods pod_nets { %u.%u.%u.%u/%d }\n"
                 "add element inet faas_pods fwd_before { %d }\n",
                 DECLARE, a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255, r->pod_prefix, r->host_forwarded ? 1 : 0);
    uint32_t k = r->cluster_net;
    if (n > 0 && (size_t)n < cap && r->cluster_prefix > 0)
        n += snprintf(out + n, cap - (size_t)n, "add element inet faas_pods cluster_nets { %u.%u.%u.%u/%d }\n",
                      k >> 24, (k >> 16) & 255, (k >> 8) & 255, k & 255, r->cluster_prefix);
    if (n > 0 && (size_t)n < cap && r->deny[0] != '\0')
        n += snprintf(out + n, cap - (size_t)n, "add element inet faas_pods deny_nets { %s }\n", r->deny);
    if (n > 0 && (size_t)n < cap && r->allow[0] != '\0')
        n += snprintf(out + n, cap - (size_t)n, "add element inet faas_pods allow_nets { %s }\n", r->allow);
    if (n > 0 && (size_t)n < cap)
        n += snprintf(
            out + n, cap - (size_t)n, "%s%s%s", CHAINS,
            r->host_forwarded ? "" : "        counter drop comment \"the host forwarded nothing before the pods\"\n",
            FORWARD_END);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int wm_net_rules_apply(const wm_net_rules_t *r, char *err, size_t errcap)
{
    wm_net_rules_t rr = *r;
    rr.host_forwarded = forwarding_before();
    char text[8192];
    if (wm_net_rules_text(text, sizeof(text), &rr) != 0) {
        snprintf(err, errcap, "deny or allow list too long");
        return -1;
    }
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (nft == NULL) {
        snprintf(err, errcap, "nftables: no context");
        return -1;
    }
    nft_ctx_buffer_error(nft);
    int rc = nft_run_cmd_from_buffer(nft, text);
    if (rc != 0) {
        const char *e = nft_ctx_get_error_buffer(nft);
        snprintf(err, errcap, "nftables: %.*s", (int)strcspn(e ? e : "", "\n"), e ? e : "failed");
    }
    nft_ctx_free(nft);
    if (rc == 0 && wm_write_file(FORWARD_FILE, "1") != 0) {
        snprintf(err, errcap, "cannot enable IPv4 forwarding: %s", strerror(errno));
        return -1;
    }
    return rc == 0 ? 0 : -1;
}
