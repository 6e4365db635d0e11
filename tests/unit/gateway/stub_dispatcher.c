/* Test double for the dispatcher: the gateway unit tests link gateway/ alone. */
#include "dispatcher/dispatcher.h"

int disp_start(h2o_context_t *ctx, const disp_config_t *cfg, const char **err)
{
    return 0;
}
int disp_lookup(const char *name, size_t len, disp_fn_info_t *info)
{
    return -1;
}
void disp_forward(h2o_req_t *req, const char *name, size_t len, h2o_iovec_t path, h2o_header_t *hdrs, size_t nhdrs,
                  const char *request_id)
{
}
void disp_metrics(FILE *out)
{
}
uint64_t disp_cold_starts(void)
{
    return 0;
}

/* The gRPC side of the dispatcher, for gateway/grpc.c. */
#include "dispatcher/grpc.h"

void disp_grpc_init(const disp_grpc_cbs_t *cbs)
{
}
int disp_grpc_route(const char *s, size_t l, char *fn, size_t cap)
{
    return -1;
}
int disp_grpc_fn_info(const char *fn, size_t len, uint32_t *ms)
{
    return -1;
}
void disp_grpc_forward(h2b_pair_t *p, const char *fn, size_t len, const nghttp2_nv *nv, size_t n, uint64_t dl,
                       const char *rid)
{
}
int disp_h2b_accept(h2o_socket_t *sock, const h2b_server_cbs_t *cbs)
{
    return -1;
}

/* thrift_server.c still reads the dispatcher's table (until the dispatcher owns routing). */
#include "dispatcher/internal.h"
disp_state_t disp_g;
