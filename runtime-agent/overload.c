/* runtime-agent/overload.c - the overload detector (see overload.h). Every signal is
 * judged over one window of TAU_US, against the instance's own baseline; the window is
 * the debounce (no fixed gate), and hysteresis (fire and clear levels apart, clear held
 * for a window) keeps a noisy load from flapping. */
#include "runtime-agent/overload.h"

#include <string.h>

/* The time constant: every signal is averaged over this window. Ten samples at the
 * 100 ms tick; short next to a warm-pool start (~100 ms) plus a dispatcher's refresh,
 * long next to one request of a typical function (a few ms). */
#define TAU_US 1000000u
/* The baseline's time constant: BBR keeps its min-RTT for 10 s; the service time of a
 * lightly loaded instance drifts no faster than that. */
#define BASE_TAU_US 10000000u
/* Waits below this are noise for the decision: a new instance costs a cold start of tens
 * of ms, so a few ms of queueing is not worth one. Also floors a trivial handler's
 * baseline (tens of us) so that event-loop jitter is no "3x". */
#define BASE_FLOOR_US 5000u
/* Mean in flight over the window before queueing can be judged: a sequential client
 * keeps at most one in flight and never queues. */
#define QUEUE_MIN 2.0
/* Queueing fires when the window's mean time in the agent is this many baselines (by
 * Little's law, the instance is asked for that many times what it serves), clears below
 * CLEAR_RATIO: apart so that a load hovering at one level does not flap. */
#define FIRE_RATIO 3.0
#define CLEAR_RATIO 1.5
/* The load per instance the degree aims for: a wait of 1.5 baselines is healthy. */
#define TARGET_RATIO 1.5
/* In flight grown by this many over the window while completions did not grow (by more
 * than GROWTH_SLACK): requests pile up faster than the server takes them. */
#define GROW_MIN 4
#define GROWTH_SLACK 1.1
/* CPU: the share of the window that tasks waited for CPU (PSI "some") or the share of
 * CFS periods throttled. At half, the CPU sets the pace; below a fifth it is slack. */
#define CPU_FIRE 0.5
#define CPU_CLEAR 0.2
/* Run-queue latency: the pod's tasks waiting for a CPU, on average over the window, per
 * CPU the pod may use. Half a task per CPU waiting all along means it could use 1.5x
 * the CPU it gets; a fifth is slack. */
#define RUNQ_FIRE 0.5
#define RUNQ_CLEAR 0.2
/* Throttling says the quota binds, not by how much the demand passes it (a pod throttled
 * in every period may want 1.1 or 10 quotas): it asks for at most this many; queueing and
 * PSI, which do measure the excess, ask for more. */
#define THROTTLE_DEGREE_MAX 2u
/* Throttling is judged on at least this many CFS periods (100 ms each by default). */
#define MIN_PERIODS 5
/* While overloaded, FIRE again (if still hot) after two windows: one for the instances
 * asked for to start, one for their effect to show in the window. */
#define REFIRE_US (2u * TAU_US)
/* No single report asks for more than this; the worker manager caps at max_instances. */
#define DEGREE_MAX 16u

void agent_ol_init(agent_ol_t *d)
{
    memset(d, 0, sizeof(*d));
}

static const agent_ol_sample_t *at(const agent_ol_t *d, unsigned back)
{
    return &d->ring[(d->head + AGENT_OL_RING - back) % AGENT_OL_RING];
}

/* The oldest sample within TAU_US of the newest (the window's start). */
static unsigned window_back(const agent_ol_t *d)
{
    const agent_ol_sample_t *now = at(d, 0);
    unsigned b = 0;
    while (b + 1 < d->n && now->t_us - at(d, b + 1)->t_us <= TAU_US)
        b++;
    return b;
}

static uint32_t clamp_degree(double want)
{
    if (!(want >= 1.0))
        return 1;
    if (want >= DEGREE_MAX)
        return DEGREE_MAX;
    uint32_t n = (uint32_t)want;
    return n + (want - (double)n > 1e-6); /* 4.0000001 is 4: float noise asks for none more */
}

typedef struct {
    int hot, clear;
    uint32_t degree;
    double ratio;
} judgement_t;

static double mean_inflight(const agent_ol_t *d, unsigned b)
{
    double sum = 0;
    for (unsigned i = 0; i <= b; i++)
        sum += at(d, i)->inflight;
    return sum / (b + 1);
}

/* The baseline learns only from windows where nothing could queue. */
static void learn_base(agent_ol_t *d, double wait_us, double q, uint64_t dt_us)
{
    if (wait_us <= 0)
        return;
    if (d->base_us == 0) {
        d->base_us = (uint64_t)wait_us;
        return;
    }
    if (d->overloaded || q >= QUEUE_MIN)
        return;
    double a = dt_us >= BASE_TAU_US ? 1.0 : (double)dt_us / BASE_TAU_US;
    d->base_us = (uint64_t)((double)d->base_us + a * (wait_us - (double)d->base_us));
}

static judgement_t judge_queue(agent_ol_t *d, unsigned b)
{
    judgement_t j = {0, 1, 1, 0};
    const agent_ol_sample_t *now = at(d, 0), *old = at(d, b), *prev = at(d, 1);
    uint64_t dc = now->completions - old->completions, span = now->t_us - old->t_us;
    double q = mean_inflight(d, b);
    uint64_t tick_dc = now->completions - prev->completions;
    learn_base(d, tick_dc ? (double)(now->latency_us - prev->latency_us) / tick_dc : 0, q, now->t_us - prev->t_us);
    double base = d->base_us > BASE_FLOOR_US ? (double)d->base_us : BASE_FLOOR_US;
    double wait = dc ? (double)(now->latency_us - old->latency_us) / dc : 0;
    if (dc == 0 && span >= TAU_US && q >= QUEUE_MIN)
        wait = (double)span + base; /* nothing ended in a whole window: a stall */
    j.ratio = wait / base;
    /* judged on half a window at least: a pod's first few samples are no average */
    j.hot = q >= QUEUE_MIN && j.ratio >= FIRE_RATIO && span * 2 >= TAU_US;
    j.clear = q < QUEUE_MIN / 2 || j.ratio < CLEAR_RATIO;
    j.degree = clamp_degree(j.ratio / TARGET_RATIO - 1.0);
    /* piling up: compare the completions of the window's two halves */
    const agent_ol_sample_t *mid = at(d, b / 2);
    uint64_t c1 = mid->completions - old->completions, c2 = now->completions - mid->completions;
    if (b >= 4 && span * 2 >= TAU_US && now->inflight >= old->inflight + GROW_MIN &&
        (double)c2 <= GROWTH_SLACK * (double)c1 + 1.0) {
        j.hot = 1;
        j.clear = 0;
        double served = q / (j.ratio > 1.0 ? j.ratio : 1.0); /* Little: what one instance serves */
        uint32_t g = clamp_degree((double)now->inflight / (served > 1.0 ? served : 1.0) - 1.0);
        j.degree = g > j.degree ? g : j.degree;
    }
    return j;
}

/* Share of time (PSI) or of periods (throttling) the CPU held the pod back. */
static judgement_t judge_share(double share, int valid, uint32_t max_degree)
{
    judgement_t j = {0, 1, 1, share};
    if (!valid)
        return j;
    j.hot = share >= CPU_FIRE;
    j.clear = share < CPU_CLEAR;
    /* waiting a share p of the time means a demand of 1/(1-p) of what it gets */
    j.degree = clamp_degree(share >= 0.99 ? DEGREE_MAX : share / (1.0 - share));
    if (j.degree > max_degree)
        j.degree = max_degree;
    return j;
}

static judgement_t judge_psi(const agent_ol_t *d, unsigned b)
{
    const agent_ol_sample_t *now = at(d, 0), *old = at(d, b);
    uint64_t span = now->t_us - old->t_us;
    int valid = now->has_psi && old->has_psi && span * 2 >= TAU_US && now->psi_some_us >= old->psi_some_us;
    return judge_share(valid ? (double)(now->psi_some_us - old->psi_some_us) / span : 0, valid, DEGREE_MAX);
}

static judgement_t judge_throttle(const agent_ol_t *d, unsigned b)
{
    const agent_ol_sample_t *now = at(d, 0), *old = at(d, b);
    uint64_t dp = now->nr_periods - old->nr_periods, dt = now->nr_throttled - old->nr_throttled;
    int valid =
        now->has_throttle && old->has_throttle && now->nr_periods >= old->nr_periods && dp >= MIN_PERIODS && dt <= dp;
    return judge_share(valid ? (double)dt / dp : 0, valid, THROTTLE_DEGREE_MAX);
}

static double cpus_of(const agent_ol_t *d)
{
    return d->cpus > 0 ? d->cpus : 1.0;
}

/* Tasks waiting for a CPU, per CPU of the pod: x waiting means a demand of 1+x CPUs. */
static judgement_t judge_runq(const agent_ol_t *d, unsigned b)
{
    judgement_t j = {0, 1, 1, 0};
    const agent_ol_sample_t *now = at(d, 0), *old = at(d, b);
    uint64_t span = now->t_us - old->t_us;
    if (!now->has_runq || !old->has_runq || span * 2 < TAU_US || now->runq_wait_ns < old->runq_wait_ns)
        return j;
    double x = (double)(now->runq_wait_ns - old->runq_wait_ns) / 1000.0 / (double)span / cpus_of(d);
    j.ratio = x;
    j.hot = x >= RUNQ_FIRE;
    j.clear = x < RUNQ_CLEAR;
    j.degree = clamp_degree(x);
    return j;
}

static agent_ol_verdict_t fire(agent_ol_t *d, uint64_t now, const char *signal, uint32_t degree, double ratio)
{
    agent_ol_verdict_t v = {AGENT_OL_FIRE, degree, signal, ratio};
    d->overloaded = 1;
    d->signal = signal;
    d->fired_us = now;
    d->clear_since_us = 0;
    d->last_degree = degree;
    return v;
}

#define N_SIGNALS 4

static agent_ol_verdict_t decide(agent_ol_t *d, uint64_t now, const judgement_t j[N_SIGNALS])
{
    static const char *const names[N_SIGNALS] = {"queueing", "runq_latency", "cpu_pressure", "cpu_throttled"};
    agent_ol_verdict_t none = {AGENT_OL_NONE, 0, NULL, j[0].ratio};
    int hot = -1, clear = !d->cap_hot;
    for (int i = 0; i < N_SIGNALS; i++)
        clear = clear && j[i].clear;
    for (int i = 0; i < N_SIGNALS && hot < 0; i++)
        if (j[i].hot)
            hot = i;
    if (hot >= 0 && (!d->overloaded || now - d->fired_us >= REFIRE_US))
        return fire(d, now, names[hot], j[hot].degree, j[0].ratio);
    if (!d->overloaded)
        return none;
    if (!clear) {
        d->clear_since_us = 0;
        return none;
    }
    if (d->clear_since_us == 0)
        d->clear_since_us = now;
    if (now - d->clear_since_us < TAU_US)
        return none;
    agent_ol_verdict_t v = {AGENT_OL_RECOVER, 0, d->signal, j[0].ratio};
    d->overloaded = 0;
    d->clear_since_us = 0;
    return v;
}

agent_ol_verdict_t agent_ol_feed(agent_ol_t *d, const agent_ol_sample_t *s)
{
    agent_ol_verdict_t none = {AGENT_OL_NONE, 0, NULL, 0};
    if (d->n != 0 && s->t_us <= at(d, 0)->t_us)
        return none; /* time must move on */
    d->head = (d->head + 1) % AGENT_OL_RING;
    d->ring[d->head] = *s;
    if (d->n < AGENT_OL_RING)
        d->n++;
    if (d->cap_hot && s->inflight < d->cap)
        d->cap_hot = 0;
    if (d->n < 2)
        return none;
    unsigned b = window_back(d);
    if (b == 0)
        return none;
    judgement_t j[N_SIGNALS] = {judge_queue(d, b), judge_runq(d, b), judge_psi(d, b), judge_throttle(d, b)};
    /* A CPU signal asks for instances to spread requests over: with fewer than two in
     * flight on average there is nothing to spread (a sequential client gains nothing),
     * and the wait is more likely the host's other work than the pod's own demand. */
    if (mean_inflight(d, b) < QUEUE_MIN)
        for (int i = 1; i < N_SIGNALS; i++)
            j[i].hot = 0;
    return decide(d, s->t_us, j);
}

agent_ol_verdict_t agent_ol_cap(agent_ol_t *d, uint64_t now_us, uint32_t inflight, uint32_t cap)
{
    agent_ol_verdict_t none = {AGENT_OL_NONE, 0, NULL, 0};
    d->cap = cap;
    d->cap_hot = 1;
    d->clear_since_us = 0;
    if (d->overloaded && now_us - d->fired_us < REFIRE_US)
        return none;
    /* at the cap the pod cannot see how far past it the demand is: one more */
    return fire(d, now_us, "concurrency", 1, (double)inflight / cap);
}

agent_ol_verdict_t agent_ol_runq_alert(agent_ol_t *d, uint64_t now_us, uint32_t waiting)
{
    agent_ol_verdict_t none = {AGENT_OL_NONE, 0, NULL, 0};
    d->clear_since_us = 0;
    if (d->overloaded && now_us - d->fired_us < REFIRE_US)
        return none;
    double x = (double)waiting / cpus_of(d);
    return fire(d, now_us, "runq_latency", clamp_degree(x), x);
}
