/* main.c - faas-workermgr entry point. */
#include <stdio.h>

#include "common/log.h"
#include "worker-manager/workermgr.h"

int main(int argc, char **argv)
{
    faas_log_init("workermgr");
    wm_config_t cfg;
    const char *err = NULL;
    int r = wm_config_parse(&cfg, argc, argv, &err);
    if (r == 1) {
        wm_usage();
        return 0;
    }
    if (r != 0) {
        fprintf(stderr, "faas-workermgr: %s\n", err);
        return 2;
    }
    return wm_run(&cfg);
}
