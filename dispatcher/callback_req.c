/* dispatcher/callback_req.c - the callback POST's request, built by pure functions (URL
 * split, header filter, value sanitiser, request head) apart from the sender in
 * callbacks.c: the function's own result headers flow into it, so it is unit-tested
 * (tests/unit/dispatcher/test_callbacks.c) and fuzzed (tests/fuzz/fuzz_disp_callback.c)
 * without a loop or a network. */
#include "dispatcher/internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int lit_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

int disp_cb_url_parse(const char *url, disp_cb_url_t *u, const char **err)
{
    size_t len = strlen(url), s;
    memset(u, 0, sizeof(*u));
    /* the URL comes back from the store, which any SubmitTask caller writes, not only the
     * gateway that checked it: a space or control byte would break the request line */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return *err = "the URL has a space, control or non-ASCII byte", -1;
    if (strncasecmp(url, "http://", 7) == 0)
        s = 7, u->port = 80;
    else if (strncasecmp(url, "https://", 8) == 0)
        s = 8, u->port = 443, u->tls = 1;
    else
        return *err = "not an http:// or https:// URL", -1;
    size_t e = s;
    while (e < len && url[e] != '/' && url[e] != '?')
        e++;
    const char *a = url + s, *h = a, *hend;
    size_t alen = e - s;
    if (alen != 0 && a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        if (close == NULL)
            return *err = "malformed IPv6 literal", -1;
        h = a + 1, hend = close;
    } else {
        hend = memchr(a, ':', alen);
        if (hend == NULL)
            hend = a + alen;
    }
    const char *rest = hend + (h != a); /* past the ']' */
    if (hend == h || (size_t)(hend - h) >= sizeof(u->host) || memchr(a, '@', alen) != NULL)
        return *err = "bad host", -1;
    if (rest < a + alen) {
        uint32_t port = 0;
        if (*rest != ':' || rest + 1 == a + alen || a + alen - rest > 6)
            return *err = "bad port", -1;
        for (const char *p = rest + 1; p < a + alen; p++) {
            if (*p < '0' || *p > '9')
                return *err = "bad port", -1;
            port = port * 10 + (uint32_t)(*p - '0');
        }
        if (port == 0 || port > 65535)
            return *err = "bad port", -1;
        u->port = (uint16_t)port;
    }
    memcpy(u->host, h, (size_t)(hend - h));
    u->authority = a, u->authority_len = alen;
    u->target = url + e, u->target_len = len - e;
    return 0;
}

int disp_cb_header_dropped(const char *name, size_t len)
{
    static const char *const drop[] = {
        /* hop-by-hop (RFC 9110 7.6.1): they describe the function's connection, not ours */
        "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        /* recomputed, or ours to say */
        "content-length", "host", "faas-request-id", "faas-task-status", "faas-result-status", "faas-task-error"};
    if (len >= 6 && strncasecmp(name, "proxy-", 6) == 0)
        return 1;
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (lit_eq(name, len, drop[i]))
            return 1;
    return 0;
}

size_t disp_cb_sanitize(char *out, size_t cap, const char *in)
{
    size_t n = 0;
    if (cap == 0)
        return 0;
    /* a field value is visible ASCII and inner spaces: anything else could split the
     * head (CR, LF) or be read differently by each receiver (obs-text) */
    for (const unsigned char *p = (const unsigned char *)in; *p != '\0' && n + 1 < cap; p++)
        out[n++] = *p >= 0x21 && *p <= 0x7e ? (char)*p : ' ';
    while (n > 0 && out[n - 1] == ' ')
        n--;
    size_t lead = 0;
    while (lead < n && out[lead] == ' ')
        lead++;
    memmove(out, out + lead, n - lead);
    n -= lead;
    out[n] = '\0';
    return n;
}

/* A growable byte buffer whose first failed allocation sticks. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} wbuf_t;

static void put(wbuf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void put_str(wbuf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_header(wbuf_t *b, const char *name, const char *value, size_t vlen)
{
    put_str(b, name);
    put(b, ": ", 2);
    put(b, value, vlen);
    put(b, "\r\n", 2);
}

static int value_ok(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return 1;
}

const char *disp_cb_task_status(int status)
{
    switch (status) {
    case FAAS__TASK__STATUS__SUCCEEDED:
        return "succeeded";
    case FAAS__TASK__STATUS__CANCELLED:
        return "cancelled";
    default: /* only finished tasks have callbacks due: anything else did not succeed */
        return "failed";
    }
}

/* The platform's own headers: who, how it ended, and why not when it did not succeed. */
static void put_faas_headers(wbuf_t *b, const Faas__Task *t, const Faas__TaskResult *r)
{
    char num[24];
    put_header(b, "faas-request-id", t->id, strlen(t->id));
    const char *st = disp_cb_task_status(t->status);
    put_header(b, "faas-task-status", st, strlen(st));
    if (r != NULL)
        put_header(b, "faas-result-status", num, faas_fmt_u64(num, r->status));
    if (t->status != FAAS__TASK__STATUS__SUCCEEDED) {
        char why[DISP_CB_ERROR_MAX];
        size_t n = disp_cb_sanitize(why, sizeof(why), t->error != NULL ? t->error : "");
        if (n == 0)
            n = (size_t)snprintf(why, sizeof(why), "%s", st);
        put_header(b, "faas-task-error", why, n);
    }
}

char *disp_cb_request_head(const disp_cb_url_t *u, const Faas__Task *t, const Faas__TaskResult *r, size_t *len)
{
    wbuf_t b = {0};
    char num[24];
    put(&b, "POST ", 5);
    if (u->target_len == 0 || u->target[0] != '/')
        put(&b, "/", 1); /* "http://h" and "http://h?q" ask for the root */
    put(&b, u->target, u->target_len);
    put_str(&b, " HTTP/1.1\r\nhost: ");
    put(&b, u->authority, u->authority_len);
    put_str(&b, "\r\nconnection: close\r\n");
    size_t body = r != NULL ? r->body.len : 0;
    put_header(&b, "content-length", num, faas_fmt_u64(num, body));
    put_faas_headers(&b, t, r);
    for (size_t i = 0; r != NULL && i < r->n_headers; i++) {
        const char *k = r->headers[i]->key, *v = r->headers[i]->value;
        size_t kl = strlen(k), ok = kl != 0;
        for (size_t j = 0; j < kl && ok; j++)
            ok = is_tchar((unsigned char)k[j]);
        /* the agent's parser made these; one that could break the head is dropped */
        if (ok && value_ok(v) && !disp_cb_header_dropped(k, kl))
            put_header(&b, k, v, strlen(v));
    }
    put(&b, "\r\n", 2);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
