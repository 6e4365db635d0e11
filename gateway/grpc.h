/* gateway/grpc.h - the gateway's gRPC front end (its own port, nghttp2 on the
 * gateway's loop); the wire rules it uses are grpcw/. */
#ifndef GW_GRPC_H
#define GW_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

#include "gateway/gateway.h"

#define GW_GRPC_DEFAULT_LISTEN "127.0.0.1:8081"

/* Starts the gRPC listener on ctx's loop (after disp_start). addr "off" disables it;
 * NULL means the default address, best effort (a busy port is logged, not fatal).
 * 0 or -1 with *err. */
int gw_grpc_start(h2o_context_t *ctx, const char *addr, const char **err);

#endif
