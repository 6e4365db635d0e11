/* tests/bench/thrift_userd.c - a minimal native Thrift server for the benchmark:
 * framed TBinaryProtocol, single-threaded epoll, answers every CALL of a method
 * with two i32 fields (Calculator.add) with their sum. It exists so that the
 * platform's own overhead shows; the python3-thrift server saturates far earlier.
 * Listens on 127.0.0.1:$PORT (or argv[1]). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFSZ (1 << 16)

typedef struct {
    int fd;
    uint8_t in[BUFSZ];
    size_t have;
} conn_t;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Builds the reply to one framed call in out; returns its length or 0 (oneway / bad). */
static size_t answer(const uint8_t *m, size_t len, uint8_t *out)
{
    if (len < 12 || be32(m) >> 16 != 0x8001)
        return 0;
    uint32_t type = be32(m) & 0xff, nl = be32(m + 4);
    if (type != 1 || 8 + (size_t)nl + 4 > len)
        return 0;
    const uint8_t *name = m + 8;
    uint32_t seq = be32(m + 8 + nl);
    size_t o = 12 + nl;
    int32_t sum = 0;
    while (o < len && m[o] != 0) {
        if (m[o] != 8 || o + 7 > len)
            return 0; /* only i32 arguments in this benchmark */
        sum += (int32_t)be32(m + o + 3);
        o += 7;
    }
    size_t w = 4;
    put32(out + w, 0x80010002u), w += 4;
    put32(out + w, nl), w += 4;
    memcpy(out + w, name, nl), w += nl;
    put32(out + w, seq), w += 4;
    out[w++] = 8, out[w++] = 0, out[w++] = 0;
    put32(out + w, (uint32_t)sum), w += 4;
    out[w++] = 0;
    put32(out, (uint32_t)(w - 4));
    return w;
}

static void serve(int ep, conn_t *c)
{
    ssize_t r = read(c->fd, c->in + c->have, BUFSZ - c->have);
    if (r <= 0) {
        if (r < 0 && errno == EAGAIN)
            return;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        free(c);
        return;
    }
    c->have += (size_t)r;
    static uint8_t out[BUFSZ * 2];
    size_t o = 0, p = 0;
    while (c->have - p >= 4) {
        uint32_t len = be32(c->in + p);
        if (len > BUFSZ - 4) {
            c->have = p = 0;
            break;
        }
        if (c->have - p < 4 + (size_t)len)
            break;
        o += answer(c->in + p + 4, len, out + o);
        p += 4 + len;
    }
    memmove(c->in, c->in + p, c->have - p);
    c->have -= p;
    size_t done = 0;
    while (done < o) { /* replies are small: a blocking-ish loop is fine for a bench server */
        ssize_t w = write(c->fd, out + done, o - done);
        if (w < 0 && errno == EAGAIN)
            continue;
        if (w <= 0)
            return;
        done += (size_t)w;
    }
}

int main(int argc, char **argv)
{
    const char *ps = argc > 1 ? argv[1] : getenv("PORT");
    int port = ps ? atoi(ps) : 9090, one = 1;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(ls, 1024) != 0) {
        perror("thrift_userd: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    conn_t *c = calloc(1, sizeof(*c));
                    c->fd = fd;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            serve(ep, evs[i].data.ptr);
        }
    }
}
