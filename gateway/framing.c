/* gateway/framing.c - strict HTTP/1.1 message framing (RFC 9112 sections 3.2, 5.2,
 * 6.1, 6.3) for the HTTP port, enforced where h2o parses the request head.
 *
 * Why here: libh2o-evloop 2.2.5 keeps only the first Content-Length (or the
 * Transfer-Encoding) it sees and drops the rest before a handler runs, accepts
 * Transfer-Encoding next to Content-Length and HTTP/1.1 without Host. A proxy in
 * front of the gateway that picks the other header would frame the stream
 * differently: request smuggling. The handler cannot see the evidence any more, so
 * the check sits at the parser.
 *
 * How: h2o's HTTP/1 server (lib/http1.c, handle_incoming_request) calls
 * picohttpparser's phr_parse_request through its PLT. The gateway executable
 * defines phr_parse_request itself, so the dynamic linker binds libh2o's call to
 * this one (as with override_epoll.c's epoll calls); it forwards to the library's
 * (dlsym RTLD_NEXT) and turns a complete head that breaks a rule below into -1, a
 * parse error, which h2o answers with its own "400 Bad Request" + Connection: close
 * and then closes the connection: nothing after the head (a smuggled second
 * request) is ever parsed. -2 (incomplete) and -1 pass through untouched, so the
 * h2c prior-knowledge preface (PRI * HTTP/2.0, a parse error to picohttpparser
 * that h2o then recognises) still reaches h2o. gw_run checks at start-up that the
 * interposition is in effect (gw_framing_self_check) and logs when it is not. */
#include "gateway/internal.h"

#include <string.h>

static const char *const rule_names[GW_FRAMING_NRULES] = {
    [0] = "ok",
    [-GW_FRAMING_CL_DUP] = "content_length_repeated",
    [-GW_FRAMING_CL_BAD] = "content_length_invalid",
    [-GW_FRAMING_TE_CL] = "transfer_encoding_with_content_length",
    [-GW_FRAMING_TE_BAD] = "transfer_encoding_not_chunked",
    [-GW_FRAMING_HOST_COUNT] = "host_count",
    [-GW_FRAMING_HOST_BAD] = "host_invalid",
    [-GW_FRAMING_NAME_BAD] = "header_name_invalid",
    [-GW_FRAMING_OBS_FOLD] = "obsolete_line_folding",
};

const char *gw_http1_framing_rule_name(int rule)
{
    return rule <= 0 && rule > -GW_FRAMING_NRULES ? rule_names[-rule] : "unknown";
}

static int name_is(const gw_http1_hdr_t *h, const char *lit, size_t n)
{
    return h->name_len == n && strncasecmp(h->name, lit, n) == 0;
}

/* RFC 9110 5.6.2 tchar */
static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int name_ok(const gw_http1_hdr_t *h)
{
    if (h->name_len == 0)
        return 0;
    for (size_t i = 0; i < h->name_len; i++)
        if (!is_tchar((unsigned char)h->name[i]))
            return 0;
    return 1;
}

/* 1*DIGIT, at most 19 of them: every such value fits in 63 bits, so no parser
 * downstream can read it differently by overflowing. */
static int cl_ok(const char *v, size_t n)
{
    if (n == 0 || n > 19)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] < '0' || v[i] > '9')
            return 0;
    return 1;
}

/* uri-host [":" port] bytes (RFC 3986 reg-name / IPv4 / IP-literal): unreserved,
 * pct-encoded, sub-delims, ':' and the brackets. Nothing that could end an
 * authority ('/', '?', '#', '@', '\') or hide in a log (controls, spaces, >0x7e). */
static int host_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            continue;
        if (c == 0 || strchr("-._~%!$&'()*+,;=:[]", c) == NULL)
            return 0;
    }
    return 1;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Walks one Transfer-Encoding value's list elements: counts "chunked" codings in
 * *chunked and remembers whether the last non-empty one was chunked in *last. */
static void te_scan(const char *v, size_t n, int *chunked, int *last, int *any)
{
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && v[e] != ',')
            e++;
        size_t s = i, t = i;
        while (s < e && is_ows(v[s]))
            s++;
        t = s;
        while (t < e && v[t] != ';' && !is_ows(v[t]))
            t++;
        if (t > s) {
            int c = t - s == 7 && strncasecmp(v + s, "chunked", 7) == 0;
            *chunked += c;
            *last = c;
            *any = 1;
        }
        i = e + 1;
    }
}

int gw_http1_framing_check(int minor_version, const gw_http1_hdr_t *hs, size_t n, const char **err)
{
    size_t ncl = 0, nte = 0, nhost = 0;
    int chunked = 0, last = 0, any = 0;
    for (size_t i = 0; i < n; i++) {
        const gw_http1_hdr_t *h = &hs[i];
        if (h->name == NULL) { /* picohttpparser's mark of a continuation line */
            *err = "obsolete line folding";
            return GW_FRAMING_OBS_FOLD;
        }
        if (!name_ok(h)) {
            *err = "header name with a byte outside tchar";
            return GW_FRAMING_NAME_BAD;
        }
        if (name_is(h, "content-length", 14)) {
            if (!cl_ok(h->value, h->value_len)) {
                *err = "Content-Length is not a decimal number";
                return GW_FRAMING_CL_BAD;
            }
            ncl++;
        } else if (name_is(h, "transfer-encoding", 17)) {
            te_scan(h->value, h->value_len, &chunked, &last, &any);
            nte++;
        } else if (name_is(h, "host", 4)) {
            if (!host_ok(h->value, h->value_len)) {
                *err = "Host with a byte no authority may hold";
                return GW_FRAMING_HOST_BAD;
            }
            nhost++;
        }
    }
    /* equal repeated values too: h2o keeps only one, so whatever sits in front may
     * have framed by another; a real client never sends two */
    if (ncl > 1) {
        *err = "more than one Content-Length";
        return GW_FRAMING_CL_DUP;
    }
    if (nte != 0 && ncl != 0) {
        *err = "Transfer-Encoding together with Content-Length";
        return GW_FRAMING_TE_CL;
    }
    /* HTTP/1.0 has no transfer codings (RFC 9112 6.1: faulty framing); chunked
     * must be applied exactly once and last, or the body's end is unknowable */
    if (nte != 0 && (minor_version == 0 || !any || chunked != 1 || !last)) {
        *err = "Transfer-Encoding whose final coding is not chunked";
        return GW_FRAMING_TE_BAD;
    }
    if (nhost > 1 || (minor_version >= 1 && nhost != 1)) {
        *err = minor_version >= 1 ? "HTTP/1.1 needs exactly one Host" : "more than one Host";
        return GW_FRAMING_HOST_COUNT;
    }
    *err = NULL;
    return GW_FRAMING_OK;
}

/* ---- the interposer: libh2o's phr_parse_request calls land here ---- */

#ifndef FAAS_FUZZ /* fuzz drivers link the pure check only */

#include <dlfcn.h>
#include <stdlib.h>

#include "common/log.h"

typedef int (*phr_parse_request_fn)(const char *, size_t, const char **, size_t *, const char **, size_t *, int *,
                                    gw_http1_hdr_t *, size_t *, size_t);

static phr_parse_request_fn real_parse;
/* loop thread only (h2o parses requests on it, nothing else calls this) */
/* heads parsed: the loop's own (only the start-up self-check reads it, on its loop);
 * rejections: every loop's, atomic */
static __thread uint64_t g_calls;
static uint64_t g_rejects[GW_FRAMING_NRULES];
static int g_probing; /* the start-up self-check's rejection is no client's: not logged */

/* The symbol libh2o-evloop binds to: same signature as picohttpparser's (its
 * struct phr_header is laid out as gw_http1_hdr_t). */
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path,
                      size_t *path_len, int *minor_version, gw_http1_hdr_t *headers, size_t *num_headers,
                      size_t last_len)
{
    phr_parse_request_fn real = __atomic_load_n(&real_parse, __ATOMIC_ACQUIRE); /* any loop may be first */
    if (real == NULL) {
        real = (phr_parse_request_fn)dlsym(RTLD_NEXT, "phr_parse_request");
        if (real == NULL)
            abort(); /* linked without picohttpparser underneath: h2o itself could not run */
        __atomic_store_n(&real_parse, real, __ATOMIC_RELEASE);
    }
    int rc = real(buf, len, method, method_len, path, path_len, minor_version, headers, num_headers, last_len);
    g_calls++;
    if (rc <= 0)
        return rc; /* incomplete, or an error h2o handles (the h2c preface among them) */
    const char *err;
    int rule = gw_http1_framing_check(*minor_version, headers, *num_headers, &err);
    if (rule == GW_FRAMING_OK)
        return rc;
    __atomic_add_fetch(&g_rejects[-rule], 1, __ATOMIC_RELAXED);
    if (!g_probing)
        FAAS_INFO("event=bad_request status=400 rule=%s msg=\"%s\" action=close", gw_http1_framing_rule_name(rule),
                  err);
    return -1;
}

void gw_framing_stats(uint64_t *calls, uint64_t rejects[GW_FRAMING_NRULES])
{
    *calls = g_calls;
    if (rejects != NULL)
        for (int r = 0; r < GW_FRAMING_NRULES; r++)
            rejects[r] = __atomic_load_n(&g_rejects[r], __ATOMIC_RELAXED);
}

void gw_framing_probe(int on)
{
    g_probing = on;
    if (on)
        return;
    g_calls = 0;
    memset(g_rejects, 0, sizeof(g_rejects));
}

#endif
