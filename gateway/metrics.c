/* gateway/metrics.c - request counters and latency histograms per function,
 * rendered as Prometheus text on /metrics. Per loop thread, summed at scrape: no locks. */
#include "common/log.h"
#include "common/util.h"
#include "gateway/internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const double buckets_s[GW_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                              0.1,    0.25,  0.5,    1,     2.5,  5,     10};

typedef struct code_count {
    struct code_count *next;
    int code;
    int proto; /* 0 http/1.1, 1 h2, 2 thrift, 3 grpc */
    uint64_t n;
} code_count_t;

typedef struct fn_metrics {
    struct fn_metrics *next;
    char name[64];
    size_t len;
    code_count_t *codes;
    uint64_t bucket[GW_NBUCKETS];
    uint64_t count;
    uint64_t sum_us;
} fn_metrics_t;

/* Each loop thread counts into its own block, so a request touches no line another
 * core writes; /metrics (on any loop) sums the blocks. The owner is the only writer:
 * it bumps with a relaxed store and publishes new entries with a release store, so a
 * reader on another thread sees whole entries and untorn counts without a lock. */
typedef struct mthread {
    struct mthread *next; /* every thread's block, never freed */
    fn_metrics_t *fns;
    /* name -> entry, open addressing, owner only: looked up on every request, and
     * entries are never removed, so a list walk would grow with every name ever seen */
    fn_metrics_t **idx;
    size_t idx_cap, n_fns;
    uint64_t n_other;
    uint64_t n_refused[GW_NPORTS][2], n_limit_414, n_limit_431;
} mthread_t;

static mthread_t *all_threads;
static __thread mthread_t *me;

#define BUMP(x) __atomic_store_n(&(x), (x) + 1, __ATOMIC_RELAXED)
#define READ(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define PUBLISH(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)
#define FOLLOW(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)

/* This thread's block, made on its first count; NULL on OOM (the count is lost). */
static mthread_t *self(void)
{
    if (me != NULL)
        return me;
    mthread_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->next = FOLLOW(all_threads);
    while (!__atomic_compare_exchange_n(&all_threads, &t->next, t, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
    return me = t;
}

static void idx_put(fn_metrics_t **t, size_t cap, fn_metrics_t *m)
{
    size_t i = faas_hash_name(m->name, m->len) & (cap - 1);
    while (t[i] != NULL)
        i = (i + 1) & (cap - 1);
    t[i] = m;
}

static int idx_reserve(mthread_t *t)
{
    if (2 * (t->n_fns + 1) < t->idx_cap)
        return 0;
    size_t cap = t->idx_cap ? t->idx_cap * 2 : 32;
    fn_metrics_t **n = calloc(cap, sizeof(*n));
    if (n == NULL)
        return -1;
    for (fn_metrics_t *m = t->fns; m != NULL; m = m->next)
        idx_put(n, cap, m);
    free(t->idx);
    t->idx = n;
    t->idx_cap = cap;
    return 0;
}

static fn_metrics_t *fn_get(mthread_t *t, const char *name, size_t len)
{
    if (len >= sizeof(t->fns->name))
        len = sizeof(t->fns->name) - 1; /* names are at most 63 chars (gw_route_parse) */
    if (t->idx_cap != 0)
        for (size_t i = faas_hash_name(name, len) & (t->idx_cap - 1); t->idx[i] != NULL; i = (i + 1) & (t->idx_cap - 1))
            if (t->idx[i]->len == len && memcmp(t->idx[i]->name, name, len) == 0)
                return t->idx[i];
    fn_metrics_t *m;
    if (idx_reserve(t) != 0 || (m = calloc(1, sizeof(*m))) == NULL)
        return NULL;
    memcpy(m->name, name, len);
    m->len = len;
    m->next = t->fns;
    PUBLISH(t->fns, m);
    t->n_fns++;
    idx_put(t->idx, t->idx_cap, m);
    return m;
}

void gw_metrics_record(const char *fn, size_t len, int code, int h2, uint64_t latency_us)
{
    mthread_t *t = self();
    fn_metrics_t *m = t != NULL ? fn_get(t, fn, len) : NULL;
    if (m == NULL)
        return;
    code_count_t *c;
    for (c = m->codes; c != NULL; c = c->next)
        if (c->code == code && c->proto == h2)
            break;
    if (c == NULL) {
        if ((c = calloc(1, sizeof(*c))) == NULL)
            return;
        c->code = code;
        c->proto = h2;
        c->next = m->codes;
        PUBLISH(m->codes, c);
    }
    BUMP(c->n);
    double s = (double)latency_us / 1e6;
    for (int i = 0; i < GW_NBUCKETS; i++)
        if (s <= buckets_s[i])
            BUMP(m->bucket[i]);
    BUMP(m->count);
    __atomic_store_n(&m->sum_us, m->sum_us + latency_us, __ATOMIC_RELAXED);
}

void gw_metrics_other(void)
{
    mthread_t *t = self();
    if (t != NULL)
        BUMP(t->n_other);
}

void gw_metrics_conn_refused(int port, int reason)
{
    mthread_t *t = self();
    if (t != NULL && port >= 0 && port < GW_NPORTS)
        BUMP(t->n_refused[port][reason != 0]);
}

void gw_metrics_http_limit(int status)
{
    mthread_t *t = self();
    if (t == NULL)
        return;
    if (status == 414)
        BUMP(t->n_limit_414);
    else
        BUMP(t->n_limit_431);
}

/* A thread-block field summed over every loop thread. */
#define SUM(field)                                                                                                     \
    ({                                                                                                                 \
        uint64_t sum_ = 0;                                                                                             \
        for (mthread_t *t_ = FOLLOW(all_threads); t_ != NULL; t_ = t_->next)                                           \
            sum_ += READ(t_->field);                                                                                   \
        sum_;                                                                                                          \
    })

/* Connection caps, size limits and framing rejections (gateway/conncap.c, framing.c). */
static void write_guards(FILE *out)
{
    static const char *const ports[GW_NPORTS] = {"http", "grpc", "thrift"};
    fprintf(out, "# HELP faas_gw_conn_refused_total Connections closed at accept: the client's or the gateway's "
                 "connection cap was reached.\n# TYPE faas_gw_conn_refused_total counter\n");
    for (int p = 0; p < GW_NPORTS; p++)
        for (int r = 0; r < 2; r++)
            fprintf(out, "faas_gw_conn_refused_total{port=\"%s\",reason=\"%s\"} %" PRIu64 "\n", ports[p],
                    r ? "total" : "per_client", SUM(n_refused[p][r]));
    fprintf(out,
            "# HELP faas_gw_connections Connections held now, all ports.\n# TYPE faas_gw_connections gauge\n"
            "faas_gw_connections %u\n",
            gw_conncap_open());
    fprintf(out,
            "# HELP faas_gw_http_too_large_total HTTP requests refused before routing: 414 path too long, 431 "
            "header fields too large.\n# TYPE faas_gw_http_too_large_total counter\n"
            "faas_gw_http_too_large_total{code=\"414\"} %" PRIu64
            "\nfaas_gw_http_too_large_total{code=\"431\"} %" PRIu64 "\n",
            SUM(n_limit_414), SUM(n_limit_431));
    uint64_t calls, rej[GW_FRAMING_NRULES];
    gw_framing_stats(&calls, rej);
    fprintf(out, "# HELP faas_gw_http1_framing_rejected_total HTTP/1 request heads answered 400 and closed for "
                 "ambiguous framing, by rule.\n# TYPE faas_gw_http1_framing_rejected_total counter\n");
    for (int r = 1; r < GW_FRAMING_NRULES; r++)
        fprintf(out, "faas_gw_http1_framing_rejected_total{rule=\"%s\"} %" PRIu64 "\n", gw_http1_framing_rule_name(-r),
                rej[r]);
}

/* One function's counts summed over the threads, for one scrape. */
typedef struct agg {
    const char *name; /* a thread's entry's: entries are never freed */
    size_t len;
    uint64_t bucket[GW_NBUCKETS], count, sum_us;
    size_t ncodes;
    struct {
        int code, proto;
        uint64_t n;
    } codes[24]; /* distinct (code, protocol) pairs a function sees; more are folded */
} agg_t;

static void agg_add(agg_t *a, const fn_metrics_t *m)
{
    for (int i = 0; i < GW_NBUCKETS; i++)
        a->bucket[i] += READ(m->bucket[i]);
    a->count += READ(m->count);
    a->sum_us += READ(m->sum_us);
    for (const code_count_t *c = FOLLOW(((fn_metrics_t *)m)->codes); c != NULL; c = FOLLOW(((code_count_t *)c)->next)) {
        size_t k = 0;
        while (k < a->ncodes && !(a->codes[k].code == c->code && a->codes[k].proto == c->proto))
            k++;
        if (k == a->ncodes) {
            if (k == sizeof(a->codes) / sizeof(a->codes[0]))
                continue;
            a->codes[k].code = c->code;
            a->codes[k].proto = c->proto;
            a->codes[k].n = 0;
            a->ncodes++;
        }
        a->codes[k].n += READ(((code_count_t *)c)->n);
    }
}

/* Every function's counts over all threads: a malloc'd array (*n), NULL if none or OOM. */
#define AGG_MAX_THREADS 512
static agg_t *aggregate(size_t *n)
{
    /* each thread's list as it is now: entries published later are prepended before
     * these heads, and everything after a head is immutable, so both passes agree */
    fn_metrics_t *heads[AGG_MAX_THREADS];
    size_t nt = 0, total = 0;
    for (mthread_t *t = FOLLOW(all_threads); t != NULL && nt < AGG_MAX_THREADS; t = t->next) {
        heads[nt] = FOLLOW(t->fns);
        for (fn_metrics_t *m = heads[nt]; m != NULL; m = m->next)
            total++;
        nt++;
    }
    *n = 0;
    size_t cap = 32;
    while (cap < 2 * total + 2)
        cap *= 2;
    agg_t *out = total ? calloc(total, sizeof(*out)) : NULL;
    size_t *slot = total ? malloc(cap * sizeof(*slot)) : NULL;
    if (out == NULL || slot == NULL) {
        free(out);
        free(slot);
        return NULL;
    }
    memset(slot, 0xff, cap * sizeof(*slot));
    for (size_t ti = 0; ti < nt; ti++)
        for (fn_metrics_t *m = heads[ti]; m != NULL; m = m->next) {
            size_t i = faas_hash_name(m->name, m->len) & (cap - 1);
            while (slot[i] != (size_t)-1 && !(out[slot[i]].len == m->len && memcmp(out[slot[i]].name, m->name, m->len) == 0))
                i = (i + 1) & (cap - 1);
            if (slot[i] == (size_t)-1) {
                slot[i] = (*n)++;
                out[slot[i]].name = m->name;
                out[slot[i]].len = m->len;
            }
            agg_add(&out[slot[i]], m);
        }
    free(slot);
    return out;
}

void gw_metrics_write(FILE *out)
{
    size_t n;
    agg_t *a = aggregate(&n);
    fprintf(out, "# HELP faas_requests_total Requests to functions by status code and protocol.\n"
                 "# TYPE faas_requests_total counter\n");
    for (size_t f = 0; f < n; f++)
        for (size_t k = 0; k < a[f].ncodes; k++)
            fprintf(out, "faas_requests_total{function=\"%.*s\",code=\"%d\",protocol=\"%s\"} %" PRIu64 "\n",
                    (int)a[f].len, a[f].name, a[f].codes[k].code,
                    a[f].codes[k].proto == 3   ? "grpc"
                    : a[f].codes[k].proto == 2 ? "thrift"
                    : a[f].codes[k].proto      ? "h2"
                                               : "http1.1",
                    a[f].codes[k].n);
    fprintf(out, "# HELP faas_request_duration_seconds Time from request to the end of the response.\n"
                 "# TYPE faas_request_duration_seconds histogram\n");
    for (size_t f = 0; f < n; f++) {
        int l = (int)a[f].len;
        for (int i = 0; i < GW_NBUCKETS; i++)
            fprintf(out, "faas_request_duration_seconds_bucket{function=\"%.*s\",le=\"%g\"} %" PRIu64 "\n", l,
                    a[f].name, buckets_s[i], a[f].bucket[i]);
        fprintf(out, "faas_request_duration_seconds_bucket{function=\"%.*s\",le=\"+Inf\"} %" PRIu64 "\n", l,
                a[f].name, a[f].count);
        fprintf(out, "faas_request_duration_seconds_sum{function=\"%.*s\"} %.6f\n", l, a[f].name,
                (double)a[f].sum_us / 1e6);
        fprintf(out, "faas_request_duration_seconds_count{function=\"%.*s\"} %" PRIu64 "\n", l, a[f].name,
                a[f].count);
    }
    free(a);
    fprintf(out,
            "# HELP faas_gateway_other_requests_total Requests that reached no deployed function (health, metrics, "
            "unknown paths and function names).\n"
            "# TYPE faas_gateway_other_requests_total counter\nfaas_gateway_other_requests_total %" PRIu64 "\n",
            SUM(n_other));
    fprintf(out,
            "# HELP faas_log_dropped_lines_total Log lines dropped by the per-site rate limit.\n"
            "# TYPE faas_log_dropped_lines_total counter\nfaas_log_dropped_lines_total %" PRIu64 "\n",
            faas_log_dropped_total());
    write_guards(out);
    gw_h2c_metrics_write(out);
}
