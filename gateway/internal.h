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

#endif
