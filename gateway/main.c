/* gateway/main.c - faas-gateway entry point. */
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "common/rpc.h"
#include "gateway/args.h"
#include "gateway/gateway.h"

/* What the dispatcher's channels to discovery and worker managers send. A gateway
 * without the token could route nothing, so it does not start. 0 or -1. */
static int load_credentials(const gw_config_t *cfg)
{
    faas_token_t t;
    const char *src = NULL;
    char err[600];
    if (faas_token_load(getenv(FAAS_TOKEN_ENV), cfg->token_file, cfg->token_file, &t, &src, err, sizeof(err)) != 0 ||
        faas_rpc_client_configure(&t, cfg->tls_ca, err, sizeof(err)) != 0) {
        fprintf(stderr, "faas-gateway: %s\n", err);
        return -1;
    }
    FAAS_INFO("event=token source=%s tls_to_control_plane=%d", src, cfg->tls_ca != NULL);
    return 0;
}

int main(int argc, char **argv)
{
    gw_config_t cfg;
    char errbuf[192];
    const char *err = NULL;
    faas_log_init("gateway");
    int rc = gw_args_parse(argc, argv, &cfg, errbuf, sizeof(errbuf), &err);
    if (rc == 1) {
        fputs(gw_args_usage, stdout);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "faas-gateway: %s (see --help)\n", err);
        return 2;
    }
    if (load_credentials(&cfg) != 0)
        return 1;
    return gw_run(&cfg);
}
