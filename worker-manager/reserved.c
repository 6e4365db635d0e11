/* worker-manager/reserved.c - reserved instances (FunctionSpec.reserved, docs/scaling.md).
 *
 * Every worker manager watches discovery's functions and workers (watch.c) and keeps, for each function with reserved >
 * 0, its share of the count: the share is computed from the sorted ids of the live workers alone, so every worker
 * manager reaches the same split without talking to the others and one alone keeps all N.
 *
 * The pod thread reconciles (wm_reserved_reconcile) after a watch event and on a 1 s
 * tick, so a reserved instance that died is replaced within a second: it starts the
 * missing ones through the same path as Acquire, stops the extra ones, and drains the
 * reserved instances of an old version once the new version's are ready. The dispatcher
 * never releases a reserved instance for idleness, and Release refuses them here too. */
#define WM_STATE
#include "worker-manager/internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/spec.h"
#include "common/util.h"

/* How often the pod thread checks its reserved instances without a watch event: the
 * bound on how long a dead reserved instance stays missing. Also the pause between two
 * rounds of starts for one function, so a function whose cold start fails is retried
 * once a second, not in a loop. */
#define RESV_TICK_US 1000000ull

/* ---- pure: this worker's share ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

uint32_t wm_reserved_share(const char *const *workers, size_t n, const char *me, uint32_t total)
{
    if (n == 0 || total == 0)
        return 0;
    const char **v = malloc(n * sizeof(*v));
    if (v == NULL)
        return 0;
    memcpy(v, workers, n * sizeof(*v));
    qsort(v, n, sizeof(*v), cmp_str);
    size_t idx = n, live = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(v[i], v[i - 1]) == 0)
            continue; /* a duplicate id counts once */
        if (strcmp(v[i], me) == 0)
            idx = live;
        live++;
    }
    free(v);
    if (idx == n)
        return 0;
    return (uint32_t)(total / live + (idx < total % live));
}

/* ---- what the watch knows (watch thread writes, pod thread reads, under mu) ---- */

typedef struct {
    Faas__FunctionSpec *spec; /* the current version (unpacked, owned) */
    uint64_t last_start_us;   /* pod thread: when reserved instances were last started */
} resv_fn_t;

static struct {
    pthread_mutex_t mu;
    resv_fn_t *fns;
    size_t n_fns;
    char **workers;
    size_t n_workers;
    int synced; /* a SNAPSHOT_END was seen: an absent function is really gone */
    int dirty;  /* changed since the pod thread last reconciled */
    uint64_t next_us;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER};

static resv_fn_t *fn_find(const char *name)
{
    for (size_t i = 0; i < R.n_fns; i++)
        if (strcmp(R.fns[i].spec->name, name) == 0)
            return &R.fns[i];
    return NULL;
}

static void fn_put(Faas__FunctionSpec *s)
{
    resv_fn_t *f = fn_find(s->name);
    if (f != NULL) {
        faas__function_spec__free_unpacked(f->spec, NULL);
        f->spec = s;
        return;
    }
    resv_fn_t *nf = realloc(R.fns, (R.n_fns + 1) * sizeof(*nf));
    if (nf == NULL) {
        faas__function_spec__free_unpacked(s, NULL);
        return;
    }
    R.fns = nf;
    R.fns[R.n_fns++] = (resv_fn_t){s, 0};
}

static void fn_delete(const char *name)
{
    resv_fn_t *f = fn_find(name);
    if (f == NULL)
        return;
    faas__function_spec__free_unpacked(f->spec, NULL);
    *f = R.fns[--R.n_fns];
}

static void worker_put(const char *id)
{
    for (size_t i = 0; i < R.n_workers; i++)
        if (strcmp(R.workers[i], id) == 0)
            return;
    char **nw = realloc(R.workers, (R.n_workers + 1) * sizeof(*nw));
    char *d = strdup(id);
    if (nw != NULL)
        R.workers = nw;
    if (nw == NULL || d == NULL) {
        free(d);
        return;
    }
    R.workers[R.n_workers++] = d;
}

static void worker_delete(const char *id)
{
    for (size_t i = 0; i < R.n_workers; i++)
        if (strcmp(R.workers[i], id) == 0) {
            free(R.workers[i]);
            R.workers[i] = R.workers[--R.n_workers];
            return;
        }
}

/* A fresh stream starts with a snapshot of everything: forget what the last one said. */
static void forget_all(void)
{
    while (R.n_fns > 0)
        faas__function_spec__free_unpacked(R.fns[--R.n_fns].spec, NULL);
    while (R.n_workers > 0)
        free(R.workers[--R.n_workers]);
    R.synced = 0;
}

/* Copies a spec out of an event that is about to be freed. */
static Faas__FunctionSpec *spec_dup(const Faas__FunctionSpec *s)
{
    size_t len;
    uint8_t *buf = faas_pb_pack((const ProtobufCMessage *)&s->base, &len);
    Faas__FunctionSpec *d = buf ? faas__function_spec__unpack(NULL, len, buf) : NULL;
    free(buf);
    return d;
}

static void apply_event(const Faas__WatchEvent *e)
{
    Faas__FunctionSpec *s;
    switch (e->type) {
    case FAAS__WATCH_EVENT__TYPE__SNAPSHOT_END:
        R.synced = 1;
        break;
    case FAAS__WATCH_EVENT__TYPE__FUNCTION_PUT:
        if (e->function != NULL && e->function->name != NULL && (s = spec_dup(e->function)) != NULL)
            fn_put(s);
        break;
    case FAAS__WATCH_EVENT__TYPE__FUNCTION_DELETE:
        if (e->function != NULL && e->function->name != NULL)
            fn_delete(e->function->name);
        break;
    case FAAS__WATCH_EVENT__TYPE__WORKER_PUT:
        if (e->worker != NULL && e->worker->id != NULL)
            worker_put(e->worker->id);
        break;
    case FAAS__WATCH_EVENT__TYPE__WORKER_DELETE:
        if (e->worker != NULL && e->worker->id != NULL)
            worker_delete(e->worker->id);
        break;
    default:
        return;
    }
    R.dirty = 1;
}

/* ---- events from the worker manager's watch (watch.c) ---- */

void wm_reserved_forget(void)
{
    pthread_mutex_lock(&R.mu);
    forget_all();
    pthread_mutex_unlock(&R.mu);
}

void wm_reserved_on_event(wm_t *wm, const Faas__WatchEvent *e)
{
    pthread_mutex_lock(&R.mu);
    apply_event(e);
    /* during the snapshot the picture is partial: reconcile once it is whole */
    int wake = R.synced && R.dirty;
    pthread_mutex_unlock(&R.mu);
    if (wake) {
        uint64_t one = 1;
        (void)!write(wm->efd, &one, sizeof(one));
    }
}

/* ---- the pod thread's reconcile ---- */

/* Counts fn's reserved instances of version v: ready, and on their way (starting pods
 * and acquisitions waiting for code or a pod). */
static void count_reserved(wm_t *wm, const char *fn, uint64_t v, uint32_t *ready, uint32_t *coming)
{
    *ready = *coming = 0;
    for (wm_pod_t *p = wm->pods; p; p = p->next) {
        if (!p->reserved || p->version != v || strcmp(p->function, fn) != 0)
            continue;
        *ready += p->state == POD_READY;
        *coming += p->state == POD_SPECIALIZING;
    }
    wm_acq_t *lists[] = {wm->waiting_code, wm->waiting_pod};
    for (size_t i = 0; i < 2; i++)
        for (wm_acq_t *a = lists[i]; a; a = a->next)
            *coming += a->reserved && a->req->spec->version == v && strcmp(a->req->spec->name, fn) == 0;
}

/* Starts one reserved instance of s through the path Acquire takes. */
static int start_one(wm_t *wm, const Faas__FunctionSpec *s)
{
    Faas__AcquireRequest ar = FAAS__ACQUIRE_REQUEST__INIT;
    ar.spec = (Faas__FunctionSpec *)s;
    ar.request_id = "reserved";
    size_t len;
    uint8_t *buf = faas_pb_pack(&ar.base, &len);
    wm_acq_t *a = calloc(1, sizeof(*a));
    if (buf == NULL || a == NULL || (a->req = faas__acquire_request__unpack(NULL, len, buf)) == NULL) {
        free(buf);
        free(a);
        return -1;
    }
    free(buf);
    a->reserved = 1;
    a->t0 = faas_now_us();
    uint32_t tmo = s->cold_start_timeout_ms ? s->cold_start_timeout_ms : FAAS_SPEC_DEFAULT_COLD_START_MS;
    a->deadline_us = a->t0 + (uint64_t)tmo * 1000u;
    wm_acquire_own(wm, a);
    return 0;
}

/* Stops up to n ready reserved instances of fn for which old(p) holds. */
static void stop_some(wm_t *wm, const char *fn, uint32_t n, int (*pick)(const wm_pod_t *, uint64_t), uint64_t v,
                      const char *why)
{
    for (wm_pod_t *p = wm->pods, *next; p && n > 0; p = next) {
        next = p->next;
        if (!p->reserved || p->state != POD_READY || strcmp(p->function, fn) != 0 || !pick(p, v))
            continue;
        FAAS_INFO("event=reserved_stop fn=%s instance=%s version=%llu reason=%s", fn, p->inst_id,
                  (unsigned long long)p->version, why);
        wm_pod_stop(wm, p);
        n--;
    }
}

static int is_version(const wm_pod_t *p, uint64_t v)
{
    return p->version == v;
}

static int not_version(const wm_pod_t *p, uint64_t v)
{
    return p->version != v;
}

static void reconcile_fn(wm_t *wm, resv_fn_t *f, uint32_t share, uint64_t now)
{
    const Faas__FunctionSpec *s = f->spec;
    uint32_t ready, coming;
    count_reserved(wm, s->name, s->version, &ready, &coming);
    if (ready + coming < share && now >= f->last_start_us + RESV_TICK_US) {
        FAAS_INFO("event=reserved_start fn=%s version=%llu ready=%u starting=%u share=%u", s->name,
                  (unsigned long long)s->version, ready, coming, share - ready - coming);
        for (uint32_t k = ready + coming; k < share; k++)
            if (start_one(wm, s) != 0)
                break;
        f->last_start_us = now;
    }
    if (ready > share)
        stop_some(wm, s->name, ready - share, is_version, s->version, "over-share");
    /* the old version's go once the new version's can take their place */
    if (ready >= share)
        stop_some(wm, s->name, UINT32_MAX, not_version, s->version, "old-version");
}

/* Reserved instances of functions discovery no longer has. */
static void stop_orphans(wm_t *wm)
{
    for (wm_pod_t *p = wm->pods, *next; p; p = next) {
        next = p->next;
        if (p->reserved && p->state == POD_READY && fn_find(p->function) == NULL) {
            FAAS_INFO("event=reserved_stop fn=%s instance=%s reason=deleted", p->function, p->inst_id);
            wm_pod_stop(wm, p);
        }
    }
}

int wm_reserved_needed_images(char (**out)[65], size_t *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&R.mu);
    int rc = R.synced ? 0 : -1;
    if (rc == 0 && R.n_fns > 0 && (*out = calloc(R.n_fns, sizeof(**out))) == NULL)
        rc = -1;
    for (size_t i = 0; rc == 0 && i < R.n_fns; i++) {
        const char *hex = wm_image_hex(R.fns[i].spec->image);
        if (hex != NULL)
            wm_fmt((*out)[(*n)++], 65, "%s", hex);
    }
    pthread_mutex_unlock(&R.mu);
    return rc;
}

uint64_t wm_reserved_reconcile(wm_t *wm, uint64_t now)
{
    pthread_mutex_lock(&R.mu);
    /* before the first snapshot, or while this worker's lease is not seen, the picture
     * is not to be acted on: it could stop reserved instances that are still wanted */
    int mine = 0;
    for (size_t i = 0; i < R.n_workers && !mine; i++)
        mine = strcmp(R.workers[i], wm->cfg->id) == 0;
    if (wm->stop || !R.synced || !mine || (!R.dirty && now < R.next_us)) {
        uint64_t next = R.next_us > now ? R.next_us : now + RESV_TICK_US;
        pthread_mutex_unlock(&R.mu);
        return next;
    }
    R.dirty = 0;
    R.next_us = now + RESV_TICK_US;
    for (size_t i = 0; i < R.n_fns; i++) {
        resv_fn_t *f = &R.fns[i];
        uint32_t share = wm_reserved_share((const char *const *)R.workers, R.n_workers, wm->cfg->id, f->spec->reserved);
        reconcile_fn(wm, f, share, now);
    }
    stop_orphans(wm);
    uint64_t next = R.next_us;
    pthread_mutex_unlock(&R.mu);
    return next;
}
