#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "dispatcher/internal.h"

static disp_table_t T;

static void setup(void)
{
    disp_table_init(&T, 4);
}
static void teardown(void)
{
    disp_table_clear(&T);
}

static disp_fn_t *mkfn(const char *name, uint32_t concurrency, uint32_t max_inst)
{
    disp_fn_t *fn = disp_fn_get(&T, name, strlen(name));
    cr_assert_not_null(fn);
    disp_fn_params_t p = {.version = 1,
                          .concurrency = concurrency,
                          .max_instances = max_inst,
                          .timeout_ms = 1000,
                          .cold_start_timeout_ms = 500,
                          .idle_timeout_ms = 100};
    disp_fn_set_spec(&T, fn, &p, NULL, 0);
    return fn;
}

TestSuite(table, .init = setup, .fini = teardown);

Test(table, find_and_unknown)
{
    cr_assert_null(disp_fn_find(&T, "a", 1));
    disp_fn_t *fn = mkfn("a", 0, 0);
    cr_assert_eq(disp_fn_find(&T, "a", 1), fn);
    cr_assert_null(disp_fn_find(&T, "ab", 2));
    disp_fn_forget(&T, fn);
    cr_assert_eq(fn->known, 0);
}

Test(table, find_among_many_functions)
{
    /* the index grows several times; every name stays findable, prefixes and
     * unknown names are not confused with known ones */
    static disp_fn_t *made[2000];
    char name[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof(name), "fn-%d", i);
        made[i] = disp_fn_get(&T, name, strlen(name));
        cr_assert_not_null(made[i]);
        cr_assert_eq(disp_fn_get(&T, name, strlen(name)), made[i], "get twice is one function");
    }
    cr_assert_eq(T.nfns, 2000);
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof(name), "fn-%d", i);
        cr_assert_eq(disp_fn_find(&T, name, strlen(name)), made[i], "%s", name);
        snprintf(name, sizeof(name), "fn-%dx", i);
        cr_assert_null(disp_fn_find(&T, name, strlen(name)), "%s", name);
    }
    cr_assert_null(disp_fn_find(&T, "fn-", 3));
    cr_assert_null(disp_fn_find(&T, "", 0));
    cr_assert_eq(disp_fn_find(&T, "fn-1999", 7), made[1999]);
}

Test(table, least_inflight)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_inst_t *i1 = disp_inst_put(fn, "i1", "127.0.0.1:1", "w", 1, 1, 0, 0);
    disp_inst_t *i2 = disp_inst_put(fn, "i2", "127.0.0.1:2", "w", 1, 1, 0, 0);
    disp_inst_begin(i1);
    cr_assert_eq(disp_pick(fn), i2);
    disp_inst_begin(i2);
    disp_inst_begin(i2);
    cr_assert_eq(disp_pick(fn), i1);
    disp_inst_end(i2, 5);
    disp_inst_end(i2, 5);
    cr_assert_eq(disp_pick(fn), i2);
    cr_assert_eq(i2->idle_since_ms, 5);
}

Test(table, skips_not_ready_and_old_version)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_inst_put(fn, "s", "e", "w", 1, 0, 0, 0);
    disp_inst_put(fn, "old", "e", "w", 0, 1, 0, 0);
    cr_assert_null(disp_pick(fn));
    disp_inst_t *r = disp_inst_put(fn, "s", "e", "w", 1, 1, 0, 0); /* becomes READY */
    cr_assert_eq(disp_pick(fn), r);
    fn->p.version = 2; /* new deploy: old instances take no new requests */
    cr_assert_null(disp_pick(fn));
}

Test(table, concurrency_limit)
{
    disp_fn_t *fn = mkfn("a", 2, 0);
    disp_inst_t *i1 = disp_inst_put(fn, "i1", "e", "w", 1, 1, 0, 0);
    disp_inst_begin(disp_pick(fn));
    disp_inst_begin(disp_pick(fn));
    cr_assert_eq(i1->inflight, 2);
    cr_assert_null(disp_pick(fn));
    i1->concurrency = 3; /* instance override wins */
    cr_assert_eq(disp_pick(fn), i1);
}

Test(table, queue_bound_and_fifo)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_waiter_t w[5];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(disp_wait_push(&T, fn, &w[i], 0, 100), 0);
    cr_assert_eq(disp_wait_push(&T, fn, &w[4], 0, 100), -1);
    cr_assert_eq(fn->nwaiters, 4);
    disp_wait_remove(fn, &w[1]);
    disp_wait_remove(fn, &w[1]); /* idempotent */
    cr_assert_eq(fn->nwaiters, 3);
    cr_assert_eq(disp_wait_pop(fn), &w[0]);
    cr_assert_eq(disp_wait_pop(fn), &w[2]);
    cr_assert_eq(disp_wait_pop(fn), &w[3]);
    cr_assert_null(disp_wait_pop(fn));
    cr_assert_eq(fn->nwaiters, 0);
}

Test(table, timeouts)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_waiter_t a = {0}, b = {0};
    disp_wait_push(&T, fn, &a, 0, 100);
    disp_wait_push(&T, fn, &b, 50, 100);
    cr_assert_null(disp_wait_pop_expired(fn, 99));
    cr_assert_eq(disp_wait_pop_expired(fn, 100), &a);
    cr_assert_null(disp_wait_pop_expired(fn, 149));
    cr_assert_eq(disp_wait_pop_expired(fn, 150), &b);
    cr_assert_eq(fn->nwaiters, 0);
}

Test(table, one_acquire_for_many_waiters)
{
    disp_table_init(&T, 1024);
    disp_fn_t *fn = mkfn("a", 0, 0);
    static disp_waiter_t w[50];
    uint32_t started = 0;
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(disp_wait_push(&T, fn, &w[i], 0, 1000), 0);
        uint32_t n = disp_acquire_needed(fn);
        fn->acquiring += n;
        started += n;
    }
    cr_assert_eq(started, 1);
}

Test(table, acquires_follow_concurrency)
{
    disp_table_init(&T, 1024);
    disp_fn_t *fn = mkfn("a", 10, 4);
    static disp_waiter_t w[50];
    uint32_t started = 0;
    for (int i = 0; i < 25; i++) {
        disp_wait_push(&T, fn, &w[i], 0, 1000);
        uint32_t n = disp_acquire_needed(fn);
        fn->acquiring += n;
        started += n;
    }
    cr_assert_eq(started, 3); /* ceil(25/10) */
    for (int i = 25; i < 50; i++) {
        disp_wait_push(&T, fn, &w[i], 0, 1000);
        uint32_t n = disp_acquire_needed(fn);
        fn->acquiring += n;
        started += n;
    }
    cr_assert_eq(started, 4); /* capped by max_instances */
}

Test(table, unknown_function_never_acquires)
{
    disp_fn_t *fn = disp_fn_get(&T, "x", 1);
    disp_waiter_t w = {0};
    disp_wait_push(&T, fn, &w, 0, 10);
    cr_assert_eq(disp_acquire_needed(fn), 0);
}

Test(table, idle_release_and_old_versions)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_inst_t *i1 = disp_inst_put(fn, "i1", "e", "w", 1, 1, 0, 0);
    disp_inst_t *out[8];
    cr_assert_eq(disp_idle_collect(&T, 50, out, 8), 0);
    disp_inst_begin(i1);
    cr_assert_eq(disp_idle_collect(&T, 500, out, 8), 0); /* busy */
    disp_inst_end(i1, 500);
    cr_assert_eq(disp_idle_collect(&T, 599, out, 8), 0);
    cr_assert_eq(disp_idle_collect(&T, 600, out, 8), 1);
    cr_assert_eq(out[0], i1);
    cr_assert_eq(disp_idle_collect(&T, 700, out, 8), 0); /* already releasing */
    cr_assert_null(disp_pick(fn));

    disp_inst_t *old = disp_inst_put(fn, "old", "e", "w", 1, 1, 0, 1000);
    fn->p.version = 2;
    cr_assert_eq(disp_idle_collect(&T, 1000, out, 8), 1); /* stale version: right away */
    cr_assert_eq(out[0], old);
}

Test(table, min_instances_kept)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    fn->p.min_instances = 1;
    disp_inst_put(fn, "i1", "e", "w", 1, 1, 0, 0);
    disp_inst_put(fn, "i2", "e", "w", 1, 1, 0, 0);
    disp_inst_t *out[8];
    cr_assert_eq(disp_idle_collect(&T, 10000, out, 8), 1);
}

static int freed;
static void on_free(disp_inst_t *i)
{
    freed++;
}

Test(table, remove_waits_for_inflight)
{
    disp_inst_free_hook = on_free;
    freed = 0;
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_inst_t *i1 = disp_inst_put(fn, "i1", "e", "w", 1, 1, 0, 0);
    disp_inst_begin(i1);
    cr_assert_eq(disp_inst_find(&T, "i1"), i1);
    cr_assert_eq(disp_inst_remove(i1), 0);
    cr_assert_null(disp_inst_find(&T, "i1"));
    cr_assert_null(disp_pick(fn));
    cr_assert_eq(freed, 0);
    cr_assert_eq(disp_inst_end(i1, 1), 1);
    cr_assert_eq(freed, 1);
    disp_inst_free_hook = NULL;
}

Test(table, forgotten_function_releases_idle_instances_at_once)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    fn->p.idle_timeout_ms = 1000000;
    disp_inst_t *i1 = disp_inst_put(fn, "i1", "e", "w", 1, 1, 0, 0);
    disp_inst_t *out[4];
    cr_assert_eq(disp_idle_collect(&T, 10, out, 4), 0);
    disp_fn_forget(&T, fn);
    cr_assert_eq(disp_idle_collect(&T, 10, out, 4), 1);
    cr_assert_eq(out[0], i1);
}

Test(table, waiting_acquire_then_more_waiters_with_limit)
{
    disp_table_init(&T, 1024);
    disp_fn_t *fn = mkfn("a", 2, 0);
    static disp_waiter_t w[6];
    for (int i = 0; i < 2; i++)
        disp_wait_push(&T, fn, &w[i], 0, 100);
    cr_assert_eq(disp_acquire_needed(fn), 1);
    fn->acquiring = 1;
    /* the instance arrives and takes both; two more come while it is busy */
    disp_inst_t *i1 = disp_inst_put(fn, "i1", "e", "w", 1, 1, 0, 0);
    fn->acquiring = 0;
    for (int i = 0; i < 2; i++) {
        disp_wait_pop(fn);
        disp_inst_begin(disp_pick(fn));
    }
    cr_assert_eq(i1->inflight, 2);
    for (int i = 2; i < 4; i++)
        disp_wait_push(&T, fn, &w[i], 0, 100);
    cr_assert_null(disp_pick(fn));
    cr_assert_eq(disp_acquire_needed(fn), 1);
    /* a request ends: one held request can go to i1 */
    disp_inst_end(i1, 5);
    cr_assert_eq(disp_pick(fn), i1);
}

Test(table, instance_before_its_function)
{
    disp_fn_t *fn = disp_fn_get(&T, "late", 4);
    disp_inst_put(fn, "i1", "e", "w", 3, 1, 0, 0);
    cr_assert_eq(fn->known, 0);
    disp_fn_params_t p = {.version = 3};
    disp_fn_set_spec(&T, fn, &p, NULL, 0);
    cr_assert_not_null(disp_pick(fn));
}

/* ---- reserved instances (docs/scaling.md) ---- */

static disp_inst_t *put_kind(disp_fn_t *fn, const char *id, int reserved, uint64_t now)
{
    disp_inst_t *i = disp_inst_put(fn, id, "e", "w", 1, 1, 0, now);
    cr_assert_not_null(i);
    i->reserved = reserved;
    return i;
}

Test(table, reserved_picked_only_when_no_elastic_has_room)
{
    disp_fn_t *fn = mkfn("a", 1, 0);
    disp_inst_t *r1 = put_kind(fn, "r1", 1, 0);
    cr_assert_eq(disp_pick(fn), r1, "no elastic instance: the reserved one serves at once");
    disp_inst_t *e1 = put_kind(fn, "e1", 0, 0);
    cr_assert_eq(disp_pick(fn), e1, "an idle elastic instance comes first");
    disp_inst_begin(e1);
    cr_assert_eq(disp_pick(fn), r1, "the elastic one is at its limit: the reserved one takes the call");
    disp_inst_begin(r1);
    cr_assert_null(disp_pick(fn), "both full");
    disp_inst_end(e1, 1);
    cr_assert_eq(disp_pick(fn), e1);
    /* with unlimited concurrency an elastic instance always has headroom */
    disp_fn_t *g = mkfn("b", 0, 0);
    put_kind(g, "gr", 1, 0);
    disp_inst_t *ge = put_kind(g, "ge", 0, 0);
    for (int k = 0; k < 5; k++)
        disp_inst_begin(ge);
    cr_assert_eq(disp_pick(g), ge);
}

Test(table, elastic_wanted_once_and_within_max)
{
    disp_fn_t *fn = mkfn("a", 1, 3);
    disp_inst_t *r1 = put_kind(fn, "r1", 1, 0);
    cr_assert_eq(disp_elastic_wanted(fn), 1, "only a reserved instance: ask for an elastic one");
    fn->acquiring = 1;
    cr_assert_eq(disp_elastic_wanted(fn), 0, "one is on its way: not once per call");
    fn->acquiring = 0;
    disp_inst_t *e1 = put_kind(fn, "e1", 0, 0);
    cr_assert_eq(disp_elastic_wanted(fn), 0, "an elastic instance has room");
    disp_inst_begin(e1);
    cr_assert_eq(disp_elastic_wanted(fn), 1, "the elastic one is full");
    disp_inst_t *e2 = put_kind(fn, "e2", 0, 0);
    e2->ready = 0;
    cr_assert_eq(disp_elastic_wanted(fn), 0, "one is starting");
    e2->ready = 1;
    disp_inst_begin(e2);
    cr_assert_eq(disp_elastic_wanted(fn), 0, "max_instances (3) reached");
    (void)r1;
}

Test(table, reserved_never_idle_released)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    put_kind(fn, "r1", 1, 0);
    disp_inst_t *e1 = put_kind(fn, "e1", 0, 0);
    disp_inst_t *out[8];
    cr_assert_eq(disp_idle_collect(&T, 10000, out, 8), 1);
    cr_assert_eq(out[0], e1, "the elastic one goes, the reserved one stays");
    fn->p.version = 2;
    cr_assert_eq(disp_idle_collect(&T, 20000, out, 8), 0, "its worker manager drains an old reserved one");
}

Test(table, idle_release_waits_for_the_last_scale_up)
{
    /* idle_timeout 100 ms: e1 idle since 0, but e2 arrived at 150 (a new peak) */
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_inst_t *e1 = put_kind(fn, "e1", 0, 0);
    disp_inst_t *out[8];
    put_kind(fn, "e2", 0, 150);
    cr_assert_eq(disp_idle_collect(&T, 200, out, 8), 0, "within idle_timeout of a scale-up nothing goes");
    cr_assert_eq(disp_idle_collect(&T, 250, out, 8), 2, "then both idle ones go");
    (void)e1;
}

/* ---- overloaded instances (docs/scaling.md, Routing) ---- */

Test(table, overloaded_elastic_picked_after_the_others)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_inst_t *e1 = put_kind(fn, "e1", 0, 0);
    disp_inst_t *e2 = put_kind(fn, "e2", 0, 0);
    e1->overloaded = 1;
    disp_inst_begin(e2);
    disp_inst_begin(e2);
    cr_assert_eq(disp_pick(fn), e2, "a busier instance that is not overloaded comes before an idle overloaded one");
    e2->overloaded = 1;
    cr_assert_eq(disp_pick(fn), e1, "both overloaded: the least busy again");
    e1->overloaded = 0;
    e2->overloaded = 0;
    cr_assert_eq(disp_pick(fn), e1, "recovered: least in flight as before");
}

Test(table, overloaded_elastic_still_serves_before_reserved)
{
    /* concurrency 2: e1 overloaded with headroom, e2 full, r1 idle */
    disp_fn_t *fn = mkfn("a", 2, 0);
    disp_inst_t *r1 = put_kind(fn, "r1", 1, 0);
    disp_inst_t *e1 = put_kind(fn, "e1", 0, 0);
    disp_inst_t *e2 = put_kind(fn, "e2", 0, 0);
    e1->overloaded = 1;
    disp_inst_begin(e1);
    disp_inst_begin(e2);
    cr_assert_eq(disp_pick(fn), e2, "the instance not overloaded while it has headroom");
    disp_inst_begin(e2);
    cr_assert_eq(disp_pick(fn), e1, "nothing else elastic has headroom: the overloaded one, not the reserved one");
    disp_inst_begin(e1);
    cr_assert_eq(disp_pick(fn), r1, "no elastic headroom at all: the reserved one");
    cr_assert_eq(disp_elastic_wanted(fn), 1, "and an elastic instance is asked for, as before");
}

Test(table, overloaded_reserved_picked_after_the_other_reserved)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    disp_inst_t *r1 = put_kind(fn, "r1", 1, 0);
    disp_inst_t *r2 = put_kind(fn, "r2", 1, 0);
    r1->overloaded = 1;
    disp_inst_begin(r2);
    cr_assert_eq(disp_pick(fn), r2);
}

static Faas__Instance mkpb(const char *id, int kind, int state, int overloaded)
{
    Faas__Instance pi = FAAS__INSTANCE__INIT;
    pi.id = (char *)id;
    pi.function = "a";
    pi.endpoint = "127.0.0.1:1";
    pi.worker_id = "w1";
    pi.version = 1;
    pi.kind = kind;
    pi.state = state;
    pi.overloaded = overloaded;
    return pi;
}

Test(table, learn_keeps_the_watch_flags)
{
    disp_fn_t *fn = mkfn("a", 0, 0);
    Faas__Instance pi = mkpb("e1", FAAS__INSTANCE__KIND__ELASTIC, FAAS__INSTANCE__STATE__READY, 0);
    disp_inst_t *e1 = disp_inst_learn(fn, &pi, 5);
    cr_assert_not_null(e1);
    cr_assert(e1->ready && !e1->reserved && !e1->overloaded);
    cr_assert_eq(e1->born_ms, 5);
    pi = mkpb("e2", FAAS__INSTANCE__KIND__ELASTIC, FAAS__INSTANCE__STATE__READY, 0);
    disp_inst_t *e2 = disp_inst_learn(fn, &pi, 5);
    disp_inst_begin(e2);
    cr_assert_eq(disp_pick(fn), e1);

    /* an INSTANCE_PUT carrying the OVERLOAD of e1 updates the same entry */
    pi = mkpb("e1", FAAS__INSTANCE__KIND__ELASTIC, FAAS__INSTANCE__STATE__READY, 1);
    disp_inst_begin(e1);
    cr_assert_eq(disp_inst_learn(fn, &pi, 9), e1);
    cr_assert_eq(fn->ninst, 2);
    cr_assert_eq(e1->overloaded, 1);
    cr_assert_eq(e1->born_ms, 5, "an update is not a scale-up");
    cr_assert_eq(e1->inflight, 1, "an update keeps the in-flight count");
    disp_inst_begin(e1);
    cr_assert_eq(disp_pick(fn), e2, "the overloaded one goes last");

    /* its RECOVERED clears it */
    pi = mkpb("e1", FAAS__INSTANCE__KIND__ELASTIC, FAAS__INSTANCE__STATE__READY, 0);
    disp_inst_learn(fn, &pi, 10);
    cr_assert_eq(e1->overloaded, 0);

    pi = mkpb("r1", FAAS__INSTANCE__KIND__RESERVED, FAAS__INSTANCE__STATE__READY, 1);
    disp_inst_t *r1 = disp_inst_learn(fn, &pi, 11);
    cr_assert(r1->reserved && r1->overloaded);
    pi = mkpb("e1", FAAS__INSTANCE__KIND__ELASTIC, FAAS__INSTANCE__STATE__DRAINING, 0);
    disp_inst_learn(fn, &pi, 12);
    cr_assert_eq(e1->ready, 0, "a draining instance is not picked");
}
