/* The endpoints API's rate window and mode (dispatcher/endpoints.c): pure functions
 * with now_ms passed in. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "dispatcher/internal.h"

#define T0 1000000ull /* a bucket boundary far from 0 */

Test(endpoints_rate, counts_complete_buckets_only)
{
    disp_ep_rate_t r;
    memset(&r, 0, sizeof(r));
    cr_assert_float_eq(disp_ep_rate_get(&r, T0), 0.0, 1e-9);
    disp_ep_rate_add(&r, T0, 100);
    cr_assert_float_eq(disp_ep_rate_get(&r, T0 + 249), 0.0, 1e-9, "its bucket is still filling");
    /* 100 calls in a 2 s window */
    cr_assert_float_eq(disp_ep_rate_get(&r, T0 + 250), 50.0, 1e-9);
    cr_assert_float_eq(disp_ep_rate_get(&r, T0 + 250 * DISP_EP_NBUCKETS), 50.0, 1e-9, "last bucket of the window");
    cr_assert_float_eq(disp_ep_rate_get(&r, T0 + 250 * (DISP_EP_NBUCKETS + 1)), 0.0, 1e-9, "out of the window");
}

Test(endpoints_rate, steady_rate_reads_true)
{
    disp_ep_rate_t r;
    memset(&r, 0, sizeof(r));
    /* 40 calls/s for 5 s, one every 25 ms */
    for (uint64_t t = T0; t < T0 + 5000; t += 25)
        disp_ep_rate_add(&r, t, 1);
    cr_assert_float_eq(disp_ep_rate_get(&r, T0 + 5000), 40.0, 1e-9);
    /* traffic stops: the rate falls bucket by bucket and reaches 0 after the window */
    cr_assert_float_eq(disp_ep_rate_get(&r, T0 + 5000 + 1000), 20.0, 1e-9);
    cr_assert_float_eq(disp_ep_rate_get(&r, T0 + 5000 + 2000), 0.0, 1e-9);
}

Test(endpoints_rate, a_reused_slot_starts_from_zero)
{
    disp_ep_rate_t r;
    memset(&r, 0, sizeof(r));
    disp_ep_rate_add(&r, T0, 1000);
    /* the same slot, one lap later: the old count must not add up with the new */
    disp_ep_rate_add(&r, T0 + 250 * DISP_EP_NBUCKETS, 4);
    cr_assert_float_eq(disp_ep_rate_get(&r, T0 + 250 * (DISP_EP_NBUCKETS + 1)), 2.0, 1e-9);
}

static disp_ep_rate_t shared;
static void *adder(void *arg)
{
    for (int i = 0; i < 100000; i++)
        disp_ep_rate_add(&shared, T0 + (uint64_t)(i % 2) * 250, 1);
    return NULL;
}

Test(endpoints_rate, threads_lose_no_count)
{
    memset(&shared, 0, sizeof(shared));
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, adder, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* 400000 calls in two buckets of the window */
    cr_assert_float_eq(disp_ep_rate_get(&shared, T0 + 500), 200000.0, 1e-6);
}

Test(endpoints_mode, threshold_with_hysteresis)
{
    cr_assert_eq(disp_ep_mode_next(0, 19.9, 20, 1), 0);
    cr_assert_eq(disp_ep_mode_next(0, 20.0, 20, 1), 1, "at the threshold: pods");
    cr_assert_eq(disp_ep_mode_next(0, 500.0, 20, 0), 0, "no pod to send to");
    cr_assert_eq(disp_ep_mode_next(1, 15.0, 20, 1), 1, "below the threshold, above half: stays");
    cr_assert_eq(disp_ep_mode_next(1, 10.0, 20, 2), 1, "at half: stays");
    cr_assert_eq(disp_ep_mode_next(1, 9.9, 20, 2), 0, "below half: back to the gateways");
    cr_assert_eq(disp_ep_mode_next(1, 100.0, 20, 0), 0, "the last pod left");
}

Test(endpoints_direct, deltas_counted_once)
{
    disp_ep_fn_t *e = disp_ep_fn("fn-a", 4);
    cr_assert_not_null(e);
    cr_assert_eq(disp_ep_fn("fn-a", 4), e, "one entry per name");
    cr_assert_neq(disp_ep_fn("fn-b", 4), e);
    cr_assert_null(disp_ep_fn("", 0));
    cr_assert_eq(disp_ep_direct_delta(e, "i1", 5000, T0), 0, "first sight is a baseline, not a burst");
    cr_assert_eq(disp_ep_direct_delta(e, "i1", 5300, T0 + 1000), 300);
    cr_assert_eq(disp_ep_direct_delta(e, "i1", 5300, T0 + 1000), 0, "another thread's copy of the same event");
    cr_assert_eq(disp_ep_direct_delta(e, "i2", 0, T0 + 1000), 0);
    cr_assert_eq(disp_ep_direct_delta(e, "i2", 40, T0 + 2000), 40);
    cr_assert_eq(disp_ep_direct_delta(e, "i1", 10, T0 + 2000), 0, "a restarted counter is a new baseline");
    cr_assert_eq(disp_ep_direct_delta(e, "i1", 25, T0 + 3000), 15);
}

Test(endpoints_direct, forgotten_instances_start_again)
{
    disp_ep_fn_t *e = disp_ep_fn("fn-forget", 9);
    cr_assert_eq(disp_ep_direct_delta(e, "old", 10, T0), 0);
    /* a new instance long after: the old one's baseline is dropped on the way */
    cr_assert_eq(disp_ep_direct_delta(e, "new", 0, T0 + 11 * 60 * 1000), 0);
    cr_assert_eq(e->ninsts, 1);
    cr_assert_eq(disp_ep_direct_delta(e, "old", 20, T0 + 11 * 60 * 1000), 0, "seen afresh: a baseline");
}
