/* dispatcher/control.c - the control-plane threads of the dispatcher: one discovery
 * Watch (blocking stream, reconnects with backoff) and a small pool running
 * WorkerManager Acquire/Release. They never touch the table: results travel to the
 * loop thread as h2o_multithread messages and are applied there. */
#include "dispatcher/internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/spec.h"
#include "common/util.h"
#include "proto/faas.pb-c.h"

/* Each pool thread makes one blocking call at a time, and every async submission is one
 * (SubmitTask answers only once committed): with 4 threads a c16 burst had at most 4
 * submissions in flight, so discovery's group commit had little to group (419/s, 1.9 tasks
 * per commit; 16 threads: 1,177/s, 3.2 per commit, same loaded machine). */
#define N_WORKERS 16

enum {
    MSG_SNAP_BEGIN,
    MSG_EVENT,
    MSG_ACQ_OK,
    MSG_ACQ_FAIL,
    MSG_RPC,
    /* between loop threads (docs/threads.md) */
    MSG_INST,      /* primary -> replicas: an instance its Acquire returned (resp: packed Instance) */
    MSG_NEED,      /* replica -> primary: calls of fn are held there */
    MSG_ELASTIC,   /* replica -> primary: a call of fn went to a reserved instance */
    MSG_FAIL,      /* primary -> a replica: fail fn's held calls (rc: kind, err: what) */
    MSG_WAKE,      /* -> a replica: capacity of fn was freed elsewhere */
    MSG_RELEASE,   /* replica -> primary: release instance rid (worker, err: reason) */
    MSG_SUBMITTED, /* replica -> primary: a task of fn was submitted */
};

typedef struct {
    h2o_multithread_message_t super;
    int kind;
    Faas__WatchEvent *ev;
    Faas__AcquireReply *reply;
    uint64_t version, ms;
    char fn[64], rid[72], err[200];
    /* MSG_RPC: a discovery call's outcome, for cb on the loop */
    disp_rpc_cb cb;
    void *ud;
    int rc;
    int unreachable; /* MSG_ACQ_FAIL: the worker manager was not reached */
    char worker[64]; /* MSG_ACQ_*: the worker the Acquire went to */
    uint64_t seq;    /* MSG_ACQ_*: the Acquire's number (pending_t) */
    disp_place_need_t need;
    uint8_t *resp;
    size_t rlen;
} ctl_msg_t;

typedef struct job {
    struct job *next;
    int release;
    const char *method; /* a discovery call (disp_discovery_call) */
    disp_rpc_cb cb;
    void *ud;
    char addr[128], fn[64], rid[72], worker[64];
    uint64_t version;
    disp_place_need_t need; /* what placement charged the worker with */
    uint64_t seq;           /* an Acquire's number (pending_t) */
    unsigned dest;          /* a discovery call: the loop its answer goes to */
    uint8_t *pb;
    size_t len;
    uint32_t timeout_ms;
} job_t;

/* The Acquires in flight, loop-thread only. A host that dies without a word leaves its
 * Acquire hanging until the RPC deadline (the cold start timeout + 1 s), after the held
 * calls' own timers: when its lease lapses (WORKER_DELETE) its Acquires are abandoned and
 * placed again on another worker; the late answer is then taken as it comes (an
 * instance is kept, a failure ignored). */
typedef struct pending {
    struct pending *next;
    uint64_t seq;
    char fn[64], worker[64];
    int abandoned;
} pending_t;

static pending_t *pendings;
static uint64_t acq_seq;

/* One receiver per loop thread, registered before the control threads start. */
static h2o_multithread_queue_t *mqs[DISP_MAX_LOOPS];
static h2o_multithread_receiver_t rxs[DISP_MAX_LOOPS];
static unsigned nloops;
static pthread_mutex_t attach_mu = PTHREAD_MUTEX_INITIALIZER;
/* Two job queues, each with a pool of its own: worker-manager calls (Acquire, Release)
 * never wait behind discovery calls (task claims, submissions, reports), which come in
 * thousands a second with thousands of functions (make bench, cp). */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, **tail;
} jobq_t;

static jobq_t wm_q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &wm_q.head};
static jobq_t disc_q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &disc_q.head};

/* the primary loop's only */
static disp_worker_t *workers;
static size_t nworkers, capworkers, rr;

/* ---- channels, shared by the pool threads ----
 * One per worker manager address, refcounted: a channel whose call failed with
 * UNAVAILABLE is retired (closed when its last user is done) so a restarted worker
 * manager is reached at once instead of after grpc's reconnect backoff. */
typedef struct chan {
    struct chan *next;
    char addr[128];
    faas_rpc_channel_t *ch;
    int refs, stale;
    uint64_t opened_ms;
} chan_t;

static pthread_mutex_t chmu = PTHREAD_MUTEX_INITIALIZER;
static chan_t *chans;

static chan_t *chan_get(const char *addr)
{
    pthread_mutex_lock(&chmu);
    chan_t *c = chans;
    while (c != NULL && (c->stale || strcmp(c->addr, addr) != 0))
        c = c->next;
    if (c == NULL && (c = calloc(1, sizeof(*c))) != NULL) {
        snprintf(c->addr, sizeof(c->addr), "%s", addr);
        c->ch = faas_rpc_channel_open(addr);
        c->opened_ms = faas_now_ms();
        c->next = chans;
        chans = c;
    }
    if (c != NULL)
        c->refs++;
    pthread_mutex_unlock(&chmu);
    return c;
}

static void chan_put(chan_t *c, int rc)
{
    pthread_mutex_lock(&chmu);
    /* a channel younger than a second has just been (re)made: keep it */
    if (c->ch == NULL || (rc == FAAS_GRPC_UNAVAILABLE && faas_now_ms() - c->opened_ms > 1000))
        c->stale = 1;
    if (--c->refs == 0 && c->stale) {
        for (chan_t **pp = &chans; *pp != NULL; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        faas_rpc_channel_close(c->ch);
        free(c);
    }
    pthread_mutex_unlock(&chmu);
}

static unsigned loops(void)
{
    return __atomic_load_n(&nloops, __ATOMIC_ACQUIRE);
}

static void post_to(unsigned loop, ctl_msg_t *m)
{
    h2o_multithread_send_message(&rxs[loop], &m->super);
}

/* A message of kind about fn for another loop; NULL on OOM (the message is lost: every
 * one of them is a hint that a timer or the next event repeats). */
static ctl_msg_t *msg_new(int kind, const char *fn, size_t len, const char *rid)
{
    ctl_msg_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->kind = kind;
    snprintf(m->fn, sizeof(m->fn), "%.*s", (int)len, fn);
    snprintf(m->rid, sizeof(m->rid), "%s", rid != NULL ? rid : "");
    return m;
}

/* ---- the discovery list ---- */

/* --discovery's addresses (validated by the gateway's flag parser), and the one the
 * watch uses now: unary discovery calls go there too, so a task submitted and the
 * watch that reports it see the same discovery's memory. */
static char disc_addr[DISP_MAX_DISCOVERY][128];
static unsigned n_disc;
static _Atomic unsigned disc_cur;

static void disc_list_init(const char *list)
{
    n_disc = 0;
    for (const char *p = list; n_disc < DISP_MAX_DISCOVERY;) {
        size_t l = strcspn(p, ",");
        if (l > 0 && l < sizeof(disc_addr[0])) {
            memcpy(disc_addr[n_disc], p, l);
            disc_addr[n_disc++][l] = '\0';
        }
        if (p[l] == '\0')
            break;
        p += l + 1;
    }
    if (n_disc == 0) /* never: the flag parser refuses it; one address as given then */
        snprintf(disc_addr[n_disc++], sizeof(disc_addr[0]), "%s", list);
}

/* The address after i; says so in the log. */
static unsigned disc_next(unsigned i, const char *why)
{
    unsigned next = (i + 1) % n_disc;
    if (next != i)
        FAAS_WARN("event=discovery_switch from=%s to=%s why=%s", disc_addr[i], disc_addr[next], why);
    return next;
}

/* ---- the discovery watch thread ---- */

/* Every loop gets its own copy of each event and applies it to its own table. */
static int on_watch_msg(void *ud, const uint8_t *msg, size_t len)
{
    ctl_msg_t *ms[DISP_MAX_LOOPS];
    unsigned n = loops(), k;
    /* all copies or none: loops that applied an event the others missed would disagree
     * until the next snapshot, so a failure ends the stream and the snapshot after the
     * reconnect rebuilds every table */
    for (k = 0; k < n; k++) {
        if ((ms[k] = calloc(1, sizeof(*ms[k]))) == NULL || (ms[k]->ev = faas__watch_event__unpack(NULL, len, msg)) == NULL)
            break;
        ms[k]->kind = MSG_EVENT;
    }
    if (k < n) {
        FAAS_WARN("event=watch_bad_message len=%zu msg=\"unpack failed; reconnecting\"", len);
        for (unsigned i = 0; i <= k && i < n; i++) {
            if (ms[i] != NULL && ms[i]->ev != NULL)
                faas__watch_event__free_unpacked(ms[i]->ev, NULL);
            free(ms[i]);
        }
        return -1;
    }
    for (k = 0; k < n; k++)
        post_to(k, ms[k]);
    return 0;
}

static void *watch_main(void *arg)
{
    (void)arg;
    unsigned cur = disc_cur;
    const char *addr = disc_addr[cur];
    Faas__WatchRequest wr = FAAS__WATCH_REQUEST__INIT;
    wr.functions = wr.instances = wr.workers = 1;
    size_t len;
    uint8_t *req = faas_pb_pack(&wr.base, &len);
    uint32_t backoff = 100;
    faas_rpc_channel_t *ch = faas_rpc_channel_open(addr);
    for (;;) {
        for (unsigned k = 0, n = loops(); k < n; k++) {
            ctl_msg_t *m = calloc(1, sizeof(*m));
            m->kind = MSG_SNAP_BEGIN;
            post_to(k, m);
        }
        char errbuf[256] = "";
        uint64_t t0 = faas_now_ms();
        int rc = faas_rpc_server_stream(ch, "/faas.Discovery/Watch", req, len, 0, on_watch_msg, NULL, errbuf,
                                        sizeof(errbuf));
        /* a stream that lived a while was healthy: start the backoff over */
        if (faas_now_ms() - t0 > 5000)
            backoff = 100;
        FAAS_WARN("event=watch_ended discovery=%s rc=%d err=\"%s\" retry_ms=%u", addr, rc, errbuf, backoff);
        usleep(backoff * 1000);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
        /* the next stream goes to the next discovery (round robin): every worker manager
         * renews with each, so any of them has the whole picture */
        cur = disc_next(cur, "watch_ended");
        disc_cur = cur;
        addr = disc_addr[cur];
        /* a fresh channel: grpc's own reconnect backoff (up to minutes) must not
         * delay the watch once discovery is back; we pace retries ourselves */
        faas_rpc_channel_close(ch);
        ch = faas_rpc_channel_open(addr);
    }
    return NULL;
}

/* ---- the Acquire/Release pool ---- */

static void run_acquire(job_t *j)
{
    chan_t *c = chan_get(j->addr);
    faas_rpc_channel_t *ch = c != NULL ? c->ch : NULL;
    ctl_msg_t *m = calloc(1, sizeof(*m));
    snprintf(m->fn, sizeof(m->fn), "%s", j->fn);
    snprintf(m->rid, sizeof(m->rid), "%s", j->rid);
    snprintf(m->worker, sizeof(m->worker), "%s", j->worker);
    m->need = j->need;
    m->version = j->version;
    m->seq = j->seq;
    uint64_t t0 = faas_now_us();
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int rc = ch == NULL ? -1
                        : faas_rpc_unary(ch, "/faas.WorkerManager/Acquire", j->pb, j->len, (int)j->timeout_ms + 1000,
                                         &resp, &rlen, m->err, sizeof(m->err));
    m->ms = (faas_now_us() - t0) / 1000;
    /* the worker manager's own UNAVAILABLE (a cold start that failed) comes over a
     * connected channel; a dead or restarting one leaves it unconnected. It bounds a
     * cold start by timeout_ms itself: our deadline, a second later, means no answer
     * at all (a hung or partitioned host) */
    m->unreachable = ch == NULL || (rc == FAAS_GRPC_UNAVAILABLE && !faas_rpc_channel_connected(ch)) ||
                     rc == FAAS_GRPC_DEADLINE_EXCEEDED;
    if (c != NULL)
        chan_put(c, rc);
    if (rc == 0) {
        m->reply = faas__acquire_reply__unpack(NULL, rlen, resp);
        if (m->reply == NULL || m->reply->instance == NULL || m->reply->instance->endpoint[0] == '\0') {
            snprintf(m->err, sizeof(m->err), "bad AcquireReply");
            rc = -1;
        }
    } else if (ch == NULL) {
        snprintf(m->err, sizeof(m->err), "cannot open channel");
    }
    m->kind = rc == 0 ? MSG_ACQ_OK : MSG_ACQ_FAIL;
    free(resp);
    post_to(0, m); /* only the primary acquires */
}

static void run_release(job_t *j)
{
    chan_t *c = chan_get(j->addr);
    faas_rpc_channel_t *ch = c != NULL ? c->ch : NULL;
    uint8_t *resp = NULL;
    size_t rlen = 0;
    char err[200] = "";
    int rc = ch == NULL ? -1
                        : faas_rpc_unary(ch, "/faas.WorkerManager/Release", j->pb, j->len, 5000, &resp, &rlen, err,
                                         sizeof(err));
    if (c != NULL)
        chan_put(c, rc);
    if (rc != 0)
        FAAS_WARN("event=release_failed fn=%s rc=%d err=\"%s\"", j->fn, rc, err);
    free(resp);
}

/* One try of j on discovery addr; 1 if that discovery did not answer at all (no
 * channel, or UNAVAILABLE on a channel never connected: a fast failure, so trying the
 * next one stays within the caller's wait). */
static int discovery_try(job_t *j, const char *addr, ctl_msg_t *m)
{
    chan_t *c = chan_get(addr);
    free(m->resp);
    m->resp = NULL;
    m->err[0] = '\0';
    m->rc = c == NULL || c->ch == NULL ? -1
                                       : faas_rpc_unary(c->ch, j->method, j->pb, j->len, (int)j->timeout_ms, &m->resp,
                                                        &m->rlen, m->err, sizeof(m->err));
    int down = c == NULL || c->ch == NULL || (m->rc == FAAS_GRPC_UNAVAILABLE && !faas_rpc_channel_connected(c->ch));
    if (c == NULL || c->ch == NULL)
        snprintf(m->err, sizeof(m->err), "cannot open a channel to discovery");
    if (c != NULL)
        chan_put(c, m->rc);
    return down;
}

static void run_discovery_call(job_t *j)
{
    ctl_msg_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return; /* the loop never hears back: its caller's bounded wait ends it */
    m->kind = MSG_RPC;
    m->cb = j->cb;
    m->ud = j->ud;
    /* the discovery the watch uses, else the next ones in turn */
    unsigned first = disc_cur;
    for (unsigned k = 0; k < n_disc; k++)
        if (!discovery_try(j, disc_addr[(first + k) % n_disc], m))
            break;
    post_to(j->dest, m);
}

static void *pool_main(void *arg)
{
    jobq_t *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->head == NULL)
            pthread_cond_wait(&q->cv, &q->mu);
        job_t *j = q->head;
        if ((q->head = j->next) == NULL)
            q->tail = &q->head;
        pthread_mutex_unlock(&q->mu);
        if (j->method != NULL)
            run_discovery_call(j);
        else if (j->release)
            run_release(j);
        else
            run_acquire(j);
        free(j->pb);
        free(j);
    }
    return NULL;
}

static void push_job(job_t *j)
{
    jobq_t *q = j->method != NULL ? &disc_q : &wm_q;
    pthread_mutex_lock(&q->mu);
    *q->tail = j;
    q->tail = &j->next;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* ---- loop side ---- */

static disp_worker_t *find_worker(const char *id)
{
    for (size_t k = 0; k < nworkers; k++)
        if (strcmp(workers[k].id, id) == 0)
            return &workers[k];
    return NULL;
}

/* The best worker by place.c's score; ties rotate over successive Acquires. */
static disp_worker_t *pick_worker(const disp_place_need_t *need)
{
    disp_worker_t *best = disp_place_pick(workers, nworkers, rr, need, faas_now_ms());
    rr++;
    return best;
}

size_t disp_control_workers_up(void)
{
    return disp_place_nup(workers, nworkers, faas_now_ms());
}

int disp_control_acquire(disp_fn_t *fn, const char *request_id)
{
    disp_place_need_t need = {.cpu_milli = fn->p.cpu_milli, .mem_bytes = fn->p.memory_bytes};
    disp_worker_t *w = pick_worker(&need);
    if (w == NULL || fn->spec_pb == NULL)
        return -1;
    uint32_t cst = disp_g.cfg.cold_start_timeout_ms
                       ? disp_g.cfg.cold_start_timeout_ms
                       : (fn->p.cold_start_timeout_ms ? fn->p.cold_start_timeout_ms : FAAS_SPEC_DEFAULT_COLD_START_MS);
    Faas__FunctionSpec *spec = faas__function_spec__unpack(NULL, fn->spec_len, fn->spec_pb);
    if (spec == NULL)
        return -1;
    Faas__AcquireRequest ar = FAAS__ACQUIRE_REQUEST__INIT;
    ar.spec = spec;
    ar.request_id = (char *)request_id;
    ar.timeout_ms = cst;
    job_t *j = calloc(1, sizeof(*j));
    j->pb = faas_pb_pack(&ar.base, &j->len);
    faas__function_spec__free_unpacked(spec, NULL);
    snprintf(j->addr, sizeof(j->addr), "%s", w->addr);
    snprintf(j->worker, sizeof(j->worker), "%s", w->id);
    snprintf(j->fn, sizeof(j->fn), "%.*s", (int)fn->name_len, fn->name);
    snprintf(j->rid, sizeof(j->rid), "%s", request_id);
    j->version = fn->p.version;
    j->timeout_ms = cst;
    j->need = need;
    pending_t *pd = calloc(1, sizeof(*pd));
    if (pd != NULL) {
        pd->seq = j->seq = ++acq_seq;
        snprintf(pd->fn, sizeof(pd->fn), "%s", j->fn);
        snprintf(pd->worker, sizeof(pd->worker), "%s", w->id);
        pd->next = pendings;
        pendings = pd;
    }
    disp_place_charge(&w->pl, &need, faas_now_ms());
    push_job(j);
    return 0;
}

/* The primary: asks worker_id's manager to release instance_id. */
static void release_on(const char *worker_id, const char *instance_id, const char *fn, const char *reason)
{
    disp_worker_t *w = find_worker(worker_id);
    if (w == NULL)
        return; /* its worker is gone, and with it the instance */
    Faas__ReleaseRequest rr_ = FAAS__RELEASE_REQUEST__INIT;
    rr_.instance_id = (char *)instance_id;
    rr_.reason = (char *)reason;
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->release = 1;
    j->pb = faas_pb_pack(&rr_.base, &j->len);
    snprintf(j->addr, sizeof(j->addr), "%s", w->addr);
    snprintf(j->fn, sizeof(j->fn), "%s", fn);
    push_job(j);
}

void disp_control_release(disp_inst_t *inst, const char *reason)
{
    char fn[64];
    snprintf(fn, sizeof(fn), "%.*s", (int)inst->fn->name_len, inst->fn->name);
    /* the shared mark keeps every loop off it until discovery drops it */
    disp_ishared_mark_releasing(inst->sh);
    if (DISP_PRIMARY()) {
        release_on(inst->worker_id, inst->id, fn, reason);
        return;
    }
    ctl_msg_t *m = msg_new(MSG_RELEASE, fn, strlen(fn), inst->id);
    if (m == NULL)
        return;
    snprintf(m->worker, sizeof(m->worker), "%s", inst->worker_id);
    snprintf(m->err, sizeof(m->err), "%s", reason); /* reasons are short static words */
    post_to(0, m);
}

void disp_control_need(disp_fn_t *fn, const char *rid)
{
    ctl_msg_t *m = msg_new(MSG_NEED, fn->name, fn->name_len, rid);
    if (m != NULL)
        post_to(0, m);
}

void disp_control_elastic(disp_fn_t *fn, const char *rid)
{
    ctl_msg_t *m = msg_new(MSG_ELASTIC, fn->name, fn->name_len, rid);
    if (m != NULL)
        post_to(0, m);
}

void disp_control_submitted(const char *fn, size_t len)
{
    ctl_msg_t *m = msg_new(MSG_SUBMITTED, fn, len, NULL);
    if (m != NULL)
        post_to(0, m);
}

/* Sends kind to every other loop whose bit in fn's wait mask is set. */
static void to_holders(disp_fn_t *fn, int kind, faas_err_t err, const char *what)
{
    for (unsigned k = 0, n = loops(); k < n; k++) {
        if (k == disp_tidx || !(__atomic_load_n(&fn->sh->waitmask[k / 64], __ATOMIC_RELAXED) & (1ull << (k % 64))))
            continue;
        ctl_msg_t *m = msg_new(kind, fn->name, fn->name_len, NULL);
        if (m == NULL)
            return;
        m->rc = (int)err;
        snprintf(m->err, sizeof(m->err), "%s", what != NULL ? what : "");
        post_to(k, m);
    }
}

void disp_control_fail_others(disp_fn_t *fn, faas_err_t kind, const char *what)
{
    to_holders(fn, MSG_FAIL, kind, what);
}

void disp_control_wake_others(disp_fn_t *fn)
{
    to_holders(fn, MSG_WAKE, 0, NULL);
}

/* The primary tells the replicas of an instance its Acquire returned, so their held
 * calls need not wait for discovery's watch event. */
static void announce(const char *fn, const Faas__Instance *pi, uint64_t version)
{
    for (unsigned k = 1, n = loops(); k < n; k++) {
        ctl_msg_t *m = msg_new(MSG_INST, fn, strlen(fn), NULL);
        if (m == NULL)
            return;
        m->resp = faas_pb_pack(&pi->base, &m->rlen);
        m->version = version;
        post_to(k, m);
    }
}

/* A replica: the instance the primary announced. */
static void instance_announced(ctl_msg_t *m)
{
    Faas__Instance *pi = m->resp != NULL ? faas__instance__unpack(NULL, m->rlen, m->resp) : NULL;
    disp_fn_t *fn = pi != NULL ? disp_fn_get(&disp_g.table, m->fn, strlen(m->fn)) : NULL;
    if (fn != NULL && disp_inst_find(&disp_g.table, pi->id) != NULL) {
        /* the watch told this loop first: its state (draining, overloaded) is newer */
        faas__instance__free_unpacked(pi, NULL);
        disp_serve_held(fn);
        return;
    }
    disp_inst_t *inst = fn != NULL ? disp_inst_put(fn, pi->id, pi->endpoint, pi->worker_id,
                                                   pi->version ? pi->version : m->version, 1, pi->concurrency,
                                                   faas_now_ms())
                                   : NULL;
    if (inst != NULL) {
        inst->gen = disp_g.snap_gen;
        inst->acquired_ms = faas_now_ms();
        inst->reserved = pi->kind == FAAS__INSTANCE__KIND__RESERVED;
        disp_on_instance_ready(fn);
    }
    if (pi != NULL)
        faas__instance__free_unpacked(pi, NULL);
}

/* Messages from the other loops. */
static void loop_message(ctl_msg_t *m)
{
    if (m->kind == MSG_INST) {
        instance_announced(m);
        return;
    }
    if (m->kind == MSG_SUBMITTED) {
        disp_tasks_submitted(m->fn, strlen(m->fn));
        return;
    }
    if (m->kind == MSG_RELEASE) {
        release_on(m->worker, m->rid, m->fn, m->err);
        return;
    }
    disp_fn_t *fn = disp_fn_find(&disp_g.table, m->fn, strlen(m->fn));
    if (fn == NULL)
        return;
    switch (m->kind) {
    case MSG_NEED:
        snprintf(fn->need_rid, sizeof(fn->need_rid), "%s", m->rid);
        disp_on_instance_ready(fn); /* serves its own, then acquires for all */
        /* none needed while the held calls fit instances with room: the replicas that
         * hold them look again (a WAKE never makes a NEED: no ping-pong) */
        if (disp_fshared_waiters(fn->sh) > fn->nwaiters && disp_acquire_needed(fn) == 0)
            disp_control_wake_others(fn);
        break;
    case MSG_ELASTIC:
        disp_on_reserved_call_elastic(fn, m->rid);
        break;
    case MSG_FAIL:
        disp_fail_held(fn, (faas_err_t)m->rc, m->err);
        break;
    case MSG_WAKE:
        disp_serve_held(fn);
        break;
    }
}

static void worker_put(const Faas__Worker *pw)
{
    disp_worker_t *w = find_worker(pw->id);
    if (w == NULL) {
        if (nworkers == capworkers) {
            disp_worker_t *nw = realloc(workers, (capworkers ? capworkers * 2 : 8) * sizeof(*workers));
            if (nw == NULL) {
                FAAS_ERROR("event=worker_oom worker=%s", pw->id);
                return;
            }
            workers = nw;
            capworkers = capworkers ? capworkers * 2 : 8;
        }
        w = &workers[nworkers++];
        memset(w, 0, sizeof(*w));
        snprintf(w->id, sizeof(w->id), "%s", pw->id);
    }
    snprintf(w->addr, sizeof(w->addr), "%s", pw->address);
    disp_place_report(&w->pl, pw); /* it renewed its lease: up again, charges replaced */
    w->gen = disp_g.snap_gen;
}

static void worker_delete(const char *id)
{
    for (size_t k = 0; k < nworkers; k++)
        if (strcmp(workers[k].id, id) == 0) {
            workers[k] = workers[--nworkers];
            break;
        }
    for (pending_t *pd = pendings; pd != NULL; pd = pd->next) {
        disp_fn_t *fn;
        if (pd->abandoned || strcmp(pd->worker, id) != 0 || (fn = disp_fn_find(&disp_g.table, pd->fn, strlen(pd->fn))) == NULL)
            continue;
        pd->abandoned = 1;
        if (fn->acquiring > 0)
            fn->acquiring--;
        DISP_COUNT(acquires_abandoned, 1);
        FAAS_WARN("event=acquire_abandoned fn=%s worker=%s msg=\"its lease lapsed before it answered; placed again\"",
                  pd->fn, id);
        disp_on_acquire_unreachable(fn, "the worker manager's host stopped answering");
    }
}

/* Takes the Acquire numbered seq off the pending list: 1 if it had been abandoned. */
static int pending_done(uint64_t seq)
{
    for (pending_t **pp = &pendings; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->seq == seq) {
            pending_t *pd = *pp;
            int abandoned = pd->abandoned;
            *pp = pd->next;
            free(pd);
            return abandoned;
        }
    return 0;
}

static void function_put(const Faas__FunctionSpec *s)
{
    disp_fn_t *fn = disp_fn_get(&disp_g.table, s->name, strlen(s->name));
    if (fn == NULL)
        return;
    disp_fn_params_t p = {
        .version = s->version,
        .concurrency = s->concurrency,
        .min_instances = s->min_instances,
        .max_instances = s->max_instances,
        .reserved = s->reserved,
        .timeout_ms = s->timeout_ms ? s->timeout_ms : FAAS_SPEC_DEFAULT_TIMEOUT_MS,
        .cold_start_timeout_ms = s->cold_start_timeout_ms ? s->cold_start_timeout_ms : FAAS_SPEC_DEFAULT_COLD_START_MS,
        .idle_timeout_ms = s->idle_timeout_ms ? s->idle_timeout_ms : FAAS_SPEC_DEFAULT_IDLE_TIMEOUT_MS,
        .max_duration_ms = s->max_duration_ms,
        .memory_bytes = s->resources != NULL ? s->resources->memory_bytes : 0,
        .cpu_milli = s->resources != NULL ? s->resources->cpu_millis : 0,
        .max_body_bytes = s->max_body_bytes,
        .async_concurrency =
            s->async != NULL && s->async->concurrency ? s->async->concurrency : FAAS_SPEC_DEFAULT_ASYNC_CONCURRENCY,
        .async_timeout_ms =
            s->async != NULL && s->async->timeout_ms ? s->async->timeout_ms : FAAS_SPEC_DEFAULT_ASYNC_TIMEOUT_MS,
        .async_max_result = s->async != NULL && s->async->max_result_bytes ? s->async->max_result_bytes
                                                                           : FAAS_SPEC_DEFAULT_ASYNC_MAX_RESULT_BYTES,
    };
    if (fn->known && fn->p.version != p.version)
        FAAS_INFO("event=new_version fn=%s version=%" PRIu64 " old=%" PRIu64, s->name, p.version, fn->p.version);
    size_t len;
    uint8_t *pb = faas_pb_pack(&s->base, &len);
    disp_fn_set_spec(&disp_g.table, fn, &p, pb, len);
    if (disp_fn_set_services(&disp_g.table, fn, DISP_PROTO_GRPC, s->grpc_services, s->n_grpc_services) != 0 ||
        disp_fn_set_services(&disp_g.table, fn, DISP_PROTO_THRIFT, s->thrift_services, s->n_thrift_services) != 0)
        FAAS_ERROR("event=routes_oom fn=%s", s->name);
    fn->gen = disp_g.snap_gen;
    disp_on_instance_ready(fn);
    if (DISP_PRIMARY()) /* the primary claims every function's tasks */
        disp_tasks_watch(fn);
    disp_resolve_changed();
}

static void instance_put(const Faas__Instance *pi)
{
    disp_fn_t *fn = disp_fn_get(&disp_g.table, pi->function, strlen(pi->function));
    if (fn == NULL)
        return;
    disp_inst_t *inst = disp_inst_learn(fn, pi, faas_now_ms());
    if (inst == NULL)
        return;
    inst->gen = disp_g.snap_gen;
    if (pi->state == FAAS__INSTANCE__STATE__DRAINING)
        inst->ready = 0;
    disp_ep_instance(fn, pi); /* its direct calls join the endpoints API's rate */
    disp_on_instance_ready(fn);
}

/* After a (re)connect: whatever the new snapshot did not mention is gone. */
static void sweep(void)
{
    disp_g.synced = 1;
    for (size_t i = 0; i < disp_g.table.nfns; i++) {
        disp_fn_t *fn = disp_g.table.fns[i];
        if (fn->known && fn->gen != disp_g.snap_gen)
            disp_on_function_deleted(fn);
        for (size_t k = 0; k < fn->ninst;) {
            disp_inst_t *inst = fn->inst[k];
            /* an instance we just acquired may not have reached discovery yet (the worker
             * reports it with its next heartbeat): give it a lease's grace */
            int fresh = inst->acquired_ms != 0 && faas_now_ms() - inst->acquired_ms < 5000;
            if (inst->gen != disp_g.snap_gen && !fresh)
                disp_inst_remove(inst); /* swaps the last one into k */
            else
                k++;
        }
    }
    for (size_t k = 0; DISP_PRIMARY() && k < nworkers;) /* the workers are the primary's */
        if (workers[k].gen != disp_g.snap_gen)
            workers[k] = workers[--nworkers];
        else
            k++;
    disp_resolve_changed();
}

static void apply_event(const Faas__WatchEvent *ev)
{
    switch (ev->type) {
    case FAAS__WATCH_EVENT__TYPE__SNAPSHOT_END:
        sweep();
        break;
    case FAAS__WATCH_EVENT__TYPE__FUNCTION_PUT:
        if (ev->function != NULL && ev->function->name[0] != '\0')
            function_put(ev->function);
        break;
    case FAAS__WATCH_EVENT__TYPE__FUNCTION_DELETE:
        if (ev->function != NULL) {
            disp_fn_t *fn = disp_fn_find(&disp_g.table, ev->function->name, strlen(ev->function->name));
            if (fn != NULL)
                disp_on_function_deleted(fn);
        }
        break;
    case FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT:
        if (ev->instance != NULL && ev->instance->function[0] != '\0')
            instance_put(ev->instance);
        break;
    case FAAS__WATCH_EVENT__TYPE__INSTANCE_DELETE:
        if (ev->instance != NULL) {
            disp_inst_t *inst = disp_inst_find(&disp_g.table, ev->instance->id);
            if (inst != NULL)
                disp_inst_remove(inst);
        }
        break;
    case FAAS__WATCH_EVENT__TYPE__WORKER_PUT: /* placement is the primary's */
        if (ev->worker != NULL && DISP_PRIMARY())
            worker_put(ev->worker);
        break;
    case FAAS__WATCH_EVENT__TYPE__WORKER_DELETE:
        if (ev->worker != NULL && DISP_PRIMARY())
            worker_delete(ev->worker->id);
        break;
    default:
        break;
    }
}

static void acquired(ctl_msg_t *m)
{
    int abandoned = pending_done(m->seq);
    disp_fn_t *fn = disp_fn_find(&disp_g.table, m->fn, strlen(m->fn));
    if (fn == NULL || (abandoned && m->kind == MSG_ACQ_FAIL))
        return; /* its calls were placed again when the worker's lease lapsed */
    if (fn->acquiring > 0 && !abandoned)
        fn->acquiring--;
    disp_worker_t *w = find_worker(m->worker); /* NULL once its lease lapsed */
    if (w != NULL && m->kind == MSG_ACQ_FAIL && m->unreachable) {
        disp_place_unreached(&w->pl, &m->need, faas_now_ms());
        FAAS_WARN("event=worker_down worker=%s for_ms=%u fn=%s", w->id, w->pl.backoff_ms, m->fn);
    } else if (w != NULL) {
        disp_place_reached(&w->pl); /* it answered, even if the function failed */
    }
    if (m->kind == MSG_ACQ_FAIL) {
        DISP_COUNT(acquire_failures, 1);
        FAAS_ERROR("event=cold_start_failed request_id=%s fn=%s worker=%s ms=%" PRIu64 " err=\"%s\"", m->rid, m->fn,
                   m->worker, m->ms, m->err);
        char why[256]; /* the worker manager's reason, never a transport error's addresses */
        faas_cold_start_public(why, sizeof(why), m->fn, m->err);
        /* not reached (restarting after a crash, shutting down): not the function's fault */
        if (m->unreachable)
            disp_on_acquire_unreachable(fn, why);
        else
            disp_on_acquire_failed(fn, why);
        return;
    }
    fn->unreachable_since_ms = 0;
    const Faas__Instance *pi = m->reply->instance;
    disp_inst_t *inst = disp_inst_put(fn, pi->id, pi->endpoint, pi->worker_id, pi->version ? pi->version : m->version,
                                      1, pi->concurrency, faas_now_ms());
    if (inst != NULL) {
        inst->gen = disp_g.snap_gen;
        inst->acquired_ms = faas_now_ms();
        inst->reserved = pi->kind == FAAS__INSTANCE__KIND__RESERVED;
    }
    announce(m->fn, pi, m->version);
    DISP_COUNT(cold_starts, 1);
    FAAS_INFO("event=cold_start request_id=%s fn=%s ms=%" PRIu64 " instance=%s worker=%s total_us=%u", m->rid, m->fn,
              m->ms, pi->id, m->worker, m->reply->timing ? m->reply->timing->total_us : 0);
    disp_on_instance_ready(fn);
}

static void on_messages(h2o_multithread_receiver_t *r, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *mm = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&mm->link);
        ctl_msg_t *m = (ctl_msg_t *)mm;
        switch (m->kind) {
        case MSG_SNAP_BEGIN:
            disp_g.snap_gen++;
            break;
        case MSG_EVENT:
            apply_event(m->ev);
            faas__watch_event__free_unpacked(m->ev, NULL);
            break;
        case MSG_RPC:
            m->cb(m->ud, m->rc, m->resp, m->rlen, m->err);
            free(m->resp);
            break;
        case MSG_ACQ_OK:
        case MSG_ACQ_FAIL:
            acquired(m);
            if (m->reply != NULL)
                faas__acquire_reply__free_unpacked(m->reply, NULL);
            break;
        default:
            loop_message(m);
            free(m->resp);
        }
        free(m);
    }
}

void disp_control_attach(h2o_loop_t *loop)
{
    pthread_mutex_lock(&attach_mu);
    unsigned k = disp_tidx;
    mqs[k] = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(mqs[k], &rxs[k], on_messages);
    if (k + 1 > nloops)
        __atomic_store_n(&nloops, k + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&attach_mu);
}

int disp_control_start(const char **err)
{
    disp_control_attach(disp_g.loop);
    faas_rpc_global_init();
    pthread_t tid;
    for (int i = 0; i < N_WORKERS; i++) {
        h2o_multithread_create_thread(&tid, NULL, pool_main, &wm_q);
        h2o_multithread_create_thread(&tid, NULL, pool_main, &disc_q);
    }
    disc_list_init(disp_g.cfg.discovery);
    h2o_multithread_create_thread(&tid, NULL, watch_main, NULL);
    return 0;
}

int disp_discovery_call(const char *method, const uint8_t *req, size_t len, uint32_t timeout_ms, disp_rpc_cb cb,
                        void *ud)
{
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL || (len != 0 && (j->pb = malloc(len)) == NULL)) {
        free(j);
        return -1;
    }
    if (len != 0)
        memcpy(j->pb, req, len);
    j->len = len;
    j->method = method;
    j->cb = cb;
    j->ud = ud;
    j->timeout_ms = timeout_ms;
    j->dest = disp_tidx; /* the answer comes back to the loop that asked */
    push_job(j);
    return 0;
}
