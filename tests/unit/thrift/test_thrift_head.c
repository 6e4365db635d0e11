/* thrift_parse_head: a frame's head (length, THeader/TTHeader header block, message
 * header) from a prefix, with the header limit checked from announced lengths. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

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

/* python3-thrift THeader + binary: headers faas-function=calc, trace=abc; CALL "Calc:add" seqid 7 */
static const char *py_theader_binary =
    "0000004a0fff0000000000000009000001020d666161732d66756e6374696f6e0463616c6305747261636503616263000000"
    "800100010000000843616c633a616464000000070800010000000200";

/* A CALL message named name with seqid and a few argument bytes after the header. */
static size_t call_msg(thrift_proto_t proto, const char *name, int32_t seqid, uint8_t *out)
{
    size_t nl = strlen(name), n = 0;
    if (proto == THRIFT_COMPACT) {
        out[n++] = 0x82;
        out[n++] = 0x21;           /* CALL << 5 | version 1 */
        out[n++] = (uint8_t)seqid; /* small seqids: one varint byte */
        out[n++] = (uint8_t)nl;
    } else {
        memcpy(out, "\x80\x01\x00\x01", 4);
        out[4] = (uint8_t)(nl >> 24), out[5] = (uint8_t)(nl >> 16), out[6] = (uint8_t)(nl >> 8), out[7] = (uint8_t)nl;
        n = 8;
    }
    memcpy(out + n, name, nl);
    n += nl;
    if (proto != THRIFT_COMPACT) {
        out[n++] = (uint8_t)(seqid >> 24), out[n++] = (uint8_t)(seqid >> 16);
        out[n++] = (uint8_t)(seqid >> 8), out[n++] = (uint8_t)seqid;
    }
    memcpy(out + n, "\x08\x00\x01\x00\x00\x00\x02\x00", 8); /* i32 field 1 = 2, stop */
    return n + 8;
}

/* For every prefix of a whole frame: 0 while the head is incomplete, then its length,
 * and what it read agrees with thrift_parse of the whole frame. */
static void check_prefixes(const uint8_t *b, size_t n)
{
    thrift_frame_t whole, f;
    const char *err = NULL;
    cr_assert_eq(thrift_parse(b, n, 0, &whole, NULL, &err), (long)n, "%s", err ? err : "");
    long head = -1;
    for (size_t k = 0; k <= n; k++) {
        err = NULL;
        long r = thrift_parse_head(b, k, 4096, &f, NULL, &err);
        if (r == 0) {
            cr_assert(head < 0, "prefix %zu incomplete after the head was complete at %ld", k, head);
            continue;
        }
        cr_assert_gt(r, 0, "prefix %zu: %ld %s", k, r, err ? err : "");
        if (head < 0)
            head = r;
        cr_assert_eq(r, head, "prefix %zu", k);
        cr_assert_leq((size_t)r, k);
        cr_assert_eq(f.framing, whole.framing);
        cr_assert_eq(f.proto, whole.proto);
        cr_assert_eq(f.frame_len, n);
        cr_assert_eq(f.seqid, whole.seqid);
        cr_assert_eq(f.header_seqid, whole.header_seqid);
        cr_assert_eq(f.mtype, whole.mtype);
        cr_assert_eq(f.n_headers, whole.n_headers);
        cr_assert_eq(f.inner_framed, whole.inner_framed);
        cr_assert(f.name.len == whole.name.len && memcmp(f.name.ptr, whole.name.ptr, f.name.len) == 0);
        cr_assert(f.service.len == whole.service.len);
        cr_assert_eq(f.payload.len, 0);
    }
    cr_assert_gt(head, 0);
    cr_assert_lt((size_t)head, n, "the argument bytes are not part of the head");
}

Test(thrift_head, python_theader_capture_every_prefix)
{
    uint8_t b[256];
    size_t n = unhex(py_theader_binary, b);
    check_prefixes(b, n);
    thrift_frame_t f;
    const char *err;
    cr_assert_eq(thrift_parse_head(b, n, 4096, &f, NULL, &err), 4 + 10 + 36 + 20);
    cr_assert(eq(f.name, "Calc:add") && eq(f.service, "Calc") && eq(f.method, "add"));
    cr_assert(eq(*thrift_header(&f, "faas-function"), "calc"));
}

Test(thrift_head, every_framing_and_protocol)
{
    thrift_framing_t fr[] = {THRIFT_FRAMED, THRIFT_THEADER, THRIFT_TTHEADER};
    thrift_proto_t pr[] = {THRIFT_BINARY, THRIFT_COMPACT};
    thrift_header_t hs[2] = {{.key = {(const uint8_t *)"to_service", 10}, .value = {(const uint8_t *)"calc", 4}},
                             {.is_int = 1, .int_key = 9, .value = {(const uint8_t *)"add", 3}}};
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 2; j++) {
            uint8_t msg[128], out[512];
            size_t ml = call_msg(pr[j], "Svc:method", 5, msg);
            size_t n = thrift_encode_frame(fr[i], pr[j], 0, 11, hs, 2, msg, ml, out, sizeof(out));
            cr_assert_leq(n, sizeof(out));
            check_prefixes(out, n);
        }
}

Test(thrift_head, ttheader_inner_length)
{
    /* Kitex TTHeaderFramed: the payload carries its own 4-byte length */
    uint8_t msg[128], out[512];
    size_t ml = call_msg(THRIFT_BINARY, "add", 3, msg);
    thrift_frame_t req = {.framing = THRIFT_TTHEADER, .proto = THRIFT_BINARY, .inner_framed = 1};
    size_t n = thrift_encode_reply(&req, NULL, 0, msg, ml, out, sizeof(out));
    check_prefixes(out, n);
    thrift_frame_t f;
    const char *err;
    cr_assert_gt(thrift_parse_head(out, n, 4096, &f, NULL, &err), 0);
    cr_assert_eq(f.inner_framed, 1);
}

Test(thrift_head, frame_length_is_not_limited_here)
{
    /* 1 GiB announced: the head is read all the same, so the caller can refuse by name */
    uint8_t msg[64], b[80];
    size_t ml = call_msg(THRIFT_BINARY, "add", 9, msg);
    b[0] = 0x40, b[1] = 0, b[2] = 0, b[3] = 0;
    memcpy(b + 4, msg, ml);
    thrift_frame_t f;
    const char *err;
    long r = thrift_parse_head(b, 4 + ml, 4096, &f, NULL, &err);
    cr_assert_eq(r, 4 + 4 + 4 + 3 + 4);
    cr_assert_eq(f.frame_len, (1u << 30) + 4);
    cr_assert(eq(f.name, "add") && f.seqid == 9);
    /* thrift_parse refuses the same bytes outright */
    cr_assert_eq(thrift_parse(b, 4 + ml, 0, &f, NULL, &err), -1);
}

Test(thrift_head, header_block_over_the_limit_from_14_bytes)
{
    uint8_t b[14] = {0, 0, 0x40, 0, 0x0f, 0xff, 0, 0, 0, 0, 0, 1, 0x04, 0x01}; /* 0x401 words = 4100 bytes */
    thrift_frame_t f;
    const char *err = NULL;
    cr_assert_eq(thrift_parse_head(b, 13, 4096, &f, NULL, &err), 0);
    cr_assert_eq(thrift_parse_head(b, 14, 4096, &f, NULL, &err), THRIFT_HEAD_TOO_LARGE);
    cr_assert_not_null(err);
    cr_assert_eq(f.framing, THRIFT_THEADER);
    cr_assert_eq(thrift_parse_head(b, 14, 4104, &f, NULL, &err), 0, "within a larger limit: wait for it");
    b[4] = 0x10, b[5] = 0x00; /* TTHeader: the same rule */
    cr_assert_eq(thrift_parse_head(b, 14, 4096, &f, NULL, &err), THRIFT_HEAD_TOO_LARGE);
}

Test(thrift_head, method_name_over_the_limit_from_its_length)
{
    /* binary strict: version word, then a 5000-byte name length, no name bytes yet */
    uint8_t b[12] = {0, 0, 0x20, 0, 0x80, 0x01, 0x00, 0x01, 0, 0, 0x13, 0x88};
    thrift_frame_t f;
    const char *err = NULL;
    cr_assert_eq(thrift_parse_head(b, 11, 4096, &f, NULL, &err), 0);
    cr_assert_eq(thrift_parse_head(b, 12, 4096, &f, NULL, &err), THRIFT_HEAD_TOO_LARGE);
    cr_assert_eq(thrift_parse_head(b, 12, 8192, &f, NULL, &err), 0);
    /* compact: id, type|version, seqid varint 1, name length varint 5000 */
    uint8_t c[9] = {0, 0, 0x20, 0, 0x82, 0x21, 0x01, 0x88, 0x27};
    cr_assert_eq(thrift_parse_head(c, 8, 4096, &f, NULL, &err), 0);
    cr_assert_eq(thrift_parse_head(c, 9, 4096, &f, NULL, &err), THRIFT_HEAD_TOO_LARGE);
}

Test(thrift_head, bad_bytes_refused_as_thrift_parse_does)
{
    thrift_frame_t f;
    const char *err = NULL;
    cr_assert_eq(thrift_parse_head((const uint8_t *)"GET / HTTP/1.1\r\n", 16, 4096, &f, NULL, &err), -1);
    cr_assert_eq(thrift_parse_head((const uint8_t *)"\x80\x01\x00\x01", 4, 4096, &f, NULL, &err), -1);
    cr_assert_eq(thrift_parse_head((const uint8_t *)"\x00\x00\x00\x02", 4, 4096, &f, NULL, &err), -1);
    /* framed, but neither protocol */
    cr_assert_eq(thrift_parse_head((const uint8_t *)"\x00\x00\x00\x10\x12\x34\x56\x78", 8, 4096, &f, NULL, &err), -1);
    /* THeader with a zlib transform: the header's fields were read, as thrift_parse */
    uint8_t t[20] = {0, 0, 0, 16, 0x0f, 0xff, 0, 0, 0, 0, 0, 5, 0, 1, 0, 1, 1, 0, 0, 0};
    cr_assert_eq(thrift_parse_head(t, 20, 4096, &f, NULL, &err), -1);
    cr_assert_eq(f.framing, THRIFT_THEADER);
    cr_assert_eq(f.header_seqid, 5);
    /* a message header cut short by the end of the frame */
    uint8_t s[12] = {0, 0, 0, 8, 0x80, 0x01, 0x00, 0x01, 0, 0, 0, 9};
    cr_assert_eq(thrift_parse_head(s, 12, 4096, &f, NULL, &err), -1);
}

Test(thrift_head, need_for_the_header_block)
{
    uint8_t b[14] = {0, 0, 0, 100, 0x0f, 0xff, 0, 0, 0, 0, 0, 1, 0, 4};
    thrift_frame_t f;
    const char *err;
    size_t need = 0;
    cr_assert_eq(thrift_parse_head(b, 14, 4096, &f, &need, &err), 0);
    cr_assert_eq(need, 14 + 16);
}
