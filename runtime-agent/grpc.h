/* runtime-agent/grpc.h - the agent's gRPC side: a second listener (nghttp2, h2c prior
 * knowledge) for the dispatcher's gRPC streams, each bridged to the user's gRPC server
 * over one reused h2c connection; and the grpc.health.v1 readiness check. */
#ifndef AGENT_GRPC_H
#define AGENT_GRPC_H

#include <stdint.h>

#include <h2o.h>

/* Opens the stream listener on 127.0.0.1:0 on loop; 0 or -1. */
int agent_grpc_start(h2o_loop_t *loop);

/* The stream listener's port (0 if not started); reported as AgentEvent.stream_port. */
uint16_t agent_grpc_stream_port(void);

/* Readiness over a connected socket to the user server: grpc.health.v1.Health/Check
 * with an empty service. done(sock, 1) when it answers SERVING, or when the server
 * does not implement the health service (UNIMPLEMENTED) or does not speak h2 (then the
 * accepted connection is the signal); done(sock, 0) for anything else (try again).
 * The caller owns sock (closing it abandons the check). */
void agent_grpc_health_start(h2o_socket_t *sock, void (*done)(h2o_socket_t *sock, int ok));

/* Pure: 1 if a Health/Check reply body (5-byte prefix + HealthCheckResponse) says
 * SERVING (field 1 varint == 1). */
int agent_grpc_health_serving(const uint8_t *body, size_t len);

#endif
