/* gateway/gateway.h - the HTTP front end of faas-gateway: routing key parsing,
 * header rules, and the h2o server that hands requests to the dispatcher. */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "proto/faas.pb-c.h"

/* A view into bytes owned by someone else. */
typedef struct {
    const char *ptr;
    size_t len;
} gw_slice_t;

enum {
    GW_ROUTE_FUNCTION = 0, /* /function/<name>[/rest][?query] */
    GW_ROUTE_OTHER = 1,    /* well-formed path outside /function/ */
    GW_ERR_MALFORMED = -1,
};

/* Splits a request path (origin form, query included) into the function name and
 * the path the user server sees. rest is empty (meaning "/"), starts with '/', or
 * starts with '?' (meaning "/" + rest). Returns GW_ROUTE_FUNCTION, GW_ROUTE_OTHER, or
 * GW_ERR_MALFORMED with *err set. Pure: no allocation, no I/O. */
int gw_route_parse(const char *path, size_t len, gw_slice_t *name, gw_slice_t *rest, const char **err);

/* Host-based routing: if host (port allowed) is "<name>.<domain>" with a valid
 * function name, fills name and returns 0; -1 otherwise. Case-insensitive. Pure. */
int gw_route_host(const char *host, size_t len, const char *domain, size_t dlen, gw_slice_t *name);

/* 1 if a request header must not be forwarded (hop-by-hop, RFC 7230 s6.1).
 * name is lower case; conn is the client's Connection header value (may be empty);
 * te_value is the header's value (te: only "trailers" passes). */
int gw_header_is_hop(const char *name, size_t len, const char *value, size_t vlen, const char *conn, size_t connlen);

/* 1 if a function's response header is not passed on as it is: h2o writes its own Date
 * and framing (content-length is taken as the length), and hop-by-hop headers end at
 * this hop. Case-insensitive. Pure. */
int gw_response_header_own(const char *name, size_t len);

/* 1 if a client-supplied request id is reusable: 1..64 chars of [A-Za-z0-9._:-]. */
int gw_request_id_sane(const char *s, size_t len);

/* ---- async tasks (gateway/tasks_http.c, docs/async.md): pure except gw_task_id_new ---- */

enum {
    GW_TASK_ROUTE_SUBMIT = 0,   /* /async-function/<name>[/rest][?query]: name, rest as gw_route_parse */
    GW_TASK_ROUTE_LIST = 1,     /* /tasks[?query] */
    GW_TASK_ROUTE_TASK = 2,     /* /tasks/<id>[?query] (GET: status, DELETE: cancel) */
    GW_TASK_ROUTE_RESULT = 3,   /* /tasks/<id>/result[?query] */
    GW_TASK_ROUTE_OTHER = 4,    /* well-formed, not a task path */
    GW_TASK_ERR_BAD_ID = -2,    /* /tasks/<not 32 lowercase hex>[...]: 400 */
    GW_TASK_ERR_NOT_FOUND = -3, /* /tasks/<id>/<anything but result>: 404 */
};

/* A task path split into views of the path. */
typedef struct {
    gw_slice_t name;  /* SUBMIT: the function */
    gw_slice_t rest;  /* SUBMIT: what the user server sees, as gw_route_parse's rest */
    gw_slice_t id;    /* TASK, RESULT (and BAD_ID: the offending segment) */
    gw_slice_t query; /* after the first '?', without it; empty when none */
} gw_task_route_t;

/* Classifies a request path (origin form, query included) for the task API: a
 * GW_TASK_ROUTE_* value, or GW_ERR_MALFORMED (400; same byte and name rules as
 * gw_route_parse), GW_TASK_ERR_BAD_ID (400) or GW_TASK_ERR_NOT_FOUND (404), with *err. */
int gw_task_route_parse(const char *path, size_t len, gw_task_route_t *r, const char **err);

/* 1 if s is a task id: exactly 32 lowercase hex characters. */
int gw_task_id_valid(const char *s, size_t len);

/* A new task id (128 bits from getrandom(2), /dev/urandom where the kernel lacks it;
 * never a PRNG) and a NUL into out. 0, or -1 with errno set when no randomness. */
int gw_task_id_new(char out[33]);

/* The lower-case word of a task status ("queued" ... "cancelled"; "unknown" otherwise). */
const char *gw_task_status_name(int status);

/* GET /tasks query, decoded. */
typedef struct {
    char function[64];         /* "" = every function */
    int by_status;             /* 1 when status= was given */
    Faas__Task__Status status; /* with by_status */
    uint32_t limit;            /* 1..FAAS_TASK_LIST_LIMIT; FAAS_TASK_LIST_DEFAULT_LIMIT when absent */
    char after[33];            /* "" = from the first id */
} gw_tasks_query_t;

/* Parses a GET /tasks query string (without '?'): function=, status=, limit=, after=,
 * percent-decoded ('+' is a space); an empty query is the defaults. 0, or
 * GW_ERR_MALFORMED with *err for an unknown key, a duplicate or a bad value. */
int gw_tasks_query_parse(const char *query, size_t len, gw_tasks_query_t *out, const char **err);

/* 1 if a Prefer header value (RFC 7240) lists the respond-async preference, else 0.
 * One call per header line; quoted strings and parameters are skipped, not matched. */
int gw_prefer_respond_async(const char *value, size_t len);

/* Longest X-Callback-Url accepted. */
#define GW_CALLBACK_URL_MAX 2048

/* 0 if url is an absolute http:// or https:// URL with a host (name, IPv4 or [IPv6]),
 * an optional port 1-65535, path and query, no userinfo, no fragment, no space,
 * control or non-ASCII byte, at most GW_CALLBACK_URL_MAX bytes; else
 * GW_ERR_MALFORMED with *err. */
int gw_callback_url_check(const char *url, size_t len, const char **err);

/* The status JSON of docs/async.md for t into out (NUL-terminated when cap > 0); like
 * snprintf, the length the whole JSON needs: the output is complete iff it is < cap.
 * Strings are escaped for any bytes (invalid UTF-8 becomes U+FFFD). */
size_t gw_task_json(const Faas__Task *t, char *out, size_t cap);

/* {"tasks": [<status JSON>...], "next": "<id>" or null} for a ListTasks reply; as gw_task_json. */
size_t gw_task_list_json(const Faas__TaskList *l, char *out, size_t cap);

/* {"id": "<id>", "status": "queued"}: the 202 body of a submission; as gw_task_json. */
size_t gw_task_accepted_json(const char *id, char *out, size_t cap);

/* Gateway settings from the command line. */
typedef struct {
    const char *listen;             /* host:port */
    const char *discovery;          /* host:port of faas-discovery */
    uint64_t max_body;              /* bytes */
    uint32_t queue_max;             /* per function */
    uint32_t cold_start_timeout_ms; /* 0 = the spec's */
    uint32_t sync_hold_ms;          /* a routing miss waits this long for discovery */
    uint32_t threads;
    const char *domain;            /* "" = no Host-based routing */
    const char *grpc_listen;       /* gRPC port (gateway/grpc.c); "off" = none; NULL = default, best effort */
    const char *thrift_listen;     /* Thrift port; "off" = none */
    const char *thrift_default_fn; /* function for Thrift calls naming none; "" = none */
    const char *token_file;        /* platform token for discovery and worker managers (FAAS_TOKEN wins) */
    const char *tls_ca;            /* PEM CA: TLS to discovery and worker managers; NULL = plaintext */
    int thrift_listen_explicit;    /* set by flag: failing to bind is fatal */
    /* Thrift port limits (gateway/README.md "Slow and partial Thrift clients") */
    uint32_t thrift_idle_timeout_ms;   /* no bytes and no call in flight: close */
    uint32_t thrift_header_timeout_ms; /* a frame's length + header block + message header */
    uint32_t thrift_body_timeout_ms;   /* window in which a frame's body must move */
    uint32_t thrift_body_min_bytes;    /* ... by at least this many bytes */
    uint32_t thrift_max_frame;         /* bytes of one frame, length prefix excluded */
    uint32_t thrift_max_header_bytes;  /* THeader/TTHeader header block; method name */
    uint64_t thrift_max_partial_bytes; /* partial frames held across all connections */
    uint32_t max_url_bytes;        /* longest path (query included) before 414 */
    uint32_t max_header_bytes;     /* header names + values (Host included) before 431 */
    uint32_t max_conns_per_client; /* per client IPv4 address / IPv6 /64, all ports; 0 = no cap */
    uint32_t max_conns;            /* all clients, all ports; 0 = no cap */
    int max_conns_explicit;        /* unset: derived from RLIMIT_NOFILE at start */
    uint32_t http_header_timeout_ms; /* h2o http1 req_timeout: request head (and keep-alive idle) */
    const char *advertise_host;      /* the endpoints API's host for the gateway's ports; NULL = as reached */
} gw_config_t;

/* Runs the gateway until SIGINT/SIGTERM; returns the process exit code. */
int gw_run(const gw_config_t *cfg);

#endif
