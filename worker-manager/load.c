/* worker-manager/load.c - the host's CPU and memory headroom for the lease (Worker's
 * cpus_milli, cpu_free_milli, mem_total_bytes, mem_free_bytes), which gateways weigh
 * when they place a cold start (issue 16).
 *
 * CPU: the "cpu" line of /proc/stat, idle (idle + iowait: a CPU waiting on a disk runs
 * nothing) over all time, across the samples the heartbeat thread takes; free is the idle
 * share of the last lease period times the host's CPUs (the cpuN lines, i.e. the online
 * ones). Memory: MemTotal and MemAvailable of /proc/meminfo (what can be had without
 * swapping, which MemFree understates by the page cache). Host-wide figures: a worker
 * manager confined to a cgroup with a CPU limit still reports its host's CPUs.
 *
 * Discovery pushes WORKER_PUT to every watcher only when the worker's bytes change, and
 * the lease is renewed every ttl/3: so values are rounded (CPU to 50 milli-cores, memory
 * to 16 MiB, as proto/faas.proto says) and a reported value moves only when the raw one
 * leaves it by more than three quarters of a step, so a host that idles near a step's edge
 * does not flap between two values at every renewal. */
#include "worker-manager/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define CPU_STEP 50u
#define MEM_STEP (16ull << 20)

int wm_load_parse_stat(const char *text, wm_cpu_sample_t *s)
{
    memset(s, 0, sizeof(*s));
    if (strncmp(text, "cpu ", 4) != 0)
        return -1;
    /* user nice system idle iowait irq softirq steal; guest time is inside user already */
    unsigned long long v[8] = {0};
    int n = sscanf(text + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                   &v[7]);
    if (n < 4)
        return -1;
    for (int i = 0; i < 8; i++)
        s->total += v[i];
    s->idle = v[3] + v[4];
    for (const char *p = strchr(text, '\n'); p != NULL; p = strchr(p + 1, '\n'))
        if (strncmp(p + 1, "cpu", 3) == 0 && p[4] >= '0' && p[4] <= '9')
            s->ncpu++;
    return s->ncpu > 0 && s->total > 0 ? 0 : -1;
}

/* The value in kB of "Name:" in meminfo text, in bytes; 0 or -1. */
static int meminfo_field(const char *text, const char *name, uint64_t *bytes)
{
    size_t nl = strlen(name);
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        unsigned long long kb;
        if (strncmp(p, name, nl) == 0 && p[nl] == ':' && sscanf(p + nl + 1, "%llu", &kb) == 1) {
            *bytes = (uint64_t)kb * 1024u;
            return 0;
        }
    }
    return -1;
}

int wm_load_parse_meminfo(const char *text, uint64_t *total, uint64_t *avail)
{
    return meminfo_field(text, "MemTotal", total) == 0 && meminfo_field(text, "MemAvailable", avail) == 0 ? 0 : -1;
}

uint64_t wm_load_quantize(uint64_t raw, uint64_t last, uint64_t step)
{
    uint64_t d = raw > last ? raw - last : last - raw;
    if (last % step == 0 && d * 4 <= step * 3)
        return last;
    return (raw + step / 2) / step * step;
}

uint32_t wm_load_cpu_free(const wm_cpu_sample_t *old, const wm_cpu_sample_t *now)
{
    uint64_t cpus = (uint64_t)now->ncpu * 1000u;
    if (old == NULL || now->total <= old->total || now->idle < old->idle)
        return now->total ? (uint32_t)(cpus * now->idle / now->total) : 0; /* since boot */
    uint64_t idle = now->idle - old->idle, total = now->total - old->total;
    return (uint32_t)(cpus * (idle < total ? idle : total) / total);
}

/* The oldest sample not older than period_ms before now_ms (at least one is kept): the
 * window reaches back about one lease period. */
static const wm_cpu_sample_t *window_start(wm_load_sampler_t *s, uint64_t now_ms, unsigned period_ms)
{
    while (s->n > 1 && now_ms - s->ring[s->head].t_ms > period_ms) {
        s->head = (s->head + 1) % WM_LOAD_SAMPLES;
        s->n--;
    }
    return s->n ? &s->ring[s->head] : NULL;
}

/* Keeps now, at most one sample per period/4 (a heartbeat on a change comes sooner). */
static void keep(wm_load_sampler_t *s, const wm_cpu_sample_t *now, unsigned period_ms)
{
    if (s->n > 0) {
        const wm_cpu_sample_t *last = &s->ring[(s->head + s->n - 1) % WM_LOAD_SAMPLES];
        if (now->t_ms - last->t_ms < period_ms / 4)
            return;
    }
    if (s->n == WM_LOAD_SAMPLES) {
        s->head = (s->head + 1) % WM_LOAD_SAMPLES;
        s->n--;
    }
    s->ring[(s->head + s->n) % WM_LOAD_SAMPLES] = *now;
    s->n++;
}

void wm_load_update(wm_load_sampler_t *s, const wm_cpu_sample_t *now, uint64_t mem_total, uint64_t mem_avail,
                    unsigned period_ms, wm_load_t *out)
{
    const wm_cpu_sample_t *old = window_start(s, now->t_ms, period_ms);
    uint32_t cpus = now->ncpu * 1000u, free_ = wm_load_cpu_free(old, now);
    keep(s, now, period_ms);
    out->cpus_milli = cpus;
    out->cpu_free_milli = (uint32_t)wm_load_quantize(free_, out->cpu_free_milli, CPU_STEP);
    if (out->cpu_free_milli > cpus)
        out->cpu_free_milli = cpus;
    out->mem_total_bytes = wm_load_quantize(mem_total, out->mem_total_bytes, MEM_STEP);
    out->mem_free_bytes = wm_load_quantize(mem_avail, out->mem_free_bytes, MEM_STEP);
    if (out->mem_free_bytes > out->mem_total_bytes)
        out->mem_free_bytes = out->mem_total_bytes;
}

int wm_load_sample(wm_load_sampler_t *s, unsigned period_ms, wm_load_t *out)
{
    /* /proc/stat has a line per CPU and then some: 64 KiB covers a few hundred CPUs */
    char *stat = malloc(64 << 10), mem[4096];
    wm_cpu_sample_t now;
    uint64_t total, avail;
    int rc = -1;
    if (stat == NULL)
        return -1;
    if (faas_read_small("/proc/stat", stat, 64 << 10) > 0 && wm_load_parse_stat(stat, &now) == 0 &&
        faas_read_small("/proc/meminfo", mem, sizeof(mem)) > 0 && wm_load_parse_meminfo(mem, &total, &avail) == 0) {
        now.t_ms = faas_now_ms();
        wm_load_update(s, &now, total, avail, period_ms, out);
        rc = 0;
    }
    free(stat);
    return rc;
}
