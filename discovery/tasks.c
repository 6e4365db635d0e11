/* discovery/tasks.c - the durable queue of async tasks (docs/async.md): a `tasks`
 * table in discovery.db on a connection of its own, so task traffic never waits on
 * the function store's mutex. Submissions are group-committed; every other change
 * of a task is one short transaction that reads the row, applies a transition in C
 * and writes the row back. Time always comes in as a parameter, so tests drive it.
 * The decisions are storage-free; the SQLite storage below and the etcd one
 * (tasks_etcd.c) sit behind disc_task_ops_t (tasks_internal.h). */
#include "discovery/discovery.h"
#include "discovery/internal.h"
#include "discovery/tasks_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"

typedef disc_pending_t pending_t;
typedef disc_bounds_t bounds_t;
typedef disc_row_t row_t;

/* Blobs last: a read of the other columns then never walks their overflow pages
 * (columns added to an older table land after them: only a little slower). */
static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS tasks ("
    "  id TEXT PRIMARY KEY, function TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0,"
    "  status INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
    "  created_unix_ms INTEGER NOT NULL DEFAULT 0, started_unix_ms INTEGER NOT NULL DEFAULT 0,"
    "  finished_unix_ms INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',"
    "  result_status INTEGER NOT NULL DEFAULT 0, result_size INTEGER NOT NULL DEFAULT 0,"
    "  callback_url TEXT NOT NULL DEFAULT '', callback_status TEXT NOT NULL DEFAULT '',"
    "  callback_attempts INTEGER NOT NULL DEFAULT 0, not_before_unix_ms INTEGER NOT NULL DEFAULT 0,"
    "  instance_id TEXT NOT NULL DEFAULT '', lease_until_unix_ms INTEGER NOT NULL DEFAULT 0,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  callback_due_unix_ms INTEGER NOT NULL DEFAULT 0, callback_lease_until_unix_ms INTEGER NOT NULL DEFAULT 0,"
    "  purge_after_unix_ms INTEGER NOT NULL DEFAULT 0,"
    "  request BLOB, result_headers BLOB, result_body BLOB);";

/* Columns newer than the first tasks table: added to a db that lacks them. */
static const char *const added_columns[][2] = {
    {"callback_due_unix_ms", "INTEGER NOT NULL DEFAULT 0"},
    {"callback_lease_until_unix_ms", "INTEGER NOT NULL DEFAULT 0"},
    {"purge_after_unix_ms", "INTEGER NOT NULL DEFAULT 0"}, /* 0: finished before it existed */
};

static const char indexes[] =
    "CREATE INDEX IF NOT EXISTS tasks_by_function ON tasks(function, status, id);"
    "CREATE INDEX IF NOT EXISTS tasks_queue ON tasks(status, function, not_before_unix_ms, created_unix_ms);"
    "DROP INDEX IF EXISTS tasks_finished;" /* replaced by tasks_purge */
    "CREATE INDEX IF NOT EXISTS tasks_purge ON tasks(purge_after_unix_ms, finished_unix_ms) WHERE status >= 2;"
    "CREATE INDEX IF NOT EXISTS tasks_callbacks ON tasks(callback_due_unix_ms) WHERE callback_status='pending';";

#define COLS                                                                                                           \
    "id, function, version, status, attempts, created_unix_ms, started_unix_ms, finished_unix_ms, error,"              \
    " result_status, result_size, callback_url, callback_status, callback_attempts, not_before_unix_ms,"               \
    " instance_id, lease_until_unix_ms, cancel_requested, callback_due_unix_ms, callback_lease_until_unix_ms," \
    " purge_after_unix_ms"
enum { C_REQUEST = 21 }; /* the column after COLS when a query asks for the request */

#define CB_PENDING DISC_CB_STATUS_PENDING
#define CB_DELIVERED DISC_CB_STATUS_DELIVERED

static void *flusher_main(void *arg);

/* ---- opening ------------------------------------------------------------------- */

static int has_column(sqlite3 *db, const char *name)
{
    sqlite3_stmt *q = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('tasks') WHERE name=?", -1, &q, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return found;
}

/* A db written by an older discovery gets the columns it lacks (their defaults fit). */
static int migrate(sqlite3 *db)
{
    char sql[256];
    for (size_t i = 0; i < sizeof(added_columns) / sizeof(added_columns[0]); i++) {
        int has = has_column(db, added_columns[i][0]);
        if (has < 0)
            return -1;
        snprintf(sql, sizeof(sql), "ALTER TABLE tasks ADD COLUMN %s %s", added_columns[i][0], added_columns[i][1]);
        if (!has && sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            return -1;
    }
    return 0;
}

static const disc_task_ops_t sqlite_ops;

static int open_db(disc_tasks_t *ts, const char *state_dir, int synchronous, const char **err)
{
    char path[4096], pragma[64];
    sqlite3 *db = NULL;
    int n = snprintf(path, sizeof(path), "%s/discovery.db", state_dir);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        *err = "state directory path too long";
        return -1;
    }
    if (faas_mkdirs(state_dir, 0755) != 0) {
        *err = "cannot create the state directory";
        return -1;
    }
    int orc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    ts->db = db; /* closed by the storage's close even when the open failed */
    ts->ops = &sqlite_ops;
    if (orc != SQLITE_OK) {
        *err = "cannot open discovery.db";
        return -1;
    }
    sqlite3_busy_timeout(db, 5000);
    snprintf(pragma, sizeof(pragma), "PRAGMA synchronous=%d;", synchronous);
    if (sqlite3_exec(db, pragma, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK || migrate(db) != 0 ||
        sqlite3_exec(db, indexes, NULL, NULL, NULL) != SQLITE_OK) {
        *err = "cannot initialise the tasks table (is another discovery using this state dir?)";
        return -1;
    }
    return 0;
}

disc_tasks_t *disc_tasks_alloc(void)
{
    disc_tasks_t *ts = calloc(1, sizeof(*ts));
    if (ts == NULL)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ts->mu, NULL);
    pthread_mutex_init(&ts->gmu, NULL);
    pthread_cond_init(&ts->gcv, NULL);
    pthread_cond_init(&ts->fcv, NULL);
    pthread_mutex_init(&ts->rmu, NULL);
    pthread_cond_init(&ts->rcv, &ca);
    pthread_condattr_destroy(&ca);
    disc_task_configure(ts, NULL);
    return ts;
}

int disc_tasks_start(disc_tasks_t *ts, const char **err)
{
    if (pthread_create(&ts->flusher, NULL, flusher_main, ts) != 0) {
        *err = "cannot start the task commit thread";
        return -1;
    }
    ts->flusher_running = 1;
    return 0;
}

disc_tasks_t *disc_task_open(const char *state_dir, int synchronous, const char **err)
{
    disc_tasks_t *ts = disc_tasks_alloc();
    if (ts == NULL) {
        *err = "out of memory";
        return NULL;
    }
    if (open_db(ts, state_dir, synchronous, err) != 0 || disc_tasks_start(ts, err) != 0) {
        disc_task_close(ts);
        return NULL;
    }
    return ts;
}

static void sqlite_close(disc_tasks_t *ts)
{
    if (ts->db != NULL)
        sqlite3_close_v2(ts->db);
}

void disc_task_close(disc_tasks_t *ts)
{
    if (ts == NULL)
        return;
    disc_task_stop_reaper(ts);
    if (ts->flusher_running) { /* commits what is still queued first */
        pthread_mutex_lock(&ts->gmu);
        ts->stopping = 1;
        pthread_cond_signal(&ts->fcv);
        pthread_mutex_unlock(&ts->gmu);
        pthread_join(ts->flusher, NULL);
    }
    if (ts->ops != NULL)
        ts->ops->close(ts);
    pthread_mutex_destroy(&ts->mu);
    pthread_mutex_destroy(&ts->gmu);
    pthread_cond_destroy(&ts->gcv);
    pthread_cond_destroy(&ts->fcv);
    pthread_mutex_destroy(&ts->rmu);
    pthread_cond_destroy(&ts->rcv);
    free(ts);
}

void disc_task_configure(disc_tasks_t *ts, const disc_task_config_t *c)
{
    static const disc_task_config_t none;
    if (c == NULL)
        c = &none;
    ts->retention_ms = c->retention_ms ? c->retention_ms : FAAS_SPEC_DEFAULT_ASYNC_RETENTION_MS;
    ts->cb_attempts = c->callback_attempts ? c->callback_attempts : DISC_CB_ATTEMPTS;
    ts->cb_backoff_ms = c->callback_backoff_ms ? c->callback_backoff_ms : DISC_CB_BACKOFF_MS;
}

void disc_task_set_lookup(disc_tasks_t *ts, disc_task_async_fn fn, void *ud)
{
    pthread_mutex_lock(&ts->mu);
    ts->lookup = fn;
    ts->lookup_ud = ud;
    pthread_mutex_unlock(&ts->mu);
}

/* A function's bounds, defaults filled; under ts->mu. */
void disc_tasks_bounds(disc_tasks_t *ts, const char *function, bounds_t *b)
{
    Faas__AsyncSpec a = FAAS__ASYNC_SPEC__INIT;
    if (ts->lookup == NULL || ts->lookup(ts->lookup_ud, function, &a) != 0)
        faas__async_spec__init(&a); /* unknown (deleted) function: the defaults */
    b->max_attempts = a.max_attempts ? a.max_attempts : FAAS_SPEC_DEFAULT_ASYNC_MAX_ATTEMPTS;
    b->concurrency = a.concurrency ? a.concurrency : FAAS_SPEC_DEFAULT_ASYNC_CONCURRENCY;
    b->max_result_bytes = a.max_result_bytes ? a.max_result_bytes : FAAS_SPEC_DEFAULT_ASYNC_MAX_RESULT_BYTES;
    b->retention_ms = a.retention_ms ? a.retention_ms : ts->retention_ms;
    b->retry_5xx = a.retry_5xx;
    if (ts->max_result_cap != 0 && b->max_result_bytes > ts->max_result_cap)
        b->max_result_bytes = ts->max_result_cap; /* a larger one could not be stored: it fails, named */
}

uint64_t disc_task_max_request(const disc_tasks_t *ts)
{
    return ts->max_request_cap;
}

int disc_task_valid_id(const char *id)
{
    size_t i = 0;
    for (; id != NULL && id[i] != '\0'; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return 0;
    return i == DISC_TASK_ID_LEN;
}

/* ---- small SQL helpers ------------------------------------------------------------ */

static int exec(disc_tasks_t *ts, const char *sql)
{
    return sqlite3_exec(ts->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

static int prepare(disc_tasks_t *ts, const char *sql, sqlite3_stmt **q)
{
    return sqlite3_prepare_v2(ts->db, sql, -1, q, NULL) == SQLITE_OK ? 0 : -EIO;
}

/* Commits when rc is 0, rolls back otherwise; returns the final rc. */
static int end_tx(disc_tasks_t *ts, int rc)
{
    if (rc == 0 && exec(ts, "COMMIT") == 0)
        return 0;
    exec(ts, "ROLLBACK");
    return rc != 0 ? rc : -EIO;
}

static void bind_str(sqlite3_stmt *q, int i, const char *s)
{
    sqlite3_bind_text(q, i, s ? s : "", -1, SQLITE_STATIC);
}

static int col_str(sqlite3_stmt *q, int i, char **field)
{
    const char *s = (const char *)sqlite3_column_text(q, i);
    return disc_set_str(field, s ? s : "");
}

/* ---- rows <-> tasks ------------------------------------------------------------ */

static int row_strings(sqlite3_stmt *q, Faas__Task *t)
{
    return col_str(q, 0, &t->id) | col_str(q, 1, &t->function) | col_str(q, 8, &t->error) |
           col_str(q, 11, &t->callback_url) | col_str(q, 12, &t->callback_status) | col_str(q, 15, &t->instance_id);
}

/* A malloc'd Task from a row of COLS (and the request after them when with_req);
 * free with faas__task__free_unpacked. *x gets the rest of the row. */
static Faas__Task *row_task(sqlite3_stmt *q, int with_req, row_t *x)
{
    Faas__Task *t = malloc(sizeof(*t));
    if (t == NULL)
        return NULL;
    faas__task__init(t);
    t->version = (uint64_t)sqlite3_column_int64(q, 2);
    t->status = (Faas__Task__Status)sqlite3_column_int(q, 3);
    t->attempts = (uint32_t)sqlite3_column_int64(q, 4);
    t->created_unix_ms = sqlite3_column_int64(q, 5);
    t->started_unix_ms = sqlite3_column_int64(q, 6);
    t->finished_unix_ms = sqlite3_column_int64(q, 7);
    t->result_status = (uint32_t)sqlite3_column_int64(q, 9);
    t->result_size = (uint64_t)sqlite3_column_int64(q, 10);
    t->callback_attempts = (uint32_t)sqlite3_column_int64(q, 13);
    t->not_before_unix_ms = sqlite3_column_int64(q, 14);
    t->lease_until_unix_ms = sqlite3_column_int64(q, 16);
    x->cancel = sqlite3_column_int(q, 17) != 0;
    x->cb_due = sqlite3_column_int64(q, 18);
    x->cb_lease = sqlite3_column_int64(q, 19);
    x->purge_after = sqlite3_column_int64(q, 20);
    if (row_strings(q, t) != 0)
        goto fail;
    if (with_req) {
        const void *b = sqlite3_column_blob(q, C_REQUEST);
        t->request = faas__task_request__unpack(NULL, (size_t)sqlite3_column_bytes(q, C_REQUEST), b ? b : "");
        if (t->request == NULL)
            goto fail;
    }
    return t;
fail:
    faas__task__free_unpacked(t, NULL);
    return NULL;
}

/* What readers see: a running task someone asked to cancel says so. */
int disc_tasks_present(Faas__Task *t, int cancel)
{
    t->cancel_requested = cancel != 0;
    if (cancel && t->status == FAAS__TASK__STATUS__RUNNING)
        return disc_set_str(&t->error, "cancel requested") == 0 ? 0 : -ENOMEM;
    return 0;
}

/* Loads one task (without its request) inside the caller's transaction. */
static int load(disc_tasks_t *ts, const char *id, Faas__Task **out, row_t *x)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(ts, "SELECT " COLS " FROM tasks WHERE id=?", &q);
    if (rc != 0)
        return rc;
    bind_str(q, 1, id);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW)
        rc = (*out = row_task(q, 0, x)) != NULL ? 0 : -ENOMEM;
    else
        rc = step == SQLITE_DONE ? -ENOENT : -EIO;
    sqlite3_finalize(q);
    return rc;
}

/* Writes back the fields a transition may change. */
static int save(disc_tasks_t *ts, const Faas__Task *t, const row_t *x)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(ts,
                     "UPDATE tasks SET status=?, attempts=?, started_unix_ms=?, finished_unix_ms=?, error=?,"
                     " result_status=?, result_size=?, not_before_unix_ms=?, instance_id=?,"
                     " lease_until_unix_ms=?, cancel_requested=?, callback_status=?, callback_attempts=?,"
                     " callback_due_unix_ms=?, callback_lease_until_unix_ms=?, purge_after_unix_ms=? WHERE id=?",
                     &q);
    if (rc != 0)
        return rc;
    sqlite3_bind_int(q, 1, (int)t->status);
    sqlite3_bind_int64(q, 2, t->attempts);
    sqlite3_bind_int64(q, 3, t->started_unix_ms);
    sqlite3_bind_int64(q, 4, t->finished_unix_ms);
    bind_str(q, 5, t->error);
    sqlite3_bind_int64(q, 6, t->result_status);
    sqlite3_bind_int64(q, 7, (sqlite3_int64)t->result_size);
    sqlite3_bind_int64(q, 8, t->not_before_unix_ms);
    bind_str(q, 9, t->instance_id);
    sqlite3_bind_int64(q, 10, t->lease_until_unix_ms);
    sqlite3_bind_int(q, 11, x->cancel);
    bind_str(q, 12, t->callback_status);
    sqlite3_bind_int64(q, 13, t->callback_attempts);
    sqlite3_bind_int64(q, 14, x->cb_due);
    sqlite3_bind_int64(q, 15, x->cb_lease);
    sqlite3_bind_int64(q, 16, x->purge_after);
    bind_str(q, 17, t->id);
    rc = sqlite3_step(q) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(q);
    return rc;
}

/* ---- transitions (pure: they only touch the task in memory) ----------------------- */

int disc_tasks_is_finished(const Faas__Task *t)
{
    return t->status == FAAS__TASK__STATUS__SUCCEEDED || t->status == FAAS__TASK__STATUS__FAILED ||
           t->status == FAAS__TASK__STATUS__CANCELLED;
}

/* The task ends; a callback it asked for is due at once. */
static int finish(Faas__Task *t, row_t *x, Faas__Task__Status st, const char *error, int64_t now_ms)
{
    t->status = st;
    t->finished_unix_ms = now_ms;
    t->lease_until_unix_ms = 0;
    x->purge_after = now_ms + (int64_t)x->b.retention_ms;
    if (t->callback_url[0] != '\0') {
        x->cb_due = now_ms;
        x->cb_lease = 0;
        if (disc_set_str(&t->callback_status, CB_PENDING) != 0)
            return -ENOMEM;
    }
    return disc_set_str(&t->error, error) == 0 ? 0 : -ENOMEM;
}

/* The attempt ends the task; a cancel asked for meanwhile wins over how it ended. */
static int end_task(Faas__Task *t, row_t *x, Faas__Task__Status st, const char *error, int64_t now_ms)
{
    if (x->cancel)
        return finish(t, x, FAAS__TASK__STATUS__CANCELLED, "cancelled", now_ms);
    return finish(t, x, st, error, now_ms);
}

/* base * 2^(n-1) (n 0 counts as 1), at most cap. */
static int64_t doubling(int64_t base, int64_t cap, uint32_t n)
{
    int64_t ms = base;
    for (uint32_t i = 1; i < n && ms < cap; i++)
        ms *= 2;
    return ms < cap ? ms : cap;
}

int64_t disc_task_backoff_ms(uint32_t attempts)
{
    return doubling(DISC_TASK_BACKOFF_MS, DISC_TASK_BACKOFF_MAX_MS, attempts);
}

int64_t disc_task_callback_backoff_ms(uint32_t base_ms, uint32_t attempts)
{
    return doubling(base_ms, DISC_CB_BACKOFF_MAX_MS, attempts);
}

/* A platform failure of the current attempt: retry later, or give up. */
static int fail_attempt(Faas__Task *t, row_t *x, const char *why, int64_t now_ms)
{
    if (x->cancel || t->attempts >= x->b.max_attempts)
        return end_task(t, x, FAAS__TASK__STATUS__FAILED, why, now_ms);
    t->status = FAAS__TASK__STATUS__QUEUED;
    t->not_before_unix_ms = now_ms + disc_task_backoff_ms(t->attempts);
    t->lease_until_unix_ms = 0;
    return (disc_set_str(&t->instance_id, "") | disc_set_str(&t->error, why)) == 0 ? 0 : -ENOMEM;
}

int disc_tasks_claim_one(Faas__Task *t, uint32_t lease_ms, int64_t now_ms)
{
    t->status = FAAS__TASK__STATUS__RUNNING;
    t->attempts++;
    t->started_unix_ms = now_ms;
    t->lease_until_unix_ms = now_ms + lease_ms;
    return disc_set_str(&t->instance_id, "") == 0 ? 0 : -ENOMEM; /* the agent names itself in STARTED */
}

/* ---- group commit ----------------------------------------------------------------- */

static int insert_one(sqlite3_stmt *q, const pending_t *p)
{
    const Faas__Task *t = p->task;
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    bind_str(q, 1, t->id);
    bind_str(q, 2, t->function);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)t->version);
    sqlite3_bind_int(q, 4, (int)t->status);
    sqlite3_bind_int64(q, 5, t->attempts);
    sqlite3_bind_int64(q, 6, t->created_unix_ms);
    sqlite3_bind_int64(q, 7, t->not_before_unix_ms);
    bind_str(q, 8, t->callback_url);
    bind_str(q, 9, t->callback_status);
    sqlite3_bind_blob(q, 10, p->req ? (const void *)p->req : "", (int)p->req_len, SQLITE_STATIC);
    int step = sqlite3_step(q);
    if (step == SQLITE_DONE)
        return 0;
    /* a duplicate id only undoes its own statement: the batch goes on */
    return step == SQLITE_CONSTRAINT ? -EEXIST : -EIO;
}

/* One transaction for the whole batch; sets every entry's rc. */
static void sqlite_commit_batch(disc_tasks_t *ts, pending_t *batch)
{
    sqlite3_stmt *q = NULL;
    uint64_t ok = 0;
    pthread_mutex_lock(&ts->mu);
    int rc = exec(ts, "BEGIN IMMEDIATE");
    if (rc == 0)
        rc = prepare(ts,
                     "INSERT INTO tasks(id, function, version, status, attempts, created_unix_ms,"
                     " not_before_unix_ms, callback_url, callback_status, request) VALUES(?,?,?,?,?,?,?,?,?,?)",
                     &q);
    for (pending_t *p = batch; rc == 0 && p != NULL; p = p->next) {
        p->rc = insert_one(q, p);
        if (p->rc == -EIO)
            rc = -EIO;
        ok += p->rc == 0;
    }
    sqlite3_finalize(q);
    rc = end_tx(ts, rc);
    pthread_mutex_unlock(&ts->mu);
    if (rc != 0) {
        for (pending_t *p = batch; p != NULL; p = p->next)
            p->rc = rc;
        return;
    }
    __atomic_fetch_add(&ts->commits, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&ts->submitted, ok, __ATOMIC_RELAXED);
}

/* Commits everything queued. Called and returns with gmu held; leading keeps a
 * second leader out while gmu is released for the commit. */
static void lead(disc_tasks_t *ts)
{
    pending_t *batch = ts->head, *next;
    ts->head = ts->tail = NULL;
    ts->leading = 1;
    pthread_mutex_unlock(&ts->gmu);
    ts->ops->commit_batch(ts, batch);
    pending_t *waiters = NULL;
    for (pending_t *p = batch; p != NULL; p = next) {
        next = p->next;
        if (p->fn != NULL) {
            p->fn(p->ud, p->rc);
            free(p->req);
            free(p);
        } else {
            p->next = waiters;
            waiters = p;
        }
    }
    pthread_mutex_lock(&ts->gmu);
    for (pending_t *p = waiters; p != NULL; p = p->next)
        p->done = 1; /* the owner reads it under gmu, after we release it */
    ts->leading = 0;
    pthread_cond_broadcast(&ts->gcv);
    if (ts->head != NULL) /* async entries queued meanwhile may have no submitter to lead them */
        pthread_cond_signal(&ts->fcv);
}

static void *flusher_main(void *arg)
{
    disc_tasks_t *ts = arg;
    pthread_mutex_lock(&ts->gmu);
    for (;;) {
        if (ts->head != NULL && !ts->leading)
            lead(ts);
        else if (ts->stopping && ts->head == NULL)
            break;
        else
            pthread_cond_wait(&ts->fcv, &ts->gmu);
    }
    pthread_mutex_unlock(&ts->gmu);
    return NULL;
}

static int check_new(const Faas__Task *t)
{
    return disc_task_valid_id(t->id) && t->function != NULL && t->function[0] != '\0' ? 0 : -EINVAL;
}

static int pack_request(const Faas__Task *t, pending_t *p)
{
    if (t->request == NULL)
        return 0;
    p->req = faas_pb_pack(&t->request->base, &p->req_len);
    return p->req != NULL || p->req_len == 0 ? 0 : -ENOMEM;
}

static void enqueue(disc_tasks_t *ts, pending_t *p)
{
    if (ts->tail)
        ts->tail->next = p;
    else
        ts->head = p;
    ts->tail = p;
}

int disc_task_submit(disc_tasks_t *ts, const Faas__Task *t)
{
    pending_t e = {.task = t};
    int rc = check_new(t);
    if (rc != 0 || (rc = pack_request(t, &e)) != 0)
        return rc;
    pthread_mutex_lock(&ts->gmu);
    enqueue(ts, &e);
    while (!e.done) {
        if (!ts->leading)
            lead(ts); /* commits ours and whatever queued up behind the last leader */
        else
            pthread_cond_wait(&ts->gcv, &ts->gmu);
    }
    pthread_mutex_unlock(&ts->gmu);
    free(e.req);
    return e.rc;
}

int disc_task_submit_async(disc_tasks_t *ts, const Faas__Task *t, disc_task_done_fn done, void *ud)
{
    int rc = check_new(t);
    if (rc != 0)
        return rc;
    pending_t *p = calloc(1, sizeof(*p));
    if (p == NULL || (rc = pack_request(t, p)) != 0) {
        free(p);
        return -ENOMEM;
    }
    p->task = t;
    p->fn = done;
    p->ud = ud;
    pthread_mutex_lock(&ts->gmu);
    enqueue(ts, p);
    pthread_cond_signal(&ts->fcv); /* the flusher leads when no submitter does */
    pthread_mutex_unlock(&ts->gmu);
    return 0;
}

void disc_task_flush(disc_tasks_t *ts)
{
    pthread_mutex_lock(&ts->gmu);
    while (ts->head != NULL || ts->leading) {
        if (!ts->leading)
            lead(ts);
        else
            pthread_cond_wait(&ts->gcv, &ts->gmu);
    }
    pthread_mutex_unlock(&ts->gmu);
}

/* ---- reads ------------------------------------------------------------------------ */

static int sqlite_load(disc_tasks_t *ts, const char *id, Faas__Task **out, row_t *x)
{
    pthread_mutex_lock(&ts->mu);
    int rc = load(ts, id, out, x);
    pthread_mutex_unlock(&ts->mu);
    return rc;
}

int disc_task_get(disc_tasks_t *ts, const char *id, Faas__Task **out)
{
    row_t x = {0};
    int rc = ts->ops->load(ts, id, out, &x);
    if (rc == 0 && (rc = disc_tasks_present(*out, x.cancel)) != 0)
        faas__task__free_unpacked(*out, NULL);
    return rc;
}

/* The result of a row of (status, result_status, result_headers, result_body). */
static int row_result(sqlite3_stmt *q, Faas__TaskResult **out)
{
    int st = sqlite3_column_int(q, 0);
    if (st == FAAS__TASK__STATUS__QUEUED || st == FAAS__TASK__STATUS__RUNNING)
        return -EAGAIN;
    if (sqlite3_column_type(q, 2) == SQLITE_NULL)
        return -ENODATA;
    const void *h = sqlite3_column_blob(q, 2);
    Faas__TaskResult *r = faas__task_result__unpack(NULL, (size_t)sqlite3_column_bytes(q, 2), h ? h : "");
    if (r == NULL)
        return -EIO;
    size_t n = (size_t)sqlite3_column_bytes(q, 3);
    r->status = (uint32_t)sqlite3_column_int64(q, 1);
    r->body.data = malloc(n ? n : 1);
    if (r->body.data == NULL) {
        faas__task_result__free_unpacked(r, NULL);
        return -ENOMEM;
    }
    if (n > 0)
        memcpy(r->body.data, sqlite3_column_blob(q, 3), n);
    r->body.len = n;
    *out = r;
    return 0;
}

/* The result of task id, under the caller's lock. */
static int load_result(disc_tasks_t *ts, const char *id, Faas__TaskResult **out)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(ts, "SELECT status, result_status, result_headers, result_body FROM tasks WHERE id=?", &q);
    if (rc == 0) {
        bind_str(q, 1, id);
        int step = sqlite3_step(q);
        rc = step == SQLITE_ROW ? row_result(q, out) : step == SQLITE_DONE ? -ENOENT : -EIO;
    }
    sqlite3_finalize(q);
    return rc;
}

static int sqlite_load_result(disc_tasks_t *ts, const char *id, Faas__TaskResult **out)
{
    pthread_mutex_lock(&ts->mu);
    int rc = load_result(ts, id, out);
    pthread_mutex_unlock(&ts->mu);
    return rc;
}

int disc_task_get_result(disc_tasks_t *ts, const char *id, Faas__TaskResult **out)
{
    return ts->ops->load_result(ts, id, out);
}

Faas__TaskList *disc_tasks_new_list(size_t cap)
{
    Faas__TaskList *l = malloc(sizeof(*l));
    if (l == NULL)
        return NULL;
    faas__task_list__init(l);
    if ((l->tasks = calloc(cap ? cap : 1, sizeof(*l->tasks))) == NULL) {
        free(l);
        return NULL;
    }
    return l;
}

/* Appends up to cap rows of q to l (with the request when with_req); 1 if more
 * rows remained, 0 if not, negative on errors. Readers' view when present. */
static int collect(sqlite3_stmt *q, int with_req, int presented, size_t cap, Faas__TaskList *l)
{
    int step;
    row_t x = {0};
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (l->n_tasks == cap)
            return 1;
        Faas__Task *t = row_task(q, with_req, &x);
        if (t == NULL)
            return -ENOMEM;
        l->tasks[l->n_tasks++] = t;
        if (presented && disc_tasks_present(t, x.cancel) != 0)
            return -ENOMEM;
    }
    return step == SQLITE_DONE ? 0 : -EIO;
}

static uint32_t list_limit(uint32_t limit)
{
    if (limit == 0)
        return DISC_TASK_LIST_LIMIT;
    return limit > DISC_TASK_LIST_MAX ? DISC_TASK_LIST_MAX : limit;
}

static int sqlite_list(disc_tasks_t *ts, const Faas__TaskQuery *query, uint32_t limit, Faas__TaskList *l)
{
    const char *fn = query->function ? query->function : "";
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT " COLS " FROM tasks WHERE id > ?1%s%s ORDER BY id LIMIT ?4",
             fn[0] ? " AND function = ?2" : "", query->by_status ? " AND status = ?3" : "");
    sqlite3_stmt *q = NULL;
    pthread_mutex_lock(&ts->mu);
    int rc = prepare(ts, sql, &q);
    if (rc == 0) {
        bind_str(q, 1, query->after);
        bind_str(q, 2, fn);
        sqlite3_bind_int(q, 3, (int)query->status);
        sqlite3_bind_int64(q, 4, (sqlite3_int64)limit + 1); /* one more tells whether a next page exists */
        rc = collect(q, 0, 1, limit, l);
    }
    sqlite3_finalize(q);
    pthread_mutex_unlock(&ts->mu);
    return rc;
}

int disc_task_list(disc_tasks_t *ts, const Faas__TaskQuery *query, Faas__TaskList **out)
{
    uint32_t limit = list_limit(query->limit);
    Faas__TaskList *l = disc_tasks_new_list(limit);
    if (l == NULL)
        return -ENOMEM;
    int rc = ts->ops->list(ts, query, limit, l);
    if (rc == 1 && disc_set_str(&l->next, l->tasks[l->n_tasks - 1]->id) != 0)
        rc = -ENOMEM;
    if (rc < 0) {
        faas__task_list__free_unpacked(l, NULL);
        return rc;
    }
    *out = l;
    return 0;
}

/* ---- single-task changes --------------------------------------------------------- */

typedef disc_change_fn change_fn;

static int write_result(disc_tasks_t *ts, const char *id, const Faas__TaskResult *res);

/* Inside the caller's transaction: loads id, applies fn, saves. *t gets the task
 * when it was loaded (the caller frees it, even on errors). */
static int change_locked(disc_tasks_t *ts, const char *id, change_fn fn, const void *arg, int64_t now_ms,
                         Faas__Task **t, row_t *x)
{
    int rc = load(ts, id, t, x);
    if (rc == 0) {
        disc_tasks_bounds(ts, (*t)->function, &x->b);
        rc = fn(ts, *t, x, arg, now_ms);
    }
    if (rc == 0 && x->result != NULL)
        rc = write_result(ts, (*t)->id, x->result);
    if (rc == 0)
        rc = save(ts, *t, x);
    return rc;
}

static int sqlite_change(disc_tasks_t *ts, const char *id, change_fn fn, const void *arg, int64_t now_ms,
                         Faas__Task **t, row_t *x)
{
    pthread_mutex_lock(&ts->mu);
    int rc = exec(ts, "BEGIN IMMEDIATE");
    if (rc == 0)
        rc = change_locked(ts, id, fn, arg, now_ms, t, x);
    rc = end_tx(ts, rc);
    pthread_mutex_unlock(&ts->mu);
    return rc;
}

/* change_locked in a transaction of its own; *out gets the readers' view. */
static int change(disc_tasks_t *ts, const char *id, change_fn fn, const void *arg, int64_t now_ms, Faas__Task **out)
{
    Faas__Task *t = NULL;
    row_t x = {0};
    int rc = ts->ops->change(ts, id, fn, arg, now_ms, &t, &x);
    if (rc == 0)
        rc = disc_tasks_present(t, x.cancel);
    if (rc != 0 || out == NULL) {
        if (t)
            faas__task__free_unpacked(t, NULL);
        return rc;
    }
    *out = t;
    return 0;
}

static int apply_cancel(disc_tasks_t *ts, Faas__Task *t, row_t *x, const void *arg, int64_t now_ms)
{
    if (disc_tasks_is_finished(t))
        return -EALREADY;
    if (t->status == FAAS__TASK__STATUS__QUEUED)
        return finish(t, x, FAAS__TASK__STATUS__CANCELLED, "cancelled", now_ms);
    x->cancel = 1; /* running: it ends when its agent reports, or its lease lapses */
    return 0;
}

int disc_task_cancel(disc_tasks_t *ts, const char *id, int64_t now_ms, Faas__Task **out)
{
    return change(ts, id, apply_cancel, NULL, now_ms, out);
}

/* Stores the response (headers packed as a TaskResult of their own, body as is). */
static int write_result(disc_tasks_t *ts, const char *id, const Faas__TaskResult *res)
{
    Faas__TaskResult h = FAAS__TASK_RESULT__INIT;
    h.n_headers = res->n_headers;
    h.headers = res->headers;
    size_t hlen = 0;
    uint8_t *hbuf = faas_pb_pack(&h.base, &hlen);
    sqlite3_stmt *q = NULL;
    int rc = hbuf == NULL && hlen > 0 ? -ENOMEM
                                      : prepare(ts, "UPDATE tasks SET result_headers=?, result_body=? WHERE id=?", &q);
    if (rc == 0) {
        sqlite3_bind_blob(q, 1, hbuf ? (const void *)hbuf : "", (int)hlen, SQLITE_STATIC);
        sqlite3_bind_blob64(q, 2, res->body.data ? (const void *)res->body.data : "", res->body.len, SQLITE_STATIC);
        bind_str(q, 3, id);
        rc = sqlite3_step(q) == SQLITE_DONE ? 0 : -EIO;
    }
    sqlite3_finalize(q);
    free(hbuf);
    return rc;
}

/* The user server answered. A 5xx of a function with async.retry_5xx is a failed
 * attempt whose result is kept, so the last one is what /result replays once the
 * attempts run out; a result over async.max_result fails the task, unstored (the
 * agent enforces it too: this is the store's own bound). */
static int report_done(disc_tasks_t *ts, Faas__Task *t, row_t *x, const Faas__TaskResult *res, int64_t now_ms)
{
    char why[160];
    if (res == NULL)
        return -EINVAL;
    if (res->body.len > x->b.max_result_bytes) {
        snprintf(why, sizeof(why), "result of %zu bytes is larger than async.max_result (%llu bytes)", res->body.len,
                 (unsigned long long)x->b.max_result_bytes);
        return end_task(t, x, FAAS__TASK__STATUS__FAILED, why, now_ms);
    }
    x->result = res; /* stored with the task, by the storage */
    t->result_status = res->status;
    t->result_size = res->body.len;
    if (x->b.retry_5xx && res->status >= 500) {
        snprintf(why, sizeof(why), "HTTP %u", res->status);
        return fail_attempt(t, x, why, now_ms);
    }
    return end_task(t, x, FAAS__TASK__STATUS__SUCCEEDED, "", now_ms);
}

static const char *report_error(const Faas__TaskReport *r)
{
    return r->error && r->error[0] ? r->error : "the attempt failed";
}

static int apply_report(disc_tasks_t *ts, Faas__Task *t, row_t *x, const void *arg, int64_t now_ms)
{
    const Faas__TaskReport *r = arg;
    const char *inst = r->instance_id ? r->instance_id : "";
    /* a report from an attempt that already ended, or from another instance, changes nothing */
    if (t->status != FAAS__TASK__STATUS__RUNNING || (inst[0] && t->instance_id[0] && strcmp(inst, t->instance_id)))
        return -ESTALE;
    if (inst[0] && disc_set_str(&t->instance_id, inst) != 0)
        return -ENOMEM;
    switch (r->kind) {
    case FAAS__TASK_REPORT__KIND__STARTED:
    case FAAS__TASK_REPORT__KIND__RENEW:
        t->lease_until_unix_ms = now_ms + (r->lease_ms ? r->lease_ms : DISC_TASK_LEASE_MS);
        return 0;
    case FAAS__TASK_REPORT__KIND__DONE:
        return report_done(ts, t, x, r->result, now_ms);
    case FAAS__TASK_REPORT__KIND__REJECTED: /* e.g. the result is too large: another try ends the same */
        return end_task(t, x, FAAS__TASK__STATUS__FAILED, report_error(r), now_ms);
    case FAAS__TASK_REPORT__KIND__FAILED:
        return fail_attempt(t, x, report_error(r), now_ms);
    default:
        return -EINVAL;
    }
}

int disc_task_report(disc_tasks_t *ts, const Faas__TaskReport *r, int64_t now_ms, Faas__Task **out)
{
    return change(ts, r->id, apply_report, r, now_ms, out);
}

/* ---- the queue ------------------------------------------------------------------- */

/* How many more tasks of function may run under its async.concurrency, given what
 * runs now (claimed tasks count: they are running from the claim on). In the claim's
 * transaction, so gateways claiming at once never pass it together. */
static int room(disc_tasks_t *ts, const char *function, uint32_t max, uint32_t *out)
{
    sqlite3_stmt *q = NULL;
    bounds_t b;
    disc_tasks_bounds(ts, function, &b);
    int rc = prepare(ts, "SELECT count(*) FROM tasks WHERE function=? AND status=1", &q);
    if (rc != 0)
        return rc;
    bind_str(q, 1, function);
    if (sqlite3_step(q) == SQLITE_ROW) {
        int64_t running = sqlite3_column_int64(q, 0);
        *out = running >= b.concurrency ? 0 : b.concurrency - running < max ? (uint32_t)(b.concurrency - running) : max;
    } else {
        rc = -EIO;
    }
    sqlite3_finalize(q);
    return rc;
}

static int sqlite_claim(disc_tasks_t *ts, const char *function, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                        Faas__TaskList *l)
{
    sqlite3_stmt *q = NULL;
    pthread_mutex_lock(&ts->mu);
    int rc = exec(ts, "BEGIN IMMEDIATE");
    if (rc == 0)
        rc = room(ts, function, max, &max);
    if (rc == 0 && max > 0)
        rc = prepare(ts,
                     "SELECT " COLS ", request FROM tasks WHERE status=0 AND function=? AND not_before_unix_ms <= ?"
                     " ORDER BY created_unix_ms, id LIMIT ?",
                     &q);
    if (rc == 0 && max > 0) {
        bind_str(q, 1, function);
        sqlite3_bind_int64(q, 2, now_ms);
        sqlite3_bind_int64(q, 3, max);
        rc = collect(q, 1, 0, max, l);
    }
    sqlite3_finalize(q);
    for (size_t i = 0; rc == 0 && i < l->n_tasks; i++)
        if ((rc = disc_tasks_claim_one(l->tasks[i], lease_ms ? lease_ms : DISC_TASK_LEASE_MS, now_ms)) == 0)
            rc = save(ts, l->tasks[i], &(row_t){0}); /* claim only takes rows not finished */
    rc = end_tx(ts, rc);
    pthread_mutex_unlock(&ts->mu);
    return rc;
}

int disc_task_claim(disc_tasks_t *ts, const char *function, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                    Faas__TaskList **out)
{
    max = max == 0 ? 1 : max > DISC_TASK_CLAIM_MAX ? DISC_TASK_CLAIM_MAX : max;
    Faas__TaskList *l = disc_tasks_new_list(max);
    if (l == NULL)
        return -ENOMEM;
    int rc = ts->ops->claim(ts, function, max, lease_ms ? lease_ms : DISC_TASK_LEASE_MS, now_ms, l);
    if (rc != 0) {
        faas__task_list__free_unpacked(l, NULL);
        return rc;
    }
    __atomic_fetch_add(&ts->attempts, l->n_tasks, __ATOMIC_RELAXED);
    *out = l;
    return 0;
}

typedef disc_lapsed_t lapsed_t;

/* The ids of running tasks whose lease ended before now_ms: few, at most what runs at once. */
static int lapsed_ids(disc_tasks_t *ts, int64_t now_ms, lapsed_t **v, size_t *n)
{
    sqlite3_stmt *q = NULL;
    size_t cap = 0;
    int rc = prepare(ts, "SELECT id FROM tasks WHERE status=1 AND lease_until_unix_ms < ?", &q), step = SQLITE_DONE;
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(q, 1, now_ms);
    while (rc == 0 && (step = sqlite3_step(q)) == SQLITE_ROW) {
        if (*n == cap) {
            lapsed_t *nv = realloc(*v, (cap = cap ? cap * 2 : 16) * sizeof(**v));
            if (nv == NULL) {
                rc = -ENOMEM;
                break;
            }
            *v = nv;
        }
        snprintf((*v)[(*n)++].id, sizeof((*v)[0].id), "%s", (const char *)sqlite3_column_text(q, 0));
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = -EIO;
    sqlite3_finalize(q);
    return rc;
}

int disc_tasks_apply_lapse(disc_tasks_t *ts, Faas__Task *t, row_t *x, const void *arg, int64_t now_ms)
{
    if (t->status != FAAS__TASK__STATUS__RUNNING || t->lease_until_unix_ms >= now_ms)
        return -ESTALE; /* renewed or ended since it was found lapsed (another discovery) */
    return fail_attempt(t, x, DISC_TASK_LEASE_LAPSED, now_ms);
}

static int sqlite_expire(disc_tasks_t *ts, int64_t now_ms, lapsed_t **v, size_t *n)
{
    pthread_mutex_lock(&ts->mu);
    int rc = exec(ts, "BEGIN IMMEDIATE");
    if (rc == 0)
        rc = lapsed_ids(ts, now_ms, v, n);
    for (size_t i = 0; rc == 0 && i < *n; i++) {
        Faas__Task *t = NULL;
        row_t x = {0};
        rc = change_locked(ts, (*v)[i].id, disc_tasks_apply_lapse, NULL, now_ms, &t, &x);
        if (t != NULL) {
            (*v)[i].status = t->status;
            (*v)[i].attempts = t->attempts;
            faas__task__free_unpacked(t, NULL);
        }
    }
    rc = end_tx(ts, rc);
    pthread_mutex_unlock(&ts->mu);
    return rc;
}

int disc_task_expire(disc_tasks_t *ts, int64_t now_ms)
{
    static const char *const names[] = {"queued", "running", "succeeded", "failed", "cancelled"};
    lapsed_t *v = NULL;
    size_t n = 0;
    int rc = ts->ops->expire(ts, now_ms, &v, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        FAAS_WARN("event=task_lease_lapse id=%s attempts=%u now=%s", v[i].id, v[i].attempts,
                  (unsigned)v[i].status < 5 ? names[v[i].status] : "?");
    free(v);
    return rc != 0 ? rc : (int)n;
}

/* Rows finished before purge_after existed (0) keep the old rule: the default retention.
 * A callback still being delivered holds its task (and result) until it ends. At most
 * PURGE_BATCH rows per transaction: a large expiry never holds the connection for long. */
#define PURGE_BATCH 500
static int purge_batch(disc_tasks_t *ts, const char *sql, int64_t now_ms)
{
    sqlite3_stmt *q = NULL;
    int n = -EIO;
    pthread_mutex_lock(&ts->mu);
    if (prepare(ts, sql, &q) == 0) {
        sqlite3_bind_int64(q, 1, now_ms);
        sqlite3_bind_int64(q, 2, (int64_t)ts->retention_ms);
        sqlite3_bind_int(q, 3, PURGE_BATCH);
        if (sqlite3_step(q) == SQLITE_DONE)
            n = sqlite3_changes(ts->db);
        sqlite3_finalize(q);
    }
    pthread_mutex_unlock(&ts->mu);
    return n;
}

static int sqlite_purge(disc_tasks_t *ts, int64_t now_ms)
{
    static const char *const sql[] = {
        "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE status >= 2 AND purge_after_unix_ms > 0"
        " AND purge_after_unix_ms < ?1 AND callback_status <> 'pending' LIMIT ?3)",
        "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE status >= 2 AND purge_after_unix_ms = 0"
        " AND finished_unix_ms < ?1 - ?2 AND callback_status <> 'pending' LIMIT ?3)",
    };
    int total = 0;
    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        int n;
        do {
            if ((n = purge_batch(ts, sql[i], now_ms)) < 0)
                return n;
            total += n;
        } while (n == PURGE_BATCH);
    }
    return total;
}

int disc_task_purge(disc_tasks_t *ts, int64_t now_ms)
{
    return ts->ops->purge(ts, now_ms);
}

/* ---- callbacks (X-Callback-Url): claimed and reported by a dispatcher ----------------- */

Faas__CallbackDue *disc_tasks_new_due(Faas__Task *t)
{
    Faas__CallbackDue *d = malloc(sizeof(*d));
    if (d == NULL)
        return NULL;
    faas__callback_due__init(d);
    d->task = t;
    return d;
}

/* Phase 1: the due rows, oldest due first, while the reply stays under its byte cap
 * (always one, however large: it must go out some time). */
static int due_rows(disc_tasks_t *ts, uint32_t max, int64_t now_ms, Faas__CallbackDueList *l, row_t *xs)
{
    sqlite3_stmt *q = NULL;
    uint64_t bytes = 0;
    int step = SQLITE_DONE, rc = prepare(ts,
                                         "SELECT " COLS " FROM tasks WHERE callback_status='" CB_PENDING "'"
                                         " AND callback_due_unix_ms <= ?1 AND callback_lease_until_unix_ms <= ?1"
                                         " ORDER BY callback_due_unix_ms, id LIMIT ?2",
                                         &q);
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(q, 1, now_ms);
    sqlite3_bind_int64(q, 2, max);
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        uint64_t size = (uint64_t)sqlite3_column_int64(q, 10); /* result_size */
        if (l->n_due > 0 && bytes + size > DISC_CB_CLAIM_MAX_BYTES)
            break;
        Faas__Task *t = row_task(q, 0, &xs[l->n_due]);
        if (t == NULL || (l->due[l->n_due] = disc_tasks_new_due(t)) == NULL) {
            if (t)
                faas__task__free_unpacked(t, NULL);
            rc = -ENOMEM;
            break;
        }
        l->n_due++;
        bytes += size;
    }
    if (rc == 0 && step != SQLITE_DONE && step != SQLITE_ROW)
        rc = -EIO;
    sqlite3_finalize(q);
    return rc;
}

/* Phase 2 (no statement open on the table any more): the attempt is counted and leased. */
static int lease_due(disc_tasks_t *ts, Faas__CallbackDue *d, row_t *x, uint32_t lease_ms, int64_t now_ms)
{
    int rc = load_result(ts, d->task->id, &d->result);
    if (rc != 0 && rc != -ENODATA) /* ENODATA: ended without a response, the POST says so */
        return rc;
    disc_tasks_lease_callback(d->task, x, lease_ms, now_ms);
    return save(ts, d->task, x);
}

void disc_tasks_lease_callback(Faas__Task *t, row_t *x, uint32_t lease_ms, int64_t now_ms)
{
    t->callback_attempts++;
    x->cb_lease = now_ms + lease_ms;
}

static int sqlite_claim_callbacks(disc_tasks_t *ts, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                                  Faas__CallbackDueList *l)
{
    row_t xs[DISC_CB_CLAIM_MAX];
    pthread_mutex_lock(&ts->mu);
    int rc = exec(ts, "BEGIN IMMEDIATE");
    if (rc == 0)
        rc = due_rows(ts, max, now_ms, l, xs);
    for (size_t i = 0; rc == 0 && i < l->n_due; i++)
        rc = lease_due(ts, l->due[i], &xs[i], lease_ms, now_ms);
    rc = end_tx(ts, rc);
    pthread_mutex_unlock(&ts->mu);
    return rc;
}

int disc_task_claim_callbacks(disc_tasks_t *ts, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                              Faas__CallbackDueList **out)
{
    max = max == 0 ? 1 : max > DISC_CB_CLAIM_MAX ? DISC_CB_CLAIM_MAX : max;
    Faas__CallbackDueList *l = malloc(sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    faas__callback_due_list__init(l);
    if ((l->due = calloc(max, sizeof(*l->due))) == NULL) {
        free(l);
        return -ENOMEM;
    }
    int rc = ts->ops->claim_callbacks(ts, max, lease_ms ? lease_ms : DISC_CB_LEASE_MS, now_ms, l);
    if (rc != 0) {
        faas__callback_due_list__free_unpacked(l, NULL);
        return rc;
    }
    *out = l;
    return 0;
}

typedef struct {
    const Faas__CallbackReport *r;
    int outcome; /* out: DISC_CB_* */
} cb_report_arg_t;

static int apply_cb_report(disc_tasks_t *ts, Faas__Task *t, row_t *x, const void *arg, int64_t now_ms)
{
    cb_report_arg_t *a = (cb_report_arg_t *)arg;
    char status[256];
    if (strcmp(t->callback_status, CB_PENDING) != 0)
        return -ENOMSG;
    x->cb_lease = 0;
    if (a->r->delivered) {
        a->outcome = DISC_CB_DELIVERED;
        return disc_set_str(&t->callback_status, CB_DELIVERED) == 0 ? 0 : -ENOMEM;
    }
    if (t->callback_attempts < ts->cb_attempts) {
        a->outcome = DISC_CB_RETRIED;
        x->cb_due = now_ms + disc_task_callback_backoff_ms(ts->cb_backoff_ms, t->callback_attempts);
        return 0;
    }
    a->outcome = DISC_CB_FAILED;
    snprintf(status, sizeof(status), "failed: %s", a->r->error && a->r->error[0] ? a->r->error : "not delivered");
    return disc_set_str(&t->callback_status, status) == 0 ? 0 : -ENOMEM;
}

int disc_task_report_callback(disc_tasks_t *ts, const Faas__CallbackReport *r, int64_t now_ms, Faas__Task **out)
{
    cb_report_arg_t a = {r, -1};
    int rc = change(ts, r->id, apply_cb_report, &a, now_ms, out);
    if (rc == 0)
        __atomic_fetch_add(&ts->cb_outcomes[a.outcome], 1, __ATOMIC_RELAXED);
    return rc;
}

/* ---- the reaper: expiry every 500 ms, purge every second ------------------------- */

static void reap_once(disc_tasks_t *ts, uint64_t *last_purge)
{
    int n = disc_task_expire(ts, faas_unix_ms());
    if (n < 0)
        FAAS_WARN("event=task_expire_failed rc=%d", n);
    uint64_t mono = faas_now_ms();
    if (*last_purge != 0 && mono - *last_purge < DISC_TASK_PURGE_EVERY_MS)
        return;
    *last_purge = mono;
    n = disc_task_purge(ts, faas_unix_ms());
    if (n < 0)
        FAAS_WARN("event=task_purge_failed rc=%d", n);
    else if (n > 0)
        FAAS_INFO("event=task_purge tasks=%d", n);
}

static void *reaper_main(void *arg)
{
    disc_tasks_t *ts = arg;
    uint64_t last_purge = 0;
    pthread_mutex_lock(&ts->rmu);
    while (!ts->reaper_stop) {
        pthread_mutex_unlock(&ts->rmu);
        reap_once(ts, &last_purge);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += DISC_TASK_EXPIRE_EVERY_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&ts->rmu);
        while (!ts->reaper_stop && pthread_cond_timedwait(&ts->rcv, &ts->rmu, &until) == 0)
            ; /* a wake-up without stop (spurious) waits out the period */
    }
    pthread_mutex_unlock(&ts->rmu);
    return NULL;
}

int disc_task_start_reaper(disc_tasks_t *ts)
{
    if (ts->reaper_running)
        return 0;
    ts->reaper_stop = 0;
    if (pthread_create(&ts->reaper, NULL, reaper_main, ts) != 0)
        return -1;
    ts->reaper_running = 1;
    return 0;
}

void disc_task_stop_reaper(disc_tasks_t *ts)
{
    if (!ts->reaper_running)
        return;
    pthread_mutex_lock(&ts->rmu);
    ts->reaper_stop = 1;
    pthread_cond_broadcast(&ts->rcv);
    pthread_mutex_unlock(&ts->rmu);
    pthread_join(ts->reaper, NULL);
    ts->reaper_running = 0;
}

/* ---- counters and metrics -------------------------------------------------------- */

void disc_task_counters(disc_tasks_t *ts, disc_task_counters_t *out)
{
    out->submitted = __atomic_load_n(&ts->submitted, __ATOMIC_RELAXED);
    out->commits = __atomic_load_n(&ts->commits, __ATOMIC_RELAXED);
    out->attempts = __atomic_load_n(&ts->attempts, __ATOMIC_RELAXED);
    for (int i = 0; i < DISC_CB_OUTCOMES; i++)
        out->callbacks[i] = __atomic_load_n(&ts->cb_outcomes[i], __ATOMIC_RELAXED);
}

const char *const disc_cb_outcome_names[DISC_CB_OUTCOMES] = {"delivered", "retried", "failed"};

static const char *const status_names[5] = {"queued", "running", "succeeded", "failed", "cancelled"};

/* One line per status of every function that has tasks (zeros included, so a
 * series drops to 0 instead of vanishing). */
static void metrics_counts(disc_tasks_t *ts, FILE *out)
{
    sqlite3_stmt *q = NULL;
    char fn[256] = "";
    uint64_t c[5] = {0};
    int have = 0;
    fputs("# HELP faas_tasks Async tasks in the store, by function and status.\n# TYPE faas_tasks gauge\n", out);
    if (prepare(ts, "SELECT function, status, count(*) FROM tasks GROUP BY function, status ORDER BY function", &q))
        return;
    for (int step = sqlite3_step(q);; step = sqlite3_step(q)) {
        const char *f = step == SQLITE_ROW ? (const char *)sqlite3_column_text(q, 0) : NULL;
        if (have && (f == NULL || strcmp(f, fn) != 0)) {
            for (int s = 0; s < 5; s++)
                fprintf(out, "faas_tasks{function=\"%s\",status=\"%s\"} %llu\n", fn, status_names[s],
                        (unsigned long long)c[s]);
            memset(c, 0, sizeof(c));
        }
        if (f == NULL)
            break;
        snprintf(fn, sizeof(fn), "%s", f);
        have = 1;
        unsigned st = (unsigned)sqlite3_column_int(q, 1);
        if (st < 5)
            c[st] = (uint64_t)sqlite3_column_int64(q, 2);
    }
    sqlite3_finalize(q);
}

static void metrics_oldest(disc_tasks_t *ts, FILE *out, int64_t now_ms)
{
    sqlite3_stmt *q = NULL;
    fputs("# HELP faas_task_queue_oldest_seconds Age of the oldest queued task, by function.\n"
          "# TYPE faas_task_queue_oldest_seconds gauge\n",
          out);
    if (prepare(ts, "SELECT function, min(created_unix_ms) FROM tasks WHERE status=0 GROUP BY function", &q))
        return;
    while (sqlite3_step(q) == SQLITE_ROW) {
        int64_t age = now_ms - sqlite3_column_int64(q, 1);
        fprintf(out, "faas_task_queue_oldest_seconds{function=\"%s\"} %.3f\n", sqlite3_column_text(q, 0),
                age > 0 ? (double)age / 1000.0 : 0.0);
    }
    sqlite3_finalize(q);
}

static void sqlite_metrics(disc_tasks_t *ts, FILE *out, int64_t now_ms)
{
    pthread_mutex_lock(&ts->mu);
    metrics_counts(ts, out);
    metrics_oldest(ts, out, now_ms);
    pthread_mutex_unlock(&ts->mu);
}

static const disc_task_ops_t sqlite_ops = {
    .close = sqlite_close,
    .commit_batch = sqlite_commit_batch,
    .load = sqlite_load,
    .load_result = sqlite_load_result,
    .list = sqlite_list,
    .change = sqlite_change,
    .claim = sqlite_claim,
    .expire = sqlite_expire,
    .purge = sqlite_purge,
    .claim_callbacks = sqlite_claim_callbacks,
    .metrics = sqlite_metrics,
};

void disc_task_metrics(disc_tasks_t *ts, FILE *out, int64_t now_ms)
{
    disc_task_counters_t c;
    disc_task_counters(ts, &c);
    ts->ops->metrics(ts, out, now_ms);
    fprintf(out,
            "# HELP faas_tasks_submitted_total Tasks accepted by SubmitTask (committed).\n"
            "# TYPE faas_tasks_submitted_total counter\nfaas_tasks_submitted_total %llu\n"
            "# HELP faas_task_commits_total Transactions that committed submitted tasks (group commits).\n"
            "# TYPE faas_task_commits_total counter\nfaas_task_commits_total %llu\n"
            "# HELP faas_task_attempts_total Task attempts started (tasks claimed).\n"
            "# TYPE faas_task_attempts_total counter\nfaas_task_attempts_total %llu\n",
            (unsigned long long)c.submitted, (unsigned long long)c.commits, (unsigned long long)c.attempts);
    fputs("# HELP faas_task_callbacks_total X-Callback-Url deliveries reported, by outcome.\n"
          "# TYPE faas_task_callbacks_total counter\n",
          out);
    for (int i = 0; i < DISC_CB_OUTCOMES; i++)
        fprintf(out, "faas_task_callbacks_total{outcome=\"%s\"} %llu\n", disc_cb_outcome_names[i],
                (unsigned long long)c.callbacks[i]);
}
