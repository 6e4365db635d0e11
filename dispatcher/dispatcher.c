/* dispatcher/dispatcher.c - the dispatcher's loop-side state: routing and lookups,
 * the held-call queue and its Acquire calls, timers on h2o's loop, idle release,
 * metrics. The calls themselves are call.c's. */
#include "dispatcher/internal.h"

#include <inttypes.h>
#include <string.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"

__thread disp_state_t disp_g;
disp_counters_t disp_ctr;

#define IDLE_SCAN_MS 100
/* An agent's connect that has not completed by then is given up, and its calls go to
 * another instance (disp_call_unsent): a host that died silently (no RST) would else
 * hold them until their deadline. Above one SYN retransmission (1 s), so that one lost
 * packet does not cost a healthy instance. */
#define AGENT_CONNECT_TIMEOUT_MS 2000

static __thread h2o_timeout_t idle_timeout;
static __thread h2o_timeout_entry_t idle_entry;

/* ---- timers: the heap's earliest is the one h2o entry. h2o 2.2.5's timeouts have one
 * fixed duration each, which made the dispatcher keep one per distinct value (and,
 * past 32 values, silently reuse the wrong one). ---- */

static void arm_loop_timer(void)
{
    if (h2o_timeout_is_linked(&disp_g.timer_entry))
        h2o_timeout_unlink(&disp_g.timer_entry);
    uint64_t next = faas_theap_next(&disp_g.timers);
    if (next == UINT64_MAX)
        return;
    uint64_t now = faas_now_ms();
    /* h2o fires an entry timeout ms after it was linked: give it the time left, and at
     * least 1 ms, since a 0 ms entry linked from its own callback counts as due again
     * at once and h2o would run it in a loop until the heap is empty */
    disp_g.timer_h2o.timeout = next > now ? next - now : 1;
    h2o_timeout_link(disp_g.loop, &disp_g.timer_h2o, &disp_g.timer_entry);
}

static void on_loop_timer(h2o_timeout_entry_t *e)
{
    disp_timer_t *t;
    uint64_t now = faas_now_ms();
    while ((t = faas_theap_pop(&disp_g.timers, now)) != NULL)
        t->cb(t);
    arm_loop_timer();
}

void disp_timer_start(disp_timer_t *t, uint64_t at_ms)
{
    uint64_t before = faas_theap_next(&disp_g.timers);
    if (faas_theap_add(&disp_g.timers, t, at_ms) != 0) {
        /* firing now from inside the caller would re-enter it: this call goes unbounded */
        FAAS_ERROR("event=timer_oom msg=\"a call has no deadline\"");
        return;
    }
    if (at_ms < before || !h2o_timeout_is_linked(&disp_g.timer_entry))
        arm_loop_timer();
}

void disp_timer_stop(disp_timer_t *t)
{
    faas_theap_del(&disp_g.timers, t);
    /* a later wake-up than needed costs one empty callback; no relink per call */
}

/* ---- lookups ---- */

const char *disp_route(disp_proto_t proto, const char *key, size_t len, size_t *fnlen)
{
    disp_fn_t *fn = disp_route_find(&disp_g.table, proto, key, len);
    if (fn == NULL)
        return NULL;
    *fnlen = fn->name_len;
    return fn->name;
}

int disp_lookup(const char *name, size_t len, disp_fn_info_t *info)
{
    disp_fn_t *fn = disp_fn_find(&disp_g.table, name, len);
    if (fn == NULL || !fn->known)
        return -1;
    info->max_body_bytes = fn->p.max_body_bytes;
    info->timeout_ms = fn->p.timeout_ms ? fn->p.timeout_ms : FAAS_SPEC_DEFAULT_TIMEOUT_MS;
    info->max_duration_ms = fn->p.max_duration_ms ? fn->p.max_duration_ms : FAAS_SPEC_DEFAULT_MAX_DURATION_MS;
    return 0;
}

uint64_t disp_cold_starts(void)
{
    return DISP_READ(cold_starts);
}

/* ---- the held-call queue ---- */

static disp_call_t *waiter_call(disp_waiter_t *w)
{
    return H2O_STRUCT_FROM_MEMBER(disp_call_t, wait, w);
}

/* Starts the Acquire calls the waiters of every loop need; -1 if one was needed and
 * none could start while nothing else can serve them (no worker known). The primary
 * loop's job: a replica asks it (disp_control_need), so that many loops holding calls
 * of one function make one Acquire per instance needed, not one each. */
static int maybe_acquire(disp_fn_t *fn, const char *rid)
{
    if (!DISP_PRIMARY()) {
        disp_control_need(fn, rid);
        return 0;
    }
    uint32_t n = disp_acquire_needed(fn);
    for (uint32_t i = 0; i < n; i++) {
        if (disp_control_acquire(fn, rid) != 0)
            return fn->acquiring == 0 && fn->ninst == 0 ? -1 : 0;
        fn->acquiring++;
    }
    return 0;
}

void disp_on_reserved_call_elastic(disp_fn_t *fn, const char *rid)
{
    if (!disp_elastic_wanted(fn))
        return;
    FAAS_INFO("event=elastic_wanted fn=%.*s request_id=%s", (int)fn->name_len, fn->name, rid);
    if (disp_control_acquire(fn, rid) == 0)
        fn->acquiring++;
}

void disp_on_reserved_call(disp_fn_t *fn, const char *rid)
{
    disp_fshared_count(&fn->sh->reserved_calls);
    if (DISP_PRIMARY()) {
        disp_on_reserved_call_elastic(fn, rid);
        return;
    }
    /* as this loop sees it (its acquiring is always 0): the primary decides; at most
     * one ask per 100 ms while its Acquire is on the way */
    uint64_t now = faas_now_ms();
    if (disp_elastic_wanted(fn) && now - fn->elastic_asked_ms >= 100) {
        fn->elastic_asked_ms = now;
        disp_control_elastic(fn, rid);
    }
}

static int has_current_instance(const disp_fn_t *fn);

/* Fails every waiter of this loop that can no longer expect an instance. */
static void fail_waiters(disp_fn_t *fn, faas_err_t kind, const char *what)
{
    disp_waiter_t *w;
    while ((w = disp_wait_pop(fn)) != NULL)
        disp_call_fail(waiter_call(w), kind, what);
}

/* The primary's verdict for every loop's waiters. */
static void fail_everywhere(disp_fn_t *fn, faas_err_t kind, const char *what)
{
    fail_waiters(fn, kind, what);
    disp_control_fail_others(fn, kind, what);
}

void disp_serve_held(disp_fn_t *fn)
{
    disp_inst_t *inst;
    /* the slot is taken before the call leaves the queue: one that another loop takes
     * first costs a pick, not the call's place (or a second pass of --queue-max). The
     * call stops counting as held before it counts in flight: the primary, reading both
     * at any moment, must never see one call as held and in flight at once (it would
     * find one instance too few and acquire one more) */
    for (int lost = 0; fn->nwaiters != 0 && lost < 64 && (inst = disp_pick(fn)) != NULL;) {
        __atomic_sub_fetch(&fn->sh->nwaiters, 1, __ATOMIC_SEQ_CST);
        if (disp_inst_begin(inst) != 0) {
            __atomic_add_fetch(&fn->sh->nwaiters, 1, __ATOMIC_SEQ_CST); /* still held, in its place */
            lost++;
            continue;
        }
        disp_call_t *c = waiter_call(disp_wait_pop_taken(fn));
        disp_timer_stop(&c->wait_timer);
        disp_call_send_begun(c, inst);
    }
}

void disp_on_instance_ready(disp_fn_t *fn)
{
    disp_serve_held(fn);
    /* the primary also acquires for the calls other loops hold */
    uint32_t held = DISP_PRIMARY() ? disp_fshared_waiters(fn->sh) : fn->nwaiters;
    if (held != 0 && maybe_acquire(fn, fn->nwaiters != 0 ? waiter_call(fn->waiters.next)->rid : fn->need_rid) != 0)
        fail_everywhere(fn, FAAS_ERR_UNAVAILABLE, "no worker available");
}

void disp_fail_held(disp_fn_t *fn, faas_err_t kind, const char *what)
{
    if (!has_current_instance(fn))
        fail_waiters(fn, kind, what);
}

void disp_on_function_deleted(disp_fn_t *fn)
{
    disp_fn_forget(&disp_g.table, fn);
    fail_waiters(fn, FAAS_ERR_NOT_FOUND, "no such function");
}

/* 1 if a READY instance of the current version exists, busy or not: waiters held by a
 * concurrency limit will get a turn when one of its calls ends. */
static int has_current_instance(const disp_fn_t *fn)
{
    for (size_t k = 0; k < fn->ninst; k++) {
        const disp_inst_t *i = fn->inst[k];
        if (i->ready && !i->removed && !i->releasing && !disp_ishared_releasing(i->sh) && i->version == fn->p.version)
            return 1;
    }
    return 0;
}

void disp_on_acquire_failed(disp_fn_t *fn, const char *why)
{
    if (fn->acquiring == 0 && !has_current_instance(fn))
        fail_everywhere(fn, FAAS_ERR_UNAVAILABLE, why);
}

/* A worker manager that cannot be reached (restarting after a crash, a host that went
 * away) fails no held call: they keep their place and their own deadlines (cold start
 * timeout, the call's). control.c has marked it down, so while another worker is up
 * the Acquire goes there at once; when every worker is down it is tried again shortly
 * (placement then takes a down one: the retry must go somewhere). */
#define ACQUIRE_RETRY_MS 100
/* ... for as long as a restart takes (0.2-0.6 s measured), not for a cold start's
 * whole timeout: a worker manager that stays away is a 503 + Retry-After after this */
#define ACQUIRE_RETRY_WINDOW_MS 2000

static void on_acquire_retry(disp_timer_t *t)
{
    disp_fn_t *fn = H2O_STRUCT_FROM_MEMBER(disp_fn_t, acquire_retry, t);
    fn->acquire_retry_armed = 0;
    if (disp_fshared_waiters(fn->sh) != 0)
        disp_on_instance_ready(fn); /* an instance, or a new Acquire, or no worker at all */
}

/* Re-issues the Acquires the held calls lack on the workers still up; 1 if any went. */
static int replace_acquire(disp_fn_t *fn)
{
    if (disp_control_workers_up() == 0)
        return 0;
    uint32_t before = fn->acquiring;
    disp_on_instance_ready(fn); /* counts the Acquires in flight: only the lost ones go again */
    if (fn->acquiring <= before)
        return 0;
    DISP_COUNT(acquire_retries, fn->acquiring - before);
    FAAS_INFO("event=acquire_replaced fn=%.*s acquires=%u msg=\"worker manager not reached, another worker is up\"",
              (int)fn->name_len, fn->name, fn->acquiring - before);
    return 1;
}

void disp_on_acquire_unreachable(disp_fn_t *fn, const char *why)
{
    if (disp_fshared_waiters(fn->sh) == 0)
        return;
    if (replace_acquire(fn))
        return;
    if (fn->acquire_retry_armed)
        return;
    if (fn->acquiring != 0 || has_current_instance(fn))
        return; /* the calls have something else to wait for */
    uint64_t now = faas_now_ms();
    if (fn->unreachable_since_ms == 0)
        fn->unreachable_since_ms = now;
    if (now - fn->unreachable_since_ms >= ACQUIRE_RETRY_WINDOW_MS) {
        fn->unreachable_since_ms = 0; /* the next calls get a window of their own */
        disp_on_acquire_failed(fn, why);
        return;
    }
    FAAS_INFO("event=acquire_retry fn=%.*s in_ms=%d msg=\"worker manager not reached\"", (int)fn->name_len, fn->name,
              ACQUIRE_RETRY_MS);
    fn->acquire_retry_armed = 1;
    fn->acquire_retry.cb = on_acquire_retry;
    disp_timer_start(&fn->acquire_retry, now + ACQUIRE_RETRY_MS);
}

static void on_wait_timeout(disp_timer_t *t)
{
    disp_call_t *c = H2O_STRUCT_FROM_MEMBER(disp_call_t, wait_timer, t);
    disp_call_fail(c, FAAS_ERR_UNAVAILABLE, "cold start timed out");
}

void disp_hold(disp_call_t *c, disp_fn_t *fn)
{
    uint32_t cst = disp_g.cfg.cold_start_timeout_ms
                       ? disp_g.cfg.cold_start_timeout_ms
                       : (fn->p.cold_start_timeout_ms ? fn->p.cold_start_timeout_ms : FAAS_SPEC_DEFAULT_COLD_START_MS);
    uint64_t now = faas_now_ms();
    if (disp_wait_push(&disp_g.table, fn, &c->wait, now, cst) != 0) {
        disp_call_fail(c, FAAS_ERR_EXHAUSTED, "queue full");
        return;
    }
    c->wait_timer.cb = on_wait_timeout;
    disp_timer_start(&c->wait_timer, now + cst);
    /* picks again once counted as held: a slot freed on another loop before that loop
     * could see this call waiting (so it sent no WAKE) is found here */
    disp_on_instance_ready(fn);
}

/* ---- an agent whose user server died (runtime-agent/control.c on_user_exit) ---- */

/* It says so with GOAWAY "instance-gone" before its pod is destroyed: its instances
 * stop taking calls now, not when discovery's deregistration arrives. */
static void on_agent_goaway(const char *hostport, const uint8_t *data, size_t len)
{
    static const char gone[] = "instance-gone";
    if (len != sizeof(gone) - 1 || memcmp(data, gone, len) != 0)
        return;
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        for (size_t k = 0; k < fn->ninst;) {
            disp_inst_t *inst = fn->inst[k];
            if (strcmp(inst->endpoint, hostport) == 0) {
                FAAS_INFO("event=instance_gone fn=%.*s instance=%s", (int)fn->name_len, fn->name, inst->id);
                /* the loops that have no connection to it hear no GOAWAY */
                disp_ishared_mark_releasing(inst->sh);
                disp_inst_remove(inst); /* swaps the last one into k */
            } else {
                k++;
            }
        }
    }
}

/* ---- idle release ---- */

static void on_idle_scan(h2o_timeout_entry_t *e)
{
    disp_inst_t *out[64];
    /* the primary releases for every loop: the in-flight counts it reads are shared */
    size_t n = DISP_PRIMARY() ? disp_idle_collect(&disp_g.table, faas_now_ms(), out, 64) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *why = out[i]->version != out[i]->fn->p.version || !out[i]->fn->known ? "old-version" : "idle";
        FAAS_INFO("event=release fn=%.*s instance=%s reason=%s", (int)out[i]->fn->name_len, out[i]->fn->name,
                  out[i]->id, why);
        disp_control_release(out[i], why);
        disp_inst_remove(out[i]);
    }
    size_t gone = h2b_client_sweep(AGENT_CONNECT_TIMEOUT_MS);
    if (gone != 0)
        FAAS_WARN("event=agent_connect_timeout conns=%zu after_ms=%d msg=\"their calls go elsewhere\"", gone,
                  AGENT_CONNECT_TIMEOUT_MS);
    h2o_timeout_link(disp_g.loop, &idle_timeout, &idle_entry);
}

/* ---- metrics ---- */

void disp_metrics(FILE *out)
{
    disp_resolve_metrics(out);
    disp_call_metrics(out);
    fprintf(out,
            "# HELP faas_cold_starts_total Instances acquired for requests.\n"
            "# TYPE faas_cold_starts_total counter\nfaas_cold_starts_total %" PRIu64 "\n",
            DISP_READ(cold_starts));
    fprintf(out,
            "# HELP faas_cold_start_failures_total Acquire calls that failed.\n"
            "# TYPE faas_cold_start_failures_total counter\nfaas_cold_start_failures_total %" PRIu64 "\n",
            DISP_READ(acquire_failures));
    fprintf(out,
            "# HELP faas_gateway_acquire_retries_total Acquire calls placed again at once on another worker "
            "(the first one's worker manager was not reached).\n"
            "# TYPE faas_gateway_acquire_retries_total counter\nfaas_gateway_acquire_retries_total %" PRIu64 "\n",
            DISP_READ(acquire_retries));
    fprintf(out,
            "# HELP faas_gateway_acquires_abandoned_total Acquire calls given up when their worker's lease lapsed "
            "before it answered (a host that stopped answering), their calls placed again.\n"
            "# TYPE faas_gateway_acquires_abandoned_total counter\nfaas_gateway_acquires_abandoned_total %" PRIu64 "\n",
            DISP_READ(acquires_abandoned));
    fprintf(out, "# HELP faas_queue_depth Requests held waiting for an instance.\n# TYPE faas_queue_depth gauge\n");
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        fprintf(out, "faas_queue_depth{function=\"%.*s\"} %u\n", (int)fn->name_len, fn->name,
                disp_fshared_waiters(fn->sh));
    }
    fprintf(out, "# HELP faas_gateway_inflight Calls in flight on instances, all loop threads.\n"
                 "# TYPE faas_gateway_inflight gauge\n");
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        uint64_t n = 0;
        for (size_t k = 0; k < fn->ninst; k++)
            n += disp_ishared_inflight(fn->inst[k]->sh);
        fprintf(out, "faas_gateway_inflight{function=\"%.*s\"} %" PRIu64 "\n", (int)fn->name_len, fn->name, n);
    }
    fprintf(out, "# HELP faas_instances Instances known per function.\n# TYPE faas_instances gauge\n");
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        fprintf(out, "faas_instances{function=\"%.*s\"} %zu\n", (int)fn->name_len, fn->name, fn->ninst);
    }
    /* counted at scrape time: the watch keeps the flag, the call path pays nothing */
    fprintf(out, "# HELP faas_instances_overloaded Instances whose agent reported OVERLOAD and not yet RECOVERED "
                 "(picked after the others).\n# TYPE faas_instances_overloaded gauge\n");
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        size_t n = 0;
        for (size_t k = 0; k < fn->ninst; k++)
            n += fn->inst[k]->overloaded != 0;
        fprintf(out, "faas_instances_overloaded{function=\"%.*s\"} %zu\n", (int)fn->name_len, fn->name, n);
    }
    fprintf(out, "# HELP faas_gateway_reserved_requests_total Calls served by reserved instances (no elastic "
                 "instance could take them).\n# TYPE faas_gateway_reserved_requests_total counter\n");
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        fprintf(out, "faas_gateway_reserved_requests_total{function=\"%.*s\"} %" PRIu64 "\n", (int)fn->name_len,
                fn->name, disp_fshared_counter(&fn->sh->reserved_calls));
    }
    disp_callbacks_metrics(out);
}

/* ---- start ---- */

void disp_loop_init(h2o_context_t *ctx, const disp_config_t *cfg)
{
    disp_g.ctx = ctx;
    disp_g.loop = ctx->loop;
    disp_g.cfg = *cfg;
    disp_table_init(&disp_g.table, cfg->queue_max ? cfg->queue_max : 1024);
    h2o_timeout_init(ctx->loop, &disp_g.timer_h2o, 0);
    disp_g.timer_entry.cb = on_loop_timer;
    h2o_timeout_init(ctx->loop, &idle_timeout, IDLE_SCAN_MS);
    idle_entry.cb = on_idle_scan;
    h2o_timeout_link(ctx->loop, &idle_timeout, &idle_entry);
    disp_h2b_init(ctx->loop);
    h2b_on_goaway(on_agent_goaway);
    h2b_on_unsent(disp_call_unsent);
}

void disp_attach(h2o_context_t *ctx, const disp_config_t *cfg, unsigned idx)
{
    disp_tidx = idx;
    disp_loop_init(ctx, cfg);
    disp_control_attach(ctx->loop);
}

int disp_start(h2o_context_t *ctx, const disp_config_t *cfg, const char **err)
{
    disp_tidx = 0;
    disp_loop_init(ctx, cfg);
    if (disp_control_start(err) != 0)
        return -1;
    disp_callbacks_start();
    return 0;
}
