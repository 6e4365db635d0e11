/* common/evl.c - the small epoll loop (see evl.h). Level-triggered: a socket reads once
 * per readiness and gets told again next iteration if more is there, which keeps one
 * busy connection from starving the others. Closed sockets are freed at the end of the
 * iteration, so a callback may close any socket, its own included. */
#include "common/evl.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define READ_MIN 16384 /* free room offered to each read */

struct evl_loop {
    int epfd;
    uint64_t now;
    faas_theap_t timers;
    evl_link_t defers;
    struct epoll_event *ev; /* this iteration's events, for evl_io_stop */
    int nev, cur;
    evl_sock_t *dead; /* closed sockets, freed after dispatch */
    /* open sockets: reachable from the loop, not only through epoll (which LeakSanitizer
     * cannot see), so connections alive at exit are not reported as leaks */
    evl_link_t socks;
};

/* ---- buffers ---- */

char *evl_buf_reserve(evl_buf_t *b, size_t n)
{
    if (b->cap - b->off - b->len >= n)
        return b->base + b->off + b->len;
    if (b->off != 0 && b->cap - b->len >= n && b->len <= b->cap / 2) {
        /* cheaper to slide the few remaining bytes down than to grow */
        memmove(b->base, b->base + b->off, b->len);
        b->off = 0;
        return b->base + b->len;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < n)
        cap *= 2;
    char *nb = malloc(cap);
    if (nb == NULL)
        return NULL;
    if (b->len != 0)
        memcpy(nb, b->base + b->off, b->len);
    free(b->base);
    b->base = nb;
    b->off = 0;
    b->cap = cap;
    return nb + b->len;
}

int evl_buf_append(evl_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    char *d = evl_buf_reserve(b, n);
    if (d == NULL)
        return -1;
    memcpy(d, p, n);
    b->len += n;
    return 0;
}

void evl_buf_consume(evl_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
    b->len -= n;
}

void evl_buf_free(evl_buf_t *b)
{
    free(b->base);
    *b = (evl_buf_t){0};
}

/* ---- loop ---- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

evl_loop_t *evl_loop_new(void)
{
    evl_loop_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    l->now = mono_ms();
    evl_list_init(&l->defers);
    evl_list_init(&l->socks);
    return l;
}

static void free_dead(evl_loop_t *l)
{
    while (l->dead != NULL) {
        evl_sock_t *s = l->dead;
        l->dead = s->data;
        evl_buf_free(&s->in);
        evl_buf_free(&s->out);
        free(s);
    }
}

void evl_loop_free(evl_loop_t *l)
{
    if (l == NULL)
        return;
    free_dead(l);
    close(l->epfd);
    faas_theap_free(&l->timers);
    free(l);
}

uint64_t evl_now_ms(evl_loop_t *l)
{
    return l->now;
}

/* ---- timers (common/theap.c) ---- */

void evl_timer_stop(evl_loop_t *l, evl_timer_t *t)
{
    faas_theap_del(&l->timers, t);
}

int evl_timer_start(evl_loop_t *l, evl_timer_t *t, uint64_t after_ms)
{
    return faas_theap_add(&l->timers, t, mono_ms() + after_ms);
}

static void run_timers(evl_loop_t *l)
{
    evl_timer_t *t;
    while ((t = faas_theap_pop(&l->timers, l->now)) != NULL)
        t->cb(t);
}

/* ---- defers ---- */

void evl_defer(evl_loop_t *l, evl_defer_t *d)
{
    if (!evl_linked(&d->link))
        evl_list_insert(&l->defers, &d->link);
}

void evl_defer_cancel(evl_defer_t *d)
{
    if (evl_linked(&d->link))
        evl_list_unlink(&d->link);
}

static void run_defers(evl_loop_t *l)
{
    while (!evl_list_empty(&l->defers)) {
        evl_defer_t *d = EVL_CONTAINER(l->defers.next, evl_defer_t, link);
        evl_list_unlink(&d->link);
        d->cb(d);
    }
}

/* ---- fd watchers ---- */

static uint32_t ep_bits(int events)
{
    return (events & EVL_READ ? EPOLLIN : 0) | (events & EVL_WRITE ? EPOLLOUT : 0);
}

int evl_io_start(evl_loop_t *l, evl_io_t *io, int fd, int events, evl_io_cb cb)
{
    io->loop = l;
    io->fd = fd;
    io->cb = cb;
    io->events = events;
    struct epoll_event e = {.events = ep_bits(events), .data.ptr = io};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e) != 0)
        return -1;
    io->added = 1;
    return 0;
}

int evl_io_set(evl_io_t *io, int events)
{
    if (events == io->events && io->added)
        return 0;
    io->events = events;
    struct epoll_event e = {.events = ep_bits(events), .data.ptr = io};
    int rc = epoll_ctl(io->loop->epfd, io->added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, io->fd, &e);
    if (rc == 0)
        io->added = 1;
    return rc;
}

void evl_io_stop(evl_io_t *io)
{
    evl_loop_t *l = io->loop;
    if (l == NULL)
        return;
    if (io->added)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->added = 0;
    io->loop = NULL;
    /* events already returned for io in this iteration must not reach it */
    for (int i = l->cur + 1; i < l->nev; i++)
        if (l->ev[i].data.ptr == io)
            l->ev[i].data.ptr = NULL;
}

int evl_run_once(evl_loop_t *l, int max_wait_ms)
{
    struct epoll_event ev[MAX_EVENTS];
    int wait = max_wait_ms;
    if (!evl_list_empty(&l->defers) || l->dead != NULL) {
        wait = 0;
    } else if (l->timers.n != 0) {
        uint64_t now = mono_ms(), at = faas_theap_next(&l->timers);
        uint64_t d = at > now ? at - now : 0;
        if (wait < 0 || d < (uint64_t)wait)
            wait = (int)(d > INT32_MAX ? INT32_MAX : d);
    }
    int n = epoll_wait(l->epfd, ev, MAX_EVENTS, wait);
    if (n < 0 && errno != EINTR)
        return -1;
    l->now = mono_ms();
    l->ev = ev;
    l->nev = n < 0 ? 0 : n;
    for (l->cur = 0; l->cur < l->nev; l->cur++) {
        evl_io_t *io = ev[l->cur].data.ptr;
        if (io == NULL)
            continue;
        uint32_t e = ev[l->cur].events;
        int bits = (e & EPOLLIN ? EVL_READ : 0) | (e & EPOLLOUT ? EVL_WRITE : 0);
        if (e & (EPOLLERR | EPOLLHUP)) {
            bits = EVL_READ | EVL_WRITE;
            if (io->events == 0) { /* nobody listens: stop the level-triggered hangup spinning */
                epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
                io->added = 0;
            }
        }
        io->cb(io, bits);
    }
    l->nev = 0;
    l->ev = NULL;
    run_timers(l);
    run_defers(l);
    free_dead(l);
    return 0;
}

/* ---- sockets ---- */

static int sock_interest(const evl_sock_t *s)
{
    return (s->reading && !s->connecting ? EVL_READ : 0) | (s->connecting || s->out.len != 0 ? EVL_WRITE : 0);
}

/* Writes what is queued; 1 when empty, 0 when more is left, -1 on error. */
static int flush_out(evl_sock_t *s)
{
    while (s->out.len != 0) {
        ssize_t n = send(s->io.fd, evl_buf_data(&s->out), s->out.len, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        evl_buf_consume(&s->out, (size_t)n);
    }
    return 1;
}

static void sock_read(evl_sock_t *s)
{
    char *p = evl_buf_reserve(&s->in, READ_MIN);
    if (p == NULL) {
        s->on_read(s, ENOMEM);
        return;
    }
    size_t room = s->in.cap - s->in.off - s->in.len;
    ssize_t n = read(s->io.fd, p, room);
    if (n > 0) {
        s->in.len += (size_t)n;
        s->on_read(s, 0);
    } else if (n == 0) {
        s->on_read(s, EVL_EOF);
    } else if (errno != EAGAIN && errno != EINTR) {
        s->on_read(s, errno);
    }
}

static void on_sock_io(evl_io_t *io, int events)
{
    evl_sock_t *s = EVL_CONTAINER(io, evl_sock_t, io);
    if (s->connecting) {
        if (!(events & EVL_WRITE))
            return;
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
            err = errno;
        s->connecting = 0;
        evl_io_set(io, sock_interest(s));
        s->on_connect(s, err);
        return; /* reads and writes get their turn next iteration */
    }
    if ((events & EVL_WRITE) && s->out.len != 0) {
        int r = flush_out(s);
        if (r != 0) {
            evl_io_set(io, sock_interest(s));
            if (s->on_write != NULL)
                s->on_write(s, r < 0 ? errno : 0);
            if (s->io.fd < 0)
                return;
        }
    }
    if ((events & EVL_READ) && s->reading)
        sock_read(s);
}

static evl_sock_t *sock_alloc(evl_loop_t *l, int fd)
{
    evl_sock_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(fd);
        return NULL;
    }
    s->io.fd = fd;
    s->io.loop = l;
    evl_list_insert(&l->socks, &s->all);
    return s;
}

evl_sock_t *evl_sock_new(evl_loop_t *l, int fd)
{
    evl_sock_t *s = sock_alloc(l, fd);
    if (s == NULL)
        return NULL;
    if (evl_io_start(l, &s->io, fd, 0, on_sock_io) != 0) {
        evl_list_unlink(&s->all);
        close(fd);
        free(s);
        return NULL;
    }
    return s;
}

evl_sock_t *evl_sock_connect(evl_loop_t *l, const struct sockaddr *sa, socklen_t len, evl_connect_cb cb)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return NULL;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    evl_sock_t *s = sock_alloc(l, fd);
    if (s == NULL)
        return NULL;
    s->connecting = 1;
    s->on_connect = cb;
    if (evl_io_start(l, &s->io, fd, EVL_WRITE, on_sock_io) != 0) {
        evl_list_unlink(&s->all);
        close(fd);
        free(s);
        return NULL;
    }
    return s;
}

void evl_sock_read_start(evl_sock_t *s, evl_read_cb cb)
{
    s->on_read = cb;
    if (s->reading)
        return;
    s->reading = 1;
    evl_io_set(&s->io, sock_interest(s));
}

void evl_sock_read_stop(evl_sock_t *s)
{
    if (!s->reading)
        return;
    s->reading = 0;
    evl_io_set(&s->io, sock_interest(s));
}

int evl_sock_write(evl_sock_t *s, const struct iovec *iov, int n, evl_write_cb cb)
{
    s->on_write = cb;
    int i = 0;
    size_t skip = 0;
    if (s->out.len == 0 && !s->connecting) {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(s->io.fd, &mh, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        size_t left = w < 0 ? 0 : (size_t)w;
        for (; i < n && left >= iov[i].iov_len; i++)
            left -= iov[i].iov_len;
        if (i == n)
            return 1;
        skip = left;
    }
    for (; i < n; i++, skip = 0)
        if (evl_buf_append(&s->out, (const char *)iov[i].iov_base + skip, iov[i].iov_len - skip) != 0)
            return errno = ENOMEM, -1;
    evl_io_set(&s->io, sock_interest(s));
    return 0;
}

void evl_sock_close(evl_sock_t *s)
{
    if (s->io.fd < 0)
        return;
    evl_loop_t *l = s->io.loop;
    evl_io_stop(&s->io);
    evl_list_unlink(&s->all);
    close(s->io.fd);
    s->io.fd = -1;
    s->on_read = NULL;
    s->on_write = NULL;
    /* freed after this iteration: the caller may still be inside one of s's callbacks */
    s->data = l->dead;
    l->dead = s;
}
