/* libFuzzer driver for faas-gateway's command line (gw_args_parse). The input's
 * NUL-separated pieces are the arguments. Any argv gives 0, 1 (--help) or -1 with
 * one printable line; an accepted config is within the documented bounds; and
 * parsing the same argv again gives the same answer (no state kept between calls). */
// FUZZ_SOURCES: gateway/args.c common/util.c tests/fuzz/cli_argv.c
// FUZZ_PKGS: libprotobuf-c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "gateway/args.h"
#include "tests/fuzz/cli_argv.h"

static int is_addr(const char *v)
{
    char host[128];
    uint16_t port;
    const char *e;
    return v != NULL && fuzz_cli_printable(v) && faas_parse_hostport(v, host, sizeof(host), &port, &e) == 0;
}

/* --discovery: 1 to 8 comma-separated addresses, none empty. */
static int is_addr_list(const char *v)
{
    if (v == NULL)
        return 0;
    unsigned n = 0;
    for (const char *p = v;; n++) {
        size_t l = strcspn(p, ",");
        char one[160];
        if (n == 8 || l == 0 || l >= sizeof(one))
            return 0;
        memcpy(one, p, l);
        one[l] = '\0';
        if (!is_addr(one))
            return 0;
        if (p[l] == '\0')
            return 1;
        p += l + 1;
    }
}

static void check_config(const gw_config_t *c)
{
    const char *e;
    if (!is_addr(c->listen) || !is_addr_list(c->discovery))
        abort();
    if (c->grpc_listen != NULL && strcmp(c->grpc_listen, "off") != 0 && !is_addr(c->grpc_listen))
        abort();
    if (strcmp(c->thrift_listen, "off") != 0 && !is_addr(c->thrift_listen))
        abort();
    if (c->max_body == 0 || c->queue_max == 0 || c->queue_max > 1000000 || c->cold_start_timeout_ms > 3600000 ||
        c->threads == 0 || c->threads > 256)
        abort();
    if (c->domain == NULL || c->domain[0] == '.')
        abort();
    if (c->thrift_default_fn == NULL ||
        (c->thrift_default_fn[0] && faas_valid_function_name(c->thrift_default_fn, strlen(c->thrift_default_fn), &e)))
        abort();
}

/* One parse; returns rc and copies the error line into msg. */
static int parse(const uint8_t *data, size_t size, gw_config_t *c, char *msg, size_t cap)
{
    fuzz_cli_argv_t a;
    if (fuzz_cli_argv_make(&a, "faas-gateway", data, size) != 0)
        return -2;
    char errbuf[160];
    const char *err = NULL;
    int rc = gw_args_parse(a.argc, a.argv, c, errbuf, sizeof(errbuf), &err);
    if (rc != 0 && rc != 1 && rc != -1)
        abort();
    msg[0] = '\0';
    if (rc == -1) {
        if (err != errbuf)
            abort();
        fuzz_cli_check_line(err, sizeof(errbuf));
        strncpy(msg, err, cap - 1);
        msg[cap - 1] = '\0';
    } else if (rc == 0) {
        check_config(c);
    }
    fuzz_cli_argv_free(&a); /* the config points into argv: checked before this */
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_config_t c1, c2;
    char m1[160], m2[160];
    int r1 = parse(data, size, &c1, m1, sizeof(m1));
    int r2 = parse(data, size, &c2, m2, sizeof(m2));
    if (r1 == -2 || r2 == -2)
        return 0;
    if (r1 != r2 || strcmp(m1, m2) != 0)
        abort();
    return 0;
}
