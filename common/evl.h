/* common/evl.h - a small single-threaded epoll event loop (the agent's; see
 * runtime-agent/README.md). Level-triggered fd watchers, sockets with a growable input
 * buffer (one read per readiness) and queued writev, non-blocking connect, monotonic
 * millisecond timers (a binary heap), and end-of-iteration hooks for batching sends.
 * Everything runs on the loop's thread; callbacks never block. */
#ifndef FAAS_EVL_H
#define FAAS_EVL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/theap.h"

typedef struct evl_loop evl_loop_t;

/* ---- growable byte buffer: the bytes are base[off .. off+len) ---- */

typedef struct evl_buf {
    char *base;
    size_t off, len, cap;
} evl_buf_t;

/* Room for at least n more bytes at the end; returns where to write them or NULL (OOM).
 * Commit what was written with evl_buf_commit. */
char *evl_buf_reserve(evl_buf_t *b, size_t n);
/* Appends n bytes; 0 or -1 (OOM). */
int evl_buf_append(evl_buf_t *b, const void *p, size_t n);
/* Drops n bytes from the front. */
void evl_buf_consume(evl_buf_t *b, size_t n);
/* Frees the storage (the buffer is empty and reusable afterwards). */
void evl_buf_free(evl_buf_t *b);
/* The first byte. */
static inline char *evl_buf_data(const evl_buf_t *b)
{
    return b->base + b->off;
}
/* Marks n reserved bytes as written. */
static inline void evl_buf_commit(evl_buf_t *b, size_t n)
{
    b->len += n;
}

/* ---- intrusive doubly linked list (anchor: next == prev == itself when empty) ---- */

typedef struct evl_link {
    struct evl_link *next, *prev;
} evl_link_t;

static inline void evl_list_init(evl_link_t *a)
{
    a->next = a->prev = a;
}
static inline int evl_list_empty(const evl_link_t *a)
{
    return a->next == a;
}
/* 1 if l is in a list (links are zeroed or unlinked otherwise). */
static inline int evl_linked(const evl_link_t *l)
{
    return l->next != NULL;
}
/* Inserts l before at (at == anchor: at the tail; at == anchor->next: at the head). */
static inline void evl_list_insert(evl_link_t *at, evl_link_t *l)
{
    l->prev = at->prev;
    l->next = at;
    at->prev->next = l;
    at->prev = l;
}
static inline void evl_list_unlink(evl_link_t *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = NULL;
}
#define EVL_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- the loop ---- */

/* A new loop; NULL on failure. */
evl_loop_t *evl_loop_new(void);
/* Frees the loop (watchers must be stopped first). */
void evl_loop_free(evl_loop_t *loop);
/* Runs one iteration: waits at most max_wait_ms (-1 = until something happens) for fds
 * or timers, dispatches, then runs end-of-iteration hooks. 0 or -1 (epoll failed). */
int evl_run_once(evl_loop_t *loop, int max_wait_ms);
/* The monotonic clock in ms, as of the start of this iteration's dispatch. */
uint64_t evl_now_ms(evl_loop_t *loop);

/* ---- fd watchers (level-triggered) ---- */

enum { EVL_READ = 1, EVL_WRITE = 2 };

typedef struct evl_io evl_io_t;
/* events: EVL_READ / EVL_WRITE bits that are ready (errors and hangups count as both). */
typedef void (*evl_io_cb)(evl_io_t *io, int events);
struct evl_io {
    evl_loop_t *loop;
    int fd;
    int events; /* registered interest */
    int added;  /* known to epoll */
    evl_io_cb cb;
    void *data;
};

/* Watches fd for events (EVL_* bits, may be 0); 0 or -1. */
int evl_io_start(evl_loop_t *loop, evl_io_t *io, int fd, int events, evl_io_cb cb);
/* Changes the interest set; a no-op when unchanged. 0 or -1. */
int evl_io_set(evl_io_t *io, int events);
/* Stops watching (does not close fd). Safe from any callback: pending events for io in
 * this iteration are dropped, so io may be freed right after. */
void evl_io_stop(evl_io_t *io);

/* ---- timers ---- */

/* A common/theap.h timer: at is on the evl_now_ms clock; cb and data are the caller's. */
typedef faas_timer_t evl_timer_t;

/* (Re)arms t to fire once, after_ms from now. 0 or -1 (OOM). */
int evl_timer_start(evl_loop_t *loop, evl_timer_t *t, uint64_t after_ms);
/* Disarms t (no-op when not armed). */
void evl_timer_stop(evl_loop_t *loop, evl_timer_t *t);
static inline int evl_timer_armed(const evl_timer_t *t)
{
    return faas_timer_armed(t);
}

/* ---- end-of-iteration hooks: batch work (e.g. one send per connection per iteration) ---- */

typedef struct evl_defer evl_defer_t;
struct evl_defer {
    evl_link_t link;
    void (*cb)(evl_defer_t *d);
    void *data;
};

/* Runs d->cb once, after this iteration's events (a no-op if already queued). Hooks queued
 * by hooks run in the same pass. */
void evl_defer(evl_loop_t *loop, evl_defer_t *d);
/* Unqueues d (no-op when not queued). */
void evl_defer_cancel(evl_defer_t *d);
static inline int evl_deferred(const evl_defer_t *d)
{
    return evl_linked(&d->link);
}

/* ---- stream sockets ---- */

typedef struct evl_sock evl_sock_t;
/* New bytes are in s->in (err 0), or the peer closed / the socket failed (err: EOF is
 * EVL_EOF, else an errno value; s->in may still hold bytes). */
typedef void (*evl_read_cb)(evl_sock_t *s, int err);
/* Queued bytes were all written (err 0) or writing failed (errno value). */
typedef void (*evl_write_cb)(evl_sock_t *s, int err);
/* A connect finished: err 0 or an errno value. */
typedef void (*evl_connect_cb)(evl_sock_t *s, int err);

enum { EVL_EOF = -1 };

struct evl_sock {
    evl_link_t all; /* first: the loop's list of open sockets points at the block's start */
    evl_io_t io;
    evl_buf_t in;  /* what was read and not consumed by the owner */
    evl_buf_t out; /* what writev could not take at once */
    evl_read_cb on_read;
    evl_write_cb on_write;
    evl_connect_cb on_connect;
    void *data;
    int reading, connecting;
};

/* Wraps a connected non-blocking fd (owned from now on); NULL on OOM (fd closed). */
evl_sock_t *evl_sock_new(evl_loop_t *loop, int fd);
/* Starts a non-blocking TCP connect with TCP_NODELAY; cb runs once from the loop. NULL on
 * immediate failure (errno set). */
evl_sock_t *evl_sock_connect(evl_loop_t *loop, const struct sockaddr *sa, socklen_t len, evl_connect_cb cb);
/* Delivers reads to cb (switching callbacks of a reading socket costs no syscall). */
void evl_sock_read_start(evl_sock_t *s, evl_read_cb cb);
/* Stops reading (backpressure); bytes stay in the kernel. */
void evl_sock_read_stop(evl_sock_t *s);
/* Writes iov (copied where the kernel did not take it). 1: all written now, cb is not
 * called; 0: the rest is queued, cb runs when it is written or fails; -1: failed now
 * (errno set), cb is not called. With bytes already queued the new ones are appended (0). */
int evl_sock_write(evl_sock_t *s, const struct iovec *iov, int n, evl_write_cb cb);
/* Bytes queued and not yet written. */
static inline size_t evl_sock_pending(const evl_sock_t *s)
{
    return s->out.len;
}
/* Closes the fd and frees s; no callback runs afterwards. Safe from any callback. */
void evl_sock_close(evl_sock_t *s);
/* The fd (for setsockopt and the like). */
static inline int evl_sock_fd(const evl_sock_t *s)
{
    return s->io.fd;
}

#endif
