/* gateway/route.c - pure parsers of the front end: the routing key and header rules.
 * No allocation and no I/O so they can be unit-tested and fuzzed. */
#include "gateway/gateway.h"
#include "gateway/internal.h"

#include <string.h>
#include <strings.h>

#define FN_PREFIX "/function/"
#define FN_PREFIX_LEN (sizeof(FN_PREFIX) - 1)

static int name_char(unsigned char c, int first)
{
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return 1;
    return !first && c == '-';
}

/* Bytes a request target may carry (RFC 3986 pchar + '/', '?', '%'); anything else
 * (controls, spaces, DEL, non-ASCII) means a broken or hostile client. */
static int target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '#';
}

int gw_route_name_check(const char *name, size_t len, const char **err)
{
    if (len > 63) {
        *err = "function name longer than 63 bytes";
        return GW_ERR_MALFORMED;
    }
    if (len == 0) {
        *err = "missing function name";
        return GW_ERR_MALFORMED;
    }
    for (size_t k = 0; k < len; k++) {
        if (!name_char((unsigned char)name[k], k == 0)) {
            *err = "function name must match [a-z0-9][a-z0-9-]*";
            return GW_ERR_MALFORMED;
        }
    }
    return 0;
}

int gw_route_under(const char *path, size_t len, const char *prefix, size_t plen, const char *missing, gw_slice_t *name,
                   gw_slice_t *rest, const char **err)
{
    name->ptr = rest->ptr = path;
    name->len = rest->len = 0;
    if (len == 0 || path[0] != '/') {
        *err = "request target must start with '/'";
        return GW_ERR_MALFORMED;
    }
    for (size_t i = 0; i < len; i++) {
        if (!target_char((unsigned char)path[i])) {
            *err = "request target has a forbidden byte";
            return GW_ERR_MALFORMED;
        }
    }
    /* "/function" and "/function?x" have no name: not ours to route, but malformed */
    if (len < plen || memcmp(path, prefix, plen) != 0) {
        if (len >= plen - 1 && memcmp(path, prefix, plen - 1) == 0 && (len == plen - 1 || path[plen - 1] == '?')) {
            *err = missing;
            return GW_ERR_MALFORMED;
        }
        return GW_ROUTE_OTHER;
    }
    size_t i = plen;
    while (i < len && path[i] != '/' && path[i] != '?')
        i++;
    if (i == plen) {
        *err = missing;
        return GW_ERR_MALFORMED;
    }
    if (gw_route_name_check(path + plen, i - plen, err) != 0)
        return GW_ERR_MALFORMED;
    name->ptr = path + plen;
    name->len = i - plen;
    rest->ptr = path + i;
    rest->len = len - i;
    return GW_ROUTE_FUNCTION;
}

int gw_route_parse(const char *path, size_t len, gw_slice_t *name, gw_slice_t *rest, const char **err)
{
    return gw_route_under(path, len, FN_PREFIX, FN_PREFIX_LEN, "missing function name after /function/", name, rest,
                          err);
}

int gw_route_host(const char *host, size_t len, const char *domain, size_t dlen, gw_slice_t *name)
{
    name->ptr = host;
    name->len = 0;
    if (dlen == 0)
        return -1;
    /* strip a port, but not from a bracketed IPv6 literal (never a function host) */
    for (size_t i = len; i > 0; i--) {
        if (host[i - 1] == ':') {
            len = i - 1;
            break;
        }
        if (host[i - 1] < '0' || host[i - 1] > '9')
            break;
    }
    if (len > 0 && host[len - 1] == '.')
        len--; /* absolute form "fn.example.com." */
    if (len < dlen + 2 || host[len - dlen - 1] != '.' || strncasecmp(host + len - dlen, domain, dlen) != 0)
        return -1;
    size_t nlen = len - dlen - 1;
    if (nlen == 0 || nlen > 63)
        return -1;
    for (size_t k = 0; k < nlen; k++) {
        unsigned char c = (unsigned char)host[k];
        if (c >= 'A' && c <= 'Z')
            return -1; /* names are lower case; h2o keeps the Host as sent */
        if (!name_char(c, k == 0))
            return -1;
    }
    name->len = nlen;
    return 0;
}

static int token_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* 1 if name appears as a comma-separated token of the Connection header value. */
static int listed_in_connection(const char *name, size_t len, const char *conn, size_t connlen)
{
    size_t i = 0;
    while (i < connlen) {
        while (i < connlen && (conn[i] == ' ' || conn[i] == '\t' || conn[i] == ','))
            i++;
        size_t s = i;
        while (i < connlen && conn[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (conn[e - 1] == ' ' || conn[e - 1] == '\t'))
            e--;
        if (e > s && token_eq(conn + s, e - s, name, len))
            return 1;
    }
    return 0;
}

int gw_header_is_hop(const char *name, size_t len, const char *value, size_t vlen, const char *conn, size_t connlen)
{
    static const char *const hop[] = {"connection",        "keep-alive", "proxy-connection",
                                      "transfer-encoding", "upgrade",    "http2-settings"};
    for (size_t k = 0; k < sizeof(hop) / sizeof(hop[0]); k++)
        if (token_eq(name, len, hop[k], strlen(hop[k])))
            return 1;
    if (token_eq(name, len, "te", 2))
        return !token_eq(value, vlen, "trailers", 8);
    return listed_in_connection(name, len, conn, connlen);
}

int gw_request_id_sane(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

int gw_response_header_own(const char *name, size_t len)
{
    static const char *const own[] = {"connection", "keep-alive", "transfer-encoding", "content-length",
                                      "date",       "upgrade",    "proxy-connection"};
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (strlen(own[i]) == len && strncasecmp(name, own[i], len) == 0)
            return 1;
    return 0;
}
