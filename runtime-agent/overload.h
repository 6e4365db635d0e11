/* runtime-agent/overload.h - the agent's overload detector: pure functions fed one
 * sample of what the pod does per tick (requests in flight, completions and their
 * latency, the cgroup's CPU pressure and throttling), judged against the instance's
 * own recent baseline. No I/O here: control.c samples, this decides. */
#ifndef AGENT_OVERLOAD_H
#define AGENT_OVERLOAD_H

#include <stdint.h>

/* How often the agent samples (the detector accepts any spacing; windows are in time). */
#define AGENT_OL_TICK_US 100000u
/* Samples kept: one time constant's worth at the tick, plus one. */
#define AGENT_OL_RING 16

/* One observation. Counters are cumulative since the agent started; the detector takes
 * differences. has_* = 0 when the pod cannot see that signal. */
typedef struct {
    uint64_t t_us;        /* monotonic time the sample was taken */
    uint32_t inflight;    /* requests, calls and streams in the agent now */
    uint64_t completions; /* requests that ended */
    uint64_t latency_us;  /* sum of the ended requests' time in the agent */
    int has_psi;          /* cgroup v2 cpu.pressure readable */
    uint64_t psi_some_us; /* cpu.pressure "some" total */
    int has_throttle;     /* cpu.stat with a quota set */
    uint64_t nr_periods, nr_throttled;
    int has_runq;          /* the worker manager sends run-queue figures (eBPF) */
    uint64_t runq_wait_ns; /* the pod's tasks' waits for a CPU, summed */
} agent_ol_sample_t;

enum { AGENT_OL_NONE = 0, AGENT_OL_FIRE, AGENT_OL_RECOVER };

/* What feeding a sample decided. signal is a static string (faas.proto's names). */
typedef struct {
    int action;      /* AGENT_OL_NONE, _FIRE (also repeated while it stays overloaded), _RECOVER */
    uint32_t degree; /* FIRE: how many more instances the pod judges it needs (>= 1) */
    const char *signal;
    double ratio; /* queueing: windowed wait over baseline (for the log line) */
} agent_ol_verdict_t;

typedef struct {
    agent_ol_sample_t ring[AGENT_OL_RING];
    unsigned n, head;        /* samples held, index of the newest */
    uint64_t base_us;        /* baseline time in the agent, learnt while nothing queued */
    uint32_t cap;            /* the concurrency cap last reached */
    int cap_hot;             /* in flight has not gone below it since */
    int overloaded;          /* FIRE sent, RECOVER not yet */
    const char *signal;      /* the signal that fired */
    uint64_t fired_us;       /* last FIRE */
    uint64_t clear_since_us; /* every signal below its clear level since (0: not clear) */
    uint32_t last_degree;
    double cpus; /* CPUs the pod may use (its quota, else the host's); set after init */
} agent_ol_t;

/* Starts a detector with no history. */
void agent_ol_init(agent_ol_t *d);

/* Takes one sample; returns the verdict (action NONE most of the time). */
agent_ol_verdict_t agent_ol_feed(agent_ol_t *d, const agent_ol_sample_t *s);

/* The concurrency hard cap reached: the last-resort trigger, through the same state so
 * that a RECOVERED follows it. Returns the verdict to report (NONE if already reported). */
agent_ol_verdict_t agent_ol_cap(agent_ol_t *d, uint64_t now_us, uint32_t inflight, uint32_t cap);

/* The worker manager's run-queue probe saw waiting of the pod's tasks wait for a CPU,
 * two or more without a break for a millisecond, and reported the overload itself (the
 * agent, in the saturated cgroup, would see it late). The detector takes the overload
 * on as if it had fired, so that RECOVERED follows once every signal is clear; FIRE
 * here is for the log only (NONE if it was already reported within a reminder period). */
agent_ol_verdict_t agent_ol_runq_alert(agent_ol_t *d, uint64_t now_us, uint32_t waiting);

#endif
