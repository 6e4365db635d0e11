/* discovery/tasks_etcd.c - the task store's storage on etcd (docs/async.md, "The task
 * store on etcd"), so several discoveries share one queue and nothing accepted is lost
 * when any of them dies. Every change is one etcd transaction that compares the task
 * key's mod_revision with the one loaded (optimistic concurrency: of two discoveries
 * changing one task, one wins and the other reloads or skips it), puts the task and
 * moves its index keys, which stand in for SQLite's indexes. All under <prefix>async/,
 * apart from the function store's keys under the same prefix:
 *
 *   tasks/<id>                               StoredTask (no request)
 *   req/<id>, results/<id>                   packed TaskRequest, TaskResult
 *   st/<function>/<status>/<id>              every task: metrics' counts
 *   queue/<function>/<not_before>/<created>/<id>   queued: claims take due ones
 *   running/<function>/<id>                  running: async.concurrency (count-only)
 *   lease/<lease_until>/<id>                 running: expiry
 *   cb/<max(due, lease)>/<id>                callback pending: callback claims
 *   purge/<purge_after>/<id> = its st key    finished, no callback pending: retention
 *   claim/<function>                         bumped by each claim: see etcd_claim
 *
 * Times are 16 lowercase hex digits, so key order is time order. */
#include "discovery/discovery.h"
#include "discovery/internal.h"
#include "discovery/tasks_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "etcdc/etcdc.h"

#define KEY_MAX 256
#define PREFIX_MAX (DISC_ETCD_PREFIX_MAX + sizeof("async/"))
/* the longest key: <prefix>async/queue/<function>/<16 hex>/<16 hex>/<id> */
_Static_assert(PREFIX_MAX + sizeof("queue/") + 63 + 3 * 1 + 2 * 16 + DISC_TASK_ID_LEN < KEY_MAX,
               "a task key must fit KEY_MAX");
/* etcd's defaults: 128 operations per transaction (--max-txn-ops) and 1.5 MiB per
 * request (--max-request-bytes); a batch stays under both. */
#define TXN_OPS 128
#define TXN_BYTES (1u << 20)
/* What one stored result may hold: with its task in one request under 1.5 MiB. */
#define RESULT_CAP (1200u << 10)
/* A request body goes into one transaction with its task (TXN_BYTES) and etcd's
 * default request limit (1.5 MiB): bigger is refused at submission, named, not
 * stored and not an -EIO. */
#define REQUEST_CAP (1000u << 10)
#define CHANGE_TRIES 16 /* reloads of a task another discovery keeps changing */
#define CLAIM_CHUNK 16  /* 7 operations a task: 16 fit one transaction */
#define CLAIM_CONFLICTS 8
#define SCAN_PAGE 1000

struct disc_tasks_etcd {
    etcdc_t *c;
    char prefix[PREFIX_MAX];
};

typedef struct {
    char k[KEY_MAX];
    size_t n;
} ekey_t;

/* ---- keys ------------------------------------------------------------------------ */

static void hex16(char out[17], int64_t v)
{
    snprintf(out, 17, "%016llx", (unsigned long long)(v < 0 ? 0 : v));
}

/* prefix + the formatted rest; 0, or -ENAMETOOLONG. */
static int mkkey(const disc_tasks_t *ts, ekey_t *k, const char *fmt, ...)
{
    va_list ap;
    int p = snprintf(k->k, sizeof(k->k), "%s", ts->etcd->prefix);
    va_start(ap, fmt);
    int n = vsnprintf(k->k + p, sizeof(k->k) - (size_t)p, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)(p + n) >= sizeof(k->k))
        return -ENAMETOOLONG;
    k->n = (size_t)(p + n);
    return 0;
}

/* The index keys of a task in a state; purge's value is the st key. */
typedef struct {
    ekey_t k[5];
    size_t n;
    int purge; /* k[n-1] is the purge key */
} idx_t;

static int pending_cb(const Faas__Task *t)
{
    return t->callback_status != NULL && strcmp(t->callback_status, DISC_CB_STATUS_PENDING) == 0;
}

static int index_of(const disc_tasks_t *ts, const Faas__Task *t, const disc_row_t *x, idx_t *ix)
{
    char a[17], b[17];
    int rc = mkkey(ts, &ix->k[0], "st/%s/%d/%s", t->function, (int)t->status, t->id);
    ix->n = 1;
    ix->purge = 0;
    if (t->status == FAAS__TASK__STATUS__QUEUED) {
        hex16(a, t->not_before_unix_ms);
        hex16(b, t->created_unix_ms);
        rc |= mkkey(ts, &ix->k[ix->n++], "queue/%s/%s/%s/%s", t->function, a, b, t->id);
    } else if (t->status == FAAS__TASK__STATUS__RUNNING) {
        hex16(a, t->lease_until_unix_ms);
        rc |= mkkey(ts, &ix->k[ix->n++], "running/%s/%s", t->function, t->id);
        rc |= mkkey(ts, &ix->k[ix->n++], "lease/%s/%s", a, t->id);
    }
    if (pending_cb(t)) { /* claimable once due and its last claim's lease ended */
        hex16(a, x->cb_due > x->cb_lease ? x->cb_due : x->cb_lease);
        rc |= mkkey(ts, &ix->k[ix->n++], "cb/%s/%s", a, t->id);
    } else if (disc_tasks_is_finished(t)) {
        hex16(a, x->purge_after);
        rc |= mkkey(ts, &ix->k[ix->n++], "purge/%s/%s", a, t->id);
        ix->purge = 1;
    }
    return rc ? -ENAMETOOLONG : 0;
}

/* ---- transactions ---------------------------------------------------------------- */

/* A transaction being built: its operations point into keys and bufs it owns. */
typedef struct {
    etcdc_cmp_t cmp[TXN_OPS];
    etcdc_op_t op[TXN_OPS];
    size_t ncmp, nop;
    ekey_t keys[2 * TXN_OPS];
    size_t nkeys;
    void *bufs[TXN_OPS];
    size_t nbufs;
    size_t bytes;
    int overflow; /* a bound above was miscounted: the transaction is refused, not overrun */
} txb_t;

static void txb_reset(txb_t *b)
{
    for (size_t i = 0; i < b->nbufs; i++)
        free(b->bufs[i]);
    b->ncmp = b->nop = b->nkeys = b->nbufs = b->bytes = 0;
    b->overflow = 0;
}

static ekey_t *txb_key(txb_t *b, const ekey_t *k)
{
    if (b->nkeys == sizeof(b->keys) / sizeof(b->keys[0])) {
        b->overflow = 1;
        b->nkeys--; /* reused: the transaction will not run */
    }
    b->keys[b->nkeys] = *k;
    return &b->keys[b->nkeys++];
}

/* Adds an operation; val (kind PUT) is owned by b when own. */
static void txb_op(txb_t *b, etcdc_op_kind_t kind, const ekey_t *k, const void *val, size_t vlen, int own)
{
    const ekey_t *kk = txb_key(b, k);
    if (b->nop == TXN_OPS || (own && b->nbufs == TXN_OPS)) {
        b->overflow = 1;
        if (own)
            free((void *)val);
        return;
    }
    b->op[b->nop++] = (etcdc_op_t){.kind = kind, .key = kk->k, .klen = kk->n, .val = val ? val : "", .vlen = vlen};
    if (own)
        b->bufs[b->nbufs++] = (void *)val;
    b->bytes += kk->n + vlen + 16;
}

static void txb_cmp(txb_t *b, etcdc_cmp_target_t target, etcdc_cmp_op_t op, const ekey_t *k, int64_t num)
{
    const ekey_t *kk = txb_key(b, k);
    if (b->ncmp == TXN_OPS) {
        b->overflow = 1;
        return;
    }
    b->cmp[b->ncmp++] = (etcdc_cmp_t){.target = target, .op = op, .key = kk->k, .klen = kk->n, .num = num};
    b->bytes += kk->n + 16;
}

static int etcd_fail(const char *what, int rc)
{
    FAAS_WARN("event=task_etcd_failed op=%s rc=%d error=\"%s\"", what, rc, etcdc_error());
    return -EIO;
}

/* Runs b's branch; *ok says whether every comparison held. */
static int txb_run(disc_tasks_t *ts, txb_t *b, int *ok, etcdc_range_t **gets, size_t *ngets)
{
    if (b->overflow) {
        FAAS_ERROR("event=task_etcd_txn_overflow ops=%zu", b->nop);
        return -EIO;
    }
    int rc = etcdc_txn(ts->etcd->c, b->cmp, b->ncmp, b->op, b->nop, NULL, 0, ok, NULL, gets, ngets);
    return rc == 0 ? 0 : etcd_fail("txn", rc);
}

static void free_gets(etcdc_range_t *gets, size_t n)
{
    for (size_t i = 0; i < n; i++)
        etcdc_range_free(&gets[i]);
    free(gets);
}

/* ---- tasks <-> values ------------------------------------------------------------ */

static uint8_t *pack_task(const Faas__Task *t, const disc_row_t *x, size_t *len)
{
    Faas__Task copy = *t;
    Faas__StoredTask s = FAAS__STORED_TASK__INIT;
    copy.request = NULL; /* under req/<id>: a read of the task never carries it */
    copy.cancel_requested = x->cancel != 0;
    s.task = &copy;
    s.callback_due_unix_ms = x->cb_due;
    s.callback_lease_until_unix_ms = x->cb_lease;
    s.purge_after_unix_ms = x->purge_after;
    return faas_pb_pack(&s.base, len);
}

/* A malloc'd Task (as SQLite's rows give it: cancel_requested only in *x). */
static int unpack_task(const etcdc_kv_t *kv, Faas__Task **out, disc_row_t *x)
{
    Faas__StoredTask *s = faas__stored_task__unpack(NULL, kv->vlen, kv->val);
    if (s == NULL || s->task == NULL || s->task->id == NULL || s->task->function == NULL) {
        if (s)
            faas__stored_task__free_unpacked(s, NULL);
        FAAS_WARN("event=task_etcd_bad_value key=%.*s", (int)kv->klen, (const char *)kv->key);
        return -EIO;
    }
    *out = s->task;
    s->task = NULL;
    x->cancel = (*out)->cancel_requested;
    (*out)->cancel_requested = 0;
    x->cb_due = s->callback_due_unix_ms;
    x->cb_lease = s->callback_lease_until_unix_ms;
    x->purge_after = s->purge_after_unix_ms;
    faas__stored_task__free_unpacked(s, NULL);
    return 0;
}

/* Loads tasks/<id>: *mod gets its mod_revision. */
static int load_rev(disc_tasks_t *ts, const char *id, Faas__Task **out, disc_row_t *x, int64_t *mod)
{
    ekey_t k;
    etcdc_kv_t kv;
    if (mkkey(ts, &k, "tasks/%s", id) != 0)
        return -ENOENT;
    int rc = etcdc_get(ts->etcd->c, k.k, k.n, &kv);
    if (rc == -ENOENT)
        return rc;
    if (rc != 0)
        return etcd_fail("get", rc);
    *mod = kv.mod_rev;
    rc = unpack_task(&kv, out, x);
    etcdc_kv_free(&kv);
    return rc;
}

static int etcd_load(disc_tasks_t *ts, const char *id, Faas__Task **out, disc_row_t *x)
{
    int64_t mod;
    return load_rev(ts, id, out, x, &mod);
}

/* Stages the save of a task loaded at mod (index keys moved from old's to t's, and a
 * result set by the transition) into b. */
static int stage_save(disc_tasks_t *ts, txb_t *b, const idx_t *old, const Faas__Task *t, const disc_row_t *x,
                      int64_t mod)
{
    ekey_t k;
    idx_t ix;
    size_t len = 0;
    int rc = index_of(ts, t, x, &ix);
    if (rc != 0 || (rc = mkkey(ts, &k, "tasks/%s", t->id)) != 0)
        return rc;
    uint8_t *v = pack_task(t, x, &len);
    if (v == NULL)
        return -ENOMEM;
    txb_cmp(b, ETCDC_CMP_MOD, ETCDC_EQ, &k, mod);
    txb_op(b, ETCDC_OP_PUT, &k, v, len, 1);
    for (size_t i = 0; i < old->n; i++) {
        int kept = 0;
        for (size_t j = 0; j < ix.n && !kept; j++)
            kept = old->k[i].n == ix.k[j].n && memcmp(old->k[i].k, ix.k[j].k, ix.k[j].n) == 0;
        if (!kept)
            txb_op(b, ETCDC_OP_DELETE, &old->k[i], NULL, 0, 0);
    }
    for (size_t j = 0; j < ix.n; j++) {
        const ekey_t *st = &b->keys[b->nkeys]; /* the value of a purge key: the st key, copied now */
        if (ix.purge && j == ix.n - 1) {
            txb_key(b, &ix.k[0]);
            txb_op(b, ETCDC_OP_PUT, &ix.k[j], st->k, st->n, 0);
        } else {
            txb_op(b, ETCDC_OP_PUT, &ix.k[j], NULL, 0, 0);
        }
    }
    if (x->result != NULL) {
        if ((v = faas_pb_pack(&x->result->base, &len)) == NULL || mkkey(ts, &k, "results/%s", t->id) != 0) {
            free(v);
            return -ENOMEM;
        }
        txb_op(b, ETCDC_OP_PUT, &k, v, len, 1);
    }
    return 0;
}

/* ---- submissions ----------------------------------------------------------------- */

static int valid_function(const char *f)
{
    const char *err;
    return faas_valid_function_name(f, strlen(f), &err) == 0; /* a '/' would break the keys */
}

/* Stages one new task: created only if its id is unknown. */
static int stage_new(disc_tasks_t *ts, txb_t *b, disc_pending_t *p)
{
    ekey_t k;
    idx_t ix;
    disc_row_t x = {0};
    size_t len = 0;
    if (!valid_function(p->task->function))
        return -EINVAL;
    int rc = index_of(ts, p->task, &x, &ix);
    if (rc != 0 || (rc = mkkey(ts, &k, "tasks/%s", p->task->id)) != 0)
        return rc;
    uint8_t *v = pack_task(p->task, &x, &len);
    if (v == NULL)
        return -ENOMEM;
    txb_cmp(b, ETCDC_CMP_CREATE, ETCDC_EQ, &k, 0);
    txb_op(b, ETCDC_OP_PUT, &k, v, len, 1);
    mkkey(ts, &k, "req/%s", p->task->id);
    txb_op(b, ETCDC_OP_PUT, &k, p->req, p->req_len, 0);
    for (size_t j = 0; j < ix.n; j++)
        txb_op(b, ETCDC_OP_PUT, &ix.k[j], NULL, 0, 0);
    return 0;
}

/* One entry alone, after its batch's comparison failed: which id was known. */
static int commit_one(disc_tasks_t *ts, txb_t *b, disc_pending_t *p)
{
    int ok = 0;
    txb_reset(b);
    int rc = stage_new(ts, b, p);
    if (rc == 0)
        rc = txb_run(ts, b, &ok, NULL, NULL);
    txb_reset(b);
    return rc != 0 ? rc : ok ? 0 : -EEXIST;
}

/* One transaction for [from, to); every entry's rc set. */
static void commit_chunk(disc_tasks_t *ts, txb_t *b, disc_pending_t *from, disc_pending_t *to, uint64_t *ok_n)
{
    int ok = 0, rc = b->nop > 0 ? txb_run(ts, b, &ok, NULL, NULL) : 0;
    txb_reset(b);
    for (disc_pending_t *p = from; p != to; p = p->next) {
        if (p->rc == 1) /* staged */
            p->rc = rc != 0 ? rc : ok ? 0 : commit_one(ts, b, p);
        *ok_n += p->rc == 0;
    }
    if (rc == 0)
        __atomic_fetch_add(&ts->commits, 1, __ATOMIC_RELAXED);
}

/* 1 if an entry of [from, p) has p's id: etcd refuses a transaction that puts one key twice. */
static int staged_id(const disc_pending_t *from, const disc_pending_t *p)
{
    for (; from != p; from = from->next)
        if (from->rc == 1 && strcmp(from->task->id, p->task->id) == 0)
            return 1;
    return 0;
}

/* A batch in as few transactions as etcd's limits allow (group commit). */
static void etcd_commit_batch(disc_tasks_t *ts, disc_pending_t *batch)
{
    txb_t *b = calloc(1, sizeof(*b));
    uint64_t ok_n = 0;
    disc_pending_t *from = batch;
    for (disc_pending_t *p = batch; p != NULL; p = p->next) {
        if (b == NULL) {
            p->rc = -ENOMEM;
            continue;
        }
        if (b->nop > 0 && (b->nop + 10 > TXN_OPS || b->bytes + p->req_len + 1024 > TXN_BYTES || staged_id(from, p))) {
            commit_chunk(ts, b, from, p, &ok_n);
            from = p;
        }
        size_t nop = b->nop;
        p->rc = stage_new(ts, b, p);
        if (p->rc == 0)
            p->rc = 1;
        else
            b->nop = nop; /* nothing half-staged goes out (its buffers are freed with the rest) */
    }
    if (b != NULL)
        commit_chunk(ts, b, from, NULL, &ok_n);
    free(b);
    __atomic_fetch_add(&ts->submitted, ok_n, __ATOMIC_RELAXED);
}

/* ---- reads ----------------------------------------------------------------------- */

static int etcd_load_result(disc_tasks_t *ts, const char *id, Faas__TaskResult **out)
{
    ekey_t kt, kr;
    etcdc_range_t *gets = NULL;
    size_t ngets = 0;
    int ok = 0;
    if (mkkey(ts, &kt, "tasks/%s", id) != 0 || mkkey(ts, &kr, "results/%s", id) != 0)
        return -ENOENT;
    etcdc_op_t ops[2] = {{.kind = ETCDC_OP_GET, .key = kt.k, .klen = kt.n},
                         {.kind = ETCDC_OP_GET, .key = kr.k, .klen = kr.n}};
    int rc = etcdc_txn(ts->etcd->c, NULL, 0, ops, 2, NULL, 0, &ok, NULL, &gets, &ngets); /* one revision */
    if (rc != 0)
        return etcd_fail("txn", rc);
    Faas__Task *t = NULL;
    disc_row_t x = {0};
    if (ngets != 2 || gets[0].n == 0)
        rc = ngets != 2 ? -EIO : -ENOENT;
    else if ((rc = unpack_task(&gets[0].kvs[0], &t, &x)) == 0 && !disc_tasks_is_finished(t))
        rc = -EAGAIN;
    else if (rc == 0 && gets[1].n == 0)
        rc = -ENODATA;
    else if (rc == 0 && (*out = faas__task_result__unpack(NULL, gets[1].kvs[0].vlen, gets[1].kvs[0].val)) == NULL)
        rc = -EIO;
    if (t)
        faas__task__free_unpacked(t, NULL);
    free_gets(gets, ngets);
    return rc;
}

static int matches(const Faas__Task *t, const Faas__TaskQuery *q)
{
    const char *fn = q->function ? q->function : "";
    return (fn[0] == '\0' || strcmp(fn, t->function) == 0) && (!q->by_status || t->status == q->status);
}

/* Pages through tasks/ after query->after, filtering (a filter that matches rarely
 * reads much: the store has no index by function alone). */
static int etcd_list(disc_tasks_t *ts, const Faas__TaskQuery *query, uint32_t limit, Faas__TaskList *l)
{
    ekey_t from, end;
    const char *after = query->after ? query->after : "";
    if (mkkey(ts, &from, "tasks/%s", after) != 0 || mkkey(ts, &end, "tasks/") != 0)
        return -EINVAL;
    if (after[0] != '\0')
        from.k[from.n++] = '\0'; /* strictly after */
    end.n = etcdc_prefix_end((const uint8_t *)end.k, end.n, (uint8_t *)end.k, sizeof(end.k));
    for (;;) {
        etcdc_range_t r;
        int rc = etcdc_range(ts->etcd->c, from.k, from.n, end.k, end.n, 0, limit + 1, 0, &r);
        if (rc != 0)
            return etcd_fail("range", rc);
        for (size_t i = 0; i < r.n; i++) {
            Faas__Task *t = NULL;
            disc_row_t x = {0};
            if ((rc = unpack_task(&r.kvs[i], &t, &x)) != 0)
                break;
            if (!matches(t, query)) {
                faas__task__free_unpacked(t, NULL);
                continue;
            }
            if (l->n_tasks == limit) {
                faas__task__free_unpacked(t, NULL);
                rc = 1;
                break;
            }
            l->tasks[l->n_tasks++] = t;
            if (disc_tasks_present(t, x.cancel) != 0) {
                rc = -ENOMEM;
                break;
            }
        }
        int more = r.more && r.n > 0;
        if (more && r.kvs[r.n - 1].klen + 1 < sizeof(from.k)) {
            memcpy(from.k, r.kvs[r.n - 1].key, r.kvs[r.n - 1].klen);
            from.n = r.kvs[r.n - 1].klen;
            from.k[from.n++] = '\0';
        }
        etcdc_range_free(&r);
        if (rc != 0 || !more)
            return rc;
    }
}

/* ---- single-task changes --------------------------------------------------------- */

static void bounds_locked(disc_tasks_t *ts, const char *function, disc_bounds_t *b)
{
    pthread_mutex_lock(&ts->mu);
    disc_tasks_bounds(ts, function, b);
    pthread_mutex_unlock(&ts->mu);
}

/* Load, decide, save if unchanged since the load; else again with what won. */
static int etcd_change(disc_tasks_t *ts, const char *id, disc_change_fn fn, const void *arg, int64_t now_ms,
                       Faas__Task **t, disc_row_t *x)
{
    txb_t *b = calloc(1, sizeof(*b));
    int rc = b == NULL ? -ENOMEM : -EIO, ok = 0;
    for (int i = 0; b != NULL && i < CHANGE_TRIES; i++) {
        int64_t mod = 0;
        idx_t old;
        if (*t != NULL)
            faas__task__free_unpacked(*t, NULL);
        *t = NULL;
        *x = (disc_row_t){0};
        if ((rc = load_rev(ts, id, t, x, &mod)) != 0 || (rc = index_of(ts, *t, x, &old)) != 0)
            break;
        bounds_locked(ts, (*t)->function, &x->b);
        if ((rc = fn(ts, *t, x, arg, now_ms)) != 0)
            break;
        rc = stage_save(ts, b, &old, *t, x, mod);
        if (rc == 0)
            rc = txb_run(ts, b, &ok, NULL, NULL);
        txb_reset(b);
        if (rc != 0 || ok)
            break;
        rc = -EIO; /* changed meanwhile: the last try's failure if none wins */
    }
    free(b);
    return rc;
}

/* ---- claims ---------------------------------------------------------------------- */

typedef struct {
    int64_t created;
    char id[DISC_TASK_ID_LEN + 1];
} due_t;

static int by_created(const void *a, const void *b)
{
    const due_t *x = a, *y = b;
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* The due queued tasks of function, oldest created first (of the first SCAN_PAGE due). */
static int due_tasks(disc_tasks_t *ts, const char *function, int64_t now_ms, due_t **v, size_t *n)
{
    ekey_t from, end;
    char h[17];
    etcdc_range_t r;
    hex16(h, now_ms + 1);
    if (mkkey(ts, &from, "queue/%s/", function) != 0 || mkkey(ts, &end, "queue/%s/%s", function, h) != 0)
        return -EINVAL;
    int rc = etcdc_range(ts->etcd->c, from.k, from.n, end.k, end.n, 0, SCAN_PAGE, ETCDC_KEYS_ONLY, &r);
    if (rc != 0)
        return etcd_fail("range", rc);
    *v = calloc(r.n ? r.n : 1, sizeof(**v));
    *n = 0;
    for (size_t i = 0; *v != NULL && i < r.n; i++) {
        /* <from><not_before>/<created>/<id> */
        const char *rest = (const char *)r.kvs[i].key + from.n;
        unsigned long long nb, created;
        char id[DISC_TASK_ID_LEN + 2];
        if (sscanf(rest, "%16llx/%16llx/%33s", &nb, &created, id) == 3 && disc_task_valid_id(id)) {
            (*v)[*n].created = (int64_t)created;
            memcpy((*v)[(*n)++].id, id, sizeof((*v)[0].id));
        }
    }
    etcdc_range_free(&r);
    if (*v == NULL)
        return -ENOMEM;
    qsort(*v, *n, sizeof(**v), by_created);
    return 0;
}

/* The running tasks of function, and the claim token's revision read before them. */
static int running_count(disc_tasks_t *ts, const char *function, int64_t *count, int64_t *token)
{
    ekey_t k, end;
    etcdc_kv_t kv;
    etcdc_range_t r;
    if (mkkey(ts, &k, "claim/%s", function) != 0 || mkkey(ts, &end, "running/%s/", function) != 0)
        return -EINVAL;
    int rc = etcdc_get(ts->etcd->c, k.k, k.n, &kv);
    if (rc != 0 && rc != -ENOENT)
        return etcd_fail("get", rc);
    *token = rc == 0 ? kv.mod_rev : 0;
    if (rc == 0)
        etcdc_kv_free(&kv);
    size_t plen = end.n;
    char endk[KEY_MAX];
    size_t elen = etcdc_prefix_end((const uint8_t *)end.k, plen, (uint8_t *)endk, sizeof(endk));
    if ((rc = etcdc_range(ts->etcd->c, end.k, plen, endk, elen, 0, 0, ETCDC_COUNT_ONLY, &r)) != 0)
        return etcd_fail("range", rc);
    *count = r.count;
    etcdc_range_free(&r);
    return 0;
}

typedef struct {
    Faas__Task *t[CLAIM_CHUNK];
    size_t n;
} chunk_t;

static void chunk_free(chunk_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i])
            faas__task__free_unpacked(c->t[i], NULL);
    c->n = 0;
}

/* Stages the claim of one due task; 1 if staged, 0 if it is no longer claimable. */
static int stage_claim(disc_tasks_t *ts, txb_t *b, chunk_t *c, const char *id, const char *function, uint32_t lease_ms,
                       int64_t now_ms)
{
    Faas__Task *t = NULL;
    disc_row_t x = {0};
    idx_t old;
    int64_t mod = 0;
    ekey_t k;
    int rc = load_rev(ts, id, &t, &x, &mod);
    if (rc == -ENOENT)
        return 0;
    if (rc == 0 && (t->status != FAAS__TASK__STATUS__QUEUED || strcmp(t->function, function) != 0 ||
                    t->not_before_unix_ms > now_ms))
        rc = 1; /* claimed or changed since the queue was read */
    if (rc == 0 && (rc = index_of(ts, t, &x, &old)) == 0 && (rc = disc_tasks_claim_one(t, lease_ms, now_ms)) == 0)
        rc = stage_save(ts, b, &old, t, &x, mod);
    if (rc == 0 && (rc = mkkey(ts, &k, "req/%s", id)) == 0)
        txb_op(b, ETCDC_OP_GET, &k, NULL, 0, 0);
    if (rc != 0) {
        faas__task__free_unpacked(t, NULL);
        return rc == 1 ? 0 : rc;
    }
    c->t[c->n++] = t;
    return 1;
}

/* The requests the claim's GETs read, one per task in order. */
static int attach_requests(chunk_t *c, etcdc_range_t *gets, size_t ngets)
{
    if (ngets != c->n)
        return -EIO;
    for (size_t i = 0; i < c->n; i++) {
        const etcdc_kv_t *kv = gets[i].n ? &gets[i].kvs[0] : NULL;
        c->t[i]->request = faas__task_request__unpack(NULL, kv ? kv->vlen : 0, kv ? kv->val : (const uint8_t *)"");
        if (c->t[i]->request == NULL)
            return -EIO;
    }
    return 0;
}

/* One transaction claiming up to want due tasks. Every claim of a function also bumps
 * claim/<function> and compares it with the revision read before counting what runs:
 * two discoveries claiming one function at once cannot both pass its concurrency (one
 * transaction fails and counts again), while reports, which only lower the count,
 * never touch it. *conflict is set when another writer won. */
static int claim_chunk(disc_tasks_t *ts, txb_t *b, const char *function, uint32_t want, uint32_t lease_ms,
                       int64_t now_ms, Faas__TaskList *l, int *conflict, int *drained)
{
    int64_t running = 0, token = 0;
    disc_bounds_t bd;
    due_t *due = NULL;
    size_t ndue = 0;
    chunk_t c = {.n = 0};
    ekey_t k;
    int rc = running_count(ts, function, &running, &token);
    if (rc != 0)
        return rc;
    bounds_locked(ts, function, &bd);
    if (running >= bd.concurrency) {
        *drained = 1;
        return 0;
    }
    if ((uint64_t)(bd.concurrency - running) < want)
        want = (uint32_t)(bd.concurrency - running);
    if ((rc = due_tasks(ts, function, now_ms, &due, &ndue)) != 0)
        return rc;
    mkkey(ts, &k, "claim/%s", function);
    txb_cmp(b, ETCDC_CMP_MOD, ETCDC_EQ, &k, token);
    txb_op(b, ETCDC_OP_PUT, &k, NULL, 0, 0);
    for (size_t i = 0; rc >= 0 && i < ndue && c.n < want && c.n < CLAIM_CHUNK; i++)
        rc = stage_claim(ts, b, &c, due[i].id, function, lease_ms, now_ms);
    free(due);
    *drained = c.n < want && c.n < CLAIM_CHUNK; /* fewer due than wanted */
    int ok = 0;
    etcdc_range_t *gets = NULL;
    size_t ngets = 0;
    if (rc >= 0 && c.n > 0 && (rc = txb_run(ts, b, &ok, &gets, &ngets)) == 0 && ok)
        rc = attach_requests(&c, gets, ngets);
    free_gets(gets, ngets);
    txb_reset(b);
    *conflict = rc >= 0 && c.n > 0 && !ok;
    if (rc >= 0 && ok) {
        for (size_t i = 0; i < c.n; i++)
            l->tasks[l->n_tasks++] = c.t[i];
        c.n = 0;
    }
    chunk_free(&c);
    return rc < 0 ? rc : 0;
}

static int etcd_claim(disc_tasks_t *ts, const char *function, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                      Faas__TaskList *l)
{
    txb_t *b = calloc(1, sizeof(*b));
    int rc = b == NULL ? -ENOMEM : 0, conflicts = 0, drained = 0;
    if (!valid_function(function))
        drained = 1; /* no task of it can exist */
    while (rc == 0 && !drained && l->n_tasks < max && conflicts < CLAIM_CONFLICTS) {
        int conflict = 0;
        rc = claim_chunk(ts, b, function, max - (uint32_t)l->n_tasks, lease_ms, now_ms, l, &conflict, &drained);
        conflicts += conflict;
        if (conflict)
            drained = 0; /* the queue changed: read it again */
    }
    free(b);
    if (rc != 0 && l->n_tasks > 0) /* claimed ones stay claimed: hand them out */
        rc = 0;
    return rc;
}

/* ---- expiry and purge ------------------------------------------------------------ */

static int etcd_expire(disc_tasks_t *ts, int64_t now_ms, disc_lapsed_t **v, size_t *n)
{
    ekey_t from, end;
    char h[17];
    etcdc_range_t r;
    hex16(h, now_ms);
    if (mkkey(ts, &from, "lease/") != 0 || mkkey(ts, &end, "lease/%s", h) != 0)
        return -EINVAL;
    int rc = etcdc_range(ts->etcd->c, from.k, from.n, end.k, end.n, 0, SCAN_PAGE, ETCDC_KEYS_ONLY, &r);
    if (rc != 0)
        return etcd_fail("range", rc);
    if (r.n > 0 && (*v = calloc(r.n, sizeof(**v))) == NULL)
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < r.n; i++) {
        const char *id = (const char *)r.kvs[i].key + from.n + 17; /* <lease>/<id> */
        Faas__Task *t = NULL;
        disc_row_t x = {0};
        if (r.kvs[i].klen != from.n + 17 + DISC_TASK_ID_LEN)
            continue;
        rc = etcd_change(ts, id, disc_tasks_apply_lapse, NULL, now_ms, &t, &x);
        if (rc == 0) {
            snprintf((*v)[*n].id, sizeof((*v)[0].id), "%s", id);
            (*v)[*n].status = t->status;
            (*v)[(*n)++].attempts = t->attempts;
        }
        if (rc == -ESTALE || rc == -ENOENT) /* another discovery got there first */
            rc = 0;
        if (t)
            faas__task__free_unpacked(t, NULL);
    }
    etcdc_range_free(&r);
    return rc;
}

/* Deletes one task whose purge key is kv, if the key is still there. */
static void stage_purge(disc_tasks_t *ts, txb_t *b, const etcdc_kv_t *kv, size_t plen)
{
    ekey_t k, st;
    const char *id = (const char *)kv->key + plen + 17; /* <purge_after>/<id> */
    if (kv->klen >= sizeof(k.k))
        return;
    memcpy(k.k, kv->key, kv->klen);
    k.n = kv->klen;
    txb_cmp(b, ETCDC_CMP_VERSION, ETCDC_GT, &k, 0);
    txb_op(b, ETCDC_OP_DELETE, &k, NULL, 0, 0);
    if (kv->klen != plen + 17 + DISC_TASK_ID_LEN)
        return; /* not one of ours: only the key goes */
    if (kv->vlen < sizeof(st.k)) {
        memcpy(st.k, kv->val, kv->vlen);
        st.n = kv->vlen;
        txb_op(b, ETCDC_OP_DELETE, &st, NULL, 0, 0);
    }
    static const char *const kinds[] = {"tasks", "req", "results"};
    for (size_t i = 0; i < 3; i++)
        if (mkkey(ts, &k, "%s/%s", kinds[i], id) == 0)
            txb_op(b, ETCDC_OP_DELETE, &k, NULL, 0, 0);
}

#define PURGE_CHUNK 24 /* 5 deletes a task */

/* Purges kvs[from, to): one transaction, or one a task when another changed one. */
static int purge_chunk(disc_tasks_t *ts, txb_t *b, const etcdc_range_t *r, size_t from, size_t to, size_t plen)
{
    int ok = 0, rc = 0, n = 0;
    for (size_t i = from; i < to; i++)
        stage_purge(ts, b, &r->kvs[i], plen);
    rc = txb_run(ts, b, &ok, NULL, NULL);
    txb_reset(b);
    if (rc != 0 || ok)
        return rc != 0 ? rc : (int)(to - from);
    for (size_t i = from; i < to; i++) {
        stage_purge(ts, b, &r->kvs[i], plen);
        rc = txb_run(ts, b, &ok, NULL, NULL);
        txb_reset(b);
        if (rc != 0)
            return rc;
        n += ok;
    }
    return n;
}

static int etcd_purge(disc_tasks_t *ts, int64_t now_ms)
{
    ekey_t from, end;
    char h[17];
    int total = 0, rc = 0;
    hex16(h, now_ms);
    if (mkkey(ts, &from, "purge/") != 0 || mkkey(ts, &end, "purge/%s", h) != 0)
        return -EINVAL;
    txb_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    for (int more = 1; more && rc >= 0;) {
        etcdc_range_t r;
        if ((rc = etcdc_range(ts->etcd->c, from.k, from.n, end.k, end.n, 0, 480, 0, &r)) != 0) {
            rc = etcd_fail("range", rc);
            break;
        }
        more = r.more && r.n > 0;
        for (size_t i = 0; rc >= 0 && i < r.n; i += PURGE_CHUNK) {
            size_t to = i + PURGE_CHUNK < r.n ? i + PURGE_CHUNK : r.n;
            if ((rc = purge_chunk(ts, b, &r, i, to, from.n)) > 0)
                total += rc;
        }
        etcdc_range_free(&r); /* purged keys are gone: the next range starts at from again */
    }
    free(b);
    return rc < 0 ? rc : total;
}

/* ---- callbacks ------------------------------------------------------------------- */

/* Stages the claim of one due callback; 1 staged, 0 not due (any more), negative. */
static int stage_cb(disc_tasks_t *ts, txb_t *b, const char *id, uint32_t lease_ms, int64_t now_ms, Faas__Task **t,
                    uint64_t *size)
{
    disc_row_t x = {0};
    idx_t old;
    int64_t mod = 0;
    ekey_t k;
    int rc = load_rev(ts, id, t, &x, &mod);
    if (rc == -ENOENT)
        return 0;
    if (rc == 0 && (!pending_cb(*t) || x.cb_due > now_ms || x.cb_lease > now_ms))
        rc = 1;
    *size = rc == 0 ? (*t)->result_size : 0;
    if (rc == 0 && (rc = index_of(ts, *t, &x, &old)) == 0) {
        disc_tasks_lease_callback(*t, &x, lease_ms, now_ms);
        rc = stage_save(ts, b, &old, *t, &x, mod);
    }
    if (rc == 0 && (rc = mkkey(ts, &k, "results/%s", id)) == 0)
        txb_op(b, ETCDC_OP_GET, &k, NULL, 0, 0);
    return rc == 1 ? 0 : rc == 0 ? 1 : rc;
}

/* Claims one callback in a transaction of its own: 1 claimed, 0 skipped. */
static int claim_cb(disc_tasks_t *ts, txb_t *b, const char *id, uint32_t lease_ms, int64_t now_ms, uint64_t *bytes,
                    Faas__CallbackDueList *l)
{
    Faas__Task *t = NULL;
    uint64_t size = 0;
    etcdc_range_t *gets = NULL;
    size_t ngets = 0;
    int ok = 0, rc = stage_cb(ts, b, id, lease_ms, now_ms, &t, &size);
    if (rc == 1 && l->n_due > 0 && *bytes + size > DISC_CB_CLAIM_MAX_BYTES)
        rc = 2; /* the reply is full: always one, however large */
    if (rc == 1 && (rc = txb_run(ts, b, &ok, &gets, &ngets)) == 0)
        rc = ok ? 1 : 0;
    txb_reset(b);
    Faas__CallbackDue *d = rc == 1 ? disc_tasks_new_due(t) : NULL;
    if (rc == 1 && d == NULL)
        rc = -ENOMEM;
    if (d != NULL) {
        t = NULL;
        if (ngets == 1 && gets[0].n == 1) /* none: ended without a response, the POST says so */
            d->result = faas__task_result__unpack(NULL, gets[0].kvs[0].vlen, gets[0].kvs[0].val);
        l->due[l->n_due++] = d;
        *bytes += size;
    }
    free_gets(gets, ngets);
    if (t)
        faas__task__free_unpacked(t, NULL);
    return rc;
}

static int etcd_claim_callbacks(disc_tasks_t *ts, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                                Faas__CallbackDueList *l)
{
    ekey_t from, end;
    char h[17];
    etcdc_range_t r;
    uint64_t bytes = 0;
    hex16(h, now_ms + 1);
    if (mkkey(ts, &from, "cb/") != 0 || mkkey(ts, &end, "cb/%s", h) != 0)
        return -EINVAL;
    int rc = etcdc_range(ts->etcd->c, from.k, from.n, end.k, end.n, 0, SCAN_PAGE, ETCDC_KEYS_ONLY, &r);
    if (rc != 0)
        return etcd_fail("range", rc);
    txb_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        rc = -ENOMEM;
    for (size_t i = 0; rc >= 0 && rc != 2 && i < r.n && l->n_due < max; i++) {
        if (r.kvs[i].klen == from.n + 17 + DISC_TASK_ID_LEN)
            rc = claim_cb(ts, b, (const char *)r.kvs[i].key + from.n + 17, lease_ms, now_ms, &bytes, l);
    }
    free(b);
    etcdc_range_free(&r);
    return rc < 0 ? rc : 0;
}

/* ---- metrics --------------------------------------------------------------------- */

/* Calls fn on every key of [prefix + from, prefix-end), keys only, a page at a time. */
static int scan_keys(disc_tasks_t *ts, const char *sub, void (*fn)(void *ud, const char *rest, size_t n), void *ud)
{
    ekey_t from, end;
    if (mkkey(ts, &from, "%s", sub) != 0)
        return -EINVAL;
    size_t plen = from.n;
    end.n = etcdc_prefix_end((const uint8_t *)from.k, plen, (uint8_t *)end.k, sizeof(end.k));
    for (int more = 1; more;) {
        etcdc_range_t r;
        int rc = etcdc_range(ts->etcd->c, from.k, from.n, end.k, end.n, 0, SCAN_PAGE, ETCDC_KEYS_ONLY, &r);
        if (rc != 0)
            return etcd_fail("range", rc);
        for (size_t i = 0; i < r.n; i++)
            fn(ud, (const char *)r.kvs[i].key + plen, r.kvs[i].klen - plen);
        more = r.more && r.n > 0 && r.kvs[r.n - 1].klen + 1 < sizeof(from.k);
        if (more) {
            memcpy(from.k, r.kvs[r.n - 1].key, r.kvs[r.n - 1].klen);
            from.n = r.kvs[r.n - 1].klen;
            from.k[from.n++] = '\0';
        }
        etcdc_range_free(&r);
    }
    return 0;
}

static const char *const status_names[5] = {"queued", "running", "succeeded", "failed", "cancelled"};

typedef struct {
    FILE *out;
    char fn[64];
    uint64_t c[5];
    int have;
    int64_t now_ms, oldest;
} mstate_t;

static void counts_flush(mstate_t *m)
{
    if (m->have)
        for (int s = 0; s < 5; s++)
            fprintf(m->out, "faas_tasks{function=\"%s\",status=\"%s\"} %llu\n", m->fn, status_names[s],
                    (unsigned long long)m->c[s]);
    memset(m->c, 0, sizeof(m->c));
    m->have = 0;
}

/* st/ keys come by function: a line per status as each function ends. */
static void count_key(void *ud, const char *rest, size_t n)
{
    mstate_t *m = ud;
    const char *slash = memchr(rest, '/', n);
    size_t fl = slash ? (size_t)(slash - rest) : 0;
    if (slash == NULL || fl >= sizeof(m->fn) || (size_t)(slash - rest) + 2 >= n)
        return;
    if (!m->have || strncmp(m->fn, rest, fl) != 0 || m->fn[fl] != '\0') {
        counts_flush(m);
        memcpy(m->fn, rest, fl);
        m->fn[fl] = '\0';
        m->have = 1;
    }
    unsigned st = (unsigned)(slash[1] - '0');
    if (st < 5)
        m->c[st]++;
}

static void oldest_flush(mstate_t *m)
{
    if (m->have) {
        int64_t age = m->now_ms - m->oldest;
        fprintf(m->out, "faas_task_queue_oldest_seconds{function=\"%s\"} %.3f\n", m->fn,
                age > 0 ? (double)age / 1000.0 : 0.0);
    }
    m->have = 0;
}

/* queue/<fn>/<not_before>/<created>/<id>: the smallest created per function. */
static void oldest_key(void *ud, const char *rest, size_t n)
{
    mstate_t *m = ud;
    const char *slash = memchr(rest, '/', n);
    size_t fl = slash ? (size_t)(slash - rest) : 0;
    unsigned long long nb, created;
    if (slash == NULL || fl >= sizeof(m->fn) || sscanf(slash + 1, "%16llx/%16llx/", &nb, &created) != 2)
        return;
    if (!m->have || strncmp(m->fn, rest, fl) != 0 || m->fn[fl] != '\0') {
        oldest_flush(m);
        memcpy(m->fn, rest, fl);
        m->fn[fl] = '\0';
        m->have = 1;
        m->oldest = (int64_t)created;
    }
    if ((int64_t)created < m->oldest)
        m->oldest = (int64_t)created;
}

/* Reads every task's index key: fine for the thousands a scrape should see; the
 * figures are the whole cluster's, whichever discovery is scraped. */
static void etcd_metrics(disc_tasks_t *ts, FILE *out, int64_t now_ms)
{
    mstate_t m = {.out = out, .now_ms = now_ms};
    fputs("# HELP faas_tasks Async tasks in the store, by function and status.\n# TYPE faas_tasks gauge\n", out);
    if (scan_keys(ts, "st/", count_key, &m) == 0)
        counts_flush(&m);
    m = (mstate_t){.out = out, .now_ms = now_ms};
    fputs("# HELP faas_task_queue_oldest_seconds Age of the oldest queued task, by function.\n"
          "# TYPE faas_task_queue_oldest_seconds gauge\n",
          out);
    if (scan_keys(ts, "queue/", oldest_key, &m) == 0)
        oldest_flush(&m);
}

/* ---- opening --------------------------------------------------------------------- */

static void etcd_close(disc_tasks_t *ts)
{
    free(ts->etcd); /* the client is the caller's */
    ts->etcd = NULL;
}

static const disc_task_ops_t etcd_ops = {
    .close = etcd_close,
    .commit_batch = etcd_commit_batch,
    .load = etcd_load,
    .load_result = etcd_load_result,
    .list = etcd_list,
    .change = etcd_change,
    .claim = etcd_claim,
    .expire = etcd_expire,
    .purge = etcd_purge,
    .claim_callbacks = etcd_claim_callbacks,
    .metrics = etcd_metrics,
};

disc_tasks_t *disc_task_open_etcd(etcdc_t *c, const char *prefix, const char **err)
{
    if (c == NULL || prefix == NULL || prefix[0] == '\0' || strlen(prefix) > DISC_ETCD_PREFIX_MAX) {
        *err = "the etcd prefix must be 1-" DISC_STR(DISC_ETCD_PREFIX_MAX) " bytes";
        return NULL;
    }
    disc_tasks_t *ts = disc_tasks_alloc();
    if (ts == NULL || (ts->etcd = calloc(1, sizeof(*ts->etcd))) == NULL) {
        disc_task_close(ts);
        *err = "out of memory";
        return NULL;
    }
    ts->etcd->c = c;
    snprintf(ts->etcd->prefix, sizeof(ts->etcd->prefix), "%sasync/", prefix); /* a subtree of its own */
    ts->ops = &etcd_ops;
    ts->max_result_cap = RESULT_CAP;
    ts->max_request_cap = REQUEST_CAP;
    if (disc_tasks_start(ts, err) != 0) {
        disc_task_close(ts);
        return NULL;
    }
    return ts;
}
