/* dispatcher/grpc.c - gRPC calls on the dispatcher: service index, instance choice,
 * the cold-start queue (shared with HTTP requests: a gRPC waiter carries callbacks)
 * and the bridge to agents' stream endpoints. */
#include "dispatcher/grpc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "dispatcher/internal.h"
#include "proto/faas.pb-c.h"

#define DEFAULT_MAX_DURATION_MS 900000u

static disp_grpc_cbs_t cbs;

/* ---- service index: built lazily from the packed specs, refreshed per version ---- */

typedef struct {
    const disp_fn_t *fn;
    const uint8_t *pb;
    size_t len;
    uint64_t version;
    Faas__FunctionSpec *spec;
} idx_t;

static idx_t *idx;
static size_t nidx, capidx;

static idx_t *idx_of(const disp_fn_t *fn)
{
    idx_t *e = NULL;
    for (size_t i = 0; i < nidx; i++)
        if (idx[i].fn == fn)
            e = &idx[i];
    if (e == NULL) {
        if (nidx == capidx) {
            size_t cap = capidx ? capidx * 2 : 16;
            idx_t *n = realloc(idx, cap * sizeof(*n));
            if (n == NULL)
                return NULL;
            idx = n;
            capidx = cap;
        }
        e = &idx[nidx++];
        memset(e, 0, sizeof(*e));
        e->fn = fn;
    }
    if (e->spec == NULL || e->pb != fn->spec_pb || e->len != fn->spec_len || e->version != fn->p.version) {
        if (e->spec != NULL)
            faas__function_spec__free_unpacked(e->spec, NULL);
        e->spec = fn->spec_pb != NULL ? faas__function_spec__unpack(NULL, fn->spec_len, fn->spec_pb) : NULL;
        e->pb = fn->spec_pb;
        e->len = fn->spec_len;
        e->version = fn->p.version;
    }
    return e->spec != NULL ? e : NULL;
}

int disp_grpc_route(const char *service, size_t len, char *out, size_t cap)
{
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        if (!fn->known)
            continue;
        idx_t *e = idx_of(fn);
        if (e == NULL)
            continue;
        for (size_t k = 0; k < e->spec->n_grpc_services; k++) {
            const char *s = e->spec->grpc_services[k];
            if (strlen(s) == len && memcmp(s, service, len) == 0 && fn->name_len < cap) {
                memcpy(out, fn->name, fn->name_len);
                out[fn->name_len] = '\0';
                return 0;
            }
        }
    }
    return -1;
}

int disp_grpc_fn_info(const char *name, size_t len, uint32_t *max_duration_ms)
{
    disp_fn_t *fn = disp_fn_find(&disp_g.table, name, len);
    if (fn == NULL || !fn->known)
        return -1;
    idx_t *e = idx_of(fn);
    *max_duration_ms = e != NULL && e->spec->max_duration_ms ? e->spec->max_duration_ms : DEFAULT_MAX_DURATION_MS;
    return 0;
}

int disp_grpc_code_for_http(int status)
{
    switch (status) {
    case 404:
        return 12; /* the function went away: nothing implements the service now */
    case 413:
    case 429:
        return 8;
    case 504:
        return 4;
    case 502:
    case 503:
        return 14;
    default:
        return 13;
    }
}

/* ---- calls ---- */

typedef struct {
    h2b_pair_t *pair;
    disp_fn_t *fn;
    disp_inst_t *inst; /* while counted in its in-flight */
    disp_waiter_t wait;
    h2o_timeout_entry_t wait_timer;
    h2b_hdrs_t hdrs; /* what the agent gets, minus the time-dependent ones */
    uint64_t deadline_ms, start_us;
    char rid[72];
} gcall_t;

static void unlink_timer(h2o_timeout_entry_t *e)
{
    if (h2o_timeout_is_linked(e))
        h2o_timeout_unlink(e);
}

/* 1 if the call was counted against an instance (now it is not). */
static int end_inflight(gcall_t *c)
{
    if (c->inst == NULL)
        return 0;
    disp_inst_end(c->inst, faas_now_ms());
    c->inst = NULL;
    return 1;
}

static void call_free(h2b_pair_t *p)
{
    gcall_t *c = p->owner;
    if (c == NULL)
        return;
    unlink_timer(&c->wait_timer);
    if (c->fn != NULL)
        disp_wait_remove(c->fn, &c->wait);
    if (end_inflight(c) && c->fn != NULL && c->fn->nwaiters != 0)
        disp_on_instance_ready(c->fn);
    if (cbs.on_done != NULL && c->fn != NULL)
        cbs.on_done(c->fn->name, c->fn->name_len, p->final_status, p->down_done ? p->http_status : 0, c->start_us);
    for (size_t i = 0; i < c->hdrs.n; i++)
        free(c->hdrs.nv[i].name);
    free(c->hdrs.nv);
    free(c);
    p->owner = NULL;
}

static void call_fail(gcall_t *c, int code, const char *what)
{
    unlink_timer(&c->wait_timer);
    if (c->fn != NULL)
        disp_wait_remove(c->fn, &c->wait);
    FAAS_WARN("event=grpc_error request_id=%s fn=%.*s grpc_status=%d msg=\"%s\"", c->rid,
              c->fn ? (int)c->fn->name_len : 0, c->fn ? c->fn->name : "", code, what);
    h2b_pair_fail(c->pair, code, what);
}

#define NV(n, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), (vl), NGHTTP2_NV_FLAG_NONE})

static void send_to(gcall_t *c, disp_inst_t *inst)
{
    if (inst->stream_endpoint[0] == '\0') {
        call_fail(c, 14, "the function's instance has no stream endpoint");
        return;
    }
    h2b_conn_t *conn = h2b_client_get(inst->stream_endpoint);
    if (conn == NULL) {
        call_fail(c, 14, "cannot connect to the function");
        return;
    }
    size_t n = c->hdrs.n;
    nghttp2_nv *nv = malloc((n + 2) * sizeof(*nv));
    if (nv == NULL) {
        call_fail(c, 8, "out of memory");
        return;
    }
    memcpy(nv, c->hdrs.nv, n * sizeof(*nv));
    char tmo[32], dl[24];
    if (c->deadline_ms != 0) {
        uint64_t now = faas_now_ms();
        uint64_t left = c->deadline_ms > now ? c->deadline_ms - now : 0;
        if (left == 0) {
            free(nv);
            call_fail(c, 4, "deadline exceeded");
            return;
        }
        /* the function sees the time that is actually left */
        size_t tl = cbs.format_timeout != NULL ? cbs.format_timeout(left, tmo, sizeof(tmo)) : 0;
        if (tl != 0)
            nv[n++] = NV("grpc-timeout", tmo, tl);
        int dlen = snprintf(dl, sizeof(dl), "%" PRIu64, left);
        nv[n++] = NV("faas-deadline-ms", dl, (size_t)dlen);
    }
    c->inst = inst;
    disp_inst_begin(inst);
    int rc = h2b_pair_connect(c->pair, conn, nv, n);
    free(nv);
    if (rc != 0) {
        end_inflight(c);
        call_fail(c, 14, "cannot open a stream to the function");
    }
}

static void on_wait_ready(disp_waiter_t *w, disp_inst_t *inst)
{
    gcall_t *c = H2O_STRUCT_FROM_MEMBER(gcall_t, wait, w);
    unlink_timer(&c->wait_timer);
    send_to(c, inst);
}

static void on_wait_fail(disp_waiter_t *w, int status, const char *what)
{
    gcall_t *c = H2O_STRUCT_FROM_MEMBER(gcall_t, wait, w);
    call_fail(c, disp_grpc_code_for_http(status), what);
}

static void on_wait_timeout(h2o_timeout_entry_t *e)
{
    gcall_t *c = H2O_STRUCT_FROM_MEMBER(gcall_t, wait_timer, e);
    call_fail(c, 14, "cold start timed out");
}

void disp_grpc_forward(h2b_pair_t *p, const char *name, size_t len, const nghttp2_nv *nv, size_t n,
                       uint64_t deadline_ms, const char *request_id)
{
    gcall_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        h2b_pair_fail(p, 8, "out of memory");
        return;
    }
    c->pair = p;
    c->start_us = faas_now_us();
    c->deadline_ms = deadline_ms;
    snprintf(c->rid, sizeof(c->rid), "%s", request_id ? request_id : "");
    c->wait.on_ready = on_wait_ready;
    c->wait.on_fail = on_wait_fail;
    c->wait.rid = c->rid;
    c->wait_timer.cb = on_wait_timeout;
    p->owner = c;
    p->on_free = call_free;
    c->hdrs.nv = malloc((n ? n : 1) * sizeof(nghttp2_nv));
    for (size_t i = 0; c->hdrs.nv != NULL && i < n; i++) {
        uint8_t *b = malloc(nv[i].namelen + nv[i].valuelen + 2);
        if (b == NULL)
            break;
        memcpy(b, nv[i].name, nv[i].namelen);
        b[nv[i].namelen] = 0;
        memcpy(b + nv[i].namelen + 1, nv[i].value, nv[i].valuelen);
        b[nv[i].namelen + 1 + nv[i].valuelen] = 0;
        c->hdrs.nv[c->hdrs.n++] = (nghttp2_nv){b, b + nv[i].namelen + 1, nv[i].namelen, nv[i].valuelen, 0};
    }
    if (c->hdrs.n != n) {
        h2b_pair_fail(p, 8, "out of memory");
        return;
    }
    disp_fn_t *fn = disp_fn_find(&disp_g.table, name, len);
    if (fn == NULL || !fn->known) {
        h2b_pair_fail(p, 12, "no such function");
        return;
    }
    c->fn = fn;
    if (deadline_ms != 0) {
        p->deadline_ms = deadline_ms;
        h2b_pair_watch_deadline(p);
    }
    disp_inst_t *inst = fn->nwaiters == 0 ? disp_pick(fn) : NULL;
    if (inst != NULL) {
        send_to(c, inst);
        return;
    }
    uint32_t cst = disp_g.cfg.cold_start_timeout_ms
                       ? disp_g.cfg.cold_start_timeout_ms
                       : (fn->p.cold_start_timeout_ms ? fn->p.cold_start_timeout_ms : 10000);
    if (disp_wait_push(&disp_g.table, fn, &c->wait, faas_now_ms(), cst) != 0) {
        call_fail(c, 8, "queue full");
        return;
    }
    h2o_timeout_link(disp_g.loop, disp_timeout_for(cst), &c->wait_timer);
    /* starts the Acquire calls the queue needs (or fails the queue if none can start) */
    disp_on_instance_ready(fn);
}

void disp_grpc_init(const disp_grpc_cbs_t *c)
{
    cbs = *c;
    disp_h2b_init(disp_g.loop);
}
