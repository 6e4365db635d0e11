/* discovery/tasks_internal.h - what the task store's front (tasks.c: the API, group
 * commit, the reaper and every transition) shares with its storages: SQLite (also in
 * tasks.c) and etcd (tasks_etcd.c). A storage only loads, saves and scans; the
 * decisions are made once, on an unpacked Faas__Task plus a row_t, whichever storage
 * holds the task. */
#ifndef DISC_TASKS_INTERNAL_H
#define DISC_TASKS_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "discovery/discovery.h"

#define DISC_CB_STATUS_PENDING "pending"
#define DISC_CB_STATUS_DELIVERED "delivered"

typedef struct disc_pending {
    struct disc_pending *next;
    const Faas__Task *task;
    uint8_t *req; /* the packed TaskRequest, packed outside every lock */
    size_t req_len;
    int rc, done;
    disc_task_done_fn fn; /* NULL: a blocking submitter waits for done */
    void *ud;
} disc_pending_t;

/* A function's async bounds with the defaults filled (FunctionSpec.async). */
typedef struct {
    uint32_t max_attempts, concurrency;
    uint64_t max_result_bytes, retention_ms;
    int retry_5xx;
} disc_bounds_t;

/* What a transition sees of a stored task beyond its Task message. */
typedef struct {
    int cancel;                     /* cancel_requested */
    int64_t cb_due, cb_lease;       /* callback_due_unix_ms, callback_lease_until_unix_ms */
    int64_t purge_after;            /* purge_after_unix_ms */
    disc_bounds_t b;                /* its function's async bounds (the storage's change fills them) */
    const Faas__TaskResult *result; /* set by a transition: the storage saves it with the task */
} disc_row_t;

/* A transition of one loaded task: 0 to save it, negative to leave it as it was. */
typedef int (*disc_change_fn)(disc_tasks_t *ts, Faas__Task *t, disc_row_t *x, const void *arg, int64_t now_ms);

typedef struct {
    char id[DISC_TASK_ID_LEN + 1];
    Faas__Task__Status status; /* after the expiry */
    uint32_t attempts;
} disc_lapsed_t;

/* A storage. Every call is one atomic change of what it holds (or a read). */
typedef struct {
    void (*close)(disc_tasks_t *ts);
    /* Commits a batch of submissions, setting each entry's rc; bumps the counters. */
    void (*commit_batch)(disc_tasks_t *ts, disc_pending_t *batch);
    /* One task without its request (0, -ENOENT, -EIO). */
    int (*load)(disc_tasks_t *ts, const char *id, Faas__Task **out, disc_row_t *x);
    int (*load_result)(disc_tasks_t *ts, const char *id, Faas__TaskResult **out);
    /* Appends up to limit matching tasks (presented) to l: 1 if more remain, 0, negative. */
    int (*list)(disc_tasks_t *ts, const Faas__TaskQuery *q, uint32_t limit, Faas__TaskList *l);
    /* Loads id, fills x->b, applies fn, saves, atomically; *t gets the task when it was
     * loaded (the caller frees it, even on errors). */
    int (*change)(disc_tasks_t *ts, const char *id, disc_change_fn fn, const void *arg, int64_t now_ms, Faas__Task **t,
                  disc_row_t *x);
    /* Claims into l (room for max) under the function's concurrency. */
    int (*claim)(disc_tasks_t *ts, const char *function, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                 Faas__TaskList *l);
    /* Applies disc_tasks_apply_lapse to every lapsed running task; *v gets what changed. */
    int (*expire)(disc_tasks_t *ts, int64_t now_ms, disc_lapsed_t **v, size_t *n);
    int (*purge)(disc_tasks_t *ts, int64_t now_ms);
    /* Claims due callbacks into l (room for max). */
    int (*claim_callbacks)(disc_tasks_t *ts, uint32_t max, uint32_t lease_ms, int64_t now_ms, Faas__CallbackDueList *l);
    /* The faas_tasks and faas_task_queue_oldest_seconds families. */
    void (*metrics)(disc_tasks_t *ts, FILE *out, int64_t now_ms);
} disc_task_ops_t;

struct disc_tasks_etcd; /* tasks_etcd.c */

struct disc_tasks {
    const disc_task_ops_t *ops;
    struct disc_tasks_etcd *etcd;
    void *db;           /* sqlite3 * of the SQLite storage */
    pthread_mutex_t mu; /* SQLite: the connection, one transaction at a time; both: the lookup */
    /* group commit: submitters queue here; one leader at a time commits them all */
    pthread_mutex_t gmu;
    pthread_cond_t gcv; /* blocking submitters: a batch ended */
    pthread_cond_t fcv; /* the flusher: a batch waits with no submitter to lead it */
    disc_pending_t *head, *tail;
    int leading, stopping;
    pthread_t flusher;
    int flusher_running;
    /* expiry and purge */
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    pthread_t reaper;
    int reaper_running, reaper_stop;
    uint64_t retention_ms;     /* of functions that set none, and of tasks of deleted ones */
    uint64_t max_result_cap;   /* the storage's own bound on a stored result (0: none) */
    uint64_t max_request_cap;  /* ... and on a submitted request's body (0: none) */
    disc_task_async_fn lookup; /* a function's AsyncSpec */
    void *lookup_ud;
    uint32_t cb_attempts, cb_backoff_ms;    /* X-Callback-Url deliveries: limit and first wait */
    uint64_t submitted, commits, attempts;  /* atomics, since start */
    uint64_t cb_outcomes[DISC_CB_OUTCOMES]; /* atomics: callback reports by outcome */
};

/* Allocates a store with its locks and no storage; disc_tasks_start adds the threads. */
disc_tasks_t *disc_tasks_alloc(void);
/* Starts the group-commit thread once ops is set: 0, or -1 with *err. */
int disc_tasks_start(disc_tasks_t *ts, const char **err);
/* A function's bounds, defaults filled; the caller holds ts->mu. */
void disc_tasks_bounds(disc_tasks_t *ts, const char *function, disc_bounds_t *b);
/* What readers see: a running task someone asked to cancel says so. */
int disc_tasks_present(Faas__Task *t, int cancel);
int disc_tasks_is_finished(const Faas__Task *t);
/* A queued task starts its next attempt under a lease. */
int disc_tasks_claim_one(Faas__Task *t, uint32_t lease_ms, int64_t now_ms);
/* A running task whose lease ended before now_ms fails its attempt; -ESTALE if it
 * is not (another discovery renewed or ended it meanwhile). */
int disc_tasks_apply_lapse(disc_tasks_t *ts, Faas__Task *t, disc_row_t *x, const void *arg, int64_t now_ms);
/* A claimed callback: its attempt counted and leased. */
void disc_tasks_lease_callback(Faas__Task *t, disc_row_t *x, uint32_t lease_ms, int64_t now_ms);
Faas__TaskList *disc_tasks_new_list(size_t cap);
Faas__CallbackDue *disc_tasks_new_due(Faas__Task *t);

#endif
