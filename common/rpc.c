/* common/rpc.c - grpc core C API glue; see rpc.h for the threading contract.
 *
 * Server: one completion queue drained by one thread. Every batch started on a
 * call carries a tag that names the call and the kind of batch; the call is freed
 * when grpc has nothing outstanding on it and its owner has finished it. */
#include "common/rpc.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

static pthread_once_t rpc_once = PTHREAD_ONCE_INIT;

static void rpc_init_once(void)
{
    grpc_init();
}

void faas_rpc_global_init(void)
{
    pthread_once(&rpc_once, rpc_init_once);
}

/* ---- byte buffers --------------------------------------------------------- */

static grpc_byte_buffer *bb_from(const uint8_t *p, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)p, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Copies a received byte buffer into a malloc'd array (never NULL on success). */
static uint8_t *bb_copy(grpc_byte_buffer *bb, size_t *len)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    size_t n = GRPC_SLICE_LENGTH(s);
    uint8_t *out = malloc(n + 1);
    if (out != NULL) {
        memcpy(out, GRPC_SLICE_START_PTR(s), n);
        out[n] = '\0'; /* not counted; lets text payloads be used as strings */
        *len = n;
    }
    grpc_slice_unref(s);
    return out;
}

/* ---- server --------------------------------------------------------------- */

typedef enum { TAG_NEW, TAG_CLOSE, TAG_RECV, TAG_SEND, TAG_FINAL, TAG_SHUTDOWN, TAG_UNKNOWN } tag_kind_t;

typedef struct tag {
    tag_kind_t kind;
    struct faas_rpc_call *call;
} tag_t;

typedef struct msgq {
    struct msgq *next;
    grpc_byte_buffer *bb;
} msgq_t;

struct faas_rpc_call {
    struct faas_rpc_server *srv;
    const faas_rpc_method_t *m;
    void *reg; /* registered method handle */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *recv_bb;
    int cancelled;   /* from RECV_CLOSE_ON_SERVER */
    int recv_failed; /* client stream broke before its end */
    tag_t t_new, t_close, t_recv, t_send, t_final;
    /* guarded by mu */
    pthread_mutex_t mu;
    int outstanding;   /* batches started and not completed */
    int md_sent;       /* initial metadata sent */
    int sending;       /* a SEND_MESSAGE batch is in flight */
    int finished;      /* owner called reply/fail/finish */
    int final_started; /* SEND_STATUS batch started */
    int closed;        /* client gone or call over */
    int held;          /* faas_rpc_send_more: queued messages wait for a flush */
    int final_status;
    char *final_msg;
    msgq_t *qhead, *qtail;
    size_t queued;             /* messages in qhead..qtail */
    pthread_cond_t drained;    /* signalled when a send completes */
    grpc_byte_buffer *send_bb; /* the one in flight */
    void (*on_close)(struct faas_rpc_call *, void *);
    void *on_close_ud;
    void *data;
    char *peer;
    struct faas_rpc_call *next_live, *prev_live;
};

typedef struct unknown_call {
    tag_t tag;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    int phase;
} unknown_call_t;

struct faas_rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    faas_rpc_method_t *methods;
    void **regs;
    size_t n;
    tag_t t_shutdown;
    pthread_mutex_t mu; /* guards the live list */
    faas_rpc_call_t *live;
    _Atomic int stopping; /* read by the server thread, set by stop */
    int need_token;
    faas_token_t token;
    _Atomic uint64_t refused[FAAS_AUTH_N_REASONS];
    faas_auth_log_t alog; /* server thread only */
};

/* ---- credentials ------------------------------------------------------------ */

/* How often one peer's refusals are logged: a misconfigured client retrying in a
 * loop must not flood the log. */
enum { AUTH_LOG_INTERVAL_MS = 10000, PEM_MAX = 1 << 20 };

/* The value of the authorization entry in md, or NULL. */
static const char *md_auth(const grpc_metadata_array *md, size_t *len)
{
    static const size_t kl = sizeof(FAAS_AUTH_MD_KEY) - 1;
    for (size_t i = 0; i < md->count; i++) {
        const grpc_slice *k = &md->metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) == kl && memcmp(GRPC_SLICE_START_PTR(*k), FAAS_AUTH_MD_KEY, kl) == 0) {
            *len = GRPC_SLICE_LENGTH(md->metadata[i].value);
            return (const char *)GRPC_SLICE_START_PTR(md->metadata[i].value);
        }
    }
    return NULL;
}

/* Judges a new call's metadata; counts and logs (rate-limited per peer) a refusal.
 * Runs on the server thread only, once per call, before any handler. */
static faas_auth_result_t authorize(faas_rpc_server_t *srv, grpc_call *call, const grpc_metadata_array *md,
                                    const char *method)
{
    if (!srv->need_token)
        return FAAS_AUTH_OK;
    size_t len = 0;
    const char *v = md_auth(md, &len);
    faas_auth_result_t r = faas_auth_check(v, len, &srv->token);
    if (r == FAAS_AUTH_OK)
        return r;
    srv->refused[r]++;
    char *peer = grpc_call_get_peer(call);
    uint64_t suppressed = 0;
    if (faas_auth_log_allow(&srv->alog, peer ? peer : "unknown", faas_now_ms(), AUTH_LOG_INTERVAL_MS, &suppressed))
        FAAS_WARN("event=rpc_unauthenticated peer=%s method=%s reason=%s suppressed=%llu", peer ? peer : "unknown",
                  method, faas_auth_label(r), (unsigned long long)suppressed);
    gpr_free(peer);
    return r;
}

uint64_t faas_rpc_server_refused(faas_rpc_server_t *srv, faas_auth_result_t r)
{
    return srv != NULL && r > FAAS_AUTH_OK && r < FAAS_AUTH_N_REASONS ? srv->refused[r] : 0;
}

void faas_rpc_server_refused_metrics(faas_rpc_server_t *srv, const char *name, char *buf, size_t cap, int *off)
{
    for (int r = FAAS_AUTH_MISSING; r < FAAS_AUTH_N_REASONS && *off >= 0 && (size_t)*off < cap; r++) {
        if (r == FAAS_AUTH_MISSING)
            *off += snprintf(buf + *off, cap - (size_t)*off,
                             "# HELP %s Control-plane calls refused: no, malformed or wrong platform token.\n"
                             "# TYPE %s counter\n",
                             name, name);
        if ((size_t)*off < cap)
            *off += snprintf(buf + *off, cap - (size_t)*off, "%s{reason=\"%s\"} %llu\n", name,
                             faas_auth_label((faas_auth_result_t)r),
                             (unsigned long long)faas_rpc_server_refused(srv, (faas_auth_result_t)r));
    }
}

/* Reads a PEM file into a malloc'd NUL-terminated string; NULL with err filled. */
static char *read_pem(const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "re");
    char *buf = f ? malloc(PEM_MAX + 1) : NULL;
    size_t n = buf ? fread(buf, 1, PEM_MAX, f) : 0;
    int bad = f == NULL || buf == NULL || ferror(f) || n == 0 || n == PEM_MAX;
    int saved = errno;
    if (f)
        fclose(f);
    if (bad) {
        snprintf(err, errcap, "cannot read %s: %s", path,
                 f == NULL ? strerror(saved) : (n == 0 ? "empty file" : "not a PEM file under 1 MiB"));
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* TLS credentials from a certificate chain and key (PEM files), or insecure ones. */
static grpc_server_credentials *server_creds(const faas_rpc_server_opts_t *o, char *err, size_t errcap)
{
    if (o == NULL || (o->tls_cert == NULL && o->tls_key == NULL))
        return grpc_insecure_server_credentials_create();
    if (o->tls_cert == NULL || o->tls_key == NULL) {
        snprintf(err, errcap, "TLS needs both a certificate and a key");
        return NULL;
    }
    grpc_server_credentials *cr = NULL;
    char *cert = read_pem(o->tls_cert, err, errcap);
    char *key = cert ? read_pem(o->tls_key, err, errcap) : NULL;
    if (key != NULL) {
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        cr = grpc_ssl_server_credentials_create(NULL, &pair, 1, 0, NULL);
        if (cr == NULL)
            snprintf(err, errcap, "grpc rejected the TLS certificate or key");
        OPENSSL_cleanse(key, strlen(key));
        free(key);
    }
    free(cert);
    return cr;
}

static void call_free(faas_rpc_call_t *c)
{
    faas_rpc_server_t *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    if (c->prev_live)
        c->prev_live->next_live = c->next_live;
    else
        srv->live = c->next_live;
    if (c->next_live)
        c->next_live->prev_live = c->prev_live;
    pthread_mutex_unlock(&srv->mu);
    for (msgq_t *q = c->qhead, *nx; q; q = nx) {
        nx = q->next;
        grpc_byte_buffer_destroy(q->bb);
        free(q);
    }
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->send_bb)
        grpc_byte_buffer_destroy(c->send_bb);
    grpc_metadata_array_destroy(&c->md);
    if (c->call)
        grpc_call_unref(c->call);
    if (c->peer)
        gpr_free(c->peer);
    free(c->final_msg);
    pthread_cond_destroy(&c->drained);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Called with c->mu held; returns 1 if the call may be freed now. */
static int call_done_locked(faas_rpc_call_t *c)
{
    return c->outstanding == 0 && c->finished && (c->final_started || c->closed) && c->closed;
}

static void call_set_tags(faas_rpc_call_t *c)
{
    c->t_new = (tag_t){TAG_NEW, c};
    c->t_close = (tag_t){TAG_CLOSE, c};
    c->t_recv = (tag_t){TAG_RECV, c};
    c->t_send = (tag_t){TAG_SEND, c};
    c->t_final = (tag_t){TAG_FINAL, c};
}

static int request_call(faas_rpc_server_t *srv, size_t i)
{
    faas_rpc_call_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->srv = srv;
    c->m = &srv->methods[i];
    c->reg = srv->regs[i];
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->drained, NULL);
    grpc_metadata_array_init(&c->md);
    call_set_tags(c);
    pthread_mutex_lock(&srv->mu);
    c->next_live = srv->live;
    if (srv->live)
        srv->live->prev_live = c;
    srv->live = c;
    pthread_mutex_unlock(&srv->mu);
    int want_payload = c->m->kind != FAAS_RPC_CLIENT_STREAM;
    grpc_call_error e =
        grpc_server_request_registered_call(srv->server, c->reg, &c->call, &c->deadline, &c->md,
                                            want_payload ? &c->payload : NULL, srv->cq, srv->cq, &c->t_new);
    if (e != GRPC_CALL_OK) {
        c->finished = c->closed = 1;
        call_free(c);
        return -1;
    }
    return 0;
}

static void request_unknown(faas_rpc_server_t *srv)
{
    unknown_call_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return;
    u->tag.kind = TAG_UNKNOWN;
    u->tag.call = (faas_rpc_call_t *)u; /* reused as a back pointer */
    grpc_call_details_init(&u->details);
    grpc_metadata_array_init(&u->md);
    if (grpc_server_request_call(srv->server, &u->call, &u->details, &u->md, srv->cq, srv->cq, &u->tag) !=
        GRPC_CALL_OK) {
        grpc_call_details_destroy(&u->details);
        grpc_metadata_array_destroy(&u->md);
        free(u);
    }
}

/* Unknown methods get UNIMPLEMENTED instead of hanging forever; without the token
 * they get UNAUTHENTICATED like any other call, so a stranger learns nothing about
 * which methods exist. */
static void handle_unknown(faas_rpc_server_t *srv, unknown_call_t *u, int success)
{
    if (u->phase == 0 && success && !srv->stopping) {
        request_unknown(srv);
        u->phase = 1;
        grpc_op ops[3];
        memset(ops, 0, sizeof(ops));
        static int dummy_cancelled;
        char method[128];
        snprintf(method, sizeof(method), "%.*s", (int)GRPC_SLICE_LENGTH(u->details.method),
                 (const char *)GRPC_SLICE_START_PTR(u->details.method));
        faas_oneline(method);
        faas_auth_result_t ar = authorize(srv, u->call, &u->md, method);
        grpc_slice msg = grpc_slice_from_static_string(ar == FAAS_AUTH_OK ? "unknown method" : faas_auth_reason(ar));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[1].data.send_status_from_server.status =
            ar == FAAS_AUTH_OK ? GRPC_STATUS_UNIMPLEMENTED : GRPC_STATUS_UNAUTHENTICATED;
        ops[1].data.send_status_from_server.status_details = &msg;
        ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[2].data.recv_close_on_server.cancelled = &dummy_cancelled;
        if (grpc_call_start_batch(u->call, ops, 3, &u->tag, NULL) == GRPC_CALL_OK)
            return;
    }
    if (u->call)
        grpc_call_unref(u->call);
    grpc_call_details_destroy(&u->details);
    grpc_metadata_array_destroy(&u->md);
    free(u);
}

/* Sends the first queued message alone (more may follow before the status). Called
 * with c->mu held. */
static void send_next_locked(faas_rpc_call_t *c)
{
    msgq_t *q = c->qhead;
    c->qhead = q->next;
    c->queued--;
    if (c->qhead == NULL)
        c->qtail = NULL;
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    /* more queued behind it: chttp2 keeps this one in the stream's buffer and completes
     * the op at once, so the next message goes out in the same write (one sendmsg and
     * one wake-up of the client per burst, not one per message). Not with the initial
     * metadata: that op completes only once the headers are written, and a buffered
     * batch would wait for a write nothing starts. */
    if (c->qhead != NULL && n == 0)
        ops[n].flags = GRPC_WRITE_BUFFER_HINT;
    ops[n++].data.send_message.send_message = q->bb;
    c->send_bb = q->bb;
    free(q);
    c->sending = 1;
    c->outstanding++;
    if (grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL) != GRPC_CALL_OK) {
        c->outstanding--;
        c->sending = 0;
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
    }
}

/* Sends the final status, with the initial metadata if none went yet and with the one
 * message still queued when last is set. Called with c->mu held. */
static void send_final_locked(faas_rpc_call_t *c, int last)
{
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    if (last) {
        msgq_t *q = c->qhead;
        c->qhead = c->qtail = NULL;
        c->queued--;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = q->bb;
        c->send_bb = q->bb; /* destroyed when the final batch completes */
        free(q);
    }
    static grpc_slice empty;
    grpc_slice *details = &empty;
    grpc_slice msg;
    if (c->final_msg) {
        msg = grpc_slice_from_copied_string(c->final_msg);
        details = &msg;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)c->final_status;
    ops[n++].data.send_status_from_server.status_details = details;
    c->final_started = 1;
    c->outstanding++;
    if (grpc_call_start_batch(c->call, ops, n, &c->t_final, NULL) != GRPC_CALL_OK) {
        c->outstanding--;
        if (c->send_bb != NULL && !c->sending) {
            grpc_byte_buffer_destroy(c->send_bb);
            c->send_bb = NULL;
        }
    }
    if (c->final_msg)
        grpc_slice_unref(msg);
}

/* Starts the next queued send, or the final status once the queue is empty.
 * Called with c->mu held. */
static void pump_locked(faas_rpc_call_t *c)
{
    if (c->sending || c->final_started || (c->held && !c->finished))
        return;
    /* the last message and the status in one batch: one write, and no wait for the
     * message's completion before the status goes (a unary reply costs one wake-up) */
    int last = c->finished && c->qhead != NULL && c->qhead == c->qtail && !c->closed;
    if (c->qhead != NULL && !c->closed && !last)
        send_next_locked(c);
    else if (c->finished)
        send_final_locked(c, last);
}

static void start_recv(faas_rpc_call_t *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    pthread_mutex_lock(&c->mu);
    c->outstanding++;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK)
        c->outstanding--;
    pthread_mutex_unlock(&c->mu);
}

static int finish_common(faas_rpc_call_t *c, int status, const char *msg, const uint8_t *resp, size_t len);

/* Returns 1 when the call was freed. */
static int on_new_call(faas_rpc_server_t *srv, faas_rpc_call_t *c, int success)
{
    if (!srv->stopping)
        request_call(srv, (size_t)(c->m - srv->methods));
    if (!success) {
        c->finished = c->closed = 1;
        call_free(c);
        return 1;
    }
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    c->outstanding = 1;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK) {
        c->outstanding = 0;
        c->closed = 1;
    }
    /* the one place every call is judged: a refused call reaches no handler, so it
     * changes nothing; its request message is dropped unread */
    faas_auth_result_t ar = authorize(srv, c->call, &c->md, c->m->method);
    if (ar != FAAS_AUTH_OK) {
        finish_common(c, FAAS_GRPC_UNAUTHENTICATED, faas_auth_reason(ar), NULL, 0);
        return 0;
    }
    if (c->m->kind == FAAS_RPC_CLIENT_STREAM) {
        start_recv(c);
        return 0;
    }
    size_t len = 0;
    uint8_t *req = NULL;
    if (c->payload != NULL) {
        req = bb_copy(c->payload, &len);
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
    }
    c->m->handler(c, req ? req : (const uint8_t *)"", len, c->m->ud);
    free(req);
    return 0;
}

static void on_recv(faas_rpc_call_t *c, int success)
{
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    if (!success || bb == NULL) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        c->recv_failed = !success;
        c->m->handler(c, NULL, 0, c->m->ud);
        return;
    }
    size_t len = 0;
    uint8_t *msg = bb_copy(bb, &len);
    grpc_byte_buffer_destroy(bb);
    c->m->handler(c, msg ? msg : (const uint8_t *)"", len, c->m->ud);
    free(msg);
    pthread_mutex_lock(&c->mu);
    int more = !c->finished && !c->closed;
    pthread_mutex_unlock(&c->mu);
    if (more)
        start_recv(c);
}

static void handle_tag(faas_rpc_server_t *srv, tag_t *t, int success)
{
    faas_rpc_call_t *c = t->call;
    if (t->kind == TAG_NEW) {
        if (on_new_call(srv, c, success))
            return;
    } else if (t->kind == TAG_RECV) {
        on_recv(c, success);
    } else if (t->kind == TAG_CLOSE) {
        void (*fn)(faas_rpc_call_t *, void *);
        pthread_mutex_lock(&c->mu);
        c->closed = 1;
        pthread_cond_broadcast(&c->drained);
        fn = c->on_close;
        c->on_close = NULL;
        pthread_mutex_unlock(&c->mu);
        if (fn)
            fn(c, c->on_close_ud);
    } else if (t->kind == TAG_FINAL) {
        pthread_mutex_lock(&c->mu);
        if (c->send_bb != NULL)
            grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        pthread_cond_broadcast(&c->drained);
        pthread_mutex_unlock(&c->mu);
    } else if (t->kind == TAG_SEND) {
        pthread_mutex_lock(&c->mu);
        c->sending = 0;
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        if (!success)
            c->closed = 1;
        pthread_cond_broadcast(&c->drained);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_lock(&c->mu);
    if (t->kind != TAG_NEW)
        c->outstanding--;
    pump_locked(c);
    int done = call_done_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (done)
        call_free(c);
}

static void *server_main(void *arg)
{
    faas_rpc_server_t *srv = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag_t *t = ev.tag;
        if (t->kind == TAG_SHUTDOWN) {
            grpc_completion_queue_shutdown(srv->cq);
        } else if (t->kind == TAG_UNKNOWN) {
            handle_unknown(srv, (unknown_call_t *)t->call, ev.success);
        } else {
            handle_tag(srv, t, ev.success);
        }
    }
    return NULL;
}

faas_rpc_server_t *faas_rpc_server_start(const char *addr, int *bound_port, const faas_rpc_method_t *methods,
                                         size_t n_methods, const char **err)
{
    static char errbuf[256]; /* only for TLS failures, which opts == NULL cannot have */
    return faas_rpc_server_start_opts(addr, bound_port, methods, n_methods, NULL, errbuf, sizeof(errbuf), err);
}

faas_rpc_server_t *faas_rpc_server_start_opts(const char *addr, int *bound_port, const faas_rpc_method_t *methods,
                                              size_t n_methods, const faas_rpc_server_opts_t *opts, char *errbuf,
                                              size_t errcap, const char **err)
{
    faas_rpc_global_init();
    grpc_server_credentials *creds = server_creds(opts, errbuf, errcap);
    if (creds == NULL) {
        *err = errbuf;
        return NULL;
    }
    faas_rpc_server_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        grpc_server_credentials_release(creds);
        *err = "out of memory";
        return NULL;
    }
    if (opts != NULL && opts->token != NULL) {
        srv->need_token = 1;
        srv->token = *opts->token;
    }
    pthread_mutex_init(&srv->mu, NULL);
    srv->methods = calloc(n_methods, sizeof(*methods));
    srv->regs = calloc(n_methods, sizeof(void *));
    srv->n = n_methods;
    memcpy(srv->methods, methods, n_methods * sizeof(*methods));
    grpc_arg args[1];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = 64 << 20;
    grpc_channel_args cargs = {1, args};
    srv->server = grpc_server_create(&cargs, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    for (size_t i = 0; i < n_methods; i++) {
        grpc_server_register_method_payload_handling ph = methods[i].kind == FAAS_RPC_CLIENT_STREAM
                                                              ? GRPC_SRM_PAYLOAD_NONE
                                                              : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER;
        srv->regs[i] = grpc_server_register_method(srv->server, methods[i].method, NULL, ph, 0);
    }
    int port = grpc_server_add_http2_port(srv->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        *err = "cannot listen on the gRPC address (in use or invalid)";
        grpc_server_destroy(srv->server);
        grpc_completion_queue_shutdown(srv->cq);
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(srv->cq);
        free(srv->methods);
        free(srv->regs);
        OPENSSL_cleanse(&srv->token, sizeof(srv->token));
        free(srv);
        return NULL;
    }
    if (bound_port)
        *bound_port = port;
    grpc_server_start(srv->server);
    /* a few pending requests per method so bursts do not wait for re-arming */
    for (size_t i = 0; i < n_methods; i++)
        for (int k = 0; k < 4; k++)
            request_call(srv, i);
    request_unknown(srv);
    srv->t_shutdown.kind = TAG_SHUTDOWN;
    pthread_create(&srv->thread, NULL, server_main, srv);
    return srv;
}

void faas_rpc_server_stop(faas_rpc_server_t *srv)
{
    if (srv == NULL)
        return;
    srv->stopping = 1;
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
    grpc_server_cancel_all_calls(srv->server);
    /* Shutdown completes once every call is released; an owner that never
     * finishes its call must not hang the process on exit. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 3;
    if (pthread_timedjoin_np(srv->thread, NULL, &until) != 0) {
        FAAS_WARN("event=rpc_stop_timeout msg=\"calls still open at shutdown\"");
        return;
    }
    /* Calls still owned by user code: mark them dead so later sends are no-ops. */
    pthread_mutex_lock(&srv->mu);
    for (faas_rpc_call_t *c = srv->live; c; c = c->next_live) {
        pthread_mutex_lock(&c->mu);
        c->closed = 1;
        c->final_started = 1;
        c->outstanding = 0;
        c->srv = NULL;
        pthread_cond_broadcast(&c->drained);
        pthread_mutex_unlock(&c->mu);
    }
    srv->live = NULL;
    pthread_mutex_unlock(&srv->mu);
    grpc_server_destroy(srv->server);
    grpc_completion_queue_destroy(srv->cq);
    free(srv->methods);
    free(srv->regs);
    pthread_mutex_destroy(&srv->mu);
    OPENSSL_cleanse(&srv->token, sizeof(srv->token));
    free(srv);
}

/* After server stop a call is orphaned (srv == NULL): the owner's finish frees it. */
static void orphan_free(faas_rpc_call_t *c)
{
    for (msgq_t *q = c->qhead, *nx; q; q = nx) {
        nx = q->next;
        grpc_byte_buffer_destroy(q->bb);
        free(q);
    }
    grpc_metadata_array_destroy(&c->md);
    if (c->call)
        grpc_call_unref(c->call);
    if (c->peer)
        gpr_free(c->peer);
    free(c->final_msg);
    pthread_cond_destroy(&c->drained);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int finish_common(faas_rpc_call_t *c, int status, const char *msg, const uint8_t *resp, size_t len)
{
    pthread_mutex_lock(&c->mu);
    if (c->finished) {
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    c->finished = 1;
    if (c->srv == NULL) {
        pthread_mutex_unlock(&c->mu);
        orphan_free(c);
        return -1;
    }
    c->final_status = status;
    c->final_msg = msg ? strdup(msg) : NULL;
    if (resp != NULL && status == FAAS_GRPC_OK && !c->closed) {
        msgq_t *q = calloc(1, sizeof(*q));
        q->bb = bb_from(resp, len);
        c->queued++;
        if (c->qtail)
            c->qtail->next = q;
        else
            c->qhead = q;
        c->qtail = q;
    }
    pump_locked(c);
    int done = call_done_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (done)
        call_free(c);
    return 0;
}

int faas_rpc_reply(faas_rpc_call_t *call, const uint8_t *resp, size_t len)
{
    return finish_common(call, FAAS_GRPC_OK, NULL, resp ? resp : (const uint8_t *)"", len);
}

int faas_rpc_fail(faas_rpc_call_t *call, int status, const char *msg)
{
    return finish_common(call, status == FAAS_GRPC_OK ? FAAS_GRPC_INTERNAL : status, msg, NULL, 0);
}

int faas_rpc_finish(faas_rpc_call_t *call, int status, const char *msg)
{
    return finish_common(call, status, msg, NULL, 0);
}

/* Queues msg; held: it (and what is queued before it) waits for a flush. */
static int send_common(faas_rpc_call_t *c, const uint8_t *msg, size_t len, int held)
{
    pthread_mutex_lock(&c->mu);
    if (c->closed || c->finished || c->srv == NULL) {
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    msgq_t *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    q->bb = bb_from(msg, len);
    c->queued++;
    if (c->qtail)
        c->qtail->next = q;
    else
        c->qhead = q;
    c->qtail = q;
    c->held = held;
    pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int faas_rpc_send(faas_rpc_call_t *c, const uint8_t *msg, size_t len)
{
    return send_common(c, msg, len, 0);
}

int faas_rpc_send_more(faas_rpc_call_t *c, const uint8_t *msg, size_t len)
{
    return send_common(c, msg, len, 1);
}

int faas_rpc_flush(faas_rpc_call_t *c)
{
    pthread_mutex_lock(&c->mu);
    int rc = c->closed || c->srv == NULL ? -1 : 0;
    c->held = 0;
    if (c->srv != NULL)
        pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int faas_rpc_send_paced(faas_rpc_call_t *c, const uint8_t *msg, size_t len, size_t max_queued)
{
    pthread_mutex_lock(&c->mu);
    if (c->held && c->srv != NULL) { /* held messages would never drain: let them go first */
        c->held = 0;
        pump_locked(c);
    }
    while (c->queued >= max_queued && !c->closed && c->srv != NULL)
        pthread_cond_wait(&c->drained, &c->mu);
    pthread_mutex_unlock(&c->mu);
    return faas_rpc_send(c, msg, len);
}

void faas_rpc_on_close(faas_rpc_call_t *c, void (*fn)(faas_rpc_call_t *, void *), void *ud)
{
    pthread_mutex_lock(&c->mu);
    int already = c->closed;
    if (!already) {
        c->on_close = fn;
        c->on_close_ud = ud;
    }
    pthread_mutex_unlock(&c->mu);
    if (already)
        fn(c, ud);
}

int faas_rpc_cancelled(faas_rpc_call_t *call)
{
    return call->recv_failed || call->cancelled;
}

void faas_rpc_set_data(faas_rpc_call_t *call, void *data)
{
    call->data = data;
}

void *faas_rpc_get_data(faas_rpc_call_t *call)
{
    return call->data;
}

const char *faas_rpc_peer(faas_rpc_call_t *c)
{
    if (c->peer == NULL && c->call != NULL)
        c->peer = grpc_call_get_peer(c->call);
    return c->peer ? c->peer : "unknown";
}

/* ---- client --------------------------------------------------------------- */

struct faas_rpc_channel {
    grpc_channel *ch;
    grpc_metadata auth; /* "authorization: Bearer <token>" on every call */
    size_t n_md;        /* 1 with a token, else 0 */
};

/* What faas_rpc_channel_open uses; set once at start by faas_rpc_client_configure. */
static struct {
    int has_token;
    faas_token_t token;
    char *ca_pem; /* NULL: plaintext */
} client_defaults;

int faas_rpc_client_configure(const faas_token_t *token, const char *tls_ca, char *err, size_t errcap)
{
    char *pem = NULL;
    if (tls_ca != NULL && (pem = read_pem(tls_ca, err, errcap)) == NULL)
        return -1;
    free(client_defaults.ca_pem);
    client_defaults.ca_pem = pem;
    client_defaults.has_token = token != NULL;
    if (token != NULL)
        client_defaults.token = *token;
    return 0;
}

/* TLS with the configured roots, or plaintext. */
static grpc_channel_credentials *channel_creds(int public_)
{
    if (public_ || client_defaults.ca_pem == NULL)
        return grpc_insecure_credentials_create();
    return grpc_ssl_credentials_create(client_defaults.ca_pem, NULL, NULL, NULL);
}

static faas_rpc_channel_t *channel_open(const char *target, int public_)
{
    faas_rpc_global_init();
    faas_rpc_channel_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (!public_ && client_defaults.has_token) {
        char v[sizeof(FAAS_AUTH_SCHEME) + FAAS_TOKEN_MAX_LEN];
        snprintf(v, sizeof(v), FAAS_AUTH_SCHEME "%s", client_defaults.token.s);
        c->auth.key = grpc_slice_from_static_string(FAAS_AUTH_MD_KEY);
        c->auth.value = grpc_slice_from_copied_string(v);
        OPENSSL_cleanse(v, sizeof(v));
        c->n_md = 1;
    }
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = 64 << 20;
    /* reconnect quickly after a daemon restart (default backoff reaches minutes) */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[1].value.integer = 1000;
    grpc_channel_args cargs = {2, args};
    grpc_channel_credentials *cr = channel_creds(public_);
    c->ch = grpc_channel_create(target, cr, &cargs);
    grpc_channel_credentials_release(cr);
    return c;
}

faas_rpc_channel_t *faas_rpc_channel_open(const char *target)
{
    return channel_open(target, 0);
}

faas_rpc_channel_t *faas_rpc_channel_open_public(const char *target)
{
    return channel_open(target, 1);
}

int faas_rpc_channel_wait_ready(faas_rpc_channel_t *ch, int timeout_ms)
{
    if (ch == NULL)
        return 0;
    gpr_timespec until =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_connectivity_state st;
    /* each watch ends (tag fires) on a state change or at the deadline; a failed
     * attempt (refused, no such host) ends the wait: only silence takes the timeout */
    while ((st = grpc_channel_check_connectivity_state(ch->ch, 1)) != GRPC_CHANNEL_READY &&
           st != GRPC_CHANNEL_TRANSIENT_FAILURE && st != GRPC_CHANNEL_SHUTDOWN &&
           gpr_time_cmp(gpr_now(GPR_CLOCK_REALTIME), until) < 0) {
        grpc_channel_watch_connectivity_state(ch->ch, st, until, cq, ch);
        grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return st == GRPC_CHANNEL_READY;
}

int faas_rpc_channel_connected(faas_rpc_channel_t *ch)
{
    return ch != NULL && grpc_channel_check_connectivity_state(ch->ch, 0) == GRPC_CHANNEL_READY;
}

void faas_rpc_channel_close(faas_rpc_channel_t *c)
{
    if (c == NULL)
        return;
    grpc_channel_destroy(c->ch);
    if (c->n_md)
        grpc_slice_unref(c->auth.value);
    free(c);
}

typedef struct {
    faas_rpc_channel_t *ch;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
} ccall_t;

static gpr_timespec deadline_of(int timeout_ms)
{
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

static int cc_begin(ccall_t *cc, faas_rpc_channel_t *ch, const char *method, int timeout_ms)
{
    memset(cc, 0, sizeof(*cc));
    cc->ch = ch;
    cc->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_copied_string(method);
    cc->call =
        grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cc->cq, m, NULL, deadline_of(timeout_ms), NULL);
    grpc_slice_unref(m);
    grpc_metadata_array_init(&cc->init_md);
    grpc_metadata_array_init(&cc->trail_md);
    cc->details = grpc_empty_slice();
    return cc->call ? 0 : -1;
}

/* The op that opens a call: its metadata carries the channel's credential. */
static void cc_initial_md(ccall_t *cc, grpc_op *op)
{
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = cc->ch->n_md;
    op->data.send_initial_metadata.metadata = cc->ch->n_md ? &cc->ch->auth : NULL;
}

/* Runs one batch and waits for it. */
static int cc_batch(ccall_t *cc, grpc_op *ops, size_t n)
{
    if (grpc_call_start_batch(cc->call, ops, n, cc, NULL) != GRPC_CALL_OK)
        return -1;
    grpc_event ev = grpc_completion_queue_pluck(cc->cq, cc, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.success ? 0 : -1;
}

/* Collects the status, fills errbuf, releases everything. */
static int cc_end(ccall_t *cc, char *errbuf, size_t errcap)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &cc->trail_md;
    op.data.recv_status_on_client.status = &cc->status;
    op.data.recv_status_on_client.status_details = &cc->details;
    op.data.recv_status_on_client.error_string = &cc->error_string;
    int rc;
    if (cc_batch(cc, &op, 1) != 0) {
        rc = -1;
        if (errbuf && errcap)
            snprintf(errbuf, errcap, "rpc failed locally");
    } else {
        rc = (int)cc->status;
        if (rc != 0 && errbuf && errcap) {
            size_t n = GRPC_SLICE_LENGTH(cc->details);
            if (n >= errcap)
                n = errcap - 1;
            memcpy(errbuf, GRPC_SLICE_START_PTR(cc->details), n);
            errbuf[n] = '\0';
        }
    }
    if (cc->error_string)
        gpr_free((void *)cc->error_string);
    grpc_slice_unref(cc->details);
    grpc_metadata_array_destroy(&cc->init_md);
    grpc_metadata_array_destroy(&cc->trail_md);
    grpc_call_unref(cc->call);
    grpc_completion_queue_shutdown(cc->cq);
    while (grpc_completion_queue_pluck(cc->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cc->cq);
    return rc;
}

/* Receives one message; 1 with *out set, 0 at end of stream, -1 on failure. */
static int cc_recv(ccall_t *cc, uint8_t **out, size_t *len)
{
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    if (cc_batch(cc, &op, 1) != 0)
        return -1;
    if (bb == NULL)
        return 0;
    *out = bb_copy(bb, len);
    grpc_byte_buffer_destroy(bb);
    return *out ? 1 : -1;
}

int faas_rpc_unary(faas_rpc_channel_t *ch, const char *method, const uint8_t *req, size_t len, int timeout_ms,
                   uint8_t **resp, size_t *resp_len, char *errbuf, size_t errcap)
{
    ccall_t cc;
    *resp = NULL;
    *resp_len = 0;
    if (cc_begin(&cc, ch, method, timeout_ms) != 0) {
        snprintf(errbuf, errcap, "cannot create call");
        return -1;
    }
    grpc_byte_buffer *bb = bb_from(req, len);
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    cc_initial_md(&cc, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &cc.init_md;
    cc_batch(&cc, ops, 4);
    grpc_byte_buffer_destroy(bb);
    uint8_t *out = NULL;
    size_t olen = 0;
    int got = cc_recv(&cc, &out, &olen);
    int rc = cc_end(&cc, errbuf, errcap);
    if (rc == 0 && got != 1) {
        snprintf(errbuf, errcap, "server sent no reply message");
        rc = FAAS_GRPC_INTERNAL;
    }
    if (rc != 0) {
        free(out);
        return rc;
    }
    *resp = out;
    *resp_len = olen;
    return 0;
}

int faas_rpc_client_stream(faas_rpc_channel_t *ch, const char *method,
                           int (*next)(void *ud, const uint8_t **msg, size_t *len), void *ud, int timeout_ms,
                           uint8_t **resp, size_t *resp_len, char *errbuf, size_t errcap)
{
    ccall_t cc;
    *resp = NULL;
    *resp_len = 0;
    if (cc_begin(&cc, ch, method, timeout_ms) != 0) {
        snprintf(errbuf, errcap, "cannot create call");
        return -1;
    }
    grpc_op op;
    memset(&op, 0, sizeof(op));
    cc_initial_md(&cc, &op);
    int ok = cc_batch(&cc, &op, 1) == 0;
    int aborted = 0;
    while (ok) {
        const uint8_t *m;
        size_t n;
        int r = next(ud, &m, &n);
        if (r <= 0) {
            aborted = r < 0;
            break;
        }
        grpc_byte_buffer *bb = bb_from(m, n);
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = bb;
        ok = cc_batch(&cc, &op, 1) == 0;
        grpc_byte_buffer_destroy(bb);
    }
    if (aborted)
        grpc_call_cancel(cc.call, NULL);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &cc.init_md;
    cc_batch(&cc, ops, 2);
    uint8_t *out = NULL;
    size_t olen = 0;
    int got = cc_recv(&cc, &out, &olen);
    int rc = cc_end(&cc, errbuf, errcap);
    if (rc == 0 && got != 1) {
        snprintf(errbuf, errcap, "server sent no reply message");
        rc = FAAS_GRPC_INTERNAL;
    }
    if (rc != 0) {
        free(out);
        return rc;
    }
    *resp = out;
    *resp_len = olen;
    return 0;
}

int faas_rpc_server_stream(faas_rpc_channel_t *ch, const char *method, const uint8_t *req, size_t len, int timeout_ms,
                           int (*on_msg)(void *ud, const uint8_t *msg, size_t len), void *ud, char *errbuf,
                           size_t errcap)
{
    ccall_t cc;
    if (cc_begin(&cc, ch, method, timeout_ms) != 0) {
        snprintf(errbuf, errcap, "cannot create call");
        return -1;
    }
    grpc_byte_buffer *bb = bb_from(req, len);
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    cc_initial_md(&cc, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &cc.init_md;
    cc_batch(&cc, ops, 4);
    grpc_byte_buffer_destroy(bb);
    int cancelled = 0;
    for (;;) {
        uint8_t *m = NULL;
        size_t n = 0;
        int r = cc_recv(&cc, &m, &n);
        if (r <= 0)
            break;
        int stop = on_msg(ud, m, n);
        free(m);
        if (stop) {
            cancelled = 1;
            grpc_call_cancel(cc.call, NULL);
            break;
        }
    }
    int rc = cc_end(&cc, errbuf, errcap);
    return cancelled ? FAAS_GRPC_CANCELLED : rc;
}
