/* The durable task store (discovery/tasks.c) on a real SQLite file in a temp dir:
 * every transition, with the clock passed in, plus paging and group commit.
 * test_tasks_etcd.c includes this file to run the same scenarios on etcd: it defines
 * TASKS_SUITE and the store_* hooks first. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "discovery/discovery.h"

static char dir[256];
static disc_tasks_t *ts;

#ifndef TASKS_SUITE
#define TASKS_SUITE tasks
#define TASKS_STORE "SQLite"
static void store_setup(void)
{
}
static void store_teardown(void)
{
}
static disc_tasks_t *store_open(int synchronous, const char **err)
{
    return disc_task_open(dir, synchronous, err);
}
#endif

/* The functions' async bounds the tests use; any other function is not deployed. */
static const struct {
    const char *name;
    Faas__AsyncSpec a;
} fns[] = {
#define ASYNC(...)                                                                                                     \
    {                                                                                                                  \
        PROTOBUF_C_MESSAGE_INIT(&faas__async_spec__descriptor), __VA_ARGS__                                            \
    }
    {"one", ASYNC(.max_attempts = 1)},
    {"two", ASYNC(.max_attempts = 2)},
    {"c2", ASYNC(.concurrency = 2)},
    {"r5", ASYNC(.max_attempts = 2, .retry_5xx = 1)},
    {"small", ASYNC(.max_result_bytes = 4)},
    {"keep", ASYNC(.retention_ms = 10000)},
    {"huge", ASYNC(.max_result_bytes = 32u << 20)},
    {"fn", ASYNC(.concurrency = 0)},
    {"wide", ASYNC(.concurrency = 1000)},
};

static int lookup(void *ud, const char *function, Faas__AsyncSpec *out)
{
    (void)ud;
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
        if (strcmp(fns[i].name, function) == 0) {
            *out = fns[i].a;
            return 0;
        }
    return -ENOENT;
}

static void setup(void)
{
    const char *err = NULL;
    snprintf(dir, sizeof(dir), "/tmp/disc-tasks-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    store_setup();
    ts = store_open(DISC_TASK_SYNC_NORMAL, &err);
    cr_assert_not_null(ts, "%s", err);
    disc_task_set_lookup(ts, lookup, NULL);
}

static void teardown(void)
{
    char cmd[300];
    disc_task_close(ts);
    store_teardown();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(TASKS_SUITE, .init = setup, .fini = teardown);

/* Ids in creation order sort in id order too: "000...0001", "000...0002", ... */
static void mkid(char out[33], unsigned n)
{
    snprintf(out, 33, "%032x", n);
}

static Faas__KeyValue hdr = {PROTOBUF_C_MESSAGE_INIT(&faas__key_value__descriptor), "x-a", "1"};
static Faas__KeyValue *hdrs[] = {&hdr};

/* Submits task n of function fn, created at created_ms, with a small request. */
static int submit_cb(unsigned n, const char *fn, int64_t created_ms, const char *callback_url)
{
    char id[33];
    mkid(id, n);
    Faas__TaskRequest req = FAAS__TASK_REQUEST__INIT;
    req.method = "POST";
    req.path = "/run?x=1";
    req.n_headers = 1;
    req.headers = hdrs;
    req.body.data = (uint8_t *)"payload";
    req.body.len = 7;
    Faas__Task t = FAAS__TASK__INIT;
    t.id = id;
    t.function = (char *)fn;
    t.version = 7;
    t.created_unix_ms = created_ms;
    t.callback_url = (char *)callback_url;
    t.request = &req;
    return disc_task_submit(ts, &t);
}

static int submit(unsigned n, const char *fn, int64_t created_ms)
{
    return submit_cb(n, fn, created_ms, "http://cb/");
}

static Faas__Task *get(unsigned n)
{
    char id[33];
    mkid(id, n);
    Faas__Task *t = NULL;
    cr_assert_eq(disc_task_get(ts, id, &t), 0, "task %u", n);
    return t;
}

static Faas__TaskList *claim(const char *fn, uint32_t max, uint32_t lease_ms, int64_t now)
{
    Faas__TaskList *l = NULL;
    cr_assert_eq(disc_task_claim(ts, fn, max, lease_ms, now, &l), 0);
    return l;
}

static int report(unsigned n, Faas__TaskReport__Kind kind, const char *inst, int64_t now, Faas__Task **out)
{
    char id[33];
    mkid(id, n);
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    r.id = id;
    r.kind = kind;
    r.instance_id = (char *)inst;
    r.error = kind == FAAS__TASK_REPORT__KIND__FAILED ? "user server died" : "";
    r.lease_ms = 5000;
    Faas__TaskResult res = FAAS__TASK_RESULT__INIT;
    res.status = 201;
    res.n_headers = 1;
    res.headers = hdrs;
    res.body.data = (uint8_t *)"result!";
    res.body.len = 7;
    if (kind == FAAS__TASK_REPORT__KIND__DONE)
        r.result = &res;
    return disc_task_report(ts, &r, now, out);
}

static Faas__Task__Status status_of(unsigned n)
{
    Faas__Task *t = get(n);
    Faas__Task__Status s = t->status;
    faas__task__free_unpacked(t, NULL);
    return s;
}

Test(TASKS_SUITE, submit_get_and_duplicates)
{
    cr_assert_eq(submit(1, "fn", 1000), 0);
    cr_assert_eq(submit(1, "fn", 2000), -EEXIST);
    cr_assert_eq(submit(1, "other", 2000), -EEXIST);
    Faas__Task *t = get(1);
    cr_assert_str_eq(t->function, "fn");
    cr_assert_eq(t->version, 7);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__QUEUED);
    cr_assert_eq(t->created_unix_ms, 1000);
    cr_assert_str_eq(t->callback_url, "http://cb/");
    cr_assert_null(t->request, "get never returns the request");
    faas__task__free_unpacked(t, NULL);

    Faas__Task bad = FAAS__TASK__INIT;
    bad.function = "fn";
    bad.id = "ABCDEF00000000000000000000000000";
    cr_assert_eq(disc_task_submit(ts, &bad), -EINVAL);
    bad.id = "0000";
    cr_assert_eq(disc_task_submit(ts, &bad), -EINVAL);
    bad.id = "00000000000000000000000000000009";
    bad.function = "";
    cr_assert_eq(disc_task_submit(ts, &bad), -EINVAL);
    cr_assert_eq(disc_task_get(ts, "00000000000000000000000000000009", &t), -ENOENT);
    cr_assert(disc_task_valid_id("0123456789abcdef0123456789abcdef"));
    cr_assert(!disc_task_valid_id("0123456789abcdef0123456789abcdef0"));
    cr_assert(!disc_task_valid_id(NULL));
}

Test(TASKS_SUITE, claim_takes_due_tasks_oldest_first_with_request)
{
    cr_assert_eq(submit(3, "fn", 3000), 0);
    cr_assert_eq(submit(1, "fn", 1000), 0);
    cr_assert_eq(submit(2, "fn", 2000), 0);
    cr_assert_eq(submit(4, "other", 500), 0);
    Faas__TaskList *l = claim("fn", 2, 4000, 10000);
    cr_assert_eq(l->n_tasks, 2);
    char id[33];
    mkid(id, 1);
    cr_assert_str_eq(l->tasks[0]->id, id);
    mkid(id, 2);
    cr_assert_str_eq(l->tasks[1]->id, id);
    Faas__Task *t = l->tasks[0];
    cr_assert_eq(t->status, FAAS__TASK__STATUS__RUNNING);
    cr_assert_eq(t->attempts, 1);
    cr_assert_eq(t->started_unix_ms, 10000);
    cr_assert_eq(t->lease_until_unix_ms, 14000);
    cr_assert_str_eq(t->instance_id, "");
    cr_assert_not_null(t->request);
    cr_assert_str_eq(t->request->method, "POST");
    cr_assert_str_eq(t->request->path, "/run?x=1");
    cr_assert_eq(t->request->n_headers, 1);
    cr_assert_str_eq(t->request->headers[0]->key, "x-a");
    cr_assert_eq(t->request->body.len, 7);
    cr_assert_eq(memcmp(t->request->body.data, "payload", 7), 0);
    faas__task_list__free_unpacked(l, NULL);
    cr_assert_eq(status_of(1), FAAS__TASK__STATUS__RUNNING);

    l = claim("fn", 10, 0, 10000);
    cr_assert_eq(l->n_tasks, 1);
    cr_assert_eq(l->tasks[0]->lease_until_unix_ms, 10000 + DISC_TASK_LEASE_MS);
    faas__task_list__free_unpacked(l, NULL);
    l = claim("fn", 10, 0, 10000);
    cr_assert_eq(l->n_tasks, 0);
    faas__task_list__free_unpacked(l, NULL);
    cr_assert_eq(status_of(4), FAAS__TASK__STATUS__QUEUED, "another function's task stays queued");

    disc_task_counters_t c;
    disc_task_counters(ts, &c);
    cr_assert_eq(c.attempts, 3);
    cr_assert_eq(c.submitted, 4);
}

Test(TASKS_SUITE, started_renew_done_and_the_result)
{
    cr_assert_eq(submit(1, "fn", 1000), 0);
    faas__task_list__free_unpacked(claim("fn", 1, 1000, 2000), NULL);
    Faas__Task *t = NULL;
    cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__STARTED, "inst-a", 2100, &t), 0);
    cr_assert_str_eq(t->instance_id, "inst-a");
    cr_assert_eq(t->lease_until_unix_ms, 7100);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__RENEW, "inst-a", 3000, &t), 0);
    cr_assert_eq(t->lease_until_unix_ms, 8000);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__RENEW, "inst-b", 3000, NULL), -ESTALE, "another instance");

    Faas__TaskResult *res = NULL;
    cr_assert_eq(disc_task_get_result(ts, "00000000000000000000000000000001", &res), -EAGAIN);
    cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__DONE, "inst-a", 4000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__SUCCEEDED);
    cr_assert_eq(t->finished_unix_ms, 4000);
    cr_assert_eq(t->result_status, 201);
    cr_assert_eq(t->result_size, 7);
    cr_assert_eq(t->lease_until_unix_ms, 0);
    faas__task__free_unpacked(t, NULL);

    cr_assert_eq(disc_task_get_result(ts, "00000000000000000000000000000001", &res), 0);
    cr_assert_eq(res->status, 201);
    cr_assert_eq(res->n_headers, 1);
    cr_assert_str_eq(res->headers[0]->value, "1");
    cr_assert_eq(res->body.len, 7);
    cr_assert_eq(memcmp(res->body.data, "result!", 7), 0);
    faas__task_result__free_unpacked(res, NULL);
    cr_assert_eq(disc_task_get_result(ts, "00000000000000000000000000000002", &res), -ENOENT);
}

Test(TASKS_SUITE, stale_and_malformed_reports)
{
    cr_assert_eq(submit(1, "fn", 1000), 0);
    cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__STARTED, "i", 1000, NULL), -ESTALE, "queued");
    cr_assert_eq(report(2, FAAS__TASK_REPORT__KIND__STARTED, "i", 1000, NULL), -ENOENT);
    faas__task_list__free_unpacked(claim("fn", 1, 1000, 2000), NULL);
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    r.id = "00000000000000000000000000000001";
    r.kind = FAAS__TASK_REPORT__KIND__DONE;
    cr_assert_eq(disc_task_report(ts, &r, 2000, NULL), -EINVAL, "DONE without a result");
    r.kind = (Faas__TaskReport__Kind)42;
    cr_assert_eq(disc_task_report(ts, &r, 2000, NULL), -EINVAL);
    cr_assert_eq(status_of(1), FAAS__TASK__STATUS__RUNNING, "a rejected report changes nothing");
    cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__DONE, "", 2500, NULL), 0);
    for (int k = 0; k < 4; k++)
        cr_assert_eq(report(1, (Faas__TaskReport__Kind)k, "", 3000, NULL), -ESTALE, "kind %d after the end", k);
    cr_assert_eq(status_of(1), FAAS__TASK__STATUS__SUCCEEDED);
}

Test(TASKS_SUITE, failed_reports_back_off_then_fail)
{
    cr_assert_eq(disc_task_backoff_ms(1), 1000);
    cr_assert_eq(disc_task_backoff_ms(2), 2000);
    cr_assert_eq(disc_task_backoff_ms(6), 32000);
    cr_assert_eq(disc_task_backoff_ms(7), 60000);
    cr_assert_eq(disc_task_backoff_ms(1000), 60000);

    cr_assert_eq(submit(1, "fn", 0), 0);
    int64_t now = 10000;
    for (uint32_t attempt = 1; attempt <= 3; attempt++) {
        Faas__TaskList *l = claim("fn", 1, 1000, now);
        cr_assert_eq(l->n_tasks, 1, "attempt %u", attempt);
        cr_assert_eq(l->tasks[0]->attempts, attempt);
        faas__task_list__free_unpacked(l, NULL);
        Faas__Task *t = NULL;
        cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__STARTED, "i", now, NULL), 0);
        cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__FAILED, "i", now + 10, &t), 0);
        cr_assert_str_eq(t->error, "user server died");
        if (attempt == 3) {
            cr_assert_eq(t->status, FAAS__TASK__STATUS__FAILED);
            cr_assert_eq(t->finished_unix_ms, now + 10);
            faas__task__free_unpacked(t, NULL);
            break;
        }
        int64_t due = now + 10 + (1000 << (attempt - 1));
        cr_assert_eq(t->status, FAAS__TASK__STATUS__QUEUED);
        cr_assert_eq(t->not_before_unix_ms, due);
        cr_assert_str_eq(t->instance_id, "");
        faas__task__free_unpacked(t, NULL);
        l = claim("fn", 1, 1000, due - 1);
        cr_assert_eq(l->n_tasks, 0, "claimed before its backoff ended");
        faas__task_list__free_unpacked(l, NULL);
        now = due;
    }
    /* a larger max_attempts keeps retrying */
    cr_assert_eq(submit(2, "one", 0), 0);
    faas__task_list__free_unpacked(claim("one", 1, 1000, 100000), NULL);
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    r.id = "00000000000000000000000000000002";
    r.kind = FAAS__TASK_REPORT__KIND__FAILED;
    Faas__Task *t = NULL;
    cr_assert_eq(disc_task_report(ts, &r, 100000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__FAILED, "max_attempts 1: no retry");
    cr_assert_str_eq(t->error, "the attempt failed");
    faas__task__free_unpacked(t, NULL);
}

Test(TASKS_SUITE, rejected_fails_at_once_whatever_the_attempts_left)
{
    cr_assert_eq(submit(1, "fn", 1000), 0);
    cr_assert_eq(submit(2, "fn", 1001), 0);
    faas__task_list__free_unpacked(claim("fn", 2, 1000, 2000), NULL);
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    Faas__Task *t = NULL;
    r.id = "00000000000000000000000000000001";
    r.kind = FAAS__TASK_REPORT__KIND__REJECTED;
    r.error = "result larger than 8 MiB";
    cr_assert_eq(disc_task_report(ts, &r, 2500, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__FAILED);
    cr_assert_eq(t->attempts, 1, "never retried");
    cr_assert_eq(t->finished_unix_ms, 2500);
    cr_assert_str_eq(t->error, "result larger than 8 MiB");
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(disc_task_report(ts, &r, 2600, NULL), -ESTALE, "ended");

    /* a cancel asked for meanwhile wins */
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000002", 2600, NULL), 0);
    r.id = "00000000000000000000000000000002";
    r.error = "";
    cr_assert_eq(disc_task_report(ts, &r, 2700, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__CANCELLED);
    faas__task__free_unpacked(t, NULL);
}

Test(TASKS_SUITE, a_running_cancel_rides_on_every_report_reply_then_ends_cancelled)
{
    Faas__Task *t = NULL;
    cr_assert_eq(submit(1, "fn", 1000), 0);
    faas__task_list__free_unpacked(claim("fn", 1, 1000, 2000), NULL);
    cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__STARTED, "i", 2000, &t), 0);
    cr_assert(!t->cancel_requested);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000001", 2100, &t), 0);
    cr_assert(t->cancel_requested);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__RUNNING);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(report(1, FAAS__TASK_REPORT__KIND__RENEW, "i", 2200, &t), 0);
    cr_assert(t->cancel_requested, "the agent learns it from its next report");
    cr_assert_eq(t->status, FAAS__TASK__STATUS__RUNNING);
    faas__task__free_unpacked(t, NULL);
    t = get(1);
    cr_assert(t->cancel_requested);
    faas__task__free_unpacked(t, NULL);
    /* the agent aborts and reports FAILED "cancelled" */
    char id[33];
    mkid(id, 1);
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    r.id = id;
    r.instance_id = "i";
    r.kind = FAAS__TASK_REPORT__KIND__FAILED;
    r.error = "cancelled";
    cr_assert_eq(disc_task_report(ts, &r, 2300, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__CANCELLED);
    cr_assert_eq(t->attempts, 1);
    cr_assert_str_eq(t->error, "cancelled");
    cr_assert_eq(t->finished_unix_ms, 2300);
    faas__task__free_unpacked(t, NULL);
}

Test(TASKS_SUITE, cancel_in_every_state)
{
    Faas__Task *t = NULL;
    for (unsigned i = 1; i <= 4; i++)
        cr_assert_eq(submit(i, "fn", i), 0);
    /* queued: at once */
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000001", 500, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__CANCELLED);
    cr_assert_eq(t->finished_unix_ms, 500);
    faas__task__free_unpacked(t, NULL);
    /* finished: refused */
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000001", 600, &t), -EALREADY);
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000009", 600, &t), -ENOENT);

    /* running: flagged, then ended by DONE, FAILED or a lapse */
    faas__task_list__free_unpacked(claim("fn", 3, 1000, 1000), NULL);
    for (unsigned i = 2; i <= 4; i++) {
        char id[33];
        mkid(id, i);
        cr_assert_eq(disc_task_cancel(ts, id, 1100, &t), 0);
        cr_assert_eq(t->status, FAAS__TASK__STATUS__RUNNING);
        cr_assert_str_eq(t->error, "cancel requested");
        faas__task__free_unpacked(t, NULL);
        cr_assert_eq(disc_task_cancel(ts, id, 1150, NULL), 0, "a second cancel is harmless");
    }
    t = get(2);
    cr_assert_str_eq(t->error, "cancel requested");
    faas__task__free_unpacked(t, NULL);
    Faas__TaskQuery q = FAAS__TASK_QUERY__INIT;
    Faas__TaskList *l = NULL;
    cr_assert_eq(disc_task_list(ts, &q, &l), 0);
    cr_assert_str_eq(l->tasks[1]->error, "cancel requested");
    faas__task_list__free_unpacked(l, NULL);

    cr_assert_eq(report(2, FAAS__TASK_REPORT__KIND__DONE, "i", 1200, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__CANCELLED);
    cr_assert_str_eq(t->error, "cancelled");
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(report(3, FAAS__TASK_REPORT__KIND__FAILED, "i", 1200, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__CANCELLED, "no retry for a cancelled task");
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(disc_task_expire(ts, 5000), 1);
    cr_assert_eq(status_of(4), FAAS__TASK__STATUS__CANCELLED);
}

/* DONE of task n with a result of the given status and body. */
static int report_result(unsigned n, uint32_t status, const char *body, int64_t now, Faas__Task **out)
{
    char id[33];
    mkid(id, n);
    Faas__TaskResult res = FAAS__TASK_RESULT__INIT;
    res.status = status;
    res.body.data = (uint8_t *)body;
    res.body.len = strlen(body);
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    r.id = id;
    r.kind = FAAS__TASK_REPORT__KIND__DONE;
    r.result = &res;
    return disc_task_report(ts, &r, now, out);
}

static size_t n_claimed(const char *fn, uint32_t max, int64_t now)
{
    Faas__TaskList *l = claim(fn, max, 1000, now);
    size_t n = l->n_tasks;
    faas__task_list__free_unpacked(l, NULL);
    return n;
}

Test(TASKS_SUITE, claims_stay_under_the_function_concurrency)
{
    for (unsigned i = 1; i <= 5; i++)
        cr_assert_eq(submit(i, "c2", i), 0);
    cr_assert_eq(submit(9, "fn", 0), 0);
    cr_assert_eq(n_claimed("c2", 10, 1000), 2, "async.concurrency 2");
    cr_assert_eq(n_claimed("c2", 10, 1000), 0, "two run already");
    cr_assert_eq(n_claimed("fn", 10, 1000), 1, "another function is not held back");
    cr_assert_eq(report_result(1, 200, "ok", 1100, NULL), 0);
    cr_assert_eq(n_claimed("c2", 10, 1200), 1, "one ended: room for one");
    cr_assert_eq(n_claimed("c2", 10, 1200), 0);
    for (unsigned i = 1; i <= 16; i++)
        cr_assert_eq(submit(100 + i, "fn", 0), 0);
    cr_assert_eq(n_claimed("fn", 100, 1300), 15, "the default: 16 at once");
}

Test(TASKS_SUITE, retry_5xx_retries_and_keeps_the_last_result)
{
    Faas__Task *t = NULL;
    cr_assert_eq(submit(1, "r5", 0), 0);
    cr_assert_eq(submit(2, "fn", 0), 0);
    cr_assert_eq(n_claimed("r5", 1, 1000), 1);
    cr_assert_eq(report_result(1, 503, "busy", 1000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__QUEUED, "a failed attempt");
    cr_assert_str_eq(t->error, "HTTP 503");
    cr_assert_eq(t->not_before_unix_ms, 2000);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(n_claimed("r5", 1, 2000), 1);
    cr_assert_eq(report_result(1, 502, "gateway", 2000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__FAILED, "attempt 2 of 2");
    cr_assert_str_eq(t->error, "HTTP 502");
    cr_assert_eq(t->result_status, 502);
    faas__task__free_unpacked(t, NULL);
    Faas__TaskResult *res = NULL;
    cr_assert_eq(disc_task_get_result(ts, "00000000000000000000000000000001", &res), 0, "the last 5xx kept");
    cr_assert_eq(res->status, 502);
    cr_assert_eq(memcmp(res->body.data, "gateway", 7), 0);
    faas__task_result__free_unpacked(res, NULL);

    cr_assert_eq(n_claimed("fn", 1, 1000), 1);
    cr_assert_eq(report_result(2, 503, "busy", 1000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__SUCCEEDED, "without retry_5xx a 5xx is a result");
    faas__task__free_unpacked(t, NULL);
}

Test(TASKS_SUITE, a_result_over_max_result_fails_unstored)
{
    Faas__Task *t = NULL;
    cr_assert_eq(submit(1, "small", 0), 0);
    cr_assert_eq(submit(2, "small", 0), 0);
    cr_assert_eq(n_claimed("small", 2, 1000), 2);
    cr_assert_eq(report_result(1, 200, "toolarge", 1000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__FAILED);
    cr_assert_eq(t->attempts, 1, "not retried");
    cr_assert_str_eq(t->error, "result of 8 bytes is larger than async.max_result (4 bytes)");
    faas__task__free_unpacked(t, NULL);
    Faas__TaskResult *res = NULL;
    cr_assert_eq(disc_task_get_result(ts, "00000000000000000000000000000001", &res), -ENODATA);
    cr_assert_eq(report_result(2, 200, "fits", 1000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__SUCCEEDED, "4 bytes is the limit, not over it");
    faas__task__free_unpacked(t, NULL);
}

Test(TASKS_SUITE, expiry_requeues_then_fails)
{
    cr_assert_eq(submit(1, "two", 0), 0);
    cr_assert_eq(submit(2, "two", 1), 0);
    faas__task_list__free_unpacked(claim("two", 2, 1000, 1000), NULL);
    cr_assert_eq(report(2, FAAS__TASK_REPORT__KIND__STARTED, "i", 1000, NULL), 0); /* lease to 6000 */
    cr_assert_eq(disc_task_expire(ts, 1500), 0);
    cr_assert_eq(disc_task_expire(ts, 2000), 0, "the lease is good through its end");
    cr_assert_eq(disc_task_expire(ts, 2001), 1);
    Faas__Task *t = get(1);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__QUEUED);
    cr_assert_str_eq(t->error, DISC_TASK_LEASE_LAPSED);
    cr_assert_eq(t->not_before_unix_ms, 3001);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(status_of(2), FAAS__TASK__STATUS__RUNNING, "its report renewed the lease");

    faas__task_list__free_unpacked(claim("two", 1, 1000, 3001), NULL);
    cr_assert_eq(disc_task_expire(ts, 7000), 2, "both lapsed");
    t = get(1);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__FAILED, "attempt 2 of 2");
    cr_assert_eq(t->finished_unix_ms, 7000);
    cr_assert_str_eq(t->error, DISC_TASK_LEASE_LAPSED);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(status_of(2), FAAS__TASK__STATUS__QUEUED, "attempt 1 of 2");
}

Test(TASKS_SUITE, purge_drops_finished_tasks_past_retention)
{
    disc_task_configure(ts, &(disc_task_config_t){.retention_ms = 2000});
    for (unsigned i = 1; i <= 3; i++)
        cr_assert_eq(submit_cb(i, "fn", 0, ""), 0); /* no callback to wait for */
    cr_assert_eq(submit_cb(4, "keep", 0, ""), 0);
    cr_assert_eq(submit_cb(5, "gone", 0, ""), 0); /* a deleted function: the default */
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000004", 1000, NULL), 0);
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000005", 1000, NULL), 0);
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000001", 1000, NULL), 0);
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000002", 4000, NULL), 0);
    faas__task_list__free_unpacked(claim("fn", 1, 100000, 0), NULL); /* 3 runs */
    cr_assert_eq(disc_task_purge(ts, 5000), 2, "1 and 5: finished at 1000, kept 2 s");
    Faas__Task *t = NULL;
    cr_assert_eq(disc_task_get(ts, "00000000000000000000000000000001", &t), -ENOENT);
    cr_assert_eq(disc_task_get(ts, "00000000000000000000000000000005", &t), -ENOENT);
    cr_assert_eq(status_of(2), FAAS__TASK__STATUS__CANCELLED);
    cr_assert_eq(status_of(3), FAAS__TASK__STATUS__RUNNING);
    cr_assert_eq(status_of(4), FAAS__TASK__STATUS__CANCELLED, "its function keeps tasks 10 s");
    cr_assert_eq(disc_task_purge(ts, 10999), 1, "2");
    cr_assert_eq(disc_task_purge(ts, 11001), 1, "4");
    cr_assert_eq(disc_task_purge(ts, 100000), 0, "3 still runs");
}

/* Walks the pages of query; returns how many tasks came back, checking the order. */
static unsigned walk(Faas__TaskQuery *q, unsigned *pages)
{
    char after[33] = "", last[33] = "";
    unsigned total = 0;
    *pages = 0;
    for (;;) {
        Faas__TaskList *l = NULL;
        q->after = after;
        cr_assert_eq(disc_task_list(ts, q, &l), 0);
        (*pages)++;
        for (size_t i = 0; i < l->n_tasks; i++) {
            cr_assert(strcmp(l->tasks[i]->id, last) > 0, "ordered by id");
            snprintf(last, sizeof(last), "%s", l->tasks[i]->id);
        }
        total += (unsigned)l->n_tasks;
        int more = l->next[0] != '\0';
        if (more)
            cr_assert_str_eq(l->next, l->tasks[l->n_tasks - 1]->id);
        snprintf(after, sizeof(after), "%s", l->next);
        faas__task_list__free_unpacked(l, NULL);
        if (!more)
            return total;
    }
}

Test(TASKS_SUITE, list_pages_with_a_cursor)
{
    /* 250 tasks, inserted out of id order, over two functions */
    for (unsigned i = 250; i >= 1; i--)
        cr_assert_eq(submit(i, i % 5 == 0 ? "five" : "fn", i), 0);
    Faas__TaskQuery q = FAAS__TASK_QUERY__INIT;
    unsigned pages;
    cr_assert_eq(walk(&q, &pages), 250);
    cr_assert_eq(pages, 3, "100 + 100 + 50");
    q.limit = 7;
    cr_assert_eq(walk(&q, &pages), 250);
    cr_assert_eq(pages, 36);
    q.limit = 50;
    cr_assert_eq(walk(&q, &pages), 250);
    cr_assert_eq(pages, 5, "an exact last page: its next is empty");
    q.limit = 5000; /* capped at 1000 */
    cr_assert_eq(walk(&q, &pages), 250);
    cr_assert_eq(pages, 1);

    q.limit = 0;
    q.function = "five";
    cr_assert_eq(walk(&q, &pages), 50);
    faas__task_list__free_unpacked(claim("five", 10, 1000, 1000), NULL);
    q.by_status = 1;
    q.status = FAAS__TASK__STATUS__RUNNING;
    cr_assert_eq(walk(&q, &pages), 10);
    q.status = FAAS__TASK__STATUS__QUEUED;
    cr_assert_eq(walk(&q, &pages), 40);
    q.function = "";
    cr_assert_eq(walk(&q, &pages), 240);
    q.function = "nope";
    cr_assert_eq(walk(&q, &pages), 0);

    Faas__TaskList *l = NULL;
    Faas__TaskQuery one = FAAS__TASK_QUERY__INIT;
    one.limit = 1;
    one.after = "00000000000000000000000000000010";
    cr_assert_eq(disc_task_list(ts, &one, &l), 0);
    cr_assert_eq(l->n_tasks, 1);
    cr_assert_str_eq(l->tasks[0]->id, "00000000000000000000000000000011");
    cr_assert_null(l->tasks[0]->request);
    faas__task_list__free_unpacked(l, NULL);
}

static void on_done(void *ud, int rc)
{
    int *slot = ud;
    __atomic_store_n(slot, rc == 0 ? 1 : rc, __ATOMIC_RELEASE);
}

Test(TASKS_SUITE, async_submit_calls_back_once_committed)
{
    Faas__Task t[3] = {FAAS__TASK__INIT, FAAS__TASK__INIT, FAAS__TASK__INIT};
    int done[3] = {0, 0, 0};
    const char *ids[3] = {"0000000000000000000000000000000a", "0000000000000000000000000000000b",
                          "0000000000000000000000000000000a"};
    for (int i = 0; i < 3; i++) {
        t[i].id = (char *)ids[i];
        t[i].function = "fn";
        cr_assert_eq(disc_task_submit_async(ts, &t[i], on_done, &done[i]), 0);
    }
    disc_task_flush(ts);
    cr_assert_eq(done[0], 1);
    cr_assert_eq(done[1], 1);
    cr_assert_eq(done[2], -EEXIST, "the duplicate fails alone");
    cr_assert_eq(disc_task_submit_async(ts, &(Faas__Task)FAAS__TASK__INIT, on_done, &done[0]), -EINVAL);
}

Test(TASKS_SUITE, metrics_name_every_family)
{
    cr_assert_eq(submit(1, "fn", 1000), 0);
    cr_assert_eq(submit(2, "fn", 2000), 0);
    cr_assert_eq(submit(3, "b", 3000), 0);
    faas__task_list__free_unpacked(claim("fn", 1, 1000, 5000), NULL);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    disc_task_metrics(ts, f, 5000);
    fclose(f);
    const char *want[] = {
        "# TYPE faas_tasks gauge\n",
        "faas_tasks{function=\"fn\",status=\"queued\"} 1\n",
        "faas_tasks{function=\"fn\",status=\"running\"} 1\n",
        "faas_tasks{function=\"fn\",status=\"cancelled\"} 0\n",
        "faas_tasks{function=\"b\",status=\"queued\"} 1\n",
        "# TYPE faas_task_queue_oldest_seconds gauge\n",
        "faas_task_queue_oldest_seconds{function=\"fn\"} 3.000\n",
        "faas_task_queue_oldest_seconds{function=\"b\"} 2.000\n",
        "# TYPE faas_tasks_submitted_total counter\nfaas_tasks_submitted_total 3\n",
        "# TYPE faas_task_commits_total counter\nfaas_task_commits_total 3\n",
        "# TYPE faas_task_attempts_total counter\nfaas_task_attempts_total 1\n",
        "# HELP faas_task_attempts_total ",
        "# TYPE faas_task_callbacks_total counter\n",
        "faas_task_callbacks_total{outcome=\"delivered\"} 0\n",
        "faas_task_callbacks_total{outcome=\"retried\"} 0\n",
        "faas_task_callbacks_total{outcome=\"failed\"} 0\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert(strstr(buf, want[i]) != NULL, "missing %s in\n%s", want[i], buf);
    free(buf);
}

/* ---- callbacks ------------------------------------------------------------------------ */

static Faas__CallbackDueList *claim_cbs(uint32_t max, uint32_t lease_ms, int64_t now)
{
    Faas__CallbackDueList *l = NULL;
    cr_assert_eq(disc_task_claim_callbacks(ts, max, lease_ms, now, &l), 0);
    return l;
}

static size_t n_due(uint32_t max, uint32_t lease_ms, int64_t now)
{
    Faas__CallbackDueList *l = claim_cbs(max, lease_ms, now);
    size_t n = l->n_due;
    faas__callback_due_list__free_unpacked(l, NULL);
    return n;
}

static int report_cb(unsigned n, int delivered, const char *error, int64_t now, Faas__Task **out)
{
    char id[33];
    mkid(id, n);
    Faas__CallbackReport r = FAAS__CALLBACK_REPORT__INIT;
    r.id = id;
    r.delivered = delivered;
    r.error = (char *)error;
    r.claimer = "test";
    return disc_task_report_callback(ts, &r, now, out);
}

/* Claimed and started at now, then done. */
static void run_to_done(unsigned n, const char *fn, int64_t now)
{
    faas__task_list__free_unpacked(claim(fn, 1, 1000, now), NULL);
    cr_assert_eq(report(n, FAAS__TASK_REPORT__KIND__DONE, "i", now, NULL), 0);
}

Test(TASKS_SUITE, callback_backoff_doubles_up_to_5_min)
{
    cr_assert_eq(disc_task_callback_backoff_ms(1000, 0), 1000);
    cr_assert_eq(disc_task_callback_backoff_ms(1000, 1), 1000);
    cr_assert_eq(disc_task_callback_backoff_ms(1000, 3), 4000);
    cr_assert_eq(disc_task_callback_backoff_ms(1000, 9), 256000);
    cr_assert_eq(disc_task_callback_backoff_ms(1000, 10), 300000);
    cr_assert_eq(disc_task_callback_backoff_ms(1000, 4000000000u), 300000);
}

Test(TASKS_SUITE, callback_due_when_done_retried_then_failed)
{
    disc_task_configure(ts, &(disc_task_config_t){.callback_attempts = 3, .callback_backoff_ms = 100});
    cr_assert_eq(submit(1, "fn", 1000), 0);
    cr_assert_eq(n_due(10, 0, 5000), 0, "not finished: nothing due");
    run_to_done(1, "fn", 2000);
    Faas__Task *t = get(1);
    cr_assert_str_eq(t->callback_status, "pending");
    faas__task__free_unpacked(t, NULL);

    Faas__CallbackDueList *l = claim_cbs(10, 1000, 2000);
    cr_assert_eq(l->n_due, 1);
    cr_assert_str_eq(l->due[0]->task->id, "00000000000000000000000000000001");
    cr_assert_str_eq(l->due[0]->task->callback_url, "http://cb/");
    cr_assert_eq(l->due[0]->task->status, FAAS__TASK__STATUS__SUCCEEDED);
    cr_assert_eq(l->due[0]->task->callback_attempts, 1, "this attempt counted");
    cr_assert_not_null(l->due[0]->result);
    cr_assert_eq(l->due[0]->result->status, 201);
    cr_assert_eq(l->due[0]->result->body.len, 7);
    cr_assert_str_eq(l->due[0]->result->headers[0]->key, "x-a");
    faas__callback_due_list__free_unpacked(l, NULL);
    cr_assert_eq(n_due(10, 1000, 2999), 0, "leased");

    cr_assert_eq(report_cb(1, 0, "HTTP 503", 2500, &t), 0);
    cr_assert_str_eq(t->callback_status, "pending");
    cr_assert_eq(t->callback_attempts, 1);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(n_due(10, 1000, 2599), 0, "backing off 100 ms");
    cr_assert_eq(n_due(10, 1000, 2600), 1);
    cr_assert_eq(report_cb(1, 0, "HTTP 503", 2700, NULL), 0);
    cr_assert_eq(n_due(10, 1000, 2899), 0, "then 200 ms");
    cr_assert_eq(n_due(10, 1000, 2900), 1);
    cr_assert_eq(report_cb(1, 0, "connect: refused", 3000, &t), 0);
    cr_assert_str_eq(t->callback_status, "failed: connect: refused");
    cr_assert_eq(t->callback_attempts, 3);
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(n_due(10, 1000, 1000000), 0);
    cr_assert_eq(report_cb(1, 1, "", 3000, NULL), -ENOMSG, "no callback pending");
    cr_assert_eq(report_cb(2, 1, "", 3000, NULL), -ENOENT);
    disc_task_counters_t c;
    disc_task_counters(ts, &c);
    cr_assert_eq(c.callbacks[DISC_CB_RETRIED], 2);
    cr_assert_eq(c.callbacks[DISC_CB_FAILED], 1);
    cr_assert_eq(c.callbacks[DISC_CB_DELIVERED], 0);
}

Test(TASKS_SUITE, callback_of_a_cancel_a_lapsed_claim_and_delivery)
{
    cr_assert_eq(submit(1, "fn", 1000), 0);
    cr_assert_eq(submit_cb(2, "fn", 1000, ""), 0);
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000001", 1500, NULL), 0);
    cr_assert_eq(disc_task_cancel(ts, "00000000000000000000000000000002", 1500, NULL), 0);
    Faas__Task *t = get(2);
    cr_assert_str_eq(t->callback_status, "", "no callback_url: nothing to deliver");
    faas__task__free_unpacked(t, NULL);

    Faas__CallbackDueList *l = claim_cbs(10, 100, 2000);
    cr_assert_eq(l->n_due, 1);
    cr_assert_eq(l->due[0]->task->status, FAAS__TASK__STATUS__CANCELLED);
    cr_assert_null(l->due[0]->result, "ended without a response");
    faas__callback_due_list__free_unpacked(l, NULL);
    l = claim_cbs(10, 0, 2100); /* the first claimer's lease lapsed: another takes it */
    cr_assert_eq(l->n_due, 1);
    cr_assert_eq(l->due[0]->task->callback_attempts, 2);
    faas__callback_due_list__free_unpacked(l, NULL);
    cr_assert_eq(n_due(10, 0, 2100 + 29999), 0, "the default lease is 30 s");
    cr_assert_eq(report_cb(1, 1, "", 2200, &t), 0);
    cr_assert_str_eq(t->callback_status, "delivered");
    faas__task__free_unpacked(t, NULL);
    cr_assert_eq(report_cb(1, 1, "", 2200, NULL), -ENOMSG);
    cr_assert_eq(n_due(10, 0, 1000000), 0);
}

Test(TASKS_SUITE, callback_claims_are_capped_by_count_and_bytes)
{
    for (unsigned i = 1; i <= 20; i++) {
        cr_assert_eq(submit(i, "fn", 1000), 0);
        char id[33];
        mkid(id, i);
        cr_assert_eq(disc_task_cancel(ts, id, 1500, NULL), 0);
    }
    cr_assert_eq(n_due(100, 0, 2000), 16, "at most 16 a claim");
    cr_assert_eq(n_due(0, 0, 2000), 1, "max 0 is 1");
    cr_assert_eq(n_due(100, 0, 2000), 3);

#ifndef TASKS_ETCD /* etcd stores results up to 1.2 MiB (test_tasks_etcd.c) */
    /* two results of 9 MiB: one a claim, so a reply stays under 16 MiB */
    size_t big = 9u << 20;
    uint8_t *body = calloc(1, big);
    Faas__TaskResult res = FAAS__TASK_RESULT__INIT;
    res.status = 200;
    res.body.data = body;
    res.body.len = big;
    for (unsigned i = 31; i <= 32; i++) {
        char id[33];
        mkid(id, i);
        cr_assert_eq(submit(i, "huge", 1000), 0);
        faas__task_list__free_unpacked(claim("huge", 1, 1000, 3000), NULL);
        Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
        r.id = id;
        r.kind = FAAS__TASK_REPORT__KIND__DONE;
        r.result = &res;
        cr_assert_eq(disc_task_report(ts, &r, 3000, NULL), 0);
    }
    free(body);
    Faas__CallbackDueList *l = claim_cbs(16, 0, 3000);
    cr_assert_eq(l->n_due, 1);
    cr_assert_eq(l->due[0]->result->body.len, big);
    faas__callback_due_list__free_unpacked(l, NULL);
    cr_assert_eq(n_due(16, 0, 3000), 1);
#endif
}

#ifndef TASKS_ETCD /* SQLite's schema */
Test(TASKS_SUITE, an_older_table_gets_the_new_columns)
{
    char d2[300], cmd[2048];
    const char *err = NULL;
    snprintf(d2, sizeof(d2), "%s/old", dir);
    snprintf(
        cmd, sizeof(cmd),
        "mkdir -p %s && sqlite3 %s/discovery.db \"CREATE TABLE tasks (id TEXT PRIMARY KEY, function TEXT NOT NULL,"
        " version INTEGER NOT NULL DEFAULT 0, status INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
        " created_unix_ms INTEGER NOT NULL DEFAULT 0, started_unix_ms INTEGER NOT NULL DEFAULT 0,"
        " finished_unix_ms INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',"
        " result_status INTEGER NOT NULL DEFAULT 0, result_size INTEGER NOT NULL DEFAULT 0,"
        " callback_url TEXT NOT NULL DEFAULT '', callback_status TEXT NOT NULL DEFAULT '',"
        " callback_attempts INTEGER NOT NULL DEFAULT 0, not_before_unix_ms INTEGER NOT NULL DEFAULT 0,"
        " instance_id TEXT NOT NULL DEFAULT '', lease_until_unix_ms INTEGER NOT NULL DEFAULT 0,"
        " cancel_requested INTEGER NOT NULL DEFAULT 0, request BLOB, result_headers BLOB, result_body BLOB);"
        " INSERT INTO tasks(id, function, status) VALUES('%032x', 'fn', 0);\"",
        d2, d2, 1u);
    if (system("command -v sqlite3 >/dev/null") != 0)
        cr_skip_test("no sqlite3 command");
    cr_assert_eq(system(cmd), 0);
    disc_tasks_t *old = disc_task_open(d2, DISC_TASK_SYNC_NORMAL, &err);
    cr_assert_not_null(old, "%s", err);
    cr_assert_eq(disc_task_cancel(old, "00000000000000000000000000000001", 1500, NULL), 0);
    Faas__CallbackDueList *l = NULL;
    cr_assert_eq(disc_task_claim_callbacks(old, 1, 0, 2000, &l), 0);
    cr_assert_eq(l->n_due, 0, "no callback_url");
    faas__callback_due_list__free_unpacked(l, NULL);
    disc_task_close(old);
    old = disc_task_open(d2, DISC_TASK_SYNC_NORMAL, &err); /* and opens again with them */
    cr_assert_not_null(old, "%s", err);
    disc_task_close(old);
}
#endif

/* ---- group commit ------------------------------------------------------------------ */

#define GC_THREADS 16
#define GC_TASKS 2000

typedef struct {
    unsigned first, n;
    int failures;
} gc_arg_t;

static void *gc_submitter(void *p)
{
    gc_arg_t *a = p;
    for (unsigned i = 0; i < a->n; i++)
        if (submit(a->first + i, "fn", 1) != 0)
            a->failures++;
    return NULL;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* 2,000 tasks from 16 threads: all durable, and they shared transactions. */
static void group_commit(int sync, const char *mode)
{
    pthread_t th[GC_THREADS];
    gc_arg_t args[GC_THREADS];
    const char *err = NULL;
    if (sync != DISC_TASK_SYNC_NORMAL) {
        disc_task_close(ts);
        cr_assert_not_null(ts = store_open(sync, &err), "%s", err);
    }
    double t0 = now_s();
    for (int i = 0; i < GC_THREADS; i++) {
        args[i] = (gc_arg_t){.first = 1 + (unsigned)i * (GC_TASKS / GC_THREADS), .n = GC_TASKS / GC_THREADS};
        cr_assert_eq(pthread_create(&th[i], NULL, gc_submitter, &args[i]), 0);
    }
    for (int i = 0; i < GC_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].failures, 0);
    }
    double secs = now_s() - t0;
    disc_task_counters_t c;
    disc_task_counters(ts, &c);
    cr_assert_eq(c.submitted, GC_TASKS);
    cr_assert_lt(c.commits, c.submitted, "no transaction was shared");
    fprintf(stderr,
            "group commit (%s, synchronous=%s): %d tasks from %d threads in %.3f s = %.0f tasks/s, "
            "%llu transactions, %.1f tasks per transaction\n",
            TASKS_STORE, mode, GC_TASKS, GC_THREADS, secs, GC_TASKS / secs, (unsigned long long)c.commits,
            (double)c.submitted / (double)c.commits);

    disc_task_close(ts); /* reopen: what the submitters were told is on disk */
    cr_assert_not_null(ts = store_open(DISC_TASK_SYNC_NORMAL, &err), "%s", err);
    Faas__TaskQuery q = FAAS__TASK_QUERY__INIT;
    q.limit = 1000;
    unsigned pages;
    cr_assert_eq(walk(&q, &pages), GC_TASKS);
}

Test(TASKS_SUITE, group_commit_synchronous_normal)
{
    group_commit(DISC_TASK_SYNC_NORMAL, "NORMAL");
}

#ifndef TASKS_ETCD /* a SQLite setting */
Test(TASKS_SUITE, group_commit_synchronous_full)
{
    group_commit(DISC_TASK_SYNC_FULL, "FULL");
}
#endif

Test(TASKS_SUITE, purge_waits_for_a_pending_callback_and_goes_in_batches)
{
    disc_task_configure(ts, &(disc_task_config_t){.retention_ms = 1000, .callback_attempts = 2});
    cr_assert_eq(submit_cb(1, "fn", 1000, "http://cb/"), 0);
    run_to_done(1, "fn", 2000);
    cr_assert_eq(disc_task_purge(ts, 10000), 0, "its callback is still pending");
    cr_assert_eq(n_due(10, 1000, 10000), 1);
    cr_assert_eq(report_cb(1, 1, "", 10001, NULL), 0);
    cr_assert_eq(disc_task_purge(ts, 10002), 1, "delivered: the retention rules again");

    /* more finished tasks than one purge transaction takes: one call still purges all */
    for (unsigned i = 2; i <= 1201; i++)
        cr_assert_eq(submit_cb(i, "gone", 0, ""), 0);
    for (unsigned i = 2; i <= 1201; i++) {
        char id[33];
        mkid(id, i);
        cr_assert_eq(disc_task_cancel(ts, id, 20000, NULL), 0);
    }
    cr_assert_eq(disc_task_purge(ts, 30000), 1200);
}
