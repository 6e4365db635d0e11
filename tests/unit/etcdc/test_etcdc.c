/* etcdc against a real etcd: every test starts its own (free ports, a temp data dir)
 * and kills it by PID in its fini. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etcd_proc.h"
#include "etcdc/etcdc.h"

static etcd_proc_t etcd;
static etcdc_t *cli;

static void up(void)
{
    cr_assert_eq(etcd_proc_start(&etcd), 0, "etcd did not start");
    char err[256];
    cli = etcdc_open(etcd.endpoint, 3000, err, sizeof(err));
    cr_assert_not_null(cli, "%s", err);
}

static void down(void)
{
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
