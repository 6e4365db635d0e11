/* The durable function store and spec validation, on a real SQLite file in a temp dir. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/spec.h"
#include "common/util.h"
#include "discovery/discovery.h"

static char dir[256];
static char sha[65];

/* Uploads some bytes through the real upload path so deploys have an artifact. */
static void upload(disc_store_t *st, const char *content, char *out)
{
    const char *err = NULL;
    uint64_t size = 0;
    disc_upload_t *up = disc_upload_begin(disc_store_artifact_dir(st), 1 << 20, &err);
    cr_assert_not_null(up, "%s", err);
    cr_assert_eq(disc_upload_write(up, (const uint8_t *)content, strlen(content), &err), 0);
    cr_assert_eq(disc_upload_commit(up, out, &size, &err), 0, "%s", err);
    cr_assert_eq(size, strlen(content));
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/disc-store-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static Faas__FunctionSpec basic(const char *name, char **argv)
{
    Faas__FunctionSpec s = FAAS__FUNCTION_SPEC__INIT;
    s.name = (char *)name;
    s.n_command = 1;
    s.command = argv;
    s.code_sha256 = sha;
    return s;
}

static char *argv_hello[] = {"./hello"};

TestSuite(store, .init = setup, .fini = teardown);

Test(store, sha256_of_upload_is_the_content_hash)
{
    const char *err;
    disc_store_t *st = disc_store_open(dir, &err);
    cr_assert_not_null(st, "%s", err);
    upload(st, "abc", sha);
    cr_assert_str_eq(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cr_assert_eq(disc_artifact_exists(disc_store_artifact_dir(st), sha), 0);
    cr_assert_eq(disc_artifact_exists(disc_store_artifact_dir(st), "../../etc/passwd"), -EINVAL);
    disc_store_close(st);
}

Test(store, upload_cap_and_empty_upload)
{
    const char *err;
    disc_store_t *st = disc_store_open(dir, &err);
    disc_upload_t *up = disc_upload_begin(disc_store_artifact_dir(st), 4, &err);
    cr_assert_eq(disc_upload_write(up, (const uint8_t *)"abcd", 4, &err), 0);
    cr_assert_eq(disc_upload_write(up, (const uint8_t *)"e", 1, &err), -EFBIG);
    disc_upload_abort(up);
    up = disc_upload_begin(disc_store_artifact_dir(st), 4, &err);
    uint64_t size;
    char out[65];
    cr_assert_eq(disc_upload_commit(up, out, &size, &err), -EINVAL);
    disc_store_close(st);
}

Test(store, deploy_fills_defaults_and_versions_grow)
{
    const char *err;
    char e[256];
    disc_store_t *st = disc_store_open(dir, &err);
    upload(st, "code-v1", sha);
    Faas__FunctionSpec in = basic("hello", argv_hello), *out = NULL;
    cr_assert_eq(disc_store_deploy(st, &in, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->version, 1);
    cr_assert_str_eq(out->port_env, "PORT");
    cr_assert_eq(out->health->kind, FAAS__HEALTH_CHECK__KIND__HTTP_GET);
    cr_assert_str_eq(out->health->path, "/");
    cr_assert_eq(out->health->interval_ms, 2);
    cr_assert_eq(out->timeout_ms, 30000);
    cr_assert_eq(out->cold_start_timeout_ms, 10000);
    cr_assert_eq(out->idle_timeout_ms, 300000);
    cr_assert_eq(out->max_body_bytes, 8u << 20);
    cr_assert_eq(out->max_instances, 100);
    cr_assert_eq(out->max_duration_ms, 900000);
    cr_assert_eq(out->concurrency, 0);
    cr_assert_gt(out->created_unix_ms, 1600000000000LL);
    faas__function_spec__free_unpacked(out, NULL);

    in.timeout_ms = 1234;
    cr_assert_eq(disc_store_deploy(st, &in, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->version, 2);
    cr_assert_eq(out->timeout_ms, 1234);
    faas__function_spec__free_unpacked(out, NULL);

    /* versions belong to a function: a new one starts at 1 whatever came before */
    Faas__FunctionSpec other = basic("other", argv_hello);
    cr_assert_eq(disc_store_deploy(st, &other, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->version, 1);
    faas__function_spec__free_unpacked(out, NULL);
    cr_assert_eq(disc_store_deploy(st, &in, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->version, 3);
    faas__function_spec__free_unpacked(out, NULL);
    cr_assert_eq(disc_store_deploys(st), 4);
    disc_store_close(st);
}

Test(store, get_list_delete)
{
    const char *err;
    char e[256];
    disc_store_t *st = disc_store_open(dir, &err);
    upload(st, "code", sha);
    const char *names[] = {"b-fn", "a-fn", "c-fn"};
    for (int i = 0; i < 3; i++) {
        Faas__FunctionSpec in = basic(names[i], argv_hello), *out;
        cr_assert_eq(disc_store_deploy(st, &in, &out, e, sizeof(e)), 0, "%s", e);
        faas__function_spec__free_unpacked(out, NULL);
    }
    Faas__FunctionSpec *got = NULL;
    cr_assert_eq(disc_store_get(st, "a-fn", &got), 0);
    cr_assert_str_eq(got->name, "a-fn");
    cr_assert_str_eq(got->command[0], "./hello");
    cr_assert_eq(got->version, 1);
    faas__function_spec__free_unpacked(got, NULL);
    cr_assert_eq(disc_store_get(st, "nope", &got), -ENOENT);

    Faas__FunctionSpec **list;
    size_t n;
    cr_assert_eq(disc_store_list(st, &list, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(list[0]->name, "a-fn");
    cr_assert_str_eq(list[2]->name, "c-fn");
    disc_store_free_list(list, n);

    cr_assert_eq(disc_store_delete(st, "b-fn"), 0);
    cr_assert_eq(disc_store_delete(st, "b-fn"), -ENOENT);
    cr_assert_eq(disc_store_list(st, &list, &n), 0);
    cr_assert_eq(n, 2);
    disc_store_free_list(list, n);
    disc_store_close(st);
}

Test(store, survives_close_and_reopen)
{
    const char *err;
    char e[256];
    disc_store_t *st = disc_store_open(dir, &err);
    upload(st, "persist", sha);
    Faas__FunctionSpec in = basic("keep", argv_hello), *out;
    in.min_instances = 2;
    cr_assert_eq(disc_store_deploy(st, &in, &out, e, sizeof(e)), 0, "%s", e);
    faas__function_spec__free_unpacked(out, NULL);
    cr_assert_eq(disc_store_deploy(st, &in, &out, e, sizeof(e)), 0, "%s", e);
    faas__function_spec__free_unpacked(out, NULL);
    /* deleting must not let versions go back either */
    Faas__FunctionSpec tmp = basic("tmp", argv_hello);
    cr_assert_eq(disc_store_deploy(st, &tmp, &out, e, sizeof(e)), 0, "%s", e);
    faas__function_spec__free_unpacked(out, NULL);
    cr_assert_eq(disc_store_delete(st, "tmp"), 0);
    disc_store_close(st);

    st = disc_store_open(dir, &err);
    cr_assert_not_null(st, "%s", err);
    Faas__FunctionSpec *got;
    cr_assert_eq(disc_store_get(st, "keep", &got), 0);
    cr_assert_eq(got->version, 2);
    cr_assert_eq(got->min_instances, 2);
    cr_assert_str_eq(got->code_sha256, sha);
    faas__function_spec__free_unpacked(got, NULL);
    cr_assert_eq(disc_store_deploys(st), 3);
    cr_assert_eq(disc_store_deploy(st, &in, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->version, 3);
    faas__function_spec__free_unpacked(out, NULL);
    /* a deleted name deployed again goes on from its last version */
    cr_assert_eq(disc_store_deploy(st, &tmp, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->version, 2);
    faas__function_spec__free_unpacked(out, NULL);
    disc_store_close(st);
}

/* Each bad spec must be refused with a sentence that names what is wrong. */
static void expect_bad(disc_store_t *st, Faas__FunctionSpec *in, const char *needle)
{
    char e[256];
    Faas__FunctionSpec *out = NULL;
    cr_assert_eq(disc_store_deploy(st, in, &out, e, sizeof(e)), -EINVAL, "accepted, wanted error about %s", needle);
    cr_assert_null(out);
    cr_assert_not_null(strstr(e, needle), "error \"%s\" does not mention \"%s\"", e, needle);
}

Test(store, rejects_bad_specs_with_messages)
{
    const char *err;
    disc_store_t *st = disc_store_open(dir, &err);
    upload(st, "code", sha);
    char *empty_argv[] = {""};
    Faas__FunctionSpec s;

    s = basic("Bad_Name", argv_hello);
    expect_bad(st, &s, "function name");
    s = basic("", argv_hello);
    expect_bad(st, &s, "function name");
    s = basic("fn", argv_hello);
    s.n_command = 0;
    expect_bad(st, &s, "command");
    s = basic("fn", empty_argv);
    expect_bad(st, &s, "command");
    s = basic("fn", argv_hello);
    s.code_sha256 = "";
    expect_bad(st, &s, "code_sha256 is required");
    s = basic("fn", argv_hello);
    s.code_sha256 = "../../../../etc/passwd";
    expect_bad(st, &s, "64 lowercase hex");
    s = basic("fn", argv_hello);
    s.code_sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
    expect_bad(st, &s, "not an uploaded artifact");
    s = basic("fn", argv_hello);
    s.port = 70000;
    expect_bad(st, &s, "port");
    s = basic("fn", argv_hello);
    s.min_instances = 5;
    s.max_instances = 2;
    expect_bad(st, &s, "min_instances");
    s = basic("fn", argv_hello);
    s.reserved = 3;
    s.max_instances = 2;
    expect_bad(st, &s, "reserved must not exceed max_instances");
    s = basic("fn", argv_hello);
    s.reserved = 1001;
    s.max_instances = 2000;
    expect_bad(st, &s, "reserved must be at most 1000");
    s = basic("fn", argv_hello);
    s.protocol = 7;
    expect_bad(st, &s, "protocol");
    s = basic("fn", argv_hello);
    s.thrift_transport = "framed";
    expect_bad(st, &s, "THRIFT");
    s = basic("fn", argv_hello);
    s.protocol = FAAS__PROTOCOL__THRIFT;
    s.thrift_transport = "carrier-pigeon";
    expect_bad(st, &s, "thrift_transport");
    s = basic("fn", argv_hello);
    char *svc[] = {"bad/svc"};
    s.protocol = FAAS__PROTOCOL__GRPC;
    s.n_grpc_services = 1;
    s.grpc_services = svc;
    expect_bad(st, &s, "grpc_services");
    s = basic("fn", argv_hello);
    Faas__KeyValue kv = FAAS__KEY_VALUE__INIT, *kvs[] = {&kv};
    kv.key = "A=B";
    kv.value = "x";
    s.n_env = 1;
    s.env = kvs;
    expect_bad(st, &s, "env");
    s = basic("fn", argv_hello);
    Faas__HealthCheck h = FAAS__HEALTH_CHECK__INIT;
    h.path = "no-slash";
    s.health = &h;
    expect_bad(st, &s, "health.path");

    Faas__FunctionSpec **list;
    size_t n;
    cr_assert_eq(disc_store_list(st, &list, &n), 0);
    cr_assert_eq(n, 0, "a refused spec was stored");
    disc_store_free_list(list, n);
    cr_assert_eq(disc_store_deploys(st), 0, "a refused spec was counted");
    disc_store_close(st);
}

Test(store, async_bounds_kept_or_refused_by_name)
{
    const char *err;
    char e[256];
    disc_store_t *st = disc_store_open(dir, &err);
    upload(st, "code", sha);
    Faas__FunctionSpec s = basic("fn", argv_hello), *out = NULL;
    Faas__AsyncSpec a = FAAS__ASYNC_SPEC__INIT;
    s.async = &a;
    /* the limits themselves are accepted and stored as given */
    a.concurrency = FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY;
    a.timeout_ms = FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_MS;
    a.retention_ms = FAAS_SPEC_LIMIT_ASYNC_RETENTION_MS;
    a.max_attempts = FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS;
    a.max_result_bytes = FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_BYTES;
    a.retry_5xx = 1;
    cr_assert_eq(disc_store_deploy(st, &s, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_not_null(out->async);
    cr_assert_eq(out->async->concurrency, 10000);
    cr_assert_eq(out->async->timeout_ms, 24u * 3600 * 1000);
    cr_assert_eq(out->async->retention_ms, 90ull * 86400 * 1000);
    cr_assert_eq(out->async->max_attempts, 10);
    cr_assert_eq(out->async->max_result_bytes, 8u << 20);
    cr_assert(out->async->retry_5xx);
    faas__function_spec__free_unpacked(out, NULL);
    /* 0 stays 0: "the platform default", resolved where the bound is applied */
    Faas__AsyncSpec zero = FAAS__ASYNC_SPEC__INIT;
    s.async = &zero;
    cr_assert_eq(disc_store_deploy(st, &s, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->async->concurrency, 0);
    faas__function_spec__free_unpacked(out, NULL);

    struct {
        uint32_t *u32;
        uint64_t *u64;
        uint64_t over;
        const char *needle;
    } bad[] = {
        {&a.concurrency, NULL, FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY + 1, "async.concurrency must be at most 10000"},
        {&a.timeout_ms, NULL, FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_MS + 1, "async.timeout must be at most 24 hours"},
        {NULL, &a.retention_ms, FAAS_SPEC_LIMIT_ASYNC_RETENTION_MS + 1, "async.retention must be at most 90 days"},
        {&a.max_attempts, NULL, FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS + 1, "async.max_attempts must be at most 10"},
        {NULL, &a.max_result_bytes, FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_BYTES + 1,
         "async.max_result must be at most 8 MiB"},
    };
    s.async = &a;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        Faas__AsyncSpec keep = a;
        if (bad[i].u32 != NULL)
            *bad[i].u32 = (uint32_t)bad[i].over;
        else
            *bad[i].u64 = bad[i].over;
        expect_bad(st, &s, bad[i].needle);
        a = keep;
    }
    disc_store_close(st);
}

Test(store, log_bound_kept_or_refused_by_name)
{
    const char *err;
    char e[256];
    disc_store_t *st = disc_store_open(dir, &err);
    upload(st, "code", sha);
    Faas__FunctionSpec s = basic("fn", argv_hello), *out = NULL;
    Faas__LogSpec l = FAAS__LOG_SPEC__INIT;
    s.logs = &l;
    l.max_bytes = FAAS_SPEC_LIMIT_LOG_MAX_BYTES;
    l.keep = FAAS_SPEC_LIMIT_LOG_KEEP;
    cr_assert_eq(disc_store_deploy(st, &s, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_not_null(out->logs);
    cr_assert_eq(out->logs->max_bytes, 1024ull << 20);
    cr_assert_eq(out->logs->keep, 10);
    faas__function_spec__free_unpacked(out, NULL);
    l.max_bytes = FAAS_SPEC_LIMIT_LOG_MIN_BYTES;
    cr_assert_eq(disc_store_deploy(st, &s, &out, e, sizeof(e)), 0, "%s", e);
    faas__function_spec__free_unpacked(out, NULL);
    l.max_bytes = FAAS_SPEC_LIMIT_LOG_MIN_BYTES - 1;
    expect_bad(st, &s, "logs.max_bytes must be 64 KiB to 1024 MiB");
    l.max_bytes = FAAS_SPEC_LIMIT_LOG_MAX_BYTES + 1;
    expect_bad(st, &s, "logs.max_bytes must be 64 KiB to 1024 MiB");
    l.max_bytes = 0;
    l.keep = FAAS_SPEC_LIMIT_LOG_KEEP + 1;
    expect_bad(st, &s, "logs.keep must be at most 10");
    disc_store_close(st);
}

Test(store, protocol_defaults_and_service_ownership)
{
    const char *err;
    char e[256];
    disc_store_t *st = disc_store_open(dir, &err);
    upload(st, "code", sha);
    char *svc[] = {"echo.Echo", "echo.Admin"};
    Faas__FunctionSpec g = basic("grpc-a", argv_hello), *out;
    g.protocol = FAAS__PROTOCOL__GRPC;
    g.n_grpc_services = 2;
    g.grpc_services = svc;
    cr_assert_eq(disc_store_deploy(st, &g, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->health->kind, FAAS__HEALTH_CHECK__KIND__GRPC_HEALTH);
    faas__function_spec__free_unpacked(out, NULL);
    /* redeploying the owner is fine, another function claiming the service is not */
    cr_assert_eq(disc_store_deploy(st, &g, &out, e, sizeof(e)), 0, "%s", e);
    faas__function_spec__free_unpacked(out, NULL);
    g.name = "grpc-b";
    g.n_grpc_services = 1;
    g.grpc_services = &svc[1];
    expect_bad(st, &g, "already served by function grpc-a");

    Faas__FunctionSpec t = basic("thrift-a", argv_hello);
    t.protocol = FAAS__PROTOCOL__THRIFT;
    cr_assert_eq(disc_store_deploy(st, &t, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->health->kind, FAAS__HEALTH_CHECK__KIND__TCP);
    cr_assert_str_eq(out->thrift_transport, "framed");
    faas__function_spec__free_unpacked(out, NULL);
    disc_store_close(st);
}

/* A store written before per-function versions (no versions table, user_version 0,
 * versions numbered across all functions) keeps working: its functions keep their
 * version and go on from it, a new function starts at 1. */
Test(store, migrates_global_versions)
{
    const char *err;
    char e[256], path[300];
    disc_store_t *st = disc_store_open(dir, &err);
    upload(st, "old", sha);
    Faas__FunctionSpec a = basic("a-fn", argv_hello), *out;
    for (int i = 0; i < 3; i++) { /* a-fn at 3 */
        cr_assert_eq(disc_store_deploy(st, &a, &out, e, sizeof(e)), 0, "%s", e);
        faas__function_spec__free_unpacked(out, NULL);
    }
    disc_store_close(st);
    /* rewrite it as the old schema had it: a-fn at global version 7, counter at 9 */
    snprintf(path, sizeof(path), "%s/discovery.db", dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "DROP TABLE versions; PRAGMA user_version=0;"
                              "UPDATE functions SET version=7 WHERE name='a-fn';"
                              "UPDATE meta SET value=9 WHERE key='version';",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);

    st = disc_store_open(dir, &err);
    cr_assert_not_null(st, "%s", err);
    Faas__FunctionSpec *got;
    cr_assert_eq(disc_store_get(st, "a-fn", &got), 0);
    faas__function_spec__free_unpacked(got, NULL);
    cr_assert_eq(disc_store_deploy(st, &a, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->version, 8);
    faas__function_spec__free_unpacked(out, NULL);
    Faas__FunctionSpec b = basic("b-fn", argv_hello);
    cr_assert_eq(disc_store_deploy(st, &b, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_eq(out->version, 1);
    faas__function_spec__free_unpacked(out, NULL);
    cr_assert_eq(disc_store_deploys(st), 11);
    disc_store_close(st);

    /* a store from a newer discovery is refused, not misread */
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "PRAGMA user_version=2", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    cr_assert_null(disc_store_open(dir, &err));
    cr_assert(strstr(err, "newer") != NULL, "%s", err);
}

Test(store, spec_parse_rejects_garbage)
{
    const char *err = NULL;
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    cr_assert_null(disc_spec_parse(junk, sizeof(junk), &err));
    cr_assert_not_null(err);
    cr_assert(disc_valid_sha256("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    cr_assert(!disc_valid_sha256("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
    cr_assert(!disc_valid_sha256("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0"));
    cr_assert(!disc_valid_sha256(""));
}

/* Found by fuzz_disc_spec: protobuf-c keeps unknown fields verbatim, even a field
 * number 0 it cannot read back; a normalized spec must re-read identically. */
Test(store, unknown_fields_are_dropped)
{
    char *argv[] = {"./x"};
    Faas__FunctionSpec s = FAAS__FUNCTION_SPEC__INIT;
    s.name = "fn";
    s.n_command = 1;
    s.command = argv;
    s.code_sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    size_t len;
    uint8_t *p = faas_pb_pack(&s.base, &len);
    uint8_t buf[512];
    memcpy(buf, p, len);
    free(p);
    const uint8_t junk[] = {0x82, 0x00, 0x01, 'x', 0xf8, 0x07, 0x05}; /* field 0; field 127 */
    memcpy(buf + len, junk, sizeof(junk));
    const char *err = NULL;
    Faas__FunctionSpec *a = disc_spec_parse(buf, len + sizeof(junk), &err);
    cr_assert_not_null(a, "%s", err);
    cr_assert_eq(a->base.n_unknown_fields, 0);
    uint8_t *q = faas_pb_pack(&a->base, &len);
    Faas__FunctionSpec *b = disc_spec_parse(q, len, &err);
    cr_assert_not_null(b, "%s", err);
    free(q);
    faas__function_spec__free_unpacked(a, NULL);
    faas__function_spec__free_unpacked(b, NULL);
}

/* An image function: no command needed, every blob must be stored, digests checked. */
Test(store, image_specs_need_their_blobs)
{
    const char *err;
    disc_store_t *st = disc_store_open(dir, &err);
    char man[65], cfg[65], layer[65];
    upload(st, "{\"schemaVersion\":2}", man);
    upload(st, "{\"config\":{}}", cfg);
    char dman[80], dcfg[80], dlayer[80];
    snprintf(dman, sizeof(dman), "sha256:%s", man);
    snprintf(dcfg, sizeof(dcfg), "sha256:%s", cfg);
    char *blobs[] = {dcfg, dlayer};
    Faas__ImageSpec im = FAAS__IMAGE_SPEC__INIT;
    im.ref = "img:v1";
    im.manifest_digest = dman;
    im.manifest_size = 19;
    im.blobs = blobs;
    im.n_blobs = 2;
    Faas__FunctionSpec s = basic("imgfn", argv_hello);
    s.n_command = 0;
    s.code_sha256 = "";
    s.image = &im;
    /* the layer is not uploaded yet */
    snprintf(dlayer, sizeof(dlayer), "sha256:%064d", 0);
    expect_bad(st, &s, "is not uploaded");
    upload(st, "layer bytes", layer);
    snprintf(dlayer, sizeof(dlayer), "sha256:%s", layer);
    Faas__FunctionSpec *out = NULL;
    char e[256];
    cr_assert_eq(disc_store_deploy(st, &s, &out, e, sizeof(e)), 0, "%s", e);
    cr_assert_not_null(out->image);
    cr_assert_str_eq(out->image->manifest_digest, dman);
    cr_assert_eq(out->image->n_blobs, 2);
    faas__function_spec__free_unpacked(out, NULL);

    s.code_sha256 = man;
    expect_bad(st, &s, "not both");
    s.code_sha256 = "";
    snprintf(dlayer, sizeof(dlayer), "md5:%s", layer);
    expect_bad(st, &s, "sha256:<64 hex>");
    snprintf(dlayer, sizeof(dlayer), "sha256:%s", layer);
    char *bad_env[] = {"NOEQUALS"};
    im.env = bad_env;
    im.n_env = 1;
    expect_bad(st, &s, "KEY=VALUE");
    im.n_env = 0;
    im.working_dir = "relative";
    expect_bad(st, &s, "WorkingDir");
    im.working_dir = "";
    im.n_blobs = 0;
    expect_bad(st, &s, "image.blobs");
    disc_store_close(st);
}
