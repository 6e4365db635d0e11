/* common/rpc.h - glue over the grpc core C API for the control plane.
 *
 * Clients are blocking and run on the caller's thread (one pluck completion queue
 * per call): call them from dedicated threads, never from an event loop callback.
 * A server runs its own thread; handlers run on it and must return quickly. A
 * handler may keep the call and answer later from any thread (faas_rpc_reply /
 * faas_rpc_fail / faas_rpc_send / faas_rpc_finish are thread-safe).
 *
 * grpc core must not be inherited across fork: fork helpers before the first
 * faas_rpc_* call, or spawn with posix_spawn. */
#ifndef FAAS_RPC_H
#define FAAS_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "common/auth.h"
#include "common/errors.h"

/* Status codes are common/errors.h's FAAS_GRPC_*. */

typedef struct faas_rpc_server faas_rpc_server_t;
typedef struct faas_rpc_call faas_rpc_call_t;
typedef struct faas_rpc_channel faas_rpc_channel_t;

typedef enum {
    FAAS_RPC_UNARY,         /* one request -> faas_rpc_reply or faas_rpc_fail */
    FAAS_RPC_CLIENT_STREAM, /* handler called per message, then once with req == NULL at the
                               end; if the client broke off, faas_rpc_cancelled() is 1 then */
    FAAS_RPC_SERVER_STREAM, /* one request -> faas_rpc_send* -> faas_rpc_finish */
} faas_rpc_kind_t;

/* A server method. The request bytes are only valid during the handler call; they are
 * followed by a NUL byte that len does not count (so do client replies). */
typedef struct {
    const char *method; /* full name: "/faas.Discovery/Deploy" */
    faas_rpc_kind_t kind;
    void (*handler)(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud);
    void *ud;
} faas_rpc_method_t;

/* Calls grpc_init once per process (the other calls do it on demand). */
void faas_rpc_global_init(void);

/* Binds addr ("127.0.0.1:7100"; port 0 picks one, reported in *bound_port) and
 * starts the server thread. Returns NULL with *err set on failure. */
faas_rpc_server_t *faas_rpc_server_start(const char *addr, int *bound_port, const faas_rpc_method_t *methods,
                                         size_t n_methods, const char **err);
/* How a server is protected (docs/security.md "Control-plane credentials"). */
typedef struct {
    const faas_token_t *token; /* every call must carry it ("authorization: Bearer ..."), else it
                                  ends UNAUTHENTICATED before any handler runs; NULL: open */
    const char *tls_cert;      /* PEM files: serve TLS with this certificate chain and key; */
    const char *tls_key;       /* both NULL: plaintext (loopback, private network) */
} faas_rpc_server_opts_t;

/* Like faas_rpc_server_start, protected as opts says (copied; NULL = open, plaintext).
 * On failure *err is a static sentence or one written into errbuf. */
faas_rpc_server_t *faas_rpc_server_start_opts(const char *addr, int *bound_port, const faas_rpc_method_t *methods,
                                              size_t n_methods, const faas_rpc_server_opts_t *opts, char *errbuf,
                                              size_t errcap, const char **err);
/* Calls refused for reason r (FAAS_AUTH_MISSING..WRONG) since the server started. */
uint64_t faas_rpc_server_refused(faas_rpc_server_t *srv, faas_auth_result_t r);
/* Writes the refusal counters as Prometheus text (name{reason="..."}) to buf at *off,
 * advancing *off; what does not fit is cut. */
void faas_rpc_server_refused_metrics(faas_rpc_server_t *srv, const char *name, char *buf, size_t cap, int *off);
/* Stops accepting, cancels calls still open (streams end with UNAVAILABLE) and joins. */
void faas_rpc_server_stop(faas_rpc_server_t *srv);

/* Ends a unary or client-stream call with OK and the reply bytes. Exactly once per call. */
int faas_rpc_reply(faas_rpc_call_t *call, const uint8_t *resp, size_t len);
/* Ends any call with a non-OK status and a human message. */
int faas_rpc_fail(faas_rpc_call_t *call, int status, const char *msg);
/* Queues one message on a server stream; -1 once the client has gone. Never blocks. */
int faas_rpc_send(faas_rpc_call_t *call, const uint8_t *msg, size_t len);
/* Like faas_rpc_send, but more messages follow at once: this one (and those queued
 * with it) stays queued until the next faas_rpc_send, faas_rpc_flush or
 * faas_rpc_finish, and then they leave in as few writes as grpc allows (one per
 * burst instead of one per message plus a completion round trip in between). */
int faas_rpc_send_more(faas_rpc_call_t *call, const uint8_t *msg, size_t len);
/* Sends what faas_rpc_send_more held back; -1 once the client has gone. Never blocks. */
int faas_rpc_flush(faas_rpc_call_t *call);
/* Like faas_rpc_send, but first waits while max_queued messages are still unsent,
 * so a large stream is paced by the client. Blocks: never call it on the server
 * thread (from a handler); use it from the owner's own thread. */
int faas_rpc_send_paced(faas_rpc_call_t *call, const uint8_t *msg, size_t len, size_t max_queued);
/* Ends a server stream (after the queued messages). The owner must call it exactly
 * once, even after on_close fired; the call is freed after both. */
int faas_rpc_finish(faas_rpc_call_t *call, int status, const char *msg);
/* Registers fn, called once on the server thread when the client goes away or the
 * call ends, so the owner stops sending. */
void faas_rpc_on_close(faas_rpc_call_t *call, void (*fn)(faas_rpc_call_t *call, void *ud), void *ud);
/* 1 when the client cancelled or broke off the call (a client stream cut short). */
int faas_rpc_cancelled(faas_rpc_call_t *call);
/* The user data a handler can attach to a call (client-stream state, say). */
void faas_rpc_set_data(faas_rpc_call_t *call, void *data);
void *faas_rpc_get_data(faas_rpc_call_t *call);
/* Peer address of the call as grpc prints it ("ipv4:127.0.0.1:5555"); valid while the call lives. */
const char *faas_rpc_peer(faas_rpc_call_t *call);

/* Sets what every later faas_rpc_channel_open uses: the platform token to send on
 * every call (NULL: none) and a PEM file of the CA roots to trust for TLS (NULL:
 * plaintext). Call once at start, before any channel. 0, or -1 with err filled. */
int faas_rpc_client_configure(const faas_token_t *token, const char *tls_ca, char *err, size_t errcap);

/* Opens a channel to "host:port" of the control plane, with what
 * faas_rpc_client_configure set (plaintext and no token if it was not called). */
faas_rpc_channel_t *faas_rpc_channel_open(const char *target);
/* Opens a plaintext channel that carries no token: for the gateway's public gRPC
 * port, which must never see the platform's credential (it forwards headers). */
faas_rpc_channel_t *faas_rpc_channel_open_public(const char *target);
void faas_rpc_channel_close(faas_rpc_channel_t *ch);
/* 1 if the channel is connected now: after a failed call, 0 says the peer was not
 * reached (down, restarting), 1 that the failure is the peer's own answer. */
int faas_rpc_channel_connected(faas_rpc_channel_t *ch);
/* Starts connecting and waits up to timeout_ms for the channel to be READY: 1 if it
 * is, 0 if not or once an attempt failed (a peer down or black-holed is found out in
 * seconds, not at the deadline of a long call). */
int faas_rpc_channel_wait_ready(faas_rpc_channel_t *ch, int timeout_ms);

/* Results of the client calls: 0 = OK; >0 = the gRPC status the server or transport
 * gave (errbuf holds its message); -1 = local failure (errbuf says why).
 * timeout_ms 0 means no deadline. *resp is malloc'd (free it), even when empty. */
int faas_rpc_unary(faas_rpc_channel_t *ch, const char *method, const uint8_t *req, size_t len, int timeout_ms,
                   uint8_t **resp, size_t *resp_len, char *errbuf, size_t errcap);

/* Client stream: next() gives the messages one by one; it returns 1 with msg and len
 * set, 0 at the end, -1 to abort. Then waits for the single reply. */
int faas_rpc_client_stream(faas_rpc_channel_t *ch, const char *method,
                           int (*next)(void *ud, const uint8_t **msg, size_t *len), void *ud, int timeout_ms,
                           uint8_t **resp, size_t *resp_len, char *errbuf, size_t errcap);

/* Server stream: on_msg is called for every message on this thread; returning
 * non-zero cancels the call (result FAAS_GRPC_CANCELLED). Returns when the stream ends. */
int faas_rpc_server_stream(faas_rpc_channel_t *ch, const char *method, const uint8_t *req, size_t len, int timeout_ms,
                           int (*on_msg)(void *ud, const uint8_t *msg, size_t len), void *ud, char *errbuf,
                           size_t errcap);

#endif
