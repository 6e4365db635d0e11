/* pods.c - the pod thread: warm pool, specialization, instances.
 *
 * One thread owns every pod. It polls the pods' control sockets, an eventfd that
 * rpc handlers and code fetchers post work on, and a signalfd; deadlines are
 * checked on every wake-up. Nothing here blocks for long: code fetches run on
 * their own threads, helper calls are short (clone, mount, kill). */
#define WM_STATE
#include "worker-manager/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/spec.h"
#include "common/util.h"
#include "worker-manager/runq.h"

#define HELLO_TIMEOUT_US (15 * 1000000ull)
#define STOP_GRACE_US (1000000ull)
#define REFILL_DEFER_US 200000ull
/* After READY the first request still has to reach the user server: a pod spawn (a
 * clone into new namespaces, ~2 ms of CPU in the helper, which the pod thread waits
 * for) would compete with it for the CPU on a small host. It waits this long. */
#define AFTER_READY_QUIET_US 20000ull
/* Longest a heartbeat for a change waits for a cold start in flight. */
#define HB_QUIET_MAX_US 50000ull

/* ---- work queue ---- */

static int post(wm_t *wm, wm_work_t *w)
{
    pthread_mutex_lock(&wm->mu);
    if (wm->closing) {
        pthread_mutex_unlock(&wm->mu);
        return -1;
    }
    w->next = NULL;
    if (wm->work_tail)
        wm->work_tail->next = w;
    else
        wm->work_head = w;
    wm->work_tail = w;
    pthread_mutex_unlock(&wm->mu);
    uint64_t one = 1;
    (void)!write(wm->efd, &one, sizeof(one));
    return 0;
}

int wm_post_acquire(wm_t *wm, faas_rpc_call_t *call, const uint8_t *req, size_t len)
{
    uint64_t t0 = faas_now_us();
    Faas__AcquireRequest *r = faas__acquire_request__unpack(NULL, len, req);
    const char *err = NULL;
    if (r == NULL || r->spec == NULL)
        err = "Acquire needs a FunctionSpec";
    else if (faas_valid_function_name(r->spec->name, strlen(r->spec->name), &err) != 0)
        ;
    else if (r->spec->image != NULL ? wm_image_hex(r->spec->image) == NULL : !wm_valid_sha256(r->spec->code_sha256))
        err = r->spec->image ? "FunctionSpec.image.manifest_digest must be sha256:<64 hex>"
                             : "FunctionSpec.code_sha256 must be 64 lowercase hex characters";
    else if (r->spec->n_command == 0 && r->spec->image == NULL)
        err = "FunctionSpec.command is empty";
    if (err != NULL) {
        if (r)
            faas__acquire_request__free_unpacked(r, NULL);
        faas_rpc_fail(call, FAAS_GRPC_INVALID_ARGUMENT, err);
        return -1;
    }
    wm_acq_t *a = calloc(1, sizeof(*a));
    wm_work_t *w = calloc(1, sizeof(*w));
    if (a == NULL || w == NULL)
        goto fail;
    a->call = call;
    a->req = r;
    a->t0 = t0;
    uint32_t tmo = r->timeout_ms ? r->timeout_ms
                                 : (r->spec->cold_start_timeout_ms ? r->spec->cold_start_timeout_ms
                                                                   : FAAS_SPEC_DEFAULT_COLD_START_MS);
    a->deadline_us = t0 + (uint64_t)tmo * 1000u;
    w->kind = WORK_ACQUIRE;
    w->acq = a;
    if (post(wm, w) == 0)
        return 0;
fail:
    free(a);
    free(w);
    faas__acquire_request__free_unpacked(r, NULL);
    faas_rpc_fail(call, FAAS_GRPC_UNAVAILABLE, "worker manager is shutting down");
    return -1;
}

int wm_post_release(wm_t *wm, faas_rpc_call_t *call, const uint8_t *req, size_t len)
{
    Faas__ReleaseRequest *r = faas__release_request__unpack(NULL, len, req);
    if (r == NULL || r->instance_id[0] == '\0') {
        if (r)
            faas__release_request__free_unpacked(r, NULL);
        faas_rpc_fail(call, FAAS_GRPC_INVALID_ARGUMENT, "Release needs an instance_id");
        return -1;
    }
    wm_work_t *w = calloc(1, sizeof(*w));
    if (w != NULL) {
        w->kind = WORK_RELEASE;
        w->call = call;
        wm_fmt(w->arg, sizeof(w->arg), "%.100s", r->instance_id);
    }
    faas__release_request__free_unpacked(r, NULL);
    if (w != NULL && post(wm, w) == 0)
        return 0;
    free(w);
    faas_rpc_fail(call, FAAS_GRPC_UNAVAILABLE, "worker manager is shutting down");
    return -1;
}

int wm_post_cancel_task(wm_t *wm, const char *id, const char *inst)
{
    wm_work_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    w->kind = WORK_CANCEL_TASK;
    wm_fmt(w->arg, sizeof(w->arg), "%.100s", inst);
    wm_fmt(w->task, sizeof(w->task), "%s", id);
    if (post(wm, w) == 0)
        return 0;
    free(w);
    return -1;
}

/* ---- snapshot for the other threads ---- */

int wm_owns_instance(wm_t *wm, const char *inst)
{
    int mine = 0;
    pthread_mutex_lock(&wm->mu);
    for (size_t i = 0; i < wm->n_snap && !mine; i++)
        mine = strcmp(wm->snap[i].id, inst) == 0;
    pthread_mutex_unlock(&wm->mu);
    return mine;
}

static void publish(wm_t *wm)
{
    size_t n = 0;
    uint32_t ready = 0, starting = 0;
    for (wm_pod_t *p = wm->pods; p; p = p->next) {
        n += p->state == POD_READY;
        ready += p->state == POD_WARM;
        starting += p->state == POD_STARTING;
    }
    uint32_t warm[WM_POD_KINDS];
    wm_pool_warm(wm->pods, warm);
    wm_inst_snap_t *s = calloc(n ? n : 1, sizeof(*s));
    size_t i = 0;
    for (wm_pod_t *p = wm->pods; p && s; p = p->next) {
        if (p->state != POD_READY)
            continue;
        wm_fmt(s[i].id, sizeof(s[i].id), "%s", p->inst_id);
        wm_fmt(s[i].function, sizeof(s[i].function), "%s", p->function);
        wm_pod_endpoint(p, s[i].endpoint, sizeof(s[i].endpoint));
        wm_pod_direct_endpoint(p, s[i].direct_endpoint, sizeof(s[i].direct_endpoint));
        s[i].direct_calls = p->direct_calls;
        s[i].version = p->version;
        s[i].started_ms = p->started_ms;
        s[i].pid = (uint32_t)p->pid;
        s[i].concurrency = p->concurrency;
        s[i].reserved = p->reserved;
        s[i].overloaded = p->overloaded;
        i++;
    }
    pthread_mutex_lock(&wm->mu);
    if (s != NULL) {
        free(wm->snap);
        wm->snap = s;
        wm->n_snap = i;
    }
    wm->pool_ready = ready;
    wm->pool_starting = starting;
    memcpy(wm->pool_warm, warm, sizeof(warm));
    wm->changed = 1;
    if (faas_now_us() >= wm->hb_quiet_until_us)
        pthread_cond_broadcast(&wm->cv);
    else
        wm->hb_pending = 1; /* check_deadlines wakes the heartbeat when the window ends */
    pthread_mutex_unlock(&wm->mu);
}

/* Holds change-triggered heartbeats back until `until` (bounded by HB_QUIET_MAX_US). */
static void hb_quiet(wm_t *wm, uint64_t until)
{
    uint64_t cap = faas_now_us() + HB_QUIET_MAX_US;
    pthread_mutex_lock(&wm->mu);
    if (until > cap)
        until = cap;
    if (until > wm->hb_quiet_until_us)
        wm->hb_quiet_until_us = until;
    pthread_mutex_unlock(&wm->mu);
}

/* An instance left the set: every watcher must know at once (a gateway would
 * otherwise route to a dead endpoint), whatever cold start is in flight. */
static void hb_urgent(wm_t *wm)
{
    pthread_mutex_lock(&wm->mu);
    wm->hb_quiet_until_us = 0;
    pthread_mutex_unlock(&wm->mu);
}

/* 1 if lim is what every warm pod already has (the helper applied it at spawn). */
static int limits_are_warm_defaults(const wm_limits_t *lim)
{
    return (lim->memory_bytes == 0 || lim->memory_bytes == FAAS_SPEC_DEFAULT_MEMORY_BYTES) && lim->cpu_millis == 0 &&
           (lim->pids == 0 || lim->pids == FAAS_SPEC_DEFAULT_PIDS);
}

static void count(wm_t *wm, uint64_t *field)
{
    pthread_mutex_lock(&wm->mu);
    (*field)++;
    pthread_mutex_unlock(&wm->mu);
}

/* ---- acquisitions ---- */

static void acq_free(wm_acq_t *a)
{
    if (a->run) {
        wm_image_run_free(a->run);
        free(a->run);
    }
    if (a->req)
        faas__acquire_request__free_unpacked(a->req, NULL);
    free(a);
}

/* Appends a platform line about fn to its log (what faasctl logs shows). */
static void fn_log(wm_t *wm, const char *fn, const char *inst, const char *msg)
{
    char path[PATH_MAX], line[1024];
    wm_fmt(path, sizeof(path), "%s/logs/%s.log", wm->cfg->state_dir, fn);
    size_t n = faas_fn_log_line(line, sizeof(line), faas_unix_ms(), fn, inst, "platform", msg, strlen(msg));
    int fd = n ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;
    if (fd >= 0) {
        (void)!write(fd, line, n);
        close(fd);
    }
}

static void publish(wm_t *wm);

/* Keeps msg as fn's last error (replacing the oldest entry when full); the next lease
 * renewal carries it to discovery. */
static void record_error(wm_t *wm, const Faas__FunctionSpec *s, const char *msg)
{
    pthread_mutex_lock(&wm->mu);
    size_t i = 0;
    while (i < wm->n_errors && strcmp(wm->errors[i].function, s->name) != 0)
        i++;
    if (i == wm->n_errors && wm->n_errors < WM_MAX_FN_ERRORS)
        wm->n_errors++;
    else if (i == wm->n_errors)
        for (size_t k = i = 0; k < wm->n_errors; k++)
            i = wm->errors[k].unix_ms < wm->errors[i].unix_ms ? k : i;
    wm_fn_error_t *e = &wm->errors[i];
    wm_fmt(e->function, sizeof(e->function), "%s", s->name);
    wm_fmt(e->message, sizeof(e->message), "%s", msg);
    e->version = s->version;
    e->unix_ms = faas_unix_ms();
    pthread_mutex_unlock(&wm->mu);
}

/* A cold start of fn succeeded: its last error is history. */
static void clear_error(wm_t *wm, const char *fn)
{
    pthread_mutex_lock(&wm->mu);
    for (size_t i = 0; i < wm->n_errors; i++)
        if (strcmp(wm->errors[i].function, fn) == 0) {
            wm->errors[i] = wm->errors[--wm->n_errors];
            break;
        }
    pthread_mutex_unlock(&wm->mu);
}

static void acq_fail(wm_t *wm, wm_acq_t *a, const char *what)
{
    char msg[400], pub[400];
    const Faas__FunctionSpec *s = a->req->spec;
    faas_cold_start_error(msg, sizeof(msg), s->name, what);
    FAAS_WARN("event=acquire_failed fn=%s request_id=%s reason=\"%s\"", s->name, a->req->request_id, what);
    count(wm, &wm->failures); /* before the reply: a client may ask for Stats at once */
    if (!wm->stop) {          /* our own shutdown is not the function's fault */
        faas_cold_start_public(pub, sizeof(pub), s->name, msg);
        if (!a->agent_logged)
            fn_log(wm, s->name, a->inst_id[0] ? a->inst_id : "-", pub);
        record_error(wm, s, pub);
        publish(wm); /* wakes the heartbeat */
    }
    if (a->call)
        faas_rpc_fail(a->call, faas_err_grpc(FAAS_ERR_UNAVAILABLE), msg); /* DESIGN 3: cold start failed */
    acq_free(a);
}

void wm_pod_endpoint(const wm_pod_t *p, char *out, size_t cap)
{
    wm_fmt(out, cap, "%u.%u.%u.%u:%u", p->addr >> 24, (p->addr >> 16) & 255, (p->addr >> 8) & 255, p->addr & 255,
           p->port);
}

void wm_pod_direct_endpoint(const wm_pod_t *p, char *out, size_t cap)
{
    if (p->direct_port == 0) {
        out[0] = '\0'; /* an older agent: no direct port */
        return;
    }
    wm_fmt(out, cap, "%u.%u.%u.%u:%u", p->addr >> 24, (p->addr >> 16) & 255, (p->addr >> 8) & 255, p->addr & 255,
           p->direct_port);
}

static void acq_reply(wm_t *wm, wm_acq_t *a, wm_pod_t *p, const Faas__AgentEvent *ev)
{
    uint64_t now = faas_now_us();
    Faas__Instance in = FAAS__INSTANCE__INIT;
    char endpoint[32], direct[32];
    wm_pod_endpoint(p, endpoint, sizeof(endpoint));
    wm_pod_direct_endpoint(p, direct, sizeof(direct));
    in.id = p->inst_id;
    in.direct_endpoint = direct;
    in.function = p->function;
    in.version = p->version;
    in.endpoint = endpoint;
    in.worker_id = (char *)wm->cfg->id;
    in.state = FAAS__INSTANCE__STATE__READY;
    in.pid = (uint32_t)p->pid;
    in.started_unix_ms = p->started_ms;
    in.concurrency = p->concurrency;
    in.kind = p->reserved ? FAAS__INSTANCE__KIND__RESERVED : FAAS__INSTANCE__KIND__ELASTIC;
    Faas__AcquireTiming t = FAAS__ACQUIRE_TIMING__INIT;
    t.code_us = a->t_code_start ? (uint32_t)(a->t_code_done - a->t_code_start) : 0;
    t.queue_us = (uint32_t)(a->t_taken - a->t_code_done);
    t.specialize_us = (uint32_t)(a->t_sent - a->t_taken);
    t.exec_us = ev->exec_us;
    t.ready_us = ev->ready_us;
    t.total_us = (uint32_t)(now - a->t0);
    t.image_fetch_us = a->image_fetch_us;
    t.image_unpack_us = a->image_unpack_us;
    t.zygote = ev->zygote;
    Faas__AcquireReply rep = FAAS__ACQUIRE_REPLY__INIT;
    rep.instance = &in;
    rep.timing = &t;
    pthread_mutex_lock(&wm->mu);
    wm->acquisitions += a->call != NULL; /* counted before the reply goes out */
    if (a->t_overload != 0)
        wm_hist_observe(&wm->scale.ready, now - a->t_overload);
    wm->last_total_us = t.total_us;
    wm->zygote_starts += ev->zygote != 0;
    pthread_mutex_unlock(&wm->mu);
    size_t len;
    uint8_t *buf = a->call ? faas_pb_pack(&rep.base, &len) : NULL;
    if (buf)
        faas_rpc_reply(a->call, buf, len);
    else if (a->call)
        faas_rpc_fail(a->call, FAAS_GRPC_INTERNAL, "out of memory");
    free(buf);
    FAAS_INFO("event=%s fn=%s instance=%s pod=%s endpoint=%s request_id=%s total_us=%u queue_us=%u "
              "code_us=%u specialize_us=%u exec_us=%u ready_us=%u image_fetch_us=%u image_unpack_us=%u zygote=%d",
              a->call       ? "acquired"
              : a->reserved ? "reserved_ready"
                            : "scaled_up",
              p->function, p->inst_id, p->id, endpoint, a->req->request_id, t.total_us, t.queue_us, t.code_us,
              t.specialize_us, t.exec_us, t.ready_us, t.image_fetch_us, t.image_unpack_us, ev->zygote != 0);
    p->req = a->req; /* the pod keeps its spec: an OVERLOAD clones it */
    p->t_overload = a->t_overload;
    a->req = NULL;
    acq_free(a);
}

static void list_remove(wm_acq_t **head, wm_acq_t *a)
{
    for (wm_acq_t **pp = head; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            return;
        }
}

static void list_append(wm_acq_t **head, wm_acq_t *a)
{
    a->next = NULL;
    while (*head)
        head = &(*head)->next;
    *head = a;
}

/* ---- pods ---- */

static void refill(wm_t *wm);

/* What a successor needs of p if this WM crashes, kept in the helper (spawner.c says why
 * there): u32 length of a packed Instance (id "" for a warm pod; endpoint, reserved as
 * kind), the Instance, then the packed AcquireRequest of a READY pod or, for a WARM one,
 * one byte of its pool kind (wm_pool_rec_byte). Sent on every
 * change of state that matters; any other state (SPECIALIZING, STOPPING) sends none, so
 * a pod caught half-way is killed by the successor, never adopted half-specialized. */
static void pod_record(wm_t *wm, wm_pod_t *p)
{
    uint8_t *rec = NULL, *ib = NULL, *rb = NULL;
    size_t il = 0, rl = 0;
    if (p->state == POD_WARM || (p->state == POD_READY && p->req != NULL)) {
        char endpoint[32], direct[32];
        wm_pod_endpoint(p, endpoint, sizeof(endpoint));
        wm_pod_direct_endpoint(p, direct, sizeof(direct));
        Faas__Instance in = FAAS__INSTANCE__INIT;
        in.direct_endpoint = direct; /* a successor publishes it too */
        in.direct_calls = p->direct_calls; /* and goes on from the count, never back to 0 */
        in.id = p->state == POD_READY ? p->inst_id : "";
        in.function = p->function;
        in.version = p->version;
        in.endpoint = endpoint;
        in.pid = (uint32_t)p->pid;
        in.started_unix_ms = p->started_ms;
        in.concurrency = p->concurrency;
        in.kind = p->reserved ? FAAS__INSTANCE__KIND__RESERVED : FAAS__INSTANCE__KIND__ELASTIC;
        in.overloaded = p->overloaded; /* an agent says OVERLOAD once, not again to a successor */
        ib = faas_pb_pack(&in.base, &il);
        rb = p->state == POD_READY ? faas_pb_pack(&p->req->base, &rl) : NULL;
        if (p->state == POD_WARM && (rb = malloc(1)) != NULL) {
            rb[0] = wm_pool_rec_byte(p);
            rl = 1;
        }
        rec = ib && rb ? malloc(4 + il + rl) : NULL;
        if (rec) {
            uint32_t l32 = (uint32_t)il;
            memcpy(rec, &l32, 4);
            memcpy(rec + 4, ib, il);
            if (rl)
                memcpy(rec + 4 + il, rb, rl);
        }
    }
    if (wm_helper_record(&wm->helper, p->pid, rec, rec ? 4 + il + rl : 0) != 0)
        FAAS_WARN("event=pod_record_failed pod=%s", p->id);
    free(rec);
    free(ib);
    free(rb);
}

/* Fills p from a predecessor's record; 0, or -1 when it does not make a whole pod. */
static int pod_from_record(wm_pod_t *p, const uint8_t *rec, size_t len)
{
    uint32_t il;
    if (rec == NULL || len < 4 || (memcpy(&il, rec, 4), il > len - 4))
        return -1;
    Faas__Instance *in = faas__instance__unpack(NULL, il, rec + 4);
    if (in == NULL)
        return -1;
    const char *colon = strrchr(in->endpoint, ':');
    p->port = colon ? (uint32_t)strtoul(colon + 1, NULL, 10) : 0;
    colon = strrchr(in->direct_endpoint, ':');
    p->direct_port = colon ? (uint32_t)strtoul(colon + 1, NULL, 10) : 0;
    p->direct_calls = in->direct_calls;
    int rc = p->port ? 0 : -1;
    if (in->id[0] == '\0') {
        p->state = POD_WARM;
        wm_pool_rec_apply(p, rec + 4 + il, len - 4 - il);
    } else {
        p->state = POD_READY;
        wm_fmt(p->inst_id, sizeof(p->inst_id), "%s", in->id);
        wm_fmt(p->function, sizeof(p->function), "%s", in->function);
        p->version = in->version;
        p->started_ms = in->started_unix_ms;
        p->concurrency = in->concurrency;
        p->reserved = in->kind == FAAS__INSTANCE__KIND__RESERVED;
        p->overloaded = in->overloaded;
        p->req = faas__acquire_request__unpack(NULL, len - 4 - il, rec + 4 + il);
        if (p->req == NULL || p->req->spec == NULL)
            rc = -1;
    }
    faas__instance__free_unpacked(in, NULL);
    return rc;
}

/* Takes over one pod of a crashed predecessor: whole (warm, or a READY instance) or
 * killed. Timers and metrics need nothing more: the run-queue probe watches it from
 * here, log rotation and seccomp/overload events go by wm->pods like any pod's (the
 * denial and overload counters restart from zero with this process, as all do). Tasks
 * it was running are not known here: their reports still arrive and are relayed, a
 * cancel is routed by instance. */
static void adopt_one(wm_t *wm, wm_adopted_t *a)
{
    wm_pod_t *p = calloc(1, sizeof(*p));
    if (p == NULL || a->ctl < 0 || pod_from_record(p, a->rec, a->rec_len) != 0) {
        FAAS_WARN("event=adopt_killed pod=%s pid=%d reason=\"its state was unclear (no whole record)\"", a->pod,
                  (int)a->pid);
        if (a->ctl >= 0)
            close(a->ctl);
        if (p && p->req)
            faas__acquire_request__free_unpacked(p->req, NULL);
        free(p);
        wm_helper_kill(&wm->helper, a->pod, a->pid);
        return;
    }
    wm_fmt(p->id, sizeof(p->id), "%s", a->pod);
    p->pid = a->pid;
    p->ctl = a->ctl;
    p->addr = a->addr;
    fcntl(p->ctl, F_SETFL, fcntl(p->ctl, F_GETFL) | O_NONBLOCK);
    wm_runq_pod_new(wm, p);
    p->next = wm->pods;
    wm->pods = p;
    FAAS_INFO("event=pod_adopted pod=%s pid=%d state=%s instance=%s fn=%s kind=%s zygote=%d", p->id, (int)p->pid,
              p->state == POD_READY ? "ready" : "warm", p->inst_id[0] ? p->inst_id : "-",
              p->function[0] ? p->function : "-", wm_pod_kind_name(p->kind), p->zygote);
}

static void adopt_all(wm_t *wm)
{
    for (size_t i = 0; i < wm->n_adopted; i++) {
        adopt_one(wm, &wm->adopted[i]);
        free(wm->adopted[i].rec);
    }
    free(wm->adopted);
    wm->adopted = NULL;
    if (wm->n_adopted) {
        wm->n_adopted = 0;
        hb_urgent(wm);
        publish(wm); /* the first lease carries them: the predecessor's is renewed as is */
    }
}

static void pod_destroy(wm_t *wm, wm_pod_t *p, const char *why)
{
    /* a crash before the kill below must not leave a READY record of a dying pod for
     * a successor to adopt (its USER_EXIT was consumed here and will not come again) */
    if (p->pid > 0 && wm_helper_record(&wm->helper, p->pid, NULL, 0) != 0)
        FAAS_WARN("event=pod_record_failed pod=%s", p->id);
    for (wm_pod_t **pp = &wm->pods; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    FAAS_INFO("event=pod_destroyed pod=%s pid=%d instance=%s fn=%s reason=\"%s\"", p->id, (int)p->pid,
              p->inst_id[0] ? p->inst_id : "-", p->function[0] ? p->function : "-", why);
    if (p->acq)
        acq_fail(wm, p->acq, why);
    char twhy[320];
    wm_fmt(twhy, sizeof(twhy), "the pod died: %s", why);
    size_t nt = wm_task_gone(&p->tasks, p->inst_id, twhy, wm_task_post, NULL);
    if (nt != 0)
        FAAS_INFO("event=tasks_failed pod=%s instance=%s tasks=%zu", p->id, p->inst_id, nt);
    if (p->state == POD_STARTING && !wm->stop)
        wm->refill_after_us = faas_now_us() + 1000000; /* do not spin on a pod that cannot start */
    int was_instance = p->state == POD_READY;
    close(p->ctl);
    wm_runq_pod_gone(wm, p);
    if (was_instance) {
        /* out of the lease before the kill round trip: watchers stop routing to it sooner */
        hb_urgent(wm);
        publish(wm);
    }
    wm_helper_kill(&wm->helper, p->id, p->pid);
    if (p->req)
        faas__acquire_request__free_unpacked(p->req, NULL);
    free(p);
    if (!was_instance)
        publish(wm);
}

static wm_pod_t *pod_spawn(wm_t *wm, wm_pod_kind_t kind)
{
    wm_pod_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    faas_random_id(p->id, sizeof(p->id));
    p->kind = kind;
    char err[256];
    const wm_config_t *c = wm->cfg;
    int py = kind == WM_POD_PYTHON;
    if (wm_helper_spawn(&wm->helper, p->id, py ? c->python : NULL, py ? c->python_preload : NULL, &p->pid, &p->ctl,
                        &p->addr, err, sizeof(err)) != 0) {
        FAAS_ERROR("event=pod_spawn_failed pod=%s err=\"%s\"", p->id, err);
        free(p);
        wm->refill_after_us = faas_now_us() + 1000000;
        return NULL;
    }
    fcntl(p->ctl, F_SETFL, fcntl(p->ctl, F_GETFL) | O_NONBLOCK);
    p->state = POD_STARTING;
    p->deadline_us = faas_now_us() + HELLO_TIMEOUT_US;
    wm_runq_pod_new(wm, p);
    p->next = wm->pods;
    wm->pods = p;
    count(wm, &wm->pods_spawned);
    FAAS_INFO("event=pod_spawned pod=%s pid=%d kind=%s", p->id, (int)p->pid, wm_pod_kind_name(kind));
    return p;
}

static size_t count_state(wm_t *wm, wm_pod_state_t s)
{
    size_t n = 0;
    for (wm_pod_t *p = wm->pods; p; p = p->next)
        n += p->state == s;
    return n;
}

/* Spawns pods for waiting acquisitions at once; tops the pool up only once the
 * cold starts in flight are ready (or REFILL_DEFER_US passed), so new agents do
 * not compete with user servers starting on a small host. */
static void refill(wm_t *wm)
{
    uint64_t now = faas_now_us();
    if (wm->stop || now < wm->refill_after_us)
        return;
    const wm_config_t *c = wm->cfg;
    size_t waiting = 0, need[WM_POD_KINDS];
    for (wm_acq_t *a = wm->waiting_pod; a; a = a->next)
        waiting++;
    const unsigned pool[WM_POD_KINDS] = {[WM_POD_GENERIC] = c->pool_size, [WM_POD_PYTHON] = c->pool_python};
    wm_pool_deficit(wm->pods, waiting, pool, now < wm->refill_defer_us, need);
    size_t have = count_state(wm, POD_STARTING) + count_state(wm, POD_WARM);
    int spawned = 0;
    /* generic first: the waiters' pods are */
    for (int k = 0; k < WM_POD_KINDS; k++) {
        for (; need[k] > 0; need[k]--, have++, spawned = 1) {
            if (pod_spawn(wm, (wm_pod_kind_t)k) != NULL)
                continue;
            /* nothing is coming for the waiters: say so now rather than at their deadline */
            if (have == 0)
                while (wm->waiting_pod) {
                    wm_acq_t *a = wm->waiting_pod;
                    wm->waiting_pod = a->next;
                    acq_fail(wm, a, "no pod could be started on this worker");
                }
            k = WM_POD_KINDS;
            break;
        }
    }
    if (spawned)
        publish(wm);
}

/* SPECIALIZE with the log fd and, for an image, the user namespace fd (closed here). */
static int send_specialize(wm_t *wm, wm_pod_t *p, wm_acq_t *a, int userns, char *err, size_t errcap)
{
    int fds[2] = {wm_log_open(wm, a->req->spec->name), userns};
    if (fds[0] < 0) {
        if (userns >= 0)
            close(userns);
        wm_fmt(err, errcap, "cannot open the function log");
        return -1;
    }
    Faas__Specialize sp = FAAS__SPECIALIZE__INIT;
    Faas__ImageRun run;
    sp.spec = a->req->spec;
    sp.instance_id = p->inst_id;
    sp.code_dir = WM_POD_CODE_DIR;
    sp.runq = p->cgroup_id != 0;
    if (a->run != NULL) {
        wm_image_run_pb(a->run, WM_POD_ROOT_DIR, &run);
        sp.image = &run;
    }
    Faas__AgentCommand cmd = FAAS__AGENT_COMMAND__INIT;
    cmd.type = FAAS__AGENT_COMMAND__TYPE__SPECIALIZE;
    cmd.specialize = &sp;
    /* logrot.c: LOG_FD goes the same way */
    int rc = wm_send_fds(p->ctl, &cmd.base, fds, userns >= 0 ? 2 : 1, 0);
    close(fds[0]);
    if (userns >= 0)
        close(userns);
    if (rc != 0) {
        wm_fmt(err, errcap, "the pod's agent is not reachable");
        return -1;
    }
    return 0;
}

/* The code read-only at WM_POD_CODE_DIR, or an image's root at WM_POD_ROOT_DIR (its
 * cache entry touched: the LRU order of wm_image_gc) with the user namespace fd. */
static int mount_artifact(wm_t *wm, wm_pod_t *p, const Faas__FunctionSpec *s, int no_egress, int *userns, char *err,
                          size_t errcap)
{
    if (s->image == NULL)
        return wm_helper_mount_code(&wm->helper, p->id, p->pid, s->code_sha256, no_egress, err, errcap);
    const char *hex = wm_image_hex(s->image);
    char dir[PATH_MAX];
    wm_fmt(dir, sizeof(dir), "%s/images/rootfs/%s", wm->cfg->state_dir, hex);
    (void)utimensat(AT_FDCWD, dir, NULL, 0);
    return wm_helper_mount_image(&wm->helper, p->id, p->pid, hex, no_egress, userns, err, errcap);
}

/* Takes pod p (WARM) for acquisition a: code mount, limits, SPECIALIZE. */
static void specialize(wm_t *wm, wm_pod_t *p, wm_acq_t *a)
{
    Faas__FunctionSpec *s = a->req->spec;
    a->t_taken = faas_now_us();
    p->state = POD_SPECIALIZING;
    p->acq = a;
    p->deadline_us = a->deadline_us;
    p->inst_id[0] = 'i';
    p->inst_id[1] = '-';
    faas_random_id(p->inst_id + 2, sizeof(p->inst_id) - 2);
    wm_fmt(a->inst_id, sizeof(a->inst_id), "%s", p->inst_id);
    wm_fmt(p->function, sizeof(p->function), "%s", s->name);
    p->version = s->version;
    p->concurrency = s->concurrency;
    p->reserved = a->reserved;
    char err[300], rel[256];
    wm_fmt(rel, sizeof(rel), "faas/%s/%s", wm->cfg->id, p->id);
    wm_limits_t lim = {0, 0, 0};
    if (s->resources) {
        lim.memory_bytes = s->resources->memory_bytes;
        lim.cpu_millis = s->resources->cpu_millis;
        lim.pids = s->resources->pids;
    }
    uint64_t t_mount = 0, t_limits = 0;
    hb_quiet(wm, a->t_taken + HB_QUIET_MAX_US);
    pod_record(wm, p); /* SPECIALIZING: none, before the agent hears of it */
    int no_egress = s->network != NULL && strcmp(s->network, "none") == 0;
    int userns = -1;
    if (mount_artifact(wm, p, s, no_egress, &userns, err, sizeof(err)) != 0 ||
        (t_mount = faas_now_us(),
         limits_are_warm_defaults(&lim) ? 0 : wm_cg_apply(&wm->cg, rel, &lim, err, sizeof(err))) != 0 ||
        (t_limits = faas_now_us(), send_specialize(wm, p, a, userns, err, sizeof(err))) != 0) {
        if (userns >= 0 && t_limits == 0)
            close(userns);
        FAAS_ERROR("event=specialize_failed pod=%s fn=%s err=\"%s\"", p->id, s->name, err);
        pod_destroy(wm, p, "the pod could not be specialized");
        return;
    }
    a->t_sent = faas_now_us();
    FAAS_DEBUG("event=specialize_sent pod=%s fn=%s mount_us=%llu limits_us=%llu send_us=%llu", p->id, s->name,
               (unsigned long long)(t_mount - a->t_taken), (unsigned long long)(t_limits - t_mount),
               (unsigned long long)(a->t_sent - t_limits));
    wm->refill_defer_us = a->t_sent + REFILL_DEFER_US;
    count(wm, &wm->cold_starts);
    publish(wm);
}

/* Hands warm pods to acquisitions whose code is ready, in arrival order. */
static void match(wm_t *wm)
{
    while (wm->waiting_pod) {
        wm_pod_t *p = wm_pool_pick(wm->pods, wm->waiting_pod->fit);
        if (p == NULL)
            break;
        wm_acq_t *a = wm->waiting_pod;
        wm->waiting_pod = a->next;
        specialize(wm, p, a);
    }
    refill(wm);
}

static wm_pod_t *find_instance(wm_t *wm, const char *inst)
{
    for (wm_pod_t *p = wm->pods; p; p = p->next)
        if (p->state == POD_READY && strcmp(p->inst_id, inst) == 0)
            return p;
    return NULL;
}

static void acquire(wm_t *wm, wm_acq_t *a);

/* A copy of what p runs, as a scale-up acquisition (no caller waits for it). */
static wm_acq_t *scale_acq(wm_pod_t *p, uint64_t now)
{
    size_t len;
    uint8_t *buf = faas_pb_pack(&p->req->base, &len);
    wm_acq_t *a = calloc(1, sizeof(*a));
    if (buf == NULL || a == NULL || (a->req = faas__acquire_request__unpack(NULL, len, buf)) == NULL) {
        free(buf);
        free(a);
        return NULL;
    }
    free(buf);
    const Faas__FunctionSpec *s = a->req->spec;
    uint32_t tmo = s->cold_start_timeout_ms ? s->cold_start_timeout_ms : FAAS_SPEC_DEFAULT_COLD_START_MS;
    a->t0 = a->t_overload = now;
    a->deadline_us = a->t0 + (uint64_t)tmo * 1000u;
    return a;
}

/* An overloaded instance asks for degree more: as many start at once (each its own
 * warm pod, specialized in parallel; the pool refills behind them), less those already
 * on their way, up to the function's instance limit on this worker. */
static void scale_up(wm_t *wm, wm_pod_t *p, uint32_t degree, int signal)
{
    if (p->req == NULL || wm->stop)
        return;
    const Faas__FunctionSpec *s = p->req->spec;
    uint32_t max = s->max_instances ? s->max_instances : FAAS_SPEC_DEFAULT_MAX_INSTANCES;
    uint32_t ready = 0, starting = 0;
    for (wm_pod_t *q = wm->pods; q; q = q->next) {
        if (strcmp(q->function, s->name) != 0)
            continue;
        starting += q->state == POD_SPECIALIZING;
        ready += q->state == POD_READY;
    }
    for (wm_acq_t *a = wm->waiting_pod; a; a = a->next)
        starting += strcmp(a->req->spec->name, s->name) == 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    max = wm_scale_cpu_cap(signal, max, s->resources ? s->resources->cpu_millis : 0, ncpu > 0 ? (uint32_t)ncpu : 1);
    uint32_t k = wm_scale_count(degree, starting, ready + starting, max);
    if (k == 0)
        return;
    FAAS_INFO("event=scale_up fn=%s instances=%u starting=%u degree=%u adding=%u max=%u", s->name, ready, starting,
              degree, k, max);
    uint64_t now = faas_now_us();
    for (uint32_t i = 0; i < k; i++) {
        wm_acq_t *a = scale_acq(p, now);
        if (a == NULL)
            return;
        acquire(wm, a);
    }
}

void wm_pod_overload(wm_t *wm, wm_pod_t *p, const char *signal, uint32_t degree, int fire, const char *by)
{
    FAAS_INFO("event=%s pod=%s instance=%s fn=%s signal=%s degree=%u judged_by=%s", fire ? "overload" : "recovered",
              p->id, p->inst_id, p->function, signal, degree, by);
    if (fire) {
        pthread_mutex_lock(&wm->mu);
        wm->overloads++;
        wm->scale.by_signal[wm_scale_signal(signal)]++;
        pthread_mutex_unlock(&wm->mu);
    }
    if (p->state != POD_READY)
        return;
    if (p->overloaded != fire) {
        p->overloaded = fire;
        pod_record(wm, p);
        publish(wm);
    }
    if (fire)
        scale_up(wm, p, degree, wm_scale_signal(signal));
}

/* OVERLOAD and RECOVERED from the pod's agent. */
static void on_overload_event(wm_t *wm, wm_pod_t *p, const Faas__AgentEvent *ev)
{
    wm_pod_overload(wm, p, ev->signal, ev->degree, ev->type == FAAS__AGENT_EVENT__TYPE__OVERLOAD, "agent");
}

/* A warm pod has no function yet and runs no user server: only specialized pods count. */
static void on_denials(wm_t *wm, wm_pod_t *p, const Faas__AgentEvent *ev)
{
    if (p->function[0] == '\0')
        return;
    pthread_mutex_lock(&wm->mu);
    int was_full = wm->denials.full_said;
    wm_denials_add(&wm->denials, p->function, ev->denials, ev->n_denials);
    int now_full = wm->denials.full_said;
    pthread_mutex_unlock(&wm->mu);
    if (!was_full && now_full)
        FAAS_WARN("event=seccomp_denials_full max=%d msg=\"new function/syscall series are not counted\"",
                  WM_DENIALS_MAX);
}

/* A python pod whose agent made no zygote (an agent without zygotes, an interpreter the
 * pod cannot run) serves as a generic one; it keeps its slot, so the pool does not grow
 * by spawning more. Said once: every later such pod has the same cause. */
static void zygote_missing(const wm_pod_t *p)
{
    static int said;
    if (p->kind != WM_POD_PYTHON || p->zygote || said)
        return;
    said = 1;
    FAAS_WARN(
        "event=zygote_missing pod=%s msg=\"its agent holds no Python zygote (an agent without zygotes, or it could not "
        "start one: the agent says why): python pool pods serve as generic ones\"",
        p->id);
}

static void on_event(wm_t *wm, wm_pod_t *p, const Faas__AgentEvent *ev)
{
    char why[300];
    switch (ev->type) {
    case FAAS__AGENT_EVENT__TYPE__HELLO:
        if (p->state != POD_STARTING)
            return;
        p->state = POD_WARM;
        p->port = ev->port;
        p->direct_port = ev->direct_port;
        p->deadline_us = 0;
        p->zygote = ev->zygote;
        FAAS_INFO("event=pod_warm pod=%s pid=%d port=%u direct_port=%u kind=%s zygote=%d", p->id, (int)p->pid, p->port,
                  p->direct_port, wm_pod_kind_name(p->kind), p->zygote);
        zygote_missing(p);
        pod_record(wm, p);
        publish(wm);
        match(wm);
        return;
    case FAAS__AGENT_EVENT__TYPE__READY:
        if (p->state != POD_SPECIALIZING || p->acq == NULL)
            return;
        p->state = POD_READY;
        p->deadline_us = 0;
        p->started_ms = faas_unix_ms();
        wm_acq_t *a = p->acq;
        p->acq = NULL;
        clear_error(wm, p->function);
        p->req = a->req; /* recorded now: acq_reply hands it over for good */
        pod_record(wm, p);
        p->req = NULL;
        /* the new instance is leased at once: if it died before its first lease, no
         * watcher would ever hear of it (the gateway keeps what Acquire returned) */
        hb_urgent(wm);
        publish(wm); /* before the reply: ListInstances already shows what Acquire returns */
        acq_reply(wm, a, p, ev);
        if (count_state(wm, POD_SPECIALIZING) == 0)
            wm->refill_defer_us = faas_now_us() + AFTER_READY_QUIET_US;
        refill(wm);
        return;
    case FAAS__AGENT_EVENT__TYPE__FAILED:
        /* the agent's message is the one line to show, and it logged the details */
        wm_fmt(why, sizeof(why), "%s", ev->message[0] ? ev->message : "the agent reported a failure");
        if (p->acq != NULL && ev->message[0])
            p->acq->agent_logged = 1;
        pod_destroy(wm, p, why);
        match(wm);
        return;
    case FAAS__AGENT_EVENT__TYPE__USER_EXIT:
        if (WIFEXITED(ev->exit_status))
            wm_fmt(why, sizeof(why), "the user server exited with status %d", WEXITSTATUS(ev->exit_status));
        else
            wm_fmt(why, sizeof(why), "the user server was killed by signal %d", WTERMSIG(ev->exit_status));
        pod_destroy(wm, p, why);
        match(wm);
        return;
    case FAAS__AGENT_EVENT__TYPE__TASK_STARTED:
    case FAAS__AGENT_EVENT__TYPE__TASK_RENEW:
    case FAAS__AGENT_EVENT__TYPE__TASK_DONE:
    case FAAS__AGENT_EVENT__TYPE__TASK_FAILED:
    case FAAS__AGENT_EVENT__TYPE__TASK_RESULT_CHUNK: {
        uint8_t *rep;
        size_t len;
        const Faas__AsyncSpec *as = p->req != NULL ? p->req->spec->async : NULL;
        uint64_t max =
            as != NULL && as->max_result_bytes ? as->max_result_bytes : FAAS_SPEC_DEFAULT_ASYNC_MAX_RESULT_BYTES;
        int rc = wm_task_feed(&p->tasks, ev, p->inst_id, max, &rep, &len);
        if (rc < 0)
            FAAS_WARN("event=task_event_bad pod=%s type=%d", p->id, (int)ev->type);
        else if (rc == 1)
            wm_task_post(NULL, rep, len);
        return;
    }
    case FAAS__AGENT_EVENT__TYPE__OVERLOAD:
    case FAAS__AGENT_EVENT__TYPE__RECOVERED:
        on_overload_event(wm, p, ev);
        return;
    case FAAS__AGENT_EVENT__TYPE__SECCOMP_DENIALS:
        on_denials(wm, p, ev);
        return;
    case FAAS__AGENT_EVENT__TYPE__LOG_ROTATE:
    case FAAS__AGENT_EVENT__TYPE__LOG_DROPPED:
        wm_log_event(wm, p, ev);
        return;
    case FAAS__AGENT_EVENT__TYPE__DIRECT_CALLS:
        /* the agent says it at most once a second, while it changes: each one goes up with
         * the next heartbeat, as Instance.overloaded does, for the gateways' rate */
        if (p->state == POD_READY && ev->direct_calls != p->direct_calls) {
            p->direct_calls = ev->direct_calls;
            pod_record(wm, p); /* a successor must not publish a count that went back */
            publish(wm);
        }
        return;
    case FAAS__AGENT_EVENT__TYPE__FIRST_REQUEST:
        if (p->t_overload != 0) {
            uint64_t us = faas_now_us() - p->t_overload;
            p->t_overload = 0;
            pthread_mutex_lock(&wm->mu);
            wm_hist_observe(&wm->scale.first, us);
            pthread_mutex_unlock(&wm->mu);
            FAAS_INFO("event=scaled_up_first_request fn=%s instance=%s after_report_us=%lu", p->function, p->inst_id,
                      (unsigned long)us);
        }
        return;
    default:
        return;
    }
}

/* One packet per wake-up (poll is level-triggered): handling an event may destroy p. */
static void on_pod_readable(wm_t *wm, wm_pod_t *p)
{
    static uint8_t buf[256 * 1024]; /* pod thread only; a task's result comes in 64 KiB chunks plus headers */
    ssize_t n = recv(p->ctl, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        pod_destroy(wm, p, p->state == POD_STOPPING ? "released" : "the pod's agent exited");
        match(wm);
        return;
    }
    Faas__AgentEvent *ev = faas__agent_event__unpack(NULL, (size_t)n, buf);
    if (ev == NULL) {
        pod_destroy(wm, p, "the pod's agent sent an undecodable message");
        match(wm);
        return;
    }
    on_event(wm, p, ev);
    faas__agent_event__free_unpacked(ev, NULL);
}

void wm_pod_stop(wm_t *wm, wm_pod_t *p)
{
    Faas__AgentCommand cmd = FAAS__AGENT_COMMAND__INIT;
    cmd.type = FAAS__AGENT_COMMAND__TYPE__STOP;
    size_t len;
    uint8_t *buf = faas_pb_pack(&cmd.base, &len);
    if (buf)
        (void)!send(p->ctl, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    free(buf);
    FAAS_INFO("event=release instance=%s fn=%s pod=%s", p->inst_id, p->function, p->id);
    /* out of the instance set now; the agent gets a moment to stop its user server */
    p->state = POD_STOPPING;
    p->deadline_us = faas_now_us() + STOP_GRACE_US;
    pod_record(wm, p);
    hb_urgent(wm);
    publish(wm);
}

static void release(wm_t *wm, wm_work_t *w)
{
    wm_pod_t *p = find_instance(wm, w->arg);
    if (p == NULL) {
        faas_rpc_fail(w->call, FAAS_GRPC_NOT_FOUND, "no such instance on this worker");
        return;
    }
    if (p->reserved) {
        /* reserved.c alone decides when a reserved instance goes (docs/scaling.md) */
        faas_rpc_fail(w->call, FAAS_GRPC_FAILED_PRECONDITION,
                      "a reserved instance is not released on request: lower the function's reserved count");
        return;
    }
    wm_pod_stop(wm, p);
    uint8_t empty[1];
    faas_rpc_reply(w->call, empty, 0);
}

/* CANCEL_TASK to the pod running the task; the agent drops its upstream and reports
 * TASK_FAILED "cancelled", which the store, with cancel_requested set, ends cancelled. */
static void cancel_task(wm_t *wm, const wm_work_t *w)
{
    wm_pod_t *p = wm_task_route(wm->pods, w->task, w->arg);
    if (p == NULL) {
        FAAS_DEBUG("event=task_cancel_unrouted task=%s instance=%s", w->task, w->arg[0] ? w->arg : "-");
        return;
    }
    wm_ptask_t *t = p->tasks;
    while (t != NULL && strcmp(t->id, w->task) != 0)
        t = t->next;
    if (t != NULL && t->cancel_sent)
        return; /* the watch and a ReportTask reply both said so */
    Faas__AgentCommand cmd = FAAS__AGENT_COMMAND__INIT;
    cmd.type = FAAS__AGENT_COMMAND__TYPE__CANCEL_TASK;
    cmd.task_id = (char *)w->task;
    size_t len;
    uint8_t *buf = faas_pb_pack(&cmd.base, &len);
    if (buf != NULL && send(p->ctl, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)len && t != NULL)
        t->cancel_sent = 1;
    free(buf);
    FAAS_INFO("event=task_cancel_sent task=%s instance=%s pod=%s", w->task, p->inst_id, p->id);
}

/* ---- code ---- */

typedef struct {
    wm_t *wm;
    char sha[65];           /* the code's, or the image manifest's */
    Faas__ImageSpec *image; /* an image: a copy, the acquisition may go first */
} fetch_arg_t;

/* What an acquisition waits for on this host: its code's sha256 or its image's manifest's. */
static const char *artifact_key(const Faas__FunctionSpec *s)
{
    return s->image != NULL ? wm_image_hex(s->image) : s->code_sha256;
}

static void artifact_dir(wm_t *wm, const Faas__FunctionSpec *s, char *dir, size_t cap)
{
    if (s->image != NULL)
        wm_fmt(dir, cap, "%s/images/rootfs/%s", wm->cfg->state_dir, wm_image_hex(s->image));
    else
        wm_fmt(dir, cap, "%s/code/%s", wm->cfg->state_dir, s->code_sha256);
}

static void *fetch_main(void *arg)
{
    fetch_arg_t *f = arg;
    wm_work_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        abort();
    w->kind = WORK_CODE_DONE;
    wm_fmt(w->arg, sizeof(w->arg), "%s", f->sha);
    if (f->image != NULL) {
        wm_image_times_t t = {0, 0};
        w->rc = wm_image_ensure(f->wm->cfg, f->image, &t, w->err, sizeof(w->err));
        w->image_fetch_us = (uint32_t)t.fetch_us;
        w->image_unpack_us = (uint32_t)t.unpack_us;
        faas__image_spec__free_unpacked(f->image, NULL);
    } else {
        /* the discovery in use, then each other one (all serve the same artifacts) */
        const wm_config_t *c = f->wm->cfg;
        for (unsigned i = 0; i < (c->n_discovery ? c->n_discovery : 1); i++) {
            const char *addr = wm_discovery_pick(c);
            w->rc = wm_code_ensure(c->state_dir, addr, f->sha, w->err, sizeof(w->err));
            if (w->rc == 0)
                break;
            wm_discovery_failed(c, addr);
        }
    }
    if (post(f->wm, w) != 0)
        free(w);
    free(f);
    return NULL;
}

/* A deep copy of spec's image (pack + unpack) for the fetch thread; 0, or -1. */
static int copy_image(const Faas__FunctionSpec *s, Faas__ImageSpec **out)
{
    *out = NULL;
    if (s->image == NULL)
        return 0;
    size_t len;
    uint8_t *buf = faas_pb_pack(&s->image->base, &len);
    *out = buf ? faas__image_spec__unpack(NULL, len, buf) : NULL;
    free(buf);
    return *out != NULL ? 0 : -1;
}

static void need_code(wm_t *wm, wm_acq_t *a)
{
    const char *sha = artifact_key(a->req->spec);
    a->t_code_start = faas_now_us();
    list_append(&wm->waiting_code, a);
    for (size_t i = 0; i < wm->n_fetching; i++)
        if (strcmp(wm->fetching[i], sha) == 0)
            return;
    char(*nf)[65] = realloc(wm->fetching, (wm->n_fetching + 1) * sizeof(*nf));
    fetch_arg_t *f = calloc(1, sizeof(*f));
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (nf)
        wm->fetching = nf;
    if (nf == NULL || f == NULL ||
        (f->wm = wm, wm_fmt(f->sha, sizeof(f->sha), "%s", sha), copy_image(a->req->spec, &f->image) != 0) ||
        pthread_create(&t, &at, fetch_main, f) != 0) {
        if (f && f->image)
            faas__image_spec__free_unpacked(f->image, NULL);
        free(f);
        list_remove(&wm->waiting_code, a);
        acq_fail(wm, a, "out of resources to fetch the code");
    } else {
        wm_fmt(wm->fetching[wm->n_fetching++], 65, "%s", sha);
    }
    pthread_attr_destroy(&at);
}

/* The code or the rootfs is on this host: an image's server is resolved in it now
 * (entrypoint, user), so a bad image fails here without costing a warm pod. */
static void code_ready(wm_t *wm, wm_acq_t *a)
{
    const Faas__FunctionSpec *s = a->req->spec;
    if (s->image != NULL) {
        char dir[PATH_MAX], err[300];
        artifact_dir(wm, s, dir, sizeof(dir));
        a->run = calloc(1, sizeof(*a->run));
        if (a->run == NULL || wm_image_resolve(dir, s, a->run, err, sizeof(err)) != 0) {
            acq_fail(wm, a, a->run ? err : "out of memory");
            return;
        }
    }
    list_append(&wm->waiting_pod, a);
}

static void code_done(wm_t *wm, wm_work_t *w)
{
    for (size_t i = 0; i < wm->n_fetching; i++)
        if (strcmp(wm->fetching[i], w->arg) == 0) {
            memmove(&wm->fetching[i], &wm->fetching[i + 1], (wm->n_fetching - i - 1) * sizeof(wm->fetching[0]));
            wm->n_fetching--;
            break;
        }
    uint64_t now = faas_now_us();
    for (wm_acq_t **pp = &wm->waiting_code; *pp;) {
        wm_acq_t *a = *pp;
        if (strcmp(artifact_key(a->req->spec), w->arg) != 0) {
            pp = &a->next;
            continue;
        }
        *pp = a->next;
        a->t_code_done = now;
        a->image_fetch_us = w->image_fetch_us;
        a->image_unpack_us = w->image_unpack_us;
        if (w->rc != 0)
            acq_fail(wm, a, w->err);
        else
            code_ready(wm, a);
    }
    match(wm);
}

void wm_acquire_own(wm_t *wm, wm_acq_t *a)
{
    acquire(wm, a);
}

static void acquire(wm_t *wm, wm_acq_t *a)
{
    char dir[PATH_MAX];
    a->fit = faas_spec_zygote_fit(a->req->spec);
    artifact_dir(wm, a->req->spec, dir, sizeof(dir));
    /* an image's rootfs is touched, not merely looked at: a cache sweep that renamed it
     * away finds the fresh mtime and puts it back (image.c remove_cached) */
    if (a->req->spec->image != NULL ? utimensat(AT_FDCWD, dir, NULL, 0) != 0 : access(dir, F_OK) != 0) {
        need_code(wm, a);
        return;
    }
    a->t_code_done = faas_now_us();
    code_ready(wm, a);
    match(wm);
}

/* ---- loop ---- */

static void run_work(wm_t *wm)
{
    uint64_t v;
    (void)!read(wm->efd, &v, sizeof(v));
    pthread_mutex_lock(&wm->mu);
    wm_work_t *w = wm->work_head;
    wm->work_head = wm->work_tail = NULL;
    pthread_mutex_unlock(&wm->mu);
    while (w) {
        wm_work_t *next = w->next;
        switch (w->kind) {
        case WORK_ACQUIRE:
            acquire(wm, w->acq);
            break;
        case WORK_RELEASE:
            release(wm, w);
            break;
        case WORK_CODE_DONE:
            code_done(wm, w);
            break;
        case WORK_CANCEL_TASK:
            cancel_task(wm, w);
            break;
        }
        free(w);
        w = next;
    }
}

static void expire(wm_t *wm, wm_acq_t **head, uint64_t now, const char *what)
{
    for (wm_acq_t **pp = head; *pp;) {
        wm_acq_t *a = *pp;
        if (a->deadline_us > now) {
            pp = &a->next;
            continue;
        }
        *pp = a->next;
        acq_fail(wm, a, what);
    }
}

static int check_deadlines(wm_t *wm)
{
    uint64_t now = faas_now_us(), next = now + 1000000;
    expire(wm, &wm->waiting_code, now, "timed out fetching the code");
    expire(wm, &wm->waiting_pod, now, "timed out waiting for a free pod");
    for (wm_acq_t *a = wm->waiting_code; a; a = a->next)
        next = a->deadline_us < next ? a->deadline_us : next;
    for (wm_acq_t *a = wm->waiting_pod; a; a = a->next)
        next = a->deadline_us < next ? a->deadline_us : next;
    for (wm_pod_t *p = wm->pods, *n; p; p = n) {
        n = p->next;
        if (p->deadline_us == 0)
            continue;
        if (p->deadline_us <= now) {
            const char *why = p->state == POD_STARTING       ? "the pod's agent did not say hello in time"
                              : p->state == POD_SPECIALIZING ? "the user server was not ready in time"
                                                             : "released";
            pod_destroy(wm, p, why);
            n = wm->pods; /* the list changed */
            continue;
        }
        next = p->deadline_us < next ? p->deadline_us : next;
    }
    refill(wm);
    uint64_t resv = wm_reserved_reconcile(wm, now);
    next = resv > now && resv < next ? resv : next;
    uint64_t rq = wm_runq_tick(wm, now);
    next = rq < next ? rq : next;
    uint64_t lg = wm_log_tick(wm, now);
    next = lg < next ? lg : next;
    uint64_t ig = wm_image_gc_tick(wm, now);
    next = ig < next ? ig : next;
    pthread_mutex_lock(&wm->mu);
    if (wm->hb_pending && now >= wm->hb_quiet_until_us) {
        wm->hb_pending = 0;
        pthread_cond_broadcast(&wm->cv);
    } else if (wm->hb_pending && wm->hb_quiet_until_us < next) {
        next = wm->hb_quiet_until_us;
    }
    pthread_mutex_unlock(&wm->mu);
    if (wm->refill_after_us > now && wm->refill_after_us < next)
        next = wm->refill_after_us;
    if (wm->refill_defer_us > now && wm->refill_defer_us < next)
        next = wm->refill_defer_us;
    return (int)((next - now + 999) / 1000);
}

int wm_loop_init(wm_t *wm)
{
    wm->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGTERM);
    wm->sfd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
    return wm->efd >= 0 && wm->sfd >= 0 ? 0 : -1;
}

void wm_loop_run(wm_t *wm)
{
    adopt_all(wm);
    refill(wm);
    while (!wm->stop) {
        int timeout = check_deadlines(wm);
        size_t n = 3;
        for (wm_pod_t *p = wm->pods; p; p = p->next)
            n++;
        struct pollfd *pfd = calloc(n, sizeof(*pfd));
        wm_pod_t **who = calloc(n, sizeof(*who));
        if (pfd == NULL || who == NULL) {
            free(pfd);
            free(who);
            continue;
        }
        pfd[0] = (struct pollfd){.fd = wm->efd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = wm->sfd, .events = POLLIN};
        pfd[2] = (struct pollfd){.fd = wm_runq_fd(), .events = POLLIN}; /* -1 (ignored) without the probe */
        size_t i = 3;
        for (wm_pod_t *p = wm->pods; p; p = p->next, i++) {
            pfd[i] = (struct pollfd){.fd = p->ctl, .events = POLLIN};
            who[i] = p;
        }
        int r = poll(pfd, n, timeout);
        if (r > 0) {
            if (pfd[1].revents) {
                struct signalfd_siginfo si;
                (void)!read(wm->sfd, &si, sizeof(si));
                FAAS_INFO("event=shutdown signal=%u", si.ssi_signo);
                wm->stop = 1;
            }
            /* a pod handled earlier may destroy others only through its own list
             * entry, so check each pointer is still listed before using it */
            if (pfd[2].revents)
                wm_runq_poll(); /* alerts go to the pods still listed */
            for (size_t k = 3; k < n && !wm->stop; k++) {
                if (!pfd[k].revents)
                    continue;
                for (wm_pod_t *p = wm->pods; p; p = p->next)
                    if (p == who[k]) {
                        on_pod_readable(wm, p);
                        break;
                    }
            }
            if (pfd[0].revents)
                run_work(wm);
        }
        free(pfd);
        free(who);
    }
}

/* Called on the pod thread after the loop: nothing new comes in, everything goes. */
void wm_loop_shutdown(wm_t *wm)
{
    wm->stop = 1;
    pthread_mutex_lock(&wm->mu);
    wm->closing = 1;
    wm_work_t *w = wm->work_head;
    wm->work_head = wm->work_tail = NULL;
    pthread_mutex_unlock(&wm->mu);
    while (w) {
        wm_work_t *next = w->next;
        if (w->kind == WORK_ACQUIRE)
            acq_fail(wm, w->acq, "the worker manager is shutting down");
        else if (w->kind == WORK_RELEASE)
            faas_rpc_fail(w->call, FAAS_GRPC_UNAVAILABLE, "worker manager is shutting down");
        free(w);
        w = next;
    }
    expire(wm, &wm->waiting_code, UINT64_MAX, "the worker manager is shutting down");
    expire(wm, &wm->waiting_pod, UINT64_MAX, "the worker manager is shutting down");
    while (wm->pods)
        pod_destroy(wm, wm->pods, "worker manager shutdown");
}
