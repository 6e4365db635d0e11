/* discovery/store_sqlite.c - the durable function registry on one host (--store sqlite,
 * the default): SQLite in WAL mode, one row per
 * function holding its packed FunctionSpec. Versions belong to a function (as Lambda
 * versions, Knative revisions): the first deploy of a name is version 1. Each name's
 * last version is kept in its own table, which a delete leaves alone, so a name
 * deployed again after a delete goes on from where it was: an instance of the old
 * incarnation can never pass for the new one. meta.version counts every deploy. */
#include "discovery/store_ops.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/util.h"

typedef struct {
    sqlite3 *db;
    pthread_mutex_t mu; /* one writer at a time keeps version assignment simple */
} sq_t;

static const char schema[] = "PRAGMA journal_mode=WAL;"
                             "PRAGMA synchronous=NORMAL;"
                             "CREATE TABLE IF NOT EXISTS functions ("
                             "  name TEXT PRIMARY KEY, version INTEGER NOT NULL, spec BLOB NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                             "INSERT OR IGNORE INTO meta(key, value) VALUES('version', 0);";

/* Schema 1 (PRAGMA user_version): per-function versions. A store of schema 0 numbered
 * versions across all functions; its functions keep the version they have and go on
 * from it. Idempotent, in one transaction with the version bump. */
static const char migrate_1[] = "BEGIN IMMEDIATE;"
                                "CREATE TABLE IF NOT EXISTS versions (name TEXT PRIMARY KEY, last INTEGER NOT NULL);"
                                "INSERT OR IGNORE INTO versions(name, last) SELECT name, version FROM functions;"
                                "PRAGMA user_version=1;"
                                "COMMIT;";

static int schema_version(sqlite3 *db)
{
    sqlite3_stmt *q = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* Brings an existing or new database to the current schema; 0 or -1 with *err. */
static int migrate(sqlite3 *db, const char **err)
{
    int v = schema_version(db);
    if (v < 0) {
        *err = "cannot read the schema version of discovery.db";
        return -1;
    }
    if (v > 1) {
        *err = "discovery.db was written by a newer faas-discovery (schema version above 1)";
        return -1;
    }
    if (v == 0 && sqlite3_exec(db, migrate_1, NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        *err = "cannot migrate discovery.db to per-function versions";
        return -1;
    }
    return 0;
}

static void sq_close(void *impl);

void *disc_sqlite_open(const char *state_dir, const char **err)
{
    char path[4096];
    sq_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        *err = "out of memory";
        return NULL;
    }
    pthread_mutex_init(&st->mu, NULL);
    int n = snprintf(path, sizeof(path), "%s/discovery.db", state_dir);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        *err = "state directory path too long";
        goto fail;
    }
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
        SQLITE_OK) {
        *err = "cannot open discovery.db";
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    if (sqlite3_exec(st->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        *err = "cannot initialise discovery.db (is another discovery using this state dir?)";
        goto fail;
    }
    if (migrate(st->db, err) != 0)
        goto fail;
    return st;
fail:
    sq_close(st);
    return NULL;
}

static void sq_close(void *impl)
{
    sq_t *st = impl;
    if (st == NULL)
        return;
    if (st->db != NULL)
        sqlite3_close_v2(st->db);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

static int exec(sq_t *st, const char *sql)
{
    return sqlite3_exec(st->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

static uint64_t read_u64(sq_t *st, const char *sql, const char *arg)
{
    sqlite3_stmt *q = NULL;
    uint64_t v = 0;
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) == SQLITE_OK) {
        if (arg != NULL)
            sqlite3_bind_text(q, 1, arg, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW)
            v = (uint64_t)sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
    return v;
}

static uint64_t sq_deploys(void *impl)
{
    sq_t *st = impl;
    pthread_mutex_lock(&st->mu);
    uint64_t v = read_u64(st, "SELECT value FROM meta WHERE key='version'", NULL);
    pthread_mutex_unlock(&st->mu);
    return v;
}

/* Runs one write statement binding (text, int64) or just (int64) when text is NULL. */
static int write_row(sq_t *st, const char *sql, const char *text, uint64_t v, const void *blob, size_t blen)
{
    sqlite3_stmt *q = NULL;
    int i = 1, rc = -EIO;
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK)
        goto out;
    if (text != NULL)
        sqlite3_bind_text(q, i++, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, i++, (sqlite3_int64)v);
    if (blob != NULL)
        sqlite3_bind_blob(q, i, blob, (int)blen, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_DONE)
        rc = 0;
out:
    sqlite3_finalize(q);
    return rc;
}

/* Inside the caller's transaction: the function's next version, its row, the counters. */
static int write_spec(sq_t *st, Faas__FunctionSpec *s)
{
    uint64_t v = read_u64(st, "SELECT last FROM versions WHERE name=?", s->name) + 1;
    uint64_t deploys = read_u64(st, "SELECT value FROM meta WHERE key='version'", NULL) + 1;
    s->version = v;
    s->created_unix_ms = faas_unix_ms();
    size_t len;
    uint8_t *buf = faas_pb_pack(&s->base, &len);
    if (buf == NULL)
        return -ENOMEM;
    int rc = write_row(st, "INSERT OR REPLACE INTO functions(name, version, spec) VALUES(?, ?, ?)", s->name, v, buf,
                       len);
    if (rc == 0)
        rc = write_row(st, "INSERT OR REPLACE INTO versions(name, last) VALUES(?, ?)", s->name, v, NULL, 0);
    if (rc == 0)
        rc = write_row(st, "UPDATE meta SET value=? WHERE key='version'", NULL, deploys, NULL, 0);
    free(buf);
    return rc;
}

/* s is validated and checked by store.c; its version is assigned in the transaction. */
static int sq_deploy(void *impl, Faas__FunctionSpec *s, char *errbuf, size_t errcap)
{
    sq_t *st = impl;
    pthread_mutex_lock(&st->mu);
    int rc = exec(st, "BEGIN IMMEDIATE");
    if (rc == 0) {
        rc = write_spec(st, s);
        if (rc == 0)
            rc = exec(st, "COMMIT");
        if (rc != 0) {
            exec(st, "ROLLBACK");
            snprintf(errbuf, errcap, "storing the function failed: %s", sqlite3_errmsg(st->db));
        }
    } else {
        snprintf(errbuf, errcap, "storage busy: %s", sqlite3_errmsg(st->db));
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

static Faas__FunctionSpec *row_spec(sqlite3_stmt *q, int col)
{
    const void *blob = sqlite3_column_blob(q, col);
    int len = sqlite3_column_bytes(q, col);
    return faas__function_spec__unpack(NULL, (size_t)len, blob ? blob : (const void *)"");
}

static int sq_get(void *impl, const char *name, Faas__FunctionSpec **out)
{
    sq_t *st = impl;
    sqlite3_stmt *q = NULL;
    int rc = -EIO;
    pthread_mutex_lock(&st->mu);
    if (sqlite3_prepare_v2(st->db, "SELECT spec FROM functions WHERE name=?", -1, &q, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(q);
    if (step == SQLITE_DONE) {
        rc = -ENOENT;
    } else if (step == SQLITE_ROW) {
        *out = row_spec(q, 0);
        rc = *out ? 0 : -EIO;
    }
out:
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

static int list_locked(sq_t *st, Faas__FunctionSpec ***out, size_t *n)
{
    sqlite3_stmt *q = NULL;
    Faas__FunctionSpec **v = NULL;
    size_t cnt = 0, cap = 0;
    int step;
    if (sqlite3_prepare_v2(st->db, "SELECT spec FROM functions ORDER BY name", -1, &q, NULL) != SQLITE_OK)
        return -EIO;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            Faas__FunctionSpec **nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL)
                goto fail;
            v = nv;
        }
        /* a row we cannot read is skipped rather than hiding every other function */
        Faas__FunctionSpec *s = row_spec(q, 0);
        if (s != NULL)
            v[cnt++] = s;
    }
    if (step != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(q);
    *out = v;
    *n = cnt;
    return 0;
fail:
    sqlite3_finalize(q);
    disc_store_free_list(v, cnt);
    return -EIO;
}

static int sq_list(void *impl, Faas__FunctionSpec ***out, size_t *n)
{
    sq_t *st = impl;
    pthread_mutex_lock(&st->mu);
    int rc = list_locked(st, out, n);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

static int sq_delete(void *impl, const char *name)
{
    sq_t *st = impl;
    sqlite3_stmt *q = NULL;
    int rc = -EIO;
    pthread_mutex_lock(&st->mu);
    if (sqlite3_prepare_v2(st->db, "DELETE FROM functions WHERE name=?", -1, &q, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_DONE)
        rc = sqlite3_changes(st->db) > 0 ? 0 : -ENOENT;
out:
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

const disc_store_ops_t disc_sqlite_ops = {
    .name = "sqlite",
    .deploy = sq_deploy,
    .get = sq_get,
    .list = sq_list,
    .del = sq_delete,
    .deploys = sq_deploys,
    .close = sq_close,
};
