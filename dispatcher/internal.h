/* dispatcher/internal.h - the dispatcher's data structures. table.c is pure (no I/O,
 * no clock: callers pass now_ms) so selection and queueing are unit-tested alone. */
#ifndef DISP_INTERNAL_H
#define DISP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/theap.h"
#include "dispatcher/dispatcher.h"
#include "proto/faas.pb-c.h"

struct disp_fn;

/* ---- shared.c: what the loop threads share (docs/threads.md) ---- */

#define DISP_MAX_LOOPS 256
/* the loop thread this code runs on: 0 is the primary (Acquires, releases, placement,
 * task claims and callbacks), the others are replicas that ask it */
extern __thread unsigned disp_tidx;

/* One per instance id, shared by every loop's replica of that instance (refcounted). */
#define DISP_ISHARED_RELEASING 0x80000000u
typedef struct disp_ishared {
    struct disp_ishared *next;
    char id[64];
    uint32_t inflight;      /* atomic: calls in flight on every loop; the top bit: being released */
    uint64_t idle_since_ms; /* atomic: when inflight last reached 0 */
    uint32_t refs;          /* under the registry's mutex */
} disp_ishared_t;

/* One per function name, never freed (as functions in the tables). */
typedef struct disp_fshared {
    struct disp_fshared *next;
    char name[64];
    size_t len;
    uint32_t nwaiters;                          /* atomic: calls held on every loop */
    uint64_t waitmask[DISP_MAX_LOOPS / 64];     /* atomic: bit t = loop t holds calls */
    uint64_t reserved_calls;                    /* atomic: calls served by reserved instances */
} disp_fshared_t;

/* The block of a function name / instance id, made on first use; NULL on OOM. */
disp_fshared_t *disp_fshared_get(const char *name, size_t len);
disp_ishared_t *disp_ishared_get(const char *id);
/* Lets go of a disp_ishared_get reference (NULL: nothing). */
void disp_ishared_put(disp_ishared_t *s);
/* Calls in flight on every loop. */
uint32_t disp_ishared_inflight(const disp_ishared_t *s);
/* Takes a slot: 0, or -1 when limit (0 = none) is reached or it is being released. */
int disp_ishared_begin(disp_ishared_t *s, uint32_t limit);
/* Gives one back; the calls left (idle_since set when 0). */
uint32_t disp_ishared_end(disp_ishared_t *s, uint64_t now_ms);
/* Marks an idle instance as being released, so no loop begins a call on it: 0, or -1
 * if a call began meanwhile. */
int disp_ishared_try_release(disp_ishared_t *s);
/* Marks it released whatever is in flight (its agent is unreachable). */
void disp_ishared_mark_releasing(disp_ishared_t *s);
int disp_ishared_releasing(const disp_ishared_t *s);
/* One more held call, unless every loop's together reach max: 0 or -1. local_now =
 * this loop's count with it. */
int disp_fshared_hold(disp_fshared_t *s, uint32_t max, int local_now);
/* Held calls of this loop changed by delta; local_now = this loop's count after it. */
void disp_fshared_waiters_add(disp_fshared_t *s, int delta, int local_now);
/* Held calls on every loop. */
uint32_t disp_fshared_waiters(const disp_fshared_t *s);
/* Relaxed atomic counters of the blocks. */
uint64_t disp_fshared_counter(const uint64_t *c);
void disp_fshared_count(uint64_t *c);

typedef struct disp_inst {
    char id[64];
    char endpoint[64]; /* host:port of the agent's one h2c port */
    char worker_id[64];
    uint64_t version;
    int ready;            /* Instance.State == READY */
    uint32_t concurrency; /* from the instance; 0 = take the spec's */
    uint32_t inflight;
    uint64_t idle_since_ms;
    int removed;          /* dropped from the table; freed when inflight reaches 0 */
    int releasing;        /* Release sent */
    uint32_t gen;         /* watch snapshot generation that last saw it */
    uint64_t acquired_ms; /* when our own Acquire returned it (0 = learned from the watch) */
    uint64_t born_ms;     /* when this table first heard of it: the function's scale-ups */
    int reserved;         /* Instance.Kind RESERVED: picked last, never released here */
    int overloaded;       /* Instance.overloaded from the watch: its agent reported OVERLOAD, not RECOVERED */
    struct disp_fn *fn;
    disp_ishared_t *sh;   /* what every loop's replica of it shares: calls in flight, releasing */
    char direct[64];      /* Instance.direct_endpoint: the pod's direct port for meshes ("" = none) */
} disp_inst_t;

/* A call held while its function has no capacity. Intrusive, owned by the call. */
typedef struct disp_waiter {
    struct disp_waiter *prev, *next;
    uint64_t deadline_ms;
    int queued;
} disp_waiter_t;

typedef struct {
    uint64_t version;
    uint32_t concurrency; /* per instance; 0 = unlimited */
    uint32_t min_instances, max_instances;
    uint32_t reserved; /* FunctionSpec.reserved: kept by the worker managers, not by us */
    uint32_t timeout_ms, cold_start_timeout_ms, idle_timeout_ms, max_duration_ms;
    uint64_t max_body_bytes;
    uint32_t async_concurrency; /* async tasks claimed at once */
    uint32_t async_timeout_ms;  /* one task attempt's limit, told to the agent */
    uint64_t async_max_result;  /* bytes of a task's result body, told to the agent */
    uint64_t memory_bytes;      /* Resources.memory_bytes (0: none given): placement's fit test */
    uint32_t cpu_milli;         /* Resources.cpu_millis (0: unlimited): placement's charge */
} disp_fn_params_t;

typedef struct disp_fn {
    char name[64];
    size_t name_len;
    int known; /* a spec arrived (instances can come before their function) */
    disp_fn_params_t p;
    uint8_t *spec_pb; /* packed FunctionSpec, sent with Acquire */
    size_t spec_len;
    disp_inst_t **inst;
    size_t ninst, capinst;
    disp_waiter_t waiters; /* sentinel of a FIFO */
    uint32_t nwaiters;
    uint32_t acquiring; /* Acquire calls in flight */
    uint64_t acquire_failed_at_ms;
    faas_timer_t acquire_retry; /* its worker manager was not reached: Acquire again soon */
    int acquire_retry_armed;
    uint64_t unreachable_since_ms; /* first of the current run of unreached Acquires; 0: none */
    uint32_t gen;
    disp_fshared_t *sh;           /* what every loop shares of it (held calls, counters) */
    char need_rid[72];            /* the primary: the request id of a replica's last ask */
    uint64_t elastic_asked_ms;    /* a replica: when it last asked the primary for an elastic one */
    char **services[DISP_NPROTO]; /* routing keys the spec declares (gRPC, Thrift services) */
    size_t nservices[DISP_NPROTO];
    /* async tasks (tasks.c): one ClaimTasks in flight, polled by claim_timer */
    struct faas_timer claim_timer;
    int claiming;
    uint64_t claim_fast_until_ms;
    /* endpoints.c: the function's process-wide call rate and mode (shared by every loop
     * thread's replica of this entry; looked up once, never freed) */
    struct disp_ep_fn *ep;
} disp_fn_t;

/* One routing key -> function entry (open addressing). */
typedef struct {
    disp_fn_t *fn;
    const char *key; /* the function's own copy */
    size_t len;
    int proto;
} disp_route_ent_t;

typedef struct {
    disp_fn_t **fns;
    size_t nfns, capfns;
    /* name -> function, open addressing (functions are never removed): lookups run
     * on every request and the table keeps every function ever seen */
    disp_fn_t **index;
    size_t index_cap; /* a power of two, > 2 * nfns */
    uint32_t queue_max;
    /* (protocol, service) -> function, rebuilt on the first lookup after a spec changed */
    disp_route_ent_t *routes;
    size_t routes_cap;
    int routes_dirty;
} disp_table_t;

void disp_table_init(disp_table_t *t, uint32_t queue_max);
/* Frees every function and instance (in-flight bookkeeping is dropped). */
void disp_table_clear(disp_table_t *t);

disp_fn_t *disp_fn_find(disp_table_t *t, const char *name, size_t len);
/* Finds or creates the entry (unknown until disp_fn_set_spec). NULL on OOM or bad name. */
disp_fn_t *disp_fn_get(disp_table_t *t, const char *name, size_t len);
/* Installs a spec; takes ownership of spec_pb (malloc'd, may be NULL). */
void disp_fn_set_spec(disp_table_t *t, disp_fn_t *fn, const disp_fn_params_t *p, uint8_t *spec_pb, size_t spec_len);
/* Marks the function gone: it answers 404 again; instances stay until released. */
void disp_fn_forget(disp_table_t *t, disp_fn_t *fn);
/* Replaces the routing keys fn declares for proto (copied). 0 or -1 on OOM. */
int disp_fn_set_services(disp_table_t *t, disp_fn_t *fn, disp_proto_t proto, char *const *names, size_t n);
/* The known function a routing key names (see disp_route), or NULL. A service declared
 * by two functions routes to the one that came first into the table. */
disp_fn_t *disp_route_find(disp_table_t *t, disp_proto_t proto, const char *key, size_t len);

/* Adds or updates an instance. NULL on OOM. */
disp_inst_t *disp_inst_put(disp_fn_t *fn, const char *id, const char *endpoint, const char *worker_id, uint64_t version,
                           int ready, uint32_t concurrency, uint64_t now_ms);
/* Adds or updates the instance a discovery INSTANCE_PUT describes, with its state, kind
 * and overloaded flag. NULL on OOM. */
disp_inst_t *disp_inst_learn(disp_fn_t *fn, const Faas__Instance *pi, uint64_t now_ms);
disp_inst_t *disp_inst_find(disp_table_t *t, const char *id);
/* Drops an instance from its function. Returns 1 if it was freed now (no request in
 * flight), 0 if the last disp_inst_end will free it. */
int disp_inst_remove(disp_inst_t *inst);
/* Effective per-instance limit (0 = unlimited). */
uint32_t disp_inst_limit(const disp_inst_t *inst);

/* Least in-flight READY instance of the function's current version with capacity,
 * elastic first: a reserved one only when no elastic instance can take the call.
 * Within a kind, one not overloaded comes before any overloaded one. */
disp_inst_t *disp_pick(disp_fn_t *fn);
/* 1 when a call just went to a reserved instance and an elastic one should be acquired:
 * none is on its way (no Acquire in flight) and max_instances leaves room. */
int disp_elastic_wanted(const disp_fn_t *fn);
/* Counts one call on it: 0, or -1 if another loop took its last slot meanwhile or it
 * is being released (pick again). */
int disp_inst_begin(disp_inst_t *inst);
/* Ends one request; returns 1 if this freed a removed instance (do not touch it). */
int disp_inst_end(disp_inst_t *inst, uint64_t now_ms);

/* Queues w (deadline = now + timeout). 0, or -1 when the queue is full (queue_max
 * held calls of fn on every loop together). */
int disp_wait_push(disp_table_t *t, disp_fn_t *fn, disp_waiter_t *w, uint64_t now_ms, uint32_t timeout_ms);
void disp_wait_remove(disp_fn_t *fn, disp_waiter_t *w);
/* The oldest waiter, unlinked, its place in the shared count of held calls already
 * given up by the caller (disp_serve_held); NULL if none. */
disp_waiter_t *disp_wait_pop_taken(disp_fn_t *fn);
/* Oldest waiter, unlinked; NULL if none. */
disp_waiter_t *disp_wait_pop(disp_fn_t *fn);
/* Unlinks the first waiter whose deadline has passed; NULL if none. */
disp_waiter_t *disp_wait_pop_expired(disp_fn_t *fn, uint64_t now_ms);

/* How many new Acquire calls the waiters need now, counting those in flight:
 * one for any number of waiters when instances are unlimited, ceil(waiters /
 * concurrency) otherwise, capped by max_instances. */
uint32_t disp_acquire_needed(const disp_fn_t *fn);

/* Fills out[] (up to cap) with instances to release now: no request in flight and
 * either of an old version, of a forgotten function, or idle past idle_timeout_ms
 * (keeping min_instances of the current version). Marks them releasing. Reserved
 * instances are never listed (their worker manager drains them); an idle one is held
 * while the function's newest elastic instance is younger than idle_timeout_ms, so a
 * sawtooth load does not release what it will acquire again at the next peak. */
size_t disp_idle_collect(disp_table_t *t, uint64_t now_ms, disp_inst_t **out, size_t cap);

/* Called when an instance is freed (tests watch it). */
extern void (*disp_inst_free_hook)(disp_inst_t *inst);

/* ---- placement of a cold start (place.c, pure: callers pass now_ms) ----
 * What this gateway knows of one worker manager's host: its last report (Worker) and
 * what the gateway itself did there since, so a burst spreads before the next report. */
typedef struct {
    uint32_t pool_ready; /* as reported, less the warm pods we took since */
    uint32_t cpus_milli, cpu_free_milli;
    uint64_t mem_total, mem_free; /* all four 0: the worker reports no load */
    uint32_t charge_cpu_milli;    /* Acquires we placed here since its last report */
    uint64_t charge_mem;
    uint64_t charged_ms;    /* when the first of those charges was made; 0: none */
    uint64_t down_until_ms; /* an Acquire did not reach it: skipped until then */
    uint32_t backoff_ms;    /* the last down period; doubles, reset by a success */
} disp_place_t;

/* What one instance of the function asks of a host. */
typedef struct {
    uint32_t cpu_milli; /* charged per Acquire: the spec's CPU quota, else DISP_PLACE_CPU_CHARGE */
    uint64_t mem_bytes; /* the spec's memory limit; 0 = none given (no fit test) */
} disp_place_need_t;

typedef struct {
    char id[64], addr[128];
    uint32_t gen;
    disp_place_t pl;
} disp_worker_t;

#define DISP_PLACE_CPU_CHARGE 100           /* milli-cores per Acquire when the spec sets none */
#define DISP_PLACE_MEM_CHARGE (64ull << 20) /* bytes per Acquire when the spec sets no limit */
#define DISP_PLACE_CHARGE_MS 5000           /* charges older than this are dropped (no report came) */
#define DISP_PLACE_BACKOFF_MIN_MS 1000
#define DISP_PLACE_BACKOFF_MAX_MS 10000

/* The worker's placement key, higher is better (docs/scaling.md "Placing a cold start"). */
uint64_t disp_place_score(const disp_place_t *w, const disp_place_need_t *need, uint64_t now_ms);
/* The best of ws[0..n), ties going to the first from ws[start % n] on; NULL if n == 0. */
disp_worker_t *disp_place_pick(disp_worker_t *ws, size_t n, size_t start, const disp_place_need_t *need,
                               uint64_t now_ms);
/* 1 if the worker is not marked down at now_ms. */
int disp_place_up(const disp_place_t *w, uint64_t now_ms);
/* How many of ws[0..n) are up. */
size_t disp_place_nup(const disp_worker_t *ws, size_t n, uint64_t now_ms);
/* An Acquire was sent there: a warm pod taken, need charged until the next report. */
void disp_place_charge(disp_place_t *w, const disp_place_need_t *need, uint64_t now_ms);
/* The Acquire sent there never reached it: its charge back, down for a backoff. */
void disp_place_unreached(disp_place_t *w, const disp_place_need_t *need, uint64_t now_ms);
/* An Acquire there succeeded: up, backoff over. */
void disp_place_reached(disp_place_t *w);
/* A WORKER_PUT: the new report replaces the old and the charges; a down mark ends
 * (the worker renewed its lease), the backoff length is kept until a success. */
void disp_place_report(disp_place_t *w, const Faas__Worker *pw);

/* Deadlines: common/theap.h timers on faas_now_ms's clock, any length, exact to the ms. */
typedef faas_timer_t disp_timer_t;

/* ---- loop-side glue: call.c (calls), dispatcher.c (state, queue, idle), control.c ---- */

struct disp_call {
    disp_proto_t proto;
    const disp_sink_t *sink;
    void *owner;
    h2b_pair_t *pair; /* local calls: ours (NULL once released); bridged: the caller's stream */
    int bridged;
    h2b_hdrs_t hdrs; /* what the agent gets, in the pair's arena */
    disp_fn_t *fn;
    disp_inst_t *inst; /* while counted in its in-flight */
    disp_waiter_t wait;
    disp_timer_t wait_timer, deadline_timer;
    uint64_t start_us, deadline_ms;
    char rid[72];
    int started; /* the response head reached the sink */
    int ended;   /* end or error delivered: the sink hears nothing more */
    int closed;  /* the front end let go (local) or the pair was freed (bridged) */
    int async;
    uint8_t retries;            /* times it was sent elsewhere: its instance was unreachable */
    uint64_t agent_deadline_ms; /* nonzero: sent as faas-deadline-ms (a task's run) */
    struct disp_call *next_free;
};

/* The loop-side state, one per gateway. */
typedef struct {
    h2o_context_t *ctx;
    h2o_loop_t *loop;
    disp_config_t cfg;
    disp_table_t table;
    faas_theap_t timers;
    h2o_timeout_t timer_h2o; /* one entry, due when the heap's earliest is */
    h2o_timeout_entry_t timer_entry;
    disp_call_t *frees; /* closed calls, freed at the end of the iteration */
    h2o_timeout_entry_t free_entry;
    uint32_t snap_gen;
    int synced; /* a snapshot completed at least once */
} disp_state_t;

/* Each loop thread's own (docs/threads.md). */
extern __thread disp_state_t disp_g;

/* The primary loop's counters, read by /metrics on any loop: relaxed atomics. */
typedef struct {
    uint64_t cold_starts, acquire_failures;
    uint64_t acquires_abandoned; /* Acquires whose worker's lease lapsed before it answered */
    uint64_t acquire_retries;    /* Acquires re-placed at once on another worker (one was not reached) */
} disp_counters_t;
extern disp_counters_t disp_ctr;
#define DISP_COUNT(field, n) __atomic_add_fetch(&disp_ctr.field, (n), __ATOMIC_RELAXED)
#define DISP_READ(field) __atomic_load_n(&disp_ctr.field, __ATOMIC_RELAXED)

/* dispatcher.c: the loop side without the control threads (tests start it alone). */
void disp_loop_init(h2o_context_t *ctx, const disp_config_t *cfg);
/* 1 on the primary loop (or the only one). */
#define DISP_PRIMARY() (disp_tidx == 0)
/* Arms a dispatcher timer on the loop (at_ms on faas_now_ms's clock). */
void disp_timer_start(disp_timer_t *t, uint64_t at_ms);
void disp_timer_stop(disp_timer_t *t);

/* dispatcher.c: a call went to a reserved instance of fn: counts it, and starts an
 * elastic instance for the calls after it unless one is on its way (docs/scaling.md). */
void disp_on_reserved_call(disp_fn_t *fn, const char *rid);
/* dispatcher.c, the primary: the elastic instance a reserved call may want. */
void disp_on_reserved_call_elastic(disp_fn_t *fn, const char *rid);

/* call.c: a call held for fn got an instance / can no longer expect one. */
void disp_call_send(disp_call_t *c, disp_inst_t *inst);
/* call.c: the same, the call already counted on inst (disp_inst_begin). */
void disp_call_send_begun(disp_call_t *c, disp_inst_t *inst);
/* dispatcher.c: this loop's held calls of fn go to instances with room (no Acquire). */
void disp_serve_held(disp_fn_t *fn);
void disp_call_fail(disp_call_t *c, faas_err_t kind, const char *what);
/* call.c: h2b's on_unsent hook: re-routes a call whose agent refused the connect. */
int disp_call_unsent(h2b_pair_t *p);
/* call.c: faas_gateway_instances_unreachable_total, faas_gateway_calls_rerouted_total. */
void disp_call_metrics(FILE *out);

/* control.c: threads and their messages. */
int disp_control_start(const char **err);
/* control.c: this loop's receiver of control messages, as loop number disp_tidx. */
void disp_control_attach(h2o_loop_t *loop);
/* control.c, a replica loop: fn has calls held here; the primary acquires for them. */
void disp_control_need(disp_fn_t *fn, const char *rid);
/* control.c, a replica loop: a call of fn just went to a reserved instance. */
void disp_control_elastic(disp_fn_t *fn, const char *rid);
/* control.c, the primary: the other loops holding calls of fn fail them (kind, what)
 * unless they have an instance to wait for. */
void disp_control_fail_others(disp_fn_t *fn, faas_err_t kind, const char *what);
/* control.c: capacity of fn was freed here; the other loops holding its calls look. */
void disp_control_wake_others(disp_fn_t *fn);
/* control.c, a replica loop: a task of fn was submitted; the primary claims. */
void disp_control_submitted(const char *fn, size_t len);
/* Asks a worker manager for an instance of fn (current spec). */
int disp_control_acquire(disp_fn_t *fn, const char *request_id);
void disp_control_release(disp_inst_t *inst, const char *reason);
/* How many known workers are not marked down (an Acquire to them went unreached). */
size_t disp_control_workers_up(void);

/* dispatcher.c: called by control.c and call.c on the loop. */
void disp_on_instance_ready(disp_fn_t *fn);
void disp_on_acquire_failed(disp_fn_t *fn, const char *why);
/* The worker manager was not reached: held calls wait (their own deadlines) for a retry. */
void disp_on_acquire_unreachable(disp_fn_t *fn, const char *why);
/* A replica loop, told by the primary: its held calls of fn fail unless an instance is
 * there to wait for. */
void disp_fail_held(disp_fn_t *fn, faas_err_t kind, const char *what);
/* The function was deleted: it answers 404, held calls too. */
void disp_on_function_deleted(disp_fn_t *fn);
/* Queues c for fn (cold start); fails it when the queue is full or no worker exists. */
void disp_hold(disp_call_t *c, disp_fn_t *fn);

/* tasks.c: starts polling fn's queued async tasks (its spec arrived). */
void disp_tasks_watch(disp_fn_t *fn);

/* callbacks.c: POSTs finished tasks to their X-Callback-Url. */
/* Starts polling Discovery/ClaimCallbacks (disp_start calls it). */
void disp_callbacks_start(void);
/* faas_gateway_task_callbacks_total. */
void disp_callbacks_metrics(FILE *out);

/* faas-task-error and a reported delivery error, in bytes. */
#define DISP_CB_ERROR_MAX 512

/* A callback URL split for the client (the gateway checked it at submission). */
typedef struct {
    int tls;               /* https */
    char host[256];        /* what is resolved and named to TLS: no IPv6 brackets */
    uint16_t port;         /* 80 / 443 unless given */
    const char *authority; /* host[:port] as written, for the host header (into the URL) */
    size_t authority_len;
    const char *target; /* path and query as written, may be "" or start with '?' */
    size_t target_len;
} disp_cb_url_t;
/* Splits an absolute http(s) URL; 0, or -1 with *err. */
int disp_cb_url_parse(const char *url, disp_cb_url_t *u, const char **err);
/* 1 if a result header must not be passed on: hop-by-hop, proxy-*, content-length
 * (recomputed), host, and the faas-* headers the callback sets itself. */
int disp_cb_header_dropped(const char *name, size_t len);
/* Copies in as a header value into out (cap >= 1): bytes other than visible ASCII become
 * spaces, outer spaces are trimmed, cut at cap - 1 bytes; its length. */
size_t disp_cb_sanitize(char *out, size_t cap, const char *in);
/* "succeeded", "cancelled", else "failed": the faas-task-status of a finished task. */
const char *disp_cb_task_status(int status);
/* The POST's head for task t and its result r (NULL when it ended without one):
 * request line, host, content-length of r's body, faas-request-id, faas-task-status,
 * faas-result-status (with r), faas-task-error (unless it succeeded), r's headers but
 * the dropped ones and any that could break the head. Malloc'd, *len set; NULL on OOM. */
char *disp_cb_request_head(const disp_cb_url_t *u, const Faas__Task *t, const Faas__TaskResult *r, size_t *len);

/* resolve.c: the table changed (a function arrived, a snapshot ended): pending
 * resolutions check again. */
void disp_resolve_changed(void);
/* resolve.c: faas_gateway_route_misses_total and faas_gateway_ready. */
void disp_resolve_metrics(FILE *out);

/* h2b_h2o.c: installs the bridge's I/O seam on the loop. */
void disp_h2b_init(h2o_loop_t *loop);

/* ---- endpoints.c: call rates and the endpoints mode (docs/endpoints.md) ----
 * Process-wide, keyed by function name, so every loop thread counts into the same
 * window and reads the same mode whatever table replica it holds. */

/* The window: DISP_EP_NBUCKETS complete buckets of DISP_EP_BUCKET_MS (2 s). */
#define DISP_EP_BUCKET_MS 250
#define DISP_EP_NBUCKETS 8
/* Each bucket packs its bucket number (high 32 bits) with its count (low 32 bits), so
 * one compare-and-swap both starts a new bucket and counts into it: no lock, no count
 * lost to a reset racing an add on another thread. */
typedef struct {
    _Atomic uint64_t b[DISP_EP_NBUCKETS];
} disp_ep_rate_t;

/* Counts n calls at now_ms. Pure but for the atomics. */
void disp_ep_rate_add(disp_ep_rate_t *r, uint64_t now_ms, uint64_t n);
/* Calls per second over the DISP_EP_NBUCKETS buckets before now_ms's own. */
double disp_ep_rate_get(disp_ep_rate_t *r, uint64_t now_ms);
/* The mode after a look at rps: 1 (pods) once rps >= threshold and a pod is there to
 * send to; back to 0 (gateway) below threshold / 2 or with no pod left. */
int disp_ep_mode_next(int pods, double rps, uint32_t threshold, size_t npods);

typedef struct {
    char id[64];
    uint64_t last;    /* its direct_calls when last seen */
    uint64_t seen_ms; /* entries of instances gone for long are dropped */
} disp_ep_inst_t;

typedef struct disp_ep_fn {
    struct disp_ep_fn *next;
    char name[64];
    disp_ep_rate_t rate;
    _Atomic int pods; /* the current mode, moved by disp_ep_mode_next */
    /* under the module's lock (watch events only): direct_calls baselines */
    disp_ep_inst_t *insts;
    size_t ninsts, capinsts;
} disp_ep_fn_t;

/* The function's entry, created on first use; NULL on OOM or a name over 63 bytes. */
disp_ep_fn_t *disp_ep_fn(const char *name, size_t len);
/* Instance id reported cumulative direct calls at now_ms: how many are new since the
 * last report (0 the first time: a gateway that starts late must not count a pod's
 * whole past as one burst). Every loop thread may report the same event: only the
 * first counts it. */
uint64_t disp_ep_direct_delta(disp_ep_fn_t *e, const char *id, uint64_t cumulative, uint64_t now_ms);
/* call.c: one call of fn went through this gateway. */
void disp_ep_count(disp_fn_t *fn);
/* control.c: an INSTANCE_PUT of fn: its direct calls join the rate. */
void disp_ep_instance(disp_fn_t *fn, const Faas__Instance *pi);

#endif
