/* dispatcher/dispatcher.h - per-function instance tables fed by discovery, load
 * balancing, holding requests during cold start, and the multiplexed h2c upstream
 * to runtime agents. Everything here runs on the gateway's event loop thread
 * except the discovery watch and the Acquire/Release workers, which run on their
 * own threads and talk to the loop through h2o_multithread queues. */
#ifndef DISP_DISPATCHER_H
#define DISP_DISPATCHER_H

#include <h2o.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    const char *discovery;          /* host:port of faas-discovery */
    uint32_t queue_max;             /* held requests per function */
    uint32_t cold_start_timeout_ms; /* 0 = the spec's */
    /* Answers req with a platform error naming the function (the front end owns the
     * protocol's error format). retry_after_s > 0 adds Retry-After. */
    void (*send_error)(h2o_req_t *req, int status, const char *fn, size_t fnlen, const char *what, int retry_after_s);
} disp_config_t;

/* Starts the watch and worker threads and binds the dispatcher to ctx's loop. */
int disp_start(h2o_context_t *ctx, const disp_config_t *cfg, const char **err);

/* What the front end needs to know before forwarding. */
typedef struct {
    uint64_t max_body_bytes; /* 0 = no function limit */
    uint32_t timeout_ms;
} disp_fn_info_t;

/* 0 and info filled if the function is deployed, -1 if unknown. */
int disp_lookup(const char *name, size_t len, disp_fn_info_t *info);

/* Takes over req: forwards it to an instance of the function (cold-starting one if
 * needed) and streams the response back, or answers with a platform error.
 * path is what the user server sees; hdrs are the headers to send (already filtered,
 * faas-* added) and must live in req->pool. */
void disp_forward(h2o_req_t *req, const char *name, size_t len, h2o_iovec_t path, h2o_header_t *hdrs, size_t nhdrs,
                  const char *request_id);

/* Writes the dispatcher's Prometheus lines (queue depth, instances, cold starts). */
void disp_metrics(FILE *out);

/* Cold starts done since start (for the metric and tests). */
uint64_t disp_cold_starts(void);

#endif
