/* The pods' nftables ruleset text (netrules.c) and the /30 arithmetic (netns.c). The
 * rules' effect on packets is proven end to end by tests/e2e/test_pod_sandbox.py. */
#include <criterion/criterion.h>
#include <string.h>

#include "worker-manager/internal.h"

Test(netrules, the_table_replaces_itself_and_drops_what_pods_open)
{
    char t[4096];
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), "", 1), 0);
    /* rewritten whole: created if missing, deleted, made again, in one transaction */
    cr_expect(strstr(t, "table inet faas_pods {}\ndelete table inet faas_pods\ntable inet faas_pods {") == t, "%s", t);
    cr_expect(strstr(t, "iifname \"fv*\" counter drop comment \"a pod opens nothing on the host\"") != NULL);
    cr_expect(strstr(t, "iifname \"fv*\" oifname \"fv*\" counter drop") != NULL);
    cr_expect(strstr(t, "ip saddr 10.200.0.0/16 oifname != \"fv*\" masquerade") != NULL, "%s", t);
    cr_expect(strstr(t, "elements") == NULL, "an empty deny list has no elements line");
    cr_expect(strstr(t, "the host forwarded nothing before the pods") == NULL, "the host forwarded already");
}

Test(netrules, deny_list_and_a_host_that_did_not_forward)
{
    char t[4096];
    cr_assert_eq(wm_net_rules_text(t, sizeof(t), "10.0.0.5,192.168.7.0/24", 0), 0);
    cr_expect(strstr(t, "elements = { 10.0.0.5,192.168.7.0/24 }") != NULL, "%s", t);
    /* forwarding was off: only pods' packets are forwarded now */
    cr_expect(strstr(t, "counter drop comment \"the host forwarded nothing before the pods\"") != NULL);
    char small[64];
    cr_expect_neq(wm_net_rules_text(small, sizeof(small), "", 0), 0, "too small a buffer is an error, not a cut");
}

Test(netns, blocks_are_slash_30s_of_the_pod_range)
{
    cr_expect_eq(wm_net_block_addr(1, 0), 0x0AC80005u);     /* 10.200.0.5: host end */
    cr_expect_eq(wm_net_block_addr(1, 1), 0x0AC80006u);     /* 10.200.0.6: the pod */
    cr_expect_eq(wm_net_block_addr(16383, 1), 0x0AC8FFFEu); /* the last block: 10.200.255.254 */
    char name[16];
    wm_net_host_ifname(16383, name);
    cr_expect_str_eq(name, "fv3fff");
}
