/* Unit tests for runtime-agent/task.c: the task headers (faas-task-id, faas-task-max-result)
 * and how a run ends: a result over max_result or a passed deadline fails with no_retry,
 * other failures stay retryable. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "runtime-agent/internal.h"

#define ID "0123456789abcdef0123456789abcdef"
#define NVS(n, v) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE})

static Faas__AgentEvent *last;

static int capture(uint8_t *pkt, size_t len)
{
    if (last != NULL)
        faas__agent_event__free_unpacked(last, NULL);
    last = faas__agent_event__unpack(NULL, len, pkt);
    free(pkt);
    return 0;
}

static evl_loop_t *loop;

static void setup(void)
{
    loop = evl_loop_new();
    agent_task_init(loop, capture);
}

static void teardown(void)
{
    if (last != NULL)
        faas__agent_event__free_unpacked(last, NULL);
    last = NULL;
    evl_loop_free(loop);
}

static agent_task_t *task_with(const char *max_result, const char **err)
{
    nghttp2_nv id = NVS("faas-task-id", ID), att = NVS("faas-task-attempt", "2"), mr = NVS("faas-task-max-result", "");
    if (max_result != NULL)
        mr.value = (uint8_t *)max_result, mr.valuelen = strlen(max_result);
    return agent_task_new(&id, &att, max_result != NULL ? &mr : NULL, err);
}

Test(agent_task, headers_parsed_and_checked, .init = setup, .fini = teardown)
{
    const char *err;
    agent_task_t *t = task_with(NULL, &err);
    cr_assert_not_null(t);
    cr_assert_eq(t->max_result, 8u << 20, "absent: the platform default");
    cr_assert_eq(t->attempt, 2);
    cr_assert_str_eq(t->id, ID);
    agent_task_free(t);
    t = task_with("1000", &err);
    cr_assert_eq(t->max_result, 1000);
    agent_task_free(t);
    const char *bad[] = {"", "0", "-1", "12k", "1 000", "9999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_null(task_with(bad[i], &err), "%s", bad[i]);
        cr_assert(strstr(err, "faas-task-max-result") != NULL, "%s", err);
    }
    nghttp2_nv id = NVS("faas-task-id", "0123456789ABCDEF0123456789ABCDEF");
    cr_assert_null(agent_task_new(&id, NULL, NULL, &err));
    cr_assert(strstr(err, "faas-task-id") != NULL);
}

static agent_req_t *req_with(const char *max_result)
{
    const char *err;
    agent_req_t *r = calloc(1, sizeof(*r));
    r->task = task_with(max_result, &err);
    r->task->req = r;
    return r;
}

Test(agent_task, result_over_max_is_rejected, .init = setup, .fini = teardown)
{
    agent_req_t *r = req_with("10");
    agent_task_body(r, "0123456789", 10);
    cr_assert_not(r->task->over, "exactly the bound fits");
    agent_task_body(r, "x", 1);
    cr_assert(r->task->over);
    agent_task_end(r, "the function closed the connection mid-response\n");
    cr_assert_not_null(last);
    cr_assert_eq(last->type, FAAS__AGENT_EVENT__TYPE__TASK_FAILED);
    cr_assert(last->no_retry, "the same result would come again");
    cr_assert_str_eq(last->message, "result larger than 10 bytes (async.max_result)");
    cr_assert_str_eq(last->task_id, ID);
}

Test(agent_task, deadline_is_rejected_other_failures_retried, .init = setup, .fini = teardown)
{
    agent_req_t *r = req_with(NULL);
    r->deadline_ms = 250;
    agent_task_deadline(r);
    cr_assert_eq(last->type, FAAS__AGENT_EVENT__TYPE__TASK_FAILED);
    cr_assert(last->no_retry);
    cr_assert_str_eq(last->message, "deadline: the task ran longer than 250 ms (async.timeout)");
    r = req_with(NULL);
    agent_task_end(r, "the function closed the connection before answering\n");
    cr_assert_eq(last->type, FAAS__AGENT_EVENT__TYPE__TASK_FAILED);
    cr_assert_not(last->no_retry, "a crash may not happen again");
    cr_assert_str_eq(last->message, "the function closed the connection before answering");
}

Test(agent_task, result_within_max_is_done, .init = setup, .fini = teardown)
{
    agent_req_t *r = req_with("10");
    http1_hdr_t h = {.name = "x-a", .name_len = 3, .value = "b", .value_len = 1};
    cr_assert_eq(agent_task_head(r, 201, &h, 1), 0);
    agent_task_body(r, "hello", 5);
    agent_task_end(r, NULL);
    cr_assert_eq(last->type, FAAS__AGENT_EVENT__TYPE__TASK_DONE);
    cr_assert_eq(last->result->status, 201);
    cr_assert_eq(last->result->body.len, 5);
    cr_assert_not(last->no_retry);
}
