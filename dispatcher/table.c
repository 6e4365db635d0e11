/* dispatcher/table.c - per-function instance tables, selection, the cold-start
 * wait queue and idle bookkeeping. Pure data structures: see internal.h. */
#include "common/util.h"
#include "dispatcher/internal.h"

#include <stdlib.h>
#include <string.h>

void (*disp_inst_free_hook)(disp_inst_t *inst);

void disp_table_init(disp_table_t *t, uint32_t queue_max)
{
    memset(t, 0, sizeof(*t));
    t->queue_max = queue_max;
}

static void inst_free(disp_inst_t *inst)
{
    if (disp_inst_free_hook != NULL)
        disp_inst_free_hook(inst);
    disp_ishared_put(inst->sh);
    free(inst);
}

static void services_free(disp_fn_t *fn, int proto)
{
    for (size_t i = 0; i < fn->nservices[proto]; i++)
        free(fn->services[proto][i]);
    free(fn->services[proto]);
    fn->services[proto] = NULL;
    fn->nservices[proto] = 0;
}

void disp_table_clear(disp_table_t *t)
{
    for (size_t i = 0; i < t->nfns; i++) {
        disp_fn_t *fn = t->fns[i];
        for (size_t k = 0; k < fn->ninst; k++)
            inst_free(fn->inst[k]);
        free(fn->inst);
        free(fn->spec_pb);
        for (int p = 0; p < DISP_NPROTO; p++)
            services_free(fn, p);
        free(fn);
    }
    free(t->fns);
    t->fns = NULL;
    t->nfns = t->capfns = 0;
    free(t->index);
    t->index = NULL;
    t->index_cap = 0;
    free(t->routes);
    t->routes = NULL;
    t->routes_cap = 0;
}

static void index_put(disp_fn_t **index, size_t cap, disp_fn_t *fn)
{
    size_t i = faas_hash_name(fn->name, fn->name_len) & (cap - 1);
    while (index[i] != NULL)
        i = (i + 1) & (cap - 1);
    index[i] = fn;
}

/* Makes room for one more function in the index; -1 on OOM. */
static int index_reserve(disp_table_t *t)
{
    if (2 * (t->nfns + 1) < t->index_cap)
        return 0;
    size_t cap = t->index_cap ? t->index_cap * 2 : 32;
    disp_fn_t **n = calloc(cap, sizeof(*n));
    if (n == NULL)
        return -1;
    for (size_t i = 0; i < t->nfns; i++)
        index_put(n, cap, t->fns[i]);
    free(t->index);
    t->index = n;
    t->index_cap = cap;
    return 0;
}

disp_fn_t *disp_fn_find(disp_table_t *t, const char *name, size_t len)
{
    if (t->index_cap == 0)
        return NULL;
    for (size_t i = faas_hash_name(name, len) & (t->index_cap - 1); t->index[i] != NULL;
         i = (i + 1) & (t->index_cap - 1)) {
        disp_fn_t *fn = t->index[i];
        if (fn->name_len == len && memcmp(fn->name, name, len) == 0)
            return fn;
    }
    return NULL;
}

disp_fn_t *disp_fn_get(disp_table_t *t, const char *name, size_t len)
{
    disp_fn_t *fn = disp_fn_find(t, name, len);
    if (fn != NULL)
        return fn;
    if (len == 0 || len >= sizeof(fn->name))
        return NULL;
    if (t->nfns == t->capfns) {
        size_t cap = t->capfns ? t->capfns * 2 : 16;
        disp_fn_t **n = realloc(t->fns, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        t->fns = n;
        t->capfns = cap;
    }
    disp_fshared_t *sh = disp_fshared_get(name, len);
    if (sh == NULL || index_reserve(t) != 0 || (fn = calloc(1, sizeof(*fn))) == NULL)
        return NULL;
    fn->sh = sh;
    memcpy(fn->name, name, len);
    fn->name_len = len;
    fn->waiters.prev = fn->waiters.next = &fn->waiters;
    t->fns[t->nfns++] = fn;
    index_put(t->index, t->index_cap, fn);
    return fn;
}

void disp_fn_set_spec(disp_table_t *t, disp_fn_t *fn, const disp_fn_params_t *p, uint8_t *spec_pb, size_t spec_len)
{
    t->routes_dirty |= !fn->known;
    fn->known = 1;
    fn->p = *p;
    free(fn->spec_pb);
    fn->spec_pb = spec_pb;
    fn->spec_len = spec_len;
}

void disp_fn_forget(disp_table_t *t, disp_fn_t *fn)
{
    fn->known = 0;
    t->routes_dirty = 1;
}

int disp_fn_set_services(disp_table_t *t, disp_fn_t *fn, disp_proto_t proto, char *const *names, size_t n)
{
    services_free(fn, proto);
    t->routes_dirty = 1;
    if (n == 0)
        return 0;
    if ((fn->services[proto] = calloc(n, sizeof(char *))) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if ((fn->services[proto][i] = strdup(names[i])) == NULL)
            return -1;
        fn->nservices[proto]++;
    }
    return 0;
}

static size_t route_hash(int proto, const char *key, size_t len)
{
    return faas_hash_name(key, len) * 31 + (size_t)proto;
}

/* Adds an entry unless the key is taken (the first function to declare it keeps it). */
static void route_put(disp_table_t *t, disp_fn_t *fn, int proto, const char *key)
{
    size_t len = strlen(key), m = t->routes_cap - 1;
    for (size_t i = route_hash(proto, key, len) & m;; i = (i + 1) & m) {
        disp_route_ent_t *e = &t->routes[i];
        if (e->fn == NULL) {
            *e = (disp_route_ent_t){fn, key, len, proto};
            return;
        }
        if (e->proto == proto && e->len == len && memcmp(e->key, key, len) == 0)
            return;
    }
}

/* Deploys are rare and lookups happen per call: rebuild the whole index on change. */
static int routes_rebuild(disp_table_t *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nfns; i++)
        for (int p = 0; p < DISP_NPROTO; p++)
            n += t->fns[i]->known ? t->fns[i]->nservices[p] : 0;
    size_t cap = 16;
    while (cap < 2 * n + 2)
        cap *= 2;
    disp_route_ent_t *r = calloc(cap, sizeof(*r));
    if (r == NULL)
        return -1;
    free(t->routes);
    t->routes = r;
    t->routes_cap = cap;
    for (size_t i = 0; i < t->nfns; i++)
        for (int p = 0; p < DISP_NPROTO; p++)
            for (size_t k = 0; t->fns[i]->known && k < t->fns[i]->nservices[p]; k++)
                route_put(t, t->fns[i], p, t->fns[i]->services[p][k]);
    t->routes_dirty = 0;
    return 0;
}

static disp_fn_t *service_find(disp_table_t *t, int proto, const char *key, size_t len)
{
    if (t->routes_dirty && routes_rebuild(t) != 0)
        return NULL;
    if (t->routes_cap == 0)
        return NULL;
    size_t m = t->routes_cap - 1;
    for (size_t i = route_hash(proto, key, len) & m; t->routes[i].fn != NULL; i = (i + 1) & m) {
        const disp_route_ent_t *e = &t->routes[i];
        if (e->proto == proto && e->len == len && memcmp(e->key, key, len) == 0)
            return e->fn;
    }
    return NULL;
}

disp_fn_t *disp_route_find(disp_table_t *t, disp_proto_t proto, const char *key, size_t len)
{
    disp_fn_t *fn = NULL;
    if (proto != DISP_PROTO_HTTP)
        fn = service_find(t, proto, key, len);
    /* a Thrift key that names no service may name the function itself */
    if (fn == NULL && proto != DISP_PROTO_GRPC)
        fn = disp_fn_find(t, key, len);
    return fn != NULL && fn->known ? fn : NULL;
}

disp_inst_t *disp_inst_find(disp_table_t *t, const char *id)
{
    for (size_t i = 0; i < t->nfns; i++)
        for (size_t k = 0; k < t->fns[i]->ninst; k++)
            if (strcmp(t->fns[i]->inst[k]->id, id) == 0)
                return t->fns[i]->inst[k];
    return NULL;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

disp_inst_t *disp_inst_put(disp_fn_t *fn, const char *id, const char *endpoint, const char *worker_id, uint64_t version,
                           int ready, uint32_t concurrency, uint64_t now_ms)
{
    disp_inst_t *inst = NULL;
    for (size_t k = 0; k < fn->ninst; k++)
        if (strcmp(fn->inst[k]->id, id) == 0)
            inst = fn->inst[k];
    if (inst == NULL) {
        if (fn->ninst == fn->capinst) {
            size_t cap = fn->capinst ? fn->capinst * 2 : 4;
            disp_inst_t **n = realloc(fn->inst, cap * sizeof(*n));
            if (n == NULL)
                return NULL;
            fn->inst = n;
            fn->capinst = cap;
        }
        if ((inst = calloc(1, sizeof(*inst))) == NULL)
            return NULL;
        if ((inst->sh = disp_ishared_get(id != NULL ? id : "")) == NULL) {
            free(inst);
            return NULL;
        }
        uint64_t never = 0; /* the first loop to hear of it starts its idle clock */
        __atomic_compare_exchange_n(&inst->sh->idle_since_ms, &never, now_ms, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        copy_str(inst->id, sizeof(inst->id), id);
        inst->fn = fn;
        inst->idle_since_ms = now_ms;
        inst->born_ms = now_ms;
        fn->inst[fn->ninst++] = inst;
    }
    /* the endpoint of a live instance does not change; keep the open connection */
    copy_str(inst->endpoint, sizeof(inst->endpoint), endpoint);
    copy_str(inst->worker_id, sizeof(inst->worker_id), worker_id);
    inst->version = version;
    inst->ready = ready;
    inst->concurrency = concurrency;
    return inst;
}

disp_inst_t *disp_inst_learn(disp_fn_t *fn, const Faas__Instance *pi, uint64_t now_ms)
{
    disp_inst_t *inst = disp_inst_put(fn, pi->id, pi->endpoint, pi->worker_id, pi->version,
                                      pi->state == FAAS__INSTANCE__STATE__READY, pi->concurrency, now_ms);
    if (inst == NULL)
        return NULL;
    inst->reserved = pi->kind == FAAS__INSTANCE__KIND__RESERVED;
    /* the watch is the only source of the flag: an Acquire reply is a snapshot taken at
     * READY and may be older than the OVERLOAD that followed, so it never clears it */
    inst->overloaded = pi->overloaded;
    copy_str(inst->direct, sizeof(inst->direct), pi->direct_endpoint != NULL ? pi->direct_endpoint : "");
    return inst;
}

int disp_inst_remove(disp_inst_t *inst)
{
    disp_fn_t *fn = inst->fn;
    for (size_t k = 0; k < fn->ninst; k++) {
        if (fn->inst[k] == inst) {
            fn->inst[k] = fn->inst[--fn->ninst];
            break;
        }
    }
    inst->removed = 1;
    if (inst->inflight == 0) {
        inst_free(inst);
        return 1;
    }
    return 0;
}

uint32_t disp_inst_limit(const disp_inst_t *inst)
{
    return inst->concurrency ? inst->concurrency : inst->fn->p.concurrency;
}

/* Released here or by the primary loop (shared mark). */
static int releasing(const disp_inst_t *inst)
{
    return inst->releasing || disp_ishared_releasing(inst->sh);
}

static int usable(const disp_fn_t *fn, const disp_inst_t *inst)
{
    return inst->ready && !inst->removed && !releasing(inst) && inst->version == fn->p.version;
}

static int has_headroom(const disp_inst_t *inst)
{
    uint32_t lim = disp_inst_limit(inst);
    return lim == 0 || disp_ishared_inflight(inst->sh) < lim;
}

/* 1 if a serves the next call before b. An overloaded instance judged itself short of
 * capacity (queueing, CPU) before its in-flight count shows it, and its worker manager
 * is already starting siblings: it goes last while any other of its kind has headroom,
 * but still before a reserved one (those are kept for when nothing else can serve). */
static int better(const disp_inst_t *a, const disp_inst_t *b)
{
    if (a->overloaded != b->overloaded)
        return !a->overloaded;
    return disp_ishared_inflight(a->sh) < disp_ishared_inflight(b->sh);
}

static disp_inst_t *pick_kind(disp_fn_t *fn, int reserved)
{
    disp_inst_t *best = NULL;
    for (size_t k = 0; k < fn->ninst; k++) {
        disp_inst_t *inst = fn->inst[k];
        if (!usable(fn, inst) || inst->reserved != reserved)
            continue;
        if (!has_headroom(inst))
            continue;
        if (best == NULL || better(inst, best))
            best = inst;
    }
    return best;
}

disp_inst_t *disp_pick(disp_fn_t *fn)
{
    disp_inst_t *inst = pick_kind(fn, 0);
    return inst != NULL ? inst : pick_kind(fn, 1);
}

int disp_elastic_wanted(const disp_fn_t *fn)
{
    if (!fn->known || fn->acquiring != 0)
        return 0;
    uint32_t current = 0;
    for (size_t k = 0; k < fn->ninst; k++) {
        const disp_inst_t *inst = fn->inst[k];
        if (inst->removed || releasing(inst) || inst->version != fn->p.version)
            continue;
        current++;
        /* one that is starting, or one with room, takes the next call itself */
        if (!inst->reserved && (!inst->ready || has_headroom(inst)))
            return 0;
    }
    return fn->p.max_instances == 0 || current < fn->p.max_instances;
}

int disp_inst_begin(disp_inst_t *inst)
{
    if (disp_ishared_begin(inst->sh, disp_inst_limit(inst)) != 0)
        return -1;
    inst->inflight++;
    return 0;
}

int disp_inst_end(disp_inst_t *inst, uint64_t now_ms)
{
    if (inst->inflight == 0)
        return 0;
    disp_ishared_end(inst->sh, now_ms);
    /* this loop's own count keeps the replica alive while its calls use it */
    if (--inst->inflight == 0) {
        inst->idle_since_ms = now_ms;
        if (inst->removed) {
            inst_free(inst);
            return 1;
        }
    }
    return 0;
}

int disp_wait_push(disp_table_t *t, disp_fn_t *fn, disp_waiter_t *w, uint64_t now_ms, uint32_t timeout_ms)
{
    if (disp_fshared_hold(fn->sh, t->queue_max, (int)fn->nwaiters + 1) != 0)
        return -1;
    w->deadline_ms = now_ms + timeout_ms;
    w->next = &fn->waiters;
    w->prev = fn->waiters.prev;
    w->prev->next = w;
    fn->waiters.prev = w;
    w->queued = 1;
    fn->nwaiters++;
    return 0;
}

/* Unlinks w; shared_delta is what the shared count of held calls moves by (-1, or 0
 * when the caller already took w out of it). */
static void wait_unlink(disp_fn_t *fn, disp_waiter_t *w, int shared_delta)
{
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->queued = 0;
    fn->nwaiters--;
    disp_fshared_waiters_add(fn->sh, shared_delta, (int)fn->nwaiters);
}

void disp_wait_remove(disp_fn_t *fn, disp_waiter_t *w)
{
    if (w->queued)
        wait_unlink(fn, w, -1);
}

disp_waiter_t *disp_wait_pop_taken(disp_fn_t *fn)
{
    disp_waiter_t *w = fn->waiters.next;
    if (w == &fn->waiters)
        return NULL;
    wait_unlink(fn, w, 0);
    return w;
}

disp_waiter_t *disp_wait_pop(disp_fn_t *fn)
{
    disp_waiter_t *w = fn->waiters.next;
    if (w == &fn->waiters)
        return NULL;
    disp_wait_remove(fn, w);
    return w;
}

disp_waiter_t *disp_wait_pop_expired(disp_fn_t *fn, uint64_t now_ms)
{
    for (disp_waiter_t *w = fn->waiters.next; w != &fn->waiters; w = w->next) {
        if (w->deadline_ms <= now_ms) {
            disp_wait_remove(fn, w);
            return w;
        }
    }
    return NULL;
}

uint32_t disp_acquire_needed(const disp_fn_t *fn)
{
    if (!fn->known || disp_fshared_waiters(fn->sh) == 0)
        return 0;
    uint32_t current = 0, room = 0;
    int unlimited_room = 0;
    for (size_t k = 0; k < fn->ninst; k++) {
        const disp_inst_t *inst = fn->inst[k];
        if (inst->removed || releasing(inst) || inst->version != fn->p.version)
            continue;
        current++;
        /* calls held on another loop while an instance with room is on its way to it
         * (announced, or in the watch) are served by that one, not by a new one */
        if (!inst->ready || !usable(fn, inst))
            continue;
        uint32_t lim = disp_inst_limit(inst), in = disp_ishared_inflight(inst->sh);
        if (lim == 0)
            unlimited_room = 1;
        else if (in < lim)
            room += lim - in;
    }
    /* held on every loop: the primary acquires for all of them. Read after the rooms:
     * a held call leaves the held count before it takes a slot (disp_serve_held), so a
     * slot seen taken here is never also counted as held */
    uint32_t waiting = disp_fshared_waiters(fn->sh);
    if (unlimited_room || waiting <= room)
        return 0;
    waiting -= room;
    uint32_t want;
    if (fn->p.concurrency == 0)
        want = fn->acquiring ? 0 : 1;
    else {
        uint32_t total = (waiting + fn->p.concurrency - 1) / fn->p.concurrency;
        want = total > fn->acquiring ? total - fn->acquiring : 0;
    }
    if (fn->p.max_instances != 0) {
        uint32_t have = current + fn->acquiring;
        uint32_t left = have >= fn->p.max_instances ? 0 : fn->p.max_instances - have;
        if (want > left)
            want = left;
    }
    return want;
}

static uint32_t current_count(const disp_fn_t *fn)
{
    uint32_t n = 0;
    for (size_t k = 0; k < fn->ninst; k++)
        if (usable(fn, fn->inst[k]))
            n++;
    return n;
}

/* When fn last grew: its newest elastic instance of the current version. */
static uint64_t last_scale_up(const disp_fn_t *fn)
{
    uint64_t last = 0;
    for (size_t k = 0; k < fn->ninst; k++) {
        const disp_inst_t *inst = fn->inst[k];
        if (!inst->reserved && !inst->removed && inst->version == fn->p.version && inst->born_ms > last)
            last = inst->born_ms;
    }
    return last;
}

size_t disp_idle_collect(disp_table_t *t, uint64_t now_ms, disp_inst_t **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nfns && n < cap; i++) {
        disp_fn_t *fn = t->fns[i];
        uint32_t keep = current_count(fn);
        uint32_t tmo = fn->p.idle_timeout_ms;
        int settled = tmo != 0 && now_ms - last_scale_up(fn) >= tmo;
        for (size_t k = 0; k < fn->ninst && n < cap; k++) {
            disp_inst_t *inst = fn->inst[k];
            if (disp_ishared_inflight(inst->sh) != 0 || releasing(inst) || inst->removed || inst->reserved)
                continue;
            int stale = !fn->known || inst->version != fn->p.version;
            uint64_t since = __atomic_load_n(&inst->sh->idle_since_ms, __ATOMIC_RELAXED);
            int idle = settled && now_ms >= since && now_ms - since >= tmo && keep > fn->p.min_instances;
            if (!stale && !idle)
                continue;
            /* another loop may begin a call on it right now: only an idle one is taken */
            if (disp_ishared_try_release(inst->sh) != 0)
                continue;
            if (!stale)
                keep--;
            inst->releasing = 1;
            out[n++] = inst;
        }
    }
    return n;
}
