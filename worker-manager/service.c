/* service.c - the rpc surface, the discovery lease and /metrics of faas-workermgr.
 *
 * rpc handlers only post work to the pod thread or read the snapshot it
 * publishes; the heartbeat and metrics responders are blocking threads. */
#define WM_STATE
#include "worker-manager/internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "worker-manager/runq.h"

static void reply_msg(faas_rpc_call_t *call, const ProtobufCMessage *m)
{
    size_t len;
    uint8_t *buf = faas_pb_pack(m, &len);
    if (buf)
        faas_rpc_reply(call, buf, len);
    else
        faas_rpc_fail(call, FAAS_GRPC_INTERNAL, "out of memory");
    free(buf);
}

static void fill_instance(wm_t *wm, Faas__Instance *in, wm_inst_snap_t *s)
{
    faas__instance__init(in);
    in->id = s->id;
    in->function = s->function;
    in->version = s->version;
    in->endpoint = s->endpoint;
    in->worker_id = (char *)wm->cfg->id;
    in->state = FAAS__INSTANCE__STATE__READY;
    in->pid = s->pid;
    in->started_unix_ms = s->started_ms;
    in->concurrency = s->concurrency;
    in->kind = s->reserved ? FAAS__INSTANCE__KIND__RESERVED : FAAS__INSTANCE__KIND__ELASTIC;
    in->overloaded = s->overloaded;
    in->direct_endpoint = s->direct_endpoint;
    in->direct_calls = s->direct_calls;
}

void wm_answer_list(wm_t *wm, faas_rpc_call_t *call, const uint8_t *req, size_t len)
{
    Faas__FunctionName *fn = faas__function_name__unpack(NULL, len, req);
    const char *name = fn ? fn->name : "";
    pthread_mutex_lock(&wm->mu);
    size_t n = wm->n_snap;
    Faas__Instance *ins = calloc(n ? n : 1, sizeof(*ins));
    Faas__Instance **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    Faas__InstanceList list = FAAS__INSTANCE_LIST__INIT;
    for (size_t i = 0; ins && ptrs && i < n; i++) {
        if (name[0] && strcmp(name, wm->snap[i].function) != 0)
            continue;
        fill_instance(wm, &ins[list.n_instances], &wm->snap[i]);
        ptrs[list.n_instances] = &ins[list.n_instances];
        list.n_instances++;
    }
    list.instances = ptrs;
    reply_msg(call, &list.base); /* packs before the snapshot can change */
    pthread_mutex_unlock(&wm->mu);
    free(ins);
    free(ptrs);
    if (fn)
        faas__function_name__free_unpacked(fn, NULL);
}

void wm_answer_stats(wm_t *wm, faas_rpc_call_t *call)
{
    Faas__WorkerStats st = FAAS__WORKER_STATS__INIT;
    pthread_mutex_lock(&wm->mu);
    st.acquisitions = wm->acquisitions;
    st.cold_starts = wm->cold_starts;
    st.failures = wm->failures;
    st.pool_ready = wm->pool_ready;
    st.instances = (uint32_t)wm->n_snap;
    pthread_mutex_unlock(&wm->mu);
    reply_msg(call, &st.base);
}

void wm_answer_logs(wm_t *wm, faas_rpc_call_t *call, const uint8_t *req, size_t len)
{
    Faas__LogsRequest *r = faas__logs_request__unpack(NULL, len, req);
    const char *err = "Logs needs a function name";
    if (r == NULL || faas_valid_function_name(r->function, strlen(r->function), &err) != 0) {
        faas_rpc_fail(call, FAAS_GRPC_INVALID_ARGUMENT, err);
        if (r)
            faas__logs_request__free_unpacked(r, NULL);
        return;
    }
    char path[PATH_MAX];
    wm_fmt(path, sizeof(path), "%s/logs/%s.log", wm->cfg->state_dir, r->function);
    unsigned tail = r->tail ? (r->tail > 10000 ? 10000 : r->tail) : 100;
    char **lines;
    size_t n;
    if (wm_tail_log(path, tail, &lines, &n) != 0) {
        faas_rpc_fail(call, FAAS_GRPC_INTERNAL, "cannot read the function log");
    } else {
        Faas__LogLines ll = FAAS__LOG_LINES__INIT;
        ll.lines = lines;
        ll.n_lines = n;
        reply_msg(call, &ll.base);
        for (size_t i = 0; i < n; i++)
            free(lines[i]);
        free(lines);
    }
    faas__logs_request__free_unpacked(r, NULL);
}

size_t wm_metrics_text(wm_t *wm, char *buf, size_t cap)
{
    pthread_mutex_lock(&wm->mu);
    int n = snprintf(buf, cap,
                     "# HELP faas_wm_acquisitions_total Acquire calls answered with a ready instance.\n"
                     "# TYPE faas_wm_acquisitions_total counter\nfaas_wm_acquisitions_total %llu\n"
                     "# HELP faas_wm_cold_starts_total Warm pods specialized for a function.\n"
                     "# TYPE faas_wm_cold_starts_total counter\nfaas_wm_cold_starts_total %llu\n"
                     "# HELP faas_wm_acquire_failures_total Cold starts that failed or timed out.\n"
                     "# TYPE faas_wm_acquire_failures_total counter\nfaas_wm_acquire_failures_total %llu\n"
                     "# HELP faas_wm_pods_spawned_total Pods cloned for the warm pool.\n"
                     "# TYPE faas_wm_pods_spawned_total counter\nfaas_wm_pods_spawned_total %llu\n"
                     "# HELP faas_wm_pool_ready Warm pods waiting to be specialized.\n"
                     "# TYPE faas_wm_pool_ready gauge\nfaas_wm_pool_ready %u\n"
                     "# HELP faas_wm_pool_starting Pods started whose agent has not said hello yet.\n"
                     "# TYPE faas_wm_pool_starting gauge\nfaas_wm_pool_starting %u\n"
                     "# HELP faas_wm_pool_size Warm pods this worker keeps (--pool-size).\n"
                     "# TYPE faas_wm_pool_size gauge\nfaas_wm_pool_size %u\n"
                     "# HELP faas_wm_pool_python Warm pods with a Python zygote this worker keeps (--pool-python; 0 "
                     "when --python is not an executable file).\n"
                     "# TYPE faas_wm_pool_python gauge\nfaas_wm_pool_python %u\n"
                     "# HELP faas_wm_pods_warm Warm pods by kind: python when the agent said it holds a Python "
                     "zygote, else generic.\n"
                     "# TYPE faas_wm_pods_warm gauge\nfaas_wm_pods_warm{kind=\"generic\"} %u\n"
                     "faas_wm_pods_warm{kind=\"python\"} %u\n"
                     "# HELP faas_wm_zygote_starts_total Cold starts whose user server ran in a pod's Python zygote.\n"
                     "# TYPE faas_wm_zygote_starts_total counter\nfaas_wm_zygote_starts_total %llu\n"
                     "# HELP faas_wm_instances Ready function instances on this worker.\n"
                     "# TYPE faas_wm_instances gauge\nfaas_wm_instances %zu\n"
                     "# HELP faas_wm_last_acquire_seconds Duration of the last successful cold start.\n"
                     "# TYPE faas_wm_last_acquire_seconds gauge\nfaas_wm_last_acquire_seconds %.6f\n"
                     "# HELP faas_log_dropped_lines_total Log lines dropped by the per-site rate limit.\n"
                     "# TYPE faas_log_dropped_lines_total counter\nfaas_log_dropped_lines_total %llu\n",
                     (unsigned long long)wm->acquisitions, (unsigned long long)wm->cold_starts,
                     (unsigned long long)wm->failures, (unsigned long long)wm->pods_spawned, wm->pool_ready,
                     wm->pool_starting, wm->cfg->pool_size, wm->cfg->pool_python, wm->pool_warm[WM_POD_GENERIC],
                     wm->pool_warm[WM_POD_PYTHON], (unsigned long long)wm->zygote_starts, wm->n_snap,
                     (double)wm->last_total_us / 1e6, (unsigned long long)faas_log_dropped_total());
    wm_scale_metrics(&wm->scale, buf, cap, &n);
    faas_rpc_server_refused_metrics(wm->rpc, "faas_wm_unauthenticated_total", buf, cap, &n);
    wm_denials_metrics(&wm->denials, buf, cap, &n);
    pthread_mutex_unlock(&wm->mu);
    wm_log_metrics(buf, cap, &n);
    wm_image_metrics(buf, cap, &n);
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

/* Caller holds mu. */
uint8_t *wm_lease_pack(wm_t *wm, int empty, size_t *len)
{
    Faas__Worker w = FAAS__WORKER__INIT;
    w.id = (char *)wm->cfg->id;
    w.address = (char *)wm->cfg->advertise;
    w.pool_size = wm->cfg->pool_size + wm->cfg->pool_python; /* every warm pod it keeps, as pool_ready counts */
    w.pool_ready = empty ? 0 : wm->pool_ready;
    w.cpus_milli = wm->load.cpus_milli;
    w.cpu_free_milli = wm->load.cpu_free_milli;
    w.mem_total_bytes = wm->load.mem_total_bytes;
    w.mem_free_bytes = wm->load.mem_free_bytes;
    Faas__LeaseRenewal lr = FAAS__LEASE_RENEWAL__INIT;
    lr.worker = &w;
    lr.ttl_ms = empty ? 1 : wm->cfg->lease_ttl_ms;
    size_t n = empty ? 0 : wm->n_snap;
    Faas__Instance *ins = calloc(n ? n : 1, sizeof(*ins));
    Faas__Instance **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (ins == NULL || ptrs == NULL)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        fill_instance(wm, &ins[i], &wm->snap[i]);
        ptrs[i] = &ins[i];
    }
    lr.instances = ptrs;
    lr.n_instances = n;
    Faas__FunctionError errs[WM_MAX_FN_ERRORS], *eptrs[WM_MAX_FN_ERRORS];
    for (size_t i = 0; !empty && i < wm->n_errors; i++) {
        faas__function_error__init(&errs[i]);
        errs[i].function = wm->errors[i].function;
        errs[i].version = wm->errors[i].version;
        errs[i].message = wm->errors[i].message;
        errs[i].unix_ms = wm->errors[i].unix_ms;
        eptrs[lr.n_errors++] = &errs[i];
    }
    lr.errors = eptrs;
    uint8_t *buf = faas_pb_pack(&lr.base, len);
    free(ins);
    free(ptrs);
    return buf;
}

/* A lease for worker id with no instances that ends at once: what this process sends
 * for itself at a clean shutdown, and for its crashed predecessor at start, so the
 * gateways stop sending to that run's endpoints now, not when its lease lapses. */
static int deregister(const wm_config_t *c, faas_rpc_channel_t *ch, const char *id, char *err, size_t errcap)
{
    Faas__Worker w = FAAS__WORKER__INIT;
    w.id = (char *)id;
    w.address = (char *)c->advertise;
    Faas__LeaseRenewal lr = FAAS__LEASE_RENEWAL__INIT;
    lr.worker = &w;
    lr.ttl_ms = 1;
    size_t len, rl;
    uint8_t *req = faas_pb_pack(&lr.base, &len), *resp = NULL;
    if (req == NULL)
        return wm_fmt(err, errcap, "out of memory"), -1;
    int rc = faas_rpc_unary(ch, "/faas.Discovery/Heartbeat", req, len, 2000, &resp, &rl, err, errcap);
    free(req);
    free(resp);
    return rc;
}

/* The previous run's id prev (from <state>/worker.id), unless it is ours: its lease is
 * ended at once, so its instances leave discovery now. */
static void deregister_predecessor(const wm_config_t *c, faas_rpc_channel_t *ch, const char *prev)
{
    if (prev[0] == '\0' || strcmp(prev, c->id) == 0)
        return;
    char err[256] = "";
    int rc = deregister(c, ch, prev, err, sizeof(err));
    if (rc == 0)
        FAAS_INFO("event=predecessor_deregistered id=%s", prev);
    else /* its lease still lapses on its own: slower, not wrong */
        FAAS_WARN("event=predecessor_deregister_failed id=%s rc=%d err=\"%s\"", prev, rc, err);
}

/* ---- heartbeat thread ---- */

/* One discovery's lease sender. Every discovery holds leases in its own memory, so each
 * gets every renewal; each has its own thread and channel so that a dead or slow one
 * holds up only its own renewals (each bounded by its deadline), never the others'. */
typedef struct {
    wm_t *wm;
    const char *addr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint8_t *req; /* the newest lease not sent yet (an older unsent one is dropped) */
    size_t len;
    int stop;
    pthread_t th;
} hb_sender_t;

static void sender_send(hb_sender_t *s, faas_rpc_channel_t *ch, uint8_t *req, size_t len, int *ok)
{
    const wm_config_t *c = s->wm->cfg;
    uint8_t *resp = NULL;
    size_t rl;
    char err[256] = "";
    int tmo = (int)(c->lease_ttl_ms / 3 > 1000 ? c->lease_ttl_ms / 3 : 1000);
    int rc = ch ? faas_rpc_unary(ch, "/faas.Discovery/Heartbeat", req, len, tmo, &resp, &rl, err, sizeof(err)) : -1;
    free(resp);
    if (rc != 0 && *ok)
        FAAS_WARN("event=heartbeat_failed discovery=%s rc=%d err=\"%s\"", s->addr, rc, err);
    else if (rc == 0 && !*ok)
        FAAS_INFO("event=heartbeat_ok discovery=%s", s->addr);
    *ok = rc == 0;
}

static void *sender_main(void *arg)
{
    hb_sender_t *s = arg;
    faas_rpc_channel_t *ch = faas_rpc_channel_open(s->addr);
    int ok = 1;
    /* the first thing this WM tells each discovery (before its first renewal) */
    if (ch != NULL)
        deregister_predecessor(s->wm->cfg, ch, s->wm->prev_id);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (s->req == NULL && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        uint8_t *req = s->req;
        size_t len = s->len;
        s->req = NULL;
        pthread_mutex_unlock(&s->mu);
        if (req == NULL)
            break; /* stopping, and the last lease (the deregistration) is sent */
        sender_send(s, ch, req, len, &ok);
        free(req);
    }
    if (ch != NULL)
        faas_rpc_channel_close(ch);
    return NULL;
}

/* Hands a copy of the packed lease to every sender. */
static void senders_post(hb_sender_t *ss, unsigned n, const uint8_t *req, size_t len)
{
    for (unsigned i = 0; i < n; i++) {
        uint8_t *cp = malloc(len ? len : 1);
        if (cp == NULL)
            continue;
        memcpy(cp, req, len);
        pthread_mutex_lock(&ss[i].mu);
        free(ss[i].req);
        ss[i].req = cp;
        ss[i].len = len;
        pthread_cond_signal(&ss[i].cv);
        pthread_mutex_unlock(&ss[i].mu);
    }
}

static void heartbeat_once(wm_t *wm, hb_sender_t *ss, unsigned n, wm_load_sampler_t *ls, int empty)
{
    size_t len;
    wm_load_t load;
    pthread_mutex_lock(&wm->mu);
    load = wm->load;
    pthread_mutex_unlock(&wm->mu);
    /* read outside mu (two small procfs reads); a failed read keeps the last figures */
    (void)wm_load_sample(ls, wm->cfg->lease_ttl_ms, &load);
    pthread_mutex_lock(&wm->mu);
    wm->load = load;
    uint8_t *req = wm_lease_pack(wm, empty, &len);
    pthread_mutex_unlock(&wm->mu);
    if (req == NULL)
        return;
    senders_post(ss, n, req, len);
    free(req);
}

/* Starts one sender per --discovery address; returns how many run. */
static unsigned senders_start(wm_t *wm, hb_sender_t *ss)
{
    unsigned n = 0;
    for (unsigned i = 0; i < wm->cfg->n_discovery && i < WM_MAX_DISCOVERY; i++) {
        hb_sender_t *s = &ss[n];
        memset(s, 0, sizeof(*s));
        s->wm = wm;
        s->addr = wm->cfg->discoveries[i];
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cv, NULL);
        if (pthread_create(&s->th, NULL, sender_main, s) != 0) {
            FAAS_WARN("event=heartbeat_sender_failed discovery=%s", s->addr);
            pthread_mutex_destroy(&s->mu);
            pthread_cond_destroy(&s->cv);
            continue;
        }
        n++;
    }
    return n;
}

/* Lets every sender send what it holds (the deregistration) and joins them all: the
 * wait is the slowest one's deadline, not their sum. */
static void senders_stop(hb_sender_t *ss, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        pthread_mutex_lock(&ss[i].mu);
        ss[i].stop = 1;
        pthread_cond_signal(&ss[i].cv);
        pthread_mutex_unlock(&ss[i].mu);
    }
    for (unsigned i = 0; i < n; i++) {
        pthread_join(ss[i].th, NULL);
        free(ss[i].req);
        pthread_mutex_destroy(&ss[i].mu);
        pthread_cond_destroy(&ss[i].cv);
    }
}

static void *heartbeat_main(void *arg)
{
    wm_t *wm = arg;
    hb_sender_t ss[WM_MAX_DISCOVERY];
    unsigned n = senders_start(wm, ss);
    wm_load_sampler_t ls = {0};
    for (;;) {
        pthread_mutex_lock(&wm->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)(wm->cfg->lease_ttl_ms / 3) * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        while (!wm->changed && !wm->hb_stop)
            if (pthread_cond_timedwait(&wm->cv, &wm->mu, &ts) == ETIMEDOUT)
                break;
        int stop = wm->hb_stop;
        wm->changed = 0;
        pthread_mutex_unlock(&wm->mu);
        if (stop)
            break;
        heartbeat_once(wm, ss, n, &ls, 0);
    }
    heartbeat_once(wm, ss, n, &ls, 1); /* deregister: no instances, lease over at once */
    senders_stop(ss, n);
    return NULL;
}

/* ---- /metrics responder ---- */

typedef struct {
    wm_t *wm;
    int fd;
    volatile int stop;
} metrics_t;

static void serve_one(metrics_t *m, int c)
{
    char req[2048];
    size_t got = 0;
    struct pollfd p = {c, POLLIN, 0};
    while (got < sizeof(req) - 1 && poll(&p, 1, 2000) > 0) {
        ssize_t n = recv(c, req + got, sizeof(req) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    req[got] = '\0';
    static char body[256 * 1024]; /* seccomp series (WM_DENIALS_MAX) and per-function log counters */
    const char *ctype = "text/plain; version=0.0.4";
    int status = 200;
    size_t bl;
    if (strncmp(req, "GET /metrics", 12) == 0 && (req[12] == ' ' || req[12] == '?')) {
        bl = wm_metrics_text(m->wm, body, sizeof(body));
    } else if (strncmp(req, "GET /healthz ", 13) == 0) {
        bl = (size_t)snprintf(body, sizeof(body), "ok\n");
        ctype = "text/plain";
    } else {
        status = 404;
        ctype = "text/plain";
        bl = (size_t)snprintf(body, sizeof(body), "not found\n");
    }
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
                      faas_http_reason(status), ctype, bl);
    (void)!send(c, head, (size_t)hl, MSG_NOSIGNAL);
    (void)!send(c, body, bl, MSG_NOSIGNAL);
}

static void *metrics_main(void *arg)
{
    metrics_t *m = arg;
    while (!m->stop) {
        struct pollfd p = {m->fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int c = accept4(m->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        serve_one(m, c);
        close(c);
    }
    return NULL;
}

static int listen_tcp(const char *addr, const char **err)
{
    char host[128];
    uint16_t port;
    if (faas_parse_hostport(addr, host, sizeof(host), &port, err) != 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0)
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        *err = "metrics address must be an IPv4 host:port";
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0) {
        *err = "cannot bind the metrics address";
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* ---- rpc handlers ---- */

static void h_acquire(faas_rpc_call_t *c, const uint8_t *req, size_t len, void *ud)
{
    wm_post_acquire(ud, c, req, len);
}
static void h_release(faas_rpc_call_t *c, const uint8_t *req, size_t len, void *ud)
{
    wm_post_release(ud, c, req, len);
}
static void h_stats(faas_rpc_call_t *c, const uint8_t *req, size_t len, void *ud)
{
    wm_answer_stats(ud, c);
}
static void h_list(faas_rpc_call_t *c, const uint8_t *req, size_t len, void *ud)
{
    wm_answer_list(ud, c, req, len);
}
static void h_logs(faas_rpc_call_t *c, const uint8_t *req, size_t len, void *ud)
{
    wm_answer_logs(ud, c, req, len);
}

/* ---- the daemon ---- */

static int make_dirs(const wm_config_t *c)
{
    const char *subs[] = {"", "/code", "/logs"};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        char p[PATH_MAX];
        wm_fmt(p, sizeof(p), "%s%s", c->state_dir, subs[i]);
        if (faas_mkdirs(p, 0755) != 0)
            return -1;
        chmod(p, 0755);
    }
    return 0;
}

/* The id of the previous run, so a crash's leftovers (cgroups faas/<id>) are found and
 * its lease ended. */
static void read_prev_id(const wm_config_t *c, char *prev, size_t cap)
{
    char p[PATH_MAX];
    wm_fmt(p, sizeof(p), "%s/worker.id", c->state_dir);
    prev[0] = '\0';
    FILE *f = fopen(p, "re");
    if (f) {
        if (fgets(prev, (int)cap, f) == NULL)
            prev[0] = '\0';
        prev[strcspn(prev, "\n")] = '\0';
        fclose(f);
    }
    for (char *q = prev; *q; q++)
        if (*q == '/' || *q == '.')
            *q = '_'; /* never let a file steer rmdir outside faas/ */
}

static void write_run_id(const wm_config_t *c)
{
    char p[PATH_MAX];
    wm_fmt(p, sizeof(p), "%s/worker.id", c->state_dir);
    FILE *f = fopen(p, "we");
    if (f) {
        fprintf(f, "%s\n", c->id);
        fclose(f);
    }
}

/* The pods' packet filter, with discovery's address on the deny list when it is not
 * a loopback one (a pod's loopback is its own). 0, or -1 after saying why on stderr:
 * without the filter a pod could reach every service of the host. */
/* Appends host's IPv4 addresses to the deny list: a literal as it is, a name (a
 * Kubernetes Service's, say) as it resolves now; loopback never (a pod's is its own). */
static void deny_host(char *deny, size_t cap, const char *host)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0) {
        FAAS_WARN("event=pod_deny_unresolved host=%s msg=\"discovery's name did not resolve: put its address in "
                  "--pod-deny\"",
                  host);
        return;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        struct in_addr a = ((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        char ip[INET_ADDRSTRLEN];
        size_t n = strlen(deny);
        if ((ntohl(a.s_addr) >> 24) == 127 || inet_ntop(AF_INET, &a, ip, sizeof(ip)) == NULL)
            continue;
        snprintf(deny + n, cap - n, "%s%s", n ? "," : "", ip);
    }
    freeaddrinfo(res);
}

static int pod_rules(const wm_config_t *c)
{
    char host[128], deny[2400], err[256];
    uint16_t port;
    const char *e;
    snprintf(deny, sizeof(deny), "%s", c->pod_deny);
    for (unsigned i = 0; i < c->n_discovery; i++)
        if (faas_parse_hostport(c->discoveries[i], host, sizeof(host), &port, &e) == 0)
            deny_host(deny, sizeof(deny), host);
    const wm_net_rules_t r = {.deny = deny,
                              .allow = c->allow_from,
                              .pod_net = c->pod_net,
                              .pod_prefix = c->pod_prefix,
                              .cluster_net = c->cluster_net,
                              .cluster_prefix = c->cluster_prefix};
    if (wm_net_rules_apply(&r, err, sizeof(err)) != 0) {
        fprintf(stderr, "faas-workermgr: pod network filter: %s\n", err);
        return -1;
    }
    FAAS_INFO("event=pod_network_rules deny=\"%s\" allow=\"%s\" pod_cidr=%u.%u.%u.%u/%d", deny, c->allow_from,
              c->pod_net >> 24, (c->pod_net >> 16) & 255, (c->pod_net >> 8) & 255, c->pod_net & 255, c->pod_prefix);
    return 0;
}

/* Everything before the first thread: state dirs, cgroups, the previous run's leftovers,
 * and the pod helper, forked while no thread and no grpc exist yet in this process.
 * 0, or -1 after saying why on stderr. */
static int prepare_host(wm_t *wm, wm_config_t *c, char *prev, size_t prevcap)
{
    const char *err = NULL;
    if (make_dirs(c) != 0) {
        fprintf(stderr, "faas-workermgr: cannot create state dir %s: %s\n", c->state_dir, strerror(errno));
        return -1;
    }
    if (wm_cg_detect(c->cgroup_root, &wm->cg, &err) != 0) {
        fprintf(stderr, "faas-workermgr: %s\n", err);
        return -1;
    }
    /* pods reach their code by a mount, whatever the modes above the state dir; what
     * cannot work is a code cache whose files cannot be run: say so now, not at the
     * first request */
    char code[PATH_MAX], why[PATH_MAX + 128];
    wm_fmt(code, sizeof(code), "%s/code", c->state_dir);
    if (faas_check_code_dir(code, why, sizeof(why)) != 0) {
        fprintf(stderr, "faas-workermgr: unusable --state-dir %s: %s\n", c->state_dir, why);
        return -1;
    }
    if (access(c->agent, X_OK) != 0)
        FAAS_WARN("event=agent_missing path=%s", c->agent);
    (void)wm_python_check(c); /* before the helper forks: it sees the pool as it will be */
    read_prev_id(c, prev, prevcap);
    /* a crashed predecessor's helper may still run its pods: adopt them (and its id),
     * else start afresh, which removes whatever that run left */
    if (wm_helper_adopt(&wm->helper, c, &wm->adopted, &wm->n_adopted) != 1) {
        if (wm_helper_start(&wm->helper, c, &wm->cg, &err) != 0) {
            fprintf(stderr, "faas-workermgr: %s\n", err);
            return -1;
        }
        wm_helper_cleanup(&wm->helper, strcmp(prev, c->id) != 0 ? prev : NULL);
    }
    write_run_id(c);
    if (pod_rules(c) != 0)
        return -1;
    wm_runq_start(wm);
    return 0;
}

/* The WorkerManager service on c->listen, open only to holders of the token; NULL
 * with *err set. */
static faas_rpc_server_t *start_rpc(wm_t *wm, const faas_token_t *token, char *errbuf, size_t errcap, const char **err)
{
    static const char *names[] = {"/faas.WorkerManager/Acquire", "/faas.WorkerManager/Release",
                                  "/faas.WorkerManager/Stats", "/faas.WorkerManager/ListInstances",
                                  "/faas.WorkerManager/Logs"};
    void (*hs[])(faas_rpc_call_t *, const uint8_t *, size_t, void *) = {h_acquire, h_release, h_stats, h_list, h_logs};
    faas_rpc_method_t methods[5];
    faas_rpc_global_init();
    for (int i = 0; i < 5; i++)
        methods[i] = (faas_rpc_method_t){names[i], FAAS_RPC_UNARY, hs[i], wm};
    int port = 0;
    const wm_config_t *c = wm->cfg;
    faas_rpc_server_opts_t o = {token, c->tls_cert[0] ? c->tls_cert : NULL, c->tls_key[0] ? c->tls_key : NULL};
    return faas_rpc_server_start_opts(c->listen, &port, methods, 5, &o, errbuf, errcap, err);
}

/* Runs the pod loop until SIGINT/SIGTERM with the heartbeat and metrics threads beside
 * it, then stops them in dependency order: no new calls, no pods, then the threads. */
static void serve(wm_t *wm, metrics_t *m, faas_rpc_server_t *srv)
{
    const wm_config_t *c = wm->cfg;
    pthread_t hb, mt;
    pthread_create(&hb, NULL, heartbeat_main, wm);
    wm_task_relay_start(wm);
    wm_watch_start(wm);
    pthread_create(&mt, NULL, metrics_main, m);
    char discs[WM_MAX_DISCOVERY * 130] = "";
    for (unsigned i = 0, n = 0; i < c->n_discovery; i++)
        n += (unsigned)snprintf(discs + n, sizeof(discs) - n, "%s%s", i ? "," : "", c->discoveries[i]);
    FAAS_INFO("event=started id=%s listen=%s advertise=%s metrics=%s discovery=%s state_dir=%s pool_size=%u "
              "pool_python=%u python=%s agent=%s",
              c->id, c->listen, c->advertise, c->metrics_listen, discs, c->state_dir, c->pool_size, c->pool_python,
              c->python, c->agent);
    (void)wm_image_umoci_ok(c); /* a worker without umoci says so now, not at an image's first cold start */

    wm_loop_run(wm);

    wm_loop_shutdown(wm);
    wm_runq_close();
    wm_task_relay_stop(); /* after the pods: their last task reports are queued by then */
    faas_rpc_server_stop(srv);
    wm_helper_cleanup(&wm->helper, NULL);
    pthread_mutex_lock(&wm->mu);
    wm->hb_stop = 1;
    pthread_cond_broadcast(&wm->cv);
    pthread_mutex_unlock(&wm->mu);
    pthread_join(hb, NULL);
    m->stop = 1;
    pthread_join(mt, NULL);
}

/* The token this worker manager sends and demands, and TLS to discovery. 0 or -1. */
static int load_credentials(const wm_config_t *c, faas_token_t *t)
{
    char err[600];
    const char *src = NULL;
    if (faas_token_load(getenv(FAAS_TOKEN_ENV), c->token_file, c->token_file, t, &src, err, sizeof(err)) != 0 ||
        faas_rpc_client_configure(t, c->tls_ca[0] ? c->tls_ca : NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "faas-workermgr: %s\n", err);
        return -1;
    }
    FAAS_INFO("event=token source=%s tls_to_discovery=%d", src, c->tls_ca[0] != '\0');
    return 0;
}

int wm_run(const wm_config_t *cfg)
{
    static wm_t wm;
    static wm_config_t c_own; /* adoption may replace the id */
    c_own = *cfg;
    wm_config_t *c = &c_own;
    memset(&wm, 0, sizeof(wm));
    wm.cfg = c;
    wm.helper.fd = -1;
    const char *err = NULL;
    char errbuf[512];
    faas_token_t token;
    if (prepare_host(&wm, c, wm.prev_id, sizeof(wm.prev_id)) != 0)
        return 1;
    /* after the host checks (their errors say more about a broken setup); the helper,
     * forked there, never holds the token */
    if (load_credentials(c, &token) != 0) {
        wm_helper_stop(&wm.helper, 0);
        return 1;
    }

    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &ss, NULL); /* every thread inherits it; the pod thread reads a signalfd */
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&wm.mu, NULL);
    pthread_cond_init(&wm.cv, NULL);
    int rc = 1;
    metrics_t m = {.wm = &wm, .fd = -1};
    if (wm_loop_init(&wm) != 0) {
        fprintf(stderr, "faas-workermgr: eventfd/signalfd failed\n");
        goto out_helper;
    }
    m.fd = listen_tcp(c->metrics_listen, &err);
    if (m.fd < 0) {
        fprintf(stderr, "faas-workermgr: %s (%s)\n", err, c->metrics_listen);
        goto out_helper;
    }
    faas_rpc_server_t *srv = start_rpc(&wm, &token, errbuf, sizeof(errbuf), &err);
    wm.rpc = srv;
    if (srv == NULL) {
        fprintf(stderr, "faas-workermgr: cannot listen on %s: %s\n", c->listen, err ? err : "?");
        goto out_helper;
    }
    serve(&wm, &m, srv);
    rc = 0;
out_helper:
    if (m.fd >= 0)
        close(m.fd);
    wm_helper_stop(&wm.helper, rc == 0); /* a failed start leaves adopted pods for the next try */
    FAAS_INFO("event=stopped id=%s", c->id);
    return rc;
}
