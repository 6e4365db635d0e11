/* tests/unit/dispatcher/test_call.c - the call path (call.c) and the h2 client (h2b/)
 * end to end inside one process, no daemon: an h2o loop, the dispatcher's loop side
 * (disp_loop_init, no control threads, so nothing is ever Acquired), and a fake agent
 * served by the same bridge on 127.0.0.1 that echoes what the dispatcher sent it. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <h2o.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "dispatcher/internal.h"
#include "tests/unit/watchdog.h"

#define RUN_UNTIL(cond, ms)                                                                                            \
    do {                                                                                                               \
        uint64_t until_ = faas_now_ms() + (ms);                                                                        \
        while (!(cond) && faas_now_ms() < until_)                                                                      \
            h2o_evloop_run(ctx.loop, 10);                                                                              \
    } while (0)

static h2o_globalconf_t conf;
static h2o_context_t ctx;

/* ---- the fake agent: one listening socket, each stream answered by its x-mode ---- */

static char agent_ep[64];
static int accepts;       /* connections the agent accepted */
static int agent_streams; /* requests it saw */
static int agent_freed;   /* its streams that are gone (answered or cancelled) */
static uint32_t max_inflight_seen;
static disp_inst_t *watch_inst; /* its in-flight count is sampled at each request */

enum { M_ECHO, M_ERR_TIMEOUT, M_ERR_CRASH, M_RESET, M_RESET_AFTER_HEAD, M_NEVER, M_TRAILERS, M_STATUS };

static int mode_of(const h2b_pair_t *p)
{
    const nghttp2_nv *m = h2b_find(&p->req, "x-mode");
    static const char *const names[] = {"echo",  "err-timeout", "err-crash", "reset", "reset-after-head",
                                        "never", "trailers",    "status"};
    for (int i = 0; m != NULL && i < (int)(sizeof(names) / sizeof(names[0])); i++)
        if (m->valuelen == strlen(names[i]) && memcmp(m->value, names[i], m->valuelen) == 0)
            return i;
    return M_ECHO;
}

#define NV(n, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), (vl), NGHTTP2_NV_FLAG_NONE})

static size_t add_echo(nghttp2_nv *nv, size_t n, const h2b_pair_t *p, const char *req, const char *as)
{
    const nghttp2_nv *v = h2b_find(&p->req, req);
    if (v != NULL)
        nv[n++] = NV(as, v->value, v->valuelen);
    return n;
}

/* reset-after-head: the reset waits until the HEADERS frame is surely out (a reset
 * submitted with it makes nghttp2 drop the HEADERS) */
static h2o_timeout_t later_timeout;
static h2o_timeout_entry_t later_entry;
static h2b_pair_t *later_pair;

static void on_later_reset(h2o_timeout_entry_t *e)
{
    if (later_pair != NULL)
        h2b_pair_reset(later_pair);
    later_pair = NULL;
}

static void agent_free(h2b_pair_t *p)
{
    agent_freed++;
    if (p == later_pair)
        later_pair = NULL;
}

static void agent_request(h2b_pair_t *p, int eos)
{
    int mode = mode_of(p);
    p->owner = (void *)(intptr_t)(mode + 1);
    p->on_free = agent_free;
    agent_streams++;
    if (watch_inst != NULL && watch_inst->inflight > max_inflight_seen)
        max_inflight_seen = watch_inst->inflight;
    nghttp2_nv nv[16];
    size_t n = 0;
    switch (mode) {
    case M_ERR_TIMEOUT:
        nv[n++] = NV(":status", "504", 3);
        nv[n++] = NV("faas-error", "timeout", 7);
        h2b_pair_respond(p, nv, n, 1);
        return;
    case M_ERR_CRASH:
        nv[n++] = NV(":status", "502", 3);
        nv[n++] = NV("faas-error", "crashed", 7);
        h2b_pair_respond(p, nv, n, 1);
        return;
    case M_RESET:
        h2b_pair_reset(p);
        return;
    case M_NEVER:
        return;
    case M_STATUS:
        nv[n++] = NV(":status", "418", 3);
        h2b_pair_respond(p, nv, n, 0);
        h2b_pair_send(p, "teapot", 6, 1);
        return;
    default:
        break;
    }
    nv[n++] = NV(":status", "200", 3);
    n = add_echo(nv, n, p, "faas-request-id", "x-rid");
    n = add_echo(nv, n, p, "faas-function", "x-fn");
    n = add_echo(nv, n, p, "faas-protocol", "x-proto");
    n = add_echo(nv, n, p, "faas-deadline-ms", "x-deadline");
    n = add_echo(nv, n, p, ":path", "x-path");
    n = add_echo(nv, n, p, ":method", "x-method");
    n = add_echo(nv, n, p, "x-custom", "x-custom");
    if (mode == M_RESET_AFTER_HEAD) {
        h2b_pair_respond(p, nv, n, 0);
        h2b_pair_send(p, "part", 4, 0);
        later_pair = p;
        later_entry.cb = on_later_reset;
        h2o_timeout_link(ctx.loop, &later_timeout, &later_entry);
        return;
    }
    if (mode == M_TRAILERS) {
        h2b_pair_respond(p, nv, n, 0);
        h2b_hdrs_add(&p->trl, (const uint8_t *)"x-trailer", 9, (const uint8_t *)"t1", 2);
        h2b_pair_send(p, "abc", 3, 1);
        return;
    }
    h2b_pair_respond(p, nv, n, eos);
}

static int agent_data(h2b_pair_t *p, const uint8_t *d, size_t len)
{
    if ((intptr_t)p->owner - 1 == M_ECHO)
        h2b_pair_send(p, d, len, 0); /* the body comes back as it arrives */
    return 1;                        /* taken: the request's window goes back at once */
}

static void agent_end(h2b_pair_t *p)
{
    if ((intptr_t)p->owner - 1 == M_ECHO)
        h2b_pair_send(p, "", 0, 1);
}

static const h2b_server_cbs_t agent_cbs = {.on_request = agent_request, .on_data = agent_data, .on_end = agent_end};

/* Sockets kept reachable for LeakSanitizer (otherwise only epoll holds them; not
 * static, so the stores are not optimised away). */
h2o_socket_t *test_call_listener, *test_call_accepted[8];

static void on_accept(h2o_socket_t *ls, const char *err)
{
    h2o_socket_t *s;
    if (err != NULL)
        return;
    while ((s = h2o_evloop_socket_accept(ls)) != NULL) {
        if (accepts < 8)
            test_call_accepted[accepts] = s;
        accepts++;
        cr_assert_eq(disp_h2b_accept(s, &agent_cbs), 0);
    }
}

/* A listening socket on 127.0.0.1:0; its port in *port. */
static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* ---- the table: functions placed straight into disp_g.table ---- */

static disp_fn_t *put_fn(const char *name, uint32_t timeout_ms, uint32_t concurrency)
{
    disp_fn_t *fn = disp_fn_get(&disp_g.table, name, strlen(name));
    cr_assert_not_null(fn);
    /* idle_timeout 0: the idle scan never releases the instance under the test */
    disp_fn_params_t p = {.version = 1, .timeout_ms = timeout_ms, .concurrency = concurrency};
    disp_fn_set_spec(&disp_g.table, fn, &p, NULL, 0);
    return fn;
}

static disp_inst_t *put_inst(disp_fn_t *fn, const char *id, const char *endpoint)
{
    disp_inst_t *i = disp_inst_put(fn, id, endpoint, "w1", 1, 1, 0, faas_now_ms());
    cr_assert_not_null(i);
    return i;
}

static disp_inst_t *echo_inst;

static void setup(void)
{
    h2o_config_init(&conf);
    h2o_config_register_host(&conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_context_init(&ctx, h2o_evloop_create(), &conf);
    disp_config_t cfg = {.queue_max = 1024};
    disp_loop_init(&ctx, &cfg);
    h2o_timeout_init(ctx.loop, &later_timeout, 30);
    int port;
    int fd = listen_any(&port);
    cr_assert_eq(listen(fd, 128), 0);
    test_call_listener = h2o_evloop_socket_create(ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(test_call_listener, on_accept);
    snprintf(agent_ep, sizeof(agent_ep), "127.0.0.1:%d", port);
    echo_inst = put_inst(put_fn("echo", 5000, 0), "i-echo", agent_ep);
}

/* the suite's bound covers its fixtures too (tests/unit/watchdog.h) */
static void setup_bounded(void)
{
    UNIT_WATCHDOG(60);
    setup();
}

TestSuite(call, .init = setup_bounded);

/* ---- the front end: a test sink ---- */

typedef struct {
    disp_call_t *c;
    int consume; /* give bytes back as they arrive */
    int status;  /* head */
    char *hn[32], *hv[32];
    size_t nh;
    int pseudo_seen;
    uint8_t *body;
    size_t blen, bcap;
    char *trailer; /* x-trailer at the end */
    int ended, errored, err_status, err_started, calls_after_end;
    char err_msg[128];
} res_t;

static void s_head(disp_call_t *c, int status, const nghttp2_nv *h, size_t n)
{
    res_t *r = disp_call_owner(c);
    r->calls_after_end += r->ended || r->errored;
    r->status = status;
    for (size_t i = 0; i < n && r->nh < 32; i++, r->nh++) {
        r->pseudo_seen |= h[i].namelen != 0 && h[i].name[0] == ':';
        r->hn[r->nh] = strndup((const char *)h[i].name, h[i].namelen);
        r->hv[r->nh] = strndup((const char *)h[i].value, h[i].valuelen);
    }
}

static void s_data(disp_call_t *c, const uint8_t *d, size_t len)
{
    res_t *r = disp_call_owner(c);
    r->calls_after_end += r->ended || r->errored;
    if (r->blen + len > r->bcap) {
        r->bcap = (r->blen + len) * 2;
        r->body = realloc(r->body, r->bcap);
        cr_assert_not_null(r->body);
    }
    memcpy(r->body + r->blen, d, len);
    r->blen += len;
    if (r->consume)
        disp_call_consumed(c, len);
}

static void s_end(disp_call_t *c, const nghttp2_nv *trl, size_t n)
{
    res_t *r = disp_call_owner(c);
    r->calls_after_end += r->ended || r->errored;
    r->ended = 1;
    for (size_t i = 0; i < n; i++)
        if (trl[i].namelen == 9 && memcmp(trl[i].name, "x-trailer", 9) == 0)
            r->trailer = strndup((const char *)trl[i].value, trl[i].valuelen);
}

/* The error kind as its HTTP status (common/errors.h's table), which the cases assert. */
static void s_error(disp_call_t *c, faas_err_t kind, const char *msg, int started)
{
    res_t *r = disp_call_owner(c);
    r->calls_after_end += r->ended || r->errored;
    r->errored = 1;
    r->err_status = faas_err_http(kind);
    r->err_started = started;
    snprintf(r->err_msg, sizeof(r->err_msg), "%s", msg);
}

static const disp_sink_t sink = {.head = s_head, .data = s_data, .end = s_end, .error = s_error};

static const char *hdr(const res_t *r, const char *name)
{
    for (size_t i = 0; i < r->nh; i++)
        if (strcmp(r->hn[i], name) == 0)
            return r->hv[i];
    return NULL;
}

static void res_free(res_t *r)
{
    for (size_t i = 0; i < r->nh; i++) {
        free(r->hn[i]);
        free(r->hv[i]);
    }
    free(r->body);
    free(r->trailer);
    free(r);
}

#define DONE(r) ((r)->ended || (r)->errored)

/* Builds and starts a call (the request body, if any, is pushed before the start). */
static res_t *start(disp_proto_t proto, const char *fn, const char *mode, const void *body, size_t blen,
                    const char *rid, uint64_t deadline_ms)
{
    res_t *r = calloc(1, sizeof(*r));
    r->consume = 1;
    r->c = disp_call_new(proto, &sink, r);
    cr_assert_not_null(r->c);
    cr_assert_eq(disp_call_owner(r->c), r);
    static const char *const h[][2] = {
        {":method", "POST"}, {":scheme", "http"}, {":authority", "gw"}, {":path", "/fn/x?q=1"}, {"x-custom", "v1"}};
    for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++)
        cr_assert_eq(disp_call_header(r->c, h[i][0], strlen(h[i][0]), h[i][1], strlen(h[i][1])), 0);
    cr_assert_eq(disp_call_header(r->c, "x-mode", 6, mode, strlen(mode)), 0);
    cr_assert_eq(disp_call_body(r->c, body, blen, 1), 0);
    disp_call_start(r->c, fn, strlen(fn), rid, deadline_ms);
    return r;
}

/* Closes calls as a front end does once they are done, and waits for both ends of
 * their h2 streams to be freed. */
static void finish_all(res_t **rs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rs[i]->c != NULL) /* NULL: the test closed it already */
            disp_call_close(rs[i]->c);
    RUN_UNTIL(h2b_live_pairs() == 0, 2000);
    cr_assert_eq(h2b_live_pairs(), 0, "h2 pairs left behind: %zu", h2b_live_pairs());
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(rs[i]->calls_after_end, 0, "the sink heard from the call after its end");
        res_free(rs[i]);
    }
}

static void finish(res_t *r)
{
    finish_all(&r, 1);
}

static uint8_t *pattern(size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 7 + i / 251);
    return b;
}

/* ---- the tests ---- */

static void echo_body(size_t n)
{
    uint8_t *body = pattern(n);
    res_t *r = start(DISP_PROTO_HTTP, "echo", "echo", body, n, "rid-body", 0);
    RUN_UNTIL(DONE(r), 20000);
    cr_assert(r->ended, "no end (error %d: %s)", r->err_status, r->err_msg);
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->blen, n, "got %zu of %zu bytes", r->blen, n);
    cr_assert(n == 0 || memcmp(r->body, body, n) == 0, "the body came back changed");
    cr_assert_eq(echo_inst->inflight, 0);
    free(body);
    finish(r);
}

Test(call, http_echo_headers_and_metadata)
{
    uint64_t t0 = faas_now_ms();
    res_t *r = start(DISP_PROTO_HTTP, "echo", "echo", "hi", 2, "req-0001", 0);
    cr_assert_eq(echo_inst->inflight, 1, "counted while in flight");
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->ended, "error %d: %s", r->err_status, r->err_msg);
    cr_assert_eq(r->status, 200);
    cr_assert_not(r->pseudo_seen, "pseudo headers reached the sink");
    cr_assert_str_eq(hdr(r, "x-rid"), "req-0001");
    cr_assert_str_eq(disp_call_request_id(r->c), "req-0001");
    cr_assert_str_eq(hdr(r, "x-fn"), "echo");
    cr_assert_null(hdr(r, "x-proto"), "HTTP is the protocol without faas-protocol");
    cr_assert_str_eq(hdr(r, "x-path"), "/fn/x?q=1");
    cr_assert_str_eq(hdr(r, "x-method"), "POST");
    cr_assert_str_eq(hdr(r, "x-custom"), "v1");
    /* the function's timeout (5000) less the time already spent */
    cr_assert_not_null(hdr(r, "x-deadline"));
    long dl = atol(hdr(r, "x-deadline"));
    cr_assert(dl <= 5000 && dl >= 5000 - (long)(faas_now_ms() - t0) - 1, "faas-deadline-ms %ld", dl);
    cr_assert_eq(r->blen, 2);
    cr_assert_eq(memcmp(r->body, "hi", 2), 0);
    cr_assert_eq(echo_inst->inflight, 0);
    cr_assert_eq(accepts, 1);
    finish(r);
}

Test(call, thrift_and_grpc_say_their_protocol)
{
    res_t *r = start(DISP_PROTO_THRIFT, "echo", "echo", "t", 1, "rid-t", 0);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->ended);
    cr_assert_str_eq(hdr(r, "x-proto"), "thrift");
    cr_assert_str_eq(hdr(r, "x-fn"), "echo");
    finish(r);
    r = start(DISP_PROTO_GRPC, "echo", "echo", "g", 1, "rid-g", 0);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->ended);
    cr_assert_str_eq(hdr(r, "x-proto"), "grpc");
    finish(r);
    cr_assert_eq(accepts, 1, "one connection per agent, reused");
}

Test(call, explicit_deadline_is_sent)
{
    uint64_t dl = faas_now_ms() + 2000;
    res_t *r = start(DISP_PROTO_HTTP, "echo", "echo", NULL, 0, "rid-dl", dl);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->ended);
    long v = atol(hdr(r, "x-deadline"));
    cr_assert(v <= 2000 && v >= 1900, "faas-deadline-ms %ld for a deadline 2000 ms away", v);
    cr_assert_eq(r->blen, 0);
    finish(r);
}

/* A task's hand-off: the agent is told the async timeout, not what the call has left. */
Test(call, agent_deadline_overrides_the_time_left)
{
    res_t *r = calloc(1, sizeof(*r));
    r->consume = 1;
    r->c = disp_call_new(DISP_PROTO_HTTP, &sink, r);
    static const char *const h[][2] = {
        {":method", "GET"}, {":scheme", "http"}, {":authority", "gw"}, {":path", "/t"}, {"x-mode", "echo"}};
    for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++)
        cr_assert_eq(disp_call_header(r->c, h[i][0], strlen(h[i][0]), h[i][1], strlen(h[i][1])), 0);
    cr_assert_eq(disp_call_body(r->c, NULL, 0, 1), 0);
    disp_call_set_agent_deadline(r->c, 3600000);
    disp_call_start(r->c, "echo", 4, "rid-task", 0);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->ended);
    cr_assert_str_eq(hdr(r, "x-deadline"), "3600000");
    finish(r);
}

Test(call, body_1_byte)
{
    echo_body(1);
}

Test(call, body_empty)
{
    echo_body(0);
}

Test(call, body_100_kib)
{
    echo_body(100 << 10);
}

Test(call, body_3_mib)
{
    /* larger than the stream (1 MiB) windows both ways: only moves if windows come back */
    echo_body(3 << 20);
}

Test(call, response_waits_for_consumed)
{
    /* the sink holds the bytes: the function may send one stream window, no more */
    size_t n = 3 << 20;
    uint8_t *body = pattern(n);
    res_t *r = start(DISP_PROTO_HTTP, "echo", "echo", body, n, "rid-fc", 0);
    r->consume = 0;
    RUN_UNTIL(r->blen >= n || DONE(r), 1500);
    cr_assert_not(DONE(r));
    cr_assert_gt(r->blen, 0);
    cr_assert_leq(r->blen, 1 << 20, "%zu bytes arrived without a window update", r->blen);
    size_t stalled = r->blen;
    RUN_UNTIL(0, 200);
    cr_assert_eq(r->blen, stalled, "more arrived while nothing was consumed");
    /* give everything back: the rest flows */
    r->consume = 1;
    disp_call_consumed(r->c, stalled);
    RUN_UNTIL(DONE(r), 20000);
    cr_assert(r->ended);
    cr_assert_eq(r->blen, n);
    cr_assert_eq(memcmp(r->body, body, n), 0);
    free(body);
    finish(r);
}

Test(call, trailers_reach_the_end)
{
    res_t *r = start(DISP_PROTO_HTTP, "echo", "trailers", NULL, 0, "rid-trl", 0);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->ended, "error %d: %s", r->err_status, r->err_msg);
    cr_assert_eq(r->blen, 3);
    cr_assert_str_eq(r->trailer, "t1");
    finish(r);
}

Test(call, function_status_passes_through)
{
    res_t *r = start(DISP_PROTO_HTTP, "echo", "status", NULL, 0, "rid-418", 0);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->ended);
    cr_assert_eq(r->status, 418, "the function's own status is not a platform error");
    cr_assert_eq(r->blen, 6);
    finish(r);
}

Test(call, unknown_function_is_404_at_once)
{
    res_t *r = start(DISP_PROTO_HTTP, "nosuch", "echo", "x", 1, "rid-404", 0);
    cr_assert(r->errored, "the sink heard before disp_call_start returned");
    cr_assert_eq(r->err_status, 404);
    cr_assert_eq(r->err_started, 0);
    cr_assert_eq(agent_streams, 0);
    finish(r);
    /* a function that was deployed and is gone: the same */
    disp_fn_forget(&disp_g.table, disp_fn_find(&disp_g.table, "echo", 4));
    r = start(DISP_PROTO_HTTP, "echo", "echo", "x", 1, "rid-404b", 0);
    cr_assert(r->errored);
    cr_assert_eq(r->err_status, 404);
    finish(r);
    cr_assert_eq(echo_inst->inflight, 0);
}

static void expect_error(const char *mode, int status, int started)
{
    res_t *r = start(DISP_PROTO_HTTP, "echo", mode, "x", 1, "rid-err", 0);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->errored, "%s: no error (status %d)", mode, r->status);
    cr_assert_not(r->ended);
    cr_assert_eq(r->err_status, status, "%s: %d (%s)", mode, r->err_status, r->err_msg);
    cr_assert_eq(r->err_started, started, "%s", mode);
    cr_assert_eq(echo_inst->inflight, 0, "%s", mode);
    finish(r);
}

Test(call, agent_timeout_error_is_504)
{
    expect_error("err-timeout", 504, 0);
}

Test(call, agent_other_error_is_502)
{
    expect_error("err-crash", 502, 0);
}

Test(call, agent_reset_is_502)
{
    expect_error("reset", 502, 0);
}

Test(call, agent_reset_after_head_breaks_the_response)
{
    res_t *r = start(DISP_PROTO_HTTP, "echo", "reset-after-head", "x", 1, "rid-mid", 0);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->errored);
    cr_assert_not(r->ended);
    cr_assert_eq(r->status, 200, "the head came first");
    cr_assert_eq(r->blen, 4);
    cr_assert_eq(r->err_status, 502);
    cr_assert_eq(r->err_started, 1, "the sink is told the response had begun");
    cr_assert_eq(echo_inst->inflight, 0);
    finish(r);
}

Test(call, deadline_fails_a_call_the_agent_never_answers)
{
    disp_fn_t *fn = put_fn("slow", 100, 0);
    disp_inst_t *inst = put_inst(fn, "i-slow", agent_ep);
    uint64_t t0 = faas_now_ms();
    res_t *r = start(DISP_PROTO_HTTP, "slow", "never", "x", 1, "rid-slow", 0);
    RUN_UNTIL(DONE(r), 5000);
    uint64_t took = faas_now_ms() - t0;
    cr_assert(r->errored);
    cr_assert_eq(r->err_status, 504, "%d (%s)", r->err_status, r->err_msg);
    cr_assert_geq(took, 100, "failed after %lu ms, before its 100 ms deadline", (unsigned long)took);
    cr_assert_leq(took, 1000, "failed after %lu ms", (unsigned long)took);
    cr_assert_eq(inst->inflight, 0);
    cr_assert_eq(agent_streams, 1);
    /* the agent's stream is cancelled, not left open */
    RUN_UNTIL(agent_freed == 1, 2000);
    cr_assert_eq(agent_freed, 1);
    finish(r);
}

Test(call, closing_an_unfinished_call_cancels_it_upstream)
{
    res_t *r = start(DISP_PROTO_HTTP, "echo", "never", "x", 1, "rid-close", 0);
    RUN_UNTIL(agent_streams == 1, 2000);
    cr_assert_eq(echo_inst->inflight, 1);
    finish(r); /* close: no sink callback, the stream is reset, both pairs freed */
    cr_assert_eq(echo_inst->inflight, 0);
    cr_assert_eq(agent_freed, 1);
}

Test(call, no_instance_and_no_worker_is_503)
{
    put_fn("cold", 5000, 0);
    res_t *r = start(DISP_PROTO_HTTP, "cold", "echo", "x", 1, "rid-cold", 0);
    RUN_UNTIL(DONE(r), 3000);
    cr_assert(r->errored, "the call hangs");
    cr_assert_eq(r->err_status, 503);
    cr_assert(strstr(r->err_msg, "no worker") != NULL, "%s", r->err_msg);
    cr_assert_eq(disp_fn_find(&disp_g.table, "cold", 4)->nwaiters, 0);
    finish(r);
}

/* issue 14: a refused connect means the agent is gone (discovery may list it for a
 * lease more): the instance is dropped at once and the call, of which nothing left,
 * waits for another instance; with none and no worker to start one, that is a 503. */
Test(call, nothing_listening_drops_the_instance_and_holds_the_call)
{
    int port;
    close(listen_any(&port)); /* a port just freed: nothing listens there */
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", port);
    disp_fn_t *fn = put_fn("gone", 5000, 0);
    put_inst(fn, "i-gone", ep);
    res_t *r = start(DISP_PROTO_HTTP, "gone", "echo", "x", 1, "rid-gone", 0);
    RUN_UNTIL(DONE(r), 5000);
    cr_assert(r->errored);
    cr_assert_eq(r->err_status, 503, "%d (%s)", r->err_status, r->err_msg);
    cr_assert(strstr(r->err_msg, "no worker") != NULL, "%s", r->err_msg);
    cr_assert_null(disp_inst_find(&disp_g.table, "i-gone"), "the unreachable instance is still routed to");
    cr_assert_eq(fn->ninst, 0);
    finish(r);
}

/* ... and with a live instance beside it, the call is served there: 200, not 502. */
Test(call, nothing_listening_sends_the_call_to_another_instance)
{
    int port;
    close(listen_any(&port));
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%d", port);
    disp_fn_t *fn = put_fn("half", 5000, 0);
    put_inst(fn, "i-dead", ep); /* first: picked first at equal load */
    disp_inst_t *live = put_inst(fn, "i-live", agent_ep);
    for (int k = 0; k < 3; k++) {
        res_t *r = start(DISP_PROTO_HTTP, "half", "echo", "hello", 5, "rid-half", 0);
        RUN_UNTIL(DONE(r), 5000);
        cr_assert(r->ended, "call %d: error %d: %s", k, r->err_status, r->err_msg);
        cr_assert_eq(r->status, 200);
        cr_assert_eq(r->blen, 5);
        finish(r);
    }
    cr_assert_null(disp_inst_find(&disp_g.table, "i-dead"));
    cr_assert_eq(fn->ninst, 1);
    cr_assert_eq(live->inflight, 0);
}

Test(call, two_hundred_concurrent_calls_on_one_connection)
{
    enum { NC = 200 };
    static res_t *rs[NC];
    static char bodies[NC][64];
    watch_inst = echo_inst;
    for (int i = 0; i < NC; i++) {
        int n = snprintf(bodies[i], sizeof(bodies[i]), "call %d of %d", i, NC);
        char rid[32];
        snprintf(rid, sizeof(rid), "rid-%03d", i);
        rs[i] = start(i % 2 ? DISP_PROTO_THRIFT : DISP_PROTO_HTTP, "echo", "echo", bodies[i], (size_t)n, rid, 0);
    }
    cr_assert_eq(echo_inst->inflight, NC);
    int done = 0;
    uint64_t until = faas_now_ms() + 20000;
    while (done < NC && faas_now_ms() < until) {
        h2o_evloop_run(ctx.loop, 10);
        done = 0;
        for (int i = 0; i < NC; i++)
            done += DONE(rs[i]);
    }
    cr_assert_eq(done, NC);
    for (int i = 0; i < NC; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "rid-%03d", i);
        cr_assert(rs[i]->ended, "call %d: error %d (%s)", i, rs[i]->err_status, rs[i]->err_msg);
        cr_assert_str_eq(hdr(rs[i], "x-rid"), rid);
        cr_assert_eq(rs[i]->blen, strlen(bodies[i]));
        cr_assert_eq(memcmp(rs[i]->body, bodies[i], rs[i]->blen), 0, "call %d got another's body", i);
    }
    cr_assert_eq(echo_inst->inflight, 0);
    cr_assert_eq(accepts, 1, "%d connections for one agent", accepts);
    cr_assert_eq(agent_streams, NC);
    cr_assert_gt(max_inflight_seen, 1, "the calls were not concurrent");
    finish_all(rs, NC);
}

Test(call, concurrency_limit_holds_calls_until_capacity_frees)
{
    /* one instance taking one call at a time; no worker to start another: the rest
     * wait in the queue and go one by one as calls end */
    disp_fn_t *fn = put_fn("one", 5000, 1);
    disp_inst_t *inst = put_inst(fn, "i-one", agent_ep);
    watch_inst = inst;
    res_t *rs[5];
    for (int i = 0; i < 5; i++)
        rs[i] = start(DISP_PROTO_HTTP, "one", "echo", "q", 1, "rid-q", 0);
    cr_assert_eq(inst->inflight, 1);
    cr_assert_eq(fn->nwaiters, 4);
    int done = 0;
    uint64_t until = faas_now_ms() + 10000;
    while (done < 5 && faas_now_ms() < until) {
        h2o_evloop_run(ctx.loop, 10);
        done = 0;
        for (int i = 0; i < 5; i++)
            done += rs[i]->ended;
    }
    cr_assert_eq(done, 5);
    cr_assert_eq(max_inflight_seen, 1);
    cr_assert_eq(inst->inflight, 0);
    cr_assert_eq(fn->nwaiters, 0);
    finish_all(rs, 5);
}

Test(call, held_call_fails_by_its_deadline_and_leaves_the_queue)
{
    /* the one slot is taken by a call that never ends; the next call waits in the
     * queue, and both fail by their 100 ms deadlines */
    disp_fn_t *fn = put_fn("busy", 100, 1);
    disp_inst_t *inst = put_inst(fn, "i-busy", agent_ep);
    res_t *rs[2];
    rs[0] = start(DISP_PROTO_HTTP, "busy", "never", "a", 1, "rid-b0", 0);
    rs[1] = start(DISP_PROTO_HTTP, "busy", "never", "b", 1, "rid-b1", 0);
    cr_assert_eq(fn->nwaiters, 1);
    RUN_UNTIL(DONE(rs[0]) && DONE(rs[1]), 5000);
    for (int i = 0; i < 2; i++) {
        cr_assert(rs[i]->errored, "call %d", i);
        cr_assert_eq(rs[i]->err_status, 504, "call %d: %d (%s)", i, rs[i]->err_status, rs[i]->err_msg);
    }
    cr_assert_eq(fn->nwaiters, 0);
    cr_assert_eq(inst->inflight, 0);
    finish_all(rs, 2);
}

Test(call, closing_a_held_call_leaves_the_queue)
{
    disp_fn_t *fn = put_fn("busy2", 5000, 1);
    disp_inst_t *inst = put_inst(fn, "i-busy2", agent_ep);
    res_t *a = start(DISP_PROTO_HTTP, "busy2", "never", "a", 1, "rid-c0", 0);
    res_t *b = start(DISP_PROTO_HTTP, "busy2", "echo", "b", 1, "rid-c1", 0);
    cr_assert_eq(fn->nwaiters, 1);
    disp_call_close(b->c);
    b->c = NULL;
    cr_assert_eq(fn->nwaiters, 0);
    RUN_UNTIL(agent_streams == 1, 2000);
    cr_assert_eq(inst->inflight, 1);
    RUN_UNTIL(0, 100);
    cr_assert_eq(agent_streams, 1, "the closed held call was sent anyway");
    cr_assert_not(DONE(b));
    res_t *both[2] = {a, b};
    finish_all(both, 2);
    cr_assert_eq(inst->inflight, 0);
}

Test(call, deadline_already_passed_is_504)
{
    res_t *r = start(DISP_PROTO_HTTP, "echo", "never", "x", 1, "rid-past", faas_now_ms() - 1);
    RUN_UNTIL(DONE(r), 2000);
    cr_assert(r->errored);
    cr_assert_eq(r->err_status, 504);
    cr_assert_eq(echo_inst->inflight, 0);
    finish(r);
}
