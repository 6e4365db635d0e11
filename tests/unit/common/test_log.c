/* The log's rate limit (issue 14 item 7): a burst per call site and second passes, the
 * rest is dropped and counted, and one log_suppressed line per site and window says how
 * many. Criterion runs each test in its own process, so each one owns fd 2 and the
 * process-wide counters. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

static int cap_fd = -1;
static int saved_fd = -1;

/* fd 2 into an unlinked temp file, read back with pread */
static void capture(void)
{
    char path[] = "/tmp/faas-test-log-XXXXXX";
    cap_fd = mkstemp(path);
    cr_assert_geq(cap_fd, 0);
    unlink(path);
    saved_fd = dup(STDERR_FILENO);
    cr_assert_eq(dup2(cap_fd, STDERR_FILENO), STDERR_FILENO);
}

static char *captured(void)
{
    off_t len = lseek(cap_fd, 0, SEEK_END);
    char *buf = malloc((size_t)len + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(pread(cap_fd, buf, (size_t)len, 0), len);
    buf[len] = '\0';
    return buf;
}

static void say(const char *fmt, double v)
{
    if (saved_fd >= 0)
        dprintf(saved_fd, fmt, v);
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Sum of dropped=N over the log_suppressed lines of one event. */
static unsigned long reported(const char *text, const char *site)
{
    char needle[128];
    snprintf(needle, sizeof(needle), " dropped_event=%s dropped=", site);
    unsigned long sum = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        sum += strtoul(p + strlen(needle), NULL, 10);
    return sum;
}

static time_t coarse_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return ts.tv_sec;
}

/* Waits for a window to begin, so that what follows (microseconds) falls in one. */
static void fresh_window(void)
{
    time_t s = coarse_sec();
    while (coarse_sec() == s) {
        struct timespec d = {0, 1000 * 1000};
        nanosleep(&d, NULL);
    }
}

/* Polls the capture until site's reports add up to want (bounded: 5 s). */
static char *wait_reported(const char *site, unsigned long want)
{
    for (int i = 0; i < 500; i++) {
        char *t = captured();
        if (reported(t, site) >= want)
            return t;
        free(t);
        struct timespec d = {0, 10 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
    return captured();
}

static void init(unsigned burst)
{
    unsetenv("FAAS_LOG_BURST");
    setenv("FAAS_LOG_LEVEL", "info", 1);
    faas_log_init("test");
    faas_log_set_burst(burst);
    capture();
}

Test(log, burst_passes_excess_dropped_then_reported_once_the_window_ends)
{
    init(20);
    uint64_t before = faas_log_dropped_total();
    fresh_window();
    for (int i = 0; i < 30; i++)
        FAAS_WARN("event=burst_site i=%d", i);
    char *t = captured();
    cr_assert_eq(count(t, " event=burst_site "), 20, "%s", t);
    cr_assert_not_null(strstr(t, "event=burst_site i=19\n"));
    cr_assert_null(strstr(t, "event=burst_site i=20\n"));
    cr_assert_eq(faas_log_dropped_total() - before, 10);
    cr_assert_eq(count(t, "log_suppressed"), 0, "no report before the window ends: %s", t);
    free(t);
    /* the site went quiet: the report comes anyway, once, at the level of the drops */
    t = wait_reported("burst_site", 10);
    cr_assert_eq(reported(t, "burst_site"), 10, "%s", t);
    cr_assert_eq(count(t, "event=log_suppressed"), 1, "%s", t);
    const char *r = strstr(t, "level=warn comp=test event=log_suppressed site=tests/unit/common/test_log.c:");
    cr_assert_not_null(r, "the report names the call site: %s", t);
    cr_assert_not_null(strstr(r, " dropped_event=burst_site dropped=10 window_s=1\n"), "%s", t);
    free(t);
}

Test(log, the_next_window_admits_again_and_reports_first)
{
    init(3);
    fresh_window();
    for (int i = 0; i < 5; i++)
        FAAS_INFO("event=next_site i=%d", i);
    fresh_window();
    FAAS_INFO("event=next_site i=%d", 100);
    char *t = wait_reported("next_site", 2);
    cr_assert_eq(reported(t, "next_site"), 2, "%s", t);
    cr_assert_eq(count(t, "event=log_suppressed"), 1, "%s", t);
    cr_assert_not_null(strstr(t, "event=next_site i=100\n"), "a new window admits the site again: %s", t);
    cr_assert_eq(count(t, " event=next_site "), 4, "%s", t);
    free(t);
}

Test(log, distinct_sites_have_distinct_budgets)
{
    init(5);
    fresh_window();
    for (int i = 0; i < 8; i++) {
        FAAS_WARN("event=site_a i=%d", i);
        FAAS_WARN("event=site_b i=%d", i);
    }
    char *t = wait_reported("site_b", 3);
    cr_assert_eq(count(t, " event=site_a "), 5, "%s", t);
    cr_assert_eq(count(t, " event=site_b "), 5, "%s", t);
    free(t);
    t = wait_reported("site_a", 3);
    cr_assert_eq(reported(t, "site_a"), 3, "%s", t);
    cr_assert_eq(reported(t, "site_b"), 3, "%s", t);
    cr_assert_eq(faas_log_dropped_total(), 6);
    free(t);
}

Test(log, errors_get_a_larger_burst_debug_none_zero_turns_it_off)
{
    init(4);
    setenv("FAAS_LOG_LEVEL", "debug", 1);
    faas_log_init("test");
    fresh_window();
    for (int i = 0; i < 30; i++) {
        FAAS_ERROR("event=err_site i=%d", i);
        FAAS_DEBUG("event=dbg_site i=%d", i);
    }
    char *t = captured();
    cr_assert_eq(count(t, " event=err_site "), 20, "error: 5x the burst: %s", t);
    cr_assert_eq(count(t, " event=dbg_site "), 30, "debug is never limited: %s", t);
    free(t);
    t = wait_reported("err_site", 10);
    cr_assert_not_null(strstr(t, "level=error comp=test event=log_suppressed site="), "%s", t);
    cr_assert_not_null(strstr(t, " dropped_event=err_site dropped=10 "), "%s", t);
    free(t);

    faas_log_set_burst(0);
    for (int i = 0; i < 50; i++)
        FAAS_WARN("event=unlimited_site i=%d", i);
    t = captured();
    cr_assert_eq(count(t, " event=unlimited_site "), 50, "%s", t);
    free(t);
    cr_assert_eq(faas_log_dropped_total(), 10);
}

Test(log, a_direct_call_is_named_by_its_event)
{
    init(1);
    fresh_window();
    for (int i = 0; i < 3; i++)
        faas_log(FAAS_LOG_INFO, "event=direct_site i=%d", i);
    char *t = wait_reported("direct_site", 2);
    cr_assert_not_null(
        strstr(t, "level=info comp=test event=log_suppressed site=direct_site dropped_event=direct_site dropped=2 "),
        "%s", t);
    free(t);
}

Test(log, burst_from_the_environment)
{
    setenv("FAAS_LOG_BURST", "2", 1);
    faas_log_init("test");
    capture();
    fresh_window();
    for (int i = 0; i < 6; i++)
        FAAS_INFO("event=env_site i=%d", i);
    char *t = captured();
    cr_assert_eq(count(t, " event=env_site "), 2, "%s", t);
    cr_assert_eq(faas_log_dropped_total(), 4);
    free(t);
}

#define THREADS 4
#define PER_THREAD 5000

static void *storm(void *arg)
{
    for (int i = 0; i < PER_THREAD; i++)
        FAAS_WARN("event=storm_site t=%d i=%d", (int)(intptr_t)arg, i);
    return NULL;
}

Test(log, four_threads_count_exactly)
{
    init(20);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, storm, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    uint64_t dropped = faas_log_dropped_total();
    char *t = captured();
    size_t written = count(t, " event=storm_site ");
    free(t);
    /* each line is either written or counted, never both, never neither */
    cr_assert_eq(written + dropped, THREADS * PER_THREAD, "written %zu dropped %lu", written, (unsigned long)dropped);
    cr_assert_gt(dropped, 0);
    /* and the reports add up to the counter once the last window is over */
    t = wait_reported("storm_site", dropped);
    cr_assert_eq(reported(t, "storm_site"), dropped, "%s", t);
    free(t);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Not an assertion on speed: prints the cost per line of each path (for the notes). */
Test(log, bench_cost_per_line)
{
    init(0);
    int null = open("/dev/null", O_WRONLY);
    cr_assert_geq(null, 0);
    dup2(null, STDERR_FILENO);
    enum { WRITTEN = 200000, DROPPED = 2000000 };
    double t0 = now_s();
    for (int i = 0; i < WRITTEN; i++)
        FAAS_WARN("event=bench_off i=%d", i);
    double off = (now_s() - t0) / WRITTEN;
    faas_log_set_burst(1000000000 / 5);
    t0 = now_s();
    for (int i = 0; i < WRITTEN; i++)
        FAAS_WARN("event=bench_admitted i=%d", i);
    double on = (now_s() - t0) / WRITTEN;
    faas_log_set_burst(1);
    uint64_t before = faas_log_dropped_total();
    t0 = now_s();
    for (int i = 0; i < DROPPED; i++)
        FAAS_WARN("event=bench_dropped i=%d", i);
    double dr = (now_s() - t0) / DROPPED;
    cr_assert_geq(faas_log_dropped_total() - before, DROPPED - 2);
    say("log bench: limit off %.0f ns/line, ", off * 1e9);
    say("admitted %.0f ns/line, ", on * 1e9);
    say("dropped %.1f ns/line\n", dr * 1e9);
    close(null);
}
