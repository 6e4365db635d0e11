/* dispatcher/endpoints.c - what the endpoints API for meshes answers (docs/endpoints.md):
 * a function's call rate, counted at the gateways and at its pods' direct ports, and
 * the mode it puts the function in (send to the gateways, or to the pods).
 *
 * The counters are process-wide, keyed by function name, not in disp_fn_t: each loop
 * thread keeps its own replica of the table, but the threshold is about the function's
 * whole traffic through this gateway, so every thread adds into the same window. A
 * replica's disp_fn_t caches the entry's address (entries are never freed, like the
 * table's functions), so the data path pays one lock-free add per call and no lookup. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/spec.h"
#include "common/util.h"
#include "dispatcher/internal.h"

/* An instance not heard of for this long is gone (its pod was released): its
 * baseline is dropped. Long, because a pod with no direct calls gets no update. */
#define EP_INST_FORGET_MS (10 * 60 * 1000)

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static disp_ep_fn_t *g_fns; /* a list: looked up once per function and thread */

/* ---- the window (pure but for the atomics) ---- */

void disp_ep_rate_add(disp_ep_rate_t *r, uint64_t now_ms, uint64_t n)
{
    uint64_t idx = now_ms / DISP_EP_BUCKET_MS;
    _Atomic uint64_t *b = &r->b[idx % DISP_EP_NBUCKETS];
    uint64_t tag = (idx & 0xffffffffu) << 32;
    uint64_t old = atomic_load_explicit(b, memory_order_relaxed), nv;
    do {
        uint64_t count = (old & 0xffffffff00000000u) == tag ? old & 0xffffffffu : 0;
        count += n;
        if (count > 0xffffffffu)
            count = 0xffffffffu; /* 17 G calls in 250 ms: saturate, never wrap into the tag */
        nv = tag | count;
    } while (!atomic_compare_exchange_weak_explicit(b, &old, nv, memory_order_relaxed, memory_order_relaxed));
}

double disp_ep_rate_get(disp_ep_rate_t *r, uint64_t now_ms)
{
    /* The bucket now_ms is in is still filling: counting it would read low for the
     * first part of every bucket, so the window is the complete buckets before it
     * (the answer lags by at most one bucket). */
    uint64_t idx = now_ms / DISP_EP_BUCKET_MS, sum = 0;
    for (uint64_t k = 1; k <= DISP_EP_NBUCKETS && k <= idx; k++) {
        uint64_t want = idx - k;
        uint64_t v = atomic_load_explicit(&r->b[want % DISP_EP_NBUCKETS], memory_order_relaxed);
        if (v >> 32 == (want & 0xffffffffu))
            sum += v & 0xffffffffu;
    }
    return (double)sum * 1000.0 / (DISP_EP_NBUCKETS * DISP_EP_BUCKET_MS);
}

int disp_ep_mode_next(int pods, double rps, uint32_t threshold, size_t npods)
{
    if (npods == 0)
        return 0;
    if (!pods)
        return rps >= (double)threshold;
    /* Half the threshold to come back: a rate hovering at the threshold would
     * otherwise flip the mesh between the gateways and the pods every look. */
    return rps >= (double)threshold / 2.0;
}

/* ---- the process-wide entries ---- */

disp_ep_fn_t *disp_ep_fn(const char *name, size_t len)
{
    if (len == 0 || len >= sizeof(((disp_ep_fn_t *)0)->name))
        return NULL;
    pthread_mutex_lock(&g_mu);
    disp_ep_fn_t *e = g_fns;
    while (e != NULL && !(strlen(e->name) == len && memcmp(e->name, name, len) == 0))
        e = e->next;
    if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
        memcpy(e->name, name, len);
        e->next = g_fns;
        g_fns = e;
    }
    pthread_mutex_unlock(&g_mu);
    return e;
}

/* Drops baselines of instances not heard of for EP_INST_FORGET_MS (under g_mu). */
static void forget_old(disp_ep_fn_t *e, uint64_t now_ms)
{
    for (size_t i = 0; i < e->ninsts;) {
        if (now_ms - e->insts[i].seen_ms > EP_INST_FORGET_MS)
            e->insts[i] = e->insts[--e->ninsts];
        else
            i++;
    }
}

static disp_ep_inst_t *inst_slot(disp_ep_fn_t *e, const char *id, uint64_t now_ms, int *fresh)
{
    *fresh = 0;
    for (size_t i = 0; i < e->ninsts; i++)
        if (strcmp(e->insts[i].id, id) == 0)
            return &e->insts[i];
    forget_old(e, now_ms);
    if (e->ninsts == e->capinsts) {
        size_t cap = e->capinsts ? 2 * e->capinsts : 8;
        disp_ep_inst_t *n = realloc(e->insts, cap * sizeof(*n));
        if (n == NULL)
            return NULL;
        e->insts = n;
        e->capinsts = cap;
    }
    disp_ep_inst_t *s = &e->insts[e->ninsts++];
    memset(s, 0, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", id);
    *fresh = 1;
    return s;
}

uint64_t disp_ep_direct_delta(disp_ep_fn_t *e, const char *id, uint64_t cumulative, uint64_t now_ms)
{
    uint64_t delta = 0;
    int fresh;
    pthread_mutex_lock(&g_mu);
    disp_ep_inst_t *s = inst_slot(e, id, now_ms, &fresh);
    if (s != NULL) {
        /* a smaller count is a restarted counter: a new baseline, nothing to add */
        if (!fresh && cumulative > s->last)
            delta = cumulative - s->last;
        s->last = cumulative;
        s->seen_ms = now_ms;
    }
    pthread_mutex_unlock(&g_mu);
    return delta;
}

static disp_ep_fn_t *ep_of(disp_fn_t *fn)
{
    if (fn->ep == NULL)
        fn->ep = disp_ep_fn(fn->name, fn->name_len);
    return fn->ep;
}

void disp_ep_count(disp_fn_t *fn)
{
    disp_ep_fn_t *e = ep_of(fn);
    if (e != NULL)
        disp_ep_rate_add(&e->rate, faas_now_ms(), 1);
}

void disp_ep_instance(disp_fn_t *fn, const Faas__Instance *pi)
{
    disp_ep_fn_t *e = ep_of(fn);
    if (e == NULL || pi->id == NULL || pi->id[0] == '\0')
        return;
    uint64_t now = faas_now_ms();
    uint64_t d = disp_ep_direct_delta(e, pi->id, pi->direct_calls, now);
    if (d != 0)
        disp_ep_rate_add(&e->rate, now, d);
}

/* ---- the answer ---- */

/* The pods a mesh may send to: READY, of the current version, with a direct port.
 * Overloaded ones only when every such pod is (the mesh has to send somewhere). */
static void collect_pods(const disp_fn_t *fn, disp_endpoints_t *out)
{
    for (int pass = 0; pass < 2 && out->npods == 0; pass++) {
        for (size_t i = 0; i < fn->ninst && out->npods < DISP_ENDPOINTS_MAX_PODS; i++) {
            const disp_inst_t *in = fn->inst[i];
            if (!in->ready || in->removed || in->version != fn->p.version || in->direct[0] == '\0' ||
                (pass == 0 && in->overloaded))
                continue;
            snprintf(out->pod[out->npods++], sizeof(out->pod[0]), "%s", in->direct);
        }
    }
}

int disp_endpoints(const char *name, size_t len, disp_endpoints_t *out)
{
    disp_fn_t *fn = disp_fn_find(&disp_g.table, name, len);
    if (fn == NULL || !fn->known)
        return -1;
    memset(out, 0, sizeof(*out));
    Faas__FunctionSpec *s = fn->spec_pb != NULL ? faas__function_spec__unpack(NULL, fn->spec_len, fn->spec_pb) : NULL;
    out->threshold_rps = faas_spec_endpoints_threshold(s);
    out->proto = s == NULL                               ? DISP_PROTO_HTTP
                 : s->protocol == FAAS__PROTOCOL__GRPC   ? DISP_PROTO_GRPC
                 : s->protocol == FAAS__PROTOCOL__THRIFT ? DISP_PROTO_THRIFT
                                                         : DISP_PROTO_HTTP;
    if (s != NULL)
        faas__function_spec__free_unpacked(s, NULL);
    collect_pods(fn, out);
    disp_ep_fn_t *e = ep_of(fn);
    if (e == NULL)
        return 0; /* out of memory: the gateways, which always work */
    out->rps = disp_ep_rate_get(&e->rate, faas_now_ms());
    int cur = atomic_load_explicit(&e->pods, memory_order_relaxed);
    int next = disp_ep_mode_next(cur, out->rps, out->threshold_rps, out->npods);
    /* two threads looking at once agree on the inputs; whichever stores, the same */
    if (next != cur)
        atomic_store_explicit(&e->pods, next, memory_order_relaxed);
    out->pods = next;
    return 0;
}
