/* runtime-agent/proxy.c - HTTP streams: each request (headers and whole body, collected by
 * front.c) goes to the user server as HTTP/1.1 over the keep-alive pool (pool.c), and the
 * response streams back into the h2 stream as it arrives, with backpressure: past
 * MAX_BUFFERED bytes queued toward the client, the user server is not read until nghttp2
 * has taken them. Errors the agent makes carry `faas-error`; a failure after the response
 * started resets the stream (INTERNAL_ERROR). A request costs one writev and, for a small
 * response, one read upstream. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "runtime-agent/internal.h"

#define POOL_IDLE_MS 2000
#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_HEADERS 100
#define MAX_BUFFERED (1024 * 1024) /* stop reading upstream past this until the client catches up */

enum { UP_CONNECTING, UP_HEAD, UP_BODY, UP_DONE };

static struct {
    evl_loop_t *loop;
    agent_pool_t pool;
    uint32_t default_deadline_ms;
} px;

void agent_proxy_set_upstream(evl_loop_t *loop, uint16_t port, uint32_t default_deadline_ms)
{
    px.loop = loop;
    agent_pool_init(&px.pool, loop, port, POOL_IDLE_MS);
    px.default_deadline_ms = default_deadline_ms;
}

int agent_proxy_adopt_upstream(evl_sock_t *sock)
{
    return agent_pool_adopt(&px.pool, sock);
}

/* ---- the request head for the user server ---- */

static int nv_is(const nghttp2_nv *h, const char *s, size_t l)
{
    return h->namelen == l && memcmp(h->name, s, l) == 0;
}

static int put(evl_buf_t *b, const void *p, size_t n)
{
    return evl_buf_append(b, p, n);
}
#define PUTS(b, lit) put((b), (lit), sizeof(lit) - 1)

/* Builds the HTTP/1.1 request head into r->head; 0 or -1 (OOM, or no :method / :path). */
static int build_head(agent_req_t *r, uint64_t *deadline_ms)
{
    const h2b_hdrs_t *hs = &r->pair->req;
    const nghttp2_nv *method = NULL, *path = NULL, *auth = NULL, *host = NULL, *conn = NULL, *rid = NULL;
    int have_xrid = 0, have_cl = 0, rc = 0;
    for (size_t i = 0; i < hs->n; i++) {
        const nghttp2_nv *h = &hs->nv[i];
        if (nv_is(h, ":method", 7))
            method = h;
        else if (nv_is(h, ":path", 5))
            path = h;
        else if (nv_is(h, ":authority", 10))
            auth = h;
        else if (nv_is(h, "host", 4))
            host = h;
        else if (nv_is(h, "connection", 10))
            conn = h;
        else if (nv_is(h, "faas-request-id", 15))
            rid = h;
        else if (nv_is(h, "x-request-id", 12))
            have_xrid = 1;
        else if (nv_is(h, "content-length", 14))
            have_cl = 1;
        else if (nv_is(h, "faas-deadline-ms", 16))
            http1_parse_u64((const char *)h->value, h->valuelen, deadline_ms);
    }
    if (method == NULL || path == NULL)
        return -1;
    r->is_head = method->valuelen == 4 && memcmp(method->value, "HEAD", 4) == 0;
    if (r->task != NULL)
        r->task->idempotent = !(method->valuelen == 4 && memcmp(method->value, "POST", 4) == 0) &&
                              !(method->valuelen == 5 && memcmp(method->value, "PATCH", 5) == 0);
    if (auth == NULL)
        auth = host;
    evl_buf_t *b = &r->head;
    b->off = b->len = 0;
    rc |= put(b, method->value, method->valuelen) | PUTS(b, " ") | put(b, path->value, path->valuelen);
    rc |= PUTS(b, " HTTP/1.1\r\nhost: ");
    if (auth != NULL)
        rc |= put(b, auth->value, auth->valuelen);
    rc |= PUTS(b, "\r\n");
    int cookies = 0, task = r->task != NULL;
    for (size_t i = 0; i < hs->n; i++) {
        const nghttp2_nv *h = &hs->nv[i];
        const char *n = (const char *)h->name;
        if (h->namelen == 0 || n[0] == ':' || agent_header_is_hop(n, h->namelen) ||
            (conn != NULL && http1_token_listed((const char *)conn->value, conn->valuelen, n, h->namelen)))
            continue;
        /* platform headers stay ours, but for the request id and the attempt number: every
         * attempt of a task carries the same faas-request-id, so a user server can de-duplicate */
        if (task && h->namelen > 5 && memcmp(n, "faas-", 5) == 0 && !nv_is(h, "faas-request-id", 15) &&
            !nv_is(h, "faas-task-attempt", 17))
            continue;
        if (nv_is(h, "cookie", 6)) {
            cookies++;
            continue;
        }
        rc |= put(b, h->name, h->namelen) | PUTS(b, ": ") | put(b, h->value, h->valuelen) | PUTS(b, "\r\n");
    }
    for (size_t i = 0; cookies != 0 && i < hs->n; i++) { /* h2 may split cookies; HTTP/1.1 wants one line */
        const nghttp2_nv *h = &hs->nv[i];
        if (nv_is(h, "cookie", 6))
            rc |= (cookies < 0 ? PUTS(b, "; ") : PUTS(b, "cookie: ")) | put(b, h->value, h->valuelen), cookies = -1;
    }
    if (cookies != 0)
        rc |= PUTS(b, "\r\n");
    if (rid != NULL && !have_xrid)
        rc |= PUTS(b, "x-request-id: ") | put(b, rid->value, rid->valuelen) | PUTS(b, "\r\n");
    if (r->body.len != 0 || have_cl || r->has_body) {
        char cl[24];
        rc |= PUTS(b, "content-length: ") | put(b, cl, faas_fmt_u64(cl, r->body.len)) | PUTS(b, "\r\n");
    }
    rc |= PUTS(b, "\r\n");
    return rc == 0 ? 0 : -1;
}

/* ---- failing ---- */

static void drop_up(agent_req_t *r)
{
    if (r->up != NULL) {
        agent_pool_close(r->up);
        r->up = NULL;
    }
}

static void fwd_fail(agent_req_t *r, faas_err_t kind, const char *reason, const char *body)
{
    evl_timer_stop(px.loop, &r->deadline);
    drop_up(r);
    r->state = UP_DONE;
    if (r->task != NULL)
        agent_task_end(r, body); /* frees r */
    else
        agent_reply_error(r->pair, faas_err_http(kind), reason, body);
}

static int up_acquire(agent_req_t *r, int fresh);

/* The connection broke before any response byte. A reused keep-alive connection that the
 * server closed while idle is the common case: an idempotent request is tried once more. */
static void failed_before_head(agent_req_t *r)
{
    int idempotent;
    if (r->task != NULL) {
        idempotent = r->task->idempotent;
    } else {
        const nghttp2_nv *m = agent_req_header(r, ":method");
        idempotent = m != NULL && !(m->valuelen == 4 && memcmp(m->value, "POST", 4) == 0) &&
                     !(m->valuelen == 5 && memcmp(m->value, "PATCH", 5) == 0);
    }
    if (r->up->reused && r->up->sock->in.len == 0 && idempotent && !r->retried) {
        r->retried = 1;
        drop_up(r);
        if (up_acquire(r, 1) == 0)
            return;
    }
    fwd_fail(r, FAAS_ERR_CRASHED, "upstream-reset", "the function closed the connection before answering\n");
}

/* ---- the response ---- */

/* 1 for response headers that describe the HTTP/1.1 connection, not the response. */
static int res_hop(const http1_hdr_t *h)
{
    /* the request-side list minus what responses legitimately carry */
    if (h->name_len == 4 || h->name_len == 6 || h->name_len == 14 || h->name_len == 19)
        return h->name_len == 14 && memcmp(h->name, "content-length", 14) == 0;
    return agent_header_is_hop(h->name, h->name_len);
}

/* A task keeps the response head (names lower-cased, connection headers dropped). */
static int respond_task(agent_req_t *r, int status, http1_hdr_t *h, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < h[i].name_len; j++)
            if (h[i].name[j] >= 'A' && h[i].name[j] <= 'Z')
                ((char *)h[i].name)[j] += 'a' - 'A';
        if (!res_hop(&h[i]) && !(h[i].name_len == 14 && memcmp(h[i].name, "content-length", 14) == 0))
            h[k++] = h[i];
    }
    if (agent_task_head(r, status, h, k) != 0)
        r->task->oom = 1; /* reported as a failure at the end */
    if (r->framing.body == HTTP1_BODY_LENGTH && r->framing.length > r->task->max_result)
        r->task->over = 1; /* known from the head: on_up_read stops at once */
    return r->framing.body == HTTP1_BODY_NONE;
}

#define NV(n, nl, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE})

/* Submits the response head; returns 1 if the response has no body. */
static int respond(agent_req_t *r, int status, http1_hdr_t *h, size_t n)
{
    r->head_us = faas_now_us(); /* the user server took it: the detector's wait ends here */
    if (r->task != NULL)
        return respond_task(r, status, h, n);
    nghttp2_nv nv[MAX_HEADERS + 2];
    size_t k = 0;
    char st[3] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10), (char)('0' + status % 10)}, cl[24];
    nv[k++] = NV(":status", 7, st, 3);
    const http1_hdr_t *head_cl = NULL;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < h[i].name_len; j++) /* h2 names are lower case; the buffer is ours */
            if (h[i].name[j] >= 'A' && h[i].name[j] <= 'Z')
                ((char *)h[i].name)[j] += 'a' - 'A';
        if (r->is_head && h[i].name_len == 14 && memcmp(h[i].name, "content-length", 14) == 0)
            head_cl = &h[i];
        if (!res_hop(&h[i]))
            nv[k++] = NV(h[i].name, h[i].name_len, h[i].value, h[i].value_len);
    }
    int no_body = r->framing.body == HTTP1_BODY_NONE;
    if (head_cl != NULL) /* HEAD answers describe the body they do not carry */
        nv[k++] = NV("content-length", 14, head_cl->value, head_cl->value_len);
    else if (r->framing.body == HTTP1_BODY_LENGTH || (no_body && !r->is_head && status != 204 && status != 304))
        nv[k++] = NV("content-length", 14, cl, faas_fmt_u64(cl, r->framing.length));
    h2b_pair_respond(r->pair, nv, k, no_body);
    return no_body;
}

/* Parses the response head; 1 when done, 0 when more bytes are needed, -1 on failure (answered). */
static int parse_head(agent_req_t *r, evl_sock_t *s)
{
    for (;;) {
        http1_hdr_t h[MAX_HEADERS];
        size_t nh = MAX_HEADERS, msg_len;
        const char *msg, *err = NULL;
        int minor, status;
        int n = http1_parse_response(evl_buf_data(&s->in), s->in.len, &minor, &status, &msg, &msg_len, h, &nh);
        if (n == -2 && s->in.len < MAX_HEAD_BYTES)
            return 0;
        if (n < 0 || http1_resp_framing(minor, status, r->is_head, h, nh, &r->framing, &err) != 0) {
            FAAS_WARN("event=upstream_bad_response err=\"%s\"", err ? err : "unparsable head");
            fwd_fail(r, FAAS_ERR_CRASHED, "upstream-reset", "the function sent a malformed response\n");
            return -1;
        }
        if (status < 200) { /* interim responses are not forwarded */
            evl_buf_consume(&s->in, (size_t)n);
            continue;
        }
        if (r->task == NULL) /* a task's deadline bounds its whole run */
            evl_timer_stop(px.loop, &r->deadline);
        r->started = 1;
        r->state = UP_BODY;
        r->remaining = r->framing.length;
        memset(&r->dec, 0, sizeof(r->dec));
        respond(r, status, h, nh);
        evl_buf_consume(&s->in, (size_t)n);
        return 1;
    }
}

/* Moves newly read body bytes into the stream; 1 when the body is complete, 0 when more is
 * to come, -1 on a framing error. */
static int move_body(agent_req_t *r, evl_buf_t *in)
{
    char *d = evl_buf_data(in);
    size_t n = in->len;
    int done = 0;
    switch (r->framing.body) {
    case HTTP1_BODY_NONE:
        return 1;
    case HTTP1_BODY_LENGTH:
        if (n > r->remaining) { /* bytes past the body: the connection is not reusable */
            n = (size_t)r->remaining;
            r->framing.keepalive = 0;
        }
        r->remaining -= n;
        done = r->remaining == 0;
        break;
    case HTTP1_BODY_CHUNKED: {
        long rest = http1_chunked_decode(&r->dec, d, &n);
        if (rest == -1)
            return -1;
        if (rest > 0)
            r->framing.keepalive = 0;
        done = rest >= 0;
        break;
    }
    default: /* to EOF */
        break;
    }
    if (r->task != NULL)
        agent_task_body(r, d, n);
    else if (n != 0 || done)
        h2b_pair_send(r->pair, d, n, done);
    evl_buf_consume(in, in->len);
    return done;
}

static void finish(agent_req_t *r, int clean)
{
    agent_upconn_t *u = r->up;
    r->up = NULL;
    r->state = UP_DONE;
    if (clean && r->framing.keepalive && u->sock->in.len == 0)
        agent_pool_release(u);
    else
        agent_pool_close(u);
}

static void on_up_read(evl_sock_t *s, int err)
{
    agent_upconn_t *u = s->data;
    agent_req_t *r = u->owner;
    if (r->state == UP_HEAD) {
        if (err != 0 && s->in.len == 0) {
            failed_before_head(r);
            return;
        }
        int h = parse_head(r, s);
        if (h < 0)
            return;
        if (h == 0) {
            if (err != 0)
                fwd_fail(r, FAAS_ERR_CRASHED, "upstream-reset",
                         "the function closed the connection before answering\n");
            return;
        }
    }
    int done = move_body(r, &s->in);
    if (done == 1) {
        finish(r, err == 0);
        if (r->task != NULL)
            agent_task_end(r, NULL);
        return;
    }
    if (err != 0 || done < 0) {
        if (done == 0 && err == EVL_EOF && r->framing.body == HTTP1_BODY_EOF) {
            if (r->task == NULL)
                h2b_pair_send(r->pair, NULL, 0, 1); /* a close-delimited body ends here */
            finish(r, 0);
            if (r->task != NULL)
                agent_task_end(r, NULL);
            return;
        }
        FAAS_WARN("event=upstream_body_error err=\"%s\"", done < 0 ? "bad chunked encoding" : "closed mid-body");
        finish(r, 0);
        if (r->task != NULL)
            agent_task_end(r, done < 0 ? "the function sent a malformed response body"
                                       : "the function closed the connection mid-response");
        else
            h2b_pair_reset(r->pair);
        return;
    }
    /* More is to come: acknowledge what came at once. A user server that writes its head
     * and its body apart (Python's http.server does) holds the body under Nagle until the
     * head is acknowledged, and our delayed ACK made that 40 ms a request. */
    setsockopt(s->io.fd, IPPROTO_TCP, TCP_QUICKACK, &(int){1}, sizeof(int));
    if (r->task != NULL) {
        if (r->task->over || r->task->oom) { /* the result cannot be kept: no point reading on */
            finish(r, 0);
            agent_task_end(r, NULL);
        }
        return;
    }
    if (h2b_pair_queued(r->pair) > MAX_BUFFERED) {
        evl_sock_read_stop(s); /* the client is slower than the function */
        r->reading = 0;
    }
}

void agent_proxy_drain(agent_req_t *r)
{
    if (r->up != NULL && !r->reading && r->state == UP_BODY && h2b_pair_queued(r->pair) < MAX_BUFFERED / 2) {
        r->reading = 1;
        evl_sock_read_start(r->up->sock, on_up_read);
    }
}

static void on_up_written(evl_sock_t *s, int err)
{
    agent_upconn_t *u = s->data;
    agent_req_t *r = u->owner;
    if (r == NULL) {
        if (err != 0)
            agent_pool_close(u);
        return;
    }
    if (err != 0 && r->state == UP_HEAD)
        failed_before_head(r);
}

static void send_request(agent_req_t *r)
{
    evl_sock_t *s = r->up->sock;
    r->state = UP_HEAD;
    r->reading = 1;
    evl_sock_read_start(s, on_up_read);
    struct iovec v[2] = {{evl_buf_data(&r->head), r->head.len}, {evl_buf_data(&r->body), r->body.len}};
    if (evl_sock_write(s, v, r->body.len != 0 ? 2 : 1, on_up_written) < 0)
        failed_before_head(r);
}

static void on_connect(agent_upconn_t *u, int err)
{
    agent_req_t *r = u->owner;
    if (err != 0) {
        /* a retry after a broken reused connection: the break is what happened */
        if (r->retried)
            fwd_fail(r, FAAS_ERR_CRASHED, "upstream-reset", "the function closed the connection before answering\n");
        else
            fwd_fail(r, FAAS_ERR_CRASHED, "upstream-connect", "the function is not accepting connections\n");
        return;
    }
    send_request(r);
}

static int up_acquire(agent_req_t *r, int fresh)
{
    r->state = UP_CONNECTING;
    int rc = agent_pool_acquire(&px.pool, fresh, r, on_connect, &r->up);
    if (rc < 0)
        return -1;
    if (rc == 1)
        send_request(r);
    return 0;
}

static void on_deadline(evl_timer_t *t)
{
    agent_req_t *r = t->data;
    if (r->task != NULL) { /* a task's deadline bounds its whole run */
        drop_up(r);
        r->state = UP_DONE;
        agent_task_deadline(r); /* frees r */
    } else if (!r->started) {
        fwd_fail(r, FAAS_ERR_DEADLINE, "timeout", "deadline passed before the function answered\n");
    }
}

void agent_proxy_start(agent_req_t *r)
{
    uint64_t deadline_ms = px.default_deadline_ms;
    if (build_head(r, &deadline_ms) != 0) {
        agent_reply_error(r->pair, faas_err_http(FAAS_ERR_MALFORMED), "bad-request",
                          "the request has no :method or :path\n");
        return;
    }
    r->deadline.cb = on_deadline;
    if (deadline_ms != 0)
        evl_timer_start(px.loop, &r->deadline, deadline_ms);
    if (up_acquire(r, 0) != 0)
        fwd_fail(r, FAAS_ERR_CRASHED, "upstream-connect", "the function is not accepting connections\n");
}

void agent_proxy_task_start(agent_req_t *r, uint64_t deadline_ms)
{
    int bad = build_head(r, &deadline_ms) != 0;
    agent_req_detach(r); /* the task is ours now: 202, and the pair no longer owns r */
    if (bad) {
        agent_task_end(r, "the request has no :method or :path");
        return;
    }
    r->deadline.cb = on_deadline;
    r->deadline_ms = deadline_ms; /* for the report */
    if (deadline_ms != 0)
        evl_timer_start(px.loop, &r->deadline, deadline_ms);
    if (up_acquire(r, 0) != 0)
        fwd_fail(r, FAAS_ERR_CRASHED, "upstream-connect", "the function is not accepting connections\n");
}

void agent_proxy_end(agent_req_t *r)
{
    drop_up(r); /* mid-exchange: not reusable */
}
