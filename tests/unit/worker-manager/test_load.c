/* The host's load in the lease (load.c): parsing /proc/stat and /proc/meminfo, the idle
 * share over the last lease period, the rounding that keeps an unchanged host from
 * pushing WORKER_PUT at every renewal, and the Worker fields of a packed lease. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WM_STATE /* wm_t, for wm_lease_pack */
#include "proto/faas.pb-c.h"
#include "worker-manager/internal.h"

static const char STAT[] = "cpu  3794049 194448 851750 5490084 40257 0 150931 219362 0 0\n"
                           "cpu0 1765326 94326 416922 2899405 10294 0 74090 109403 0 0\n"
                           "cpu1 2028723 100121 434828 2590678 29962 0 76840 109959 0 0\n"
                           "intr 70306659 0 0 0\nctxt 231008542\nbtime 1764900000\n";

Test(load, stat_gives_idle_total_and_the_online_cpus)
{
    wm_cpu_sample_t s;
    cr_assert_eq(wm_load_parse_stat(STAT, &s), 0);
    cr_expect_eq(s.ncpu, 2);
    cr_expect_eq(s.idle, 5490084ull + 40257ull, "iowait counts as idle");
    cr_expect_eq(s.total, 3794049ull + 194448 + 851750 + 5490084 + 40257 + 0 + 150931 + 219362);
    /* an old kernel's four columns still parse */
    cr_expect_eq(wm_load_parse_stat("cpu 10 0 10 80\ncpu0 10 0 10 80\n", &s), 0);
    cr_expect_eq(s.idle, 80);
    cr_expect_eq(s.total, 100);
    cr_expect_eq(wm_load_parse_stat("cpu0 1 2 3 4\n", &s), -1, "no aggregate line");
    cr_expect_eq(wm_load_parse_stat("cpu  1 2\ncpu0 1 2\n", &s), -1, "too few columns");
    cr_expect_eq(wm_load_parse_stat("cpu  1 2 3 4\n", &s), -1, "no cpuN line");
    cr_expect_eq(wm_load_parse_stat("", &s), -1);
}

Test(load, meminfo_takes_total_and_available_in_bytes)
{
    uint64_t t, a;
    cr_assert_eq(wm_load_parse_meminfo("MemTotal:       24683792 kB\nMemFree:        23318256 kB\n"
                                       "MemAvailable:   24118084 kB\nBuffers: 1 kB\n",
                                       &t, &a),
                 0);
    cr_expect_eq(t, 24683792ull * 1024);
    cr_expect_eq(a, 24118084ull * 1024);
    /* a kernel before 3.14 has no MemAvailable: no figure rather than a wrong one */
    cr_expect_eq(wm_load_parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n", &t, &a), -1);
    cr_expect_eq(wm_load_parse_meminfo("XMemTotal: 1 kB\nMemAvailable: 1 kB\n", &t, &a), -1, "whole names only");
}

Test(load, rounding_moves_only_past_three_quarters_of_a_step)
{
    cr_expect_eq(wm_load_quantize(1024, 0, 50), 1000);
    cr_expect_eq(wm_load_quantize(1025, 0, 50), 1050);
    cr_expect_eq(wm_load_quantize(1030, 1000, 50), 1000, "near the last value: kept");
    cr_expect_eq(wm_load_quantize(1037, 1000, 50), 1000);
    cr_expect_eq(wm_load_quantize(1038, 1000, 50), 1050, "past 3/4 of a step: moves");
    cr_expect_eq(wm_load_quantize(962, 1000, 50), 950);
    cr_expect_eq(wm_load_quantize(7, 0, 50), 0);
    uint64_t mib16 = 16ull << 20;
    cr_expect_eq(wm_load_quantize(100ull << 20, 0, mib16), 96ull << 20);
    cr_expect_eq(wm_load_quantize(107ull << 20, 96ull << 20, mib16), 96ull << 20);
    cr_expect_eq(wm_load_quantize(1000, 1001, 50), 1000, "a last value off the grid is not kept");
}

Test(load, cpu_free_is_the_idle_share_of_the_window)
{
    wm_cpu_sample_t a = {.idle = 1000, .total = 2000, .ncpu = 4}, b = {.idle = 1300, .total = 2400, .ncpu = 4};
    cr_expect_eq(wm_load_cpu_free(&a, &b), 3000, "300 of 400 jiffies idle on 4 CPUs");
    cr_expect_eq(wm_load_cpu_free(NULL, &b), 4000 * 1300 / 2400, "first reading: since boot");
    cr_expect_eq(wm_load_cpu_free(&b, &b), 4000 * 1300 / 2400, "no time passed: since boot");
    wm_cpu_sample_t busy = {.idle = 1300, .total = 3400, .ncpu = 4};
    cr_expect_eq(wm_load_cpu_free(&b, &busy), 0);
}

Test(load, the_window_is_about_one_lease_period)
{
    wm_load_sampler_t s = {0};
    wm_load_t out = {0};
    const uint64_t mem = 1ull << 30;
    /* 1 s samples, lease period 3 s: idle all along, then fully busy from t=10 s */
    for (uint64_t t = 0; t <= 10; t++) {
        wm_cpu_sample_t now = {.idle = t * 200, .total = t * 200, .ncpu = 2, .t_ms = t * 1000};
        wm_load_update(&s, &now, mem, mem / 2, 3000, &out);
    }
    cr_expect_eq(out.cpus_milli, 2000);
    cr_expect_eq(out.cpu_free_milli, 2000);
    cr_expect_eq(out.mem_total_bytes, mem);
    cr_expect_eq(out.mem_free_bytes, mem / 2);
    uint32_t seen[4];
    for (uint64_t t = 11; t <= 14; t++) {
        wm_cpu_sample_t now = {.idle = 2000, .total = t * 200, .ncpu = 2, .t_ms = t * 1000};
        wm_load_update(&s, &now, mem, mem / 2, 3000, &out);
        seen[t - 11] = out.cpu_free_milli;
    }
    /* the idle seconds leave the window one by one, and after a period it is all busy */
    cr_expect(seen[0] > 0 && seen[0] < 2000, "%u", seen[0]);
    cr_expect(seen[1] < seen[0], "%u %u", seen[1], seen[0]);
    cr_expect_eq(seen[2], 0, "%u", seen[2]);
    cr_expect_eq(seen[3], 0);
}

Test(load, the_lease_carries_the_load_and_the_advertised_address)
{
    wm_config_t c;
    const char *err;
    char *argv[] = {"x", "--listen", "0.0.0.0:7300", "--advertise", "10.5.0.2:7300", NULL};
    cr_assert_eq(wm_config_parse(&c, 5, argv, &err), 0);
    static wm_t wm; /* only what wm_lease_pack reads */
    wm.cfg = &c;
    wm.pool_ready = 1;
    wm.load = (wm_load_t){
        .cpus_milli = 2000, .cpu_free_milli = 1450, .mem_total_bytes = 8ull << 30, .mem_free_bytes = 3ull << 30};
    size_t len;
    uint8_t *buf = wm_lease_pack(&wm, 0, &len);
    cr_assert_not_null(buf);
    Faas__LeaseRenewal *lr = faas__lease_renewal__unpack(NULL, len, buf);
    cr_assert_not_null(lr);
    cr_expect_str_eq(lr->worker->address, "10.5.0.2:7300");
    cr_expect_eq(lr->worker->cpus_milli, 2000);
    cr_expect_eq(lr->worker->cpu_free_milli, 1450);
    cr_expect_eq(lr->worker->mem_total_bytes, 8ull << 30);
    cr_expect_eq(lr->worker->mem_free_bytes, 3ull << 30);
    faas__lease_renewal__free_unpacked(lr, NULL);
    free(buf);
}

Test(load, this_host_reads)
{
    wm_load_sampler_t s = {0};
    wm_load_t out = {0};
    cr_assert_eq(wm_load_sample(&s, 3000, &out), 0);
    cr_expect(out.cpus_milli >= 1000 && out.cpus_milli % 1000 == 0, "%u", out.cpus_milli);
    cr_expect(out.cpu_free_milli <= out.cpus_milli && out.cpu_free_milli % 50 == 0);
    cr_expect(out.mem_total_bytes > 0 && out.mem_total_bytes % (16ull << 20) == 0);
    cr_expect(out.mem_free_bytes <= out.mem_total_bytes);
}
