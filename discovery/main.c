/* faas-discovery: the durable function registry, code artifacts, soft-state instance
 * registry with leases and watch streams. See docs/architecture.md "Control plane" and,
 * for several discoveries on etcd, docs/multihost-etcd.md. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "discovery/args.h"
#include "discovery/discovery.h"

/* What /metrics reads: the service's counters and the rpc server's refusals. */
typedef struct {
    disc_service_t *svc;
    faas_rpc_server_t *srv;
} metrics_src_t;

/* /metrics and /healthz stay open: they say nothing a token protects, and scrapers
 * and probes carry no credential (docs/security.md). */
static void http_handler(void *ud, const char *path, int *status, char **body, size_t *len, const char **ctype)
{
    metrics_src_t *m = ud;
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
    disc_service_metrics(m->svc, f);
    char text[512];
    int off = 0;
    faas_rpc_server_refused_metrics(m->srv, "faas_discovery_unauthenticated_total", text, sizeof(text), &off);
    fputs(text, f);
    fclose(f);
    *status = 200;
    *ctype = "text/plain; version=0.0.4; charset=utf-8";
}

/* The platform token: FAAS_TOKEN, else the token file, made at the first start so a
 * fresh platform is protected with no extra step. 0 or -1 (logged). */
static int load_token(const disc_args_t *o, faas_token_t *t)
{
    char path[4096], err[512];
    const char *src = NULL;
    const char *env = getenv(FAAS_TOKEN_ENV);
    snprintf(path, sizeof(path), "%s/token", o->state_dir);
    const char *file = o->token_file ? o->token_file : path;
    int made = 0;
    if ((env == NULL || env[0] == '\0') && (made = faas_token_create_file(file, err, sizeof(err))) < 0)
        goto fail;
    if (faas_token_load(env, file, file, t, &src, err, sizeof(err)) != 0)
        goto fail;
    FAAS_INFO("event=token source=%s created=%d", src, made);
    return 0;
fail:
    FAAS_ERROR("event=start_failed msg=\"%s\"", err);
    return -1;
}

/* The function store --store names; NULL (logged) if it cannot be opened or reached. */
static disc_store_t *open_store(const disc_args_t *o)
{
    char errbuf[512];
    const char *err = NULL;
    disc_store_t *st = o->store_etcd
                           ? disc_store_open_etcd(o->state_dir, o->store, o->etcd_prefix, errbuf, sizeof(errbuf))
                           : disc_store_open(o->state_dir, &err);
    if (st == NULL)
        FAAS_ERROR("event=start_failed state_dir=%s store=%s msg=\"%s\"", o->state_dir, o->store,
                   o->store_etcd ? errbuf : err);
    return st;
}

/* With etcd, the address other discoveries fetch this one's artifacts at: --advertise,
 * else --listen with the port it bound (port 0 picks one). Called before the server
 * starts (grpc_port 0: set only if already known, so the first upload is recorded)
 * and after it bound its port. */
static void set_advertise(const disc_args_t *o, disc_store_t *st, int grpc_port)
{
    char adv[300], host[256];
    uint16_t port = 0;
    const char *e;
    if (!o->store_etcd)
        return;
    if (o->advertise != NULL) {
        snprintf(adv, sizeof(adv), "%s", o->advertise);
    } else {
        faas_parse_hostport(o->listen, host, sizeof(host), &port, &e);
        if (grpc_port == 0 && (grpc_port = port) == 0)
            return;
        snprintf(adv, sizeof(adv), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, grpc_port);
    }
    disc_store_set_advertise(st, adv);
}

/* Peer artifact fetches carry the platform token, and trust the discoveries' own
 * certificate when they serve TLS (one certificate for the discovery service). */
static int configure_client(const disc_args_t *o, const faas_token_t *token)
{
    char err[512];
    if (!o->store_etcd)
        return 0;
    if (faas_rpc_client_configure(token, o->tls_cert, err, sizeof(err)) != 0) {
        FAAS_ERROR("event=start_failed msg=\"%s\"", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    disc_args_t o;
    const char *err = NULL;
    int rc = disc_args_parse(argc, argv, &o, &err);
    if (rc == 1) {
        fputs(disc_args_usage, stdout);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "faas-discovery: %s (see --help)\n", err);
        return 2;
    }
    faas_log_init("discovery");

    /* every thread (grpc's included) inherits this mask; main takes the signals by sigwait */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int exit_code = 1, grpc_port = 0, metrics_port = 0;
    disc_registry_t *reg = NULL;
    disc_service_t *svc = NULL;
    faas_rpc_server_t *srv = NULL;
    disc_httpd_t *httpd = NULL;
    disc_tasks_t *tasks = NULL;
    faas_token_t token;
    char errbuf[512];
    disc_store_t *st = open_store(&o);
    if (st == NULL)
        return 1;
    disc_store_set_max_fetch(st, o.max_artifact);
    if (load_token(&o, &token) != 0 || configure_client(&o, &token) != 0)
        goto out;
    /* With --store etcd the async tasks live there too, under the same prefix, so every
     * discovery serves one queue (docs/async.md, "The task store on etcd"). On SQLite,
     * NORMAL like the function store: in WAL mode a commit survives a crash of the
     * process; only an OS crash or power loss can take the last commits. */
    tasks = o.store_etcd ? disc_task_open_etcd(disc_store_etcd(st), o.etcd_prefix, &err)
                         : disc_task_open(o.state_dir, DISC_TASK_SYNC_NORMAL, &err);
    if (tasks == NULL) {
        FAAS_ERROR("event=start_failed state_dir=%s msg=\"%s\"", o.state_dir, err);
        goto out;
    }
    disc_task_configure(tasks, &(disc_task_config_t){o.task_retention_ms, o.callback_attempts, o.callback_backoff_ms});
    if ((reg = disc_registry_new()) == NULL || (svc = disc_service_new(st, reg, tasks, o.max_artifact)) == NULL)
        goto out;
    /* on etcd this also starts the watch that keeps the registry on every change */
    int nfn = disc_store_follow(st, reg, errbuf, sizeof(errbuf));
    if (nfn < 0) {
        FAAS_ERROR("event=start_failed store=%s msg=\"%s\"", o.store, errbuf);
        goto out;
    }
    if (disc_registry_start_reaper(reg) != 0 || disc_task_start_reaper(tasks) != 0) {
        FAAS_ERROR("event=start_failed msg=\"cannot start the reapers\"");
        goto out;
    }
    set_advertise(&o, st, 0);
    size_t nm;
    const faas_rpc_method_t *methods = disc_service_methods(svc, &nm);
    faas_rpc_server_opts_t ro = {.token = &token, .tls_cert = o.tls_cert, .tls_key = o.tls_key};
    if ((srv = faas_rpc_server_start_opts(o.listen, &grpc_port, methods, nm, &ro, errbuf, sizeof(errbuf), &err)) ==
        NULL) {
        FAAS_ERROR("event=start_failed listen=%s msg=\"%s\"", o.listen, err);
        goto out;
    }
    set_advertise(&o, st, grpc_port);
    metrics_src_t msrc = {svc, srv};
    if (strcmp(o.metrics_listen, "off") != 0 &&
        (httpd = disc_httpd_start(o.metrics_listen, http_handler, &msrc, &metrics_port, &err)) == NULL) {
        FAAS_ERROR("event=start_failed metrics_listen=%s msg=\"%s\"", o.metrics_listen, err);
        goto out;
    }
    FAAS_INFO("event=listening grpc_port=%d metrics_port=%d state_dir=%s store=%s functions=%d tls=%d", grpc_port,
              metrics_port, o.state_dir, disc_store_backend(st), nfn, o.tls_cert != NULL);
    if (o.store_etcd)
        FAAS_INFO("event=etcd_store endpoints=%s prefix=%s advertise=%s", o.store, o.etcd_prefix,
                  disc_store_advertise(st));
    int sig = 0;
    sigwait(&sigs, &sig);
    FAAS_INFO("event=stopping signal=%d", sig);
    exit_code = 0;
out:
    disc_httpd_stop(httpd);
    faas_rpc_server_stop(srv); /* ends the watch streams, which unsubscribe */
    if (reg)
        disc_registry_stop_reaper(reg);
    if (tasks)
        disc_task_stop_reaper(tasks);
    disc_service_free(svc); /* answers what is queued: it still uses the store */
    disc_task_close(tasks); /* on etcd it uses the store's client: before the store */
    disc_store_close(st);   /* stops the etcd watch before the registry it feeds goes */
    disc_registry_free(reg);
    if (exit_code == 0)
        FAAS_INFO("event=stopped");
    return exit_code;
}
