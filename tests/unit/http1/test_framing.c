/* Unit tests for http1/http1.c: list tokens, decimals, and the response framing rules
 * (RFC 9112 section 6.3). */
#include <criterion/criterion.h>
#include <string.h>

#include "http1/http1.h"

static http1_framing_t frame(int minor, int status, int is_head, const char *const *kv, size_t n, int *rc)
{
    http1_hdr_t h[8];
    for (size_t i = 0; i < n; i++) {
        h[i].name = kv[2 * i], h[i].name_len = strlen(kv[2 * i]);
        h[i].value = kv[2 * i + 1], h[i].value_len = strlen(kv[2 * i + 1]);
    }
    http1_framing_t f;
    const char *err = NULL;
    *rc = http1_resp_framing(minor, status, is_head, h, n, &f, &err);
    return f;
}

Test(http1_headers, connection_tokens)
{
    const char *v = "keep-alive, X-Foo ,bar";
    cr_assert(http1_token_listed(v, strlen(v), "x-foo", 5));
    cr_assert(http1_token_listed(v, strlen(v), "bar", 3));
    cr_assert(http1_token_listed(v, strlen(v), "keep-alive", 10));
    cr_assert_not(http1_token_listed(v, strlen(v), "x-fo", 4));
    cr_assert_not(http1_token_listed("", 0, "x", 1));
}

Test(http1_decimal, parse_and_quantize)
{
    uint64_t v = 0;
    cr_assert_eq(http1_parse_u64("1500", 4, &v), 0);
    cr_assert_eq(v, 1500);
    cr_assert_eq(http1_parse_u64("", 0, &v), -1);
    cr_assert_eq(http1_parse_u64("12a", 3, &v), -1);
    cr_assert_eq(http1_parse_u64("-1", 2, &v), -1);
    cr_assert_eq(http1_parse_u64("1234567890123", 13, &v), -1);
}

Test(http1_framing, length_chunked_eof_none)
{
    int rc;
    const char *cl[] = {"Content-Length", "42"};
    http1_framing_t f = frame(1, 200, 0, cl, 1, &rc);
    cr_assert(rc == 0 && f.body == HTTP1_BODY_LENGTH && f.length == 42 && f.keepalive);
    const char *ch[] = {"Transfer-Encoding", "gzip, chunked", "content-length", "5"};
    f = frame(1, 200, 0, ch, 2, &rc);
    cr_assert(rc == 0 && f.body == HTTP1_BODY_CHUNKED && f.keepalive);
    const char *none[] = {"x", "y"};
    f = frame(1, 200, 0, none, 1, &rc);
    cr_assert(rc == 0 && f.body == HTTP1_BODY_EOF && !f.keepalive);
    f = frame(1, 204, 0, none, 1, &rc);
    cr_assert(rc == 0 && f.body == HTTP1_BODY_NONE && f.keepalive);
    f = frame(1, 200, 1, cl, 1, &rc); /* HEAD */
    cr_assert(rc == 0 && f.body == HTTP1_BODY_NONE && f.keepalive);
    const char *zero[] = {"content-length", "0"};
    f = frame(1, 200, 0, zero, 1, &rc);
    cr_assert(rc == 0 && f.body == HTTP1_BODY_NONE);
}

Test(http1_framing, connection_reuse_rules)
{
    int rc;
    const char *close_[] = {"Content-Length", "1", "Connection", "Close"};
    cr_assert_not(frame(1, 200, 0, close_, 2, &rc).keepalive);
    const char *h10[] = {"Content-Length", "1"};
    cr_assert_not(frame(0, 200, 0, h10, 1, &rc).keepalive);
    const char *h10ka[] = {"Content-Length", "1", "connection", "keep-alive"};
    cr_assert(frame(0, 200, 0, h10ka, 2, &rc).keepalive);
}

Test(http1_framing, rejects_bad_lengths)
{
    int rc;
    const char *bad[] = {"content-length", "12x"};
    frame(1, 200, 0, bad, 1, &rc);
    cr_assert_eq(rc, -1);
    const char *two[] = {"content-length", "1", "content-length", "2"};
    frame(1, 200, 0, two, 2, &rc);
    cr_assert_eq(rc, -1);
    const char *same[] = {"content-length", "2", "content-length", "2"};
    frame(1, 200, 0, same, 2, &rc);
    cr_assert_eq(rc, 0);
}
