/* gateway/metrics.c - request counters and latency histograms per function,
 * rendered as Prometheus text on /metrics. Loop thread only: no locks. */
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
    double sum_s;
} fn_metrics_t;

static fn_metrics_t *fns;
static uint64_t n_other;
/* name -> entry, open addressing: looked up on every request, and entries are
 * never removed, so a list walk would grow with every name ever seen */
static fn_metrics_t **idx;
static size_t idx_cap, n_fns;

static void idx_put(fn_metrics_t **t, size_t cap, fn_metrics_t *m)
{
    size_t i = faas_hash_name(m->name, m->len) & (cap - 1);
    while (t[i] != NULL)
        i = (i + 1) & (cap - 1);
    t[i] = m;
}

static int idx_reserve(void)
{
    if (2 * (n_fns + 1) < idx_cap)
        return 0;
    size_t cap = idx_cap ? idx_cap * 2 : 32;
    fn_metrics_t **t = calloc(cap, sizeof(*t));
    if (t == NULL)
        return -1;
    for (fn_metrics_t *m = fns; m != NULL; m = m->next)
        idx_put(t, cap, m);
    free(idx);
    idx = t;
    idx_cap = cap;
    return 0;
}

static fn_metrics_t *fn_get(const char *name, size_t len)
{
    if (len >= sizeof(fns->name))
        len = sizeof(fns->name) - 1; /* names are at most 63 chars (gw_route_parse) */
    if (idx_cap != 0)
        for (size_t i = faas_hash_name(name, len) & (idx_cap - 1); idx[i] != NULL; i = (i + 1) & (idx_cap - 1))
            if (idx[i]->len == len && memcmp(idx[i]->name, name, len) == 0)
                return idx[i];
    fn_metrics_t *m;
    if (idx_reserve() != 0 || (m = calloc(1, sizeof(*m))) == NULL)
        return NULL;
    memcpy(m->name, name, len);
    m->len = len;
    m->next = fns;
    fns = m;
    n_fns++;
    idx_put(idx, idx_cap, m);
    return m;
}

void gw_metrics_record(const char *fn, size_t len, int code, int h2, uint64_t latency_us)
{
    fn_metrics_t *m = fn_get(fn, len);
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
        m->codes = c;
    }
    c->n++;
    double s = (double)latency_us / 1e6;
    for (int i = 0; i < GW_NBUCKETS; i++)
        if (s <= buckets_s[i])
            m->bucket[i]++;
    m->count++;
    m->sum_s += s;
}

void gw_metrics_other(void)
{
    n_other++;
}

static uint64_t n_refused[GW_NPORTS][2], n_limit_414, n_limit_431;

void gw_metrics_conn_refused(int port, int reason)
{
    if (port >= 0 && port < GW_NPORTS)
        n_refused[port][reason != 0]++;
}

void gw_metrics_http_limit(int status)
{
    if (status == 414)
        n_limit_414++;
    else
        n_limit_431++;
}

/* Connection caps, size limits and framing rejections (gateway/conncap.c, framing.c). */
static void write_guards(FILE *out)
{
    static const char *const ports[GW_NPORTS] = {"http", "grpc", "thrift"};
    fprintf(out, "# HELP faas_gw_conn_refused_total Connections closed at accept: the client's or the gateway's "
                 "connection cap was reached.\n# TYPE faas_gw_conn_refused_total counter\n");
    for (int p = 0; p < GW_NPORTS; p++)
        for (int r = 0; r < 2; r++)
            fprintf(out, "faas_gw_conn_refused_total{port=\"%s\",reason=\"%s\"} %" PRIu64 "\n", ports[p],
                    r ? "total" : "per_client", n_refused[p][r]);
    fprintf(out,
            "# HELP faas_gw_connections Connections held now, all ports.\n# TYPE faas_gw_connections gauge\n"
            "faas_gw_connections %u\n",
            gw_conncap_open());
    fprintf(out,
            "# HELP faas_gw_http_too_large_total HTTP requests refused before routing: 414 path too long, 431 "
            "header fields too large.\n# TYPE faas_gw_http_too_large_total counter\n"
            "faas_gw_http_too_large_total{code=\"414\"} %" PRIu64
            "\nfaas_gw_http_too_large_total{code=\"431\"} %" PRIu64 "\n",
            n_limit_414, n_limit_431);
    uint64_t calls, rej[GW_FRAMING_NRULES];
    gw_framing_stats(&calls, rej);
    fprintf(out, "# HELP faas_gw_http1_framing_rejected_total HTTP/1 request heads answered 400 and closed for "
                 "ambiguous framing, by rule.\n# TYPE faas_gw_http1_framing_rejected_total counter\n");
    for (int r = 1; r < GW_FRAMING_NRULES; r++)
        fprintf(out, "faas_gw_http1_framing_rejected_total{rule=\"%s\"} %" PRIu64 "\n", gw_http1_framing_rule_name(-r),
                rej[r]);
}

void gw_metrics_write(FILE *out)
{
    fprintf(out, "# HELP faas_requests_total Requests to functions by status code and protocol.\n"
                 "# TYPE faas_requests_total counter\n");
    for (fn_metrics_t *m = fns; m != NULL; m = m->next)
        for (code_count_t *c = m->codes; c != NULL; c = c->next)
            fprintf(out, "faas_requests_total{function=\"%s\",code=\"%d\",protocol=\"%s\"} %" PRIu64 "\n", m->name,
                    c->code,
                    c->proto == 3   ? "grpc"
                    : c->proto == 2 ? "thrift"
                    : c->proto      ? "h2"
                                    : "http1.1",
                    c->n);
    fprintf(out, "# HELP faas_request_duration_seconds Time from request to the end of the response.\n"
                 "# TYPE faas_request_duration_seconds histogram\n");
    for (fn_metrics_t *m = fns; m != NULL; m = m->next) {
        for (int i = 0; i < GW_NBUCKETS; i++)
            fprintf(out, "faas_request_duration_seconds_bucket{function=\"%s\",le=\"%g\"} %" PRIu64 "\n", m->name,
                    buckets_s[i], m->bucket[i]);
        fprintf(out, "faas_request_duration_seconds_bucket{function=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", m->name,
                m->count);
        fprintf(out, "faas_request_duration_seconds_sum{function=\"%s\"} %.6f\n", m->name, m->sum_s);
        fprintf(out, "faas_request_duration_seconds_count{function=\"%s\"} %" PRIu64 "\n", m->name, m->count);
    }
    fprintf(out,
            "# HELP faas_gateway_other_requests_total Requests that reached no deployed function (health, metrics, "
            "unknown paths and function names).\n"
            "# TYPE faas_gateway_other_requests_total counter\nfaas_gateway_other_requests_total %" PRIu64 "\n",
            n_other);
    fprintf(out,
            "# HELP faas_log_dropped_lines_total Log lines dropped by the per-site rate limit.\n"
            "# TYPE faas_log_dropped_lines_total counter\nfaas_log_dropped_lines_total %" PRIu64 "\n",
            faas_log_dropped_total());
    write_guards(out);
    gw_h2c_metrics_write(out);
}
