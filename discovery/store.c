/* discovery/store.c - the durable function store in front of its backend: SQLite in
 * the state dir for one host, etcd for several (store_ops.h). What both share is here:
 * a spec is validated and checked against the artifacts and the other functions'
 * services before the backend assigns its version and stores it. Artifact bytes are
 * files in <state_dir>/artifacts on every backend; etcd adds which discoveries hold
 * each, so a discovery can fetch bytes it lacks from one that has them. */
#include "discovery/discovery.h"
#include "discovery/store_ops.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct disc_store {
    const disc_store_ops_t *ops;
    void *impl;
    /* the service check and the backend's write as one step, as one SQLite lock was */
    pthread_mutex_t mu;
    uint64_t max_fetch;  /* largest artifact fetched from a peer */
    char advertise[300]; /* disc_store_advertise's answer (main's thread only) */
    char artifacts[3072];
};

/* The front both open paths share: the artifact directory. */
static disc_store_t *front_new(const char *state_dir, const char **err)
{
    disc_store_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        *err = "out of memory";
        return NULL;
    }
    pthread_mutex_init(&st->mu, NULL);
    st->max_fetch = 4ull << 30;
    int n = snprintf(st->artifacts, sizeof(st->artifacts), "%s/artifacts", state_dir);
    if (n < 0 || (size_t)n >= sizeof(st->artifacts)) {
        *err = "state directory path too long";
        goto fail;
    }
    if (faas_mkdirs(st->artifacts, 0755) != 0) {
        *err = "cannot create the state directory";
        goto fail;
    }
    return st;
fail:
    pthread_mutex_destroy(&st->mu);
    free(st);
    return NULL;
}

disc_store_t *disc_store_open(const char *state_dir, const char **err)
{
    disc_store_t *st = front_new(state_dir, err);
    if (st == NULL)
        return NULL;
    st->ops = &disc_sqlite_ops;
    if ((st->impl = disc_sqlite_open(state_dir, err)) == NULL) {
        disc_store_close(st);
        return NULL;
    }
    return st;
}

disc_store_t *disc_store_open_etcd(const char *state_dir, const char *endpoints, const char *prefix, char *errbuf,
                                   size_t errcap)
{
    const char *err = NULL;
    disc_store_t *st = front_new(state_dir, &err);
    if (st == NULL) {
        snprintf(errbuf, errcap, "%s", err);
        return NULL;
    }
    st->ops = &disc_etcd_ops;
    if ((st->impl = disc_etcd_open(endpoints, prefix, errbuf, errcap)) == NULL) {
        disc_store_close(st);
        return NULL;
    }
    return st;
}

void disc_store_close(disc_store_t *st)
{
    if (st == NULL)
        return;
    if (st->impl != NULL)
        st->ops->close(st->impl);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

const char *disc_store_artifact_dir(disc_store_t *st)
{
    return st->artifacts;
}

const char *disc_store_backend(disc_store_t *st)
{
    return st->ops->name;
}

struct etcdc *disc_store_etcd(disc_store_t *st)
{
    return st->ops == &disc_etcd_ops ? disc_etcd_client(st->impl) : NULL;
}

void disc_store_set_advertise(disc_store_t *st, const char *addr)
{
    if (st->ops == &disc_etcd_ops)
        disc_etcd_set_advertise(st->impl, addr);
}

const char *disc_store_advertise(disc_store_t *st)
{
    if (st->ops == &disc_etcd_ops)
        disc_etcd_advertise(st->impl, st->advertise, sizeof(st->advertise));
    return st->advertise;
}

void disc_store_set_max_fetch(disc_store_t *st, uint64_t max_bytes)
{
    st->max_fetch = max_bytes;
}

int disc_store_publishes(disc_store_t *st)
{
    return st->ops->follow != NULL;
}

uint64_t disc_store_deploys(disc_store_t *st)
{
    return st->ops->deploys(st->impl);
}

/* ---- artifacts ------------------------------------------------------------------ */

int disc_store_artifact_known(disc_store_t *st, const char *sha)
{
    int rc = disc_artifact_exists(st->artifacts, sha);
    if (rc != -ENOENT || st->ops->artifact_known == NULL)
        return rc;
    return st->ops->artifact_known(st->impl, sha);
}

int disc_store_artifact_local(disc_store_t *st, const char *sha, char *errbuf, size_t errcap)
{
    int rc = disc_artifact_exists(st->artifacts, sha);
    if (rc != -ENOENT)
        return rc;
    if (st->ops->artifact_fetch == NULL) {
        snprintf(errbuf, errcap, "no such code artifact");
        return -ENOENT;
    }
    return st->ops->artifact_fetch(st->impl, st->artifacts, sha, st->max_fetch, errbuf, errcap);
}

int disc_store_artifact_added(disc_store_t *st, const char *sha, uint64_t size)
{
    return st->ops->artifact_added ? st->ops->artifact_added(st->impl, sha, size) : 0;
}

/* ---- functions ------------------------------------------------------------------ */

int disc_store_follow(disc_store_t *st, disc_registry_t *reg, char *errbuf, size_t errcap)
{
    if (st->ops->follow != NULL)
        return st->ops->follow(st->impl, reg, errbuf, errcap);
    /* one host: the registry's cache starts from the table and deploys update both */
    Faas__FunctionSpec **list;
    size_t n;
    if (st->ops->list(st->impl, &list, &n) != 0) {
        snprintf(errbuf, errcap, "cannot read the functions");
        return -EIO;
    }
    for (size_t i = 0; i < n; i++)
        disc_registry_function_put(reg, list[i]);
    disc_store_free_list(list, n);
    return (int)n;
}

void disc_store_metrics(disc_store_t *st, FILE *out)
{
    fprintf(out,
            "# HELP faas_discovery_store_info The backend of the durable state (--store), as a label.\n"
            "# TYPE faas_discovery_store_info gauge\nfaas_discovery_store_info{backend=\"%s\"} 1\n",
            st->ops->name);
    if (st->ops->metrics)
        st->ops->metrics(st->impl, out);
}

/* Two functions may not claim one gRPC/Thrift service: routing would be ambiguous. */
static int find_service_owner(Faas__FunctionSpec **all, size_t n, const Faas__FunctionSpec *s, char *errbuf,
                              size_t errcap)
{
    for (size_t i = 0; i < n; i++) {
        const Faas__FunctionSpec *o = all[i];
        if (strcmp(o->name, s->name) == 0)
            continue;
        for (size_t a = 0; a < s->n_grpc_services; a++)
            for (size_t b = 0; b < o->n_grpc_services; b++)
                if (strcmp(s->grpc_services[a], o->grpc_services[b]) == 0)
                    goto taken;
        for (size_t a = 0; a < s->n_thrift_services; a++)
            for (size_t b = 0; b < o->n_thrift_services; b++)
                if (strcmp(s->thrift_services[a], o->thrift_services[b]) == 0)
                    goto taken;
        continue;
    taken:
        snprintf(errbuf, errcap, "a service of this function is already served by function %s", o->name);
        return -1;
    }
    return 0;
}

/* An artifact the spec names: held here or, on etcd, by some discovery. */
static int artifact_check(disc_store_t *st, const char *sha, char *errbuf, size_t errcap, const char *what)
{
    int rc = disc_store_artifact_known(st, sha);
    if (rc == -EAGAIN)
        snprintf(errbuf, errcap, "state store unreachable: cannot check the artifact %.64s", sha);
    else if (rc != 0)
        snprintf(errbuf, errcap, "%s", what);
    return rc == -EAGAIN ? -EAGAIN : rc != 0 ? -EINVAL : 0;
}

/* Every blob of an image must be uploaded before the deploy that names it. */
static int image_blobs_stored(disc_store_t *st, const Faas__ImageSpec *im, char *errbuf, size_t errcap)
{
    const char *hex = NULL;
    char what[400];
    for (size_t i = 0; i <= im->n_blobs; i++) {
        const char *d = i == im->n_blobs ? im->manifest_digest : im->blobs[i];
        snprintf(what, sizeof(what), "blob %.80s of image %.200s is not uploaded: upload the image's blobs first", d,
                 im->ref ? im->ref : "");
        if (!disc_oci_digest_hex(d, &hex)) {
            snprintf(errbuf, errcap, "%s", what);
            return -EINVAL;
        }
        int rc = artifact_check(st, hex, errbuf, errcap, what);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Deploy-time checks that need the rest of the store: the artifact and routing keys. */
static int check_against_store(disc_store_t *st, const Faas__FunctionSpec *s, char *errbuf, size_t errcap)
{
    int rc;
    if (s->image != NULL) {
        rc = image_blobs_stored(st, s->image, errbuf, errcap);
    } else {
        char what[160];
        snprintf(what, sizeof(what), "code_sha256 %.64s is not an uploaded artifact: upload the code first",
                 s->code_sha256);
        rc = artifact_check(st, s->code_sha256, errbuf, errcap, what);
    }
    if (rc != 0 || (s->n_grpc_services == 0 && s->n_thrift_services == 0))
        return rc;
    Faas__FunctionSpec **all = NULL;
    size_t n = 0;
    if ((rc = st->ops->list(st->impl, &all, &n)) != 0) {
        snprintf(errbuf, errcap, rc == -EAGAIN ? "state store unreachable" : "reading the function table failed");
        return rc == -EAGAIN ? -EAGAIN : -EIO;
    }
    rc = find_service_owner(all, n, s, errbuf, errcap) == 0 ? 0 : -EINVAL;
    disc_store_free_list(all, n);
    return rc;
}

int disc_store_deploy(disc_store_t *st, const Faas__FunctionSpec *in, Faas__FunctionSpec **out, char *errbuf,
                      size_t errcap)
{
    const char *err = NULL;
    if (errcap > 0)
        errbuf[0] = '\0';
    /* normalize works on an owned copy: the caller's strings may be literals */
    Faas__FunctionSpec *s = disc_spec_dup(in);
    if (s == NULL) {
        snprintf(errbuf, errcap, "out of memory");
        return -ENOMEM;
    }
    if (disc_spec_normalize(s, &err) != 0) {
        snprintf(errbuf, errcap, "%s", err);
        faas__function_spec__free_unpacked(s, NULL);
        return -EINVAL;
    }
    pthread_mutex_lock(&st->mu);
    int rc = check_against_store(st, s, errbuf, errcap);
    if (rc == 0)
        rc = st->ops->deploy(st->impl, s, errbuf, errcap);
    pthread_mutex_unlock(&st->mu);
    if (rc != 0) {
        faas__function_spec__free_unpacked(s, NULL);
        return rc;
    }
    *out = s;
    return 0;
}

int disc_store_get(disc_store_t *st, const char *name, Faas__FunctionSpec **out)
{
    return st->ops->get(st->impl, name, out);
}

int disc_store_list(disc_store_t *st, Faas__FunctionSpec ***out, size_t *n)
{
    return st->ops->list(st->impl, out, n);
}

void disc_store_free_list(Faas__FunctionSpec **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        faas__function_spec__free_unpacked(list[i], NULL);
    free(list);
}

int disc_store_delete(disc_store_t *st, const char *name)
{
    pthread_mutex_lock(&st->mu);
    int rc = st->ops->del(st->impl, name);
    pthread_mutex_unlock(&st->mu);
    return rc;
}
