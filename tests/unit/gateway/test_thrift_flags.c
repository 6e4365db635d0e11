/* The gateway's Thrift flags. */
#include <criterion/criterion.h>
#include <string.h>

#include "gateway/gateway.h"

Test(thrift_flags, defaults_are_best_effort)
{
    gw_config_t c;
    const char *err = NULL;
    char *argv[] = {"gw"};
    cr_assert_eq(gw_parse_flags(1, argv, &c, &err), 0);
    cr_assert_str_eq(c.thrift_listen, "127.0.0.1:8082");
    cr_assert_str_eq(c.thrift_default_fn, "");
    cr_assert_eq(c.thrift_listen_explicit, 0);
}

Test(thrift_flags, given_listen_and_default_function)
{
    gw_config_t c;
    const char *err = NULL;
    char *argv[] = {"gw", "--thrift-listen", "127.0.0.1:9999", "--thrift-default-function=calc"};
    cr_assert_eq(gw_parse_flags(4, argv, &c, &err), 0, "%s", err ? err : "");
    cr_assert_str_eq(c.thrift_listen, "127.0.0.1:9999");
    cr_assert_str_eq(c.thrift_default_fn, "calc");
    cr_assert_eq(c.thrift_listen_explicit, 1);
    char *off[] = {"gw", "--thrift-listen=off"};
    cr_assert_eq(gw_parse_flags(2, off, &c, &err), 0);
    cr_assert_str_eq(c.thrift_listen, "off");
}

Test(thrift_flags, value_required)
{
    gw_config_t c;
    const char *err = NULL;
    char *argv[] = {"gw", "--thrift-listen"};
    cr_assert_eq(gw_parse_flags(2, argv, &c, &err), -1);
    cr_assert(err != NULL && strstr(err, "--thrift-listen") != NULL);
    char *bad[] = {"gw", "--thrift-listen", "nowhere"};
    err = NULL;
    cr_assert_eq(gw_parse_flags(3, bad, &c, &err), -1);
    cr_assert(err != NULL && strstr(err, "bad address") != NULL);
}
