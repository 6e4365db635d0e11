/* gw_http1_framing_check: RFC 9112 framing rules over a parsed request head, and the
 * phr_parse_request interposer that applies them to what h2o parses. */
#include <criterion/criterion.h>
#include <string.h>

#include "gateway/internal.h"

#define MAXH 16

typedef struct {
    gw_http1_hdr_t h[MAXH];
    size_t n;
} head_t;

/* "Name: value" pairs; a name of "" makes an obs-fold continuation line (name NULL). */
static head_t mk(const char *const *kv)
{
    head_t hd = {.n = 0};
    for (; kv[0] != NULL; kv += 2, hd.n++) {
        hd.h[hd.n].name = kv[0][0] ? kv[0] : NULL;
        hd.h[hd.n].name_len = strlen(kv[0]);
        hd.h[hd.n].value = kv[1];
        hd.h[hd.n].value_len = strlen(kv[1]);
    }
    return hd;
}

static int check(int minor, const char *const *kv)
{
    head_t hd = mk(kv);
    const char *err = "unset";
    int rc = gw_http1_framing_check(minor, hd.h, hd.n, &err);
    if (rc == GW_FRAMING_OK)
        cr_assert_null(err);
    else
        cr_assert(err != NULL && err[0] != '\0', "a rejection says why");
    return rc;
}

#define H(...) ((const char *const[]){__VA_ARGS__, NULL})

Test(gw_framing, ordinary_requests_pass)
{
    cr_assert_eq(check(1, H("Host", "example.com")), GW_FRAMING_OK);
    cr_assert_eq(check(1, H("host", "127.0.0.1:8080", "Content-Length", "0")), GW_FRAMING_OK);
    cr_assert_eq(check(1, H("HOST", "[::1]:80", "Transfer-Encoding", "chunked")), GW_FRAMING_OK);
    cr_assert_eq(check(1, H("Host", "a", "Transfer-Encoding", "gzip, Chunked")), GW_FRAMING_OK);
    cr_assert_eq(check(1, H("Host", "a", "Transfer-Encoding", "gzip", "transfer-encoding", " chunked ")),
                 GW_FRAMING_OK);
    cr_assert_eq(check(1, H("Host", "")), GW_FRAMING_OK, "empty Host: a target without authority");
    cr_assert_eq(check(0, H("Content-Length", "5")), GW_FRAMING_OK, "HTTP/1.0 without Host is fine");
    cr_assert_eq(check(1, H("Host", "a", "Content-Length", "0000000000000000005")), GW_FRAMING_OK);
    cr_assert_eq(check(1, H("X-Odd!#$%&'*+-.^_`|~", "v", "Host", "a")), GW_FRAMING_OK);
}

Test(gw_framing, content_length_once_and_digits_only)
{
    cr_assert_eq(check(1, H("Host", "a", "Content-Length", "5", "Content-Length", "40")), GW_FRAMING_CL_DUP);
    cr_assert_eq(check(1, H("Host", "a", "Content-Length", "5", "content-length", "5")), GW_FRAMING_CL_DUP,
                 "equal values too");
    cr_assert_eq(check(0, H("Content-Length", "5", "Content-Length", "5")), GW_FRAMING_CL_DUP);
    const char *bad[] = {"", "5, 5", "+5", "-1", " 5", "5 ", "0x10", "1e3", "12345678901234567890"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(check(1, H("Host", "a", "Content-Length", bad[i])), GW_FRAMING_CL_BAD, "\"%s\"", bad[i]);
}

Test(gw_framing, transfer_encoding)
{
    cr_assert_eq(check(1, H("Host", "a", "Transfer-Encoding", "chunked", "Content-Length", "5")), GW_FRAMING_TE_CL);
    cr_assert_eq(check(1, H("Host", "a", "Content-Length", "5", "Transfer-Encoding", "chunked")), GW_FRAMING_TE_CL);
    const char *bad[] = {"gzip", "chunked, gzip", "chunked, chunked", "", " , ", "chunkedx", "xchunked", "identity"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(check(1, H("Host", "a", "Transfer-Encoding", bad[i])), GW_FRAMING_TE_BAD, "\"%s\"", bad[i]);
    cr_assert_eq(check(1, H("Host", "a", "Transfer-Encoding", "chunked", "Transfer-Encoding", "gzip")),
                 GW_FRAMING_TE_BAD, "the final coding is the last header's");
    cr_assert_eq(check(0, H("Transfer-Encoding", "chunked")), GW_FRAMING_TE_BAD, "HTTP/1.0 has no codings");
}

Test(gw_framing, host_exactly_once_and_clean)
{
    cr_assert_eq(check(1, H("Content-Length", "0")), GW_FRAMING_HOST_COUNT);
    cr_assert_eq(check(1, H("Host", "a", "Host", "a")), GW_FRAMING_HOST_COUNT);
    cr_assert_eq(check(0, H("Host", "a", "Host", "b")), GW_FRAMING_HOST_COUNT);
    const char *bad[] = {"a b", "a/b", "a@b", "a\\b", "a?b", "a#b", "a\tb", "a\x01", "\xc3\xa9", "a\"b", "<a>"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(check(1, H("Host", bad[i])), GW_FRAMING_HOST_BAD, "\"%s\"", bad[i]);
}

Test(gw_framing, header_names_and_folding)
{
    cr_assert_eq(check(1, H("Host", "a", "Content-Length ", "5")), GW_FRAMING_NAME_BAD);
    cr_assert_eq(check(1, H("Host", "a", "X\tY", "5")), GW_FRAMING_NAME_BAD);
    cr_assert_eq(check(1, H("Host", "a", "X(", "5")), GW_FRAMING_NAME_BAD);
    cr_assert_eq(check(1, H("Host", "a", "X-A", "1", "", "continued")), GW_FRAMING_OBS_FOLD);
}

Test(gw_framing, rule_names)
{
    cr_assert_str_eq(gw_http1_framing_rule_name(GW_FRAMING_CL_DUP), "content_length_repeated");
    cr_assert_str_eq(gw_http1_framing_rule_name(GW_FRAMING_OBS_FOLD), "obsolete_line_folding");
    cr_assert_str_eq(gw_http1_framing_rule_name(-GW_FRAMING_NRULES), "unknown");
    cr_assert_str_eq(gw_http1_framing_rule_name(1), "unknown");
}

/* ---- the interposer: this test binary defines phr_parse_request too (framing.o) ---- */

int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, gw_http1_hdr_t *headers, size_t *num_headers,
                      size_t last_len);

static int parse(const char *req)
{
    const char *m, *p;
    size_t ml, pl, nh = MAXH;
    int minor;
    gw_http1_hdr_t hs[MAXH];
    return phr_parse_request(req, strlen(req), &m, &ml, &p, &pl, &minor, hs, &nh, 0);
}

Test(gw_framing, interposer_turns_bad_framing_into_a_parse_error)
{
    gw_framing_probe(0);
    const char ok[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    cr_assert_eq(parse(ok), (int)(sizeof(ok) - 1 - 5), "the head's length, as picohttpparser says");
    cr_assert_eq(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello"), -1);
    cr_assert_eq(parse("GET / HTTP/1.1\r\n\r\n"), -1);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"), -2, "incomplete passes through");
    cr_assert_eq(parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), -1, "the h2c preface stays picohttpparser's error");
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n continued\r\n\r\n"), -1);
    uint64_t calls, rej[GW_FRAMING_NRULES];
    gw_framing_stats(&calls, rej);
    cr_assert_eq(calls, 6);
    cr_assert_eq(rej[-GW_FRAMING_CL_DUP], 1);
    cr_assert_eq(rej[-GW_FRAMING_HOST_COUNT], 1);
    cr_assert_eq(rej[-GW_FRAMING_OBS_FOLD], 1);
    gw_framing_probe(0);
    gw_framing_stats(&calls, rej);
    cr_assert_eq(calls, 0);
    cr_assert_eq(rej[-GW_FRAMING_CL_DUP], 0);
}
