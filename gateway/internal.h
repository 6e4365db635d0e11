/* gateway/internal.h - private helpers shared by the gateway's files. */
#ifndef GW_INTERNAL_H
#define GW_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "common/errors.h"
#include "gateway/gateway.h"

#define GW_NBUCKETS 14

/* route.c: gw_route_parse's rules under any prefix (ending in '/', e.g.
 * "/async-function/"), so every route that names a function checks it the same way;
 * missing is the sentence for an absent name. GW_ROUTE_FUNCTION, GW_ROUTE_OTHER or
 * GW_ERR_MALFORMED with *err. Pure. */
int gw_route_under(const char *path, size_t len, const char *prefix, size_t plen, const char *missing, gw_slice_t *name,
                   gw_slice_t *rest, const char **err);
/* route.c: the function name rule of the routes (1..63 bytes of [a-z0-9][a-z0-9-]*);
 * 0 or GW_ERR_MALFORMED with *err. Pure. */
int gw_route_name_check(const char *name, size_t len, const char **err);

/* Counts one finished function request (code 499 = client went away first). */
void gw_metrics_record(const char *fn, size_t len, int code, int h2, uint64_t latency_us);
/* Counts a request outside /function/. */
void gw_metrics_other(void);
/* Writes the gateway's Prometheus lines. */
void gw_metrics_write(FILE *out);

/* ---- framing.c: strict HTTP/1.1 framing at h2o's request parser ---- */

/* One parsed header line, laid out as picohttpparser's struct phr_header; name NULL
 * marks an obs-fold continuation line. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} gw_http1_hdr_t;

enum {
    GW_FRAMING_OK = 0,
    GW_FRAMING_CL_DUP = -1,     /* more than one Content-Length */
    GW_FRAMING_CL_BAD = -2,     /* Content-Length not 1..19 digits */
    GW_FRAMING_TE_CL = -3,      /* Transfer-Encoding and Content-Length */
    GW_FRAMING_TE_BAD = -4,     /* final coding not chunked, chunked twice, or on HTTP/1.0 */
    GW_FRAMING_HOST_COUNT = -5, /* HTTP/1.1 without exactly one Host (1.0: more than one) */
    GW_FRAMING_HOST_BAD = -6,   /* Host with a byte outside uri-host [":" port] */
    GW_FRAMING_NAME_BAD = -7,   /* header name with a non-tchar byte (whitespace before ':') */
    GW_FRAMING_OBS_FOLD = -8,   /* obsolete line folding */
    GW_FRAMING_NRULES = 9,
};

/* RFC 9112 framing rules over a parsed request head (minor_version 0 or 1):
 * GW_FRAMING_OK, or the GW_FRAMING_* rule broken with *err. Pure. */
int gw_http1_framing_check(int minor_version, const gw_http1_hdr_t *hs, size_t n, const char **err);
/* The rule's name for logs and metrics ("content_length_repeated" ...). */
const char *gw_http1_framing_rule_name(int rule);
/* Heads parsed through the interposer and those rejected, per rule (index -rule). */
void gw_framing_stats(uint64_t *calls, uint64_t rejects[GW_FRAMING_NRULES]);
/* Around the start-up self-check's probe: 1 silences the rejection log, 0 zeroes the
 * counters (the probe is no client's) and logs again. */
void gw_framing_probe(int on);

/* ---- conncap.c: per-client and total connection caps on every port ---- */

enum { GW_PORT_HTTP = 0, GW_PORT_GRPC = 1, GW_PORT_THRIFT = 2, GW_NPORTS = 3 };

struct sockaddr;
struct st_h2o_socket_t;
/* Sets the caps: per client address (0 = none) and in all (0 = none). */
void gw_conncap_config(uint32_t per_client, uint32_t total);
/* Takes a slot for a connection from peer (IPv4 address; IPv6 /64, v4-mapped as
 * IPv4): 0, or -1 when that client (GW_CONNCAP_PER_CLIENT) or the gateway
 * (GW_CONNCAP_TOTAL) already holds its cap. Loop thread only. */
int gw_conncap_take(const struct sockaddr *peer);
/* Gives back a slot gw_conncap_take gave for peer. */
void gw_conncap_give(const struct sockaddr *peer);
/* Why the last gw_conncap_take refused: 0 per client, 1 total. */
int gw_conncap_last_reason(void);
/* At accept on port (GW_PORT_*): takes a slot and arranges its return when the
 * socket closes (h2o's on_close hook); 0, or -1 after counting the refusal (the
 * caller closes the socket). */
int gw_conncap_accept(struct st_h2o_socket_t *sock, int port);
/* Connections held now (all clients). */
uint32_t gw_conncap_open(void);

/* Counts a connection closed at accept (port GW_PORT_*, reason 0 per client, 1 total). */
void gw_metrics_conn_refused(int port, int reason);
/* Counts a request refused before routing for its size (414 or 431). */
void gw_metrics_http_limit(int status);

/* ---- h2c.c: the HTTP port's HTTP/2 on nghttp2 (prior knowledge and Upgrade) ---- */

struct st_h2o_accept_ctx_t;
struct st_h2o_req_t;
struct st_h2o_socket_t;
/* Takes an accepted socket: sniffs the first bytes, then serves HTTP/2 (the preface)
 * or hands it to h2o's HTTP/1.1 with the bytes read left in sock->input. */
void gw_h2c_accept(struct st_h2o_accept_ctx_t *accept, struct st_h2o_socket_t *sock);
/* An HTTP/1.1 request with Upgrade: h2c: 0 if taken (101, then answered as stream 1 over
 * HTTP/2), -1 if not upgradable (body, no or bad HTTP2-Settings): serve it as HTTP/1.1. */
int gw_h2c_upgrade(struct st_h2o_req_t *req);
enum { GW_SNIFF_MORE = 0, GW_SNIFF_H2 = 1, GW_SNIFF_HTTP1 = 2 };
/* The sniffer: GW_SNIFF_H2 once data starts with the 24-byte preface, GW_SNIFF_HTTP1 at
 * the first byte that differs, GW_SNIFF_MORE while a prefix of it. Pure. */
int gw_h2c_sniff(const char *data, size_t len);
/* Counts a connection closed for a limit (reason as faas_gw_h2_flood_closed_total's). */
void gw_metrics_h2_flood(const char *reason);
/* Writes faas_gw_h2_flood_closed_total. */
void gw_h2c_metrics_write(FILE *out);

struct st_h2o_context_t;
/* thrift_server.c: serves Thrift clients on ctx's loop from listener fd. */
void gw_thrift_serve(struct st_h2o_context_t *ctx, int fd, const char *default_fn);
/* thrift_server.c: this loop's Thrift timeouts and limits from cfg (before gw_thrift_serve). */
void gw_thrift_limits(const gw_config_t *cfg);
/* thrift_server.c: the Thrift port's Prometheus lines (closes by reason, partial bytes). */
void gw_thrift_metrics_write(FILE *out);

/* ---- server.c: pieces the task API (tasks.c) shares with the HTTP front ---- */

struct st_h2o_req_t;
/* Takes one header (lower-case name); 0 or -1. */
typedef int (*gw_hdr_sink_t)(void *ud, const char *name, size_t nl, const char *value, size_t vl);
/* The client's end-to-end headers as a function sees them: no Host, hop-by-hop or
 * faas-* (a client must not forge platform metadata), x-forwarded-for and forwarded
 * appended. 0, or -1 if add failed. */
int gw_forward_headers(struct st_h2o_req_t *req, gw_hdr_sink_t add, void *ud);
/* The client's x-request-id when sane, else a new one (in the request's pool). */
const char *gw_request_id(struct st_h2o_req_t *req);
/* A text/plain answer. */
void gw_send_text(struct st_h2o_req_t *req, int status, const char *body, size_t len);
/* A platform error: "function <fn>: <what>" (or just what), Retry-After when > 0. */
void gw_send_error(struct st_h2o_req_t *req, int status, const char *fn, size_t fnlen, const char *what,
                   int retry_after_s);
/* A platform error of a kind, as DESIGN.md section 3 says it in HTTP. */
void gw_send_platform_error(struct st_h2o_req_t *req, faas_err_t kind, const char *fn, size_t fnlen, const char *what);

/* A routing miss of req for function name (in req's pool): waits for discovery's word
 * (dispatcher/dispatcher.h disp_resolve), then calls again(req, arg) if the function
 * exists now, or answers 404 (it does not) or 503 + Retry-After (cannot tell yet). */
void gw_resolve_req(struct st_h2o_req_t *req, const char *name, size_t len, void (*again)(struct st_h2o_req_t *req, void *arg),
                    void *arg);

/* ---- tasks.c: the async task API ---- */

/* Serves the task API's own paths (/async-function/..., /tasks...): 1 if req was one of
 * them (answered, or answered later), 0 if not. */
int gw_tasks_serve(struct st_h2o_req_t *req);
/* Submits a routed /function/ request that asked for Prefer: respond-async as a task. */
void gw_tasks_submit(struct st_h2o_req_t *req, const char *fn, size_t fnlen, const char *rest, size_t restlen,
                     int prefer);

#endif
