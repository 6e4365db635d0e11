/* runtime-agent/proxy.c - the data path: h2o serves h2c (prior knowledge) and HTTP/1.1 on
 * the agent's listener and forwards every request to the user server over a keep-alive
 * HTTP/1.1 pool, streaming the response back. Errors the agent makes carry `faas-error`;
 * a failure after the response started resets the stream.
 *
 * The upstream pool is our own rather than h2o's socketpool + http1client: h2o 2.2.5 detaches
 * pooled sockets from the loop, which costs five syscalls per request (MSG_PEEK, 2 fcntl,
 * epoll_ctl ADD/DEL, ~12 us on this kind of VM). Ours keep idle sockets registered and
 * reading, so a request costs one writev and one read upstream. */
#include <h2o.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "runtime-agent/internal.h"
#include "runtime-agent/thrift_agent.h"

#define POOL_IDLE_MS 2000
#define CONN_IDLE_MS 300000
#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_HEADERS 100
#define MAX_BUFFERED (1024 * 1024) /* stop reading upstream past this until the client catches up */

/* One fixed-duration h2o timeout per (quantized) deadline value: h2o timeouts are lists
 * with one duration each, so per-request deadlines share a few of them. */
typedef struct tbucket {
    struct tbucket *next;
    uint32_t ms;
    h2o_timeout_t t;
} tbucket_t;

struct fwd;

/* One connection to the user server. Idle ones stay in the loop, reading, so that a close
 * by the server is noticed at once. */
typedef struct upconn {
    h2o_socket_t *sock;
    struct fwd *owner; /* NULL when idle */
    h2o_linklist_t idle_link;
    h2o_timeout_entry_t idle_timer;
    int state; /* UP_* */
    agent_framing_t framing;
    uint64_t remaining; /* body bytes still expected (AGENT_BODY_LENGTH) */
    size_t accounted;   /* bytes at the front of sock->input already framed as body */
    struct phr_chunked_decoder dec;
    int reading;
    int reused; /* has carried a request before: the server may have closed it meanwhile */
} upconn_t;

enum { UP_CONNECTING, UP_HEAD, UP_BODY, UP_DONE };

static struct {
    h2o_evloop_t *loop;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    struct sockaddr_in upstream;
    h2o_linklist_t idle; /* upconn_t, most recently used first */
    h2o_timeout_t idle_timeout;
    uint32_t default_deadline_ms;
    uint32_t inflight, overload_limit;
    void (*on_overload)(uint32_t inflight, uint32_t limit);
    tbucket_t *buckets;
    int have_upstream;
    int ready;
} px;

/* One forwarded request; lives in the request's pool and dies with it. */
typedef struct fwd {
    h2o_generator_t super;
    h2o_req_t *req;
    upconn_t *up;
    h2o_iovec_t bufs[2];
    size_t nbufs;
    h2o_buffer_t *sending; /* handed to h2o_send, consumed on proceed */
    h2o_buffer_t *tail;    /* what the upstream left when it finished */
    h2o_timeout_entry_t deadline;
    unsigned is_head : 1;
    unsigned started : 1;
    unsigned inflight : 1;
    unsigned body_error : 1;
    unsigned finished : 1; /* upstream side is over: tail holds the rest */
    unsigned retried : 1;
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

/* ---- the upstream pool ---- */

static void up_close(upconn_t *up)
{
    if (h2o_linklist_is_linked(&up->idle_link))
        h2o_linklist_unlink(&up->idle_link);
    if (h2o_timeout_is_linked(&up->idle_timer))
        h2o_timeout_unlink(&up->idle_timer);
    h2o_socket_close(up->sock);
    free(up);
}

static void on_idle_event(h2o_socket_t *sock, const char *err)
{
    /* an idle connection has nothing to say: data or EOF both mean it is done */
    up_close(sock->data);
}

static void on_idle_timeout(h2o_timeout_entry_t *e)
{
    up_close(H2O_STRUCT_FROM_MEMBER(upconn_t, idle_timer, e));
}

/* Back to the idle list if the exchange ended cleanly, else closed. */
static void up_release(upconn_t *up)
{
    up->owner = NULL;
    if (up->state != UP_DONE || !up->framing.keepalive || up->sock->input->size != 0) {
        up_close(up);
        return;
    }
    if (!up->reading)
        h2o_socket_read_start(up->sock, on_idle_event), up->reading = 1;
    else
        up->sock->_cb.read = on_idle_event; /* same polling state: no epoll_ctl */
    h2o_linklist_insert(px.idle.next, &up->idle_link);
    h2o_timeout_link(px.loop, &px.idle_timeout, &up->idle_timer);
}

/* The request side lets go of its connection (cancel, deadline, error): it is not reusable. */
static void fwd_drop_up(fwd_t *f)
{
    if (f->up != NULL) {
        f->up->owner = NULL;
        up_close(f->up);
        f->up = NULL;
    }
}

static void fwd_stop_deadline(fwd_t *f)
{
    if (h2o_timeout_is_linked(&f->deadline))
        h2o_timeout_unlink(&f->deadline);
}

static void fwd_fail(fwd_t *f, int status, const char *reason, const char *body)
{
    fwd_stop_deadline(f);
    fwd_drop_up(f);
    f->finished = 1;
    send_agent_error(f->req, status, reason, body);
}

static void do_send(fwd_t *f)
{
    h2o_buffer_t **src = f->finished ? &f->tail : &f->up->sock->input;
    if (f->sending->size == 0) {
        h2o_buffer_t *t = *src;
        *src = f->sending;
        f->sending = t;
        if (!f->finished)
            f->up->accounted = 0;
    }
    h2o_iovec_t v = h2o_iovec_init(f->sending->bytes, f->sending->size);
    h2o_send_state_t st = H2O_SEND_STATE_IN_PROGRESS;
    if (f->finished)
        st = f->body_error ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL;
    else if (v.len == 0)
        return;
    f->inflight = 1;
    h2o_send(f->req, &v, v.len != 0, st);
}

/* The upstream side is over (cleanly or not): keep its unsent body, free the connection. */
static void fwd_finish_upstream(fwd_t *f, int error)
{
    upconn_t *up = f->up;
    h2o_buffer_t *t = f->tail;
    f->tail = up->sock->input;
    up->sock->input = t;
    up->accounted = 0;
    f->up = NULL;
    f->finished = 1;
    f->body_error = error;
    if (error)
        up->state = UP_CONNECTING; /* never reused */
    up_release(up);
    if (!f->inflight)
        do_send(f);
}

static void copy_res_header(h2o_req_t *req, const struct phr_header *h)
{
    h2o_iovec_t name = h2o_strdup(&req->pool, h->name, h->name_len);
    h2o_strtolower(name.base, name.len);
    const h2o_token_t *tok = h2o_lookup_token(name.base, name.len);
    if (tok != NULL && (tok->proxy_should_drop_for_res || tok == H2O_TOKEN_DATE || tok == H2O_TOKEN_CONTENT_LENGTH))
        return;
    if (tok == NULL && h2o_memis(name.base, name.len, H2O_STRLIT("keep-alive")))
        return;
    h2o_iovec_t value = h2o_strdup(&req->pool, h->value, h->value_len);
    if (tok != NULL)
        h2o_add_header(&req->pool, &req->res.headers, tok, NULL, value.base, value.len);
    else
        h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 0, NULL, value.base, value.len);
}

/* Parses the response head; 1 when done, 0 when more bytes are needed, -1 on failure (answered). */
static int parse_head(fwd_t *f, upconn_t *up)
{
    for (;;) {
        h2o_buffer_t *in = up->sock->input;
        struct phr_header hdrs[MAX_HEADERS];
        size_t nh = MAX_HEADERS, msg_len;
        const char *msg, *err = NULL;
        int minor, status;
        int r = phr_parse_response(in->bytes, in->size, &minor, &status, &msg, &msg_len, hdrs, &nh, 0);
        if (r == -2 && in->size < MAX_HEAD_BYTES)
            return 0;
        if (r < 0 || agent_resp_framing(minor, status, f->is_head, hdrs, nh, &up->framing, &err) != 0) {
            FAAS_WARN("event=upstream_bad_response err=\"%s\"", err ? err : "unparsable head");
            fwd_fail(f, 502, "upstream-reset", "the function sent a malformed response\n");
            return -1;
        }
        if (status >= 100 && status < 200) { /* interim responses are not forwarded */
            h2o_buffer_consume(&up->sock->input, (size_t)r);
            continue;
        }
        h2o_req_t *req = f->req;
        fwd_stop_deadline(f);
        f->started = 1;
        req->res.status = status;
        req->res.reason = h2o_strdup(&req->pool, msg, msg_len).base;
        if (up->framing.body == AGENT_BODY_LENGTH ||
            (up->framing.body == AGENT_BODY_NONE && !f->is_head && status != 204 && status != 304))
            req->res.content_length = up->framing.length;
        for (size_t i = 0; i != nh; i++)
            copy_res_header(req, hdrs + i);
        if (f->is_head) /* HEAD answers describe the body they do not carry */
            for (size_t i = 0; i != nh; i++)
                if (hdrs[i].name_len == 14 && strncasecmp(hdrs[i].name, "content-length", 14) == 0)
                    req->res.content_length = h2o_strtosize(hdrs[i].value, hdrs[i].value_len);
        h2o_buffer_consume(&up->sock->input, (size_t)r);
        up->state = UP_BODY;
        up->remaining = up->framing.length;
        up->accounted = 0;
        memset(&up->dec, 0, sizeof(up->dec));
        up->dec.consume_trailer = 1;
        h2o_start_response(req, &f->super);
        return 1;
    }
}

/* Frames newly read body bytes; returns 1 when the body is complete, -1 on a framing error. */
static int frame_body(upconn_t *up)
{
    h2o_buffer_t *in = up->sock->input;
    size_t fresh = in->size - up->accounted;
    switch (up->framing.body) {
    case AGENT_BODY_NONE:
        return 1;
    case AGENT_BODY_LENGTH:
        if (fresh > up->remaining) { /* bytes past the body: the connection is not reusable */
            in->size = up->accounted + up->remaining;
            fresh = up->remaining;
            up->framing.keepalive = 0;
        }
        up->remaining -= fresh;
        up->accounted = in->size;
        return up->remaining == 0;
    case AGENT_BODY_CHUNKED: {
        ssize_t r = phr_decode_chunked(&up->dec, in->bytes + up->accounted, &fresh);
        in->size = up->accounted + fresh;
        up->accounted = in->size;
        if (r == -1)
            return -1;
        if (r > 0)
            up->framing.keepalive = 0;
        return r >= 0;
    }
    default: /* to EOF */
        up->accounted = in->size;
        return 0;
    }
}

static int up_acquire(fwd_t *f, int fresh);

/* The connection broke before any response byte. A reused keep-alive connection that the
 * server closed while idle is the common case: an idempotent request is tried once more. */
static void up_failed_before_head(fwd_t *f, upconn_t *up)
{
    h2o_iovec_t m = f->req->method;
    int idempotent = !h2o_memis(m.base, m.len, H2O_STRLIT("POST")) && !h2o_memis(m.base, m.len, H2O_STRLIT("PATCH"));
    if (up->reused && up->sock->input->size == 0 && idempotent && !f->retried) {
        f->retried = 1;
        fwd_drop_up(f);
        if (up_acquire(f, 1) == 0)
            return;
    }
    fwd_fail(f, 502, "upstream-reset", "the function closed the connection before answering\n");
}

static void on_up_read(h2o_socket_t *sock, const char *err)
{
    upconn_t *up = sock->data;
    fwd_t *f = up->owner;
    if (up->state == UP_HEAD) {
        if (err != NULL) {
            up_failed_before_head(f, up);
            return;
        }
        if (parse_head(f, up) <= 0)
            return;
    }
    int done = frame_body(up);
    if (err != NULL || done != 0) {
        int clean = done == 1 || (err != NULL && up->framing.body == AGENT_BODY_EOF && done == 0);
        if (clean)
            up->state = UP_DONE;
        else
            FAAS_WARN("event=upstream_body_error err=\"%s\"", err ? err : "bad chunked encoding");
        fwd_finish_upstream(f, !clean);
        return;
    }
    if (!f->inflight)
        do_send(f);
    if (f->up != NULL && f->up->sock->input->size > MAX_BUFFERED && up->reading) {
        h2o_socket_read_stop(sock); /* the client is slower than the function */
        up->reading = 0;
    }
}

static void on_up_written(h2o_socket_t *sock, const char *err)
{
    upconn_t *up = sock->data;
    if (err != NULL && up->owner != NULL && up->state == UP_HEAD)
        up_failed_before_head(up->owner, up);
}

static void up_send_request(upconn_t *up)
{
    fwd_t *f = up->owner;
    up->state = UP_HEAD;
    up->sock->_cb.read = on_up_read;
    if (!up->reading)
        h2o_socket_read_start(up->sock, on_up_read), up->reading = 1;
    h2o_socket_write(up->sock, f->bufs, f->nbufs, on_up_written);
}

static void on_up_connect(h2o_socket_t *sock, const char *err)
{
    upconn_t *up = sock->data;
    if (err != NULL) {
        /* a retry after a broken reused connection: the break is what happened */
        if (up->owner->retried)
            fwd_fail(up->owner, 502, "upstream-reset", "the function closed the connection before answering\n");
        else
            fwd_fail(up->owner, 502, "upstream-connect", "the function is not accepting connections\n");
        return;
    }
    up_send_request(up);
}

/* Takes the most recently used idle connection (unless fresh) or opens one; 0 or -1. */
static int up_acquire(fwd_t *f, int fresh)
{
    upconn_t *up;
    if (!fresh && !h2o_linklist_is_empty(&px.idle)) {
        up = H2O_STRUCT_FROM_MEMBER(upconn_t, idle_link, px.idle.next);
        h2o_linklist_unlink(&up->idle_link);
        h2o_timeout_unlink(&up->idle_timer);
        up->reused = 1;
        up->owner = f;
        f->up = up;
        up_send_request(up);
        return 0;
    }
    if ((up = calloc(1, sizeof(*up))) == NULL)
        return -1;
    up->sock = h2o_socket_connect(px.loop, (struct sockaddr *)&px.upstream, sizeof(px.upstream), on_up_connect);
    if (up->sock == NULL) {
        free(up);
        return -1;
    }
    up->sock->data = up;
    up->idle_timer.cb = on_idle_timeout;
    up->state = UP_CONNECTING;
    up->owner = f;
    f->up = up;
    return 0;
}

/* Takes a connected keep-alive connection to the user server (the readiness probe's,
 * its response fully read) as an idle pooled one: the first request reuses it. */
int agent_proxy_adopt_upstream(h2o_socket_t *sock)
{
    upconn_t *up = calloc(1, sizeof(*up));
    if (up == NULL || sock->input->size != 0) {
        free(up);
        return -1;
    }
    up->sock = sock;
    sock->data = up;
    up->idle_timer.cb = on_idle_timeout;
    up->state = UP_DONE;
    up->framing.keepalive = 1;
    up_release(up);
    return 0;
}

/* ---- the request side ---- */

static void fwd_dispose(void *p)
{
    fwd_t *f = p;
    px.inflight--;
    fwd_stop_deadline(f);
    fwd_drop_up(f);
    h2o_buffer_dispose(&f->sending);
    h2o_buffer_dispose(&f->tail);
}

static void on_deadline(h2o_timeout_entry_t *e)
{
    fwd_t *f = H2O_STRUCT_FROM_MEMBER(fwd_t, deadline, e);
    if (!f->started)
        fwd_fail(f, 504, "timeout", "deadline passed before the function answered\n");
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    fwd_t *f = H2O_STRUCT_FROM_MEMBER(fwd_t, super, g);
    h2o_buffer_consume(&f->sending, f->sending->size);
    f->inflight = 0;
    if (f->up != NULL && !f->up->reading) {
        h2o_socket_read_start(f->up->sock, on_up_read);
        f->up->reading = 1;
    }
    do_send(f);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    fwd_drop_up(H2O_STRUCT_FROM_MEMBER(fwd_t, super, g));
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
    if (agent_thrift_is(req)) { /* Thrift calls: runtime-agent/thrift_proxy.c */
        agent_thrift_handle(req);
        return 0;
    }
    fwd_t *f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), fwd_dispose);
    memset(f, 0, sizeof(*f));
    if (++px.inflight >= px.overload_limit && px.overload_limit != 0)
        px.on_overload(px.inflight, px.overload_limit);
    f->req = req;
    f->super.proceed = on_proceed;
    f->super.stop = on_stop;
    h2o_buffer_init(&f->sending, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&f->tail, &h2o_socket_buffer_prototype);
    f->deadline.cb = on_deadline;
    f->is_head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
    uint64_t deadline_ms = px.default_deadline_ms;
    f->bufs[0] = build_head(req, &deadline_ms);
    f->nbufs = 1;
    if (req->entity.base != NULL && req->entity.len != 0)
        f->bufs[f->nbufs++] = req->entity;
    h2o_timeout_t *t = timeout_for(deadline_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)deadline_ms);
    if (t != NULL)
        h2o_timeout_link(px.loop, t, &f->deadline);
    if (up_acquire(f, 0) != 0)
        fwd_fail(f, 502, "upstream-connect", "the function is not accepting connections\n");
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
    h2o_linklist_init_anchor(&px.idle);
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

void agent_proxy_set_upstream(uint16_t port, uint32_t default_deadline_ms)
{
    px.upstream = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
    px.upstream.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h2o_timeout_init(px.loop, &px.idle_timeout, POOL_IDLE_MS);
    px.default_deadline_ms = default_deadline_ms;
    px.have_upstream = 1;
}

void agent_proxy_set_overload(uint32_t limit, void (*cb)(uint32_t inflight, uint32_t limit))
{
    px.overload_limit = cb != NULL ? limit : 0;
    px.on_overload = cb;
}

void agent_proxy_set_ready(int ready)
{
    px.ready = ready;
}
