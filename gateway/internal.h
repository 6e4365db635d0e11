/* gateway/internal.h - private helpers shared by the gateway's files. */
#ifndef GW_INTERNAL_H
#define GW_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "gateway/gateway.h"

#define GW_NBUCKETS 14

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
