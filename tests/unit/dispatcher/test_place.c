/* Placement of cold starts (dispatcher/place.c): the score's order and the local
 * accounting that spreads a burst and skips workers that were not reached. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "dispatcher/internal.h"

#define GIB (1ull << 30)
#define MIB (1ull << 20)

static disp_worker_t W[8];

static void report(int i, uint32_t warm, uint32_t cpus, uint32_t cpu_free, uint64_t mem_total, uint64_t mem_free)
{
    Faas__Worker pw = FAAS__WORKER__INIT;
    pw.pool_ready = warm;
    pw.cpus_milli = cpus;
    pw.cpu_free_milli = cpu_free;
    pw.mem_total_bytes = mem_total;
    pw.mem_free_bytes = mem_free;
    snprintf(W[i].id, sizeof(W[i].id), "w%d", i);
    disp_place_report(&W[i].pl, &pw);
}

static void setup(void)
{
    memset(W, 0, sizeof(W));
}

TestSuite(place, .init = setup);

static const disp_place_need_t none = {0, 0};

Test(place, empty_list_picks_nothing)
{
    cr_assert_null(disp_place_pick(W, 0, 0, &none, 1000));
}

Test(place, warm_pods_dominate_headroom)
{
    report(0, 0, 8000, 8000, 16 * GIB, 16 * GIB); /* idle, no warm pod */
    report(1, 1, 8000, 100, 16 * GIB, 1 * GIB);   /* busy, one warm pod */
    for (size_t start = 0; start < 2; start++)
        cr_assert_eq(disp_place_pick(W, 2, start, &none, 1000), &W[1]);
    report(0, 2, 8000, 100, 16 * GIB, 1 * GIB);
    cr_assert_eq(disp_place_pick(W, 2, 1, &none, 1000), &W[0], "more warm pods win");
}

Test(place, cpu_and_memory_break_ties)
{
    report(0, 2, 4000, 1000, 8 * GIB, 4 * GIB);
    report(1, 2, 4000, 3000, 8 * GIB, 4 * GIB);
    for (size_t start = 0; start < 2; start++)
        cr_assert_eq(disp_place_pick(W, 2, start, &none, 1000), &W[1], "more CPU free");
    report(1, 2, 4000, 1000, 8 * GIB, 6 * GIB);
    for (size_t start = 0; start < 2; start++)
        cr_assert_eq(disp_place_pick(W, 2, start, &none, 1000), &W[1], "more memory free");
    /* headroom is relative to the host: 2 of 16 cores free is less than 2 of 4 */
    report(0, 0, 16000, 2000, 0, 0);
    report(1, 0, 4000, 2000, 0, 0);
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 1000), &W[1]);
}

Test(place, full_memory_host_skipped_while_another_has_room)
{
    disp_place_need_t big = {0, 512 * MIB};
    report(0, 5, 8000, 8000, 16 * GIB, 256 * MIB); /* warm pods, but no room for 512 MiB */
    report(1, 0, 8000, 200, 4 * GIB, 600 * MIB);
    for (size_t start = 0; start < 2; start++)
        cr_assert_eq(disp_place_pick(W, 2, start, &big, 1000), &W[1]);
    /* a function without a memory limit is not held to it */
    cr_assert_eq(disp_place_pick(W, 2, 1, &none, 1000), &W[0]);
    /* none has room: still placed (the best of the rest), not refused */
    report(1, 0, 8000, 200, 4 * GIB, 100 * MIB);
    cr_assert_eq(disp_place_pick(W, 2, 1, &big, 1000), &W[0]);
    /* our own charge fills a host: the second 512 MiB no longer fits on w1 */
    report(1, 0, 8000, 8000, 4 * GIB, 900 * MIB);
    report(0, 0, 8000, 8000, 4 * GIB, 600 * MIB);
    disp_worker_t *a = disp_place_pick(W, 2, 0, &big, 1000);
    cr_assert_eq(a, &W[1]);
    disp_place_charge(&a->pl, &big, 1000);
    cr_assert_eq(disp_place_pick(W, 2, 1, &big, 1001), &W[0]);
}

/* A burst of n Acquires, placed and charged one after the other with no report in
 * between, as a gateway does: how many each worker got. The rotation's start stays
 * put, so what spreads them is the accounting alone. */
static void burst(size_t nw, int n, const disp_place_need_t *need, int *got)
{
    for (int i = 0; i < n; i++) {
        disp_worker_t *w = disp_place_pick(W, nw, 0, need, 5000 + (uint64_t)i);
        cr_assert_not_null(w);
        got[w - W]++;
        disp_place_charge(&w->pl, need, 5000 + (uint64_t)i);
    }
}

Test(place, charges_spread_a_burst)
{
    /* the same hosts with no warm pods: the charges alone must spread 12 over 3 */
    for (int i = 0; i < 3; i++)
        report(i, 0, 4000, 4000, 8 * GIB, 8 * GIB);
    int got[8] = {0};
    burst(3, 12, &none, got);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(got[i], 4, "w%d got %d of 12", i, got[i]);
}

Test(place, charges_spread_a_burst_over_unequal_hosts)
{
    /* a host with twice the headroom takes more of the burst, but not all of it */
    report(0, 0, 8000, 8000, 16 * GIB, 16 * GIB);
    report(1, 0, 4000, 1000, 8 * GIB, 4 * GIB);
    disp_place_need_t need = {1000, 1 * GIB};
    int got[8] = {0};
    burst(2, 12, &need, got);
    cr_assert_gt(got[0], got[1]);
    cr_assert_gt(got[1], 0, "the smaller host got none of 12");
}

Test(place, warm_pods_taken_locally_spread_a_burst)
{
    report(0, 3, 0, 0, 0, 0);
    report(1, 3, 0, 0, 0, 0);
    int got[8] = {0};
    burst(2, 6, &none, got);
    cr_assert_eq(got[0], 3);
    cr_assert_eq(got[1], 3);
    cr_assert_eq(W[0].pl.pool_ready + W[1].pl.pool_ready, 0);
}

Test(place, a_report_replaces_the_charges)
{
    report(0, 4, 4000, 4000, 8 * GIB, 8 * GIB);
    disp_place_charge(&W[0].pl, &none, 100);
    disp_place_charge(&W[0].pl, &none, 100);
    cr_assert_eq(W[0].pl.pool_ready, 2);
    uint64_t charged = disp_place_score(&W[0].pl, &none, 200);
    report(0, 4, 4000, 4000, 8 * GIB, 8 * GIB);
    cr_assert_gt(disp_place_score(&W[0].pl, &none, 200), charged);
    cr_assert_eq(W[0].pl.pool_ready, 4);
}

Test(place, charges_lapse_without_a_report)
{
    report(0, 0, 4000, 4000, 8 * GIB, 8 * GIB);
    uint64_t fresh = disp_place_score(&W[0].pl, &none, 100);
    disp_place_charge(&W[0].pl, &none, 100);
    cr_assert_lt(disp_place_score(&W[0].pl, &none, 100 + DISP_PLACE_CHARGE_MS - 1), fresh);
    cr_assert_eq(disp_place_score(&W[0].pl, &none, 100 + DISP_PLACE_CHARGE_MS), fresh);
}

Test(place, down_worker_skipped_until_its_backoff_ends)
{
    report(0, 5, 8000, 8000, 16 * GIB, 16 * GIB);
    report(1, 0, 2000, 100, 2 * GIB, 100 * MIB);
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 1000), &W[0]);
    disp_place_unreached(&W[0].pl, &none, 1000);
    cr_assert_eq(disp_place_nup(W, 2, 1000), 1);
    for (size_t start = 0; start < 2; start++)
        cr_assert_eq(disp_place_pick(W, 2, start, &none, 1000), &W[1]);
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 1000 + DISP_PLACE_BACKOFF_MIN_MS - 1), &W[1]);
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 1000 + DISP_PLACE_BACKOFF_MIN_MS), &W[0], "backoff over");
}

Test(place, backoff_doubles_to_its_cap_and_a_success_resets_it)
{
    report(0, 1, 0, 0, 0, 0);
    uint64_t now = 1000;
    uint32_t want = DISP_PLACE_BACKOFF_MIN_MS;
    for (int i = 0; i < 8; i++) {
        disp_place_unreached(&W[0].pl, &none, now);
        cr_assert_eq(W[0].pl.backoff_ms, want, "round %d", i);
        cr_assert_not(disp_place_up(&W[0].pl, now + want - 1));
        cr_assert(disp_place_up(&W[0].pl, now + want));
        now += want;
        want = want * 2 > DISP_PLACE_BACKOFF_MAX_MS ? DISP_PLACE_BACKOFF_MAX_MS : want * 2;
    }
    cr_assert_eq(W[0].pl.backoff_ms, DISP_PLACE_BACKOFF_MAX_MS);
    disp_place_reached(&W[0].pl);
    cr_assert(disp_place_up(&W[0].pl, now));
    disp_place_unreached(&W[0].pl, &none, now);
    cr_assert_eq(W[0].pl.backoff_ms, DISP_PLACE_BACKOFF_MIN_MS);
}

/* A renewed lease says the worker reaches discovery, not that this gateway reaches it
 * (a wrong --advertise, a one-sided partition): the down mark holds until its backoff
 * runs out, or an Acquire is answered. */
Test(place, a_report_does_not_end_the_down_mark)
{
    report(0, 1, 0, 0, 0, 0);
    report(1, 0, 0, 0, 0, 0);
    disp_place_unreached(&W[0].pl, &none, 1000);
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 1001), &W[1]);
    report(0, 1, 0, 0, 0, 0); /* it renewed its lease */
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 1001), &W[1]);
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 1000 + DISP_PLACE_BACKOFF_MIN_MS), &W[0], "the backoff ran out");
    disp_place_unreached(&W[0].pl, &none, 5000);
    disp_place_reached(&W[0].pl); /* an Acquire it answered */
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 5001), &W[0]);
}

/* A report follows the Acquires within milliseconds, its CPU figure averaged over a
 * lease period that does not show them yet: the charges stay until they lapse, so a
 * burst still spreads. */
Test(place, a_report_keeps_the_charges_until_they_lapse)
{
    disp_place_need_t n = {.cpu_milli = 1000};
    report(0, 0, 2000, 2000, 0, 0);
    report(1, 0, 2000, 1500, 0, 0);
    cr_assert_eq(disp_place_pick(W, 2, 0, &n, 100), &W[0]);
    disp_place_charge(&W[0].pl, &n, 100);
    report(0, 0, 2000, 2000, 0, 0); /* its figures do not show the new pod yet */
    cr_assert_eq(disp_place_pick(W, 2, 0, &n, 101), &W[1]);
    cr_assert_eq(disp_place_pick(W, 2, 0, &n, 100 + DISP_PLACE_CHARGE_MS), &W[0], "lapsed");
}

/* A figure not reported counts in the middle: neither best nor shunned. */
Test(place, an_unreported_figure_counts_in_the_middle)
{
    report(0, 0, 0, 0, 0, 0);        /* no load figures at all */
    report(1, 0, 2000, 200, 0, 0);   /* 10% CPU free, no memory figures */
    report(2, 0, 2000, 1800, 0, 0);  /* 90% free */
    cr_assert_eq(disp_place_pick(W, 3, 0, &none, 100), &W[2]);
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 100), &W[0], "unknown beats 10%% free");
}

Test(place, all_down_still_picks_one)
{
    report(0, 0, 0, 0, 0, 0);
    report(1, 2, 0, 0, 0, 0);
    disp_place_unreached(&W[0].pl, &none, 1000);
    disp_place_unreached(&W[1].pl, &none, 1000);
    cr_assert_eq(disp_place_nup(W, 2, 1000), 0);
    cr_assert_eq(disp_place_pick(W, 2, 0, &none, 1000), &W[1], "the retry window needs a target");
}

Test(place, no_load_reports_rotate_on_warm_pods)
{
    for (int i = 0; i < 3; i++)
        report(i, 0, 0, 0, 0, 0);
    disp_place_need_t big = {4000, 4 * GIB}; /* no figures: no fit test, no headroom */
    int got[8] = {0};
    for (int i = 0; i < 9; i++) {
        disp_worker_t *w = disp_place_pick(W, 3, (size_t)i, &big, 1000);
        got[w - W]++;
        disp_place_charge(&w->pl, &big, 1000);
    }
    for (int i = 0; i < 3; i++)
        cr_assert_eq(got[i], 3, "w%d got %d of 9", i, got[i]);
    report(2, 1, 0, 0, 0, 0);
    for (size_t start = 0; start < 3; start++)
        cr_assert_eq(disp_place_pick(W, 3, start, &big, 1000), &W[2], "a warm pod still counts");
}

Test(place, huge_figures_do_not_overflow)
{
    report(0, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT64_MAX, UINT64_MAX);
    report(1, 0, 1, 0, 1, 0);
    disp_place_need_t huge = {UINT32_MAX, UINT64_MAX};
    cr_assert_eq(disp_place_pick(W, 2, 1, &huge, 1000), &W[0]);
    for (int i = 0; i < 4; i++)
        disp_place_charge(&W[0].pl, &huge, 1000);
    cr_assert_eq(W[0].pl.charge_mem, UINT64_MAX);
    cr_assert_eq(W[0].pl.charge_cpu_milli, UINT32_MAX);
    cr_assert_not_null(disp_place_pick(W, 2, 0, &huge, 1000));
}
