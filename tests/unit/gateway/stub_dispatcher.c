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
