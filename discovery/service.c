/* discovery/service.c - the faas.Discovery gRPC methods: thin handlers that unpack,
 * call the store or the registry, pack and answer, counting every result. */
#include "discovery/discovery.h"
#include "discovery/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"

enum {
    M_UPLOAD,
    M_FETCH,
    M_MISSING_BLOBS,
    M_DEPLOY,
    M_GET,
    M_LIST,
    M_DELETE,
    M_HEARTBEAT,
    M_LIST_INSTANCES,
    M_LIST_WORKERS,
    M_WATCH,
    M_STATUS,
    M_SUBMIT_TASK,
    M_GET_TASK,
    M_GET_TASK_RESULT,
    M_LIST_TASKS,
    M_CANCEL_TASK,
    M_CLAIM_TASKS,
    M_REPORT_TASK,
    M_CLAIM_CALLBACKS,
    M_REPORT_CALLBACK,
    M_COUNT
};
#define N_CODES 17

static const char *const method_names[M_COUNT] = {
    "UploadCode",   "FetchCode", "MissingBlobs", "Deploy",        "GetFunction", "ListFunctions",
    "DeleteFunction", "Heartbeat", "ListInstances", "ListWorkers", "Watch", "GetFunctionStatus",
    "SubmitTask",     "GetTask",   "GetTaskResult", "ListTasks",   "CancelTask",
    "ClaimTasks",     "ReportTask",     "ClaimCallbacks", "ReportCallback",
};

static const char *const code_names[N_CODES] = {
    "OK",       "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

struct disc_service {
    disc_store_t *store;
    disc_registry_t *reg;
    disc_tasks_t *tasks;
    uint64_t max_artifact;
    /* store write + registry publish as one step, so watchers see deploys in version order */
    pthread_mutex_t deploy_mu;
    uint64_t counts[M_COUNT][N_CODES]; /* atomics */
    faas_rpc_method_t methods[M_COUNT];
    /* Disk work (SQLite, fsync, etcd round trips) runs on this thread, not on the rpc
     * server thread, so heartbeats and watch pushes never wait behind it. Artifact
     * transfers (FetchCode) do not: they take as long as their bytes. */
    pthread_t jobs_thread;
    pthread_mutex_t jobs_mu;
    pthread_cond_t jobs_cv;
    struct job *jobs_head, *jobs_tail;
    int jobs_stop, jobs_running;
    /* FetchCode calls run on threads of their own (under jobs_mu): a transfer, or a
     * copy from another discovery, lasts as long as the bytes take and must hold up
     * neither the jobs queue nor a peer that is fetching from us at the same time */
    int fetch_threads;
    pthread_cond_t fetch_cv;
};

typedef void (*handler_fn)(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud);

typedef struct job {
    struct job *next;
    handler_fn fn;
    faas_rpc_call_t *call;
    uint8_t *req; /* a copy: the rpc layer's bytes die with the handler call; NULL = end of stream */
    size_t len;
} job_t;

static void *jobs_main(void *arg)
{
    disc_service_t *s = arg;
    pthread_mutex_lock(&s->jobs_mu);
    for (;;) {
        job_t *j = s->jobs_head;
        if (j == NULL) {
            if (s->jobs_stop)
                break;
            pthread_cond_wait(&s->jobs_cv, &s->jobs_mu);
            continue;
        }
        s->jobs_head = j->next;
        if (s->jobs_head == NULL)
            s->jobs_tail = NULL;
        pthread_mutex_unlock(&s->jobs_mu);
        j->fn(j->call, j->req, j->len, s);
        free(j->req);
        free(j);
        pthread_mutex_lock(&s->jobs_mu);
    }
    pthread_mutex_unlock(&s->jobs_mu);
    return NULL;
}

static void fail(disc_service_t *s, faas_rpc_call_t *call, int m, int code, const char *msg);

/* Queues fn(call, copy of req) for the jobs thread; the call is answered from there. */
static void defer(disc_service_t *s, int m, handler_fn fn, faas_rpc_call_t *call, const uint8_t *req, size_t len)
{
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL || (req != NULL && (j->req = malloc(len + 1)) == NULL)) {
        free(j);
        fail(s, call, m, FAAS_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (req != NULL)
        memcpy(j->req, req, len);
    j->fn = fn;
    j->call = call;
    j->len = len;
    pthread_mutex_lock(&s->jobs_mu);
    if (s->jobs_tail)
        s->jobs_tail->next = j;
    else
        s->jobs_head = j;
    s->jobs_tail = j;
    pthread_cond_signal(&s->jobs_cv);
    pthread_mutex_unlock(&s->jobs_mu);
}

static void count(disc_service_t *s, int m, int code)
{
    if (code < 0 || code >= N_CODES)
        code = 2;
    __atomic_fetch_add(&s->counts[m][code], 1, __ATOMIC_RELAXED);
}

static void fail(disc_service_t *s, faas_rpc_call_t *call, int m, int code, const char *msg)
{
    count(s, m, code);
    faas_rpc_fail(call, code, msg);
}

/* Packs msg and replies OK; INTERNAL if packing runs out of memory. */
static void reply_msg(disc_service_t *s, faas_rpc_call_t *call, int m, const ProtobufCMessage *msg)
{
    size_t len = 0;
    uint8_t *buf = msg ? faas_pb_pack(msg, &len) : NULL;
    if (msg != NULL && buf == NULL) {
        fail(s, call, m, FAAS_GRPC_INTERNAL, "out of memory");
        return;
    }
    count(s, m, FAAS_GRPC_OK);
    faas_rpc_reply(call, buf ? buf : (const uint8_t *)"", len);
    free(buf);
}

/* ---- code artifacts ------------------------------------------------------------ */

/* End of an upload stream, on the jobs thread: fsync + rename can take milliseconds. */
static void upload_finish(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    disc_upload_t *up = faas_rpc_get_data(call);
    const char *err = NULL;
    faas_rpc_set_data(call, NULL);
    if (faas_rpc_cancelled(call)) {
        disc_upload_abort(up);
        fail(s, call, M_UPLOAD, FAAS_GRPC_CANCELLED, "upload cut short");
        return;
    }
    if (up == NULL) {
        fail(s, call, M_UPLOAD, FAAS_GRPC_INVALID_ARGUMENT, "empty upload: send the tar.gz of the code directory");
        return;
    }
    char sha[65];
    uint64_t size = 0;
    int rc = disc_upload_commit(up, sha, &size, &err);
    if (rc != 0) {
        fail(s, call, M_UPLOAD, rc == -EINVAL ? FAAS_GRPC_INVALID_ARGUMENT : FAAS_GRPC_INTERNAL, err);
        return;
    }
    /* on etcd, other discoveries learn here that this one holds the bytes */
    if ((rc = disc_store_artifact_added(s->store, sha, size)) != 0) {
        fail(s, call, M_UPLOAD, rc == -EAGAIN ? FAAS_GRPC_UNAVAILABLE : FAAS_GRPC_INTERNAL,
             rc == -EAGAIN ? "state store unreachable: the artifact is stored here but not recorded; upload again"
                           : "recording the artifact failed");
        return;
    }
    Faas__CodeRef ref = FAAS__CODE_REF__INIT;
    ref.sha256 = sha;
    ref.size = size;
    FAAS_INFO("event=upload sha256=%s size=%llu", sha, (unsigned long long)size);
    reply_msg(s, call, M_UPLOAD, &ref.base);
}

/* Chunks are written on the rpc thread (a write to the page cache is cheap and keeps
 * their order); the end of the stream is handed to the jobs thread. */
static void on_upload(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    disc_upload_t *up = faas_rpc_get_data(call);
    const char *err = NULL;
    if (req == NULL) {
        defer(s, M_UPLOAD, upload_finish, call, NULL, 0);
        return;
    }
    Faas__CodeChunk *chunk = faas__code_chunk__unpack(NULL, len, req);
    int code = FAAS_GRPC_INVALID_ARGUMENT, rc;
    if (chunk == NULL) {
        err = "a message is not a valid CodeChunk";
        goto bad;
    }
    if (up == NULL) {
        if ((up = disc_upload_begin(disc_store_artifact_dir(s->store), s->max_artifact, &err)) == NULL) {
            code = FAAS_GRPC_INTERNAL;
            goto bad;
        }
        faas_rpc_set_data(call, up);
    }
    rc = disc_upload_write(up, chunk->data.data, chunk->data.len, &err);
    if (rc != 0) {
        code = rc == -EFBIG ? FAAS_GRPC_RESOURCE_EXHAUSTED : FAAS_GRPC_INTERNAL;
        goto bad;
    }
    faas__code_chunk__free_unpacked(chunk, NULL);
    return;
bad:
    /* failing ends the call: no further messages nor the end-of-stream call come */
    if (chunk)
        faas__code_chunk__free_unpacked(chunk, NULL);
    disc_upload_abort(up);
    faas_rpc_set_data(call, NULL);
    fail(s, call, M_UPLOAD, code, err);
}

static void do_fetch(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__CodeRef *ref = faas__code_ref__unpack(NULL, len, req);
    char path[4096], why[600];
    if (ref == NULL || disc_artifact_path(disc_store_artifact_dir(s->store), ref->sha256, path, sizeof(path)) != 0) {
        fail(s, call, M_FETCH, FAAS_GRPC_INVALID_ARGUMENT, "sha256 must be 64 lowercase hex characters");
        goto out;
    }
    /* bytes held only by another discovery (etcd) are copied here first, unless a
     * discovery is asking: it gets what is here or NOT_FOUND and tries the next holder */
    int rc = ref->local_only ? disc_artifact_exists(disc_store_artifact_dir(s->store), ref->sha256)
                             : disc_store_artifact_local(s->store, ref->sha256, why, sizeof(why));
    if (rc == -ENOENT && ref->local_only)
        snprintf(why, sizeof(why), "no such code artifact on this discovery");
    if (rc != 0) {
        fail(s, call, M_FETCH,
             rc == -EAGAIN || rc == -EBUSY ? FAAS_GRPC_UNAVAILABLE
             : rc == -ENOENT               ? FAAS_GRPC_NOT_FOUND
                                           : FAAS_GRPC_INTERNAL,
             why);
        goto out;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail(s, call, M_FETCH, FAAS_GRPC_NOT_FOUND, "no such code artifact");
        goto out;
    }
    static const size_t CHUNK = 64 * 1024;
    uint8_t *data = malloc(CHUNK), *packed = malloc(CHUNK + 16);
    ssize_t n = 0;
    while (data && packed && (n = read(fd, data, CHUNK)) > 0) {
        Faas__CodeChunk c = FAAS__CODE_CHUNK__INIT;
        c.data.data = data;
        c.data.len = (size_t)n;
        size_t plen = faas__code_chunk__pack(&c, packed);
        /* paced: at most 8 chunks (512 KiB) queued, not the whole artifact */
        if (faas_rpc_send_paced(call, packed, plen, 8) != 0)
            break; /* the client went away */
    }
    close(fd);
    free(data);
    free(packed);
    count(s, M_FETCH, n < 0 || !data || !packed ? FAAS_GRPC_INTERNAL : FAAS_GRPC_OK);
    faas_rpc_finish(call, n < 0 || !data || !packed ? FAAS_GRPC_INTERNAL : FAAS_GRPC_OK,
                    n < 0 ? "reading the artifact failed" : NULL);
out:
    if (ref)
        faas__code_ref__free_unpacked(ref, NULL);
}

/* Concurrent FetchCode calls (streams being sent and copies from peers): each holds a
 * thread and a file; beyond this, callers get UNAVAILABLE and retry. */
#define FETCH_THREADS_MAX 64

typedef struct {
    disc_service_t *s;
    faas_rpc_call_t *call;
    uint8_t *req;
    size_t len;
} fetch_job_t;

static void *fetch_main(void *arg)
{
    fetch_job_t *f = arg;
    disc_service_t *s = f->s;
    do_fetch(f->call, f->req, f->len, s);
    free(f->req);
    free(f);
    pthread_mutex_lock(&s->jobs_mu);
    if (--s->fetch_threads == 0)
        pthread_cond_broadcast(&s->fetch_cv);
    pthread_mutex_unlock(&s->jobs_mu);
    return NULL;
}

static void on_fetch(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    fetch_job_t *f = calloc(1, sizeof(*f));
    const char *why = "out of memory";
    pthread_attr_t attr;
    pthread_t t;
    if (f == NULL || (f->req = malloc(len + 1)) == NULL)
        goto fail;
    memcpy(f->req, req, len);
    f->s = s;
    f->call = call;
    f->len = len;
    pthread_mutex_lock(&s->jobs_mu);
    int busy = s->fetch_threads >= FETCH_THREADS_MAX;
    if (!busy)
        s->fetch_threads++;
    pthread_mutex_unlock(&s->jobs_mu);
    if (busy) {
        why = "busy: too many code artifact transfers under way; try again";
        goto fail;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, fetch_main, f);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        return;
    pthread_mutex_lock(&s->jobs_mu);
    if (--s->fetch_threads == 0)
        pthread_cond_broadcast(&s->fetch_cv);
    pthread_mutex_unlock(&s->jobs_mu);
    why = "busy: cannot start a thread for the transfer; try again";
fail:
    if (f)
        free(f->req);
    free(f);
    fail(s, call, M_FETCH, FAAS_GRPC_UNAVAILABLE, why);
}

/* Which blobs the store lacks, so an image's layers shared with what was deployed
 * before are uploaded once (docs/images.md). */
#define MISSING_BLOBS_MAX 1024

static void do_missing_blobs(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__BlobList *in = faas__blob_list__unpack(NULL, len, req);
    char **missing = NULL;
    if (in == NULL || in->n_sha256 > MISSING_BLOBS_MAX) {
        fail(s, call, M_MISSING_BLOBS, FAAS_GRPC_INVALID_ARGUMENT,
             in == NULL ? "the request is not a valid BlobList" : "at most 1024 blobs per MissingBlobs call");
        goto out;
    }
    missing = calloc(in->n_sha256 + 1, sizeof(*missing));
    Faas__BlobList outl = FAAS__BLOB_LIST__INIT;
    for (size_t i = 0; missing && i < in->n_sha256; i++) {
        if (!disc_valid_sha256(in->sha256[i])) {
            fail(s, call, M_MISSING_BLOBS, FAAS_GRPC_INVALID_ARGUMENT, "sha256 must be 64 lowercase hex characters");
            goto out;
        }
        /* held by any discovery on the same etcd counts: FetchCode brings it here */
        int rc = disc_store_artifact_known(s->store, in->sha256[i]);
        if (rc == -EAGAIN) {
            fail(s, call, M_MISSING_BLOBS, FAAS_GRPC_UNAVAILABLE, "state store unreachable");
            goto out;
        }
        if (rc != 0)
            missing[outl.n_sha256++] = in->sha256[i];
    }
    if (missing == NULL) {
        fail(s, call, M_MISSING_BLOBS, FAAS_GRPC_INTERNAL, "out of memory");
        goto out;
    }
    outl.sha256 = missing;
    reply_msg(s, call, M_MISSING_BLOBS, &outl.base);
out:
    free(missing);
    if (in)
        faas__blob_list__free_unpacked(in, NULL);
}

/* ---- functions --------------------------------------------------------------------- */

static void do_deploy(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__FunctionSpec *in = faas__function_spec__unpack(NULL, len, req), *out = NULL;
    char err[512];
    if (in == NULL) {
        fail(s, call, M_DEPLOY, FAAS_GRPC_INVALID_ARGUMENT, "the request is not a valid FunctionSpec message");
        return;
    }
    /* normalizing here first also drops unknown fields before the store re-encodes it */
    const char *verr = NULL;
    if (disc_spec_normalize(in, &verr) != 0) {
        FAAS_WARN("event=deploy_rejected function=%s msg=%s", in->name ? in->name : "",
                  faas_log_quote(err, sizeof(err), verr, strlen(verr)));
        fail(s, call, M_DEPLOY, FAAS_GRPC_INVALID_ARGUMENT, verr);
        faas__function_spec__free_unpacked(in, NULL);
        return;
    }
    pthread_mutex_lock(&s->deploy_mu);
    int rc = disc_store_deploy(s->store, in, &out, err, sizeof(err));
    if (rc == 0 && !disc_store_publishes(s->store))
        disc_registry_function_put(s->reg, out);
    pthread_mutex_unlock(&s->deploy_mu);
    char q[600];
    if (rc != 0) {
        FAAS_WARN("event=deploy_rejected function=%s msg=%s", in->name ? in->name : "",
                  faas_log_quote(q, sizeof(q), err, strlen(err)));
        fail(s, call, M_DEPLOY,
             rc == -EINVAL   ? FAAS_GRPC_INVALID_ARGUMENT
             : rc == -EAGAIN ? FAAS_GRPC_UNAVAILABLE
                             : FAAS_GRPC_INTERNAL,
             err);
    } else {
        FAAS_INFO("event=deploy function=%s version=%llu sha256=%s protocol=%d", out->name,
                  (unsigned long long)out->version, out->code_sha256, (int)out->protocol);
        reply_msg(s, call, M_DEPLOY, &out->base);
        faas__function_spec__free_unpacked(out, NULL);
    }
    faas__function_spec__free_unpacked(in, NULL);
}

/* A store error's status: NOT_FOUND, UNAVAILABLE while etcd cannot be reached (the
 * caller may retry; it recovers with etcd), else INTERNAL. */
static int store_code(int rc)
{
    return rc == -ENOENT ? FAAS_GRPC_NOT_FOUND : rc == -EAGAIN ? FAAS_GRPC_UNAVAILABLE : FAAS_GRPC_INTERNAL;
}

static const char *store_msg(int rc, const char *other)
{
    return rc == -EAGAIN ? "state store unreachable" : other;
}

/* Unpacks a FunctionName whose name must be a valid function name. */
static Faas__FunctionName *name_req(disc_service_t *s, faas_rpc_call_t *call, int m, const uint8_t *req, size_t len)
{
    Faas__FunctionName *fn = faas__function_name__unpack(NULL, len, req);
    const char *err = "the request is not a valid FunctionName message";
    if (fn != NULL && faas_valid_function_name(fn->name, strlen(fn->name), &err) == 0)
        return fn;
    if (fn)
        faas__function_name__free_unpacked(fn, NULL);
    fail(s, call, m, FAAS_GRPC_INVALID_ARGUMENT, err);
    return NULL;
}

static void do_get(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__FunctionName *fn = name_req(s, call, M_GET, req, len);
    if (fn == NULL)
        return;
    Faas__FunctionSpec *spec = NULL;
    int rc = disc_store_get(s->store, fn->name, &spec);
    if (rc == 0) {
        reply_msg(s, call, M_GET, &spec->base);
        faas__function_spec__free_unpacked(spec, NULL);
    } else {
        char msg[128];
        snprintf(msg, sizeof(msg), "function %s not found", fn->name);
        fail(s, call, M_GET, store_code(rc), rc == -ENOENT ? msg : store_msg(rc, "reading the function failed"));
    }
    faas__function_name__free_unpacked(fn, NULL);
}

static void do_list(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__FunctionList list = FAAS__FUNCTION_LIST__INIT;
    int rc = disc_store_list(s->store, &list.functions, &list.n_functions);
    if (rc != 0) {
        fail(s, call, M_LIST, store_code(rc), store_msg(rc, "reading the functions failed"));
        return;
    }
    reply_msg(s, call, M_LIST, &list.base);
    disc_store_free_list(list.functions, list.n_functions);
}

static void do_delete(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__FunctionName *fn = name_req(s, call, M_DELETE, req, len);
    if (fn == NULL)
        return;
    pthread_mutex_lock(&s->deploy_mu);
    int rc = disc_store_delete(s->store, fn->name);
    if (rc == 0 && !disc_store_publishes(s->store))
        disc_registry_function_delete(s->reg, fn->name);
    pthread_mutex_unlock(&s->deploy_mu);
    if (rc == 0) {
        FAAS_INFO("event=delete function=%s", fn->name);
        Faas__Empty e = FAAS__EMPTY__INIT;
        reply_msg(s, call, M_DELETE, &e.base);
    } else {
        char msg[128];
        snprintf(msg, sizeof(msg), "function %s not found", fn->name);
        fail(s, call, M_DELETE, store_code(rc), rc == -ENOENT ? msg : store_msg(rc, "deleting the function failed"));
    }
    faas__function_name__free_unpacked(fn, NULL);
}

/* ---- workers, instances, watch ------------------------------------------------- */

static void on_heartbeat(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__LeaseRenewal *lr = faas__lease_renewal__unpack(NULL, len, req);
    const char *err = "the request is not a valid LeaseRenewal message";
    if (lr == NULL || disc_registry_heartbeat(s->reg, lr, faas_now_ms(), &err) != 0) {
        fail(s, call, M_HEARTBEAT, FAAS_GRPC_INVALID_ARGUMENT, err);
    } else {
        Faas__Empty e = FAAS__EMPTY__INIT;
        reply_msg(s, call, M_HEARTBEAT, &e.base);
    }
    if (lr)
        faas__lease_renewal__free_unpacked(lr, NULL);
}

static void reply_bytes(disc_service_t *s, faas_rpc_call_t *call, int m, uint8_t *buf, size_t len)
{
    if (buf == NULL) {
        fail(s, call, m, FAAS_GRPC_INTERNAL, "out of memory");
        return;
    }
    count(s, m, FAAS_GRPC_OK);
    faas_rpc_reply(call, buf, len);
    free(buf);
}

static void on_list_instances(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__FunctionName *fn = faas__function_name__unpack(NULL, len, req);
    if (fn == NULL) {
        fail(s, call, M_LIST_INSTANCES, FAAS_GRPC_INVALID_ARGUMENT, "the request is not a valid FunctionName message");
        return;
    }
    size_t n = 0;
    uint8_t *buf = disc_registry_list_instances(s->reg, fn->name, &n);
    faas__function_name__free_unpacked(fn, NULL);
    reply_bytes(s, call, M_LIST_INSTANCES, buf, n);
}

/* From the registry (soft state and the cached specs): no disk, no jobs thread. */
static void on_status(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__FunctionName *fn = name_req(s, call, M_STATUS, req, len);
    if (fn == NULL)
        return;
    size_t n = 0;
    int missing = 0;
    uint8_t *buf = disc_registry_function_status(s->reg, fn->name, &n, &missing);
    if (missing) {
        char msg[128];
        snprintf(msg, sizeof(msg), "function %s not found", fn->name);
        fail(s, call, M_STATUS, FAAS_GRPC_NOT_FOUND, msg);
    } else {
        reply_bytes(s, call, M_STATUS, buf, n);
    }
    faas__function_name__free_unpacked(fn, NULL);
}

static void on_list_workers(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    size_t n = 0;
    uint8_t *buf = disc_registry_list_workers(s->reg, &n);
    reply_bytes(s, call, M_LIST_WORKERS, buf, n);
}

typedef struct {
    disc_service_t *svc;
    int64_t sub;
} watch_t;

/* Events are held until the registry ends the change (ev == NULL): a heartbeat's
 * delete + put then reach a watcher in one write, not two with a completion
 * round trip on the rpc thread in between. */
static int watch_sink(void *ctx, const uint8_t *ev, size_t len)
{
    int rc = ev == NULL ? faas_rpc_flush(ctx) : faas_rpc_send_more(ctx, ev, len);
    return rc == 0 ? 0 : -1;
}

/* The client left or the server is stopping: no more events, end the call once. */
static void watch_closed(faas_rpc_call_t *call, void *ud)
{
    watch_t *w = ud;
    disc_registry_unsubscribe(w->svc->reg, w->sub);
    count(w->svc, M_WATCH, FAAS_GRPC_OK);
    FAAS_DEBUG("event=watch_end peer=%s", faas_rpc_peer(call));
    faas_rpc_finish(call, FAAS_GRPC_OK, NULL);
    free(w);
}

static void on_watch(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__WatchRequest *wr = faas__watch_request__unpack(NULL, len, req);
    if (wr == NULL) {
        fail(s, call, M_WATCH, FAAS_GRPC_INVALID_ARGUMENT, "the request is not a valid WatchRequest message");
        return;
    }
    /* asking for nothing is read as asking for everything (but task cancels, which only
     * worker managers want): an empty stream helps no one */
    int all = !wr->functions && !wr->instances && !wr->workers && !wr->task_cancels;
    int want = (all || wr->functions ? DISC_WATCH_FUNCTIONS : 0) | (all || wr->instances ? DISC_WATCH_INSTANCES : 0) |
               (all || wr->workers ? DISC_WATCH_WORKERS : 0) | (wr->task_cancels ? DISC_WATCH_TASK_CANCELS : 0);
    watch_t *w = calloc(1, sizeof(*w));
    int64_t sub = w ? disc_registry_subscribe_want(s->reg, want, watch_sink, call) : -ENOMEM;
    faas__watch_request__free_unpacked(wr, NULL);
    if (sub < 0) {
        free(w);
        fail(s, call, M_WATCH, FAAS_GRPC_UNAVAILABLE, "the watcher went away during its snapshot");
        return;
    }
    w->svc = s;
    w->sub = sub;
    FAAS_DEBUG("event=watch_start peer=%s", faas_rpc_peer(call));
    faas_rpc_on_close(call, watch_closed, w);
}

/* ---- async tasks (docs/async.md) --------------------------------------------------- */

/* Unpacks a TaskId whose id must be well formed. */
static Faas__TaskId *id_req(disc_service_t *s, faas_rpc_call_t *call, int m, const uint8_t *req, size_t len)
{
    Faas__TaskId *id = faas__task_id__unpack(NULL, len, req);
    if (id != NULL && disc_task_valid_id(id->id))
        return id;
    fail(s, call, m, FAAS_GRPC_INVALID_ARGUMENT,
         id ? "task id must be 32 lowercase hex characters" : "the request is not a valid TaskId message");
    if (id)
        faas__task_id__free_unpacked(id, NULL);
    return NULL;
}

/* Answers a Task; the request never travels back (only ClaimTasks hands it out). */
static void reply_task(disc_service_t *s, faas_rpc_call_t *call, int m, Faas__Task *t)
{
    Faas__TaskRequest *req = t->request;
    t->request = NULL;
    reply_msg(s, call, m, &t->base);
    t->request = req;
}

/* Maps a task store error to a status; msg gets the sentence. */
static int task_code(int rc, const char *id, char *msg, size_t cap)
{
    switch (rc) {
    case -ENOENT:
        snprintf(msg, cap, "task %s not found", id);
        return FAAS_GRPC_NOT_FOUND;
    case -EALREADY:
        snprintf(msg, cap, "task %s has already finished", id);
        return FAAS_GRPC_FAILED_PRECONDITION;
    case -ESTALE:
        snprintf(msg, cap, "stale report: task %s is not running, or runs on another instance", id);
        return FAAS_GRPC_FAILED_PRECONDITION;
    case -ENOMSG:
        snprintf(msg, cap, "task %s has no callback pending", id);
        return FAAS_GRPC_FAILED_PRECONDITION;
    case -EINVAL:
        snprintf(msg, cap, "malformed report for task %s", id);
        return FAAS_GRPC_INVALID_ARGUMENT;
    default:
        snprintf(msg, cap, "task storage failed (%d)", rc);
        return FAAS_GRPC_INTERNAL;
    }
}

static void fail_task(disc_service_t *s, faas_rpc_call_t *call, int m, int rc, const char *id)
{
    char msg[160];
    int code = task_code(rc, id, msg, sizeof(msg));
    fail(s, call, m, code, msg);
}

typedef struct {
    disc_service_t *s;
    faas_rpc_call_t *call;
    Faas__Task *t;
} submit_t;

/* On the committing thread, once the task's transaction is over. */
static void submit_done(void *ud, int rc)
{
    submit_t *sb = ud;
    if (rc == 0) {
        FAAS_DEBUG("event=task_submit id=%s function=%s", sb->t->id, sb->t->function);
        reply_task(sb->s, sb->call, M_SUBMIT_TASK, sb->t);
    } else if (rc == -EEXIST) {
        char msg[96];
        snprintf(msg, sizeof(msg), "task %s already exists", sb->t->id);
        fail(sb->s, sb->call, M_SUBMIT_TASK, FAAS_GRPC_ALREADY_EXISTS, msg);
    } else {
        fail_task(sb->s, sb->call, M_SUBMIT_TASK, rc, sb->t->id);
    }
    faas__task__free_unpacked(sb->t, NULL);
    free(sb);
}

/* What a submission must carry; NULL if fine. */
static const char *submit_problem(const Faas__Task *t)
{
    const char *err = NULL;
    if (t == NULL)
        return "the request is not a valid Task message";
    if (!disc_task_valid_id(t->id))
        return "task id must be 32 lowercase hex characters";
    if (faas_valid_function_name(t->function, strlen(t->function), &err) != 0)
        return err;
    if (t->request == NULL)
        return "a task needs its request";
    return NULL;
}

/* The platform's fields of a new task: whatever the caller put there is replaced. */
static int new_task_fields(Faas__Task *t, const Faas__FunctionSpec *spec)
{
    t->version = spec->version;
    t->status = FAAS__TASK__STATUS__QUEUED;
    t->created_unix_ms = faas_unix_ms();
    t->attempts = t->callback_attempts = t->result_status = 0;
    t->started_unix_ms = t->finished_unix_ms = t->not_before_unix_ms = t->lease_until_unix_ms = 0;
    t->result_size = 0;
    return disc_set_str(&t->error, "") | disc_set_str(&t->instance_id, "") | disc_set_str(&t->callback_status, "");
}

/* Checks the function, then queues the task for the next group commit: the reply
 * comes from submit_done, so this thread goes on to the next submission meanwhile. */
static void do_submit_task(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__Task *t = faas__task__unpack(NULL, len, req);
    Faas__FunctionSpec *spec = NULL;
    const char *why = submit_problem(t);
    char msg[128];
    int code = FAAS_GRPC_INVALID_ARGUMENT, rc;
    if (why != NULL)
        goto bad;
    if ((rc = disc_store_get(s->store, t->function, &spec)) != 0) {
        snprintf(msg, sizeof(msg), "function %s not found", t->function);
        code = store_code(rc);
        why = rc == -ENOENT ? msg : store_msg(rc, "reading the function failed");
        goto bad;
    }
    if (t->request->body.len > spec->max_body_bytes) {
        code = FAAS_GRPC_RESOURCE_EXHAUSTED;
        why = "the request body is over the function's max_body_bytes";
        goto bad;
    }
    uint64_t cap = disc_task_max_request(s->tasks);
    if (cap != 0 && t->request->body.len > cap) {
        code = FAAS_GRPC_RESOURCE_EXHAUSTED;
        snprintf(msg, sizeof(msg), "the request body is over the %" PRIu64 " bytes the task store on etcd takes", cap);
        why = msg;
        goto bad;
    }
    submit_t *sb = malloc(sizeof(*sb));
    code = FAAS_GRPC_INTERNAL;
    why = "out of memory";
    if (sb == NULL || new_task_fields(t, spec) != 0) {
        free(sb);
        goto bad;
    }
    *sb = (submit_t){s, call, t};
    faas__function_spec__free_unpacked(spec, NULL);
    if ((rc = disc_task_submit_async(s->tasks, t, submit_done, sb)) != 0) {
        free(sb);
        fail_task(s, call, M_SUBMIT_TASK, rc, t->id);
        faas__task__free_unpacked(t, NULL);
    }
    return;
bad:
    fail(s, call, M_SUBMIT_TASK, code, why);
    if (spec)
        faas__function_spec__free_unpacked(spec, NULL);
    if (t)
        faas__task__free_unpacked(t, NULL);
}

static void do_get_task(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__TaskId *id = id_req(s, call, M_GET_TASK, req, len);
    Faas__Task *t = NULL;
    if (id == NULL)
        return;
    int rc = disc_task_get(s->tasks, id->id, &t);
    if (rc == 0) {
        reply_task(s, call, M_GET_TASK, t);
        faas__task__free_unpacked(t, NULL);
    } else {
        fail_task(s, call, M_GET_TASK, rc, id->id);
    }
    faas__task_id__free_unpacked(id, NULL);
}

static void do_get_task_result(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__TaskId *id = id_req(s, call, M_GET_TASK_RESULT, req, len);
    Faas__TaskResult *res = NULL;
    char msg[96];
    if (id == NULL)
        return;
    int rc = disc_task_get_result(s->tasks, id->id, &res);
    if (rc == 0) {
        reply_msg(s, call, M_GET_TASK_RESULT, &res->base);
        faas__task_result__free_unpacked(res, NULL);
    } else if (rc == -EAGAIN) {
        snprintf(msg, sizeof(msg), "task %s has not finished", id->id);
        fail(s, call, M_GET_TASK_RESULT, FAAS_GRPC_FAILED_PRECONDITION, msg);
    } else if (rc == -ENODATA) {
        snprintf(msg, sizeof(msg), "task %s ended without a result", id->id);
        fail(s, call, M_GET_TASK_RESULT, FAAS_GRPC_NOT_FOUND, msg);
    } else {
        fail_task(s, call, M_GET_TASK_RESULT, rc, id->id);
    }
    faas__task_id__free_unpacked(id, NULL);
}

static const char *query_problem(const Faas__TaskQuery *q)
{
    const char *err = NULL;
    if (q == NULL)
        return "the request is not a valid TaskQuery message";
    if (q->function[0] != '\0' && faas_valid_function_name(q->function, strlen(q->function), &err) != 0)
        return err;
    if (q->by_status && (unsigned)q->status > FAAS__TASK__STATUS__CANCELLED)
        return "unknown task status";
    if (q->after[0] != '\0' && !disc_task_valid_id(q->after))
        return "after must be a task id (32 lowercase hex characters)";
    return NULL;
}

static void do_list_tasks(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__TaskQuery *q = faas__task_query__unpack(NULL, len, req);
    Faas__TaskList *l = NULL;
    const char *why = query_problem(q);
    int rc;
    if (why != NULL) {
        fail(s, call, M_LIST_TASKS, FAAS_GRPC_INVALID_ARGUMENT, why);
    } else if ((rc = disc_task_list(s->tasks, q, &l)) != 0) {
        fail_task(s, call, M_LIST_TASKS, rc, "");
    } else {
        reply_msg(s, call, M_LIST_TASKS, &l->base);
        faas__task_list__free_unpacked(l, NULL);
    }
    if (q)
        faas__task_query__free_unpacked(q, NULL);
}

/* Worker managers watching task cancels abort the task in its pod at once; one that
 * misses this learns it from its next ReportTask reply (cancel_requested). */
static void announce_cancel(disc_service_t *s, const Faas__Task *t)
{
    Faas__Task ev = FAAS__TASK__INIT;
    ev.id = t->id;
    ev.function = t->function;
    ev.instance_id = t->instance_id;
    ev.status = t->status;
    ev.cancel_requested = 1;
    disc_registry_task_cancel(s->reg, &ev);
}

static void do_cancel_task(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__TaskId *id = id_req(s, call, M_CANCEL_TASK, req, len);
    Faas__Task *t = NULL;
    if (id == NULL)
        return;
    int rc = disc_task_cancel(s->tasks, id->id, faas_unix_ms(), &t);
    if (rc == 0) {
        FAAS_INFO("event=task_cancel id=%s function=%s status=%d", t->id, t->function, (int)t->status);
        if (t->status == FAAS__TASK__STATUS__RUNNING)
            announce_cancel(s, t);
        reply_task(s, call, M_CANCEL_TASK, t);
        faas__task__free_unpacked(t, NULL);
    } else {
        fail_task(s, call, M_CANCEL_TASK, rc, id->id);
    }
    faas__task_id__free_unpacked(id, NULL);
}

static void do_claim_tasks(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__ClaimRequest *cr = faas__claim_request__unpack(NULL, len, req);
    Faas__TaskList *l = NULL;
    const char *err = "the request is not a valid ClaimRequest message";
    int rc;
    if (cr == NULL || faas_valid_function_name(cr->function, strlen(cr->function), &err) != 0) {
        fail(s, call, M_CLAIM_TASKS, FAAS_GRPC_INVALID_ARGUMENT, err);
    } else if ((rc = disc_task_claim(s->tasks, cr->function, cr->max, cr->lease_ms, faas_unix_ms(), &l)) != 0) {
        fail_task(s, call, M_CLAIM_TASKS, rc, "");
    } else {
        if (l->n_tasks > 0)
            FAAS_DEBUG("event=task_claim function=%s claimer=%s tasks=%zu", cr->function,
                       faas_printable(cr->claimer) ? cr->claimer : "?", l->n_tasks);
        reply_msg(s, call, M_CLAIM_TASKS, &l->base);
        faas__task_list__free_unpacked(l, NULL);
    }
    if (cr)
        faas__claim_request__free_unpacked(cr, NULL);
}

static void do_report_task(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__TaskReport *r = faas__task_report__unpack(NULL, len, req);
    Faas__Task *t = NULL;
    int rc;
    if (r == NULL || !disc_task_valid_id(r->id)) {
        fail(s, call, M_REPORT_TASK, FAAS_GRPC_INVALID_ARGUMENT,
             r ? "task id must be 32 lowercase hex characters" : "the request is not a valid TaskReport message");
    } else if (r->kind == FAAS__TASK_REPORT__KIND__DONE && r->result == NULL) {
        fail(s, call, M_REPORT_TASK, FAAS_GRPC_INVALID_ARGUMENT, "a DONE report needs the result");
    } else if ((rc = disc_task_report(s->tasks, r, faas_unix_ms(), &t)) != 0) {
        fail_task(s, call, M_REPORT_TASK, rc, r->id);
    } else {
        if (r->kind >= FAAS__TASK_REPORT__KIND__DONE)
            FAAS_INFO("event=task_report id=%s function=%s attempts=%u status=%d", t->id, t->function, t->attempts,
                      (int)t->status);
        reply_task(s, call, M_REPORT_TASK, t);
        faas__task__free_unpacked(t, NULL);
    }
    if (r)
        faas__task_report__free_unpacked(r, NULL);
}

static void do_claim_callbacks(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__CallbackClaim *c = faas__callback_claim__unpack(NULL, len, req);
    Faas__CallbackDueList *l = NULL;
    int rc;
    if (c == NULL) {
        fail(s, call, M_CLAIM_CALLBACKS, FAAS_GRPC_INVALID_ARGUMENT, "the request is not a valid CallbackClaim message");
        return;
    }
    if ((rc = disc_task_claim_callbacks(s->tasks, c->max, c->lease_ms, faas_unix_ms(), &l)) != 0) {
        fail_task(s, call, M_CLAIM_CALLBACKS, rc, "");
    } else {
        if (l->n_due > 0)
            FAAS_DEBUG("event=callback_claim claimer=%s callbacks=%zu", faas_printable(c->claimer) ? c->claimer : "?",
                       l->n_due);
        reply_msg(s, call, M_CLAIM_CALLBACKS, &l->base);
        faas__callback_due_list__free_unpacked(l, NULL);
    }
    faas__callback_claim__free_unpacked(c, NULL);
}

static void do_report_callback(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    disc_service_t *s = ud;
    Faas__CallbackReport *r = faas__callback_report__unpack(NULL, len, req);
    Faas__Task *t = NULL;
    char q[300];
    int rc;
    if (r == NULL || !disc_task_valid_id(r->id)) {
        fail(s, call, M_REPORT_CALLBACK, FAAS_GRPC_INVALID_ARGUMENT,
             r ? "task id must be 32 lowercase hex characters" : "the request is not a valid CallbackReport message");
    } else if ((rc = disc_task_report_callback(s->tasks, r, faas_unix_ms(), &t)) != 0) {
        fail_task(s, call, M_REPORT_CALLBACK, rc, r->id);
    } else {
        FAAS_INFO("event=callback_report id=%s attempts=%u callback_status=%s", t->id, t->callback_attempts,
                  faas_log_quote(q, sizeof(q), t->callback_status, strlen(t->callback_status)));
        reply_task(s, call, M_REPORT_CALLBACK, t);
        faas__task__free_unpacked(t, NULL);
    }
    if (r)
        faas__callback_report__free_unpacked(r, NULL);
}

#define DEFERRED(name, m)                                                                                    \
    static void on_##name(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)                     \
    {                                                                                                          \
        defer(ud, m, do_##name, call, req, len);                                                               \
    }
DEFERRED(missing_blobs, M_MISSING_BLOBS)
DEFERRED(deploy, M_DEPLOY)
DEFERRED(get, M_GET)
DEFERRED(list, M_LIST)
DEFERRED(delete, M_DELETE)
DEFERRED(submit_task, M_SUBMIT_TASK)
DEFERRED(get_task, M_GET_TASK)
DEFERRED(get_task_result, M_GET_TASK_RESULT)
DEFERRED(list_tasks, M_LIST_TASKS)
DEFERRED(cancel_task, M_CANCEL_TASK)
DEFERRED(claim_tasks, M_CLAIM_TASKS)
DEFERRED(report_task, M_REPORT_TASK)
DEFERRED(claim_callbacks, M_CLAIM_CALLBACKS)
DEFERRED(report_callback, M_REPORT_CALLBACK)

/* The task store's view of a function's async bounds: the registry's cached spec, so
 * a task transition never waits on the function store's disk. */
static int task_async(void *ud, const char *function, Faas__AsyncSpec *out)
{
    return disc_registry_function_async(ud, function, out);
}

/* ---- setup and metrics ---------------------------------------------------------- */

disc_service_t *disc_service_new(disc_store_t *store, disc_registry_t *reg, disc_tasks_t *tasks,
                                 uint64_t max_artifact_bytes)
{
    static void (*const handlers[M_COUNT])(faas_rpc_call_t *, const uint8_t *, size_t, void *) = {
        on_upload,      on_fetch,        on_missing_blobs, on_deploy,          on_get,          on_list,
        on_delete,      on_heartbeat,    on_list_instances,  on_list_workers, on_watch, on_status,
        on_submit_task, on_get_task,     on_get_task_result, on_list_tasks,   on_cancel_task,
        on_claim_tasks, on_report_task,  on_claim_callbacks, on_report_callback,
    };
    static const char *const paths[M_COUNT] = {
        "/faas.Discovery/UploadCode",     "/faas.Discovery/FetchCode",     "/faas.Discovery/MissingBlobs",
        "/faas.Discovery/Deploy",
        "/faas.Discovery/GetFunction",    "/faas.Discovery/ListFunctions", "/faas.Discovery/DeleteFunction",
        "/faas.Discovery/Heartbeat",      "/faas.Discovery/ListInstances", "/faas.Discovery/ListWorkers",
        "/faas.Discovery/Watch",          "/faas.Discovery/GetFunctionStatus",
        "/faas.Discovery/SubmitTask",    "/faas.Discovery/GetTask",
        "/faas.Discovery/GetTaskResult",  "/faas.Discovery/ListTasks",     "/faas.Discovery/CancelTask",
        "/faas.Discovery/ClaimTasks",     "/faas.Discovery/ReportTask",    "/faas.Discovery/ClaimCallbacks",
        "/faas.Discovery/ReportCallback",
    };
    disc_service_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->store = store;
    s->reg = reg;
    s->tasks = tasks;
    s->max_artifact = max_artifact_bytes;
    pthread_mutex_init(&s->deploy_mu, NULL);
    pthread_mutex_init(&s->jobs_mu, NULL);
    pthread_cond_init(&s->jobs_cv, NULL);
    pthread_cond_init(&s->fetch_cv, NULL);
    if (pthread_create(&s->jobs_thread, NULL, jobs_main, s) != 0) {
        free(s);
        return NULL;
    }
    s->jobs_running = 1;
    disc_task_set_lookup(tasks, task_async, reg);
    for (int i = 0; i < M_COUNT; i++) {
        s->methods[i].method = paths[i];
        s->methods[i].kind = i == M_UPLOAD ? FAAS_RPC_CLIENT_STREAM
                             : (i == M_FETCH || i == M_WATCH) ? FAAS_RPC_SERVER_STREAM
                                                               : FAAS_RPC_UNARY;
        s->methods[i].handler = handlers[i];
        s->methods[i].ud = s;
    }
    return s;
}

const faas_rpc_method_t *disc_service_methods(disc_service_t *s, size_t *n)
{
    *n = M_COUNT;
    return s->methods;
}

void disc_service_free(disc_service_t *s)
{
    if (s == NULL)
        return;
    if (s->jobs_running) { /* drains the queue: every deferred call still gets its answer */
        pthread_mutex_lock(&s->jobs_mu);
        s->jobs_stop = 1;
        pthread_cond_signal(&s->jobs_cv);
        pthread_mutex_unlock(&s->jobs_mu);
        pthread_join(s->jobs_thread, NULL);
    }
    /* transfers under way end (each is bounded by its deadline) before the store goes */
    pthread_mutex_lock(&s->jobs_mu);
    while (s->fetch_threads > 0)
        pthread_cond_wait(&s->fetch_cv, &s->jobs_mu);
    pthread_mutex_unlock(&s->jobs_mu);
    disc_task_flush(s->tasks); /* submissions still committing answer before s goes */
    disc_task_set_lookup(s->tasks, NULL, NULL);
    pthread_mutex_destroy(&s->jobs_mu);
    pthread_cond_destroy(&s->jobs_cv);
    pthread_cond_destroy(&s->fetch_cv);
    pthread_mutex_destroy(&s->deploy_mu);
    free(s);
}

void disc_service_metrics(disc_service_t *s, FILE *out)
{
    disc_registry_stats_t st;
    disc_registry_stats(s->reg, &st);
    fprintf(out,
            "# HELP faas_discovery_functions Deployed functions.\n# TYPE faas_discovery_functions gauge\n"
            "faas_discovery_functions %zu\n"
            "# HELP faas_discovery_instances Instances held by live worker leases.\n"
            "# TYPE faas_discovery_instances gauge\nfaas_discovery_instances %zu\n"
            "# HELP faas_discovery_workers Workers with a live lease.\n# TYPE faas_discovery_workers gauge\n"
            "faas_discovery_workers %zu\n"
            "# HELP faas_discovery_watchers Open Watch streams.\n# TYPE faas_discovery_watchers gauge\n"
            "faas_discovery_watchers %zu\n"
            /* a position, like WatchEvent.revision (and etcd's current revision): a gauge */
            "# HELP faas_discovery_revision Registry revision (grows on every change), as in WatchEvent.revision.\n"
            "# TYPE faas_discovery_revision gauge\nfaas_discovery_revision %llu\n"
            "# HELP faas_discovery_deploys_total Deploys stored, ever (state dir, or etcd: every discovery's).\n"
            "# TYPE faas_discovery_deploys_total counter\nfaas_discovery_deploys_total %llu\n"
            "# HELP faas_log_dropped_lines_total Log lines dropped by the per-site rate limit.\n"
            "# TYPE faas_log_dropped_lines_total counter\nfaas_log_dropped_lines_total %llu\n",
            st.functions, st.instances, st.workers, st.watchers, (unsigned long long)st.revision,
            (unsigned long long)disc_store_deploys(s->store), (unsigned long long)faas_log_dropped_total());
    disc_store_metrics(s->store, out);
    disc_task_metrics(s->tasks, out, faas_unix_ms());
    fprintf(out, "# HELP faas_discovery_rpc_total RPCs answered, by method and status code.\n"
                 "# TYPE faas_discovery_rpc_total counter\n");
    for (int m = 0; m < M_COUNT; m++)
        for (int c = 0; c < N_CODES; c++) {
            uint64_t v = __atomic_load_n(&s->counts[m][c], __ATOMIC_RELAXED);
            if (v > 0 || c == 0)
                fprintf(out, "faas_discovery_rpc_total{method=\"%s\",code=\"%s\"} %llu\n", method_names[m],
                        code_names[c], (unsigned long long)v);
        }
}
