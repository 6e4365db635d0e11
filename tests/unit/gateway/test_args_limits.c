/* gw_args_parse: the size limits, connection caps and header timeout flags. */
#include <criterion/criterion.h>

#include "gateway/args.h"

static int parse(gw_config_t *c, int argc, char **argv)
{
    char buf[160];
    const char *err;
    return gw_args_parse(argc, argv, c, buf, sizeof(buf), &err);
}

Test(gw_cli_limits, defaults)
{
    gw_config_t c;
    char *argv[] = {"faas-gateway", NULL};
    cr_assert_eq(parse(&c, 1, argv), 0);
    cr_assert_eq(c.max_url_bytes, 8192);
    cr_assert_eq(c.max_header_bytes, 16384);
    cr_assert_eq(c.max_conns_per_client, 512);
    cr_assert_eq(c.max_conns, 0);
    cr_assert_eq(c.max_conns_explicit, 0);
    cr_assert_eq(c.http_header_timeout_ms, 10000);
}

Test(gw_cli_limits, set_and_bounded)
{
    gw_config_t c;
    char *argv[] = {"faas-gateway",
                    "--max-url-bytes=100",
                    "--max-header-bytes",
                    "300",
                    "--max-conns-per-client",
                    "0",
                    "--max-conns=0",
                    "--http-header-timeout-ms",
                    "250",
                    NULL};
    cr_assert_eq(parse(&c, 9, argv), 0);
    cr_assert_eq(c.max_url_bytes, 100);
    cr_assert_eq(c.max_header_bytes, 300);
    cr_assert_eq(c.max_conns_per_client, 0);
    cr_assert_eq(c.max_conns, 0);
    cr_assert_eq(c.max_conns_explicit, 1);
    cr_assert_eq(c.http_header_timeout_ms, 250);
    const char *bad[] = {"--max-url-bytes=10",   "--max-header-bytes=-1",      "--max-conns-per-client=x",
                         "--max-conns=99999999", "--http-header-timeout-ms=0", "--max-url-bytes=9999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *a[] = {"faas-gateway", (char *)bad[i], NULL};
        cr_assert_eq(parse(&c, 2, a), -1, "%s", bad[i]);
    }
}
