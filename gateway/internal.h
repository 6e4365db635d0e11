/* gateway/internal.h - private helpers shared by the gateway's files. */
#ifndef GW_INTERNAL_H
#define GW_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

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

struct st_h2o_context_t;
/* thrift_server.c: serves Thrift clients on addr on ctx's loop; 0 or -1 with *err. */
int gw_thrift_listen(struct st_h2o_context_t *ctx, const char *addr, const char *default_fn, const char **err);

#endif
