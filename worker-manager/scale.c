/* worker-manager/scale.c - scaling on an agent's OVERLOAD: how many instances a report
 * asks for, and the metrics of it (reports by signal, time from report to READY). */
#define WM_STATE
#include "worker-manager/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The signals' names, as agents send them (faas.proto AgentEvent.signal). */
static const char *const SIGNALS[WM_SIG_N] = {"queueing",      "runq_latency", "cpu_pressure",
                                              "cpu_throttled", "concurrency",  "unknown"};
/* Report to READY, seconds: a warm-pool start is ~0.1 s, a cold pool or slow init seconds. */
static const double BUCKETS[WM_SCALE_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

int wm_scale_signal(const char *name)
{
    for (int i = 0; name != NULL && i < WM_SIG_UNKNOWN; i++)
        if (strcmp(name, SIGNALS[i]) == 0)
            return i;
    return WM_SIG_UNKNOWN;
}

void wm_scale_observe(wm_scale_stats_t *st, uint64_t us)
{
    int b = 0;
    while (b < WM_SCALE_BUCKETS && (double)us / 1e6 > BUCKETS[b])
        b++;
    st->ready_hist[b]++;
    st->ready_sum_us += us;
    st->ready_count++;
}

static void put(char *buf, size_t cap, int *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void put(char *buf, size_t cap, int *n, const char *fmt, ...)
{
    if (*n < 0 || (size_t)*n >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *n, cap - (size_t)*n, fmt, ap);
    va_end(ap);
    *n = w < 0 ? -1 : *n + w;
}

void wm_scale_metrics(const wm_scale_stats_t *st, char *buf, size_t cap, int *n)
{
    put(buf, cap, n,
        "# HELP faas_wm_overload_events_total OVERLOAD reports received from agents, by the signal that fired.\n"
        "# TYPE faas_wm_overload_events_total counter\n");
    for (int i = 0; i < WM_SIG_N; i++)
        put(buf, cap, n, "faas_wm_overload_events_total{signal=\"%s\"} %llu\n", SIGNALS[i],
            (unsigned long long)st->by_signal[i]);
    put(buf, cap, n,
        "# HELP faas_wm_scale_up_ready_seconds Time from an OVERLOAD report to the READY of an instance it started.\n"
        "# TYPE faas_wm_scale_up_ready_seconds histogram\n");
    uint64_t cum = 0;
    for (int b = 0; b < WM_SCALE_BUCKETS; b++) {
        cum += st->ready_hist[b];
        put(buf, cap, n, "faas_wm_scale_up_ready_seconds_bucket{le=\"%g\"} %llu\n", BUCKETS[b],
            (unsigned long long)cum);
    }
    put(buf, cap, n, "faas_wm_scale_up_ready_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)st->ready_count);
    put(buf, cap, n, "faas_wm_scale_up_ready_seconds_sum %.6f\nfaas_wm_scale_up_ready_seconds_count %llu\n",
        (double)st->ready_sum_us / 1e6, (unsigned long long)st->ready_count);
}

uint32_t wm_scale_count(uint32_t degree, uint32_t starting, uint32_t have, uint32_t max)
{
    uint32_t want = degree ? degree : 1; /* an agent that says no degree asks for one */
    if (starting >= want || have >= max)
        return 0; /* those on their way answer it */
    want -= starting;
    return want < max - have ? want : max - have;
}
