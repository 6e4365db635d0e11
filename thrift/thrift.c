/* thrift/thrift.c - the Thrift framing codec (see thrift.h). Every read is
 * bounds-checked against the frame; nothing is allocated. */
#include "thrift/thrift.h"

#include <string.h>

#define THEADER_MAGIC 0x0FFFu
#define TTHEADER_MAGIC 0x1000u
#define BINARY_VERSION_1 0x80010000u
#define BINARY_VERSION_MASK 0xffff0000u
#define COMPACT_PROTOCOL_ID 0x82u
#define COMPACT_VERSION 1u

/* TTHeader info block ids */
#define TT_INFO_PADDING 0x00
#define TT_INFO_KEYVALUE 0x01
#define TT_INFO_INTKEYVALUE 0x10
#define TT_INFO_ACL_TOKEN 0x11
/* THeader info type */
#define TH_INFO_KEYVALUE 0x01

typedef struct {
    const uint8_t *p;
    size_t len, off;
} rd_t;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static int rd_u8(rd_t *r, uint8_t *v)
{
    if (r->off + 1 > r->len)
        return -1;
    *v = r->p[r->off++];
    return 0;
}

static int rd_u16(rd_t *r, uint16_t *v)
{
    if (r->off + 2 > r->len)
        return -1;
    *v = be16(r->p + r->off);
    r->off += 2;
    return 0;
}

static int rd_u32(rd_t *r, uint32_t *v)
{
    if (r->off + 4 > r->len)
        return -1;
    *v = be32(r->p + r->off);
    r->off += 4;
    return 0;
}

static int rd_bytes(rd_t *r, size_t n, thrift_bytes_t *out)
{
    if (n > r->len - r->off)
        return -1;
    out->ptr = r->p + r->off;
    out->len = n;
    r->off += n;
    return 0;
}

/* Unsigned LEB128 varint of at most 32 bits (THeader fields, compact lengths). */
static int rd_varint32(rd_t *r, uint32_t *v)
{
    uint32_t out = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        uint8_t b;
        if (rd_u8(r, &b) != 0)
            return -1;
        if (shift == 28 && (b & 0xf0) != 0)
            return -1; /* more than 32 bits */
        out |= (uint32_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = out;
            return 0;
        }
    }
    return -1;
}

/* ---- message headers -------------------------------------------------------- */

static int parse_binary_message(rd_t *r, thrift_bytes_t *name, uint8_t *mtype, int32_t *seqid, const char **err)
{
    uint32_t w;
    if (rd_u32(r, &w) != 0)
        goto truncated;
    if ((w & 0x80000000u) != 0) {
        if ((w & BINARY_VERSION_MASK) != BINARY_VERSION_1) {
            *err = "bad binary protocol version";
            return -1;
        }
        *mtype = (uint8_t)(w & 0xff);
        uint32_t nlen;
        if (rd_u32(r, &nlen) != 0 || rd_bytes(r, nlen, name) != 0)
            goto truncated;
    } else {
        /* old non-strict binary: name length first, then type byte */
        if (rd_bytes(r, w, name) != 0 || rd_u8(r, mtype) != 0)
            goto truncated;
    }
    uint32_t s;
    if (rd_u32(r, &s) != 0)
        goto truncated;
    *seqid = (int32_t)s;
    return 0;
truncated:
    *err = "truncated binary message header";
    return -2; /* thrift_parse_head waits for more bytes on this one */
}

static int parse_compact_message(rd_t *r, thrift_bytes_t *name, uint8_t *mtype, int32_t *seqid, const char **err)
{
    uint8_t id, tv;
    uint32_t s, nlen;
    if (rd_u8(r, &id) != 0 || rd_u8(r, &tv) != 0)
        goto truncated;
    if (id != COMPACT_PROTOCOL_ID || (tv & 0x1f) != COMPACT_VERSION) {
        *err = "bad compact protocol id or version";
        return -1;
    }
    *mtype = (uint8_t)(tv >> 5);
    if (rd_varint32(r, &s) != 0 || rd_varint32(r, &nlen) != 0 || rd_bytes(r, nlen, name) != 0)
        goto truncated;
    *seqid = (int32_t)s;
    return 0;
truncated:
    *err = "truncated compact message header";
    return -2;
}

/* As thrift_parse_message over r (r->off ends after the seqid or name), but -2 when
 * the bytes end inside the message header. */
static int parse_message_rd(thrift_proto_t proto, rd_t *r, thrift_bytes_t *name, uint8_t *mtype, int32_t *seqid,
                            const char **err)
{
    int rc = proto == THRIFT_COMPACT ? parse_compact_message(r, name, mtype, seqid, err)
                                     : parse_binary_message(r, name, mtype, seqid, err);
    if (rc != 0)
        return rc;
    if (*mtype < THRIFT_CALL || *mtype > THRIFT_ONEWAY) {
        *err = "unknown thrift message type";
        return -1;
    }
    return 0;
}

int thrift_parse_message(thrift_proto_t proto, const uint8_t *p, size_t len, thrift_bytes_t *name, uint8_t *mtype,
                         int32_t *seqid, const char **err)
{
    rd_t r = {p, len, 0};
    return parse_message_rd(proto, &r, name, mtype, seqid, err) == 0 ? 0 : -1;
}

/* The announced length of the method name in the first len bytes of a message:
 * 0 with *nlen, or -1 when they do not say it yet. */
static int peek_name_len(thrift_proto_t proto, const uint8_t *p, size_t len, uint32_t *nlen)
{
    rd_t r = {p, len, 0};
    uint8_t a;
    uint32_t w;
    if (proto == THRIFT_COMPACT)
        return rd_u8(&r, &a) != 0 || rd_u8(&r, &a) != 0 || rd_varint32(&r, &w) != 0 || rd_varint32(&r, nlen) != 0 ? -1
                                                                                                                  : 0;
    if (rd_u32(&r, &w) != 0)
        return -1;
    if ((w & 0x80000000u) != 0)
        return rd_u32(&r, nlen);
    *nlen = w; /* old non-strict binary: the name length comes first */
    return 0;
}

/* Which protocol a bare message is in, from its first bytes; -1 if neither. */
static int sniff_proto(const uint8_t *p, size_t len)
{
    if (len >= 2 && p[0] == COMPACT_PROTOCOL_ID && (p[1] & 0x1f) == COMPACT_VERSION)
        return THRIFT_COMPACT;
    if (len >= 4 && (be32(p) & BINARY_VERSION_MASK) == BINARY_VERSION_1)
        return THRIFT_BINARY;
    return -1;
}

/* ---- info headers ------------------------------------------------------------ */

static int add_header(thrift_frame_t *f, const thrift_header_t *h, const char **err)
{
    if (f->n_headers == THRIFT_MAX_HEADERS) {
        *err = "too many info headers";
        return -1;
    }
    f->headers[f->n_headers++] = *h;
    return 0;
}

static int theader_info(rd_t *r, thrift_frame_t *f, const char **err)
{
    while (r->off < r->len) {
        uint32_t type, count;
        if (rd_varint32(r, &type) != 0)
            goto bad;
        if (type != TH_INFO_KEYVALUE)
            return 0; /* padding (0) or a type we do not know: the rest is skipped */
        if (rd_varint32(r, &count) != 0)
            goto bad;
        for (uint32_t i = 0; i < count; i++) {
            thrift_header_t h = {0};
            uint32_t kl, vl;
            if (rd_varint32(r, &kl) != 0 || rd_bytes(r, kl, &h.key) != 0 || rd_varint32(r, &vl) != 0 ||
                rd_bytes(r, vl, &h.value) != 0)
                goto bad;
            if (add_header(f, &h, err) != 0)
                return -1;
        }
    }
    return 0;
bad:
    *err = "malformed THeader info headers";
    return -1;
}

static int ttheader_info(rd_t *r, thrift_frame_t *f, const char **err)
{
    while (r->off < r->len) {
        uint8_t id = 0;
        uint16_t count, a, b;
        if (rd_u8(r, &id) != 0)
            goto bad;
        if (id == TT_INFO_PADDING)
            continue;
        if (id == TT_INFO_ACL_TOKEN) {
            if (rd_u16(r, &a) != 0 || rd_bytes(r, a, &f->acl_token) != 0)
                goto bad;
            continue;
        }
        if (id != TT_INFO_KEYVALUE && id != TT_INFO_INTKEYVALUE) {
            *err = "unknown TTHeader info id";
            return -1;
        }
        if (rd_u16(r, &count) != 0)
            goto bad;
        for (uint16_t i = 0; i < count; i++) {
            thrift_header_t h = {0};
            if (id == TT_INFO_INTKEYVALUE) {
                h.is_int = 1;
                if (rd_u16(r, &h.int_key) != 0)
                    goto bad;
            } else if (rd_u16(r, &a) != 0 || rd_bytes(r, a, &h.key) != 0) {
                goto bad;
            }
            if (rd_u16(r, &b) != 0 || rd_bytes(r, b, &h.value) != 0)
                goto bad;
            if (add_header(f, &h, err) != 0)
                return -1;
        }
    }
    return 0;
bad:
    *err = "malformed TTHeader info headers";
    return -1;
}

/* ---- frames ------------------------------------------------------------------ */

/* The header part shared by THeader and TTHeader: after the 4-byte length come
 * magic(2) flags(2) seqid(4) header-size/4 (2), then size*4 bytes of header. */
static int parse_header_frame(thrift_frame_t *f, rd_t *r, const char **err)
{
    uint16_t magic, hwords;
    uint32_t seq;
    if (rd_u16(r, &magic) != 0 || rd_u16(r, &f->flags) != 0 || rd_u32(r, &seq) != 0 || rd_u16(r, &hwords) != 0) {
        *err = "truncated header frame";
        return -1;
    }
    f->header_seqid = (int32_t)seq;
    size_t hlen = (size_t)hwords * 4;
    if (hlen > r->len - r->off) {
        *err = "header size larger than the frame";
        return -1;
    }
    rd_t h = {r->p + r->off, hlen, 0};
    r->off += hlen;
    int tt = f->framing == THRIFT_TTHEADER;
    uint32_t proto, ntrans;
    uint8_t b8;
    if (tt) {
        if (rd_u8(&h, &b8) != 0)
            goto bad;
        proto = b8;
        if (rd_u8(&h, &b8) != 0)
            goto bad;
        ntrans = b8;
    } else if (rd_varint32(&h, &proto) != 0 || rd_varint32(&h, &ntrans) != 0) {
        goto bad;
    }
    if (proto != THRIFT_BINARY && proto != THRIFT_COMPACT) {
        *err = "unsupported header protocol id (binary and compact only)";
        return -1;
    }
    f->proto = (thrift_proto_t)proto;
    if (ntrans != 0) {
        /* zlib and friends would need the payload rewritten; the platform never
         * touches payloads, so a transformed frame cannot be routed */
        *err = "header transforms are not supported";
        return -1;
    }
    return tt ? ttheader_info(&h, f, err) : theader_info(&h, f, err);
bad:
    *err = "truncated header";
    return -1;
}

/* A TTHeader payload may carry its own 4-byte length (Kitex "framed" inside). */
static void ttheader_inner_frame(thrift_frame_t *f)
{
    if (f->payload.len < 8 || sniff_proto(f->payload.ptr, f->payload.len) >= 0)
        return;
    uint32_t inner = be32(f->payload.ptr);
    if (inner == f->payload.len - 4 && sniff_proto(f->payload.ptr + 4, f->payload.len - 4) >= 0) {
        f->inner_framed = 1;
        f->payload.ptr += 4;
        f->payload.len -= 4;
    }
}

static void split_name(thrift_frame_t *f)
{
    const uint8_t *colon = f->name.len ? memchr(f->name.ptr, ':', f->name.len) : NULL;
    if (colon == NULL) {
        f->service = (thrift_bytes_t){f->name.ptr, 0};
        f->method = f->name;
        return;
    }
    f->service = (thrift_bytes_t){f->name.ptr, (size_t)(colon - f->name.ptr)};
    f->method = (thrift_bytes_t){colon + 1, f->name.len - f->service.len - 1};
}

/* The 4-byte length's own rules, shared by thrift_parse and thrift_parse_head. */
static int check_length(uint32_t flen, const char **err)
{
    if (flen & 0x80000000u) {
        *err = "unframed thrift is not accepted (use framed, THeader or TTHeader)";
        return -1;
    }
    if (flen == 0x504f5354u || flen == 0x47455420u || flen == 0x50524920u || flen == 0x48454144u) {
        *err = "HTTP request on the Thrift port";
        return -1; /* "POST", "GET ", "PRI ", "HEAD" */
    }
    if (flen < 4) {
        *err = "frame too short";
        return -1;
    }
    return 0;
}

long thrift_parse(const uint8_t *buf, size_t len, size_t max_frame, thrift_frame_t *f, size_t *need, const char **err)
{
    if (need)
        *need = 0;
    if (len < 4)
        return 0;
    uint32_t flen = be32(buf);
    if (flen & 0x80000000u || flen == 0x504f5354u || flen == 0x47455420u || flen == 0x50524920u || flen == 0x48454144u)
        return check_length(flen, err);
    if (max_frame == 0)
        max_frame = THRIFT_DEFAULT_MAX_FRAME;
    if (flen > max_frame) {
        *err = "frame larger than the limit";
        return -1;
    }
    if (check_length(flen, err) != 0)
        return -1;
    if (len < 4 + (size_t)flen) {
        if (need)
            *need = 4 + (size_t)flen;
        return 0;
    }
    memset(f, 0, sizeof(*f));
    f->frame_len = 4 + (size_t)flen;
    rd_t r = {buf + 4, flen, 0};
    uint16_t magic = be16(buf + 4);
    if (magic == THEADER_MAGIC || magic == TTHEADER_MAGIC) {
        f->framing = magic == THEADER_MAGIC ? THRIFT_THEADER : THRIFT_TTHEADER;
        if (parse_header_frame(f, &r, err) != 0)
            return -1;
        f->payload = (thrift_bytes_t){r.p + r.off, r.len - r.off};
        if (f->framing == THRIFT_TTHEADER)
            ttheader_inner_frame(f);
    } else {
        int p = sniff_proto(buf + 4, flen);
        if (p < 0) {
            *err = "not a thrift frame (unknown framing or protocol)";
            return -1;
        }
        f->framing = THRIFT_FRAMED;
        f->proto = (thrift_proto_t)p;
        f->payload = (thrift_bytes_t){buf + 4, flen};
    }
    if (thrift_parse_message(f->proto, f->payload.ptr, f->payload.len, &f->name, &f->mtype, &f->seqid, err) != 0)
        return -1;
    split_name(f);
    return (long)f->frame_len;
}

/* THeader/TTHeader part of thrift_parse_head: the header block from avail bytes at
 * buf; 0 with *off at the payload, 1 when more bytes are needed, or an error. */
static long head_header(const uint8_t *buf, size_t avail, size_t max_header, thrift_frame_t *f, size_t *off,
                        size_t *need, const char **err)
{
    size_t flen = f->frame_len - 4;
    if (flen < 10) {
        *err = "truncated header frame";
        return -1;
    }
    if (avail < 14)
        return 1;
    size_t hlen = (size_t)be16(buf + 12) * 4;
    if (hlen > max_header) {
        *err = "THeader/TTHeader header larger than the limit";
        return THRIFT_HEAD_TOO_LARGE;
    }
    if (hlen > flen - 10) {
        *err = "header size larger than the frame";
        return -1;
    }
    if (avail < 14 + hlen) {
        if (need)
            *need = 14 + hlen;
        return 1;
    }
    rd_t r = {buf + 4, 10 + hlen, 0};
    if (parse_header_frame(f, &r, err) != 0)
        return -1;
    *off = 14 + hlen;
    size_t plen = f->frame_len - *off;
    if (f->framing == THRIFT_TTHEADER && plen >= 8) { /* as ttheader_inner_frame, on 8 bytes */
        if (avail < *off + 8)
            return 1;
        const uint8_t *p = buf + *off;
        if (sniff_proto(p, 8) < 0 && be32(p) == plen - 4 && sniff_proto(p + 4, 4) >= 0) {
            f->inner_framed = 1;
            *off += 4;
        }
    }
    return 0;
}

long thrift_parse_head(const uint8_t *buf, size_t len, size_t max_header, thrift_frame_t *f, size_t *need,
                       const char **err)
{
    if (need)
        *need = 0;
    if (len < 4)
        return 0;
    uint32_t flen = be32(buf);
    if (check_length(flen, err) != 0)
        return -1;
    memset(f, 0, sizeof(*f));
    f->frame_len = 4 + (size_t)flen;
    size_t avail = len < f->frame_len ? len : f->frame_len, off = 4;
    if (avail < 8 && avail < f->frame_len)
        return 0; /* the magic or the protocol's first word */
    uint16_t magic = be16(buf + 4);
    if (magic == THEADER_MAGIC || magic == TTHEADER_MAGIC) {
        f->framing = magic == THEADER_MAGIC ? THRIFT_THEADER : THRIFT_TTHEADER;
        long rc = head_header(buf, avail, max_header, f, &off, need, err);
        if (rc != 0)
            return rc > 0 ? 0 : rc;
    } else {
        int p = sniff_proto(buf + 4, avail - 4);
        if (p < 0) {
            *err = "not a thrift frame (unknown framing or protocol)";
            return -1;
        }
        f->framing = THRIFT_FRAMED;
        f->proto = (thrift_proto_t)p;
    }
    uint32_t nlen;
    if (peek_name_len(f->proto, buf + off, avail - off, &nlen) == 0 && nlen > max_header) {
        *err = "method name larger than the limit";
        return THRIFT_HEAD_TOO_LARGE;
    }
    rd_t r = {buf + off, avail - off, 0};
    int rc = parse_message_rd(f->proto, &r, &f->name, &f->mtype, &f->seqid, err);
    if (rc == -2 && avail < f->frame_len)
        return 0; /* more of the message header is on its way */
    if (rc != 0)
        return -1;
    split_name(f);
    f->payload = (thrift_bytes_t){buf + off, 0};
    return (long)(off + r.off);
}

/* ---- lookups ----------------------------------------------------------------- */

const thrift_bytes_t *thrift_header(const thrift_frame_t *f, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < f->n_headers; i++) {
        const thrift_header_t *h = &f->headers[i];
        if (!h->is_int && h->key.len == kl && memcmp(h->key.ptr, key, kl) == 0)
            return &h->value;
    }
    return NULL;
}

const thrift_bytes_t *thrift_int_header(const thrift_frame_t *f, uint16_t key)
{
    for (size_t i = 0; i < f->n_headers; i++)
        if (f->headers[i].is_int && f->headers[i].int_key == key)
            return &f->headers[i].value;
    return NULL;
}

int thrift_routing_key(const thrift_frame_t *f, thrift_bytes_t *key)
{
    const thrift_bytes_t *v = NULL;
    if (f->framing == THRIFT_TTHEADER) {
        v = thrift_int_header(f, THRIFT_TTHEADER_KEY_TO_SERVICE);
        if (v == NULL || v->len == 0)
            v = thrift_header(f, "to_service");
    } else if (f->framing == THRIFT_THEADER) {
        v = thrift_header(f, "faas-function");
    }
    if (v != NULL && v->len > 0) {
        *key = *v;
        return 0;
    }
    if (f->service.len > 0) {
        *key = f->service;
        return 0;
    }
    return -1;
}

/* ---- encoders ---------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t cap, off;
} wr_t;

static void w_u8(wr_t *w, uint8_t v)
{
    if (w->off < w->cap)
        w->p[w->off] = v;
    w->off++;
}

static void w_u16(wr_t *w, uint16_t v)
{
    w_u8(w, (uint8_t)(v >> 8));
    w_u8(w, (uint8_t)v);
}

static void w_u32(wr_t *w, uint32_t v)
{
    w_u16(w, (uint16_t)(v >> 16));
    w_u16(w, (uint16_t)v);
}

static void w_bytes(wr_t *w, const uint8_t *p, size_t n)
{
    if (w->off + n <= w->cap && n > 0)
        memcpy(w->p + w->off, p, n);
    w->off += n;
}

static void w_varint(wr_t *w, uint32_t v)
{
    while (v >= 0x80) {
        w_u8(w, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    w_u8(w, (uint8_t)v);
}

static void put_u32_at(wr_t *w, size_t at, uint32_t v)
{
    if (at + 4 <= w->cap) {
        w->p[at] = (uint8_t)(v >> 24);
        w->p[at + 1] = (uint8_t)(v >> 16);
        w->p[at + 2] = (uint8_t)(v >> 8);
        w->p[at + 3] = (uint8_t)v;
    }
}

static void put_u16_at(wr_t *w, size_t at, uint16_t v)
{
    if (at + 2 <= w->cap) {
        w->p[at] = (uint8_t)(v >> 8);
        w->p[at + 1] = (uint8_t)v;
    }
}

static void w_theader_info(wr_t *w, const thrift_header_t *hs, size_t n)
{
    size_t nstr = 0;
    for (size_t i = 0; i < n; i++)
        nstr += !hs[i].is_int;
    if (nstr == 0)
        return;
    w_varint(w, TH_INFO_KEYVALUE);
    w_varint(w, (uint32_t)nstr);
    for (size_t i = 0; i < n; i++) {
        if (hs[i].is_int)
            continue;
        w_varint(w, (uint32_t)hs[i].key.len);
        w_bytes(w, hs[i].key.ptr, hs[i].key.len);
        w_varint(w, (uint32_t)hs[i].value.len);
        w_bytes(w, hs[i].value.ptr, hs[i].value.len);
    }
}

static void w_ttheader_info(wr_t *w, const thrift_header_t *hs, size_t n)
{
    size_t nstr = 0, nint = 0;
    for (size_t i = 0; i < n; i++)
        hs[i].is_int ? nint++ : nstr++;
    if (nint > 0) {
        w_u8(w, TT_INFO_INTKEYVALUE);
        w_u16(w, (uint16_t)nint);
        for (size_t i = 0; i < n; i++) {
            if (!hs[i].is_int)
                continue;
            w_u16(w, hs[i].int_key);
            w_u16(w, (uint16_t)hs[i].value.len);
            w_bytes(w, hs[i].value.ptr, hs[i].value.len);
        }
    }
    if (nstr > 0) {
        w_u8(w, TT_INFO_KEYVALUE);
        w_u16(w, (uint16_t)nstr);
        for (size_t i = 0; i < n; i++) {
            if (hs[i].is_int)
                continue;
            w_u16(w, (uint16_t)hs[i].key.len);
            w_bytes(w, hs[i].key.ptr, hs[i].key.len);
            w_u16(w, (uint16_t)hs[i].value.len);
            w_bytes(w, hs[i].value.ptr, hs[i].value.len);
        }
    }
}

/* inner: a TTHeader payload carries its own 4-byte length (Kitex TTHeaderFramed). */
static size_t encode_frame(thrift_framing_t framing, thrift_proto_t proto, uint16_t flags, int32_t seqid,
                           const thrift_header_t *headers, size_t n_headers, const uint8_t *payload, size_t payload_len,
                           int inner, uint8_t *out, size_t cap)
{
    wr_t w = {out, cap, 0};
    w_u32(&w, 0); /* length, patched below */
    if (framing != THRIFT_FRAMED) {
        int tt = framing == THRIFT_TTHEADER;
        w_u16(&w, tt ? TTHEADER_MAGIC : THEADER_MAGIC);
        w_u16(&w, flags);
        w_u32(&w, (uint32_t)seqid);
        size_t hsize_at = w.off;
        w_u16(&w, 0);
        size_t hstart = w.off;
        if (tt) {
            w_u8(&w, (uint8_t)proto);
            w_u8(&w, 0);
            w_ttheader_info(&w, headers, n_headers);
        } else {
            w_varint(&w, proto);
            w_varint(&w, 0);
            w_theader_info(&w, headers, n_headers);
        }
        while ((w.off - hstart) % 4 != 0)
            w_u8(&w, 0);
        put_u16_at(&w, hsize_at, (uint16_t)((w.off - hstart) / 4));
        if (inner && tt)
            w_u32(&w, (uint32_t)payload_len);
    }
    w_bytes(&w, payload, payload_len);
    put_u32_at(&w, 0, (uint32_t)(w.off - 4));
    return w.off;
}

size_t thrift_encode_frame(thrift_framing_t framing, thrift_proto_t proto, uint16_t flags, int32_t seqid,
                           const thrift_header_t *headers, size_t n_headers, const uint8_t *payload, size_t payload_len,
                           uint8_t *out, size_t cap)
{
    return encode_frame(framing, proto, flags, seqid, headers, n_headers, payload, payload_len, 0, out, cap);
}

size_t thrift_encode_reply(const thrift_frame_t *req, const thrift_header_t *headers, size_t n_headers,
                           const uint8_t *payload, size_t payload_len, uint8_t *out, size_t cap)
{
    return encode_frame(req->framing, req->proto, req->flags, req->header_seqid, headers, n_headers, payload,
                        payload_len, req->inner_framed, out, cap);
}

size_t thrift_encode_exception_message(thrift_proto_t proto, thrift_bytes_t name, int32_t seqid, int32_t type,
                                       const char *msg, uint8_t *out, size_t cap)
{
    wr_t w = {out, cap, 0};
    size_t ml = strlen(msg);
    if (proto == THRIFT_COMPACT) {
        w_u8(&w, COMPACT_PROTOCOL_ID);
        w_u8(&w, (uint8_t)(THRIFT_EXCEPTION << 5 | COMPACT_VERSION));
        w_varint(&w, (uint32_t)seqid);
        w_varint(&w, (uint32_t)name.len);
        w_bytes(&w, name.ptr, name.len);
        w_u8(&w, 0x18); /* field 1 (delta 1), type binary (8) */
        w_varint(&w, (uint32_t)ml);
        w_bytes(&w, (const uint8_t *)msg, ml);
        w_u8(&w, 0x15);                                               /* field 2 (delta 1), type i32 (5) */
        w_varint(&w, ((uint32_t)type << 1) ^ (uint32_t)(type >> 31)); /* zigzag */
        w_u8(&w, 0);                                                  /* stop */
        return w.off;
    }
    w_u32(&w, BINARY_VERSION_1 | THRIFT_EXCEPTION);
    w_u32(&w, (uint32_t)name.len);
    w_bytes(&w, name.ptr, name.len);
    w_u32(&w, (uint32_t)seqid);
    w_u8(&w, 11); /* T_STRING */
    w_u16(&w, 1);
    w_u32(&w, (uint32_t)ml);
    w_bytes(&w, (const uint8_t *)msg, ml);
    w_u8(&w, 8); /* T_I32 */
    w_u16(&w, 2);
    w_u32(&w, (uint32_t)type);
    w_u8(&w, 0); /* T_STOP */
    return w.off;
}

size_t thrift_encode_error(const thrift_frame_t *f, int32_t type, const char *msg, uint8_t *out, size_t cap)
{
    uint8_t body[1024];
    char clipped[512];
    size_t ml = strlen(msg);
    if (ml >= sizeof(clipped))
        ml = sizeof(clipped) - 1;
    memcpy(clipped, msg, ml);
    clipped[ml] = '\0';
    thrift_bytes_t name = f->name;
    if (name.len > 256)
        name.len = 256;
    size_t n = thrift_encode_exception_message(f->proto, name, f->seqid, type, clipped, body, sizeof(body));
    if (n > sizeof(body))
        return (size_t)-1;
    return thrift_encode_reply(f, NULL, 0, body, n, out, cap);
}

/* ---- info headers as h2 headers ------------------------------------------------ */

static int key_plain(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '-' || p[i] == '_' ||
              p[i] == '.'))
            return 0;
    return 1;
}

static int value_printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return 0;
    return n == 0 || (p[0] != ' ' && p[n - 1] != ' ');
}

static const char hexd[] = "0123456789abcdef";

size_t thrift_meta_name(const thrift_header_t *h, char *out, size_t cap)
{
    /* 4 KiB: metadata, not payload; also keeps every value within TTHeader's u16 lengths */
    if (h->value.len > THRIFT_MAX_META_VALUE || !value_printable(h->value.ptr, h->value.len))
        return 0;
    if (h->is_int) {
        char tmp[24];
        int n = 0;
        unsigned v = h->int_key;
        char digits[8];
        int nd = 0;
        do {
            digits[nd++] = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        memcpy(tmp, "faas-thrift-i-", 14);
        n = 14;
        while (nd > 0)
            tmp[n++] = digits[--nd];
        if ((size_t)n > cap)
            return 0;
        memcpy(out, tmp, (size_t)n);
        return (size_t)n;
    }
    if (h->key.len > 200 || h->key.len == 0) /* an empty key would give a name with nothing after the prefix */
        return 0;
    int plain = key_plain(h->key.ptr, h->key.len);
    size_t n = 14 + (plain ? h->key.len : 2 * h->key.len);
    if (n > cap)
        return 0;
    memcpy(out, plain ? "faas-thrift-h-" : "faas-thrift-x-", 14);
    for (size_t i = 0; i < h->key.len; i++) {
        if (plain) {
            out[14 + i] = (char)h->key.ptr[i];
        } else {
            out[14 + 2 * i] = hexd[h->key.ptr[i] >> 4];
            out[15 + 2 * i] = hexd[h->key.ptr[i] & 15];
        }
    }
    return n;
}

static int unhex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int thrift_meta_parse(const char *name, size_t nlen, const char *value, size_t vlen, uint8_t *keybuf, size_t cap,
                      thrift_header_t *h)
{
    if (nlen <= 14 || memcmp(name, "faas-thrift-", 12) != 0 || name[13] != '-')
        return -1;
    const char *k = name + 14;
    size_t kl = nlen - 14;
    memset(h, 0, sizeof(*h));
    h->value = (thrift_bytes_t){(const uint8_t *)value, vlen};
    switch (name[12]) {
    case 'h':
        h->key = (thrift_bytes_t){(const uint8_t *)k, kl};
        return 0;
    case 'x':
        if (kl % 2 != 0 || kl / 2 > cap)
            return -1;
        for (size_t i = 0; i < kl / 2; i++) {
            int a = unhex(k[2 * i]), b = unhex(k[2 * i + 1]);
            if (a < 0 || b < 0)
                return -1;
            keybuf[i] = (uint8_t)(a << 4 | b);
        }
        h->key = (thrift_bytes_t){keybuf, kl / 2};
        return 0;
    case 'i': {
        unsigned v = 0;
        if (kl == 0 || kl > 5)
            return -1;
        for (size_t i = 0; i < kl; i++) {
            if (k[i] < '0' || k[i] > '9')
                return -1;
            v = v * 10 + (unsigned)(k[i] - '0');
        }
        if (v > 65535)
            return -1;
        h->is_int = 1;
        h->int_key = (uint16_t)v;
        return 0;
    }
    default:
        return -1;
    }
}
