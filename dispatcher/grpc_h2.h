/* dispatcher/grpc_h2.h - an HTTP/2 stream bridge for gRPC on an h2o event loop.
 *
 * h2o 2.2.5 buffers whole request bodies and cannot send trailers, so gRPC goes
 * through nghttp2 on every hop. A "pair" joins a stream accepted on a server
 * connection (down: the caller's side) to a stream opened on a client connection
 * (up: the callee's side). Bytes flow both ways with backpressure: a side's stream
 * window is returned only once its bytes were handed to the other side's session
 * (nghttp2_session_consume_stream), so each pair buffers at most one window per
 * direction. Response headers, trailers (also Trailers-Only) and resets pass through.
 *
 * Used by the gateway (client -> agent) and by the agent (dispatcher -> user server;
 * runtime-agent/grpc_h2.c compiles this same source: the agent links no dispatcher).
 * One event loop per process; everything here runs on it. */
#ifndef DISP_GRPC_H2_H
#define DISP_GRPC_H2_H

#include <h2o.h>
#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>

typedef struct h2b_conn h2b_conn_t;
typedef struct h2b_pair h2b_pair_t;

/* Header list owned by a pair (names and values copied). */
typedef struct {
    nghttp2_nv *nv;
    size_t n, cap;
} h2b_hdrs_t;

typedef struct {
    h2b_pair_t *pair;
    h2b_conn_t *conn; /* NULL: not attached (yet, or any more) */
    int32_t id;
    h2o_buffer_t *in;    /* received from this side, not yet handed to the other */
    h2o_linklist_t link; /* in conn->pairs */
    int in_eos;          /* this side ended its half (END_STREAM seen) */
    int closed;          /* the stream is gone on this side (or never opened) */
    int deferred;        /* our DATA provider toward this side is waiting for bytes */
} h2b_side_t;

struct h2b_pair {
    h2b_side_t down, up;
    h2b_hdrs_t req;       /* request headers as received on down */
    h2b_hdrs_t resp, trl; /* response headers / trailers from up (or made by us) */
    int resp_got;         /* response HEADERS arrived from up */
    int resp_sent;        /* response HEADERS submitted on down */
    int trl_ready;        /* trl is final: send after the last byte of up->in */
    int final_status;     /* grpc-status sent down (-1 none yet) */
    int http_status;      /* :status sent down */
    uint64_t deadline_ms; /* 0 = none; h2b_pair_fail(4) when it passes */
    h2o_linklist_t dl_link;
    int failed;    /* the platform ended it: bytes from down are dropped */
    int down_done; /* END_STREAM (or trailers) submitted on down */
    h2o_timeout_entry_t free_entry;
    _Alignas(8) unsigned char front[48]; /* the server side's per-call scratch (gateway: message scanner) */
    void *owner;                         /* the application's per-call state */
    /* Called once when the pair is freed (both sides done). */
    void (*on_free)(h2b_pair_t *p);
};

typedef struct {
    /* server connections: a request's HEADERS arrived (p->req filled); eos = no body */
    void (*on_request)(h2b_pair_t *p, int eos);
    /* optional: request bytes as they arrive, before they are buffered; non-zero means
     * the callee ended the pair (e.g. h2b_pair_fail) and the bytes are dropped */
    int (*on_data)(h2b_pair_t *p, const uint8_t *data, size_t len);
} h2b_server_cbs_t;

/* Must be called once on the loop's thread before anything else. */
void h2b_init(h2o_loop_t *loop);

/* Serves HTTP/2 (prior knowledge) on an accepted socket. */
int h2b_server_accept(h2o_socket_t *sock, const h2b_server_cbs_t *cbs);

/* The client connection to host:port (IPv4 / IPv6 literal), opened on first use and
 * reused while alive (multiplexed). NULL on a bad address or OOM. */
h2b_conn_t *h2b_client_get(const char *hostport);

/* Opens the up stream of p on c with the given request headers (copied by nghttp2);
 * p->down's body (already received and still to come) is its body. 0 or -1. */
int h2b_pair_connect(h2b_pair_t *p, h2b_conn_t *c, const nghttp2_nv *nv, size_t n);

/* Ends p with a platform-made gRPC status: Trailers-Only if nothing was sent down yet,
 * trailers otherwise; the up stream (if any) is reset with CANCEL. */
void h2b_pair_fail(h2b_pair_t *p, int grpc_status, const char *msg);

/* Answers p with a bare HTTP status (no gRPC framing, e.g. 415) and ends it. */
void h2b_pair_http_error(h2b_pair_t *p, int status);

/* Watches p->deadline_ms (set it first). */
void h2b_pair_watch_deadline(h2b_pair_t *p);

/* First value of a request header (name lower case), or NULL. */
const nghttp2_nv *h2b_find(const h2b_hdrs_t *h, const char *name);

/* Live connections / pairs (for tests and metrics). */
size_t h2b_live_pairs(void);

#endif
