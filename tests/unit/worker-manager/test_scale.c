/* Unit tests: scaling on OVERLOAD (worker-manager/scale.c). */
#include <criterion/criterion.h>
#include <string.h>

#define WM_STATE
#include "worker-manager/internal.h"

Test(scale, starts_the_degree_less_those_on_their_way_under_max)
{
    cr_expect_eq(wm_scale_count(3, 0, 1, 10), 3);
    cr_expect_eq(wm_scale_count(3, 1, 2, 10), 2);
    cr_expect_eq(wm_scale_count(3, 3, 4, 10), 0);
    cr_expect_eq(wm_scale_count(8, 0, 1, 4), 3, "capped by max_instances");
    cr_expect_eq(wm_scale_count(2, 0, 4, 4), 0, "at max");
    cr_expect_eq(wm_scale_count(0, 0, 1, 4), 1, "no degree (an older agent): one");
}

Test(scale, signals_and_metrics)
{
    cr_expect_eq(wm_scale_signal("queueing"), WM_SIG_QUEUEING);
    cr_expect_eq(wm_scale_signal("cpu_throttled"), WM_SIG_CPU_THROTTLED);
    cr_expect_eq(wm_scale_signal("runq_latency"), WM_SIG_RUNQ);
    cr_expect_eq(wm_scale_signal(""), WM_SIG_UNKNOWN);
    cr_expect_eq(wm_scale_signal(NULL), WM_SIG_UNKNOWN);
    wm_scale_stats_t st;
    memset(&st, 0, sizeof(st));
    st.by_signal[WM_SIG_QUEUEING] = 2;
    wm_hist_observe(&st.ready, 80000);
    wm_hist_observe(&st.ready, 40000000);
    wm_hist_observe(&st.first, 7000);
    char buf[8192];
    int n = 0;
    wm_scale_metrics(&st, buf, sizeof(buf), &n);
    cr_assert(n > 0 && (size_t)n < sizeof(buf));
    cr_expect(strstr(buf, "faas_wm_overload_events_total{signal=\"queueing\"} 2\n") != NULL);
    cr_expect(strstr(buf, "faas_wm_scale_up_ready_seconds_bucket{le=\"0.1\"} 1\n") != NULL, "%s", buf);
    cr_expect(strstr(buf, "faas_wm_scale_up_ready_seconds_bucket{le=\"30\"} 1\n") != NULL);
    cr_expect(strstr(buf, "faas_wm_scale_up_ready_seconds_bucket{le=\"+Inf\"} 2\n") != NULL);
    cr_expect(strstr(buf, "faas_wm_scale_up_ready_seconds_count 2\n") != NULL);
    cr_expect(strstr(buf, "faas_wm_scale_up_first_request_seconds_bucket{le=\"0.005\"} 0\n") != NULL, "%s", buf);
    cr_expect(strstr(buf, "faas_wm_scale_up_first_request_seconds_bucket{le=\"0.01\"} 1\n") != NULL);
    cr_expect(strstr(buf, "faas_wm_scale_up_first_request_seconds_sum 0.007000\n") != NULL);
}

Test(scale, cpu_signals_stop_at_what_the_host_cpus_can_run)
{
    /* 1-CPU quota on a 2-CPU host: two instances side by side, whatever the degree */
    cr_expect_eq(wm_scale_cpu_cap(WM_SIG_RUNQ, 100, 1000, 2), 2);
    cr_expect_eq(wm_scale_count(16, 0, 1, wm_scale_cpu_cap(WM_SIG_RUNQ, 100, 1000, 2)), 1);
    cr_expect_eq(wm_scale_count(16, 0, 2, wm_scale_cpu_cap(WM_SIG_RUNQ, 100, 1000, 2)), 0);
    cr_expect_eq(wm_scale_cpu_cap(WM_SIG_CPU_PRESSURE, 100, 250, 2), 8);
    cr_expect_eq(wm_scale_cpu_cap(WM_SIG_CPU_THROTTLED, 5, 250, 2), 5, "never past max_instances");
    /* no quota: one pod may use every CPU, its waits are the host's */
    cr_expect_eq(wm_scale_cpu_cap(WM_SIG_RUNQ, 100, 0, 2), 1);
    cr_expect_eq(wm_scale_cpu_cap(WM_SIG_RUNQ, 100, 4000, 2), 1, "a quota past the host");
    /* queueing (a lock, I/O) is not bounded by CPUs */
    cr_expect_eq(wm_scale_cpu_cap(WM_SIG_QUEUEING, 100, 1000, 2), 100);
    cr_expect_eq(wm_scale_cpu_cap(WM_SIG_CONCURRENCY, 100, 1000, 2), 100);
}
