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
/* thrift_server.c: serves Thrift clients on addr on ctx's loop; 0 or -1 with *err. */
int gw_thrift_listen(struct st_h2o_context_t *ctx, const char *addr, const char *default_fn, const char **err);

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

/* ---- tasks.c: the async task API ---- */

/* Serves the task API's own paths (/async-function/..., /tasks...): 1 if req was one of
 * them (answered, or answered later), 0 if not. */
int gw_tasks_serve(struct st_h2o_req_t *req);
/* Submits a routed /function/ request that asked for Prefer: respond-async as a task. */
void gw_tasks_submit(struct st_h2o_req_t *req, const char *fn, size_t fnlen, const char *rest, size_t restlen,
                     int prefer);

#endif
