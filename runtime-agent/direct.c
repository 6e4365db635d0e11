/* runtime-agent/direct.c - the direct port (docs/endpoints.md, "The pod's direct port"):
 * a second listener on the pod's own address, where a service mesh sends the function's
 * own protocol without the gateway hop. It is bound when the agent starts (its port goes
 * up in HELLO) but listens only once the user server is READY: before that a connect is
 * refused by the kernel, never accepted and dropped, so a mesh cannot mistake a cold pod
 * for a broken one. Every call reaches the user server the way a gateway's does, so it
 * shares the in-flight count, the concurrency cap, the overload detector, the deadlines
 * and the platform's error answers (front.c):
 * - h2c with prior knowledge (HTTP and gRPC functions): front.c's own stream callbacks,
 *   after the client's faas-* headers are dropped (they steer the platform: tasks,
 *   deadlines, protocol) and faas-protocol is set from the spec;
 * - HTTP/1.1 (HTTP functions): each request becomes a local-caller pair (h2b) on the
 *   agent's own h2c port over loopback, exactly what a gateway sends; one request at a
 *   time per connection (pipelined ones wait, unread, in the socket), the response sent
 *   back with its Content-Length or chunked;
 * - Thrift (framed, THeader, TTHeader): direct_thrift.c. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "runtime-agent/internal.h"

#define ACCEPT_BATCH 16
/* A head past this is answered 431: with 32 bytes a field added as h2 counts them, it
 * still fits the front's header list (H2B_MAX_HEADER_LIST_INTERNAL), which would
 * otherwise reset the stream. Twice the gateway's default --max-header-bytes. */
#define H1_MAX_HEAD (32 * 1024)
#define H1_MAX_HEADERS 100
#define H1_LINGER_MS 1000
#define H2_PREFACE_LEN 24
/* An HTTP/1 or Thrift connection with no request in progress is closed after this: a
 * mesh's pooled connections stay, an idle flood does not (h2c ones: the front's sweep). */
#define DIRECT_IDLE_MS 60000

static struct {
    evl_loop_t *loop;
    int fd;
    evl_io_t io;
    int proto;           /* FAAS__PROTOCOL__* */
    char self[32];       /* the agent's own h2c port, as h2b_client_get takes it */
    char deadline[16];   /* faas-deadline-ms for a gRPC call without grpc-timeout ("": none) */
    uint64_t max_body;   /* an HTTP/1 request body past it is answered 413 here */
    uint64_t calls;      /* requests, calls and streams taken (DIRECT_CALLS) */
    h2b_server_cbs_t h2; /* front.c's callbacks with our on_request */
    void (*front_request)(h2b_pair_t *p, int eos);
} dp = {.fd = -1};

uint32_t agent_direct_idle_ms(void)
{
    return DIRECT_IDLE_MS;
}

uint64_t agent_direct_calls(void)
{
    return dp.calls;
}

void agent_direct_counted(void)
{
    dp.calls++;
}

const char *agent_direct_self(void)
{
    return dp.self;
}

int agent_direct_bind(int front_fd, uint16_t *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    if (getsockname(front_fd, (struct sockaddr *)&sin, &len) != 0 || sin.sin_family != AF_INET)
        return -1;
    /* the agent reaches its own front on the address it listens on; a wildcard one
     * (a pod's own namespace) on loopback, which never leaves the pod */
    struct in_addr self = sin.sin_addr;
    if (self.s_addr == htonl(INADDR_ANY))
        self.s_addr = htonl(INADDR_LOOPBACK);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &self, ip, sizeof(ip));
    snprintf(dp.self, sizeof(dp.self), "%s:%u", ip, ntohs(sin.sin_port));
    sin.sin_port = 0; /* the same address, a port of its own */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    len = sizeof(sin);
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
        close(fd);
        return -1;
    }
    dp.fd = fd;
    *port = ntohs(sin.sin_port);
    return 0;
}

/* ---- h2c: front.c serves the streams ---- */

static int is_faas_header(const nghttp2_nv *h)
{
    return h->namelen >= 5 && memcmp(h->name, "faas-", 5) == 0;
}

static void h2_request(h2b_pair_t *p, int eos)
{
    size_t k = 0;
    for (size_t i = 0; i < p->req.n; i++) /* a mesh client does not steer the platform */
        if (!is_faas_header(&p->req.nv[i]))
            p->req.nv[k++] = p->req.nv[i];
    p->req.n = k;
    agent_direct_counted();
    if (dp.proto == FAAS__PROTOCOL__GRPC) {
        h2b_hdrs_add(&p->req, (const uint8_t *)"faas-protocol", 13, (const uint8_t *)"grpc", 4);
        if (dp.deadline[0] != '\0' && h2b_find(&p->req, "grpc-timeout") == NULL)
            h2b_hdrs_add(&p->req, (const uint8_t *)"faas-deadline-ms", 16, (const uint8_t *)dp.deadline,
                         strlen(dp.deadline));
    }
    dp.front_request(p, eos);
}

/* ---- HTTP/1.1: each request a local-caller pair on the agent's own front ---- */

typedef struct h1c {
    evl_sock_t *s;
    h2b_pair_t *p; /* the request in progress */
    http1_framing_t req;
    http1_chunked_t dec;
    uint64_t left, pushed;
    size_t unwindowed; /* response bytes queued on the socket, their window not yet returned */
    int keep, head_req, req_done, resp_head, resp_done, chunked_out;
    evl_timer_t linger; /* closing: the client's last bytes are read and dropped */
    evl_timer_t idle;   /* no request in progress */
} h1c_t;

static void h1_pump(h1c_t *c);

static void h1_free(h1c_t *c)
{
    if (c->p != NULL) {
        h2b_pair_t *p = c->p;
        c->p = NULL;
        p->owner = NULL;
        h2b_pair_release(p);
    }
    evl_timer_stop(dp.loop, &c->linger);
    evl_timer_stop(dp.loop, &c->idle);
    evl_sock_close(c->s);
    free(c);
}

static void on_linger_read(evl_sock_t *s, int err)
{
    evl_buf_consume(&s->in, s->in.len);
    if (err != 0)
        h1_free(s->data);
}

static void on_linger_timeout(evl_timer_t *t)
{
    h1_free(t->data);
}

/* Ends the connection once what was queued is out: closing with the client's bytes
 * unread would reset it and could destroy the answer before it is read. */
static void on_close_written(evl_sock_t *s, int err)
{
    h1c_t *c = s->data;
    if (err != 0) {
        h1_free(c);
        return;
    }
    shutdown(evl_sock_fd(s), SHUT_WR);
    evl_buf_consume(&s->in, s->in.len);
    evl_sock_read_start(s, on_linger_read);
    c->linger.cb = on_linger_timeout;
    c->linger.data = c;
    evl_timer_start(dp.loop, &c->linger, H1_LINGER_MS);
}

static void h1_close(h1c_t *c)
{
    if (c->p != NULL) {
        h2b_pair_t *p = c->p;
        c->p = NULL;
        p->owner = NULL;
        h2b_pair_release(p);
    }
    evl_sock_read_stop(c->s);
    evl_timer_stop(dp.loop, &c->idle);
    if (evl_sock_pending(c->s) == 0)
        on_close_written(c->s, 0);
    else
        c->s->on_write = on_close_written;
}

static int h1_write(h1c_t *c, const struct iovec *v, int n);

/* A platform-made answer (the request could not be read or sent on), then the close. */
static void h1_error(h1c_t *c, int status, const char *reason, const char *body)
{
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nfaas-error: %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                      "content-length: %zu\r\nconnection: close\r\n\r\n",
                      status, faas_http_reason(status), reason, strlen(body));
    if (!c->resp_head) {
        struct iovec v[2] = {{head, (size_t)hl}, {(void *)body, strlen(body)}};
        c->resp_head = 1;
        if (h1_write(c, v, 2) < 0)
            return;
    }
    h1_close(c);
}

static void on_h1_written(evl_sock_t *s, int err)
{
    h1c_t *c = s->data;
    if (err != 0) {
        h1_free(c);
        return;
    }
    if (c->p != NULL && c->unwindowed != 0) /* backpressure: the pair may send on */
        h2b_pair_window(c->p, c->unwindowed);
    c->unwindowed = 0;
}

/* 0 written or queued; -1: the connection is gone (c freed). */
static int h1_write(h1c_t *c, const struct iovec *v, int n)
{
    if (evl_sock_write(c->s, v, n, on_h1_written) < 0) {
        h1_free(c);
        return -1;
    }
    return 0;
}

static void lower(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)tolower((unsigned char)p[i]);
}

#define NVS(n, nl, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE})

static const h2b_local_t h1_ops;

/* Sends the parsed request on as an h2 stream to the agent's own front. */
static int h1_start(h1c_t *c, const http1_request_t *r, http1_hdr_t *h, size_t n)
{
    nghttp2_nv nv[H1_MAX_HEADERS + 4];
    size_t k = 4;
    const http1_hdr_t *host = NULL;
    for (size_t i = 0; i < n; i++) {
        lower((char *)h[i].name, h[i].name_len); /* h2 wants lower case; the buffer is ours */
        if (h[i].name_len == 4 && memcmp(h[i].name, "host", 4) == 0 && host == NULL)
            host = &h[i];
        if (agent_header_is_hop(h[i].name, h[i].name_len) || (h[i].name_len >= 5 && memcmp(h[i].name, "faas-", 5) == 0))
            continue;
        nv[k++] = NVS(h[i].name, h[i].name_len, h[i].value, h[i].value_len);
    }
    nv[0] = NVS(":method", 7, r->method, r->method_len);
    nv[1] = NVS(":scheme", 7, "http", 4);
    nv[2] = host != NULL && host->value_len != 0 ? NVS(":authority", 10, host->value, host->value_len)
                                                 : NVS(":authority", 10, "localhost", 9);
    nv[3] = NVS(":path", 5, r->target, r->target_len);
    h2b_conn_t *conn = h2b_client_get(dp.self);
    h2b_pair_t *p = conn != NULL ? h2b_pair_new_local(&h1_ops, c) : NULL;
    if (p == NULL)
        return -1;
    if (h2b_pair_connect(p, conn, nv, k) != 0) {
        h2b_pair_release(p);
        return -1;
    }
    c->p = p;
    return 0;
}

/* Reads a request head from the socket and starts it; 1 started, 0 wait for bytes, -1 c is
 * gone (answered and closing). */
static int h1_head(h1c_t *c)
{
    evl_sock_t *s = c->s;
    http1_request_t r;
    http1_hdr_t h[H1_MAX_HEADERS];
    size_t n = H1_MAX_HEADERS;
    const char *err = NULL;
    int hl = http1_parse_request(evl_buf_data(&s->in), s->in.len, &r, h, &n);
    if (hl == -2 && s->in.len <= H1_MAX_HEAD)
        return 0;
    if (hl == -2 || hl > H1_MAX_HEAD)
        return h1_error(c, 431, "too-large", "request header fields too large\n"), -1;
    if (hl < 0)
        return h1_error(c, 400, "bad-request", "malformed HTTP/1.1 request head\n"), -1;
    if (http1_req_framing(r.minor, h, n, &c->req, &err) != 0)
        return h1_error(c, 400, "bad-request", err), -1;
    if (r.target[0] != '/')
        return h1_error(c, 400, "bad-request", "the request target must be a path\n"), -1;
    agent_direct_counted();
    c->keep = c->req.keepalive;
    c->head_req = r.method_len == 4 && memcmp(r.method, "HEAD", 4) == 0;
    c->left = c->req.length;
    c->pushed = 0;
    c->resp_head = c->resp_done = c->chunked_out = 0;
    c->req_done = c->req.body == HTTP1_BODY_NONE;
    memset(&c->dec, 0, sizeof(c->dec));
    int expect = 0;
    for (size_t i = 0; i < n; i++)
        expect |= h[i].name_len == 6 && strncasecmp(h[i].name, "expect", 6) == 0;
    if (h1_start(c, &r, h, n) != 0)
        return h1_error(c, 503, "overloaded", "cannot reach the function\n"), -1;
    evl_timer_stop(dp.loop, &c->idle);
    evl_buf_consume(&s->in, (size_t)hl);
    if (c->req_done)
        h2b_pair_push(c->p, NULL, 0, 1);
    else if (expect) { /* the client waits for this before it sends the body */
        struct iovec v = {"HTTP/1.1 100 Continue\r\n\r\n", 25};
        if (h1_write(c, &v, 1) < 0)
            return -1;
    }
    return 1;
}

/* Moves request body bytes from the socket to the pair; 0 or -1 (c gone). */
static int h1_body(h1c_t *c)
{
    evl_sock_t *s = c->s;
    char *d = evl_buf_data(&s->in);
    size_t n = s->in.len, used = n;
    int eos;
    if (c->req.body == HTTP1_BODY_LENGTH) {
        n = used = n < c->left ? n : (size_t)c->left;
        c->left -= n;
        eos = c->left == 0;
    } else {
        long rest = http1_chunked_decode(&c->dec, d, &n);
        if (rest == -1)
            return h1_error(c, 400, "bad-request", "malformed chunked request body\n"), -1;
        eos = rest >= 0;
        s->in.len = n + (eos ? (size_t)rest : 0); /* decoded data, then what follows the body */
        used = n;
    }
    if ((c->pushed += n) > dp.max_body)
        return h1_error(c, 413, "too-large", "the request body is larger than the function accepts\n"), -1;
    if ((n != 0 || eos) && c->p != NULL)
        h2b_pair_push(c->p, d, n, eos); /* a stream already answered just drops it */
    evl_buf_consume(&s->in, used);
    c->req_done = eos;
    return 0;
}

static void h1_pump(h1c_t *c)
{
    if (c->p == NULL && !c->resp_head) {
        int rc = h1_head(c);
        if (rc <= 0)
            return;
    }
    if (!c->req_done && h1_body(c) != 0)
        return;
    if (c->req_done) /* pipelined requests wait in the kernel until this response ends */
        evl_sock_read_stop(c->s);
}

static void on_h1_read(evl_sock_t *s, int err)
{
    h1c_t *c = s->data;
    if (err != 0) { /* the client left: an unfinished call is cancelled */
        h1_free(c);
        return;
    }
    h1_pump(c);
}

/* The response ended: the next request, or the close. */
static void h1_next(h1c_t *c)
{
    h2b_pair_t *p = c->p;
    c->p = NULL;
    p->owner = NULL;
    h2b_pair_release(p);
    if (!c->keep || !c->req_done) {
        h1_close(c);
        return;
    }
    c->resp_head = 0;
    evl_timer_start(dp.loop, &c->idle, DIRECT_IDLE_MS);
    evl_sock_read_start(c->s, on_h1_read);
    if (c->s->in.len != 0)
        h1_pump(c);
}

static void h1_on_head(h2b_pair_t *p)
{
    h1c_t *c = p->owner;
    const nghttp2_nv *st = h2b_find(&p->resp, ":status");
    int status = st != NULL && st->valuelen == 3 ? atoi((const char *)st->value) : 502;
    int has_len = h2b_find(&p->resp, "content-length") != NULL;
    int no_body = c->head_req || status == 204 || status == 304 || status < 200;
    c->chunked_out = !no_body && !has_len;
    if (!c->req_done)
        c->keep = 0; /* answered before the body was read: the rest cannot be resynced */
    static evl_buf_t b;
    b.off = b.len = 0;
    char line[64];
    int ll = snprintf(line, sizeof(line), "HTTP/1.1 %03d %s\r\n", status, faas_http_reason(status));
    int rc = evl_buf_append(&b, line, (size_t)ll);
    for (size_t i = 0; i < p->resp.n && rc == 0; i++) {
        const nghttp2_nv *h = &p->resp.nv[i];
        int is_len = h->namelen == 14 && memcmp(h->name, "content-length", 14) == 0;
        if ((h->namelen != 0 && h->name[0] == ':') ||
            (!is_len && agent_header_is_hop((const char *)h->name, h->namelen)))
            continue; /* the length is the body's own; the rest is this connection's */
        rc |= evl_buf_append(&b, h->name, h->namelen) | evl_buf_append(&b, ": ", 2) |
              evl_buf_append(&b, h->value, h->valuelen) | evl_buf_append(&b, "\r\n", 2);
    }
    if (c->chunked_out)
        rc |= evl_buf_append(&b, "transfer-encoding: chunked\r\n", 28);
    if (!c->keep)
        rc |= evl_buf_append(&b, "connection: close\r\n", 19);
    rc |= evl_buf_append(&b, "\r\n", 2);
    if (rc != 0) {
        h1_free(c);
        return;
    }
    c->resp_head = 1;
    struct iovec v = {evl_buf_data(&b), b.len};
    h1_write(c, &v, 1);
}

static void h1_on_data(h2b_pair_t *p, const uint8_t *d, size_t len)
{
    h1c_t *c = p->owner;
    char sz[24];
    struct iovec v[3];
    int n = 0;
    if (c->chunked_out) {
        v[n++] = (struct iovec){sz, (size_t)snprintf(sz, sizeof(sz), "%zx\r\n", len)};
        v[n++] = (struct iovec){(void *)d, len};
        v[n++] = (struct iovec){"\r\n", 2};
    } else {
        v[n++] = (struct iovec){(void *)d, len};
    }
    if (len == 0 || h1_write(c, v, n) < 0)
        return;
    if (evl_sock_pending(c->s) == 0)
        h2b_pair_window(p, len);
    else
        c->unwindowed += len;
}

static void h1_on_end(h2b_pair_t *p)
{
    h1c_t *c = p->owner;
    if (c->chunked_out) {
        struct iovec v = {"0\r\n\r\n", 5};
        if (h1_write(c, &v, 1) < 0)
            return;
    }
    c->resp_done = 1;
    h1_next(c);
}

static void h1_on_broken(h2b_pair_t *p, uint32_t h2_error, const char *why)
{
    h1c_t *c = p->owner;
    FAAS_DEBUG("event=direct_broken h2_error=%u why=\"%s\"", h2_error, why != NULL ? why : "");
    if (c->resp_head) { /* the response cannot be completed: the client sees it cut */
        h1_free(c);
        return;
    }
    h1_error(c, 502, "upstream-reset", "the call ended before a response\n");
}

static const h2b_local_t h1_ops = {h1_on_head, h1_on_data, h1_on_end, h1_on_broken};

/* ---- accepting ---- */

static void on_sniff(evl_sock_t *s, int err)
{
    if (err != 0) {
        evl_sock_close(s);
        return;
    }
    int kind = http1_sniff_preface(evl_buf_data(&s->in), s->in.len);
    if (dp.proto == FAAS__PROTOCOL__THRIFT) {
        agent_direct_thrift_accept(dp.loop, s);
        return;
    }
    if (kind == HTTP1_SNIFF_H2 && s->in.len < H2_PREFACE_LEN)
        return; /* "P" may still be a POST */
    if (kind == HTTP1_SNIFF_H2) {
        if (h2b_io_accept(s, &dp.h2) == NULL) {
            evl_sock_close(s);
            return;
        }
        agent_front_feed(s);
        return;
    }
    if (dp.proto != FAAS__PROTOCOL__HTTP) { /* gRPC is h2 only */
        evl_sock_close(s);
        return;
    }
    h1c_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evl_sock_close(s);
        return;
    }
    c->s = s;
    s->data = c;
    c->idle.cb = on_linger_timeout; /* either way the connection just goes */
    c->idle.data = c;
    evl_timer_start(dp.loop, &c->idle, DIRECT_IDLE_MS);
    evl_sock_read_start(s, on_h1_read);
    h1_pump(c);
}

static void on_accept(evl_io_t *io, int events)
{
    (void)events;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        evl_sock_t *s = evl_sock_new(dp.loop, fd);
        if (s != NULL)
            evl_sock_read_start(s, on_sniff);
    }
}

int agent_direct_start(evl_loop_t *loop, int proto, uint32_t deadline_ms, uint64_t max_body)
{
    if (dp.fd < 0 || dp.loop != NULL)
        return -1;
    dp.loop = loop;
    dp.proto = proto;
    dp.max_body = max_body != 0 ? max_body : UINT64_MAX;
    if (deadline_ms != 0)
        snprintf(dp.deadline, sizeof(dp.deadline), "%u", deadline_ms);
    dp.h2 = *agent_front_cbs();
    dp.front_request = dp.h2.on_request;
    dp.h2.on_request = h2_request;
    if (listen(dp.fd, 1024) != 0 || evl_io_start(loop, &dp.io, dp.fd, EVL_READ, on_accept) != 0) {
        FAAS_WARN("event=direct_listen_failed");
        return -1;
    }
    return 0;
}
