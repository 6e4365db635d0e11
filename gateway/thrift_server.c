/* gateway/thrift_server.c - the gateway's Thrift port: framed, THeader and Kitex
 * TTHeader clients on the gateway's event loop. Every request frame becomes one
 * dispatcher call (the same cold-start queue, selection and h2c upstream as HTTP
 * and gRPC): POST /_faas/thrift to the agent with faas-protocol thrift, the unframed
 * message as the body, framing metadata as faas-thrift-* headers. The reply (or the
 * platform's error) comes back through the call's sink and is re-framed for the
 * client.
 *
 * Replies go back in request order per connection (several calls in flight)
 * unless the client set the THeader out-of-order flag.
 *
 * Slow and partial clients (gateway/README.md): one timer per connection, in one of
 * three lists: idle (nothing buffered, no call in flight), header (a frame started,
 * its head not complete) or body (the head is complete: the body must grow by
 * body_min_bytes per window). A frame's head is read before its body is buffered, so
 * a frame over the limit is refused with its name known; bytes of unfinished frames
 * across all connections are capped, the largest holder is closed past the cap. */
#include "gateway/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "dispatcher/dispatcher.h"
#include "thrift/thrift.h"

#define MAX_INFLIGHT_PER_CONN 256 /* pipelined calls read ahead before reading stops */
#define MAX_REPLY (16u << 20)
#define MAX_UNSENT (1u << 20) /* replies waiting for a slow client: reading pauses past this */
#define KEEP_INPUT (64u << 10) /* an emptied input buffer larger than this is given back */
#define CALL_INLINE 128 /* a request frame, reply body or reply up to this stays in the call */

/* Why the gateway closed a connection (faas_gw_thrift_closed_total{reason}). */
enum { CLOSE_IDLE, CLOSE_HEADER_TIMEOUT, CLOSE_BODY_TIMEOUT, CLOSE_TOO_LARGE, CLOSE_MEM_CAP, CLOSE_NREASONS };
static const char *const close_reason[CLOSE_NREASONS] = {"idle", "header_timeout", "body_timeout", "too_large",
                                                         "mem_cap"};

/* Which list a connection's timer is in. */
enum { T_NONE, T_IDLE, T_HEADER, T_BODY };

typedef struct tconn {
    h2o_socket_t *sock;
    /* tells the agent which calls share a client connection (faas-thrift-conn): only
     * those it pipelines on one connection to the server, as the client itself did */
    char cid[17];
    struct sockaddr_storage peer;
    socklen_t peerlen;
    thrift_framing_t framing; /* fixed by the first frame */
    h2o_linklist_t calls;     /* tcall_t, in request order */
    uint32_t ncalls;
    h2o_buffer_t *out, *wbuf; /* pending replies, bytes being written */
    int writing, reading, closing, dead;
    /* THeader clients send info headers with a connection's first message only: the
     * function the last routing key named serves the messages that name none */
    char bound[64];
    size_t boundlen;
    h2o_linklist_t all; /* ts.conns: the memory cap looks for the largest holder */
    h2o_timeout_entry_t timer;
    int tstate;           /* T_*: the list timer is in */
    int head_ok;          /* the head of the frame at the input's start was read and accepted */
    size_t held;          /* bytes of an unfinished frame counted in tstats.held */
    size_t seen;          /* input bytes already counted in rx */
    uint64_t rx, rx_mark; /* bytes received; rx when the body window started */
    h2o_timeout_entry_t free_entry;  /* a closed connection is freed after the callback that closed it */
    h2o_timeout_entry_t flush_entry; /* replies of one loop pass go out in one write (conn_flush_later) */
} tconn_t;

typedef struct tcall {
    h2o_linklist_t link;
    tconn_t *conn; /* NULL once the client left */
    disp_call_t *call;
    int status;           /* the function's response status */
    const nghttp2_nv *rh; /* its headers (owned by the call, alive until it is closed) */
    size_t nrh;
    h2o_timeout_entry_t done_entry;
    uint8_t *frame; /* copy of the request frame; f points into it */
    thrift_frame_t f;
    uint8_t *body; /* reply payload from the agent, grown as it comes (in body_inl while it fits) */
    size_t blen, bcap;
    char fn[64];
    size_t fnlen;
    uint64_t start_us;
    uint8_t *reply; /* encoded reply frame (NULL = none, e.g. oneway) */
    size_t reply_len;
    int code; /* for the metric */
    int done, oneway, ooo, fatal, too_big;
    disp_resolve_t *resolving; /* its function missed the table: discovery is asked */
    int resolved;              /* ... and has answered */
    /* small calls need no allocation beyond the (cached) call: a burst of pipelined calls
     * outruns malloc's per-thread cache, and each miss costs more than the copy */
    uint8_t frame_inl[CALL_INLINE], body_inl[CALL_INLINE], reply_inl[CALL_INLINE];
} tcall_t;

/* Each loop's own (a thread-local: gw_thrift_limits runs on every loop thread); the
 * partial-bytes budget and the close counters are the process's (tstats). */
static __thread struct {
    h2o_context_t *ctx;
    h2o_loop_t *loop;
    const char *default_fn;
    h2o_socket_t *listener; /* reachable for LeakSanitizer: otherwise only epoll holds it */
    /* limits (gw_thrift_limits) */
    h2o_timeout_t idle_to, header_to, body_to;
    uint32_t idle_ms, header_ms, body_ms, body_min, max_frame, max_header;
    uint64_t max_partial; /* this loop's share of --thrift-max-partial-bytes */
    uint64_t held;        /* bytes of unfinished frames on this loop's connections */
    h2o_linklist_t conns;
} ts = {.idle_ms = 60000,
        .header_ms = 10000,
        .body_ms = 10000,
        .body_min = 4096,
        .max_frame = THRIFT_DEFAULT_MAX_FRAME,
        .max_header = 16384,
        .max_partial = 64u << 20};

static struct {
    uint64_t held;                   /* atomic: bytes of unfinished frames, all loops */
    uint64_t closed[CLOSE_NREASONS]; /* atomic: connections the gateway closed, by reason */
} tstats;
#define TSTAT_ADD(field, n) __atomic_add_fetch(&tstats.field, (n), __ATOMIC_RELAXED)

static void conn_close(tconn_t *c);
static void conn_flush(tconn_t *c);
static void conn_read_more(tconn_t *c);
static void conn_arm(tconn_t *c);
static void conn_flush_later(tconn_t *c);

/* Routing key -> function: a declared service, else a function of that name; a
 * connection keeps the function its last routing key named (THeader clients send info
 * headers once per connection); no key yet: the port's default function. 0 with *fn
 * set, or -1 with *why. */
static int route(tconn_t *c, const thrift_frame_t *f, const char **fn, size_t *fnlen, const char **why)
{
    thrift_bytes_t key;
    if (thrift_routing_key(f, &key) == 0) {
        if ((*fn = disp_route(DISP_PROTO_THRIFT, (const char *)key.ptr, key.len, fnlen)) == NULL) {
            *why = "unknown service";
            return -1;
        }
        c->boundlen = *fnlen < sizeof(c->bound) ? *fnlen : sizeof(c->bound) - 1;
        memcpy(c->bound, *fn, c->boundlen);
        return 0;
    }
    if (c->boundlen != 0) {
        *fn = c->bound;
        *fnlen = c->boundlen;
        return 0;
    }
    if (ts.default_fn != NULL && ts.default_fn[0] != '\0') {
        *fn = ts.default_fn;
        *fnlen = strlen(ts.default_fn);
        return 0;
    }
    *why = "no service named and the port has no default function";
    return -1;
}

/* ---- info headers <-> faas-thrift-* h2 headers ---------------------------------- */

/* ---- calls -------------------------------------------------------------------- */

/* A call is ~2 KiB (the frame's header views), past malloc's per-thread cache: freed
 * calls are kept for the next ones of this loop thread (bounded), as the dispatcher
 * keeps its own. */
#define CALL_CACHE 256 /* 128 calls in flight (8 clients pipelining 16) reuse theirs */
static __thread tcall_t *call_cache[CALL_CACHE];
static __thread size_t ncall_cache;

static tcall_t *call_get(void)
{
    if (ncall_cache == 0)
        return calloc(1, sizeof(tcall_t));
    tcall_t *c = call_cache[--ncall_cache];
    memset(c, 0, sizeof(*c));
    return c;
}

/* n bytes for one of c's buffers: its inline one when n fits, else malloc. */
static uint8_t *call_buf(uint8_t *inl, size_t n)
{
    return n <= CALL_INLINE ? inl : malloc(n);
}

static void call_buf_free(tcall_t *c, uint8_t *b, uint8_t *inl)
{
    (void)c;
    if (b != inl)
        free(b);
}

static void call_put(tcall_t *c)
{
    if (ncall_cache < CALL_CACHE)
        call_cache[ncall_cache++] = c;
    else
        free(c);
}

static void call_free(tcall_t *c)
{
    disp_resolve_cancel(c->resolving);
    if (h2o_timeout_is_linked(&c->done_entry))
        h2o_timeout_unlink(&c->done_entry);
    if (c->call != NULL)
        disp_call_close(c->call); /* cancels it upstream if it is still running */
    call_buf_free(c, c->body, c->body_inl);
    call_buf_free(c, c->reply, c->reply_inl);
    call_buf_free(c, c->frame, c->frame_inl);
    call_put(c);
}

/* Sets the reply to a TApplicationException (none for oneway calls). */
static void call_set_error(tcall_t *c, int type, const char *msg)
{
    call_buf_free(c, c->reply, c->reply_inl);
    c->reply = NULL;
    c->reply_len = 0;
    if (c->oneway)
        return;
    size_t n = thrift_encode_error(&c->f, type, msg, NULL, 0);
    if (n == (size_t)-1 || (c->reply = call_buf(c->reply_inl, n)) == NULL)
        return;
    c->reply_len = thrift_encode_error(&c->f, type, msg, c->reply, n);
}

/* Runs on the loop after a call ended (never inside the dispatcher's callbacks). */
static void on_call_done(h2o_timeout_entry_t *e)
{
    tcall_t *c = H2O_STRUCT_FROM_MEMBER(tcall_t, done_entry, e);
    if (c->call != NULL) {
        disp_call_close(c->call);
        c->call = NULL;
    }
    if (c->fnlen != 0)
        gw_metrics_record(c->fn, c->fnlen, c->conn != NULL ? c->code : 499, 2, faas_now_us() - c->start_us);
    tconn_t *conn = c->conn;
    if (conn == NULL) {
        call_free(c);
        return;
    }
    conn_flush_later(conn);
}

static void call_finish(tcall_t *c)
{
    c->done = 1;
    h2o_timeout_link(ts.loop, &ts.ctx->zero_timeout, &c->done_entry);
}

/* The function's info headers (faas-thrift-*) back into Thrift headers; key bytes in kb. */
static size_t reply_headers(const tcall_t *c, thrift_header_t *hs, uint8_t (*kb)[256])
{
    size_t nh = 0;
    for (size_t i = 0; i < c->nrh && nh < THRIFT_MAX_HEADERS; i++) {
        const nghttp2_nv *e = &c->rh[i];
        if (e->namelen <= 14 || memcmp(e->name, "faas-thrift-", 12) != 0 || e->namelen / 2 + 1 > sizeof(kb[0]))
            continue;
        if (thrift_meta_parse((const char *)e->name, e->namelen, (const char *)e->value, e->valuelen, kb[nh],
                              sizeof(kb[0]), &hs[nh]) == 0)
            nh++;
    }
    return nh;
}

/* Builds the client's reply from what the function answered. */
static void call_complete(tcall_t *c)
{
    int st = c->status;
    c->code = st;
    if (st != 200 && st != 204) {
        char msg[300];
        size_t bl = c->blen < 200 ? c->blen : 200;
        while (bl > 0 && (c->body[bl - 1] == '\n' || c->body[bl - 1] == '\r'))
            bl--;
        if (bl == 0)
            snprintf(msg, sizeof(msg), "function %.*s: function failed", (int)c->fnlen, c->fn);
        else
            snprintf(msg, sizeof(msg), "%.*s", (int)bl, (const char *)c->body);
        FAAS_INFO("event=thrift_error fn=%.*s method=%.*s seqid=%" PRId32 " status=%d msg=\"%s\"", (int)c->fnlen, c->fn,
                  (int)c->f.name.len, c->f.name.ptr, c->f.seqid, st, msg);
        call_set_error(c, faas_tapp_for_http(st), msg);
        return;
    }
    if (c->oneway || st == 204)
        return;
    thrift_header_t hs[THRIFT_MAX_HEADERS];
    uint8_t kb[THRIFT_MAX_HEADERS][256];
    size_t nh = reply_headers(c, hs, kb);
    const uint8_t *pl = c->body != NULL ? c->body : (const uint8_t *)"";
    size_t n = thrift_encode_reply(&c->f, hs, nh, pl, c->blen, NULL, 0);
    if ((c->reply = call_buf(c->reply_inl, n)) == NULL) {
        call_set_error(c, FAAS_TAPP_INTERNAL_ERROR, "gateway out of memory");
        return;
    }
    c->reply_len = thrift_encode_reply(&c->f, hs, nh, pl, c->blen, c->reply, n);
}

/* ---- the dispatcher's answers ---- */

static void sink_head(disp_call_t *dc, int status, const nghttp2_nv *h, size_t n)
{
    tcall_t *c = disp_call_owner(dc);
    c->status = status;
    c->rh = h;
    c->nrh = n;
}

static void sink_data(disp_call_t *dc, const uint8_t *d, size_t len)
{
    tcall_t *c = disp_call_owner(dc);
    disp_call_consumed(dc, len); /* the reply is collected whole (bounded by MAX_REPLY) */
    if (c->too_big)
        return;
    const char *why = c->blen + len > MAX_REPLY ? "reply larger than the gateway's limit" : NULL;
    if (why == NULL && c->blen + len > c->bcap) {
        size_t cap = c->bcap * 2 > c->blen + len ? c->bcap * 2 : c->blen + len;
        uint8_t *nb = c->body == NULL ? call_buf(c->body_inl, cap)
                      : c->body == c->body_inl ? malloc(cap) : realloc(c->body, cap);
        if (nb == NULL) {
            why = "gateway out of memory";
        } else {
            if (c->body == c->body_inl)
                memcpy(nb, c->body_inl, c->blen);
            c->body = nb;
            c->bcap = nb == c->body_inl ? CALL_INLINE : cap;
        }
    }
    if (why != NULL) {
        c->too_big = 1;
        c->code = 502;
        call_set_error(c, FAAS_TAPP_INTERNAL_ERROR, why);
        call_finish(c);
        return;
    }
    memcpy(c->body + c->blen, d, len);
    c->blen += len;
}

static void sink_end(disp_call_t *dc, const nghttp2_nv *trl, size_t n)
{
    tcall_t *c = disp_call_owner(dc);
    if (c->too_big)
        return;
    call_complete(c);
    call_finish(c);
}

static void sink_error(disp_call_t *dc, faas_err_t kind, const char *msg, int started)
{
    tcall_t *c = disp_call_owner(dc);
    if (c->too_big)
        return;
    char m[300];
    snprintf(m, sizeof(m), "function %.*s: %s", (int)c->fnlen, c->fn, started ? "function response broken" : msg);
    c->code = faas_err_http(kind);
    call_set_error(c, faas_err_tapp(kind), m);
    call_finish(c);
}

static const disp_sink_t thrift_sink = {.head = sink_head, .data = sink_data, .end = sink_end, .error = sink_error};

/* The request the agent sees: POST /_faas/thrift, the message as the body, framing
 * metadata and info headers as faas-thrift-* headers. */
static int call_headers(tcall_t *c, disp_call_t *dc)
{
    int rc = disp_call_header(dc, ":method", 7, "POST", 4) | disp_call_header(dc, ":scheme", 7, "http", 4) |
             disp_call_header(dc, ":authority", 10, c->fn, c->fnlen) |
             disp_call_header(dc, ":path", 5, "/_faas/thrift", 13) |
             disp_call_header(dc, "content-type", 12, "application/x-thrift", 20) |
             disp_call_header(dc, "faas-thrift-proto", 17, c->f.proto == THRIFT_COMPACT ? "compact" : "binary",
                              c->f.proto == THRIFT_COMPACT ? 7 : 6);
    if (c->oneway)
        rc |= disp_call_header(dc, "faas-thrift-oneway", 18, "1", 1);
    else if (c->conn != NULL)
        rc |= disp_call_header(dc, "faas-thrift-conn", 16, c->conn->cid, 16);
    for (size_t i = 0; i < c->f.n_headers; i++) {
        const thrift_header_t *th = &c->f.headers[i];
        /* the request id is the platform's: a client cannot choose it */
        if (!th->is_int && th->key.len == 15 && memcmp(th->key.ptr, "faas-request-id", 15) == 0)
            continue;
        char name[416];
        size_t nl = thrift_meta_name(th, name, sizeof(name));
        if (nl != 0)
            rc |= disp_call_header(dc, name, nl, (const char *)th->value.ptr, th->value.len);
    }
    return rc;
}

/* Hands the call to the dispatcher. */
static void call_forward(tcall_t *c)
{
    disp_call_t *dc = disp_call_new(DISP_PROTO_THRIFT, &thrift_sink, c);
    if (dc == NULL) {
        c->code = 503;
        call_set_error(c, FAAS_TAPP_INTERNAL_ERROR, "gateway out of memory");
        call_finish(c);
        return;
    }
    c->call = dc;
    if (call_headers(c, dc) != 0 || disp_call_body(dc, c->f.payload.ptr, c->f.payload.len, 1) != 0) {
        c->code = 503;
        call_set_error(c, FAAS_TAPP_INTERNAL_ERROR, "gateway out of memory");
        call_finish(c);
        return;
    }
    char rid[17];
    faas_request_id(rid);
    disp_call_start(dc, c->fn, c->fnlen, rid, 0);
}

/* A call answered by the gateway itself (unknown service, protocol error). */
static void call_answer_now(tcall_t *c, int type, const char *msg, int code)
{
    c->code = code;
    call_set_error(c, type, msg);
    call_finish(c);
}

static tcall_t *call_new(tconn_t *conn, const uint8_t *frame, size_t len)
{
    tcall_t *c = call_get();
    if (c == NULL)
        return NULL;
    if ((c->frame = call_buf(c->frame_inl, len)) == NULL) {
        call_put(c);
        return NULL;
    }
    memcpy(c->frame, frame, len);
    /* re-parse over our copy so every view points into it (same bytes: cannot fail) */
    const char *err;
    if (thrift_parse(c->frame, len, ts.max_frame, &c->f, NULL, &err) <= 0) {
        call_buf_free(c, c->frame, c->frame_inl);
        call_put(c);
        return NULL;
    }
    c->conn = conn;
    c->start_us = faas_now_us();
    c->done_entry.cb = on_call_done;
    c->oneway = c->f.mtype == THRIFT_ONEWAY;
    c->ooo = c->f.framing == THRIFT_THEADER && (c->f.flags & THRIFT_THEADER_FLAG_OUT_OF_ORDER) != 0;
    h2o_linklist_insert(&conn->calls, &c->link);
    conn->ncalls++;
    return c;
}

/* ---- connections ---------------------------------------------------------------- */

static const char *peer_ip(const tconn_t *c, char ip[INET6_ADDRSTRLEN])
{
    ip[0] = '\0';
    if (c->peer.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&c->peer)->sin_addr, ip, INET6_ADDRSTRLEN);
    else if (c->peer.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c->peer)->sin6_addr, ip, INET6_ADDRSTRLEN);
    return ip;
}

/* Moves c's timer to list (NULL: none) unless it is there already; relink restarts it. */
static void arm(tconn_t *c, int state, h2o_timeout_t *list, int relink)
{
    if (c->tstate == state && !relink)
        return;
    if (h2o_timeout_is_linked(&c->timer))
        h2o_timeout_unlink(&c->timer);
    c->tstate = state;
    if (list != NULL)
        h2o_timeout_link(ts.loop, list, &c->timer);
}

/* Picks the deadline that applies now. A frame's deadlines run only while the gateway
 * reads (a pause for calls in flight or unsent replies is not the client's delay);
 * a connection with a call in flight has none (the function's own timeout bounds it);
 * otherwise it is idle, counted from this event. */
static void conn_arm(tconn_t *c)
{
    if (c->dead)
        return;
    if (c->sock->input->size != 0 && !c->closing) {
        if (!c->reading)
            arm(c, T_NONE, NULL, 0);
        else if (!c->head_ok)
            arm(c, T_HEADER, &ts.header_to, 0);
        else if (c->tstate != T_BODY) {
            c->rx_mark = c->rx;
            arm(c, T_BODY, &ts.body_to, 0);
        }
        return;
    }
    if (c->ncalls != 0 && !c->closing) {
        arm(c, T_NONE, NULL, 0);
        return;
    }
    arm(c, T_IDLE, &ts.idle_to, 1);
}

static void on_timer(h2o_timeout_entry_t *e)
{
    tconn_t *c = H2O_STRUCT_FROM_MEMBER(tconn_t, timer, e);
    int st = c->tstate;
    c->tstate = T_NONE;
    if (st == T_BODY && c->rx - c->rx_mark >= ts.body_min) { /* moved enough this window */
        c->rx_mark = c->rx;
        arm(c, T_BODY, &ts.body_to, 1);
        return;
    }
    int why = st == T_IDLE ? CLOSE_IDLE : st == T_HEADER ? CLOSE_HEADER_TIMEOUT : CLOSE_BODY_TIMEOUT;
    if (!c->closing) /* one being closed was counted when it was refused */
        TSTAT_ADD(closed[why], 1);
    char ip[INET6_ADDRSTRLEN];
    FAAS_DEBUG("event=thrift_closed peer=%s reason=%s buffered=%zu", peer_ip(c, ip), close_reason[why],
               c->sock->input->size);
    conn_close(c);
}

/* The connection holding the most bytes of unfinished frames; NULL if none holds any. */
static tconn_t *largest_holder(void)
{
    tconn_t *big = NULL;
    for (h2o_linklist_t *l = ts.conns.next; l != &ts.conns; l = l->next) {
        tconn_t *k = H2O_STRUCT_FROM_MEMBER(tconn_t, all, l);
        if (k->held != 0 && (big == NULL || k->held > big->held))
            big = k;
    }
    return big;
}

/* Moves c's count in this loop's and the process's held bytes to now. */
static void held_set(tconn_t *c, size_t now)
{
    if (now == c->held)
        return; /* the usual case, frames consumed whole: no shared write */
    ts.held += (uint64_t)now - c->held;
    TSTAT_ADD(held, (uint64_t)now - c->held);
    c->held = now;
}

/* Counts c's unread input in the held bytes; past this loop's share of
 * --thrift-max-partial-bytes closes its largest holders until under it: one close
 * frees the most, and a client whose frames complete holds nothing, so only those
 * piling up unfinished frames go. A share per loop, so a client piling up bytes on one
 * loop cannot make the others close their own clients. 0, or -1 when c was closed. */
static int conn_account(tconn_t *c)
{
    held_set(c, c->sock->input->size);
    uint64_t total;
    while ((total = ts.held) > ts.max_partial) {
        tconn_t *big = largest_holder();
        if (big == NULL)
            break;
        char ip[INET6_ADDRSTRLEN];
        FAAS_WARN("event=thrift_closed peer=%s reason=mem_cap buffered=%zu held_total=%" PRIu64, peer_ip(big, ip),
                  big->held, total);
        TSTAT_ADD(closed[CLOSE_MEM_CAP], 1);
        int self = big == c;
        conn_close(big);
        if (self)
            return -1;
    }
    return 0;
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    tconn_t *c = sock->data;
    c->writing = 0;
    if (err != NULL) {
        conn_close(c);
        return;
    }
    h2o_buffer_consume(&c->wbuf, c->wbuf->size);
    conn_flush(c);
}

/* Moves finished replies to the socket: in order, or as they come for out-of-order clients. */
static void conn_flush(tconn_t *c)
{
    if (c->dead)
        return;
    h2o_linklist_t *l = c->calls.next;
    while (l != &c->calls) {
        tcall_t *k = H2O_STRUCT_FROM_MEMBER(tcall_t, link, l);
        l = l->next;
        if (!k->done || h2o_timeout_is_linked(&k->done_entry)) {
            if (k->ooo)
                continue;
            break;
        }
        if (k->reply_len != 0) {
            h2o_iovec_t d = h2o_buffer_reserve(&c->out, k->reply_len);
            memcpy(d.base, k->reply, k->reply_len);
            c->out->size += k->reply_len;
        }
        int fatal = k->fatal;
        h2o_linklist_unlink(&k->link);
        c->ncalls--;
        call_free(k);
        if (fatal) {
            c->closing = 1;
            break;
        }
    }
    if (!c->writing && c->out->size != 0) {
        h2o_buffer_t *t = c->wbuf;
        c->wbuf = c->out;
        c->out = t;
        h2o_iovec_t iov = h2o_iovec_init(c->wbuf->bytes, c->wbuf->size);
        c->writing = 1;
        h2o_socket_write(c->sock, &iov, 1, on_written);
        conn_arm(c);
        return;
    }
    if (c->closing && !c->writing && c->out->size == 0) {
        conn_close(c);
        return;
    }
    if (!c->closing && !c->reading && c->ncalls < MAX_INFLIGHT_PER_CONN && c->out->size + c->wbuf->size < MAX_UNSENT) {
        conn_read_more(c); /* arms the timer */
        return;
    }
    conn_arm(c);
}

static void on_flush_entry(h2o_timeout_entry_t *e)
{
    conn_flush(H2O_STRUCT_FROM_MEMBER(tconn_t, flush_entry, e));
}

/* Replies of pipelined calls come back from one read of the agent's connection, each
 * ending on its own zero-timeout entry: flushing at each would write the first reply
 * at once and the rest after it completes (two or more writes per batch, each a full
 * trip through the loopback stack). One entry per connection, linked behind the calls'
 * entries of this pass, writes them all at once. */
static void conn_flush_later(tconn_t *c)
{
    if (!c->dead && !h2o_timeout_is_linked(&c->flush_entry))
        h2o_timeout_link(ts.loop, &ts.ctx->zero_timeout, &c->flush_entry);
}

static void conn_free(h2o_timeout_entry_t *e)
{
    free(H2O_STRUCT_FROM_MEMBER(tconn_t, free_entry, e));
}

static void conn_close(tconn_t *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    while (!h2o_linklist_is_empty(&c->calls)) {
        tcall_t *k = H2O_STRUCT_FROM_MEMBER(tcall_t, link, c->calls.next);
        h2o_linklist_unlink(&k->link);
        k->conn = NULL;
        if (!h2o_timeout_is_linked(&k->done_entry)) {
            if (k->fnlen != 0 && !k->done)
                gw_metrics_record(k->fn, k->fnlen, 499, 2, faas_now_us() - k->start_us);
            call_free(k); /* disposing the request cancels its upstream stream */
        }
        /* else on_call_done frees it */
    }
    if (h2o_timeout_is_linked(&c->timer))
        h2o_timeout_unlink(&c->timer);
    if (h2o_timeout_is_linked(&c->flush_entry))
        h2o_timeout_unlink(&c->flush_entry);
    h2o_linklist_unlink(&c->all);
    held_set(c, 0);
    h2o_socket_close(c->sock);
    h2o_buffer_dispose(&c->out);
    h2o_buffer_dispose(&c->wbuf);
    /* callers up the stack still look at c->dead (a close can come from deep in a
     * read: a refused frame, the memory cap): free it once they returned */
    c->free_entry.cb = conn_free;
    h2o_timeout_link(ts.loop, &ts.ctx->zero_timeout, &c->free_entry);
}

/* Logs a frame the connection dies of and stops reading: nothing after it is served. */
static void conn_stop(tconn_t *c, const char *err)
{
    char ip[INET6_ADDRSTRLEN];
    FAAS_WARN("event=thrift_bad_frame peer=%s err=\"%s\" action=close", peer_ip(c, ip), err);
    if (c->reading) {
        h2o_socket_read_stop(c->sock);
        c->reading = 0;
    }
    c->closing = 1;
}

/* Bad bytes: log, answer PROTOCOL_ERROR after the replies already due if the
 * message header could be read, then close. */
static void conn_protocol_error(tconn_t *c, const thrift_frame_t *f, int have_msg, const char *err)
{
    conn_stop(c, err);
    if (!have_msg) {
        conn_close(c);
        return;
    }
    tcall_t *k = call_get();
    if (k == NULL) {
        conn_close(c);
        return;
    }
    k->f = *f; /* only framing, proto, flags, seqids and name are used: name points nowhere */
    k->f.name = (thrift_bytes_t){(const uint8_t *)"", 0};
    k->conn = c;
    k->fatal = 1;
    k->done_entry.cb = on_call_done;
    h2o_linklist_insert(&c->calls, &k->link);
    c->ncalls++;
    char msg[200];
    snprintf(msg, sizeof(msg), "bad thrift frame: %s", err);
    call_answer_now(k, faas_err_tapp(FAAS_ERR_MALFORMED), msg, faas_err_http(FAAS_ERR_MALFORMED));
}

static void call_route(tcall_t *k);

static void handle_frame(tconn_t *c, const uint8_t *p, size_t len)
{
    tcall_t *k = call_new(c, p, len);
    if (k == NULL) {
        conn_close(c);
        return;
    }
    if (k->f.mtype != THRIFT_CALL && k->f.mtype != THRIFT_ONEWAY) {
        k->fatal = 1;
        call_answer_now(k, faas_err_tapp(FAAS_ERR_MALFORMED), "only CALL and ONEWAY messages are accepted",
                        faas_err_http(FAAS_ERR_MALFORMED));
        return;
    }
    call_route(k);
}

static void on_resolved(void *ud, int found)
{
    tcall_t *k = ud;
    k->resolving = NULL;
    k->resolved = 1;
    if (found >= 0) {
        call_route(k); /* routes now, or says the miss as before */
        return;
    }
    call_answer_now(k, faas_err_tapp(FAAS_ERR_UNAVAILABLE),
                    disp_ready() ? "function not confirmed by discovery in time" : "gateway not synced with discovery yet",
                    faas_err_http(FAAS_ERR_UNAVAILABLE));
}

/* A miss not yet made sure of (the table may only be behind discovery): 1 if k now
 * waits for discovery's word. */
static int hold_miss(tcall_t *k, int routed, const char *fn, size_t fnlen)
{
    thrift_bytes_t key = {NULL, 0};
    disp_fn_info_t info;
    if (k->resolved)
        return 0;
    if (routed && disp_lookup(fn, fnlen, &info) != 0) /* a bound or default function */
        k->resolving = disp_resolve(DISP_PROTO_HTTP, fn, fnlen, on_resolved, k);
    else if (!routed && thrift_routing_key(&k->f, &key) == 0)
        k->resolving = disp_resolve(DISP_PROTO_THRIFT, (const char *)key.ptr, key.len, on_resolved, k);
    else
        return 0;
    return 1; /* on_resolved may have run already: k is then answered or forwarded */
}

static void call_route(tcall_t *k)
{
    tconn_t *c = k->conn;
    const char *fn = NULL, *why = NULL;
    size_t fnlen = 0;
    int routed = route(c, &k->f, &fn, &fnlen, &why) == 0;
    if (hold_miss(k, routed, fn, fnlen))
        return;
    if (!routed) {
        char msg[200];
        thrift_bytes_t key = {NULL, 0};
        thrift_routing_key(&k->f, &key);
        snprintf(msg, sizeof(msg), "%s%s%.*s", why, key.len ? ": " : "", (int)(key.len > 64 ? 64 : key.len),
                 key.ptr ? (const char *)key.ptr : "");
        FAAS_INFO("event=thrift_error method=%.*s seqid=%" PRId32 " msg=\"%s\"", (int)k->f.name.len, k->f.name.ptr,
                  k->f.seqid, msg);
        call_answer_now(k, faas_err_tapp(FAAS_ERR_NOT_FOUND), msg, 0);
        return;
    }
    k->fnlen = fnlen < sizeof(k->fn) ? fnlen : sizeof(k->fn) - 1;
    memcpy(k->fn, fn, k->fnlen);
    call_forward(k);
}

/* A frame over a limit (--thrift-max-frame, --thrift-max-header-bytes), refused
 * before its body is buffered: INTERNAL_ERROR (DESIGN.md section 3, "too large")
 * in the client's framing when its head, hence its name and seqid, was read (f),
 * else a bare close; either way the connection ends, since the rest of the frame
 * is not read. */
static void conn_refuse(tconn_t *c, const thrift_frame_t *f, const char *msg)
{
    conn_stop(c, msg);
    TSTAT_ADD(closed[CLOSE_TOO_LARGE], 1);
    tcall_t *k = f != NULL ? call_get() : NULL;
    if (k == NULL) {
        h2o_buffer_consume(&c->sock->input, c->sock->input->size);
        c->seen = 0;
        conn_close(c);
        return;
    }
    k->f = *f;
    k->conn = c;
    k->fatal = 1;
    k->done_entry.cb = on_call_done;
    h2o_linklist_insert(&c->calls, &k->link);
    c->ncalls++;
    /* f's views (the name) point into the input: the answer is encoded before it goes */
    call_answer_now(k, faas_err_tapp(FAAS_ERR_TOO_LARGE), msg, faas_err_http(FAAS_ERR_TOO_LARGE));
    k->f.name = (thrift_bytes_t){(const uint8_t *)"", 0};
    if (!c->dead) { /* (a close frees c only after this callback returns) */
        h2o_buffer_consume(&c->sock->input, c->sock->input->size); /* nothing more of it is needed */
        c->seen = 0;
    }
}

/* Parses and checks the head of the frame at the input's start (once per frame). 0
 * when it is accepted or incomplete, -1 when the connection is closing. */
static int read_head(tconn_t *c, const uint8_t *buf, size_t len)
{
    thrift_frame_t f;
    memset(&f, 0, sizeof(f));
    const char *perr = "bad frame";
    long h = thrift_parse_head(buf, len, ts.max_header, &f, NULL, &perr);
    if (h == 0)
        return 0;
    if (h == THRIFT_HEAD_TOO_LARGE) {
        conn_refuse(c, NULL, perr); /* the method name lies beyond what is refused */
        return -1;
    }
    if (h < 0) {
        conn_protocol_error(c, &f, f.framing == THRIFT_THEADER || f.framing == THRIFT_TTHEADER, perr);
        return -1;
    }
    if (f.frame_len - 4 > ts.max_frame) {
        char msg[160];
        snprintf(msg, sizeof(msg), "frame of %zu bytes larger than the limit (%" PRIu32 ")", f.frame_len - 4,
                 ts.max_frame);
        conn_refuse(c, &f, msg);
        return -1;
    }
    c->head_ok = 1;
    return 0;
}

/* Handles the frame at the input's start: 1 when one was handled, 0 when more
 * bytes are needed, -1 when the connection is closing or gone. */
static int read_frame(tconn_t *c)
{
    h2o_socket_t *sock = c->sock;
    const uint8_t *buf = (const uint8_t *)sock->input->bytes;
    size_t len = sock->input->size;
    if (!c->head_ok && read_head(c, buf, len) != 0)
        return -1;
    if (!c->head_ok)
        return 0;
    thrift_frame_t f;
    memset(&f, 0, sizeof(f));
    const char *perr = NULL;
    long n = thrift_parse(buf, len, ts.max_frame, &f, NULL, &perr);
    if (n == 0)
        return 0;
    c->head_ok = 0;
    if (n < 0) {
        /* a header frame's own fields (framing, protocol, seqid) were read: the
         * client can be told in its framing; framed garbage just gets closed */
        int have = f.framing == THRIFT_THEADER || f.framing == THRIFT_TTHEADER;
        conn_protocol_error(c, &f, have, perr ? perr : "bad frame");
        return -1;
    }
    if (c->framing == 0)
        c->framing = f.framing;
    else if (f.framing != c->framing) {
        conn_protocol_error(c, &f, 1, "framing changed on the connection");
        return -1;
    }
    handle_frame(c, buf, (size_t)n);
    if (c->dead)
        return -1;
    h2o_buffer_consume(&sock->input, (size_t)n);
    c->seen -= (size_t)n;
    arm(c, T_NONE, NULL, 0); /* the next frame's deadlines start afresh */
    return 1;
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    tconn_t *c = sock->data;
    if (err != NULL) {
        conn_close(c); /* the client left: calls in flight are cancelled */
        return;
    }
    if (sock->input->size > c->seen) { /* progress, for the body rule */
        c->rx += sock->input->size - c->seen;
        c->seen = sock->input->size;
    }
    while (!c->dead && !c->closing && sock->input->size != 0) {
        if (read_frame(c) <= 0)
            break;
        if (c->ncalls >= MAX_INFLIGHT_PER_CONN || c->out->size + c->wbuf->size >= MAX_UNSENT) {
            h2o_socket_read_stop(sock);
            c->reading = 0;
            break;
        }
    }
    if (c->dead)
        return;
    /* a big frame's buffer stays with the socket once emptied: give it back */
    if (sock->input->size == 0 && sock->input->capacity > KEEP_INPUT) {
        h2o_buffer_dispose(&sock->input);
        h2o_buffer_init(&sock->input, &h2o_socket_buffer_prototype);
        c->seen = 0;
    }
    if (conn_account(c) == 0)
        conn_arm(c);
}

static void conn_read_more(tconn_t *c)
{
    c->reading = 1;
    h2o_socket_read_start(c->sock, on_read);
    if (c->sock->input->size != 0)
        on_read(c->sock, NULL);
    else
        conn_arm(c);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        if (gw_conncap_accept(sock, GW_PORT_THRIFT) != 0)
            continue; /* over a connection cap: closed */
        tconn_t *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            h2o_socket_close(sock);
            continue;
        }
        c->peerlen = h2o_socket_getpeername(sock, (struct sockaddr *)&c->peer);
        c->sock = sock;
        sock->data = c;
        int one = 1;
        setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        h2o_linklist_init_anchor(&c->calls);
        faas_request_id(c->cid);
        h2o_buffer_init(&c->out, &h2o_socket_buffer_prototype);
        h2o_buffer_init(&c->wbuf, &h2o_socket_buffer_prototype);
        h2o_linklist_insert(&ts.conns, &c->all);
        c->timer.cb = on_timer;
        c->flush_entry.cb = on_flush_entry;
        conn_read_more(c);
    }
}

void gw_thrift_serve(h2o_context_t *ctx, int fd, const char *default_fn)
{
    ts.ctx = ctx;
    ts.loop = ctx->loop;
    ts.default_fn = default_fn;
    h2o_timeout_init(ts.loop, &ts.idle_to, ts.idle_ms);
    h2o_timeout_init(ts.loop, &ts.header_to, ts.header_ms);
    h2o_timeout_init(ts.loop, &ts.body_to, ts.body_ms);
    h2o_linklist_init_anchor(&ts.conns);
    ts.listener = h2o_evloop_socket_create(ctx->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(ts.listener, on_accept);
}

void gw_thrift_limits(const gw_config_t *cfg)
{
    ts.idle_ms = cfg->thrift_idle_timeout_ms;
    ts.header_ms = cfg->thrift_header_timeout_ms;
    ts.body_ms = cfg->thrift_body_timeout_ms;
    ts.body_min = cfg->thrift_body_min_bytes;
    ts.max_frame = cfg->thrift_max_frame;
    ts.max_header = cfg->thrift_max_header_bytes;
    ts.max_partial = cfg->thrift_max_partial_bytes / (cfg->threads ? cfg->threads : 1);
}

void gw_thrift_metrics_write(FILE *out)
{
    fprintf(out, "# HELP faas_gw_thrift_closed_total Thrift connections the gateway closed, by reason.\n"
                 "# TYPE faas_gw_thrift_closed_total counter\n");
    for (int i = 0; i < CLOSE_NREASONS; i++)
        fprintf(out, "faas_gw_thrift_closed_total{reason=\"%s\"} %" PRIu64 "\n", close_reason[i],
                __atomic_load_n(&tstats.closed[i], __ATOMIC_RELAXED));
    fprintf(out,
            "# HELP faas_gw_thrift_partial_frame_bytes Bytes of Thrift frames received but not yet handled "
            "(unfinished ones), all connections.\n"
            "# TYPE faas_gw_thrift_partial_frame_bytes gauge\nfaas_gw_thrift_partial_frame_bytes %" PRIu64 "\n",
            __atomic_load_n(&tstats.held, __ATOMIC_RELAXED));
}
