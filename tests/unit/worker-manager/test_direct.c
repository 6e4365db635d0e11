/* Unit tests for the direct endpoint the worker manager publishes (worker-manager/pods.c,
 * docs/endpoints.md "The pod's direct port"): the pod's address with the direct port its
 * agent said in HELLO, next to the agent port's endpoint; nothing for an agent without one. */
#include <criterion/criterion.h>
#include <string.h>

#define WM_STATE
#include "worker-manager/internal.h"

Test(direct_endpoint, same_host_as_the_agent_port)
{
    wm_pod_t p;
    memset(&p, 0, sizeof(p));
    p.addr = (10u << 24) | (200u << 16) | (3u << 8) | 6u;
    p.port = 40001;
    p.direct_port = 40002;
    char ep[32], de[32];
    wm_pod_endpoint(&p, ep, sizeof(ep));
    wm_pod_direct_endpoint(&p, de, sizeof(de));
    cr_assert_str_eq(ep, "10.200.3.6:40001");
    cr_assert_str_eq(de, "10.200.3.6:40002");
}

Test(direct_endpoint, empty_without_a_direct_port)
{
    wm_pod_t p;
    memset(&p, 0, sizeof(p));
    p.addr = 0x7f000001;
    p.port = 5000;
    char de[32] = "stale";
    wm_pod_direct_endpoint(&p, de, sizeof(de));
    cr_assert_str_eq(de, "");
}
