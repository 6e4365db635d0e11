/* gateway/server.c - the h2o front end: one listener for HTTP/1.1, h2c prior
 * knowledge and h2c Upgrade; /healthz, /metrics and /function/<name>/... routes;
 * header rewriting; platform errors. Forwarding itself is the dispatcher's. */
#include "gateway/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "dispatcher/dispatcher.h"
#include "gateway/grpc.h"
#include "gateway/override_epoll.h"

static h2o_globalconf_t g_conf;

/* One event loop thread (--threads): its own h2o context, listeners (SO_REUSEPORT)
 * and dispatcher replica (docs/threads.md). Loop 0 runs on the main thread. */
typedef struct {
    unsigned idx;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept;
    int http_fd, grpc_fd, thrift_fd; /* -1: that port is off */
} gw_loop_t;

static gw_loop_t *g_loops;
static __thread gw_loop_t *t_loop;
static uint64_t g_max_body;
static uint32_t g_max_url, g_max_hdr;
static const char *g_domain;
static size_t g_domain_len;
#define H2_BODY_SLACK (1u << 20)
static volatile sig_atomic_t g_stop;

void gw_send_text(h2o_req_t *req, int status, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = faas_http_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; charset=utf-8"));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

/* ---- one HTTP request as a dispatcher call ---- */

/* Lives in the request's pool: freed (and the call closed) when h2o disposes of it. */
typedef struct {
    h2o_req_t *req;
    disp_call_t *call; /* NULL for requests that never reached the dispatcher */
    const char *fn;
    size_t fnlen;
    uint64_t start_us;
    h2o_generator_t gen;
    h2o_buffer_t *recv_buf, *send_buf; /* arriving from the function / being sent by h2o */
    size_t send_len;
    int sending, eos, aborted, final_sent;
} hcall_t;

static void on_hcall_dispose(void *p)
{
    hcall_t *h = p;
    int code = h->req->res.status ? h->req->res.status : 499;
    if (h->fn != NULL)
        gw_metrics_record(h->fn, h->fnlen, code, h->req->version >= 0x200, faas_now_us() - h->start_us);
    if (h->call != NULL)
        disp_call_close(h->call);
    if (h->recv_buf != NULL)
        h2o_buffer_dispose(&h->recv_buf);
    if (h->send_buf != NULL)
        h2o_buffer_dispose(&h->send_buf);
}

static void send_more(hcall_t *h)
{
    if (h->sending || h->final_sent || (h->recv_buf->size == 0 && !h->eos))
        return;
    /* swap: what arrived is now what h2o sends; new bytes collect in recv_buf */
    h2o_buffer_t *t = h->send_buf;
    h->send_buf = h->recv_buf;
    h->recv_buf = t;
    h->send_len = h->send_buf->size;
    h2o_iovec_t iov = h2o_iovec_init(h->send_buf->bytes, h->send_len);
    h2o_send_state_t st = H2O_SEND_STATE_IN_PROGRESS;
    if (h->eos) {
        st = h->aborted ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL;
        h->final_sent = 1;
    }
    h->sending = 1;
    h2o_send(h->req, &iov, iov.len ? 1 : 0, st);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    hcall_t *h = H2O_STRUCT_FROM_MEMBER(hcall_t, gen, gen);
    h->sending = 0;
    if (h->send_len != 0) {
        h2o_buffer_consume(&h->send_buf, h->send_len);
        /* the function's window comes back only once the client took the bytes */
        disp_call_consumed(h->call, h->send_len);
        h->send_len = 0;
    }
    send_more(h);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    /* the client went away: disposing of the request closes the call */
}

static int hdr_is(const nghttp2_nv *v, const char *lit, size_t n)
{
    return v->namelen == n && memcmp(v->name, lit, n) == 0;
}

static void sink_head(disp_call_t *c, int status, const nghttp2_nv *hs, size_t n)
{
    hcall_t *h = disp_call_owner(c);
    h2o_req_t *req = h->req;
    req->res.status = status;
    req->res.reason = faas_http_reason(status);
    for (size_t i = 0; i < n; i++) {
        const nghttp2_nv *v = &hs[i];
        if (hdr_is(v, "content-length", 14)) {
            size_t cl = 0;
            for (size_t k = 0; k < v->valuelen; k++)
                cl = cl * 10 + (size_t)(v->value[k] - '0');
            req->res.content_length = cl;
            continue;
        }
        if (gw_response_header_own((const char *)v->name, v->namelen))
            continue;
        h2o_iovec_t nm = h2o_strdup(&req->pool, (const char *)v->name, v->namelen);
        h2o_iovec_t val = h2o_strdup(&req->pool, (const char *)v->value, v->valuelen);
        h2o_add_header_by_str(&req->pool, &req->res.headers, nm.base, nm.len, 1, NULL, val.base, val.len);
    }
    h->gen.proceed = on_proceed;
    h->gen.stop = on_stop;
    h2o_buffer_init(&h->recv_buf, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&h->send_buf, &h2o_socket_buffer_prototype);
    h2o_start_response(req, &h->gen);
}

static void sink_data(disp_call_t *c, const uint8_t *d, size_t len)
{
    hcall_t *h = disp_call_owner(c);
    h2o_iovec_t dst = h2o_buffer_reserve(&h->recv_buf, len);
    memcpy(dst.base, d, len);
    h->recv_buf->size += len;
    send_more(h);
}

static void sink_end(disp_call_t *c, const nghttp2_nv *trl, size_t n)
{
    hcall_t *h = disp_call_owner(c);
    h->eos = 1;
    send_more(h);
}

/* Platform errors: a short sentence naming the function, nothing internal. */
void gw_send_error(h2o_req_t *req, int status, const char *fn, size_t fnlen, const char *what, int retry_after_s)
{
    if (retry_after_s > 0) {
        char *ra = h2o_mem_alloc_pool(&req->pool, 16);
        int n = snprintf(ra, 16, "%d", retry_after_s);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, ra, (size_t)n);
    }
    size_t cap = fnlen + strlen(what) + 32;
    char *body = h2o_mem_alloc_pool(&req->pool, cap);
    int n =
        fnlen ? snprintf(body, cap, "function %.*s: %s\n", (int)fnlen, fn, what) : snprintf(body, cap, "%s\n", what);
    gw_send_text(req, status, body, (size_t)n);
}

void gw_send_platform_error(h2o_req_t *req, faas_err_t kind, const char *fn, size_t fnlen, const char *what)
{
    const faas_err_reply_t *r = faas_err_reply(kind);
    gw_send_error(req, r->http, fn, fnlen, what, r->retry_after ? FAAS_ERR_RETRY_AFTER_S : 0);
}

static void sink_error(disp_call_t *c, faas_err_t kind, const char *msg, int started)
{
    hcall_t *h = disp_call_owner(c);
    if (started) {
        /* headers are out: the only honest thing left is to break the response */
        h->aborted = h->eos = 1;
        send_more(h);
        return;
    }
    gw_send_platform_error(h->req, kind, h->fn, h->fnlen, msg);
}

static const disp_sink_t http_sink = {.head = sink_head, .data = sink_data, .end = sink_end, .error = sink_error};

/* Decimal digits of v at p; returns the end. */
static char *put_u8(char *p, unsigned v)
{
    if (v >= 100)
        *p++ = (char)('0' + v / 100);
    if (v >= 10)
        *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* The client's address as text; IPv4 by hand: inet_ntop's sprintf showed in profiles. */
static size_t peer_ip(h2o_req_t *req, char *buf, size_t cap, int *v6)
{
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    *v6 = 0;
    buf[0] = '\0';
    if (sl == 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        const uint8_t *a = (const uint8_t *)&((struct sockaddr_in *)&ss)->sin_addr;
        char *p = buf;
        for (int i = 0; i < 4; i++) {
            if (i != 0)
                *p++ = '.';
            p = put_u8(p, a[i]);
        }
        *p = '\0';
        return (size_t)(p - buf);
    }
    if (ss.ss_family == AF_INET6 &&
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, (socklen_t)cap) != NULL) {
        *v6 = 1;
        return strlen(buf);
    }
    buf[0] = '\0';
    return 0;
}

static h2o_iovec_t join(h2o_mem_pool_t *pool, h2o_iovec_t a, const char *sep, const char *b, size_t blen)
{
    size_t sl = a.len ? strlen(sep) : 0;
    char *p = h2o_mem_alloc_pool(pool, a.len + sl + blen);
    if (a.len != 0)
        memcpy(p, a.base, a.len);
    memcpy(p + a.len, sep, sl);
    memcpy(p + a.len + sl, b, blen);
    return h2o_iovec_init(p, a.len + sl + blen);
}

static int starts_with_ci(const h2o_iovec_t *s, const char *p, size_t n)
{
    return s->len >= n && strncasecmp(s->base, p, n) == 0;
}

static int add_hdr(gw_hdr_sink_t add, void *ud, const char *n, size_t nl, h2o_iovec_t v)
{
    return add(ud, n, nl, v.base, v.len);
}

/* The client's address as the agent sees it: x-forwarded-for and forwarded appended. */
static int forwarded_headers(h2o_req_t *req, gw_hdr_sink_t add, void *ud, h2o_iovec_t xff, h2o_iovec_t fwd)
{
    char ip[INET6_ADDRSTRLEN];
    int v6;
    size_t iplen = peer_ip(req, ip, sizeof(ip), &v6);
    /* for=1.2.3.4;proto=http or for="[::1]";proto=http */
    char f[INET6_ADDRSTRLEN + 32], *e = f;
    memcpy(e, v6 ? "for=\"[" : "for=", v6 ? 6 : 4);
    e += v6 ? 6 : 4;
    memcpy(e, ip, iplen);
    e += iplen;
    if (v6) {
        memcpy(e, "]\"", 2);
        e += 2;
    }
    memcpy(e, ";proto=http", 11);
    e += 11;
    return add_hdr(add, ud, H2O_STRLIT("x-forwarded-for"), join(&req->pool, xff, ", ", ip, iplen)) |
           add_hdr(add, ud, H2O_STRLIT("forwarded"), join(&req->pool, fwd, ", ", f, (size_t)(e - f)));
}

int gw_forward_headers(h2o_req_t *req, gw_hdr_sink_t add, void *ud)
{
    int rc = 0;
    h2o_iovec_t conn = {NULL, 0}, xff = {NULL, 0}, fwd = {NULL, 0};
    ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONNECTION, -1);
    if (ci >= 0)
        conn = req->headers.entries[ci].value;
    for (size_t i = 0; i < req->headers.size; i++) {
        h2o_header_t *e = &req->headers.entries[i];
        h2o_iovec_t *nm = e->name;
        if (nm == &H2O_TOKEN_HOST->buf)
            continue; /* carried as :authority */
        if (nm == &H2O_TOKEN_EXPECT->buf)
            continue; /* h2o has read the whole body already: nothing left to expect */
        if (gw_header_is_hop(nm->base, nm->len, e->value.base, e->value.len, conn.base, conn.len))
            continue;
        if (nm == &H2O_TOKEN_X_FORWARDED_FOR->buf) {
            xff = xff.len ? join(&req->pool, xff, ", ", e->value.base, e->value.len) : e->value;
            continue;
        }
        if (h2o_memis(nm->base, nm->len, H2O_STRLIT("forwarded"))) {
            fwd = fwd.len ? join(&req->pool, fwd, ", ", e->value.base, e->value.len) : e->value;
            continue;
        }
        if (starts_with_ci(nm, "faas-", 5) || (nm->len == 12 && memcmp(nm->base, "http2-settings", 12) == 0))
            continue;
        rc |= add_hdr(add, ud, nm->base, nm->len, e->value);
    }
    return rc | forwarded_headers(req, add, ud, xff, fwd);
}

static int call_add(void *ud, const char *n, size_t nl, const char *v, size_t vl)
{
    return disp_call_header(ud, n, nl, v, vl);
}

/* The request the agent sees: method, path, authority, the client's end-to-end headers. */
static int call_headers(h2o_req_t *req, disp_call_t *c, h2o_iovec_t path)
{
    return add_hdr(call_add, c, H2O_STRLIT(":method"), req->method) |
           add_hdr(call_add, c, H2O_STRLIT(":scheme"), h2o_iovec_init(H2O_STRLIT("http"))) |
           add_hdr(call_add, c, H2O_STRLIT(":authority"), req->authority) |
           add_hdr(call_add, c, H2O_STRLIT(":path"), path) | gw_forward_headers(req, call_add, c);
}

/* Hands the request to the dispatcher as a call; platform errors come back through the sink. */
static void forward(h2o_req_t *req, hcall_t *h, h2o_iovec_t path, const char *rid)
{
    disp_call_t *c = disp_call_new(DISP_PROTO_HTTP, &http_sink, h);
    if (c == NULL) {
        gw_send_platform_error(req, FAAS_ERR_UNAVAILABLE, h->fn, h->fnlen, "gateway out of memory");
        return;
    }
    h->call = c;
    if (call_headers(req, c, path) != 0 ||
        disp_call_body(c, req->entity.base, req->entity.base != NULL ? req->entity.len : 0, 1) != 0) {
        gw_send_platform_error(req, FAAS_ERR_UNAVAILABLE, h->fn, h->fnlen, "gateway out of memory");
        return;
    }
    disp_call_start(c, h->fn, h->fnlen, rid, 0);
}

const char *gw_request_id(h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i >= 0 && gw_request_id_sane(req->headers.entries[i].value.base, req->headers.entries[i].value.len))
        return h2o_strdup(&req->pool, req->headers.entries[i].value.base, req->headers.entries[i].value.len).base;
    char *id = h2o_mem_alloc_pool(&req->pool, 17);
    faas_request_id(id);
    return id;
}

static int serve_metrics(h2o_req_t *req)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return -1;
    gw_metrics_write(f);
    gw_thrift_metrics_write(f);
    disp_metrics(f);
    fclose(f);
    h2o_iovec_t body = h2o_strdup(&req->pool, buf, len);
    free(buf);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    req->res.content_length = body.len;
    h2o_send_inline(req, body.base, body.len);
    return 0;
}

/* Prefer: respond-async (RFC 7240) on any of the request's Prefer lines. */
static int prefers_async(h2o_req_t *req)
{
    for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("prefer"), i)) >= 0;)
        if (gw_prefer_respond_async(req->headers.entries[i].value.base, req->headers.entries[i].value.len))
            return 1;
    return 0;
}

/* ---- routing misses (dispatcher/resolve.c), for every h2o-served route ---- */

typedef struct {
    h2o_req_t *req;
    disp_resolve_t *r; /* NULL once answered */
    void (*again)(h2o_req_t *req, void *arg);
    void *arg;
    const char *name;
    size_t len;
} gw_miss_t;

static void on_miss_dispose(void *p)
{
    gw_miss_t *m = p;
    disp_resolve_cancel(m->r); /* the client left first */
}

static void on_miss_resolved(void *ud, int found)
{
    gw_miss_t *m = ud;
    m->r = NULL;
    if (found >= 0) {
        m->again(m->req, m->arg); /* routes now, or says the 404 as before */
    } else {
        gw_metrics_other();
        gw_send_error(m->req, 503, m->name, m->len,
                      disp_ready() ? "not in the gateway's table and discovery did not confirm it in time"
                                   : "the gateway has no discovery snapshot yet",
                      FAAS_ERR_RETRY_AFTER_S);
    }
}

void gw_resolve_req(h2o_req_t *req, const char *name, size_t len, void (*again)(h2o_req_t *req, void *arg), void *arg)
{
    gw_miss_t *m = h2o_mem_alloc_shared(&req->pool, sizeof(*m), on_miss_dispose);
    *m = (gw_miss_t){.req = req, .again = again, .arg = arg, .name = name, .len = len};
    m->r = disp_resolve(DISP_PROTO_HTTP, name, len, on_miss_resolved, m);
}

/* A /function/ request: to its function, or a platform error. resolved: the name
 * missed the table once and discovery said it exists (disp_resolve). */
static void serve_function(h2o_req_t *req, gw_slice_t name, gw_slice_t rest, int resolved);

static void serve_resolved(h2o_req_t *req, void *arg)
{
    gw_slice_t *nr = arg;
    serve_function(req, nr[0], nr[1], 1);
}

static void serve_function(h2o_req_t *req, gw_slice_t name, gw_slice_t rest, int resolved)
{
    disp_fn_info_t info = {0};
    int known = disp_lookup(name.ptr, name.len, &info) == 0;
    if (!known && !resolved) {
        gw_slice_t *arg = h2o_mem_alloc_pool(&req->pool, 2 * sizeof(*arg));
        arg[0] = name;
        arg[1] = rest;
        gw_resolve_req(req, name.ptr, name.len, serve_resolved, arg);
        return;
    }
    const char *rid = gw_request_id(req);
    hcall_t *h = NULL;
    if (known) {
        h = h2o_mem_alloc_shared(&req->pool, sizeof(*h), on_hcall_dispose);
        memset(h, 0, sizeof(*h));
        h->req = req;
        h->fn = name.ptr;
        h->fnlen = name.len;
        h->start_us = faas_now_us();
    } else {
        /* counted with the unrouted requests: a metrics series per name a client
         * made up would let anyone grow the gateway's memory and /metrics */
        gw_metrics_other();
    }
    uint64_t limit = info.max_body_bytes != 0 && info.max_body_bytes < g_max_body ? info.max_body_bytes : g_max_body;
    if (req->entity.base != NULL && req->entity.len > limit) {
        FAAS_INFO("event=request_error request_id=%s fn=%.*s status=413 msg=\"body too large\"", rid, (int)name.len,
                  name.ptr);
        gw_send_platform_error(req, FAAS_ERR_TOO_LARGE, name.ptr, name.len, "request body too large");
        return;
    }
    if (!known) {
        FAAS_INFO("event=request_error request_id=%s fn=%.*s status=404 msg=\"no such function\"", rid, (int)name.len,
                  name.ptr);
        gw_send_platform_error(req, FAAS_ERR_NOT_FOUND, name.ptr, name.len, "no such function");
        return;
    }
    if (prefers_async(req)) {
        gw_tasks_submit(req, name.ptr, name.len, rest.ptr, rest.len, 1);
        return;
    }
    h2o_iovec_t path;
    if (rest.len == 0)
        path = h2o_iovec_init(H2O_STRLIT("/"));
    else if (rest.ptr[0] == '?')
        path = join(&req->pool, h2o_iovec_init(H2O_STRLIT("/")), "", rest.ptr, rest.len);
    else
        path = h2o_iovec_init(rest.ptr, rest.len);
    forward(req, h, path, rid);
}


/* Sizes only the client chose, refused before routing so that every route (health,
 * metrics, tasks, functions; HTTP/1 and h2 alike) is covered and no function ever
 * sees them: 414 for the path (query included), 431 for the header fields (names +
 * values, Host included; a single value over the limit is over the total too). */
static int refuse_too_large(h2o_req_t *req)
{
    int status = 0;
    if (req->path.len > g_max_url) {
        status = 414;
    } else {
        /* Host as "host" + value, as a header; h2o has taken Content-Length,
         * Transfer-Encoding, Expect and Upgrade out of req->headers (it acts on them) */
        size_t total = req->authority.len != 0 ? 4 + req->authority.len : 0;
        for (size_t i = 0; i < req->headers.size && total <= g_max_hdr; i++)
            total += req->headers.entries[i].name->len + req->headers.entries[i].value.len;
        if (total > g_max_hdr)
            status = 431;
    }
    if (status == 0)
        return 0;
    gw_metrics_http_limit(status);
    FAAS_INFO("event=bad_request status=%d path_bytes=%zu", status, req->path.len);
    req->http1_is_persistent = 0; /* the rest of what this client sends is not worth reading */
    if (status == 414)
        gw_send_text(req, 414, H2O_STRLIT("request path too long\n"));
    else
        gw_send_text(req, 431, H2O_STRLIT("request header fields too large\n"));
    return 1;
}

/* h2c Upgrade (RFC 9113 lets a server ignore it; h2c.c takes bodiless requests). */
static int upgrade_h2c(h2o_req_t *req)
{
    return req->version < 0x200 && req->upgrade.base != NULL &&
           h2o_lcstris(req->upgrade.base, req->upgrade.len, H2O_STRLIT("h2c")) && gw_h2c_upgrade(req) == 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    if (refuse_too_large(req))
        return 0;
    if (upgrade_h2c(req))
        return 0;
    gw_slice_t name, rest;
    const char *err = NULL;
    int rc = gw_route_parse(req->path.base, req->path.len, &name, &rest, &err);
    if (rc == GW_ERR_MALFORMED) {
        gw_metrics_other();
        FAAS_INFO("event=bad_request status=400 msg=\"%s\"", err);
        gw_send_platform_error(req, FAAS_ERR_MALFORMED, NULL, 0, err);
        return 0;
    }
    /* Host "<name>.<domain>" owns the whole path, /healthz and /metrics included */
    gw_slice_t hname;
    if (g_domain_len != 0 &&
        gw_route_host(req->authority.base, req->authority.len, g_domain, g_domain_len, &hname) == 0) {
        name = hname;
        rest.ptr = req->path.base;
        rest.len = req->path.len;
        rc = GW_ROUTE_FUNCTION;
    }
    if (rc == GW_ROUTE_OTHER && gw_tasks_serve(req))
        return 0;
    if (rc == GW_ROUTE_OTHER) {
        gw_metrics_other();
        /* ready = routing is right: before the first snapshot every function would miss */
        if (h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/healthz"))) {
            if (disp_ready())
                gw_send_text(req, 200, H2O_STRLIT("ok\n"));
            else
                gw_send_error(req, 503, NULL, 0, "not ready: no discovery snapshot yet", FAAS_ERR_RETRY_AFTER_S);
            return 0;
        }
        if (h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/livez"))) {
            gw_send_text(req, 200, H2O_STRLIT("ok\n"));
            return 0;
        }
        if (h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/metrics")))
            return serve_metrics(req);
        gw_send_platform_error(req, FAAS_ERR_NOT_FOUND, NULL, 0, "no route; functions live under /function/<name>/");
        return 0;
    }
    serve_function(req, name, rest, 0);
    return 0;
}

/* ---- the epoll override (override_epoll.c), checked against h2o at start-up ---- */

static void on_probe_read(h2o_socket_t *sock, const char *err)
{
    (*(int *)sock->data)++;
    if (err == NULL)
        h2o_buffer_consume(&sock->input, sock->input->size);
}

/* 0 if h2o's loop drives its epoll set the way the override assumes: through the
 * overridden calls, read interest dropped lazily (no syscall), an event that came
 * while h2o was not reading hidden from it, and delivered once it reads again. */
static int override_epoll_check(h2o_evloop_t *loop)
{
    int sv[2], reads = 0, ok = 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    h2o_socket_t *sock = h2o_evloop_socket_create(loop, sv[0], 0);
    sock->data = &reads;
    gw_override_epoll_stats_t s0, s1, s2, s3;
    gw_override_epoll_get_stats(&s0);
    h2o_socket_read_start(sock, on_probe_read);
    h2o_evloop_run(loop, 0);
    gw_override_epoll_get_stats(&s1);
    h2o_socket_read_stop(sock);
    h2o_evloop_run(loop, 0);
    gw_override_epoll_get_stats(&s2);
    if (write(sv[1], "x", 1) == 1) {
        h2o_evloop_run(loop, 0);
        gw_override_epoll_get_stats(&s3);
        int hidden = reads == 0 && s3.hidden > s2.hidden;
        h2o_socket_read_start(sock, on_probe_read);
        for (int i = 0; i < 3 && reads == 0; i++)
            h2o_evloop_run(loop, 0);
        ok = s1.lib_ctl > s0.lib_ctl && s2.lib_ctl > s1.lib_ctl && s2.real_ctl == s1.real_ctl && hidden && reads == 1;
    }
    h2o_socket_close(sock);
    close(sv[1]);
    h2o_evloop_run(loop, 0);
    return ok ? 0 : -1;
}

/* The loop, with its epoll set managed by the override unless it is off (build
 * option, FAAS_GW_OVERRIDE_EPOLL=0) or h2o does not behave as it assumes. */
static h2o_evloop_t *loop_create(void)
{
    const char *env = getenv("FAAS_GW_OVERRIDE_EPOLL");
    int want = env == NULL || strcmp(env, "0") != 0;
    if (want)
        gw_override_epoll_arm();
    h2o_evloop_t *loop = h2o_evloop_create();
    gw_override_epoll_disarm();
    if (gw_override_epoll_fd() >= 0 && override_epoll_check(loop) != 0) {
        gw_override_epoll_release();
        FAAS_WARN("event=override_epoll_off msg=\"h2o does not drive its epoll set as expected; plain epoll\"");
    } else if (gw_override_epoll_fd() < 0) {
        FAAS_INFO("event=override_epoll_off msg=\"%s\"",
                  want ? "built without it (make OVERRIDE_EPOLL=1) or no memory" : "FAAS_GW_OVERRIDE_EPOLL=0");
    } else {
        FAAS_INFO("event=override_epoll_on");
    }
    return loop;
}

/* ---- the framing interposer (framing.c), checked against h2o at start-up ---- */

/* 0 if h2o's HTTP/1 parser goes through framing.c's phr_parse_request: a head with
 * two Content-Lengths over a socketpair must come back 400. If libh2o were built
 * with the call bound inside the library (-Bsymbolic, LTO, protected visibility)
 * it would be answered by on_req instead. */
static int framing_check(h2o_evloop_t *loop)
{
    static const char probe[] = "GET /healthz HTTP/1.1\r\nHost: probe\r\nContent-Length: 0\r\n"
                                "Content-Length: 0\r\n\r\n";
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    char buf[16];
    size_t got = 0;
    gw_framing_probe(1);
    if (write(sv[1], probe, sizeof(probe) - 1) == (ssize_t)(sizeof(probe) - 1)) {
        h2o_accept(&t_loop->accept, h2o_evloop_socket_create(loop, sv[0], 0));
        for (int i = 0; i < 100 && got < sizeof(buf); i++) {
            h2o_evloop_run(loop, 10);
            ssize_t n = recv(sv[1], buf + got, sizeof(buf) - got, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN))
                break;
            got += n > 0 ? (size_t)n : 0;
        }
    } else {
        close(sv[0]);
    }
    close(sv[1]);
    h2o_evloop_run(loop, 0); /* h2o sees the hang-up and lets its end go */
    uint64_t calls;
    gw_framing_stats(&calls, NULL);
    gw_framing_probe(0);
    return calls != 0 && got >= 12 && memcmp(buf, "HTTP/1.1 400", 12) == 0 ? 0 : -1;
}

/* The total connection cap when --max-conns is not given: 3/4 of the fd limit, the
 * rest for upstream connections to agents, the control plane and files. */
static uint32_t derived_max_conns(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 24))
        return 1u << 24;
    return (uint32_t)(rl.rlim_cur / 4 * 3);
}

/* ---- listener ---- */

/* HTTP/1.1 goes to h2o, HTTP/2 (the preface, or Upgrade from on_req) to nghttp2 in
 * h2c.c: h2o 2.2.5's own HTTP/2 lacks the flood fixes (upgrade_to_http2 is off). */
static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        if (gw_conncap_accept(sock, GW_PORT_HTTP) != 0)
            continue; /* over a connection cap: answered 503 and closed */
        gw_h2c_accept(&t_loop->accept, sock);
    }
}

static void on_signal(int sig)
{
    g_stop = 1;
}

/* Starts the dispatcher on the primary loop. Its threads (and grpc's, started from
 * them) inherit a mask without SIGINT/SIGTERM, so the signal lands on the loop's
 * thread and interrupts it at once. */
static int start_dispatcher(const disp_config_t *dc, const char **err)
{
    sigset_t ss, old;
    sigemptyset(&ss);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &ss, &old);
    int rc = disp_start(&g_loops[0].ctx, dc, err);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static disp_config_t dispatcher_config(const gw_config_t *cfg)
{
    disp_config_t dc = {
        .discovery = cfg->discovery, .queue_max = cfg->queue_max, .cold_start_timeout_ms = cfg->cold_start_timeout_ms,
        .sync_hold_ms = cfg->sync_hold_ms};
    return dc;
}

/* The context of loop L on the loop it runs. */
static void loop_context(gw_loop_t *L, h2o_evloop_t *loop)
{
    t_loop = L;
    h2o_context_init(&L->ctx, loop, &g_conf);
    L->accept.ctx = &L->ctx;
    L->accept.hosts = g_conf.hosts;
}

/* Loop L starts taking connections on its listeners. */
static void loop_listen(gw_loop_t *L, const gw_config_t *cfg)
{
    gw_grpc_serve(&L->ctx, L->grpc_fd);
    gw_thrift_limits(cfg);
    if (L->thrift_fd >= 0)
        gw_thrift_serve(&L->ctx, L->thrift_fd, cfg->thrift_default_fn);
    h2o_socket_t *ls = h2o_evloop_socket_create(L->ctx.loop, L->http_fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(ls, on_accept);
}

/* ---- the other loop threads ---- */

static const gw_config_t *g_cfg;
static pthread_mutex_t g_up_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_up_cv = PTHREAD_COND_INITIALIZER;
static unsigned g_up; /* loops attached to the dispatcher */

static void *loop_main(void *arg)
{
    gw_loop_t *L = arg;
    disp_config_t dc = dispatcher_config(g_cfg);
    loop_context(L, h2o_evloop_create());
    disp_attach(&L->ctx, &dc, L->idx);
    loop_listen(L, g_cfg);
    pthread_mutex_lock(&g_up_mu);
    g_up++;
    pthread_cond_signal(&g_up_cv);
    pthread_mutex_unlock(&g_up_mu);
    for (;;) /* the main thread's exit ends it */
        h2o_evloop_run(L->ctx.loop, INT32_MAX);
    return NULL;
}

/* Starts loops 1..n-1 and waits until each receives the dispatcher's messages (the
 * watch must find every loop when it starts). Signals stay with the main thread. */
static int start_loops(unsigned n)
{
    sigset_t ss, old;
    sigfillset(&ss);
    pthread_sigmask(SIG_BLOCK, &ss, &old);
    for (unsigned k = 1; k < n; k++) {
        pthread_t tid;
        if (pthread_create(&tid, NULL, loop_main, &g_loops[k]) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return -1;
        }
        pthread_detach(tid);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_mutex_lock(&g_up_mu);
    while (g_up < n - 1)
        pthread_cond_wait(&g_up_cv, &g_up_mu);
    pthread_mutex_unlock(&g_up_mu);
    return 0;
}

/* Every port's listeners, one per loop; 0 or 1 (logged). */
static int bind_ports(const gw_config_t *cfg, unsigned n)
{
    const char *err = NULL;
    int fds[3][256];
    if (faas_listen_tcp_group(cfg->listen, fds[0], n, &err) != 0) {
        FAAS_ERROR("event=listen_failed addr=%s err=\"%s\"", cfg->listen, err);
        return 1;
    }
    if (gw_grpc_bind(cfg->grpc_listen, fds[1], n, &err) != 0) {
        FAAS_ERROR("event=grpc_listen_failed addr=%s err=\"%s\"", cfg->grpc_listen, err);
        return 1;
    }
    fds[2][0] = -1;
    if (strcmp(cfg->thrift_listen, "off") != 0) {
        if (faas_listen_tcp_group(cfg->thrift_listen, fds[2], n, &err) == 0) {
            FAAS_INFO("event=thrift_listening addr=%s default_function=%s listeners=%u", cfg->thrift_listen,
                      cfg->thrift_default_fn && cfg->thrift_default_fn[0] ? cfg->thrift_default_fn : "-", n);
        } else {
            fds[2][0] = -1;
            FAAS_ERROR("event=thrift_listen_failed addr=%s err=\"%s\"", cfg->thrift_listen, err);
            if (cfg->thrift_listen_explicit)
                return 1; /* the default port may be another gateway's: only then go on without it */
        }
    }
    for (unsigned k = 0; k < n; k++) {
        g_loops[k].idx = k;
        g_loops[k].http_fd = fds[0][k];
        g_loops[k].grpc_fd = fds[1][0] >= 0 ? fds[1][k] : -1;
        g_loops[k].thrift_fd = fds[2][0] >= 0 ? fds[2][k] : -1;
    }
    return 0;
}

int gw_run(const gw_config_t *cfg)
{
    const char *err = NULL;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    unsigned n = cfg->threads ? cfg->threads : 1;
    g_cfg = cfg;
    if ((g_loops = calloc(n, sizeof(*g_loops))) == NULL || bind_ports(cfg, n) != 0)
        return 1;
    /* glibc returns the heap top to the kernel once 128 KiB are free there and grows
     * it again (brk + page faults) on the next request: at c16 POST 4K that was a brk
     * every ~7 requests and ~10% of the gateway's CPU. Keep up to 16 MiB free at the
     * top; bodies over 4 MiB still get a mapping of their own. */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
    g_max_body = cfg->max_body;
    g_max_url = cfg->max_url_bytes;
    g_max_hdr = cfg->max_header_bytes;
    gw_conncap_config(cfg->max_conns_per_client, cfg->max_conns_explicit ? cfg->max_conns : derived_max_conns());
    g_domain = cfg->domain;
    g_domain_len = strlen(cfg->domain);
    h2o_config_init(&g_conf);
    /* h2o rejects bodies over its limit itself: with a 413 for HTTP/1.1 (early, from
     * content-length) but with RST_STREAM REFUSED_STREAM for h2, which tells clients to
     * retry. A slack above --max-body lets the usual "slightly too large" h2 body reach
     * on_req and get a real 413; only grossly oversized h2 bodies are refused. */
    g_conf.max_request_entity_size = cfg->max_body + H2_BODY_SLACK;
    /* no Server header of our own: a proxied response keeps the function's */
    g_conf.server_name = h2o_iovec_init(H2O_STRLIT(""));
    /* a request (head and body) not read this long after it (or the keep-alive
     * wait before it) began closes the connection: in 2.2.5 the timer is set once,
     * not re-armed per read, so dribbling a byte at a time (slowloris) cannot extend it */
    g_conf.http1.req_timeout = cfg->http_header_timeout_ms;
    g_conf.http1.upgrade_to_http2 = 0; /* h2c.c speaks HTTP/2, never h2o */
    h2o_hostconf_t *host = h2o_config_register_host(&g_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(pc, sizeof(*h));
    h->on_req = on_req;

    /* h2o's HTTP/1 server drops and re-adds its read interest around every request:
     * two epoll_ctl per request, made lazy by gateway/override_epoll.c (loop 0's set) */
    h2o_evloop_t *loop = loop_create();
    loop_context(&g_loops[0], loop);
    if (framing_check(loop) != 0)
        FAAS_WARN("event=framing_check_off msg=\"h2o does not parse requests through the gateway's "
                  "phr_parse_request: duplicate Content-Length, TE+CL and missing Host are not refused\"");
    else
        FAAS_INFO("event=framing_check_on");

    disp_config_t dc = dispatcher_config(cfg);
    if (start_loops(n) != 0) {
        FAAS_ERROR("event=threads_failed n=%u", n);
        return 1;
    }
    if (start_dispatcher(&dc, &err) != 0) {
        FAAS_ERROR("event=dispatcher_failed err=\"%s\"", err);
        return 1;
    }
    loop_listen(&g_loops[0], cfg);
    FAAS_INFO("event=listening addr=%s discovery=%s max_body=%" PRIu64 " queue_max=%u threads=%u", cfg->listen,
              cfg->discovery, cfg->max_body, cfg->queue_max, n);
    while (!g_stop)
        h2o_evloop_run(loop, 1000);
    FAAS_INFO("event=stopping");
    /* grpc threads are blocked in calls; nothing durable lives here, so leave at once */
    _exit(0);
}
