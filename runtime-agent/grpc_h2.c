/* runtime-agent/grpc_h2.c - the HTTP/2 stream bridge, shared with the gateway: the
 * agent links no dispatcher code, so it compiles the same source here. */
#include "dispatcher/grpc_h2.c"
