/* etcdc/watch.c - watches: one thread and one bidirectional Watch stream each.
 *
 * The thread opens the stream on the client's endpoint in use, asks for every event
 * of the range from the revision after the last one delivered, and hands them to the
 * caller's function. When the stream fails it reconnects (moving to the next endpoint
 * if this one is not connected) after a backoff of 100 ms doubling to 2 s, and asks
 * again from the last delivered revision + 1: nothing is lost and nothing repeats.
 * When etcd has compacted that revision away the caller resyncs (reads afresh) and
 * the watch resumes after the revision it read at. */
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "etcdc/internal.h"

enum { BACKOFF_MIN_MS = 100, BACKOFF_MAX_MS = 2000 };

struct etcdc_watch {
    etcdc_t *c;
    uint8_t *key, *end;
    size_t klen, elen;
    int has_end;
    etcdc_watch_fn fn;
    etcdc_resync_fn resync;
    void *ud;
    _Atomic int64_t last; /* the last revision delivered (or resynced to) */
    pthread_t thread;
    pthread_mutex_t mu; /* guards stopping and call */
    pthread_cond_t cv;  /* wakes the backoff wait */
    int stopping;
    grpc_call *call;           /* the stream open now, cancelled by stop */
    struct etcdc_watch *next;  /* the client's list (c->mu) */
};

/* What one stream ended with. */
typedef enum {
    WS_FAILED,    /* broken or refused: back off, reconnect */
    WS_COMPACTED, /* the revisions needed are gone: resync */
    WS_REWOUND,   /* etcd is behind what was delivered (rebuilt, restored): resync */
    WS_STOP,      /* fn asked to stop, or etcdc_watch_stop */
} wstate_t;

typedef struct {
    grpc_call *call;
    grpc_completion_queue *cq;
    int healthy;         /* etcd confirmed the watch: the backoff starts over */
    int64_t compact_rev; /* WS_COMPACTED */
    int refused;         /* etcd ended it (no leader, cancelled): this member will not serve it */
} stream_t;

static int stopping(etcdc_watch_t *w)
{
    pthread_mutex_lock(&w->mu);
    int s = w->stopping;
    pthread_mutex_unlock(&w->mu);
    return s;
}

/* Runs one batch and waits for it (the stream's own queue, one batch at a time). */
static int batch(stream_t *s, grpc_op *ops, size_t n)
{
    if (grpc_call_start_batch(s->call, ops, n, s, NULL) != GRPC_CALL_OK)
        return -1;
    return grpc_completion_queue_pluck(s->cq, s, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).success ? 0 : -1;
}

/* Packs the create request for the revisions after w->last. */
static grpc_byte_buffer *create_request(etcdc_watch_t *w)
{
    Etcdserverpb__WatchCreateRequest cr;
    etcdserverpb__watch_create_request__init(&cr);
    cr.key = (ProtobufCBinaryData){w->klen, w->key};
    if (w->has_end)
        cr.range_end = (ProtobufCBinaryData){w->elen, w->end};
    int64_t last = atomic_load(&w->last);
    cr.start_revision = last >= 0 ? last + 1 : 0; /* 0: from now (start_rev was 0) */
    Etcdserverpb__WatchRequest rq;
    etcdserverpb__watch_request__init(&rq);
    rq.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    rq.create_request = &cr;
    size_t len = etcdserverpb__watch_request__get_packed_size(&rq);
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL)
        return NULL;
    etcdserverpb__watch_request__pack(&rq, buf);
    grpc_slice sl = grpc_slice_new(buf, len, free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* Hands the events of one response to fn, skipping any already delivered (a
 * reconnect never asks for those, but a misbehaving server must not make us repeat).
 * -1 to read on, WS_STOP when fn asks, WS_FAILED when out of memory (nothing was
 * delivered: the next stream asks for them again). */
static int deliver(etcdc_watch_t *w, const Etcdserverpb__WatchResponse *r)
{
    int64_t last = atomic_load(&w->last);
    etcdc_event_t *evs = calloc(r->n_events, sizeof(*evs));
    size_t n = 0;
    int st = evs ? -1 : WS_FAILED;
    for (size_t i = 0; evs && i < r->n_events; i++) {
        const Mvccpb__Event *e = r->events[i];
        if (e->kv == NULL || e->kv->mod_revision <= last)
            continue;
        evs[n].type = e->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? ETCDC_EV_DELETE : ETCDC_EV_PUT;
        if (ec_kv_copy(&evs[n].kv, e->kv) != 0) {
            st = WS_FAILED;
            break;
        }
        n++;
    }
    if (st < 0 && n > 0) {
        /* etcd never splits one revision's events across responses (no fragmenting was
         * asked for), so the revision of the last event is complete */
        int64_t rev = evs[n - 1].kv.mod_rev;
        int stop = w->fn(w->ud, evs, n, rev);
        atomic_store(&w->last, rev);
        st = stop ? WS_STOP : -1;
    }
    for (size_t i = 0; i < n; i++)
        etcdc_kv_free(&evs[i].kv);
    free(evs);
    return st;
}

/* One response: -1 to read on, else how the stream ends. */
static int on_response(etcdc_watch_t *w, stream_t *s, const uint8_t *msg, size_t len)
{
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, msg);
    if (r == NULL)
        return WS_FAILED;
    int st = -1;
    int64_t last = atomic_load(&w->last);
    if (r->compact_revision > 0) {
        s->compact_rev = r->compact_revision;
        st = WS_COMPACTED;
    } else if (!r->canceled && r->header != NULL && r->header->revision > 0 && last >= 0 &&
               r->header->revision < last) {
        /* revisions only grow in one etcd: this one never had what we delivered (wiped
         * and rebuilt at the same address, restored from an older snapshot, or a member
         * far behind). Resuming at last + 1 would ignore every change until etcd passes
         * the old revision, so the caller reads afresh. (A header without a revision,
         * as on compaction and cancel answers, says nothing.) */
        FAAS_ERROR("event=etcd_revision_went_back revision=%lld last_delivered=%lld action=resync",
                   (long long)r->header->revision, (long long)last);
        st = WS_REWOUND;
    } else if (r->canceled) {
        FAAS_WARN("event=etcd_watch_cancelled reason=\"%s\"", r->cancel_reason ? r->cancel_reason : "");
        st = WS_FAILED;
        s->refused = 1;
    } else {
        if (r->created) {
            s->healthy = 1;
            /* a watch "from now": now is the revision etcd created it at */
            if (atomic_load(&w->last) < 0 && r->header)
                atomic_store(&w->last, r->header->revision);
        }
        if (r->n_events > 0)
            st = deliver(w, r);
    }
    etcdserverpb__watch_response__free_unpacked(r, NULL);
    return st;
}

/* Opens the stream and reads it until it ends. */
static wstate_t stream_run(etcdc_watch_t *w, stream_t *s, size_t ep)
{
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_static_string("/etcdserverpb.Watch/Watch");
    grpc_call *call = grpc_channel_create_call(w->c->chans[ep], NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, m, NULL,
                                               gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    pthread_mutex_lock(&w->mu);
    s->call = w->call = call;
    if (w->stopping && call)
        grpc_call_cancel(call, NULL);
    pthread_mutex_unlock(&w->mu);
    if (call == NULL)
        return WS_FAILED;
    grpc_byte_buffer *req = create_request(w);
    grpc_metadata_array init_md;
    grpc_metadata_array_init(&init_md);
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    grpc_metadata md;
    ec_leader_md(&md);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 1;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    int st = req != NULL && batch(s, ops, 3) == 0 ? -1 : WS_FAILED;
    if (req)
        grpc_byte_buffer_destroy(req);
    grpc_metadata_array_destroy(&init_md);
    while (st < 0) {
        grpc_byte_buffer *bb = NULL;
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_MESSAGE;
        ops[0].data.recv_message.recv_message = &bb;
        if (batch(s, ops, 1) != 0 || bb == NULL) {
            st = WS_FAILED;
            break;
        }
        grpc_byte_buffer_reader rd;
        if (grpc_byte_buffer_reader_init(&rd, bb)) {
            grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
            st = on_response(w, s, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
            grpc_slice_unref(sl);
        }
        grpc_byte_buffer_destroy(bb);
    }
    return (wstate_t)st;
}

/* Cancels the call if still open, collects its status and frees everything. */
static void stream_close(etcdc_watch_t *w, stream_t *s)
{
    if (s->call != NULL) {
        grpc_call_cancel(s->call, NULL);
        grpc_metadata_array trail;
        grpc_metadata_array_init(&trail);
        grpc_status_code status = GRPC_STATUS_OK;
        grpc_slice details = grpc_empty_slice();
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        op.data.recv_status_on_client.trailing_metadata = &trail;
        op.data.recv_status_on_client.status = &status;
        op.data.recv_status_on_client.status_details = &details;
        batch(s, &op, 1);
        /* "etcdserver: no leader" (hasleader) ends the stream with UNAVAILABLE on a
         * connection that stays up; our own cancel is CANCELLED */
        if (status == GRPC_STATUS_UNAVAILABLE)
            s->refused = 1;
        grpc_slice_unref(details);
        grpc_metadata_array_destroy(&trail);
        pthread_mutex_lock(&w->mu);
        w->call = NULL;
        pthread_mutex_unlock(&w->mu);
        grpc_call_unref(s->call);
    }
    if (s->cq != NULL) {
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_pluck(s->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s->cq);
    }
}

/* Waits ms unless the watch is stopped first; 1 when stopped. */
static int backoff_wait(etcdc_watch_t *w, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&w->mu);
    while (!w->stopping && pthread_cond_timedwait(&w->cv, &w->mu, &until) != ETIMEDOUT) {
    }
    int s = w->stopping;
    pthread_mutex_unlock(&w->mu);
    return s;
}

/* The caller reads afresh; the watch resumes after what it read. 0, or -1 to stop. */
static int resync(etcdc_watch_t *w, int64_t compact_rev)
{
    if (w->resync == NULL || stopping(w))
        return -1;
    int64_t rev = w->resync(w->ud, compact_rev);
    if (rev < 0)
        return -1;
    atomic_store(&w->last, rev);
    return 0;
}

static void *watch_main(void *arg)
{
    etcdc_watch_t *w = arg;
    int backoff = BACKOFF_MIN_MS;
    while (!stopping(w)) {
        size_t ep = ec_current(w->c);
        stream_t s = {0};
        wstate_t st = stream_run(w, &s, ep);
        int connected = grpc_channel_check_connectivity_state(w->c->chans[ep], 0) == GRPC_CHANNEL_READY;
        stream_close(w, &s);
        if (st == WS_STOP || stopping(w))
            break;
        if (st == WS_COMPACTED) {
            FAAS_WARN("event=etcd_watch_compacted compact_rev=%lld last=%lld", (long long)s.compact_rev,
                      (long long)atomic_load(&w->last));
            if (resync(w, s.compact_rev) != 0)
                break;
            continue;
        }
        if (st == WS_REWOUND) {
            if (resync(w, 0) != 0)
                break;
            continue;
        }
        if (s.healthy) {
            backoff = BACKOFF_MIN_MS;
            /* once per outage, not once per attempt */
            FAAS_WARN("event=etcd_watch_lost endpoint=%s last_rev=%lld", w->c->eps[ep],
                      (long long)atomic_load(&w->last));
        }
        if (!connected || s.refused)
            ec_advance(w->c, ep); /* the next stream tries the next endpoint */
        if (backoff_wait(w, backoff))
            break;
        backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
    }
    return NULL;
}

static void watch_free(etcdc_watch_t *w)
{
    free(w->key);
    free(w->end);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

etcdc_watch_t *etcdc_watch_start(etcdc_t *c, const void *key, size_t klen, const void *end, size_t elen,
                                 int64_t start_rev, etcdc_watch_fn fn, etcdc_resync_fn resync_fn, void *ud, char *err,
                                 size_t errcap)
{
    etcdc_watch_t *w = calloc(1, sizeof(*w));
    if (w == NULL || fn == NULL) {
        snprintf(err, errcap, fn == NULL ? "no event function" : "out of memory");
        free(w);
        return NULL;
    }
    w->c = c;
    w->fn = fn;
    w->resync = resync_fn;
    w->ud = ud;
    atomic_store(&w->last, start_rev > 0 ? start_rev - 1 : -1);
    w->klen = klen;
    w->key = malloc(klen + 1);
    w->has_end = end != NULL;
    w->elen = elen;
    w->end = malloc(elen + 1);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (w->key == NULL || w->end == NULL) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    memcpy(w->key, key, klen);
    if (end != NULL)
        memcpy(w->end, end, elen);
    int rc = pthread_create(&w->thread, NULL, watch_main, w);
    if (rc != 0) {
        snprintf(err, errcap, "cannot start the watch thread: %s", strerror(rc));
        goto fail;
    }
    pthread_mutex_lock(&c->mu);
    w->next = c->watches;
    c->watches = w;
    pthread_mutex_unlock(&c->mu);
    return w;
fail:
    watch_free(w);
    return NULL;
}

int64_t etcdc_watch_revision(etcdc_watch_t *w)
{
    return atomic_load(&w->last);
}

/* Ends the thread: the stream is cancelled, the backoff wait woken. */
static void watch_end(etcdc_watch_t *w)
{
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    if (w->call != NULL)
        grpc_call_cancel(w->call, NULL);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    watch_free(w);
}

void etcdc_watch_stop(etcdc_watch_t *w)
{
    if (w == NULL)
        return;
    etcdc_t *c = w->c;
    pthread_mutex_lock(&c->mu);
    for (etcdc_watch_t **p = &c->watches; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    pthread_mutex_unlock(&c->mu);
    watch_end(w);
}

void ec_watch_stop_all(etcdc_t *c)
{
    pthread_mutex_lock(&c->mu);
    etcdc_watch_t *w = c->watches;
    c->watches = NULL;
    pthread_mutex_unlock(&c->mu);
    while (w != NULL) {
        etcdc_watch_t *next = w->next;
        watch_end(w);
        w = next;
    }
}
