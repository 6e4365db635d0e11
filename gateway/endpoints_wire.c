/* gateway/endpoints_wire.c - the untrusted bytes of a faas.EndpointsApi call (the
 * request message, the :authority host), parsed without I/O so that
 * tests/fuzz/fuzz_gw_endpoints.c can drive them alone. */
#include <string.h>

#include "gateway/internal.h"
#include "proto/faas.pb-c.h"

int gw_ep_parse_request(const uint8_t *buf, size_t len, char fn[64], const char **err)
{
    fn[0] = '\0';
    /* gRPC's length-prefixed message: one, uncompressed (we announce no encoding) */
    uint32_t mlen = len >= 5 ? (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4] : 0;
    if (len < 5 || buf[0] != 0 || mlen != len - 5)
        return *err = "one uncompressed EndpointsRequest expected", -1;
    Faas__EndpointsRequest *r = faas__endpoints_request__unpack(NULL, mlen, buf + 5);
    if (r == NULL)
        return *err = "EndpointsRequest does not parse", -1;
    size_t n = r->function != NULL ? strlen(r->function) : 0;
    const char *why;
    int ok = gw_route_name_check(r->function, n, &why) == 0; /* the routes' own rule */
    if (ok)
        memcpy(fn, r->function, n + 1);
    faas__endpoints_request__free_unpacked(r, NULL);
    if (!ok)
        return *err = "function: 1-63 of [a-z0-9-], not starting with '-'", -1;
    return 0;
}

size_t gw_ep_authority_host(const char *v, size_t n, char *out, size_t cap)
{
    out[0] = '\0';
    if (n == 0 || n >= cap)
        return 0;
    const char *end = v[0] == '[' ? memchr(v, ']', n) : NULL;
    const char *colon = memchr(v, ':', n);
    if (v[0] == '[' && (end == NULL || (end + 1 < v + n && end[1] != ':')))
        return 0; /* a bracket left open, or bytes between "]" and the port */
    size_t h = end != NULL ? (size_t)(end - v) + 1 : colon != NULL ? (size_t)(colon - v) : n;
    if (h == 0 || (end != NULL && h == 2))
        return 0;
    for (size_t i = 0; i < h; i++) {
        char c = v[i];
        int inner = end != NULL && i > 0 && i + 1 < h; /* inside brackets: an IPv6 literal */
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              (inner && c == ':') || (end != NULL && (i == 0 || i + 1 == h))))
            return 0;
    }
    memcpy(out, v, h);
    out[h] = '\0';
    return h;
}
