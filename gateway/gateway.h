/* gateway/gateway.h - the HTTP front end of faas-gateway: routing key parsing,
 * header rules, and the h2o server that hands requests to the dispatcher. */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

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

/* 1 if a client-supplied request id is reusable: 1..64 chars of [A-Za-z0-9._:-]. */
int gw_request_id_sane(const char *s, size_t len);

/* Gateway settings from the command line. */
typedef struct {
    const char *listen;             /* host:port */
    const char *discovery;          /* host:port of faas-discovery */
    uint64_t max_body;              /* bytes */
    uint32_t queue_max;             /* per function */
    uint32_t cold_start_timeout_ms; /* 0 = the spec's */
    uint32_t threads;
    const char *domain; /* "" = no Host-based routing */
    const char *grpc_listen; /* gRPC port (gateway/grpc.c); "off" = none; NULL = default, best effort */
    const char *thrift_listen;      /* Thrift port; "off" = none */
    const char *thrift_default_fn;  /* function for Thrift calls naming none; "" = none */
    int thrift_listen_explicit;     /* set by flag: failing to bind is fatal */
} gw_config_t;

/* Runs the gateway until SIGINT/SIGTERM; returns the process exit code. */
int gw_run(const gw_config_t *cfg);

#endif
