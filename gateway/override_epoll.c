/* gateway/override_epoll.c - lazy interest removal for the h2o loop's epoll set.
 *
 * Why: h2o 2.2.5's HTTP/1 server stops reading a connection while it handles a
 * request and starts again once the response is written; its epoll backend turns
 * that into EPOLL_CTL_DEL + EPOLL_CTL_ADD, two syscalls per request. On this PVM
 * guest every syscall is expensive: they were ~20% of the gateway's CPU at c16.
 * A keep-alive client sends nothing while it waits for its response, so keeping
 * the kernel's interest in place costs nothing as long as an event h2o did not ask
 * for is never handed to it.
 *
 * How: the executable defines epoll_create, epoll_ctl, epoll_wait and close, which
 * the dynamic linker binds ahead of libc's for every caller (libh2o included); each
 * forwards to the next definition (libc, or a sanitizer's interceptor) and only
 * the one epoll set created between gw_override_epoll_arm() and _disarm() on the
 * calling thread is managed, every other call passes straight through:
 *  - a removal of read interest (DEL, or MOD to fewer events) is only recorded;
 *    dropping EPOLLOUT is applied at once (a socket is nearly always writable, so
 *    a lazy one would only come back as an event to hide);
 *  - an addition the kernel already has (ADD after a lazy DEL, MOD back to IN)
 *    is only recorded too; anything else goes to the kernel, with exactly the
 *    events asked for;
 *  - the kernel's data is the fd with the top bit set (user pointers never have
 *    it), so epoll_wait can find the fd's state, drop the events h2o no longer
 *    wants (and then really remove that interest, once: the set is level
 *    triggered) and give h2o back its own data;
 *  - close() forgets the fd, whose registration the kernel drops with the file.
 * Only level-triggered interest is made lazy (h2o uses nothing else); fds above
 * the table's size (RLIMIT_NOFILE when armed) pass straight through. The fd must
 * not be dup'ed (the kernel would keep the registration past close); h2o does not.
 *
 * Threads: each gateway loop thread arms its own set (one per loop, --threads); a
 * set is used by its loop thread only, and an fd is in one set at a time (h2o gives
 * each socket one loop), so the table indexed by fd is shared and each entry is
 * touched by one thread. close() may run on any thread but only touches the entry of
 * the fd it closes, which no other thread can be using at that moment.
 *
 * It is tied to how h2o 2.2.5's epoll backend drives its set, so it is a build option
 * (OVERRIDE_EPOLL, on by default) and gw_run checks it against h2o at start-up. */
#include "gateway/override_epoll.h"

#if GW_OVERRIDE_EPOLL

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#define LEP_TAG (1ULL << 63)
#define LEP_MAX_FDS (1 << 20)
/* the bits whose interest can be kept lazily; anything else is applied exactly */
#define LEP_LAZY_BITS ((uint32_t)(EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP))
/* interest that must not linger in the kernel once dropped */
#define LEP_EAGER_DROP ((uint32_t)EPOLLOUT)
#define LEP_ALWAYS ((uint32_t)(EPOLLERR | EPOLLHUP))

typedef struct {
    uint64_t data;   /* what the library registered */
    uint32_t want;   /* events the library asked for (0 if it thinks the fd is not in the set) */
    uint32_t have;   /* events the kernel has */
    uint8_t lib_reg; /* the library believes the fd is in the set */
    uint8_t kern_reg;
    int owner; /* the managed set it is registered in, + 1; 0: none */
} lep_fd_t;

/* made by the first armed epoll_create (before any other loop thread runs) */
static lep_fd_t *g_fds;
static uint8_t *g_set; /* g_set[ep]: ep is a managed set */
static int g_nfds;
static int g_off; /* released: no set is managed, none will be */
static __thread int t_armed;
static __thread int t_ep = -1;
static __thread gw_override_epoll_stats_t g_stats;

static int (*real_epoll_create)(int);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*real_epoll_wait)(int, struct epoll_event *, int, int);
static int (*real_close)(int);

/* Resolved on first use: close() may run before any constructor of ours. */
static void *next_sym(void **slot, const char *name)
{
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (p == NULL) {
        p = dlsym(RTLD_NEXT, name);
        if (p == NULL)
            abort(); /* no libc underneath: nothing sensible is left to do */
        __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    return p;
}
#define NEXT(fn) ((__typeof__(real_##fn))next_sym((void **)&real_##fn, #fn))

static int is_set(int ep)
{
    return ep >= 0 && ep < __atomic_load_n(&g_nfds, __ATOMIC_ACQUIRE) && __atomic_load_n(&g_set[ep], __ATOMIC_ACQUIRE);
}

static lep_fd_t *managed(int ep, int fd)
{
    if (!is_set(ep) || fd < 0 || fd >= g_nfds)
        return NULL;
    lep_fd_t *s = &g_fds[fd];
    if (s->owner != 0 && s->owner != ep + 1)
        return NULL; /* registered in another loop's set: never done by h2o, passed through */
    return s;
}

void gw_override_epoll_arm(void)
{
    t_armed = 1;
}

void gw_override_epoll_disarm(void)
{
    t_armed = 0;
}

int gw_override_epoll_fd(void)
{
    return t_ep;
}

void gw_override_epoll_get_stats(gw_override_epoll_stats_t *out)
{
    *out = g_stats;
}

static void adopt(int ep)
{
    if (g_fds == NULL) {
        struct rlimit rl;
        rlim_t n = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
        if (n == RLIM_INFINITY || n > LEP_MAX_FDS)
            n = LEP_MAX_FDS;
        /* calloc of this size is fresh zero pages: only the fds in use cost memory */
        lep_fd_t *t = calloc((size_t)n, sizeof(*t));
        uint8_t *sets = calloc((size_t)n, 1);
        if (t == NULL || sets == NULL) {
            free(t);
            free(sets);
            return; /* stay a plain pass-through */
        }
        g_fds = t;
        g_set = sets;
        __atomic_store_n(&g_nfds, (int)n, __ATOMIC_RELEASE);
    }
    if (ep >= g_nfds)
        return;
    __atomic_store_n(&g_set[ep], 1, __ATOMIC_RELEASE);
    t_ep = ep;
}

int epoll_create(int size)
{
    int ep = NEXT(epoll_create)(size);
    if (ep >= 0 && t_armed && t_ep < 0 && !__atomic_load_n(&g_off, __ATOMIC_ACQUIRE))
        adopt(ep);
    return ep;
}

/* Makes the kernel's interest exactly s->want (removing the fd if that is 0). */
static int sync_kernel(int ep, int fd, lep_fd_t *s)
{
    struct epoll_event ev = {.events = s->want, .data.u64 = LEP_TAG | (uint64_t)fd};
    int op = s->want == 0 ? EPOLL_CTL_DEL : s->kern_reg ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    g_stats.real_ctl++;
    int rc = NEXT(epoll_ctl)(ep, op, fd, &ev);
    if (rc != 0 && op == EPOLL_CTL_MOD && errno == ENOENT) {
        /* the fd was closed and reused behind close(), e.g. by dup2: start afresh */
        g_stats.real_ctl++;
        op = EPOLL_CTL_ADD;
        rc = NEXT(epoll_ctl)(ep, op, fd, &ev);
    }
    if (rc != 0)
        return rc;
    s->kern_reg = op != EPOLL_CTL_DEL;
    s->have = s->want;
    return 0;
}

int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
    lep_fd_t *s = managed(ep, fd);
    if (s == NULL)
        return NEXT(epoll_ctl)(ep, op, fd, ev);
    g_stats.lib_ctl++;
    if (op == EPOLL_CTL_DEL) {
        if (!s->lib_reg) {
            errno = ENOENT;
            return -1;
        }
        s->lib_reg = 0;
        s->want = 0;
        if ((s->have & LEP_EAGER_DROP) != 0 && sync_kernel(ep, fd, s) != 0)
            return -1;
        return 0; /* lazily: the kernel keeps read interest until an event shows up */
    }
    if ((op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD) || ev == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (op == EPOLL_CTL_ADD && s->lib_reg) {
        errno = EEXIST;
        return -1;
    }
    if (op == EPOLL_CTL_MOD && !s->lib_reg) {
        errno = ENOENT;
        return -1;
    }
    uint32_t old_want = s->want;
    uint8_t old_reg = s->lib_reg;
    s->want = ev->events;
    s->data = ev->data.u64;
    s->lib_reg = 1;
    s->owner = ep + 1;
    int lazy = s->kern_reg && (s->want & ~LEP_LAZY_BITS) == 0 && (s->have & ~LEP_LAZY_BITS) == 0 &&
               (s->want & ~s->have) == 0 && (s->have & ~s->want & LEP_EAGER_DROP) == 0;
    if (lazy)
        return 0;
    if (sync_kernel(ep, fd, s) != 0) {
        s->want = old_want;
        s->lib_reg = old_reg;
        return -1;
    }
    return 0;
}

/* Translates the kernel's events for the library, dropping the unwanted ones. */
static int filter(int ep, struct epoll_event *evs, int n)
{
    int out = 0;
    for (int i = 0; i < n; i++) {
        uint64_t d = evs[i].data.u64;
        if ((d & LEP_TAG) == 0) { /* registered past the table: not ours to translate */
            evs[out++] = evs[i];
            continue;
        }
        int fd = (int)(d & ~LEP_TAG);
        lep_fd_t *s = &g_fds[fd];
        uint32_t got = evs[i].events;
        uint32_t wanted = s->lib_reg ? s->want | LEP_ALWAYS : 0;
        if ((got & ~wanted) != 0 || !s->lib_reg) {
            /* interest h2o dropped earlier: drop it in the kernel now, or it fires forever */
            g_stats.hidden++;
            if (s->kern_reg && s->have != s->want)
                sync_kernel(ep, fd, s);
        }
        uint32_t pass = got & wanted;
        if (pass == 0)
            continue;
        evs[out].events = pass;
        evs[out].data.u64 = s->data;
        out++;
    }
    return out;
}

int epoll_wait(int ep, struct epoll_event *evs, int max, int timeout)
{
    int n = NEXT(epoll_wait)(ep, evs, max, timeout);
    if (n <= 0 || !is_set(ep))
        return n;
    int out = filter(ep, evs, n);
    if (out == 0) {
        /* only hidden events (whose interest is now gone): wait again rather than
         * wake the loop for nothing; once, the timeout barely started running */
        n = NEXT(epoll_wait)(ep, evs, max, timeout);
        out = n > 0 ? filter(ep, evs, n) : n;
    }
    return out;
}

int close(int fd)
{
    if (fd >= 0 && fd < __atomic_load_n(&g_nfds, __ATOMIC_ACQUIRE)) {
        if (g_fds[fd].kern_reg || g_fds[fd].lib_reg || g_fds[fd].owner)
            memset(&g_fds[fd], 0, sizeof(g_fds[fd])); /* the kernel drops the registration with the file */
        if (g_set[fd]) /* a managed set itself closing */
            __atomic_store_n(&g_set[fd], 0, __ATOMIC_RELEASE);
    }
    return NEXT(close)(fd);
}

void gw_override_epoll_release(void)
{
    int ep = t_ep;
    if (ep < 0)
        return;
    for (int fd = 0; fd < g_nfds; fd++) {
        lep_fd_t *s = &g_fds[fd];
        if (!s->kern_reg || s->owner != ep + 1)
            continue;
        struct epoll_event ev = {.events = s->want, .data.u64 = s->data};
        /* the kernel holds our tagged data: give every fd its user's own */
        NEXT(epoll_ctl)(ep, s->lib_reg ? EPOLL_CTL_MOD : EPOLL_CTL_DEL, fd, &ev);
        memset(s, 0, sizeof(*s));
    }
    /* the start-up check found h2o not behaving as assumed: no loop is managed */
    __atomic_store_n(&g_off, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&g_set[ep], 0, __ATOMIC_RELEASE);
    t_ep = -1;
}

#else /* built without: the gateway's calls are no-ops and libc is libc */

void gw_override_epoll_arm(void)
{
}
void gw_override_epoll_disarm(void)
{
}
int gw_override_epoll_fd(void)
{
    return -1;
}
void gw_override_epoll_get_stats(gw_override_epoll_stats_t *out)
{
    *out = (gw_override_epoll_stats_t){0, 0, 0};
}
void gw_override_epoll_release(void)
{
}

#endif
