/* dispatcher/tasks.c - async tasks on the dispatcher's side (docs/async.md): claim the
 * queued tasks of the functions this gateway knows (Discovery/ClaimTasks, under a short
 * lease) and hand each to an instance as a call marked faas-task-id. The agent answers
 * 202 at once and owns the run from there: a gateway that dies afterwards neither
 * aborts nor repeats it. A hand-off that fails (no instance, cold start failed, agent
 * gone) is reported FAILED, which the store retries with backoff. The agent is told the
 * function's async bounds: faas-deadline-ms = async.timeout (one attempt's run) and
 * faas-task-max-result = async.max_result (bytes of the result body).
 *
 * Claims are polled per function, one in flight at a time: fast (CLAIM_FAST_MS) while
 * claims find work or a task was just submitted here, slowing to the idle interval
 * (idle_ms: CLAIM_IDLE_MS, longer when many functions share the idle budget). */
#include "dispatcher/internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"
#include "proto/faas.pb-c.h"

#define CLAIM_FAST_MS 50
#define CLAIM_IDLE_MS 1000
/* Idle polls of all functions together stay under this many a second: at a fixed 1 s
 * each, 2,000 functions were 2,000 ClaimTasks a second from every gateway, queued on
 * the control threads ahead of cold starts' Acquires (make bench, cp: 133 creations/s
 * against 1,181 without them). A task submitted through this gateway is claimed at once
 * all the same (disp_tasks_submitted); one submitted through another waits at most the
 * idle interval: 4 s with 2,000 functions. */
#define CLAIM_IDLE_RATE 500
#define CLAIM_IDLE_MAX_MS 30000
#define CLAIM_LEASE_MS 30000
#define RPC_TIMEOUT_MS 5000

typedef struct handoff {
    char id[40];
    disp_call_t *call;
} handoff_t;

static const char *const status_word[] = {"queued", "running", "succeeded", "failed", "cancelled"};

/* ---- reporting a failed hand-off ---- */

static void on_reported(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    char *id = ud;
    if (rc != 0)
        FAAS_WARN("event=task_report_failed task=%s rc=%d err=\"%s\"", id, rc, err);
    free(id);
}

static void report_failed(const char *id, const char *why)
{
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    r.id = (char *)id;
    r.kind = FAAS__TASK_REPORT__KIND__FAILED;
    r.error = (char *)why;
    size_t len;
    uint8_t *pb = faas_pb_pack(&r.base, &len);
    char *ud = strdup(id);
    if (pb == NULL || ud == NULL ||
        disp_discovery_call("/faas.Discovery/ReportTask", pb, len, RPC_TIMEOUT_MS, on_reported, ud) != 0)
        free(ud); /* the claim's lease lapses instead: the store retries it all the same */
    free(pb);
}

/* ---- the hand-off call's sink ---- */

static void h_head(disp_call_t *c, int status, const nghttp2_nv *h, size_t n)
{
    handoff_t *t = disp_call_owner(c);
    if (status != 202) /* an agent that ran the call itself is not one that owns tasks */
        report_failed(t->id, "the agent did not take the task");
    else
        FAAS_INFO("event=task_handed_off task=%s", t->id);
}

static void h_data(disp_call_t *c, const uint8_t *d, size_t len)
{
    disp_call_consumed(c, len);
}

static void h_done(disp_call_t *c)
{
    handoff_t *t = disp_call_owner(c);
    disp_call_close(c);
    free(t);
}

static void h_end(disp_call_t *c, const nghttp2_nv *trl, size_t n)
{
    h_done(c);
}

static void h_error(disp_call_t *c, faas_err_t kind, const char *msg, int started)
{
    handoff_t *t = disp_call_owner(c);
    if (!started)
        report_failed(t->id, msg);
    h_done(c);
}

static const disp_sink_t handoff_sink = {.head = h_head, .data = h_data, .end = h_end, .error = h_error};

/* Sends one claimed task to an instance of fn as a call the agent will own. */
static void hand_off(disp_fn_t *fn, const Faas__Task *task)
{
    const Faas__TaskRequest *rq = task->request;
    handoff_t *t = calloc(1, sizeof(*t));
    disp_call_t *c = t != NULL ? disp_call_new(DISP_PROTO_HTTP, &handoff_sink, t) : NULL;
    if (c == NULL) {
        free(t);
        report_failed(task->id, "gateway out of memory");
        return;
    }
    snprintf(t->id, sizeof(t->id), "%s", task->id);
    t->call = c;
    char att[16], maxr[24];
    size_t al = faas_fmt_u64(att, task->attempts), ml = faas_fmt_u64(maxr, fn->p.async_max_result);
    int rc = disp_call_header(c, ":method", 7, rq->method, strlen(rq->method)) |
             disp_call_header(c, ":scheme", 7, "http", 4) |
             disp_call_header(c, ":authority", 10, rq->authority, strlen(rq->authority)) |
             disp_call_header(c, ":path", 5, rq->path, strlen(rq->path)) |
             disp_call_header(c, "faas-task-id", 12, task->id, strlen(task->id)) |
             disp_call_header(c, "faas-task-attempt", 17, att, al) |
             disp_call_header(c, "faas-task-max-result", 20, maxr, ml);
    for (size_t i = 0; i < rq->n_headers; i++)
        rc |= disp_call_header(c, rq->headers[i]->key, strlen(rq->headers[i]->key), rq->headers[i]->value,
                               strlen(rq->headers[i]->value));
    rc |= disp_call_body(c, rq->body.len ? rq->body.data : NULL, rq->body.len, 1);
    if (rc != 0) {
        report_failed(task->id, "gateway out of memory");
        h_done(c);
        return;
    }
    /* the hand-off itself keeps the function's timeout; the agent's run gets the async one */
    disp_call_set_agent_deadline(c, fn->p.async_timeout_ms);
    /* every attempt carries the task id as its request id, so a user server can de-duplicate */
    disp_call_start(c, fn->name, fn->name_len, task->id, 0);
}

/* ---- claiming ---- */

static void claim_arm(disp_fn_t *fn, uint32_t after_ms);

/* The idle interval, spread over 0.5-1.5 of it so that functions deployed together do
 * not poll together. */
static uint32_t idle_ms(void)
{
    static uint32_t x = 2463534242u; /* xorshift32: the loop thread only */
    uint64_t ms = (uint64_t)disp_g.table.nfns * 1000 / CLAIM_IDLE_RATE;
    ms = ms < CLAIM_IDLE_MS ? CLAIM_IDLE_MS : (ms > CLAIM_IDLE_MAX_MS ? CLAIM_IDLE_MAX_MS : ms);
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    return (uint32_t)(ms / 2 + x % (ms + 1));
}

typedef struct {
    disp_fn_t *fn;
} claim_t;

static void on_claimed(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    disp_fn_t *fn = ((claim_t *)ud)->fn;
    free(ud);
    fn->claiming = 0;
    Faas__TaskList *l = rc == 0 ? faas__task_list__unpack(NULL, len, resp) : NULL;
    /* NOT_FOUND: the function went away; UNIMPLEMENTED: a discovery without tasks */
    if (rc != 0 && rc != FAAS_GRPC_NOT_FOUND && rc != FAAS_GRPC_UNIMPLEMENTED)
        FAAS_WARN("event=task_claim_failed fn=%.*s rc=%d err=\"%s\"", (int)fn->name_len, fn->name, rc, err);
    size_t n = l != NULL ? l->n_tasks : 0;
    for (size_t i = 0; i < n; i++) {
        const Faas__Task *t = l->tasks[i];
        if (t->request == NULL) {
            report_failed(t->id, "claimed without its request");
            continue;
        }
        FAAS_INFO("event=task_claimed task=%s fn=%.*s attempt=%u status=%s", t->id, (int)fn->name_len, fn->name,
                  t->attempts, status_word[t->status < 5 ? t->status : 0]);
        hand_off(fn, t);
    }
    if (l != NULL)
        faas__task_list__free_unpacked(l, NULL);
    if (n != 0)
        fn->claim_fast_until_ms = faas_now_ms() + CLAIM_IDLE_MS;
    claim_arm(fn, fn->claim_fast_until_ms > faas_now_ms() ? CLAIM_FAST_MS : idle_ms());
}

static void claim_now(disp_fn_t *fn)
{
    if (fn->claiming || !fn->known)
        return;
    Faas__ClaimRequest cr = FAAS__CLAIM_REQUEST__INIT;
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)fn->name_len, fn->name);
    cr.function = name;
    cr.max = fn->p.async_concurrency;
    cr.claimer = (char *)"gateway";
    cr.lease_ms = CLAIM_LEASE_MS;
    size_t len;
    uint8_t *pb = faas_pb_pack(&cr.base, &len);
    claim_t *ud = calloc(1, sizeof(*ud));
    if (pb == NULL || ud == NULL) {
        free(pb);
        free(ud);
        claim_arm(fn, idle_ms());
        return;
    }
    ud->fn = fn;
    fn->claiming = 1;
    if (disp_discovery_call("/faas.Discovery/ClaimTasks", pb, len, RPC_TIMEOUT_MS, on_claimed, ud) != 0) {
        fn->claiming = 0;
        free(ud);
        claim_arm(fn, idle_ms());
    }
    free(pb);
}

static void on_claim_timer(disp_timer_t *t)
{
    claim_now(t->data);
}

static void claim_arm(disp_fn_t *fn, uint32_t after_ms)
{
    if (!fn->known)
        return; /* a deleted function's queue is the store's to fail */
    fn->claim_timer.cb = on_claim_timer;
    fn->claim_timer.data = fn;
    disp_timer_start(&fn->claim_timer, faas_now_ms() + after_ms);
}

void disp_tasks_watch(disp_fn_t *fn)
{
    if (!faas_timer_armed(&fn->claim_timer) && !fn->claiming)
        claim_arm(fn, CLAIM_FAST_MS);
}

void disp_tasks_submitted(const char *name, size_t len)
{
    if (!DISP_PRIMARY()) { /* the primary claims */
        disp_control_submitted(name, len);
        return;
    }
    disp_fn_t *fn = disp_fn_find(&disp_g.table, name, len);
    if (fn == NULL)
        return;
    fn->claim_fast_until_ms = faas_now_ms() + CLAIM_IDLE_MS;
    if (!fn->claiming)
        claim_arm(fn, 0);
}
