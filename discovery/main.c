/* faas-discovery: the durable function registry, code artifacts, soft-state instance
 * registry with leases and watch streams. See docs/architecture.md "Control plane". */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "discovery/discovery.h"

typedef struct {
    const char *listen, *state_dir, *metrics_listen;
    uint64_t max_artifact;
} opts_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: faas-discovery [options]\n"
               "  --listen ADDR              gRPC address (default 127.0.0.1:7100)\n"
               "  --state-dir DIR            SQLite db and code artifacts (default ./.faas/discovery)\n"
               "  --metrics-listen ADDR      HTTP /metrics and /healthz (default 127.0.0.1:7101; \"off\" disables)\n"
               "  --max-artifact-bytes N     largest code upload (default 268435456)\n"
               "  --help                     this text\n");
}

static int bad_flag(const char *msg, const char *arg)
{
    fprintf(stderr, "faas-discovery: %s%s%s (see --help)\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* 0 to run, 1 after --help, 2 on a bad flag (message printed). */
static int parse_flags(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},         {"state-dir", required_argument, NULL, 's'},
        {"metrics-listen", required_argument, NULL, 'm'}, {"max-artifact-bytes", required_argument, NULL, 'x'},
        {"help", no_argument, NULL, 'h'},                 {NULL, 0, NULL, 0},
    };
    char host[256];
    uint16_t port;
    const char *err;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (faas_parse_hostport(optarg, host, sizeof(host), &port, &err) != 0)
                return bad_flag("--listen needs host:port", optarg);
            o->listen = optarg;
            break;
        case 's':
            if (optarg[0] == '\0')
                return bad_flag("--state-dir must not be empty", NULL);
            o->state_dir = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "off") != 0 && faas_parse_hostport(optarg, host, sizeof(host), &port, &err) != 0)
                return bad_flag("--metrics-listen needs host:port or off", optarg);
            o->metrics_listen = optarg;
            break;
        case 'x': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || end == optarg || v == 0 || optarg[0] == '-')
                return bad_flag("--max-artifact-bytes needs a positive number", optarg);
            o->max_artifact = v;
            break;
        }
        case 'h':
            usage(stdout);
            return 1;
        default:
            return bad_flag("unknown or incomplete option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_flag("unexpected argument", argv[optind]);
    return 0;
}

static void http_handler(void *ud, const char *path, int *status, char **body, size_t *len, const char **ctype)
{
    if (strcmp(path, "/healthz") == 0) {
        *status = 200;
        *body = strdup("ok\n");
        *len = 3;
        return;
    }
    if (strcmp(path, "/metrics") != 0) {
        *status = 404;
        return;
    }
    FILE *f = open_memstream(body, len);
    if (f == NULL) {
        *status = 500;
        return;
    }
    disc_service_metrics(ud, f);
    fclose(f);
    *status = 200;
    *ctype = "text/plain; version=0.0.4; charset=utf-8";
}

/* Specs survive restarts in SQLite; the registry's cache starts from them. */
static int load_functions(disc_store_t *st, disc_registry_t *reg)
{
    Faas__FunctionSpec **list;
    size_t n;
    if (disc_store_list(st, &list, &n) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        disc_registry_function_put(reg, list[i]);
    disc_store_free_list(list, n);
    return (int)n;
}

int main(int argc, char **argv)
{
    opts_t o = {"127.0.0.1:7100", "./.faas/discovery", "127.0.0.1:7101", 256ull << 20};
    int rc = parse_flags(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    faas_log_init("discovery");

    /* every thread (grpc's included) inherits this mask; main takes the signals by sigwait */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *err = NULL;
    int exit_code = 1, grpc_port = 0, metrics_port = 0;
    disc_registry_t *reg = NULL;
    disc_service_t *svc = NULL;
    faas_rpc_server_t *srv = NULL;
    disc_httpd_t *httpd = NULL;
    disc_store_t *st = disc_store_open(o.state_dir, &err);
    if (st == NULL) {
        FAAS_ERROR("event=start_failed state_dir=%s msg=\"%s\"", o.state_dir, err);
        return 1;
    }
    if ((reg = disc_registry_new()) == NULL || (svc = disc_service_new(st, reg, o.max_artifact)) == NULL)
        goto out;
    int nfn = load_functions(st, reg);
    if (nfn < 0 || disc_registry_start_reaper(reg) != 0) {
        FAAS_ERROR("event=start_failed msg=\"cannot load functions or start the reaper\"");
        goto out;
    }
    size_t nm;
    const faas_rpc_method_t *methods = disc_service_methods(svc, &nm);
    if ((srv = faas_rpc_server_start(o.listen, &grpc_port, methods, nm, &err)) == NULL) {
        FAAS_ERROR("event=start_failed listen=%s msg=\"%s\"", o.listen, err);
        goto out;
    }
    if (strcmp(o.metrics_listen, "off") != 0 &&
        (httpd = disc_httpd_start(o.metrics_listen, http_handler, svc, &metrics_port, &err)) == NULL) {
        FAAS_ERROR("event=start_failed metrics_listen=%s msg=\"%s\"", o.metrics_listen, err);
        goto out;
    }
    FAAS_INFO("event=listening grpc_port=%d metrics_port=%d state_dir=%s functions=%d", grpc_port, metrics_port,
              o.state_dir, nfn);
    int sig = 0;
    sigwait(&sigs, &sig);
    FAAS_INFO("event=stopping signal=%d", sig);
    exit_code = 0;
out:
    disc_httpd_stop(httpd);
    faas_rpc_server_stop(srv); /* ends the watch streams, which unsubscribe */
    if (reg)
        disc_registry_stop_reaper(reg);
    disc_service_free(svc);
    disc_registry_free(reg);
    disc_store_close(st);
    if (exit_code == 0)
        FAAS_INFO("event=stopped");
    return exit_code;
}
