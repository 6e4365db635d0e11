/* The Thrift codec from byte vectors: captures of python3-thrift 0.17 output and
 * hand-made TTHeader vectors written from the published Kitex spec. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/errors.h"
#include "thrift/thrift.h"

static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
    }
    return n;
}

static int eq(thrift_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.ptr, s, b.len) == 0;
}

/* python3-thrift THeaderTransport + TBinaryProtocol: headers faas-function=calc,
 * trace=abc; message CALL "Calc:add" seqid 7 */
static const char *py_theader_binary =
    "0000004a0fff0000000000000009000001020d666161732d66756e6374696f6e0463616c6305747261636503616263000000"
    "800100010000000843616c633a616464000000070800010000000200";
/* same with TCompactProtocol (protocol id 2) */
static const char *py_theader_compact =
    "0000003d0fff0000000000000009020001020d666161732d66756e6374696f6e0463616c630574726163650361626300"
    "00008221070843616c633a616464150400";

Test(thrift, python_theader_binary_capture)
{
    uint8_t b[256];
    size_t n = unhex(py_theader_binary, b);
    thrift_frame_t f;
    const char *err = NULL;
    long r = thrift_parse(b, n, 0, &f, NULL, &err);
    cr_assert_eq(r, (long)n, "parse: %s", err ? err : "");
    cr_assert_eq(f.framing, THRIFT_THEADER);
    cr_assert_eq(f.proto, THRIFT_BINARY);
    cr_assert_eq(f.n_headers, 2);
    cr_assert(eq(*thrift_header(&f, "faas-function"), "calc"));
    cr_assert(eq(*thrift_header(&f, "trace"), "abc"));
    cr_assert(eq(f.name, "Calc:add"));
    cr_assert(eq(f.service, "Calc"));
    cr_assert(eq(f.method, "add"));
    cr_assert_eq(f.mtype, THRIFT_CALL);
    cr_assert_eq(f.seqid, 7);
    thrift_bytes_t key;
    cr_assert_eq(thrift_routing_key(&f, &key), 0);
    cr_assert(eq(key, "calc"), "faas-function wins over the Service: prefix");
}

Test(thrift, python_theader_compact_capture)
{
    uint8_t b[256];
    size_t n = unhex(py_theader_compact, b);
    thrift_frame_t f;
    const char *err = NULL;
    cr_assert_eq(thrift_parse(b, n, 0, &f, NULL, &err), (long)n, "%s", err ? err : "");
    cr_assert_eq(f.proto, THRIFT_COMPACT);
    cr_assert(eq(f.name, "Calc:add"));
    cr_assert_eq(f.seqid, 7);
}

Test(thrift, partial_frames_ask_for_more)
{
    uint8_t b[256];
    size_t n = unhex(py_theader_binary, b);
    thrift_frame_t f;
    const char *err = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t need = 0;
        cr_assert_eq(thrift_parse(b, i, 0, &f, &need, &err), 0, "prefix of %zu bytes", i);
        if (i >= 4)
            cr_assert_eq(need, n);
    }
}

/* Kitex TTHeader, by hand from the spec: INTKEYVALUE {6: "calc"},
 * KEYVALUE {"k": "v"}, binary protocol, framed CALL "add" seqid 1 */
static size_t tt_vector(uint8_t *b, int inner_framed)
{
    uint8_t msg[64];
    size_t m = 0;
    const uint8_t head[] = {0x80, 0x01, 0x00, 0x01, 0, 0, 0, 3, 'a', 'd', 'd', 0, 0, 0, 1, 0};
    memcpy(msg, head, sizeof(head));
    m = sizeof(head);
    const uint8_t hdr[] = {0x00, 0x00,                                     /* proto binary, 0 transforms */
                           0x10, 0x00, 0x01, 0x00, 0x06, 0x00, 0x04, 'c', 'a', 'l', 'c', /* int kv */
                           0x01, 0x00, 0x01, 0x00, 0x01, 'k', 0x00, 0x01, 'v', /* str kv */
                           0x00, 0x00};                                    /* padding to 24 */
    size_t o = 0;
    size_t payload = m + (inner_framed ? 4 : 0);
    uint32_t len = (uint32_t)(10 + sizeof(hdr) + payload);
    b[o++] = (uint8_t)(len >> 24), b[o++] = (uint8_t)(len >> 16), b[o++] = (uint8_t)(len >> 8), b[o++] = (uint8_t)len;
    b[o++] = 0x10, b[o++] = 0x00;         /* magic */
    b[o++] = 0x00, b[o++] = 0x00;         /* flags */
    b[o++] = 0, b[o++] = 0, b[o++] = 0, b[o++] = 1; /* seqid */
    b[o++] = 0x00, b[o++] = sizeof(hdr) / 4;
    memcpy(b + o, hdr, sizeof(hdr));
    o += sizeof(hdr);
    if (inner_framed) {
        b[o++] = 0, b[o++] = 0, b[o++] = 0, b[o++] = (uint8_t)m;
    }
    memcpy(b + o, msg, m);
    return o + m;
}

Test(thrift, kitex_ttheader_int_keys_route)
{
    for (int inner = 0; inner < 2; inner++) {
        uint8_t b[256];
        size_t n = tt_vector(b, inner);
        thrift_frame_t f;
        const char *err = NULL;
        cr_assert_eq(thrift_parse(b, n, 0, &f, NULL, &err), (long)n, "%s", err ? err : "");
        cr_assert_eq(f.framing, THRIFT_TTHEADER);
        cr_assert_eq(f.inner_framed, inner);
        cr_assert(eq(*thrift_int_header(&f, THRIFT_TTHEADER_KEY_TO_SERVICE), "calc"));
        cr_assert(eq(*thrift_header(&f, "k"), "v"));
        cr_assert(eq(f.method, "add"));
        cr_assert_eq(f.seqid, 1);
        thrift_bytes_t key;
        cr_assert_eq(thrift_routing_key(&f, &key), 0);
        cr_assert(eq(key, "calc"));
    }
}

Test(thrift, framed_binary_compact_and_old_binary)
{
    /* framed strict binary, CALL "Svc:ping" seqid 3 */
    uint8_t b1[] = {0, 0, 0, 21, 0x80, 1, 0, 1, 0, 0, 0, 8, 'S', 'v', 'c', ':', 'p', 'i', 'n', 'g', 0, 0, 0, 3, 0};
    thrift_frame_t f;
    const char *err = NULL;
    cr_assert_eq(thrift_parse(b1, sizeof(b1), 0, &f, NULL, &err), (long)sizeof(b1), "%s", err ? err : "");
    cr_assert_eq(f.framing, THRIFT_FRAMED);
    thrift_bytes_t key;
    cr_assert_eq(thrift_routing_key(&f, &key), 0);
    cr_assert(eq(key, "Svc"));
    /* framed compact ONEWAY "ping" seqid 300 */
    uint8_t b2[] = {0, 0, 0, 10, 0x82, (4 << 5) | 1, 0xac, 0x02, 4, 'p', 'i', 'n', 'g', 0};
    cr_assert_eq(thrift_parse(b2, sizeof(b2), 0, &f, NULL, &err), (long)sizeof(b2), "%s", err ? err : "");
    cr_assert_eq(f.proto, THRIFT_COMPACT);
    cr_assert_eq(f.mtype, THRIFT_ONEWAY);
    cr_assert_eq(f.seqid, 300);
    cr_assert_eq(thrift_routing_key(&f, &key), -1, "no key: the port's default function");
}

Test(thrift, rejects_bad_bytes_with_reasons)
{
    thrift_frame_t f;
    const char *err = NULL;
    const uint8_t http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(thrift_parse(http, sizeof(http) - 1, 0, &f, NULL, &err), -1);
    cr_assert_not_null(strstr(err, "HTTP"));
    const uint8_t unframed[] = {0x80, 1, 0, 1, 0, 0, 0, 1, 'x', 0, 0, 0, 0};
    cr_assert_eq(thrift_parse(unframed, sizeof(unframed), 0, &f, NULL, &err), -1);
    const uint8_t huge[] = {0x10, 0, 0, 0, 0x0f, 0xff};
    cr_assert_eq(thrift_parse(huge, sizeof(huge), 0, &f, NULL, &err), -1);
    cr_assert_not_null(strstr(err, "limit"));
    /* THeader whose header size points past the frame */
    const uint8_t bad_hsize[] = {0, 0, 0, 12, 0x0f, 0xff, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0};
    cr_assert_eq(thrift_parse(bad_hsize, sizeof(bad_hsize), 0, &f, NULL, &err), -1);
    /* THeader with a zlib transform */
    const uint8_t zlib[] = {0, 0, 0, 14, 0x0f, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0};
    cr_assert_eq(thrift_parse(zlib, sizeof(zlib), 0, &f, NULL, &err), -1);
    cr_assert_not_null(strstr(err, "transform"));
    /* framed garbage */
    const uint8_t junk[] = {0, 0, 0, 4, 1, 2, 3, 4};
    cr_assert_eq(thrift_parse(junk, sizeof(junk), 0, &f, NULL, &err), -1);
}

Test(thrift, error_reply_roundtrips_in_each_framing)
{
    uint8_t b[256], out[1024];
    size_t n = unhex(py_theader_compact, b);
    thrift_frame_t f, g;
    const char *err = NULL;
    cr_assert_gt(thrift_parse(b, n, 0, &f, NULL, &err), 0);
    size_t m = thrift_encode_error(&f, FAAS_TAPP_UNKNOWN_METHOD, "no function for service Calc", out, sizeof(out));
    cr_assert_lt(m, sizeof(out));
    cr_assert_eq(thrift_parse(out, m, 0, &g, NULL, &err), (long)m, "%s", err ? err : "");
    cr_assert_eq(g.framing, THRIFT_THEADER);
    cr_assert_eq(g.proto, THRIFT_COMPACT);
    cr_assert_eq(g.mtype, THRIFT_EXCEPTION);
    cr_assert_eq(g.seqid, 7);
    cr_assert(eq(g.name, "Calc:add"));

    n = tt_vector(b, 1);
    cr_assert_gt(thrift_parse(b, n, 0, &f, NULL, &err), 0);
    m = thrift_encode_error(&f, FAAS_TAPP_INTERNAL_ERROR, "cold start failed", out, sizeof(out));
    cr_assert_eq(thrift_parse(out, m, 0, &g, NULL, &err), (long)m, "%s", err ? err : "");
    cr_assert_eq(g.framing, THRIFT_TTHEADER);
    cr_assert_eq(g.mtype, THRIFT_EXCEPTION);
    cr_assert_eq(g.seqid, 1);
    /* the binary TApplicationException body: message string then i32 type 6 */
    cr_assert_eq(out[m - 2], 6);
    cr_assert_eq(out[m - 1], 0);
}

Test(thrift, reframe_keeps_headers)
{
    thrift_header_t hs[2] = {{.key = {(const uint8_t *)"faas-request-id", 15}, .value = {(const uint8_t *)"r1", 2}},
                                {.is_int = 1, .int_key = 6, .value = {(const uint8_t *)"calc", 4}}};
    uint8_t msg[] = {0x80, 1, 0, 1, 0, 0, 0, 3, 'a', 'd', 'd', 0, 0, 0, 9, 0};
    uint8_t out[256];
    thrift_frame_t g;
    const char *err = NULL;
    size_t m = thrift_encode_frame(THRIFT_TTHEADER, THRIFT_BINARY, 0, 9, hs, 2, msg, sizeof(msg), out,
                                      sizeof(out));
    cr_assert_eq(thrift_parse(out, m, 0, &g, NULL, &err), (long)m, "%s", err ? err : "");
    cr_assert(eq(*thrift_header(&g, "faas-request-id"), "r1"));
    cr_assert(eq(*thrift_int_header(&g, 6), "calc"));
    m = thrift_encode_frame(THRIFT_THEADER, THRIFT_BINARY, 0, 9, hs, 2, msg, sizeof(msg), out, sizeof(out));
    cr_assert_eq(thrift_parse(out, m, 0, &g, NULL, &err), (long)m, "%s", err ? err : "");
    cr_assert(eq(*thrift_header(&g, "faas-request-id"), "r1"));
    cr_assert_null(thrift_int_header(&g, 6), "THeader has no int keys");
    /* too small a buffer reports the size needed */
    cr_assert_eq(thrift_encode_frame(THRIFT_FRAMED, THRIFT_BINARY, 0, 0, NULL, 0, msg, sizeof(msg), out, 3),
                 4 + sizeof(msg));
}

Test(thrift, reply_keeps_ttheader_inner_framing)
{
    for (int inner = 0; inner < 2; inner++) {
        uint8_t b[256], out[512];
        size_t n = tt_vector(b, inner);
        thrift_frame_t f, g;
        const char *err = NULL;
        cr_assert_eq(thrift_parse(b, n, 0, &f, NULL, &err), (long)n);
        /* the request's own message stands in for a reply payload */
        size_t m = thrift_encode_reply(&f, NULL, 0, f.payload.ptr, f.payload.len, out, sizeof(out));
        cr_assert(m <= sizeof(out));
        cr_assert_eq(thrift_parse(out, m, 0, &g, NULL, &err), (long)m, "%s", err ? err : "");
        cr_assert_eq(g.framing, THRIFT_TTHEADER);
        cr_assert_eq(g.inner_framed, inner);
        cr_assert_eq(g.header_seqid, f.header_seqid);
        cr_assert_eq(g.payload.len, f.payload.len);
        m = thrift_encode_error(&f, FAAS_TAPP_INTERNAL_ERROR, "x", out, sizeof(out));
        cr_assert_eq(thrift_parse(out, m, 0, &g, NULL, &err), (long)m);
        cr_assert_eq(g.inner_framed, inner);
        cr_assert_eq(g.mtype, THRIFT_EXCEPTION);
    }
}
