/* grpcw/grpcw.c - the gRPC wire rules (see grpcw.h). */
#include "grpcw/grpcw.h"

#include "common/errors.h"
#include "common/util.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int grpcw_parse_timeout(const char *s, size_t len, uint64_t *ms)
{
    if (len < 2 || len > 9)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    switch (s[len - 1]) {
    case 'H':
        *ms = v * 3600000u;
        return 0;
    case 'M':
        *ms = v * 60000u;
        return 0;
    case 'S':
        *ms = v * 1000u;
        return 0;
    case 'm':
        *ms = v;
        return 0;
    case 'u':
        *ms = (v + 999u) / 1000u;
        return 0;
    case 'n':
        *ms = (v + 999999u) / 1000000u;
        return 0;
    default:
        return -1;
    }
}

size_t grpcw_format_timeout(uint64_t ms, char *buf, size_t cap)
{
    static const struct {
        uint64_t div;
        char unit;
    } u[] = {{1, 'm'}, {1000, 'S'}, {60000, 'M'}, {3600000, 'H'}};
    for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
        /* rounding up to a coarser unit would lengthen the deadline: only when needed */
        uint64_t v = ms / u[i].div + (ms % u[i].div != 0);
        if (v <= 99999999u) {
            int n = snprintf(buf, cap, "%llu%c", (unsigned long long)v, u[i].unit);
            return n > 0 && (size_t)n < cap ? (size_t)n : 0;
        }
    }
    int n = snprintf(buf, cap, "99999999H");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t grpcw_percent_encode(const char *in, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x20 && c <= 0x7e && c != '%') {
            if (o < cap)
                out[o] = (char)c;
            o++;
            continue;
        }
        char e[3] = {'%', hex[c >> 4], hex[c & 15]};
        for (int k = 0; k < 3; k++, o++)
            if (o < cap)
                out[o] = e[k];
    }
    return o;
}

size_t grpcw_percent_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (in[i] == '%' && i + 2 < len && (h = faas_hexval(in[i + 1])) >= 0 && (l = faas_hexval(in[i + 2])) >= 0) {
            out[o++] = (char)(h << 4 | l);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

int grpcw_parse_path(const char *path, size_t len, grpcw_slice_t *service, grpcw_slice_t *method, const char **err)
{
    if (len < 4 || path[0] != '/')
        return *err = "gRPC path must be /<service>/<method>", -1;
    size_t slash = 0;
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#')
            return *err = "bad byte in gRPC path", -1;
        if (c == '/') {
            if (slash != 0)
                return *err = "gRPC path has more than two parts", -1;
            slash = i;
        }
    }
    if (slash <= 1 || slash == len - 1)
        return *err = "gRPC path must be /<service>/<method>", -1;
    service->ptr = path + 1;
    service->len = slash - 1;
    method->ptr = path + slash + 1;
    method->len = len - slash - 1;
    return 0;
}

int grpcw_content_type_ok(const char *v, size_t len)
{
    static const char ct[] = "application/grpc";
    size_t n = sizeof(ct) - 1;
    if (len < n || strncasecmp(v, ct, n) != 0)
        return 0;
    return len == n || v[n] == '+' || v[n] == ';';
}

int grpcw_metadata_key_ok(const char *name, size_t len)
{
    if (len == 0 || (len >= 5 && memcmp(name, "grpc-", 5) == 0))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int is(const char *name, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

int grpcw_header_forwarded(const char *name, size_t len)
{
    if (len == 0 || name[0] == ':')
        return 0;
    if (len >= 5 && memcmp(name, "faas-", 5) == 0)
        return 0; /* ours: a client cannot forge deadlines or identities */
    static const char *drop[] = {"te",
                                 "grpc-timeout",
                                 "host",
                                 "connection",
                                 "keep-alive",
                                 "proxy-connection",
                                 "transfer-encoding",
                                 "upgrade",
                                 "http2-settings",
                                 "content-length"};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (is(name, len, drop[i]))
            return 0;
    return 1;
}

void grpcw_frame_write(uint8_t out[5], int compressed, uint32_t len)
{
    out[0] = compressed ? 1 : 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

int grpcw_scan(grpcw_scan_t *s, const uint8_t *buf, size_t len, uint32_t max_msg, const char **err)
{
    size_t i = 0;
    while (i < len) {
        if (s->left > 0) {
            size_t n = len - i < s->left ? len - i : (size_t)s->left;
            s->left -= n;
            i += n;
            if (s->left == 0)
                s->messages++;
            continue;
        }
        s->hdr[s->hdr_have++] = buf[i++];
        if (s->hdr_have < 5)
            continue;
        s->hdr_have = 0;
        if (s->hdr[0] > 1)
            return *err = "bad compressed flag in gRPC message prefix", -1;
        uint32_t ml = (uint32_t)s->hdr[1] << 24 | (uint32_t)s->hdr[2] << 16 | (uint32_t)s->hdr[3] << 8 | s->hdr[4];
        if (max_msg != 0 && ml > max_msg)
            return *err = "gRPC message larger than the limit", -1;
        s->left = ml;
        if (ml == 0)
            s->messages++;
    }
    return 0;
}

int grpcw_code_for_http_response(int status)
{
    switch (status) {
    case 400:
        return FAAS_GRPC_INTERNAL;
    case 401:
        return FAAS_GRPC_UNAUTHENTICATED;
    case 403:
        return FAAS_GRPC_PERMISSION_DENIED;
    case 404:
        return FAAS_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return FAAS_GRPC_UNAVAILABLE;
    default:
        return FAAS_GRPC_UNKNOWN;
    }
}
