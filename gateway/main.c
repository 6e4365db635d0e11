/* gateway/main.c - faas-gateway entry point. */
#include <stdio.h>

#include "common/log.h"
#include "gateway/args.h"
#include "gateway/gateway.h"

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
    if (cfg.threads != 1)
        FAAS_WARN("event=threads_unsupported requested=%u using=1", cfg.threads);
    return gw_run(&cfg);
}
