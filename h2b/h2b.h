/* h2b/h2b.h - an HTTP/2 stream bridge (nghttp2 server and client pairs), on any event loop.
 *
 * h2o 2.2.5 buffers whole request bodies and cannot send trailers, so gRPC goes
 * through nghttp2 on every hop. A "pair" joins a stream accepted on a server
 * connection (down: the caller's side) to a stream opened on a client connection
 * (up: the callee's side). Bytes flow both ways with backpressure: a side's stream
 * window is returned only once its bytes were handed to the other side's session
 * (nghttp2_session_consume_stream), so each pair buffers at most one window per
 * direction. Response headers, trailers (also Trailers-Only) and resets pass through.
 *
 * Used by the gateway (client -> agent) on h2o's loop (dispatcher/h2b_h2o.c) and by
 * the agent, which links no h2o, on its evl loop (runtime-agent/front.c). Depends on
 * nghttp2 and common/ only.
 * The loop and its sockets are reached only through an h2b_io_t table. The agent also
 * answers streams itself (HTTP, Thrift): "local" pairs have no up connection and the
 * application writes the response into them (h2b_pair_respond / h2b_pair_send). The
 * other way round, a "local caller" pair has no down connection: the application
 * pushes the request (h2b_pair_push) and takes the response through callbacks
 * (h2b_local_t); the gateway's HTTP and Thrift front ends reach agents this way.
 * One event loop per process; everything here runs on it. */
#ifndef H2B_H2B_H
#define H2B_H2B_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/evl.h"

typedef struct h2b_conn h2b_conn_t;
typedef struct h2b_pair h2b_pair_t;

/* A pair's bump allocator: its header lists live here and die with it (no malloc per
 * header); the first block is inside the pair. */
typedef struct {
    unsigned char *cur, *end;
    void *chunks; /* malloc'd blocks past the first, chained through their first word */
} h2b_arena_t;

/* Header list owned by a pair (names and values copied into the pair's arena, or
 * malloc'd when ar is NULL). */
typedef struct {
    nghttp2_nv *nv;
    size_t n, cap;
    h2b_arena_t *ar;
} h2b_hdrs_t;

typedef struct {
    h2b_pair_t *pair;
    h2b_conn_t *conn; /* NULL: not attached (yet, or any more) */
    int32_t id;
    evl_buf_t in;    /* received from this side, not yet handed to the other */
    evl_link_t link; /* in conn->pairs */
    int in_eos;      /* this side ended its half (END_STREAM seen) */
    int closed;      /* the stream is gone on this side (or never opened) */
    int deferred;    /* our DATA provider toward this side is waiting for bytes */
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
    int failed;           /* the platform ended it: bytes from down are dropped */
    int down_done;        /* END_STREAM (or trailers) submitted on down */
    evl_link_t free_link;
    _Alignas(8) unsigned char front[64]; /* the server side's per-call scratch (gateway: message scanner) */
    void *owner;                         /* the application's per-call state */
    /* Called once when the pair is freed (both sides done). */
    void (*on_free)(h2b_pair_t *p);
    /* Local pairs: called when nghttp2 took response bytes (h2b_pair_queued shrank). */
    void (*on_drain)(h2b_pair_t *p);
    /* Local callers (h2b_pair_new_local): the application is the down side. */
    const struct h2b_local *local;
    int local_open; /* the local caller still holds the pair (h2b_pair_release ends it) */
    int local_body; /* the local caller pushed a body (maybe empty): the request has DATA */
    size_t req_bytes; /* request header list size as RFC 9113 6.5.2 counts it (name + value + 32) */
    int req_too_large; /* it passed H2B_MAX_HEADER_LIST_BRIDGE: the rest was dropped, answer with an error */
    h2b_arena_t arena;
    _Alignas(16) unsigned char arena_first[1024];
};

typedef struct {
    /* server connections: a request's HEADERS arrived (p->req filled); eos = no body */
    void (*on_request)(h2b_pair_t *p, int eos);
    /* optional: request bytes as they arrive, before they are buffered; non-zero means
     * the callee took them (e.g. a local pair's body) or ended the pair (e.g.
     * h2b_pair_fail): they are not buffered and the stream window is returned */
    int (*on_data)(h2b_pair_t *p, const uint8_t *data, size_t len);
    /* optional: the request ended (END_STREAM) after its HEADERS */
    void (*on_end)(h2b_pair_t *p);
} h2b_server_cbs_t;

/* ---- the I/O seam: what the bridge needs of a loop, one table per process ---- */

typedef struct h2b_io {
    /* Starts a non-blocking connect for c; the adapter later calls h2b_io_connected. The
     * socket handle, or NULL on immediate failure. */
    void *(*connect)(h2b_conn_t *c, const struct sockaddr *sa, unsigned len);
    /* Starts delivering sock's reads to h2b_io_recv and its end to h2b_io_closed. */
    void (*read_start)(void *sock, h2b_conn_t *c);
    /* Writes len bytes (one write at a time): 1 written, 0 pending (h2b_io_written
     * follows; data stays untouched until then), -1 failed now. */
    int (*write)(void *sock, const void *data, size_t len);
    /* Closes sock; nothing is delivered for it afterwards. */
    void (*close)(void *sock);
    /* Asks for one h2b_io_run() at the end of the current loop iteration. */
    void (*later)(void);
} h2b_io_t;

/* ---- flood limits: one place for every HTTP/2 server session of the platform ----
 * (the gateway's h2c port, gateway/h2c.c, and every h2b server connection: the
 * gateway's gRPC port and the agents' one port). Each answers a published attack. */

/* SETTINGS entries per frame (nghttp2 answers more with ENHANCE_YOUR_CALM):
 * CVE-2019-9515 "settings flood" with huge frames. */
#define H2B_MAX_SETTINGS 32
/* Control-frame ACKs (SETTINGS ACK, PING ACK) queued and not yet written; more is
 * NGHTTP2_ERR_FLOODED: CVE-2019-9512 (ping flood) and CVE-2019-9515 (settings flood). */
#define H2B_MAX_OUTBOUND_ACK 1000
/* RST_STREAM token bucket (burst, refill per second): CVE-2023-44487 "rapid reset";
 * past it nghttp2 sends GOAWAY (INTERNAL_ERROR in 1.52 + the Debian fix). */
#define H2B_STREAM_RESET_BURST 1000
#define H2B_STREAM_RESET_RATE 33
/* CONTINUATION frames per header block: CVE-2024-27983/28182 "CONTINUATION flood". */
#define H2B_MAX_CONTINUATIONS 8
/* HPACK dynamic table the peer may make us keep (CVE-2016-6581 "HPACK bomb"). */
#define H2B_MAX_DEFLATE_TABLE 4096
/* Request header list (RFC 9113 6.5.2 size: name + value + 32 per field) of the
 * gateway's HTTP port, advertised as SETTINGS_MAX_HEADER_LIST_SIZE and enforced while
 * decoding: a larger block is answered 431 and costs no memory past this. */
#define H2B_MAX_HEADER_LIST (16 * 1024)
/* The same for h2b server sessions (gRPC port: RESOURCE_EXHAUSTED; agents): twice the
 * HTTP port's, so what the gateway forwards (its cap + its own headers) always fits. */
#define H2B_MAX_HEADER_LIST_BRIDGE (2 * H2B_MAX_HEADER_LIST)

/* Sets the flood limits above on opt (a server session's options). */
void h2b_server_options(nghttp2_option *opt);
/* The process's server sessions face the platform's own gateways, not the public (the
 * agent's one port): no stream-reset rate limit (one gateway connection multiplexes
 * many clients' cancels and deadlines) and a header list cap of
 * H2B_MAX_HEADER_LIST_INTERNAL, so a request the gateway's gRPC port admitted still
 * fits with the platform's faas-* headers added. Call before any session. */
void h2b_server_internal(void);
#define H2B_MAX_HEADER_LIST_INTERNAL (2 * H2B_MAX_HEADER_LIST_BRIDGE)

/* Installs the loop adapter; once, on the loop's thread, before anything else. */
void h2b_init_io(const h2b_io_t *io);
/* Serves HTTP/2 (prior knowledge) on an accepted socket handle; NULL on OOM (the
 * caller closes sock then). */
h2b_conn_t *h2b_io_accept(void *sock, const h2b_server_cbs_t *cbs);
/* Adapter -> bridge: the connect finished. */
void h2b_io_connected(h2b_conn_t *c, int ok);
/* Adapter -> bridge: bytes arrived; returns how many were consumed, or -1 when the
 * connection died meanwhile (its socket is closed: do not touch it). */
ssize_t h2b_io_recv(h2b_conn_t *c, const uint8_t *data, size_t len);
/* Adapter -> bridge: the peer closed or the socket failed. */
void h2b_io_closed(h2b_conn_t *c);
/* Adapter -> bridge: a pending write finished (ok) or failed. */
void h2b_io_written(h2b_conn_t *c, int ok);
/* Adapter -> bridge: the end-of-iteration work asked for with later(). */
void h2b_io_run(void);

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

/* First value of a request header (name lower case), or NULL. */
const nghttp2_nv *h2b_find(const h2b_hdrs_t *h, const char *name);

/* Live connections / pairs (for tests and metrics). */
size_t h2b_live_pairs(void);

/* ---- local pairs: the application answers (no up stream) ---- */

/* Submits the response HEADERS (copied) on down; eos: nothing follows. 0 or -1. */
int h2b_pair_respond(h2b_pair_t *p, const nghttp2_nv *nv, size_t n, int eos);
/* Queues response body bytes toward down (eos: the last); 0, or -1 when down is gone or
 * out of memory. Watch h2b_pair_queued and on_drain for backpressure. */
int h2b_pair_send(h2b_pair_t *p, const void *data, size_t len, int eos);
/* Response bytes queued and not yet taken by nghttp2. */
static inline size_t h2b_pair_queued(const h2b_pair_t *p)
{
    return p->up.in.len;
}
/* Resets the down stream with INTERNAL_ERROR: a response that cannot be completed. */
void h2b_pair_reset(h2b_pair_t *p);
/* 1 while the down stream can still take a response (the client is there). */
int h2b_pair_alive(const h2b_pair_t *p);
/* Adds a header (copied) to one of a pair's lists (freed with the pair); 0 or -1. */
int h2b_hdrs_add(h2b_hdrs_t *h, const uint8_t *name, size_t nl, const uint8_t *value, size_t vl);

/* ---- going away ---- */

/* Sends GOAWAY (NO_ERROR, debug as its opaque data) on every server connection: the
 * streams already taken finish, no new one will be. */
void h2b_goaway_all(const char *debug);
/* Closes server connections that sent no SETTINGS within preface_ms of their accept,
 * or have no stream and received nothing for idle_ms (slowloris, idle floods); the
 * application calls it from a periodic timer. Returns how many it closed. */
size_t h2b_server_sweep(uint64_t preface_ms, uint64_t idle_ms);
/* Closes client connections whose connect has not completed within connect_ms (a host
 * that died without a word: no RST, the SYNs unanswered), which hands their unsent
 * requests to the h2b_on_unsent hook; the application calls it from a periodic timer.
 * Returns how many it closed. */
size_t h2b_client_sweep(uint64_t connect_ms);
/* cb learns of every GOAWAY a client connection receives (hostport as given to
 * h2b_client_get, the peer's opaque data). One hook per process. */
void h2b_on_goaway(void (*cb)(const char *hostport, const uint8_t *data, size_t len));
/* cb is offered every pair whose up connection died before it ever connected (refused,
 * unreachable): its request has not left, so it may be sent elsewhere. cb returns 1 if
 * it took p (detached from that connection; h2b_pair_connect it again, or end it),
 * 0 to let it break as usual (on_broken / a gRPC UNAVAILABLE). One hook per process. */
void h2b_on_unsent(int (*cb)(h2b_pair_t *p));

/* ---- local callers: the application is the down side (no server stream) ---- */

typedef struct h2b_local {
    /* The final response HEADERS arrived: p->resp (with :status). */
    void (*on_head)(h2b_pair_t *p);
    /* Response body bytes, passed on unbuffered; give the stream's window back with
     * h2b_pair_window once they have moved on (that is the backpressure). */
    void (*on_data)(h2b_pair_t *p, const uint8_t *data, size_t len);
    /* The response ended cleanly; trailers, if any, are in p->trl. */
    void (*on_end)(h2b_pair_t *p);
    /* The up stream or its connection failed before the response ended; h2_error is
     * the RST_STREAM code (NGHTTP2_REFUSED_STREAM: the callee never saw the request). */
    void (*on_broken)(h2b_pair_t *p, uint32_t h2_error, const char *why);
} h2b_local_t;

/* A pair whose down side is the application (ops, owner). Request headers go into
 * p->req with h2b_hdrs_add before h2b_pair_connect. NULL on OOM. */
h2b_pair_t *h2b_pair_new_local(const h2b_local_t *ops, void *owner);
/* Request body bytes (copied) for the up stream; eos ends the request. data NULL with
 * len 0 and eos: a request without a body (it ends with its HEADERS). 0 or -1. */
int h2b_pair_push(h2b_pair_t *p, const void *data, size_t len, int eos);
/* Returns len bytes of the up stream's window (the caller passed them on). */
void h2b_pair_window(h2b_pair_t *p, size_t len);
/* The local caller lets go: no callback follows, an unfinished up stream is reset
 * (CANCEL), and the pair is freed once nghttp2 is done with it. */
void h2b_pair_release(h2b_pair_t *p);

#endif
