/* dispatcher/callbacks.c - X-Callback-Url delivery (docs/async.md): when a task with a
 * callback ends, the store marks its callback due; a gateway claims due callbacks
 * (Discovery/ClaimCallbacks, under a lease), POSTs each task's result to its URL with
 * h2o's HTTP/1.1 client on the loop, and reports the outcome (ReportCallback), which
 * the store records or schedules for a retry with backoff. A report that does not
 * arrive lets the lease lapse and the callback is claimed again: delivery is at least
 * once, and the receiver de-duplicates by faas-request-id.
 *
 * One claim in flight per gateway, polled fast (CB_FAST_MS) while claims find work and
 * slowly (CB_IDLE_MS) when idle; at most CB_MAX_INFLIGHT deliveries at once, and no new
 * claim while they hold CB_MAX_INFLIGHT_BYTES of results.
 *
 * The request is built by the pure functions of callback_req.c. */
#include "dispatcher/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"

#define CB_FAST_MS 200
#define CB_IDLE_MS 1000
#define CB_CLAIM_MAX 8
#define CB_LEASE_MS 30000
#define CB_MAX_INFLIGHT 32
/* results held by deliveries in flight: past it no claim is made (one result can be
 * 8 MiB, FAAS_SPEC_DEFAULT_ASYNC_MAX_RESULT_BYTES, and 32 of them would be 256 MiB) */
#define CB_MAX_INFLIGHT_BYTES (64u << 20)
#define CB_TIMEOUT_MS 10000 /* one attempt: connect, TLS, request and response head */
#define CB_RPC_TIMEOUT_MS 5000

/* ---- delivery, on the loop ---- */

typedef struct delivery {
    struct delivery *prev, *next; /* in flight: reachable, and cancelled together */
    Faas__CallbackDue *due;       /* owns the result body the request points into */
    char *head;
    h2o_iovec_t bufs[2];
    h2o_http1client_t *client; /* NULL once h2o let go of it */
    disp_timer_t deadline;
    disp_cb_url_t url;
    uint64_t t0_ms;
    size_t bytes; /* of the result it holds */
} delivery_t;

static struct {
    int started, claiming, last_rc;
    uint32_t inflight;
    size_t inflight_bytes;
    uint64_t fast_until_ms;
    disp_timer_t poll;
    char claimer[40];
    _Atomic(SSL_CTX *) ssl; /* set once by tls_main */
    atomic_int tls_done;
    h2o_timeout_t io_timeout;
    h2o_http1client_ctx_t hctx;
    delivery_t live; /* sentinel */
    uint64_t delivered, failed;
} cb;

static void on_reported(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    char *id = ud;
    /* the lease lapses and another claim delivers it again: at least once */
    if (rc != 0)
        FAAS_WARN("event=callback_report_failed task=%s rc=%d err=\"%s\"", id, rc, err);
    free(id);
}

static void report(const char *id, int delivered, const char *error)
{
    Faas__CallbackReport r = FAAS__CALLBACK_REPORT__INIT;
    r.id = (char *)id;
    r.delivered = delivered;
    r.error = (char *)error;
    r.claimer = cb.claimer;
    size_t len;
    uint8_t *pb = faas_pb_pack(&r.base, &len);
    char *ud = strdup(id);
    if (pb == NULL || ud == NULL ||
        disp_discovery_call("/faas.Discovery/ReportCallback", pb, len, CB_RPC_TIMEOUT_MS, on_reported, ud) != 0) {
        FAAS_WARN("event=callback_report_failed task=%s err=\"out of memory\"", id);
        free(ud);
    }
    free(pb);
}

static void poll_arm(uint32_t after_ms);

/* The attempt's end, once: reports it and frees d. error NULL = delivered. */
static void finish(delivery_t *d, const char *error)
{
    const Faas__Task *t = d->due->task;
    disp_timer_stop(&d->deadline);
    if (d->client != NULL) /* our deadline: h2o still holds the connection */
        h2o_http1client_cancel(d->client);
    char why[DISP_CB_ERROR_MAX] = "";
    if (error != NULL)
        disp_cb_sanitize(why, sizeof(why), error);
    if (error == NULL) {
        __atomic_add_fetch(&cb.delivered, 1, __ATOMIC_RELAXED); /* read by /metrics on any loop */
        FAAS_INFO("event=callback_delivered task=%s attempt=%u ms=%" PRIu64, t->id, t->callback_attempts,
                  faas_now_ms() - d->t0_ms);
    } else {
        __atomic_add_fetch(&cb.failed, 1, __ATOMIC_RELAXED);
        FAAS_WARN("event=callback_failed task=%s attempt=%u ms=%" PRIu64 " err=\"%s\"", t->id, t->callback_attempts,
                  faas_now_ms() - d->t0_ms, why);
    }
    report(t->id, error == NULL, why);
    d->prev->next = d->next;
    d->next->prev = d->prev;
    faas__callback_due__free_unpacked(d->due, NULL);
    int was_full = cb.inflight >= CB_MAX_INFLIGHT || cb.inflight_bytes >= CB_MAX_INFLIGHT_BYTES;
    cb.inflight--;
    cb.inflight_bytes -= d->bytes;
    free(d->head);
    free(d);
    if (was_full && !cb.claiming)
        poll_arm(0); /* room again: the claims that waited for it go now */
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t nheaders, int rlen)
{
    delivery_t *d = client->data;
    d->client = NULL; /* returning NULL (or an error) makes h2o close and free it */
    char why[64];
    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        snprintf(why, sizeof(why), "response: %s", errstr);
        finish(d, why);
    } else if (status >= 200 && status <= 299) {
        finish(d, NULL);
    } else {
        snprintf(why, sizeof(why), "HTTP %d", status);
        finish(d, why);
    }
    return NULL; /* the status is the answer: its body is not read */
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs,
                                          size_t *reqbufcnt, int *method_is_head)
{
    int e = errno;
    delivery_t *d = client->data;
    if (errstr != NULL) {
        char why[DISP_CB_ERROR_MAX];
        d->client = NULL; /* h2o frees it after this returns */
        /* a connect(2) that failed at once (loopback: refused) reaches here from inside
         * h2o_http1client_connect with its errno still set; h2o's text names none */
        if (e != 0 && strcmp(errstr, "socket create error") == 0)
            errstr = strerror(e);
        snprintf(why, sizeof(why), "connect: %s", errstr);
        finish(d, why);
        return NULL;
    }
    *reqbufs = d->bufs;
    *reqbufcnt = d->bufs[1].len != 0 ? 2 : 1;
    *method_is_head = 0;
    return on_head;
}

static void on_deadline(disp_timer_t *t)
{
    finish(H2O_STRUCT_FROM_MEMBER(delivery_t, deadline, t), "timeout");
}

/* Starts one POST; takes due. */
static void deliver(Faas__CallbackDue *due)
{
    const char *err = NULL;
    delivery_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        report(due->task->id, 0, "gateway out of memory");
        faas__callback_due__free_unpacked(due, NULL);
        return;
    }
    d->due = due;
    d->t0_ms = faas_now_ms();
    d->next = cb.live.next, d->prev = &cb.live;
    cb.live.next->prev = d, cb.live.next = d;
    d->bytes = due->result != NULL ? due->result->body.len : 0;
    cb.inflight++;
    cb.inflight_bytes += d->bytes;
    d->deadline.cb = on_deadline;
    disp_timer_start(&d->deadline, d->t0_ms + CB_TIMEOUT_MS);
    if (disp_cb_url_parse(due->task->callback_url, &d->url, &err) != 0) {
        char why[DISP_CB_ERROR_MAX];
        snprintf(why, sizeof(why), "bad callback URL: %s", err);
        finish(d, why);
        return;
    }
    size_t hlen;
    if ((d->head = disp_cb_request_head(&d->url, due->task, due->result, &hlen)) == NULL) {
        finish(d, "gateway out of memory");
        return;
    }
    if (d->url.tls && cb.hctx.ssl_ctx == NULL) {
        finish(d, "connect: TLS is not available");
        return;
    }
    d->bufs[0] = h2o_iovec_init(d->head, hlen);
    if (due->result != NULL)
        d->bufs[1] = h2o_iovec_init(due->result->body.data, due->result->body.len);
    /* h2o may call on_connect with an error before this returns, and so free d */
    h2o_http1client_connect(&d->client, d, &cb.hctx, h2o_iovec_init(d->url.host, strlen(d->url.host)), d->url.port,
                            d->url.tls, on_connect);
}

/* ---- claiming ---- */

static void on_claimed(void *ud, int rc, const uint8_t *resp, size_t len, const char *err)
{
    cb.claiming = 0;
    Faas__CallbackDueList *l = rc == 0 ? faas__callback_due_list__unpack(NULL, len, resp) : NULL;
    /* said once per change: a discovery that is down or predates callbacks would
     * otherwise log every second */
    if (rc != 0 && rc != cb.last_rc)
        FAAS_WARN("event=callback_claim_failed rc=%d err=\"%s\"", rc, err);
    cb.last_rc = rc;
    size_t n = l != NULL ? l->n_due : 0;
    for (size_t i = 0; i < n; i++) {
        Faas__CallbackDue *due = l->due[i];
        l->due[i] = NULL; /* each delivery owns its entry from here */
        if (due->task == NULL || due->task->id[0] == '\0') {
            faas__callback_due__free_unpacked(due, NULL);
            continue;
        }
        deliver(due);
    }
    if (l != NULL) {
        l->n_due = 0;
        faas__callback_due_list__free_unpacked(l, NULL);
    }
    uint64_t now = faas_now_ms();
    if (n != 0)
        cb.fast_until_ms = now + CB_IDLE_MS;
    poll_arm(cb.fast_until_ms > now ? CB_FAST_MS : CB_IDLE_MS);
}

static void claim_now(void)
{
    if (cb.claiming)
        return;
    if (cb.inflight >= CB_MAX_INFLIGHT || cb.inflight_bytes >= CB_MAX_INFLIGHT_BYTES)
        return; /* the delivery that ends first arms the poll again */
    if (!atomic_load(&cb.tls_done)) {
        poll_arm(CB_FAST_MS);
        return;
    }
    cb.hctx.ssl_ctx = atomic_load(&cb.ssl);
    Faas__CallbackClaim c = FAAS__CALLBACK_CLAIM__INIT;
    c.max = CB_MAX_INFLIGHT - cb.inflight < CB_CLAIM_MAX ? CB_MAX_INFLIGHT - cb.inflight : CB_CLAIM_MAX;
    c.claimer = cb.claimer;
    c.lease_ms = CB_LEASE_MS;
    size_t len;
    uint8_t *pb = faas_pb_pack(&c.base, &len);
    cb.claiming = pb != NULL && disp_discovery_call("/faas.Discovery/ClaimCallbacks", pb, len, CB_RPC_TIMEOUT_MS,
                                                    on_claimed, NULL) == 0;
    free(pb);
    if (!cb.claiming)
        poll_arm(CB_IDLE_MS);
}

static void on_poll(disp_timer_t *t)
{
    claim_now();
}

static void poll_arm(uint32_t after_ms)
{
    disp_timer_stop(&cb.poll);
    cb.poll.cb = on_poll;
    disp_timer_start(&cb.poll, faas_now_ms() + after_ms);
}

/* The leaf certificate must name the host the URL names (its DNS name, or its IP
 * address for an IP literal). h2o 2.2.5 has a name check of its own, but Debian's build
 * accepted https://127.0.0.1 with a certificate for "localhost" only (the e2e test
 * test_https_receiver_is_verified), so OpenSSL checks it here, during verification. */
static int verify_peer_name(int ok, X509_STORE_CTX *st)
{
    if (!ok || X509_STORE_CTX_get_error_depth(st) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(st, SSL_get_ex_data_X509_STORE_CTX_idx());
    const char *name = ssl != NULL ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(st);
    if (name == NULL || cert == NULL) {
        X509_STORE_CTX_set_error(st, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    }
    int ip = X509_check_ip_asc(cert, name, 0); /* -2: name is not an IP address */
    if (ip == -2 ? X509_check_host(cert, name, 0, 0, NULL) == 1 : ip == 1)
        return 1;
    X509_STORE_CTX_set_error(st, ip == -2 ? X509_V_ERR_HOSTNAME_MISMATCH : X509_V_ERR_IP_ADDRESS_MISMATCH);
    return 0;
}

/* An OpenSSL client context that verifies the receiver's chain against the system's CAs
 * (SSL_CERT_FILE / SSL_CERT_DIR override them) and its name; NULL if OpenSSL cannot
 * make one: https callbacks then fail. */
static SSL_CTX *client_tls(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 || SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_peer_name);
    return ctx;
}

/* OpenSSL's first context parses its config and a CA bundle (100 ms and more): made on a
 * thread of its own, so the gateway's listeners open without waiting for it. No claim
 * is made before it is there (claim_now). */
static void *tls_main(void *arg)
{
    SSL_CTX *ctx = client_tls();
    if (ctx == NULL)
        FAAS_WARN("event=callback_tls_unavailable msg=\"https callback URLs will fail\"");
    atomic_store(&cb.ssl, ctx);
    atomic_store(&cb.tls_done, 1);
    return NULL;
}

void disp_callbacks_start(void)
{
    if (cb.started)
        return;
    cb.started = 1;
    cb.live.next = cb.live.prev = &cb.live;
    char rnd[17];
    faas_random_id(rnd, sizeof(rnd));
    snprintf(cb.claimer, sizeof(cb.claimer), "gateway-%s", rnd);
    pthread_t tid;
    if (pthread_create(&tid, NULL, tls_main, NULL) != 0 || pthread_detach(tid) != 0)
        tls_main(NULL); /* then here, late rather than never */
    /* h2o's own timeout is per I/O; the attempt's whole bound is our deadline timer, so
     * h2o's must not fire first */
    h2o_timeout_init(disp_g.loop, &cb.io_timeout, CB_TIMEOUT_MS + 1000);
    cb.hctx.loop = disp_g.loop;
    cb.hctx.getaddr_receiver = &disp_g.ctx->receivers.hostinfo_getaddr;
    cb.hctx.io_timeout = &cb.io_timeout;
    poll_arm(CB_IDLE_MS);
}

void disp_callbacks_metrics(FILE *out)
{
    fprintf(out,
            "# HELP faas_gateway_task_callbacks_total Task callback deliveries attempted, by outcome.\n"
            "# TYPE faas_gateway_task_callbacks_total counter\n"
            "faas_gateway_task_callbacks_total{outcome=\"delivered\"} %" PRIu64 "\n"
            "faas_gateway_task_callbacks_total{outcome=\"failed\"} %" PRIu64 "\n",
            __atomic_load_n(&cb.delivered, __ATOMIC_RELAXED), __atomic_load_n(&cb.failed, __ATOMIC_RELAXED));
}
