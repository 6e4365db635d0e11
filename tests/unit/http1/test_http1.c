/* The agent's own HTTP/1.x parsing (http1/http1.c): response heads, chunked
 * bodies cut anywhere, and the listener's preface sniff. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "http1/http1.h"

static int parse(const char *s, http1_hdr_t *h, size_t *nh, int *status, int *minor)
{
    const char *msg;
    size_t ml;
    return http1_parse_response(s, strlen(s), minor, status, &msg, &ml, h, nh);
}

Test(http1, response_head_complete_incomplete_and_malformed)
{
    http1_hdr_t h[4];
    size_t nh = 4;
    int st, minor;
    const char *ok = "HTTP/1.1 201 Created\r\nContent-Type:  text/plain \r\nX-Empty:\r\n\r\nbody";
    cr_assert_eq(parse(ok, h, &nh, &st, &minor), (int)strlen(ok) - 4);
    cr_assert_eq(st, 201);
    cr_assert_eq(minor, 1);
    cr_assert_eq(nh, 2);
    cr_assert_eq(h[0].name_len, 12);
    cr_assert_eq(h[0].value_len, 10, "surrounding blanks are not part of the value");
    cr_assert_eq(memcmp(h[0].value, "text/plain", 10), 0);
    cr_assert_eq(h[1].value_len, 0);
    nh = 4;
    cr_assert_eq(parse("HTTP/1.0 200\n\n", h, &nh, &st, &minor), 14, "bare LF lines and no reason");
    cr_assert_eq(minor, 0);
    const char *cut[] = {"", "HTT", "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\nA: b\r\n",
                         "HTTP/1.1 200 OK\r\nA: b\r\n\r"};
    for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
        nh = 4;
        cr_assert_eq(parse(cut[i], h, &nh, &st, &minor), -2, "%s", cut[i]);
    }
    const char *bad[] = {"XTTP/1.1 200 OK\r\n\r\n",
                         "HTTP/1.1 20 OK\r\n\r\n",
                         "HTTP/1.1 200 OK\r\n folded\r\n\r\n",
                         "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
                         "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
                         "HTTP/1.1 200 OK\r\nA: \x01\r\n\r\n",
                         "SSH-2.0-OpenSSH"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        nh = 4;
        cr_assert_eq(parse(bad[i], h, &nh, &st, &minor), -1, "%s", bad[i]);
    }
    nh = 1;
    cr_assert_eq(parse("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", h, &nh, &st, &minor), -1, "too many headers");
}

static const char chunked[] = "5\r\nhello\r\n1a;name=val\r\n abcdefghijklmnopqrstuvwxy\r\n0\r\nT: x\r\n\r\nNEXT";
static const char decoded[] = "hello abcdefghijklmnopqrstuvwxy";

Test(http1, chunked_whole_and_cut_at_every_byte)
{
    size_t total = sizeof(chunked) - 1;
    for (size_t cut = 0; cut <= total; cut++) {
        char buf[sizeof(chunked)], out[sizeof(chunked)];
        size_t outn = 0;
        http1_chunked_t d = {0};
        memcpy(buf, chunked, total);
        size_t n = cut;
        long r = http1_chunked_decode(&d, buf, &n);
        memcpy(out, buf, n);
        outn = n;
        if (r == -2) {
            memcpy(buf, chunked + cut, total - cut);
            n = total - cut;
            r = http1_chunked_decode(&d, buf, &n);
            cr_assert_geq(r, 0, "cut at %zu", cut);
            memcpy(out + outn, buf, n);
            outn += n;
            cr_assert_eq(r, 4);
            cr_assert_eq(memcmp(buf + n, "NEXT", 4), 0, "what follows the body is kept after it");
        } else {
            cr_assert_eq(r, (long)cut - (long)(total - 4), "cut at %zu: the body ended in the first piece", cut);
        }
        cr_assert_eq(outn, strlen(decoded), "cut at %zu", cut);
        cr_assert_eq(memcmp(out, decoded, outn), 0, "cut at %zu", cut);
    }
}

Test(http1, chunked_errors)
{
    const char *bad[] = {"x\r\n", "5\r\nhelloXX", "\r\n", "1000000000000000\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char buf[64];
        http1_chunked_t d = {0};
        size_t n = strlen(bad[i]);
        memcpy(buf, bad[i], n);
        cr_assert_eq(http1_chunked_decode(&d, buf, &n), -1, "%s", bad[i]);
    }
}

Test(http1, preface_sniff)
{
    cr_assert_eq(http1_sniff_preface("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0", 26), HTTP1_SNIFF_H2);
    cr_assert_eq(http1_sniff_preface("PRI", 3), HTTP1_SNIFF_H2, "a prefix is enough to hand over");
    cr_assert_eq(http1_sniff_preface("GET / HTTP/1.1\r\n", 16), HTTP1_SNIFF_HTTP1);
    cr_assert_eq(http1_sniff_preface("PRINT /", 7), HTTP1_SNIFF_HTTP1);
    cr_assert_eq(http1_sniff_preface("\x16\x03\x01", 3), HTTP1_SNIFF_OTHER, "TLS is not ours either");
}
