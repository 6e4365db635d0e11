/* http1/http1.c - pure HTTP/1.x parsing (see http1.h). Written for the agent, which
 * links no libh2o and so no picohttpparser. */
#include "http1/http1.h"

#include <string.h>
#include <strings.h>

#include "common/util.h"

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int http1_sniff_preface(const char *buf, size_t len)
{
    size_t n = len < sizeof(preface) - 1 ? len : sizeof(preface) - 1;
    if (memcmp(buf, preface, n) == 0)
        return HTTP1_SNIFF_H2;
    /* a request line starts with a method token; an h2c client always sends PRI first */
    return len > 0 && buf[0] >= 'A' && buf[0] <= 'Z' ? HTTP1_SNIFF_HTTP1 : HTTP1_SNIFF_OTHER;
}

/* RFC 9110 tchar, as a table: header names are scanned byte by byte on every response */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1,  ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['a'] = 1,  ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,
    ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,  ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1,
    ['z'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1,  ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1,
    ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1,  ['Z'] = 1};

static int is_tchar(unsigned char c)
{
    return tchar[c];
}

/* One line [p, end of line); returns its length without CR LF and sets *next, or -1 if
 * no LF is there yet. A bare CR inside a line is an error (-2). */
static long line_at(const char *p, const char *end, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (lf == NULL)
        return -1;
    *next = lf + 1;
    const char *e = lf > p && lf[-1] == '\r' ? lf - 1 : lf;
    if (memchr(p, '\r', (size_t)(e - p)) != NULL)
        return -2;
    return e - p;
}

static int parse_status_line(const char *p, long n, int *minor, int *status, const char **msg, size_t *msg_len)
{
    /* HTTP/1.x SSS[ reason] */
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' || p[8] != ' ')
        return -1;
    if (p[9] < '1' || p[9] > '9' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return -1;
    if (n > 12 && p[12] != ' ')
        return -1;
    *minor = p[7] - '0';
    *status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    *msg = n > 12 ? p + 13 : p + 12;
    *msg_len = n > 12 ? (size_t)(n - 13) : 0;
    return 0;
}

static int parse_header_line(const char *p, long n, http1_hdr_t *h)
{
    long i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ':')
        return -1; /* also refuses obs-fold (a line starting with blanks) */
    h->name = p;
    h->name_len = (size_t)i;
    i++;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    long e = n;
    while (e > i && (p[e - 1] == ' ' || p[e - 1] == '\t'))
        e--;
    for (long k = i; k < e; k++)
        if ((unsigned char)p[k] < 0x20 && p[k] != '\t')
            return -1;
    h->value = p + i;
    h->value_len = (size_t)(e - i);
    return 0;
}

int http1_parse_response(const char *buf, size_t len, int *minor, int *status, const char **msg, size_t *msg_len,
                         http1_hdr_t *hdrs, size_t *nhdrs)
{
    const char *p = buf, *end = buf + len, *next;
    size_t cap = *nhdrs, n = 0;
    long l = line_at(p, end, &next);
    if (l == -1)
        return len > 0 && (len < 5 ? memcmp(buf, "HTTP/", len) : memcmp(buf, "HTTP/", 5)) != 0 ? -1 : -2;
    if (l < 0 || parse_status_line(p, l, minor, status, msg, msg_len) != 0)
        return -1;
    for (p = next;;) {
        l = line_at(p, end, &next);
        if (l == -1)
            return -2;
        if (l == -2)
            return -1;
        if (l == 0) {
            *nhdrs = n;
            return (int)(next - buf);
        }
        if (n == cap || parse_header_line(p, l, &hdrs[n]) != 0)
            return -1;
        n++;
        p = next;
    }
}

enum { CH_SIZE, CH_EXT, CH_DATA, CH_DATA_END, CH_TRAILER, CH_TRAILER_LINE };

long http1_chunked_decode(http1_chunked_t *d, char *buf, size_t *len)
{
    size_t in = 0, out = 0, n = *len;
    while (in < n) {
        char c = buf[in];
        switch (d->state) {
        case CH_SIZE: {
            int v = faas_hexval(c);
            if (v >= 0) {
                if (d->digits == 15)
                    return -1; /* chunk sizes past 2^60 are not real */
                d->left = d->left * 16 + (uint64_t)v;
                d->digits++;
                in++;
                break;
            }
            if (d->digits == 0)
                return -1;
            d->state = CH_EXT; /* extensions, optional CR: up to LF */
            break;
        }
        case CH_EXT:
            in++;
            if (c == '\n')
                d->state = d->left == 0 ? CH_TRAILER : CH_DATA;
            break;
        case CH_DATA: {
            size_t take = n - in < d->left ? n - in : (size_t)d->left;
            memmove(buf + out, buf + in, take);
            in += take, out += take;
            d->left -= take;
            if (d->left == 0)
                d->state = CH_DATA_END, d->crlf = 0;
            break;
        }
        case CH_DATA_END: /* CRLF (or LF) after the chunk's data */
            in++;
            if (c == '\r' && d->crlf == 0) {
                d->crlf = 1;
            } else if (c == '\n') {
                d->state = CH_SIZE;
                d->digits = 0;
                d->left = 0;
            } else {
                return -1;
            }
            break;
        case CH_TRAILER: /* start of a trailer line: empty line ends the body */
            in++;
            if (c == '\n') {
                *len = out;
                memmove(buf + out, buf + in, n - in);
                d->state = CH_SIZE, d->digits = 0, d->left = 0;
                return (long)(n - in);
            }
            if (c != '\r')
                d->state = CH_TRAILER_LINE;
            break;
        case CH_TRAILER_LINE:
            in++;
            if (c == '\n')
                d->state = CH_TRAILER;
            break;
        }
    }
    *len = out;
    return -2;
}

int http1_token_listed(const char *v, size_t vlen, const char *name, size_t nlen)
{
    size_t i = 0;
    while (i < vlen) {
        while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < vlen && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (i - start == nlen && nlen > 0 && strncasecmp(v + start, name, nlen) == 0)
            return 1;
    }
    return 0;
}

int http1_parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 12)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static int hname_is(const http1_hdr_t *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* 1 if the comma-separated value has the token (case-insensitive). */
static int has_token(const http1_hdr_t *h, const char *tok)
{
    return http1_token_listed(h->value, h->value_len, tok, strlen(tok));
}

int http1_resp_framing(int minor_version, int status, int is_head, const http1_hdr_t *h, size_t n, http1_framing_t *out,
                       const char **err)
{
    int chunked = 0, have_len = 0, close = 0, keep = 0;
    uint64_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (hname_is(h + i, "transfer-encoding")) {
            /* only a final "chunked" frames the body; anything else is read to EOF */
            chunked = h[i].value_len >= 7 && strncasecmp(h[i].value + h[i].value_len - 7, "chunked", 7) == 0 ? 1 : -1;
        } else if (hname_is(h + i, "content-length")) {
            uint64_t v;
            if (http1_parse_u64(h[i].value, h[i].value_len, &v) != 0 || (have_len && v != len))
                return *err = "invalid content-length", -1;
            len = v, have_len = 1;
        } else if (hname_is(h + i, "connection")) {
            close |= has_token(h + i, "close");
            keep |= has_token(h + i, "keep-alive");
        }
    }
    out->keepalive = minor_version >= 1 ? !close : keep && !close;
    out->length = 0;
    if (is_head || status == 204 || status == 304 || (status >= 100 && status < 200)) {
        out->body = HTTP1_BODY_NONE;
    } else if (chunked == 1) {
        out->body = HTTP1_BODY_CHUNKED;
    } else if (chunked == -1 || !have_len) {
        out->body = HTTP1_BODY_EOF;
        out->keepalive = 0;
    } else {
        out->body = len == 0 ? HTTP1_BODY_NONE : HTTP1_BODY_LENGTH;
        out->length = len;
    }
    return 0;
}

/* ---- requests (the agent's direct port, docs/endpoints.md) ---- */

/* METHOD SP request-target SP HTTP/1.x: the method a token, the target visible ASCII */
static int parse_request_line(const char *p, long n, http1_request_t *out)
{
    long i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return -1;
    out->method = p;
    out->method_len = (size_t)i;
    long t = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == t || n - i != 9 || p[i] != ' ' || memcmp(p + i + 1, "HTTP/1.", 7) != 0 || p[n - 1] < '0' || p[n - 1] > '9')
        return -1;
    out->target = p + t;
    out->target_len = (size_t)(i - t);
    out->minor = p[n - 1] - '0';
    return 0;
}

int http1_parse_request(const char *buf, size_t len, http1_request_t *out, http1_hdr_t *hdrs, size_t *nhdrs)
{
    const char *p = buf, *end = buf + len, *next;
    size_t cap = *nhdrs, n = 0;
    long l = line_at(p, end, &next);
    if (l == -1)
        return -2;
    if (l < 0 || parse_request_line(p, l, out) != 0)
        return -1;
    for (p = next;;) {
        l = line_at(p, end, &next);
        if (l == -1)
            return -2;
        if (l == -2)
            return -1;
        if (l == 0) {
            *nhdrs = n;
            return next - buf > INT32_MAX ? -1 : (int)(next - buf);
        }
        if (n == cap || parse_header_line(p, l, &hdrs[n]) != 0)
            return -1;
        n++;
        p = next;
    }
}

int http1_req_framing(int minor_version, const http1_hdr_t *h, size_t n, http1_framing_t *out, const char **err)
{
    int te = 0, have_len = 0, close = 0, keep = 0;
    uint64_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (hname_is(h + i, "transfer-encoding")) {
            /* RFC 9112 6.3: a request's only framing coding is a final "chunked"; a second
             * Transfer-Encoding line or another coding cannot be framed (request smuggling) */
            if (te || h[i].value_len != 7 || strncasecmp(h[i].value, "chunked", 7) != 0)
                return *err = "unsupported transfer-encoding", -1;
            te = 1;
        } else if (hname_is(h + i, "content-length")) {
            uint64_t v;
            if (http1_parse_u64(h[i].value, h[i].value_len, &v) != 0 || (have_len && v != len))
                return *err = "invalid content-length", -1;
            len = v, have_len = 1;
        } else if (hname_is(h + i, "connection")) {
            close |= has_token(h + i, "close");
            keep |= has_token(h + i, "keep-alive");
        }
    }
    if (te && have_len)
        return *err = "both content-length and transfer-encoding", -1;
    if (te && minor_version == 0)
        return *err = "transfer-encoding in an HTTP/1.0 request", -1;
    out->keepalive = minor_version >= 1 ? !close : keep && !close;
    out->body = te ? HTTP1_BODY_CHUNKED : len != 0 ? HTTP1_BODY_LENGTH : HTTP1_BODY_NONE;
    out->length = len;
    return 0;
}
