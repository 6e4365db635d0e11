/* Unit tests for worker-manager/tasks.c: TASK_* events -> ReportTask, chunk reassembly, the
 * no_retry -> REJECTED mapping, and where cancels go. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define WM_STATE
#include "common/util.h"
#include "worker-manager/internal.h"

#define ID "0123456789abcdef0123456789abcdef"
#define MAX (8u << 20)

static Faas__TaskReport *feed(wm_ptask_t **l, Faas__AgentEvent *ev, int want_rc)
{
    uint8_t *out;
    size_t len;
    cr_assert_eq(wm_task_feed(l, ev, "inst-1", MAX, &out, &len), want_rc);
    if (want_rc != 1)
        return NULL;
    Faas__TaskReport *r = faas__task_report__unpack(NULL, len, out);
    free(out);
    cr_assert_not_null(r);
    cr_assert_str_eq(r->id, ID);
    cr_assert_str_eq(r->instance_id, "inst-1");
    cr_assert_eq(r->lease_ms, 30000);
    return r;
}

Test(wm_tasks, chunked_result_reassembled)
{
    wm_ptask_t *l = NULL;
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_STARTED;
    ev.task_id = ID;
    Faas__TaskReport *r = feed(&l, &ev, 1);
    cr_assert_eq(r->kind, FAAS__TASK_REPORT__KIND__STARTED);
    faas__task_report__free_unpacked(r, NULL);
    cr_assert_not_null(l);

    static uint8_t body[200000];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)(i * 13 + 1);
    Faas__KeyValue kv = FAAS__KEY_VALUE__INIT, *kvs[] = {&kv};
    kv.key = "x-k";
    kv.value = "v";
    Faas__TaskResult res = FAAS__TASK_RESULT__INIT;
    res.status = 200;
    res.headers = kvs;
    res.n_headers = 1;
    res.body.data = body;
    res.body.len = 65536;
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_DONE;
    ev.result = &res;
    ev.more = 1;
    feed(&l, &ev, 0);
    ev.result = NULL;
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_RESULT_CHUNK;
    ev.chunk.data = body + 65536;
    ev.chunk.len = 65536;
    feed(&l, &ev, 0);
    ev.chunk.data = body + 131072;
    ev.chunk.len = sizeof(body) - 131072;
    ev.more = 0;
    r = feed(&l, &ev, 1);
    cr_assert_eq(r->kind, FAAS__TASK_REPORT__KIND__DONE);
    cr_assert_eq(r->result->status, 200);
    cr_assert_str_eq(r->result->headers[0]->key, "x-k");
    cr_assert_eq(r->result->body.len, sizeof(body));
    cr_assert_eq(memcmp(r->result->body.data, body, sizeof(body)), 0);
    faas__task_report__free_unpacked(r, NULL);
    cr_assert_null(l, "the task ended: no longer tracked");
}

static size_t posted;
static void post(void *ud, uint8_t *pkt, size_t len)
{
    Faas__TaskReport *r = faas__task_report__unpack(NULL, len, pkt);
    cr_assert_eq(r->kind, FAAS__TASK_REPORT__KIND__FAILED);
    cr_assert(strstr(r->error, "gone") != NULL);
    faas__task_report__free_unpacked(r, NULL);
    free(pkt);
    posted++;
}

Test(wm_tasks, pod_gone_fails_running_tasks_and_chunk_without_done_is_bad)
{
    wm_ptask_t *l = NULL;
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_RESULT_CHUNK;
    ev.task_id = ID;
    uint8_t *out;
    size_t len;
    cr_assert_eq(wm_task_feed(&l, &ev, "inst-1", MAX, &out, &len), -1);
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_STARTED;
    faas__task_report__free_unpacked(feed(&l, &ev, 1), NULL);
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_RENEW;
    Faas__TaskReport *r = feed(&l, &ev, 1);
    cr_assert_eq(r->kind, FAAS__TASK_REPORT__KIND__RENEW);
    faas__task_report__free_unpacked(r, NULL);
    cr_assert_eq(wm_task_gone(&l, "inst-1", "pod gone", post, NULL), 1);
    cr_assert_eq(posted, 1);
    cr_assert_null(l);
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_FAILED;
    ev.message = "the function closed the connection";
    r = feed(&l, &ev, 1);
    cr_assert_eq(r->kind, FAAS__TASK_REPORT__KIND__FAILED);
    cr_assert_str_eq(r->error, ev.message);
    faas__task_report__free_unpacked(r, NULL);
}

Test(wm_tasks, no_retry_failure_is_rejected)
{
    wm_ptask_t *l = NULL;
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_STARTED;
    ev.task_id = ID;
    faas__task_report__free_unpacked(feed(&l, &ev, 1), NULL);
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_FAILED;
    ev.message = "result larger than 10 bytes (async.max_result)";
    ev.no_retry = 1;
    Faas__TaskReport *r = feed(&l, &ev, 1);
    cr_assert_eq(r->kind, FAAS__TASK_REPORT__KIND__REJECTED);
    cr_assert_str_eq(r->error, ev.message);
    faas__task_report__free_unpacked(r, NULL);
    cr_assert_null(l, "a rejected task ended here");
}

/* An agent that sent more than the function's max_result anyway: rejected, not retried. */
Test(wm_tasks, result_past_max_is_rejected)
{
    wm_ptask_t *l = NULL;
    static uint8_t body[100];
    Faas__TaskResult res = FAAS__TASK_RESULT__INIT;
    res.status = 200;
    res.body.data = body;
    res.body.len = 60;
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_DONE;
    ev.task_id = ID;
    ev.result = &res;
    ev.more = 1;
    uint8_t *out;
    size_t len;
    cr_assert_eq(wm_task_feed(&l, &ev, "inst-1", 100, &out, &len), 0);
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_RESULT_CHUNK;
    ev.result = NULL;
    ev.chunk.data = body;
    ev.chunk.len = 41;
    ev.more = 0;
    cr_assert_eq(wm_task_feed(&l, &ev, "inst-1", 100, &out, &len), 1);
    Faas__TaskReport *r = faas__task_report__unpack(NULL, len, out);
    free(out);
    cr_assert_eq(r->kind, FAAS__TASK_REPORT__KIND__REJECTED);
    cr_assert_str_eq(r->error, "result larger than 100 bytes (async.max_result)");
    faas__task_report__free_unpacked(r, NULL);
    cr_assert_null(l);
    /* unchunked, one byte over */
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_DONE;
    ev.result = &res;
    res.body.len = 101;
    cr_assert_eq(wm_task_feed(&l, &ev, "inst-1", 100, &out, &len), 1);
    r = faas__task_report__unpack(NULL, len, out);
    free(out);
    cr_assert_eq(r->kind, FAAS__TASK_REPORT__KIND__REJECTED);
    faas__task_report__free_unpacked(r, NULL);
}

Test(wm_tasks, cancel_routed_by_instance_then_by_task)
{
    wm_ptask_t t2 = {.id = ID};
    wm_pod_t a = {.inst_id = "inst-a"}, b = {.inst_id = "inst-b", .tasks = &t2};
    a.next = &b;
    cr_assert_eq(wm_task_route(&a, ID, "inst-a"), &a);
    cr_assert_eq(wm_task_route(&a, "ffff", "inst-b"), &b);
    cr_assert_eq(wm_task_route(&a, ID, ""), &b, "no instance given: the pod running the task");
    cr_assert_eq(wm_task_route(&a, ID, "inst-gone"), &b);
    cr_assert_null(wm_task_route(&a, "ffff", "inst-other-worker"));
    cr_assert_null(wm_task_route(NULL, ID, "inst-a"));
}

static uint8_t *pack_task(int status, int cancel, const char *inst, size_t *len)
{
    Faas__Task t = FAAS__TASK__INIT;
    t.id = ID;
    t.status = status;
    t.cancel_requested = cancel;
    t.instance_id = (char *)inst;
    return faas_pb_pack(&t.base, len);
}

Test(wm_tasks, report_reply_asks_for_cancel_only_while_running)
{
    char id[40], inst[64];
    size_t len;
    uint8_t *pb = pack_task(FAAS__TASK__STATUS__RUNNING, 1, "inst-1", &len);
    cr_assert_eq(wm_task_cancel_wanted(pb, len, id, sizeof(id), inst, sizeof(inst)), 1);
    cr_assert_str_eq(id, ID);
    cr_assert_str_eq(inst, "inst-1");
    free(pb);
    pb = pack_task(FAAS__TASK__STATUS__RUNNING, 1, "", &len);
    cr_assert_eq(wm_task_cancel_wanted(pb, len, id, sizeof(id), inst, sizeof(inst)), 1);
    cr_assert_str_eq(inst, "", "routed by task id");
    free(pb);
    pb = pack_task(FAAS__TASK__STATUS__RUNNING, 0, "inst-1", &len);
    cr_assert_eq(wm_task_cancel_wanted(pb, len, id, sizeof(id), inst, sizeof(inst)), 0);
    free(pb);
    pb = pack_task(FAAS__TASK__STATUS__CANCELLED, 1, "inst-1", &len);
    cr_assert_eq(wm_task_cancel_wanted(pb, len, id, sizeof(id), inst, sizeof(inst)), 0, "already over");
    free(pb);
    cr_assert_eq(wm_task_cancel_wanted((const uint8_t *)"", 0, id, sizeof(id), inst, sizeof(inst)), 0,
                 "an empty reply (an older discovery) asks nothing");
    cr_assert_eq(wm_task_cancel_wanted((const uint8_t *)"\xff\xff", 2, id, sizeof(id), inst, sizeof(inst)), 0);
}

Test(wm_tasks, watch_event_cancel_decoded)
{
    Faas__Task t = FAAS__TASK__INIT;
    t.id = ID;
    t.function = "hello";
    t.instance_id = "inst-9";
    Faas__WatchEvent e = FAAS__WATCH_EVENT__INIT;
    e.type = FAAS__WATCH_EVENT__TYPE__TASK_CANCEL;
    e.task = &t;
    char id[40], inst[64];
    cr_assert_eq(wm_task_cancel_event(&e, id, sizeof(id), inst, sizeof(inst)), 1);
    cr_assert_str_eq(id, ID);
    cr_assert_str_eq(inst, "inst-9");
    cr_assert_eq(wm_task_cancel_event(&e, id, sizeof(id), inst, 4), 0, "an instance id longer than ours is not ours");
    t.instance_id = "";
    cr_assert_eq(wm_task_cancel_event(&e, id, sizeof(id), inst, sizeof(inst)), 0, "runs nowhere yet");
    Faas__Instance in = FAAS__INSTANCE__INIT;
    Faas__WatchEvent other = FAAS__WATCH_EVENT__INIT;
    other.type = FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT;
    other.instance = &in;
    cr_assert_eq(wm_task_cancel_event(&other, id, sizeof(id), inst, sizeof(inst)), 0, "other events are not cancels");
}
