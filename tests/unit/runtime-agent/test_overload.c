/* Unit tests: the overload detector (runtime-agent/overload.c) on synthetic traces of
 * what a pod does, one sample per 100 ms tick, as control.c feeds it. */
#include <criterion/criterion.h>
#include <string.h>

#include "runtime-agent/overload.h"

#define TICK AGENT_OL_TICK_US

/* A trace being built: cumulative counters advanced one tick at a time. */
typedef struct {
    agent_ol_t d;
    agent_ol_sample_t s;
    int fires, recovers;
    uint64_t first_fire_us, recover_us;
    agent_ol_verdict_t last_fire;
} trace_t;

static void start(trace_t *t)
{
    memset(t, 0, sizeof(*t));
    agent_ol_init(&t->d);
    t->s.t_us = 1000000;
}

/* One tick: inflight now, done requests that ended, each having taken lat_us. */
static agent_ol_verdict_t tick(trace_t *t, uint32_t inflight, uint32_t done, uint64_t lat_us)
{
    t->s.t_us += TICK;
    t->s.inflight = inflight;
    t->s.completions += done;
    t->s.latency_us += (uint64_t)done * lat_us;
    agent_ol_verdict_t v = agent_ol_feed(&t->d, &t->s);
    if (v.action == AGENT_OL_FIRE) {
        if (t->fires++ == 0)
            t->first_fire_us = t->s.t_us;
        t->last_fire = v;
    } else if (v.action == AGENT_OL_RECOVER) {
        t->recovers++;
        t->recover_us = t->s.t_us;
    }
    return v;
}

/* Sequential client on a 20 ms handler: 5 per tick, one in flight. */
static void light(trace_t *t, int ticks)
{
    for (int i = 0; i < ticks; i++)
        tick(t, i % 2, 5, 20000);
}

Test(overload, steady_light_load_never_fires)
{
    trace_t t;
    start(&t);
    light(&t, 600); /* a minute */
    cr_expect_eq(t.fires, 0);
    cr_expect_eq(t.recovers, 0);
}

Test(overload, fast_handler_under_concurrency_never_fires)
{
    trace_t t;
    start(&t);
    /* 8 clients on a 200 us handler: plenty in flight, waits well under the floor */
    for (int i = 0; i < 300; i++)
        tick(&t, 8, 4000, 1500);
    cr_expect_eq(t.fires, 0);
}

/* A server under a lock (100 ms per request): light, then 8 clients at once. The queue
 * lengthens: each request waits for the ones before it. */
Test(overload, step_to_saturation_fires_within_one_time_constant)
{
    trace_t t;
    start(&t);
    for (int i = 0; i < 100; i++)
        tick(&t, 1, 1, 100000);
    uint64_t step = t.s.t_us;
    for (int i = 0; i < 30; i++)
        tick(&t, 8, 1, (uint64_t)100000 * (i < 8 ? i + 1 : 8));
    cr_assert_geq(t.fires, 1);
    cr_expect_leq(t.first_fire_us - step, 1000000, "fired %llu us after the step",
                  (unsigned long long)(t.first_fire_us - step));
    cr_expect_str_eq(t.last_fire.signal, "queueing");
    cr_expect_geq(t.last_fire.degree, 2);
    cr_expect_leq(t.last_fire.degree, 8);
}

Test(overload, stall_fires)
{
    trace_t t;
    start(&t);
    light(&t, 50);
    for (int i = 0; i < 20; i++) /* requests keep coming, none ends */
        tick(&t, 2 + (uint32_t)i, 0, 0);
    cr_expect_geq(t.fires, 1);
}

Test(overload, recovery_after_hysteresis)
{
    trace_t t;
    start(&t);
    for (int i = 0; i < 100; i++)
        tick(&t, 1, 1, 100000);
    for (int i = 0; i < 30; i++)
        tick(&t, 8, 1, 800000);
    cr_assert_geq(t.fires, 1);
    /* half the load moved to a new instance: ratio 2, between clear and fire: stays */
    for (int i = 0; i < 30; i++)
        tick(&t, 2, 1, 200000);
    cr_expect_eq(t.recovers, 0, "no RECOVERED between the clear and the fire level");
    uint64_t calm = t.s.t_us;
    for (int i = 0; i < 40; i++)
        tick(&t, 1, 1, 100000);
    cr_assert_eq(t.recovers, 1);
    cr_expect_geq(t.recover_us - calm, 1000000, "RECOVERED only after the clear level held a window");
    cr_expect_leq(t.recover_us - calm, 3000000);
}

Test(overload, noisy_sawtooth_does_not_flap)
{
    trace_t t;
    start(&t);
    light(&t, 100);
    /* bursts: in flight 0..3 and waits of 1 to 2.5 baselines, period 400 ms */
    static const uint32_t q[4] = {0, 1, 2, 3};
    static const uint64_t w[4] = {20000, 30000, 40000, 50000};
    for (int i = 0; i < 600; i++)
        tick(&t, q[i % 4], 5, w[i % 4]);
    cr_expect_eq(t.fires, 0);
    cr_expect_eq(t.recovers, 0);
}

Test(overload, saturated_sawtooth_fires_once_and_does_not_flap)
{
    trace_t t;
    start(&t);
    for (int i = 0; i < 100; i++)
        tick(&t, 1, 1, 100000);
    /* overloaded, with waits swinging between 2 and 6 baselines around a mean of 4 */
    for (int i = 0; i < 100; i++)
        tick(&t, 4 + (uint32_t)(i % 2) * 4, 1, i % 2 ? 600000 : 200000);
    cr_expect_geq(t.fires, 1);
    cr_expect_eq(t.recovers, 0);
}

/* Two requests in flight, served at their usual pace: CPU signals judge a pod with
 * requests to spread (with fewer, see cpu_signals_need_requests_to_spread). */
static agent_ol_verdict_t cpu_tick(trace_t *t, uint64_t psi_us, uint64_t periods, uint64_t throttled)
{
    t->s.has_psi = t->s.has_throttle = 1;
    t->s.psi_some_us += psi_us;
    t->s.nr_periods += periods;
    t->s.nr_throttled += throttled;
    return tick(t, 2, 5, 20000);
}

Test(overload, cpu_throttling_fires_and_recovers)
{
    trace_t t;
    start(&t);
    for (int i = 0; i < 50; i++)
        cpu_tick(&t, 0, 1, 0);
    for (int i = 0; i < 20; i++)
        cpu_tick(&t, 0, 1, 1); /* every period throttled */
    cr_assert_geq(t.fires, 1);
    cr_expect_str_eq(t.last_fire.signal, "cpu_throttled");
    cr_expect(t.last_fire.degree >= 1 && t.last_fire.degree <= 2, "throttling cannot say by how much");
    for (int i = 0; i < 40; i++)
        cpu_tick(&t, 0, 1, 0);
    cr_expect_eq(t.recovers, 1);
}

Test(overload, cpu_pressure_fires_with_degree)
{
    trace_t t;
    start(&t);
    for (int i = 0; i < 50; i++)
        cpu_tick(&t, 1000, 1, 0);
    cr_expect_eq(t.fires, 0);
    for (int i = 0; i < 10; i++)
        cpu_tick(&t, 80000, 1, 0); /* tasks wait 80% of the time */
    cr_assert_eq(t.fires, 1, "fires within a window");
    cr_expect_str_eq(t.last_fire.signal, "cpu_pressure");
    for (int i = 0; i < 25; i++)
        cpu_tick(&t, 80000, 1, 0);
    cr_assert_eq(t.fires, 2, "reminds once the window is all pressure");
    cr_expect_eq(t.last_fire.degree, 4); /* 0.8 / 0.2 */
}

Test(overload, missing_cpu_signals_stay_quiet)
{
    trace_t t;
    start(&t);
    t.s.has_psi = 0;
    t.s.psi_some_us = 999999999; /* garbage when absent is ignored */
    light(&t, 100);
    cr_expect_eq(t.fires, 0);
}

Test(overload, concurrency_cap_fires_then_recovers)
{
    trace_t t;
    start(&t);
    light(&t, 20);
    agent_ol_verdict_t v = agent_ol_cap(&t.d, t.s.t_us, 4, 4);
    cr_expect_eq(v.action, AGENT_OL_FIRE);
    cr_expect_str_eq(v.signal, "concurrency");
    cr_expect_eq(v.degree, 1);
    cr_expect_eq(agent_ol_cap(&t.d, t.s.t_us + 1000, 4, 4).action, AGENT_OL_NONE, "no report twice at once");
    tick(&t, 4, 5, 20000);
    cr_expect_eq(t.recovers, 0, "still at the cap");
    light(&t, 30);
    cr_expect_eq(t.recovers, 1);
}

/* One tick with the worker manager's run-queue figures: the pod's tasks waited wait_us
 * for a CPU in it, summed (a quarter of a task on average per 25 ms). */
static agent_ol_verdict_t runq_tick(trace_t *t, uint64_t wait_us)
{
    t->s.has_runq = 1;
    t->s.runq_wait_ns += wait_us * 1000;
    return tick(t, 2, 5, 20000);
}

Test(overload, cpu_signals_need_requests_to_spread)
{
    trace_t t;
    start(&t);
    t.d.cpus = 1.0;
    t.s.has_psi = t.s.has_throttle = t.s.has_runq = 1;
    for (int i = 0; i < 100; i++) {
        /* a sequential client on a host busy with other work: the pod's tasks wait, its
         * quota binds, yet a second instance would serve nobody faster */
        t.s.psi_some_us += 90000;
        t.s.nr_periods += 1;
        t.s.nr_throttled += 1;
        t.s.runq_wait_ns += 150000000ull;
        tick(&t, i % 2, 5, 20000);
    }
    cr_expect_eq(t.fires, 0);
}

Test(overload, runq_latency_fires_by_tasks_waiting_per_cpu_and_recovers)
{
    trace_t t;
    start(&t);
    t.d.cpus = 1.0;
    for (int i = 0; i < 50; i++)
        runq_tick(&t, 5000); /* 0.05 waiting: a busy host's noise */
    cr_expect_eq(t.fires, 0);
    for (int i = 0; i < 10; i++)
        runq_tick(&t, 150000); /* 1.5 tasks waiting for the one CPU all along */
    cr_assert_eq(t.fires, 1, "fires within a window");
    cr_expect_str_eq(t.last_fire.signal, "runq_latency");
    for (int i = 0; i < 25; i++)
        runq_tick(&t, 150000);
    cr_assert_eq(t.fires, 2, "reminds once the window is all waiting");
    cr_expect_eq(t.last_fire.degree, 2, "1.5 CPUs more wanted: two more instances");
    for (int i = 0; i < 30; i++)
        runq_tick(&t, 1000);
    cr_expect_eq(t.recovers, 1);
}

Test(overload, runq_latency_is_per_cpu_of_the_pod)
{
    trace_t t;
    start(&t);
    t.d.cpus = 4.0;
    for (int i = 0; i < 30; i++)
        runq_tick(&t, 150000); /* 1.5 waiting for 4 CPUs: under the fire level */
    cr_expect_eq(t.fires, 0);
}

Test(overload, runq_without_figures_stays_quiet)
{
    trace_t t;
    start(&t);
    for (int i = 0; i < 30; i++) {
        t.s.runq_wait_ns += 900000000ull; /* garbage without has_runq is ignored */
        tick(&t, 1, 5, 20000);
    }
    cr_expect_eq(t.fires, 0);
}

Test(overload, runq_alert_is_taken_on_and_recovered_like_any_signal)
{
    trace_t t;
    start(&t);
    t.d.cpus = 2.0;
    light(&t, 20);
    uint64_t now = t.s.t_us + 1000;
    agent_ol_verdict_t v = agent_ol_runq_alert(&t.d, now, 7);
    cr_assert_eq(v.action, AGENT_OL_FIRE);
    cr_expect_str_eq(v.signal, "runq_latency");
    cr_expect_eq(v.degree, 4, "7 waiting for 2 CPUs: 3.5, so four more");
    cr_expect_eq(agent_ol_runq_alert(&t.d, now + 50000, 7).action, AGENT_OL_NONE, "reminds at its own pace");
    cr_expect_eq(agent_ol_runq_alert(&t.d, now + 2100000, 7).action, AGENT_OL_FIRE, "after two windows");
    t.s.t_us = now + 2100000;
    for (int i = 0; i < 15; i++)
        runq_tick(&t, 0);
    cr_expect_eq(t.recovers, 1, "recovers like any signal once all are clear for a window");
    cr_expect_eq(t.fires, 0, "the windowed figures never fired on their own");
}
