/* Unit tests for worker-manager/tasks.c: TASK_* events -> ReportTask, chunk reassembly. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define WM_STATE
#include "common/util.h"
#include "worker-manager/internal.h"

#define ID "0123456789abcdef0123456789abcdef"

static Faas__TaskReport *feed(wm_ptask_t **l, Faas__AgentEvent *ev, int want_rc)
{
    uint8_t *out;
    size_t len;
    cr_assert_eq(wm_task_feed(l, ev, "inst-1", &out, &len), want_rc);
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
    cr_assert_eq(wm_task_feed(&l, &ev, "inst-1", &out, &len), -1);
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
