/* cpbench.c - the control plane's throughput (issue 16): many simulated hosts.
 *
 *   cpbench hosts  DISCOVERY AGENT_ENDPOINT [HOSTS=100] [LEASE_MS=3000]
 *   cpbench deploy DISCOVERY CODE_SHA256 N [THREADS=8] [PREFIX=cp]
 *
 * hosts: HOSTS fake worker managers in one process, each a gRPC server of its own
 * (faas.WorkerManager/Acquire and Release on a free loopback port) with its own
 * channel to discovery and its own lease thread, as a real worker manager has. An
 * Acquire is answered at once with a new READY instance whose endpoint is
 * AGENT_ENDPOINT (one real faas-agent shared by all: the fake agent, so that the
 * gateway's first call through each instance is real), and wakes the host's lease
 * thread, which sends its whole instance set to discovery (faas.Discovery/Heartbeat)
 * as the real one does. What is measured is therefore everything but the pod: the
 * dispatcher placing the Acquire, the host answering, discovery taking the lease and
 * pushing the instance to the watchers. Prints "READY <hosts>" once every host holds a
 * lease, then runs until stdin closes, and prints {"acquires": n, "heartbeats": n,
 * "heartbeat_errors": n} on the way out.
 *
 * deploy: N Deploy rpcs (functions PREFIX-0 .. PREFIX-<N-1>, the given code artifact,
 * command ./hello) from THREADS threads; prints {"deploys": n, "failed": n, "seconds": s}.
 * This is the durable-store path (SQLite or etcd), which instance creation never takes.
 *
 *   cpbench calls  HOST:PORT N [CONC=64] [PREFIX=cp]
 *
 * calls: one GET /function/PREFIX-k/hello for every k < N, CONC keep-alive HTTP/1.1
 * connections taking the next k as they go (so every call names a function nobody
 * called before: a cold start each); prints {"ok": n, "failed": n, "seconds": s,
 * "p50_ms": x, "p99_ms": y}. h2load -i cannot do this: its clients all walk the same
 * list from the top.
 *
 * The platform token comes from FAAS_TOKEN. Built by tests/bench/run.sh against the
 * build dir's common objects, like discprop.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "common/auth.h"
#include "common/rpc.h"
#include "proto/faas.pb-c.h"

typedef struct {
    char id[32], fn[64];
    uint64_t version;
} inst_t;

typedef struct {
    int idx;
    char id[32], addr[32];
    faas_rpc_server_t *srv;
    faas_rpc_channel_t *ch;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    inst_t *insts;
    size_t n, cap;
    uint64_t seq;
    int dirty, leased;
} host_t;

static const char *disc_addr, *agent_ep;
static uint32_t lease_ms = 3000;
static atomic_int stopping;
static atomic_ullong n_acquires, n_heartbeats, n_hb_errors;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len ? *len : 1);
    if (b != NULL)
        protobuf_c_message_pack(m, b);
    return b;
}

/* The whole instance set, as a worker manager's lease carries it. Caller holds h->mu. */
static uint8_t *lease_locked(host_t *h, size_t *len)
{
    Faas__Worker w = FAAS__WORKER__INIT;
    w.id = h->id;
    w.address = h->addr;
    w.pool_size = 1000;
    w.pool_ready = 1000; /* a fake pod is always warm */
    Faas__Instance *ins = calloc(h->n + 1, sizeof(*ins));
    Faas__Instance **ptrs = calloc(h->n + 1, sizeof(*ptrs));
    for (size_t i = 0; ins != NULL && ptrs != NULL && i < h->n; i++) {
        faas__instance__init(&ins[i]);
        ins[i].id = h->insts[i].id;
        ins[i].function = h->insts[i].fn;
        ins[i].version = h->insts[i].version;
        ins[i].endpoint = (char *)agent_ep;
        ins[i].worker_id = h->id;
        ins[i].state = FAAS__INSTANCE__STATE__READY;
        ptrs[i] = &ins[i];
    }
    Faas__LeaseRenewal lr = FAAS__LEASE_RENEWAL__INIT;
    lr.worker = &w;
    lr.ttl_ms = lease_ms;
    lr.instances = ptrs;
    lr.n_instances = ins != NULL && ptrs != NULL ? h->n : 0;
    uint8_t *b = pack(&lr.base, len);
    free(ins);
    free(ptrs);
    return b;
}

/* Renews at a third of the lease, and at once after an Acquire changed the set (the
 * changes of a burst ride one renewal, as in the worker manager). */
static void *lease_main(void *arg)
{
    host_t *h = arg;
    while (!atomic_load(&stopping)) {
        pthread_mutex_lock(&h->mu);
        if (!h->dirty) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)(lease_ms / 3) * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        }
        h->dirty = 0;
        size_t len;
        uint8_t *req = lease_locked(h, &len);
        pthread_mutex_unlock(&h->mu);
        uint8_t *resp = NULL;
        size_t rl = 0;
        char err[200];
        int rc = req ? faas_rpc_unary(h->ch, "/faas.Discovery/Heartbeat", req, len, 2000, &resp, &rl, err, sizeof(err))
                     : -1;
        free(req);
        free(resp);
        atomic_fetch_add(rc == 0 ? &n_heartbeats : &n_hb_errors, 1);
        if (rc == 0) {
            pthread_mutex_lock(&h->mu);
            h->leased = 1;
            pthread_mutex_unlock(&h->mu);
        } else {
            usleep(50000);
        }
    }
    return NULL;
}

static void on_acquire(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    host_t *h = ud;
    Faas__AcquireRequest *ar = faas__acquire_request__unpack(NULL, len, req);
    if (ar == NULL || ar->spec == NULL) {
        faas_rpc_fail(call, 3, "bad AcquireRequest");
        goto out;
    }
    pthread_mutex_lock(&h->mu);
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        inst_t *v = realloc(h->insts, cap * sizeof(*v));
        if (v == NULL) {
            pthread_mutex_unlock(&h->mu);
            faas_rpc_fail(call, 8, "out of memory");
            goto out;
        }
        h->insts = v, h->cap = cap;
    }
    inst_t *in = &h->insts[h->n++];
    snprintf(in->id, sizeof(in->id), "i-%d-%" PRIu64, h->idx, ++h->seq);
    snprintf(in->fn, sizeof(in->fn), "%s", ar->spec->name);
    in->version = ar->spec->version;
    h->dirty = 1;
    pthread_cond_signal(&h->cv);
    Faas__Instance pi = FAAS__INSTANCE__INIT;
    pi.id = in->id;
    pi.function = in->fn;
    pi.version = in->version;
    pi.endpoint = (char *)agent_ep;
    pi.worker_id = h->id;
    pi.state = FAAS__INSTANCE__STATE__READY;
    Faas__AcquireReply rep = FAAS__ACQUIRE_REPLY__INIT;
    rep.instance = &pi;
    size_t rl;
    uint8_t *b = pack(&rep.base, &rl);
    pthread_mutex_unlock(&h->mu);
    faas_rpc_reply(call, b, rl);
    free(b);
    atomic_fetch_add(&n_acquires, 1);
out:
    faas__acquire_request__free_unpacked(ar, NULL);
}

static void on_release(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    host_t *h = ud;
    Faas__ReleaseRequest *rr = faas__release_request__unpack(NULL, len, req);
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; rr != NULL && i < h->n; i++)
        if (strcmp(h->insts[i].id, rr->instance_id) == 0) {
            h->insts[i] = h->insts[--h->n];
            h->dirty = 1;
            pthread_cond_signal(&h->cv);
            break;
        }
    pthread_mutex_unlock(&h->mu);
    faas__release_request__free_unpacked(rr, NULL);
    faas_rpc_reply(call, NULL, 0);
}

static int start_host(host_t *h, int idx)
{
    h->idx = idx;
    snprintf(h->id, sizeof(h->id), "cp-host-%d", idx);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    faas_rpc_method_t m[2] = {
        {"/faas.WorkerManager/Acquire", FAAS_RPC_UNARY, on_acquire, h},
        {"/faas.WorkerManager/Release", FAAS_RPC_UNARY, on_release, h},
    };
    int port = 0;
    const char *err = NULL;
    h->srv = faas_rpc_server_start("127.0.0.1:0", &port, m, 2, &err);
    if (h->srv == NULL) {
        fprintf(stderr, "cpbench: host %d: %s\n", idx, err ? err : "cannot listen");
        return -1;
    }
    snprintf(h->addr, sizeof(h->addr), "127.0.0.1:%d", port);
    h->ch = faas_rpc_channel_open(disc_addr);
    h->dirty = 1;
    return h->ch != NULL && pthread_create(&h->tid, NULL, lease_main, h) == 0 ? 0 : -1;
}

static int configure_token(void)
{
    const char *t = getenv("FAAS_TOKEN"), *perr = NULL;
    static faas_token_t tok;
    char err[200];
    if (t == NULL || faas_token_parse(t, strlen(t), &tok, &perr) != 0 ||
        faas_rpc_client_configure(&tok, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "cpbench: needs the platform token in FAAS_TOKEN\n");
        return -1;
    }
    return 0;
}

static int run_hosts(int nhosts)
{
    host_t *hosts = calloc((size_t)nhosts, sizeof(*hosts));
    if (hosts == NULL)
        return 1;
    for (int i = 0; i < nhosts; i++)
        if (start_host(&hosts[i], i) != 0)
            return 1;
    for (uint64_t t0 = now_ms();;) { /* every host holds a lease, or the bench says why not */
        int leased = 0;
        for (int i = 0; i < nhosts; i++) {
            pthread_mutex_lock(&hosts[i].mu);
            leased += hosts[i].leased;
            pthread_mutex_unlock(&hosts[i].mu);
        }
        if (leased == nhosts)
            break;
        if (now_ms() - t0 > 20000) {
            fprintf(stderr, "cpbench: %d of %d hosts leased after 20 s\n", leased, nhosts);
            return 1;
        }
        usleep(10000);
    }
    printf("READY %d\n", nhosts);
    fflush(stdout);
    char buf[64];
    while (fread(buf, 1, sizeof(buf), stdin) > 0) {
    }
    atomic_store(&stopping, 1);
    printf("{\"acquires\": %llu, \"heartbeats\": %llu, \"heartbeat_errors\": %llu}\n",
           (unsigned long long)n_acquires, (unsigned long long)n_heartbeats, (unsigned long long)n_hb_errors);
    fflush(stdout);
    _exit(0); /* the servers and lease threads die with the process */
}

typedef struct {
    const char *sha, *prefix;
    int from, to;
    int failed;
} deploy_job_t;

static void *deploy_main(void *arg)
{
    deploy_job_t *j = arg;
    faas_rpc_channel_t *ch = faas_rpc_channel_open(disc_addr);
    char name[64], *cmd[] = {"./hello"};
    for (int k = j->from; k < j->to; k++) {
        Faas__FunctionSpec s = FAAS__FUNCTION_SPEC__INIT;
        snprintf(name, sizeof(name), "%s-%d", j->prefix, k);
        s.name = name;
        s.command = cmd;
        s.n_command = 1;
        s.code_sha256 = (char *)j->sha;
        size_t len, rl;
        uint8_t *req = pack(&s.base, &len), *resp = NULL;
        char err[200];
        if (req == NULL || faas_rpc_unary(ch, "/faas.Discovery/Deploy", req, len, 10000, &resp, &rl, err,
                                          sizeof(err)) != 0) {
            if (j->failed++ == 0)
                fprintf(stderr, "cpbench: deploy %s: %s\n", name, err);
        }
        free(req);
        free(resp);
    }
    faas_rpc_channel_close(ch);
    return NULL;
}

static int run_deploys(const char *sha, int n, int nthreads, const char *prefix)
{
    pthread_t tid[64];
    deploy_job_t jobs[64];
    nthreads = nthreads < 1 ? 1 : (nthreads > 64 ? 64 : nthreads);
    uint64_t t0 = now_ms();
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = (deploy_job_t){sha, prefix, n * t / nthreads, n * (t + 1) / nthreads, 0};
        pthread_create(&tid[t], NULL, deploy_main, &jobs[t]);
    }
    int failed = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(tid[t], NULL);
        failed += jobs[t].failed;
    }
    double s = (double)(now_ms() - t0) / 1000.0;
    printf("{\"deploys\": %d, \"failed\": %d, \"seconds\": %.3f}\n", n - failed, failed, s);
    return failed ? 1 : 0;
}

/* ---- calls: one cold start per request ---- */

static const char *call_host, *call_prefix;
static int call_port, call_n;
static atomic_int call_next, call_ok, call_failed;
static double *call_ms;

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)call_port)};
    inet_pton(AF_INET, call_host, &sa.sin_addr);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* One request on fd; the status, or -1 when the connection broke. */
static int one_call(int fd, int k)
{
    char req[256], buf[8192];
    int n = snprintf(req, sizeof(req), "GET /function/%s-%d/hello HTTP/1.1\r\nHost: bench\r\n\r\n", call_prefix, k);
    if (write(fd, req, (size_t)n) != n)
        return -1;
    size_t have = 0;
    char *end = NULL;
    while (end == NULL) {
        ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL && have == sizeof(buf) - 1)
            return -1;
    }
    int status = atoi(buf + 9);
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    size_t body = cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0, got = have - (size_t)(end + 4 - buf);
    while (got < body) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return status;
}

static void *calls_main(void *arg)
{
    int fd = dial();
    for (int k; (k = atomic_fetch_add(&call_next, 1)) < call_n;) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int st = fd >= 0 ? one_call(fd, k) : -1;
        clock_gettime(CLOCK_MONOTONIC, &b);
        call_ms[k] = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        atomic_fetch_add(st == 200 ? &call_ok : &call_failed, 1);
        if (st < 0) { /* a new connection for the next one */
            if (fd >= 0)
                close(fd);
            fd = dial();
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_calls(const char *hostport, int n, int conc, const char *prefix)
{
    static char host[64];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || n < 1 || conc < 1 || conc > 1024 || (size_t)(colon - hostport) >= sizeof(host))
        return 2;
    memcpy(host, hostport, (size_t)(colon - hostport));
    call_host = host, call_port = atoi(colon + 1), call_n = n, call_prefix = prefix;
    call_ms = calloc((size_t)n, sizeof(*call_ms));
    pthread_t *tid = calloc((size_t)conc, sizeof(*tid));
    if (call_ms == NULL || tid == NULL)
        return 1;
    uint64_t t0 = now_ms();
    for (int t = 0; t < conc; t++)
        pthread_create(&tid[t], NULL, calls_main, NULL);
    for (int t = 0; t < conc; t++)
        pthread_join(tid[t], NULL);
    double s = (double)(now_ms() - t0) / 1000.0;
    qsort(call_ms, (size_t)n, sizeof(*call_ms), cmp_double);
    printf("{\"ok\": %d, \"failed\": %d, \"seconds\": %.3f, \"p50_ms\": %.2f, \"p99_ms\": %.2f}\n",
           atomic_load(&call_ok), atomic_load(&call_failed), s, call_ms[n / 2], call_ms[(size_t)n * 99 / 100]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "hosts") == 0) {
        disc_addr = argv[2], agent_ep = argv[3];
        int n = argc > 4 ? atoi(argv[4]) : 100;
        lease_ms = argc > 5 ? (uint32_t)atoi(argv[5]) : 3000;
        if (n < 1 || n > 2000 || lease_ms < 300 || configure_token() != 0)
            return 2;
        return run_hosts(n);
    }
    if (argc >= 5 && strcmp(argv[1], "deploy") == 0) {
        disc_addr = argv[2];
        if (configure_token() != 0)
            return 2;
        return run_deploys(argv[3], atoi(argv[4]), argc > 5 ? atoi(argv[5]) : 8, argc > 6 ? argv[6] : "cp");
    }
    if (argc >= 4 && strcmp(argv[1], "calls") == 0)
        return run_calls(argv[2], atoi(argv[3]), argc > 4 ? atoi(argv[4]) : 64, argc > 5 ? argv[5] : "cp");
    fprintf(stderr, "usage: cpbench hosts DISCOVERY AGENT_ENDPOINT [HOSTS=100] [LEASE_MS=3000]\n"
                    "       cpbench deploy DISCOVERY CODE_SHA256 N [THREADS=8] [PREFIX=cp]\n"
                    "       cpbench calls HOST:PORT N [CONC=64] [PREFIX=cp]\n");
    return 2;
}
