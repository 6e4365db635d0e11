/* Unit tests: gRPC wire helpers (grpcw/): grpc-timeout parsing and
 * formatting, grpc-message percent-encoding, :path parsing, content types, header
 * rules, 5-byte message framing and the incremental frame scanner. */
#include <criterion/criterion.h>
#include <string.h>

#include "grpcw/grpcw.h"

static uint64_t tmo(const char *s)
{
    uint64_t ms = 12345;
    cr_assert_eq(grpcw_parse_timeout(s, strlen(s), &ms), 0, "%s", s);
    return ms;
}

Test(grpc_timeout, parses_every_unit_rounding_up)
{
    cr_expect_eq(tmo("1H"), 3600000);
    cr_expect_eq(tmo("2M"), 120000);
    cr_expect_eq(tmo("3S"), 3000);
    cr_expect_eq(tmo("250m"), 250);
    cr_expect_eq(tmo("1500u"), 2);
    cr_expect_eq(tmo("1u"), 1); /* a non-zero timeout never becomes "no time" */
    cr_expect_eq(tmo("1n"), 1);
    cr_expect_eq(tmo("0m"), 0);
    cr_expect_eq(tmo("99999999S"), 99999999000ull);
}

Test(grpc_timeout, rejects_malformed)
{
    const char *bad[] = {"", "m", "10", "10x", "123456789m", "-1m", "1.5S", " 1m", "1 m", "10mm"};
    uint64_t ms;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(grpcw_parse_timeout(bad[i], strlen(bad[i]), &ms), -1, "%s", bad[i]);
}

Test(grpc_timeout, formats_within_8_digits_and_round_trips)
{
    char b[32];
    cr_assert_eq(grpcw_format_timeout(1500, b, sizeof(b)), 5);
    cr_expect_str_eq(b, "1500m");
    grpcw_format_timeout(99999999, b, sizeof(b));
    cr_expect_str_eq(b, "99999999m");
    grpcw_format_timeout(100000000, b, sizeof(b));
    cr_expect_str_eq(b, "100000S");
    grpcw_format_timeout(100000001, b, sizeof(b));
    cr_expect_str_eq(b, "100001S"); /* rounded up, never shortened */
    cr_expect_eq(grpcw_format_timeout(5, b, 2), 0);
    uint64_t vals[] = {0, 1, 999, 30000, 900000, 123456789, 1ull << 40};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        size_t n = grpcw_format_timeout(vals[i], b, sizeof(b));
        uint64_t back;
        cr_assert_eq(grpcw_parse_timeout(b, n, &back), 0, "%s", b);
        cr_expect_geq(back, vals[i]);
    }
}

Test(grpc_percent, encodes_per_spec_and_decodes_back)
{
    const char in[] = "café 100%\n ok";
    char out[64], dec[64];
    size_t n = grpcw_percent_encode(in, strlen(in), out, sizeof(out));
    out[n] = 0;
    cr_expect_str_eq(out, "caf%C3%A9 100%25%0A ok");
    size_t d = grpcw_percent_decode(out, n, dec);
    dec[d] = 0;
    cr_expect_str_eq(dec, in);
    /* malformed escapes are kept verbatim */
    d = grpcw_percent_decode("50%zz%4", 7, dec);
    dec[d] = 0;
    cr_expect_str_eq(dec, "50%zz%4");
    /* a short buffer reports the full length without overrunning */
    char small[4];
    cr_expect_eq(grpcw_percent_encode("\n\n", 2, small, sizeof(small)), 6);
}

Test(grpc_path, splits_service_and_method)
{
    grpcw_slice_t s, m;
    const char *err = NULL;
    const char *p = "/helloworld.Greeter/SayHello";
    cr_assert_eq(grpcw_parse_path(p, strlen(p), &s, &m, &err), 0);
    cr_expect_eq(s.len, strlen("helloworld.Greeter"));
    cr_expect_eq(memcmp(s.ptr, "helloworld.Greeter", s.len), 0);
    cr_expect_eq(memcmp(m.ptr, "SayHello", m.len), 0);
    const char *bad[] = {"", "/", "//", "/a/", "//m", "a/b", "/a/b/c", "/a b/c", "/a/b?x", "/svc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        cr_expect_eq(grpcw_parse_path(bad[i], strlen(bad[i]), &s, &m, &err), -1, "%s", bad[i]);
        cr_expect_not_null(err);
    }
}

Test(grpc_headers, content_type_and_forwarding_rules)
{
    cr_expect(grpcw_content_type_ok("application/grpc", 16));
    cr_expect(grpcw_content_type_ok("application/grpc+proto", 22));
    cr_expect(grpcw_content_type_ok("application/grpc;charset=x", 26));
    cr_expect(!grpcw_content_type_ok("application/grpcx", 17));
    cr_expect(!grpcw_content_type_ok("application/json", 16));
    cr_expect(!grpcw_content_type_ok("", 0));
    const char *fwd[] = {"content-type", "user-agent",  "grpc-encoding", "grpc-accept-encoding",
                         "x-custom",     "x-trace-bin", "authorization"};
    for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++)
        cr_expect(grpcw_header_forwarded(fwd[i], strlen(fwd[i])), "%s", fwd[i]);
    const char *drop[] = {
        ":path", ":authority",        "te",      "grpc-timeout", "faas-function", "faas-deadline-ms", "connection",
        "host",  "transfer-encoding", "upgrade", "keep-alive"};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        cr_expect(!grpcw_header_forwarded(drop[i], strlen(drop[i])), "%s", drop[i]);
    cr_expect(grpcw_metadata_key_ok("x-my_key.v2", 11));
    cr_expect(!grpcw_metadata_key_ok("X-Upper", 7));
    cr_expect(!grpcw_metadata_key_ok("grpc-status", 11));
    cr_expect(!grpcw_metadata_key_ok("", 0));
}

Test(grpc_frame, write_and_scan_across_arbitrary_splits)
{
    uint8_t buf[5 + 3 + 5 + 0 + 5 + 70000];
    size_t n = 0;
    grpcw_frame_write(buf, 0, 3);
    memcpy(buf + 5, "abc", 3);
    n = 8;
    grpcw_frame_write(buf + n, 0, 0);
    n += 5;
    grpcw_frame_write(buf + n, 1, 70000);
    cr_expect_eq(buf[n], 1);
    cr_expect_eq(buf[n + 2], 0x01);
    cr_expect_eq(buf[n + 3], 0x11);
    cr_expect_eq(buf[n + 4], 0x70);
    n += 5;
    memset(buf + n, 7, 70000);
    n += 70000;
    for (size_t step = 1; step < 9; step++) {
        grpcw_scan_t s = {0};
        const char *err = NULL;
        for (size_t off = 0; off < n; off += step)
            cr_assert_eq(grpcw_scan(&s, buf + off, off + step <= n ? step : n - off, 0, &err), 0);
        cr_expect_eq(s.messages, 3);
        cr_expect_eq(s.left, 0);
        cr_expect_eq(s.hdr_have, 0);
    }
    grpcw_scan_t s = {0};
    const char *err = NULL;
    cr_expect_eq(grpcw_scan(&s, buf, n, 65536, &err), -1);
    cr_expect_str_eq(err, "gRPC message larger than the limit");
    uint8_t badflag[5] = {2, 0, 0, 0, 0};
    grpcw_scan_t s2 = {0};
    cr_expect_eq(grpcw_scan(&s2, badflag, 5, 0, &err), -1);
}

Test(grpc_status, from_http)
{
    cr_expect_eq(grpcw_code_for_http_response(503), 14);
    cr_expect_eq(grpcw_code_for_http_response(404), 12);
    cr_expect_eq(grpcw_code_for_http_response(401), 16);
    cr_expect_eq(grpcw_code_for_http_response(418), 2);
}
