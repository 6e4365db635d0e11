/* discprop.c - discovery propagation: instance registered -> seen by N watchers.
 *
 *   discprop ADDR [WATCHERS=10] [ROUNDS=200] [INTERVAL_US=10000]
 *
 * N threads, each with its own channel and one /faas.Discovery/Watch stream
 * (instances only), through common/rpc (grpc core, as the gateway watches). Once
 * every watcher has its SNAPSHOT_END, a fake worker sends ROUNDS Heartbeats whose
 * instance set changes each time (prop-K replaces prop-K-1); the send is
 * timestamped just before the call, each INSTANCE_PUT when it reaches the
 * watcher's callback (CLOCK_MONOTONIC). Prints {"samples_us": [...], "lost": n, ...}.
 *
 * A breakdown rides along (same samples, nothing else changes): per round, the first
 * watcher's latency ("first_us": the server's whole path plus one client wake-up) and
 * the Heartbeat's own round trip ("hb_rtt_us"); the rest of a round's spread is the
 * client process waking its other watcher threads. stderr gets their percentiles.
 *
 * The platform token comes from FAAS_TOKEN, as for every control-plane client.
 *
 * Built by tests/bench/run.sh against the build dir's common objects. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/rpc.h"
#include "proto/faas.pb-c.h"

#define MAX_ROUNDS 10000

typedef struct {
    pthread_t tid;
    int idx;
    double *lat_us; /* per round, < 0 = not seen */
    int seen;
} watcher_t;

static const char *addr;
static int rounds;
static _Atomic long long sent_ns[MAX_ROUNDS];
static double hb_rtt_us[MAX_ROUNDS];
static atomic_int ready_count, stop;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int on_event(void *ud, const uint8_t *msg, size_t len)
{
    long long t = now_ns();
    watcher_t *w = ud;
    Faas__WatchEvent *ev = faas__watch_event__unpack(NULL, len, msg);
    if (!ev)
        return 1;
    if (ev->type == FAAS__WATCH_EVENT__TYPE__SNAPSHOT_END) {
        atomic_fetch_add(&ready_count, 1);
    } else if (ev->type == FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT && ev->instance && ev->instance->id &&
               strncmp(ev->instance->id, "prop-", 5) == 0) {
        int k = atoi(ev->instance->id + 5);
        long long s = k >= 0 && k < rounds ? atomic_load(&sent_ns[k]) : 0;
        if (s > 0 && w->lat_us[k] < 0) {
            w->lat_us[k] = (double)(t - s) / 1000.0;
            w->seen++;
        }
    }
    faas__watch_event__free_unpacked(ev, NULL);
    return atomic_load(&stop) ? 1 : 0;
}

static void *watch_main(void *arg)
{
    watcher_t *w = arg;
    Faas__WatchRequest req = FAAS__WATCH_REQUEST__INIT;
    req.instances = 1;
    uint8_t buf[16];
    size_t n = faas__watch_request__pack(&req, buf);
    faas_rpc_channel_t *ch = faas_rpc_channel_open(addr);
    char err[256] = "";
    if (ch) {
        faas_rpc_server_stream(ch, "/faas.Discovery/Watch", buf, n, 120000, on_event, w, err, sizeof(err));
        faas_rpc_channel_close(ch);
    }
    return NULL;
}

/* Heartbeat of the fake worker with instance prop-k (k < 0: none). */
static int heartbeat(faas_rpc_channel_t *ch, int k, unsigned ttl_ms)
{
    Faas__Worker wk = FAAS__WORKER__INIT;
    wk.id = "bench-prop-worker";
    wk.address = "127.0.0.1:1";
    Faas__Instance in = FAAS__INSTANCE__INIT;
    Faas__Instance *ins[1] = {&in};
    char id[32];
    snprintf(id, sizeof(id), "prop-%d", k);
    in.id = id;
    in.function = "bench-prop";
    in.version = 1;
    in.endpoint = "127.0.0.1:1";
    in.state = FAAS__INSTANCE__STATE__READY;
    Faas__LeaseRenewal lr = FAAS__LEASE_RENEWAL__INIT;
    lr.worker = &wk;
    lr.ttl_ms = ttl_ms;
    if (k >= 0) {
        lr.n_instances = 1;
        lr.instances = ins;
    }
    uint8_t buf[256];
    size_t n = faas__lease_renewal__pack(&lr, buf);
    uint8_t *resp = NULL;
    size_t rl = 0;
    char err[256] = "";
    long long t0 = now_ns();
    if (k >= 0)
        atomic_store(&sent_ns[k], t0);
    int rc = faas_rpc_unary(ch, "/faas.Discovery/Heartbeat", buf, n, 5000, &resp, &rl, err, sizeof(err));
    if (k >= 0)
        hb_rtt_us[k] = (double)(now_ns() - t0) / 1000.0;
    free(resp);
    if (rc != 0)
        fprintf(stderr, "discprop: heartbeat: %d %s\n", rc, err);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n sorted values. */
static double pct(const double *v, int n, double p)
{
    int i = (int)(p / 100.0 * (n - 1) + 0.5);
    return n > 0 ? v[i < n ? i : n - 1] : -1;
}

/* Prints one JSON array field and its p50/p99 to stderr. */
static void print_series(const char *name, double *v, int n)
{
    printf(", \"%s\": [", name);
    for (int i = 0; i < n; i++)
        printf("%s%.1f", i ? ", " : "", v[i]);
    printf("]");
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    fprintf(stderr, "discprop: %s p50 %.0f us p99 %.0f us\n", name, pct(v, n, 50), pct(v, n, 99));
}

/* Per round: the first watcher to see the change, and the Heartbeat's round trip. */
static void print_breakdown(const watcher_t *w, int nw)
{
    double *first = malloc(sizeof(double) * (size_t)rounds), *rtt = malloc(sizeof(double) * (size_t)rounds);
    int nf = 0;
    for (int k = 0; first && rtt && k < rounds; k++) {
        double m = -1;
        for (int i = 0; i < nw; i++)
            if (w[i].lat_us[k] >= 0 && (m < 0 || w[i].lat_us[k] < m))
                m = w[i].lat_us[k];
        if (m >= 0)
            first[nf++] = m;
        rtt[k] = hb_rtt_us[k];
    }
    if (first && rtt) {
        print_series("first_us", first, nf);
        print_series("hb_rtt_us", rtt, rounds);
    }
    free(first);
    free(rtt);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: discprop ADDR [WATCHERS] [ROUNDS] [INTERVAL_US]\n");
        return 2;
    }
    addr = argv[1];
    faas_token_t tok;
    const char *terr = NULL;
    const char *env = getenv("FAAS_TOKEN");
    char cerr[256];
    if (env == NULL || faas_token_parse(env, strlen(env), &tok, &terr) != 0 ||
        faas_rpc_client_configure(&tok, NULL, cerr, sizeof(cerr)) != 0) {
        fprintf(stderr, "discprop: needs the platform token in FAAS_TOKEN\n");
        return 2;
    }
    int nw = argc > 2 ? atoi(argv[2]) : 10;
    rounds = argc > 3 ? atoi(argv[3]) : 200;
    int interval_us = argc > 4 ? atoi(argv[4]) : 10000;
    if (nw < 1 || rounds < 1 || rounds > MAX_ROUNDS)
        return 2;
    faas_rpc_global_init();
    watcher_t *w = calloc((size_t)nw, sizeof(*w));
    for (int i = 0; i < nw; i++) {
        w[i].idx = i;
        w[i].lat_us = malloc(sizeof(double) * (size_t)rounds);
        for (int k = 0; k < rounds; k++)
            w[i].lat_us[k] = -1;
        pthread_create(&w[i].tid, NULL, watch_main, &w[i]);
    }
    long long deadline = now_ns() + 10000000000LL;
    while (atomic_load(&ready_count) < nw && now_ns() < deadline)
        usleep(1000);
    if (atomic_load(&ready_count) < nw) {
        fprintf(stderr, "discprop: only %d of %d watchers got their snapshot\n", atomic_load(&ready_count), nw);
        return 1;
    }
    faas_rpc_channel_t *ch = faas_rpc_channel_open(addr);
    if (!ch || heartbeat(ch, -1, 10000) != 0)
        return 1;
    for (int k = 0; k < rounds; k++) {
        if (heartbeat(ch, k, 10000) != 0)
            return 1;
        usleep((useconds_t)interval_us);
    }
    usleep(100000); /* late events */
    atomic_store(&stop, 1);
    heartbeat(ch, -1, 1); /* an event for every watcher, so each sees the stop flag */
    for (int i = 0; i < nw; i++)
        pthread_join(w[i].tid, NULL);
    faas_rpc_channel_close(ch);
    int lost = 0, first = 1;
    printf("{\"samples_us\": [");
    for (int i = 0; i < nw; i++) {
        for (int k = 0; k < rounds; k++) {
            if (w[i].lat_us[k] < 0) {
                lost++;
                continue;
            }
            printf("%s%.1f", first ? "" : ", ", w[i].lat_us[k]);
            first = 0;
        }
    }
    printf("], \"lost\": %d", lost);
    print_breakdown(w, nw);
    printf("}\n");
    return 0;
}
