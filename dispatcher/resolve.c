/* dispatcher/resolve.c - a front end's routing miss, made sure of before it is said.
 *
 * The table is a copy of discovery's, fed by the watch: it is empty until the first
 * snapshot arrives (a restarted gateway answered 404 for deployed functions for its
 * first tens of ms), and it lags discovery by one watch event (a call right after a
 * deploy answered 404). A miss therefore waits for the first snapshot, then asks
 * discovery itself; only discovery's "no" is a 404. A function discovery knows is
 * waited for until its watch event installs it. All of it is bounded by the hold
 * (disp_config_t.sync_hold_ms): past it the caller gets "unavailable, retry".
 *
 * One discovery call per (protocol, key) at a time: a burst of calls to the same
 * fresh function costs one round trip. A name is looked up with GetFunction; a gRPC
 * or Thrift service with ListFunctions (no index by service exists in discovery). */
#include "dispatcher/internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

/* Pending resolutions past this, and discovery calls past PROBES_MAX, answer at once
 * "cannot tell" (503 + Retry-After): a client making up names by the thousand must
 * not queue state without end, nor take the control threads that Acquire and Release
 * need (16; a probe waits up to RESOLVE_RPC_MS on a slow discovery). */
#define RESOLVE_MAX 4096
#define PROBES_MAX 8
#define RESOLVE_RPC_MS 2000

enum { ST_WAIT_SYNC = 1, ST_CONFIRM, ST_WAIT_TABLE };

typedef struct probe probe_t;

struct disp_resolve {
    struct disp_resolve *prev, *next;
    disp_proto_t proto;
    int state;
    probe_t *probe; /* ST_CONFIRM: the discovery call it waits on */
    disp_timer_t timer;
    disp_resolve_cb cb;
    void *ud;
    size_t len;
    char key[DISP_RESOLVE_KEY_MAX];
};

/* One discovery call in flight; outlives cancelled waiters (freed by its reply). */
struct probe {
    probe_t *next;
    disp_proto_t proto;
    size_t len;
    char key[DISP_RESOLVE_KEY_MAX];
};

/* each loop resolves its own misses against its own table */
static __thread disp_resolve_t pending; /* a ring once ring() ran */
static __thread size_t npending;

/* The loop's ring of pending resolutions (a thread-local has no constant address to
 * start it with). */
static disp_resolve_t *ring(void)
{
    if (pending.next == NULL)
        pending.prev = pending.next = &pending;
    return &pending;
}
static __thread probe_t *probes;
static __thread size_t nprobes;
static uint64_t stats[4]; /* found, not found, unavailable, overflow: atomic, every loop counts */

static int key_is(const char *a, size_t al, const char *b, size_t bl)
{
    return al == bl && memcmp(a, b, al) == 0;
}

/* The function the table routes key to now (HTTP keys are function names). */
static int in_table(disp_proto_t proto, const char *key, size_t len)
{
    if (proto == DISP_PROTO_HTTP) {
        disp_fn_t *fn = disp_fn_find(&disp_g.table, key, len);
        return fn != NULL && fn->known;
    }
    return disp_route_find(&disp_g.table, proto, key, len) != NULL;
}

static void unlink_r(disp_resolve_t *r)
{
    r->prev->next = r->next;
    r->next->prev = r->prev;
    r->prev = r->next = r;
    npending--;
    disp_timer_stop(&r->timer);
}

/* Ends r with found (1), not found (0) or unavailable (-1); r is freed first, so the
 * callback may do anything (even start another resolution). */
static void finish(disp_resolve_t *r, int found)
{
    disp_resolve_cb cb = r->cb;
    void *ud = r->ud;
    unlink_r(r);
    free(r);
    __atomic_add_fetch(&stats[found == 1 ? 0 : found == 0 ? 1 : 2], 1, __ATOMIC_RELAXED);
    cb(ud, found);
}

static void on_rpc(void *ud, int rc, const uint8_t *resp, size_t len, const char *err);

/* Asks discovery about r's key (or joins the question in flight). 1 if r was finished
 * (freed) instead. */
static int confirm(disp_resolve_t *r)
{
    r->state = ST_CONFIRM;
    for (probe_t *p = probes; p != NULL; p = p->next)
        if (p->proto == r->proto && (r->proto != DISP_PROTO_HTTP || key_is(p->key, p->len, r->key, r->len))) {
            r->probe = p; /* one ListFunctions answers every service key */
            return 0;
        }
    probe_t *p = nprobes < PROBES_MAX ? calloc(1, sizeof(*p)) : NULL;
    if (p == NULL) {
        finish(r, -1); /* discovery is asked enough already: cannot tell now */
        return 1;
    }
    p->proto = r->proto;
    p->len = r->len;
    memcpy(p->key, r->key, r->len);
    int rc;
    if (r->proto == DISP_PROTO_HTTP) {
        char name[DISP_RESOLVE_KEY_MAX + 1];
        memcpy(name, r->key, r->len);
        name[r->len] = '\0';
        Faas__FunctionName fnm = FAAS__FUNCTION_NAME__INIT;
        fnm.name = name;
        size_t plen;
        uint8_t *pb = faas_pb_pack(&fnm.base, &plen);
        rc = pb == NULL ? -1 : disp_discovery_call("/faas.Discovery/GetFunction", pb, plen, RESOLVE_RPC_MS, on_rpc, p);
        free(pb);
    } else {
        rc = disp_discovery_call("/faas.Discovery/ListFunctions", NULL, 0, RESOLVE_RPC_MS, on_rpc, p);
    }
    if (rc != 0) {
        free(p);
        finish(r, -1);
        return 1;
    }
    p->next = probes;
    probes = p;
    nprobes++;
    r->probe = p;
    return 0;
}

static int spec_serves(const Faas__FunctionSpec *s, disp_proto_t proto, const char *key, size_t len)
{
    char *const *v = proto == DISP_PROTO_GRPC ? s->grpc_services : s->thrift_services;
    size_t n = proto == DISP_PROTO_GRPC ? s->n_grpc_services : s->n_thrift_services;
    for (size_t i = 0; i < n; i++)
        if (key_is(v[i], strlen(v[i]), key, len))
            return 1;
    /* a Thrift call naming no declared service goes to the function of that name */
    return proto == DISP_PROTO_THRIFT && key_is(s->name, strlen(s->name), key, len);
}

/* What discovery said about r's key: 1 it exists, 0 it does not, -1 cannot tell. fl:
 * the ListFunctions reply (service keys), NULL for a name's GetFunction. */
static int verdict(const disp_resolve_t *r, int rc, const Faas__FunctionList *fl)
{
    if (rc == FAAS_GRPC_NOT_FOUND)
        return 0;
    /* a discovery without the method cannot say more than its watch did */
    if (rc == FAAS_GRPC_UNIMPLEMENTED)
        return 0;
    if (rc != 0)
        return -1;
    if (r->proto == DISP_PROTO_HTTP)
        return 1;
    if (fl == NULL)
        return -1;
    for (size_t i = 0; i < fl->n_functions; i++)
        if (spec_serves(fl->functions[i], r->proto, r->key, r->len))
            return 1;
    return 0;
}

static void on_rpc(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    probe_t *p = ud;
    for (probe_t **pp = &probes; *pp != NULL; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            nprobes--;
            break;
        }
    Faas__FunctionList *fl = rc == 0 && p->proto != DISP_PROTO_HTTP ? faas__function_list__unpack(NULL, len, resp) : NULL;
    if (rc != 0 && rc != FAAS_GRPC_NOT_FOUND)
        FAAS_WARN("event=resolve_failed key=%.*s rc=%d msg=\"%s\"", (int)p->len, p->key, rc, err ? err : "");
    /* the snapshot may have installed it meanwhile: the table has the last word */
    disp_resolve_t *r = ring()->next;
    while (r != &pending) {
        disp_resolve_t *next = r->next;
        if (r->state == ST_CONFIRM && r->probe == p) {
            r->probe = NULL;
            int v = verdict(r, rc, fl);
            if (in_table(r->proto, r->key, r->len))
                finish(r, 1);
            else if (v == 1)
                r->state = ST_WAIT_TABLE;
            else
                finish(r, v);
        }
        r = next;
    }
    if (fl != NULL)
        faas__function_list__free_unpacked(fl, NULL);
    free(p);
}

static void on_hold_over(disp_timer_t *t)
{
    disp_resolve_t *r = H2O_STRUCT_FROM_MEMBER(disp_resolve_t, timer, t);
    FAAS_INFO("event=resolve_timeout key=%.*s state=%s", (int)r->len, r->key,
              r->state == ST_WAIT_SYNC ? "no_snapshot" : r->state == ST_CONFIRM ? "discovery_slow" : "watch_behind");
    finish(r, -1);
}

disp_resolve_t *disp_resolve(disp_proto_t proto, const char *key, size_t len, disp_resolve_cb cb, void *ud)
{
    if (len == 0 || len > DISP_RESOLVE_KEY_MAX || npending >= RESOLVE_MAX) {
        if (npending >= RESOLVE_MAX)
            __atomic_add_fetch(&stats[3], 1, __ATOMIC_RELAXED);
        cb(ud, in_table(proto, key, len) ? 1 : len != 0 && len <= DISP_RESOLVE_KEY_MAX ? -1 : 0);
        return NULL;
    }
    if (in_table(proto, key, len)) {
        cb(ud, 1);
        return NULL;
    }
    disp_resolve_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        cb(ud, -1);
        return NULL;
    }
    r->proto = proto;
    r->cb = cb;
    r->ud = ud;
    r->len = len;
    memcpy(r->key, key, len);
    r->timer.cb = on_hold_over;
    r->prev = ring()->prev;
    r->next = &pending;
    pending.prev->next = r;
    pending.prev = r;
    npending++;
    disp_timer_start(&r->timer, faas_now_ms() + disp_g.cfg.sync_hold_ms);
    if (!disp_g.synced)
        r->state = ST_WAIT_SYNC;
    else if (confirm(r))
        return NULL; /* finished: cb has run */
    return r;
}

void disp_resolve_cancel(disp_resolve_t *r)
{
    if (r == NULL)
        return;
    unlink_r(r);
    free(r);
}

void disp_resolve_changed(void)
{
    /* mid-snapshot a function may have arrived before the workers and instances that
     * serve it: calls held for the snapshot go when it has ended */
    if (!disp_g.synced)
        return;
    disp_resolve_t *r = ring()->next;
    while (r != &pending) {
        disp_resolve_t *next = r->next;
        if (in_table(r->proto, r->key, r->len))
            finish(r, 1);
        else if (r->state == ST_WAIT_SYNC && disp_g.synced)
            confirm(r);
        r = next;
    }
}

int disp_ready(void)
{
    return disp_g.synced;
}

void disp_resolve_metrics(FILE *out)
{
    fprintf(out,
            "# HELP faas_gateway_route_misses_total Calls whose function was not in the gateway's table, by what "
            "discovery said (found: the watch was behind; unavailable: answered 503 + Retry-After).\n"
            "# TYPE faas_gateway_route_misses_total counter\n"
            "faas_gateway_route_misses_total{outcome=\"found\"} %llu\n"
            "faas_gateway_route_misses_total{outcome=\"not_found\"} %llu\n"
            "faas_gateway_route_misses_total{outcome=\"unavailable\"} %llu\n"
            "faas_gateway_route_misses_total{outcome=\"overflow\"} %llu\n",
            (unsigned long long)__atomic_load_n(&stats[0], __ATOMIC_RELAXED),
            (unsigned long long)__atomic_load_n(&stats[1], __ATOMIC_RELAXED),
            (unsigned long long)__atomic_load_n(&stats[2], __ATOMIC_RELAXED),
            (unsigned long long)__atomic_load_n(&stats[3], __ATOMIC_RELAXED));
    fprintf(out,
            "# HELP faas_gateway_ready 1 once the gateway has its first discovery snapshot.\n"
            "# TYPE faas_gateway_ready gauge\nfaas_gateway_ready %d\n",
            disp_g.synced ? 1 : 0);
}
