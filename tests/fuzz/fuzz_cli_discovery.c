/* libFuzzer driver for faas-discovery's command line (disc_args_parse). The
 * input's NUL-separated pieces are the arguments. Any argv gives 0, 1 (--help) or
 * -1 with one printable line; an accepted config is within the documented bounds;
 * a second parse of the same argv agrees (getopt is reset on every call). */
// FUZZ_SOURCES: discovery/args.c common/util.c tests/fuzz/cli_argv.c
// FUZZ_PKGS: libprotobuf-c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "discovery/args.h"
#include "tests/fuzz/cli_argv.h"

static int is_addr(const char *v)
{
    char host[256];
    uint16_t port;
    const char *e;
    return v != NULL && fuzz_cli_printable(v) && faas_parse_hostport(v, host, sizeof(host), &port, &e) == 0;
}

static int parse(const uint8_t *data, size_t size, char *msg, size_t cap)
{
    fuzz_cli_argv_t a;
    if (fuzz_cli_argv_make(&a, "faas-discovery", data, size) != 0)
        return -2;
    disc_args_t o;
    const char *err = NULL;
    int rc = disc_args_parse(a.argc, a.argv, &o, &err);
    msg[0] = '\0';
    if (rc == -1) {
        if (err != o.errbuf)
            abort();
        fuzz_cli_check_line(err, sizeof(o.errbuf));
        strncpy(msg, err, cap - 1);
        msg[cap - 1] = '\0';
    } else if (rc == 0) {
        if (!is_addr(o.listen) || o.state_dir == NULL || o.state_dir[0] == '\0' || o.max_artifact == 0 || o.task_retention_ms == 0 ||
            (strcmp(o.metrics_listen, "off") != 0 && !is_addr(o.metrics_listen)))
            abort();
    } else if (rc != 1) {
        abort();
    }
    fuzz_cli_argv_free(&a);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_cli_twice(parse, data, size);
    return 0;
}
