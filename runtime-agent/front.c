/* runtime-agent/front.c - the agent's front end: h2c with prior knowledge on its one
 * port. Connections are the h2 bridge's server connections (h2b/), run on evl through
 * the adapter below. What a stream is, the dispatcher says in its faas-protocol header:
 * "grpc" streams are bridged to the user's h2c server (grpc.c); "thrift" calls
 * (thrift_proxy.c) and HTTP streams (no header; proxy.c) are answered here as local
 * pairs (an HTTP function may well take application/grpc-web). A client that speaks
 * HTTP/1.x gets one 505 and the connection is closed: the dispatcher speaks h2c only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "runtime-agent/grpc.h"
#include "runtime-agent/internal.h"
#include "runtime-agent/thrift_agent.h"

#define ACCEPT_BATCH 16
#define SNIFF_LINGER_MS 1000
#define REQ_CACHE 64

static struct {
    evl_loop_t *loop;
    evl_defer_t later;
    uint64_t max_body;
    uint32_t inflight, overload_limit;
    uint64_t completions, latency_us; /* ended requests and their summed time, for the detector */
    void (*on_overload)(uint32_t inflight, uint32_t limit);
    void (*on_first)(void); /* until the first request enters */
    int ready;
    agent_req_t *cache[REQ_CACHE]; /* freed requests, reused without malloc */
    size_t ncache;
} fr;

static const h2b_server_cbs_t front_cbs;

/* ---- the bridge's I/O seam on evl ---- */

static void on_sock_connect(evl_sock_t *s, int err)
{
    h2b_io_connected(s->data, err == 0);
}

static void *io_connect(h2b_conn_t *c, const struct sockaddr *sa, unsigned len)
{
    evl_sock_t *s = evl_sock_connect(fr.loop, sa, len, on_sock_connect);
    if (s != NULL)
        s->data = c;
    return s;
}

static void on_sock_read(evl_sock_t *s, int err)
{
    if (err != 0) {
        h2b_io_closed(s->data);
        return;
    }
    ssize_t n = h2b_io_recv(s->data, (const uint8_t *)evl_buf_data(&s->in), s->in.len);
    if (n >= 0) /* else the connection died and s is closed */
        evl_buf_consume(&s->in, (size_t)n);
}

static void io_read_start(void *sock, h2b_conn_t *c)
{
    evl_sock_t *s = sock;
    s->data = c;
    evl_sock_read_start(s, on_sock_read);
}

static void on_sock_written(evl_sock_t *s, int err)
{
    h2b_io_written(s->data, err == 0);
}

static int io_write(void *sock, const void *data, size_t len)
{
    struct iovec v = {(void *)data, len};
    return evl_sock_write(sock, &v, 1, on_sock_written);
}

static void io_close(void *sock)
{
    evl_sock_close(sock);
}

static void on_later(evl_defer_t *d)
{
    h2b_io_run();
}

static void io_later(void)
{
    evl_defer(fr.loop, &fr.later);
}

static const h2b_io_t evl_io = {io_connect, io_read_start, io_write, io_close, io_later};

/* ---- accepting, and the HTTP/1 sniff ---- */

#define HTTP1_BODY "faas-agent speaks HTTP/2 (h2c) with prior knowledge only, not HTTP/1.x\n"

typedef struct refusal {
    evl_timer_t timer;
    evl_sock_t *sock;
} refusal_t;

static void linger_end(refusal_t *l)
{
    evl_timer_stop(fr.loop, &l->timer);
    evl_sock_close(l->sock);
    free(l);
}

static void on_linger_read(evl_sock_t *s, int err)
{
    evl_buf_consume(&s->in, s->in.len);
    if (err != 0)
        linger_end(s->data);
}

static void on_refusal_timeout(evl_timer_t *t)
{
    linger_end(t->data);
}

/* Answers an HTTP/1 client, then waits (bounded) for it to close: closing with its
 * request unread would reset the connection and could destroy the answer unread. */
static void refuse_http1(evl_sock_t *s)
{
    static char reply[256];
    static int len;
    if (len == 0)
        len = snprintf(reply, sizeof(reply),
                       "HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain\r\n"
                       "content-length: %zu\r\nconnection: close\r\n\r\n%s",
                       sizeof(HTTP1_BODY) - 1, HTTP1_BODY);
    struct iovec v = {reply, (size_t)len};
    refusal_t *l = calloc(1, sizeof(*l));
    int w = l != NULL ? evl_sock_write(s, &v, 1, NULL) : -1;
    if (w < 0) {
        free(l);
        evl_sock_close(s);
        return;
    }
    if (w == 1) /* all out: say we are done (else the close at the end does) */
        shutdown(evl_sock_fd(s), SHUT_WR);
    l->sock = s;
    l->timer.cb = on_refusal_timeout;
    l->timer.data = l;
    s->data = l;
    evl_buf_consume(&s->in, s->in.len);
    evl_sock_read_start(s, on_linger_read);
    evl_timer_start(fr.loop, &l->timer, SNIFF_LINGER_MS);
}

static void on_sniff(evl_sock_t *s, int err)
{
    if (err != 0) {
        evl_sock_close(s);
        return;
    }
    int kind = http1_sniff_preface(evl_buf_data(&s->in), s->in.len);
    if (kind == HTTP1_SNIFF_HTTP1) {
        refuse_http1(s);
        return;
    }
    /* h2 (or garbage, which nghttp2 answers with GOAWAY): the bridge takes over */
    if (h2b_io_accept(s, &front_cbs) == NULL) {
        evl_sock_close(s);
        return;
    }
    on_sock_read(s, 0);
}

static void on_accept(evl_io_t *io, int events)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        evl_sock_t *s = evl_sock_new(fr.loop, fd);
        if (s != NULL)
            evl_sock_read_start(s, on_sniff);
    }
}

int agent_front_listen(int fd)
{
    /* kept in a static: the loop reaches it only through epoll, which LeakSanitizer cannot see */
    static evl_io_t listener;
    static int listening;
    if (listening++)
        return -1;
    return evl_io_start(fr.loop, &listener, fd, EVL_READ, on_accept);
}

/* ---- local requests ---- */

const nghttp2_nv *agent_req_header(const agent_req_t *r, const char *name)
{
    return h2b_find(&r->pair->req, name);
}

#define NV(n, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE})

void agent_reply_error(h2b_pair_t *p, int status, const char *reason, const char *body)
{
    char st[8], cl[24];
    snprintf(st, sizeof(st), "%03u", (unsigned)status % 1000);
    size_t bl = strlen(body);
    int cll = snprintf(cl, sizeof(cl), "%zu", bl);
    nghttp2_nv nv[] = {NV(":status", st, 3), NV("faas-error", reason, strlen(reason)),
                       NV("content-type", "text/plain; charset=utf-8", 25), NV("content-length", cl, (size_t)cll)};
    if (h2b_pair_respond(p, nv, 4, 0) == 0)
        h2b_pair_send(p, body, bl, 1);
}

void agent_req_release(agent_req_t *r)
{
    if (r->task != NULL)
        agent_task_free(r->task);
    if (fr.ncache < REQ_CACHE && r->body.cap <= 4096 && r->head.cap <= 4096) { /* bounded: 64 small requests */
        evl_buf_t body = r->body, head = r->head;                              /* their storage is reused too */
        memset(r, 0, sizeof(*r));
        r->body = body;
        r->head = head;
        r->body.off = r->body.len = r->head.off = r->head.len = 0;
        fr.cache[fr.ncache++] = r;
        return;
    }
    evl_buf_free(&r->head);
    evl_buf_free(&r->body);
    free(r);
}

/* One request, call or stream left: the detector counts its time in the agent up to its
 * response head when that was seen (a long stream's life is not a wait), else its end. */
static void ended(uint64_t t0_us, uint64_t head_us)
{
    uint64_t end = head_us != 0 ? head_us : faas_now_us();
    fr.inflight--;
    fr.completions++;
    fr.latency_us += end > t0_us ? end - t0_us : 0;
}

static void req_free(h2b_pair_t *p)
{
    agent_req_t *r = p->owner;
    if (r == NULL)
        return;
    p->owner = NULL;
    if (r->kind == AGENT_REQ_THRIFT)
        agent_thrift_end(r);
    else
        agent_proxy_end(r);
    evl_timer_stop(fr.loop, &r->deadline);
    ended(r->t0_us, r->head_us);
    agent_req_release(r);
}

void agent_req_detach(agent_req_t *r)
{
    static const nghttp2_nv accepted[] = {NV(":status", "202", 3), NV("content-length", "0", 1)};
    h2b_pair_t *p = r->pair;
    p->owner = NULL; /* the pair may be freed by the answer: it no longer frees r */
    r->pair = NULL;
    fr.inflight--;
    h2b_pair_respond(p, accepted, 2, 1);
}

static void req_drain(h2b_pair_t *p)
{
    agent_req_t *r = p->owner;
    if (r != NULL && r->kind == AGENT_REQ_HTTP)
        agent_proxy_drain(r);
}

static void req_go(agent_req_t *r)
{
    if (r->task != NULL)
        agent_task_start(r);
    else if (r->kind == AGENT_REQ_THRIFT)
        agent_thrift_start(r);
    else
        agent_proxy_start(r);
}

static int path_is(const nghttp2_nv *path, const char *want)
{
    size_t wl = strlen(want), n = path->valuelen;
    const char *q = memchr(path->value, '?', n);
    if (q != NULL)
        n = (size_t)(q - (const char *)path->value);
    return n == wl && memcmp(path->value, want, wl) == 0;
}

/* What the dispatcher says the stream is (faas-protocol; none: HTTP), and its faas-task-id:
 * one pass over the headers, the only one an ordinary request pays for this. */
static int stream_kind(const h2b_pair_t *p, const nghttp2_nv **task_id)
{
    const nghttp2_nv *proto = NULL;
    *task_id = NULL;
    for (size_t i = 0; i < p->req.n; i++) {
        const nghttp2_nv *h = &p->req.nv[i];
        if (h->namelen == 13 && memcmp(h->name, "faas-protocol", 13) == 0 && proto == NULL)
            proto = h;
        else if (h->namelen == 12 && memcmp(h->name, "faas-task-id", 12) == 0 && *task_id == NULL)
            *task_id = h;
    }
    if (proto == NULL)
        return AGENT_REQ_HTTP;
    if (proto->valuelen == 4 && memcmp(proto->value, "grpc", 4) == 0)
        return AGENT_REQ_GRPC;
    if (proto->valuelen == 6 && memcmp(proto->value, "thrift", 6) == 0)
        return AGENT_REQ_THRIFT;
    return AGENT_REQ_HTTP;
}

static void grpc_free(h2b_pair_t *p)
{
    uint64_t t0;
    memcpy(&t0, p->front, sizeof(t0));
    ended(t0, 0);
}

/* A request, call or stream entered: counted in flight, and the concurrency cap checked. */
static void entered(void)
{
    if (fr.on_first != NULL) {
        void (*first)(void) = fr.on_first;
        fr.on_first = NULL;
        first();
    }
    if (++fr.inflight >= fr.overload_limit && fr.overload_limit != 0)
        fr.on_overload(fr.inflight, fr.overload_limit);
}

static void on_request(h2b_pair_t *p, int eos)
{
    if (p->req_too_large) {
        /* its trailing faas-* headers (protocol, deadline) may be among those dropped */
        h2b_pair_http_error(p, 431);
        return;
    }
    const nghttp2_nv *task_id;
    int kind = stream_kind(p, &task_id);
    if (kind == AGENT_REQ_GRPC) {
        if (!fr.ready) {
            h2b_pair_fail(p, faas_err_grpc(FAAS_ERR_UNAVAILABLE), "the function is not ready");
            return;
        }
        /* bridged (the bridge buffers its body): counted until the pair is freed, the
         * start kept in the server side's scratch, which the agent has no other use for */
        uint64_t t0 = faas_now_us();
        memcpy(p->front, &t0, sizeof(t0));
        p->on_free = grpc_free;
        entered();
        agent_grpc_request(p, eos);
        return;
    }
    const nghttp2_nv *path = h2b_find(&p->req, ":path");
    if (path == NULL) {
        h2b_pair_http_error(p, 400);
        return;
    }
    if (path_is(path, "/_faas/health")) {
        static const nghttp2_nv ok[] = {NV(":status", "200", 3), NV("content-length", "3", 1)};
        if (h2b_pair_respond(p, ok, 2, 0) == 0)
            h2b_pair_send(p, "ok\n", 3, 1);
        return;
    }
    if (!fr.ready) {
        agent_reply_error(p, 503, "not-ready", "the function is not ready\n");
        return;
    }
    agent_req_t *r = fr.ncache != 0 ? fr.cache[--fr.ncache] : calloc(1, sizeof(*r));
    if (r == NULL) {
        h2b_pair_http_error(p, 503);
        return;
    }
    const char *bad;
    if (task_id != NULL && kind == AGENT_REQ_HTTP &&
        (r->task = agent_task_new(task_id, h2b_find(&p->req, "faas-task-attempt"),
                                  h2b_find(&p->req, "faas-task-max-result"), &bad)) == NULL) {
        agent_req_release(r);
        if (bad != NULL)
            agent_reply_error(p, 400, "bad-task", bad);
        else
            h2b_pair_http_error(p, 503);
        return;
    }
    r->pair = p;
    r->kind = kind;
    r->deadline.data = r;
    r->has_body = !eos;
    r->t0_us = faas_now_us();
    p->owner = r;
    p->on_free = req_free;
    p->on_drain = req_drain;
    entered();
    if (eos)
        req_go(r);
}

static int on_data(h2b_pair_t *p, const uint8_t *data, size_t len)
{
    agent_req_t *r = p->owner;
    if (r == NULL)
        return 0; /* a bridged gRPC call: the bridge buffers it */
    if (r->body_over)
        return 1;
    if (r->body.len + len > fr.max_body) {
        r->body_over = 1;
        agent_reply_error(p, 413, "too-large", "the request body is larger than the function accepts\n");
        return 1;
    }
    if (evl_buf_append(&r->body, data, len) != 0) {
        r->body_over = 1;
        h2b_pair_reset(p);
    }
    return 1;
}

static void on_end(h2b_pair_t *p)
{
    agent_req_t *r = p->owner;
    if (r != NULL && !r->body_over)
        req_go(r);
}

static const h2b_server_cbs_t front_cbs = {.on_request = on_request, .on_data = on_data, .on_end = on_end};

const h2b_server_cbs_t *agent_front_cbs(void)
{
    return &front_cbs;
}

void agent_front_feed(evl_sock_t *s)
{
    on_sock_read(s, 0);
}

int agent_front_init(evl_loop_t *loop, uint64_t max_body)
{
    fr.loop = loop;
    fr.max_body = max_body;
    fr.later.cb = on_later;
    h2b_server_internal(); /* our one port serves the platform's gateways */
    h2b_init_io(&evl_io);
    return 0;
}

void agent_front_set_ready(int ready)
{
    fr.ready = ready;
}

void agent_front_set_overload(uint32_t limit, void (*cb)(uint32_t inflight, uint32_t limit))
{
    fr.overload_limit = cb != NULL ? limit : 0;
    fr.on_overload = cb;
}

void agent_front_on_first(void (*cb)(void))
{
    fr.on_first = cb;
}

void agent_front_stats(uint32_t *inflight, uint64_t *completions, uint64_t *latency_us)
{
    *inflight = fr.inflight;
    *completions = fr.completions;
    *latency_us = fr.latency_us;
}
