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

static int fn_name_ok(const uint8_t *s, size_t len)
{
    if (len == 0 || len > 63)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || (s[i] == '-' && i > 0)))
            return 0;
    return 1;
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
    front_t *fr = (front_t *)p->front;
    const char *err = NULL;
    if (fr->max_msg == 0 || grpcw_scan(&fr->scan, data, len, fr->max_msg, &err) == 0)
        return 0;
    fr->max_msg = 0;
    h2b_pair_fail(p, faas_err_grpc(FAAS_ERR_TOO_LARGE), err);
    return -1;
}

static const h2b_server_cbs_t server_cbs = {.on_request = on_request, .on_data = on_data};

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
    listener = h2o_evloop_socket_create(ctx->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(listener, on_accept);
    sweep_loop = ctx->loop;
    h2o_timeout_init(ctx->loop, &sweep_every, 1000);
    sweep_entry.cb = on_sweep;
    h2o_timeout_link(ctx->loop, &sweep_every, &sweep_entry);
}
