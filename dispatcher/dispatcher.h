/* dispatcher/dispatcher.h - the call's way to an instance. Every front end (HTTP, gRPC,
 * Thrift) turns a request into one protocol-neutral call and hands it here; the
 * dispatcher routes it (one index from routing key to function), picks or cold-starts
 * an instance (the same held-call queue and Acquire calls for every protocol), watches
 * its deadline, and carries it over one h2c connection per agent and loop (the h2 bridge,
 * h2b/). The protocol travels as stream metadata (faas-protocol). Everything here runs
 * on the gateway's event loop threads (each with its own replica, docs/threads.md)
 * except the discovery watch and the Acquire/Release workers, which run on their own
 * threads and post to the loops. */
#ifndef DISP_DISPATCHER_H
#define DISP_DISPATCHER_H

#include <h2o.h>
#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/errors.h"
#include "h2b/h2b.h"

#define DISP_MAX_DISCOVERY 8

typedef struct {
    /* faas-discovery's host:port, or several comma-separated (at most DISP_MAX_DISCOVERY,
     * all on one etcd): the watch follows one, moving to the next when its stream ends */
    const char *discovery;
    uint32_t queue_max;             /* held calls per function */
    uint32_t cold_start_timeout_ms; /* 0 = the spec's */
    uint32_t sync_hold_ms;          /* longest a routing miss waits for discovery (disp_resolve) */
} disp_config_t;

/* Starts the watch and worker threads and binds the dispatcher to ctx's loop, the
 * primary one (loop 0: Acquires, releases, task claims). */
int disp_start(h2o_context_t *ctx, const disp_config_t *cfg, const char **err);
/* Binds a replica of the dispatcher to another loop thread's ctx, as loop number idx
 * (1 .. DISP_MAX_LOOPS - 1), on that thread, before disp_start: each loop keeps its
 * own table from the same watch, and asks the primary for instances
 * (docs/threads.md). */
void disp_attach(h2o_context_t *ctx, const disp_config_t *cfg, unsigned idx);

/* The protocol a call came in with (and that the agent speaks to the user server). */
typedef enum { DISP_PROTO_HTTP = 0, DISP_PROTO_GRPC = 1, DISP_PROTO_THRIFT = 2 } disp_proto_t;
#define DISP_NPROTO 3

/* ---- routing ---- */

/* The function a routing key names: HTTP, the function's name; gRPC, a service its
 * spec declares (grpc_services); Thrift, a declared service (thrift_services), else a
 * function of that name. The name stays valid while the loop runs; NULL if none. */
const char *disp_route(disp_proto_t proto, const char *key, size_t len, size_t *fnlen);

/* A routing miss, made sure of: disp_route / disp_lookup found nothing, but the table
 * may only be behind discovery (no snapshot yet after a start, or a deploy whose watch
 * event is still on its way). cb(ud, found) runs once, on the loop, possibly before
 * disp_resolve returns: 1 = the key routes now (look it up again), 0 = discovery
 * says there is no such function (the protocol's "not found"), -1 = cannot tell
 * within the hold (the protocol's "unavailable, retry later"). The handle (NULL when
 * cb already ran) cancels with disp_resolve_cancel while cb has not run. */
typedef struct disp_resolve disp_resolve_t;
typedef void (*disp_resolve_cb)(void *ud, int found);
#define DISP_RESOLVE_KEY_MAX 255
disp_resolve_t *disp_resolve(disp_proto_t proto, const char *key, size_t len, disp_resolve_cb cb, void *ud);
void disp_resolve_cancel(disp_resolve_t *r);
/* 1 once the first discovery snapshot is in: before it the gateway is not ready. */
int disp_ready(void);

/* What a front end needs to know before it builds a call. */
typedef struct {
    uint64_t max_body_bytes;  /* 0 = no function limit */
    uint32_t timeout_ms;      /* a request's deadline */
    uint32_t max_duration_ms; /* a stream's longest life */
} disp_fn_info_t;

/* 0 and info filled if the function is deployed, -1 if unknown. */
int disp_lookup(const char *name, size_t len, disp_fn_info_t *info);

/* ---- the call ---- */

typedef struct disp_call disp_call_t;

/* How the call's outcome reaches its front end. A platform error is a kind of
 * DESIGN.md section 3 (common/errors.h); the front end says it in its protocol's terms.
 * After end or error nothing else is called (but done). */
typedef struct disp_sink {
    /* Local calls: the function's response head (status; headers without pseudo
     * headers, as the agent sent them). */
    void (*head)(disp_call_t *c, int status, const nghttp2_nv *h, size_t n);
    /* Local calls: response body bytes; give them back with disp_call_consumed once they
     * moved on (that is the backpressure towards the function). */
    void (*data)(disp_call_t *c, const uint8_t *d, size_t len);
    /* Local calls: the response ended; trailers (may be none). */
    void (*end)(disp_call_t *c, const nghttp2_nv *trl, size_t n);
    /* A platform error; started = the head was already delivered (break the response). */
    void (*error)(disp_call_t *c, faas_err_t kind, const char *msg, int started);
    /* Bridged calls: the server stream is gone and the dispatcher lets go of c. */
    void (*done)(disp_call_t *c, int grpc_status, int http_status);
} disp_sink_t;

/* A call whose request and response the front end carries itself (HTTP, Thrift). NULL
 * on OOM. */
disp_call_t *disp_call_new(disp_proto_t proto, const disp_sink_t *sink, void *owner);
/* A call whose caller is an h2 server stream (gRPC): request and response bytes flow
 * between the two streams without passing through the front end. NULL on OOM. */
disp_call_t *disp_call_bridge(h2b_pair_t *down, disp_proto_t proto, const disp_sink_t *sink, void *owner);

/* Request metadata for the agent: pseudo headers (":method", ":path", ":authority",
 * ":scheme") and headers, lower-case names, copied. The dispatcher adds faas-request-id,
 * faas-function, faas-deadline-ms and faas-protocol itself. 0 or -1. */
int disp_call_header(disp_call_t *c, const char *name, size_t nl, const char *value, size_t vl);
/* Request body bytes (copied) of a local call; eos ends the request. 0 or -1. */
int disp_call_body(disp_call_t *c, const void *data, size_t len, int eos);
/* Marks the call async (reserved: accepted durably and answered 202 by the front end). */
void disp_call_set_async(disp_call_t *c);
/* The faas-deadline-ms the agent gets, instead of the time the call has left: a task's
 * hand-off must reach an instance within the function's timeout, but its run is bounded
 * by the async timeout (ms, nonzero). */
void disp_call_set_agent_deadline(disp_call_t *c, uint64_t ms);

/* Sends the call to function fn: picks or cold-starts an instance. deadline_ms is an
 * absolute faas_now_ms() time, 0 = the function's timeout. The sink may be called
 * before this returns (an unknown function: error 404). */
void disp_call_start(disp_call_t *c, const char *fn, size_t fnlen, const char *request_id, uint64_t deadline_ms);

/* Local calls: len response bytes moved on; the function may send that many more. */
void disp_call_consumed(disp_call_t *c, size_t len);
/* Local calls: the front end lets go (done, or its client left): an unfinished call is
 * cancelled upstream; no sink callback follows; c is freed after this loop iteration. */
void disp_call_close(disp_call_t *c);

/* The front end's per-call state, as given at creation. */
void *disp_call_owner(const disp_call_t *c);
/* The call's request id ("" before start). */
const char *disp_call_request_id(const disp_call_t *c);

/* Serves HTTP/2 with prior knowledge on an accepted h2o socket: each stream is a server
 * pair of the h2 bridge handed to cbs (the gRPC front end). 0 or -1. */
int disp_h2b_accept(h2o_socket_t *sock, const h2b_server_cbs_t *cbs);

/* ---- the control plane, for front ends (async tasks) ---- */

/* rc: 0, a FAAS_GRPC_* status from discovery, or -1 (no channel); resp (len bytes)
 * is the reply, valid during the call; err says what went wrong. */
typedef void (*disp_rpc_cb)(void *ud, int rc, const uint8_t *resp, size_t len, const char *err);
/* Calls a unary Discovery method (method is a static string, "/faas.Discovery/...")
 * on a control thread: the loop never blocks. cb runs later on the loop, once. 0, or
 * -1 on OOM (cb will not run). */
int disp_discovery_call(const char *method, const uint8_t *req, size_t len, uint32_t timeout_ms, disp_rpc_cb cb,
                        void *ud);

/* A task of fn was just submitted through this gateway: claim soon. */
void disp_tasks_submitted(const char *fn, size_t len);

/* ---- observability ---- */

/* Writes the dispatcher's Prometheus lines (queue depth, instances, cold starts). */
void disp_metrics(FILE *out);

/* Cold starts done since start (for the metric and tests). */
uint64_t disp_cold_starts(void);

#endif
