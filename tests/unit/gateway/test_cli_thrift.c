/* gw_args_parse: the Thrift port's timeouts and limits (gateway/README.md). */
#include <criterion/criterion.h>
#include <string.h>

#include "gateway/args.h"

#define ARGV(...) ((char *[]){"faas-gateway", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"faas-gateway", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(c, buf, err, ...) gw_args_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), c, buf, sizeof(buf), err)

Test(gw_cli_thrift, defaults)
{
    gw_config_t c;
    char buf[192];
    const char *err = NULL;
    char *argv[] = {"faas-gateway", NULL};
    cr_assert_eq(gw_args_parse(1, argv, &c, buf, sizeof(buf), &err), 0);
    cr_assert_eq(c.thrift_idle_timeout_ms, 60000);
    cr_assert_eq(c.thrift_header_timeout_ms, 10000);
    cr_assert_eq(c.thrift_body_timeout_ms, 10000);
    cr_assert_eq(c.thrift_body_min_bytes, 4096);
    cr_assert_eq(c.thrift_max_frame, 16u << 20);
    cr_assert_eq(c.thrift_max_header_bytes, 16384);
    cr_assert_eq(c.thrift_max_partial_bytes, 64u << 20);
}

Test(gw_cli_thrift, every_flag_both_forms)
{
    gw_config_t c;
    char buf[192];
    const char *err = NULL;
    cr_assert_eq(PARSE(&c, buf, &err, "--thrift-idle-timeout-ms", "1500", "--thrift-header-timeout-ms=2500",
                       "--thrift-body-timeout-ms", "3500", "--thrift-body-min-bytes=1", "--thrift-max-frame", "64",
                       "--thrift-max-header-bytes=1048576", "--thrift-max-partial-bytes", "8589934592",
                       "--thrift-default-function", "calc"),
                 0, "%s", err);
    cr_assert_eq(c.thrift_idle_timeout_ms, 1500);
    cr_assert_eq(c.thrift_header_timeout_ms, 2500);
    cr_assert_eq(c.thrift_body_timeout_ms, 3500);
    cr_assert_eq(c.thrift_body_min_bytes, 1);
    cr_assert_eq(c.thrift_max_frame, 64);
    cr_assert_eq(c.thrift_max_header_bytes, 1u << 20);
    cr_assert_eq(c.thrift_max_partial_bytes, 8ull << 30);
    cr_assert_str_eq(c.thrift_default_fn, "calc");
}

Test(gw_cli_thrift, out_of_range_values_name_the_flag)
{
    static const struct {
        const char *flag, *val;
    } bad[] = {
        {"--thrift-idle-timeout-ms", "0"},        {"--thrift-idle-timeout-ms", "86400001"},
        {"--thrift-header-timeout-ms", "-1"},     {"--thrift-body-timeout-ms", "1s"},
        {"--thrift-body-min-bytes", "0"},         {"--thrift-max-frame", "63"},
        {"--thrift-max-frame", "2147483648"},     {"--thrift-max-header-bytes", "63"},
        {"--thrift-max-header-bytes", "1048577"}, {"--thrift-max-partial-bytes", "4095"},
        {"--thrift-max-partial-bytes", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_config_t c;
        char buf[192];
        const char *err = NULL;
        char *argv[] = {"faas-gateway", (char *)bad[i].flag, (char *)bad[i].val, NULL};
        cr_assert_eq(gw_args_parse(3, argv, &c, buf, sizeof(buf), &err), -1, "%s %s", bad[i].flag, bad[i].val);
        cr_assert_not_null(strstr(err, bad[i].flag), "%s", err);
    }
}

Test(gw_cli_thrift, usage_lists_every_flag)
{
    const char *flags[] = {"--thrift-idle-timeout-ms",  "--thrift-header-timeout-ms", "--thrift-body-timeout-ms",
                           "--thrift-body-min-bytes",   "--thrift-max-frame",         "--thrift-max-header-bytes",
                           "--thrift-max-partial-bytes"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        cr_assert_not_null(strstr(gw_args_usage, flags[i]), "%s", flags[i]);
}
