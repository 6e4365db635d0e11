/* runtime-agent/grpc_health.c - GRPC_HEALTH readiness: one grpc.health.v1.Health/Check
 * call (empty service name = the whole server) over the probe's connection. A server
 * without the health service (UNIMPLEMENTED) or one that does not speak h2 is ready
 * when its port accepts, as the HealthCheck kind documents. */
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "runtime-agent/grpc.h"

typedef struct {
    evl_sock_t *sock;
    nghttp2_session *ng;
    void (*done)(evl_sock_t *sock, int ok);
    uint8_t body[64];
    size_t body_len;
    int status; /* grpc-status, -1 none yet */
    int finished, writing;
    size_t sent;
} hc_t;

static hc_t *cur; /* one probe at a time */

int agent_grpc_health_serving(const uint8_t *b, size_t len)
{
    if (len < 5 || b[0] != 0)
        return 0;
    uint32_t ml = (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4];
    if (ml != len - 5)
        return 0;
    /* HealthCheckResponse { ServingStatus status = 1; } SERVING = 1; other fields skipped */
    size_t i = 5;
    int serving = 0;
    while (i < len) {
        uint8_t key = b[i++];
        if ((key & 7) == 0) {
            uint64_t v = 0;
            int sh = 0;
            while (i < len && sh < 64) {
                v |= (uint64_t)(b[i] & 0x7f) << sh;
                sh += 7;
                if (!(b[i++] & 0x80))
                    break;
            }
            if (key >> 3 == 1)
                serving = v == 1;
        } else if ((key & 7) == 2 && i < len) {
            size_t l = b[i++];
            if (l > len - i)
                return 0;
            i += l;
        } else {
            return 0;
        }
    }
    return serving;
}

static void finish(hc_t *h, int ok)
{
    if (h->finished)
        return;
    h->finished = 1;
    evl_sock_read_stop(h->sock);
    h->done(h->sock, ok); /* closes the socket */
}

static void hc_free(hc_t *h)
{
    if (h->ng != NULL)
        nghttp2_session_del(h->ng);
    free(h);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl, const uint8_t *value,
                     size_t vl, uint8_t flags, void *ud)
{
    hc_t *h = ud;
    if (nl == 11 && memcmp(name, "grpc-status", 11) == 0) {
        h->status = 0;
        for (size_t i = 0; i < vl && i < 3; i++)
            h->status = h->status * 10 + (value[i] - '0');
    }
    return 0;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *d, size_t len, void *ud)
{
    hc_t *h = ud;
    size_t n = len < sizeof(h->body) - h->body_len ? len : sizeof(h->body) - h->body_len;
    memcpy(h->body + h->body_len, d, n);
    h->body_len += n;
    return 0;
}

static int on_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    hc_t *h = ud;
    if (h->status == 12)
        finish(h, 1); /* no health service: the accepted connection says ready */
    else
        finish(h, h->status == 0 && agent_grpc_health_serving(h->body, h->body_len));
    return 0;
}

static ssize_t read_req(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    static const uint8_t empty_req[5] = {0, 0, 0, 0, 0};
    memcpy(buf, empty_req, 5);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return 5;
}

static void flush(hc_t *h);

static void on_written(evl_sock_t *sock, int err)
{
    hc_t *h = sock->data;
    h->writing = 0;
    if (err != 0) {
        finish(h, 1); /* accepted, then refused h2: not a gRPC-aware peer, TCP semantics */
        return;
    }
    flush(h);
}

static void flush(hc_t *h)
{
    if (h->finished || h->writing)
        return;
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(h->ng, &data);
    if (n < 0) {
        finish(h, 0);
        return;
    }
    if (n == 0)
        return;
    /* evl copies what the kernel does not take at once */
    struct iovec v = {(void *)data, (size_t)n};
    int r = evl_sock_write(h->sock, &v, 1, on_written);
    if (r < 0) {
        finish(h, 1); /* accepted, then refused h2: not a gRPC-aware peer, TCP semantics */
        return;
    }
    h->writing = r == 0;
    if (r == 1)
        flush(h);
}

static void on_read(evl_sock_t *sock, int err)
{
    hc_t *h = sock->data;
    if (err != 0) {
        /* closed before any gRPC answer: it does not speak h2, the accept is the signal */
        finish(h, h->status < 0);
        return;
    }
    ssize_t n = nghttp2_session_mem_recv(h->ng, (const uint8_t *)evl_buf_data(&sock->in), sock->in.len);
    if (h->finished)
        return;
    if (n < 0) {
        finish(h, 1); /* not HTTP/2: TCP semantics */
        return;
    }
    evl_buf_consume(&sock->in, (size_t)n);
    flush(h);
}

static ssize_t send_unused(nghttp2_session *ng, const uint8_t *d, size_t l, int f, void *ud)
{
    return NGHTTP2_ERR_WOULDBLOCK;
}

#define NV(n, v)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE                             \
    }

void agent_grpc_health_start(evl_sock_t *sock, void (*done)(evl_sock_t *sock, int ok))
{
    if (cur != NULL) {
        hc_free(cur); /* the previous probe's socket was closed by its owner */
        cur = NULL;
    }
    hc_t *h = calloc(1, sizeof(*h));
    nghttp2_session_callbacks *cb = NULL;
    if (h == NULL || nghttp2_session_callbacks_new(&cb) != 0) {
        free(h);
        done(sock, 0);
        return;
    }
    h->sock = sock;
    h->done = done;
    h->status = -1;
    nghttp2_session_callbacks_set_send_callback(cb, send_unused);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    int rc = nghttp2_session_client_new(&h->ng, cb, h);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) {
        free(h);
        done(sock, 0);
        return;
    }
    cur = h;
    nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, NULL, 0);
    nghttp2_nv nv[] = {NV(":method", "POST"),
                       NV(":scheme", "http"),
                       NV(":authority", "localhost"),
                       NV(":path", "/grpc.health.v1.Health/Check"),
                       NV("content-type", "application/grpc"),
                       NV("te", "trailers")};
    nghttp2_data_provider prov = {.read_callback = read_req};
    nghttp2_submit_request(h->ng, NULL, nv, sizeof(nv) / sizeof(nv[0]), &prov, NULL);
    sock->data = h;
    evl_sock_read_start(sock, on_read);
    flush(h);
}
