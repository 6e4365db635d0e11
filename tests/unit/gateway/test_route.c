#include <criterion/criterion.h>
#include <string.h>

#include "gateway/gateway.h"

static int parse(const char *p, gw_slice_t *name, gw_slice_t *rest, const char **err)
{
    return gw_route_parse(p, strlen(p), name, rest, err);
}

#define SLICE_EQ(s, lit)                                                                                               \
    cr_assert(s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0, "got '%.*s' want '%s'", (int)s.len, s.ptr, lit)

Test(route, name_and_rest)
{
    gw_slice_t n, r;
    const char *err = NULL;
    cr_assert_eq(parse("/function/hello/a/b?x=1", &n, &r, &err), GW_ROUTE_FUNCTION);
    SLICE_EQ(n, "hello");
    SLICE_EQ(r, "/a/b?x=1");
}

Test(route, bare_name_maps_to_root)
{
    gw_slice_t n, r;
    const char *err = NULL;
    cr_assert_eq(parse("/function/hello", &n, &r, &err), GW_ROUTE_FUNCTION);
    SLICE_EQ(n, "hello");
    cr_assert_eq(r.len, 0);
    cr_assert_eq(parse("/function/h-1?q=2", &n, &r, &err), GW_ROUTE_FUNCTION);
    SLICE_EQ(n, "h-1");
    SLICE_EQ(r, "?q=2");
    cr_assert_eq(parse("/function/hello/", &n, &r, &err), GW_ROUTE_FUNCTION);
    SLICE_EQ(r, "/");
}

Test(route, other_paths)
{
    gw_slice_t n, r;
    const char *err = NULL;
    cr_assert_eq(parse("/healthz", &n, &r, &err), GW_ROUTE_OTHER);
    cr_assert_eq(parse("/functions/x", &n, &r, &err), GW_ROUTE_OTHER);
    cr_assert_eq(parse("/", &n, &r, &err), GW_ROUTE_OTHER);
}

Test(route, malformed)
{
    gw_slice_t n, r;
    const char *bad[] = {"",
                         "function/x",
                         "/function/",
                         "/function",
                         "/function?x",
                         "/function//x",
                         "/function/Hello",
                         "/function/-x",
                         "/function/a b",
                         "/function/a\x01",
                         "/function/%41",
                         "/function/a_b",
                         "/x\x7f",
                         "http://h/function/x",
                         "/function/\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *err = NULL;
        cr_assert_eq(parse(bad[i], &n, &r, &err), GW_ERR_MALFORMED, "%s", bad[i]);
        cr_assert_not_null(err);
    }
}

Test(route, name_length_limit)
{
    char p[128] = "/function/";
    memset(p + 10, 'a', 63);
    gw_slice_t n, r;
    const char *err = NULL;
    cr_assert_eq(parse(p, &n, &r, &err), GW_ROUTE_FUNCTION);
    cr_assert_eq(n.len, 63);
    p[10 + 63] = 'a';
    cr_assert_eq(parse(p, &n, &r, &err), GW_ERR_MALFORMED);
}

static int hop(const char *name, const char *value, const char *conn)
{
    return gw_header_is_hop(name, strlen(name), value, strlen(value), conn, strlen(conn));
}

Test(headers, hop_by_hop)
{
    cr_assert(hop("connection", "close", ""));
    cr_assert(hop("keep-alive", "5", ""));
    cr_assert(hop("proxy-connection", "x", ""));
    cr_assert(hop("transfer-encoding", "chunked", ""));
    cr_assert(hop("upgrade", "h2c", ""));
    cr_assert(hop("te", "gzip", ""));
    cr_assert(!hop("te", "trailers", ""));
    cr_assert(!hop("content-type", "text/plain", ""));
    cr_assert(hop("x-secret", "1", "keep-alive, X-Secret"));
    cr_assert(hop("x-b", "1", " x-a ,x-b"));
    cr_assert(!hop("x-c", "1", "x-cc, x-"));
    cr_assert(!hop("accept", "*/*", "close"));
}

Test(headers, request_id)
{
    cr_assert(gw_request_id_sane("abc-123_X.y:z", 13));
    cr_assert(!gw_request_id_sane("", 0));
    cr_assert(!gw_request_id_sane("a b", 3));
    cr_assert(!gw_request_id_sane("a\nb", 3));
    char big[65];
    memset(big, 'a', 65);
    cr_assert(gw_request_id_sane(big, 64));
    cr_assert(!gw_request_id_sane(big, 65));
}

static int host(const char *h, const char *d, gw_slice_t *n)
{
    return gw_route_host(h, strlen(h), d, strlen(d), n);
}

Test(route, host_based)
{
    gw_slice_t n;
    cr_assert_eq(host("hello.fn.example.com", "fn.example.com", &n), 0);
    SLICE_EQ(n, "hello");
    cr_assert_eq(host("hello.fn.example.com:8080", "fn.example.com", &n), 0);
    SLICE_EQ(n, "hello");
    cr_assert_eq(host("a-1.FN.example.com.", "fn.example.com", &n), 0);
    SLICE_EQ(n, "a-1");
    cr_assert_eq(host("fn.example.com", "fn.example.com", &n), -1);
    cr_assert_eq(host(".fn.example.com", "fn.example.com", &n), -1);
    cr_assert_eq(host("a.b.fn.example.com", "fn.example.com", &n), -1);
    cr_assert_eq(host("Hello.fn.example.com", "fn.example.com", &n), -1);
    cr_assert_eq(host("hellofn.example.com", "fn.example.com", &n), -1);
    cr_assert_eq(host("hello.fn.example.com", "", &n), -1);
    cr_assert_eq(host("127.0.0.1:8080", "0.0.1", &n), 0); /* the operator picks a sane domain */
    cr_assert_eq(host("[::1]:80", "1]", &n), -1);
}

Test(route, response_headers_the_gateway_writes_itself)
{
    cr_assert(gw_response_header_own("Date", 4));
    cr_assert(gw_response_header_own("content-length", 14));
    cr_assert(gw_response_header_own("Transfer-Encoding", 17));
    cr_assert(gw_response_header_own("connection", 10));
    cr_assert_not(gw_response_header_own("x-echo-status", 13));
    cr_assert_not(gw_response_header_own("dat", 3));
    cr_assert_not(gw_response_header_own("content-type", 12));
}
