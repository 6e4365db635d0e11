/* runtime-agent/thrift_proxy.c - the agent's Thrift data path. The dispatcher sends
 * each Thrift call as POST /_faas/thrift on its h2c connection: the body is the
 * unframed message, faas-thrift-proto says binary or compact, faas-thrift-oneway
 * marks oneway calls and faas-thrift-{h,x,i}-* carry the client's info headers.
 * The agent frames the message in the function's thrift_transport (framed,
 * theader or ttheader: the client's framing may differ, the gateway re-frames the
 * reply for it), adds a faas-request-id info header when the framing has headers,
 * and writes it on a pooled keep-alive connection to the user server, one call at
 * a time per connection. The reply frame is parsed with the same codec and goes
 * back as the response body (its info headers as faas-thrift-* headers). Oneway
 * calls are answered 204 once the bytes are written. Errors carry faas-error like
 * the HTTP path: 502 upstream-connect / upstream-reset, 504 timeout. */
#include <h2o.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/thrift.h"
#include "runtime-agent/internal.h"
#include "runtime-agent/thrift_agent.h"

#define IDLE_MS 10000
#define DEFAULT_DEADLINE_MS 30000

struct tfwd;

typedef struct tup {
    h2o_socket_t *sock;
    struct tfwd *owner; /* NULL when idle */
    h2o_linklist_t idle_link;
    h2o_timeout_entry_t idle_timer;
    int reused, got_bytes;
    int writing, release_after_write; /* h2o allows one write at a time */
    int reading;
} tup_t;

typedef struct tfwd {
    h2o_req_t *req;
    tup_t *up;
    h2o_iovec_t frame;
    h2o_timeout_entry_t deadline;
    int oneway, done, retried;
} tfwd_t;

typedef struct tbucket {
    struct tbucket *next;
    uint32_t ms;
    h2o_timeout_t t;
} tbucket_t;

static struct {
    h2o_evloop_t *loop;
    struct sockaddr_in upstream;
    gw_thrift_framing_t framing;
    h2o_linklist_t idle;
    h2o_timeout_t idle_timeout;
    tbucket_t *buckets;
    int configured;
} tp;

static h2o_timeout_t *timeout_for(uint32_t ms)
{
    ms = agent_quantize_ms(ms);
    for (tbucket_t *b = tp.buckets; b != NULL; b = b->next)
        if (b->ms == ms)
            return &b->t;
    tbucket_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->ms = ms;
    h2o_timeout_init(tp.loop, &b->t, ms);
    b->next = tp.buckets;
    tp.buckets = b;
    return &b->t;
}

void agent_thrift_configure(h2o_evloop_t *loop, uint16_t port, const char *transport)
{
    tp.loop = loop;
    tp.upstream = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
    tp.upstream.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (agent_thrift_transport(transport, &tp.framing) != 0) {
        FAAS_WARN("event=thrift_transport_unknown transport=\"%s\" using=framed", transport);
        tp.framing = GW_THRIFT_FRAMED;
    }
    h2o_linklist_init_anchor(&tp.idle);
    h2o_timeout_init(loop, &tp.idle_timeout, IDLE_MS);
    tp.configured = 1;
}

int agent_thrift_is(h2o_req_t *req)
{
    return h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/_faas/thrift"));
}

static void send_error(h2o_req_t *req, int status, const char *reason, const char *body)
{
    req->res.status = status;
    req->res.reason = status == 504 ? "Gateway Timeout" : status == 400 ? "Bad Request" : "Bad Gateway";
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("faas-error"), 0, NULL, reason, strlen(reason));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; charset=utf-8"));
    req->res.content_length = strlen(body);
    h2o_send_inline(req, body, strlen(body));
}

/* ---- the pool ---- */

static void up_close(tup_t *up)
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
    up_close(sock->data); /* an idle Thrift connection has nothing to say */
}

static void on_idle_timeout(h2o_timeout_entry_t *e)
{
    up_close(H2O_STRUCT_FROM_MEMBER(tup_t, idle_timer, e));
}

/* Pooled sockets stay registered for reading; switching callbacks costs no epoll_ctl. */
static void set_reader(tup_t *up, h2o_socket_cb cb)
{
    if (up->reading) {
        up->sock->_cb.read = cb;
        return;
    }
    up->reading = 1;
    h2o_socket_read_start(up->sock, cb);
}

static void up_release(tup_t *up)
{
    up->owner = NULL;
    if (up->sock->input->size != 0) {
        up_close(up);
        return;
    }
    set_reader(up, on_idle_event);
    h2o_linklist_insert(tp.idle.next, &up->idle_link);
    h2o_timeout_link(tp.loop, &tp.idle_timeout, &up->idle_timer);
}

static void fwd_stop(tfwd_t *f)
{
    f->done = 1;
    if (h2o_timeout_is_linked(&f->deadline))
        h2o_timeout_unlink(&f->deadline);
}

static void fwd_drop_up(tfwd_t *f)
{
    if (f->up != NULL) {
        f->up->owner = NULL;
        up_close(f->up);
        f->up = NULL;
    }
}

static void fwd_fail(tfwd_t *f, int status, const char *reason, const char *body)
{
    if (f->done)
        return;
    fwd_stop(f);
    fwd_drop_up(f);
    send_error(f->req, status, reason, body);
}

static int up_acquire(tfwd_t *f, int fresh);

static void up_failed(tfwd_t *f, tup_t *up)
{
    /* a pooled connection the server closed while idle: try once on a new one */
    if (up->reused && !up->got_bytes && !f->retried) {
        f->retried = 1;
        fwd_drop_up(f);
        if (up_acquire(f, 1) == 0)
            return;
    }
    fwd_fail(f, 502, "upstream-reset", "the function closed the connection before answering\n");
}

static void on_reply_read(h2o_socket_t *sock, const char *err)
{
    tup_t *up = sock->data;
    tfwd_t *f = up->owner;
    if (f == NULL) { /* cannot happen: without an owner the reader is on_idle_event */
        up_close(up);
        return;
    }
    if (err != NULL) {
        up_failed(f, up);
        return;
    }
    up->got_bytes = 1;
    gw_thrift_frame_t fr;
    const char *perr = NULL;
    long n = gw_thrift_parse((const uint8_t *)sock->input->bytes, sock->input->size, 0, &fr, NULL, &perr);
    if (n == 0)
        return;
    if (n < 0) {
        FAAS_WARN("event=thrift_bad_reply err=\"%s\"", perr ? perr : "?");
        fwd_fail(f, 502, "upstream-reset", "the function sent a malformed Thrift reply\n");
        return;
    }
    h2o_req_t *req = f->req;
    fwd_stop(f);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/x-thrift"));
    for (size_t i = 0; i < fr.n_headers; i++) {
        char *nm = h2o_mem_alloc_pool(&req->pool, 416);
        size_t nl = gw_thrift_meta_name(&fr.headers[i], nm, 416);
        if (nl == 0)
            continue;
        h2o_iovec_t v = h2o_strdup(&req->pool, (const char *)fr.headers[i].value.ptr, fr.headers[i].value.len);
        h2o_add_header_by_str(&req->pool, &req->res.headers, nm, nl, 0, NULL, v.base, v.len);
    }
    h2o_iovec_t body = h2o_strdup(&req->pool, (const char *)fr.payload.ptr, fr.payload.len);
    h2o_buffer_consume(&sock->input, (size_t)n);
    f->up = NULL;
    up->owner = NULL;
    if (up->writing) { /* the write callback has not run yet: it pools the connection */
        up->release_after_write = 1;
        set_reader(up, on_idle_event);
    } else {
        up_release(up);
    }
    req->res.content_length = body.len;
    h2o_send_inline(req, body.base, body.len);
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    tup_t *up = sock->data;
    tfwd_t *f = up->owner;
    up->writing = 0;
    if (f == NULL) {
        if (up->release_after_write) {
            up->release_after_write = 0;
            if (err != NULL)
                up_close(up);
            else
                up_release(up);
        }
        return;
    }
    if (err != NULL) {
        up_failed(f, up);
        return;
    }
    if (!f->oneway)
        return;
    /* oneway: nothing comes back; the call is done once the server has the bytes */
    fwd_stop(f);
    f->up = NULL;
    up_release(up);
    f->req->res.status = 204;
    f->req->res.reason = "No Content";
    h2o_send_inline(f->req, "", 0);
}

static void up_send(tup_t *up)
{
    tfwd_t *f = up->owner;
    up->got_bytes = 0;
    up->writing = 1;
    set_reader(up, on_reply_read);
    h2o_socket_write(up->sock, &f->frame, 1, on_written);
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
    tup_t *up = sock->data;
    if (err != NULL) {
        fwd_fail(up->owner, 502, "upstream-connect", "the function is not accepting connections\n");
        return;
    }
    up_send(up);
}

static int up_acquire(tfwd_t *f, int fresh)
{
    tup_t *up;
    if (!fresh && !h2o_linklist_is_empty(&tp.idle)) {
        up = H2O_STRUCT_FROM_MEMBER(tup_t, idle_link, tp.idle.next);
        h2o_linklist_unlink(&up->idle_link);
        h2o_timeout_unlink(&up->idle_timer);
        up->reused = 1;
        up->owner = f;
        f->up = up;
        up_send(up);
        return 0;
    }
    if ((up = calloc(1, sizeof(*up))) == NULL)
        return -1;
    up->sock = h2o_socket_connect(tp.loop, (struct sockaddr *)&tp.upstream, sizeof(tp.upstream), on_connect);
    if (up->sock == NULL) {
        free(up);
        return -1;
    }
    up->sock->data = up;
    int one = 1; /* one small frame per call: never wait behind Nagle */
    setsockopt(h2o_socket_get_fd(up->sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    up->idle_timer.cb = on_idle_timeout;
    up->owner = f;
    f->up = up;
    return 0;
}

/* ---- requests ---- */

static void on_dispose(void *p)
{
    tfwd_t *f = p;
    fwd_stop(f);
    fwd_drop_up(f); /* a reply may still come on it: never reuse */
}

static void on_deadline(h2o_timeout_entry_t *e)
{
    tfwd_t *f = H2O_STRUCT_FROM_MEMBER(tfwd_t, deadline, e);
    fwd_fail(f, 504, "timeout", "deadline passed before the function answered\n");
}

static int name_is(const h2o_iovec_t *n, const char *s, size_t l)
{
    return n->len == l && memcmp(n->base, s, l) == 0;
}

void agent_thrift_handle(h2o_req_t *req)
{
    if (!tp.configured) {
        send_error(req, 502, "upstream-connect", "the function has no Thrift upstream\n");
        return;
    }
    gw_thrift_proto_t proto = GW_THRIFT_BINARY;
    gw_thrift_header_t hs[GW_THRIFT_MAX_HEADERS + 1];
    size_t nh = 0;
    uint64_t deadline_ms = DEFAULT_DEADLINE_MS;
    h2o_iovec_t rid = {NULL, 0};
    int oneway = 0;
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *e = &req->headers.entries[i];
        if (name_is(e->name, H2O_STRLIT("faas-thrift-proto")))
            proto = h2o_memis(e->value.base, e->value.len, H2O_STRLIT("compact")) ? GW_THRIFT_COMPACT
                                                                                 : GW_THRIFT_BINARY;
        else if (name_is(e->name, H2O_STRLIT("faas-thrift-oneway")))
            oneway = 1;
        else if (name_is(e->name, H2O_STRLIT("faas-request-id")))
            rid = e->value;
        else if (name_is(e->name, H2O_STRLIT("faas-deadline-ms")))
            agent_parse_ms(e->value.base, e->value.len, &deadline_ms);
        else if (nh < GW_THRIFT_MAX_HEADERS && e->name->len > 14) {
            uint8_t *kb = h2o_mem_alloc_pool(&req->pool, e->name->len / 2 + 1);
            if (gw_thrift_meta_parse(e->name->base, e->name->len, e->value.base, e->value.len, kb,
                                     e->name->len / 2 + 1, &hs[nh]) == 0)
                nh++;
        }
    }
    const uint8_t *pl = (const uint8_t *)req->entity.base;
    size_t cap = pl == NULL ? 0
                            : agent_thrift_request_frame(tp.framing, proto, pl, req->entity.len, hs, nh, rid.base,
                                                         rid.len, NULL, 0);
    if (cap == 0) {
        send_error(req, 400, "bad-request", "not a Thrift message\n");
        return;
    }
    tfwd_t *f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), on_dispose);
    memset(f, 0, sizeof(*f));
    f->req = req;
    gw_bytes_t name;
    uint8_t mtype = 0;
    int32_t seqid;
    const char *err;
    gw_thrift_parse_message(proto, pl, req->entity.len, &name, &mtype, &seqid, &err); /* parsed once already */
    f->oneway = oneway || mtype == GW_THRIFT_ONEWAY;
    f->deadline.cb = on_deadline;
    uint8_t *buf = h2o_mem_alloc_pool(&req->pool, cap);
    f->frame = h2o_iovec_init(buf, agent_thrift_request_frame(tp.framing, proto, pl, req->entity.len, hs, nh,
                                                              rid.base, rid.len, buf, cap));
    h2o_timeout_t *t = timeout_for(deadline_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)deadline_ms);
    if (t != NULL)
        h2o_timeout_link(tp.loop, t, &f->deadline);
    if (up_acquire(f, 0) != 0)
        fwd_fail(f, 502, "upstream-connect", "the function is not accepting connections\n");
}
