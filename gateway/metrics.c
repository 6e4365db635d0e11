/* gateway/metrics.c - request counters and latency histograms per function,
 * rendered as Prometheus text on /metrics. Loop thread only: no locks. */
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
    code_count_t *codes;
    uint64_t bucket[GW_NBUCKETS];
    uint64_t count;
    double sum_s;
} fn_metrics_t;

static fn_metrics_t *fns;
static uint64_t n_other;

static fn_metrics_t *fn_get(const char *name, size_t len)
{
    fn_metrics_t *m;
    for (m = fns; m != NULL; m = m->next)
        if (strlen(m->name) == len && memcmp(m->name, name, len) == 0)
            return m;
    if ((m = calloc(1, sizeof(*m))) == NULL)
        return NULL;
    snprintf(m->name, sizeof(m->name), "%.*s", (int)len, name);
    m->next = fns;
    fns = m;
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

void gw_metrics_write(FILE *out)
{
    fprintf(out, "# HELP faas_requests_total Requests to functions by status code and protocol.\n"
                 "# TYPE faas_requests_total counter\n");
    for (fn_metrics_t *m = fns; m != NULL; m = m->next)
        for (code_count_t *c = m->codes; c != NULL; c = c->next)
            fprintf(out, "faas_requests_total{function=\"%s\",code=\"%d\",protocol=\"%s\"} %" PRIu64 "\n", m->name,
                    c->code, c->proto == 3 ? "grpc" : c->proto == 2 ? "thrift" : c->proto ? "h2" : "http1.1", c->n);
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
            "# HELP faas_gateway_other_requests_total Requests outside /function/ (health, metrics, 404).\n"
            "# TYPE faas_gateway_other_requests_total counter\nfaas_gateway_other_requests_total %" PRIu64 "\n",
            n_other);
}
