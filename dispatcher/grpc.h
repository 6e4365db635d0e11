/* dispatcher/grpc.h - gRPC streams through the dispatcher: service routing from the
 * functions' grpc_services, instance selection and cold start as for HTTP (the same
 * held-request queue and Acquire calls), and one multiplexed nghttp2 client session
 * per agent stream endpoint (Instance.stream_endpoint). Loop thread only. */
#ifndef DISP_GRPC_H
#define DISP_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

#include "h2b/h2b.h"

typedef struct {
    /* A call ended (its pair is being freed): grpc_status is what the caller got (-1 if
     * none), http_status the :status of a response that was completed (0: the caller
     * went away first). */
    void (*on_done)(const char *fn, size_t len, int grpc_status, int http_status, uint64_t start_us);
    /* Formats a grpc-timeout value for ms; returns its length. */
    size_t (*format_timeout)(uint64_t ms, char *buf, size_t cap);
} disp_grpc_cbs_t;

/* The bridge on h2o's loop (dispatcher/h2b_h2o.c): installed by disp_grpc_init; serves
 * HTTP/2 (prior knowledge) on an accepted h2o socket. 0 or -1. */
int disp_h2b_accept(h2o_socket_t *sock, const h2b_server_cbs_t *cbs);

/* After disp_start: binds the bridge to the dispatcher's loop. */
void disp_grpc_init(const disp_grpc_cbs_t *cbs);

/* The function that declared service (exact, case-sensitive); 0 and name copied into
 * fn (NUL-terminated), -1 if none. */
int disp_grpc_route(const char *service, size_t len, char *fn, size_t cap);

/* 0 if fn is deployed, with its longest stream (spec.max_duration_ms, default 15 min). */
int disp_grpc_fn_info(const char *fn, size_t len, uint32_t *max_duration_ms);

/* Takes over p: picks (or cold-starts) an instance of fn and opens the stream on its
 * agent's stream endpoint with headers nv (copied; grpc-timeout is appended from
 * deadline_ms at that moment, 0 = none). Platform failures end p with a gRPC status. */
void disp_grpc_forward(h2b_pair_t *p, const char *fn, size_t len, const nghttp2_nv *nv, size_t n, uint64_t deadline_ms,
                       const char *request_id);

/* Maps an HTTP-style platform status to a gRPC code (503 -> 14, 429 -> 8, ...). */
int disp_grpc_code_for_http(int status);

#endif
