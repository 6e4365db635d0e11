/* dispatcher/internal.h - the dispatcher's data structures. table.c is pure (no I/O,
 * no clock: callers pass now_ms) so selection and queueing are unit-tested alone. */
#ifndef DISP_INTERNAL_H
#define DISP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

struct disp_up;
struct disp_fn;

typedef struct disp_inst {
    char id[64];
    char endpoint[64]; /* host:port of the agent */
    char stream_endpoint[64]; /* host:port of the agent's gRPC stream listener ("" = none) */
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
    struct disp_fn *fn;
    struct disp_up *up; /* upstream connection, opened lazily */
} disp_inst_t;

/* A request held while its function has no capacity. Intrusive, owned by the caller. */
typedef struct disp_waiter {
    struct disp_waiter *prev, *next;
    uint64_t deadline_ms;
    int queued;
    /* set for gRPC calls (dispatcher/grpc.c); NULL for HTTP requests (disp_req_t) */
    void (*on_ready)(struct disp_waiter *w, struct disp_inst *inst);
    void (*on_fail)(struct disp_waiter *w, int status, const char *what);
    const char *rid;
} disp_waiter_t;

typedef struct {
    uint64_t version;
    uint32_t concurrency; /* per instance; 0 = unlimited */
    uint32_t min_instances, max_instances;
    uint32_t timeout_ms, cold_start_timeout_ms, idle_timeout_ms;
    uint64_t max_body_bytes;
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
    uint32_t gen;
} disp_fn_t;

typedef struct {
    disp_fn_t **fns;
    size_t nfns, capfns;
    /* name -> function, open addressing (functions are never removed): lookups run
     * on every request and the table keeps every function ever seen */
    disp_fn_t **index;
    size_t index_cap; /* a power of two, > 2 * nfns */
    uint32_t queue_max;
} disp_table_t;

void disp_table_init(disp_table_t *t, uint32_t queue_max);
/* Frees every function and instance (in-flight bookkeeping is dropped). */
void disp_table_clear(disp_table_t *t);

disp_fn_t *disp_fn_find(disp_table_t *t, const char *name, size_t len);
/* Finds or creates the entry (unknown until disp_fn_set_spec). NULL on OOM or bad name. */
disp_fn_t *disp_fn_get(disp_table_t *t, const char *name, size_t len);
/* Installs a spec; takes ownership of spec_pb (malloc'd, may be NULL). */
void disp_fn_set_spec(disp_fn_t *fn, const disp_fn_params_t *p, uint8_t *spec_pb, size_t spec_len);
/* Marks the function gone: it answers 404 again; instances stay until released. */
void disp_fn_forget(disp_fn_t *fn);

/* Adds or updates an instance. NULL on OOM. */
disp_inst_t *disp_inst_put(disp_fn_t *fn, const char *id, const char *endpoint, const char *worker_id, uint64_t version,
                           int ready, uint32_t concurrency, uint64_t now_ms);
disp_inst_t *disp_inst_find(disp_table_t *t, const char *id);
/* Drops an instance from its function. Returns 1 if it was freed now (no request in
 * flight), 0 if the last disp_inst_end will free it. */
int disp_inst_remove(disp_inst_t *inst);
/* Effective per-instance limit (0 = unlimited). */
uint32_t disp_inst_limit(const disp_inst_t *inst);

/* Least in-flight READY instance of the function's current version with capacity. */
disp_inst_t *disp_pick(disp_fn_t *fn);
void disp_inst_begin(disp_inst_t *inst);
/* Ends one request; returns 1 if this freed a removed instance (do not touch it). */
int disp_inst_end(disp_inst_t *inst, uint64_t now_ms);

/* Queues w (deadline = now + timeout). 0, or -1 when the queue is full. */
int disp_wait_push(disp_table_t *t, disp_fn_t *fn, disp_waiter_t *w, uint64_t now_ms, uint32_t timeout_ms);
void disp_wait_remove(disp_fn_t *fn, disp_waiter_t *w);
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
 * (keeping min_instances of the current version). Marks them releasing. */
size_t disp_idle_collect(disp_table_t *t, uint64_t now_ms, disp_inst_t **out, size_t cap);

/* Called when an instance is freed (set by the upstream layer to drop its connection ref). */
extern void (*disp_inst_free_hook)(disp_inst_t *inst);

/* ---- loop-side glue: dispatcher.c (requests), upstream.c (h2c), control.c (threads) ---- */
#include <h2o.h>
#include <nghttp2/nghttp2.h>

#include "dispatcher/dispatcher.h"

typedef struct disp_req {
    h2o_req_t *req; /* NULL once h2o disposed the request */
    disp_fn_t *fn;
    disp_inst_t *inst; /* while counted in its in-flight */
    disp_waiter_t wait;
    h2o_timeout_entry_t wait_timer, deadline_timer;
    uint64_t start_ms, deadline_ms;
    h2o_iovec_t path;
    h2o_header_t *hdrs;
    size_t nhdrs;
    const char *rid;
    /* upstream stream */
    struct disp_up *up;
    int32_t stream_id;
    h2o_linklist_t up_link; /* in up->reqs (active or waiting for connect) */
    size_t body_off;
    int status;
    int faas_error; /* the agent answered with faas-error */
    int started, sending, eos, done, aborted, final_sent;
    h2o_generator_t gen;
    h2o_buffer_t *recv_buf, *send_buf;
    size_t send_len;
} disp_req_t;

typedef struct disp_up {
    char endpoint[64];
    h2o_socket_t *sock;
    nghttp2_session *ng;
    int connected, dead, writing;
    h2o_buffer_t *wbuf;
    h2o_linklist_t reqs;
    h2o_timeout_entry_t flush_entry;
    struct disp_up *next;
} disp_up_t;

/* The loop-side state, one per gateway. */
typedef struct {
    h2o_context_t *ctx;
    h2o_loop_t *loop;
    disp_config_t cfg;
    disp_table_t table;
    disp_up_t *ups;
    uint64_t cold_starts, acquire_failures;
    uint32_t snap_gen;
    int synced; /* a snapshot completed at least once */
} disp_state_t;

extern disp_state_t disp_g;

/* upstream.c: sends r on a stream of the instance's agent connection. */
void disp_up_submit(disp_req_t *r, const char *endpoint);
/* Detaches r from its stream (client gone or deadline): resets it. */
void disp_up_cancel(disp_req_t *r);
/* Breaks a started response (upstream failed after the headers went out). */
void disp_up_abort_response(disp_req_t *r);

/* control.c: threads and their messages. */
int disp_control_start(const char **err);
/* Asks a worker manager for an instance of fn (current spec). */
int disp_control_acquire(disp_fn_t *fn, const char *request_id);
void disp_control_release(disp_inst_t *inst, const char *reason);

/* dispatcher.c: called by control.c / upstream.c on the loop. */
void disp_on_instance_ready(disp_fn_t *fn);
void disp_on_acquire_failed(disp_fn_t *fn, const char *why);
/* The function was deleted: it answers 404, held requests too. */
void disp_on_function_deleted(disp_fn_t *fn);
/* Ends r with a platform error (or aborts a started response). */
void disp_req_fail(disp_req_t *r, int status, const char *what);
/* r's stream finished (response complete or broken). */
void disp_req_finish_upstream(disp_req_t *r);
h2o_timeout_t *disp_timeout_for(uint32_t ms);
/* h2b_h2o.c: installs the bridge's I/O seam on the loop. */
void disp_h2b_init(h2o_loop_t *loop);

#endif
