/* tests/unit/common/test_theap.c - the timer heap (common/theap.c) of the evl loops and
 * the dispatcher: deadlines of any value pop in order, once, never early. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/theap.h"

#define N 1000

static faas_theap_t TS;
static faas_timer_t tm[N];

static void fini(void)
{
    faas_theap_free(&TS);
}

TestSuite(theap, .fini = fini);

/* Every parent is due no later than its children and every slot is right. */
static void check_heap(const faas_theap_t *ts)
{
    for (size_t i = 0; i < ts->n; i++) {
        cr_assert_eq(ts->heap[i]->slot, i + 1, "slot of heap[%zu]", i);
        if (i > 0)
            cr_assert_leq(ts->heap[(i - 1) / 2]->at, ts->heap[i]->at, "heap order at %zu", i);
    }
}

/* A fixed permutation of 0..n-1 (xorshift, so the test is reproducible). */
static void shuffle(size_t *a, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        a[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
        size_t j = seed % (i + 1), t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

Test(theap, empty)
{
    cr_assert_eq(faas_theap_next(&TS), UINT64_MAX);
    cr_assert_null(faas_theap_pop(&TS, UINT64_MAX));
    faas_theap_del(&TS, &tm[0]); /* not armed: a no-op */
    cr_assert_eq(TS.n, 0);
}

Test(theap, thousand_distinct_deadlines_pop_in_order_once)
{
    static size_t order[N];
    static int popped[N];
    static uint64_t want[N];
    shuffle(order, N, 12345);
    /* deadlines 1000 + 7*i: all distinct, inserted in shuffled order */
    for (size_t k = 0; k < N; k++) {
        size_t i = order[k];
        want[i] = 1000 + 7 * (uint64_t)i;
        cr_assert_eq(faas_theap_add(&TS, &tm[i], want[i]), 0);
        cr_assert(faas_timer_armed(&tm[i]));
    }
    check_heap(&TS);
    /* every 10th deleted; every 10th (offset 5) re-armed at a new distinct value:
     * 1000 + 7*j + 3 never equals a 1000 + 7*i */
    for (size_t i = 0; i < N; i += 10) {
        faas_theap_del(&TS, &tm[i]);
        cr_assert(!faas_timer_armed(&tm[i]));
        want[i] = 0;
    }
    for (size_t i = 5; i < N; i += 10) {
        size_t j = N - 1 - i;
        want[i] = 1000 + 7 * (uint64_t)j + 3;
        cr_assert_eq(faas_theap_add(&TS, &tm[i], want[i]), 0);
    }
    check_heap(&TS);
    cr_assert_eq(TS.n, N - N / 10);
    /* a clock moving in uneven steps: each pop is due, in deadline order, exactly once */
    uint64_t now = 900, last = 0;
    size_t got = 0;
    cr_assert_null(faas_theap_pop(&TS, now), "nothing is due before the earliest deadline");
    while (TS.n != 0) {
        now += 1 + (now % 13);
        faas_timer_t *t;
        while ((t = faas_theap_pop(&TS, now)) != NULL) {
            size_t i = (size_t)(t - tm);
            cr_assert_lt(i, N);
            cr_assert_neq(want[i], 0, "a deleted timer fired: %zu", i);
            cr_assert_eq(t->at, want[i], "timer %zu keeps its last deadline", i);
            cr_assert_leq(t->at, now, "fired before its deadline");
            cr_assert_gt(t->at, last, "out of order: %lu after %lu", (unsigned long)t->at, (unsigned long)last);
            cr_assert(!faas_timer_armed(t));
            cr_assert_eq(popped[i]++, 0, "timer %zu popped twice", i);
            last = t->at;
            got++;
        }
        /* what is left is all later than now */
        cr_assert_gt(faas_theap_next(&TS), now);
        check_heap(&TS);
    }
    cr_assert_eq(got, N - N / 10);
    cr_assert_eq(faas_theap_next(&TS), UINT64_MAX);
}

/* Builds a heap of n timers due at 10*i (inserted in reverse, so sift_up works). */
static void build(size_t n)
{
    for (size_t i = n; i-- > 0;)
        cr_assert_eq(faas_theap_add(&TS, &tm[i], 10 * (uint64_t)i), 0);
    check_heap(&TS);
}

static void drain_in_order(size_t expect)
{
    uint64_t last = 0;
    size_t got = 0;
    faas_timer_t *t;
    while ((t = faas_theap_pop(&TS, UINT64_MAX)) != NULL) {
        cr_assert(got == 0 || t->at > last);
        last = t->at;
        got++;
        check_heap(&TS);
    }
    cr_assert_eq(got, expect);
}

Test(theap, delete_root_leaf_and_middle)
{
    build(63);
    faas_timer_t *root = TS.heap[0], *leaf = TS.heap[TS.n - 1], *mid = TS.heap[TS.n / 2 - 5];
    faas_theap_del(&TS, root);
    check_heap(&TS);
    cr_assert_eq(faas_theap_next(&TS), 10, "the next earliest becomes the root");
    faas_theap_del(&TS, leaf);
    check_heap(&TS);
    faas_theap_del(&TS, mid);
    check_heap(&TS);
    cr_assert(!faas_timer_armed(root) && !faas_timer_armed(leaf) && !faas_timer_armed(mid));
    faas_theap_del(&TS, mid); /* twice: a no-op */
    cr_assert_eq(TS.n, 60);
    drain_in_order(60);
}

Test(theap, delete_where_the_last_moves_up)
{
    /* left subtree late, right subtree early: deleting deep on the left puts the last
     * element (early, from the right) under a late parent, so it must sift up */
    uint64_t at[15] = {1, 100, 2, 101, 102, 3, 4, 103, 104, 105, 106, 5, 6, 7, 8};
    for (size_t i = 0; i < 15; i++)
        cr_assert_eq(faas_theap_add(&TS, &tm[i], at[i]), 0);
    check_heap(&TS);
    /* find a timer in the left subtree's leaves */
    faas_timer_t *victim = NULL;
    for (size_t i = 7; i < 11; i++)
        if (TS.heap[i]->at >= 100)
            victim = TS.heap[i];
    cr_assert_not_null(victim);
    faas_theap_del(&TS, victim);
    check_heap(&TS);
    drain_in_order(14);
}

Test(theap, rearm_moves_both_ways)
{
    build(100);
    faas_theap_add(&TS, &tm[99], 5); /* latest becomes second earliest */
    check_heap(&TS);
    faas_theap_add(&TS, &tm[0], 10000); /* earliest becomes the latest */
    check_heap(&TS);
    cr_assert_eq(TS.n, 100, "re-arming does not duplicate");
    cr_assert_eq(faas_theap_pop(&TS, 9), &tm[99]);
    cr_assert_null(faas_theap_pop(&TS, 9), "now before the earliest");
    faas_timer_t *t = NULL;
    for (size_t k = 0; k < 99; k++)
        t = faas_theap_pop(&TS, UINT64_MAX);
    cr_assert_eq(t, &tm[0]);
    cr_assert_eq(TS.n, 0);
}

Test(theap, equal_deadlines_all_fire)
{
    for (size_t i = 0; i < 50; i++)
        faas_theap_add(&TS, &tm[i], 42);
    cr_assert_null(faas_theap_pop(&TS, 41));
    for (size_t i = 0; i < 50; i++)
        cr_assert_not_null(faas_theap_pop(&TS, 42));
    cr_assert_null(faas_theap_pop(&TS, 42));
}

Test(theap, random_ops_against_a_model)
{
    /* adds, re-arms and deletes at random; after each step the heap is valid and its
     * earliest is the model's earliest */
    static uint64_t model[200]; /* 0 = not armed */
    uint32_t s = 99;
    for (int step = 0; step < 20000; step++) {
        s ^= s << 13, s ^= s >> 17, s ^= s << 5;
        size_t i = s % 200;
        if ((s >> 8) % 3 == 0) {
            faas_theap_del(&TS, &tm[i]);
            model[i] = 0;
        } else {
            model[i] = 1 + (s >> 12) % 5000;
            cr_assert_eq(faas_theap_add(&TS, &tm[i], model[i]), 0);
        }
        uint64_t min = UINT64_MAX;
        size_t n = 0;
        for (size_t k = 0; k < 200; k++)
            if (model[k] != 0) {
                n++;
                min = model[k] < min ? model[k] : min;
            }
        cr_assert_eq(TS.n, n);
        cr_assert_eq(faas_theap_next(&TS), min);
        if (step % 97 == 0)
            check_heap(&TS);
    }
    check_heap(&TS);
}
