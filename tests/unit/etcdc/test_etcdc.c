/* etcdc against a real etcd: every test starts its own (free ports, a temp data dir)
 * and kills it by PID in its fini. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "etcd_proc.h"
#include "etcdc/etcdc.h"
#include "tests/unit/watchdog.h"

static etcd_proc_t etcd;
static etcdc_t *cli;

/* LeakSanitizer: criterion 2.4's runner process (not a test's) leaks a few small blocks
 * when the long cluster tests run beside each other under --jobs=2. Only frames of the
 * runner are named: the tests run in workers whose stacks start at boxfort's bxfi_main,
 * so their leaks are still reported. The slow unwinder, because libcriterion has no
 * frame pointers (the fast one stops in it before reaching criterion_run_all_tests). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:criterion_run_all_tests\n";
}

static void up(void)
{
    cr_assert_eq(etcd_proc_start(&etcd), 0, "etcd did not start");
    char err[256];
    cli = etcdc_open(etcd.endpoint, 3000, err, sizeof(err));
    cr_assert_not_null(cli, "%s", err);
}

/* A watch's fn the test holds (watch_survives_etcd_restart): released before the
 * client's close joins the watch thread, so a failed assertion does not hang the fini. */
static void release_hold(void);

static void down(void)
{
    release_hold();
    etcdc_close(cli);
    cli = NULL;
    etcd_proc_destroy(&etcd);
}

#define S(x) (x), strlen(x)

static void put(const char *k, const char *v, int64_t *rev)
{
    int rc = etcdc_put(cli, S(k), S(v), 0, rev);
    cr_assert_eq(rc, 0, "put %s: %d %s", k, rc, etcdc_error());
}

Test(etcdc, open_rejects_bad_specs)
{
    char err[128];
    cr_assert_null(etcdc_open("etcd://", 0, err, sizeof(err)));
    cr_assert(strstr(err, "no etcd endpoint"), "%s", err);
    cr_assert_null(etcdc_open("etcd://h:1,nohost", 0, err, sizeof(err)));
    cr_assert(strstr(err, "nohost"), "%s", err);
    cr_assert_null(etcdc_open("h:0", 0, err, sizeof(err)));
    cr_assert_null(etcdc_open("h:99999", 0, err, sizeof(err)));
    etcdc_t *c = etcdc_open("etcd://a:1,b.example:2", 0, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    cr_assert_str_eq(etcdc_endpoint(c), "a:1");
    etcdc_close(c);
}

Test(etcdc, prefix_end)
{
    uint8_t out[8];
    cr_assert_eq(etcdc_prefix_end((const uint8_t *)"/faas/", 6, out, sizeof(out)), 6);
    cr_assert_eq(memcmp(out, "/faas0", 6), 0);
    cr_assert_eq(etcdc_prefix_end((const uint8_t *)"a\xff\xff", 3, out, sizeof(out)), 1);
    cr_assert_eq(out[0], 'b');
    cr_assert_eq(etcdc_prefix_end((const uint8_t *)"\xff", 1, out, sizeof(out)), 1);
    cr_assert_eq(out[0], 0);
    cr_assert_eq(etcdc_prefix_end((const uint8_t *)"", 0, out, sizeof(out)), 1);
    cr_assert_eq(out[0], 0);
}

Test(etcdc, get_put_delete, .init = up, .fini = down)
{
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(cli, S("/a"), &kv), -ENOENT);
    int64_t r1 = 0, r2 = 0;
    put("/a", "one", &r1);
    cr_assert_gt(r1, 0);
    cr_assert_eq(etcdc_get(cli, S("/a"), &kv), 0, "%s", etcdc_error());
    cr_assert_eq(kv.klen, 2);
    cr_assert_str_eq((char *)kv.key, "/a");
    cr_assert_str_eq((char *)kv.val, "one");
    cr_assert_eq(kv.mod_rev, r1);
    cr_assert_eq(kv.create_rev, r1);
    cr_assert_eq(kv.version, 1);
    etcdc_kv_free(&kv);
    put("/a", "two", &r2);
    cr_assert_eq(r2, r1 + 1);
    cr_assert_eq(etcdc_get(cli, S("/a"), &kv), 0);
    cr_assert_str_eq((char *)kv.val, "two");
    cr_assert_eq(kv.version, 2);
    cr_assert_eq(kv.create_rev, r1);
    etcdc_kv_free(&kv);
    /* binary keys and values, an empty value */
    cr_assert_eq(etcdc_put(cli, "b\0x", 3, "\0\1\2", 3, 0, NULL), 0);
    cr_assert_eq(etcdc_put(cli, S("/empty"), "", 0, 0, NULL), 0);
    cr_assert_eq(etcdc_get(cli, "b\0x", 3, &kv), 0);
    cr_assert_eq(kv.vlen, 3);
    cr_assert_eq(memcmp(kv.val, "\0\1\2", 3), 0);
    etcdc_kv_free(&kv);
    cr_assert_eq(etcdc_get(cli, S("/empty"), &kv), 0);
    cr_assert_eq(kv.vlen, 0);
    cr_assert_str_eq((char *)kv.val, "");
    etcdc_kv_free(&kv);
    int64_t deleted = -1;
    cr_assert_eq(etcdc_delete(cli, S("/a"), NULL, 0, &deleted), 0);
    cr_assert_eq(deleted, 1);
    cr_assert_eq(etcdc_delete(cli, S("/a"), NULL, 0, &deleted), 0);
    cr_assert_eq(deleted, 0);
    cr_assert_eq(etcdc_get(cli, S("/a"), &kv), -ENOENT);
}

Test(etcdc, range_prefix_limit_and_revision, .init = up, .fini = down)
{
    put("/p/a", "1", NULL);
    put("/p/c", "3", NULL);
    int64_t rev_b = 0;
    put("/p/b", "2", &rev_b);
    put("/q", "outside", NULL);
    put("/p/b", "2b", NULL);
    uint8_t end[8];
    size_t elen = etcdc_prefix_end((const uint8_t *)"/p/", 3, end, sizeof(end));
    etcdc_range_t r;
    cr_assert_eq(etcdc_range(cli, S("/p/"), end, elen, 0, 0, 0, &r), 0, "%s", etcdc_error());
    cr_assert_eq(r.n, 3);
    cr_assert_eq(r.count, 3);
    cr_assert_eq(r.more, 0);
    cr_assert_str_eq((char *)r.kvs[0].key, "/p/a"); /* sorted by key, not by revision */
    cr_assert_str_eq((char *)r.kvs[1].key, "/p/b");
    cr_assert_str_eq((char *)r.kvs[1].val, "2b");
    cr_assert_str_eq((char *)r.kvs[2].key, "/p/c");
    int64_t now = r.revision;
    etcdc_range_free(&r);
    cr_assert_eq(etcdc_range(cli, S("/p/"), end, elen, 0, 2, 0, &r), 0);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.count, 3);
    cr_assert_eq(r.more, 1);
    etcdc_range_free(&r);
    /* an older revision sees the old value and no /p/b yet one before it */
    cr_assert_eq(etcdc_range(cli, S("/p/b"), NULL, 0, rev_b, 0, 0, &r), 0);
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq((char *)r.kvs[0].val, "2");
    cr_assert_eq(r.revision, now); /* the header is the store's revision */
    etcdc_range_free(&r);
    cr_assert_eq(etcdc_range(cli, S("/p/b"), NULL, 0, rev_b - 1, 0, 0, &r), 0);
    cr_assert_eq(r.n, 0);
    etcdc_range_free(&r);
    cr_assert_eq(etcdc_range(cli, S("/p/"), end, elen, 0, 0, ETCDC_COUNT_ONLY, &r), 0);
    cr_assert_eq(r.n, 0);
    cr_assert_eq(r.count, 3);
    etcdc_range_free(&r);
    cr_assert_eq(etcdc_range(cli, S("/p/"), end, elen, 0, 0, ETCDC_KEYS_ONLY | ETCDC_SERIALIZABLE, &r), 0);
    cr_assert_eq(r.n, 3);
    cr_assert_eq(r.kvs[0].vlen, 0);
    etcdc_range_free(&r);
    int64_t deleted = 0;
    cr_assert_eq(etcdc_delete(cli, S("/p/"), end, elen, &deleted), 0);
    cr_assert_eq(deleted, 3);
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(cli, S("/q"), &kv), 0);
    etcdc_kv_free(&kv);
}

/* ---- transactions ---- */

Test(etcdc, txn_branches_and_gets, .init = up, .fini = down)
{
    /* create-if-absent: version("/t") == 0 */
    etcdc_cmp_t absent = {.target = ETCDC_CMP_VERSION, .op = ETCDC_EQ, .key = "/t", .klen = 2, .num = 0};
    etcdc_op_t create[] = {{.kind = ETCDC_OP_PUT, .key = "/t", .klen = 2, .val = "v1", .vlen = 2},
                           {.kind = ETCDC_OP_PUT, .key = "/t2", .klen = 3, .val = "x", .vlen = 1}};
    etcdc_op_t read[] = {{.kind = ETCDC_OP_GET, .key = "/t2", .klen = 3},
                         {.kind = ETCDC_OP_PUT, .key = "/t3", .klen = 3, .val = "y", .vlen = 1},
                         {.kind = ETCDC_OP_GET, .key = "/t", .klen = 2}};
    int ok = -1;
    int64_t rev = 0;
    etcdc_range_t *gets = NULL;
    size_t ngets = 9;
    cr_assert_eq(etcdc_txn(cli, &absent, 1, create, 2, read, 3, &ok, &rev, &gets, &ngets), 0, "%s", etcdc_error());
    cr_assert_eq(ok, 1);
    cr_assert_gt(rev, 0);
    cr_assert_eq(ngets, 0);
    cr_assert_null(gets);
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(cli, S("/t2"), &kv), 0);
    cr_assert_eq(kv.mod_rev, rev); /* one revision for the whole branch */
    etcdc_kv_free(&kv);
    /* again: it exists, so the other branch runs, and its GETs come back in order */
    cr_assert_eq(etcdc_txn(cli, &absent, 1, create, 2, read, 3, &ok, &rev, &gets, &ngets), 0, "%s", etcdc_error());
    cr_assert_eq(ok, 0);
    cr_assert_eq(ngets, 2);
    cr_assert_eq(gets[0].n, 1);
    cr_assert_str_eq((char *)gets[0].kvs[0].key, "/t2");
    cr_assert_eq(gets[1].n, 1);
    cr_assert_str_eq((char *)gets[1].kvs[0].val, "v1");
    cr_assert_eq(gets[1].revision, rev);
    for (size_t i = 0; i < ngets; i++)
        etcdc_range_free(&gets[i]);
    free(gets);
    cr_assert_eq(etcdc_get(cli, S("/t3"), &kv), 0);
    etcdc_kv_free(&kv);
    /* compare on the value; a delete of a range in a branch */
    etcdc_cmp_t val = {.target = ETCDC_CMP_VALUE, .op = ETCDC_EQ, .key = "/t", .klen = 2, .val = "v1", .vlen = 2};
    etcdc_op_t del = {.kind = ETCDC_OP_DELETE, .key = "/t2", .klen = 3, .end = "/t4", .elen = 3};
    cr_assert_eq(etcdc_txn(cli, &val, 1, &del, 1, NULL, 0, &ok, NULL, NULL, NULL), 0);
    cr_assert_eq(ok, 1);
    cr_assert_eq(etcdc_get(cli, S("/t2"), &kv), -ENOENT);
    cr_assert_eq(etcdc_get(cli, S("/t3"), &kv), -ENOENT);
    val.op = ETCDC_NE;
    cr_assert_eq(etcdc_txn(cli, &val, 1, &del, 1, NULL, 0, &ok, NULL, NULL, NULL), 0);
    cr_assert_eq(ok, 0);
}

/* Optimistic concurrency: read, someone else writes, our update conditioned on the mod
 * revision we read loses and leaves their value. */
Test(etcdc, txn_mod_revision_update_loses, .init = up, .fini = down)
{
    put("/fn/f", "v1", NULL);
    etcdc_kv_t seen;
    cr_assert_eq(etcdc_get(cli, S("/fn/f"), &seen), 0);
    put("/fn/f", "theirs", NULL);
    etcdc_cmp_t unchanged = {.target = ETCDC_CMP_MOD, .op = ETCDC_EQ, .key = "/fn/f", .klen = 5, .num = seen.mod_rev};
    etcdc_op_t mine = {.kind = ETCDC_OP_PUT, .key = "/fn/f", .klen = 5, .val = "mine", .vlen = 4};
    etcdc_op_t reread = {.kind = ETCDC_OP_GET, .key = "/fn/f", .klen = 5};
    int ok = -1;
    etcdc_range_t *gets = NULL;
    size_t ngets = 0;
    cr_assert_eq(etcdc_txn(cli, &unchanged, 1, &mine, 1, &reread, 1, &ok, NULL, &gets, &ngets), 0);
    cr_assert_eq(ok, 0);
    cr_assert_eq(ngets, 1);
    cr_assert_str_eq((char *)gets[0].kvs[0].val, "theirs");
    /* retried with what it read now, it wins */
    unchanged.num = gets[0].kvs[0].mod_rev;
    etcdc_range_free(&gets[0]);
    free(gets);
    cr_assert_eq(etcdc_txn(cli, &unchanged, 1, &mine, 1, NULL, 0, &ok, NULL, NULL, NULL), 0);
    cr_assert_eq(ok, 1);
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(cli, S("/fn/f"), &kv), 0);
    cr_assert_str_eq((char *)kv.val, "mine");
    etcdc_kv_free(&kv);
    etcdc_kv_free(&seen);
    /* GT / LT on the create revision */
    etcdc_cmp_t newer = {.target = ETCDC_CMP_CREATE, .op = ETCDC_GT, .key = "/fn/f", .klen = 5, .num = 0};
    cr_assert_eq(etcdc_txn(cli, &newer, 1, NULL, 0, NULL, 0, &ok, NULL, NULL, NULL), 0);
    cr_assert_eq(ok, 1);
    newer.op = ETCDC_LT;
    cr_assert_eq(etcdc_txn(cli, &newer, 1, NULL, 0, NULL, 0, &ok, NULL, NULL, NULL), 0);
    cr_assert_eq(ok, 0);
}

/* ---- leases ---- */

Test(etcdc, lease_grant_keepalive_revoke, .init = up, .fini = down)
{
    int64_t id = 0, ttl = 0;
    cr_assert_eq(etcdc_lease_grant(cli, 30, &id), 0, "%s", etcdc_error());
    cr_assert_neq(id, 0);
    cr_assert_eq(etcdc_put(cli, S("/inst/1"), S("x"), id, NULL), 0, "%s", etcdc_error());
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(cli, S("/inst/1"), &kv), 0);
    cr_assert_eq(kv.lease, id);
    etcdc_kv_free(&kv);
    cr_assert_eq(etcdc_lease_keepalive(cli, id, &ttl), 0, "%s", etcdc_error());
    cr_assert_eq(ttl, 30);
    cr_assert_eq(etcdc_lease_revoke(cli, id), 0, "%s", etcdc_error());
    cr_assert_eq(etcdc_get(cli, S("/inst/1"), &kv), -ENOENT);
    cr_assert_eq(etcdc_lease_keepalive(cli, id, &ttl), -ENOENT);
    cr_assert(strstr(etcdc_error(), "expired"), "%s", etcdc_error());
    cr_assert_eq(etcdc_lease_revoke(cli, id), -ENOENT);
    cr_assert(strstr(etcdc_error(), "lease not found"), "%s", etcdc_error());
    /* a put on a lease that does not exist is etcd's refusal, not a transport error */
    cr_assert_eq(etcdc_put(cli, S("/inst/2"), S("x"), id, NULL), -ENOENT);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

Test(etcdc, lease_expiry_deletes_keys, .init = up, .fini = down)
{
    UNIT_WATCHDOG(30);
    int64_t id = 0, ttl = 0;
    cr_assert_eq(etcdc_lease_grant(cli, 1, &id), 0, "%s", etcdc_error());
    cr_assert_eq(etcdc_put(cli, S("/inst/e"), S("x"), id, NULL), 0);
    /* renewed, it outlives its first TTL (etcd's minimum TTL is above 1 s) */
    cr_assert_eq(etcdc_lease_keepalive(cli, id, &ttl), 0);
    cr_assert_geq(ttl, 1);
    etcdc_kv_t kv;
    int gone = 0;
    for (int64_t end = now_ms() + 15000; !gone && now_ms() < end; nap_ms(100)) {
        int rc = etcdc_get(cli, S("/inst/e"), &kv);
        if (rc == 0)
            etcdc_kv_free(&kv);
        gone = rc == -ENOENT;
    }
    cr_assert(gone, "the lease's key outlived it");
    cr_assert_eq(etcdc_lease_keepalive(cli, id, &ttl), -ENOENT);
}

/* ---- watches ---- */

enum { MAX_SEEN = 256 };

/* What a watch delivered, for the test thread to wait on. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    int type[MAX_SEEN];
    char key[MAX_SEEN][32], val[MAX_SEEN][32];
    int64_t rev[MAX_SEEN];
    int calls;
    int64_t last_rev; /* the revision argument of the last call */
    int bad_order;    /* an event below the one before it, or a call's revision not above the last */
    int resyncs;
    int64_t compact_rev, resync_rev;
    int stop_after;   /* fn returns non-zero once n reaches it (0: never) */
    const char *hold_key; /* fn waits on seeing it until released (the watch cannot read on) */
    int holding, released;
} seen_t;

static seen_t *held;

static void release_hold(void)
{
    if (held == NULL)
        return;
    pthread_mutex_lock(&held->mu);
    held->released = 1;
    pthread_cond_broadcast(&held->cv);
    pthread_mutex_unlock(&held->mu);
}

static void seen_init(seen_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static int on_events(void *ud, const etcdc_event_t *evs, size_t n, int64_t revision)
{
    seen_t *s = ud;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n && s->n < MAX_SEEN; i++, s->n++) {
        if (s->n > 0 && evs[i].kv.mod_rev < s->rev[s->n - 1])
            s->bad_order = 1;
        s->type[s->n] = evs[i].type;
        s->rev[s->n] = evs[i].kv.mod_rev;
        snprintf(s->key[s->n], sizeof(s->key[0]), "%.*s", (int)evs[i].kv.klen, (char *)evs[i].kv.key);
        snprintf(s->val[s->n], sizeof(s->val[0]), "%.*s", (int)evs[i].kv.vlen, (char *)evs[i].kv.val);
    }
    if (revision != evs[n - 1].kv.mod_rev || revision <= s->last_rev)
        s->bad_order = 1;
    s->last_rev = revision;
    s->calls++;
    int stop = s->stop_after > 0 && s->n >= s->stop_after;
    pthread_cond_broadcast(&s->cv);
    if (s->hold_key != NULL && strcmp(s->key[s->n - 1], s->hold_key) == 0) {
        s->holding = 1;
        pthread_cond_broadcast(&s->cv);
        while (!s->released)
            pthread_cond_wait(&s->cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return stop;
}

static int64_t on_resync(void *ud, int64_t compact_rev)
{
    seen_t *s = ud;
    etcdc_range_t r;
    int64_t rev = -1;
    /* what a real caller does: read the range afresh and resume after that read */
    if (etcdc_range(cli, S("/w/"), "/w0", 3, 0, 0, 0, &r) == 0) {
        rev = r.revision;
        etcdc_range_free(&r);
    }
    pthread_mutex_lock(&s->mu);
    s->resyncs++;
    s->compact_rev = compact_rev;
    s->resync_rev = rev;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rev;
}

/* Waits (bounded) until n events arrived; the count then. */
static int seen_wait(seen_t *s, int n, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    pthread_mutex_lock(&s->mu);
    while (s->n < n && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0) {
    }
    int got = s->n;
    pthread_mutex_unlock(&s->mu);
    return got;
}

static etcdc_watch_t *watch_w(seen_t *s, int64_t from)
{
    char err[256];
    etcdc_watch_t *w = etcdc_watch_start(cli, S("/w/"), "/w0", 3, from, on_events, on_resync, s, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    return w;
}

Test(etcdc, watch_from_a_past_revision, .init = up, .fini = down)
{
    UNIT_WATCHDOG(30);
    int64_t r1, r2;
    put("/w/a", "1", &r1);
    put("/w/b", "2", &r2);
    put("/other", "x", NULL);
    put("/w/c", "3", NULL);
    cr_assert_eq(etcdc_delete(cli, S("/w/a"), NULL, 0, NULL), 0);
    seen_t s;
    seen_init(&s);
    etcdc_watch_t *w = watch_w(&s, r1 + 1); /* a range read at r1, then a watch */
    cr_assert_eq(seen_wait(&s, 3, 10000), 3);
    cr_assert_str_eq(s.key[0], "/w/b");
    cr_assert_eq(s.rev[0], r2);
    cr_assert_str_eq(s.key[1], "/w/c");
    cr_assert_str_eq(s.val[1], "3");
    cr_assert_eq(s.type[1], ETCDC_EV_PUT);
    cr_assert_str_eq(s.key[2], "/w/a");
    cr_assert_eq(s.type[2], ETCDC_EV_DELETE);
    /* live events next, grouped: a transaction's two puts come in one call */
    int calls = s.calls;
    etcdc_op_t two[] = {{.kind = ETCDC_OP_PUT, .key = "/w/x", .klen = 4, .val = "x", .vlen = 1},
                        {.kind = ETCDC_OP_PUT, .key = "/w/y", .klen = 4, .val = "y", .vlen = 1}};
    int ok;
    int64_t trev;
    cr_assert_eq(etcdc_txn(cli, NULL, 0, two, 2, NULL, 0, &ok, &trev, NULL, NULL), 0);
    cr_assert_eq(seen_wait(&s, 5, 10000), 5);
    cr_assert_eq(s.calls, calls + 1);
    cr_assert_eq(s.rev[3], trev);
    cr_assert_eq(s.rev[4], trev);
    cr_assert_eq(etcdc_watch_revision(w), trev);
    cr_assert_eq(s.bad_order, 0);
    etcdc_watch_stop(w);
    /* nothing is delivered after stop returned */
    put("/w/z", "z", NULL);
    cr_assert_eq(seen_wait(&s, 6, 300), 5);
}

Test(etcdc, watch_stops_when_fn_says_so, .init = up, .fini = down)
{
    UNIT_WATCHDOG(30);
    seen_t s;
    seen_init(&s);
    s.stop_after = 1;
    int64_t r;
    put("/w/seed", "0", &r);
    etcdc_watch_t *w = watch_w(&s, r + 1);
    put("/w/1", "1", NULL);
    cr_assert_eq(seen_wait(&s, 1, 10000), 1);
    put("/w/2", "2", NULL);
    cr_assert_eq(seen_wait(&s, 2, 300), 1);
    etcdc_watch_stop(w);
}

/* kill -9 in the middle: the watch reconnects once etcd is back and delivers every
 * write exactly once, including those made while it was cut off. fn holds the watch
 * thread while etcd dies and comes back and the writes are made, so the stream that
 * resumes cannot have been opened before them. */
Test(etcdc, watch_survives_etcd_restart, .init = up, .fini = down)
{
    UNIT_WATCHDOG(60);
    int64_t r;
    put("/w/seed", "0", &r);
    seen_t s;
    seen_init(&s);
    s.hold_key = "/w/4";
    held = &s;
    etcdc_watch_t *w = watch_w(&s, r + 1);
    char k[16];
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof(k), "/w/%d", i);
        put(k, k, NULL);
    }
    cr_assert_eq(seen_wait(&s, 5, 10000), 5);
    pthread_mutex_lock(&s.mu);
    cr_assert_eq(s.holding, 1);
    pthread_mutex_unlock(&s.mu);
    etcd_proc_kill(&etcd);
    cr_assert_eq(etcd_proc_restart(&etcd), 0, "etcd did not come back");
    for (int i = 5; i < 10; i++) {
        snprintf(k, sizeof(k), "/w/%d", i);
        int rc = -EAGAIN;
        for (int64_t end = now_ms() + 10000; rc == -EAGAIN && now_ms() < end;)
            if ((rc = etcdc_put(cli, S(k), S(k), 0, NULL)) == -EAGAIN)
                nap_ms(50); /* the channel's reconnect backoff */
        cr_assert_eq(rc, 0, "%s", etcdc_error());
    }
    release_hold();
    cr_assert_eq(seen_wait(&s, 10, 20000), 10);
    cr_assert_eq(seen_wait(&s, 11, 500), 10, "an event was repeated");
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "/w/%d", i);
        cr_assert_str_eq(s.key[i], k);
        cr_assert_eq(s.rev[i], r + 1 + i);
    }
    cr_assert_eq(s.bad_order, 0);
    cr_assert_eq(etcdc_watch_revision(w), r + 10);
    etcdc_watch_stop(w);
    held = NULL;
}

Test(etcdc, watch_after_compaction_resyncs, .init = up, .fini = down)
{
    UNIT_WATCHDOG(30);
    int64_t r1, r3;
    put("/w/1", "1", &r1);
    put("/w/2", "2", NULL);
    put("/w/3", "3", &r3);
    char rev[32];
    snprintf(rev, sizeof(rev), "%lld", (long long)r3);
    cr_assert_eq(etcd_proc_ctl(&etcd, "compact", rev, NULL), 0);
    etcdc_range_t old;
    cr_assert_eq(etcdc_range(cli, S("/w/1"), NULL, 0, r1, 0, 0, &old), -ECANCELED);
    cr_assert(strstr(etcdc_error(), "compacted"), "%s", etcdc_error());
    seen_t s;
    seen_init(&s);
    etcdc_watch_t *w = watch_w(&s, r1 + 1);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&s.mu);
    while (s.resyncs == 0 && pthread_cond_timedwait(&s.cv, &s.mu, &until) == 0) {
    }
    pthread_mutex_unlock(&s.mu);
    cr_assert_eq(s.resyncs, 1);
    cr_assert_eq(s.compact_rev, r3);
    cr_assert_geq(s.resync_rev, r3);
    cr_assert_eq(s.n, 0, "events from before the compaction were delivered");
    int64_t r4;
    put("/w/4", "4", &r4);
    cr_assert_eq(seen_wait(&s, 1, 10000), 1);
    cr_assert_eq(s.rev[0], r4);
    cr_assert_eq(s.resyncs, 1);
    etcdc_watch_stop(w);
}

/* Stopped while etcd is down (the watch backing off), stop returns at once. */
Test(etcdc, watch_stop_while_etcd_down, .init = up, .fini = down)
{
    UNIT_WATCHDOG(30);
    seen_t s;
    seen_init(&s);
    etcdc_watch_t *w = watch_w(&s, 1);
    etcd_proc_kill(&etcd);
    nap_ms(300); /* let it fail and back off at least once */
    int64_t t0 = now_ms();
    etcdc_watch_stop(w);
    cr_assert_lt(now_ms() - t0, 5000, "stop hung");
}

/* ---- endpoints ---- */

Test(etcdc, failover_past_a_dead_endpoint, .init = up, .fini = down)
{
    UNIT_WATCHDOG(30);
    char spec[128], err[256];
    snprintf(spec, sizeof(spec), "etcd://127.0.0.1:%d,%s", etcd_proc_free_port(), etcd.endpoint);
    etcdc_t *c = etcdc_open(spec, 2000, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    int64_t rev = 0;
    /* a write that never reached the dead one is retried on the next */
    cr_assert_eq(etcdc_put(c, S("/f"), S("v"), 0, &rev), 0, "%s", etcdc_error());
    cr_assert_str_eq(etcdc_endpoint(c), etcd.endpoint);
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(c, S("/f"), &kv), 0);
    etcdc_kv_free(&kv);
    /* a watch on a client whose first endpoint is dead */
    etcdc_t *save = cli;
    char spec2[128];
    snprintf(spec2, sizeof(spec2), "127.0.0.1:%d,%s", etcd_proc_free_port(), etcd.endpoint);
    etcdc_t *c2 = etcdc_open(spec2, 2000, err, sizeof(err));
    cr_assert_not_null(c2);
    cli = c2;
    seen_t s;
    seen_init(&s);
    watch_w(&s, rev);
    put("/w/k", "v", NULL);
    cr_assert_eq(seen_wait(&s, 1, 15000), 1);
    etcdc_close(c2); /* stops the watch too */
    cli = save;
    etcdc_close(c);
}

Test(etcdc, none_reachable_is_eagain)
{
    UNIT_WATCHDOG(30);
    char spec[128], err[256];
    snprintf(spec, sizeof(spec), "127.0.0.1:%d,127.0.0.1:%d", etcd_proc_free_port(), etcd_proc_free_port());
    etcdc_t *c = etcdc_open(spec, 2000, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(c, S("/x"), &kv), -EAGAIN);
    cr_assert(strstr(etcdc_error(), "no etcd endpoint answered"), "%s", etcdc_error());
    cr_assert_eq(etcdc_put(c, S("/x"), S("v"), 0, NULL), -EAGAIN);
    int ok;
    cr_assert_eq(etcdc_txn(c, NULL, 0, NULL, 0, NULL, 0, &ok, NULL, NULL, NULL), -EAGAIN);
    int64_t id;
    cr_assert_eq(etcdc_lease_grant(c, 5, &id), -EAGAIN);
    const char *e = etcdc_error();
    for (const char *p = e; *p; p++)
        cr_assert(*p >= 0x20, "control byte in \"%s\"", e);
    etcdc_close(c);
}

/* etcd is wiped and started afresh at the same address (a rebuilt cluster): its
 * revisions start over below the last one delivered. The watch resyncs instead of
 * ignoring every change until the new revisions pass the old ones. */
Test(etcdc, watch_resyncs_when_etcd_revision_goes_back, .init = up, .fini = down)
{
    UNIT_WATCHDOG(60);
    int64_t r;
    put("/w/seed", "0", &r);
    seen_t s;
    seen_init(&s);
    etcdc_watch_t *w = watch_w(&s, r + 1);
    char k[16];
    int64_t last = 0;
    for (int i = 0; i < 8; i++) {
        snprintf(k, sizeof(k), "/w/%d", i);
        put(k, k, &last);
    }
    cr_assert_eq(seen_wait(&s, 8, 10000), 8);
    /* the watch notes a batch's revision once its callback returned: seen_wait can wake
     * before that (an ASan run read the start revision here) */
    for (int64_t until = now_ms() + 10000; etcdc_watch_revision(w) < last && now_ms() < until;)
        nap_ms(10);
    int64_t before = etcdc_watch_revision(w);
    cr_assert_eq(before, last, "the watch did not get to the last put's revision");
    etcd_proc_kill(&etcd);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s/data", etcd.dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(etcd_proc_restart(&etcd), 0, "etcd did not start again");
    int64_t after = -1;
    for (int64_t until = now_ms() + 20000; after < 0 && now_ms() < until;)
        if (etcdc_put(cli, S("/w/new"), S("n"), 0, &after) != 0)
            nap_ms(100);
    cr_assert_gt(after, 0, "%s", etcdc_error());
    cr_assert_lt(after, before, "the new etcd is not behind the old one: put at %lld, the watch was at %lld", (long long)after, (long long)before);
    pthread_mutex_lock(&s.mu);
    for (int64_t until = now_ms() + 20000; s.resyncs == 0 && now_ms() < until;) {
        pthread_mutex_unlock(&s.mu);
        nap_ms(50);
        pthread_mutex_lock(&s.mu);
    }
    int resyncs = s.resyncs;
    int64_t compact = s.compact_rev;
    pthread_mutex_unlock(&s.mu);
    cr_assert_eq(resyncs, 1, "no resync after etcd's revision went back");
    cr_assert_eq(compact, 0);
    /* the watch then follows the new etcd: a change after the resync arrives (after
     * /w/new too when the resync read before that put) */
    put("/w/later", "l", NULL);
    int later = 0;
    for (int64_t until = now_ms() + 15000; !later && now_ms() < until;) {
        int n = seen_wait(&s, 9, 200);
        pthread_mutex_lock(&s.mu);
        later = n > 8 && strcmp(s.key[s.n - 1], "/w/later") == 0;
        pthread_mutex_unlock(&s.mu);
        if (!later)
            nap_ms(50);
    }
    cr_assert(later, "the watch does not follow the new etcd");
    etcdc_watch_stop(w);
}

/* ---- a cluster: the member in use dies ---- */

static etcd_proc_t members[3];

static void cluster_up(void)
{
    cr_assert_eq(etcd_cluster_start(members, 3), 0, "the etcd cluster did not start");
    char spec[256], err[256];
    snprintf(spec, sizeof(spec), "etcd://%s,%s,%s", members[0].endpoint, members[1].endpoint, members[2].endpoint);
    cli = etcdc_open(spec, 3000, err, sizeof(err));
    cr_assert_not_null(cli, "%s", err);
}

static void cluster_down(void)
{
    etcdc_close(cli);
    cli = NULL;
    for (int i = 0; i < 3; i++)
        etcd_proc_destroy(&members[i]);
}

/* The member the client and its watch use is killed: calls move to another member and
 * the watch resumes there, every event once. */
Test(etcdc, cluster_member_dies, .init = cluster_up, .fini = cluster_down)
{
    UNIT_WATCHDOG(60);
    int64_t r;
    put("/w/seed", "0", &r);
    cr_assert_str_eq(etcdc_endpoint(cli), members[0].endpoint);
    seen_t s;
    seen_init(&s);
    etcdc_watch_t *w = watch_w(&s, r + 1);
    char k[16];
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof(k), "/w/%d", i);
        put(k, k, NULL);
    }
    cr_assert_eq(seen_wait(&s, 5, 10000), 5);
    etcd_proc_kill(&members[0]);
    /* a read first: it may meet the dead connection and is retried on the next member
     * (a write there would be refused as "may have been applied") */
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(cli, S("/w/0"), &kv), 0, "%s", etcdc_error());
    etcdc_kv_free(&kv);
    cr_assert_str_neq(etcdc_endpoint(cli), members[0].endpoint);
    for (int i = 5; i < 10; i++) {
        snprintf(k, sizeof(k), "/w/%d", i);
        put(k, k, NULL);
    }
    cr_assert_eq(seen_wait(&s, 10, 20000), 10);
    cr_assert_eq(seen_wait(&s, 11, 500), 10, "an event was repeated");
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "/w/%d", i);
        cr_assert_str_eq(s.key[i], k);
    }
    cr_assert_eq(s.bad_order, 0);
    etcdc_watch_stop(w);
}

/* The member in use stops answering but stays up (SIGSTOP: its sockets stay open, as
 * with a member cut off by a partition): a call on it times out, the next call goes to
 * another member, and the watch resumes there, every event once. */
Test(etcdc, cluster_member_hangs, .init = cluster_up, .fini = cluster_down)
{
    UNIT_WATCHDOG(120);
    int64_t r;
    put("/w/hseed", "0", &r);
    cr_assert_str_eq(etcdc_endpoint(cli), members[0].endpoint);
    seen_t s;
    seen_init(&s);
    etcdc_watch_t *w = watch_w(&s, r + 1);
    put("/w/h0", "/w/h0", NULL);
    cr_assert_eq(seen_wait(&s, 1, 10000), 1);
    cr_assert_eq(kill(members[0].pid, SIGSTOP), 0);
    /* reads go on elsewhere within a few call deadlines (the first may time out, and
     * the others need a leader after the stopped one's term) */
    etcdc_kv_t kv;
    /* the first read meets the stopped member on a connection that is still up: it
     * times out, and the client leaves that member for the next call */
    int rc = etcdc_get(cli, S("/w/h0"), &kv);
    cr_assert_eq(rc, -ETIMEDOUT, "%d %s", rc, etcdc_error());
    cr_assert_str_neq(etcdc_endpoint(cli), members[0].endpoint, "a timed-out member stays in use");
    for (int64_t until = now_ms() + 30000; rc != 0 && now_ms() < until;) {
        if ((rc = etcdc_get(cli, S("/w/h0"), &kv)) == 0)
            etcdc_kv_free(&kv);
    }
    cr_assert_eq(rc, 0, "no read succeeded on another member: %s", etcdc_error());
    cr_assert_str_neq(etcdc_endpoint(cli), members[0].endpoint);
    char k[16];
    for (int i = 1; i < 5; i++) {
        snprintf(k, sizeof(k), "/w/h%d", i);
        put(k, k, NULL);
    }
    /* the stream on the stopped member ends by its keepalive (10 s + 5 s) at the latest */
    cr_assert_eq(seen_wait(&s, 5, 60000), 5, "the watch did not resume on another member");
    cr_assert_eq(seen_wait(&s, 6, 500), 5, "an event was repeated");
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof(k), "/w/h%d", i);
        cr_assert_str_eq(s.key[i], k);
    }
    cr_assert_eq(s.bad_order, 0);
    etcdc_watch_stop(w);
    kill(members[0].pid, SIGCONT);
}

/* A member cut off from the others (they are stopped) has no leader: with etcd's
 * hasleader metadata it refuses at once ("no leader") rather than letting a read wait
 * out its deadline, so the caller can go elsewhere. */
Test(etcdc, leaderless_member_refuses, .init = cluster_up, .fini = cluster_down)
{
    UNIT_WATCHDOG(60);
    put("/w/l", "1", NULL);
    char err[256];
    etcdc_t *c = etcdc_open(members[0].endpoint, 2000, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(c, S("/w/l"), &kv), 0, "%s", etcdc_error());
    etcdc_kv_free(&kv);
    kill(members[1].pid, SIGSTOP);
    kill(members[2].pid, SIGSTOP);
    int refused = 0;
    for (int64_t until = now_ms() + 30000; !refused && now_ms() < until;) {
        int rc = etcdc_get(c, S("/w/l"), &kv);
        if (rc == 0)
            etcdc_kv_free(&kv);
        else
            refused = strstr(etcdc_error(), "no leader") != NULL;
        if (!refused)
            nap_ms(200);
    }
    kill(members[1].pid, SIGCONT);
    kill(members[2].pid, SIGCONT);
    cr_assert(refused, "a leaderless member never said so (last: %s)", etcdc_error());
    etcdc_close(c);
}

/* A port that accepts TCP (the kernel's backlog) and never speaks: a hung etcd. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 16) == 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Each call has its deadline: a silent endpoint costs one, then the read goes on to the
 * next endpoint; alone, it is -ETIMEDOUT or -EAGAIN, never a hang. */
Test(etcdc, silent_endpoint_deadline, .init = up, .fini = down)
{
    UNIT_WATCHDOG(30);
    int port, fd = silent_listener(&port);
    char spec[128], err[256];
    snprintf(spec, sizeof(spec), "127.0.0.1:%d,%s", port, etcd.endpoint);
    etcdc_t *c = etcdc_open(spec, 500, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    put("/s", "v", NULL);
    etcdc_kv_t kv;
    int rc = etcdc_get(c, S("/s"), &kv);
    cr_assert_eq(rc, 0, "%d %s", rc, etcdc_error());
    etcdc_kv_free(&kv);
    cr_assert_str_eq(etcdc_endpoint(c), etcd.endpoint);
    etcdc_close(c);
    snprintf(spec, sizeof(spec), "127.0.0.1:%d", port);
    c = etcdc_open(spec, 500, err, sizeof(err));
    int64_t t0 = now_ms();
    rc = etcdc_put(c, S("/s"), S("v"), 0, NULL);
    cr_assert(rc == -ETIMEDOUT || rc == -EAGAIN, "%d %s", rc, etcdc_error());
    cr_assert_lt(now_ms() - t0, 10000);
    etcdc_close(c);
    close(fd);
}

/* ---- a write that reached a server which then reset the connection ---- */

typedef struct {
    int lfd, port;
    _Atomic int got_data; /* the request's DATA frame arrived before the reset */
    pthread_t th;
} resetter_t;

/* Reads exactly n bytes; 0 or -1. */
static int read_full(int fd, uint8_t *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Speaks just enough HTTP/2 for grpc to send a call (the client preface read, an empty
 * SETTINGS sent), reads frames until the request's DATA frame, then resets the
 * connection (SO_LINGER 0): the request reached the server, whatever it did with it. */
static void *resetter_main(void *arg)
{
    resetter_t *r = arg;
    int fd = accept(r->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    uint8_t pre[24], hdr[9], body[16384];
    if (read_full(fd, pre, sizeof(pre)) != 0 || write(fd, settings, sizeof(settings)) != 9)
        goto out;
    for (;;) {
        if (read_full(fd, hdr, 9) != 0)
            goto out;
        size_t len = (size_t)hdr[0] << 16 | (size_t)hdr[1] << 8 | hdr[2];
        if (len > sizeof(body) || read_full(fd, body, len) != 0)
            goto out;
        uint32_t stream = ((uint32_t)(hdr[5] & 0x7f) << 24) | (uint32_t)hdr[6] << 16 | (uint32_t)hdr[7] << 8 | hdr[8];
        if (hdr[3] == 0 && stream != 0 && len > 0) { /* DATA on a call: the request */
            r->got_data = 1;
            break;
        }
    }
out:;
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
    return NULL;
}

/* A write the server received and then lost the connection on ("Connection reset by
 * peer") may have been applied: it fails with -EIO and is not sent to the next endpoint,
 * which would apply it a second time. The client moves on for the next call. */
Test(etcdc, write_reset_after_sending_not_retried, .init = up, .fini = down)
{
    UNIT_WATCHDOG(30);
    resetter_t r = {0};
    r.lfd = silent_listener(&r.port);
    cr_assert_eq(pthread_create(&r.th, NULL, resetter_main, &r), 0);
    char spec[128], err[256];
    snprintf(spec, sizeof(spec), "127.0.0.1:%d,%s", r.port, etcd.endpoint);
    etcdc_t *c = etcdc_open(spec, 5000, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    int rc = etcdc_put(c, S("/reset"), S("v"), 0, NULL);
    pthread_join(r.th, NULL);
    close(r.lfd);
    cr_assert(r.got_data, "the fake endpoint never saw the request");
    cr_assert_eq(rc, -EIO, "%d %s", rc, etcdc_error());
    cr_assert(strstr(etcdc_error(), "may have been applied"), "%s", etcdc_error());
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(cli, S("/reset"), &kv), -ENOENT, "the write was sent to the next endpoint too");
    /* the endpoint that failed is left: the next call goes to the real etcd */
    cr_assert_eq(etcdc_put(c, S("/reset"), S("w"), 0, NULL), 0, "%s", etcdc_error());
    cr_assert_str_eq(etcdc_endpoint(c), etcd.endpoint);
    etcdc_close(c);
}
