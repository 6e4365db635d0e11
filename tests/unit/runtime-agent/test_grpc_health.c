/* Unit tests: the agent's grpc.health.v1 reply check (runtime-agent/grpc_health.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "runtime-agent/grpc.h"

static int serving(const char *hex)
{
    uint8_t b[64];
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        b[i] = (uint8_t)v;
    }
    return agent_grpc_health_serving(b, n);
}

Test(grpc_health, serving_only_when_status_is_1)
{
    cr_expect(serving("00000000020801"));  /* SERVING */
    cr_expect(!serving("00000000020802")); /* NOT_SERVING */
    cr_expect(!serving("00000000020800")); /* UNKNOWN */
    cr_expect(!serving("0000000000"));     /* empty message: status defaults to UNKNOWN */
    cr_expect(!serving("01000000020801")); /* compressed: not understood */
    cr_expect(!serving("00000000030801")); /* length prefix disagrees */
    cr_expect(!serving("000000"));         /* truncated prefix */
    cr_expect(serving("000000000512016108"
                      "01"));                  /* unknown field 2 (bytes) skipped, then SERVING */
    cr_expect(!serving("000000000412ff0801")); /* bytes field longer than the message */
}
