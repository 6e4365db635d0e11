/* args.c - faasctl's and faasd's flags (see args.h). Values that reach a
 * request line, a header or a child's argv are checked here, so a bad byte is a
 * usage error (exit 2) before anything is sent or spawned. */
#include "deploy/args.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/spec.h"
#include "common/util.h"
#include "deploy/internal.h"
#include "deploy/manifest.h"

static int vfail(char *buf, size_t cap, const char **err, const char *fmt, va_list ap)
{
    vsnprintf(buf, cap, fmt, ap);
    faas_oneline(buf); /* a value holding a newline cannot make the message two lines */
    *err = buf;
    return -1;
}

/* The option getopt just refused, for the message: "-x" (in one) or the word. */
static const char *bad_opt(int argc, char **argv, char one[3])
{
    if (optopt > 0 && optopt < 0x7f) {
        one[0] = '-', one[1] = (char)optopt, one[2] = '\0';
        return one;
    }
    return optind > 0 && optind <= argc ? argv[optind - 1] : "";
}

/* ======================================================================== faasd */

const char faasd_args_usage[] =
    "usage: faasd [options]\n"
    "\n"
    "Runs the platform on this machine: faas-discovery, one faas-workermgr and\n"
    "faas-gateway, as child processes it restarts when they crash. Ctrl-C or\n"
    "SIGTERM stops them all (gateway, worker manager, discovery) and exits 0.\n"
    "\n"
    "  --state-dir DIR          state (default ./.faas: DIR/discovery, DIR/worker)\n"
    "  --http ADDR              gateway HTTP listener (default 127.0.0.1:8080)\n"
    "  --thrift ADDR            gateway Thrift listener (default 127.0.0.1:8082; off = none)\n"
    "  --grpc ADDR              gateway gRPC listener (default 127.0.0.1:8081; off = none)\n"
    "  --discovery-listen ADDR  discovery gRPC (default 127.0.0.1:7100; metrics on port+1)\n"
    "  --workermgr-listen ADDR  worker manager gRPC (default 127.0.0.1:7200; metrics on port+1)\n"
    "  --discovery-metrics ADDR / --workermgr-metrics ADDR   override the metrics listeners\n"
    "  --pool-size N            warm pods kept by the worker manager (default 2)\n"
    "  --pool-python N          warm pods holding a Python zygote for python3 functions,\n"
    "                           0-64 (default: the worker manager's, 1)\n"
    "  --python-preload LIST    modules those zygotes import first, comma-separated (default:\n"
    "                           the worker manager's; see faas-workermgr --help)\n"
    "  --gateway-threads N      gateway event-loop threads, 1-256 (default: the gateway's\n"
    "                           own, one per online CPU)\n"
    "  --bin-dir DIR            where the daemons are (default: faasd's own directory)\n"
    "  -h, --help               this help\n";

static int faasd_fail(faasd_args_t *a, const char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int faasd_fail(faasd_args_t *a, const char **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(a->errbuf, sizeof(a->errbuf), err, fmt, ap);
    va_end(ap);
    return -1;
}

/* "host:port"; fixed = the port must be 1..65534 (faasd polls it, and the
 * default metrics listener is port+1). */
static int addr_ok(const char *v, int fixed, char *host, size_t hcap, uint16_t *port)
{
    const char *e;
    return faas_parse_hostport(v, host, hcap, port, &e) == 0 && (!fixed || (*port != 0 && *port != 65535));
}

/* A listener faasd waits on; fills the metrics default (port+1) if still unset. */
static int check_listen(faasd_args_t *a, const char **err, const char *flag, const char *v, char *metrics, size_t mcap)
{
    char host[100];
    uint16_t port;
    if (!addr_ok(v, 1, host, sizeof(host), &port))
        return faasd_fail(a, err, "%s needs host:port with a fixed port (e.g. 127.0.0.1:7100), got \"%.64s\"", flag, v);
    if (metrics != NULL && metrics[0] == '\0')
        snprintf(metrics, mcap, "%s:%u", host[0] ? host : "127.0.0.1", port + 1u);
    return 0;
}

/* v is a plain decimal in lo..hi, as --pool-size: no sign, space or leading zero, since
 * the child gets it as is and may read it otherwise. */
static int decimal_in(const char *v, long lo, long hi)
{
    const char *p = v;
    while (*p >= '0' && *p <= '9')
        p++;
    return *p == '\0' && p != v && p - v <= 6 && (v[0] != '0' || p - v == 1) && atol(v) >= lo && atol(v) <= hi;
}

/* Values passed on to a child: checked here so a typo is faasd's usage error. */
static int check_passed_on(faasd_args_t *a, const char **err)
{
    char host[128];
    uint16_t port;
    const char *p = a->pool;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p != '\0' || p == a->pool || p - a->pool > 2 || atoi(a->pool) > 64)
        return faasd_fail(a, err, "--pool-size must be 0-64, got \"%.16s\"", a->pool);
    if (a->pool_python[0] && !decimal_in(a->pool_python, 0, 64))
        return faasd_fail(a, err, "--pool-python must be 0-64, got \"%.16s\"", a->pool_python);
    /* the worker manager judges each name; here only what may reach its argv */
    if (a->python_preload[0] &&
        strspn(a->python_preload, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,") !=
            strlen(a->python_preload))
        return faasd_fail(a, err, "--python-preload must be module names, comma-separated, got \"%.64s\"",
                          a->python_preload);
    if (a->gw_threads[0] && !decimal_in(a->gw_threads, 1, 256))
        return faasd_fail(a, err, "--gateway-threads must be 1-256, got \"%.16s\"", a->gw_threads);
    if (a->thrift[0] && strcmp(a->thrift, "off") != 0 && !addr_ok(a->thrift, 0, host, sizeof(host), &port))
        return faasd_fail(a, err, "--thrift needs host:port or off, got \"%.64s\"", a->thrift);
    if (a->grpc[0] && strcmp(a->grpc, "off") != 0 && !addr_ok(a->grpc, 0, host, sizeof(host), &port))
        return faasd_fail(a, err, "--grpc needs host:port or off, got \"%.64s\"", a->grpc);
    if (a->disc_metrics[0] && strcmp(a->disc_metrics, "off") != 0 &&
        !addr_ok(a->disc_metrics, 0, host, sizeof(host), &port))
        return faasd_fail(a, err, "--discovery-metrics needs host:port or off, got \"%.64s\"", a->disc_metrics);
    if (a->wm_metrics[0] && !addr_ok(a->wm_metrics, 0, host, sizeof(host), &port))
        return faasd_fail(a, err, "--workermgr-metrics needs host:port, got \"%.64s\"", a->wm_metrics);
    return 0;
}

int faasd_args_parse(int argc, char **argv, faasd_args_t *a, const char **err)
{
    enum {
        O_STATE = 1000,
        O_HTTP,
        O_DISC,
        O_WM,
        O_DM,
        O_WMM,
        O_POOL,
        O_BIN,
        O_THRIFT,
        O_GRPC,
        O_GWT,
        O_POOL_PY,
        O_PRELOAD
    };
    static const struct option opts[] = {
        {"state-dir", required_argument, NULL, O_STATE},
        {"http", required_argument, NULL, O_HTTP},
        {"discovery-listen", required_argument, NULL, O_DISC},
        {"workermgr-listen", required_argument, NULL, O_WM},
        {"discovery-metrics", required_argument, NULL, O_DM},
        {"workermgr-metrics", required_argument, NULL, O_WMM},
        {"pool-size", required_argument, NULL, O_POOL},
        {"bin-dir", required_argument, NULL, O_BIN},
        {"thrift", required_argument, NULL, O_THRIFT},
        {"grpc", required_argument, NULL, O_GRPC},
        {"gateway-threads", required_argument, NULL, O_GWT},
        {"pool-python", required_argument, NULL, O_POOL_PY},
        {"python-preload", required_argument, NULL, O_PRELOAD},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct {
        int opt;
        char *dst;
        size_t cap;
    } map[] = {{O_STATE, a->state_dir, sizeof(a->state_dir)},
               {O_HTTP, a->http, sizeof(a->http)},
               {O_DISC, a->disc, sizeof(a->disc)},
               {O_WM, a->wm, sizeof(a->wm)},
               {O_DM, a->disc_metrics, sizeof(a->disc_metrics)},
               {O_WMM, a->wm_metrics, sizeof(a->wm_metrics)},
               {O_POOL, a->pool, sizeof(a->pool)},
               {O_BIN, a->bin_dir, sizeof(a->bin_dir)},
               {O_THRIFT, a->thrift, sizeof(a->thrift)},
               {O_GRPC, a->grpc, sizeof(a->grpc)},
               {O_GWT, a->gw_threads, sizeof(a->gw_threads)},
               {O_POOL_PY, a->pool_python, sizeof(a->pool_python)},
               {O_PRELOAD, a->python_preload, sizeof(a->python_preload)}};
    memset(a, 0, sizeof(*a));
    snprintf(a->state_dir, sizeof(a->state_dir), "./.faas");
    snprintf(a->http, sizeof(a->http), "127.0.0.1:8080");
    snprintf(a->disc, sizeof(a->disc), "127.0.0.1:7100");
    snprintf(a->wm, sizeof(a->wm), "127.0.0.1:7200");
    snprintf(a->pool, sizeof(a->pool), "2");
    optind = 0; /* getopt keeps state between calls: 0 re-initialises it fully */
    opterr = 0; /* and must not print: the caller prints *err */
    int opt;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 'h')
            return 1;
        size_t i = 0;
        while (i < sizeof(map) / sizeof(map[0]) && map[i].opt != opt)
            i++;
        if (i == sizeof(map) / sizeof(map[0]))
            return faasd_fail(a, err, "bad option %.64s", bad_opt(argc, argv, (char[3]){0}));
        if (optarg[0] == '\0' || snprintf(map[i].dst, map[i].cap, "%s", optarg) >= (int)map[i].cap)
            return faasd_fail(a, err, "value empty or too long: %.64s", optarg);
    }
    if (optind < argc)
        return faasd_fail(a, err, "unexpected argument %.64s", argv[optind]);
    if (check_passed_on(a, err) != 0 || check_listen(a, err, "--http", a->http, NULL, 0) != 0 ||
        check_listen(a, err, "--discovery-listen", a->disc, a->disc_metrics, sizeof(a->disc_metrics)) != 0 ||
        check_listen(a, err, "--workermgr-listen", a->wm, a->wm_metrics, sizeof(a->wm_metrics)) != 0)
        return -1;
    return 0;
}

/* ====================================================================== faasctl */

static const char usage_main[] =
    "usage: faasctl [--discovery ADDR] [--gateway URL] <command> [args]\n"
    "\n"
    "commands:\n"
    "  deploy     deploy a function from a manifest (-f) and/or flags (--image: an OCI image)\n"
    "  list       list functions\n"
    "  get        print a function's spec\n"
    "  delete     delete a function\n"
    "  invoke     call a function over HTTP through the gateway\n"
    "  instances  list a function's running instances\n"
    "  logs       print a function's logs from every worker\n"
    "  tasks      async tasks: list, get, result, cancel, wait (invoke --async submits one)\n"
    "\n"
    "options (also accepted after the command):\n"
    "  --discovery ADDR  discovery gRPC address (env FAAS_DISCOVERY, default 127.0.0.1:7100)\n"
    "  --gateway URL     gateway URL (env FAAS_GATEWAY, default http://127.0.0.1:8080)\n"
    "  --token-file FILE the platform token, sent to discovery and worker managers (env\n"
    "                    FAAS_TOKEN, which wins; default ./.faas/discovery/token, where\n"
    "                    faasd and `make run` keep it)\n"
    "  --tls-ca FILE     talk TLS to discovery and worker managers, trusting this PEM CA\n"
    "  -h, --help        this help; `faasctl <command> --help` for a command's\n";

static const char usage_deploy[] =
    "usage: faasctl deploy [NAME] [-f function.yaml] [flags]\n"
    "\n"
    "Tars the code directory, uploads it to discovery and deploys the spec.\n"
    "Flags override the manifest's values.\n"
    "  -f, --file PATH             manifest (code: is relative to its directory)\n"
    "      --dir DIR               code directory (default: the manifest's code:, else .)\n"
    "      --image PATH[:TAG]      run from an OCI image instead of a code directory: an OCI\n"
    "                              layout directory, an OCI archive or a `docker save`\n"
    "                              archive; uploads the blobs discovery lacks (manifest\n"
    "                              key image:; TAG picks one of several images)\n"
    "      --cmd 'CMD ARGS'        command, split on spaces (with --image: optional,\n"
    "                              replaces the image's Entrypoint and Cmd)\n"
    "      --protocol P            http | grpc | thrift\n"
    "      --health PATH           HTTP readiness path (e.g. /healthz)\n"
    "      --health-tcp            readiness = the port accepts connections\n"
    "  -e, --env K=V               environment variable (repeatable)\n"
    "      --port N                port for the server (0 = platform picks, sets $PORT)\n"
    "      --memory SIZE           memory limit (128Mi, 1Gi)\n"
    "      --cpu Q                 CPU quota (500m, 1.5)\n"
    "      --pids N                max tasks\n"
    "      --timeout D             per-request deadline (30s, 1500ms, 2m)\n"
    "      --idle-timeout D        release idle instances after D\n"
    "      --cold-start-timeout D  bound on a cold start\n"
    "      --max-body SIZE         largest request body\n"
    "      --concurrency N         max in-flight requests per instance (0 = unlimited)\n"
    "      --min-instances N / --max-instances N\n"
    "      --reserved N            instances kept specialized from deploy on, used when no\n"
    "                              elastic instance can take a call (docs/scaling.md)\n"
    "      --network egress|none   the pod's way out: egress (default) reaches other services\n"
    "                              through the host's NAT, never the control plane; none has\n"
    "                              no route out of the pod (docs/security.md)\n"
    "      --log-max-bytes SIZE    rotate the function's log file past SIZE (16Mi; 64Ki-1024Mi)\n"
    "      --log-keep N            rotated log files kept (2; 1-10), docs/security.md\n"
    "      --endpoints-threshold-rps N\n"
    "                              calls/s above which GET /endpoints/NAME lists the pods'\n"
    "                              direct ports instead of the gateways (500; docs/endpoints.md)\n"
    "      --grpc-service S        gRPC service served (repeatable)\n"
    "      --thrift-service S      Thrift service served (repeatable)\n";

static const char usage_list[] = "usage: faasctl list\n\nLists functions: NAME VERSION PROTOCOL INSTANCES COMMAND.\n";
static const char usage_get[] =
    "usage: faasctl get NAME\n\nPrints the function's spec as YAML, then, as comments, its version and, if a\n"
    "worker reports one, its last cold start failure (# last-error:).\n";
static const char usage_delete[] = "usage: faasctl delete NAME\n\nDeletes the function.\n";
static const char usage_invoke[] =
    "usage: faasctl invoke NAME [-d DATA] [-X METHOD] [-p PATH] [-H 'K: V']...\n"
    "\n"
    "Calls the function through the gateway (GATEWAY/function/NAME/PATH); prints the\n"
    "response body; exits 1 with the status on stderr when it is >= 400.\n"
    "  -d, --data DATA     request body: a string, @file, or - for stdin (method defaults to POST)\n"
    "  -X, --method M      HTTP method (default GET, POST with --data)\n"
    "  -p, --path /P       path inside the function (default /)\n"
    "  -H, --header 'K: V' extra header (repeatable)\n"
    "  -t, --timeout D     give up after D (default 60s)\n"
    "      --grpc /pkg.Service/Method\n"
    "                      one unary gRPC call through the gateway's gRPC port instead; the\n"
    "                      --data bytes are the raw request message, the reply is printed raw;\n"
    "                      exits 1 with the gRPC status on stderr when it is not OK. The gateway\n"
    "                      routes by the service (the function must declare it)\n"
    "      --base64        with --grpc: --data is base64 and the reply is printed as base64\n"
    "      --grpc-gateway ADDR  host:port of the gateway's gRPC port\n"
    "                      (default $FAAS_GRPC_GATEWAY or 127.0.0.1:8081)\n"
    "      --async         submit the call as an async task instead (GATEWAY/async-function/NAME/PATH):\n"
    "                      prints the task id once the task is durable (202); follow it with\n"
    "                      faasctl tasks get|result|wait|cancel ID\n"
    "      --callback URL  with --async: the platform POSTs the result to URL when the task\n"
    "                      ends (X-Callback-Url; http:// or https://)\n"
    "      --json          with --async: print the gateway's JSON ({\"id\": ..., \"status\": ...})\n";
static const char usage_instances[] =
    "usage: faasctl instances NAME\n\nLists the function's instances: ID ENDPOINT WORKER KIND STATE PID AGE.\n"
    "KIND is reserved or elastic; STATE is starting, ready, overloaded or draining.\n";
static const char usage_logs[] =
    "usage: faasctl logs NAME [--tail N]\n\nPrints the function's log lines from every worker (last N, default 100).\n";

static const char usage_tasks[] =
    "usage: faasctl tasks list|get|result|cancel|wait [flags] [ID]\n"
    "\n"
    "Async tasks through the gateway's task API (docs/async.md). A task id is the 32\n"
    "lowercase hex characters `faasctl invoke --async` printed. `faasctl tasks SUB --help`\n"
    "for each. Exit codes: 0 done, 1 failure (unknown id, the task failed or was\n"
    "cancelled, the function answered >= 400, gateway unreachable), 2 usage, 3 the task\n"
    "has not finished (result, wait --timeout).\n"
    "  list     tasks, ordered by id: ID STATUS FUNCTION ATTEMPTS CREATED RESULT ERROR\n"
    "  get      one task's status\n"
    "  result   a finished task's response body\n"
    "  cancel   cancel a queued or running task\n"
    "  wait     wait for a task to finish, then print its result\n";
static const char usage_tasks_list[] =
    "usage: faasctl tasks list [--function NAME] [--status S] [--limit N] [--after ID] [--json]\n"
    "\n"
    "Lists tasks ordered by id (GET GATEWAY/tasks): ID STATUS FUNCTION ATTEMPTS CREATED\n"
    "RESULT ERROR. When more remain, stderr says how to get the next page.\n"
    "      --function NAME  only this function's tasks\n"
    "      --status S       only tasks in status S: queued, running, succeeded, failed, cancelled\n"
    "      --limit N        at most N tasks, 1-" FAAS_SPEC_STR(
        FAAS_TASK_LIST_LIMIT) "\n"
                              "                       (default " FAAS_SPEC_STR(
                                  FAAS_TASK_LIST_DEFAULT_LIMIT) ")\n"
                                                                "      --after ID       the page after this id (the "
                                                                "`next` of the previous page)\n"
                                                                "      --json           print the gateway's JSON "
                                                                "({\"tasks\": [...], \"next\": ...})\n";
static const char usage_tasks_get[] =
    "usage: faasctl tasks get ID [--json]\n"
    "\n"
    "Prints the task's status (GET GATEWAY/tasks/ID), one `field: value` line each: id,\n"
    "function, version, status, attempts, created, started, finished, error,\n"
    "result_status, result_size, callback_url, callback_status.\n"
    "      --json           print the gateway's JSON instead\n";
static const char usage_tasks_result[] =
    "usage: faasctl tasks result ID [-i]\n"
    "\n"
    "Prints the response body of a finished task as the function sent it (GET\n"
    "GATEWAY/tasks/ID/result), byte for byte. Exits 1 with the status on stderr when the\n"
    "function answered >= 400, 1 when the task failed or was cancelled (with why), and 3\n"
    "when it is still queued or running.\n"
    "  -i, --include        print the status line and headers first, like curl -i\n";
static const char usage_tasks_cancel[] =
    "usage: faasctl tasks cancel ID [--json]\n"
    "\n"
    "Cancels the task (DELETE GATEWAY/tasks/ID): a queued one at once, a running one is\n"
    "aborted in its pod and ends cancelled. A finished task cannot be cancelled (exit 1).\n"
    "      --json           print the gateway's JSON instead of one line\n";
static const char usage_tasks_wait[] =
    "usage: faasctl tasks wait ID [--timeout D] [-i]\n"
    "\n"
    "Polls the task (GET GATEWAY/tasks/ID, every 50 ms at first, doubling up to every\n"
    "2 s) until it has finished, then prints its result like `faasctl tasks result`.\n"
    "  -t, --timeout D      give up after D (default 1h) with exit 3\n"
    "  -i, --include        print the status line and headers first, like curl -i\n";

static const struct {
    const char *name;
    ctl_cmd_t cmd;
} ctl_commands[] = {
    {"deploy", CTL_DEPLOY}, {"list", CTL_LIST},   {"ls", CTL_LIST},       {"get", CTL_GET},
    {"delete", CTL_DELETE}, {"rm", CTL_DELETE},   {"invoke", CTL_INVOKE}, {"instances", CTL_INSTANCES},
    {"logs", CTL_LOGS},     {"tasks", CTL_TASKS},
};

/* The words after `tasks`. */
static const struct {
    const char *name;
    ctl_cmd_t cmd;
} ctl_task_commands[] = {
    {"list", CTL_TASKS_LIST},     {"ls", CTL_TASKS_LIST},       {"get", CTL_TASKS_GET},
    {"result", CTL_TASKS_RESULT}, {"cancel", CTL_TASKS_CANCEL}, {"wait", CTL_TASKS_WAIT},
};

/* Canonical command names for messages, indexed by ctl_cmd_t. */
static const char *const ctl_names[] = {"",          "deploy",       "list",         "get",       "delete",
                                        "invoke",    "instances",    "logs",         "tasks",     "tasks list",
                                        "tasks get", "tasks result", "tasks cancel", "tasks wait"};

const char *ctl_args_usage(ctl_cmd_t cmd)
{
    static const char *const u[] = {usage_main,         usage_deploy,     usage_list,      usage_get,
                                    usage_delete,       usage_invoke,     usage_instances, usage_logs,
                                    usage_tasks,        usage_tasks_list, usage_tasks_get, usage_tasks_result,
                                    usage_tasks_cancel, usage_tasks_wait};
    _Static_assert(sizeof(u) / sizeof(u[0]) == CTL_TASKS_WAIT + 1, "one usage per command");
    _Static_assert(sizeof(ctl_names) / sizeof(ctl_names[0]) == CTL_TASKS_WAIT + 1, "one name per command");
    return (unsigned)cmd < sizeof(u) / sizeof(u[0]) ? u[cmd] : usage_main;
}

/* "faasctl CMD: <msg> (see faasctl CMD --help)"; plain "faasctl: <msg>" before a command. */
static int ctl_fail(ctl_args_t *a, const char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ctl_fail(ctl_args_t *a, const char **err, const char *fmt, ...)
{
    char msg[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *c = ctl_names[a->cmd];
    if (a->cmd == CTL_NONE)
        snprintf(a->errbuf, sizeof(a->errbuf), "faasctl: %s", msg);
    else
        snprintf(a->errbuf, sizeof(a->errbuf), "faasctl %s: %s (see faasctl %s --help)", c, msg, c);
    faas_oneline(a->errbuf);
    *err = a->errbuf;
    return -1;
}

enum { OPT_DISCOVERY = 1000, OPT_GATEWAY, OPT_TOKEN_FILE, OPT_TLS_CA, OPT_FIRST_KEY };

#define COMMON_OPTS                                                                                                    \
    {"discovery", required_argument, NULL, OPT_DISCOVERY}, {"gateway", required_argument, NULL, OPT_GATEWAY},          \
        {"token-file", required_argument, NULL, OPT_TOKEN_FILE}, {"tls-ca", required_argument, NULL, OPT_TLS_CA},      \
    {                                                                                                                  \
        "help", no_argument, NULL, 'h'                                                                                 \
    }

/* The options every command takes: 0 if c is not one of them (the command's
 * own), 1 if it was taken, 2 if parsing ends here with *ret what the parser
 * returns (1 for --help, -1 with *err set for a bad --discovery). */
static int common_opt(ctl_args_t *a, int c, const char **err, int *ret)
{
    if (c == OPT_DISCOVERY && (optarg[0] == '\0' || !faas_printable(optarg))) {
        *ret = ctl_fail(a, err, "--discovery needs host:port, got \"%.64s\"", optarg);
        return 2;
    }
    if ((c == OPT_TOKEN_FILE || c == OPT_TLS_CA) && optarg[0] == '\0') {
        *ret = ctl_fail(a, err, "%s needs a file", c == OPT_TOKEN_FILE ? "--token-file" : "--tls-ca");
        return 2;
    }
    if (c == OPT_DISCOVERY)
        a->discovery = optarg;
    else if (c == OPT_TOKEN_FILE)
        a->token_file = optarg;
    else if (c == OPT_TLS_CA)
        a->tls_ca = optarg;
    else if (c == OPT_GATEWAY)
        a->gateway = optarg;
    else if (c == 'h') {
        *ret = 1;
        return 2;
    } else
        return 0;
    return 1;
}

/* list, get, delete, instances: no flags of their own, want operands. */
static int parse_simple(int argc, char **argv, ctl_args_t *a, const char **err, int want)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int rc, h = common_opt(a, c, err, &rc);
        if (h == 2)
            return rc;
        if (h == 0)
            return ctl_fail(a, err, "bad option %.64s", bad_opt(argc, argv, (char[3]){0}));
    }
    if (argc - optind != want)
        return ctl_fail(a, err, want ? "expects a function name" : "takes no arguments");
    if (want)
        a->name = argv[optind];
    return 0;
}

static const struct option deploy_opts[] = {
    COMMON_OPTS,
    {"file", required_argument, NULL, 'f'},
    {"dir", required_argument, NULL, 'D'},
    {"env", required_argument, NULL, 'e'},
    {"cmd", required_argument, NULL, OPT_FIRST_KEY + 0},
    {"protocol", required_argument, NULL, OPT_FIRST_KEY + 1},
    {"health", required_argument, NULL, OPT_FIRST_KEY + 2},
    {"health-tcp", no_argument, NULL, OPT_FIRST_KEY + 3},
    {"port", required_argument, NULL, OPT_FIRST_KEY + 4},
    {"memory", required_argument, NULL, OPT_FIRST_KEY + 5},
    {"cpu", required_argument, NULL, OPT_FIRST_KEY + 6},
    {"pids", required_argument, NULL, OPT_FIRST_KEY + 7},
    {"timeout", required_argument, NULL, OPT_FIRST_KEY + 8},
    {"idle-timeout", required_argument, NULL, OPT_FIRST_KEY + 9},
    {"cold-start-timeout", required_argument, NULL, OPT_FIRST_KEY + 10},
    {"max-body", required_argument, NULL, OPT_FIRST_KEY + 11},
    {"concurrency", required_argument, NULL, OPT_FIRST_KEY + 12},
    {"min-instances", required_argument, NULL, OPT_FIRST_KEY + 13},
    {"max-instances", required_argument, NULL, OPT_FIRST_KEY + 14},
    {"grpc-service", required_argument, NULL, OPT_FIRST_KEY + 15},
    {"thrift-service", required_argument, NULL, OPT_FIRST_KEY + 16},
    {"max-duration", required_argument, NULL, OPT_FIRST_KEY + 17},
    {"port-env", required_argument, NULL, OPT_FIRST_KEY + 18},
    {"reserved", required_argument, NULL, OPT_FIRST_KEY + 19},
    {"network", required_argument, NULL, OPT_FIRST_KEY + 20},
    {"log-max-bytes", required_argument, NULL, OPT_FIRST_KEY + 21},
    {"log-keep", required_argument, NULL, OPT_FIRST_KEY + 22},
    {"image", required_argument, NULL, OPT_FIRST_KEY + 23},
    {"endpoints-threshold-rps", required_argument, NULL, OPT_FIRST_KEY + 24},
    {NULL, 0, NULL, 0},
};
/* deploy_keys[i] and deploy_flags[i] belong to option OPT_FIRST_KEY + i. */
static const char *const deploy_keys[] = {
    "command",
    "protocol",
    "health.path",
    "health.tcp",
    "port",
    "resources.memory",
    "resources.cpu",
    "resources.pids",
    "timeout",
    "idle_timeout",
    "cold_start_timeout",
    "max_body",
    "concurrency",
    "min_instances",
    "max_instances",
    "grpc_services",
    "thrift_services",
    "max_duration",
    "port_env",
    "reserved",
    "network",
    "logs.max_bytes",
    "logs.keep",
    "image",
    "endpoints.threshold_rps",
};
static const char *const deploy_flags[] = {
    "--cmd",
    "--protocol",
    "--health",
    "--health-tcp",
    "--port",
    "--memory",
    "--cpu",
    "--pids",
    "--timeout",
    "--idle-timeout",
    "--cold-start-timeout",
    "--max-body",
    "--concurrency",
    "--min-instances",
    "--max-instances",
    "--grpc-service",
    "--thrift-service",
    "--max-duration",
    "--port-env",
    "--reserved",
    "--network",
    "--log-max-bytes",
    "--log-keep",
    "--image",
    "--endpoints-threshold-rps",
};
_Static_assert(sizeof(deploy_keys) == sizeof(deploy_flags), "one flag per key");

/* Every value goes through faas_manifest_set on a scratch manifest: a bad one is
 * reported now, by flag, whatever -f holds (the keys are independent). */
static int check_sets(ctl_args_t *a, const char **err)
{
    faas_manifest_t m;
    const char *e = NULL;
    if (faas_manifest_init(&m) != 0)
        return ctl_fail(a, err, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < a->n_sets && rc == 0; i++)
        if (faas_manifest_set(&m, a->sets[i].key, a->sets[i].value, &e) != 0)
            rc = ctl_fail(a, err, "%s \"%.64s\": %s", a->sets[i].flag, a->sets[i].value, e);
    faas_manifest_free(&m);
    return rc;
}

static int parse_deploy(int argc, char **argv, ctl_args_t *a, const char **err)
{
    int c, idx = 0;
    const int nkeys = (int)(sizeof(deploy_keys) / sizeof(deploy_keys[0]));
    while ((c = getopt_long(argc, argv, "hf:e:", deploy_opts, &idx)) != -1) {
        int rc, h = common_opt(a, c, err, &rc);
        if (h == 2)
            return rc;
        if (h == 1)
            continue;
        if (c == 'f')
            a->file = optarg;
        else if (c == 'D')
            a->dir = optarg;
        else if (c == 'e')
            a->sets[a->n_sets++] = (ctl_set_t){"env", optarg, "--env"};
        else if (c >= OPT_FIRST_KEY && c < OPT_FIRST_KEY + nkeys)
            a->sets[a->n_sets++] = (ctl_set_t){deploy_keys[c - OPT_FIRST_KEY], c == OPT_FIRST_KEY + 3 ? "true" : optarg,
                                               deploy_flags[c - OPT_FIRST_KEY]};
        else
            return ctl_fail(a, err, "bad option %.64s", bad_opt(argc, argv, (char[3]){0}));
    }
    if (argc - optind > 1)
        return ctl_fail(a, err, "unexpected argument \"%.64s\"", argv[optind + 1]);
    if (argc - optind == 1) {
        a->name = argv[optind];
        a->sets[a->n_sets++] = (ctl_set_t){"name", a->name, "NAME"};
    }
    if (a->file != NULL && a->file[0] == '\0')
        return ctl_fail(a, err, "-f needs a file name");
    if (a->dir != NULL && a->dir[0] == '\0')
        return ctl_fail(a, err, "--dir needs a directory");
    return check_sets(a, err);
}

static int parse_logs(int argc, char **argv, ctl_args_t *a, const char **err)
{
    static const struct option opts[] = {COMMON_OPTS, {"tail", required_argument, NULL, 'n'}, {NULL, 0, NULL, 0}};
    const char *e;
    int c;
    while ((c = getopt_long(argc, argv, "hn:", opts, NULL)) != -1) {
        int rc, h = common_opt(a, c, err, &rc);
        if (h == 2)
            return rc;
        if (h == 1)
            continue;
        if (c != 'n')
            return ctl_fail(a, err, "bad option %.64s", bad_opt(argc, argv, (char[3]){0}));
        if (faas_parse_uint(optarg, 1000000, &a->tail, &e) != 0)
            return ctl_fail(a, err, "--tail \"%.64s\": %s", optarg, e);
    }
    if (argc - optind != 1)
        return ctl_fail(a, err, "expects a function name");
    a->name = argv[optind];
    return 0;
}

/* An HTTP method is a token (RFC 9110 s5.6.2), kept short. */
static int is_method(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+.^_`|~-") == n;
}

/* "Name: value": a token before the colon, no control bytes but tabs after it
 * (a CR or LF would end the header and start another). */
static int is_header(const char *s)
{
    const char *colon = strchr(s, ':');
    if (colon == NULL || colon == s)
        return 0;
    for (const char *p = s; p < colon; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || strchr("()<>@,;\\\"/[]?={}", *p) != NULL)
            return 0;
    for (const char *p = colon + 1; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    return 1;
}

/* The gateway URL, split for the HTTP client. */
static int parse_gateway(ctl_args_t *a, const char **err)
{
    const char *e = NULL;
    if (faas_http_parse_url(a->gateway, a->gw_host, sizeof(a->gw_host), &a->gw_port, a->gw_prefix, sizeof(a->gw_prefix),
                            &e) != 0)
        return ctl_fail(a, err, "--gateway \"%.64s\": %s", a->gateway, e);
    /* the host goes into the Host header and the prefix into the request line
     * ("" = 127.0.0.1, as the client dials it) */
    if (!faas_printable(a->gw_host) || !faas_printable(a->gw_prefix))
        return ctl_fail(a, err, "--gateway \"%.64s\": spaces or control bytes in the URL", a->gateway);
    return 0;
}

/* The checks that need the operand and every flag. */
static int finish_invoke(ctl_args_t *a, const char **err)
{
    const char *e = NULL;
    if (faas_valid_function_name(a->name, strlen(a->name), &e) != 0)
        return ctl_fail(a, err, "%s", e);
    if (a->base64 && a->grpc_method == NULL)
        return ctl_fail(a, err, "--base64 needs --grpc");
    if (a->async && a->grpc_method != NULL)
        return ctl_fail(a, err, "--async is for HTTP calls only, not --grpc");
    if ((a->callback != NULL || a->json) && !a->async)
        return ctl_fail(a, err, "%s needs --async", a->callback != NULL ? "--callback" : "--json");
    if (a->grpc_method != NULL)
        return 0;
    return parse_gateway(a, err);
}

static int parse_invoke(int argc, char **argv, ctl_args_t *a, const char **err)
{
    static const struct option opts[] = {
        COMMON_OPTS,
        {"data", required_argument, NULL, 'd'},
        {"method", required_argument, NULL, 'X'},
        {"path", required_argument, NULL, 'p'},
        {"header", required_argument, NULL, 'H'},
        {"timeout", required_argument, NULL, 't'},
        {"grpc", required_argument, NULL, 'G'},
        {"base64", no_argument, NULL, 'B'},
        {"grpc-gateway", required_argument, NULL, 'W'},
        {"async", no_argument, NULL, 'A'},
        {"callback", required_argument, NULL, 'C'},
        {"json", no_argument, NULL, 'J'},
        {NULL, 0, NULL, 0},
    };
    const char *e;
    int c;
    while ((c = getopt_long(argc, argv, "hd:X:p:H:t:", opts, NULL)) != -1) {
        int rc, h = common_opt(a, c, err, &rc);
        if (h == 2)
            return rc;
        if (h == 1)
            continue;
        switch (c) {
        case 'd':
            a->data = optarg;
            break;
        case 'X':
            if (!is_method(optarg))
                return ctl_fail(a, err, "method \"%.64s\" is not an HTTP token", optarg);
            a->method = optarg;
            break;
        case 'p':
            if (!faas_printable(optarg))
                return ctl_fail(a, err, "path \"%.64s\" has spaces or control bytes", optarg);
            a->path = optarg;
            break;
        case 'G':
            if (optarg[0] != '/')
                return ctl_fail(a, err, "--grpc \"%.64s\" must be /package.Service/Method", optarg);
            a->grpc_method = optarg;
            break;
        case 'B':
            a->base64 = 1;
            break;
        case 'A':
            a->async = 1;
            break;
        case 'J':
            a->json = 1;
            break;
        case 'C':
            /* it becomes a header line: the gateway judges the URL, this keeps the line whole */
            if ((strncmp(optarg, "http://", 7) != 0 && strncmp(optarg, "https://", 8) != 0) || !faas_printable(optarg))
                return ctl_fail(a, err, "--callback \"%.64s\" must be an http:// or https:// URL", optarg);
            a->callback = optarg;
            break;
        case 'W':
            if (optarg[0] == '\0' || !faas_printable(optarg))
                return ctl_fail(a, err, "--grpc-gateway needs host:port, got \"%.64s\"", optarg);
            a->grpc_gateway = optarg;
            break;
        case 'H':
            if (!is_header(optarg))
                return ctl_fail(a, err, "header \"%.64s\" must be 'Name: value'", optarg);
            a->headers[a->n_headers++] = optarg;
            break;
        case 't':
            e = NULL;
            if (faas_parse_duration_ms(optarg, &a->timeout_ms, &e) != 0 || a->timeout_ms == 0 ||
                a->timeout_ms > INT32_MAX)
                return ctl_fail(a, err, "--timeout \"%.64s\": %s", optarg, e ? e : "must be positive");
            break;
        default:
            return ctl_fail(a, err, "bad option %.64s", bad_opt(argc, argv, (char[3]){0}));
        }
    }
    if (argc - optind != 1)
        return ctl_fail(a, err, "expects a function name");
    a->name = argv[optind];
    return finish_invoke(a, err);
}

/* ---- tasks ---- */

/* What goes into the request path unescaped: the gateway says whether it is an id. */
static int task_id_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 64 && strspn(s, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") == n;
}

static int task_status_ok(const char *s)
{
    static const char *const names[] = {"queued", "running", "succeeded", "failed", "cancelled"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0)
            return 1;
    return 0;
}

enum { T_FUNCTION = 'F', T_STATUS = 'S', T_LIMIT = 'L', T_AFTER = 'a', T_JSON = 'J', T_INCLUDE = 'i', T_TIMEOUT = 't' };

/* Which flags each tasks subcommand takes (the option letters above). */
static const char *task_flags_of(ctl_cmd_t cmd)
{
    switch (cmd) {
    case CTL_TASKS_LIST:
        return "FSLaJ";
    case CTL_TASKS_GET:
    case CTL_TASKS_CANCEL:
        return "J";
    case CTL_TASKS_RESULT:
        return "i";
    default:
        return "ti";
    }
}

static int task_opt(ctl_args_t *a, int c, const char **err)
{
    const char *e = NULL;
    switch (c) {
    case T_FUNCTION:
        if (faas_valid_function_name(optarg, strlen(optarg), &e) != 0)
            return ctl_fail(a, err, "--function \"%.64s\": %s", optarg, e);
        a->function = optarg;
        return 0;
    case T_STATUS:
        if (!task_status_ok(optarg))
            return ctl_fail(a, err, "--status \"%.64s\" must be queued, running, succeeded, failed or cancelled",
                            optarg);
        a->status = optarg;
        return 0;
    case T_LIMIT:
        if (faas_parse_uint(optarg, FAAS_TASK_LIST_LIMIT, &a->limit, &e) != 0 || a->limit == 0)
            return ctl_fail(a, err, "--limit \"%.64s\" must be 1-" FAAS_SPEC_STR(FAAS_TASK_LIST_LIMIT), optarg);
        return 0;
    case T_AFTER:
        if (!task_id_ok(optarg))
            return ctl_fail(a, err, "--after \"%.64s\" must be a task id (32 lowercase hex characters)", optarg);
        a->after = optarg;
        return 0;
    case T_JSON:
        a->json = 1;
        return 0;
    case T_INCLUDE:
        a->include = 1;
        return 0;
    default: /* T_TIMEOUT */
        if (faas_parse_duration_ms(optarg, &a->timeout_ms, &e) != 0 || a->timeout_ms == 0 || a->timeout_ms > INT32_MAX)
            return ctl_fail(a, err, "--timeout \"%.64s\": %s", optarg, e ? e : "must be positive, at most 24 days");
        return 0;
    }
}

/* argv[0] is the subcommand word. */
static int parse_tasks(int argc, char **argv, ctl_args_t *a, const char **err)
{
    static const struct option opts[] = {
        COMMON_OPTS,
        {"function", required_argument, NULL, T_FUNCTION},
        {"status", required_argument, NULL, T_STATUS},
        {"limit", required_argument, NULL, T_LIMIT},
        {"after", required_argument, NULL, T_AFTER},
        {"json", no_argument, NULL, T_JSON},
        {"include", no_argument, NULL, T_INCLUDE},
        {"timeout", required_argument, NULL, T_TIMEOUT},
        {NULL, 0, NULL, 0},
    };
    const char *mine = task_flags_of(a->cmd);
    int c;
    a->timeout_ms = 3600000; /* wait: long enough for most tasks, yet the tool never hangs for ever */
    while ((c = getopt_long(argc, argv, "hit:", opts, NULL)) != -1) {
        int rc, h = common_opt(a, c, err, &rc);
        if (h == 2)
            return rc;
        if (h == 1)
            continue;
        if (c == '?' || c == ':')
            return ctl_fail(a, err, "bad option %.64s", bad_opt(argc, argv, (char[3]){0}));
        if (strchr(mine, c) == NULL) { /* a tasks flag, of another subcommand */
            size_t i = 0;
            while (opts[i].name != NULL && opts[i].val != c)
                i++;
            return ctl_fail(a, err, "--%s does not apply here", opts[i].name ? opts[i].name : "?");
        }
        if (task_opt(a, c, err) != 0)
            return -1;
    }
    int want = a->cmd == CTL_TASKS_LIST ? 0 : 1;
    if (argc - optind != want)
        return ctl_fail(a, err, want ? "expects a task id" : "takes no arguments");
    if (want) {
        a->task_id = argv[optind];
        if (!task_id_ok(a->task_id))
            return ctl_fail(a, err, "task id \"%.64s\" must be 32 lowercase hex characters", a->task_id);
    }
    return parse_gateway(a, err);
}

/* `tasks` alone, or `tasks --help`: the group's help; else the subcommand's flags. */
static int parse_tasks_word(int argc, char **argv, ctl_args_t *a, const char **err)
{
    if (argc < 2)
        return ctl_fail(a, err, "expects a subcommand: list, get, result, cancel or wait");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)
        return 1;
    for (size_t i = 0; i < sizeof(ctl_task_commands) / sizeof(ctl_task_commands[0]); i++)
        if (strcmp(argv[1], ctl_task_commands[i].name) == 0) {
            a->cmd = ctl_task_commands[i].cmd;
            return parse_tasks(argc - 1, argv + 1, a, err);
        }
    return ctl_fail(a, err, "unknown subcommand \"%.64s\" (list, get, result, cancel or wait)", argv[1]);
}

static void ctl_defaults(ctl_args_t *a, const ctl_env_t *env)
{
    memset(a, 0, sizeof(*a));
    a->discovery = env && env->discovery && env->discovery[0] ? env->discovery : "127.0.0.1:7100";
    a->gateway = env && env->gateway && env->gateway[0] ? env->gateway : "http://127.0.0.1:8080";
    a->grpc_gateway = env && env->grpc_gateway && env->grpc_gateway[0] ? env->grpc_gateway : "127.0.0.1:8081";
    a->path = "/";
    a->timeout_ms = 60000;
    a->tail = 100;
}

/* The command's flags; argv[0] is the command word. */
static int parse_command(int argc, char **argv, ctl_args_t *a, const char **err)
{
    /* every flag adds at most one set or header, the operand one more */
    a->sets = calloc((size_t)argc + 1, sizeof(*a->sets));
    a->headers = calloc((size_t)argc + 1, sizeof(*a->headers));
    if (a->sets == NULL || a->headers == NULL)
        return ctl_fail(a, err, "out of memory");
    optind = 0; /* re-initialise getopt for the command's own flags */
    switch (a->cmd) {
    case CTL_DEPLOY:
        return parse_deploy(argc, argv, a, err);
    case CTL_LIST:
        return parse_simple(argc, argv, a, err, 0);
    case CTL_GET:
    case CTL_DELETE:
    case CTL_INSTANCES:
        return parse_simple(argc, argv, a, err, 1);
    case CTL_INVOKE:
        return parse_invoke(argc, argv, a, err);
    case CTL_LOGS:
        return parse_logs(argc, argv, a, err);
    case CTL_TASKS:
        return parse_tasks_word(argc, argv, a, err);
    default:
        return ctl_fail(a, err, "no command");
    }
}

int ctl_args_parse(int argc, char **argv, const ctl_env_t *env, ctl_args_t *a, const char **err)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    ctl_defaults(a, env);
    optind = 0; /* getopt keeps state between calls: 0 re-initialises it fully */
    opterr = 0; /* and must not print: the caller prints *err */
    int c;
    /* '+': stop at the command word; its flags are parsed with the command's table */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int rc, h = common_opt(a, c, err, &rc);
        if (h == 2)
            return rc;
        if (h == 0)
            return ctl_fail(a, err, "bad option %.64s", bad_opt(argc, argv, (char[3]){0}));
    }
    if (optind >= argc)
        return ctl_fail(a, err, "no command given");
    const char *word = argv[optind];
    if (strcmp(word, "help") == 0)
        return 1;
    for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++)
        if (strcmp(word, ctl_commands[i].name) == 0) {
            a->cmd = ctl_commands[i].cmd;
            return parse_command(argc - optind, argv + optind, a, err);
        }
    return ctl_fail(a, err, "unknown command \"%.64s\"", word);
}

void ctl_args_free(ctl_args_t *a)
{
    free(a->sets);
    free((void *)a->headers);
    a->sets = NULL;
    a->headers = NULL;
    a->n_sets = a->n_headers = 0;
}
