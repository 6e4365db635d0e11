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
 * the HTTP path: 502 upstream-connect / upstream-reset, 504 timeout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/spec.h"
#include "runtime-agent/internal.h"
#include "runtime-agent/thrift_agent.h"
#include "thrift/thrift.h"

#define IDLE_MS 10000

static struct {
    evl_loop_t *loop;
    agent_pool_t pool;
    thrift_framing_t framing;
    int configured;
} tp;

void agent_thrift_configure(evl_loop_t *loop, uint16_t port, const char *transport)
{
    tp.loop = loop;
    if (agent_thrift_transport(transport, &tp.framing) != 0) {
        FAAS_WARN("event=thrift_transport_unknown transport=\"%s\" using=framed", transport);
        tp.framing = THRIFT_FRAMED;
    }
    agent_pool_init(&tp.pool, loop, port, IDLE_MS);
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

void agent_thrift_end(agent_req_t *r)
{
    drop_up(r);
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
    for (size_t i = 0; i < req->n; i++) {
        const nghttp2_nv *e = &req->nv[i];
        if (name_is(e, "faas-thrift-proto", 17))
            proto = e->valuelen == 7 && memcmp(e->value, "compact", 7) == 0 ? THRIFT_COMPACT : THRIFT_BINARY;
        else if (name_is(e, "faas-thrift-oneway", 18))
            oneway = 1;
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
    if (up_acquire(r, 0) != 0)
        call_fail(r, FAAS_ERR_CRASHED, "upstream-connect", "the function is not accepting connections\n");
}
