/* gateway/override_epoll.c: the managed epoll set must behave exactly like a plain one
 * for its user (the events it asked for, with its own data, and no others) while
 * dropping and re-adding interest costs no syscall. Each Criterion test runs in its
 * own process, so each arms its own set. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/override_epoll.h"

#if GW_OVERRIDE_EPOLL

static int managed_set(void)
{
    gw_override_epoll_arm();
    int ep = epoll_create(8);
    gw_override_epoll_disarm();
    cr_assert(ep >= 0);
    cr_assert_eq(gw_override_epoll_fd(), ep);
    return ep;
}

static uint64_t real_ctl(void)
{
    gw_override_epoll_stats_t st;
    gw_override_epoll_get_stats(&st);
    return st.real_ctl;
}

static void pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

static int ctl(int ep, int op, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    return epoll_ctl(ep, op, fd, &ev);
}

/* one epoll_wait with no blocking; returns the count, the first event in *out */
static int poll_once(int ep, struct epoll_event *out)
{
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, 0);
    if (n > 0)
        *out = evs[0];
    return n;
}

Test(override_epoll, del_then_add_costs_no_syscall)
{
    int ep = managed_set(), sv[2];
    pair(sv);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, sv[0], EPOLLIN, 0x1234), 0);
    uint64_t base = real_ctl();
    for (int i = 0; i < 100; i++) { /* the HTTP/1 server's pattern: one pair per request */
        cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL), 0);
        cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, sv[0], EPOLLIN, 0x1234), 0);
    }
    cr_assert_eq(real_ctl(), base);
    cr_assert_eq(write(sv[1], "x", 1), 1);
    struct epoll_event ev;
    cr_assert_eq(poll_once(ep, &ev), 1);
    cr_assert_eq(ev.events, EPOLLIN);
    cr_assert_eq(ev.data.u64, 0x1234, "the caller's data comes back, not the shim's");
}

Test(override_epoll, events_after_a_lazy_del_are_hidden_and_stop)
{
    int ep = managed_set(), sv[2];
    pair(sv);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, sv[0], EPOLLIN, 7), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL), 0);
    cr_assert_eq(write(sv[1], "x", 1), 1);
    struct epoll_event ev;
    uint64_t base = real_ctl();
    cr_assert_eq(poll_once(ep, &ev), 0, "the fd is not in the caller's set");
    cr_assert_eq(real_ctl(), base + 1, "the kernel's interest is removed when it fires");
    cr_assert_eq(poll_once(ep, &ev), 0);
    cr_assert_eq(real_ctl(), base + 1, "level-triggered: it must not keep firing");
    /* adding it back delivers the data that waited */
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, sv[0], EPOLLIN, 8), 0);
    cr_assert_eq(poll_once(ep, &ev), 1);
    cr_assert_eq(ev.data.u64, 8);
}

Test(override_epoll, read_interest_drops_lazily_write_interest_at_once)
{
    int ep = managed_set(), sv[2];
    pair(sv);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, sv[0], EPOLLIN | EPOLLOUT, 3), 0);
    struct epoll_event ev;
    cr_assert_eq(poll_once(ep, &ev), 1);
    cr_assert_eq(ev.events, EPOLLOUT, "a fresh socket is writable");
    /* a socket is nearly always writable: a lazy EPOLLOUT would only fire to be hidden */
    uint64_t base = real_ctl();
    cr_assert_eq(ctl(ep, EPOLL_CTL_MOD, sv[0], EPOLLIN, 3), 0);
    cr_assert_eq(real_ctl(), base + 1, "dropping EPOLLOUT is not lazy");
    cr_assert_eq(poll_once(ep, &ev), 0, "EPOLLOUT was dropped");
    /* asking for more than the kernel has is never lazy */
    cr_assert_eq(ctl(ep, EPOLL_CTL_MOD, sv[0], EPOLLIN | EPOLLOUT, 4), 0);
    cr_assert_eq(real_ctl(), base + 2);
    cr_assert_eq(write(sv[1], "x", 1), 1);
    cr_assert_eq(poll_once(ep, &ev), 1);
    cr_assert_eq(ev.events, EPOLLIN | EPOLLOUT);
    cr_assert_eq(ev.data.u64, 4);
    /* dropping EPOLLIN only is lazy; the pending input is then hidden, not delivered */
    cr_assert_eq(ctl(ep, EPOLL_CTL_MOD, sv[0], EPOLLOUT, 5), 0);
    cr_assert_eq(real_ctl(), base + 2);
    cr_assert_eq(poll_once(ep, &ev), 1);
    cr_assert_eq(ev.events, EPOLLOUT, "only what is asked for");
    cr_assert_eq(ev.data.u64, 5);
    cr_assert_eq(real_ctl(), base + 3, "and the kernel's EPOLLIN is gone");
    /* a DEL with EPOLLOUT in the kernel is applied at once too */
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL), 0);
    cr_assert_eq(real_ctl(), base + 4);
}

Test(override_epoll, a_wait_woken_only_by_hidden_events_waits_on)
{
    int ep = managed_set(), a[2], b[2];
    pair(a);
    pair(b);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, a[0], EPOLLIN, 1), 0);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, b[0], EPOLLIN, 2), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, a[0], NULL), 0);
    cr_assert_eq(write(a[1], "x", 1), 1); /* hidden */
    cr_assert_eq(write(b[1], "y", 1), 1); /* delivered */
    struct epoll_event evs[1];            /* room for one: the hidden one may come first */
    int n = epoll_wait(ep, evs, 1, 1000);
    cr_assert_eq(n, 1);
    cr_assert_eq(evs[0].data.u64, 2);
}

Test(override_epoll, hangup_reaches_a_registered_fd_only)
{
    int ep = managed_set(), a[2], b[2];
    pair(a);
    pair(b);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, a[0], EPOLLIN, 1), 0);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, b[0], EPOLLIN, 2), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, b[0], NULL), 0);
    close(a[1]);
    close(b[1]);
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(evs[0].data.u64, 1);
    cr_assert(evs[0].events & (EPOLLIN | EPOLLHUP));
}

Test(override_epoll, close_forgets_the_fd_so_a_reused_number_is_registered_for_real)
{
    int ep = managed_set(), sv[2];
    pair(sv);
    int fd = sv[0];
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, fd, EPOLLIN, 1), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), 0); /* lazy: the kernel still has it */
    close(sv[0]);
    close(sv[1]);
    int nv[2];
    pair(nv);
    cr_assert_eq(nv[0], fd, "the lowest free number comes back");
    uint64_t base = real_ctl();
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, nv[0], EPOLLIN, 2), 0);
    cr_assert_eq(real_ctl(), base + 1, "a new file needs a real ADD");
    cr_assert_eq(write(nv[1], "y", 1), 1);
    struct epoll_event ev;
    cr_assert_eq(poll_once(ep, &ev), 1);
    cr_assert_eq(ev.data.u64, 2);
}

Test(override_epoll, errors_match_the_kernel)
{
    int ep = managed_set(), sv[2];
    pair(sv);
    errno = 0;
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL), -1);
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(ctl(ep, EPOLL_CTL_MOD, sv[0], EPOLLIN, 1), -1);
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, sv[0], EPOLLIN, 1), 0);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, sv[0], EPOLLIN, 1), -1);
    cr_assert_eq(errno, EEXIST);
    /* a lazily removed fd is not in the caller's set any more */
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL), -1);
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(ctl(ep, EPOLL_CTL_ADD, -1, EPOLLIN, 1), -1, "bad fds still fail in the kernel");
    cr_assert_eq(errno, EBADF);
}

Test(override_epoll, other_sets_pass_straight_through)
{
    int ep = managed_set(), sv[2];
    int other = epoll_create(4); /* not armed */
    int other1 = epoll_create1(0);
    cr_assert(other >= 0 && other1 >= 0);
    cr_assert_eq(gw_override_epoll_fd(), ep, "only the first armed set is managed");
    pair(sv);
    uint64_t base = real_ctl();
    cr_assert_eq(ctl(other, EPOLL_CTL_ADD, sv[0], EPOLLIN, 0xabcdef), 0);
    cr_assert_eq(epoll_ctl(other, EPOLL_CTL_DEL, sv[0], NULL), 0);
    cr_assert_eq(write(sv[1], "x", 1), 1);
    struct epoll_event ev;
    cr_assert_eq(poll_once(other, &ev), 0, "a real DEL: nothing fires");
    cr_assert_eq(ctl(other1, EPOLL_CTL_ADD, sv[0], EPOLLIN, 0xabcdef), 0);
    cr_assert_eq(poll_once(other1, &ev), 1);
    cr_assert_eq(ev.data.u64, 0xabcdef);
    cr_assert_eq(real_ctl(), base, "the managed set's counters did not move");
}

Test(override_epoll, release_gives_every_fd_its_own_data_back)
{
    int ep = managed_set();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xabcdefull};
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, sv[0], &ev), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL), 0); /* lazy: the kernel still has it */
    int sv2[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2), 0);
    struct epoll_event ev2 = {.events = EPOLLIN, .data.u64 = 0x123456ull};
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, sv2[0], &ev2), 0);
    gw_override_epoll_release();
    cr_assert_eq(gw_override_epoll_fd(), -1);
    cr_assert_eq(write(sv[1], "x", 1), 1);
    cr_assert_eq(write(sv2[1], "y", 1), 1);
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 100);
    cr_assert_eq(n, 1, "only the fd still registered by its user reports");
    cr_assert_eq(out[0].data.u64, 0x123456ull);
    /* and the set is a plain one now: a DEL is a real DEL */
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, sv2[0], NULL), 0);
    cr_assert_eq(epoll_wait(ep, out, 4, 0), 0);
}

#else

Test(override_epoll, built_without_it_nothing_is_managed)
{
    gw_override_epoll_arm();
    int ep = epoll_create(8);
    gw_override_epoll_disarm();
    cr_assert(ep >= 0);
    cr_assert_eq(gw_override_epoll_fd(), -1);
}

#endif
