/* dispatcher/dispatcher.c - the request side of the dispatcher on the loop thread:
 * lookup, selection, the cold-start wait queue, deadlines, idle release, metrics. */
#include "dispatcher/internal.h"

#include <inttypes.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

disp_state_t disp_g;

#define IDLE_SCAN_MS 100
static h2o_timeout_t idle_timeout;
static h2o_timeout_entry_t idle_entry;

/* h2o timeouts have one fixed duration each: keep one per distinct value in use. */
static struct {
    uint32_t ms;
    h2o_timeout_t *t;
} timeouts[32];
static size_t ntimeouts;

h2o_timeout_t *disp_timeout_for(uint32_t ms)
{
    for (size_t i = 0; i < ntimeouts; i++)
        if (timeouts[i].ms == ms)
            return timeouts[i].t;
    if (ntimeouts == sizeof(timeouts) / sizeof(timeouts[0]))
        return timeouts[ntimeouts - 1].t; /* never happens with sane specs; stay bounded */
    h2o_timeout_t *t = h2o_mem_alloc(sizeof(*t));
    h2o_timeout_init(disp_g.loop, t, ms);
    timeouts[ntimeouts].ms = ms;
    timeouts[ntimeouts++].t = t;
    return t;
}

int disp_lookup(const char *name, size_t len, disp_fn_info_t *info)
{
    disp_fn_t *fn = disp_fn_find(&disp_g.table, name, len);
    if (fn == NULL || !fn->known)
        return -1;
    info->max_body_bytes = fn->p.max_body_bytes;
    info->timeout_ms = fn->p.timeout_ms;
    return 0;
}

uint64_t disp_cold_starts(void)
{
    return disp_g.cold_starts;
}

static void unlink_timer(h2o_timeout_entry_t *e)
{
    if (h2o_timeout_is_linked(e))
        h2o_timeout_unlink(e);
}

/* Stops counting r against its instance (frees a removed instance when last). */
/* 1 if r was counted against an instance (now it is not). */
static int end_inflight(disp_req_t *r)
{
    if (r->inst == NULL)
        return 0;
    disp_inst_end(r->inst, faas_now_ms());
    r->inst = NULL;
    return 1;
}

void disp_req_fail(disp_req_t *r, int status, const char *what)
{
    unlink_timer(&r->wait_timer);
    unlink_timer(&r->deadline_timer);
    if (r->fn != NULL)
        disp_wait_remove(r->fn, &r->wait);
    if (r->stream_id != 0 || r->up != NULL)
        disp_up_cancel(r);
    end_inflight(r);
    if (r->done || r->req == NULL)
        return;
    r->done = 1;
    if (r->started) {
        /* headers are out: the only honest thing left is to break the response */
        FAAS_WARN("event=response_aborted request_id=%s fn=%.*s msg=\"%s\"", r->rid, (int)r->fn->name_len, r->fn->name,
                  what);
        disp_up_abort_response(r);
        return;
    }
    int retry = status == 503 ? 1 : 0;
    FAAS_WARN("event=request_error request_id=%s fn=%.*s status=%d ms=%" PRIu64 " msg=\"%s\"", r->rid,
              (int)r->fn->name_len, r->fn->name, status, faas_now_ms() - r->start_ms, what);
    disp_g.cfg.send_error(r->req, status, r->fn->name, r->fn->name_len, what, retry);
}

void disp_req_finish_upstream(disp_req_t *r)
{
    unlink_timer(&r->deadline_timer);
    end_inflight(r);
    /* capacity freed: requests held by a concurrency limit can go now */
    if (r->fn != NULL && r->fn->nwaiters != 0)
        disp_on_instance_ready(r->fn);
}

static void on_dispose(void *p)
{
    disp_req_t *r = p;
    r->req = NULL;
    r->done = 1;
    unlink_timer(&r->wait_timer);
    unlink_timer(&r->deadline_timer);
    if (r->fn != NULL)
        disp_wait_remove(r->fn, &r->wait);
    if (r->up != NULL)
        disp_up_cancel(r);
    /* the client left mid-request: its slot can serve a held request */
    if (end_inflight(r) && r->fn != NULL && r->fn->nwaiters != 0)
        disp_on_instance_ready(r->fn);
    if (r->recv_buf != NULL)
        h2o_buffer_dispose(&r->recv_buf);
    if (r->send_buf != NULL)
        h2o_buffer_dispose(&r->send_buf);
}

static void send_to(disp_req_t *r, disp_inst_t *inst)
{
    r->inst = inst;
    disp_inst_begin(inst);
    disp_up_submit(r, inst->endpoint);
}

static void on_deadline(h2o_timeout_entry_t *e)
{
    disp_req_t *r = H2O_STRUCT_FROM_MEMBER(disp_req_t, deadline_timer, e);
    disp_req_fail(r, 504, "deadline exceeded");
}

static void on_wait_timeout(h2o_timeout_entry_t *e)
{
    disp_req_t *r = H2O_STRUCT_FROM_MEMBER(disp_req_t, wait_timer, e);
    disp_req_fail(r, 503, "cold start timed out");
}

/* Starts the Acquire calls the waiters need; -1 if one was needed and none could
 * start while nothing else can serve them (no worker known). */
static int maybe_acquire(disp_fn_t *fn, const char *rid)
{
    uint32_t n = disp_acquire_needed(fn);
    for (uint32_t i = 0; i < n; i++) {
        if (disp_control_acquire(fn, rid) != 0)
            return fn->acquiring == 0 && fn->ninst == 0 ? -1 : 0;
        fn->acquiring++;
    }
    return 0;
}

/* Fails every waiter that can no longer expect an instance. */
static void fail_waiters(disp_fn_t *fn, int status, const char *what)
{
    disp_waiter_t *w;
    while ((w = disp_wait_pop(fn)) != NULL) {
        if (w->on_fail != NULL) {
            w->on_fail(w, status, what);
            continue;
        }
        disp_req_t *r = H2O_STRUCT_FROM_MEMBER(disp_req_t, wait, w);
        disp_req_fail(r, status, what);
    }
}

void disp_on_instance_ready(disp_fn_t *fn)
{
    disp_inst_t *inst;
    while (fn->nwaiters != 0 && (inst = disp_pick(fn)) != NULL) {
        disp_waiter_t *w = disp_wait_pop(fn);
        if (w->on_ready != NULL) {
            w->on_ready(w, inst);
            continue;
        }
        disp_req_t *r = H2O_STRUCT_FROM_MEMBER(disp_req_t, wait, w);
        unlink_timer(&r->wait_timer);
        send_to(r, inst);
    }
    if (fn->nwaiters != 0) {
        disp_waiter_t *w = fn->waiters.next;
        const char *rid = w->on_ready != NULL ? w->rid : H2O_STRUCT_FROM_MEMBER(disp_req_t, wait, w)->rid;
        if (maybe_acquire(fn, rid) != 0)
            fail_waiters(fn, 503, "no worker available");
    }
}

void disp_on_function_deleted(disp_fn_t *fn)
{
    disp_fn_forget(fn);
    fail_waiters(fn, 404, "no such function");
}

/* 1 if a READY instance of the current version exists, busy or not: waiters held by a
 * concurrency limit will get a turn when one of its requests ends. */
static int has_current_instance(const disp_fn_t *fn)
{
    for (size_t k = 0; k < fn->ninst; k++) {
        const disp_inst_t *i = fn->inst[k];
        if (i->ready && !i->removed && !i->releasing && i->version == fn->p.version)
            return 1;
    }
    return 0;
}

void disp_on_acquire_failed(disp_fn_t *fn, const char *why)
{
    if (fn->acquiring == 0 && !has_current_instance(fn))
        fail_waiters(fn, 503, why);
}

void disp_forward(h2o_req_t *req, const char *name, size_t len, h2o_iovec_t path, h2o_header_t *hdrs, size_t nhdrs,
                  const char *request_id)
{
    disp_req_t *r = h2o_mem_alloc_shared(&req->pool, sizeof(*r), on_dispose);
    memset(r, 0, sizeof(*r));
    r->req = req;
    r->path = path;
    r->hdrs = hdrs;
    r->nhdrs = nhdrs;
    r->rid = request_id;
    r->start_ms = faas_now_ms();
    r->fn = disp_fn_find(&disp_g.table, name, len);
    if (r->fn == NULL || !r->fn->known) {
        r->done = 1;
        disp_g.cfg.send_error(req, 404, name, len, "no such function", 0);
        return;
    }
    disp_fn_t *fn = r->fn;
    uint32_t timeout = fn->p.timeout_ms ? fn->p.timeout_ms : 30000;
    r->deadline_ms = r->start_ms + timeout;
    r->deadline_timer.cb = on_deadline;
    h2o_timeout_link(disp_g.loop, disp_timeout_for(timeout), &r->deadline_timer);

    disp_inst_t *inst = fn->nwaiters == 0 ? disp_pick(fn) : NULL;
    if (inst != NULL) {
        send_to(r, inst);
        return;
    }
    uint32_t cst = disp_g.cfg.cold_start_timeout_ms
                       ? disp_g.cfg.cold_start_timeout_ms
                       : (fn->p.cold_start_timeout_ms ? fn->p.cold_start_timeout_ms : 10000);
    if (disp_wait_push(&disp_g.table, fn, &r->wait, r->start_ms, cst) != 0) {
        disp_req_fail(r, 429, "queue full");
        return;
    }
    r->wait_timer.cb = on_wait_timeout;
    h2o_timeout_link(disp_g.loop, disp_timeout_for(cst), &r->wait_timer);
    if (maybe_acquire(fn, request_id) != 0)
        fail_waiters(fn, 503, "no worker available");
}

static void on_idle_scan(h2o_timeout_entry_t *e)
{
    disp_inst_t *out[64];
    size_t n = disp_idle_collect(&disp_g.table, faas_now_ms(), out, 64);
    for (size_t i = 0; i < n; i++) {
        const char *why = out[i]->version != out[i]->fn->p.version || !out[i]->fn->known ? "old-version" : "idle";
        FAAS_INFO("event=release fn=%.*s instance=%s reason=%s", (int)out[i]->fn->name_len, out[i]->fn->name,
                  out[i]->id, why);
        disp_control_release(out[i], why);
        disp_inst_remove(out[i]);
    }
    h2o_timeout_link(disp_g.loop, &idle_timeout, &idle_entry);
}

void disp_metrics(FILE *out)
{
    fprintf(out,
            "# HELP faas_cold_starts_total Instances acquired for requests.\n"
            "# TYPE faas_cold_starts_total counter\nfaas_cold_starts_total %" PRIu64 "\n",
            disp_g.cold_starts);
    fprintf(out,
            "# HELP faas_cold_start_failures_total Acquire calls that failed.\n"
            "# TYPE faas_cold_start_failures_total counter\nfaas_cold_start_failures_total %" PRIu64 "\n",
            disp_g.acquire_failures);
    fprintf(out, "# HELP faas_queue_depth Requests held waiting for an instance.\n# TYPE faas_queue_depth gauge\n");
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        fprintf(out, "faas_queue_depth{function=\"%.*s\"} %u\n", (int)fn->name_len, fn->name, fn->nwaiters);
    }
    fprintf(out, "# HELP faas_instances Instances known per function.\n# TYPE faas_instances gauge\n");
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        fprintf(out, "faas_instances{function=\"%.*s\"} %zu\n", (int)fn->name_len, fn->name, fn->ninst);
    }
}

int disp_start(h2o_context_t *ctx, const disp_config_t *cfg, const char **err)
{
    disp_g.ctx = ctx;
    disp_g.loop = ctx->loop;
    disp_g.cfg = *cfg;
    disp_table_init(&disp_g.table, cfg->queue_max ? cfg->queue_max : 1024);
    h2o_timeout_init(ctx->loop, &idle_timeout, IDLE_SCAN_MS);
    idle_entry.cb = on_idle_scan;
    h2o_timeout_link(ctx->loop, &idle_timeout, &idle_entry);
    return disp_control_start(err);
}
