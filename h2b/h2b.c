/* h2b/h2b.c - the HTTP/2 stream bridge (see h2b.h).
 * Connections are nghttp2 sessions over sockets of whatever loop the h2b_io_t adapter
 * drives; writes are coalesced and flushed once per loop iteration (the adapter's
 * later()), with at most WBUF_MAX bytes pulled out of nghttp2 at a time, so DATA is only
 * taken from a pair's buffer when the socket can take it. */
#include "h2b/h2b.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"

#define WBUF_MAX (256 * 1024)
#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW (16 << 20)
#define MAX_HEADERS 256
#define PAIR_CACHE 256 /* a burst of pipelined calls (128 in flight) fits: malloc's thread cache holds 7 */

struct h2b_conn {
    void *sock; /* the adapter's socket handle */
    nghttp2_session *ng;
    int server, connected, dead, writing;
    evl_buf_t wbuf;
    evl_link_t flush_link; /* in g.flush (alive) or g.reap (dead) */
    evl_link_t pairs;      /* h2b_side_t.link of the streams on this connection */
    const h2b_server_cbs_t *cbs;
    char hostport[64];
    h2b_conn_t *next;       /* client registry */
    evl_link_t server_link; /* in g.servers */
    uint64_t born_ms, last_rx_ms; /* for h2b_server_sweep; born_ms also for h2b_client_sweep */
    int settings_seen;            /* the client's first SETTINGS arrived */
};

/* one bridge per thread: each gateway loop has its own connections to agents */
static __thread struct {
    const h2b_io_t *io;
    evl_link_t flush, frees, reap; /* end-of-iteration work */
    int later_asked;
    h2b_conn_t *clients;
    evl_link_t servers; /* server connections, for h2b_goaway_all */
    void (*on_goaway)(const char *hostport, const uint8_t *data, size_t len);
    int (*on_unsent)(h2b_pair_t *p);
    size_t live;
    h2b_pair_t *cache[PAIR_CACHE];
    size_t ncache;
} g;

static void conn_kill(h2b_conn_t *c, const char *why);
static void schedule_flush(h2b_conn_t *c);
static size_t server_header_cap(void);

/* ---- headers ---- */

static void *ar_alloc(h2b_arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if ((size_t)(a->end - a->cur) < n) {
        size_t sz = n + 16 > 4096 ? n + 16 : 4096;
        unsigned char *c = malloc(sz);
        if (c == NULL)
            return NULL;
        *(void **)c = a->chunks;
        a->chunks = c;
        a->cur = c + 16;
        a->end = c + sz;
    }
    void *p = a->cur;
    a->cur += n;
    return p;
}

static void ar_free(h2b_arena_t *a)
{
    while (a->chunks != NULL) {
        void *next = *(void **)a->chunks;
        free(a->chunks);
        a->chunks = next;
    }
}

int h2b_hdrs_add(h2b_hdrs_t *h, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl)
{
    if (h->n == MAX_HEADERS)
        return -1;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        nghttp2_nv *nv;
        if (h->ar != NULL) { /* the old array stays in the arena until the pair goes */
            if ((nv = ar_alloc(h->ar, cap * sizeof(*nv))) != NULL && h->n != 0)
                memcpy(nv, h->nv, h->n * sizeof(*nv));
        } else {
            nv = realloc(h->nv, cap * sizeof(*nv));
        }
        if (nv == NULL)
            return -1;
        h->nv = nv;
        h->cap = cap;
    }
    uint8_t *b = h->ar != NULL ? ar_alloc(h->ar, nl + vl + 2) : malloc(nl + vl + 2);
    if (b == NULL)
        return -1;
    memcpy(b, name, nl);
    b[nl] = 0;
    memcpy(b + nl + 1, value, vl);
    b[nl + 1 + vl] = 0;
    h->nv[h->n++] = (nghttp2_nv){b, b + nl + 1, nl, vl, NGHTTP2_NV_FLAG_NONE};
    return 0;
}

static void hdrs_clear(h2b_hdrs_t *h)
{
    if (h->ar == NULL)
        for (size_t i = 0; i < h->n; i++)
            free(h->nv[i].name);
    h->n = 0;
}

static void hdrs_free(h2b_hdrs_t *h)
{
    hdrs_clear(h);
    if (h->ar == NULL)
        free(h->nv);
    h->nv = NULL;
    h->cap = 0;
}

const nghttp2_nv *h2b_find(const h2b_hdrs_t *h, const char *name)
{
    size_t l = strlen(name);
    for (size_t i = 0; i < h->n; i++)
        if (h->nv[i].namelen == l && memcmp(h->nv[i].name, name, l) == 0)
            return &h->nv[i];
    return NULL;
}

static int status_of(const h2b_hdrs_t *h)
{
    const nghttp2_nv *v = h2b_find(h, "grpc-status");
    if (v == NULL || v->valuelen == 0 || v->valuelen > 3)
        return -1;
    int s = 0;
    for (size_t i = 0; i < v->valuelen; i++) {
        if (v->value[i] < '0' || v->value[i] > '9')
            return -1;
        s = s * 10 + (v->value[i] - '0');
    }
    return s;
}

/* Platform status: content-type application/grpc, grpc-status, grpc-message. Messages
 * are ours, printable ASCII; '%' and controls become '?' so no encoding is needed. */
static void hdrs_status(h2b_hdrs_t *h, int with_head, int st, const char *msg)
{
    hdrs_clear(h);
    if (with_head) {
        h2b_hdrs_add(h, (const uint8_t *)":status", 7, (const uint8_t *)"200", 3);
        h2b_hdrs_add(h, (const uint8_t *)"content-type", 12, (const uint8_t *)"application/grpc", 16);
    }
    char v[16], m[256];
    int n = snprintf(v, sizeof(v), "%d", st);
    h2b_hdrs_add(h, (const uint8_t *)"grpc-status", 11, (const uint8_t *)v, (size_t)n);
    size_t ml = 0;
    for (; msg != NULL && msg[ml] && ml < sizeof(m); ml++)
        m[ml] = msg[ml] < 0x20 || msg[ml] > 0x7e || msg[ml] == '%' ? '?' : msg[ml];
    if (ml)
        h2b_hdrs_add(h, (const uint8_t *)"grpc-message", 12, (const uint8_t *)m, ml);
}

/* ---- pairs ---- */

static void ask_later(void)
{
    if (!g.later_asked) {
        g.later_asked = 1;
        g.io->later();
    }
}

static void pair_free(h2b_pair_t *p)
{
    if (p->on_free != NULL)
        p->on_free(p);
    if (g.ncache < PAIR_CACHE && p->down.in.cap <= 4096 && p->up.in.cap <= 4096) { /* bounded: PAIR_CACHE small pairs */
        p->down.in.off = p->down.in.len = p->up.in.off = p->up.in.len = 0;
    } else {
        evl_buf_free(&p->down.in);
        evl_buf_free(&p->up.in);
    }
    hdrs_free(&p->req);
    hdrs_free(&p->resp);
    hdrs_free(&p->trl);
    ar_free(&p->arena);
    g.live--;
    if (g.ncache < PAIR_CACHE) {
        g.cache[g.ncache++] = p; /* reused by the next stream: no malloc per call */
    } else {
        evl_buf_free(&p->down.in);
        evl_buf_free(&p->up.in);
        free(p);
    }
}

/* 1 while someone wants the response: the server stream's client, or a local caller. */
static int down_attached(const h2b_pair_t *p)
{
    return p->local != NULL ? p->local_open : p->down.conn != NULL;
}

/* Frees p at the end of this loop iteration once neither side is attached: callers up
 * the stack may still hold it. */
static void maybe_free(h2b_pair_t *p)
{
    if (down_attached(p) || p->up.conn != NULL || evl_linked(&p->free_link))
        return;
    evl_list_insert(&g.frees, &p->free_link);
    ask_later();
}

static void detach(h2b_side_t *s)
{
    if (s->conn == NULL)
        return;
    evl_list_unlink(&s->link);
    if (s->id > 0 && s->conn->ng != NULL && !s->conn->dead)
        nghttp2_session_set_stream_user_data(s->conn->ng, s->id, NULL);
    s->conn = NULL;
    s->closed = 1;
}

static void resume(h2b_side_t *s)
{
    if (s->conn == NULL || s->conn->dead || !s->deferred)
        return;
    s->deferred = 0;
    nghttp2_session_resume_data(s->conn->ng, s->id);
    schedule_flush(s->conn);
}

static void reset_up(h2b_pair_t *p, uint32_t code)
{
    h2b_side_t *u = &p->up;
    if (u->conn == NULL)
        return;
    h2b_conn_t *c = u->conn;
    int32_t id = u->id;
    detach(u);
    if (!c->dead && id > 0) {
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, id, code);
        schedule_flush(c);
    }
}

static ssize_t read_down(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud);

/* Sends p->resp down: Trailers-Only when the up side already ended (nothing follows). */
static void submit_down(h2b_pair_t *p, const nghttp2_nv *nv, size_t n)
{
    h2b_side_t *d = &p->down;
    p->resp_sent = 1;
    int only = p->up.in_eos && p->up.in.len == 0 && p->trl.n == 0;
    nghttp2_data_provider prov = {.source.ptr = p, .read_callback = read_down};
    if (only) {
        p->final_status = status_of(&p->resp);
        p->down_done = 1;
    }
    if (nghttp2_submit_response(d->conn->ng, d->id, nv, n, only ? NULL : &prov) != 0) {
        nghttp2_submit_rst_stream(d->conn->ng, NGHTTP2_FLAG_NONE, d->id, NGHTTP2_INTERNAL_ERROR);
        p->down_done = 1;
    }
    schedule_flush(d->conn);
}

/* A local caller's response is complete: on_end, once. */
static void local_maybe_end(h2b_pair_t *p)
{
    if (!p->resp_sent || !p->up.in_eos || !p->trl_ready || p->down_done)
        return;
    p->down_done = 1;
    p->final_status = status_of(p->trl.n != 0 ? &p->trl : &p->resp);
    if (p->local_open)
        p->local->on_end(p);
}

static void send_response_down(h2b_pair_t *p)
{
    h2b_side_t *d = &p->down;
    if (p->resp_sent || (p->local == NULL && (d->conn == NULL || d->conn->dead)))
        return;
    const nghttp2_nv *st = h2b_find(&p->resp, ":status");
    p->http_status = st != NULL ? atoi((const char *)st->value) : 0;
    if (p->local != NULL) {
        p->resp_sent = 1;
        if (p->local_open)
            p->local->on_head(p);
        local_maybe_end(p);
        return;
    }
    submit_down(p, p->resp.nv, p->resp.n);
}

/* The up side ended its half (END_STREAM): what is buffered, then trailers, go down. */
static void up_ended(h2b_pair_t *p)
{
    p->up.in_eos = 1;
    p->trl_ready = 1;
    if (p->local != NULL)
        local_maybe_end(p);
    else
        resume(&p->down);
}

void h2b_pair_fail(h2b_pair_t *p, int grpc_status, const char *msg)
{
    p->failed = 1;
    /* the first status made for a call is the one it gets */
    reset_up(p, NGHTTP2_CANCEL);
    if (p->down.conn == NULL || p->down_done) {
        maybe_free(p);
        return;
    }
    /* what the function sent and the client has not taken yet is dropped: the status
     * is what matters now */
    evl_buf_consume(&p->up.in, p->up.in.len);
    p->up.in_eos = 1;
    if (!p->resp_sent) {
        hdrs_status(&p->resp, 1, grpc_status, msg);
        hdrs_clear(&p->trl);
        send_response_down(p);
    } else {
        hdrs_status(&p->trl, 0, grpc_status, msg);
        p->trl_ready = 1;
        resume(&p->down);
    }
    maybe_free(p);
}

void h2b_pair_http_error(h2b_pair_t *p, int status)
{
    p->failed = 1;
    reset_up(p, NGHTTP2_CANCEL);
    if (p->down.conn == NULL || p->down_done || p->resp_sent) {
        maybe_free(p);
        return;
    }
    char v[8];
    int n = snprintf(v, sizeof(v), "%d", status);
    hdrs_clear(&p->resp);
    h2b_hdrs_add(&p->resp, (const uint8_t *)":status", 7, (const uint8_t *)v, (size_t)n);
    h2b_hdrs_add(&p->resp, (const uint8_t *)"content-length", 14, (const uint8_t *)"0", 1);
    p->up.in_eos = 1;
    send_response_down(p);
    maybe_free(p);
}

/* ---- DATA providers: each consumes the other side's window as it copies ---- */

static size_t take(h2b_side_t *from, uint8_t *buf, size_t len)
{
    size_t n = from->in.len < len ? from->in.len : len;
    if (n == 0)
        return 0;
    memcpy(buf, evl_buf_data(&from->in), n);
    evl_buf_consume(&from->in, n);
    if (from->conn != NULL && !from->conn->dead) {
        nghttp2_session_consume_stream(from->conn->ng, from->id, n);
        schedule_flush(from->conn);
    }
    return n;
}

static ssize_t read_down(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    h2b_pair_t *p = src->ptr;
    size_t n = take(&p->up, buf, len);
    if (n != 0 && p->up.conn == NULL && p->on_drain != NULL)
        p->on_drain(p); /* a local response: its producer may go on */
    if (p->up.in.len == 0 && p->up.in_eos) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        p->down_done = 1;
        if (p->trl.n != 0) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            p->final_status = status_of(&p->trl);
            if (nghttp2_submit_trailer(ng, id, p->trl.nv, p->trl.n) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        p->down.deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static ssize_t read_up(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    h2b_pair_t *p = src->ptr;
    size_t n = take(&p->down, buf, len);
    if (p->down.in.len == 0 && p->down.in_eos) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n == 0) {
        p->up.deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

int h2b_pair_connect(h2b_pair_t *p, h2b_conn_t *c, const nghttp2_nv *nv, size_t n)
{
    if (c == NULL || c->dead || p->failed || !down_attached(p))
        return -1;
    nghttp2_data_provider prov = {.source.ptr = p, .read_callback = read_up};
    /* a request already known to be bodiless ends with its HEADERS, as the caller sent it */
    int bodiless = p->down.in_eos && p->down.in.len == 0 && !p->local_body;
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, bodiless ? NULL : &prov, p);
    if (id < 0)
        return -1;
    p->up.conn = c;
    p->up.id = id;
    p->up.closed = 0;
    evl_list_insert(&c->pairs, &p->up.link);
    schedule_flush(c);
    return 0;
}

/* ---- nghttp2 callbacks ---- */

static h2b_side_t *side_of(h2b_conn_t *c, h2b_pair_t *p)
{
    return c->server ? &p->down : &p->up;
}

/* A fresh pair (from the cache when one is there: no malloc per call). */
static h2b_pair_t *pair_alloc(void)
{
    h2b_pair_t *p = g.ncache != 0 ? g.cache[--g.ncache] : calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    evl_buf_t din = p->down.in, uin = p->up.in;      /* a cached pair keeps its buffers' storage */
    memset(p, 0, offsetof(h2b_pair_t, arena_first)); /* the arena's bytes need no zeroing */
    p->down.in = din;
    p->up.in = uin;
    p->arena.cur = p->arena_first;
    p->arena.end = p->arena_first + sizeof(p->arena_first);
    p->req.ar = p->resp.ar = p->trl.ar = &p->arena;
    p->down.pair = p->up.pair = p;
    p->final_status = -1;
    p->up.closed = 1;
    return p;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2b_conn_t *c = ud;
    if (!c->server || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2b_pair_t *p = pair_alloc();
    if (p == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    p->down.conn = c;
    p->down.id = f->hd.stream_id;
    evl_list_insert(&c->pairs, &p->down.link);
    g.live++;
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, p);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl, const uint8_t *value,
                     size_t vl, uint8_t flags, void *ud)
{
    h2b_conn_t *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    h2b_pair_t *p = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (p == NULL)
        return 0;
    h2b_hdrs_t *h;
    if (c->server && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        /* over the cap the rest is dropped, not stored: the application answers the error */
        p->req_bytes += nl + vl + 32;
        if (p->req_bytes > server_header_cap())
            p->req_too_large = 1;
        h = p->req_too_large ? NULL : &p->req;
    } else if (c->server)
        h = NULL; /* request trailers: not used by gRPC */
    else if (p->failed)
        h = NULL;
    else
        h = p->resp_got ? &p->trl : &p->resp;
    if (h != NULL && h2b_hdrs_add(h, name, nl, value, vl) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    return 0;
}

static void down_eos(h2b_pair_t *p)
{
    p->down.in_eos = 1;
    resume(&p->up);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2b_conn_t *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS)
        c->settings_seen = 1;
    if (f->hd.type == NGHTTP2_GOAWAY && !c->server && g.on_goaway != NULL)
        g.on_goaway(c->hostport, f->goaway.opaque_data, f->goaway.opaque_data_len);
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    h2b_pair_t *p = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (p == NULL)
        return 0;
    int eos = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (c->server) {
        if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            p->down.in_eos = eos;
            if (c->cbs != NULL && c->cbs->on_request != NULL)
                c->cbs->on_request(p, eos);
            return 0;
        }
        if (eos) {
            down_eos(p);
            if (c->cbs != NULL && c->cbs->on_end != NULL)
                c->cbs->on_end(p);
        }
        return 0;
    }
    if (p->failed)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (!p->resp_got) {
            const nghttp2_nv *st = h2b_find(&p->resp, ":status");
            if (st != NULL && st->valuelen == 3 && st->value[0] == '1') {
                hdrs_clear(&p->resp); /* interim response */
                return 0;
            }
            p->resp_got = 1;
            if (eos) {
                p->up.in_eos = 1;
                p->trl_ready = 1;
            }
            send_response_down(p);
            return 0;
        }
        up_ended(p);
        return 0;
    }
    if (eos)
        up_ended(p);
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    h2b_conn_t *c = ud;
    h2b_pair_t *p = nghttp2_session_get_stream_user_data(ng, id);
    /* the connection window comes back at once (a stream dying with bytes buffered
     * must not shrink it for good); the stream's only when the bytes move on */
    nghttp2_session_consume_connection(ng, len);
    h2b_side_t *s = p != NULL ? side_of(c, p) : NULL;
    if (p == NULL || p->failed || (c->server ? p->down_done && p->up.conn == NULL : !down_attached(p))) {
        nghttp2_session_consume_stream(ng, id, len);
        return 0;
    }
    if (!c->server && p->local != NULL) {
        p->local->on_data(p, data, len); /* the window comes back with h2b_pair_window */
        return 0;
    }
    if (c->server && c->cbs != NULL && c->cbs->on_data != NULL && c->cbs->on_data(p, data, len) != 0) {
        nghttp2_session_consume_stream(ng, id, len);
        return 0;
    }
    if (evl_buf_append(&s->in, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    resume(c->server ? &p->up : &p->down);
    return 0;
}

/* The up side broke before its response completed: a local caller is told, a server
 * stream's caller gets UNAVAILABLE. */
static void up_broken(h2b_pair_t *p, uint32_t code, const char *why)
{
    if (p->local != NULL) {
        p->failed = 1;
        if (p->local_open && !p->down_done) {
            p->down_done = 1;
            p->local->on_broken(p, code, why);
        }
        maybe_free(p);
        return;
    }
    if (p->down.conn == NULL || p->down_done) {
        maybe_free(p);
        return;
    }
    if (!p->resp_sent) {
        h2b_pair_fail(p, FAAS_GRPC_UNAVAILABLE, why);
        return;
    }
    /* keep what already arrived, then end with the status */
    p->failed = 1;
    hdrs_status(&p->trl, 0, FAAS_GRPC_UNAVAILABLE, why);
    p->up.in_eos = 1;
    p->trl_ready = 1;
    resume(&p->down);
    maybe_free(p);
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    h2b_conn_t *c = ud;
    h2b_pair_t *p = nghttp2_session_get_stream_user_data(ng, id);
    if (p == NULL)
        return 0;
    h2b_side_t *s = side_of(c, p);
    detach(s);
    if (c->server) {
        /* the caller is gone (or done): nothing upstream is needed any more */
        reset_up(p, NGHTTP2_CANCEL);
        maybe_free(p);
        return 0;
    }
    if (code != NGHTTP2_NO_ERROR || !p->up.in_eos)
        up_broken(p, code, code == NGHTTP2_REFUSED_STREAM ? "function refused the stream" : "function stream reset");
    else
        maybe_free(p);
    return 0;
}

/* ---- connections ---- */

static void conn_write(h2b_conn_t *c)
{
    c->writing = 1;
    int r = g.io->write(c->sock, evl_buf_data(&c->wbuf), c->wbuf.len);
    if (r == 0)
        return; /* h2b_io_written follows */
    c->writing = 0;
    if (r < 0) {
        conn_kill(c, "write failed");
        return;
    }
    evl_buf_consume(&c->wbuf, c->wbuf.len);
    /* more may be waiting in nghttp2 (we stopped at WBUF_MAX): next iteration */
    if (nghttp2_session_want_write(c->ng))
        schedule_flush(c);
}

static void conn_flush(h2b_conn_t *c)
{
    if (c->dead || !c->connected || c->writing)
        return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->ng, &data);
        if (n < 0) {
            conn_kill(c, nghttp2_strerror((int)n));
            return;
        }
        if (n == 0)
            break;
        if (evl_buf_append(&c->wbuf, data, (size_t)n) != 0) {
            conn_kill(c, "out of memory");
            return;
        }
        if (c->wbuf.len >= WBUF_MAX)
            break;
    }
    if (c->wbuf.len == 0) {
        if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng))
            conn_kill(c, "session ended");
        return;
    }
    conn_write(c);
}

void h2b_io_written(h2b_conn_t *c, int ok)
{
    c->writing = 0;
    if (c->dead)
        return;
    if (!ok) {
        conn_kill(c, "write failed");
        return;
    }
    evl_buf_consume(&c->wbuf, c->wbuf.len);
    conn_flush(c);
}

static void schedule_flush(h2b_conn_t *c)
{
    if (c->dead || evl_linked(&c->flush_link))
        return;
    evl_list_insert(&g.flush, &c->flush_link);
    ask_later();
}

static void conn_reap(h2b_conn_t *c)
{
    if (c->ng != NULL)
        nghttp2_session_del(c->ng);
    evl_buf_free(&c->wbuf);
    free(c);
}

void h2b_io_run(void)
{
    g.later_asked = 0;
    /* flushes first (they may end pairs and connections), then what they left behind */
    for (;;) {
        if (!evl_list_empty(&g.flush)) {
            h2b_conn_t *c = EVL_CONTAINER(g.flush.next, h2b_conn_t, flush_link);
            evl_list_unlink(&c->flush_link);
            conn_flush(c);
        } else if (!evl_list_empty(&g.frees)) {
            h2b_pair_t *p = EVL_CONTAINER(g.frees.next, h2b_pair_t, free_link);
            evl_list_unlink(&p->free_link);
            pair_free(p);
        } else if (!evl_list_empty(&g.reap)) {
            h2b_conn_t *c = EVL_CONTAINER(g.reap.next, h2b_conn_t, flush_link);
            evl_list_unlink(&c->flush_link);
            conn_reap(c);
        } else {
            break;
        }
    }
}

static void conn_kill(h2b_conn_t *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (evl_linked(&c->server_link))
        evl_list_unlink(&c->server_link);
    if (!c->server)
        FAAS_INFO("event=h2_upstream_closed endpoint=%s reason=\"%s\"", c->hostport, why);
    for (h2b_conn_t **pp = &g.clients; *pp != NULL; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    while (!evl_list_empty(&c->pairs)) {
        h2b_side_t *s = EVL_CONTAINER(c->pairs.next, h2b_side_t, link);
        h2b_pair_t *p = s->pair;
        detach(s);
        if (c->server) {
            reset_up(p, NGHTTP2_CANCEL);
            maybe_free(p);
        } else if (!c->connected && g.on_unsent != NULL && g.on_unsent(p)) {
            /* not a byte of it left (nothing is sent before the connect completes): the
             * application sends it elsewhere */
        } else if (!p->up.in_eos || p->up.in.len != 0 || !p->trl_ready) {
            /* a connection that never came up never carried the request */
            up_broken(p, c->connected ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_REFUSED_STREAM,
                      c->connected ? "connection to the function lost" : "cannot connect to the function");
        } else {
            maybe_free(p);
        }
    }
    if (c->sock != NULL) {
        g.io->close(c->sock);
        c->sock = NULL;
    }
    if (evl_linked(&c->flush_link))
        evl_list_unlink(&c->flush_link);
    /* freed after this iteration: callers up the stack may still hold c */
    evl_list_insert(&g.reap, &c->flush_link);
    ask_later();
}

void h2b_io_closed(h2b_conn_t *c)
{
    conn_kill(c, "connection closed by peer");
}

ssize_t h2b_io_recv(h2b_conn_t *c, const uint8_t *data, size_t len)
{
    if (c->dead)
        return -1;
    if (c->server)
        c->last_rx_ms = faas_now_ms();
    ssize_t n = nghttp2_session_mem_recv(c->ng, data, len);
    if (c->dead)
        return -1;
    if (n < 0) {
        conn_kill(c, nghttp2_strerror((int)n));
        return -1;
    }
    schedule_flush(c);
    return n;
}

static ssize_t send_unused(nghttp2_session *ng, const uint8_t *d, size_t l, int f, void *ud)
{
    return NGHTTP2_ERR_WOULDBLOCK;
}

static int server_internal;

void h2b_server_internal(void)
{
    server_internal = 1;
}

static size_t server_header_cap(void)
{
    return server_internal ? H2B_MAX_HEADER_LIST_INTERNAL : H2B_MAX_HEADER_LIST_BRIDGE;
}

void h2b_server_options(nghttp2_option *opt)
{
    nghttp2_option_set_max_settings(opt, H2B_MAX_SETTINGS);
    nghttp2_option_set_max_outbound_ack(opt, H2B_MAX_OUTBOUND_ACK);
    if (!server_internal)
        nghttp2_option_set_stream_reset_rate_limit(opt, H2B_STREAM_RESET_BURST, H2B_STREAM_RESET_RATE);
    nghttp2_option_set_max_continuations(opt, H2B_MAX_CONTINUATIONS);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, H2B_MAX_DEFLATE_TABLE);
}

static int conn_session(h2b_conn_t *c)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(cb, send_unused);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    /* windows are returned as bytes move on: a slow reader slows the writer down */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (c->server)
        h2b_server_options(opt);
    int rc =
        c->server ? nghttp2_session_server_new2(&c->ng, cb, c, opt) : nghttp2_session_client_new2(&c->ng, cb, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    /* servers (the gateway's gRPC port, agents) say their header list cap, clients ENABLE_PUSH 0 */
    nghttp2_settings_entry s[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000},
                                  {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
                                  {c->server ? NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE : NGHTTP2_SETTINGS_ENABLE_PUSH,
                                   c->server ? (uint32_t)server_header_cap() : 0}};
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, s, 3);
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    return 0;
}

static h2b_conn_t *conn_new(int server)
{
    h2b_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->server = server;
    evl_list_init(&c->pairs);
    if (conn_session(c) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

h2b_conn_t *h2b_io_accept(void *sock, const h2b_server_cbs_t *cbs)
{
    h2b_conn_t *c = conn_new(1);
    if (c == NULL)
        return NULL;
    c->cbs = cbs;
    c->connected = 1;
    c->born_ms = c->last_rx_ms = faas_now_ms();
    evl_list_insert(&g.servers, &c->server_link);
    c->sock = sock;
    g.io->read_start(sock, c);
    schedule_flush(c);
    return c;
}

void h2b_io_connected(h2b_conn_t *c, int ok)
{
    if (c->dead)
        return;
    if (!ok) {
        conn_kill(c, "connect failed");
        return;
    }
    c->connected = 1;
    g.io->read_start(c->sock, c);
    schedule_flush(c);
}

h2b_conn_t *h2b_client_get(const char *hostport)
{
    for (h2b_conn_t *c = g.clients; c != NULL; c = c->next)
        if (!c->dead && strcmp(c->hostport, hostport) == 0 && nghttp2_session_check_request_allowed(c->ng))
            return c;
    const char *err;
    struct sockaddr_storage ss;
    unsigned sl;
    if (faas_sockaddr_parse(hostport, "127.0.0.1", &ss, &sl, &err) != 0)
        return NULL;
    h2b_conn_t *c = conn_new(0);
    if (c == NULL)
        return NULL;
    snprintf(c->hostport, sizeof(c->hostport), "%s", hostport);
    c->born_ms = faas_now_ms();
    c->sock = g.io->connect(c, (struct sockaddr *)&ss, sl);
    if (c->sock == NULL) {
        nghttp2_session_del(c->ng);
        free(c);
        return NULL;
    }
    c->next = g.clients;
    g.clients = c;
    return c;
}

void h2b_init_io(const h2b_io_t *io)
{
    g.io = io;
    evl_list_init(&g.flush);
    evl_list_init(&g.frees);
    evl_list_init(&g.reap);
    evl_list_init(&g.servers);
}

size_t h2b_live_pairs(void)
{
    return g.live;
}

/* ---- local pairs ---- */

int h2b_pair_alive(const h2b_pair_t *p)
{
    return p->down.conn != NULL && !p->down.conn->dead && !p->down_done;
}

int h2b_pair_respond(h2b_pair_t *p, const nghttp2_nv *nv, size_t n, int eos)
{
    if (!h2b_pair_alive(p) || p->resp_sent)
        return -1;
    /* nghttp2 copies the headers: a local response keeps none (no grpc-status to read) */
    const nghttp2_nv *st = n != 0 && nv[0].namelen == 7 && memcmp(nv[0].name, ":status", 7) == 0 ? &nv[0] : NULL;
    p->http_status = 0;
    for (size_t i = 0; st != NULL && i < st->valuelen && i < 3; i++)
        p->http_status = p->http_status * 10 + (st->value[i] - '0');
    p->resp_got = 1;
    if (eos) {
        p->up.in_eos = 1;
        p->trl_ready = 1;
    }
    submit_down(p, nv, n);
    return 0;
}

int h2b_pair_send(h2b_pair_t *p, const void *data, size_t len, int eos)
{
    if (!h2b_pair_alive(p) || p->up.in_eos)
        return -1;
    if (evl_buf_append(&p->up.in, data, len) != 0)
        return -1;
    if (eos) {
        p->up.in_eos = 1;
        p->trl_ready = 1;
    }
    resume(&p->down);
    return 0;
}

void h2b_pair_reset(h2b_pair_t *p)
{
    p->failed = 1;
    if (h2b_pair_alive(p)) {
        nghttp2_submit_rst_stream(p->down.conn->ng, NGHTTP2_FLAG_NONE, p->down.id, NGHTTP2_INTERNAL_ERROR);
        p->down_done = 1;
        schedule_flush(p->down.conn);
    }
    maybe_free(p);
}

/* ---- local callers ---- */

h2b_pair_t *h2b_pair_new_local(const h2b_local_t *ops, void *owner)
{
    h2b_pair_t *p = pair_alloc();
    if (p == NULL)
        return NULL;
    p->local = ops;
    p->local_open = 1;
    p->owner = owner;
    p->down.closed = 1;
    g.live++;
    return p;
}

int h2b_pair_push(h2b_pair_t *p, const void *data, size_t len, int eos)
{
    if (p->down.in_eos || (len != 0 && evl_buf_append(&p->down.in, data, len) != 0))
        return -1;
    if (data != NULL)
        p->local_body = 1;
    if (eos)
        p->down.in_eos = 1;
    resume(&p->up);
    return 0;
}

void h2b_pair_window(h2b_pair_t *p, size_t len)
{
    h2b_side_t *u = &p->up;
    if (len == 0 || u->conn == NULL || u->conn->dead)
        return;
    nghttp2_session_consume_stream(u->conn->ng, u->id, len);
    schedule_flush(u->conn);
}

void h2b_pair_release(h2b_pair_t *p)
{
    if (!p->local_open)
        return;
    p->local_open = 0;
    /* a finished stream needs no reset; an unfinished one is of no use to anyone now */
    if (!p->up.in_eos)
        reset_up(p, NGHTTP2_CANCEL);
    maybe_free(p); /* an open stream still sending the request keeps p until it closes */
}

/* ---- going away ---- */

void h2b_goaway_all(const char *debug)
{
    for (evl_link_t *l = g.servers.next; l != &g.servers; l = l->next) {
        h2b_conn_t *c = EVL_CONTAINER(l, h2b_conn_t, server_link);
        if (c->dead)
            continue;
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                              NGHTTP2_NO_ERROR, (const uint8_t *)debug, strlen(debug));
        schedule_flush(c);
    }
}

size_t h2b_server_sweep(uint64_t preface_ms, uint64_t idle_ms)
{
    uint64_t now = faas_now_ms();
    size_t n = 0;
    for (evl_link_t *l = g.servers.next; l != &g.servers;) {
        h2b_conn_t *c = EVL_CONTAINER(l, h2b_conn_t, server_link);
        l = l->next; /* conn_kill unlinks c */
        if (c->dead)
            continue;
        if (!c->settings_seen && now - c->born_ms > preface_ms) {
            conn_kill(c, "no preface");
            n++;
        } else if (evl_list_empty(&c->pairs) && now - c->last_rx_ms > idle_ms) {
            conn_kill(c, "idle");
            n++;
        }
    }
    return n;
}

size_t h2b_client_sweep(uint64_t connect_ms)
{
    uint64_t now = faas_now_ms();
    size_t n = 0;
    for (h2b_conn_t *c = g.clients, *next; c != NULL; c = next) {
        next = c->next; /* conn_kill unlinks c */
        if (!c->dead && !c->connected && now - c->born_ms > connect_ms) {
            conn_kill(c, "connect timed out");
            n++;
        }
    }
    return n;
}

void h2b_on_goaway(void (*cb)(const char *hostport, const uint8_t *data, size_t len))
{
    g.on_goaway = cb;
}

void h2b_on_unsent(int (*cb)(h2b_pair_t *p))
{
    g.on_unsent = cb;
}
