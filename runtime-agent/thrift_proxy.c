/* runtime-agent/thrift_proxy.c - the agent's Thrift data path. The dispatcher sends
 * each Thrift call as POST /_faas/thrift on its h2c connection: the body is the
 * unframed message, faas-thrift-proto says binary or compact, faas-thrift-oneway
 * marks oneway calls and faas-thrift-{h,x,i}-* carry the client's info headers.
 * The agent frames the message in the function's thrift_transport (framed,
 * theader or ttheader: the client's framing may differ, the gateway re-frames the
 * reply for it), adds a faas-request-id info header when the framing has headers,
 * and writes it on a pooled keep-alive connection to the user server (pool.c), one
 * call at a time per connection. The reply frame is parsed with the same codec and goes
 * back as the response body (its info headers as faas-thrift-* headers). Oneway
 * calls are answered 204 once the bytes are written. Errors carry faas-error like
 * the HTTP path: 502 upstream-connect / upstream-reset, 504 timeout.
 *
 * Framed two-way calls of one client connection (faas-thrift-conn) are pipelined
 * instead (see "pipelined calls" below): in flight together on one connection, written
 * together, answered in order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"
#include "runtime-agent/internal.h"
#include "runtime-agent/thrift_agent.h"
#include "thrift/thrift.h"

#define IDLE_MS 10000
#define PIPE_DEPTH 32 /* calls in flight on one pipelined connection at most */

typedef struct tpipe tpipe_t;

static struct {
    evl_loop_t *loop;
    agent_pool_t pool;
    thrift_framing_t framing;
    int configured;
    evl_link_t pipes; /* tpipe_t with calls in flight */
} tp;

static void pipe_forget(agent_req_t *r);

void agent_thrift_configure(evl_loop_t *loop, uint16_t port, const char *transport)
{
    tp.loop = loop;
    if (agent_thrift_transport(transport, &tp.framing) != 0) {
        FAAS_WARN("event=thrift_transport_unknown transport=\"%s\" using=framed", transport);
        tp.framing = THRIFT_FRAMED;
    }
    agent_pool_init(&tp.pool, loop, port, IDLE_MS);
    if (!tp.configured)
        evl_list_init(&tp.pipes);
    tp.configured = 1;
}

/* ---- the call ---- */

static void drop_up(agent_req_t *r)
{
    if (r->up != NULL) {
        agent_pool_close(r->up); /* a reply may still come on it: never reuse */
        r->up = NULL;
    }
}

static void call_fail(agent_req_t *r, faas_err_t kind, const char *reason, const char *body)
{
    evl_timer_stop(tp.loop, &r->deadline);
    drop_up(r);
    pipe_forget(r); /* a late reply is skipped: the connection stays in order */
    agent_reply_error(r->pair, faas_err_http(kind), reason, body);
}

static void release_up(agent_req_t *r)
{
    agent_upconn_t *u = r->up;
    r->up = NULL;
    agent_pool_release(u);
}

static int up_acquire(agent_req_t *r, int fresh);

static void up_failed(agent_req_t *r)
{
    /* a pooled connection the server closed while idle: try once on a new one */
    if (r->up->reused && !r->got_bytes && !r->retried) {
        r->retried = 1;
        drop_up(r);
        if (up_acquire(r, 1) == 0)
            return;
    }
    call_fail(r, FAAS_ERR_CRASHED, "upstream-reset", "the function closed the connection before answering\n");
}

#define NV(n, nl, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE})

static void answer(agent_req_t *r, const thrift_frame_t *f)
{
    nghttp2_nv nv[THRIFT_MAX_HEADERS + 3];
    char names[THRIFT_MAX_HEADERS][416], cl[24];
    size_t n = 0;
    nv[n++] = NV(":status", 7, "200", 3);
    nv[n++] = NV("content-type", 12, "application/x-thrift", 20);
    int cll = snprintf(cl, sizeof(cl), "%zu", f->payload.len);
    nv[n++] = NV("content-length", 14, cl, (size_t)cll);
    for (size_t i = 0; i < f->n_headers && i < THRIFT_MAX_HEADERS; i++) {
        size_t nl = thrift_meta_name(&f->headers[i], names[i], sizeof(names[i]));
        if (nl != 0)
            nv[n++] = NV(names[i], nl, f->headers[i].value.ptr, f->headers[i].value.len);
    }
    if (h2b_pair_respond(r->pair, nv, n, 0) == 0)
        h2b_pair_send(r->pair, f->payload.ptr, f->payload.len, 1);
}

static void on_reply_read(evl_sock_t *s, int err)
{
    agent_upconn_t *u = s->data;
    agent_req_t *r = u->owner;
    if (err != 0) {
        up_failed(r);
        return;
    }
    r->got_bytes = 1;
    thrift_frame_t f;
    const char *perr = NULL;
    long n = thrift_parse((const uint8_t *)evl_buf_data(&s->in), s->in.len, 0, &f, NULL, &perr);
    if (n == 0)
        return;
    if (n < 0) {
        FAAS_WARN("event=thrift_bad_reply err=\"%s\"", perr ? perr : "?");
        call_fail(r, FAAS_ERR_CRASHED, "upstream-reset", "the function sent a malformed Thrift reply\n");
        return;
    }
    evl_timer_stop(tp.loop, &r->deadline);
    answer(r, &f); /* copies what it needs out of s->in */
    evl_buf_consume(&s->in, (size_t)n);
    release_up(r);
}

static void oneway_done(agent_req_t *r)
{
    /* oneway: nothing comes back; the call is done once the server has the bytes */
    evl_timer_stop(tp.loop, &r->deadline);
    release_up(r);
    static const nghttp2_nv nc[] = {NV(":status", 7, "204", 3)};
    h2b_pair_respond(r->pair, nc, 1, 1);
}

static void on_written(evl_sock_t *s, int err)
{
    agent_upconn_t *u = s->data;
    agent_req_t *r = u->owner;
    if (r == NULL) { /* the reply came first and the connection is idle again */
        if (err != 0)
            agent_pool_close(u);
        return;
    }
    if (err != 0)
        up_failed(r);
    else if (r->oneway)
        oneway_done(r);
}

static void up_send(agent_req_t *r)
{
    agent_upconn_t *u = r->up;
    r->got_bytes = 0;
    evl_sock_read_start(u->sock, on_reply_read);
    struct iovec v = {evl_buf_data(&r->head), r->head.len};
    int w = evl_sock_write(u->sock, &v, 1, on_written);
    if (w < 0)
        up_failed(r);
    else if (w == 1 && r->oneway)
        oneway_done(r);
}

static void on_connect(agent_upconn_t *u, int err)
{
    agent_req_t *r = u->owner;
    if (err != 0) {
        if (r->retried)
            call_fail(r, FAAS_ERR_CRASHED, "upstream-reset", "the function closed the connection before answering\n");
        else
            call_fail(r, FAAS_ERR_CRASHED, "upstream-connect", "the function is not accepting connections\n");
        return;
    }
    up_send(r);
}

static int up_acquire(agent_req_t *r, int fresh)
{
    int rc = agent_pool_acquire(&tp.pool, fresh, r, on_connect, &r->up);
    if (rc < 0)
        return -1;
    if (rc == 1)
        up_send(r);
    return 0;
}

static void on_deadline(evl_timer_t *t)
{
    call_fail(t->data, FAAS_ERR_DEADLINE, "timeout", "deadline passed before the function answered\n");
}

/* ---- pipelined calls ----
 * One call per connection costs a write, a wakeup and a read on each side per call,
 * and a user server as many: at 16 calls in flight that is most of the agent's time.
 * A Thrift server answers the calls of one connection in order (it reads the next
 * only after answering, or queues them), so framed two-way calls may share one: those
 * of one loop pass go out in one write and their replies come back in one read,
 * matched in order (the seqid is checked: a server that breaks the order fails the
 * connection's calls rather than getting replies swapped). Only calls of one client
 * connection share one (the gateway names it in faas-thrift-conn): the client pipelined
 * them, so the server would have taken them in turn anyway, while calls of different
 * clients stay on different connections, in parallel for a thread-per-connection server
 * whatever their length, as when the clients call it directly. A connection whose
 * calls are all answered goes back to the pool. */

struct tpipe {
    evl_link_t link; /* tp.pipes */
    agent_upconn_t *up;
    int connected, reused, got_bytes;
    evl_buf_t out; /* frames not written yet (all of one loop pass: one write) */
    evl_defer_t flush;
    agent_req_t *q[PIPE_DEPTH]; /* calls waiting for their replies, in order; NULL: given up */
    int32_t seq[PIPE_DEPTH];    /* their seqids */
    unsigned head, n;
    char key[17]; /* the client connection (faas-thrift-conn) whose calls it carries */
};

static int pipe_submit(agent_req_t *r, const char *key, int32_t seqid);

static void pipe_forget(agent_req_t *r)
{
    tpipe_t *pp = r->tpipe;
    if (pp == NULL)
        return;
    r->tpipe = NULL;
    for (unsigned i = 0; i < pp->n; i++)
        if (pp->q[(pp->head + i) % PIPE_DEPTH] == r)
            pp->q[(pp->head + i) % PIPE_DEPTH] = NULL;
}

static void pipe_free(tpipe_t *pp, int keep_conn)
{
    evl_list_unlink(&pp->link);
    evl_defer_cancel(&pp->flush);
    if (pp->up != NULL) {
        if (keep_conn)
            agent_pool_release(pp->up); /* (closes it if something unasked-for is buffered) */
        else
            agent_pool_close(pp->up);
    }
    evl_buf_free(&pp->out);
    free(pp);
}

/* The connection broke (connect_err: never opened): its calls fail, or are tried once more
 * on another when it was a pooled one the server closed while idle (nothing came back). */
static void pipe_fail(tpipe_t *pp, int connect_err)
{
    int retry = pp->reused && !pp->got_bytes;
    unsigned n = pp->n, head = pp->head;
    agent_req_t *q[PIPE_DEPTH];
    int32_t seq[PIPE_DEPTH];
    char key[sizeof(pp->key)];
    memcpy(key, pp->key, sizeof(key));
    for (unsigned i = 0; i < n; i++) {
        q[i] = pp->q[(head + i) % PIPE_DEPTH];
        seq[i] = pp->seq[(head + i) % PIPE_DEPTH];
        if (q[i] != NULL)
            q[i]->tpipe = NULL;
    }
    pipe_free(pp, 0);
    for (unsigned i = 0; i < n; i++) {
        agent_req_t *r = q[i];
        if (r == NULL)
            continue;
        if (retry && !r->retried) {
            r->retried = 1;
            if (pipe_submit(r, key, seq[i]) == 0)
                continue;
        }
        if (connect_err && !r->retried)
            call_fail(r, FAAS_ERR_CRASHED, "upstream-connect", "the function is not accepting connections\n");
        else
            call_fail(r, FAAS_ERR_CRASHED, "upstream-reset", "the function closed the connection before answering\n");
    }
}

static void on_pipe_written(evl_sock_t *s, int err)
{
    agent_upconn_t *u = s->data;
    if (err != 0 && u->owner != NULL)
        pipe_fail(u->owner, 0);
}

static void on_pipe_flush(evl_defer_t *d)
{
    tpipe_t *pp = d->data;
    if (!pp->connected || pp->out.len == 0)
        return;
    struct iovec v = {evl_buf_data(&pp->out), pp->out.len};
    if (evl_sock_write(pp->up->sock, &v, 1, on_pipe_written) < 0) {
        pipe_fail(pp, 0);
        return;
    }
    evl_buf_consume(&pp->out, v.iov_len); /* written, or copied into the socket's queue */
}

/* One reply: the call at the head of the queue gets it (a given-up one's is dropped). */
static int pipe_reply(tpipe_t *pp, const thrift_frame_t *f)
{
    if (pp->n == 0 || f->seqid != pp->seq[pp->head]) {
        FAAS_WARN("event=thrift_bad_reply err=\"%s\"", pp->n == 0 ? "reply to no call" : "reply out of order");
        return -1;
    }
    agent_req_t *r = pp->q[pp->head];
    pp->head = (pp->head + 1) % PIPE_DEPTH;
    pp->n--;
    if (r != NULL) {
        r->tpipe = NULL;
        evl_timer_stop(tp.loop, &r->deadline);
        answer(r, f);
    }
    return 0;
}

static void on_pipe_read(evl_sock_t *s, int err)
{
    tpipe_t *pp = ((agent_upconn_t *)s->data)->owner;
    if (err != 0) {
        pipe_fail(pp, 0);
        return;
    }
    pp->got_bytes = 1;
    for (;;) {
        thrift_frame_t f;
        const char *perr = NULL;
        long n = thrift_parse((const uint8_t *)evl_buf_data(&s->in), s->in.len, 0, &f, NULL, &perr);
        if (n == 0)
            break;
        if (n < 0)
            FAAS_WARN("event=thrift_bad_reply err=\"%s\"", perr ? perr : "?");
        if (n < 0 || pipe_reply(pp, &f) != 0) {
            pipe_fail(pp, 0);
            return;
        }
        evl_buf_consume(&s->in, (size_t)n);
    }
    if (pp->n == 0 && pp->out.len == 0 && evl_sock_pending(s) == 0)
        pipe_free(pp, 1);
}

static void pipe_connected(tpipe_t *pp)
{
    pp->connected = 1;
    pp->reused = pp->up->reused;
    evl_sock_read_start(pp->up->sock, on_pipe_read);
    if (pp->out.len != 0)
        evl_defer(tp.loop, &pp->flush);
}

static void on_pipe_connect(agent_upconn_t *u, int err)
{
    if (err != 0)
        pipe_fail(u->owner, 1);
    else
        pipe_connected(u->owner);
}

/* The connection carrying the calls of client connection key, if one has room. (The list
 * holds connections with calls in flight only: as many as clients pipelining now.) */
static tpipe_t *pipe_pick(const char *key)
{
    for (evl_link_t *l = tp.pipes.next; l != &tp.pipes; l = l->next) {
        tpipe_t *pp = EVL_CONTAINER(l, tpipe_t, link);
        if (pp->n < PIPE_DEPTH && memcmp(pp->key, key, sizeof(pp->key)) == 0)
            return pp;
    }
    return NULL;
}

static tpipe_t *pipe_new(const char *key)
{
    tpipe_t *pp = calloc(1, sizeof(*pp));
    if (pp == NULL)
        return NULL;
    memcpy(pp->key, key, sizeof(pp->key));
    pp->flush.cb = on_pipe_flush;
    pp->flush.data = pp;
    evl_list_insert(&tp.pipes, &pp->link);
    int rc = agent_pool_acquire(&tp.pool, 0, pp, on_pipe_connect, &pp->up);
    if (rc < 0) {
        pp->up = NULL;
        pipe_free(pp, 0);
        return NULL;
    }
    if (rc == 1)
        pipe_connected(pp);
    return pp;
}

/* Queues r's frame (r->head) on the connection of its client's calls: 0, or -1 (r untouched). */
static int pipe_submit(agent_req_t *r, const char *key, int32_t seqid)
{
    tpipe_t *pp = pipe_pick(key);
    int fresh = pp == NULL;
    if (fresh && (pp = pipe_new(key)) == NULL)
        return -1;
    if (evl_buf_append(&pp->out, evl_buf_data(&r->head), r->head.len) != 0) {
        if (fresh && pp->n == 0)
            pipe_free(pp, pp->connected);
        return -1;
    }
    unsigned i = (pp->head + pp->n) % PIPE_DEPTH;
    pp->q[i] = r;
    pp->seq[i] = seqid;
    pp->n++;
    r->tpipe = pp;
    if (pp->connected)
        evl_defer(tp.loop, &pp->flush);
    return 0;
}

void agent_thrift_end(agent_req_t *r)
{
    drop_up(r);
    pipe_forget(r);
}

static int name_is(const nghttp2_nv *h, const char *s, size_t l)
{
    return h->namelen == l && memcmp(h->name, s, l) == 0;
}

void agent_thrift_start(agent_req_t *r)
{
    if (!tp.configured) {
        agent_reply_error(r->pair, faas_err_http(FAAS_ERR_CRASHED), "upstream-connect",
                          "the function has no Thrift upstream\n");
        return;
    }
    const h2b_hdrs_t *req = &r->pair->req;
    thrift_proto_t proto = THRIFT_BINARY;
    thrift_header_t hs[THRIFT_MAX_HEADERS + 1];
    uint8_t keys[8192]; /* the info headers' decoded keys */
    size_t nh = 0, koff = 0;
    uint64_t deadline_ms = FAAS_SPEC_DEFAULT_TIMEOUT_MS; /* until faas-deadline-ms says otherwise */
    const char *rid = NULL;
    size_t rlen = 0;
    int oneway = 0;
    char conn[17] = ""; /* the client connection's id, when the gateway names it */
    for (size_t i = 0; i < req->n; i++) {
        const nghttp2_nv *e = &req->nv[i];
        if (name_is(e, "faas-thrift-proto", 17))
            proto = e->valuelen == 7 && memcmp(e->value, "compact", 7) == 0 ? THRIFT_COMPACT : THRIFT_BINARY;
        else if (name_is(e, "faas-thrift-oneway", 18))
            oneway = 1;
        else if (name_is(e, "faas-thrift-conn", 16))
            memcpy(conn, e->value, e->valuelen < 16 ? e->valuelen : 16), conn[16] = '\0';
        else if (name_is(e, "faas-request-id", 15))
            rid = (const char *)e->value, rlen = e->valuelen;
        else if (name_is(e, "faas-deadline-ms", 16))
            http1_parse_u64((const char *)e->value, e->valuelen, &deadline_ms);
        else if (nh < THRIFT_MAX_HEADERS && e->namelen > 14 && e->namelen / 2 + 1 <= sizeof(keys) - koff &&
                 thrift_meta_parse((const char *)e->name, e->namelen, (const char *)e->value, e->valuelen, keys + koff,
                                   e->namelen / 2 + 1, &hs[nh]) == 0)
            koff += e->namelen / 2 + 1, nh++;
    }
    const uint8_t *pl = (const uint8_t *)evl_buf_data(&r->body);
    size_t len = r->body.len;
    size_t cap = len == 0 ? 0 : agent_thrift_request_frame(tp.framing, proto, pl, len, hs, nh, rid, rlen, NULL, 0);
    char *buf = cap != 0 ? evl_buf_reserve(&r->head, cap) : NULL;
    if (buf == NULL) {
        agent_reply_error(r->pair, faas_err_http(FAAS_ERR_MALFORMED), "bad-request", "not a Thrift message\n");
        return;
    }
    thrift_bytes_t name;
    uint8_t mtype = 0;
    int32_t seqid;
    const char *err;
    thrift_parse_message(proto, pl, len, &name, &mtype, &seqid, &err); /* parsed once already */
    r->oneway = oneway || mtype == THRIFT_ONEWAY;
    evl_buf_commit(&r->head,
                   agent_thrift_request_frame(tp.framing, proto, pl, len, hs, nh, rid, rlen, (uint8_t *)buf, cap));
    r->deadline.cb = on_deadline;
    evl_timer_start(tp.loop, &r->deadline, deadline_ms);
    if (tp.framing == THRIFT_FRAMED && !r->oneway && conn[0] != '\0') {
        if (pipe_submit(r, conn, seqid) != 0)
            call_fail(r, FAAS_ERR_CRASHED, "upstream-connect", "the function is not accepting connections\n");
        return;
    }
    if (up_acquire(r, 0) != 0)
        call_fail(r, FAAS_ERR_CRASHED, "upstream-connect", "the function is not accepting connections\n");
}
