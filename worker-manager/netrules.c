/* worker-manager/netrules.c - the host's packet filter for pods (nftables, through
 * libnftables): one table, inet faas_pods, shared by every worker manager of the host
 * and written whole by each at start (the last one's deny list wins). Pod links are
 * the fv* veths of netns.c.
 *
 * - input: a pod opens no connection to the host, whatever the service listens on
 *   (discovery, worker managers, the gateway's internals, sshd); replies to the
 *   connections the host opened to a pod's agent pass.
 * - forward: no pod reaches another; a pod reaches the outside (network: egress) except
 *   the deny list (the control plane's addresses), NATed behind the host; nothing comes
 *   in that the pod did not open. A function with network: none has no route out of its
 *   /30 at all (pods.c removes it at specialization).
 *
 * Egress needs IPv4 forwarding. If the host had it off, the worker manager turns it on
 * and the table drops every forwarded packet that is not a pod's, so the host routes
 * nothing else than before; the original setting is kept in /run/faas so that a restart
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

/* The host's forwarding before any worker manager touched it: 0 or 1. */
static int forwarding_before(void)
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

/* The ruleset text; deny is a comma-separated list of addresses or CIDRs ("" = none). */
int wm_net_rules_text(char *out, size_t cap, const char *deny, int host_forwarded)
{
    char elements[1200] = "";
    if (deny[0] != '\0')
        snprintf(elements, sizeof(elements), "        elements = { %s }\n", deny);
    int n = snprintf(
        out, cap,
        "table inet faas_pods {}\n"
        "delete table inet faas_pods\n"
        "table inet faas_pods {\n"
        "    set deny {\n"
        "        type ipv4_addr; flags interval;\n"
        "%s"
        "    }\n"
        "    chain input {\n"
        "        type filter hook input priority filter; policy accept;\n"
        "        iifname \"fv*\" ct state established,related accept\n"
        "        iifname \"fv*\" counter drop comment \"a pod opens nothing on the host\"\n"
        "    }\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy accept;\n"
        "        iifname \"fv*\" oifname \"fv*\" counter drop comment \"no pod reaches another\"\n"
        "        oifname \"fv*\" ct state established,related accept\n"
        "        oifname \"fv*\" counter drop comment \"nothing comes in that a pod did not open\"\n"
        "        iifname \"fv*\" ip daddr @deny counter drop comment \"the control plane\"\n"
        "        iifname \"fv*\" meta nfproto ipv4 accept\n"
        "        iifname \"fv*\" counter drop\n"
        "%s"
        "    }\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        "        ip saddr %u.%u.0.0/%d oifname != \"fv*\" masquerade\n"
        "    }\n"
        "}\n",
        elements, host_forwarded ? "" : "        counter drop comment \"the host forwarded nothing before the pods\"\n",
        WM_POD_NET >> 24, (WM_POD_NET >> 16) & 255, WM_POD_NET_PREFIX);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int wm_net_rules_apply(const char *deny, char *err, size_t errcap)
{
    int fwd = forwarding_before();
    char text[4096];
    if (wm_net_rules_text(text, sizeof(text), deny, fwd) != 0) {
        snprintf(err, errcap, "deny list too long");
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
