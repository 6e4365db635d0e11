/* worker-manager/tasks.c - async tasks run by this worker's pods (docs/async.md): the
 * TASK_* events of each pod become Discovery/ReportTask calls. Reassembling a chunked
 * result and packing the report is pure (wm_task_feed, wm_task_gone); the calls are made
 * by a relay thread fed through a queue, because the pod loop must never block on grpc.
 *
 * Cancels travel the other way: a ReportTask reply with cancel_requested (at the latest
 * with the next RENEW, 10 s), or at once a TASK_CANCEL on a Watch stream of its own, is
 * posted to the pod thread, which owns the pods' control sockets and sends CANCEL_TASK. */
#define WM_STATE
#include "worker-manager/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"

#define TASK_LEASE_MS 30000
#define RELAY_TIMEOUT_MS 10000
#define RELAY_TRIES 3

/* ---- pure: one pod's running tasks ---- */

static wm_ptask_t **find(wm_ptask_t **list, const char *id)
{
    for (; *list != NULL; list = &(*list)->next)
        if (strcmp((*list)->id, id) == 0)
            return list;
    return NULL;
}

static void ptask_free(wm_ptask_t *t)
{
    if (t->res != NULL)
        faas__task_result__free_unpacked(t->res, NULL);
    free(t);
}

static uint8_t *pack_report(const char *id, const char *inst, int kind, Faas__TaskResult *res, const char *err,
                            size_t *len)
{
    Faas__TaskReport r = FAAS__TASK_REPORT__INIT;
    r.id = (char *)id;
    r.instance_id = (char *)inst;
    r.kind = kind;
    r.result = res;
    if (err != NULL)
        r.error = (char *)err;
    r.lease_ms = TASK_LEASE_MS;
    return faas_pb_pack(&r.base, len);
}

/* A copy of res that this side owns (its body grows as chunks arrive). */
static Faas__TaskResult *res_copy(const Faas__TaskResult *res)
{
    size_t len;
    uint8_t *buf = faas_pb_pack(&res->base, &len);
    Faas__TaskResult *c = buf != NULL ? faas__task_result__unpack(NULL, len, buf) : NULL;
    free(buf);
    return c;
}

static int append(wm_ptask_t *t, const uint8_t *d, size_t n, uint64_t max)
{
    ProtobufCBinaryData *b = &t->res->body;
    if (b->len + n > max)
        return -1;
    if (b->len + n > t->cap) { /* protobuf-c mallocs bytes fields alone: ours to grow */
        size_t cap = t->cap > b->len ? t->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *nb = realloc(b->data, cap);
        if (nb == NULL)
            return -1;
        b->data = nb;
        t->cap = cap;
    }
    memcpy(b->data + b->len, d, n);
    b->len += n;
    return 0;
}

/* The agent bounds results itself: this only catches one that did not (an older agent). */
static uint8_t *pack_too_large(const char *id, const char *inst, uint64_t max, size_t *len)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "result larger than %llu bytes (async.max_result)", (unsigned long long)max);
    return pack_report(id, inst, FAAS__TASK_REPORT__KIND__REJECTED, NULL, msg, len);
}

int wm_task_feed(wm_ptask_t **list, const Faas__AgentEvent *ev, const char *inst, uint64_t max_result, uint8_t **out,
                 size_t *len)
{
    *out = NULL;
    const char *id = ev->task_id;
    if (id == NULL || id[0] == '\0' || strlen(id) >= sizeof((*list)->id))
        return -1;
    wm_ptask_t **pp = find(list, id), *t = pp ? *pp : NULL;
    switch (ev->type) {
    case FAAS__AGENT_EVENT__TYPE__TASK_STARTED:
        if (t == NULL) {
            if ((t = calloc(1, sizeof(*t))) == NULL)
                return -1;
            strcpy(t->id, id);
            t->next = *list;
            *list = t;
        }
        *out = pack_report(id, inst, FAAS__TASK_REPORT__KIND__STARTED, NULL, NULL, len);
        break;
    case FAAS__AGENT_EVENT__TYPE__TASK_RENEW:
        *out = pack_report(id, inst, FAAS__TASK_REPORT__KIND__RENEW, NULL, NULL, len);
        break;
    case FAAS__AGENT_EVENT__TYPE__TASK_FAILED: /* no_retry: another attempt would end the same way */
        *out = pack_report(id, inst, ev->no_retry ? FAAS__TASK_REPORT__KIND__REJECTED : FAAS__TASK_REPORT__KIND__FAILED,
                           NULL, ev->message && ev->message[0] ? ev->message : "the agent reported a failure", len);
        break;
    case FAAS__AGENT_EVENT__TYPE__TASK_DONE:
        if (ev->result == NULL)
            return -1;
        if (!ev->more) {
            *out = ev->result->body.len > max_result
                       ? pack_too_large(id, inst, max_result, len)
                       : pack_report(id, inst, FAAS__TASK_REPORT__KIND__DONE, ev->result, NULL, len);
            break;
        }
        if (t == NULL) { /* STARTED was never seen (it should have been): track it now */
            if ((t = calloc(1, sizeof(*t))) == NULL)
                return -1;
            strcpy(t->id, id);
            t->next = *list;
            *list = t;
        }
        if (t->res != NULL)
            faas__task_result__free_unpacked(t->res, NULL), t->res = NULL, t->cap = 0;
        if ((t->res = res_copy(ev->result)) == NULL)
            return -1;
        return 0; /* chunks follow */
    case FAAS__AGENT_EVENT__TYPE__TASK_RESULT_CHUNK:
        if (t == NULL || t->res == NULL)
            return -1;
        if (t->res->body.len + ev->chunk.len > max_result) {
            *out = pack_too_large(id, inst, max_result, len);
            break;
        }
        if (append(t, ev->chunk.data, ev->chunk.len, max_result) != 0) {
            *out = pack_report(id, inst, FAAS__TASK_REPORT__KIND__FAILED, NULL, "the worker manager ran out of memory",
                               len);
            break;
        }
        if (ev->more)
            return 0;
        *out = pack_report(id, inst, FAAS__TASK_REPORT__KIND__DONE, t->res, NULL, len);
        break;
    default:
        return -1;
    }
    if (*out == NULL)
        return -1;
    if (t != NULL && ev->type != FAAS__AGENT_EVENT__TYPE__TASK_STARTED &&
        ev->type != FAAS__AGENT_EVENT__TYPE__TASK_RENEW) {
        pp = find(list, id); /* the task ended here */
        *pp = t->next;
        ptask_free(t);
    }
    return 1;
}

size_t wm_task_gone(wm_ptask_t **list, const char *inst, const char *why,
                    void (*post)(void *ud, uint8_t *pkt, size_t len), void *ud)
{
    size_t n = 0;
    while (*list != NULL) {
        wm_ptask_t *t = *list;
        *list = t->next;
        size_t len;
        uint8_t *buf = pack_report(t->id, inst, FAAS__TASK_REPORT__KIND__FAILED, NULL, why, &len);
        if (buf != NULL) {
            post(ud, buf, len);
            n++;
        }
        ptask_free(t);
    }
    return n;
}

/* ---- pure: cancels ---- */

wm_pod_t *wm_task_route(wm_pod_t *pods, const char *id, const char *inst)
{
    for (wm_pod_t *p = pods; p != NULL && inst[0] != '\0'; p = p->next)
        if (strcmp(p->inst_id, inst) == 0)
            return p;
    /* the store did not say where (or said an instance gone since): whoever runs it */
    for (wm_pod_t *p = pods; p != NULL; p = p->next)
        if (find(&p->tasks, id) != NULL)
            return p;
    return NULL;
}

/* Copies s into out when it fits; 0 or -1. */
static int copy_id(char *out, size_t cap, const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n >= cap)
        return -1;
    memcpy(out, s, n + 1);
    return 0;
}

int wm_task_cancel_wanted(const uint8_t *task, size_t len, char *id, size_t idcap, char *inst, size_t instcap)
{
    Faas__Task *t = faas__task__unpack(NULL, len, task);
    int want =
        t != NULL && t->cancel_requested && t->status == FAAS__TASK__STATUS__RUNNING && copy_id(id, idcap, t->id) == 0;
    if (want && copy_id(inst, instcap, t->instance_id) != 0)
        inst[0] = '\0'; /* routed by task id instead */
    if (t != NULL)
        faas__task__free_unpacked(t, NULL);
    return want;
}

int wm_task_cancel_event(const Faas__WatchEvent *e, char *id, size_t idcap, char *inst, size_t instcap)
{
    return e->type == FAAS__WATCH_EVENT__TYPE__TASK_CANCEL && e->task != NULL && copy_id(id, idcap, e->task->id) == 0 &&
           copy_id(inst, instcap, e->task->instance_id) == 0;
}

/* ---- the relay thread ---- */

typedef struct relay_item {
    struct relay_item *next;
    uint8_t *buf;
    size_t len;
} relay_item_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    relay_item_t *head, **tail;
    int stop;
    pthread_t th;
    wm_t *wm;
} rl = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &rl.head, 0, 0, NULL};

void wm_task_post(void *ud, uint8_t *buf, size_t len)
{
    (void)ud;
    relay_item_t *it = malloc(sizeof(*it));
    if (it == NULL) {
        free(buf);
        return;
    }
    it->next = NULL;
    it->buf = buf;
    it->len = len;
    pthread_mutex_lock(&rl.mu);
    *rl.tail = it;
    rl.tail = &it->next;
    pthread_cond_signal(&rl.cv);
    pthread_mutex_unlock(&rl.mu);
}

/* The relay's channel, to the discovery wm_discovery_pick names now (a new one when
 * the pick moved since *addr). */
static faas_rpc_channel_t *relay_chan(faas_rpc_channel_t *ch, const char **addr)
{
    const char *want = wm_discovery_pick(rl.wm->cfg);
    if (ch != NULL && *addr == want)
        return ch;
    if (ch != NULL)
        faas_rpc_channel_close(ch);
    *addr = want;
    return faas_rpc_channel_open(want);
}

static void relay_one(faas_rpc_channel_t **chp, const char **addr, relay_item_t *it)
{
    for (int i = 0; i < RELAY_TRIES; i++) {
        uint8_t *resp = NULL;
        size_t rlen;
        char err[256] = "";
        faas_rpc_channel_t *ch = *chp = relay_chan(*chp, addr);
        int rc = ch ? faas_rpc_unary(ch, "/faas.Discovery/ReportTask", it->buf, it->len, RELAY_TIMEOUT_MS, &resp, &rlen,
                                     err, sizeof(err))
                    : -1;
        char id[40], inst[64];
        if (rc == 0 && wm_task_cancel_wanted(resp, rlen, id, sizeof(id), inst, sizeof(inst)))
            wm_post_cancel_task(rl.wm, id, inst);
        free(resp);
        if (rc == 0)
            return;
        /* refused (stale, finished, malformed): retrying cannot help */
        if (rc == FAAS_GRPC_FAILED_PRECONDITION || rc == FAAS_GRPC_INVALID_ARGUMENT || rc == FAAS_GRPC_NOT_FOUND) {
            FAAS_INFO("event=task_report_refused rc=%d err=\"%s\"", rc, err);
            return;
        }
        FAAS_WARN("event=task_report_failed discovery=%s rc=%d err=\"%s\" try=%d", *addr, rc, err, i + 1);
        if (wm_discovery_down_rc(rc)) /* the next try goes to the next discovery */
            wm_discovery_failed(rl.wm->cfg, *addr);
        struct timespec ts = {0, 500000000L};
        nanosleep(&ts, NULL);
    }
}

static void *relay_main(void *arg)
{
    (void)arg;
    const char *addr = NULL;
    faas_rpc_channel_t *ch = NULL;
    for (;;) {
        pthread_mutex_lock(&rl.mu);
        while (rl.head == NULL && !rl.stop)
            pthread_cond_wait(&rl.cv, &rl.mu);
        relay_item_t *it = rl.head;
        if (it != NULL) {
            rl.head = it->next;
            if (rl.head == NULL)
                rl.tail = &rl.head;
        }
        pthread_mutex_unlock(&rl.mu);
        if (it == NULL)
            break; /* stopping, and nothing left to say */
        relay_one(&ch, &addr, it);
        free(it->buf);
        free(it);
    }
    if (ch != NULL)
        faas_rpc_channel_close(ch);
    return NULL;
}

int wm_task_relay_start(wm_t *wm)
{
    rl.wm = wm;
    return pthread_create(&rl.th, NULL, relay_main, NULL);
}

void wm_task_relay_stop(void)
{
    pthread_mutex_lock(&rl.mu);
    rl.stop = 1;
    pthread_cond_broadcast(&rl.cv);
    pthread_mutex_unlock(&rl.mu);
    pthread_join(rl.th, NULL);
}

/* ---- cancels heard on the worker manager's watch (watch.c) ---- */

void wm_task_on_cancel(wm_t *wm, const Faas__WatchEvent *e)
{
    char id[40], inst[64];
    /* every worker manager hears every cancel: only those of our instances are ours */
    if (wm_task_cancel_event(e, id, sizeof(id), inst, sizeof(inst)) && wm_owns_instance(wm, inst)) {
        FAAS_INFO("event=task_cancel_heard task=%s instance=%s", id, inst);
        wm_post_cancel_task(wm, id, inst);
    }
}
