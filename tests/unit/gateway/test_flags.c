#include <criterion/criterion.h>
#include <string.h>

#include "gateway/gateway.h"

static int parse(gw_config_t *c, const char **err, int argc, char **argv)
{
    return gw_parse_flags(argc, argv, c, err);
}

Test(flags, defaults)
{
    gw_config_t c;
    const char *err = NULL;
    char *argv[] = {"gw"};
    cr_assert_eq(parse(&c, &err, 1, argv), 0);
    cr_assert_str_eq(c.listen, "127.0.0.1:8080");
    cr_assert_str_eq(c.discovery, "127.0.0.1:7100");
    cr_assert_eq(c.max_body, 8u << 20);
    cr_assert_eq(c.queue_max, 1024);
    cr_assert_eq(c.cold_start_timeout_ms, 0);
}

Test(flags, values_both_forms)
{
    gw_config_t c;
    const char *err = NULL;
    char *argv[] = {"gw",
                    "--listen",
                    "127.0.0.1:9",
                    "--max-body=100",
                    "--queue-max",
                    "5",
                    "--cold-start-timeout-ms=7",
                    "--discovery=127.0.0.1:1"};
    cr_assert_eq(parse(&c, &err, 8, argv), 0, "%s", err);
    cr_assert_str_eq(c.listen, "127.0.0.1:9");
    cr_assert_eq(c.max_body, 100);
    cr_assert_eq(c.queue_max, 5);
    cr_assert_eq(c.cold_start_timeout_ms, 7);
}

Test(flags, bad)
{
    gw_config_t c;
    const char *err = NULL;
    char *a1[] = {"gw", "--nope", "1"};
    cr_assert_eq(parse(&c, &err, 3, a1), -1);
    char *a2[] = {"gw", "--max-body", "x"};
    cr_assert_eq(parse(&c, &err, 3, a2), -1);
    char *a3[] = {"gw", "--queue-max"};
    cr_assert_eq(parse(&c, &err, 2, a3), -1);
    char *a4[] = {"gw", "stray"};
    cr_assert_eq(parse(&c, &err, 2, a4), -1);
    char *a5[] = {"gw", "--listen", "nocolon"};
    cr_assert_eq(parse(&c, &err, 3, a5), -1);
    cr_assert_not_null(err);
}
