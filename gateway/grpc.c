/* gateway/grpc.c - the gateway's gRPC listener: h2c prior knowledge served by nghttp2
 * on the gateway's loop (h2o 2.2.5 would buffer request bodies and cannot send
 * trailers). Validates and routes each call by the service in :path, then hands it to
 * the dispatcher as a bridged call: the client's stream is joined to a stream on the
 * agent's one port, and platform errors come back here to be said as gRPC statuses. */
#include "gateway/grpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"
#include "dispatcher/dispatcher.h"
#include "gateway/internal.h"
#include "grpcw/grpcw.h"

#define GW_PROTO_GRPC 3 /* gw_metrics_record's protocol: 0 http/1.1, 1 h2, 2 thrift, 3 grpc */
#define MAX_FWD_HEADERS 128

/* Per-call scratch kept in the pair: the request message scanner and its limit, and
 * the function (the dispatcher's name, stable while the loop runs) for the metrics. */
typedef struct {
    grpcw_scan_t scan;
    uint32_t max_msg;
    const char *fn;
    size_t fnlen;
    uint64_t start_us;
} front_t;
_Static_assert(sizeof(front_t) <= sizeof(((h2b_pair_t *)0)->front), "front_t must fit h2b_pair_t.front");

static __thread h2o_socket_t *listener; /* each loop its own (SO_REUSEPORT) */

/* The HTTP port's clocks (gateway/h2c.c) for the gRPC port's connections: no SETTINGS
 * within 10 s of accept (slowloris) or no stream and nothing received for 60 s. */
#define GRPC_PREFACE_TIMEOUT_MS 10000
#define GRPC_IDLE_TIMEOUT_MS 60000
static __thread h2o_timeout_t sweep_every;
static __thread h2o_timeout_entry_t sweep_entry;
static __thread h2o_loop_t *sweep_loop;

static void on_sweep(h2o_timeout_entry_t *e)
{
    size_t n = h2b_server_sweep(GRPC_PREFACE_TIMEOUT_MS, GRPC_IDLE_TIMEOUT_MS);
    if (n != 0)
        FAAS_INFO("event=grpc_conns_closed n=%zu reason=\"no preface or idle\"", n);
    h2o_timeout_link(sweep_loop, &sweep_every, &sweep_entry);
}

static const nghttp2_nv *find(h2b_pair_t *p, const char *name)
{
    return h2b_find(&p->req, name);
}

static int nv_is(const nghttp2_nv *v, const char *lit)
{
    return v != NULL && v->valuelen == strlen(lit) && memcmp(v->value, lit, v->valuelen) == 0;
}

static void sink_error(disp_call_t *c, faas_err_t kind, const char *msg, int started)
{
    h2b_pair_fail(disp_call_owner(c), faas_err_grpc(kind), msg);
}

static void sink_done(disp_call_t *c, int grpc_status, int http_status)
{
    h2b_pair_t *p = disp_call_owner(c);
    front_t *fr = (front_t *)p->front;
    int code = grpc_status;
    if (code < 0 && http_status == 0)
        code = FAAS_GRPC_CANCELLED; /* the client left first */
    else if (code < 0)
        code = http_status != 200 ? grpcw_code_for_http_response(http_status)
                                  : FAAS_GRPC_UNKNOWN; /* ended without a status */
    gw_metrics_record(fr->fn, fr->fnlen, code, GW_PROTO_GRPC, faas_now_us() - fr->start_us);
}

/* The routes' function name rule (route.c), for a faas-function header. */
static int fn_name_ok(const uint8_t *s, size_t len)
{
    const char *why;
    return gw_route_name_check((const char *)s, len, &why) == 0;
}

static void make_rid(const nghttp2_nv *x, char *out, size_t cap)
{
    if (x != NULL && gw_request_id_sane((const char *)x->value, x->valuelen)) {
        snprintf(out, cap, "%.*s", (int)x->valuelen, (const char *)x->value);
        return;
    }
    char id[17];
    faas_request_id(id);
    snprintf(out, cap, "%s", id);
}

static const disp_sink_t grpc_sink = {.error = sink_error, .done = sink_done};

/* What the agent gets: the call's pseudo headers and the metadata that travels. */
static int call_headers(h2b_pair_t *p, disp_call_t *c)
{
    const nghttp2_nv *auth = find(p, ":authority"), *path = find(p, ":path");
    int rc = disp_call_header(c, ":method", 7, "POST", 4) | disp_call_header(c, ":scheme", 7, "http", 4) |
             (auth != NULL ? disp_call_header(c, ":authority", 10, (const char *)auth->value, auth->valuelen)
                           : disp_call_header(c, ":authority", 10, "localhost", 9)) |
             disp_call_header(c, ":path", 5, (const char *)path->value, path->valuelen) |
             disp_call_header(c, "te", 2, "trailers", 8);
    for (size_t i = 0, n = 0; i < p->req.n && n < MAX_FWD_HEADERS; i++) {
        const nghttp2_nv *h = &p->req.nv[i];
        if (grpcw_header_forwarded((const char *)h->name, h->namelen)) {
            rc |= disp_call_header(c, (const char *)h->name, h->namelen, (const char *)h->value, h->valuelen);
            n++;
        }
    }
    return rc;
}

/* ---- faas.EndpointsApi: answered here, not routed to a function ---- */

#define EP_SERVICE "faas.EndpointsApi"
#define EP_MAX_REQ 1024                /* an EndpointsRequest is a name: 70 bytes framed */
#define EP_WATCH_EVERY_MS 200          /* how often a Watch looks for a change */
#define EP_WATCH_MAX_QUEUED (64 << 10) /* a client not reading: skip, send the newest later */

typedef struct ep_call {
    h2b_pair_t *p;
    int watch;
    disp_resolve_t *resolving;
    char fn[64];
    size_t fnlen;
    char host[64];           /* :authority's host: a wildcard-bound port's address */
    uint8_t req[EP_MAX_REQ]; /* the request as it arrives */
    size_t reqlen;
    uint64_t sent_key; /* what the last message said (mode, endpoints, threshold) */
    int sent;
    struct ep_call *prev, *next; /* in the thread's watch list */
} ep_call_t;

/* Every loop thread serves its own connections: its own watch list and timer. */
static __thread ep_call_t *ep_watches;
static __thread h2o_timeout_t ep_every;
static __thread h2o_timeout_entry_t ep_entry;
static __thread h2o_loop_t *ep_loop;

static void ep_on_free(h2b_pair_t *p)
{
    ep_call_t *ec = p->owner;
    p->owner = NULL;
    if (ec == NULL)
        return;
    if (ec->resolving != NULL)
        disp_resolve_cancel(ec->resolving);
    if (ec->watch && (ec->prev != NULL || ep_watches == ec)) {
        if (ec->prev != NULL)
            ec->prev->next = ec->next;
        else
            ep_watches = ec->next;
        if (ec->next != NULL)
            ec->next->prev = ec->prev;
    }
    free(ec);
}

static int is_ep(const h2b_pair_t *p)
{
    return p->on_free == ep_on_free;
}

/* The message said by the answer, less its rps: a Watch sends when this changes. */
static uint64_t ep_key(const uint8_t *pb, size_t len)
{
    Faas__Endpoints *m = faas__endpoints__unpack(NULL, len, pb);
    uint64_t h = 1469598103934665603ull;
    if (m == NULL)
        return 0;
    m->rps = 0;
    size_t n = faas__endpoints__get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    if (b != NULL) {
        faas__endpoints__pack(m, b);
        for (size_t i = 0; i < n; i++)
            h = (h ^ b[i]) * 1099511628211ull;
    }
    free(b);
    faas__endpoints__free_unpacked(m, NULL);
    return h;
}

/* Sends one length-prefixed Endpoints message (and the headers before the first). 0 or
 * -1 (no such function: *found 0). */
static int ep_send(ep_call_t *ec, int *found, int only_if_changed)
{
    size_t len;
    uint8_t *pb = gw_endpoints_get_pb(ec->fn, ec->fnlen, ec->host, &len, found);
    if (pb == NULL)
        return -1;
    uint64_t key = ep_key(pb, len);
    int rc = 0;
    if (!only_if_changed || !ec->sent || key != ec->sent_key) {
        static const nghttp2_nv head[] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        };
        uint8_t frame[5];
        grpcw_frame_write(frame, 0, (uint32_t)len);
        if ((!ec->p->resp_sent && h2b_pair_respond(ec->p, head, 2, 0) != 0) || h2b_pair_send(ec->p, frame, 5, 0) != 0 ||
            h2b_pair_send(ec->p, pb, len, 0) != 0)
            rc = -1;
        ec->sent = 1;
        ec->sent_key = key;
    }
    free(pb);
    return rc;
}

static void ep_not_found(ep_call_t *ec, const char *what)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "function %.*s: %s", (int)ec->fnlen, ec->fn, what);
    h2b_pair_fail(ec->p, FAAS_GRPC_NOT_FOUND, msg);
}

static void ep_on_tick(h2o_timeout_entry_t *e)
{
    for (ep_call_t *ec = ep_watches, *next; ec != NULL; ec = next) {
        next = ec->next;
        int found = 1;
        if (h2b_pair_queued(ec->p) > EP_WATCH_MAX_QUEUED || !h2b_pair_alive(ec->p))
            continue;
        if (ep_send(ec, &found, 1) != 0 && !found)
            ep_not_found(ec, "deleted"); /* the pair ends; ep_on_free unlinks ec */
    }
    if (ep_watches != NULL)
        h2o_timeout_link(ep_loop, &ep_every, &ep_entry);
}

static void ep_answer(ep_call_t *ec)
{
    int found = 1;
    if (ep_send(ec, &found, 0) != 0) {
        if (!found)
            ep_not_found(ec, "no such function");
        else
            h2b_pair_fail(ec->p, FAAS_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        return;
    }
    if (!ec->watch) {
        h2b_hdrs_add(&ec->p->trl, (const uint8_t *)"grpc-status", 11, (const uint8_t *)"0", 1);
        h2b_pair_send(ec->p, NULL, 0, 1);
        return;
    }
    ec->next = ep_watches;
    if (ep_watches != NULL)
        ep_watches->prev = ec;
    ep_watches = ec;
    if (ep_loop != NULL && !h2o_timeout_is_linked(&ep_entry))
        h2o_timeout_link(ep_loop, &ep_every, &ep_entry);
}

static void ep_on_resolved(void *ud, int found)
{
    ep_call_t *ec = ud;
    ec->resolving = NULL;
    if (found > 0)
        ep_answer(ec);
    else if (found == 0)
        ep_not_found(ec, "no such function");
    else
        h2b_pair_fail(ec->p, FAAS_GRPC_UNAVAILABLE, "function not confirmed by discovery in time");
}

/* The whole request is in: one uncompressed EndpointsRequest naming a function. */
static void ep_request_done(h2b_pair_t *p)
{
    ep_call_t *ec = p->owner;
    if (ec == NULL || p->failed || ec->sent || ec->resolving != NULL)
        return;
    const char *err = NULL;
    if (gw_ep_parse_request(ec->req, ec->reqlen, ec->fn, &err) != 0) {
        h2b_pair_fail(p, FAAS_GRPC_INVALID_ARGUMENT, err);
        return;
    }
    ec->fnlen = strlen(ec->fn);
    disp_fn_info_t info;
    if (disp_lookup(ec->fn, ec->fnlen, &info) == 0) {
        ep_answer(ec);
        return;
    }
    /* the table may be behind discovery (a deploy a moment ago): ask before NOT_FOUND */
    disp_resolve_t *res = disp_resolve(DISP_PROTO_HTTP, ec->fn, ec->fnlen, ep_on_resolved, ec);
    if (res != NULL) /* else ep_on_resolved has run */
        ec->resolving = res;
}

static int ep_on_data(h2b_pair_t *p, const uint8_t *data, size_t len)
{
    ep_call_t *ec = p->owner;
    if (ec == NULL || p->failed)
        return 1;
    if (len > EP_MAX_REQ - ec->reqlen) {
        h2b_pair_fail(p, FAAS_GRPC_RESOURCE_EXHAUSTED, "EndpointsRequest too large");
        return 1;
    }
    memcpy(ec->req + ec->reqlen, data, len);
    ec->reqlen += len;
    return 1;
}

/* A call to faas.EndpointsApi: Get or Watch; anything else is UNIMPLEMENTED. */
static void ep_start(h2b_pair_t *p, grpcw_slice_t meth, int eos)
{
    int watch = meth.len == 5 && memcmp(meth.ptr, "Watch", 5) == 0;
    if (!watch && !(meth.len == 3 && memcmp(meth.ptr, "Get", 3) == 0)) {
        h2b_pair_fail(p, FAAS_GRPC_UNIMPLEMENTED, EP_SERVICE " has Get and Watch");
        return;
    }
    ep_call_t *ec = calloc(1, sizeof(*ec));
    if (ec == NULL) {
        h2b_pair_fail(p, FAAS_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        return;
    }
    ec->p = p;
    ec->watch = watch;
    const nghttp2_nv *auth = find(p, ":authority");
    if (auth != NULL) /* what the client dialled: a wildcard-bound port's host */
        gw_ep_authority_host((const char *)auth->value, auth->valuelen, ec->host, sizeof(ec->host));
    p->owner = ec;
    p->on_free = ep_on_free;
    if (eos)
        ep_request_done(p);
}

static void route_call(h2b_pair_t *p, int resolved);

/* The client reset its stream while its function was being resolved. */
static void on_miss_free(h2b_pair_t *p)
{
    disp_resolve_cancel(p->owner);
    p->owner = NULL;
}

static void on_miss_resolved(void *ud, int found)
{
    h2b_pair_t *p = ud;
    p->owner = NULL;
    p->on_free = NULL;
    if (found >= 0) {
        route_call(p, 1); /* routes now, or says the miss as before */
        return;
    }
    gw_metrics_other();
    h2b_pair_fail(p, faas_err_grpc(FAAS_ERR_UNAVAILABLE),
                  disp_ready() ? "function not confirmed by discovery in time" : "gateway not synced with discovery yet");
}

/* A routing miss not yet made sure of: held until discovery has had its word. */
static int hold_miss(h2b_pair_t *p, disp_proto_t proto, const void *key, size_t len, int resolved)
{
    if (resolved)
        return 0;
    p->on_free = on_miss_free;
    disp_resolve_t *r = disp_resolve(proto, key, len, on_miss_resolved, p);
    if (r != NULL) /* else on_miss_resolved has run */
        p->owner = r;
    return 1;
}

static void on_request(h2b_pair_t *p, int eos)
{
    (void)eos;
    route_call(p, 0);
}

static void route_call(h2b_pair_t *p, int resolved)
{
    if (p->req_too_large) {
        /* refused before any function is involved; nghttp2 kept none of it */
        gw_metrics_other();
        h2b_pair_fail(p, FAAS_GRPC_RESOURCE_EXHAUSTED, "request metadata too large");
        return;
    }
    const nghttp2_nv *method = find(p, ":method"), *path = find(p, ":path"), *ct = find(p, "content-type");
    if (!nv_is(method, "POST") || path == NULL) {
        gw_metrics_other();
        h2b_pair_http_error(p, 405);
        return;
    }
    if (ct == NULL || !grpcw_content_type_ok((const char *)ct->value, ct->valuelen)) {
        gw_metrics_other();
        h2b_pair_http_error(p, 415);
        return;
    }
    grpcw_slice_t svc, meth;
    const char *err = NULL;
    if (grpcw_parse_path((const char *)path->value, path->valuelen, &svc, &meth, &err) != 0) {
        gw_metrics_other();
        h2b_pair_fail(p, FAAS_GRPC_UNIMPLEMENTED, err);
        return;
    }
    if (!resolved && svc.len == sizeof(EP_SERVICE) - 1 && memcmp(svc.ptr, EP_SERVICE, svc.len) == 0) {
        gw_metrics_other();
        ep_start(p, meth, p->down.in_eos);
        return;
    }
    char rid[72], msg[200];
    const char *fn;
    size_t fnlen;
    const nghttp2_nv *ff = find(p, "faas-function");
    if (ff != NULL) {
        fn = disp_route(DISP_PROTO_HTTP, (const char *)ff->value, ff->valuelen, &fnlen);
        if (fn == NULL && fn_name_ok(ff->value, ff->valuelen) &&
            hold_miss(p, DISP_PROTO_HTTP, ff->value, ff->valuelen, resolved))
            return;
        if (!fn_name_ok(ff->value, ff->valuelen) || fn == NULL) {
            gw_metrics_other();
            snprintf(msg, sizeof(msg), "function %.*s: no such function", (int)(ff->valuelen < 64 ? ff->valuelen : 64),
                     (const char *)ff->value);
            h2b_pair_fail(p, FAAS_GRPC_UNIMPLEMENTED,
                          fn_name_ok(ff->value, ff->valuelen) ? msg : "bad faas-function header");
            return;
        }
    } else if ((fn = disp_route(DISP_PROTO_GRPC, svc.ptr, svc.len, &fnlen)) == NULL) {
        if (hold_miss(p, DISP_PROTO_GRPC, svc.ptr, svc.len, resolved))
            return;
        gw_metrics_other();
        snprintf(msg, sizeof(msg), "no function serves %.*s", (int)(svc.len < 120 ? svc.len : 120), svc.ptr);
        FAAS_INFO("event=grpc_error grpc_status=12 msg=\"%s\"", msg);
        h2b_pair_fail(p, FAAS_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    disp_fn_info_t info = {0};
    disp_lookup(fn, fnlen, &info);
    /* the call lives until its grpc-timeout or the function's max duration, whichever first */
    uint64_t now = faas_now_ms(), deadline = now + info.max_duration_ms, tmo;
    const nghttp2_nv *t = find(p, "grpc-timeout");
    if (t != NULL && grpcw_parse_timeout((const char *)t->value, t->valuelen, &tmo) == 0 && tmo < info.max_duration_ms)
        deadline = now + tmo;
    make_rid(find(p, "x-request-id"), rid, sizeof(rid));
    front_t *fr = (front_t *)p->front;
    memset(fr, 0, sizeof(*fr));
    fr->max_msg = info.max_body_bytes != 0 && info.max_body_bytes < UINT32_MAX ? (uint32_t)info.max_body_bytes
                                                                               : FAAS_SPEC_DEFAULT_MAX_BODY_BYTES;
    fr->fn = fn;
    fr->fnlen = fnlen;
    fr->start_us = faas_now_us();
    disp_call_t *c = disp_call_bridge(p, DISP_PROTO_GRPC, &grpc_sink, p);
    if (c == NULL || call_headers(p, c) != 0) {
        h2b_pair_fail(p, FAAS_GRPC_RESOURCE_EXHAUSTED, "gateway out of memory");
        return;
    }
    disp_call_start(c, fn, fnlen, rid, deadline);
}

/* Messages over the function's body limit end the call with RESOURCE_EXHAUSTED. */
static int on_data(h2b_pair_t *p, const uint8_t *data, size_t len)
{
    if (is_ep(p))
        return ep_on_data(p, data, len);
    front_t *fr = (front_t *)p->front;
    const char *err = NULL;
    if (fr->max_msg == 0 || grpcw_scan(&fr->scan, data, len, fr->max_msg, &err) == 0)
        return 0;
    fr->max_msg = 0;
    h2b_pair_fail(p, faas_err_grpc(FAAS_ERR_TOO_LARGE), err);
    return -1;
}

static void on_end(h2b_pair_t *p)
{
    if (is_ep(p))
        ep_request_done(p);
}

static const h2b_server_cbs_t server_cbs = {.on_request = on_request, .on_data = on_data, .on_end = on_end};

static void on_accept(h2o_socket_t *ls, const char *err)
{
    if (err != NULL)
        return;
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(ls);
        if (sock == NULL)
            return;
        if (gw_conncap_accept(sock, GW_PORT_GRPC) != 0)
            continue; /* over a connection cap: closed */
        disp_h2b_accept(sock, &server_cbs);
    }
}

int gw_grpc_bind(const char *addr, int *fds, unsigned n, const char **err)
{
    int best_effort = addr == NULL;
    fds[0] = -1;
    if (addr == NULL)
        addr = GW_GRPC_DEFAULT_LISTEN;
    if (strcmp(addr, "off") == 0)
        return 0;
    if (faas_listen_tcp_group(addr, fds, n, err) != 0) {
        fds[0] = -1;
        if (best_effort) {
            FAAS_WARN("event=grpc_listen_failed addr=%s err=\"%s\" msg=\"gRPC disabled\"", addr, *err);
            return 0;
        }
        return -1;
    }
    FAAS_INFO("event=grpc_listening addr=%s listeners=%u", addr, n);
    return 0;
}

void gw_grpc_serve(h2o_context_t *ctx, int fd)
{
    if (fd < 0)
        return;
    ep_loop = ctx->loop; /* this loop's Watch calls look for changes on its timer */
    h2o_timeout_init(ctx->loop, &ep_every, EP_WATCH_EVERY_MS);
    ep_entry.cb = ep_on_tick;
    listener = h2o_evloop_socket_create(ctx->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(listener, on_accept);
    sweep_loop = ctx->loop;
    h2o_timeout_init(ctx->loop, &sweep_every, 1000);
    sweep_entry.cb = on_sweep;
    h2o_timeout_link(ctx->loop, &sweep_every, &sweep_entry);
}
