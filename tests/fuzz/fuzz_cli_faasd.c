/* libFuzzer driver for faasd's command line (faasd_args_parse). The input's
 * NUL-separated pieces are the arguments. Any argv gives 0, 1 (--help) or -1 with
 * one printable line; an accepted config has listeners with ports 1..65534,
 * metrics addresses filled in, a pool of 0..64, a gateway thread count of 1..256 or
 * none; a second parse agrees. */
// FUZZ_SOURCES: deploy/args.c deploy/manifest.c deploy/values.c deploy/httpc.c common/util.c tests/fuzz/cli_argv.c
// FUZZ_SOURCES: common/spec.c
// FUZZ_PKGS: yaml-0.1 libprotobuf-c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "deploy/args.h"
#include "tests/fuzz/cli_argv.h"

static int port_of(const char *v, int *port)
{
    char host[128];
    uint16_t p;
    const char *e;
    if (!fuzz_cli_printable(v) || faas_parse_hostport(v, host, sizeof(host), &p, &e) != 0)
        return -1;
    *port = p;
    return 0;
}

#define TERMINATED(f) (memchr((f), 0, sizeof(f)) != NULL)

static void check_config(const faasd_args_t *a)
{
    int port;
    if (!TERMINATED(a->state_dir) || !TERMINATED(a->bin_dir) || !TERMINATED(a->pool) || !TERMINATED(a->thrift) ||
        !TERMINATED(a->grpc) || !TERMINATED(a->disc_metrics) || !TERMINATED(a->wm_metrics))
        abort();
    const char *listeners[] = {a->http, a->disc, a->wm};
    for (int i = 0; i < 3; i++)
        if (port_of(listeners[i], &port) != 0 || port == 0 || port == 65535)
            abort();
    if ((strcmp(a->disc_metrics, "off") != 0 && port_of(a->disc_metrics, &port) != 0) ||
        port_of(a->wm_metrics, &port) != 0)
        abort();
    if (a->state_dir[0] == '\0' || a->pool[0] == '\0' || strspn(a->pool, "0123456789") != strlen(a->pool) ||
        atoi(a->pool) > 64)
        abort();
    /* passed to the gateway as --threads: a plain 1..256 or nothing */
    if (!TERMINATED(a->gw_threads))
        abort();
    const char *t = a->gw_threads;
    if (t[0] != '\0' && (strspn(t, "0123456789") != strlen(t) || t[0] == '0' || atoi(t) > 256))
        abort();
    const char *opt[] = {a->thrift, a->grpc};
    for (int i = 0; i < 2; i++)
        if (opt[i][0] != '\0' && strcmp(opt[i], "off") != 0 && port_of(opt[i], &port) != 0)
            abort();
}

static int parse(const uint8_t *data, size_t size, char *msg, size_t cap)
{
    fuzz_cli_argv_t v;
    if (fuzz_cli_argv_make(&v, "faasd", data, size) != 0)
        return -2;
    static faasd_args_t a; /* PATH_MAX arrays: kept off libFuzzer's stack */
    const char *err = NULL;
    int rc = faasd_args_parse(v.argc, v.argv, &a, &err);
    msg[0] = '\0';
    if (rc == -1) {
        if (err != a.errbuf)
            abort();
        fuzz_cli_check_line(err, sizeof(a.errbuf));
        strncpy(msg, err, cap - 1);
        msg[cap - 1] = '\0';
    } else if (rc == 0) {
        check_config(&a);
    } else if (rc != 1) {
        abort();
    }
    fuzz_cli_argv_free(&v);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_cli_twice(parse, data, size);
    return 0;
}
