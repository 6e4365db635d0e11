/* disc_args_parse: faas-discovery's command line, parsed without side effects. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <string.h>

#include "discovery/args.h"
#include "discovery/discovery.h"

#define ARGC(...) ((int)(sizeof((char *[]){"faas-discovery", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(a, err, ...) disc_args_parse(ARGC(__VA_ARGS__), ((char *[]){"faas-discovery", __VA_ARGS__, NULL}), a, err)

static void assert_one_line(const char *err)
{
    cr_assert_not_null(err);
    cr_assert(err[0] != '\0');
    for (const char *p = err; *p; p++)
        cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in \"%s\"", err);
}

Test(disc_cli, defaults)
{
    disc_args_t a;
    const char *err = NULL;
    char *argv[] = {"faas-discovery", NULL};
    cr_assert_eq(disc_args_parse(1, argv, &a, &err), 0);
    cr_assert_str_eq(a.listen, "127.0.0.1:7100");
    cr_assert_str_eq(a.state_dir, "./.faas/discovery");
    cr_assert_str_eq(a.metrics_listen, "127.0.0.1:7101");
    cr_assert_eq(a.max_artifact, 4ull << 30);
    cr_assert_eq(a.task_retention_ms, 7ull * 24 * 3600 * 1000);
    cr_assert_eq(a.callback_attempts, 5);
    cr_assert_eq(a.callback_backoff_ms, 1000);
}

Test(disc_cli, every_flag)
{
    disc_args_t a;
    const char *err = NULL;
    cr_assert_eq(PARSE(&a, &err, "--listen", "127.0.0.1:0", "--state-dir=/var/d", "--metrics-listen", "off",
                       "--max-artifact-bytes=1", "--task-retention-ms", "60000", "--callback-attempts", "2",
                       "--callback-backoff-ms=50"),
                 0, "%s", err);
    cr_assert_eq(a.callback_attempts, 2);
    cr_assert_eq(a.callback_backoff_ms, 50);
    cr_assert_str_eq(a.listen, "127.0.0.1:0");
    cr_assert_str_eq(a.state_dir, "/var/d");
    cr_assert_str_eq(a.metrics_listen, "off");
    cr_assert_eq(a.max_artifact, 1);
    cr_assert_eq(a.task_retention_ms, 60000);
    /* getopt's unambiguous prefixes, as before the move */
    cr_assert_eq(PARSE(&a, &err, "--metrics=127.0.0.1:9"), 0, "%s", err);
    cr_assert_str_eq(a.metrics_listen, "127.0.0.1:9");
}

Test(disc_cli, help_prints_nothing, .init = cr_redirect_stdout)
{
    disc_args_t a;
    const char *err = NULL;
    cr_assert_eq(PARSE(&a, &err, "--help"), 1);
    cr_assert_eq(PARSE(&a, &err, "--listen", "127.0.0.1:1", "--help"), 1);
    fflush(stdout);
    cr_assert_stdout_eq_str("");
    cr_assert(strstr(disc_args_usage, "--max-artifact-bytes") != NULL);
    cr_assert(strstr(disc_args_usage, "--task-retention-ms") != NULL);
    cr_assert(strstr(disc_args_usage, "--callback-attempts") != NULL);
    cr_assert(strstr(disc_args_usage, "--callback-backoff-ms") != NULL);
}

Test(disc_cli, bad_flags_say_which)
{
    struct {
        char *flag, *val, *needle;
    } bad[] = {
        {"--listen", "nope", "--listen"},
        {"--listen", "h:70000", "--listen"},
        {"--metrics-listen", "on", "--metrics-listen"},
        {"--max-artifact-bytes", "-1", "--max-artifact-bytes"},
        {"--max-artifact-bytes", "0", "--max-artifact-bytes"},
        {"--max-artifact-bytes", "1k", "--max-artifact-bytes"},
        {"--max-artifact-bytes", "99999999999999999999", "--max-artifact-bytes"},
        {"--task-retention-ms", "0", "--task-retention-ms"},
        {"--task-retention-ms", "-5", "--task-retention-ms"},
        {"--task-retention-ms", "7d", "--task-retention-ms"},
        {"--task-retention-ms", "", "--task-retention-ms"},
        {"--task-retention-ms", "18446744073709551616", "--task-retention-ms"},
        {"--callback-attempts", "0", "--callback-attempts"},
        {"--callback-attempts", "4294967296", "--callback-attempts"},
        {"--callback-backoff-ms", "1s", "--callback-backoff-ms"},
        {"--state-dir", "", "--state-dir"},
        {"--bogus", "1", "--bogus"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        disc_args_t a;
        const char *err = NULL;
        cr_assert_eq(PARSE(&a, &err, bad[i].flag, bad[i].val), -1, "%s %s accepted", bad[i].flag, bad[i].val);
        assert_one_line(err);
        cr_assert(strstr(err, bad[i].needle) != NULL, "%s", err);
    }
}

Test(disc_cli, shape_errors)
{
    disc_args_t a;
    const char *err = NULL;
    cr_assert_eq(PARSE(&a, &err, "--listen"), -1);
    cr_assert(strstr(err, "--listen") != NULL, "%s", err);
    cr_assert_eq(PARSE(&a, &err, "extra"), -1);
    cr_assert(strstr(err, "unexpected argument: extra") != NULL, "%s", err);
    cr_assert_eq(PARSE(&a, &err, "-x"), -1);
    assert_one_line(err);
    cr_assert_eq(PARSE(&a, &err, "--listen", "a\nb:1x"), -1);
    assert_one_line(err);
}

/* --etcd-prefix is bounded by the one limit both etcd stores check: the longest is
 * taken, one byte more is refused naming the bound. */
Test(disc_cli, etcd_prefix_bound)
{
    char p[DISC_ETCD_PREFIX_MAX + 2];
    memset(p, 'p', sizeof(p));
    p[0] = '/';
    p[DISC_ETCD_PREFIX_MAX - 1] = '/';
    p[DISC_ETCD_PREFIX_MAX] = '\0';
    disc_args_t a;
    const char *err = NULL;
    cr_assert_eq(PARSE(&a, &err, "--etcd-prefix", p), 0, "%s", err);
    cr_assert_str_eq(a.etcd_prefix, p);
    p[DISC_ETCD_PREFIX_MAX - 1] = 'p';
    p[DISC_ETCD_PREFIX_MAX] = '/';
    p[DISC_ETCD_PREFIX_MAX + 1] = '\0';
    cr_assert_eq(PARSE(&a, &err, "--etcd-prefix", p), -1);
    assert_one_line(err);
    cr_assert(strstr(err, "at most " DISC_STR(DISC_ETCD_PREFIX_MAX) " bytes"), "%s", err);
    cr_assert_eq(PARSE(&a, &err, "--etcd-prefix", "faas/"), -1);
    cr_assert(strstr(err, "start and end with '/'"), "%s", err);
}

/* getopt keeps state in globals: a parse after a failed one must start afresh. */
Test(disc_cli, parses_again_after_an_error)
{
    disc_args_t a;
    const char *err = NULL;
    cr_assert_eq(PARSE(&a, &err, "--state-dir", "/x", "--bogus", "--listen", "127.0.0.1:1"), -1);
    cr_assert_eq(PARSE(&a, &err, "--listen", "127.0.0.1:2"), 0, "%s", err);
    cr_assert_str_eq(a.listen, "127.0.0.1:2");
    cr_assert_str_eq(a.state_dir, "./.faas/discovery");
}

Test(disc_cli, credential_flags)
{
    disc_args_t a;
    const char *err = NULL;
    cr_assert_eq(PARSE(&a, &err, "--state-dir", "/s"), 0);
    cr_assert_null(a.token_file); /* main makes it STATE_DIR/token */
    cr_assert_null(a.tls_cert);
    cr_assert_eq(PARSE(&a, &err, "--token-file", "/t", "--tls-cert", "/c.pem", "--tls-key=/k.pem"), 0, "%s", err);
    cr_assert_str_eq(a.token_file, "/t");
    cr_assert_str_eq(a.tls_cert, "/c.pem");
    cr_assert_str_eq(a.tls_key, "/k.pem");
    cr_assert_eq(PARSE(&a, &err, "--tls-cert", "/c.pem"), -1);
    cr_assert(strstr(err, "--tls-cert and --tls-key go together") != NULL, "%s", err);
    assert_one_line(err);
    cr_assert_eq(PARSE(&a, &err, "--tls-key", "/k.pem"), -1);
    cr_assert_eq(PARSE(&a, &err, "--token-file="), -1);
    assert_one_line(err);
}
