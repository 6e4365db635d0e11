/* runtime-agent/proxy.c - the data path: h2o serves h2c (prior knowledge) and HTTP/1.1 on
 * the agent's listener and forwards every request to the user server over a keep-alive
 * HTTP/1.1 pool (h2o_http1client), streaming the response back. Errors the agent makes
 * carry `faas-error`; a failure after the response started resets the stream. */
#include <h2o.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "runtime-agent/internal.h"

#define POOL_CAPACITY 4096
#define POOL_IDLE_MS 2000
#define CONN_IDLE_MS 300000

/* One fixed-duration h2o timeout per (quantized) deadline value: h2o timeouts are lists
 * with one duration each, so per-request deadlines share a few of them. */
typedef struct tbucket {
    struct tbucket *next;
    uint32_t ms;
    h2o_timeout_t t;
} tbucket_t;

static struct {
    h2o_evloop_t *loop;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    h2o_socketpool_t pool;
    h2o_http1client_ctx_t client_ctx;
    h2o_timeout_t io_timeout;
    tbucket_t *buckets;
    int have_upstream;
    int ready;
} px;

/* One forwarded request; lives in the request's pool and dies with it. */
typedef struct fwd {
    h2o_generator_t super;
    h2o_req_t *req;
    h2o_http1client_t *client;
    h2o_iovec_t bufs[2];
    size_t nbufs;
    h2o_buffer_t *sending; /* handed to h2o_send, consumed on proceed */
    h2o_buffer_t *tail;    /* what the upstream left when it finished */
    h2o_timeout_entry_t deadline;
    unsigned is_head : 1;
    unsigned started : 1;
    unsigned inflight : 1;
    unsigned body_error : 1;
} fwd_t;

static h2o_timeout_t *timeout_for(uint32_t ms)
{
    ms = agent_quantize_ms(ms);
    for (tbucket_t *b = px.buckets; b != NULL; b = b->next)
        if (b->ms == ms)
            return &b->t;
    tbucket_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->ms = ms;
    h2o_timeout_init(px.loop, &b->t, ms);
    b->next = px.buckets;
    px.buckets = b;
    return &b->t;
}

static void send_agent_error(h2o_req_t *req, int status, const char *reason, const char *body)
{
    req->res.status = status;
    req->res.reason = status == 503 ? "Service Unavailable" : status == 504 ? "Gateway Timeout" : "Bad Gateway";
    req->res.content_length = SIZE_MAX;
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("faas-error"), 0, NULL, reason, strlen(reason));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; charset=utf-8"));
    h2o_send_inline(req, body, strlen(body));
}

static void fwd_stop_deadline(fwd_t *f)
{
    if (h2o_timeout_is_linked(&f->deadline))
        h2o_timeout_unlink(&f->deadline);
}

static void fwd_fail(fwd_t *f, int status, const char *reason, const char *body)
{
    fwd_stop_deadline(f);
    if (f->client != NULL) {
        h2o_http1client_cancel(f->client);
        f->client = NULL;
    }
    send_agent_error(f->req, status, reason, body);
}

static void fwd_dispose(void *p)
{
    fwd_t *f = p;
    fwd_stop_deadline(f);
    if (f->client != NULL)
        h2o_http1client_cancel(f->client);
    h2o_buffer_dispose(&f->sending);
    h2o_buffer_dispose(&f->tail);
}

static void on_deadline(h2o_timeout_entry_t *e)
{
    fwd_t *f = H2O_STRUCT_FROM_MEMBER(fwd_t, deadline, e);
    if (!f->started)
        fwd_fail(f, 504, "timeout", "deadline passed before the function answered\n");
}

static void do_send(fwd_t *f)
{
    h2o_buffer_t **src = f->client != NULL ? &f->client->sock->input : &f->tail;
    if (f->sending->size == 0) {
        h2o_buffer_t *t = *src;
        *src = f->sending;
        f->sending = t;
    }
    h2o_iovec_t v = h2o_iovec_init(f->sending->bytes, f->sending->size);
    h2o_send_state_t st = H2O_SEND_STATE_IN_PROGRESS;
    if (f->client == NULL)
        st = f->body_error ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL;
    else if (v.len == 0)
        return;
    f->inflight = 1;
    h2o_send(f->req, &v, v.len != 0, st);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    fwd_t *f = H2O_STRUCT_FROM_MEMBER(fwd_t, super, g);
    h2o_buffer_consume(&f->sending, f->sending->size);
    f->inflight = 0;
    do_send(f);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    fwd_t *f = H2O_STRUCT_FROM_MEMBER(fwd_t, super, g);
    if (f->client != NULL) {
        h2o_http1client_cancel(f->client);
        f->client = NULL;
    }
}

static int on_body(h2o_http1client_t *client, const char *errstr)
{
    fwd_t *f = client->data;
    if (errstr != NULL) {
        /* the client goes away after this: keep what it read */
        h2o_buffer_t *t = f->tail;
        f->tail = client->sock->input;
        client->sock->input = t;
        f->client = NULL;
        if (errstr != h2o_http1client_error_is_eos) {
            f->body_error = 1;
            FAAS_WARN("event=upstream_body_error err=\"%s\"", errstr);
        }
    }
    if (!f->inflight)
        do_send(f);
    return 0;
}

static void copy_res_header(h2o_req_t *req, const h2o_header_t *h)
{
    h2o_iovec_t value = h2o_strdup(&req->pool, h->value.base, h->value.len);
    if (h2o_iovec_is_token(h->name)) {
        const h2o_token_t *tok = (const h2o_token_t *)h->name;
        if (tok->proxy_should_drop_for_res || tok == H2O_TOKEN_DATE)
            return;
        if (tok == H2O_TOKEN_CONTENT_LENGTH) {
            if (req->res.content_length == SIZE_MAX)
                req->res.content_length = h2o_strtosize(h->value.base, h->value.len);
            return;
        }
        h2o_add_header(&req->pool, &req->res.headers, tok, NULL, value.base, value.len);
        return;
    }
    h2o_iovec_t name = h2o_strdup(&req->pool, h->name->base, h->name->len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 0, NULL, value.base, value.len);
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version,
                                       int status, h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers,
                                       int rlen)
{
    fwd_t *f = client->data;
    h2o_req_t *req = f->req;
    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        f->client = NULL;
        fwd_fail(f, 502, "upstream-reset", "the function closed the connection before answering\n");
        return NULL;
    }
    fwd_stop_deadline(f);
    f->started = 1;
    req->res.status = status;
    req->res.reason = h2o_strdup(&req->pool, msg.base, msg.len).base;
    for (size_t i = 0; i != num_headers; i++)
        copy_res_header(req, headers + i);
    h2o_start_response(req, &f->super);
    if (errstr == h2o_http1client_error_is_eos) {
        f->client = NULL;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return NULL;
    }
    return on_body;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs,
                                          size_t *reqbufcnt, int *method_is_head)
{
    fwd_t *f = client->data;
    if (errstr != NULL) {
        f->client = NULL;
        fwd_fail(f, 502, "upstream-connect", "the function is not accepting connections\n");
        return NULL;
    }
    *reqbufs = f->bufs;
    *reqbufcnt = f->nbufs;
    *method_is_head = f->is_head;
    return on_head;
}

static char *append(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* Builds the HTTP/1.1 request head for the user server into the request's pool. */
static h2o_iovec_t build_head(h2o_req_t *req, uint64_t *deadline_ms)
{
    const h2o_headers_t *hs = &req->headers;
    size_t cap = req->method.len + req->path.len + req->authority.len + 96;
    h2o_iovec_t conn = {NULL, 0}, rid = {NULL, 0};
    int have_xrid = 0;
    for (size_t i = 0; i != hs->size; i++) {
        const h2o_header_t *h = hs->entries + i;
        cap += h->name->len + h->value.len + 4;
        if (h->name == &H2O_TOKEN_CONNECTION->buf)
            conn = h->value;
        else if (h2o_memis(h->name->base, h->name->len, H2O_STRLIT("faas-request-id")))
            rid = h->value, cap += h->value.len + 16;
        else if (h2o_memis(h->name->base, h->name->len, H2O_STRLIT("x-request-id")))
            have_xrid = 1;
        else if (h2o_memis(h->name->base, h->name->len, H2O_STRLIT("faas-deadline-ms")))
            agent_parse_ms(h->value.base, h->value.len, deadline_ms);
    }
    char *buf = h2o_mem_alloc_pool(&req->pool, cap), *p = buf;
    p = append(p, req->method.base, req->method.len);
    *p++ = ' ';
    p = append(p, req->path.base, req->path.len);
    p = append(p, H2O_STRLIT(" HTTP/1.1\r\nhost: "));
    p = append(p, req->authority.base, req->authority.len);
    p = append(p, H2O_STRLIT("\r\n"));
    for (size_t i = 0; i != hs->size; i++) {
        const h2o_header_t *h = hs->entries + i;
        if (agent_header_is_hop(h->name->base, h->name->len) ||
            (conn.base != NULL && agent_connection_lists(conn.base, conn.len, h->name->base, h->name->len)))
            continue;
        p = append(p, h->orig_name != NULL ? h->orig_name : h->name->base, h->name->len);
        p = append(p, H2O_STRLIT(": "));
        p = append(p, h->value.base, h->value.len);
        p = append(p, H2O_STRLIT("\r\n"));
    }
    if (rid.base != NULL && !have_xrid) {
        p = append(p, H2O_STRLIT("x-request-id: "));
        p = append(p, rid.base, rid.len);
        p = append(p, H2O_STRLIT("\r\n"));
    }
    if (req->entity.base != NULL)
        p += sprintf(p, "content-length: %zu\r\n", req->entity.len);
    p = append(p, H2O_STRLIT("\r\n"));
    return h2o_iovec_init(buf, (size_t)(p - buf));
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    if (h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/_faas/health"))) {
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_send_inline(req, H2O_STRLIT("ok\n"));
        return 0;
    }
    if (!px.ready || !px.have_upstream) {
        send_agent_error(req, 503, "not-ready", "the function is not ready\n");
        return 0;
    }
    fwd_t *f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), fwd_dispose);
    memset(f, 0, sizeof(*f));
    f->req = req;
    f->super.proceed = on_proceed;
    f->super.stop = on_stop;
    h2o_buffer_init(&f->sending, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&f->tail, &h2o_socket_buffer_prototype);
    f->deadline.cb = on_deadline;
    f->is_head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    uint64_t deadline_ms = UINT64_MAX;
    f->bufs[0] = build_head(req, &deadline_ms);
    f->nbufs = 1;
    if (req->entity.base != NULL && req->entity.len != 0)
        f->bufs[f->nbufs++] = req->entity;
    if (deadline_ms != UINT64_MAX) {
        h2o_timeout_t *t = timeout_for(deadline_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)deadline_ms);
        if (t != NULL)
            h2o_timeout_link(px.loop, t, &f->deadline);
    }
    h2o_http1client_connect_with_pool(&f->client, f, &px.client_ctx, &px.pool, on_connect);
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    /* drain the backlog: the dispatcher may open several connections at once */
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        h2o_accept(&px.accept_ctx, sock);
    }
}

int agent_proxy_init(h2o_evloop_t *loop, int listen_fd, uint64_t max_body)
{
    px.loop = loop;
    h2o_config_init(&px.config);
    px.config.server_name = h2o_iovec_init(H2O_STRLIT(""));
    px.config.max_request_entity_size = max_body;
    px.config.http1.req_timeout = CONN_IDLE_MS;
    px.config.http2.idle_timeout = CONN_IDLE_MS;
    px.config.http2.max_concurrent_requests_per_connection = 256;
    h2o_hostconf_t *host = h2o_config_register_host(&px.config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;
    h2o_context_init(&px.ctx, loop, &px.config);
    px.accept_ctx.ctx = &px.ctx;
    px.accept_ctx.hosts = px.config.hosts;
    px.listener = h2o_evloop_socket_create(loop, listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    if (px.listener == NULL)
        return -1;
    h2o_socket_read_start(px.listener, on_accept);
    return 0;
}

void agent_proxy_set_upstream(uint16_t port, uint32_t io_timeout_ms)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h2o_socketpool_init_by_address(&px.pool, (struct sockaddr *)&sin, sizeof(sin), 0, POOL_CAPACITY);
    h2o_socketpool_set_timeout(&px.pool, px.loop, POOL_IDLE_MS);
    h2o_timeout_init(px.loop, &px.io_timeout, io_timeout_ms);
    px.client_ctx.loop = px.loop;
    px.client_ctx.io_timeout = &px.io_timeout;
    px.have_upstream = 1;
}

void agent_proxy_set_ready(int ready)
{
    px.ready = ready;
}
