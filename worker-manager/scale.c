/* worker-manager/scale.c - scaling on an agent's OVERLOAD: how many instances a report
 * asks for, and the metrics of it (reports by signal, time from report to the new
 * instance's READY and to its first request). */
#define WM_STATE
#include "worker-manager/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The signals' names, as agents send them (faas.proto AgentEvent.signal). */
static const char *const SIGNALS[WM_SIG_N] = {"queueing",      "runq_latency", "cpu_pressure",
                                              "cpu_throttled", "concurrency",  "unknown"};
/* Seconds: the goal for report to first request is 10 ms, a warm-pool start takes tens of
 * ms to READY, a cold pool or a slow init seconds. */
static const double BUCKETS[WM_SCALE_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

int wm_scale_signal(const char *name)
{
    for (int i = 0; name != NULL && i < WM_SIG_UNKNOWN; i++)
        if (strcmp(name, SIGNALS[i]) == 0)
            return i;
    return WM_SIG_UNKNOWN;
}

void wm_hist_observe(wm_hist_t *h, uint64_t us)
{
    int b = 0;
    while (b < WM_SCALE_BUCKETS && (double)us / 1e6 > BUCKETS[b])
        b++;
    h->bucket[b]++;
    h->sum_us += us;
    h->count++;
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

static void put_hist(char *buf, size_t cap, int *n, const char *name, const char *help, const wm_hist_t *h)
{
    put(buf, cap, n, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < WM_SCALE_BUCKETS; b++) {
        cum += h->bucket[b];
        put(buf, cap, n, "%s_bucket{le=\"%g\"} %llu\n", name, BUCKETS[b], (unsigned long long)cum);
    }
    put(buf, cap, n, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)h->count,
        name, (double)h->sum_us / 1e6, name, (unsigned long long)h->count);
}

void wm_scale_metrics(const wm_scale_stats_t *st, char *buf, size_t cap, int *n)
{
    put(buf, cap, n,
        "# HELP faas_wm_overload_events_total OVERLOAD reports received from agents, by the signal that fired.\n"
        "# TYPE faas_wm_overload_events_total counter\n");
    for (int i = 0; i < WM_SIG_N; i++)
        put(buf, cap, n, "faas_wm_overload_events_total{signal=\"%s\"} %llu\n", SIGNALS[i],
            (unsigned long long)st->by_signal[i]);
    put_hist(buf, cap, n, "faas_wm_scale_up_ready_seconds",
             "Time from an OVERLOAD report to the READY of an instance it started.", &st->ready);
    put_hist(buf, cap, n, "faas_wm_scale_up_first_request_seconds",
             "Time from an OVERLOAD report to the first request of an instance it started.", &st->first);
}

uint32_t wm_scale_count(uint32_t degree, uint32_t starting, uint32_t have, uint32_t max)
{
    uint32_t want = degree ? degree : 1; /* an agent that says no degree asks for one */
    if (starting >= want || have >= max)
        return 0; /* those on their way answer it */
    want -= starting;
    return want < max - have ? want : max - have;
}

uint32_t wm_scale_cpu_cap(int signal, uint32_t max, uint32_t cpu_millis, uint32_t ncpu)
{
    if (signal != WM_SIG_RUNQ && signal != WM_SIG_CPU_PRESSURE && signal != WM_SIG_CPU_THROTTLED)
        return max;
    uint64_t fit = cpu_millis != 0 ? (uint64_t)(ncpu ? ncpu : 1) * 1000u / cpu_millis : 1;
    if (fit < 1)
        fit = 1; /* a quota past the host's CPUs: one instance takes them all */
    return fit < max ? (uint32_t)fit : max;
}
