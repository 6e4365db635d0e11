/* gateway/tasks.c - the async task API on the gateway's HTTP port (docs/async.md):
 * submissions (/async-function/..., or /function/... with Prefer: respond-async) and
 * the /tasks endpoints. Each is one Discovery call made on a dispatcher control thread
 * (disp_discovery_call) and answered on the loop when it returns; the parsing and the
 * JSON are tasks_http.c's. A submission is answered 202 only once discovery says the
 * task is durable. */
#include "gateway/internal.h"

#include <stdlib.h>
#include <string.h>

#include <h2o.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"
#include "dispatcher/dispatcher.h"
#include "proto/faas.pb-c.h"

#define RPC_TIMEOUT_MS 10000

/* A request waiting for discovery. It lives outside the request's pool: a client that
 * leaves first only unhooks it (link), and the answer is then dropped. */
typedef struct pending {
    h2o_req_t *req;
    struct pending **link; /* in the request's pool, pointing back here */
    int kind;              /* GW_TASK_ROUTE_* */
    int prefer;            /* the submission came with Prefer: respond-async */
    char fn[64];
    char id[33];
} pending_t;

static void on_req_dispose(void *p)
{
    pending_t **link = p;
    if (*link != NULL)
        (*link)->req = NULL;
}

static pending_t *pending_new(h2o_req_t *req, int kind)
{
    pending_t *t = calloc(1, sizeof(*t));
    pending_t **link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), on_req_dispose);
    if (t == NULL)
        return NULL;
    *link = t;
    t->req = req;
    t->link = link;
    t->kind = kind;
    return t;
}

/* The request to answer, or NULL when its client left; either way t is done after. */
static h2o_req_t *pending_take(pending_t *t)
{
    h2o_req_t *req = t->req;
    if (req != NULL)
        *t->link = NULL;
    free(t);
    return req;
}

static void send_json(h2o_req_t *req, int status, const char *json, size_t len)
{
    req->res.status = status;
    req->res.reason = faas_http_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    req->res.content_length = len;
    h2o_send_inline(req, json, len);
}

/* A task's status JSON in the request's pool. */
static h2o_iovec_t task_json(h2o_req_t *req, const Faas__Task *t)
{
    char probe[1];
    size_t n = gw_task_json(t, probe, sizeof(probe));
    char *buf = h2o_mem_alloc_pool(&req->pool, n + 1);
    gw_task_json(t, buf, n + 1);
    return h2o_iovec_init(buf, n);
}

/* Discovery's failure in HTTP terms: its own word where it has one. */
static void send_rpc_error(h2o_req_t *req, int rc, const char *err)
{
    switch (rc) {
    case FAAS_GRPC_NOT_FOUND:
        gw_send_error(req, 404, NULL, 0, "no such task", 0);
        return;
    case FAAS_GRPC_INVALID_ARGUMENT:
        gw_send_error(req, 400, NULL, 0, err[0] ? err : "bad request", 0);
        return;
    case FAAS_GRPC_FAILED_PRECONDITION:
        gw_send_error(req, 409, NULL, 0, err[0] ? err : "the task is finished", 0);
        return;
    default:
        FAAS_WARN("event=task_store_error rc=%d err=\"%s\"", rc, err);
        gw_send_platform_error(req, FAAS_ERR_UNAVAILABLE, NULL, 0, "the task store is unavailable");
    }
}

static int call(pending_t *t, const char *method, const ProtobufCMessage *m, disp_rpc_cb cb)
{
    size_t len;
    uint8_t *pb = faas_pb_pack(m, &len);
    int rc = pb != NULL ? disp_discovery_call(method, pb, len, RPC_TIMEOUT_MS, cb, t) : -1;
    free(pb);
    return rc;
}

/* ---- submission ---- */

typedef struct {
    Faas__KeyValue *kv;
    Faas__KeyValue **ptrs;
    size_t n, cap;
    h2o_mem_pool_t *pool;
} kvs_t;

static int kv_add(void *ud, const char *n, size_t nl, const char *v, size_t vl)
{
    kvs_t *k = ud;
    if (k->n == k->cap)
        return -1;
    Faas__KeyValue *e = &k->kv[k->n];
    faas__key_value__init(e);
    e->key = h2o_strdup(k->pool, n, nl).base;
    e->value = h2o_strdup(k->pool, v, vl).base;
    k->ptrs[k->n++] = e;
    return 0;
}

static void on_submitted(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    pending_t *t = ud;
    char fn[64], id[33];
    int prefer = t->prefer;
    memcpy(fn, t->fn, sizeof(fn));
    memcpy(id, t->id, sizeof(id));
    h2o_req_t *req = pending_take(t);
    if (rc == 0)
        disp_tasks_submitted(fn, strlen(fn));
    if (req == NULL)
        return; /* accepted all the same: the client can find it by listing */
    if (rc != 0) {
        if (rc == FAAS_GRPC_NOT_FOUND)
            gw_send_platform_error(req, FAAS_ERR_NOT_FOUND, fn, strlen(fn), "no such function");
        else
            send_rpc_error(req, rc, err);
        return;
    }
    char *loc = h2o_mem_alloc_pool(&req->pool, 48);
    int ll = snprintf(loc, 48, "/tasks/%s", id);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, loc, (size_t)ll);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("faas-request-id"), 0, NULL,
                          h2o_strdup(&req->pool, id, 32).base, 32);
    if (prefer)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("preference-applied"), 0, NULL,
                              H2O_STRLIT("respond-async"));
    char *body = h2o_mem_alloc_pool(&req->pool, 80);
    size_t bl = gw_task_accepted_json(id, body, 80);
    send_json(req, 202, body, bl);
}

/* The callback URL, checked; "" when none. -1 after answering 400. */
static int callback_url(h2o_req_t *req, const char **out)
{
    *out = "";
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-callback-url"), -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    const char *err;
    if (gw_callback_url_check(v.base, v.len, &err) != 0) {
        gw_send_error(req, 400, NULL, 0, err, 0);
        return -1;
    }
    *out = h2o_strdup(&req->pool, v.base, v.len).base;
    return 0;
}

/* Builds the task (its request as the function will see it) and sends it to the store. */
static void submit(h2o_req_t *req, pending_t *t, const char *cb_url, const char *path, size_t plen)
{
    kvs_t k = {.cap = req->headers.size + 2, .pool = &req->pool};
    k.kv = h2o_mem_alloc_pool(&req->pool, k.cap * sizeof(*k.kv));
    k.ptrs = h2o_mem_alloc_pool(&req->pool, k.cap * sizeof(*k.ptrs));
    Faas__TaskRequest rq = FAAS__TASK_REQUEST__INIT;
    rq.method = h2o_strdup(&req->pool, req->method.base, req->method.len).base;
    rq.path = h2o_strdup(&req->pool, path, plen).base;
    rq.authority = h2o_strdup(&req->pool, req->authority.base, req->authority.len).base;
    Faas__Task task = FAAS__TASK__INIT;
    task.id = t->id;
    task.function = t->fn;
    task.callback_url = (char *)cb_url;
    task.request = &rq;
    if (gw_forward_headers(req, kv_add, &k) != 0) {
        pending_take(t);
        gw_send_error(req, 431, NULL, 0, "too many request headers", 0);
        return;
    }
    rq.headers = k.ptrs;
    rq.n_headers = k.n;
    rq.body.data = (uint8_t *)req->entity.base;
    rq.body.len = req->entity.base != NULL ? req->entity.len : 0;
    if (call(t, "/faas.Discovery/SubmitTask", &task.base, on_submitted) != 0) {
        pending_take(t);
        gw_send_platform_error(req, FAAS_ERR_UNAVAILABLE, NULL, 0, "gateway out of memory");
    }
}

void gw_tasks_submit(h2o_req_t *req, const char *fn, size_t fnlen, const char *rest, size_t restlen, int prefer)
{
    const char *cb_url;
    if (callback_url(req, &cb_url) != 0)
        return;
    pending_t *t = pending_new(req, GW_TASK_ROUTE_SUBMIT);
    if (t == NULL || gw_task_id_new(t->id) != 0) {
        if (t != NULL)
            pending_take(t);
        gw_send_platform_error(req, FAAS_ERR_UNAVAILABLE, NULL, 0, "no task id could be made");
        return;
    }
    t->prefer = prefer;
    snprintf(t->fn, sizeof(t->fn), "%.*s", (int)fnlen, fn);
    /* the path the user server sees, as for /function/: "/" + rest */
    char *path = h2o_mem_alloc_pool(&req->pool, restlen + 2);
    size_t pl = 0;
    if (restlen == 0 || rest[0] == '?')
        path[pl++] = '/';
    memcpy(path + pl, rest, restlen);
    submit(req, t, cb_url, path, pl + restlen);
}

/* /async-function/<name>/...: the same checks as /function/, then a task. */
static void serve_submit(h2o_req_t *req, const gw_task_route_t *r, int resolved);

static void submit_resolved(h2o_req_t *req, void *arg)
{
    serve_submit(req, arg, 1);
}

static void serve_submit(h2o_req_t *req, const gw_task_route_t *r, int resolved)
{
    disp_fn_info_t info;
    if (disp_lookup(r->name.ptr, r->name.len, &info) != 0 && !resolved) {
        gw_task_route_t *copy = h2o_mem_alloc_pool(&req->pool, sizeof(*copy));
        *copy = *r;
        gw_resolve_req(req, r->name.ptr, r->name.len, submit_resolved, copy);
        return;
    }
    if (disp_lookup(r->name.ptr, r->name.len, &info) != 0) {
        gw_send_platform_error(req, FAAS_ERR_NOT_FOUND, r->name.ptr, r->name.len, "no such function");
        return;
    }
    if (req->entity.base != NULL && info.max_body_bytes != 0 && req->entity.len > info.max_body_bytes) {
        gw_send_platform_error(req, FAAS_ERR_TOO_LARGE, r->name.ptr, r->name.len, "request body too large");
        return;
    }
    gw_tasks_submit(req, r->name.ptr, r->name.len, r->rest.ptr, r->rest.len, 0);
}

/* ---- status, result, cancel, list ---- */

static void on_task(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    pending_t *t = ud;
    int kind = t->kind;
    h2o_req_t *req = pending_take(t);
    if (req == NULL)
        return;
    Faas__Task *task = rc == 0 ? faas__task__unpack(NULL, len, resp) : NULL;
    if (task == NULL) {
        send_rpc_error(req, rc == 0 ? -1 : rc, err);
        return;
    }
    h2o_iovec_t j = task_json(req, task);
    int st = 200;
    if (kind == GW_TASK_ROUTE_RESULT) {
        /* asked for a result that is not there: still coming, or never will */
        int open = task->status == FAAS__TASK__STATUS__QUEUED || task->status == FAAS__TASK__STATUS__RUNNING;
        st = open ? 202 : 409;
        if (open)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    }
    faas__task__free_unpacked(task, NULL);
    send_json(req, st, j.base, j.len);
}

static void on_result(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    pending_t *t = ud;
    if ((rc == FAAS_GRPC_FAILED_PRECONDITION || rc == FAAS_GRPC_NOT_FOUND) && t->req != NULL) {
        /* not finished, finished without a result, or no such task: its status says which */
        Faas__TaskId id = FAAS__TASK_ID__INIT;
        id.id = t->id;
        if (call(t, "/faas.Discovery/GetTask", &id.base, on_task) == 0)
            return;
    }
    h2o_req_t *req = pending_take(t);
    if (req == NULL)
        return;
    Faas__TaskResult *r = rc == 0 ? faas__task_result__unpack(NULL, len, resp) : NULL;
    if (r == NULL) {
        send_rpc_error(req, rc == 0 ? -1 : rc, err);
        return;
    }
    req->res.status = (int)r->status;
    req->res.reason = faas_http_reason((int)r->status);
    for (size_t i = 0; i < r->n_headers; i++) {
        const Faas__KeyValue *h = r->headers[i];
        if (gw_response_header_own(h->key, strlen(h->key)))
            continue;
        h2o_iovec_t n = h2o_strdup(&req->pool, h->key, strlen(h->key)),
                    v = h2o_strdup(&req->pool, h->value, strlen(h->value));
        h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 1, NULL, v.base, v.len);
    }
    h2o_iovec_t body = h2o_strdup(&req->pool, (const char *)r->body.data, r->body.len);
    faas__task_result__free_unpacked(r, NULL);
    req->res.content_length = body.len;
    h2o_send_inline(req, body.base, body.len);
}

static void on_list(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    h2o_req_t *req = pending_take(ud);
    if (req == NULL)
        return;
    Faas__TaskList *l = rc == 0 ? faas__task_list__unpack(NULL, len, resp) : NULL;
    if (l == NULL) {
        send_rpc_error(req, rc == 0 ? -1 : rc, err);
        return;
    }
    char probe[1];
    size_t n = gw_task_list_json(l, probe, sizeof(probe));
    char *buf = h2o_mem_alloc_pool(&req->pool, n + 1);
    gw_task_list_json(l, buf, n + 1);
    faas__task_list__free_unpacked(l, NULL);
    send_json(req, 200, buf, n);
}

static int method_is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static void serve_list(h2o_req_t *req, const gw_task_route_t *r)
{
    gw_tasks_query_t q;
    const char *err;
    if (gw_tasks_query_parse(r->query.ptr, r->query.len, &q, &err) != 0) {
        gw_send_error(req, 400, NULL, 0, err, 0);
        return;
    }
    pending_t *t = pending_new(req, GW_TASK_ROUTE_LIST);
    Faas__TaskQuery tq = FAAS__TASK_QUERY__INIT;
    tq.function = q.function;
    tq.by_status = q.by_status;
    tq.status = q.status;
    tq.limit = q.limit;
    tq.after = q.after;
    if (t == NULL || call(t, "/faas.Discovery/ListTasks", &tq.base, on_list) != 0) {
        if (t != NULL)
            pending_take(t);
        gw_send_platform_error(req, FAAS_ERR_UNAVAILABLE, NULL, 0, "gateway out of memory");
    }
}

/* GET or DELETE /tasks/<id>, GET /tasks/<id>/result. */
static void serve_task(h2o_req_t *req, const gw_task_route_t *r, int kind)
{
    const char *method = kind == GW_TASK_ROUTE_RESULT ? "/faas.Discovery/GetTaskResult"
                         : method_is(req, "DELETE")   ? "/faas.Discovery/CancelTask"
                                                      : "/faas.Discovery/GetTask";
    pending_t *t = pending_new(req, kind);
    if (t == NULL) {
        gw_send_platform_error(req, FAAS_ERR_UNAVAILABLE, NULL, 0, "gateway out of memory");
        return;
    }
    snprintf(t->id, sizeof(t->id), "%.*s", (int)r->id.len, r->id.ptr);
    Faas__TaskId id = FAAS__TASK_ID__INIT;
    id.id = t->id;
    if (call(t, method, &id.base, kind == GW_TASK_ROUTE_RESULT ? on_result : on_task) != 0) {
        pending_take(t);
        gw_send_platform_error(req, FAAS_ERR_UNAVAILABLE, NULL, 0, "gateway out of memory");
    }
}

/* 1 if the method fits the route (else answered 405). */
static int method_ok(h2o_req_t *req, int kind)
{
    int ok = kind == GW_TASK_ROUTE_SUBMIT || method_is(req, "GET") || method_is(req, "HEAD") ||
             (kind == GW_TASK_ROUTE_TASK && method_is(req, "DELETE"));
    if (!ok) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                       kind == GW_TASK_ROUTE_TASK ? "GET, DELETE" : "GET", kind == GW_TASK_ROUTE_TASK ? 11 : 3);
        gw_send_error(req, 405, NULL, 0, "method not allowed here", 0);
    }
    return ok;
}

int gw_tasks_serve(h2o_req_t *req)
{
    gw_task_route_t r;
    const char *err = NULL;
    int kind = gw_task_route_parse(req->path.base, req->path.len, &r, &err);
    if (kind == GW_TASK_ROUTE_OTHER)
        return 0;
    gw_metrics_other();
    if (kind < 0) {
        int st = kind == GW_TASK_ERR_NOT_FOUND ? 404 : 400;
        gw_send_error(req, st, NULL, 0, err != NULL ? err : "bad task path", 0);
        return 1;
    }
    if (!method_ok(req, kind))
        return 1;
    if (kind == GW_TASK_ROUTE_SUBMIT)
        serve_submit(req, &r, 0);
    else if (kind == GW_TASK_ROUTE_LIST)
        serve_list(req, &r);
    else
        serve_task(req, &r, kind);
    return 1;
}
