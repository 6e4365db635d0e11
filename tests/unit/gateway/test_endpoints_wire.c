/* gateway/endpoints_wire.c: a faas.EndpointsApi request and the :authority host. */
#include <criterion/criterion.h>
#include <string.h>

#include "gateway/internal.h"

/* One gRPC frame around an EndpointsRequest naming fn (field 1). */
static size_t frame(uint8_t *out, const char *fn, int compressed)
{
    size_t n = strlen(fn);
    out[0] = (uint8_t)compressed;
    out[1] = out[2] = out[3] = 0;
    out[4] = (uint8_t)(n + 2);
    out[5] = 0x0a;
    out[6] = (uint8_t)n;
    memcpy(out + 7, fn, n);
    return n + 7;
}

Test(ep_wire, request)
{
    uint8_t b[128];
    char fn[64];
    const char *err = NULL;
    size_t n = frame(b, "mesh-1", 0);
    cr_assert_eq(gw_ep_parse_request(b, n, fn, &err), 0, "%s", err);
    cr_assert_str_eq(fn, "mesh-1");
    cr_assert_eq(gw_ep_parse_request(b, n - 1, fn, &err), -1, "a cut message");
    cr_assert_str_eq(fn, "");
    cr_assert_eq(gw_ep_parse_request(b, 4, fn, &err), -1, "a cut prefix");
    n = frame(b, "mesh", 1);
    cr_assert_eq(gw_ep_parse_request(b, n, fn, &err), -1, "compressed");
    const char *bad[] = {"", "Bad", "-x", "a_b", "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = frame(b, bad[i], 0);
        err = NULL;
        cr_assert_eq(gw_ep_parse_request(b, n, fn, &err), -1, "\"%s\" accepted", bad[i]);
        cr_assert_not_null(err);
    }
    /* two messages in one request */
    n = frame(b, "a", 0);
    memcpy(b + n, b, n);
    cr_assert_eq(gw_ep_parse_request(b, 2 * n, fn, &err), -1);
}

Test(ep_wire, authority_host)
{
    char h[64];
    cr_assert_eq(gw_ep_authority_host("gw.local:8081", 13, h, sizeof(h)), 8);
    cr_assert_str_eq(h, "gw.local");
    cr_assert_eq(gw_ep_authority_host("10.1.2.3", 8, h, sizeof(h)), 8);
    cr_assert_str_eq(h, "10.1.2.3");
    cr_assert_eq(gw_ep_authority_host("[fd00::1]:81", 12, h, sizeof(h)), 9);
    cr_assert_str_eq(h, "[fd00::1]");
    const char *bad[] = {"", ":81", "[fd00::1", "[]:1", "a\"b:1", "a/b", "user@h:1", "[a]b]:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(gw_ep_authority_host(bad[i], strlen(bad[i]), h, sizeof(h)), 0, "\"%s\" accepted", bad[i]);
        cr_assert_str_eq(h, "");
    }
}
