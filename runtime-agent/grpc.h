/* runtime-agent/grpc.h - the agent's gRPC side: calls arriving on its h2c listeners
 * (front.c) are bridged to the user's gRPC server over one reused h2c connection; and
 * the grpc.health.v1 readiness check. */
#ifndef AGENT_GRPC_H
#define AGENT_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "common/evl.h"
#include "h2b/h2b.h"

/* Bridges the gRPC call p (headers in p->req) to the user server, or fails it with
 * UNAVAILABLE when the user server is not running. */
void agent_grpc_request(h2b_pair_t *p, int eos);

/* Readiness over a connected socket to the user server: grpc.health.v1.Health/Check
 * with an empty service. done(sock, 1) when it answers SERVING, or when the server
 * does not implement the health service (UNIMPLEMENTED) or does not speak h2 (then the
 * accepted connection is the signal); done(sock, 0) for anything else (try again).
 * The caller owns sock (closing it abandons the check). */
void agent_grpc_health_start(evl_sock_t *sock, void (*done)(evl_sock_t *sock, int ok));

/* Pure: 1 if a Health/Check reply body (5-byte prefix + HealthCheckResponse) says
 * SERVING (field 1 varint == 1). */
int agent_grpc_health_serving(const uint8_t *body, size_t len);

#endif
