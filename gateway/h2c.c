/* gateway/h2c.c - the HTTP port's HTTP/2 (h2c prior knowledge and h2c Upgrade) on
 * nghttp2 instead of h2o 2.2.5's own HTTP/2, which has none of the flood fixes since
 * 2019 (CVE-2019-9512/9515, CVE-2023-44487, the CONTINUATION floods).
 *
 * One nghttp2 server session per connection, on h2o's loop and h2o_socket_t. Every
 * complete request becomes an h2o_req_t of a small h2o_conn_t of ours and goes through
 * h2o_process_request: the routes, the task API, /healthz, /metrics, header forwarding
 * and error replies stay exactly those of HTTP/1.1 (server.c on_req). The response comes
 * back through our final h2o_ostream_t: do_send submits HEADERS and feeds a DATA
 * provider; h2o_proceed_response follows once nghttp2 took the chunk.
 *
 * Memory per connection is bounded: input is not read while our unsent output is over
 * ~256 KiB (a client that does not read stops being read), request header lists
 * are capped while decoding, bodies at the gateway's entity limit, and the limits of
 * h2b.h (shared with the gRPC port) plus the frame counters here end floods with GOAWAY.
 * Connections that say nothing (no preface / SETTINGS) or go idle are closed. */
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <h2o.h>
#include <h2o/http1.h>

#include "common/log.h"
#include "gateway/internal.h"
#include "h2b/h2b.h"

#define H2C_MAX_CONCURRENT_STREAMS 100 /* SETTINGS_MAX_CONCURRENT_STREAMS; more: REFUSED_STREAM */
#define H2C_MAX_HEADERS 100            /* fields per request, like h2o's HTTP/1 parser */
#define H2C_WBUF_MAX (64 * 1024)       /* bytes pulled out of nghttp2 per socket write */
/* A client that does not read stops being read: not while a write is in flight and
 * either it holds H2C_WBUF_MAX bytes or nghttp2 queued H2C_OUTQ_MAX_FRAMES frames behind
 * it (ACKs, RST_STREAMs, HEADERS: at most a few KiB each), ~256 KiB of output at most. */
#define H2C_OUTQ_MAX_FRAMES 64
/* SO_RCVBUF of HTTP/2 connections (the kernel doubles it): h2o reads all the kernel
 * holds at once, so this bounds what a flooding client sent before we stopped reading. */
#define H2C_SOCK_RCVBUF (128 * 1024)
/* Empty DATA (no END_STREAM) and empty HEADERS / CONTINUATION frames a connection may
 * send: each costs a parse and nothing else (CVE-2019-9518 "empty frames flood"). */
#define H2C_MAX_EMPTY_FRAMES 1000
/* DATA frames under H2C_TINY_DATA bytes per connection (a request body is buffered whole
 * before it runs, so dribbling it one byte a frame only costs us CPU). */
#define H2C_MAX_TINY_DATA 4096
#define H2C_TINY_DATA 16
/* Request bodies buffered per connection, in units of the largest one allowed: past it
 * the stream that would grow it is reset (ENHANCE_YOUR_CALM). */
#define H2C_CONN_BODY_FACTOR 2
#define H2C_PREFACE_TIMEOUT_MS 10000 /* accept -> preface + SETTINGS (and the sniffer) */
#define H2C_IDLE_TIMEOUT_MS 60000    /* no stream open and nothing received */
#define H2C_CLOSE_TIMEOUT_MS 2000    /* GOAWAY sent or output stuck: then the socket goes */
/* While streams are open or a write is out, a sweep each second bounds what no idle
 * clock covers: a request whose HEADERS came but not its END_STREAM (slowloris on one
 * stream), a response with bytes ready that the client's window never lets out, a
 * write the client never reads. */
#define H2C_SWEEP_MS 1000
#define H2C_REQUEST_TIMEOUT_MS 10000 /* HEADERS -> END_STREAM of a request, like HTTP/1's */
#define H2C_STALL_TIMEOUT_MS 60000   /* response bytes ready but none taken; a write pending */

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN 24

typedef struct h2c_conn h2c_conn_t;

typedef struct h2c_stream {
    h2o_req_t req; /* first: h2o gives our ostream the req, we need the stream */
    h2o_ostream_t ostr;
    h2c_conn_t *conn;
    int32_t id;
    h2o_linklist_t link;    /* conn->streams */
    h2o_linklist_t pending; /* conn->proceed: waits for h2o_proceed_response */
    h2o_buffer_t *body;
    size_t hdr_bytes, nhdr;
    int too_large; /* header list over the cap: answered 431 */
    int processed, resp_submitted, deferred, body_refused;
    int asked;                /* h2o was asked for the chunk after this one (once per chunk) */
    uint64_t begun_ms, out_ms; /* HEADERS came; the last response bytes went to nghttp2 */
    /* the chunk h2o gave us; valid until we call h2o_proceed_response */
    h2o_iovec_t *bufs; /* a copy of h2o's vector (malloc'd) */
    size_t bufcnt, bufcap, bufi, off;
    h2o_send_state_t state;
} h2c_stream_t;

struct h2c_conn {
    h2o_conn_t super;
    h2o_socket_t *sock;
    nghttp2_session *ng;
    h2o_linklist_t streams, proceed;
    h2o_timeout_entry_t tmo;
    h2o_timeout_entry_t later;
    h2o_timeout_entry_t sweep; /* H2C_SWEEP_MS while streams are open or a write is out */
    uint64_t write_since_ms;   /* the pending write began */
    char *wbuf;
    size_t wlen;
    int writing, reading, dead, settings_seen;
    const char *flood; /* reason we ended it, for the counter; NULL: none */
    size_t empty_frames, tiny_data;
    size_t body_bytes; /* request bodies buffered on this connection (all its streams) */
};

static __thread struct { /* each loop its own */
    h2o_context_t *ctx;
    h2o_accept_ctx_t *accept;
    h2o_timeout_t preface, idle, close, zero, sweep;
    int ready;
} g;

/* Connections the HTTP port closed for a limit, by reason (all listed, zeros included). */
static const char *const flood_reasons[] = {"settings",        "ack_flood",    "rapid_reset",     "continuation",
                                            "empty_frames",    "tiny_data",    "preface_timeout", "idle_timeout",
                                            "write_timeout",   "request_timeout", "response_stalled"};
#define N_REASONS (sizeof(flood_reasons) / sizeof(flood_reasons[0]))
static uint64_t flood_closed[N_REASONS]; /* atomic: every loop counts */

void gw_metrics_h2_flood(const char *reason)
{
    for (size_t i = 0; i < N_REASONS; i++)
        if (strcmp(flood_reasons[i], reason) == 0)
            __atomic_add_fetch(&flood_closed[i], 1, __ATOMIC_RELAXED);
}

void gw_h2c_metrics_write(FILE *out)
{
    fprintf(out, "# HELP faas_gw_h2_flood_closed_total HTTP/2 connections of the HTTP port closed by a limit.\n"
                 "# TYPE faas_gw_h2_flood_closed_total counter\n");
    for (size_t i = 0; i < N_REASONS; i++)
        fprintf(out, "faas_gw_h2_flood_closed_total{reason=\"%s\"} %" PRIu64 "\n", flood_reasons[i],
                __atomic_load_n(&flood_closed[i], __ATOMIC_RELAXED));
}

static void conn_flush(h2c_conn_t *c);
static void conn_close(h2c_conn_t *c);
static void conn_free(h2c_conn_t *c);
static void on_read(h2o_socket_t *sock, const char *err);

static void timers_init(h2o_context_t *ctx)
{
    if (g.ready)
        return;
    g.ctx = ctx;
    h2o_timeout_init(ctx->loop, &g.preface, H2C_PREFACE_TIMEOUT_MS);
    h2o_timeout_init(ctx->loop, &g.idle, H2C_IDLE_TIMEOUT_MS);
    h2o_timeout_init(ctx->loop, &g.close, H2C_CLOSE_TIMEOUT_MS);
    h2o_timeout_init(ctx->loop, &g.zero, 0);
    h2o_timeout_init(ctx->loop, &g.sweep, H2C_SWEEP_MS);
    g.ready = 1;
}

static void arm(h2c_conn_t *c, h2o_timeout_t *t)
{
    if (h2o_timeout_is_linked(&c->tmo))
        h2o_timeout_unlink(&c->tmo);
    if (t != NULL)
        h2o_timeout_link(g.ctx->loop, t, &c->tmo);
}

/* The idle clock runs only while no stream is open: a request waiting for its function
 * is bounded by the function's own deadline, not by ours. */
static void rearm_idle(h2c_conn_t *c)
{
    if (c->flood != NULL || c->dead)
        return;
    if (!c->settings_seen)
        return; /* the preface clock keeps running */
    arm(c, h2o_linklist_is_empty(&c->streams) ? &g.idle : NULL);
}

static void ask_later(h2c_conn_t *c)
{
    if (!h2o_timeout_is_linked(&c->later))
        h2o_timeout_link(g.ctx->loop, &g.zero, &c->later);
}

static void arm_sweep(h2c_conn_t *c)
{
    if (!c->dead && !h2o_timeout_is_linked(&c->sweep))
        h2o_timeout_link(g.ctx->loop, &g.sweep, &c->sweep);
}

static void conn_limit(h2c_conn_t *c, const char *reason, uint32_t code);

/* Streams that stopped moving are reset (counted by reason); a write the client has
 * not taken for H2C_STALL_TIMEOUT_MS ends the connection. */
static void on_sweep(h2o_timeout_entry_t *e)
{
    h2c_conn_t *c = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, sweep, e);
    uint64_t now = h2o_now(g.ctx->loop);
    if (c->writing && now - c->write_since_ms > H2C_STALL_TIMEOUT_MS) {
        conn_limit(c, "write_timeout", NGHTTP2_NO_ERROR);
        return;
    }
    for (h2o_linklist_t *l = c->streams.next; l != &c->streams; l = l->next) {
        h2c_stream_t *s = H2O_STRUCT_FROM_MEMBER(h2c_stream_t, link, l);
        const char *why = NULL;
        if (!s->processed && now - s->begun_ms > H2C_REQUEST_TIMEOUT_MS)
            why = "request_timeout";
        else if (s->bufi < s->bufcnt && now - s->out_ms > H2C_STALL_TIMEOUT_MS)
            why = "response_stalled";
        if (why == NULL || s->id == 0)
            continue;
        gw_metrics_h2_flood(why);
        FAAS_INFO("event=h2c_stream_reset reason=%s", why);
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL); /* freed on close */
        s->begun_ms = s->out_ms = now;                                              /* once */
    }
    if (!h2o_linklist_is_empty(&c->streams) || c->writing)
        arm_sweep(c);
    ask_later(c);
}

/* Ends the connection for a named limit: counted, GOAWAY (code), and a short deadline
 * after which the socket goes even if the client never reads the GOAWAY. */
static void conn_limit(h2c_conn_t *c, const char *reason, uint32_t code)
{
    if (c->flood != NULL || c->dead)
        return;
    c->flood = reason;
    gw_metrics_h2_flood(reason);
    FAAS_INFO("event=h2c_closed reason=%s", reason);
    nghttp2_session_terminate_session(c->ng, code);
    arm(c, &g.close);
    ask_later(c);
}

/* ---- connection pieces h2o asks for ---- */

static socklen_t get_sockname(h2o_conn_t *conn, struct sockaddr *sa)
{
    h2c_conn_t *c = (h2c_conn_t *)conn;
    return c->sock != NULL ? h2o_socket_getsockname(c->sock, sa) : 0;
}

static socklen_t get_peername(h2o_conn_t *conn, struct sockaddr *sa)
{
    h2c_conn_t *c = (h2c_conn_t *)conn;
    return c->sock != NULL ? h2o_socket_getpeername(c->sock, sa) : 0;
}

static h2o_socket_t *get_socket(h2o_conn_t *conn)
{
    return ((h2c_conn_t *)conn)->sock;
}

static const h2o_conn_callbacks_t conn_callbacks = {
    .get_sockname = get_sockname, .get_peername = get_peername, .get_socket = get_socket};

/* ---- the response: h2o's final output stream ---- */

/* h2o's next chunk is asked for from the loop, never inside nghttp2's callbacks. */
static void want_proceed(h2c_stream_t *s)
{
    if (!h2o_linklist_is_linked(&s->pending))
        h2o_linklist_insert(&s->conn->proceed, &s->pending);
    ask_later(s->conn);
}

static int status_has_body(h2c_stream_t *s)
{
    int st = s->req.res.status;
    return !(st == 204 || st == 304 || (st >= 100 && st < 200) ||
             h2o_memis(s->req.input.method.base, s->req.input.method.len, H2O_STRLIT("HEAD")));
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    h2c_stream_t *s = src->ptr;
    size_t n = 0;
    while (n < len && s->bufi < s->bufcnt) {
        h2o_iovec_t *b = &s->bufs[s->bufi];
        size_t k = b->len - s->off < len - n ? b->len - s->off : len - n;
        memcpy(buf + n, b->base + s->off, k);
        n += k;
        s->off += k;
        if (s->off == b->len) {
            s->bufi++;
            s->off = 0;
        }
    }
    if (n != 0)
        s->out_ms = h2o_now(g.ctx->loop);
    if (s->bufi < s->bufcnt)
        return (ssize_t)n;
    s->bufcnt = s->bufi = 0; /* used up: h2o may free it once it proceeds */
    if (s->state == H2O_SEND_STATE_FINAL) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (s->state == H2O_SEND_STATE_ERROR) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        return (ssize_t)n;
    }
    /* the chunk is out of our hands: ask for the next, once (nghttp2 calls again while
     * h2o has not answered, and a second proceed would consume what it sends next) */
    if (!s->asked) {
        s->asked = 1;
        want_proceed(s);
    }
    if (n != 0)
        return (ssize_t)n;
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
}

static int submit_head(h2c_stream_t *s)
{
    h2o_req_t *req = &s->req;
    size_t n = req->res.headers.size + 3;
    h2o_timestamp_t ts;
    h2o_get_timestamp(req->conn->ctx, &req->pool, &ts);
    nghttp2_nv *nv = h2o_mem_alloc_pool(&req->pool, n * sizeof(*nv));
    char *st = h2o_mem_alloc_pool(&req->pool, 4), *cl = h2o_mem_alloc_pool(&req->pool, 24);
    size_t k = 0;
    snprintf(st, 4, "%03d", req->res.status);
    nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NONE};
    nv[k++] =
        (nghttp2_nv){(uint8_t *)"date", (uint8_t *)ts.str->rfc1123, 4, H2O_TIMESTR_RFC1123_LEN, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < req->res.headers.size; i++) {
        h2o_header_t *h = &req->res.headers.entries[i];
        if (gw_header_is_hop(h->name->base, h->name->len, "", 0, "", 0))
            continue; /* connection-specific fields are malformed in HTTP/2 */
        nv[k++] = (nghttp2_nv){(uint8_t *)h->name->base, (uint8_t *)h->value.base, h->name->len, h->value.len,
                               NGHTTP2_NV_FLAG_NONE};
    }
    int st_body = !(req->res.status == 204 || req->res.status == 304 || req->res.status < 200);
    if (req->res.content_length != SIZE_MAX && st_body) { /* HEAD too: the length a GET would have */
        int len = snprintf(cl, 24, "%zu", req->res.content_length);
        nv[k++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)cl, 14, (size_t)len, NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = data_read};
    s->resp_submitted = 1;
    return nghttp2_submit_response(s->conn->ng, s->id, nv, k, status_has_body(s) ? &dp : NULL);
}

static void do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state)
{
    h2c_stream_t *s = (h2c_stream_t *)req;
    h2c_conn_t *c = s->conn;
    /* the vector is h2o's only for this call (the bytes stay until we proceed) */
    if (bufcnt > s->bufcap) {
        h2o_iovec_t *nb = realloc(s->bufs, bufcnt * sizeof(*nb));
        if (nb == NULL) {
            bufcnt = 0;
            state = H2O_SEND_STATE_ERROR;
        } else {
            s->bufs = nb;
            s->bufcap = bufcnt;
        }
    }
    if (bufcnt != 0)
        memcpy(s->bufs, bufs, bufcnt * sizeof(*bufs));
    s->bufcnt = bufcnt;
    s->bufi = s->off = 0;
    s->state = state;
    s->asked = 0;
    s->out_ms = h2o_now(g.ctx->loop); /* the stall clock starts with bytes to send */
    if (c->dead || s->id == 0)
        return;
    if (!s->resp_submitted) {
        if (submit_head(s) != 0)
            nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        if (!status_has_body(s) && state == H2O_SEND_STATE_IN_PROGRESS) {
            /* no body goes out (HEAD, 204, 304): let h2o run the generator to its end */
            s->bufcnt = 0;
            want_proceed(s);
        }
    } else if (!status_has_body(s)) {
        s->bufcnt = 0;
        if (state == H2O_SEND_STATE_IN_PROGRESS)
            want_proceed(s);
    } else if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(c->ng, s->id);
    }
    ask_later(c);
}

/* ---- requests ---- */

static h2c_stream_t *stream_new(h2c_conn_t *c, int32_t id)
{
    h2c_stream_t *s = malloc(sizeof(*s));
    if (s == NULL)
        return NULL;
    memset(&s->ostr, 0, sizeof(*s) - offsetof(h2c_stream_t, ostr));
    h2o_init_request(&s->req, &c->super, NULL);
    s->req.version = 0x200;
    s->req.input.scheme = &H2O_URL_SCHEME_HTTP;
    s->req._ostr_top = &s->ostr;
    s->ostr.do_send = do_send;
    s->conn = c;
    s->id = id;
    h2o_linklist_insert(&c->streams, &s->link);
    return s;
}

static void stream_free(h2c_stream_t *s)
{
    if (h2o_linklist_is_linked(&s->pending))
        h2o_linklist_unlink(&s->pending);
    h2o_linklist_unlink(&s->link);
    s->id = 0;
    h2o_dispose_request(&s->req);
    if (s->body != NULL) {
        s->conn->body_bytes -= s->body->size;
        h2o_buffer_dispose(&s->body);
    }
    free(s->bufs);
    free(s);
}

static void run_request(h2c_stream_t *s)
{
    if (s->processed)
        return;
    s->processed = 1;
    h2o_req_t *req = &s->req;
    if (req->input.authority.base == NULL) {
        ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_HOST, -1);
        req->input.authority = i >= 0 ? req->headers.entries[i].value : h2o_iovec_init(H2O_STRLIT("localhost"));
    }
    if (req->input.method.base == NULL || req->input.path.base == NULL) {
        /* only when the cap cut the pseudo-headers off: nghttp2 resets requests without them */
        req->input.method = h2o_iovec_init(H2O_STRLIT("GET"));
        req->input.path = h2o_iovec_init(H2O_STRLIT("/"));
    }
    if (s->too_large) {
        h2o_send_error_generic(req, 431, "Request Header Fields Too Large", "request header fields too large\n", 0);
        return;
    }
    if (s->body_refused) {
        h2o_send_error_generic(req, 413, "Payload Too Large", "request body too large\n", 0);
        return;
    }
    if (s->body != NULL)
        req->entity = h2o_iovec_init(s->body->bytes, s->body->size);
    h2o_process_request(req);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2c_conn_t *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2c_stream_t *s = stream_new(c, f->hd.stream_id);
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, s);
    s->begun_ms = h2o_now(g.ctx->loop);
    arm(c, NULL);
    arm_sweep(c);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl, const uint8_t *value,
                     size_t vl, uint8_t flags, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: not passed on (h2o's HTTP/1 drops them as well) */
    h2c_stream_t *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (s == NULL)
        return 0;
    /* past the cap nothing more is kept: the request is answered 431 */
    s->hdr_bytes += nl + vl + 32;
    if (s->hdr_bytes > H2B_MAX_HEADER_LIST || ++s->nhdr > H2C_MAX_HEADERS)
        s->too_large = 1;
    if (s->too_large)
        return 0;
    h2o_req_t *req = &s->req;
    h2o_iovec_t v = h2o_strdup(&req->pool, (const char *)value, vl);
    if (nl != 0 && name[0] == ':') {
        if (nl == 7 && memcmp(name, ":method", 7) == 0)
            req->input.method = v;
        else if (nl == 5 && memcmp(name, ":path", 5) == 0)
            req->input.path = v;
        else if (nl == 10 && memcmp(name, ":authority", 10) == 0)
            req->input.authority = v;
        return 0; /* :scheme: this port is plain http */
    }
    const h2o_token_t *t = h2o_lookup_token((const char *)name, nl);
    if (t != NULL)
        h2o_add_header(&req->pool, &req->headers, t, NULL, v.base, v.len);
    else {
        h2o_iovec_t n = h2o_strdup(&req->pool, (const char *)name, nl);
        h2o_add_header_by_str(&req->pool, &req->headers, n.base, n.len, 0, NULL, v.base, v.len);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    h2c_stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s == NULL || s->processed || s->body_refused)
        return 0;
    size_t have = s->body != NULL ? s->body->size : 0, limit = g.ctx->globalconf->max_request_entity_size;
    if (have + len > limit) {
        /* answered 413 at END_STREAM; what follows is dropped, not kept */
        s->body_refused = 1;
        return 0;
    }
    if (s->conn->body_bytes + len > H2C_CONN_BODY_FACTOR * limit) {
        /* 100 streams each sending a body just under the limit must not cost 100 bodies */
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_ENHANCE_YOUR_CALM);
        s->body_refused = 1;
        return 0;
    }
    s->conn->body_bytes += len;
    if (s->body == NULL)
        h2o_buffer_init(&s->body, &h2o_socket_buffer_prototype);
    h2o_iovec_t dst = h2o_buffer_reserve(&s->body, len);
    if (dst.base == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    memcpy(dst.base, data, len);
    s->body->size += len;
    return 0;
}

/* Frames that carry nothing (or a byte) are counted per connection. */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    h2c_conn_t *c = ud;
    int empty = hd->length == 0 && ((hd->type == NGHTTP2_DATA && !(hd->flags & NGHTTP2_FLAG_END_STREAM)) ||
                                    hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_CONTINUATION);
    if (empty && ++c->empty_frames > H2C_MAX_EMPTY_FRAMES)
        conn_limit(c, "empty_frames", NGHTTP2_ENHANCE_YOUR_CALM);
    if (hd->type == NGHTTP2_DATA && hd->length != 0 && hd->length < H2C_TINY_DATA &&
        !(hd->flags & NGHTTP2_FLAG_END_STREAM) && ++c->tiny_data > H2C_MAX_TINY_DATA)
        conn_limit(c, "tiny_data", NGHTTP2_ENHANCE_YOUR_CALM);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2c_conn_t *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && !c->settings_seen) {
        c->settings_seen = 1;
        rearm_idle(c);
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        h2c_stream_t *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (s != NULL)
            run_request(s);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    h2c_stream_t *s = nghttp2_session_get_stream_user_data(ng, id);
    if (s == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    stream_free(s);
    rearm_idle(ud);
    return 0;
}

/* nghttp2 ended the connection itself (a limit of h2b.h): name it for the counter. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2c_conn_t *c = ud;
    if (f->hd.type != NGHTTP2_GOAWAY || c->flood != NULL || f->goaway.error_code == NGHTTP2_NO_ERROR)
        return 0;
    const char *why = f->goaway.error_code == NGHTTP2_ENHANCE_YOUR_CALM ? "settings"
                      : f->goaway.error_code == NGHTTP2_INTERNAL_ERROR  ? "rapid_reset"
                                                                        : "protocol";
    if (strcmp(why, "protocol") != 0) {
        c->flood = why;
        gw_metrics_h2_flood(why);
    } else {
        c->flood = "protocol_error";
    }
    FAAS_INFO("event=h2c_closed reason=%s code=%u", c->flood, f->goaway.error_code);
    arm(c, &g.close);
    return 0;
}

static ssize_t send_unused(nghttp2_session *ng, const uint8_t *d, size_t l, int f, void *ud)
{
    return NGHTTP2_ERR_WOULDBLOCK;
}

static int session_new(h2c_conn_t *c)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(cb, send_unused);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    int rc = -1;
    if (nghttp2_option_new(&opt) == 0) {
        h2b_server_options(opt);
        rc = nghttp2_session_server_new2(&c->ng, cb, c, opt);
        nghttp2_option_del(opt);
    }
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry s[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2C_MAX_CONCURRENT_STREAMS},
                                  {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2B_MAX_HEADER_LIST},
                                  {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    return nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, s, 3) == 0 ? 0 : -1;
}

/* ---- connection I/O ---- */

/* 1 while our unsent output is over the bound: then the client is not read. */
static int output_full(h2c_conn_t *c)
{
    return c->writing &&
           (c->wlen >= H2C_WBUF_MAX || nghttp2_session_get_outbound_queue_size(c->ng) >= H2C_OUTQ_MAX_FRAMES);
}

static void read_gate(h2c_conn_t *c)
{
    int want = !c->dead && c->flood == NULL && !output_full(c) && nghttp2_session_want_read(c->ng);
    if (want && !c->reading) {
        c->reading = 1;
        h2o_socket_read_start(c->sock, on_read);
        if (c->sock->input->size != 0)
            ask_later(c); /* bytes left from when we stopped */
    } else if (!want && c->reading) {
        c->reading = 0;
        h2o_socket_read_stop(c->sock);
    }
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    h2c_conn_t *c = sock->data;
    c->writing = 0;
    c->wlen = 0;
    if (err != NULL) {
        conn_close(c);
        return;
    }
    if (c->flood == NULL)
        rearm_idle(c);
    conn_flush(c);
}

static void run_proceed(h2c_conn_t *c)
{
    while (!c->dead && !h2o_linklist_is_empty(&c->proceed)) {
        h2c_stream_t *s = H2O_STRUCT_FROM_MEMBER(h2c_stream_t, pending, c->proceed.next);
        h2o_linklist_unlink(&s->pending);
        h2o_proceed_response(&s->req);
    }
}

static void conn_flush(h2c_conn_t *c)
{
    if (c->dead)
        return;
    if (c->writing) {
        read_gate(c); /* output may have grown past the bound meanwhile: stop reading */
        return;
    }
    /* h2o's next chunks are asked for while nghttp2 takes the current ones: a response's
     * end (often an empty FINAL) then leaves in the same write as its data */
    do {
        run_proceed(c);
        if (c->dead)
            return;
        while (c->wlen < H2C_WBUF_MAX) {
            const uint8_t *d;
            ssize_t n = nghttp2_session_mem_send(c->ng, &d);
            if (n < 0) {
                conn_close(c);
                return;
            }
            if (n == 0)
                break;
            memcpy(c->wbuf + c->wlen, d, (size_t)n); /* wbuf has H2C_WBUF_MAX + one frame */
            c->wlen += (size_t)n;
        }
    } while (!h2o_linklist_is_empty(&c->proceed) && c->wlen < H2C_WBUF_MAX);
    if (c->wlen != 0) {
        c->writing = 1;
        c->write_since_ms = h2o_now(g.ctx->loop);
        arm_sweep(c);
        if (c->flood == NULL && c->settings_seen)
            arm(c, &g.idle); /* a client that stops reading is let go after the idle time */
        h2o_iovec_t v = h2o_iovec_init(c->wbuf, c->wlen);
        h2o_socket_write(c->sock, &v, 1, on_written);
        read_gate(c);
        return;
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) {
        conn_close(c);
        return;
    }
    read_gate(c);
}

/* Feeds what arrived to nghttp2, in slices, stopping as soon as output backs up. */
static void conn_recv(h2c_conn_t *c)
{
    h2o_buffer_t **in = &c->sock->input;
    while (!c->dead && c->flood == NULL && (*in)->size != 0 && !output_full(c)) {
        size_t len = (*in)->size < 16384 ? (*in)->size : 16384;
        ssize_t n = nghttp2_session_mem_recv(c->ng, (const uint8_t *)(*in)->bytes, len);
        if (n < 0) {
            const char *why = n == NGHTTP2_ERR_FLOODED                  ? "ack_flood"
                              : n == NGHTTP2_ERR_TOO_MANY_SETTINGS      ? "settings"
                              : n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ? "continuation"
                                                                        : NULL;
            if (why != NULL) {
                conn_limit(c, why, NGHTTP2_ENHANCE_YOUR_CALM);
            } else {
                c->flood = "protocol_error";
                nghttp2_session_terminate_session(c->ng, NGHTTP2_PROTOCOL_ERROR);
                arm(c, &g.close);
            }
            h2o_buffer_consume(in, (*in)->size);
            break;
        }
        h2o_buffer_consume(in, (size_t)n);
        conn_flush(c); /* may start a write: output_full then says whether to go on */
    }
    if (!c->dead)
        conn_flush(c);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    h2c_conn_t *c = sock->data;
    if (err != NULL) {
        conn_close(c);
        return;
    }
    if (c->settings_seen && c->flood == NULL && h2o_linklist_is_empty(&c->streams))
        rearm_idle(c);
    conn_recv(c);
}

static void on_later(h2o_timeout_entry_t *e)
{
    h2c_conn_t *c = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, later, e);
    if (c->reading && c->sock->input->size != 0)
        conn_recv(c);
    else
        conn_flush(c);
}

static void on_timeout(h2o_timeout_entry_t *e)
{
    h2c_conn_t *c = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, tmo, e);
    if (c->flood == NULL) {
        const char *why = c->writing ? "write_timeout" : c->settings_seen ? "idle_timeout" : "preface_timeout";
        gw_metrics_h2_flood(why);
        FAAS_INFO("event=h2c_closed reason=%s", why);
    }
    conn_close(c);
}

static void conn_free(h2c_conn_t *c)
{
    if (c->ng != NULL)
        nghttp2_session_del(c->ng);
    free(c->wbuf);
    free(c);
}

static void on_dead(h2o_timeout_entry_t *e)
{
    conn_free(H2O_STRUCT_FROM_MEMBER(h2c_conn_t, later, e));
}

static void conn_close(h2c_conn_t *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (h2o_timeout_is_linked(&c->tmo))
        h2o_timeout_unlink(&c->tmo);
    if (h2o_timeout_is_linked(&c->later))
        h2o_timeout_unlink(&c->later);
    if (h2o_timeout_is_linked(&c->sweep))
        h2o_timeout_unlink(&c->sweep);
    while (!h2o_linklist_is_empty(&c->streams))
        stream_free(H2O_STRUCT_FROM_MEMBER(h2c_stream_t, link, c->streams.next));
    if (c->sock != NULL)
        h2o_socket_close(c->sock);
    c->sock = NULL;
    /* freed once the loop is back at its timers: callers up the stack (conn_recv,
     * conn_flush) still look at c->dead after a close made deep inside them */
    c->later.cb = on_dead;
    h2o_timeout_link(g.ctx->loop, &g.zero, &c->later);
}

/* A connection without its socket yet (an Upgrade gets it once the 101 is out). */
static h2c_conn_t *conn_new(struct timeval connected_at)
{
    h2c_conn_t *c =
        (h2c_conn_t *)h2o_create_connection(sizeof(*c), g.accept->ctx, g.accept->hosts, connected_at, &conn_callbacks);
    memset((char *)c + sizeof(c->super), 0, sizeof(*c) - sizeof(c->super));
    h2o_linklist_init_anchor(&c->streams);
    h2o_linklist_init_anchor(&c->proceed);
    c->tmo.cb = on_timeout;
    c->later.cb = on_later;
    c->sweep.cb = on_sweep;
    c->wbuf = malloc(H2C_WBUF_MAX + 16384 + 64); /* a frame may pass the mark */
    if (c->wbuf == NULL || session_new(c) != 0) {
        conn_free(c);
        return NULL;
    }
    return c;
}

static void conn_attach(h2c_conn_t *c, h2o_socket_t *sock)
{
    /* many small frames (ACKs, a response's HEADERS then DATA) must not wait for Nagle */
    int one = 1, rcvbuf = H2C_SOCK_RCVBUF;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* h2o reads all the kernel holds into sock->input at once: a small kernel buffer
     * keeps what a flooding client has sent before we stop reading it small too */
    setsockopt(h2o_socket_get_fd(sock), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    c->sock = sock;
    sock->data = c;
    c->reading = 1;
    h2o_socket_read_start(sock, on_read);
}

/* ---- entry points ---- */

/* Prior knowledge: the sniffer saw the preface; it is still in sock->input. */
static void h2c_start(h2o_socket_t *sock)
{
    h2c_conn_t *c = conn_new(*h2o_get_timestamp(g.ctx, NULL, NULL));
    if (c == NULL) {
        h2o_socket_close(sock);
        return;
    }
    conn_attach(c, sock);
    arm(c, &g.preface);
    conn_flush(c); /* our SETTINGS go first: an early ACK from the client then matches them */
    conn_recv(c);
}

/* ---- the sniffer: HTTP/1.1 or the HTTP/2 preface ---- */

int gw_h2c_sniff(const char *data, size_t len)
{
    size_t n = len < PREFACE_LEN ? len : PREFACE_LEN;
    if (memcmp(data, PREFACE, n) != 0)
        return GW_SNIFF_HTTP1;
    return len >= PREFACE_LEN ? GW_SNIFF_H2 : GW_SNIFF_MORE;
}

static void sniff_done(h2o_socket_t *sock, int kind)
{
    h2o_timeout_entry_t *e = sock->data;
    h2o_timeout_unlink(e);
    free(e);
    sock->data = NULL;
    h2o_socket_read_stop(sock);
    if (kind == GW_SNIFF_H2)
        h2c_start(sock);
    else /* h2o's HTTP/1 parses what is already in sock->input first */
        h2o_http1_accept(g.accept, sock, *h2o_get_timestamp(g.ctx, NULL, NULL));
}

typedef struct {
    h2o_timeout_entry_t e; /* first */
    h2o_socket_t *sock;
} sniff_t;

static void on_sniff_timeout(h2o_timeout_entry_t *e)
{
    sniff_t *s = (sniff_t *)e;
    h2o_socket_t *sock = s->sock;
    gw_metrics_h2_flood("preface_timeout");
    free(s);
    sock->data = NULL;
    h2o_socket_close(sock);
}

static void on_sniff_read(h2o_socket_t *sock, const char *err)
{
    if (err != NULL) {
        sniff_t *s = sock->data;
        h2o_timeout_unlink(&s->e);
        free(s);
        h2o_socket_close(sock);
        return;
    }
    int kind = gw_h2c_sniff(sock->input->bytes, sock->input->size);
    if (kind != GW_SNIFF_MORE)
        sniff_done(sock, kind);
}

void gw_h2c_accept(h2o_accept_ctx_t *accept, h2o_socket_t *sock)
{
    g.accept = accept;
    timers_init(accept->ctx);
    sniff_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        h2o_socket_close(sock);
        return;
    }
    s->e.cb = on_sniff_timeout;
    s->sock = sock;
    sock->data = s;
    h2o_timeout_link(g.ctx->loop, &g.preface, &s->e);
    h2o_socket_read_start(sock, on_sniff_read);
}

/* ---- h2c Upgrade (RFC 7540 3.2) ---- */

typedef struct {
    h2c_conn_t *c;
    h2c_stream_t *s;          /* stream 1: a copy of the HTTP/1.1 request */
    uint8_t settings[64 * 6]; /* HTTP2-Settings, decoded */
    size_t settings_len;
} upgrade_t;

static void on_upgraded(void *ud, h2o_socket_t *sock, size_t reqsize)
{
    upgrade_t *u = ud;
    h2c_conn_t *c = u->c;
    h2c_stream_t *s = u->s;
    free(u);
    if (sock == NULL) {
        conn_close(c); /* and stream 1 with it */
        return;
    }
    h2o_buffer_consume(&sock->input, reqsize); /* the HTTP/1.1 request itself */
    conn_attach(c, sock);
    conn_flush(c);
    run_request(s);
    conn_recv(c);
}

int gw_h2c_upgrade(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_HTTP2_SETTINGS, -1);
    ssize_t ci = h2o_find_header(&req->headers, H2O_TOKEN_CONNECTION, -1);
    if (i < 0 || ci < 0 || req->entity.base != NULL || req->version >= 0x200 ||
        !h2o_contains_token(req->headers.entries[ci].value.base, req->headers.entries[ci].value.len,
                            H2O_STRLIT("http2-settings"), ','))
        return -1;
    h2o_iovec_t dec =
        h2o_decode_base64url(&req->pool, req->headers.entries[i].value.base, req->headers.entries[i].value.len);
    upgrade_t *u = calloc(1, sizeof(*u));
    if (dec.base == NULL || dec.len > sizeof(u->settings) || dec.len % 6 != 0 || u == NULL) {
        free(u);
        return -1;
    }
    memcpy(u->settings, dec.base, dec.len);
    u->settings_len = dec.len;
    u->c = conn_new(req->conn->connected_at);
    if (u->c == NULL) {
        free(u);
        return -1;
    }
    int head = h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
    if (nghttp2_session_upgrade2(u->c->ng, u->settings, u->settings_len, head, NULL) != 0) {
        conn_free(u->c);
        free(u);
        return -1;
    }
    u->c->settings_seen = 1; /* HTTP2-Settings was the client's first SETTINGS */
    u->s = stream_new(u->c, 1);
    h2o_dispose_request(&u->s->req);
    h2o_init_request(&u->s->req, &u->c->super, req); /* headers and all, copied */
    u->s->req.version = 0x200;
    u->s->req._ostr_top = &u->s->ostr;
    nghttp2_session_set_stream_user_data(u->c->ng, 1, u->s);
    /* the socket stays h2o's HTTP/1 connection's until the 101 is written */
    req->res.status = 101;
    req->res.reason = "Switching Protocols";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("h2c"));
    h2o_iovec_t none = {NULL, 0};
    h2o_http1_upgrade(req, &none, 0, on_upgraded, u);
    return 0;
}
