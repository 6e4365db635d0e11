/* Real grpc core server and client over loopback: the glue every daemon uses. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc.h"
#include "tests/unit/watchdog.h"

static void echo(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    if (len == 4 && memcmp(req, "fail", 4) == 0) {
        faas_rpc_fail(call, FAAS_GRPC_NOT_FOUND, "no such thing");
        return;
    }
    faas_rpc_reply(call, req, len);
}

typedef struct {
    size_t total;
    int n;
} acc_t;

static void concat(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    acc_t *a = faas_rpc_get_data(call);
    if (a == NULL) {
        a = calloc(1, sizeof(*a));
        faas_rpc_set_data(call, a);
    }
    if (req != NULL) {
        a->total += len;
        a->n++;
        return;
    }
    char out[64];
    int n = snprintf(out, sizeof(out), "%d:%zu", a->n, a->total);
    free(a);
    faas_rpc_reply(call, (const uint8_t *)out, (size_t)n);
}

static void count(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    int n = atoi((const char *)req);
    for (int i = 0; i < n; i++) {
        char m[16];
        int k = snprintf(m, sizeof(m), "%d", i);
        faas_rpc_send(call, (const uint8_t *)m, (size_t)k);
    }
    faas_rpc_finish(call, FAAS_GRPC_OK, NULL);
}

static const faas_rpc_method_t methods[] = {
    {"/t.T/Echo", FAAS_RPC_UNARY, echo, NULL},
    {"/t.T/Concat", FAAS_RPC_CLIENT_STREAM, concat, NULL},
    {"/t.T/Count", FAAS_RPC_SERVER_STREAM, count, NULL},
};

static faas_rpc_server_t *srv;
static faas_rpc_channel_t *ch;

static void setup(void)
{
    const char *err = NULL;
    int port = 0;
    srv = faas_rpc_server_start("127.0.0.1:0", &port, methods, 3, &err);
    cr_assert_not_null(srv, "server start: %s", err ? err : "");
    cr_assert_gt(port, 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    ch = faas_rpc_channel_open(target);
}

static void teardown(void)
{
    faas_rpc_channel_close(ch);
    faas_rpc_server_stop(srv);
}

/* the suite's bound covers its fixtures too (tests/unit/watchdog.h) */
static void setup_bounded(void)
{
    UNIT_WATCHDOG(20);
    setup();
}

TestSuite(rpc, .init = setup_bounded, .fini = teardown);

Test(rpc, unary_roundtrip_and_error_status)
{
    uint8_t *resp;
    size_t n;
    char err[128];
    int rc = faas_rpc_unary(ch, "/t.T/Echo", (const uint8_t *)"hello", 5, 5000, &resp, &n, err, sizeof(err));
    cr_assert_eq(rc, 0, "rc=%d err=%s", rc, err);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(resp, "hello", 5), 0);
    free(resp);
    rc = faas_rpc_unary(ch, "/t.T/Echo", (const uint8_t *)"fail", 4, 5000, &resp, &n, err, sizeof(err));
    cr_assert_eq(rc, FAAS_GRPC_NOT_FOUND);
    cr_assert_str_eq(err, "no such thing");
    free(resp);
    /* an empty message is a valid protobuf */
    rc = faas_rpc_unary(ch, "/t.T/Echo", (const uint8_t *)"", 0, 5000, &resp, &n, err, sizeof(err));
    cr_assert_eq(rc, 0);
    cr_assert_eq(n, 0);
    free(resp);
}

Test(rpc, unknown_method_is_unimplemented)
{
    uint8_t *resp;
    size_t n;
    char err[128];
    int rc = faas_rpc_unary(ch, "/t.T/Nope", (const uint8_t *)"x", 1, 5000, &resp, &n, err, sizeof(err));
    cr_assert_eq(rc, FAAS_GRPC_UNIMPLEMENTED, "rc=%d", rc);
    free(resp);
}

typedef struct {
    int left;
    uint8_t buf[1000];
} gen_t;

static int next_chunk(void *ud, const uint8_t **msg, size_t *len)
{
    gen_t *g = ud;
    if (g->left == 0)
        return 0;
    g->left--;
    *msg = g->buf;
    *len = sizeof(g->buf);
    return 1;
}

Test(rpc, client_stream_sees_every_message)
{
    gen_t g = {.left = 50};
    uint8_t *resp;
    size_t n;
    char err[128];
    int rc = faas_rpc_client_stream(ch, "/t.T/Concat", next_chunk, &g, 5000, &resp, &n, err, sizeof(err));
    cr_assert_eq(rc, 0, "rc=%d %s", rc, err);
    cr_assert_eq(n, strlen("50:50000"));
    cr_assert_eq(memcmp(resp, "50:50000", n), 0);
    free(resp);
}

static int on_count(void *ud, const uint8_t *msg, size_t len)
{
    int *seen = ud;
    char tmp[16];
    snprintf(tmp, sizeof(tmp), "%.*s", (int)len, (const char *)msg);
    cr_assert_eq(atoi(tmp), *seen, "messages arrive in order");
    (*seen)++;
    return 0;
}

Test(rpc, server_stream_in_order)
{
    int seen = 0;
    char err[128];
    int rc =
        faas_rpc_server_stream(ch, "/t.T/Count", (const uint8_t *)"300", 3, 5000, on_count, &seen, err, sizeof(err));
    cr_assert_eq(rc, 0, "rc=%d %s", rc, err);
    cr_assert_eq(seen, 300);
}

Test(rpc, unreachable_server_is_unavailable)
{
    faas_rpc_channel_t *dead = faas_rpc_channel_open("127.0.0.1:1");
    uint8_t *resp;
    size_t n;
    char err[256];
    int rc = faas_rpc_unary(dead, "/t.T/Echo", (const uint8_t *)"x", 1, 3000, &resp, &n, err, sizeof(err));
    cr_assert_eq(rc, FAAS_GRPC_UNAVAILABLE, "rc=%d %s", rc, err);
    free(resp);
    faas_rpc_channel_close(dead);
}

/* The watch pattern: the handler keeps the call, another thread pushes, the
 * client leaves, on_close tells the owner, who then finishes exactly once. */
#include <pthread.h>
#include <unistd.h>

static faas_rpc_call_t *kept;
static volatile int closed_seen;

static void on_gone(faas_rpc_call_t *call, void *ud)
{
    closed_seen = 1;
}

static void keep(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    faas_rpc_on_close(call, on_gone, NULL);
    __atomic_store_n(&kept, call, __ATOMIC_RELEASE);
}

static void *pusher(void *arg)
{
    faas_rpc_call_t *c;
    while ((c = __atomic_load_n(&kept, __ATOMIC_ACQUIRE)) == NULL)
        usleep(1000);
    for (int i = 0; i < 10000 && !closed_seen; i++) {
        if (faas_rpc_send(c, (const uint8_t *)"ev", 2) != 0)
            break;
        usleep(100);
    }
    for (int i = 0; i < 5000 && !closed_seen; i++)
        usleep(1000);
    faas_rpc_finish(c, FAAS_GRPC_OK, NULL);
    return NULL;
}

static int stop_after_10(void *ud, const uint8_t *msg, size_t len)
{
    int *n = ud;
    return ++(*n) >= 10;
}

Test(rpc_watch, client_cancel_reaches_owner)
{
    UNIT_WATCHDOG(20);
    static const faas_rpc_method_t m[] = {{"/t.T/Watch", FAAS_RPC_SERVER_STREAM, keep, NULL}};
    const char *err = NULL;
    int port = 0;
    faas_rpc_server_t *s = faas_rpc_server_start("127.0.0.1:0", &port, m, 1, &err);
    cr_assert_not_null(s);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    faas_rpc_channel_t *c = faas_rpc_channel_open(target);
    pthread_t th;
    pthread_create(&th, NULL, pusher, NULL);
    int n = 0;
    char ebuf[128];
    int rc =
        faas_rpc_server_stream(c, "/t.T/Watch", (const uint8_t *)"", 0, 10000, stop_after_10, &n, ebuf, sizeof(ebuf));
    cr_assert_eq(rc, FAAS_GRPC_CANCELLED);
    cr_assert_eq(n, 10);
    pthread_join(th, NULL);
    cr_assert(closed_seen, "on_close fired after the client cancelled");
    faas_rpc_channel_close(c);
    faas_rpc_server_stop(s);
}

/* faas_rpc_send_more holds messages until a flush, a plain send or the finish, and
 * then they arrive complete and in order (discovery's watch fan-out relies on it). */
static faas_rpc_call_t *held_call;
static int held_got;

static void hold_two(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    faas_rpc_send_more(call, (const uint8_t *)"0", 1);
    faas_rpc_send_more(call, (const uint8_t *)"1", 1);
    __atomic_store_n(&held_call, call, __ATOMIC_RELEASE);
}

static int on_held(void *ud, const uint8_t *msg, size_t len)
{
    int got = __atomic_load_n(&held_got, __ATOMIC_ACQUIRE);
    char want[16];
    int k = snprintf(want, sizeof(want), "%d", got);
    cr_assert_eq(len, (size_t)k);
    cr_assert_eq(memcmp(msg, want, len), 0, "message %d out of order", got);
    __atomic_store_n(&held_got, got + 1, __ATOMIC_RELEASE);
    return 0;
}

typedef struct {
    faas_rpc_channel_t *ch;
    int rc;
} held_client_t;

static void *held_client(void *arg)
{
    held_client_t *hc = arg;
    char err[128];
    hc->rc =
        faas_rpc_server_stream(hc->ch, "/t.T/Held", (const uint8_t *)"", 0, 15000, on_held, NULL, err, sizeof(err));
    return NULL;
}

/* Waits (bounded) until the client has seen n messages. */
static int wait_got(int n)
{
    for (int i = 0; i < 5000; i++) {
        if (__atomic_load_n(&held_got, __ATOMIC_ACQUIRE) >= n)
            return 1;
        usleep(1000);
    }
    return 0;
}

Test(rpc_more, held_until_flush_then_in_order)
{
    UNIT_WATCHDOG(20);
    static const faas_rpc_method_t m[] = {{"/t.T/Held", FAAS_RPC_SERVER_STREAM, hold_two, NULL}};
    const char *err = NULL;
    int port = 0;
    faas_rpc_server_t *s = faas_rpc_server_start("127.0.0.1:0", &port, m, 1, &err);
    cr_assert_not_null(s);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    held_client_t hc = {faas_rpc_channel_open(target), -1};
    pthread_t th;
    pthread_create(&th, NULL, held_client, &hc);
    faas_rpc_call_t *c;
    for (int i = 0; i < 5000 && (c = __atomic_load_n(&held_call, __ATOMIC_ACQUIRE)) == NULL; i++)
        usleep(1000);
    cr_assert_not_null(c, "the handler never ran");

    usleep(200 * 1000);
    cr_assert_eq(__atomic_load_n(&held_got, __ATOMIC_ACQUIRE), 0, "held messages went out before the flush");
    cr_assert_eq(faas_rpc_flush(c), 0);
    cr_assert(wait_got(2), "the flush did not deliver the held messages (got %d)", held_got);

    cr_assert_eq(faas_rpc_send_more(c, (const uint8_t *)"2", 1), 0);
    cr_assert_eq(faas_rpc_send(c, (const uint8_t *)"3", 1), 0, "a plain send releases what was held with it");
    cr_assert(wait_got(4), "got %d of 4", held_got);

    cr_assert_eq(faas_rpc_send_more(c, (const uint8_t *)"4", 1), 0);
    cr_assert_eq(faas_rpc_send_more(c, (const uint8_t *)"5", 1), 0);
    cr_assert_eq(faas_rpc_finish(c, FAAS_GRPC_OK, NULL), 0);
    pthread_join(th, NULL);
    cr_assert_eq(hc.rc, 0, "the stream ends OK after the held messages");
    cr_assert_eq(held_got, 6, "finish sends what was still held");
    faas_rpc_channel_close(hc.ch);
    faas_rpc_server_stop(s);
}

/* A server with a token refuses calls without it (or with another) before any
 * handler runs, on every kind of method and on unknown ones; with it, calls work. */
static int handled;

static void counted_echo(faas_rpc_call_t *call, const uint8_t *req, size_t len, void *ud)
{
    handled++;
    faas_rpc_reply(call, req, len);
}

static int one_msg(void *ud, const uint8_t **msg, size_t *len)
{
    int *left = ud;
    if ((*left)-- <= 0)
        return 0;
    *msg = (const uint8_t *)"x";
    *len = 1;
    return 1;
}

static faas_rpc_server_t *auth_server(const faas_token_t *t, char *target, size_t cap)
{
    static const faas_rpc_method_t m[] = {{"/t.T/Echo", FAAS_RPC_UNARY, counted_echo, NULL},
                                          {"/t.T/Concat", FAAS_RPC_CLIENT_STREAM, concat, NULL}};
    const char *err = NULL;
    char ebuf[256];
    int port = 0;
    faas_rpc_server_opts_t o = {.token = t};
    faas_rpc_server_t *s = faas_rpc_server_start_opts("127.0.0.1:0", &port, m, 2, &o, ebuf, sizeof(ebuf), &err);
    cr_assert_not_null(s, "%s", err);
    snprintf(target, cap, "127.0.0.1:%d", port);
    return s;
}

static int call_echo(const char *target, char *ebuf, size_t cap)
{
    faas_rpc_channel_t *c = faas_rpc_channel_open(target);
    uint8_t *resp = NULL;
    size_t rl = 0;
    int rc = faas_rpc_unary(c, "/t.T/Echo", (const uint8_t *)"hi", 2, 5000, &resp, &rl, ebuf, cap);
    free(resp);
    faas_rpc_channel_close(c);
    return rc;
}

Test(rpc_auth, refuses_missing_and_wrong_token_then_accepts_the_right_one)
{
    UNIT_WATCHDOG(20);
    faas_token_t t, other;
    cr_assert_eq(faas_token_generate(&t), 0);
    cr_assert_eq(faas_token_generate(&other), 0);
    char target[64], ebuf[256], err[128];
    faas_rpc_server_t *s = auth_server(&t, target, sizeof(target));
    handled = 0;
    cr_assert_eq(call_echo(target, ebuf, sizeof(ebuf)), FAAS_GRPC_UNAUTHENTICATED);
    cr_assert(strstr(ebuf, "missing platform token") != NULL, "%s", ebuf);
    cr_assert_eq(faas_rpc_client_configure(&other, NULL, err, sizeof(err)), 0);
    cr_assert_eq(call_echo(target, ebuf, sizeof(ebuf)), FAAS_GRPC_UNAUTHENTICATED);
    cr_assert_str_eq(ebuf, "wrong platform token");
    /* a client stream is refused too, and its messages reach no handler */
    faas_rpc_channel_t *c = faas_rpc_channel_open(target);
    int left = 3;
    uint8_t *resp = NULL;
    size_t rl = 0;
    cr_assert_eq(faas_rpc_client_stream(c, "/t.T/Concat", one_msg, &left, 5000, &resp, &rl, ebuf, sizeof(ebuf)),
                 FAAS_GRPC_UNAUTHENTICATED);
    free(resp);
    /* an unknown method says UNAUTHENTICATED, not which methods exist */
    cr_assert_eq(faas_rpc_unary(c, "/t.T/Nope", (const uint8_t *)"", 0, 5000, &resp, &rl, ebuf, sizeof(ebuf)),
                 FAAS_GRPC_UNAUTHENTICATED);
    free(resp);
    faas_rpc_channel_close(c);
    cr_assert_eq(handled, 0, "no handler ran for a refused call");
    cr_assert_eq(faas_rpc_server_refused(s, FAAS_AUTH_MISSING), 1);
    cr_assert_eq(faas_rpc_server_refused(s, FAAS_AUTH_WRONG), 3);
    cr_assert_eq(faas_rpc_client_configure(&t, NULL, err, sizeof(err)), 0);
    cr_assert_eq(call_echo(target, ebuf, sizeof(ebuf)), 0, "%s", ebuf);
    cr_assert_eq(handled, 1);
    /* the gateway's public port must never see the token: a public channel sends none */
    faas_rpc_channel_t *pub = faas_rpc_channel_open_public(target);
    cr_assert_eq(faas_rpc_unary(pub, "/t.T/Echo", (const uint8_t *)"", 0, 5000, &resp, &rl, ebuf, sizeof(ebuf)),
                 FAAS_GRPC_UNAUTHENTICATED);
    free(resp);
    faas_rpc_channel_close(pub);
    char text[1024];
    int off = 0;
    faas_rpc_server_refused_metrics(s, "faas_test_unauthenticated_total", text, sizeof(text), &off);
    cr_assert(strstr(text, "faas_test_unauthenticated_total{reason=\"wrong\"} 3\n") != NULL, "%s", text);
    cr_assert(strstr(text, "faas_test_unauthenticated_total{reason=\"missing\"} 2\n") != NULL, "%s", text);
    faas_rpc_server_stop(s);
}

Test(rpc_auth, tls_files_that_do_not_exist_fail_to_start)
{
    UNIT_WATCHDOG(20);
    const char *err = NULL;
    char ebuf[256];
    int port = 0;
    static const faas_rpc_method_t m[] = {{"/t.T/Echo", FAAS_RPC_UNARY, counted_echo, NULL}};
    faas_rpc_server_opts_t o = {.tls_cert = "/nonexistent/cert.pem", .tls_key = "/nonexistent/key.pem"};
    cr_assert_null(faas_rpc_server_start_opts("127.0.0.1:0", &port, m, 1, &o, ebuf, sizeof(ebuf), &err));
    cr_assert(strstr(err, "/nonexistent/cert.pem") != NULL, "%s", err);
    o.tls_key = NULL;
    cr_assert_null(faas_rpc_server_start_opts("127.0.0.1:0", &port, m, 1, &o, ebuf, sizeof(ebuf), &err));
    cr_assert(strstr(err, "both") != NULL, "%s", err);
    char e2[256];
    cr_assert_eq(faas_rpc_client_configure(NULL, "/nonexistent/ca.pem", e2, sizeof(e2)), -1);
    cr_assert(strstr(e2, "/nonexistent/ca.pem") != NULL, "%s", e2);
}
