/* The pods' nftables ruleset text (netrules.c) and the /30 arithmetic (netns.c). The
 * rules' effect on packets is proven end to end by tests/e2e/test_pod_sandbox.py and
 * tests/e2e/test_multihost.py; here, as root, nftables itself takes the text in a network
 * namespace of the test's own (over an old table, and from two worker managers). */
#include <criterion/criterion.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker-manager/internal.h"

static const wm_net_rules_t DEFAULTS = {
    .deny = "", .allow = "", .pod_net = 0x0AC80000u, .pod_prefix = 16, .host_forwarded = 1};

Test(netrules, the_chains_are_rewritten_and_drop_what_pods_open)
{
    char t[8192];
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), &DEFAULTS), 0);
    /* declared if missing, then emptied and filled again, in one transaction: never deleted
     * whole, which would drop another worker manager's pod range */
    cr_expect(strstr(t, "table inet faas_pods {\n") == t, "%s", t);
    cr_expect(strstr(t, "delete table") == NULL, "%s", t);
    cr_expect(strstr(t, "flush chain inet faas_pods forward\n") != NULL, "%s", t);
    cr_expect(strstr(t, "iifname \"fv*\" counter drop comment \"a pod opens nothing on the host\"") != NULL);
    cr_expect(strstr(t, "iifname \"fv*\" oifname \"fv*\" counter drop") != NULL);
    cr_expect(strstr(t, "add element inet faas_pods pod_nets { 10.200.0.0/16 }") != NULL, "%s", t);
    cr_expect(strstr(t, "ip saddr @pod_nets oifname != \"fv*\" masquerade") != NULL, "%s", t);
    cr_expect(strstr(t, "deny_nets {") == strstr(t, "deny_nets { type"), "an empty deny list adds no element");
    cr_expect(strstr(t, "add element inet faas_pods allow_nets") == NULL, "an empty allow list adds no element");
    cr_expect(strstr(t, "the host forwarded nothing before the pods") == NULL, "the host forwarded already");
}

Test(netrules, deny_and_allow_lists_and_a_host_that_did_not_forward)
{
    char t[8192];
    wm_net_rules_t r = DEFAULTS;
    r.deny = "10.0.0.5,192.168.7.0/24";
    r.allow = "10.1.0.1/32,10.2.0.0/16";
    r.pod_net = 0x0A090100u; /* 10.9.1.0/24 */
    r.pod_prefix = 24;
    r.cluster_net = 0x0A090000u; /* 10.9.0.0/16 */
    r.cluster_prefix = 16;
    r.host_forwarded = 0;
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), &r), 0);
    cr_expect(strstr(t, "add element inet faas_pods deny_nets { 10.0.0.5,192.168.7.0/24 }") != NULL, "%s", t);
    cr_expect(strstr(t, "add element inet faas_pods allow_nets { 10.1.0.1/32,10.2.0.0/16 }") != NULL, "%s", t);
    cr_expect(strstr(t, "add element inet faas_pods pod_nets { 10.9.1.0/24 }") != NULL, "%s", t);
    /* the allowed hosts open connections to pods, and nothing else does */
    const char *allow = strstr(t, "oifname \"fv*\" ip saddr @allow_nets ct state new accept");
    const char *drop = strstr(t, "oifname \"fv*\" counter drop comment \"nothing comes in that a pod did not open\"");
    cr_expect(allow != NULL && drop != NULL && allow < drop, "%s", t);
    /* a pod's replies to an allowed host pass even when that host is on the deny list */
    const char *fwd = strstr(t, "chain forward {\n        iifname");
    const char *est = fwd ? strstr(fwd, "iifname \"fv*\" ct state established,related accept\n") : NULL;
    const char *deny = strstr(t, "iifname \"fv*\" ip daddr @deny_nets counter drop");
    cr_expect(est != NULL && deny != NULL && est < deny, "%s", t);
    /* no pod opens a connection into the cluster's pod ranges (another host's pods: the
     * allow list would let this host's masqueraded address in there), nor sends from an
     * address not its own */
    const char *cl = strstr(t, "iifname \"fv*\" ip daddr @cluster_nets counter drop");
    const char *spoof = strstr(t, "iifname \"fv*\" ip saddr != @pod_nets counter drop");
    const char *acc = strstr(t, "iifname \"fv*\" meta nfproto ipv4 accept");
    cr_expect(cl != NULL && spoof != NULL && acc != NULL && fwd < spoof && spoof < est && cl < acc, "%s", t);
    cr_expect(strstr(t, "add element inet faas_pods cluster_nets { 10.9.0.0/16 }") != NULL, "%s", t);
    /* forwarding was off: only pods' packets are forwarded now */
    cr_expect(strstr(t, "counter drop comment \"the host forwarded nothing before the pods\"") != NULL);
    char small[64];
    cr_expect_neq(wm_net_rules_text(small, sizeof(small), &r), 0, "too small a buffer is an error, not a cut");
}

/* Runs text through libnftables in this process's network namespace; its error or NULL. */
static const char *nft_run(const char *text, char *err, size_t cap)
{
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    cr_assert_not_null(nft);
    nft_ctx_buffer_error(nft);
    nft_ctx_buffer_output(nft);
    int rc = nft_run_cmd_from_buffer(nft, text);
    snprintf(err, cap, "%s", rc == 0 ? "" : nft_ctx_get_error_buffer(nft));
    nft_ctx_free(nft);
    return rc == 0 ? NULL : err;
}

/* The table as nft lists it. */
static void nft_list(char *out, size_t cap)
{
    struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
    nft_ctx_buffer_output(nft);
    nft_ctx_buffer_error(nft);
    cr_assert_eq(nft_run_cmd_from_buffer(nft, "list table inet faas_pods"), 0);
    snprintf(out, cap, "%s", nft_ctx_get_output_buffer(nft));
    nft_ctx_free(nft);
}

/* A network namespace of this test's own (criterion forks each test), or a skip. */
static void own_netns(void)
{
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0)
        cr_skip_test("needs root for a network namespace of its own");
}

Test(netrules, nftables_takes_it_over_an_old_table_and_from_two_worker_managers)
{
    own_netns();
    char err[1024], t[8192], list[16384];
    /* the table of builds before issue 16: a set deny without auto-merge, used by a rule */
    const char *old = "table inet faas_pods {\n"
                      "    set deny { type ipv4_addr; flags interval; elements = { 10.0.0.5 } }\n"
                      "    chain forward { type filter hook forward priority filter; policy accept;\n"
                      "        iifname \"fv*\" ip daddr @deny counter drop\n    }\n"
                      "    chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n"
                      "        ip saddr 10.200.0.0/16 oifname != \"fv*\" masquerade\n    }\n}\n";
    cr_assert_null(nft_run(old, err, sizeof(err)), "%s", err);
    /* the first worker manager: its deny list holds a network and an address in it */
    wm_net_rules_t a = DEFAULTS;
    a.deny = "10.1.0.0/24,10.1.0.1";
    a.allow = "10.1.0.1/32";
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), &a), 0);
    cr_assert_null(nft_run(t, err, sizeof(err)), "%s\n%s", err, t);
    /* the second, with another range; then the first again (a restart) */
    wm_net_rules_t b = a;
    b.pod_net = 0x0ACA0000u; /* 10.202.0.0/20 (not adjacent: the set would merge them) */
    b.pod_prefix = 20;
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), &b), 0);
    cr_assert_null(nft_run(t, err, sizeof(err)), "%s\n%s", err, t);
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), &a), 0);
    cr_assert_null(nft_run(t, err, sizeof(err)), "%s\n%s", err, t);
    nft_list(list, sizeof(list));
    cr_expect(strstr(list, "10.200.0.0/16") != NULL && strstr(list, "10.202.0.0/20") != NULL,
              "both ranges are masqueraded:\n%s", list);
    cr_expect(strstr(list, "set deny {") == NULL, "the old set is gone:\n%s", list);
    cr_expect(strstr(list, "10.1.0.0/24") != NULL, "%s", list);
    /* each chain holds one run's rules, not one per run */
    const char *m = strstr(list, "masquerade");
    cr_expect(m != NULL && strstr(m + 1, "masquerade") == NULL, "%s", list);
}

Test(netrules, the_forwarding_before_the_pods_is_recorded_in_the_namespace)
{
    own_netns();
    char err[1024], t[8192];
    cr_expect_eq(wm_net_rules_recorded_forwarding(), -1, "no table, no record");
    wm_net_rules_t r = DEFAULTS;
    r.host_forwarded = 0;
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), &r), 0);
    cr_assert_null(nft_run(t, err, sizeof(err)), "%s\n%s", err, t);
    cr_expect_eq(wm_net_rules_recorded_forwarding(), 0);
    /* a restart finds the record and writes it again */
    cr_assert_null(nft_run(t, err, sizeof(err)), "%s\n%s", err, t);
    cr_expect_eq(wm_net_rules_recorded_forwarding(), 0);
    /* in a namespace of its own, another record */
    if (unshare(CLONE_NEWNET) != 0)
        cr_skip_test("no second namespace");
    cr_expect_eq(wm_net_rules_recorded_forwarding(), -1);
    r.host_forwarded = 1;
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), &r), 0);
    cr_assert_null(nft_run(t, err, sizeof(err)), "%s\n%s", err, t);
    cr_expect_eq(wm_net_rules_recorded_forwarding(), 1);
}

Test(netns, blocks_are_slash_30s_of_the_pod_range)
{
    const uint32_t net = 0x0AC80000u;                                /* 10.200.0.0/16 */
    cr_expect_eq(wm_net_block_addr(net, 1, 0), 0x0AC80005u);         /* 10.200.0.5: host end */
    cr_expect_eq(wm_net_block_addr(net, 1, 1), 0x0AC80006u);         /* 10.200.0.6: the pod */
    cr_expect_eq(wm_net_block_addr(net, 16383, 1), 0x0AC8FFFEu);     /* the last block: 10.200.255.254 */
    cr_expect_eq(wm_net_block_addr(0x0A0B0C00u, 2, 1), 0x0A0B0C0Au); /* 10.11.12.0/24: 10.11.12.10 */
    char name[16];
    /* named by the block's address, so ranges of two worker managers never share a name
     * unless they share the address */
    wm_net_host_ifname(wm_net_block_addr(net, 16383, 0) & ~3u, name);
    cr_expect_str_eq(name, "fv2b23fff");
    wm_net_host_ifname(0xFFFFFFFCu, name);
    cr_expect_str_eq(name, "fv3fffffff", "the longest name fits IFNAMSIZ");
}
