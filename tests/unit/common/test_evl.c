/* The agent's event loop, on real sockets: reads, queued writes under backpressure,
 * connects (accepted and refused), timers, end-of-iteration hooks, closing from callbacks. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/evl.h"

static void pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static int got_err = 99, reads;

static void on_read(evl_sock_t *s, int err)
{
    reads++;
    got_err = err;
}

static void run_until(evl_loop_t *l, int *flag, int want)
{
    for (int i = 0; i < 200 && *flag != want; i++)
        evl_run_once(l, 10);
    cr_assert_eq(*flag, want);
}

Test(evl, buffer_grows_consumes_and_slides)
{
    evl_buf_t b = {0};
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(evl_buf_append(&b, "0123456789", 10), 0);
    cr_assert_eq(b.len, 10000);
    cr_assert_eq(memcmp(evl_buf_data(&b) + 9990, "0123456789", 10), 0);
    evl_buf_consume(&b, 9995);
    cr_assert_eq(memcmp(evl_buf_data(&b), "56789", 5), 0);
    size_t cap = b.cap;
    char *p = evl_buf_reserve(&b, cap - 10);
    cr_assert_not_null(p);
    cr_assert_eq(b.cap, cap, "sliding, not growing, when few bytes remain");
    cr_assert_eq(memcmp(evl_buf_data(&b), "56789", 5), 0);
    evl_buf_consume(&b, 100);
    cr_assert_eq(b.len, 0);
    evl_buf_free(&b);
}

Test(evl, socket_reads_and_eof)
{
    evl_loop_t *l = evl_loop_new();
    int sv[2];
    pair(sv);
    evl_sock_t *s = evl_sock_new(l, sv[0]);
    evl_sock_read_start(s, on_read);
    reads = 0;
    cr_assert_eq(write(sv[1], "hello", 5), 5);
    run_until(l, &reads, 1);
    cr_assert_eq(got_err, 0);
    cr_assert_eq(s->in.len, 5);
    cr_assert_eq(memcmp(evl_buf_data(&s->in), "hello", 5), 0);
    close(sv[1]);
    run_until(l, &reads, 2);
    cr_assert_eq(got_err, EVL_EOF);
    evl_sock_close(s);
    evl_run_once(l, 0);
    evl_loop_free(l);
}

static int written, write_err = 99;
static void on_written(evl_sock_t *s, int err)
{
    written++;
    write_err = err;
}

Test(evl, queued_writes_drain_under_backpressure)
{
    evl_loop_t *l = evl_loop_new();
    int sv[2];
    pair(sv);
    evl_sock_t *s = evl_sock_new(l, sv[0]);
    static char big[4 << 20];
    memset(big, 'x', sizeof(big));
    big[sizeof(big) - 1] = 'y';
    struct iovec iov[2] = {{"head:", 5}, {big, sizeof(big)}};
    written = 0;
    cr_assert_eq(evl_sock_write(s, iov, 2, on_written), 0, "4 MiB cannot go at once");
    cr_assert_gt(evl_sock_pending(s), 0);
    memset(big, 'z', 10); /* the queued copy is independent of the caller's buffer */
    size_t got = 0;
    char tail = 0, first[5];
    while (written == 0) {
        evl_run_once(l, 5);
        char rb[65536];
        ssize_t n;
        while ((n = read(sv[1], rb, sizeof(rb))) > 0) {
            if (got < 5)
                memcpy(first, rb, 5);
            got += (size_t)n;
            tail = rb[n - 1];
        }
    }
    char rb[65536];
    ssize_t n;
    while ((n = read(sv[1], rb, sizeof(rb))) > 0)
        got += (size_t)n, tail = rb[n - 1];
    cr_assert_eq(write_err, 0);
    cr_assert_eq(got, sizeof(big) + 5);
    cr_assert_eq(memcmp(first, "head:", 5), 0);
    cr_assert_eq(tail, 'y');
    struct iovec one = {"small", 5};
    cr_assert_eq(evl_sock_write(s, &one, 1, on_written), 1, "an empty queue and room: written now");
    close(sv[1]);
    cr_assert_eq(evl_sock_write(s, &one, 1, on_written), -1, "peer gone: fails now");
    cr_assert(errno == EPIPE || errno == ECONNRESET);
    evl_sock_close(s);
    evl_run_once(l, 0);
    evl_loop_free(l);
}

static int connected, connect_err = 99;
static void on_connect(evl_sock_t *s, int err)
{
    connected++;
    connect_err = err;
}

Test(evl, connect_accepted_and_refused)
{
    evl_loop_t *l = evl_loop_new();
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    getsockname(lfd, (struct sockaddr *)&sin, &sl);
    connected = 0;
    evl_sock_t *s = evl_sock_connect(l, (struct sockaddr *)&sin, sl, on_connect);
    cr_assert_not_null(s);
    run_until(l, &connected, 1);
    cr_assert_eq(connect_err, 0);
    int afd = accept(lfd, NULL, NULL);
    cr_assert_geq(afd, 0);
    struct iovec v = {"ping", 4};
    cr_assert_eq(evl_sock_write(s, &v, 1, on_written), 1);
    char rb[8];
    cr_assert_eq(read(afd, rb, sizeof(rb)), 4);
    evl_sock_close(s);
    close(afd);
    close(lfd); /* nothing listens there now */
    evl_sock_t *r = evl_sock_connect(l, (struct sockaddr *)&sin, sl, on_connect);
    if (r != NULL) {
        run_until(l, &connected, 2);
        cr_assert_eq(connect_err, ECONNREFUSED);
        evl_sock_close(r);
    }
    evl_run_once(l, 0);
    evl_loop_free(l);
}

static int order[8], norder;
static void tcb(evl_timer_t *t)
{
    order[norder++] = (int)(intptr_t)t->data;
}

Test(evl, timers_fire_in_order_and_stop)
{
    evl_loop_t *l = evl_loop_new();
    evl_timer_t t[4] = {{.cb = tcb, .data = (void *)1},
                        {.cb = tcb, .data = (void *)2},
                        {.cb = tcb, .data = (void *)3},
                        {.cb = tcb, .data = (void *)4}};
    norder = 0;
    evl_timer_start(l, &t[2], 30);
    evl_timer_start(l, &t[0], 5);
    evl_timer_start(l, &t[1], 15);
    evl_timer_start(l, &t[3], 20);
    evl_timer_stop(l, &t[3]);
    cr_assert(!evl_timer_armed(&t[3]));
    evl_timer_start(l, &t[0], 1); /* re-arming moves it */
    uint64_t t0 = evl_now_ms(l);
    while (norder < 3)
        evl_run_once(l, -1);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 2);
    cr_assert_eq(order[2], 3);
    cr_assert_geq(evl_now_ms(l) - t0, 30);
    cr_assert(!evl_timer_armed(&t[2]));
    evl_loop_free(l);
}

static int deferred_runs;
static evl_loop_t *dl;
static void dcb2(evl_defer_t *d)
{
    deferred_runs += 10;
}
static evl_defer_t d2 = {.cb = dcb2};
static void dcb(evl_defer_t *d)
{
    deferred_runs++;
    evl_defer(dl, &d2); /* queued by a hook: same pass */
}

Test(evl, defers_run_once_per_queueing)
{
    dl = evl_loop_new();
    evl_defer_t d = {.cb = dcb};
    deferred_runs = 0;
    evl_defer(dl, &d);
    evl_defer(dl, &d);
    cr_assert(evl_deferred(&d));
    evl_run_once(dl, 1000); /* does not wait: work is queued */
    cr_assert_eq(deferred_runs, 11);
    evl_defer(dl, &d);
    evl_defer_cancel(&d);
    evl_run_once(dl, 0);
    cr_assert_eq(deferred_runs, 11);
    evl_loop_free(dl);
}

static evl_sock_t *socks[2];
static int close_cbs;
/* each socket's callback closes the other one, whose event is in the same batch */
static void on_read_close_other(evl_sock_t *s, int err)
{
    close_cbs++;
    evl_sock_t *other = s == socks[0] ? socks[1] : socks[0];
    evl_sock_close(other);
    evl_sock_close(s);
}

Test(evl, closing_sockets_from_callbacks_is_safe)
{
    evl_loop_t *l = evl_loop_new();
    int a[2], b[2];
    pair(a);
    pair(b);
    socks[0] = evl_sock_new(l, a[0]);
    socks[1] = evl_sock_new(l, b[0]);
    evl_sock_read_start(socks[0], on_read_close_other);
    evl_sock_read_start(socks[1], on_read_close_other);
    cr_assert_eq(write(a[1], "x", 1), 1);
    cr_assert_eq(write(b[1], "y", 1), 1);
    close_cbs = 0;
    evl_run_once(l, 100);
    cr_assert_eq(close_cbs, 1, "the second event was dropped with its socket");
    evl_run_once(l, 0);
    close(a[1]);
    close(b[1]);
    evl_loop_free(l);
}

static int io_hits;
static void on_io(evl_io_t *io, int ev)
{
    io_hits++;
    char c;
    if (read(io->fd, &c, 1) <= 0)
        evl_io_stop(io);
}

Test(evl, io_watchers_and_read_stop_backpressure)
{
    evl_loop_t *l = evl_loop_new();
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    evl_io_t io = {0};
    cr_assert_eq(evl_io_start(l, &io, p[0], EVL_READ, on_io), 0);
    io_hits = 0;
    cr_assert_eq(write(p[1], "ab", 2), 2);
    evl_run_once(l, 100);
    evl_run_once(l, 100);
    cr_assert_eq(io_hits, 2, "level-triggered: one byte per readiness, told again");
    close(p[1]);
    evl_run_once(l, 100);
    cr_assert_eq(io_hits, 3);
    cr_assert_null(io.loop, "stopped on EOF");
    close(p[0]);

    int sv[2];
    pair(sv);
    evl_sock_t *s = evl_sock_new(l, sv[0]);
    evl_sock_read_start(s, on_read);
    reads = 0;
    cr_assert_eq(write(sv[1], "1", 1), 1);
    run_until(l, &reads, 1);
    evl_sock_read_stop(s);
    cr_assert_eq(write(sv[1], "2", 1), 1);
    evl_run_once(l, 20);
    cr_assert_eq(reads, 1, "not reading: bytes wait in the kernel");
    evl_sock_read_start(s, on_read);
    run_until(l, &reads, 2);
    cr_assert_eq(s->in.len, 2);
    evl_sock_close(s);
    close(sv[1]);
    evl_run_once(l, 0);
    evl_loop_free(l);
}
