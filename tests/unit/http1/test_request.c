/* Unit tests for the request side of http1/http1.c (the agent's direct port): the request
 * head parser and the request framing rules (RFC 9112 section 6.3). */
#include <criterion/criterion.h>
#include <string.h>

#include "http1/http1.h"

static int parse(const char *s, http1_request_t *r, http1_hdr_t *h, size_t *n)
{
    return http1_parse_request(s, strlen(s), r, h, n);
}

Test(http1_request, parses_a_whole_head)
{
    const char *s = "POST /a/b?x=1 HTTP/1.1\r\nHost: pod\r\nContent-Length:  5 \r\n\r\nhello";
    http1_request_t r;
    http1_hdr_t h[4];
    size_t n = 4;
    cr_assert_eq(parse(s, &r, h, &n), (int)(strstr(s, "hello") - s));
    cr_assert_eq(r.method_len, 4);
    cr_assert_eq(memcmp(r.method, "POST", 4), 0);
    cr_assert_eq(r.target_len, 8);
    cr_assert_eq(memcmp(r.target, "/a/b?x=1", 8), 0);
    cr_assert_eq(r.minor, 1);
    cr_assert_eq(n, 2);
    cr_assert_eq(h[1].value_len, 1); /* blanks around the value trimmed */
    cr_assert_eq(h[1].value[0], '5');
}

Test(http1_request, incomplete_then_complete)
{
    const char *s = "GET / HTTP/1.0\r\nA: b\r\n\r\n";
    http1_request_t r;
    http1_hdr_t h[4];
    for (size_t cut = 0; cut < strlen(s); cut++) {
        size_t n = 4;
        cr_assert_eq(http1_parse_request(s, cut, &r, h, &n), -2, "cut at %zu", cut);
    }
    size_t n = 4;
    cr_assert_eq(parse(s, &r, h, &n), (int)strlen(s));
    cr_assert_eq(r.minor, 0);
}

Test(http1_request, malformed_heads)
{
    static const char *bad[] = {
        "GET /\r\n\r\n",                                             /* no version */
        "GET / HTTP/2.0\r\n\r\n",                                    /* not 1.x */
        "GET  / HTTP/1.1\r\n\r\n",                                   /* empty target */
        "GET / x HTTP/1.1\r\n\r\n",                                  /* blank in the target */
        "G(T / HTTP/1.1\r\n\r\n",                                    /* method not a token */
        "GET / HTTP/1.1\r\nA b: c\r\n\r\n",                          /* blank in a name */
        "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",                      /* obs-fold */
        "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",                         /* bare CR */
        "GET / HTTP/1.1\r\nA: \x01\r\n\r\n",                         /* control byte */
        "GET / HTTP/1.1\r\na:1\r\nb:2\r\nc:3\r\nd:4\r\ne:5\r\n\r\n", /* more headers than room */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        http1_request_t r;
        http1_hdr_t h[4];
        size_t n = 4;
        cr_assert_eq(parse(bad[i], &r, h, &n), -1, "case %zu", i);
    }
}

static int framing(int minor, const char *const *kv, size_t n, http1_framing_t *f)
{
    http1_hdr_t h[8];
    for (size_t i = 0; i < n; i++) {
        h[i].name = kv[2 * i], h[i].name_len = strlen(kv[2 * i]);
        h[i].value = kv[2 * i + 1], h[i].value_len = strlen(kv[2 * i + 1]);
    }
    const char *err = NULL;
    int rc = http1_req_framing(minor, h, n, f, &err);
    cr_assert(rc == 0 || err != NULL);
    return rc;
}

Test(http1_request, framing_rules)
{
    http1_framing_t f;
    cr_assert_eq(framing(1, NULL, 0, &f), 0);
    cr_assert_eq(f.body, HTTP1_BODY_NONE);
    cr_assert(f.keepalive);
    const char *cl[] = {"Content-Length", "12", "content-length", "12"};
    cr_assert_eq(framing(1, cl, 2, &f), 0);
    cr_assert_eq(f.body, HTTP1_BODY_LENGTH);
    cr_assert_eq(f.length, 12);
    const char *te[] = {"Transfer-Encoding", "Chunked", "Connection", "close"};
    cr_assert_eq(framing(1, te, 2, &f), 0);
    cr_assert_eq(f.body, HTTP1_BODY_CHUNKED);
    cr_assert_not(f.keepalive);
    const char *ka10[] = {"Connection", "Keep-Alive"};
    cr_assert_eq(framing(0, ka10, 1, &f), 0);
    cr_assert(f.keepalive);
    cr_assert_eq(framing(0, NULL, 0, &f), 0);
    cr_assert_not(f.keepalive);
}

Test(http1_request, framing_refuses_smuggling_shapes)
{
    http1_framing_t f;
    const char *both[] = {"Content-Length", "3", "Transfer-Encoding", "chunked"};
    cr_assert_eq(framing(1, both, 2, &f), -1);
    const char *differ[] = {"Content-Length", "3", "Content-Length", "4"};
    cr_assert_eq(framing(1, differ, 2, &f), -1);
    const char *gzip[] = {"Transfer-Encoding", "gzip, chunked"};
    cr_assert_eq(framing(1, gzip, 1, &f), -1);
    const char *twice[] = {"Transfer-Encoding", "chunked", "Transfer-Encoding", "chunked"};
    cr_assert_eq(framing(1, twice, 2, &f), -1);
    const char *te10[] = {"Transfer-Encoding", "chunked"};
    cr_assert_eq(framing(0, te10, 1, &f), -1);
    const char *neg[] = {"Content-Length", "-1"};
    cr_assert_eq(framing(1, neg, 1, &f), -1);
}
