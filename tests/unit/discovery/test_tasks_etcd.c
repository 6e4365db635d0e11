/* The task store on etcd (discovery/tasks_etcd.c) against a real etcd each test starts
 * (free ports, a temp data dir, killed by PID): every scenario of test_tasks.c, plus
 * what only several discoveries on one etcd can show: a task submitted through one is
 * claimed through another, and stores claiming one queue at once never take a task
 * twice nor pass the function's concurrency. */
#include <criterion/criterion.h>

#include "discovery/discovery.h"
#include "etcdc/etcdc.h"
#include "tests/unit/etcdc/etcd_proc.c" /* the etcd tests' own starter: unit-discovery links only this dir */
#include "tests/unit/watchdog.h"

#define TASKS_SUITE tasks_etcd
#define TASKS_ETCD 1
#define TASKS_STORE "etcd"
#define PREFIX "/faas-test/"

static etcd_proc_t etcd;
static etcdc_t *client;

static void store_setup(void);
static void store_teardown(void);
static disc_tasks_t *store_open(int synchronous, const char **err);

#include "test_tasks.c"

static etcdc_t *connect_etcd(void)
{
    char err[256] = "";
    etcdc_t *c = etcdc_open(etcd.endpoint, 10000, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    return c;
}

static void store_setup(void)
{
    cr_assert_eq(etcd_proc_start(&etcd), 0, "etcd did not start");
    client = connect_etcd();
}

static void store_teardown(void)
{
    etcdc_close(client);
    etcd_proc_destroy(&etcd);
}

static disc_tasks_t *store_open(int synchronous, const char **err)
{
    (void)synchronous;
    return disc_task_open_etcd(client, PREFIX, err);
}

/* ---- several stores on one etcd ------------------------------------------------- */

Test(tasks_etcd, a_task_submitted_through_one_store_is_claimed_and_finished_through_another)
{
    const char *err = NULL;
    etcdc_t *c2 = connect_etcd();
    disc_tasks_t *other = disc_task_open_etcd(c2, PREFIX, &err);
    cr_assert_not_null(other, "%s", err);
    disc_task_set_lookup(other, lookup, NULL);
    cr_assert_eq(submit(1, "fn", 1000), 0);
    etcdc_kv_t kv;
    const char *key = PREFIX "async/tasks/00000000000000000000000000000001";
    cr_assert_eq(etcdc_get(c2, key, strlen(key), &kv), 0, "in its own subtree of the prefix");
    etcdc_kv_free(&kv);
    Faas__TaskList *l = NULL;
    cr_assert_eq(disc_task_claim(other, "fn", 10, 1000, 2000, &l), 0);
    cr_assert_eq(l->n_tasks, 1);
    cr_assert_str_eq(l->tasks[0]->id, "00000000000000000000000000000001");
    cr_assert_not_null(l->tasks[0]->request);
    cr_assert_eq(memcmp(l->tasks[0]->request->body.data, "payload", 7), 0, "the request came along");
    faas__task_list__free_unpacked(l, NULL);
    cr_assert_eq(status_of(1), FAAS__TASK__STATUS__RUNNING, "the first store sees the claim");
    cr_assert_eq(report_result(1, 200, "done", 2100, NULL), 0); /* reported through the first */
    Faas__TaskResult *res = NULL;
    cr_assert_eq(disc_task_get_result(other, "00000000000000000000000000000001", &res), 0);
    cr_assert_eq(res->body.len, 4);
    faas__task_result__free_unpacked(res, NULL);
    disc_task_close(other);
    etcdc_close(c2);
}

#define RACE_STORES 4
#define RACE_TASKS 300

typedef struct {
    disc_tasks_t *ts;
    etcdc_t *c;
    const char *function;
    char (*ids)[33]; /* what this store claimed */
    size_t n;
    int errors;
    int64_t now;
} racer_t;

static void *racer(void *p)
{
    racer_t *r = p;
    for (int idle = 0; idle < 10;) {
        Faas__TaskList *l = NULL;
        if (disc_task_claim(r->ts, r->function, 7, 60000, r->now, &l) != 0) {
            r->errors++;
            return NULL;
        }
        idle = l->n_tasks == 0 ? idle + 1 : 0;
        for (size_t i = 0; i < l->n_tasks; i++)
            snprintf(r->ids[r->n++], 33, "%s", l->tasks[i]->id);
        faas__task_list__free_unpacked(l, NULL);
    }
    return NULL;
}

/* Starts RACE_STORES stores (a client each) claiming function at once; returns how
 * many tasks they took together, failing on any taken twice. */
static size_t race(const char *function, int64_t now)
{
    racer_t r[RACE_STORES];
    pthread_t th[RACE_STORES];
    const char *err = NULL;
    static char seen[RACE_TASKS + 1];
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < RACE_STORES; i++) {
        r[i] = (racer_t){.c = connect_etcd(), .function = function, .now = now};
        cr_assert_not_null(r[i].ts = disc_task_open_etcd(r[i].c, PREFIX, &err), "%s", err);
        disc_task_set_lookup(r[i].ts, lookup, NULL);
        cr_assert_not_null(r[i].ids = calloc(RACE_TASKS, sizeof(*r[i].ids)));
    }
    for (int i = 0; i < RACE_STORES; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, racer, &r[i]), 0);
    size_t total = 0;
    for (int i = 0; i < RACE_STORES; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(r[i].errors, 0, "a claim failed");
        for (size_t j = 0; j < r[i].n; j++) {
            unsigned n = 0;
            cr_assert_eq(sscanf(r[i].ids[j], "%x", &n), 1);
            cr_assert(n >= 1 && n <= RACE_TASKS);
            cr_assert_eq(seen[n], 0, "task %u claimed twice", n);
            seen[n] = 1;
        }
        total += r[i].n;
        fprintf(stderr, "etcd race on %s: store %d claimed %zu\n", function, i, r[i].n);
        disc_task_close(r[i].ts);
        etcdc_close(r[i].c);
        free(r[i].ids);
    }
    return total;
}

Test(tasks_etcd, stores_claiming_at_once_never_take_a_task_twice)
{
    UNIT_WATCHDOG(60);
    for (unsigned i = 1; i <= RACE_TASKS; i++)
        cr_assert_eq(submit(i, "wide", (int64_t)i), 0);
    cr_assert_eq(race("wide", 1000000), RACE_TASKS, "every task claimed exactly once");
    Faas__TaskQuery q = FAAS__TASK_QUERY__INIT;
    q.by_status = 1;
    q.status = FAAS__TASK__STATUS__QUEUED;
    q.limit = 1000;
    unsigned pages;
    cr_assert_eq(walk(&q, &pages), 0, "none left queued");
}

/* Ends every running task of function (DONE through the test's own store). */
static void finish_running(const char *function, int64_t now)
{
    Faas__TaskQuery q = FAAS__TASK_QUERY__INIT;
    Faas__TaskList *l = NULL;
    q.function = (char *)function;
    q.by_status = 1;
    q.status = FAAS__TASK__STATUS__RUNNING;
    cr_assert_eq(disc_task_list(ts, &q, &l), 0);
    for (size_t i = 0; i < l->n_tasks; i++) {
        unsigned n = 0;
        cr_assert_eq(sscanf(l->tasks[i]->id, "%x", &n), 1);
        cr_assert_eq(report_result(n, 200, "ok", now, NULL), 0);
    }
    faas__task_list__free_unpacked(l, NULL);
}

/* Rounds of a race: the rare interleaving that would pass the bound gets its chances. */
Test(tasks_etcd, stores_claiming_at_once_stay_under_the_concurrency)
{
    UNIT_WATCHDOG(90);
    for (unsigned i = 1; i <= 40; i++)
        cr_assert_eq(submit(i, "c2", (int64_t)i), 0);
    for (int round = 0; round < 8; round++) {
        cr_assert_eq(race("c2", 1000000), 2, "async.concurrency 2 across every store (round %d)", round);
        finish_running("c2", 1000000);
    }
}

Test(tasks_etcd, a_result_larger_than_etcd_takes_fails_the_task_named)
{
    Faas__Task *t = NULL;
    size_t big = 2u << 20;
    uint8_t *body = calloc(1, big);
    Faas__TaskResult res = FAAS__TASK_RESULT__INIT;
    res.status = 200;
    res.body.data = body;
    res.body.len = big;
    cr_assert_eq(submit(1, "huge", 1000), 0);
    cr_assert_eq(submit(2, "huge", 1000), 0);
    faas__task_list__free_unpacked(claim("huge", 2, 1000, 2000), NULL);
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    r.id = "00000000000000000000000000000001";
    r.kind = FAAS__TASK_REPORT__KIND__DONE;
    r.result = &res;
    cr_assert_eq(disc_task_report(ts, &r, 2000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__FAILED);
    cr_assert(strstr(t->error, "larger than async.max_result") != NULL, "%s", t->error);
    faas__task__free_unpacked(t, NULL);
    res.body.len = 1u << 20; /* 1 MiB fits */
    r.id = "00000000000000000000000000000002";
    cr_assert_eq(disc_task_report(ts, &r, 2000, &t), 0);
    cr_assert_eq(t->status, FAAS__TASK__STATUS__SUCCEEDED);
    faas__task__free_unpacked(t, NULL);
    free(body);
    Faas__CallbackDueList *l = claim_cbs(16, 0, 3000);
    cr_assert_eq(l->n_due, 2, "both callbacks due");
    cr_assert_eq(l->due[1]->result->body.len, 1u << 20);
    faas__callback_due_list__free_unpacked(l, NULL);
}

Test(tasks_etcd, etcd_down_fails_calls_and_keeps_what_was_accepted)
{
    UNIT_WATCHDOG(60);
    Faas__TaskList *l = NULL;
    cr_assert_eq(submit(1, "fn", 1000), 0);
    etcd_proc_kill(&etcd);
    cr_assert_eq(submit(2, "fn", 1000), -EIO, "not accepted: the caller answers 503");
    cr_assert_eq(disc_task_claim(ts, "fn", 10, 1000, 2000, &l), -EIO);
    cr_assert_eq(etcd_proc_restart(&etcd), 0);
    /* the client reconnects once etcd answers again (grpc's backoff): polled, 30 s at most */
    int rc = -EIO;
    for (int i = 0; i < 600 && rc != 0; i++) {
        if ((rc = disc_task_claim(ts, "fn", 10, 1000, 2000, &l)) != 0)
            nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(l->n_tasks, 1, "the accepted task survived etcd's restart");
    cr_assert_str_eq(l->tasks[0]->id, "00000000000000000000000000000001");
    faas__task_list__free_unpacked(l, NULL);
    Faas__Task *t = NULL;
    cr_assert_eq(disc_task_get(ts, "00000000000000000000000000000002", &t), -ENOENT);
}

typedef struct {
    disc_tasks_t *ts;
    int n;
} expirer_t;

static void *expirer(void *p)
{
    expirer_t *e = p;
    e->n = disc_task_expire(e->ts, 100000);
    return NULL;
}

/* Two reapers at once: each lapsed task fails its attempt once (twice would end a task
 * of "two", whose second attempt is its last). */
Test(tasks_etcd, two_reapers_expire_each_lapsed_task_once)
{
    UNIT_WATCHDOG(60);
    const char *err = NULL;
    etcdc_t *c2 = connect_etcd();
    disc_tasks_t *other = disc_task_open_etcd(c2, PREFIX, &err);
    cr_assert_not_null(other, "%s", err);
    disc_task_set_lookup(other, lookup, NULL);
    for (unsigned i = 1; i <= 60; i++)
        cr_assert_eq(submit(i, "two", (int64_t)i), 0);
    size_t taken = 0;
    for (int k = 0; k < 3; k++)
        taken += n_claimed("two", 100, 1000); /* in pages under the default concurrency of 16 */
    cr_assert_eq(taken, 16);
    expirer_t e[2] = {{ts, 0}, {other, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, expirer, &e[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    cr_assert(e[0].n >= 0 && e[1].n >= 0, "%d %d", e[0].n, e[1].n);
    cr_assert_eq(e[0].n + e[1].n, 16, "each lapse once between them (%d + %d)", e[0].n, e[1].n);
    for (unsigned i = 1; i <= 16; i++) {
        Faas__Task *t = get(i);
        cr_assert_eq(t->status, FAAS__TASK__STATUS__QUEUED, "task %u: one failed attempt, retried", i);
        cr_assert_eq(t->attempts, 1);
        faas__task__free_unpacked(t, NULL);
    }
    disc_task_close(other);
    etcdc_close(c2);
}

#define CANCEL_TASKS 200

typedef struct {
    disc_tasks_t *ts;
    int cancelled[CANCEL_TASKS + 1]; /* 1: cancelled while queued, 2: cancel requested (running) */
    int errors;
} canceller_t;

static void *canceller(void *p)
{
    canceller_t *c = p;
    for (unsigned i = CANCEL_TASKS; i >= 1; i--) { /* newest first: it meets the claims, oldest first */
        char id[33];
        Faas__Task *t = NULL;
        mkid(id, i);
        if (disc_task_cancel(c->ts, id, 5000, &t) != 0) {
            c->errors++;
            continue;
        }
        c->cancelled[i] = t->status == FAAS__TASK__STATUS__CANCELLED ? 1 : 2;
        faas__task__free_unpacked(t, NULL);
    }
    return NULL;
}

/* A cancel through one store racing claims through another: a task its cancel ended
 * while queued is never handed out, and one it found running was claimed. */
Test(tasks_etcd, a_cancel_racing_a_claim_on_another_store_never_both_win)
{
    UNIT_WATCHDOG(60);
    const char *err = NULL;
    static char claimed[CANCEL_TASKS + 1];
    etcdc_t *c2 = connect_etcd();
    disc_tasks_t *other = disc_task_open_etcd(c2, PREFIX, &err);
    cr_assert_not_null(other, "%s", err);
    disc_task_set_lookup(other, lookup, NULL);
    for (unsigned i = 1; i <= CANCEL_TASKS; i++)
        cr_assert_eq(submit(i, "wide", (int64_t)i), 0);
    static canceller_t c;
    c.ts = ts;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, canceller, &c), 0);
    for (int idle = 0; idle < 20;) {
        Faas__TaskList *l = NULL;
        cr_assert_eq(disc_task_claim(other, "wide", 5, 60000, 5000, &l), 0);
        idle = l->n_tasks ? 0 : idle + 1;
        for (size_t i = 0; i < l->n_tasks; i++) {
            unsigned n = 0;
            cr_assert_eq(sscanf(l->tasks[i]->id, "%x", &n), 1);
            cr_assert_eq(claimed[n], 0, "task %u claimed twice", n);
            claimed[n] = 1;
        }
        faas__task_list__free_unpacked(l, NULL);
    }
    pthread_join(th, NULL);
    cr_assert_eq(c.errors, 0);
    unsigned both = 0, ran = 0;
    for (unsigned i = 1; i <= CANCEL_TASKS; i++) {
        cr_assert_neq(c.cancelled[i], 0, "task %u: its cancel answered", i);
        if (c.cancelled[i] == 1)
            cr_assert_eq(claimed[i], 0, "task %u: cancelled while queued, then claimed", i);
        else
            cr_assert_eq(claimed[i], 1, "task %u: found running, never claimed", i);
        both += c.cancelled[i] == 2;
        ran += claimed[i];
        Faas__Task *t = get(i);
        cr_assert_eq(t->status, c.cancelled[i] == 1 ? FAAS__TASK__STATUS__CANCELLED : FAAS__TASK__STATUS__RUNNING);
        faas__task__free_unpacked(t, NULL);
    }
    fprintf(stderr, "cancel race: %u claimed, %u of them cancelled while running\n", ran, both);
    disc_task_close(other);
    etcdc_close(c2);
}

/* ---- the longest --etcd-prefix ---------------------------------------------------- */

static int lookup_any(void *ud, const char *function, Faas__AsyncSpec *out)
{
    (void)ud, (void)function;
    *out = (Faas__AsyncSpec){PROTOBUF_C_MESSAGE_INIT(&faas__async_spec__descriptor), .concurrency = 0};
    return 0;
}

/* The longest prefix the flag accepts opens the task store, and a task of the longest
 * function name is submitted and claimed under it (every key fits); one byte more is
 * refused by the store as by the flag, with the same bound. */
Test(tasks_etcd, the_longest_prefix_the_flag_accepts_works)
{
    char prefix[DISC_ETCD_PREFIX_MAX + 2], fn[64];
    memset(prefix, 'p', sizeof(prefix));
    prefix[0] = '/';
    prefix[DISC_ETCD_PREFIX_MAX - 1] = '/';
    prefix[DISC_ETCD_PREFIX_MAX] = '\0';
    memset(fn, 'f', 63);
    fn[63] = '\0';
    const char *err = NULL;
    disc_tasks_t *t = disc_task_open_etcd(client, prefix, &err);
    cr_assert_not_null(t, "%s", err);
    disc_task_set_lookup(t, lookup_any, NULL);
    Faas__TaskRequest req = FAAS__TASK_REQUEST__INIT;
    req.method = "POST";
    req.path = "/";
    Faas__Task task = FAAS__TASK__INIT;
    task.id = "0123456789abcdef0123456789abcdef";
    task.function = fn;
    task.version = 1;
    task.created_unix_ms = 1000;
    task.request = &req;
    cr_assert_eq(disc_task_submit(t, &task), 0);
    Faas__TaskList *l = NULL;
    cr_assert_eq(disc_task_claim(t, fn, 10, 30000, 2000, &l), 0);
    cr_assert_eq(l->n_tasks, 1);
    faas__task_list__free_unpacked(l, NULL);
    disc_task_close(t);

    prefix[DISC_ETCD_PREFIX_MAX - 1] = 'p';
    prefix[DISC_ETCD_PREFIX_MAX] = '/';
    prefix[DISC_ETCD_PREFIX_MAX + 1] = '\0';
    cr_assert_null(disc_task_open_etcd(client, prefix, &err));
    cr_assert(strstr(err, "1-" DISC_STR(DISC_ETCD_PREFIX_MAX) " bytes"), "%s", err);
}
