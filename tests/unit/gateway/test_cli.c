/* gw_args_parse: faas-gateway's command line, parsed without side effects. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "gateway/args.h"

typedef struct {
    gw_config_t c;
    char buf[160];
    const char *err;
} parsed_t;

#define ARGV(...) ((char *[]){"faas-gateway", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"faas-gateway", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(p, ...)                                                                                                  \
    gw_args_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), &(p)->c, (p)->buf, sizeof((p)->buf), &(p)->err)

static void assert_one_line(const char *err)
{
    cr_assert_not_null(err);
    cr_assert(err[0] != '\0');
    for (const char *p = err; *p; p++)
        cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in \"%s\"", err);
}

Test(gw_cli, defaults)
{
    parsed_t p = {0};
    char *argv[] = {"faas-gateway", NULL};
    cr_assert_eq(gw_args_parse(1, argv, &p.c, p.buf, sizeof(p.buf), &p.err), 0);
    cr_assert_str_eq(p.c.listen, "127.0.0.1:8080");
    cr_assert_str_eq(p.c.discovery, "127.0.0.1:7100");
    cr_assert_eq(p.c.max_body, 8u << 20);
    cr_assert_eq(p.c.queue_max, 1024);
    cr_assert_eq(p.c.cold_start_timeout_ms, 0);
    unsigned cpus = faas_cpu_count(); /* the default: one loop per usable CPU */
    cr_assert_eq(p.c.threads, cpus > 256 ? 256 : cpus);
    cr_assert_str_eq(p.c.domain, "");
    cr_assert_null(p.c.grpc_listen);
    cr_assert_str_eq(p.c.thrift_listen, "127.0.0.1:8082");
    cr_assert_str_eq(p.c.thrift_default_fn, "");
    cr_assert_eq(p.c.thrift_listen_explicit, 0);
}

Test(gw_cli, every_flag_both_forms)
{
    parsed_t p = {0};
    cr_assert_eq(PARSE(&p, "--listen", "127.0.0.1:0", "--discovery=[::1]:7100", "--max-body", "100", "--queue-max=5",
                       "--cold-start-timeout-ms", "3600000", "--threads=2", "--domain", "fn.example",
                       "--grpc-listen=off", "--thrift-listen", ":9", "--thrift-default-function=echo"),
                 0, "%s", p.err);
    cr_assert_str_eq(p.c.listen, "127.0.0.1:0");
    cr_assert_str_eq(p.c.discovery, "[::1]:7100");
    cr_assert_eq(p.c.max_body, 100);
    cr_assert_eq(p.c.queue_max, 5);
    cr_assert_eq(p.c.cold_start_timeout_ms, 3600000);
    cr_assert_eq(p.c.threads, 2);
    cr_assert_str_eq(p.c.domain, "fn.example");
    cr_assert_str_eq(p.c.grpc_listen, "off");
    cr_assert_str_eq(p.c.thrift_listen, ":9");
    cr_assert_eq(p.c.thrift_listen_explicit, 1);
    cr_assert_str_eq(p.c.thrift_default_fn, "echo");
}

Test(gw_cli, help_wins_and_prints_nothing, .init = cr_redirect_stdout)
{
    parsed_t p = {0};
    cr_assert_eq(PARSE(&p, "--help"), 1);
    cr_assert_eq(PARSE(&p, "-h", "--bogus"), 1);
    cr_assert_eq(PARSE(&p, "--listen", "127.0.0.1:1", "-h"), 1);
    fflush(stdout);
    cr_assert_stdout_eq_str("");
    cr_assert(strstr(gw_args_usage, "--queue-max") != NULL);
}

Test(gw_cli, numbers_out_of_range)
{
    const char *bad[][2] = {
        {"--max-body", "0"},
        {"--max-body", "-1"},
        {"--max-body", "+5"},
        {"--max-body", " 5"},
        {"--max-body", "5x"},
        {"--max-body", "99999999999999999999"},
        {"--queue-max", "0"},
        {"--queue-max", "1000001"},
        {"--threads", "0"},
        {"--threads", "257"},
        {"--cold-start-timeout-ms", "3600001"},
        {"--queue-max", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parsed_t p = {0};
        cr_assert_eq(PARSE(&p, (char *)bad[i][0], (char *)bad[i][1]), -1, "%s %s accepted", bad[i][0], bad[i][1]);
        assert_one_line(p.err);
        cr_assert(strstr(p.err, bad[i][0]) != NULL, "%s", p.err);
    }
}

Test(gw_cli, addresses)
{
    const char *bad[][2] = {
        {"--listen", "nocolon"},
        {"--listen", "h:65536"},
        {"--discovery", "h:"},
        {"--grpc-listen", "zz"},
        {"--thrift-listen", "h:x"},
        {"--listen", ""},
        {"--thrift-default-function", "Bad_Name"},
        {"--domain", ".lead"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parsed_t p = {0};
        cr_assert_eq(PARSE(&p, (char *)bad[i][0], (char *)bad[i][1]), -1, "%s %s accepted", bad[i][0], bad[i][1]);
        assert_one_line(p.err);
    }
    parsed_t p = {0};
    cr_assert_eq(PARSE(&p, "--thrift-listen=off", "--grpc-listen", "127.0.0.1:0", "--thrift-default-function="), 0);
    cr_assert_str_eq(p.c.thrift_listen, "off");
}

Test(gw_cli, discovery_lists)
{
    const char *bad[] = {"a:1,", ",a:1", "a:1,,b:2", "a:1,b", "", "a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parsed_t p = {0};
        cr_assert_eq(PARSE(&p, "--discovery", (char *)bad[i]), -1, "--discovery %s accepted", bad[i]);
        assert_one_line(p.err);
        cr_assert_not_null(strstr(p.err, "--discovery"), "%s", p.err);
    }
    parsed_t p = {0};
    cr_assert_eq(PARSE(&p, "--discovery", "d-0.d:7100,[::1]:7100"), 0, "%s", p.err);
    cr_assert_str_eq(p.c.discovery, "d-0.d:7100,[::1]:7100");
    cr_assert_eq(PARSE(&p, "--discovery", "a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8"), 0, "%s", p.err);
}

Test(gw_cli, shape_errors)
{
    parsed_t p = {0};
    cr_assert_eq(PARSE(&p, "--listen"), -1);
    cr_assert(strstr(p.err, "needs a value") != NULL, "%s", p.err);
    cr_assert_eq(PARSE(&p, "stray"), -1);
    cr_assert(strstr(p.err, "unexpected argument: stray") != NULL, "%s", p.err);
    cr_assert_eq(PARSE(&p, "-x", "1"), -1);
    cr_assert_eq(PARSE(&p, "--nope", "1"), -1);
    cr_assert(strstr(p.err, "--nope") != NULL, "%s", p.err);
    cr_assert_eq(PARSE(&p, "--listen-x=1"), -1);
}

Test(gw_cli, argv_bytes_cannot_break_the_line)
{
    parsed_t p = {0};
    cr_assert_eq(PARSE(&p, "--max-body", "1\nfake: line\r\x1b[2J"), -1);
    assert_one_line(p.err);
    char longv[600];
    memset(longv, 'a', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    cr_assert_eq(PARSE(&p, "--queue-max", longv), -1);
    assert_one_line(p.err);
    cr_assert(strlen(p.err) < 160);
    /* a caller's small buffer is respected */
    char tiny[8];
    const char *err = NULL;
    gw_config_t c;
    char *argv[] = {"gw", "--bogus=1", NULL};
    cr_assert_eq(gw_args_parse(2, argv, &c, tiny, sizeof(tiny), &err), -1);
    cr_assert_eq(err, tiny);
    cr_assert_eq(strlen(tiny), sizeof(tiny) - 1);
}

Test(gw_cli, credential_flags)
{
    parsed_t p;
    cr_assert_eq(gw_args_parse(1, ARGV("x"), &p.c, p.buf, sizeof(p.buf), &p.err), 0);
    cr_assert_str_eq(p.c.token_file, "./.faas/discovery/token"); /* where faasd and make run keep it */
    cr_assert_null(p.c.tls_ca);
    cr_assert_eq(PARSE(&p, "--token-file", "/t", "--tls-ca=/ca.pem"), 0, "%s", p.err);
    cr_assert_str_eq(p.c.token_file, "/t");
    cr_assert_str_eq(p.c.tls_ca, "/ca.pem");
    cr_assert_eq(PARSE(&p, "--token-file", ""), -1);
    cr_assert_eq(PARSE(&p, "--tls-ca="), -1);
}

Test(gw_cli, advertise_host)
{
    parsed_t p;
    cr_assert_eq(gw_args_parse(1, ARGV("x"), &p.c, p.buf, sizeof(p.buf), &p.err), 0);
    cr_assert_null(p.c.advertise_host, "default: the address each client reached");
    const char *good[] = {"gw.example.com", "10.0.0.7", "::1", "[fd00::7]"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        cr_assert_eq(PARSE(&p, "--advertise-host", (char *)good[i]), 0, "%s: %s", good[i], p.err);
        cr_assert_str_eq(p.c.advertise_host, good[i]);
    }
    /* it goes into JSON and host:port unescaped */
    const char *bad[] = {"", "a\"b", "h/x", "[]", "a b", "x]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(PARSE(&p, "--advertise-host", (char *)bad[i]), -1, "%s accepted", bad[i]);
        assert_one_line(p.err);
    }
}
