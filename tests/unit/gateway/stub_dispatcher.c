/* Test double for the dispatcher: the gateway unit tests link gateway/ alone. */
#include "dispatcher/dispatcher.h"

int disp_start(h2o_context_t *ctx, const disp_config_t *cfg, const char **err)
{
    return 0;
}
void disp_attach(h2o_context_t *ctx, const disp_config_t *cfg, unsigned idx)
{
}
const char *disp_route(disp_proto_t proto, const char *key, size_t len, size_t *fnlen)
{
    return NULL;
}
int disp_lookup(const char *name, size_t len, disp_fn_info_t *info)
{
    return -1;
}
disp_call_t *disp_call_new(disp_proto_t proto, const disp_sink_t *sink, void *owner)
{
    return NULL;
}
disp_call_t *disp_call_bridge(h2b_pair_t *down, disp_proto_t proto, const disp_sink_t *sink, void *owner)
{
    return NULL;
}
int disp_call_header(disp_call_t *c, const char *name, size_t nl, const char *value, size_t vl)
{
    return -1;
}
int disp_call_body(disp_call_t *c, const void *data, size_t len, int eos)
{
    return -1;
}
void disp_call_start(disp_call_t *c, const char *fn, size_t fnlen, const char *request_id, uint64_t deadline_ms)
{
}
void disp_call_consumed(disp_call_t *c, size_t len)
{
}
void disp_call_close(disp_call_t *c)
{
}
void *disp_call_owner(const disp_call_t *c)
{
    return NULL;
}
int disp_h2b_accept(h2o_socket_t *sock, const h2b_server_cbs_t *cbs)
{
    return -1;
}
void disp_metrics(FILE *out)
{
}
uint64_t disp_cold_starts(void)
{
    return 0;
}
void disp_tasks_submitted(const char *fn, size_t len)
{
}
int disp_discovery_call(const char *method, const uint8_t *req, size_t len, uint32_t timeout_ms, disp_rpc_cb cb,
                        void *ud)
{
    return -1;
}
disp_resolve_t *disp_resolve(disp_proto_t proto, const char *key, size_t len, disp_resolve_cb cb, void *ud)
{
    cb(ud, 0);
    return NULL;
}
void disp_resolve_cancel(disp_resolve_t *r)
{
}
int disp_ready(void)
{
    return 1;
}
