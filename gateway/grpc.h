/* gateway/grpc.h - the gateway's gRPC front end (its own port, nghttp2 on the
 * gateway's loop); the wire rules it uses are grpcw/. */
#ifndef GW_GRPC_H
#define GW_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

#include "gateway/gateway.h"

#define GW_GRPC_DEFAULT_LISTEN "127.0.0.1:8081"

/* Binds the gRPC port, one listener per loop into fds[0..n). addr "off" disables it
 * (fds[0] = -1); NULL means the default address, best effort (a busy port is logged,
 * fds[0] = -1, not fatal). 0 or -1 with *err. */
int gw_grpc_bind(const char *addr, int *fds, unsigned n, const char **err);
/* Serves gRPC on ctx's loop from listener fd (one of gw_grpc_bind's; -1: nothing). */
void gw_grpc_serve(h2o_context_t *ctx, int fd);

#endif
