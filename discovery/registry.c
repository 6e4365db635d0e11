/* discovery/registry.c - soft state: workers with leases, their instances, a cache of
 * deployed specs, and the watchers every change is pushed to.
 *
 * One mutex guards everything. Events are packed and handed to the sinks while it
 * is held, so every watcher sees changes in revision order and a new watcher's
 * snapshot is consistent with the stream that follows it; sinks only queue
 * (faas_rpc_send never blocks). Each change (one heartbeat, one expiry pass, a
 * snapshot) ends with a flush (sink with NULL), so its events can leave in one
 * write per watcher. Logging happens after unlocking. */
#include "discovery/discovery.h"
#include "discovery/internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

typedef struct {
    Faas__Instance *msg; /* owned */
    uint8_t *packed;     /* to tell a changed instance from the same one */
    size_t len;
} inst_t;

typedef struct {
    Faas__Worker *msg; /* owned */
    uint8_t *packed;
    size_t len;
    inst_t *insts; /* sorted by id */
    size_t n_insts;
    Faas__FunctionError **errs; /* owned: its functions' last cold start failures */
    size_t n_errs;
    uint64_t expires_ms;
} worker_t;

typedef struct {
    int64_t id;
    int want;
    int dead;
    int unflushed; /* got events since its last flush */
    disc_sink_fn sink;
    void *ctx;
} sub_t;

struct disc_registry {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* wakes the reaper: stop, or a lease ending sooner */
    worker_t **workers;
    size_t n_workers;
    Faas__FunctionSpec **fns;
    size_t n_fns;
    sub_t *subs;
    size_t n_subs;
    int64_t next_sub;
    uint64_t revision;
    size_t n_instances;
    pthread_t reaper;
    int reaper_running, stopping;
};

disc_registry_t *disc_registry_new(void)
{
    disc_registry_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

static void inst_clear(inst_t *in)
{
    faas__instance__free_unpacked(in->msg, NULL);
    free(in->packed);
}

static void free_errs(Faas__FunctionError **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        faas__function_error__free_unpacked(v[i], NULL);
    free(v);
}

static void worker_free(worker_t *w)
{
    for (size_t i = 0; i < w->n_insts; i++)
        inst_clear(&w->insts[i]);
    free(w->insts);
    free_errs(w->errs, w->n_errs);
    faas__worker__free_unpacked(w->msg, NULL);
    free(w->packed);
    free(w);
}

void disc_registry_free(disc_registry_t *r)
{
    if (r == NULL)
        return;
    disc_registry_stop_reaper(r);
    for (size_t i = 0; i < r->n_workers; i++)
        worker_free(r->workers[i]);
    free(r->workers);
    for (size_t i = 0; i < r->n_fns; i++)
        faas__function_spec__free_unpacked(r->fns[i], NULL);
    free(r->fns);
    free(r->subs);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* ---- fan-out -------------------------------------------------------------------- */

static int want_of(Faas__WatchEvent__Type t)
{
    switch (t) {
    case FAAS__WATCH_EVENT__TYPE__FUNCTION_PUT:
    case FAAS__WATCH_EVENT__TYPE__FUNCTION_DELETE:
        return DISC_WATCH_FUNCTIONS;
    case FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT:
    case FAAS__WATCH_EVENT__TYPE__INSTANCE_DELETE:
        return DISC_WATCH_INSTANCES;
    case FAAS__WATCH_EVENT__TYPE__WORKER_PUT:
    case FAAS__WATCH_EVENT__TYPE__WORKER_DELETE:
        return DISC_WATCH_WORKERS;
    case FAAS__WATCH_EVENT__TYPE__TASK_CANCEL:
        return DISC_WATCH_TASK_CANCELS;
    default:
        return DISC_WATCH_FUNCTIONS | DISC_WATCH_INSTANCES | DISC_WATCH_WORKERS | DISC_WATCH_TASK_CANCELS;
    }
}

static uint8_t *pack_event(Faas__WatchEvent__Type type, const void *obj, uint64_t rev, size_t *len)
{
    Faas__WatchEvent ev = FAAS__WATCH_EVENT__INIT;
    ev.type = type;
    ev.revision = rev;
    int want = want_of(type);
    if (want == DISC_WATCH_FUNCTIONS)
        ev.function = (Faas__FunctionSpec *)obj;
    else if (want == DISC_WATCH_INSTANCES)
        ev.instance = (Faas__Instance *)obj;
    else if (want == DISC_WATCH_WORKERS)
        ev.worker = (Faas__Worker *)obj;
    else if (want == DISC_WATCH_TASK_CANCELS)
        ev.task = (Faas__Task *)obj;
    return faas_pb_pack(&ev.base, len);
}

static void drop_dead_subs(disc_registry_t *r)
{
    size_t o = 0;
    for (size_t i = 0; i < r->n_subs; i++)
        if (!r->subs[i].dead)
            r->subs[o++] = r->subs[i];
    r->n_subs = o;
}

/* Every interested watcher gets the event, at the current revision. */
static void emit_now(disc_registry_t *r, Faas__WatchEvent__Type type, const void *obj)
{
    int want = want_of(type), gone = 0;
    size_t len;
    uint8_t *buf = NULL;
    for (size_t i = 0; i < r->n_subs; i++) {
        sub_t *s = &r->subs[i];
        if (s->dead || !(s->want & want))
            continue;
        if (buf == NULL && (buf = pack_event(type, obj, r->revision, &len)) == NULL)
            return;
        if (s->sink(s->ctx, buf, len) != 0)
            gone = s->dead = 1;
        else
            s->unflushed = 1;
    }
    free(buf);
    if (gone)
        drop_dead_subs(r);
}

/* A change: the revision grows and every interested watcher gets the event. */
static void emit(disc_registry_t *r, Faas__WatchEvent__Type type, const void *obj)
{
    r->revision++;
    emit_now(r, type, obj);
}

/* The end of one change: every watcher that got part of it sends it now. */
static void flush_subs(disc_registry_t *r)
{
    int gone = 0;
    for (size_t i = 0; i < r->n_subs; i++) {
        sub_t *s = &r->subs[i];
        if (s->dead || !s->unflushed)
            continue;
        s->unflushed = 0;
        if (s->sink(s->ctx, NULL, 0) != 0)
            gone = s->dead = 1;
    }
    if (gone)
        drop_dead_subs(r);
}

/* One snapshot event to one new watcher; the revision does not move. */
static int send_one(disc_registry_t *r, sub_t *s, Faas__WatchEvent__Type type, const void *obj)
{
    size_t len;
    uint8_t *buf = pack_event(type, obj, r->revision, &len);
    if (buf == NULL)
        return -ENOMEM;
    int rc = s->sink(s->ctx, buf, len);
    free(buf);
    return rc == 0 ? 0 : -EPIPE;
}

/* ---- workers and instances ----------------------------------------------------- */

static worker_t *find_worker(disc_registry_t *r, const char *id, size_t *idx)
{
    for (size_t i = 0; i < r->n_workers; i++)
        if (strcmp(r->workers[i]->msg->id, id) == 0) {
            if (idx)
                *idx = i;
            return r->workers[i];
        }
    return NULL;
}

/* An incoming instance, packed with its worker_id filled in, before it is kept. */
typedef struct {
    const char *id;
    uint8_t *packed;
    size_t len;
} in_inst_t;

static int cmp_in(const void *a, const void *b)
{
    return strcmp(((const in_inst_t *)a)->id, ((const in_inst_t *)b)->id);
}

static void free_in(in_inst_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].packed);
    free(v);
}

/* Validates and packs the renewal's instances, sorted by id. */
static in_inst_t *prepare_instances(const Faas__LeaseRenewal *lr, const char *wid, const char **err)
{
    in_inst_t *v = calloc(lr->n_instances ? lr->n_instances : 1, sizeof(*v));
    if (v == NULL) {
        *err = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < lr->n_instances; i++) {
        const Faas__Instance *src = lr->instances[i];
        if (src == NULL || src->id == NULL || src->id[0] == '\0' || src->function == NULL ||
            src->function[0] == '\0') {
            *err = "every instance needs an id and a function";
            goto fail;
        }
        Faas__Instance copy = *src;
        copy.worker_id = (char *)wid; /* the lease owner is authoritative */
        v[i].id = src->id;
        if ((v[i].packed = faas_pb_pack(&copy.base, &v[i].len)) == NULL) {
            *err = "out of memory";
            goto fail;
        }
    }
    qsort(v, lr->n_instances, sizeof(*v), cmp_in);
    for (size_t i = 1; i < lr->n_instances; i++)
        if (strcmp(v[i - 1].id, v[i].id) == 0) {
            *err = "an instance id appears twice in one renewal";
            goto fail;
        }
    return v;
fail:
    free_in(v, lr->n_instances);
    return NULL;
}

static int same_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    return al == bl && memcmp(a, b, al) == 0;
}

/* Merges the sorted old and new sets, emitting deletes and puts; takes the packed buffers. */
static int replace_instances(disc_registry_t *r, worker_t *w, in_inst_t *in, size_t n)
{
    inst_t *nv = calloc(n ? n : 1, sizeof(*nv));
    if (nv == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        nv[i].msg = faas__instance__unpack(NULL, in[i].len, in[i].packed);
        if (nv[i].msg == NULL) {
            for (size_t j = 0; j < i; j++)
                inst_clear(&nv[j]);
            free(nv);
            return -ENOMEM;
        }
        nv[i].packed = in[i].packed;
        nv[i].len = in[i].len;
        in[i].packed = NULL;
    }
    size_t a = 0, b = 0;
    while (a < w->n_insts || b < n) {
        int c = a == w->n_insts ? 1 : b == n ? -1 : strcmp(w->insts[a].msg->id, nv[b].msg->id);
        if (c < 0) {
            emit(r, FAAS__WATCH_EVENT__TYPE__INSTANCE_DELETE, w->insts[a].msg);
            a++;
        } else if (c > 0) {
            emit(r, FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT, nv[b].msg);
            b++;
        } else {
            if (!same_bytes(w->insts[a].packed, w->insts[a].len, nv[b].packed, nv[b].len))
                emit(r, FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT, nv[b].msg);
            a++, b++;
        }
    }
    for (size_t i = 0; i < w->n_insts; i++)
        inst_clear(&w->insts[i]);
    free(w->insts);
    r->n_instances = r->n_instances - w->n_insts + n;
    w->insts = nv;
    w->n_insts = n;
    return 0;
}

/* Adds or updates the worker record; *is_new tells the caller to log it. */
static worker_t *upsert_worker(disc_registry_t *r, const Faas__Worker *src, int *is_new)
{
    size_t len;
    uint8_t *packed = faas_pb_pack(&src->base, &len);
    if (packed == NULL)
        return NULL;
    worker_t *w = find_worker(r, src->id, NULL);
    *is_new = w == NULL;
    if (w != NULL && same_bytes(w->packed, w->len, packed, len)) {
        free(packed);
        return w;
    }
    Faas__Worker *msg = faas__worker__unpack(NULL, len, packed);
    worker_t **nws = w ? NULL : realloc(r->workers, (r->n_workers + 1) * sizeof(*nws));
    if (msg == NULL || (w == NULL && (nws == NULL || (w = calloc(1, sizeof(*w))) == NULL))) {
        if (nws)
            r->workers = nws;
        faas__worker__free_unpacked(msg, NULL);
        free(packed);
        return NULL;
    }
    if (*is_new) {
        r->workers = nws;
        r->workers[r->n_workers++] = w;
    }
    faas__worker__free_unpacked(w->msg, NULL);
    free(w->packed);
    w->msg = msg;
    w->packed = packed;
    w->len = len;
    emit(r, FAAS__WATCH_EVENT__TYPE__WORKER_PUT, w->msg);
    return w;
}

/* Owned copies of the renewal's function errors (not watched: nothing is emitted). */
static Faas__FunctionError **copy_errors(const Faas__LeaseRenewal *lr, const char **err)
{
    Faas__FunctionError **v = calloc(lr->n_errors ? lr->n_errors : 1, sizeof(*v));
    if (v == NULL) {
        *err = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < lr->n_errors; i++) {
        const Faas__FunctionError *e = lr->errors[i];
        size_t len;
        uint8_t *buf = NULL;
        if (e == NULL || e->function == NULL || e->function[0] == '\0') {
            *err = "every function error needs a function";
        } else if ((buf = faas_pb_pack(&e->base, &len)) == NULL ||
                   (v[i] = faas__function_error__unpack(NULL, len, buf)) == NULL) {
            *err = "out of memory";
        }
        free(buf);
        if (v[i] == NULL) {
            free_errs(v, i);
            return NULL;
        }
    }
    return v;
}

int disc_registry_heartbeat(disc_registry_t *r, const Faas__LeaseRenewal *lr, uint64_t now_ms, const char **err)
{
    if (lr->worker == NULL || lr->worker->id == NULL || lr->worker->id[0] == '\0') {
        *err = "the renewal needs worker.id";
        return -1;
    }
    Faas__FunctionError **errs = copy_errors(lr, err);
    if (errs == NULL)
        return -1;
    in_inst_t *in = prepare_instances(lr, lr->worker->id, err);
    if (in == NULL) {
        free_errs(errs, lr->n_errors);
        return -1;
    }
    int is_new = 0, rc = -1;
    pthread_mutex_lock(&r->mu);
    worker_t *w = upsert_worker(r, lr->worker, &is_new);
    if (w != NULL && replace_instances(r, w, in, lr->n_instances) == 0) {
        free_errs(w->errs, w->n_errs);
        w->errs = errs;
        w->n_errs = lr->n_errors;
        errs = NULL;
        uint64_t old = w->expires_ms;
        w->expires_ms = now_ms + (lr->ttl_ms ? lr->ttl_ms : DISC_DEFAULT_TTL_MS);
        if (is_new || w->expires_ms < old)
            pthread_cond_broadcast(&r->cv); /* the reaper may be napping past this lease */
        rc = 0;
    }
    size_t n = w ? w->n_insts : 0;
    flush_subs(r);
    pthread_mutex_unlock(&r->mu);
    free_in(in, lr->n_instances);
    if (errs != NULL)
        free_errs(errs, lr->n_errors);
    if (rc != 0) {
        *err = "out of memory";
        return -1;
    }
    if (is_new)
        FAAS_INFO("event=worker_up worker=%s address=%s pool_size=%u pool_ready=%u instances=%zu",
                  lr->worker->id, lr->worker->address ? lr->worker->address : "", lr->worker->pool_size,
                  lr->worker->pool_ready, n);
    return 0;
}

/* Removes workers[idx] with its instances, pushing the deletes. */
static void remove_worker(disc_registry_t *r, size_t idx)
{
    worker_t *w = r->workers[idx];
    for (size_t i = 0; i < w->n_insts; i++)
        emit(r, FAAS__WATCH_EVENT__TYPE__INSTANCE_DELETE, w->insts[i].msg);
    emit(r, FAAS__WATCH_EVENT__TYPE__WORKER_DELETE, w->msg);
    r->n_instances -= w->n_insts;
    r->workers[idx] = r->workers[--r->n_workers];
    worker_free(w);
}

size_t disc_registry_expire(disc_registry_t *r, uint64_t now_ms)
{
    char ids[16][64];
    size_t counts[16], removed = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_workers;) {
        worker_t *w = r->workers[i];
        if (w->expires_ms >= now_ms) {
            i++;
            continue;
        }
        if (removed < 16) {
            snprintf(ids[removed], sizeof(ids[0]), "%s", w->msg->id);
            counts[removed] = w->n_insts;
        }
        removed++;
        remove_worker(r, i);
    }
    flush_subs(r);
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < removed && i < 16; i++)
        FAAS_WARN("event=lease_lapse worker=%s instances_removed=%zu", ids[i], counts[i]);
    return removed;
}

/* ---- the reaper -------------------------------------------------------------- */

static void *reaper_main(void *arg)
{
    disc_registry_t *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        uint64_t now = faas_now_ms(), next = now + 50;
        for (size_t i = 0; i < r->n_workers; i++)
            if (r->workers[i]->expires_ms + 1 < next)
                next = r->workers[i]->expires_ms + 1;
        if (next > now) {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000), .tv_nsec = (long)(next % 1000) * 1000000L};
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&r->mu);
        disc_registry_expire(r, now);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int disc_registry_start_reaper(disc_registry_t *r)
{
    if (r->reaper_running)
        return 0;
    r->stopping = 0;
    if (pthread_create(&r->reaper, NULL, reaper_main, r) != 0)
        return -1;
    r->reaper_running = 1;
    return 0;
}

void disc_registry_stop_reaper(disc_registry_t *r)
{
    if (!r->reaper_running)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->reaper, NULL);
    r->reaper_running = 0;
}

/* ---- functions ------------------------------------------------------------------ */

static ssize_t find_fn(disc_registry_t *r, const char *name)
{
    for (size_t i = 0; i < r->n_fns; i++)
        if (strcmp(r->fns[i]->name, name) == 0)
            return (ssize_t)i;
    return -1;
}

int disc_registry_function_put(disc_registry_t *r, const Faas__FunctionSpec *spec)
{
    Faas__FunctionSpec *copy = disc_spec_dup(spec);
    if (copy == NULL)
        return -ENOMEM;
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    ssize_t i = find_fn(r, spec->name);
    if (i >= 0 && r->fns[i]->version > spec->version) {
        /* a racing older deploy finished last: the cache already has the newer one */
        faas__function_spec__free_unpacked(copy, NULL);
    } else if (i >= 0) {
        faas__function_spec__free_unpacked(r->fns[i], NULL);
        r->fns[i] = copy;
        emit(r, FAAS__WATCH_EVENT__TYPE__FUNCTION_PUT, copy);
    } else {
        Faas__FunctionSpec **nv = realloc(r->fns, (r->n_fns + 1) * sizeof(*nv));
        if (nv == NULL) {
            faas__function_spec__free_unpacked(copy, NULL);
            rc = -ENOMEM;
        } else {
            r->fns = nv;
            r->fns[r->n_fns++] = copy;
            emit(r, FAAS__WATCH_EVENT__TYPE__FUNCTION_PUT, copy);
        }
    }
    flush_subs(r);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int disc_registry_function_delete(disc_registry_t *r, const char *name)
{
    pthread_mutex_lock(&r->mu);
    ssize_t i = find_fn(r, name);
    if (i < 0) {
        pthread_mutex_unlock(&r->mu);
        return -ENOENT;
    }
    Faas__FunctionSpec *s = r->fns[i];
    r->fns[i] = r->fns[--r->n_fns];
    emit(r, FAAS__WATCH_EVENT__TYPE__FUNCTION_DELETE, s);
    flush_subs(r);
    pthread_mutex_unlock(&r->mu);
    faas__function_spec__free_unpacked(s, NULL);
    return 0;
}

/* ---- watchers --------------------------------------------------------------------- */

static int send_snapshot(disc_registry_t *r, sub_t *s)
{
    int rc = 0;
    if (s->want & DISC_WATCH_FUNCTIONS)
        for (size_t i = 0; i < r->n_fns && rc == 0; i++)
            rc = send_one(r, s, FAAS__WATCH_EVENT__TYPE__FUNCTION_PUT, r->fns[i]);
    if (s->want & DISC_WATCH_WORKERS)
        for (size_t i = 0; i < r->n_workers && rc == 0; i++)
            rc = send_one(r, s, FAAS__WATCH_EVENT__TYPE__WORKER_PUT, r->workers[i]->msg);
    if (s->want & DISC_WATCH_INSTANCES)
        for (size_t i = 0; i < r->n_workers && rc == 0; i++)
            for (size_t j = 0; j < r->workers[i]->n_insts && rc == 0; j++)
                rc = send_one(r, s, FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT, r->workers[i]->insts[j].msg);
    if (rc == 0)
        rc = send_one(r, s, FAAS__WATCH_EVENT__TYPE__SNAPSHOT_END, NULL);
    if (rc == 0 && s->sink(s->ctx, NULL, 0) != 0)
        rc = -EPIPE;
    return rc;
}

int64_t disc_registry_subscribe(disc_registry_t *r, int functions, int instances, int workers, disc_sink_fn sink,
                                void *ctx)
{
    return disc_registry_subscribe_want(r,
                                        (functions ? DISC_WATCH_FUNCTIONS : 0) |
                                            (instances ? DISC_WATCH_INSTANCES : 0) | (workers ? DISC_WATCH_WORKERS : 0),
                                        sink, ctx);
}

int64_t disc_registry_subscribe_want(disc_registry_t *r, int want, disc_sink_fn sink, void *ctx)
{
    sub_t s = {.want = want, .sink = sink, .ctx = ctx};
    int64_t rc;
    pthread_mutex_lock(&r->mu);
    sub_t *nv = realloc(r->subs, (r->n_subs + 1) * sizeof(*nv));
    if (nv == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    r->subs = nv;
    s.id = ++r->next_sub;
    /* snapshot and registration under one lock hold: no change can fall in between */
    rc = send_snapshot(r, &s);
    if (rc == 0) {
        r->subs[r->n_subs++] = s;
        rc = s.id;
    }
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Not a registry change: the revision stays. Task cancels have no snapshot. */
void disc_registry_task_cancel(disc_registry_t *r, const Faas__Task *t)
{
    pthread_mutex_lock(&r->mu);
    emit_now(r, FAAS__WATCH_EVENT__TYPE__TASK_CANCEL, t);
    flush_subs(r);
    pthread_mutex_unlock(&r->mu);
}

void disc_registry_unsubscribe(disc_registry_t *r, int64_t id)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_subs; i++)
        if (r->subs[i].id == id)
            r->subs[i].dead = 1;
    drop_dead_subs(r);
    pthread_mutex_unlock(&r->mu);
}

/* ---- listings ---------------------------------------------------------------------- */

uint8_t *disc_registry_list_instances(disc_registry_t *r, const char *name, size_t *len)
{
    Faas__InstanceList list = FAAS__INSTANCE_LIST__INIT;
    uint8_t *buf = NULL;
    pthread_mutex_lock(&r->mu);
    list.instances = malloc((r->n_instances ? r->n_instances : 1) * sizeof(*list.instances));
    if (list.instances == NULL)
        goto out;
    for (size_t i = 0; i < r->n_workers; i++)
        for (size_t j = 0; j < r->workers[i]->n_insts; j++) {
            Faas__Instance *in = r->workers[i]->insts[j].msg;
            if (name == NULL || name[0] == '\0' || strcmp(in->function, name) == 0)
                list.instances[list.n_instances++] = in;
        }
    buf = faas_pb_pack(&list.base, len);
out:
    pthread_mutex_unlock(&r->mu);
    free(list.instances);
    return buf;
}

uint8_t *disc_registry_list_workers(disc_registry_t *r, size_t *len)
{
    Faas__WorkerList list = FAAS__WORKER_LIST__INIT;
    uint8_t *buf = NULL;
    pthread_mutex_lock(&r->mu);
    list.workers = malloc((r->n_workers ? r->n_workers : 1) * sizeof(*list.workers));
    if (list.workers == NULL)
        goto out;
    for (size_t i = 0; i < r->n_workers; i++)
        list.workers[list.n_workers++] = r->workers[i]->msg;
    buf = faas_pb_pack(&list.base, len);
out:
    pthread_mutex_unlock(&r->mu);
    free(list.workers);
    return buf;
}

uint8_t *disc_registry_function_status(disc_registry_t *r, const char *name, size_t *len, int *missing)
{
    Faas__FunctionStatus st = FAAS__FUNCTION_STATUS__INIT;
    uint8_t *buf = NULL;
    pthread_mutex_lock(&r->mu);
    *missing = find_fn(r, name) < 0;
    if (!*missing) {
        st.name = (char *)name;
        for (size_t i = 0; i < r->n_workers; i++)
            for (size_t j = 0; j < r->workers[i]->n_errs; j++) {
                Faas__FunctionError *e = r->workers[i]->errs[j];
                if (strcmp(e->function, name) == 0 && (st.last_error == NULL || e->unix_ms > st.last_error->unix_ms))
                    st.last_error = e;
            }
        buf = faas_pb_pack(&st.base, len);
    }
    pthread_mutex_unlock(&r->mu);
    return buf;
}

int disc_registry_function_async(disc_registry_t *r, const char *name, Faas__AsyncSpec *out)
{
    pthread_mutex_lock(&r->mu);
    ssize_t i = find_fn(r, name);
    if (i >= 0) {
        faas__async_spec__init(out);
        if (r->fns[i]->async != NULL) /* only scalars: a plain copy is a deep one */
            *out = *r->fns[i]->async;
    }
    pthread_mutex_unlock(&r->mu);
    return i >= 0 ? 0 : -ENOENT;
}

void disc_registry_stats(disc_registry_t *r, disc_registry_stats_t *out)
{
    pthread_mutex_lock(&r->mu);
    out->functions = r->n_fns;
    out->instances = r->n_instances;
    out->workers = r->n_workers;
    out->watchers = r->n_subs;
    out->revision = r->revision;
    pthread_mutex_unlock(&r->mu);
}
