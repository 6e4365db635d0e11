// FUZZ_SOURCES: http1/http1.c common/util.c
// FUZZ_PKGS:
/* Fuzzes the request side of http1/http1.c, which parses what a mesh client sends to
 * the agent's direct port: the request head, its framing rules, and that every piece the
 * parser points at lies inside the input; a head parsed whole must parse the same when
 * it arrives in two pieces (incomplete first). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1/http1.h"

static void inside(const char *buf, size_t len, const char *p, size_t n)
{
    if (n != 0 && (p < buf || p + n > buf + len))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    http1_request_t r;
    http1_hdr_t h[32];
    size_t n = 32;
    int rc = http1_parse_request(buf, size, &r, h, &n);
    if (rc == 0 || rc < -2 || (rc > 0 && (size_t)rc > size))
        abort();
    if (rc < 0)
        return 0;
    inside(buf, (size_t)rc, r.method, r.method_len);
    inside(buf, (size_t)rc, r.target, r.target_len);
    if (r.method_len == 0 || r.target_len == 0 || n > 32)
        abort();
    for (size_t i = 0; i < n; i++) {
        inside(buf, (size_t)rc, h[i].name, h[i].name_len);
        inside(buf, (size_t)rc, h[i].value, h[i].value_len);
    }
    /* a prefix of a complete head is incomplete, never malformed nor complete */
    http1_request_t r2;
    size_t n2 = 32;
    if (http1_parse_request(buf, (size_t)rc - 1, &r2, h, &n2) != -2)
        abort();
    http1_framing_t f;
    const char *err = NULL;
    n2 = 32;
    http1_parse_request(buf, size, &r2, h, &n2);
    if (http1_req_framing(r.minor, h, n2, &f, &err) == 0) {
        if (f.body != HTTP1_BODY_NONE && f.body != HTTP1_BODY_LENGTH && f.body != HTTP1_BODY_CHUNKED)
            abort(); /* a request is never read to EOF */
    } else if (err == NULL) {
        abort();
    }
    return 0;
}
