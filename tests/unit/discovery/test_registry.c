/* The soft-state registry: heartbeat diffing, leases, revisions and watcher fan-out,
 * driven directly with an in-memory sink (no grpc). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "discovery/discovery.h"

typedef struct {
    Faas__WatchEvent *ev[256];
    size_t n;
    int fail; /* sink says "gone" */
    int flushes;
    size_t flushed_at; /* events received before the last flush */
} sink_t;

static int collect(void *ctx, const uint8_t *buf, size_t len)
{
    sink_t *s = ctx;
    if (s->fail)
        return -1;
    if (buf == NULL) { /* the end of one change */
        s->flushes++;
        s->flushed_at = s->n;
        return 0;
    }
    Faas__WatchEvent *ev = faas__watch_event__unpack(NULL, len, buf);
    cr_assert_not_null(ev);
    cr_assert_lt(s->n, 256);
    s->ev[s->n++] = ev;
    return 0;
}

static void sink_clear(sink_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        faas__watch_event__free_unpacked(s->ev[i], NULL);
    s->n = 0;
    s->flushes = 0;
    s->flushed_at = 0;
}

static Faas__Instance mk_inst(const char *id, const char *fn, Faas__Instance__State state)
{
    Faas__Instance in = FAAS__INSTANCE__INIT;
    in.id = (char *)id;
    in.function = (char *)fn;
    in.endpoint = "127.0.0.1:9000";
    in.state = state;
    return in;
}

/* A renewal of worker `wid` holding the given instances. */
static int beat(disc_registry_t *r, const char *wid, uint32_t pool_ready, Faas__Instance **insts, size_t n,
                uint64_t now)
{
    Faas__Worker w = FAAS__WORKER__INIT;
    w.id = (char *)wid;
    w.address = "127.0.0.1:7200";
    w.pool_size = 2;
    w.pool_ready = pool_ready;
    Faas__LeaseRenewal lr = FAAS__LEASE_RENEWAL__INIT;
    lr.worker = &w;
    lr.instances = insts;
    lr.n_instances = n;
    lr.ttl_ms = 100;
    const char *err = NULL;
    int rc = disc_registry_heartbeat(r, &lr, now, &err);
    return rc;
}

Test(registry, snapshot_then_heartbeat_diff)
{
    disc_registry_t *r = disc_registry_new();
    sink_t s = {0};
    int64_t id = disc_registry_subscribe(r, 1, 1, 1, collect, &s);
    cr_assert_gt(id, 0);
    cr_assert_eq(s.n, 1);
    cr_assert_eq(s.ev[0]->type, FAAS__WATCH_EVENT__TYPE__SNAPSHOT_END);
    cr_assert_eq(s.flushes, 1, "the snapshot ends with one flush");
    cr_assert_eq(s.flushed_at, 1);
    sink_clear(&s);

    Faas__Instance a = mk_inst("i-a", "hello", FAAS__INSTANCE__STATE__STARTING);
    Faas__Instance b = mk_inst("i-b", "hello", FAAS__INSTANCE__STATE__READY);
    Faas__Instance *set1[] = {&b, &a};
    cr_assert_eq(beat(r, "w1", 2, set1, 2, 1000), 0);
    cr_assert_eq(s.n, 3);
    cr_assert_eq(s.ev[0]->type, FAAS__WATCH_EVENT__TYPE__WORKER_PUT);
    cr_assert_str_eq(s.ev[0]->worker->id, "w1");
    cr_assert_eq(s.ev[1]->type, FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT);
    cr_assert_str_eq(s.ev[1]->instance->id, "i-a");
    cr_assert_str_eq(s.ev[1]->instance->worker_id, "w1", "worker_id is filled from the lease");
    cr_assert_str_eq(s.ev[2]->instance->id, "i-b");
    cr_assert_lt(s.ev[0]->revision, s.ev[1]->revision);
    cr_assert_lt(s.ev[1]->revision, s.ev[2]->revision);
    cr_assert_eq(s.flushes, 1, "one heartbeat is one change: one flush, after all its events");
    cr_assert_eq(s.flushed_at, 3);
    uint64_t rev = s.ev[2]->revision;
    sink_clear(&s);

    /* the same set again: only the lease is renewed, nothing is pushed */
    cr_assert_eq(beat(r, "w1", 2, set1, 2, 1010), 0);
    cr_assert_eq(s.n, 0);
    cr_assert_eq(s.flushes, 0, "no events, no flush");

    /* a becomes READY, b is gone, c is new, pool_ready changed */
    a.state = FAAS__INSTANCE__STATE__READY;
    Faas__Instance c = mk_inst("i-c", "other", FAAS__INSTANCE__STATE__READY);
    Faas__Instance *set2[] = {&c, &a};
    cr_assert_eq(beat(r, "w1", 1, set2, 2, 1020), 0);
    cr_assert_eq(s.n, 4);
    cr_assert_eq(s.ev[0]->type, FAAS__WATCH_EVENT__TYPE__WORKER_PUT);
    cr_assert_eq(s.ev[0]->worker->pool_ready, 1);
    cr_assert_eq(s.ev[1]->type, FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT);
    cr_assert_str_eq(s.ev[1]->instance->id, "i-a");
    cr_assert_eq(s.ev[1]->instance->state, FAAS__INSTANCE__STATE__READY);
    cr_assert_eq(s.ev[2]->type, FAAS__WATCH_EVENT__TYPE__INSTANCE_DELETE);
    cr_assert_str_eq(s.ev[2]->instance->id, "i-b");
    cr_assert_eq(s.ev[3]->type, FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT);
    cr_assert_str_eq(s.ev[3]->instance->id, "i-c");
    cr_assert_gt(s.ev[0]->revision, rev);
    cr_assert_eq(s.flushes, 1);
    cr_assert_eq(s.flushed_at, 4);
    sink_clear(&s);

    disc_registry_stats_t st;
    disc_registry_stats(r, &st);
    cr_assert_eq(st.instances, 2);
    cr_assert_eq(st.workers, 1);
    cr_assert_eq(st.watchers, 1);

    size_t len;
    uint8_t *buf = disc_registry_list_instances(r, "other", &len);
    Faas__InstanceList *il = faas__instance_list__unpack(NULL, len, buf);
    cr_assert_eq(il->n_instances, 1);
    cr_assert_str_eq(il->instances[0]->id, "i-c");
    faas__instance_list__free_unpacked(il, NULL);
    free(buf);
    buf = disc_registry_list_instances(r, "", &len);
    il = faas__instance_list__unpack(NULL, len, buf);
    cr_assert_eq(il->n_instances, 2);
    faas__instance_list__free_unpacked(il, NULL);
    free(buf);

    disc_registry_unsubscribe(r, id);
    cr_assert_eq(beat(r, "w1", 1, NULL, 0, 1030), 0);
    cr_assert_eq(s.n, 0, "no events after unsubscribe");
    disc_registry_free(r);
}

Test(registry, lease_lapse_removes_worker_and_instances)
{
    disc_registry_t *r = disc_registry_new();
    Faas__Instance a = mk_inst("i-a", "hello", FAAS__INSTANCE__STATE__READY);
    Faas__Instance b = mk_inst("i-b", "hello", FAAS__INSTANCE__STATE__READY);
    Faas__Instance *s1[] = {&a}, *s2[] = {&b};
    cr_assert_eq(beat(r, "w1", 2, s1, 1, 1000), 0); /* ttl 100 -> until 1100 */
    cr_assert_eq(beat(r, "w2", 2, s2, 1, 1050), 0); /* until 1150 */
    sink_t s = {0};
    cr_assert_gt(disc_registry_subscribe(r, 0, 1, 1, collect, &s), 0);
    /* snapshot: 2 workers, 2 instances, end */
    cr_assert_eq(s.n, 5);
    cr_assert_eq(s.ev[4]->type, FAAS__WATCH_EVENT__TYPE__SNAPSHOT_END);
    sink_clear(&s);

    cr_assert_eq(disc_registry_expire(r, 1100), 0, "a lease is good until its last millisecond");
    cr_assert_eq(disc_registry_expire(r, 1101), 1);
    cr_assert_eq(s.n, 2);
    cr_assert_eq(s.ev[0]->type, FAAS__WATCH_EVENT__TYPE__INSTANCE_DELETE);
    cr_assert_str_eq(s.ev[0]->instance->id, "i-a");
    cr_assert_eq(s.ev[1]->type, FAAS__WATCH_EVENT__TYPE__WORKER_DELETE);
    cr_assert_str_eq(s.ev[1]->worker->id, "w1");
    cr_assert_eq(s.flushes, 1, "one expiry pass is one change");
    cr_assert_eq(s.flushed_at, 2);
    sink_clear(&s);

    disc_registry_stats_t st;
    disc_registry_stats(r, &st);
    cr_assert_eq(st.workers, 1);
    cr_assert_eq(st.instances, 1);

    /* a late heartbeat brings w1 back as a new worker */
    cr_assert_eq(beat(r, "w1", 2, s1, 1, 1102), 0);
    cr_assert_eq(s.n, 2);
    cr_assert_eq(s.ev[0]->type, FAAS__WATCH_EVENT__TYPE__WORKER_PUT);
    sink_clear(&s);
    disc_registry_free(r);
}

Test(registry, reaper_thread_expires_on_its_own)
{
    disc_registry_t *r = disc_registry_new();
    cr_assert_eq(disc_registry_start_reaper(r), 0);
    Faas__Instance a = mk_inst("i-a", "hello", FAAS__INSTANCE__STATE__READY);
    Faas__Instance *s1[] = {&a};
    cr_assert_eq(beat(r, "w1", 2, s1, 1, faas_now_ms()), 0); /* ttl 100 ms */
    disc_registry_stats_t st;
    uint64_t until = faas_now_ms() + 2000;
    do {
        disc_registry_stats(r, &st);
        if (st.workers == 0)
            break;
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    } while (faas_now_ms() < until);
    cr_assert_eq(st.workers, 0, "the reaper did not remove a lapsed worker within 2 s");
    cr_assert_eq(st.instances, 0);
    disc_registry_free(r);
}

Test(registry, functions_and_gone_subscribers)
{
    disc_registry_t *r = disc_registry_new();
    char *argv[] = {"./x"};
    Faas__FunctionSpec f = FAAS__FUNCTION_SPEC__INIT;
    f.name = "hello";
    f.n_command = 1;
    f.command = argv;
    f.version = 5;
    cr_assert_eq(disc_registry_function_put(r, &f), 0);

    sink_t only_fn = {0}, only_inst = {0}, dies = {0};
    cr_assert_gt(disc_registry_subscribe(r, 1, 0, 0, collect, &only_fn), 0);
    cr_assert_gt(disc_registry_subscribe(r, 0, 1, 0, collect, &only_inst), 0);
    cr_assert_gt(disc_registry_subscribe(r, 1, 1, 1, collect, &dies), 0);
    cr_assert_eq(only_fn.n, 2);
    cr_assert_eq(only_fn.ev[0]->type, FAAS__WATCH_EVENT__TYPE__FUNCTION_PUT);
    cr_assert_eq(only_fn.ev[0]->function->version, 5);
    cr_assert_eq(only_inst.n, 1, "an instance-only watcher gets no functions");
    sink_clear(&only_fn);
    sink_clear(&only_inst);
    sink_clear(&dies);
    dies.fail = 1;

    /* an older version finishing late must not replace the newer one */
    f.version = 4;
    cr_assert_eq(disc_registry_function_put(r, &f), 0);
    cr_assert_eq(only_fn.n, 0);
    f.version = 6;
    cr_assert_eq(disc_registry_function_put(r, &f), 0);
    cr_assert_eq(only_fn.n, 1);
    cr_assert_eq(only_fn.ev[0]->function->version, 6);
    cr_assert_eq(disc_registry_function_delete(r, "hello"), 0);
    cr_assert_eq(disc_registry_function_delete(r, "hello"), -ENOENT);
    cr_assert_eq(only_fn.n, 2);
    cr_assert_eq(only_fn.flushes, 2, "each function change is flushed on its own");
    cr_assert_eq(only_fn.flushed_at, 2);
    cr_assert_eq(only_inst.flushes, 0, "a watcher that got nothing is not flushed");
    cr_assert_eq(only_fn.ev[1]->type, FAAS__WATCH_EVENT__TYPE__FUNCTION_DELETE);
    cr_assert_str_eq(only_fn.ev[1]->function->name, "hello");
    cr_assert_eq(only_inst.n, 0);

    disc_registry_stats_t st;
    disc_registry_stats(r, &st);
    cr_assert_eq(st.watchers, 2, "a sink that reported gone is dropped");
    cr_assert_eq(st.functions, 0);
    sink_clear(&only_fn);
    disc_registry_free(r);
}

Test(registry, bad_renewals_change_nothing)
{
    disc_registry_t *r = disc_registry_new();
    const char *err = NULL;
    Faas__LeaseRenewal lr = FAAS__LEASE_RENEWAL__INIT;
    cr_assert_eq(disc_registry_heartbeat(r, &lr, 1, &err), -1);
    cr_assert_not_null(strstr(err, "worker.id"));
    Faas__Instance a = mk_inst("dup", "hello", 0), b = mk_inst("dup", "hello", 0);
    Faas__Instance *set[] = {&a, &b};
    cr_assert_eq(beat(r, "w1", 1, set, 2, 1), -1);
    Faas__Instance noid = mk_inst("", "hello", 0), *set2[] = {&noid};
    cr_assert_eq(beat(r, "w1", 1, set2, 1, 1), -1);
    disc_registry_stats_t st;
    disc_registry_stats(r, &st);
    cr_assert_eq(st.workers, 0);
    cr_assert_eq(st.revision, 0);
    disc_registry_free(r);
}

/* A renewal of wid carrying n function errors (no instances). */
static int beat_errors(disc_registry_t *r, const char *wid, Faas__FunctionError **errs, size_t n, uint64_t now)
{
    Faas__Worker w = FAAS__WORKER__INIT;
    w.id = (char *)wid;
    Faas__LeaseRenewal lr = FAAS__LEASE_RENEWAL__INIT;
    lr.worker = &w;
    lr.errors = errs;
    lr.n_errors = n;
    lr.ttl_ms = 100;
    const char *err = NULL;
    return disc_registry_heartbeat(r, &lr, now, &err);
}

/* The status of fn, decoded; NULL if it is not deployed. */
static Faas__FunctionStatus *status_of(disc_registry_t *r, const char *fn)
{
    size_t len = 0;
    int missing = 0;
    uint8_t *buf = disc_registry_function_status(r, fn, &len, &missing);
    if (missing) {
        cr_assert_null(buf);
        return NULL;
    }
    cr_assert_not_null(buf);
    Faas__FunctionStatus *st = faas__function_status__unpack(NULL, len, buf);
    free(buf);
    cr_assert_not_null(st);
    return st;
}

Test(registry, function_errors_are_soft_state_of_each_worker)
{
    disc_registry_t *r = disc_registry_new();
    char *argv[] = {"./x"};
    Faas__FunctionSpec f = FAAS__FUNCTION_SPEC__INIT;
    f.name = "hello";
    f.n_command = 1;
    f.command = argv;
    f.version = 2;
    cr_assert_eq(disc_registry_function_put(r, &f), 0);
    cr_assert_null(status_of(r, "ghost"), "an unknown function is missing");
    Faas__FunctionStatus *st = status_of(r, "hello");
    cr_assert_str_eq(st->name, "hello");
    cr_assert_null(st->last_error);
    faas__function_status__free_unpacked(st, NULL);

    Faas__FunctionError old = FAAS__FUNCTION_ERROR__INIT, newer = FAAS__FUNCTION_ERROR__INIT;
    old.function = newer.function = "hello";
    old.version = 1;
    old.message = "cold start failed: exec ./x: No such file or directory";
    old.unix_ms = 1000;
    newer.version = 2;
    newer.message = "cold start failed: user server exited with status 3 before it was ready";
    newer.unix_ms = 2000;
    Faas__FunctionError *e1[] = {&old}, *e2[] = {&newer};
    uint64_t before = 0;
    disc_registry_stats_t s0;
    disc_registry_stats(r, &s0);
    before = s0.revision;
    cr_assert_eq(beat_errors(r, "w1", e1, 1, 10), 0);
    cr_assert_eq(beat_errors(r, "w2", e2, 1, 10), 0);
    st = status_of(r, "hello");
    cr_assert_not_null(st->last_error);
    cr_assert_str_eq(st->last_error->message, newer.message, "the newest over every worker");
    cr_assert_eq(st->last_error->version, 2);
    faas__function_status__free_unpacked(st, NULL);
    disc_registry_stats(r, &s0);
    cr_assert_eq(s0.revision, before + 2, "errors are not watched: only the two WORKER_PUTs count");

    /* w2 started it since (its renewal no longer lists the error); w1's stays */
    cr_assert_eq(beat_errors(r, "w2", NULL, 0, 20), 0);
    st = status_of(r, "hello");
    cr_assert_str_eq(st->last_error->message, old.message);
    faas__function_status__free_unpacked(st, NULL);
    /* a lapsed lease takes its worker's errors along */
    cr_assert_eq(disc_registry_expire(r, 10 + 100 + 1), 1);
    st = status_of(r, "hello");
    cr_assert_null(st->last_error);
    faas__function_status__free_unpacked(st, NULL);

    Faas__FunctionError noname = FAAS__FUNCTION_ERROR__INIT, *bad[] = {&noname};
    cr_assert_eq(beat_errors(r, "w3", bad, 1, 30), -1, "an error needs its function");
    disc_registry_free(r);
}
