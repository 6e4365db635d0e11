/* dispatcher/call.c - one protocol-neutral call from a front end to an agent: request
 * metadata and body in, response (or a platform error) out through the front end's
 * sink, a deadline, in-flight accounting, and one h2c stream on the agent's single
 * port through the h2 bridge (h2b/), which multiplexes one connection per agent.
 *
 * Local calls (HTTP, Thrift) own a "local caller" pair: the front end pushes the
 * request and takes the response through the dispatcher's h2b_local_t callbacks below.
 * Bridged calls (gRPC) use the caller's own server pair: bytes, trailers and flow
 * control pass between the two streams inside the bridge. */
#include "dispatcher/internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"

#define CALL_CACHE 256 /* a burst of pipelined calls (128 in flight) fits */

static __thread disp_call_t *cache[CALL_CACHE]; /* closed calls reused without malloc */
static __thread size_t ncache;

static const char *const proto_name[DISP_NPROTO] = {"http", "grpc", "thrift"};

static void on_deadline(disp_timer_t *t);

/* ---- creation ---- */

static disp_call_t *call_alloc(disp_proto_t proto, const disp_sink_t *sink, void *owner, h2b_pair_t *p)
{
    disp_call_t *c = ncache != 0 ? cache[--ncache] : malloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->proto = proto;
    c->sink = sink;
    c->owner = owner;
    c->pair = p;
    c->hdrs.ar = &p->arena;
    c->deadline_timer.cb = on_deadline;
    c->start_us = faas_now_us();
    return c;
}

static void call_free(disp_call_t *c)
{
    if (ncache < CALL_CACHE)
        cache[ncache++] = c;
    else
        free(c);
}

static void on_free_entry(h2o_timeout_entry_t *e)
{
    while (disp_g.frees != NULL) {
        disp_call_t *c = disp_g.frees;
        disp_g.frees = c->next_free;
        call_free(c);
    }
}

/* Frees c after this loop iteration: callers up the stack may still hold it. */
static void free_later(disp_call_t *c)
{
    c->next_free = disp_g.frees;
    disp_g.frees = c;
    if (!h2o_timeout_is_linked(&disp_g.free_entry)) {
        disp_g.free_entry.cb = on_free_entry;
        h2o_timeout_link(disp_g.loop, &disp_g.ctx->zero_timeout, &disp_g.free_entry);
    }
}

static const h2b_local_t local_ops;

disp_call_t *disp_call_new(disp_proto_t proto, const disp_sink_t *sink, void *owner)
{
    h2b_pair_t *p = h2b_pair_new_local(&local_ops, NULL);
    if (p == NULL)
        return NULL;
    disp_call_t *c = call_alloc(proto, sink, owner, p);
    if (c == NULL) {
        h2b_pair_release(p);
        return NULL;
    }
    p->owner = c;
    return c;
}

static void bridged_free(h2b_pair_t *p);

disp_call_t *disp_call_bridge(h2b_pair_t *down, disp_proto_t proto, const disp_sink_t *sink, void *owner)
{
    disp_call_t *c = call_alloc(proto, sink, owner, down);
    if (c == NULL)
        return NULL;
    c->bridged = 1;
    down->owner = c;
    down->on_free = bridged_free;
    return c;
}

int disp_call_header(disp_call_t *c, const char *name, size_t nl, const char *value, size_t vl)
{
    return h2b_hdrs_add(&c->hdrs, (const uint8_t *)name, nl, (const uint8_t *)value, vl);
}

int disp_call_body(disp_call_t *c, const void *data, size_t len, int eos)
{
    if (c->bridged || c->pair == NULL)
        return -1;
    return h2b_pair_push(c->pair, data, len, eos);
}

void disp_call_set_async(disp_call_t *c)
{
    c->async = 1;
}

void disp_call_set_agent_deadline(disp_call_t *c, uint64_t ms)
{
    c->agent_deadline_ms = ms;
}

void *disp_call_owner(const disp_call_t *c)
{
    return c->owner;
}

const char *disp_call_request_id(const disp_call_t *c)
{
    return c->rid;
}

/* ---- ending ---- */

/* 1 if c was counted against an instance (now it is not). */
static int end_inflight(disp_call_t *c)
{
    if (c->inst == NULL)
        return 0;
    disp_inst_end(c->inst, faas_now_ms());
    c->inst = NULL;
    return 1;
}

/* The dispatcher is done with c's upstream side: timers, queue place, capacity. */
static void call_stop(disp_call_t *c)
{
    disp_timer_stop(&c->wait_timer);
    disp_timer_stop(&c->deadline_timer);
    if (c->fn != NULL)
        disp_wait_remove(c->fn, &c->wait);
    /* capacity freed: calls held by a concurrency limit can go now, here or on the
     * other loops holding some (their count is in the shared total) */
    if (end_inflight(c) && c->fn != NULL) {
        if (c->fn->nwaiters != 0)
            disp_on_instance_ready(c->fn);
        if (disp_fshared_waiters(c->fn->sh) > c->fn->nwaiters)
            disp_control_wake_others(c->fn);
    }
}

static void release_pair(disp_call_t *c)
{
    if (!c->bridged && c->pair != NULL) {
        h2b_pair_t *p = c->pair;
        c->pair = NULL;
        p->owner = NULL;
        h2b_pair_release(p);
    }
}

void disp_call_fail(disp_call_t *c, faas_err_t kind, const char *what)
{
    if (c->ended)
        return;
    c->ended = 1;
    call_stop(c);
    release_pair(c);
    const char *fn = c->fn != NULL ? c->fn->name : "";
    int fl = c->fn != NULL ? (int)c->fn->name_len : 0;
    if (c->started)
        FAAS_WARN("event=response_aborted request_id=%s fn=%.*s msg=\"%s\"", c->rid, fl, fn, what);
    else
        FAAS_WARN("event=request_error request_id=%s fn=%.*s protocol=%s status=%d ms=%" PRIu64 " msg=\"%s\"", c->rid,
                  fl, fn, proto_name[c->proto], faas_err_http(kind), (faas_now_us() - c->start_us) / 1000, what);
    c->sink->error(c, kind, what, c->started);
}

void disp_call_close(disp_call_t *c)
{
    if (c->closed || c->bridged)
        return;
    c->closed = 1;
    c->ended = 1;
    call_stop(c);
    release_pair(c);
    free_later(c);
}

void disp_call_consumed(disp_call_t *c, size_t len)
{
    if (c->pair != NULL && !c->bridged)
        h2b_pair_window(c->pair, len);
}

static void bridged_free(h2b_pair_t *p)
{
    disp_call_t *c = p->owner;
    if (c == NULL)
        return;
    p->owner = NULL;
    c->closed = c->ended = 1;
    call_stop(c);
    if (c->sink->done != NULL && c->fn != NULL)
        c->sink->done(c, p->final_status, p->down_done ? p->http_status : 0);
    free_later(c);
}

static void on_deadline(disp_timer_t *t)
{
    disp_call_fail(H2O_STRUCT_FROM_MEMBER(disp_call_t, deadline_timer, t), FAAS_ERR_DEADLINE, "deadline exceeded");
}

/* ---- the response of a local call (h2b local caller callbacks) ---- */

static int status_of(const nghttp2_nv *v)
{
    int st = 0;
    for (size_t i = 0; v != NULL && i < v->valuelen; i++)
        st = v->value[i] >= '0' && v->value[i] <= '9' && i < 3 ? st * 10 + (v->value[i] - '0') : 1000;
    return st;
}

static void on_head(h2b_pair_t *p)
{
    disp_call_t *c = p->owner;
    if (c == NULL || c->ended)
        return;
    /* the agent's own errors (faas-error) are the platform's, in the caller's terms */
    const nghttp2_nv *fe = h2b_find(&p->resp, "faas-error");
    if (fe != NULL) {
        int timeout = fe->valuelen == 7 && memcmp(fe->value, "timeout", 7) == 0;
        disp_call_fail(c, timeout ? FAAS_ERR_DEADLINE : FAAS_ERR_CRASHED,
                       timeout ? "deadline exceeded" : "function crashed or reset the request");
        return;
    }
    int st = status_of(h2b_find(&p->resp, ":status"));
    if (st < 200 || st > 999) {
        disp_call_fail(c, FAAS_ERR_CRASHED, "bad response from the function");
        return;
    }
    size_t k = 0; /* pseudo headers come first (RFC 9113 section 8.3) */
    while (k < p->resp.n && p->resp.nv[k].namelen != 0 && p->resp.nv[k].name[0] == ':')
        k++;
    c->started = 1;
    c->sink->head(c, st, p->resp.nv + k, p->resp.n - k);
}

static void on_data(h2b_pair_t *p, const uint8_t *d, size_t len)
{
    disp_call_t *c = p->owner;
    if (c == NULL || c->ended || !c->started) {
        h2b_pair_window(p, len);
        return;
    }
    c->sink->data(c, d, len);
}

static void on_end(h2b_pair_t *p)
{
    disp_call_t *c = p->owner;
    if (c == NULL || c->ended)
        return;
    c->ended = 1;
    call_stop(c);
    c->sink->end(c, p->trl.nv, p->trl.n);
}

static void on_broken(h2b_pair_t *p, uint32_t code, const char *why)
{
    disp_call_t *c = p->owner;
    if (c == NULL || c->ended)
        return;
    if (c->started)
        why = "function response broken";
    else if (code == NGHTTP2_REFUSED_STREAM)
        why = strstr(why, "connect") != NULL ? "cannot connect to the function" : "function refused the request";
    else
        why = "function crashed or reset the request";
    disp_call_fail(c, FAAS_ERR_CRASHED, why);
}

static const h2b_local_t local_ops = {on_head, on_data, on_end, on_broken};

/* ---- an instance that cannot be reached ----
 * Its agent refused the connect (killed, its pod gone with a crashed worker manager)
 * while discovery still lists it until its lease lapses. Not a byte of the call left
 * (h2b sends nothing before the connect completes), so the call goes to another
 * instance or waits for a cold start, and the instance is dropped at once: every call
 * after it would meet the same refusal. Bounded, so a table of dead instances cannot
 * keep a call going round. */
#define CALL_RETRIES 4

static uint64_t retried, unreachable; /* atomic: every loop counts */

int disp_call_unsent(h2b_pair_t *p)
{
    disp_call_t *c = p->owner;
    if (c == NULL || c->ended || c->inst == NULL || c->fn == NULL || c->retries >= CALL_RETRIES)
        return 0;
    disp_inst_t *dead = c->inst;
    disp_fn_t *fn = c->fn;
    if (!dead->removed) {
        __atomic_add_fetch(&unreachable, 1, __ATOMIC_RELAXED);
        FAAS_WARN("event=instance_unreachable fn=%.*s instance=%s endpoint=%s msg=\"dropped; calls go elsewhere\"",
                  (int)fn->name_len, fn->name, dead->id, dead->endpoint);
        /* its worker manager frees whatever is left of it (a live pod behind a bad route) */
        if (!dead->reserved && !dead->releasing) {
            dead->releasing = 1;
            disp_control_release(dead, "unreachable");
        }
        disp_inst_remove(dead);
    }
    end_inflight(c); /* may free dead */
    c->retries++;
    __atomic_add_fetch(&retried, 1, __ATOMIC_RELAXED);
    disp_inst_t *inst = fn->nwaiters == 0 ? disp_pick(fn) : NULL;
    if (inst != NULL)
        disp_call_send(c, inst);
    else
        disp_hold(c, fn);
    return 1;
}

void disp_call_metrics(FILE *out)
{
    fprintf(out,
            "# HELP faas_gateway_instances_unreachable_total Instances dropped because their agent refused the "
            "connect.\n# TYPE faas_gateway_instances_unreachable_total counter\n"
            "faas_gateway_instances_unreachable_total %" PRIu64 "\n"
            "# HELP faas_gateway_calls_rerouted_total Calls sent elsewhere after their instance could not be "
            "reached.\n# TYPE faas_gateway_calls_rerouted_total counter\nfaas_gateway_calls_rerouted_total %" PRIu64
            "\n",
            __atomic_load_n(&unreachable, __ATOMIC_RELAXED), __atomic_load_n(&retried, __ATOMIC_RELAXED));
}

/* ---- sending ---- */

#define NV(n, nl, v, vl, f) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), (f)})

/* The request's headers and the platform's metadata for the agent: n entries at nv. */
static size_t agent_headers(disp_call_t *c, nghttp2_nv *nv, char *dl)
{
    size_t n = c->hdrs.n;
    memcpy(nv, c->hdrs.nv, n * sizeof(*nv));
    /* a value unique to each call would only churn both ends' HPACK tables */
    nv[n++] = NV("faas-request-id", 15, c->rid, strlen(c->rid), NGHTTP2_NV_FLAG_NO_INDEX);
    nv[n++] = NV("faas-function", 13, c->fn->name, c->fn->name_len, NGHTTP2_NV_FLAG_NONE);
    uint64_t now = faas_now_ms();
    uint64_t left = c->deadline_ms > now ? c->deadline_ms - now : 0;
    size_t dlen = faas_fmt_u64(dl, c->agent_deadline_ms != 0 ? c->agent_deadline_ms : left);
    /* indexed: at ms granularity it is the spec's timeout (e.g. 30000) nearly always */
    nv[n++] = NV("faas-deadline-ms", 16, dl, dlen, NGHTTP2_NV_FLAG_NONE);
    /* the agent's one port tells protocols apart by this; HTTP, the common case, by its absence */
    if (c->proto != DISP_PROTO_HTTP)
        nv[n++] = NV("faas-protocol", 13, proto_name[c->proto], strlen(proto_name[c->proto]), NGHTTP2_NV_FLAG_NONE);
    return n;
}

void disp_call_send(disp_call_t *c, disp_inst_t *inst)
{
    /* the pick saw room, but another loop may have taken the last slot since: pick
     * again (the shared count changed, so this ends), else wait like any held call */
    while (disp_inst_begin(inst) != 0)
        if ((inst = disp_pick(c->fn)) == NULL) {
            disp_hold(c, c->fn);
            return;
        }
    disp_call_send_begun(c, inst);
}

void disp_call_send_begun(disp_call_t *c, disp_inst_t *inst)
{
    h2b_conn_t *conn = h2b_client_get(inst->endpoint);
    if (conn == NULL) {
        disp_inst_end(inst, faas_now_ms());
        disp_call_fail(c, FAAS_ERR_CRASHED, "cannot connect to the function");
        return;
    }
    nghttp2_nv stack[48], *nv = c->hdrs.n + 4 <= 48 ? stack : malloc((c->hdrs.n + 4) * sizeof(*nv));
    if (nv == NULL) {
        disp_inst_end(inst, faas_now_ms());
        disp_call_fail(c, FAAS_ERR_EXHAUSTED, "out of memory");
        return;
    }
    char dl[24];
    size_t n = agent_headers(c, nv, dl);
    c->inst = inst;
    if (inst->reserved)
        disp_on_reserved_call(c->fn, c->rid);
    int rc = h2b_pair_connect(c->pair, conn, nv, n);
    if (nv != stack)
        free(nv);
    if (rc != 0)
        disp_call_fail(c, FAAS_ERR_CRASHED, "cannot open a stream to the function");
}

void disp_call_start(disp_call_t *c, const char *name, size_t len, const char *rid, uint64_t deadline_ms)
{
    snprintf(c->rid, sizeof(c->rid), "%s", rid != NULL ? rid : "");
    disp_fn_t *fn = disp_fn_find(&disp_g.table, name, len);
    if (fn == NULL || !fn->known) {
        c->ended = 1;
        c->sink->error(c, FAAS_ERR_NOT_FOUND, "no such function", 0);
        return;
    }
    c->fn = fn;
    disp_ep_count(fn); /* the endpoints API's rate (endpoints.c) */
    uint64_t now = faas_now_ms();
    c->deadline_ms =
        deadline_ms != 0 ? deadline_ms : now + (fn->p.timeout_ms ? fn->p.timeout_ms : FAAS_SPEC_DEFAULT_TIMEOUT_MS);
    disp_timer_start(&c->deadline_timer, c->deadline_ms);
    disp_inst_t *inst = fn->nwaiters == 0 ? disp_pick(fn) : NULL;
    if (inst != NULL)
        disp_call_send(c, inst);
    else
        disp_hold(c, fn);
}
