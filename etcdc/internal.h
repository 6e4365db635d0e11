/* etcdc/internal.h - what the parts of etcdc/ share: the client, its endpoints and
 * channels, the unary call with failover, and conversions of etcd's messages. */
#ifndef ETCDC_INTERNAL_H
#define ETCDC_INTERNAL_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <string.h>

#include "etcd/etcdserver/etcdserverpb/rpc.pb-c.h"
#include "etcdc/etcdc.h"

struct etcdc {
    char **eps;          /* "host:port", as given */
    size_t n;            /* endpoints */
    grpc_channel **chans; /* one per endpoint, opened with the client, plaintext, no token */
    int timeout_ms;
    pthread_mutex_t mu;            /* guards cur and watches */
    size_t cur;                    /* the endpoint in use */
    struct etcdc_watch *watches;   /* still running, stopped by etcdc_close */
    int closing;                   /* the poller arms no more watches (mu) */
    grpc_completion_queue *poll_cq; /* the poller's connectivity watches */
    pthread_t poller;
    int polling; /* the poller thread runs */
};

/* How far a failed call may be retried on the next endpoint. */
typedef enum {
    EC_WRITE, /* only when the endpoint was never reached (nothing can have been applied) */
    EC_READ,  /* also after the connection broke mid-call (reads and renewals are harmless) */
} ec_retry_t;

/* Records the calling thread's failure (etcdc_error); returns rc for tail calls. */
int ec_fail(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The endpoint in use now, and moving past endpoint i when it failed (no-op if another
 * thread already moved on). */
size_t ec_current(etcdc_t *c);
void ec_advance(etcdc_t *c, size_t i);

/* Packs req, calls method on the current endpoint (then the next ones as retry
 * allows) and unpacks the reply as rd: 0 with *resp set (free with
 * protobuf_c_message_free_unpacked), or a negative errno with etcdc_error() set. */
int ec_call(etcdc_t *c, const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
            ec_retry_t retry, ProtobufCMessage **resp);

/* Copies one of etcd's key-values (NUL-terminated key and value); -1 on no memory. */
int ec_kv_copy(etcdc_kv_t *out, const Mvccpb__KeyValue *kv);
/* Fills a range answer from a RangeResponse (kvs copied). */
int ec_range_copy(etcdc_range_t *out, const Etcdserverpb__RangeResponse *rr);

/* etcd's "require leader" metadata (clientv3's WithRequireLeader): a member that has
 * no leader (cut off from the others) refuses the call, or ends the stream, with
 * UNAVAILABLE "no leader" instead of answering from stale state or staying silent,
 * so the client moves to another member. */
static inline void ec_leader_md(grpc_metadata *md)
{
    memset(md, 0, sizeof(*md));
    md->key = grpc_slice_from_static_string("hasleader");
    md->value = grpc_slice_from_static_string("true");
}

/* Stops and frees every watch of the client still running (etcdc_close). */
void ec_watch_stop_all(etcdc_t *c);

#endif
