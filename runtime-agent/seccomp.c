/* runtime-agent/seccomp.c - the user server's seccomp filter (docs/security.md, "Seccomp").
 *
 * Default allow; the syscalls of denylist.c are refused with EPERM; clone3 gets ENOSYS.
 * The refusals are counted with SECCOMP_RET_USER_NOTIF: the kernel parks the caller and
 * hands the call to us on a listener fd, which we answer at once with EPERM from the evl
 * loop. SECCOMP_RET_ERRNO would be cheaper per refusal but leaves no trace anyone can
 * count from inside the pod (SECCOMP_RET_LOG goes to the host's audit log, which the
 * agent cannot read); a refusal is an error path, so a round trip through the agent
 * (~10 us) is a fair price for knowing that a function tries to mount or ptrace. Where
 * user notification is not available (old kernel, or an outer filter already has a
 * listener) the same list is enforced with SECCOMP_RET_ERRNO, uncounted.
 *
 * libseccomp builds both programs once, in the agent; the vfork child only makes the
 * prctl and seccomp syscalls, then passes the listener to us over a socketpair before
 * exec (see user.c), so the user server never holds it: with it, it could answer its
 * own refused calls. */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "runtime-agent/internal.h"

_Static_assert(AGENT_DENY_MAX >= 37, "AGENT_DENY_MAX below the deny list's length");

typedef struct {
    struct sock_filter *insns;
    struct sock_fprog prog;
} prog_t;

static struct {
    int prepared;
    int off;       /* FAAS_AGENT_NO_SECCOMP=1 from the worker manager's --no-seccomp: measuring only */
    prog_t notify; /* insns NULL: user notification unavailable */
    prog_t errno_;
    /* the listener */
    evl_loop_t *loop;
    evl_io_t io;
    int fd;
    evl_timer_t report_timer;
    agent_deny_tally_t tally;
    void (*log_first)(const char *name);
    void (*report)(const agent_deny_delta_t *d, size_t n);
    struct seccomp_notif *req;
    struct seccomp_notif_resp *resp;
    size_t req_size, resp_size;
} sc = {.fd = -1};

/* ---- building ---- */

static int add_rule(scmp_filter_ctx ctx, uint32_t action, const agent_deny_t *d)
{
    int nr = seccomp_syscall_resolve_name(d->name);
    if (nr == __NR_SCMP_ERROR)
        return 0; /* unknown to this libseccomp: nothing to refuse */
    if (d->only == AGENT_DENY_NEWUSER)
        return seccomp_rule_add(ctx, action, nr, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    return seccomp_rule_add(ctx, action, nr, 0);
}

/* The filter's BPF: libseccomp 2.5 exports to an fd only, so through a memfd. */
static int export_prog(scmp_filter_ctx ctx, prog_t *out)
{
    int rc = -1, fd = memfd_create("faas-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (seccomp_export_bpf(ctx, fd) != 0)
        goto out;
    off_t len = lseek(fd, 0, SEEK_END);
    if (len <= 0 || len % (off_t)sizeof(struct sock_filter) != 0 || len > 65536)
        goto out;
    out->insns = malloc((size_t)len);
    if (out->insns == NULL || pread(fd, out->insns, (size_t)len, 0) != len)
        goto out;
    out->prog.len = (unsigned short)(len / (off_t)sizeof(struct sock_filter));
    out->prog.filter = out->insns;
    rc = 0;
out:
    if (rc != 0) {
        free(out->insns);
        out->insns = NULL;
    }
    close(fd);
    return rc;
}

/* One program: the list refused with action, clone3 with ENOSYS. */
static int build(uint32_t action, prog_t *out)
{
    size_t n;
    const agent_deny_t *list = agent_deny_list(&n);
    int rc = -1;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == NULL)
        return -1;
    /* a 32-bit syscall from a 64-bit server would dodge rules written for one ABI: the
     * i386 ABI gets the same rules; anything else (x32) kills the process */
    if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0)
        goto out;
    /* default allow: every allowed syscall walks the rules, a binary tree beats a list */
    (void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
#if defined(__x86_64__)
    if (seccomp_arch_add(ctx, SCMP_ARCH_X86) != 0)
        goto out;
#endif
    for (size_t i = 0; i < n; i++)
        if (add_rule(ctx, action, &list[i]) != 0)
            goto out;
    /* clone3 passes its flags in memory, which seccomp cannot read: ENOSYS (uncounted,
     * glibc tries it for every thread) makes libc fall back to clone, which is checked */
    if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name("clone3"), 0) != 0)
        goto out;
    rc = export_prog(ctx, out);
out:
    seccomp_release(ctx);
    return rc;
}

/* The kernel's notification structures may be larger than our headers' (newer fields). */
static int alloc_notif(void)
{
    struct seccomp_notif_sizes sz;
    if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sz) != 0)
        return -1;
    sc.req_size = sz.seccomp_notif > sizeof(*sc.req) ? sz.seccomp_notif : sizeof(*sc.req);
    sc.resp_size = sz.seccomp_notif_resp > sizeof(*sc.resp) ? sz.seccomp_notif_resp : sizeof(*sc.resp);
    sc.req = calloc(1, sc.req_size);
    sc.resp = calloc(1, sc.resp_size);
    return sc.req != NULL && sc.resp != NULL ? 0 : -1;
}

int agent_seccomp_prepare(const char **err)
{
    if (sc.prepared)
        return 0;
    const char *no = getenv("FAAS_AGENT_NO_SECCOMP");
    if (no != NULL && strcmp(no, "1") == 0) {
        sc.off = sc.prepared = 1;
        FAAS_WARN("event=seccomp_off msg=\"the worker manager runs with --no-seccomp: no filter\"");
        return 0;
    }
    if (build(SCMP_ACT_ERRNO(EPERM), &sc.errno_) != 0)
        return *err = "cannot build the seccomp filter", -1;
    /* fails where the kernel has no user notification: the errno program alone then */
    if (alloc_notif() != 0 || build(SCMP_ACT_NOTIFY, &sc.notify) != 0)
        FAAS_WARN("event=seccomp_uncounted msg=\"no seccomp user notification: denials are refused, not counted\"");
    sc.prepared = 1;
    return 0;
}

int agent_seccomp_install(void)
{
    if (sc.off)
        return -1; /* as for the errno program: nothing to hand back */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -2;
    if (sc.notify.insns != NULL) {
        long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &sc.notify.prog);
        if (fd >= 0)
            return (int)fd;
    }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &sc.errno_.prog) == 0)
        return -1;
    return -2;
}

/* ---- the listener ---- */

static void send_report(void)
{
    agent_deny_delta_t d[AGENT_DENY_MAX];
    size_t n = agent_deny_take(&sc.tally, evl_now_ms(sc.loop), d, AGENT_DENY_MAX);
    if (n > 0 && sc.report != NULL)
        sc.report(d, n);
}

static void on_report_timer(evl_timer_t *t)
{
    send_report();
}

/* Reports now if the last report is a second old, else when it will be. */
static void schedule_report(void)
{
    int64_t due = agent_deny_due(&sc.tally, evl_now_ms(sc.loop));
    if (due == 0)
        send_report();
    else if (due > 0 && !evl_timer_armed(&sc.report_timer))
        evl_timer_start(sc.loop, &sc.report_timer, (uint64_t)due);
}

static void count(uint32_t arch, int nr)
{
    char *name = seccomp_syscall_resolve_num_arch(arch, nr);
    int i = name != NULL ? agent_deny_index(name) : -1;
    free(name);
    if (i < 0)
        return;
    size_t n;
    const agent_deny_t *list = agent_deny_list(&n);
    if (agent_deny_note(&sc.tally, i) && sc.log_first != NULL)
        sc.log_first(list[i].name);
    schedule_report();
}

static void stop_listener(void)
{
    if (sc.fd < 0)
        return;
    evl_io_stop(&sc.io);
    close(sc.fd);
    sc.fd = -1;
}

/* One notification per wake-up (the loop is level-triggered). poll first: RECV blocks
 * when nothing is queued, and we never block; with POLLIN set it cannot (we are the only
 * reader; a caller interrupted meanwhile makes it fail with ENOENT instead). */
static void on_notify(evl_io_t *io, int events)
{
    struct pollfd p = {.fd = sc.fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0)
        return;
    if (!(p.revents & POLLIN)) {
        if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
            stop_listener(); /* the user server and all it started are gone */
        return;
    }
    memset(sc.req, 0, sc.req_size); /* the kernel insists */
    if (ioctl(sc.fd, SECCOMP_IOCTL_NOTIF_RECV, sc.req) != 0)
        return; /* ENOENT: the caller was interrupted; EINTR: next wake-up */
    memset(sc.resp, 0, sc.resp_size);
    sc.resp->id = sc.req->id;
    sc.resp->error = -EPERM;
    /* ENOENT here too means the caller went away; it was still refused, so counted */
    (void)ioctl(sc.fd, SECCOMP_IOCTL_NOTIF_SEND, sc.resp);
    count(sc.req->data.arch, sc.req->data.nr);
}

int agent_seccomp_watch(evl_loop_t *loop, int fd, void (*log_first)(const char *name),
                        void (*report)(const agent_deny_delta_t *d, size_t n))
{
    sc.loop = loop;
    sc.log_first = log_first;
    sc.report = report;
    sc.report_timer.cb = on_report_timer;
    sc.fd = fd;
    if (evl_io_start(loop, &sc.io, fd, EVL_READ, on_notify) != 0) {
        close(fd);
        sc.fd = -1;
        return -1;
    }
    return 0;
}

void agent_seccomp_stop(void)
{
    if (sc.loop == NULL)
        return;
    evl_timer_stop(sc.loop, &sc.report_timer);
    send_report();
    stop_listener();
}
