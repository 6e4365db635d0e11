/* dispatcher/upstream.c - one multiplexed h2c connection per agent endpoint, an
 * nghttp2 client session driven by an h2o socket on the gateway's loop. Writes are
 * coalesced: nghttp2 output is flushed once per loop iteration (zero timeout). */
#include "dispatcher/internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"

#define WBUF_MAX (256 * 1024)

static void up_kill(disp_up_t *up, const char *why);
static void up_free(disp_up_t *up);

static void on_reap(h2o_timeout_entry_t *e)
{
    up_free(H2O_STRUCT_FROM_MEMBER(disp_up_t, flush_entry, e));
}

static void schedule_flush(disp_up_t *up)
{
    if (!h2o_timeout_is_linked(&up->flush_entry))
        h2o_timeout_link(disp_g.loop, &disp_g.ctx->zero_timeout, &up->flush_entry);
}

static void on_write_done(h2o_socket_t *sock, const char *err);

static void up_flush(disp_up_t *up)
{
    if (up->dead || !up->connected || up->writing)
        return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(up->ng, &data);
        if (n < 0) {
            up_kill(up, nghttp2_strerror((int)n));
            return;
        }
        if (n == 0)
            break;
        h2o_iovec_t dst = h2o_buffer_reserve(&up->wbuf, (size_t)n);
        memcpy(dst.base, data, (size_t)n);
        up->wbuf->size += (size_t)n;
        if (up->wbuf->size >= WBUF_MAX)
            break;
    }
    if (up->wbuf->size == 0) {
        if (!nghttp2_session_want_read(up->ng) && !nghttp2_session_want_write(up->ng))
            up_kill(up, "session ended");
        return;
    }
    h2o_iovec_t iov = h2o_iovec_init(up->wbuf->bytes, up->wbuf->size);
    up->writing = 1;
    h2o_socket_write(up->sock, &iov, 1, on_write_done);
}

static void on_write_done(h2o_socket_t *sock, const char *err)
{
    disp_up_t *up = sock->data;
    up->writing = 0;
    if (err != NULL) {
        up_kill(up, "write failed");
        return;
    }
    h2o_buffer_consume(&up->wbuf, up->wbuf->size);
    up_flush(up);
}

static void on_flush_timer(h2o_timeout_entry_t *e)
{
    up_flush(H2O_STRUCT_FROM_MEMBER(disp_up_t, flush_entry, e));
}

/* ---- response side ---------------------------------------------------------- */

static void send_more(disp_req_t *r);

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    disp_req_t *r = H2O_STRUCT_FROM_MEMBER(disp_req_t, gen, gen);
    r->sending = 0;
    if (r->send_len != 0) {
        h2o_buffer_consume(&r->send_buf, r->send_len);
        /* give the agent its flow-control window back only once the client took the bytes */
        if (r->up != NULL && r->stream_id != 0 && !r->up->dead) {
            nghttp2_session_consume_stream(r->up->ng, r->stream_id, r->send_len);
            schedule_flush(r->up);
        }
        r->send_len = 0;
    }
    send_more(r);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    /* the client went away; on_dispose resets the stream */
}

static void send_more(disp_req_t *r)
{
    if (r->req == NULL || r->sending || !r->started || r->final_sent)
        return;
    if (r->recv_buf->size == 0 && !r->eos)
        return;
    /* swap: what arrived is now what h2o sends; new data accumulates in recv_buf */
    h2o_buffer_t *t = r->send_buf;
    r->send_buf = r->recv_buf;
    r->recv_buf = t;
    r->send_len = r->send_buf->size;
    h2o_iovec_t iov = h2o_iovec_init(r->send_buf->bytes, r->send_len);
    h2o_send_state_t st = H2O_SEND_STATE_IN_PROGRESS;
    if (r->eos) {
        st = r->aborted ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL;
        r->final_sent = 1;
    }
    r->sending = 1;
    h2o_send(r->req, &iov, iov.len ? 1 : 0, st);
}

void disp_up_abort_response(disp_req_t *r)
{
    r->aborted = 1;
    r->eos = 1;
    send_more(r);
}

static disp_req_t *stream_req(nghttp2_session *ng, int32_t id)
{
    return nghttp2_session_get_stream_user_data(ng, id);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    disp_req_t *r = stream_req(ng, frame->hd.stream_id);
    if (r == NULL || r->req == NULL || r->started || r->done)
        return 0;
    h2o_req_t *req = r->req;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen; i++)
            st = value[i] >= '0' && value[i] <= '9' && i < 3 ? st * 10 + (value[i] - '0') : 0;
        r->status = st;
        return 0;
    }
    if (name[0] == ':')
        return 0;
    if (namelen == 10 && memcmp(name, "faas-error", 10) == 0) {
        r->faas_error = valuelen == 7 && memcmp(value, "timeout", 7) == 0 ? 504 : 502;
        return 0;
    }
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
        size_t cl = 0;
        for (size_t i = 0; i < valuelen; i++)
            cl = cl * 10 + (size_t)(value[i] - '0');
        req->res.content_length = cl;
        return 0;
    }
    /* h2o writes its own Date; hop-by-hop headers have no meaning past this hop */
    if ((namelen == 4 && memcmp(name, "date", 4) == 0) || (namelen == 10 && memcmp(name, "connection", 10) == 0) ||
        (namelen == 17 && memcmp(name, "transfer-encoding", 17) == 0) ||
        (namelen == 10 && memcmp(name, "keep-alive", 10) == 0))
        return 0;
    h2o_iovec_t n = h2o_strdup(&req->pool, (const char *)name, namelen);
    h2o_iovec_t v = h2o_strdup(&req->pool, (const char *)value, valuelen);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 1, NULL, v.base, v.len);
    return 0;
}

/* HTTP/1.1 clients see a reason phrase; h2 has none. */
static const char *reason_phrase(int st)
{
    static const struct {
        int st;
        const char *r;
    } t[] = {{200, "OK"},
             {201, "Created"},
             {202, "Accepted"},
             {204, "No Content"},
             {206, "Partial Content"},
             {301, "Moved Permanently"},
             {302, "Found"},
             {303, "See Other"},
             {304, "Not Modified"},
             {307, "Temporary Redirect"},
             {308, "Permanent Redirect"},
             {400, "Bad Request"},
             {401, "Unauthorized"},
             {403, "Forbidden"},
             {404, "Not Found"},
             {405, "Method Not Allowed"},
             {409, "Conflict"},
             {413, "Payload Too Large"},
             {422, "Unprocessable Entity"},
             {429, "Too Many Requests"},
             {500, "Internal Server Error"},
             {501, "Not Implemented"},
             {502, "Bad Gateway"},
             {503, "Service Unavailable"},
             {504, "Gateway Timeout"}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (t[i].st == st)
            return t[i].r;
    return st < 300 ? "OK" : st < 400 ? "Redirect" : st < 500 ? "Client Error" : "Server Error";
}

static void start_response(disp_req_t *r)
{
    h2o_req_t *req = r->req;
    req->res.status = r->status;
    req->res.reason = reason_phrase(r->status);
    r->gen.proceed = on_proceed;
    r->gen.stop = on_stop;
    h2o_buffer_init(&r->recv_buf, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&r->send_buf, &h2o_socket_buffer_prototype);
    r->started = 1;
    h2o_start_response(req, &r->gen);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    disp_req_t *r = stream_req(ng, frame->hd.stream_id);
    if (r == NULL || r->req == NULL || r->done)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && !r->started) {
        if (r->status >= 100 && r->status < 200) {
            r->status = 0; /* interim response: wait for the final one */
            return 0;
        }
        /* answering an error may free r (h2o disposes synchronously): return right after */
        if (r->faas_error > 0) {
            int st = r->faas_error;
            disp_req_fail(r, st, st == 504 ? "deadline exceeded" : "function crashed or reset the request");
            return 0;
        }
        if (r->status < 200 || r->status > 999) {
            disp_req_fail(r, 502, "bad response from the function");
            return 0;
        }
        start_response(r);
    }
    if (r->started && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        r->eos = 1;
        send_more(r);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *ud)
{
    disp_req_t *r = stream_req(ng, stream_id);
    /* the connection window is returned at once (a stream that dies with bytes still
     * buffered must not shrink it for good); the stream's waits for the client */
    nghttp2_session_consume_connection(ng, len);
    if (r == NULL || r->req == NULL || !r->started || r->done) {
        nghttp2_session_consume_stream(ng, stream_id, len);
        return 0;
    }
    h2o_iovec_t dst = h2o_buffer_reserve(&r->recv_buf, len);
    memcpy(dst.base, data, len);
    r->recv_buf->size += len;
    send_more(r);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *ud)
{
    disp_req_t *r = stream_req(ng, stream_id);
    if (r == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
    r->stream_id = 0;
    h2o_linklist_unlink(&r->up_link);
    r->up = NULL;
    /* account first: answering may make h2o free the request (and r) synchronously */
    disp_req_finish_upstream(r);
    if (r->req == NULL || r->done)
        return 0;
    if (!r->started)
        disp_req_fail(r, 502,
                      error_code == NGHTTP2_REFUSED_STREAM ? "function refused the request"
                                                           : "function crashed or reset the request");
    else if (!r->eos)
        disp_req_fail(r, 502, "function response broken");
    return 0;
}

/* ---- request side ----------------------------------------------------------- */

static ssize_t read_body(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    disp_req_t *r = stream_req(ng, stream_id);
    if (r == NULL || r->req == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    h2o_iovec_t body = r->req->entity;
    size_t n = body.len - r->body_off;
    if (n > length)
        n = length;
    memcpy(buf, body.base + r->body_off, n);
    r->body_off += n;
    if (r->body_off == body.len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define MKNV(nm, nl, v, vl)                                                                                            \
    (nghttp2_nv)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(nm), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE                                              \
    }

static void submit(disp_up_t *up, disp_req_t *r)
{
    h2o_req_t *req = r->req;
    size_t n = 0, cap = r->nhdrs + 5;
    nghttp2_nv *nv = h2o_mem_alloc_pool(&req->pool, cap * sizeof(*nv));
    nv[n++] = MKNV(":method", 7, req->method.base, req->method.len);
    nv[n++] = MKNV(":scheme", 7, "http", 4);
    nv[n++] = MKNV(":authority", 10, req->authority.base, req->authority.len);
    nv[n++] = MKNV(":path", 5, r->path.base, r->path.len);
    for (size_t i = 0; i < r->nhdrs; i++) {
        const h2o_iovec_t *nm = r->hdrs[i].name;
        nv[n++] = MKNV(nm->base, nm->len, r->hdrs[i].value.base, r->hdrs[i].value.len);
        /* a value unique to each request would only churn both ends' HPACK tables,
         * evicting the headers that do repeat */
        if (nm->len == 15 && memcmp(nm->base, "faas-request-id", 15) == 0)
            nv[n - 1].flags = NGHTTP2_NV_FLAG_NO_INDEX;
    }
    char dl[24];
    uint64_t now = faas_now_ms();
    size_t dlen = faas_fmt_u64(dl, r->deadline_ms > now ? r->deadline_ms - now : 0);
    /* indexed: at ms granularity it is the spec's timeout (e.g. 30000) nearly always */
    nv[n++] = MKNV("faas-deadline-ms", 16, dl, dlen);
    nghttp2_data_provider prov = {.read_callback = read_body};
    int32_t id = nghttp2_submit_request(up->ng, NULL, nv, n, req->entity.base != NULL ? &prov : NULL, r);
    if (id < 0) {
        h2o_linklist_unlink(&r->up_link);
        r->up = NULL;
        disp_req_finish_upstream(r);
        disp_req_fail(r, 502, "cannot open a stream to the function");
        return;
    }
    r->stream_id = id;
    schedule_flush(up);
}

/* ---- connection ------------------------------------------------------------- */

static void up_free(disp_up_t *up)
{
    if (h2o_timeout_is_linked(&up->flush_entry))
        h2o_timeout_unlink(&up->flush_entry);
    if (up->ng != NULL)
        nghttp2_session_del(up->ng);
    h2o_buffer_dispose(&up->wbuf);
    free(up);
}

static void up_kill(disp_up_t *up, const char *why)
{
    if (up->dead)
        return;
    up->dead = 1;
    /* an idle connection closing (its pod released) is routine; one with requests on it is not */
    if (h2o_linklist_is_empty(&up->reqs))
        FAAS_INFO("event=upstream_closed endpoint=%s reason=\"%s\"", up->endpoint, why);
    else
        FAAS_WARN("event=upstream_closed endpoint=%s reason=\"%s\"", up->endpoint, why);
    for (disp_up_t **pp = &disp_g.ups; *pp != NULL; pp = &(*pp)->next)
        if (*pp == up) {
            *pp = up->next;
            break;
        }
    while (!h2o_linklist_is_empty(&up->reqs)) {
        disp_req_t *r = H2O_STRUCT_FROM_MEMBER(disp_req_t, up_link, up->reqs.next);
        h2o_linklist_unlink(&r->up_link);
        if (r->stream_id != 0 && up->ng != NULL)
            nghttp2_session_set_stream_user_data(up->ng, r->stream_id, NULL);
        r->up = NULL;
        r->stream_id = 0;
        disp_req_finish_upstream(r);
        if (r->req != NULL && !r->done && !(r->started && r->eos))
            disp_req_fail(r, 502, "connection to the function lost");
    }
    if (up->sock != NULL) {
        h2o_socket_close(up->sock);
        up->sock = NULL;
    }
    /* callbacks up the stack may still touch up; free it at the end of this iteration */
    if (h2o_timeout_is_linked(&up->flush_entry))
        h2o_timeout_unlink(&up->flush_entry);
    up->flush_entry.cb = on_reap;
    h2o_timeout_link(disp_g.loop, &disp_g.ctx->zero_timeout, &up->flush_entry);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    disp_up_t *up = sock->data;
    if (err != NULL) {
        up_kill(up, "connection closed by the agent");
        return;
    }
    ssize_t n = nghttp2_session_mem_recv(up->ng, (const uint8_t *)sock->input->bytes, sock->input->size);
    if (up->dead)
        return;
    if (n < 0) {
        up_kill(up, nghttp2_strerror((int)n));
        return;
    }
    h2o_buffer_consume(&sock->input, (size_t)n);
    schedule_flush(up);
}

static ssize_t send_cb_unused(nghttp2_session *ng, const uint8_t *d, size_t l, int f, void *ud)
{
    return NGHTTP2_ERR_WOULDBLOCK;
}

static int up_session(disp_up_t *up)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(cb, send_cb_unused);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    /* windows are returned in on_proceed, so a slow client slows the agent down */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rc = nghttp2_session_client_new2(&up->ng, cb, up, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry s[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000},
                                  {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
                                  {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(up->ng, NGHTTP2_FLAG_NONE, s, 3);
    nghttp2_session_set_local_window_size(up->ng, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    return 0;
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
    disp_up_t *up = sock->data;
    if (err != NULL) {
        up_kill(up, "connect failed");
        return;
    }
    if (up_session(up) != 0) {
        up_kill(up, "nghttp2 session");
        return;
    }
    up->connected = 1;
    h2o_socket_read_start(sock, on_read);
    h2o_linklist_t *l = up->reqs.next;
    while (l != &up->reqs) {
        disp_req_t *r = H2O_STRUCT_FROM_MEMBER(disp_req_t, up_link, l);
        l = l->next;
        if (r->stream_id == 0)
            submit(up, r);
    }
    schedule_flush(up);
}

static disp_up_t *up_open(const char *endpoint)
{
    const char *err;
    struct sockaddr_storage ss;
    unsigned sl;
    if (faas_sockaddr_parse(endpoint, "127.0.0.1", &ss, &sl, &err) != 0)
        return NULL;
    disp_up_t *up = calloc(1, sizeof(*up));
    if (up == NULL)
        return NULL;
    snprintf(up->endpoint, sizeof(up->endpoint), "%s", endpoint);
    h2o_linklist_init_anchor(&up->reqs);
    h2o_buffer_init(&up->wbuf, &h2o_socket_buffer_prototype);
    up->flush_entry.cb = on_flush_timer;
    up->sock = h2o_socket_connect(disp_g.loop, (struct sockaddr *)&ss, sl, on_connect);
    if (up->sock == NULL) {
        h2o_buffer_dispose(&up->wbuf);
        free(up);
        return NULL;
    }
    up->sock->data = up;
    /* small HEADERS frames must not wait for ACKs behind Nagle */
    int one = 1;
    setsockopt(h2o_socket_get_fd(up->sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    up->next = disp_g.ups;
    disp_g.ups = up;
    return up;
}

void disp_up_submit(disp_req_t *r, const char *endpoint)
{
    disp_up_t *up = disp_g.ups;
    while (up != NULL && strcmp(up->endpoint, endpoint) != 0)
        up = up->next;
    if (up == NULL && (up = up_open(endpoint)) == NULL) {
        disp_req_finish_upstream(r);
        disp_req_fail(r, 502, "cannot connect to the function");
        return;
    }
    r->up = up;
    h2o_linklist_insert(&up->reqs, &r->up_link);
    if (up->connected)
        submit(up, r);
}

void disp_up_cancel(disp_req_t *r)
{
    disp_up_t *up = r->up;
    if (up == NULL)
        return;
    if (h2o_linklist_is_linked(&r->up_link))
        h2o_linklist_unlink(&r->up_link);
    if (r->stream_id != 0 && up->ng != NULL && !up->dead) {
        nghttp2_session_set_stream_user_data(up->ng, r->stream_id, NULL);
        /* a stream the agent already ended needs no reset */
        if (!r->eos) {
            nghttp2_submit_rst_stream(up->ng, NGHTTP2_FLAG_NONE, r->stream_id, NGHTTP2_CANCEL);
            schedule_flush(up);
        }
    }
    r->stream_id = 0;
    r->up = NULL;
}
