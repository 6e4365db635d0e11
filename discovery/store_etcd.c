/* discovery/store_etcd.c - the durable function store on etcd (--store etcd://...), so
 * several discoveries on several hosts serve one state (docs/multihost-etcd.md).
 *
 * Keys under the prefix P (default "/faas/"):
 *   P functions/<name>   the packed FunctionSpec as deployed
 *   P versions/<name>    the name's last version, decimal; a delete leaves it, so a
 *                        name deployed again goes on from where it was
 *   P artifacts/<sha>    a packed ArtifactMeta: size and the discoveries holding the bytes
 * A deploy reads versions/<name> and writes both keys in one transaction that holds
 * only if versions/<name> was not changed since (its mod_revision): two discoveries
 * deploying one name at once get distinct versions, the loser retries.
 *
 * The registry follows etcd, not this process's own writes: every function is read at
 * revision R, then a watch from R+1 applies each PUT and DELETE in revision order, so
 * a change made through any discovery reaches this one's watchers, and one made while
 * it was down is in the range it reads at start. A local deploy waits (bounded) until
 * the watch has applied its revision, so its caller reads what it wrote. */
#include "discovery/store_ops.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "etcdc/etcdc.h"

#define ED_TIMEOUT_MS 5000
#define ED_TXN_TRIES 64           /* optimistic retries before a deploy gives up */
#define ED_APPLY_WAIT_MS 5000     /* a local change waits this long for the watch */
/* A peer transfer: connected within ED_PEER_CONNECT_MS, then done within 30 s plus the
 * size at 10 MiB/s; at most ED_PEER_FETCHES_MAX at once (each holds a thread and a
 * temp file; others wait up to ED_PEER_SLOT_WAIT_MS for a slot), one per sha. */
#define ED_PEER_CONNECT_MS 2000
#define ED_PEER_BASE_MS 30000
#define ED_PEER_RATE_BPS (10ull << 20)
#define ED_PEER_FETCHES_MAX 4
#define ED_PEER_SLOT_WAIT_MS 20000
#define ED_RESYNC_RETRY_MS 500

/* A function the registry got from us, with the revision that put it there. */
typedef struct {
    char *name;
    int64_t rev;
} known_t;

typedef struct {
    etcdc_t *c;
    char prefix[256];
    char advertise[300]; /* under mu: "" until main knows its port */
    disc_registry_t *reg;
    etcdc_watch_t *watch;
    pthread_mutex_t mu; /* applied, names, stopping, advertise, fetching */
    pthread_cond_t cv;
    int64_t applied; /* the last revision the registry reflects */
    known_t *names;
    size_t n_names, cap_names;
    int stopping;
    uint64_t last_deploys;
    uint64_t errors, fetch_ok, fetch_failed; /* atomics */
    char fetching[ED_PEER_FETCHES_MAX][65]; /* shas being fetched from peers; "" = free */
} ed_t;

/* ---- keys, errors --------------------------------------------------------------- */

/* prefix + kind + "/" + name into out; its length, or 0 if it does not fit. */
static size_t mkkey(const ed_t *e, const char *kind, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%s/%s", e->prefix, kind, name ? name : "");
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* etcdc's result as the store's: -EAGAIN when etcd cannot be reached (the rpc says
 * "state store unreachable" and a later call may succeed), -EIO otherwise. */
static int map_err(ed_t *e, int rc, const char *what)
{
    if (rc == 0 || rc == -ENOENT)
        return rc;
    __atomic_fetch_add(&e->errors, 1, __ATOMIC_RELAXED);
    FAAS_WARN("event=etcd_error op=%s rc=%d msg=\"%s\"", what, rc, etcdc_error());
    return rc == -EAGAIN || rc == -ETIMEDOUT ? -EAGAIN : -EIO;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- the registry's view -------------------------------------------------------- */

static ssize_t known_find(ed_t *e, const char *name)
{
    for (size_t i = 0; i < e->n_names; i++)
        if (strcmp(e->names[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

/* Under e->mu. Remembers name at rev; -ENOMEM. */
static int known_put(ed_t *e, const char *name, int64_t rev)
{
    ssize_t i = known_find(e, name);
    if (i >= 0) {
        e->names[i].rev = rev;
        return 0;
    }
    if (e->n_names == e->cap_names) {
        size_t nc = e->cap_names ? e->cap_names * 2 : 32;
        known_t *nv = realloc(e->names, nc * sizeof(*nv));
        if (nv == NULL)
            return -ENOMEM;
        e->names = nv;
        e->cap_names = nc;
    }
    if ((e->names[e->n_names].name = strdup(name)) == NULL)
        return -ENOMEM;
    e->names[e->n_names++].rev = rev;
    return 0;
}

static void known_drop(ed_t *e, size_t i)
{
    free(e->names[i].name);
    e->names[i] = e->names[--e->n_names];
}

/* The function name of a key under functions/, or NULL. */
static const char *fn_name(ed_t *e, const uint8_t *key, size_t klen)
{
    char fp[300];
    size_t fl = mkkey(e, "functions", "", fp, sizeof(fp));
    if (fl == 0 || klen <= fl || memcmp(key, fp, fl) != 0)
        return NULL;
    return (const char *)key + fl; /* etcdc NUL-terminates keys */
}

/* Under e->mu: one stored spec into the registry. A value that does not unpack is
 * skipped (logged) rather than hiding every other function. */
static void apply_put(ed_t *e, const etcdc_kv_t *kv)
{
    const char *name = fn_name(e, kv->key, kv->klen);
    Faas__FunctionSpec *s = name ? faas__function_spec__unpack(NULL, kv->vlen, kv->val) : NULL;
    if (s == NULL || s->name == NULL || strcmp(s->name, name) != 0) {
        FAAS_WARN("event=etcd_bad_function key_len=%zu", kv->klen);
        if (s)
            faas__function_spec__free_unpacked(s, NULL);
        return;
    }
    disc_registry_function_put(e->reg, s);
    known_put(e, name, kv->mod_rev);
    faas__function_spec__free_unpacked(s, NULL);
}

static void apply_delete(ed_t *e, const char *name)
{
    ssize_t i = known_find(e, name);
    if (i >= 0)
        known_drop(e, (size_t)i);
    disc_registry_function_delete(e->reg, name);
}

static int on_events(void *ud, const etcdc_event_t *evs, size_t n, int64_t revision)
{
    ed_t *e = ud;
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < n; i++) {
        const char *name = fn_name(e, evs[i].kv.key, evs[i].kv.klen);
        if (name == NULL)
            continue;
        if (evs[i].type == ETCDC_EV_PUT)
            apply_put(e, &evs[i].kv);
        else
            apply_delete(e, name);
    }
    if (revision > e->applied)
        e->applied = revision;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

/* Reads every function; under e->mu puts each into the registry and drops those no
 * longer stored. The revision read at, or a negative error. */
static int64_t reload(ed_t *e)
{
    char k[300], end[300];
    size_t kl = mkkey(e, "functions", "", k, sizeof(k));
    size_t el = etcdc_prefix_end((const uint8_t *)k, kl, (uint8_t *)end, sizeof(end));
    etcdc_range_t r;
    int rc = etcdc_range(e->c, k, kl, end, el, 0, 0, 0, &r);
    if (rc != 0)
        return map_err(e, rc, "range_functions");
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->n_names;) {
        int still = 0;
        for (size_t j = 0; j < r.n && !still; j++) {
            const char *name = fn_name(e, r.kvs[j].key, r.kvs[j].klen);
            still = name != NULL && strcmp(name, e->names[i].name) == 0;
        }
        if (still) {
            i++;
        } else {
            disc_registry_function_delete(e->reg, e->names[i].name);
            known_drop(e, i);
        }
    }
    for (size_t j = 0; j < r.n; j++)
        apply_put(e, &r.kvs[j]);
    if (r.revision > e->applied)
        e->applied = r.revision;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    int64_t rev = r.revision;
    etcdc_range_free(&r);
    return rev;
}

/* etcd compacted what the watch still needed: read afresh; retried until etcd answers
 * (a negative answer would end the watch for good) or the store closes. */
static int64_t on_resync(void *ud, int64_t compact_rev)
{
    ed_t *e = ud;
    FAAS_WARN("event=etcd_resync compact_revision=%lld", (long long)compact_rev);
    for (;;) {
        int64_t rev = reload(e);
        if (rev >= 0)
            return rev;
        pthread_mutex_lock(&e->mu);
        int stop = e->stopping;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            return -1;
        sleep_ms(ED_RESYNC_RETRY_MS);
    }
}

static int ed_follow(void *impl, disc_registry_t *reg, char *errbuf, size_t errcap)
{
    ed_t *e = impl;
    char k[300], end[300], err[256];
    e->reg = reg;
    int64_t rev = reload(e);
    if (rev < 0) {
        snprintf(errbuf, errcap, "cannot read the functions from etcd at %s: %s", etcdc_endpoint(e->c), etcdc_error());
        return (int)rev;
    }
    size_t kl = mkkey(e, "functions", "", k, sizeof(k));
    size_t el = etcdc_prefix_end((const uint8_t *)k, kl, (uint8_t *)end, sizeof(end));
    e->watch = etcdc_watch_start(e->c, k, kl, end, el, rev + 1, on_events, on_resync, e, err, sizeof(err));
    if (e->watch == NULL) {
        snprintf(errbuf, errcap, "cannot watch etcd: %s", err);
        return -EIO;
    }
    pthread_mutex_lock(&e->mu);
    int n = (int)e->n_names;
    pthread_mutex_unlock(&e->mu);
    FAAS_INFO("event=etcd_following revision=%lld functions=%d", (long long)rev, n);
    return n;
}

/* A change this process made reaches the registry through the watch: wait for it, so
 * the caller's next read of the registry (a Watch snapshot, GetFunctionStatus) has it. */
static void wait_applied(ed_t *e, int64_t rev)
{
    if (e->watch == NULL)
        return;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ED_APPLY_WAIT_MS / 1000;
    pthread_mutex_lock(&e->mu);
    while (e->applied < rev && !e->stopping)
        if (pthread_cond_timedwait(&e->cv, &e->mu, &dl) != 0)
            break;
    if (e->applied < rev)
        FAAS_WARN("event=etcd_watch_behind want=%lld applied=%lld", (long long)rev, (long long)e->applied);
    pthread_mutex_unlock(&e->mu);
}

/* ---- functions -------------------------------------------------------------------- */

/* versions/<name>: the last version (0 if never deployed) and the key's mod_revision. */
static int read_version(ed_t *e, const char *vkey, size_t vl, uint64_t *last, int64_t *mod)
{
    etcdc_kv_t kv;
    int rc = etcdc_get(e->c, vkey, vl, &kv);
    *last = 0;
    *mod = 0;
    if (rc == -ENOENT)
        return 0;
    if (rc != 0)
        return map_err(e, rc, "get_version");
    *last = strtoull((const char *)kv.val, NULL, 10);
    *mod = kv.mod_rev;
    etcdc_kv_free(&kv);
    return 0;
}

/* One optimistic attempt: 1 if written, 0 on a conflict, negative on an error. */
static int deploy_once(ed_t *e, Faas__FunctionSpec *s, const char *fkey, size_t fl, const char *vkey, size_t vl,
                       int64_t *rev)
{
    uint64_t last;
    int64_t mod;
    int rc = read_version(e, vkey, vl, &last, &mod);
    if (rc != 0)
        return rc;
    s->version = last + 1;
    s->created_unix_ms = faas_unix_ms();
    size_t len;
    uint8_t *buf = faas_pb_pack(&s->base, &len);
    if (buf == NULL)
        return -ENOMEM;
    char vbuf[24];
    int vn = snprintf(vbuf, sizeof(vbuf), "%llu", (unsigned long long)s->version);
    etcdc_cmp_t cmp = {.target = ETCDC_CMP_MOD, .op = ETCDC_EQ, .key = vkey, .klen = vl, .num = mod};
    etcdc_op_t ops[2] = {
        {.kind = ETCDC_OP_PUT, .key = fkey, .klen = fl, .val = buf, .vlen = len},
        {.kind = ETCDC_OP_PUT, .key = vkey, .klen = vl, .val = vbuf, .vlen = (size_t)vn},
    };
    int ok = 0;
    rc = etcdc_txn(e->c, &cmp, 1, ops, 2, NULL, 0, &ok, rev, NULL, NULL);
    free(buf);
    if (rc != 0)
        return map_err(e, rc, "txn_deploy");
    return ok;
}

static int ed_deploy(void *impl, Faas__FunctionSpec *s, char *errbuf, size_t errcap)
{
    ed_t *e = impl;
    char fkey[300], vkey[300];
    size_t fl = mkkey(e, "functions", s->name, fkey, sizeof(fkey));
    size_t vl = mkkey(e, "versions", s->name, vkey, sizeof(vkey));
    int64_t rev = 0;
    if (fl == 0 || vl == 0) {
        snprintf(errbuf, errcap, "--etcd-prefix too long for this name");
        return -EIO;
    }
    for (int i = 0; i < ED_TXN_TRIES; i++) {
        int rc = deploy_once(e, s, fkey, fl, vkey, vl, &rev);
        if (rc == 1) {
            wait_applied(e, rev);
            return 0;
        }
        if (rc < 0) {
            snprintf(errbuf, errcap, rc == -EAGAIN ? "state store unreachable: %s" : "storing the function failed: %s",
                     etcdc_error());
            return rc;
        }
        /* another discovery deployed this name in between: back off a little, jittered */
        sleep_ms(1 + rand() % (2 + i));
    }
    snprintf(errbuf, errcap, "storing the function failed: %d concurrent deploys of it won every time", ED_TXN_TRIES);
    return -EIO;
}

static int ed_get(void *impl, const char *name, Faas__FunctionSpec **out)
{
    ed_t *e = impl;
    char k[300];
    size_t kl = mkkey(e, "functions", name, k, sizeof(k));
    etcdc_kv_t kv;
    if (kl == 0)
        return -ENOENT;
    int rc = etcdc_get(e->c, k, kl, &kv);
    if (rc != 0)
        return map_err(e, rc, "get_function");
    *out = faas__function_spec__unpack(NULL, kv.vlen, kv.val);
    etcdc_kv_free(&kv);
    return *out ? 0 : -EIO;
}

static int ed_list(void *impl, Faas__FunctionSpec ***out, size_t *n)
{
    ed_t *e = impl;
    char k[300], end[300];
    size_t kl = mkkey(e, "functions", "", k, sizeof(k));
    size_t el = etcdc_prefix_end((const uint8_t *)k, kl, (uint8_t *)end, sizeof(end));
    etcdc_range_t r;
    int rc = etcdc_range(e->c, k, kl, end, el, 0, 0, 0, &r);
    if (rc != 0)
        return map_err(e, rc == -ENOENT ? -EIO : rc, "range_functions");
    Faas__FunctionSpec **v = calloc(r.n + 1, sizeof(*v));
    size_t cnt = 0;
    for (size_t i = 0; v != NULL && i < r.n; i++) {
        Faas__FunctionSpec *s = faas__function_spec__unpack(NULL, r.kvs[i].vlen, r.kvs[i].val);
        if (s != NULL) /* sorted by key, so by name */
            v[cnt++] = s;
    }
    etcdc_range_free(&r);
    if (v == NULL)
        return -ENOMEM;
    *out = v;
    *n = cnt;
    return 0;
}

/* A transaction rather than a plain delete: it gives the revision to wait for. */
static int ed_delete(void *impl, const char *name)
{
    ed_t *e = impl;
    char k[300];
    size_t kl = mkkey(e, "functions", name, k, sizeof(k));
    if (kl == 0)
        return -ENOENT;
    etcdc_cmp_t cmp = {.target = ETCDC_CMP_VERSION, .op = ETCDC_GT, .key = k, .klen = kl, .num = 0};
    etcdc_op_t op = {.kind = ETCDC_OP_DELETE, .key = k, .klen = kl};
    int ok = 0;
    int64_t rev = 0;
    int rc = etcdc_txn(e->c, &cmp, 1, &op, 1, NULL, 0, &ok, &rev, NULL, NULL);
    if (rc != 0)
        return map_err(e, rc == -ENOENT ? -EIO : rc, "txn_delete");
    if (!ok)
        return -ENOENT;
    wait_applied(e, rev);
    return 0;
}

/* Every deploy raised one name's version by one, and versions are never reset: their
 * sum is the number of deploys, with no counter key every deploy would contend on. */
static uint64_t ed_deploys(void *impl)
{
    ed_t *e = impl;
    char k[300], end[300];
    size_t kl = mkkey(e, "versions", "", k, sizeof(k));
    size_t el = etcdc_prefix_end((const uint8_t *)k, kl, (uint8_t *)end, sizeof(end));
    etcdc_range_t r;
    uint64_t sum = 0;
    if (etcdc_range(e->c, k, kl, end, el, 0, 0, 0, &r) != 0) {
        __atomic_fetch_add(&e->errors, 1, __ATOMIC_RELAXED);
        return __atomic_load_n(&e->last_deploys, __ATOMIC_RELAXED); /* a counter must not drop */
    }
    for (size_t i = 0; i < r.n; i++)
        sum += strtoull((const char *)r.kvs[i].val, NULL, 10);
    etcdc_range_free(&r);
    __atomic_store_n(&e->last_deploys, sum, __ATOMIC_RELAXED);
    return sum;
}

/* ---- artifacts ---------------------------------------------------------------------- */

/* artifacts/<sha>: 0 with *meta (free it) and *mod, -ENOENT, or an error. */
static int read_meta(ed_t *e, const char *k, size_t kl, Faas__ArtifactMeta **meta, int64_t *mod)
{
    etcdc_kv_t kv;
    int rc = etcdc_get(e->c, k, kl, &kv);
    if (rc != 0)
        return map_err(e, rc, "get_artifact");
    *meta = faas__artifact_meta__unpack(NULL, kv.vlen, kv.val);
    *mod = kv.mod_rev;
    etcdc_kv_free(&kv);
    return *meta ? 0 : -EIO;
}

static int ed_artifact_known(void *impl, const char *sha)
{
    ed_t *e = impl;
    char k[300];
    size_t kl = mkkey(e, "artifacts", sha, k, sizeof(k));
    etcdc_kv_t kv;
    int rc = etcdc_get(e->c, k, kl, &kv);
    if (rc == 0)
        etcdc_kv_free(&kv);
    return map_err(e, rc, "get_artifact");
}

/* One attempt at adding this discovery to sha's holders: 1 done, 0 conflict, negative. */
static int add_holder_once(ed_t *e, const char *k, size_t kl, const char *sha, uint64_t size, char *adv)
{
    Faas__ArtifactMeta *m = NULL, fresh = FAAS__ARTIFACT_META__INIT;
    int64_t mod = 0;
    int rc = read_meta(e, k, kl, &m, &mod);
    if (rc != 0 && rc != -ENOENT)
        return rc;
    Faas__ArtifactMeta *cur = m ? m : &fresh;
    for (size_t i = 0; i < cur->n_holders; i++)
        if (strcmp(cur->holders[i], adv) == 0) {
            faas__artifact_meta__free_unpacked(m, NULL);
            return 1;
        }
    char **hv = malloc((cur->n_holders + 1) * sizeof(*hv));
    if (hv == NULL) {
        if (m)
            faas__artifact_meta__free_unpacked(m, NULL);
        return -ENOMEM;
    }
    if (cur->n_holders > 0) /* a fresh record has no array at all */
        memcpy(hv, cur->holders, cur->n_holders * sizeof(*hv));
    hv[cur->n_holders] = adv;
    Faas__ArtifactMeta out = *cur;
    out.holders = hv;
    out.n_holders = cur->n_holders + 1;
    if (m == NULL) {
        out.sha256 = (char *)sha;
        out.size = size;
        out.created_unix_ms = faas_unix_ms();
    }
    size_t len;
    uint8_t *buf = faas_pb_pack(&out.base, &len);
    free(hv);
    if (m)
        faas__artifact_meta__free_unpacked(m, NULL);
    if (buf == NULL)
        return -ENOMEM;
    etcdc_cmp_t cmp = {.target = ETCDC_CMP_MOD, .op = ETCDC_EQ, .key = k, .klen = kl, .num = mod};
    etcdc_op_t op = {.kind = ETCDC_OP_PUT, .key = k, .klen = kl, .val = buf, .vlen = len};
    int ok = 0;
    rc = etcdc_txn(e->c, &cmp, 1, &op, 1, NULL, 0, &ok, NULL, NULL, NULL);
    free(buf);
    return rc != 0 ? map_err(e, rc == -ENOENT ? -EIO : rc, "txn_artifact") : ok;
}

static int ed_artifact_added(void *impl, const char *sha, uint64_t size)
{
    ed_t *e = impl;
    char k[300];
    size_t kl = mkkey(e, "artifacts", sha, k, sizeof(k));
    char adv[300];
    disc_etcd_advertise(e, adv, sizeof(adv));
    if (adv[0] == '\0')
        return -EAGAIN; /* not serving yet: nobody could fetch from us */
    for (int i = 0; i < ED_TXN_TRIES; i++) {
        int rc = add_holder_once(e, k, kl, sha, size, adv);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        sleep_ms(1 + rand() % (2 + i));
    }
    return -EIO;
}

typedef struct {
    disc_upload_t *up;
    const char *err;
    int bad;
} fetch_ctx_t;

static int on_chunk(void *ud, const uint8_t *msg, size_t len)
{
    fetch_ctx_t *f = ud;
    Faas__CodeChunk *c = faas__code_chunk__unpack(NULL, len, msg);
    if (c == NULL) {
        f->err = "the peer sent a message that is not a CodeChunk";
        f->bad = 1;
        return 1;
    }
    int rc = disc_upload_write(f->up, c->data.data, c->data.len, &f->err);
    faas__code_chunk__free_unpacked(c, NULL);
    f->bad = rc != 0;
    return rc != 0;
}

/* The whole transfer's deadline: a fixed part for the round trips plus the size at a
 * slow but sane rate, so a stalled holder is given up on in proportion to the bytes. */
static int peer_deadline_ms(uint64_t size)
{
    uint64_t ms = ED_PEER_BASE_MS + size / (ED_PEER_RATE_BPS / 1000);
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* FetchCode from one holder into dir, through a temp file that lands only if its
 * sha256 is the one asked for (else it is deleted). 0; -ENOENT if the holder said it
 * has no such bytes; -1 otherwise; errbuf says why. */
static int fetch_from(const char *holder, const char *dir, const char *sha, uint64_t size, uint64_t max,
                      char *errbuf, size_t errcap)
{
    const char *err = NULL;
    char cerr[256];
    uint64_t got = 0;
    fetch_ctx_t f = {0};
    if (size > 0 && size < max)
        max = size; /* the record says how much: a holder sending more is wrong anyway */
    if ((f.up = disc_upload_begin(dir, max, &err)) == NULL) {
        snprintf(errbuf, errcap, "%s", err);
        return -1;
    }
    faas_rpc_channel_t *ch = faas_rpc_channel_open(holder);
    /* a holder that is gone (refused, or black-holed) costs seconds, not the deadline */
    if (!faas_rpc_channel_wait_ready(ch, ED_PEER_CONNECT_MS)) {
        faas_rpc_channel_close(ch);
        disc_upload_abort(f.up);
        snprintf(errbuf, errcap, "%s: unreachable (no connection, or none within %d ms)", holder, ED_PEER_CONNECT_MS);
        return -1;
    }
    Faas__CodeRef ref = FAAS__CODE_REF__INIT;
    ref.sha256 = (char *)sha;
    ref.local_only = 1;
    size_t len;
    uint8_t *req = faas_pb_pack(&ref.base, &len);
    int rc = req ? faas_rpc_server_stream(ch, "/faas.Discovery/FetchCode", req, len, peer_deadline_ms(max), on_chunk,
                                          &f, cerr, sizeof(cerr))
                 : -1;
    free(req);
    faas_rpc_channel_close(ch);
    if (rc != 0 || f.bad) {
        snprintf(errbuf, errcap, "%s: %s", holder, f.bad ? f.err : req ? cerr : "out of memory");
        disc_upload_abort(f.up);
        return rc == FAAS_GRPC_NOT_FOUND && !f.bad ? -ENOENT : -1;
    }
    if (disc_upload_commit_expect(f.up, sha, &got, &err) != 0) {
        snprintf(errbuf, errcap, "%s: %s", holder, err);
        return -1;
    }
    return 0;
}

/* One attempt at removing holder from sha's record (deleting the record with its last
 * holder, so MissingBlobs asks for the bytes again): 1 done, 0 conflict, negative. */
static int drop_holder_once(ed_t *e, const char *k, size_t kl, const char *holder)
{
    Faas__ArtifactMeta *m = NULL;
    int64_t mod = 0;
    int rc = read_meta(e, k, kl, &m, &mod);
    if (rc != 0)
        return rc == -ENOENT ? 1 : rc;
    char **hv = malloc((m->n_holders + 1) * sizeof(*hv));
    size_t n = 0;
    for (size_t i = 0; hv != NULL && i < m->n_holders; i++)
        if (strcmp(m->holders[i], holder) != 0)
            hv[n++] = m->holders[i];
    uint8_t *buf = NULL;
    size_t len = 0;
    Faas__ArtifactMeta out = *m;
    out.holders = hv;
    out.n_holders = n;
    if (hv == NULL || n == m->n_holders || (n > 0 && (buf = faas_pb_pack(&out.base, &len)) == NULL)) {
        /* n == all: someone else dropped it already */
        rc = hv == NULL || n < m->n_holders ? -ENOMEM : 1;
        free(hv);
        faas__artifact_meta__free_unpacked(m, NULL);
        return rc;
    }
    free(hv);
    faas__artifact_meta__free_unpacked(m, NULL);
    etcdc_cmp_t cmp = {.target = ETCDC_CMP_MOD, .op = ETCDC_EQ, .key = k, .klen = kl, .num = mod};
    etcdc_op_t op = {.kind = n > 0 ? ETCDC_OP_PUT : ETCDC_OP_DELETE, .key = k, .klen = kl, .val = buf, .vlen = len};
    int ok = 0;
    rc = etcdc_txn(e->c, &cmp, 1, &op, 1, NULL, 0, &ok, NULL, NULL, NULL);
    free(buf);
    return rc != 0 ? map_err(e, rc == -ENOENT ? -EIO : rc, "txn_artifact") : ok;
}

static void drop_holder(ed_t *e, const char *sha, const char *holder)
{
    char k[300];
    size_t kl = mkkey(e, "artifacts", sha, k, sizeof(k));
    for (int i = 0; i < ED_TXN_TRIES; i++) {
        int rc = drop_holder_once(e, k, kl, holder);
        if (rc != 0) {
            if (rc > 0)
                FAAS_INFO("event=artifact_holder_dropped sha256=%s holder=%s", sha, holder);
            return;
        }
        sleep_ms(1 + rand() % (2 + i));
    }
}

/* 1 if sa is an address of this host (loopback, or one of its interfaces). */
static int local_addr(const struct sockaddr *sa, const struct ifaddrs *ifs)
{
    if (sa->sa_family == AF_INET) {
        const struct in_addr *a = &((const struct sockaddr_in *)sa)->sin_addr;
        if ((ntohl(a->s_addr) >> 24) == 127 || a->s_addr == htonl(INADDR_ANY))
            return 1;
        for (; ifs; ifs = ifs->ifa_next)
            if (ifs->ifa_addr && ifs->ifa_addr->sa_family == AF_INET &&
                ((const struct sockaddr_in *)ifs->ifa_addr)->sin_addr.s_addr == a->s_addr)
                return 1;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a))
            return 1;
        for (; ifs; ifs = ifs->ifa_next)
            if (ifs->ifa_addr && ifs->ifa_addr->sa_family == AF_INET6 &&
                memcmp(&((const struct sockaddr_in6 *)ifs->ifa_addr)->sin6_addr, a, sizeof(*a)) == 0)
                return 1;
    }
    return 0;
}

/* 1 if holder is this discovery under any spelling: its advertise address, or the
 * advertised port on any address of this host (a hostname for an IP, 127.0.0.1 for
 * the interface's address). Dialing ourselves would only find the bytes missing. */
static int is_self(const char *holder, const char *adv)
{
    char host[256], ahost[256];
    uint16_t port = 0, aport = 0;
    const char *err;
    if (strcmp(holder, adv) == 0)
        return 1;
    if (faas_parse_hostport(holder, host, sizeof(host), &port, &err) != 0 ||
        faas_parse_hostport(adv, ahost, sizeof(ahost), &aport, &err) != 0 || port != aport)
        return 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    struct ifaddrs *ifs = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return 0;
    int self = 0;
    if (getifaddrs(&ifs) == 0 || ifs == NULL)
        for (struct addrinfo *a = res; a && !self; a = a->ai_next)
            self = local_addr(a->ai_addr, ifs);
    freeifaddrs(ifs);
    freeaddrinfo(res);
    return self;
}

/* Tries the holders from a random one on, so every discovery does not hammer the first
 * (perhaps dead) one: 0 once the bytes are here, else -ENOENT with why filled. */
static int fetch_any(ed_t *e, const Faas__ArtifactMeta *m, const char *dir, const char *sha, uint64_t max,
                     char *why, size_t whycap, const char *adv)
{
    size_t n = m->n_holders, start = n ? (size_t)rand() % n : 0;
    for (size_t j = 0; j < n; j++) {
        const char *h = m->holders[(start + j) % n];
        if (is_self(h, adv))
            continue; /* the record says we hold it, but the file is gone: ask the others */
        int rc = fetch_from(h, dir, sha, m->size, max, why, whycap);
        if (rc == 0) {
            FAAS_INFO("event=artifact_peer_fetch sha256=%s from=%s", sha, h);
            return 0;
        }
        FAAS_WARN("event=artifact_peer_fetch_failed sha256=%s msg=\"%s\"", sha, why);
        if (rc == -ENOENT) /* it answered and lost the bytes: nobody should ask it again */
            drop_holder(e, sha, h);
    }
    return -ENOENT;
}

/* Reserves a slot for fetching sha: 1 got it, 0 another thread was fetching sha and
 * has finished (look for the file again), -EBUSY no slot came free in
 * ED_PEER_SLOT_WAIT_MS (well inside a worker manager's 60 s FetchCode deadline). */
static int fetch_slot_take(ed_t *e, const char *sha)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ED_PEER_SLOT_WAIT_MS / 1000;
    pthread_mutex_lock(&e->mu);
    int waited = 0, rc;
    for (;;) {
        int same = -1, freeslot = -1;
        for (int i = 0; i < ED_PEER_FETCHES_MAX; i++) {
            if (e->fetching[i][0] == '\0')
                freeslot = freeslot < 0 ? i : freeslot;
            else if (strcmp(e->fetching[i], sha) == 0)
                same = i;
        }
        if (same >= 0) { /* one copy per sha: wait for it (it has deadlines) rather than copy twice */
            waited = 1;
            pthread_cond_wait(&e->cv, &e->mu);
            continue;
        }
        if (waited) {
            rc = 0;
            break;
        }
        if (freeslot >= 0) {
            snprintf(e->fetching[freeslot], sizeof(e->fetching[freeslot]), "%s", sha);
            rc = 1;
            break;
        }
        if (e->stopping || pthread_cond_timedwait(&e->cv, &e->mu, &dl) != 0) {
            rc = -EBUSY;
            break;
        }
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

static void fetch_slot_give(ed_t *e, const char *sha)
{
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < ED_PEER_FETCHES_MAX; i++)
        if (strcmp(e->fetching[i], sha) == 0)
            e->fetching[i][0] = '\0';
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static int ed_artifact_fetch(void *impl, const char *dir, const char *sha, uint64_t max, char *errbuf, size_t errcap)
{
    ed_t *e = impl;
    char k[300], why[400] = "", adv[300];
    size_t kl = mkkey(e, "artifacts", sha, k, sizeof(k));
    Faas__ArtifactMeta *m = NULL;
    int64_t mod;
    int rc = fetch_slot_take(e, sha);
    if (rc <= 0) {
        if (rc == 0 && (rc = disc_artifact_exists(dir, sha)) != 0)
            snprintf(errbuf, errcap, "code artifact %.64s: a fetch from the other discoveries just failed", sha);
        else if (rc == -EBUSY)
            snprintf(errbuf, errcap, "busy: %d code artifact fetches from other discoveries are under way; try again",
                     ED_PEER_FETCHES_MAX);
        return rc;
    }
    disc_etcd_advertise(e, adv, sizeof(adv));
    if ((rc = read_meta(e, k, kl, &m, &mod)) != 0) {
        snprintf(errbuf, errcap, rc == -ENOENT ? "no such code artifact" : "state store unreachable: %s",
                 etcdc_error());
        goto out;
    }
    rc = fetch_any(e, m, dir, sha, max, why, sizeof(why), adv);
    __atomic_fetch_add(rc == 0 ? &e->fetch_ok : &e->fetch_failed, 1, __ATOMIC_RELAXED);
    if (rc != 0)
        snprintf(errbuf, errcap, "code artifact %.64s is held by no reachable discovery (%zu holders; last: %.300s)",
                 sha, m->n_holders, why[0] ? why : "none but this one");
    faas__artifact_meta__free_unpacked(m, NULL);
    /* a copy here makes this discovery a holder too, so a lost host loses no bytes */
    if (rc == 0 && ed_artifact_added(e, sha, 0) != 0)
        FAAS_WARN("event=artifact_holder_not_recorded sha256=%s", sha);
out:
    fetch_slot_give(e, sha);
    return rc;
}

/* ---- open, close, metrics ------------------------------------------------------------ */

void *disc_etcd_open(const char *endpoints, const char *prefix, char *errbuf, size_t errcap)
{
    ed_t *e = calloc(1, sizeof(*e));
    if (e == NULL || strlen(prefix) > DISC_ETCD_PREFIX_MAX) {
        snprintf(errbuf, errcap, e ? "--etcd-prefix is longer than " DISC_STR(DISC_ETCD_PREFIX_MAX) " bytes" : "out of memory");
        free(e);
        return NULL;
    }
    strcpy(e->prefix, prefix);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    char err[256];
    if ((e->c = etcdc_open(endpoints, ED_TIMEOUT_MS, err, sizeof(err))) == NULL) {
        snprintf(errbuf, errcap, "bad --store: %s", err);
        goto fail;
    }
    /* reach etcd now: a discovery that cannot should say so at start, not at the first deploy */
    char k[300];
    size_t kl = mkkey(e, "versions", "", k, sizeof(k));
    etcdc_range_t r;
    int rc = etcdc_range(e->c, k, kl, NULL, 0, 0, 1, ETCDC_COUNT_ONLY, &r);
    if (rc != 0) {
        snprintf(errbuf, errcap, "etcd unreachable at %s: %s", endpoints, etcdc_error());
        goto fail;
    }
    etcdc_range_free(&r);
    return e;
fail:
    disc_etcd_ops.close(e);
    return NULL;
}

void disc_etcd_set_advertise(void *impl, const char *addr)
{
    ed_t *e = impl;
    pthread_mutex_lock(&e->mu);
    snprintf(e->advertise, sizeof(e->advertise), "%s", addr);
    pthread_mutex_unlock(&e->mu);
}

void disc_etcd_advertise(void *impl, char *out, size_t cap)
{
    ed_t *e = impl;
    pthread_mutex_lock(&e->mu);
    snprintf(out, cap, "%s", e->advertise);
    pthread_mutex_unlock(&e->mu);
}

struct etcdc *disc_etcd_client(void *impl)
{
    return ((ed_t *)impl)->c;
}

static void ed_close(void *impl)
{
    ed_t *e = impl;
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->watch)
        etcdc_watch_stop(e->watch);
    if (e->c)
        etcdc_close(e->c);
    for (size_t i = 0; i < e->n_names; i++)
        free(e->names[i].name);
    free(e->names);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static void ed_metrics(void *impl, FILE *out)
{
    ed_t *e = impl;
    pthread_mutex_lock(&e->mu);
    long long applied = (long long)e->applied;
    pthread_mutex_unlock(&e->mu);
    fprintf(out,
            "# HELP faas_discovery_etcd_errors_total etcd calls that failed (unreachable, timed out, refused).\n"
            "# TYPE faas_discovery_etcd_errors_total counter\nfaas_discovery_etcd_errors_total %llu\n"
            "# HELP faas_discovery_etcd_revision The etcd revision the registry reflects (watch position).\n"
            "# TYPE faas_discovery_etcd_revision gauge\nfaas_discovery_etcd_revision %lld\n"
            "# HELP faas_discovery_artifact_peer_fetches_total Artifacts fetched from another discovery, by result.\n"
            "# TYPE faas_discovery_artifact_peer_fetches_total counter\n"
            "faas_discovery_artifact_peer_fetches_total{result=\"ok\"} %llu\n"
            "faas_discovery_artifact_peer_fetches_total{result=\"failed\"} %llu\n",
            (unsigned long long)__atomic_load_n(&e->errors, __ATOMIC_RELAXED), applied,
            (unsigned long long)__atomic_load_n(&e->fetch_ok, __ATOMIC_RELAXED),
            (unsigned long long)__atomic_load_n(&e->fetch_failed, __ATOMIC_RELAXED));
}

const disc_store_ops_t disc_etcd_ops = {
    .name = "etcd",
    .deploy = ed_deploy,
    .get = ed_get,
    .list = ed_list,
    .del = ed_delete,
    .deploys = ed_deploys,
    .close = ed_close,
    .artifact_known = ed_artifact_known,
    .artifact_fetch = ed_artifact_fetch,
    .artifact_added = ed_artifact_added,
    .follow = ed_follow,
    .metrics = ed_metrics,
};
