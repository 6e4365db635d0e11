/* runtime-agent/direct_thrift.c - Thrift on the direct port (direct.c says what the port
 * is). A mesh client sends framed, THeader or TTHeader messages (thrift/, the codec);
 * each one becomes the call a gateway would make, POST /_faas/thrift with the message
 * as the body and its framing as faas-thrift-* headers, as a local-caller pair on the
 * agent's own front, so that it passes the same in-flight count, overload detector and
 * re-framing for the user server (thrift_proxy.c). The reply goes back in the client's
 * own framing. One call at a time per connection: the frame stays in the socket's
 * buffer (reading stopped) until its reply is written, so the parsed views stay valid
 * and replies keep the order of the calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/errors.h"
#include "common/log.h"
#include "runtime-agent/internal.h"
#include "thrift/thrift.h"

#define MAX_REPLY (16u << 20) /* the gateway's Thrift port takes no larger reply either */

typedef struct tdc {
    evl_sock_t *s;
    h2b_pair_t *p; /* the call in progress */
    thrift_frame_t f;
    int status, oneway, closing;
    evl_buf_t body;   /* the reply payload, collected whole */
    evl_timer_t idle; /* no call in progress */
} tdc_t;

static evl_loop_t *td_loop;

static void td_pump(tdc_t *c);
static void on_td_read(evl_sock_t *s, int err);

static void td_release(tdc_t *c)
{
    if (c->p != NULL) {
        h2b_pair_t *p = c->p;
        c->p = NULL;
        p->owner = NULL;
        h2b_pair_release(p);
    }
}

static void td_free(tdc_t *c)
{
    td_release(c);
    evl_timer_stop(td_loop, &c->idle);
    evl_buf_free(&c->body);
    evl_sock_close(c->s);
    free(c);
}

static void on_td_closed_write(evl_sock_t *s, int err)
{
    (void)err;
    td_free(s->data);
}

/* Closes once what is queued is written. */
static void td_close(tdc_t *c)
{
    td_release(c);
    evl_sock_read_stop(c->s);
    c->closing = 1;
    if (evl_sock_pending(c->s) == 0)
        td_free(c);
    else
        c->s->on_write = on_td_closed_write;
}

static void on_td_written(evl_sock_t *s, int err)
{
    tdc_t *c = s->data;
    if (err != 0)
        td_free(c);
    else if (c->closing)
        td_free(c);
}

/* Writes a reply frame (len 0: nothing, a oneway call); 0 or -1 (c gone). */
static int td_write(tdc_t *c, const uint8_t *d, size_t len)
{
    struct iovec v = {(void *)d, len};
    if (len != 0 && evl_sock_write(c->s, &v, 1, on_td_written) < 0) {
        td_free(c);
        return -1;
    }
    return 0;
}

/* A TApplicationException in the client's framing for the frame in c->f; 0 or -1. */
static int td_error(tdc_t *c, int type, const char *msg)
{
    if (c->oneway)
        return 0;
    uint8_t small[512], *out = small;
    size_t n = thrift_encode_error(&c->f, type, msg, NULL, 0);
    if (n > sizeof(small) && (out = malloc(n)) == NULL)
        return td_close(c), -1;
    n = thrift_encode_error(&c->f, type, msg, out, n);
    int rc = td_write(c, out, n);
    if (out != small)
        free(out);
    return rc;
}

/* The call ended (reply written or none due): the next frame. */
static void td_next(tdc_t *c)
{
    td_release(c);
    c->body.off = c->body.len = 0;
    evl_buf_consume(&c->s->in, c->f.frame_len);
    evl_timer_start(td_loop, &c->idle, agent_direct_idle_ms());
    evl_sock_read_start(c->s, on_td_read);
    td_pump(c); /* a frame may be there already */
}

/* The function's faas-thrift-* reply headers back into Thrift info headers. */
static size_t reply_headers(const h2b_pair_t *p, thrift_header_t *hs, uint8_t (*kb)[256])
{
    size_t nh = 0;
    for (size_t i = 0; i < p->resp.n && nh < THRIFT_MAX_HEADERS; i++) {
        const nghttp2_nv *e = &p->resp.nv[i];
        if (e->namelen <= 14 || memcmp(e->name, "faas-thrift-", 12) != 0 || e->namelen / 2 + 1 > sizeof(kb[0]))
            continue;
        if (thrift_meta_parse((const char *)e->name, e->namelen, (const char *)e->value, e->valuelen, kb[nh],
                              sizeof(kb[0]), &hs[nh]) == 0)
            nh++;
    }
    return nh;
}

static void td_on_head(h2b_pair_t *p)
{
    tdc_t *c = p->owner;
    const nghttp2_nv *st = h2b_find(&p->resp, ":status");
    c->status = st != NULL && st->valuelen == 3 ? atoi((const char *)st->value) : 502;
}

static void td_on_data(h2b_pair_t *p, const uint8_t *d, size_t len)
{
    tdc_t *c = p->owner;
    h2b_pair_window(p, len); /* collected whole, bounded below */
    if (c->body.len + len > MAX_REPLY || evl_buf_append(&c->body, d, len) != 0)
        c->status = -1;
}

/* Builds and writes the client's reply; 0 or -1 (c gone). */
static int td_reply(tdc_t *c, const h2b_pair_t *p)
{
    const char *d = evl_buf_data(&c->body);
    if (c->status == -1)
        return td_error(c, FAAS_TAPP_INTERNAL_ERROR, "reply larger than the agent's limit");
    if (c->status != 200 && c->status != 204) {
        char msg[256];
        size_t bl = c->body.len < 200 ? c->body.len : 200;
        while (bl > 0 && (d[bl - 1] == '\n' || d[bl - 1] == '\r'))
            bl--;
        snprintf(msg, sizeof(msg), "%.*s", (int)bl, bl != 0 ? d : "function failed");
        return td_error(c, faas_tapp_for_http(c->status), msg);
    }
    if (c->oneway || c->status == 204)
        return 0;
    thrift_header_t hs[THRIFT_MAX_HEADERS];
    uint8_t kb[THRIFT_MAX_HEADERS][256];
    size_t nh = reply_headers(p, hs, kb);
    size_t n = thrift_encode_reply(&c->f, hs, nh, (const uint8_t *)d, c->body.len, NULL, 0);
    uint8_t *out = malloc(n);
    if (out == NULL)
        return td_error(c, FAAS_TAPP_INTERNAL_ERROR, "agent out of memory");
    n = thrift_encode_reply(&c->f, hs, nh, (const uint8_t *)d, c->body.len, out, n);
    int rc = td_write(c, out, n);
    free(out);
    return rc;
}

static void td_on_end(h2b_pair_t *p)
{
    tdc_t *c = p->owner;
    if (td_reply(c, p) == 0)
        td_next(c);
}

static void td_on_broken(h2b_pair_t *p, uint32_t h2_error, const char *why)
{
    tdc_t *c = p->owner;
    FAAS_DEBUG("event=direct_thrift_broken h2_error=%u why=\"%s\"", h2_error, why != NULL ? why : "");
    if (td_error(c, FAAS_TAPP_INTERNAL_ERROR, "function response broken") == 0)
        td_next(c); /* the frame was read whole: the connection is still in step */
}

static const h2b_local_t td_ops = {td_on_head, td_on_data, td_on_end, td_on_broken};

#define NVS(n, nl, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE})

/* The call a gateway would make for c->f, sent to the agent's own front; 0 or -1. */
static int td_start(tdc_t *c)
{
    nghttp2_nv nv[THRIFT_MAX_HEADERS + 8];
    char names[THRIFT_MAX_HEADERS][416];
    size_t n = 0;
    int compact = c->f.proto == THRIFT_COMPACT;
    nv[n++] = NVS(":method", 7, "POST", 4);
    nv[n++] = NVS(":scheme", 7, "http", 4);
    nv[n++] = NVS(":authority", 10, "direct", 6);
    nv[n++] = NVS(":path", 5, "/_faas/thrift", 13);
    nv[n++] = NVS("content-type", 12, "application/x-thrift", 20);
    nv[n++] = NVS("faas-protocol", 13, "thrift", 6);
    nv[n++] = NVS("faas-thrift-proto", 17, compact ? "compact" : "binary", compact ? 7u : 6u);
    if (c->oneway)
        nv[n++] = NVS("faas-thrift-oneway", 18, "1", 1);
    for (size_t i = 0; i < c->f.n_headers; i++) {
        const thrift_header_t *th = &c->f.headers[i];
        /* the request id is the platform's: a client cannot choose it */
        if (!th->is_int && th->key.len == 15 && memcmp(th->key.ptr, "faas-request-id", 15) == 0)
            continue;
        size_t nl = thrift_meta_name(th, names[i], sizeof(names[i]));
        if (nl != 0)
            nv[n++] = NVS(names[i], nl, th->value.ptr, th->value.len);
    }
    h2b_conn_t *conn = h2b_client_get(agent_direct_self());
    h2b_pair_t *p = conn != NULL ? h2b_pair_new_local(&td_ops, c) : NULL;
    if (p == NULL)
        return -1;
    c->p = p;
    if (h2b_pair_connect(p, conn, nv, n) != 0 || h2b_pair_push(p, c->f.payload.ptr, c->f.payload.len, 1) != 0) {
        td_release(c);
        return -1;
    }
    return 0;
}

/* Bytes that are no Thrift frame: the protocol's error when the message header could
 * be read, then the close (the stream is out of step). */
static void td_bad(tdc_t *c, const char *err)
{
    char msg[200];
    const char *e2;
    c->oneway = 0;
    snprintf(msg, sizeof(msg), "bad thrift frame: %s", err);
    if (thrift_parse_head((const uint8_t *)evl_buf_data(&c->s->in), c->s->in.len, 64 * 1024, &c->f, NULL, &e2) > 0 &&
        td_error(c, FAAS_TAPP_PROTOCOL_ERROR, msg) != 0)
        return;
    td_close(c);
}

static void td_pump(tdc_t *c)
{
    const char *err = NULL;
    evl_sock_t *s = c->s;
    long fl =
        thrift_parse((const uint8_t *)evl_buf_data(&s->in), s->in.len, THRIFT_DEFAULT_MAX_FRAME, &c->f, NULL, &err);
    if (fl == 0)
        return;
    if (fl < 0) {
        td_bad(c, err);
        return;
    }
    evl_sock_read_stop(s); /* the views in c->f point into s->in until the reply is out */
    evl_timer_stop(td_loop, &c->idle);
    agent_direct_counted();
    c->oneway = c->f.mtype == THRIFT_ONEWAY;
    c->status = 0;
    if (c->f.mtype != THRIFT_CALL && !c->oneway) {
        if (td_error(c, FAAS_TAPP_INVALID_MESSAGE_TYPE, "only CALL and ONEWAY messages are accepted") == 0)
            td_close(c);
        return;
    }
    if (td_start(c) != 0 && td_error(c, FAAS_TAPP_INTERNAL_ERROR, "cannot reach the function") == 0)
        td_next(c);
}

static void on_td_read(evl_sock_t *s, int err)
{
    tdc_t *c = s->data;
    if (err != 0) {
        td_free(c); /* an unfinished call is cancelled */
        return;
    }
    td_pump(c);
}

static void on_td_idle(evl_timer_t *t)
{
    td_free(t->data);
}

void agent_direct_thrift_accept(evl_loop_t *loop, evl_sock_t *s)
{
    td_loop = loop;
    tdc_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evl_sock_close(s);
        return;
    }
    c->s = s;
    s->data = c;
    c->idle.cb = on_td_idle;
    c->idle.data = c;
    evl_timer_start(loop, &c->idle, agent_direct_idle_ms());
    evl_sock_read_start(s, on_td_read);
    td_pump(c);
}
