/* gateway/thrift_server.c - the gateway's Thrift port: framed, THeader and Kitex
 * TTHeader clients on the gateway's event loop. Every request frame becomes one
 * request of the dispatcher (the same cold-start queue, selection and h2c
 * upstream as HTTP): POST /_faas/thrift to the agent, the unframed message as
 * the body, framing metadata as faas-thrift-* headers. The dispatcher drives an
 * h2o_req_t, so each call carries one whose output stream is ours: the reply
 * (or the platform's error) is captured there and re-framed for the client.
 *
 * Replies go back in request order per connection (several calls in flight)
 * unless the client set the THeader out-of-order flag. */
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

#include "common/log.h"
#include "common/util.h"
#include "dispatcher/dispatcher.h"
#include "dispatcher/internal.h" /* read-only: the function table for the service index */
#include "thrift/thrift.h"
#include "proto/faas.pb-c.h"

#define MAX_INFLIGHT_PER_CONN 256 /* pipelined calls read ahead before reading stops */
#define MAX_REPLY (16u << 20)
#define MAX_UNSENT (1u << 20) /* replies waiting for a slow client: reading pauses past this */

typedef struct tconn {
    h2o_conn_t super; /* what the calls' h2o_req_t point at */
    h2o_socket_t *sock;
    struct sockaddr_storage peer;
    socklen_t peerlen;
    thrift_framing_t framing; /* fixed by the first frame */
    h2o_linklist_t calls;        /* tcall_t, in request order */
    uint32_t ncalls;
    h2o_buffer_t *out, *wbuf; /* pending replies, bytes being written */
    int writing, reading, closing, dead;
} tconn_t;

typedef struct tcall {
    h2o_linklist_t link;
    tconn_t *conn; /* NULL once the client left */
    h2o_req_t req;
    h2o_ostream_t ostr;
    h2o_timeout_entry_t done_entry;
    uint8_t *frame; /* copy of the request frame; f points into it */
    thrift_frame_t f;
    h2o_buffer_t *body; /* reply payload from the agent */
    char fn[64];
    size_t fnlen;
    uint64_t start_us;
    uint8_t *reply; /* encoded reply frame (NULL = none, e.g. oneway) */
    size_t reply_len;
    int code; /* for the metric */
    int in_req, done, oneway, ooo, fatal;
} tcall_t;

static struct {
    h2o_context_t *ctx;
    h2o_loop_t *loop;
    const char *default_fn;
    h2o_pathconf_t pathconf; /* empty: no filters, no loggers */
    h2o_socket_t *listener; /* reachable for LeakSanitizer: otherwise only epoll holds it */
} ts;

static void conn_close(tconn_t *c);
static void conn_flush(tconn_t *c);
static void conn_read_more(tconn_t *c);

/* ---- service -> function index, rebuilt when the watched table changes ------------ */

typedef struct {
    char *service;
    char fn[64];
} svc_entry_t;

static svc_entry_t *svc;
static size_t nsvc;
static uint64_t svc_sig = 1;

static uint64_t table_signature(void)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        uint64_t v[4] = {(uintptr_t)fn, (uintptr_t)fn->spec_pb, fn->p.version, (uint64_t)fn->known};
        for (int k = 0; k < 4; k++)
            h = (h ^ v[k]) * 1099511628211ULL;
    }
    return h;
}

static void svc_rebuild(void)
{
    for (size_t i = 0; i < nsvc; i++)
        free(svc[i].service);
    free(svc);
    svc = NULL;
    nsvc = 0;
    size_t cap = 0;
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        if (!fn->known || fn->spec_pb == NULL)
            continue;
        Faas__FunctionSpec *s = faas__function_spec__unpack(NULL, fn->spec_len, fn->spec_pb);
        if (s == NULL)
            continue;
        for (size_t k = 0; k < s->n_thrift_services; k++) {
            if (nsvc == cap) {
                size_t nc = cap ? cap * 2 : 8;
                svc_entry_t *ns = realloc(svc, nc * sizeof(*ns));
                if (ns == NULL)
                    break;
                svc = ns;
                cap = nc;
            }
            svc[nsvc].service = strdup(s->thrift_services[k]);
            if (svc[nsvc].service == NULL)
                break;
            snprintf(svc[nsvc].fn, sizeof(svc[nsvc].fn), "%.*s", (int)fn->name_len, fn->name);
            nsvc++;
        }
        faas__function_spec__free_unpacked(s, NULL);
    }
}

/* The function declaring service (thrift_services), or NULL. */
static const char *svc_lookup(const uint8_t *name, size_t len)
{
    uint64_t sig = table_signature();
    if (sig != svc_sig) {
        svc_rebuild();
        svc_sig = sig;
    }
    for (size_t i = 0; i < nsvc; i++)
        if (strlen(svc[i].service) == len && memcmp(svc[i].service, name, len) == 0)
            return svc[i].fn;
    return NULL;
}

static int fn_name_ok(const uint8_t *p, size_t len)
{
    if (len == 0 || len > 63 || !((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= '0' && p[0] <= '9')))
        return 0;
    for (size_t i = 1; i < len; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '-'))
            return 0;
    return 1;
}

/* Routing key -> function: a declared service, else a function of that name; no key:
 * the port's default function. 0 with *fn set, or -1 with *why. */
static int route(const thrift_frame_t *f, const char **fn, size_t *fnlen, const char **why)
{
    thrift_bytes_t key;
    disp_fn_info_t info;
    if (thrift_routing_key(f, &key) == 0) {
        const char *s = svc_lookup(key.ptr, key.len);
        if (s != NULL) {
            *fn = s;
            *fnlen = strlen(s);
            return 0;
        }
        if (fn_name_ok(key.ptr, key.len) && disp_lookup((const char *)key.ptr, key.len, &info) == 0) {
            *fn = (const char *)key.ptr;
            *fnlen = key.len;
            return 0;
        }
        *why = "unknown service";
        return -1;
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

/* See thrift_meta_name: info headers travel as faas-thrift-* h2 headers. */
static int meta_name(h2o_mem_pool_t *pool, const thrift_header_t *h, h2o_iovec_t *out)
{
    char *b = h2o_mem_alloc_pool(pool, 416);
    size_t n = thrift_meta_name(h, b, 416);
    if (n == 0)
        return -1;
    *out = h2o_iovec_init(b, n);
    return 0;
}

static int meta_parse(h2o_mem_pool_t *pool, const h2o_iovec_t *name, const h2o_iovec_t *value,
                      thrift_header_t *h)
{
    if (name->len <= 14 || memcmp(name->base, "faas-thrift-", 12) != 0)
        return -1;
    uint8_t *kb = h2o_mem_alloc_pool(pool, name->len / 2 + 1);
    return thrift_meta_parse(name->base, name->len, value->base, value->len, kb, name->len / 2 + 1, h);
}

/* ---- calls -------------------------------------------------------------------- */

static const char *new_request_id(h2o_mem_pool_t *pool)
{
    char *id = h2o_mem_alloc_pool(pool, 17);
    faas_request_id(id);
    return id;
}

static void call_free(tcall_t *c)
{
    if (h2o_timeout_is_linked(&c->done_entry))
        h2o_timeout_unlink(&c->done_entry);
    if (c->in_req) {
        c->in_req = 0;
        h2o_dispose_request(&c->req); /* the dispatcher lets go of the call here */
    }
    if (c->body != NULL)
        h2o_buffer_dispose(&c->body);
    free(c->reply);
    free(c->frame);
    free(c);
}

/* Sets the reply to a TApplicationException (none for oneway calls). */
static void call_set_error(tcall_t *c, int type, const char *msg)
{
    free(c->reply);
    c->reply = NULL;
    c->reply_len = 0;
    if (c->oneway)
        return;
    size_t n = thrift_encode_error(&c->f, type, msg, NULL, 0);
    if (n == (size_t)-1 || (c->reply = malloc(n)) == NULL)
        return;
    c->reply_len = thrift_encode_error(&c->f, type, msg, c->reply, n);
}

/* Runs on the loop after a call ended (never inside the dispatcher's callbacks). */
static void on_call_done(h2o_timeout_entry_t *e)
{
    tcall_t *c = H2O_STRUCT_FROM_MEMBER(tcall_t, done_entry, e);
    if (c->in_req) {
        c->in_req = 0;
        h2o_dispose_request(&c->req);
    }
    if (c->fnlen != 0)
        gw_metrics_record(c->fn, c->fnlen, c->conn != NULL ? c->code : 499, 2, faas_now_us() - c->start_us);
    tconn_t *conn = c->conn;
    if (conn == NULL) {
        call_free(c);
        return;
    }
    conn_flush(conn);
}

static void call_finish(tcall_t *c)
{
    c->done = 1;
    h2o_timeout_link(ts.loop, &ts.ctx->zero_timeout, &c->done_entry);
}

/* Builds the client's reply from what the dispatcher answered. */
static void call_complete(tcall_t *c, int broken)
{
    h2o_req_t *req = &c->req;
    int st = req->res.status;
    c->code = broken ? 502 : st;
    if (broken || (st != 200 && st != 204)) {
        char msg[300];
        size_t bl = c->body->size < 200 ? c->body->size : 200;
        while (bl > 0 && (c->body->bytes[bl - 1] == '\n' || c->body->bytes[bl - 1] == '\r'))
            bl--;
        if (broken || bl == 0)
            snprintf(msg, sizeof(msg), "function %.*s: %s", (int)c->fnlen, c->fn,
                     broken ? "function response broken" : "function failed");
        else
            snprintf(msg, sizeof(msg), "%.*s", (int)bl, c->body->bytes);
        FAAS_INFO("event=thrift_error fn=%.*s method=%.*s seqid=%" PRId32 " status=%d msg=\"%s\"", (int)c->fnlen,
                  c->fn, (int)c->f.name.len, c->f.name.ptr, c->f.seqid, st, msg);
        call_set_error(c, st == 404 ? THRIFT_TAPP_UNKNOWN_METHOD : THRIFT_TAPP_INTERNAL_ERROR, msg);
        return;
    }
    if (c->oneway || st == 204)
        return;
    thrift_header_t hs[THRIFT_MAX_HEADERS];
    size_t nh = 0;
    for (size_t i = 0; i < req->res.headers.size && nh < THRIFT_MAX_HEADERS; i++) {
        h2o_header_t *e = &req->res.headers.entries[i];
        if (meta_parse(&req->pool, e->name, &e->value, &hs[nh]) == 0)
            nh++;
    }
    size_t n = thrift_encode_reply(&c->f, hs, nh, (const uint8_t *)c->body->bytes, c->body->size, NULL, 0);
    if ((c->reply = malloc(n)) == NULL) {
        call_set_error(c, THRIFT_TAPP_INTERNAL_ERROR, "gateway out of memory");
        return;
    }
    c->reply_len = thrift_encode_reply(&c->f, hs, nh, (const uint8_t *)c->body->bytes, c->body->size, c->reply, n);
}

/* Our output stream at the end of the call's h2o_req_t: collects the agent's answer. */
static void call_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t st)
{
    tcall_t *c = H2O_STRUCT_FROM_MEMBER(tcall_t, ostr, self);
    int too_big = 0;
    for (size_t i = 0; i < n; i++) {
        if (c->body->size + bufs[i].len > MAX_REPLY) {
            too_big = 1;
            break;
        }
        h2o_iovec_t d = h2o_buffer_reserve(&c->body, bufs[i].len);
        memcpy(d.base, bufs[i].base, bufs[i].len);
        c->body->size += bufs[i].len;
    }
    if (c->done)
        return;
    if (h2o_send_state_is_in_progress(st) && !too_big) {
        /* ask the generator for more on the next iteration, not from inside its send */
        if (!h2o_timeout_is_linked(&req->_timeout_entry))
            h2o_timeout_link(ts.loop, &ts.ctx->zero_timeout, &req->_timeout_entry);
        return;
    }
    if (too_big) {
        c->code = 502;
        call_set_error(c, THRIFT_TAPP_INTERNAL_ERROR, "reply larger than the gateway's limit");
    } else {
        call_complete(c, st == H2O_SEND_STATE_ERROR);
    }
    call_finish(c);
}

static socklen_t conn_get_peername(h2o_conn_t *conn, struct sockaddr *sa)
{
    tconn_t *c = (tconn_t *)conn;
    memcpy(sa, &c->peer, c->peerlen);
    return c->peerlen;
}

static socklen_t conn_get_sockname(h2o_conn_t *conn, struct sockaddr *sa)
{
    return 0;
}

static const h2o_conn_callbacks_t conn_callbacks = {.get_sockname = conn_get_sockname,
                                                     .get_peername = conn_get_peername};

static h2o_header_t *add_hdr(h2o_header_t *h, size_t *n, h2o_iovec_t *name, const char *v, size_t vl)
{
    h[*n].name = name;
    h[*n].orig_name = NULL;
    h[*n].value = h2o_iovec_init(v, vl);
    (*n)++;
    return h;
}

/* Hands the call to the dispatcher. */
static void call_forward(tcall_t *c)
{
    static h2o_iovec_t n_rid = {H2O_STRLIT("faas-request-id")}, n_fn = {H2O_STRLIT("faas-function")},
                       n_proto = {H2O_STRLIT("faas-thrift-proto")}, n_ow = {H2O_STRLIT("faas-thrift-oneway")},
                       n_ct = {H2O_STRLIT("content-type")};
    h2o_req_t *req = &c->req;
    h2o_init_request(req, &c->conn->super, NULL);
    c->in_req = 1;
    req->pathconf = &ts.pathconf;
    req->_ostr_top = &c->ostr;
    req->version = 0x200;
    req->method = req->input.method = h2o_iovec_init(H2O_STRLIT("POST"));
    req->authority = req->input.authority = h2o_iovec_init(c->fn, c->fnlen);
    req->path = req->input.path = h2o_iovec_init(H2O_STRLIT("/_faas/thrift"));
    req->entity = h2o_iovec_init(c->f.payload.ptr, c->f.payload.len);
    h2o_header_t *h = h2o_mem_alloc_pool(&req->pool, (c->f.n_headers + 6) * sizeof(*h));
    size_t n = 0;
    const char *rid = new_request_id(&req->pool);
    add_hdr(h, &n, &n_ct, H2O_STRLIT("application/x-thrift"));
    add_hdr(h, &n, &n_rid, rid, strlen(rid));
    add_hdr(h, &n, &n_fn, c->fn, c->fnlen);
    if (c->f.proto == THRIFT_COMPACT)
        add_hdr(h, &n, &n_proto, H2O_STRLIT("compact"));
    else
        add_hdr(h, &n, &n_proto, H2O_STRLIT("binary"));
    if (c->oneway)
        add_hdr(h, &n, &n_ow, H2O_STRLIT("1"));
    for (size_t i = 0; i < c->f.n_headers; i++) {
        const thrift_header_t *th = &c->f.headers[i];
        /* the request id is the platform's: a client cannot choose it */
        if (!th->is_int && th->key.len == 15 && memcmp(th->key.ptr, "faas-request-id", 15) == 0)
            continue;
        h2o_iovec_t *nm = h2o_mem_alloc_pool(&req->pool, sizeof(*nm));
        if (meta_name(&req->pool, th, nm) != 0)
            continue;
        add_hdr(h, &n, nm, (const char *)th->value.ptr, th->value.len);
    }
    disp_forward(req, c->fn, c->fnlen, req->path, h, n, rid);
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
    tcall_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if ((c->frame = malloc(len)) == NULL) {
        free(c);
        return NULL;
    }
    memcpy(c->frame, frame, len);
    /* re-parse over our copy so every view points into it (same bytes: cannot fail) */
    const char *err;
    if (thrift_parse(c->frame, len, 0, &c->f, NULL, &err) <= 0) {
        free(c->frame);
        free(c);
        return NULL;
    }
    c->conn = conn;
    c->start_us = faas_now_us();
    c->done_entry.cb = on_call_done;
    c->ostr.do_send = call_do_send;
    h2o_buffer_init(&c->body, &h2o_socket_buffer_prototype);
    c->oneway = c->f.mtype == THRIFT_ONEWAY;
    c->ooo = c->f.framing == THRIFT_THEADER && (c->f.flags & THRIFT_THEADER_FLAG_OUT_OF_ORDER) != 0;
    h2o_linklist_insert(&conn->calls, &c->link);
    conn->ncalls++;
    return c;
}

/* ---- connections ---------------------------------------------------------------- */

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
        return;
    }
    if (c->closing && !c->writing && c->out->size == 0) {
        conn_close(c);
        return;
    }
    if (!c->closing && !c->reading && c->ncalls < MAX_INFLIGHT_PER_CONN &&
        c->out->size + c->wbuf->size < MAX_UNSENT)
        conn_read_more(c);
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
    h2o_socket_close(c->sock);
    h2o_buffer_dispose(&c->out);
    h2o_buffer_dispose(&c->wbuf);
    free(c);
}

/* Bad bytes: log, answer PROTOCOL_ERROR after the replies already due if the
 * message header could be read, then close. */
static void conn_protocol_error(tconn_t *c, const thrift_frame_t *f, int have_msg, const char *err)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (c->peer.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&c->peer)->sin_addr, ip, sizeof(ip));
    else if (c->peer.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c->peer)->sin6_addr, ip, sizeof(ip));
    FAAS_WARN("event=thrift_bad_frame peer=%s err=\"%s\" action=close", ip, err);
    if (c->reading) {
        h2o_socket_read_stop(c->sock);
        c->reading = 0;
    }
    c->closing = 1;
    if (!have_msg) {
        conn_close(c);
        return;
    }
    tcall_t *k = calloc(1, sizeof(*k));
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
    call_answer_now(k, THRIFT_TAPP_PROTOCOL_ERROR, msg, 400);
}

static void handle_frame(tconn_t *c, const uint8_t *p, size_t len)
{
    tcall_t *k = call_new(c, p, len);
    if (k == NULL) {
        conn_close(c);
        return;
    }
    if (k->f.mtype != THRIFT_CALL && k->f.mtype != THRIFT_ONEWAY) {
        k->fatal = 1;
        call_answer_now(k, THRIFT_TAPP_PROTOCOL_ERROR, "only CALL and ONEWAY messages are accepted", 400);
        return;
    }
    const char *fn, *why = NULL;
    size_t fnlen;
    if (route(&k->f, &fn, &fnlen, &why) != 0) {
        char msg[200];
        thrift_bytes_t key = {NULL, 0};
        thrift_routing_key(&k->f, &key);
        snprintf(msg, sizeof(msg), "%s%s%.*s", why, key.len ? ": " : "", (int)(key.len > 64 ? 64 : key.len),
                 key.ptr ? (const char *)key.ptr : "");
        FAAS_INFO("event=thrift_error method=%.*s seqid=%" PRId32 " msg=\"%s\"", (int)k->f.name.len, k->f.name.ptr,
                  k->f.seqid, msg);
        call_answer_now(k, THRIFT_TAPP_UNKNOWN_METHOD, msg, 0);
        return;
    }
    k->fnlen = fnlen < sizeof(k->fn) ? fnlen : sizeof(k->fn) - 1;
    memcpy(k->fn, fn, k->fnlen);
    call_forward(k);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    tconn_t *c = sock->data;
    if (err != NULL) {
        conn_close(c); /* the client left: calls in flight are cancelled */
        return;
    }
    while (!c->dead && !c->closing) {
        thrift_frame_t f;
        memset(&f, 0, sizeof(f));
        const char *perr = NULL;
        size_t need = 0;
        long n = thrift_parse((const uint8_t *)sock->input->bytes, sock->input->size, 0, &f, &need, &perr);
        if (n == 0)
            break;
        if (n < 0) {
            /* a header frame's own fields (framing, protocol, seqid) were read: the
             * client can be told in its framing; framed garbage just gets closed */
            int have = f.framing == THRIFT_THEADER || f.framing == THRIFT_TTHEADER;
            conn_protocol_error(c, &f, have, perr ? perr : "bad frame");
            return;
        }
        if (c->framing == 0)
            c->framing = f.framing;
        else if (f.framing != c->framing) {
            conn_protocol_error(c, &f, 1, "framing changed on the connection");
            return;
        }
        handle_frame(c, (const uint8_t *)sock->input->bytes, (size_t)n);
        if (c->dead)
            return;
        h2o_buffer_consume(&sock->input, (size_t)n);
        if (c->ncalls >= MAX_INFLIGHT_PER_CONN || c->out->size + c->wbuf->size >= MAX_UNSENT) {
            h2o_socket_read_stop(sock);
            c->reading = 0;
            break;
        }
    }
}

static void conn_read_more(tconn_t *c)
{
    c->reading = 1;
    h2o_socket_read_start(c->sock, on_read);
    if (c->sock->input->size != 0)
        on_read(c->sock, NULL);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            return;
        tconn_t *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            h2o_socket_close(sock);
            continue;
        }
        c->super.ctx = ts.ctx;
        c->super.hosts = ts.ctx->globalconf->hosts;
        c->super.callbacks = &conn_callbacks;
        gettimeofday(&c->super.connected_at, NULL);
        c->peerlen = h2o_socket_getpeername(sock, (struct sockaddr *)&c->peer);
        c->sock = sock;
        sock->data = c;
        int one = 1;
        setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        h2o_linklist_init_anchor(&c->calls);
        h2o_buffer_init(&c->out, &h2o_socket_buffer_prototype);
        h2o_buffer_init(&c->wbuf, &h2o_socket_buffer_prototype);
        conn_read_more(c);
    }
}


int gw_thrift_listen(h2o_context_t *ctx, const char *addr, const char *default_fn, const char **err)
{
    ts.ctx = ctx;
    ts.loop = ctx->loop;
    ts.default_fn = default_fn;
    int fd = faas_listen_tcp(addr, err);
    if (fd < 0)
        return -1;
    ts.listener = h2o_evloop_socket_create(ctx->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(ts.listener, on_accept);
    FAAS_INFO("event=thrift_listening addr=%s default_function=%s", addr,
              default_fn && default_fn[0] ? default_fn : "-");
    return 0;
}
