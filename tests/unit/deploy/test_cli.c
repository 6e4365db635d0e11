/* ctl_args_parse and faasd_args_parse: the command lines of faasctl and faasd,
 * parsed without printing, exiting or reading the environment. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <string.h>

#include "deploy/args.h"

#define ARGC(...) ((int)(sizeof((char *[]){"prog", __VA_ARGS__}) / sizeof(char *)))
#define ARGV(...) ((char *[]){"prog", __VA_ARGS__, NULL})
#define CTL(a, env, err, ...) ctl_args_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), env, a, err)
#define FAASD(a, err, ...) faasd_args_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), a, err)

static void assert_one_line(const char *err)
{
    cr_assert_not_null(err);
    cr_assert(err[0] != '\0');
    for (const char *p = err; *p; p++)
        cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in \"%s\"", err);
}

/* Expects -1 with needle in the message; frees. */
static void ctl_bad(const ctl_env_t *env, int argc, char **argv, const char *needle)
{
    ctl_args_t a;
    const char *err = NULL;
    int rc = ctl_args_parse(argc, argv, env, &a, &err);
    cr_assert_eq(rc, -1, "accepted: %s %s ...", argv[1], argc > 2 ? argv[2] : "");
    assert_one_line(err);
    cr_assert(strstr(err, needle) != NULL, "\"%s\" lacks \"%s\"", err, needle);
    ctl_args_free(&a);
}
#define CTL_BAD(needle, ...) ctl_bad(NULL, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), needle)

/* ---- faasctl ---- */

Test(ctl_cli, env_defaults_and_flags_win)
{
    ctl_args_t a;
    const char *err = NULL;
    ctl_env_t none = {NULL, "", NULL};
    cr_assert_eq(CTL(&a, &none, &err, "list"), 0, "%s", err);
    cr_assert_eq(a.cmd, CTL_LIST);
    cr_assert_str_eq(a.discovery, "127.0.0.1:7100");
    cr_assert_str_eq(a.gateway, "http://127.0.0.1:8080");
    ctl_args_free(&a);
    ctl_env_t env = {"127.0.0.1:1", "http://h:2", "127.0.0.1:3"};
    cr_assert_eq(CTL(&a, &env, &err, "ls"), 0, "%s", err);
    cr_assert_str_eq(a.discovery, "127.0.0.1:1");
    cr_assert_str_eq(a.gateway, "http://h:2");
    ctl_args_free(&a);
    /* before or after the command word */
    cr_assert_eq(CTL(&a, &env, &err, "--discovery", "127.0.0.1:9", "get", "fn", "--gateway=http://g:1"), 0, "%s", err);
    cr_assert_eq(a.cmd, CTL_GET);
    cr_assert_str_eq(a.name, "fn");
    cr_assert_str_eq(a.discovery, "127.0.0.1:9");
    cr_assert_str_eq(a.gateway, "http://g:1");
    ctl_args_free(&a);
}

Test(ctl_cli, help_everywhere_prints_nothing, .init = cr_redirect_stdout)
{
    struct {
        char *argv[4];
        int argc;
        ctl_cmd_t cmd;
    } cases[] = {
        {{"faasctl", "--help"}, 2, CTL_NONE},
        {{"faasctl", "-h"}, 2, CTL_NONE},
        {{"faasctl", "help"}, 2, CTL_NONE},
        {{"faasctl", "deploy", "--help"}, 3, CTL_DEPLOY},
        {{"faasctl", "rm", "-h"}, 3, CTL_DELETE},
        {{"faasctl", "invoke", "x", "--help"}, 4, CTL_INVOKE},
        {{"faasctl", "logs", "--help"}, 3, CTL_LOGS},
        {{"faasctl", "instances", "-h"}, 3, CTL_INSTANCES},
        {{"faasctl", "tasks", "--help"}, 3, CTL_TASKS},
        {{"faasctl", "tasks", "help"}, 3, CTL_TASKS},
        {{"faasctl", "tasks", "list", "-h"}, 4, CTL_TASKS_LIST},
        {{"faasctl", "tasks", "wait", "--help"}, 4, CTL_TASKS_WAIT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ctl_args_t a;
        const char *err = NULL;
        cr_assert_eq(ctl_args_parse(cases[i].argc, cases[i].argv, NULL, &a, &err), 1, "case %zu", i);
        cr_assert_eq(a.cmd, cases[i].cmd, "case %zu", i);
        ctl_args_free(&a);
    }
    fflush(stdout);
    cr_assert_stdout_eq_str("");
    cr_assert(strncmp(ctl_args_usage(CTL_INVOKE), "usage: faasctl invoke", 21) == 0);
    cr_assert(strncmp(ctl_args_usage(CTL_NONE), "usage: faasctl [", 16) == 0);
    cr_assert(strncmp(ctl_args_usage(CTL_TASKS_RESULT), "usage: faasctl tasks result", 27) == 0);
    cr_assert(strncmp(ctl_args_usage(CTL_TASKS_CANCEL), "usage: faasctl tasks cancel", 27) == 0);
}

Test(ctl_cli, command_errors)
{
    ctl_args_t a;
    const char *err = NULL;
    char *none[] = {"faasctl", NULL};
    cr_assert_eq(ctl_args_parse(1, none, NULL, &a, &err), -1);
    cr_assert_eq(a.cmd, CTL_NONE); /* main adds the usage */
    ctl_args_free(&a);
    CTL_BAD("unknown command \"frobnicate\"", "frobnicate");
    CTL_BAD("faasctl: bad option --bogus", "--bogus", "list");
    CTL_BAD("faasctl get: expects a function name (see faasctl get --help)", "get");
    CTL_BAD("expects a function name", "delete", "a", "b");
    CTL_BAD("takes no arguments", "list", "x");
    CTL_BAD("bad option --bogus", "instances", "x", "--bogus");
    CTL_BAD("bad option -q", "list", "-q");
    CTL_BAD("--discovery needs host:port", "list", "--discovery", "a b");
    CTL_BAD("--discovery needs host:port", "--discovery=", "list");
}

Test(ctl_cli, logs)
{
    ctl_args_t a;
    const char *err = NULL;
    cr_assert_eq(CTL(&a, NULL, &err, "logs", "fn"), 0, "%s", err);
    cr_assert_eq(a.tail, 100);
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, NULL, &err, "logs", "--tail", "0", "fn"), 0, "%s", err);
    cr_assert_eq(a.tail, 0);
    ctl_args_free(&a);
    CTL_BAD("--tail \"many\"", "logs", "fn", "--tail", "many");
    CTL_BAD("--tail \"1000001\"", "logs", "fn", "-n", "1000001");
    CTL_BAD("expects a function name", "logs");
}

Test(ctl_cli, deploy_flags_become_checked_manifest_keys)
{
    ctl_args_t a;
    const char *err = NULL;
    cr_assert_eq(CTL(&a, NULL, &err, "deploy", "-f", "f.yaml", "--dir", "d", "--cmd", "./x -v", "--timeout", "30s",
                     "-e", "A=1", "--health-tcp", "--memory=64Mi", "--reserved", "2", "hello"),
                 0, "%s", err);
    cr_assert_eq(a.cmd, CTL_DEPLOY);
    cr_assert_str_eq(a.file, "f.yaml");
    cr_assert_str_eq(a.dir, "d");
    cr_assert_str_eq(a.name, "hello");
    const char *want[][3] = {{"command", "./x -v", "--cmd"},
                             {"timeout", "30s", "--timeout"},
                             {"env", "A=1", "--env"},
                             {"health.tcp", "true", "--health-tcp"},
                             {"resources.memory", "64Mi", "--memory"},
                             {"reserved", "2", "--reserved"},
                             {"name", "hello", "NAME"}};
    cr_assert_eq(a.n_sets, 7);
    for (size_t i = 0; i < 7; i++) {
        cr_assert_str_eq(a.sets[i].key, want[i][0]);
        cr_assert_str_eq(a.sets[i].value, want[i][1]);
        cr_assert_str_eq(a.sets[i].flag, want[i][2]);
    }
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, NULL, &err, "deploy", "--endpoints-threshold-rps", "20", "hello"), 0, "%s", err);
    cr_assert_eq(a.n_sets, 2);
    cr_assert_str_eq(a.sets[0].key, "endpoints.threshold_rps");
    cr_assert_str_eq(a.sets[0].value, "20");
    cr_assert_str_eq(a.sets[0].flag, "--endpoints-threshold-rps");
    ctl_args_free(&a);
    /* no name, no command: legal here, the manifest file may hold them */
    cr_assert_eq(CTL(&a, NULL, &err, "deploy"), 0, "%s", err);
    cr_assert_null(a.name);
    cr_assert_eq(a.n_sets, 0);
    ctl_args_free(&a);
}

Test(ctl_cli, deploy_bad_values_name_their_flag)
{
    CTL_BAD("--timeout \"3x\": bad duration", "deploy", "hello", "--timeout", "3x");
    CTL_BAD("--memory \"lots\"", "deploy", "hello", "--memory", "lots");
    CTL_BAD("http, grpc or thrift", "deploy", "hello", "--protocol", "smtp");
    CTL_BAD("--cpu", "deploy", "--cpu", "-1");
    CTL_BAD("--env", "deploy", "-e", "NOEQUALS");
    CTL_BAD("NAME \"Hello!\"", "deploy", "Hello!");
    CTL_BAD("unexpected argument \"b\"", "deploy", "a", "b");
    CTL_BAD("-f needs a file name", "deploy", "-f", "");
    CTL_BAD("--reserved \"many\"", "deploy", "hello", "--reserved", "many");
    CTL_BAD("--endpoints-threshold-rps \"0\": must be 1-10000000", "deploy", "hello", "--endpoints-threshold-rps", "0");
    CTL_BAD("bad option", "deploy", "--bogus");
    CTL_BAD("bad option", "deploy", "--timeout");
}

Test(ctl_cli, invoke_http)
{
    ctl_args_t a;
    const char *err = NULL;
    ctl_env_t env = {NULL, "http://127.0.0.1:18080/pre/", NULL};
    cr_assert_eq(CTL(&a, &env, &err, "invoke", "hello", "-d", "x y", "-X", "PUT", "-p", "/echo?a=1", "-H", "X-A: 1",
                     "--header=X-B:\t2", "-t", "5s"),
                 0, "%s", err);
    cr_assert_eq(a.cmd, CTL_INVOKE);
    cr_assert_str_eq(a.name, "hello");
    cr_assert_str_eq(a.data, "x y");
    cr_assert_str_eq(a.method, "PUT");
    cr_assert_str_eq(a.path, "/echo?a=1");
    cr_assert_eq(a.n_headers, 2);
    cr_assert_str_eq(a.headers[1], "X-B:\t2");
    cr_assert_eq(a.timeout_ms, 5000);
    cr_assert_str_eq(a.gw_host, "127.0.0.1");
    cr_assert_eq(a.gw_port, 18080);
    cr_assert_str_eq(a.gw_prefix, "/pre");
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, NULL, &err, "invoke", "hello"), 0, "%s", err);
    cr_assert_null(a.method);
    cr_assert_str_eq(a.path, "/");
    cr_assert_eq(a.timeout_ms, 60000);
    ctl_args_free(&a);
}

Test(ctl_cli, invoke_rejects_what_would_break_the_request)
{
    CTL_BAD("Name: value", "invoke", "x", "-H", "no-colon");
    CTL_BAD("Name: value", "invoke", "x", "-H", "X-A: 1\r\nX-Injected: 1");
    CTL_BAD("Name: value", "invoke", "x", "-H", "Bad Name: 1");
    CTL_BAD("Name: value", "invoke", "x", "-H", ": empty name");
    CTL_BAD("path", "invoke", "x", "-p", "/a b");
    CTL_BAD("path", "invoke", "x", "-p", "/a\nHost: evil");
    CTL_BAD("not an HTTP token", "invoke", "x", "-X", "GET /x HTTP/1.0\r\n");
    CTL_BAD("not an HTTP token", "invoke", "x", "-X", "");
    CTL_BAD("--timeout \"soon\"", "invoke", "x", "--timeout", "soon");
    CTL_BAD("--timeout \"0\"", "invoke", "x", "-t", "0");
    CTL_BAD("--timeout", "invoke", "x", "-t", "9999999999");
    CTL_BAD("function name", "invoke", "Bad_Name");
    CTL_BAD("expects a function name", "invoke");
    CTL_BAD("--base64 needs --grpc", "invoke", "x", "--base64");
    CTL_BAD("--grpc \"pkg.S/M\"", "invoke", "x", "--grpc", "pkg.S/M");
    CTL_BAD("--grpc-gateway", "invoke", "x", "--grpc", "/p.S/M", "--grpc-gateway", "");
    CTL_BAD("--gateway \"ftp://h\"", "--gateway", "ftp://h", "invoke", "x");
    CTL_BAD("address has spaces or control bytes", "--gateway", "http://h\r\nX: y:80/", "invoke", "x");
    CTL_BAD("control bytes in the URL", "--gateway", "http://h:80/a b", "invoke", "x");
}

Test(ctl_cli, invoke_async)
{
    ctl_args_t a;
    const char *err = NULL;
    cr_assert_eq(CTL(&a, NULL, &err, "invoke", "--async", "hello", "-p", "/echo", "-d", "x", "-H", "X-A: 1",
                     "--callback", "https://cb.example:8443/done?x=1", "--json"),
                 0, "%s", err);
    cr_assert_eq(a.cmd, CTL_INVOKE);
    cr_assert(a.async && a.json);
    cr_assert_str_eq(a.callback, "https://cb.example:8443/done?x=1");
    cr_assert_eq(a.n_headers, 1, "the callback header is added when sending, not parsed as -H");
    cr_assert_str_eq(a.gw_host, "127.0.0.1");
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, NULL, &err, "invoke", "hello"), 0, "%s", err);
    cr_assert(!a.async && !a.json && a.callback == NULL);
    ctl_args_free(&a);
    CTL_BAD("--callback needs --async", "invoke", "x", "--callback", "http://h/");
    CTL_BAD("--json needs --async", "invoke", "x", "--json");
    CTL_BAD("--callback \"ftp://h/\" must be an http:// or https:// URL", "invoke", "x", "--async", "--callback",
            "ftp://h/");
    CTL_BAD("must be an http:// or https:// URL", "invoke", "x", "--async", "--callback", "http://h/\r\nX-I: 1");
    CTL_BAD("must be an http:// or https:// URL", "invoke", "x", "--async", "--callback", "http://h/a b");
    CTL_BAD("--async is for HTTP calls only", "invoke", "x", "--async", "--grpc", "/p.S/M");
}

Test(ctl_cli, tasks_subcommands)
{
    ctl_args_t a;
    const char *err = NULL;
    char id[] = "000102030405060708090a0b0c0d0e0f";
    ctl_env_t env = {NULL, "http://gw:9/pre", NULL};
    cr_assert_eq(CTL(&a, &env, &err, "tasks", "list", "--function", "hello", "--status", "running", "--limit", "1000",
                     "--after", id, "--json"),
                 0, "%s", err);
    cr_assert_eq(a.cmd, CTL_TASKS_LIST);
    cr_assert_str_eq(a.function, "hello");
    cr_assert_str_eq(a.status, "running");
    cr_assert_eq(a.limit, 1000);
    cr_assert_str_eq(a.after, id);
    cr_assert(a.json);
    cr_assert_null(a.task_id);
    cr_assert_str_eq(a.gw_host, "gw");
    cr_assert_eq(a.gw_port, 9);
    cr_assert_str_eq(a.gw_prefix, "/pre");
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, NULL, &err, "tasks", "ls"), 0, "%s", err);
    cr_assert_eq(a.cmd, CTL_TASKS_LIST);
    cr_assert(a.limit == 0 && a.function == NULL && a.status == NULL && a.after == NULL && !a.json);
    ctl_args_free(&a);

    struct {
        const char *sub;
        ctl_cmd_t cmd;
    } subs[] = {
        {"get", CTL_TASKS_GET}, {"result", CTL_TASKS_RESULT}, {"cancel", CTL_TASKS_CANCEL}, {"wait", CTL_TASKS_WAIT}};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        char *argv[] = {"prog", "tasks", (char *)subs[i].sub, id, NULL};
        cr_assert_eq(ctl_args_parse(4, argv, NULL, &a, &err), 0, "%s: %s", subs[i].sub, err);
        cr_assert_eq(a.cmd, subs[i].cmd);
        cr_assert_str_eq(a.task_id, id);
        ctl_args_free(&a);
    }
    cr_assert_eq(CTL(&a, NULL, &err, "tasks", "wait", id, "-i", "--timeout", "90s"), 0, "%s", err);
    cr_assert(a.include);
    cr_assert_eq(a.timeout_ms, 90000);
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, NULL, &err, "tasks", "wait", id), 0, "%s", err);
    cr_assert_eq(a.timeout_ms, 3600000, "wait gives up after an hour unless told");
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, NULL, &err, "tasks", "result", "--include", id), 0, "%s", err);
    cr_assert(a.include);
    ctl_args_free(&a);
    /* the gateway judges ids; only what could change the request path is refused here */
    cr_assert_eq(CTL(&a, NULL, &err, "tasks", "get", "ZZZ"), 0, "%s", err);
    ctl_args_free(&a);
}

Test(ctl_cli, tasks_errors_name_the_subcommand)
{
    char id[] = "000102030405060708090a0b0c0d0e0f";
    CTL_BAD("faasctl tasks: expects a subcommand: list, get, result, cancel or wait (see faasctl tasks --help)",
            "tasks");
    CTL_BAD("faasctl tasks: unknown subcommand \"remove\"", "tasks", "remove", id);
    CTL_BAD("faasctl tasks get: expects a task id (see faasctl tasks get --help)", "tasks", "get");
    CTL_BAD("expects a task id", "tasks", "cancel", id, id);
    CTL_BAD("faasctl tasks list: takes no arguments", "tasks", "list", id);
    CTL_BAD("task id \"../x\" must be 32 lowercase hex characters", "tasks", "get", "../x");
    CTL_BAD("task id \"a?b\" must be", "tasks", "result", "a?b");
    CTL_BAD("must be 32 lowercase hex", "tasks", "wait", "");
    CTL_BAD("must be 32 lowercase hex", "tasks", "get",
            "00000000000000000000000000000000000000000000000000000000000000000");
    CTL_BAD("--status \"done\" must be queued, running, succeeded, failed or cancelled", "tasks", "list", "--status",
            "done");
    CTL_BAD("--limit \"0\" must be 1-1000", "tasks", "list", "--limit", "0");
    CTL_BAD("--limit \"1001\" must be 1-1000", "tasks", "list", "--limit", "1001");
    CTL_BAD("--function \"Bad_Name\"", "tasks", "list", "--function", "Bad_Name");
    CTL_BAD("--after \"x&y=1\" must be a task id", "tasks", "list", "--after", "x&y=1");
    CTL_BAD("faasctl tasks get: --status does not apply here", "tasks", "get", id, "--status", "queued");
    CTL_BAD("--include does not apply here", "tasks", "list", "-i");
    CTL_BAD("--timeout does not apply here", "tasks", "result", id, "-t", "1s");
    CTL_BAD("--json does not apply here", "tasks", "wait", id, "--json");
    CTL_BAD("--timeout \"0\"", "tasks", "wait", id, "--timeout", "0");
    CTL_BAD("bad option --bogus", "tasks", "get", id, "--bogus");
    CTL_BAD("--gateway \"ftp://h\"", "--gateway", "ftp://h", "tasks", "get", id);
}

Test(ctl_cli, invoke_grpc_skips_the_gateway_url)
{
    ctl_args_t a;
    const char *err = NULL;
    ctl_env_t env = {NULL, "ftp://not-used", "127.0.0.1:9"};
    cr_assert_eq(CTL(&a, &env, &err, "invoke", "x", "--grpc", "/p.S/M", "--base64", "-d", "AA=="), 0, "%s", err);
    cr_assert_str_eq(a.grpc_method, "/p.S/M");
    cr_assert_str_eq(a.grpc_gateway, "127.0.0.1:9");
    cr_assert_eq(a.base64, 1);
    ctl_args_free(&a);
}

Test(ctl_cli, argv_bytes_cannot_break_the_line)
{
    CTL_BAD("unknown command", "\x1b[2J\nfake");
    char longv[1000];
    memset(longv, 'v', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    ctl_args_t a;
    const char *err = NULL;
    cr_assert_eq(CTL(&a, NULL, &err, "deploy", "--timeout", longv), -1);
    assert_one_line(err);
    cr_assert(strlen(err) < sizeof(a.errbuf));
    cr_assert(strstr(err, "(see faasctl deploy --help)") != NULL, "%s", err);
    ctl_args_free(&a);
}

Test(ctl_cli, parses_again_after_an_error)
{
    ctl_args_t a;
    const char *err = NULL;
    cr_assert_eq(CTL(&a, NULL, &err, "invoke", "x", "-X", "GET", "--bogus"), -1);
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, NULL, &err, "invoke", "y"), 0, "%s", err);
    cr_assert_str_eq(a.name, "y");
    cr_assert_null(a.method);
    ctl_args_free(&a);
}

/* ---- faasd ---- */

Test(faasd_cli, defaults_and_derived_metrics)
{
    faasd_args_t a;
    const char *err = NULL;
    char *argv[] = {"faasd", NULL};
    cr_assert_eq(faasd_args_parse(1, argv, &a, &err), 0, "%s", err);
    cr_assert_str_eq(a.state_dir, "./.faas");
    cr_assert_str_eq(a.bin_dir, ""); /* main fills faasd's own directory */
    cr_assert_str_eq(a.http, "127.0.0.1:8080");
    cr_assert_str_eq(a.disc, "127.0.0.1:7100");
    cr_assert_str_eq(a.disc_metrics, "127.0.0.1:7101");
    cr_assert_str_eq(a.wm_metrics, "127.0.0.1:7201");
    cr_assert_str_eq(a.pool, "2");
    cr_assert_str_eq(a.thrift, "");
    cr_assert_str_eq(a.grpc, "");
    cr_assert_str_eq(a.gw_threads, ""); /* not passed: the gateway's own default */
    cr_assert_str_eq(a.pool_python, ""); /* nor these: the worker manager's */
    cr_assert_str_eq(a.python_preload, "");
}

Test(faasd_cli, every_flag)
{
    faasd_args_t a;
    const char *err = NULL;
    cr_assert_eq(FAASD(&a, &err, "--state-dir", "/s", "--bin-dir=/b", "--http", ":8000", "--discovery-listen",
                       "127.0.0.2:7000", "--workermgr-listen=127.0.0.3:7300", "--workermgr-metrics", "127.0.0.1:9",
                       "--discovery-metrics", "off", "--pool-size", "64", "--thrift", "off", "--grpc", "127.0.0.1:0",
                       "--gateway-threads", "256"),
                 0, "%s", err);
    cr_assert_str_eq(a.state_dir, "/s");
    cr_assert_str_eq(a.bin_dir, "/b");
    cr_assert_str_eq(a.http, ":8000");
    cr_assert_str_eq(a.disc_metrics, "off");
    cr_assert_str_eq(a.wm_metrics, "127.0.0.1:9");
    cr_assert_str_eq(a.pool, "64");
    cr_assert_str_eq(a.thrift, "off");
    cr_assert_str_eq(a.grpc, "127.0.0.1:0");
    cr_assert_str_eq(a.gw_threads, "256");
    cr_assert_eq(FAASD(&a, &err, "--gateway-threads=1"), 0, "%s", err);
    cr_assert_str_eq(a.gw_threads, "1");
    cr_assert_eq(FAASD(&a, &err, "--discovery-listen", ":7100"), 0, "%s", err);
    cr_assert_str_eq(a.disc_metrics, "127.0.0.1:7101");
}

Test(faasd_cli, python_pool_flags_pass_through)
{
    faasd_args_t a;
    const char *err = NULL;
    cr_assert_eq(FAASD(&a, &err, "--pool-python", "0", "--python-preload", "json,http.server,_x9"), 0, "%s", err);
    cr_assert_str_eq(a.pool_python, "0");
    cr_assert_str_eq(a.python_preload, "json,http.server,_x9");
    cr_assert_eq(FAASD(&a, &err, "--pool-python=64"), 0, "%s", err);
    cr_assert_str_eq(a.pool_python, "64");
    cr_assert_str_eq(a.python_preload, "", "not given: not passed");
    static char long_list[4200];
    memset(long_list, 'a', 4096);
    cr_assert_eq(FAASD(&a, &err, "--python-preload", long_list), 0, "%s", err);
    long_list[4096] = 'a';
    cr_assert_eq(FAASD(&a, &err, "--python-preload", long_list), -1);
    cr_assert(strstr(err, "too long") != NULL, "%s", err);
}

Test(faasd_cli, help_prints_nothing, .init = cr_redirect_stdout)
{
    faasd_args_t a;
    const char *err = NULL;
    cr_assert_eq(FAASD(&a, &err, "-h"), 1);
    cr_assert_eq(FAASD(&a, &err, "--pool-size", "1", "--help"), 1);
    fflush(stdout);
    cr_assert_stdout_eq_str("");
    cr_assert(strncmp(faasd_args_usage, "usage: faasd", 12) == 0);
}

Test(faasd_cli, bad_flags_say_which)
{
    const char *bad[][3] = {
        {"--bogus", NULL, "bad option --bogus"},
        {"--pool-size", "x", "--pool-size"},
        {"--pool-size", "65", "--pool-size"},
        {"--pool-size", "-1", "--pool-size"},
        {"--pool-size", "007", "--pool-size"},
        {"--http", "nowhere", "--http"},
        {"--http", "127.0.0.1:0", "--http"},
        {"--discovery-listen", "h:65535", "--discovery-listen"},
        {"--workermgr-listen", "a b:1", "--workermgr-listen"},
        {"--thrift", "on", "--thrift"},
        {"--grpc", "x", "--grpc"},
        {"--pool-python", "65", "--pool-python"},
        {"--pool-python", "-1", "--pool-python"},
        {"--pool-python", "01", "--pool-python"},
        {"--pool-python", "x", "--pool-python"},
        {"--python-preload", "json ssl", "--python-preload"},
        {"--python-preload", "os;rm", "--python-preload"},
        {"--python-preload", "a\nb", "--python-preload"},
        {"--python-preload", "", "value empty"},
        {"--gateway-threads", "0", "--gateway-threads"},
        {"--gateway-threads", "257", "--gateway-threads"},
        {"--gateway-threads", "-2", "--gateway-threads"},
        {"--gateway-threads", "02", "--gateway-threads"},
        {"--gateway-threads", "2 ", "--gateway-threads"},
        {"--gateway-threads", "9999999", "--gateway-threads"},
        {"--discovery-metrics", "h", "--discovery-metrics"},
        {"--workermgr-metrics", "off", "--workermgr-metrics"},
        {"--state-dir", "", "value empty"},
        {"extra", NULL, "unexpected argument extra"},
        {"--http", NULL, "bad option --http"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        faasd_args_t a;
        const char *err = NULL;
        char *argv[] = {"faasd", (char *)bad[i][0], (char *)bad[i][1], NULL};
        cr_assert_eq(faasd_args_parse(bad[i][1] ? 3 : 2, argv, &a, &err), -1, "%s %s accepted", bad[i][0],
                     bad[i][1] ? bad[i][1] : "");
        assert_one_line(err);
        cr_assert(strstr(err, bad[i][2]) != NULL, "\"%s\" lacks \"%s\"", err, bad[i][2]);
    }
    char longv[700];
    memset(longv, 'd', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    faasd_args_t a;
    const char *err = NULL;
    cr_assert_eq(FAASD(&a, &err, "--http", longv), -1);
    assert_one_line(err);
}

Test(ctl_cli, credential_flags_anywhere)
{
    ctl_args_t a;
    const char *err = NULL;
    ctl_env_t none = {NULL, NULL, NULL};
    cr_assert_eq(CTL(&a, &none, &err, "list"), 0, "%s", err);
    cr_assert_null(a.token_file); /* FAAS_TOKEN, else ./.faas/discovery/token: main decides */
    cr_assert_null(a.tls_ca);
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, &none, &err, "--token-file", "/t", "get", "fn", "--tls-ca=/ca.pem"), 0, "%s", err);
    cr_assert_str_eq(a.token_file, "/t");
    cr_assert_str_eq(a.tls_ca, "/ca.pem");
    ctl_args_free(&a);
    cr_assert_eq(CTL(&a, &none, &err, "list", "--token-file="), -1);
    cr_assert(strstr(err, "--token-file needs a file") != NULL, "%s", err);
    ctl_args_free(&a);
}
