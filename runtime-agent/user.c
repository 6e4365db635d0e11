/* runtime-agent/user.c - the user server: fork/exec into its own process group, its
 * stdout/stderr turned into logfmt lines, the readiness probe on a sub-millisecond timer,
 * reaping and killing. Everything runs on the agent's single evl loop, never blocking
 * except for the exec handshake and the final kill. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"
#include "runtime-agent/grpc.h"
#include "runtime-agent/internal.h"

/* runtime-agent/zygote.py as one C string (generated at build time) */
static const char zygote_py[] =
#include "runtime-agent/zygote_py.h"
    ;

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define FIRST_PROBE_US 500
/* Native servers are up within a few ms of exec: poll fast until then (a refused
 * loopback connect costs ~10 us), then at the spec's interval. */
#define FAST_PROBE_US 250
#define FAST_PROBE_WINDOW_US 20000
#define LINE_MAX_BYTES 4096
/* The last stderr lines kept to say why a user server stopped before it was ready:
 * the newest goes into the one-line reason (FAILED, the 503, faasctl get). */
#define TAIL_LINES 3
#define TAIL_LINE_BYTES 160
/* A health response larger than this is not waited for to reuse its connection. */
#define PROBE_MAX_HEAD 16384
#define PROBE_MAX_BODY 65536
/* A zygote's imports take 0.1-0.6 s on a busy 2-core host: past this, something is wrong
 * with it and the pod serves by exec (the worker manager's HELLO deadline is 15 s). */
#define ZYGOTE_READY_MS 10000
/* Room the zygote's environment keeps for the function's (/proc/<pid>/environ). */
#define ZYGOTE_ENV_ROOM (32 << 10)
/* The most the handover may block the loop before the pod execs instead. */
#define ZYGOTE_SEND_MS 2000

extern char **environ;

typedef struct ustream {
    evl_io_t io;
    int fd; /* -1 once closed */
    const char *name;
    size_t len;
    char buf[LINE_MAX_BYTES];
} ustream_t;

static struct {
    evl_loop_t *loop;
    const agent_spec_t *spec;
    agent_user_cbs_t cbs;
    pid_t pid;  /* 0 once reaped */
    pid_t pgid; /* kept after the leader is reaped, for stragglers */
    uint16_t port;
    uint64_t exec_at_us, deadline_us;
    uint32_t exec_us; /* specialize received -> exec'd */
    int ready, failed;
    int timer_fd;
    evl_io_t timer_io;
    evl_sock_t *probe;
    uint64_t probe_started_us;
    ustream_t out[2];
    char tail[TAIL_LINES][TAIL_LINE_BYTES]; /* ring of the last non-empty stderr lines */
    unsigned n_tail;                        /* lines ever put in the ring */
    /* the pod's Python zygote (issue 18): pid and pgid above are its until a function
     * runs in it or it is killed; zyg_fd is our end of its socketpair */
    int zyg_fd;
    char *zyg_python;    /* realpath of its interpreter */
    char **zyg_env;      /* the environment it started with */
    int in_zygote;       /* the user server is the zygote, become the function */
    evl_io_t zyg_io;     /* its "ready" byte, read once */
    evl_timer_t zyg_timer;
    void (*zyg_settled)(int ready);
    char *zyg_preload;   /* its preload list: a function's own copy of one means exec */
    int zyg_dropping;    /* being discarded: its seccomp counts are not the function's */
} us = {.timer_fd = -1, .zyg_fd = -1, .out = {{.fd = -1}, {.fd = -1}}};

uint16_t agent_user_port(void)
{
    return us.port;
}

/* ---- logs ---- */

static void write_log(const char *stream, const char *msg, size_t len)
{
    char line[LINE_MAX_BYTES * 2 + 256];
    if (us.spec == NULL) { /* the zygote, waiting: no function log yet */
        FAAS_WARN("event=zygote_output stream=%s msg=%s", stream, faas_log_quote(line, sizeof(line), msg, len));
        return;
    }
    size_t n = agent_format_log_line(line, sizeof(line), faas_unix_ms(), us.spec->name, us.spec->instance_id, stream,
                                     msg, len);
    if (n == 0)
        return;
    agent_log_write(line, n); /* logsink.c: the file's bound */
}

static void emit_line(ustream_t *s, const char *msg, size_t len)
{
    write_log(s->name, msg, len);
    size_t lead = 0;
    while (lead < len && (msg[lead] == ' ' || msg[lead] == '\t'))
        lead++;
    if (s == &us.out[1] && lead < len) {
        char *t = us.tail[us.n_tail++ % TAIL_LINES];
        snprintf(t, TAIL_LINE_BYTES, "%.*s", (int)(len - lead), msg + lead);
        faas_oneline(t);
    }
}

/* What the platform has to say about the user server, in the function's log. */
static void platform_log(const char *msg)
{
    write_log("platform", msg, strlen(msg));
}

/* The newest stderr line, "" if none. */
static const char *last_stderr(void)
{
    return us.n_tail ? us.tail[(us.n_tail - 1) % TAIL_LINES] : "";
}

static void drain_lines(ustream_t *s, int flush)
{
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (s->buf[i] == '\n') {
            size_t end = i > start && s->buf[i - 1] == '\r' ? i - 1 : i;
            emit_line(s, s->buf + start, end - start);
            start = i + 1;
        }
    }
    if (start == 0 && s->len == sizeof(s->buf))
        start = s->len, emit_line(s, s->buf, s->len); /* an overlong line is cut */
    if (flush && start < s->len)
        emit_line(s, s->buf + start, s->len - start), start = s->len;
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
}

/* Reads a pipe holds at most per wake-up: a user server printing without end must not
 * keep the loop from requests and the control socket (the poll is level-triggered, so
 * the rest is read on the next turn). */
#define PIPE_READS_PER_WAKE 16

static void on_pipe(evl_io_t *io, int events)
{
    ustream_t *s = io->data;
    for (int budget = PIPE_READS_PER_WAKE;;) {
        ssize_t n = read(s->fd, s->buf + s->len, sizeof(s->buf) - s->len);
        if (n > 0) {
            s->len += (size_t)n;
            drain_lines(s, 0);
            if (--budget == 0)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        drain_lines(s, 1);
        evl_io_stop(io);
        close(s->fd);
        s->fd = -1;
        return;
    }
}

static int watch_pipe(ustream_t *s, int fd, const char *name)
{
    s->fd = fd;
    s->name = name;
    s->len = 0;
    s->io.data = s;
    return evl_io_start(us.loop, &s->io, fd, EVL_READ, on_pipe);
}

/* ---- probe ---- */

static void arm_timer(uint64_t after_us)
{
    struct itimerspec its = {
        .it_value = {.tv_sec = (time_t)(after_us / 1000000), .tv_nsec = (long)(after_us % 1000000) * 1000}};
    timerfd_settime(us.timer_fd, 0, &its, NULL);
}

static void stop_probing(void)
{
    if (us.probe != NULL) {
        evl_sock_close(us.probe);
        us.probe = NULL;
    }
    if (us.timer_fd >= 0) {
        evl_io_stop(&us.timer_io);
        close(us.timer_fd);
        us.timer_fd = -1;
    }
}

/* The user server will not be ready: line (or msg) goes to the function's log, msg -
 * one short line, no host path nor internal address - to the worker manager. */
static void fail(const char *msg, const char *line)
{
    if (us.failed || us.ready)
        return;
    us.failed = 1;
    stop_probing();
    if (us.pgid > 0)
        kill(-us.pgid, SIGKILL);
    platform_log(line != NULL ? line : msg);
    us.cbs.on_failed(msg);
}

static void probe_passed(void)
{
    uint64_t now = faas_now_us();
    stop_probing();
    us.ready = 1;
    us.cbs.on_ready(us.exec_us, (uint32_t)(now - us.exec_at_us));
}

static void probe_done(evl_sock_t *sock)
{
    evl_sock_close(sock);
    us.probe = NULL;
}

/* 1 once the whole health response is in and the connection can carry another request,
 * 0 if it cannot be reused, -1 while more bytes are needed. */
static int probe_reusable(const evl_buf_t *in)
{
    http1_hdr_t h[64];
    size_t nh = 64, msg_len;
    int minor, status;
    const char *msg, *err;
    int hl = http1_parse_response(evl_buf_data(in), in->len, &minor, &status, &msg, &msg_len, h, &nh);
    if (hl == -2)
        return in->len < PROBE_MAX_HEAD ? -1 : 0;
    http1_framing_t fr;
    if (hl < 0 || http1_resp_framing(minor, status, 0, h, nh, &fr, &err) != 0 || !fr.keepalive)
        return 0;
    if (fr.body == HTTP1_BODY_NONE)
        return in->len == (size_t)hl;
    if (fr.body != HTTP1_BODY_LENGTH || fr.length > PROBE_MAX_BODY)
        return 0;
    if (in->len < (size_t)hl + fr.length)
        return -1;
    return in->len == (size_t)hl + fr.length;
}

static void on_probe_read(evl_sock_t *sock, int err)
{
    evl_buf_t *in = &sock->in;
    const char *b = evl_buf_data(in);
    int line = in->len >= 12 || memchr(b, '\n', in->len) != NULL;
    if (!line && err == 0)
        return; /* status line not complete yet */
    /* a good status line is enough: the rest only decides whether the connection is reused */
    int ok = in->len >= 12 && memcmp(b, "HTTP/1.", 7) == 0 && (b[9] == '2' || b[9] == '3');
    int reuse = ok && err == 0 ? probe_reusable(in) : 0;
    if (reuse < 0)
        return; /* the rest of the response is on its way */
    if (reuse) {
        /* the first request then finds a connection the user server already accepted */
        evl_buf_consume(in, in->len);
        us.probe = NULL;
        if (agent_proxy_adopt_upstream(sock) != 0)
            evl_sock_close(sock);
    } else {
        probe_done(sock);
    }
    if (ok)
        probe_passed();
}

static void on_probe_written(evl_sock_t *sock, int err)
{
    if (err != 0)
        probe_done(sock);
}

static void on_grpc_health(evl_sock_t *sock, int ok)
{
    probe_done(sock);
    if (ok)
        probe_passed();
}

static void on_probe_connect(evl_sock_t *sock, int err)
{
    if (err != 0) {
        probe_done(sock);
        return;
    }
    if (us.spec->probe_kind == AGENT_PROBE_GRPC) {
        agent_grpc_health_start(sock, on_grpc_health); /* runtime-agent/grpc_health.c */
        return;
    }
    if (us.spec->probe_kind != AGENT_PROBE_HTTP) {
        probe_done(sock);
        probe_passed();
        return;
    }
    static char req[1200];
    /* keep-alive: a passing probe's connection becomes the pool's first upstream */
    int n = snprintf(req, sizeof(req), "GET %.1024s HTTP/1.1\r\nHost: localhost\r\n\r\n", us.spec->probe_path);
    struct iovec v = {req, (size_t)n};
    evl_sock_read_start(sock, on_probe_read);
    if (evl_sock_write(sock, &v, 1, on_probe_written) < 0)
        probe_done(sock);
}

static void start_probe(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(us.port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    us.probe_started_us = faas_now_us();
    us.probe = evl_sock_connect(us.loop, (struct sockaddr *)&sin, sizeof(sin), on_probe_connect);
}

static void on_tick(evl_io_t *io, int events)
{
    uint64_t expirations;
    while (read(us.timer_fd, &expirations, sizeof(expirations)) > 0)
        ;
    if (us.ready || us.failed)
        return;
    uint64_t now = faas_now_us();
    uint64_t interval = (uint64_t)us.spec->probe_interval_ms * 1000;
    if (now >= us.deadline_us) {
        char msg[128], line[1400];
        snprintf(msg, sizeof(msg), "user server not ready within the cold start timeout (%u ms)",
                 us.spec->cold_start_timeout_ms);
        if (us.spec->probe_kind == AGENT_PROBE_HTTP)
            snprintf(line, sizeof(line), "%s: GET %.1024s on its port %u never answered 2xx or 3xx", msg,
                     us.spec->probe_path, us.port);
        else
            snprintf(line, sizeof(line), "%s: %s on its port %u never passed", msg,
                     us.spec->probe_kind == AGENT_PROBE_GRPC ? "the gRPC health check" : "a TCP connect", us.port);
        fail(msg, line);
        return;
    }
    /* a probe stuck on a server that accepted but never answers is retried */
    if (us.probe != NULL && now - us.probe_started_us > 50000 + 10 * interval)
        probe_done(us.probe);
    if (us.probe == NULL)
        start_probe();
    if (!us.ready && !us.failed)
        arm_timer(now - us.exec_at_us < FAST_PROBE_WINDOW_US && interval > FAST_PROBE_US ? FAST_PROBE_US : interval);
}

static int start_probing(void)
{
    us.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (us.timer_fd < 0)
        return -1;
    if (evl_io_start(us.loop, &us.timer_io, us.timer_fd, EVL_READ, on_tick) != 0) {
        close(us.timer_fd);
        us.timer_fd = -1;
        return -1;
    }
    arm_timer(FIRST_PROBE_US);
    return 0;
}

/* ---- spawn ---- */

static int pick_port(uint16_t *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    *port = ntohs(sin.sin_port);
    return 0;
}

/* Resolves argv[0] against the user's PATH (not ours) in the parent, so that the vfork
 * child only makes syscalls. A name with a slash is left to the child (relative to code_dir).
 * Never for an image: its PATH is the image's, not ours. */
static const char *resolve_exe(const char *argv0, char **env, char *buf, size_t cap)
{
    if (strchr(argv0, '/') != NULL)
        return argv0;
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (char **e = env; *e != NULL; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    for (const char *p = path; *p != '\0';) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        if (n > 0 && snprintf(buf, cap, "%.*s/%s", (int)n, p, argv0) < (int)cap && access(buf, X_OK) == 0)
            return buf;
        p += n + (colon != NULL);
    }
    return NULL;
}

/* Where the vfork child stopped: each its own words in step_message. */
enum {
    STEP_OK,
    STEP_CHDIR, /* the code directory */
    STEP_EXEC,
    STEP_SECCOMP,
    STEP_USERNS,  /* an image's: setns into its user namespace */
    STEP_MOUNTNS, /* ... a mount namespace of the user server's own */
    STEP_PRIVATE,
    STEP_BIND,
    STEP_PIVOT,
    STEP_OLDROOT,
    STEP_CWD,
    STEP_CAPS,
    STEP_GROUPS,
    STEP_GID,
    STEP_UID,
    STEP_DEATHSIG,
};

typedef struct spawn_args {
    const agent_spec_t *spec; /* NULL for the zygote */
    const char *exe;
    char *const *argv;
    const char *cwd; /* a code directory's (an image's comes from ImageRun) */
    char **env;
    int zygfd; /* the zygote's end of its socketpair, its fd 3; else -1 */
    int outfd, errfd;
    int fdsock;    /* the child's end of the socketpair the seccomp listener comes back on */
    int userns_fd; /* an image's user namespace, else -1 */
    pid_t parent;
    volatile int step, err; /* written by the child, read after it exec'd or died */
} spawn_args_t;

/* Passes fd over sock (SCM_RIGHTS); syscalls only, for the vfork child. 0 or -1. */
static int send_fd(int sock, int fd)
{
    char one = 0;
    return faas_send_with_fd(sock, &one, 1, fd, 0) == 1 ? 0 : -1;
}

/* The fd the child sent on sock, or -1 (none: the filter only refuses). */
static int recv_fd(int sock)
{
    char one;
    struct iovec iov = {&one, 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
    if (recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

/* In the vfork child: notes where it stopped (errno) for the parent; -1. */
static int child_failed(spawn_args_t *a, int step)
{
    a->err = errno, a->step = step;
    return -1;
}

/* Docker's default capabilities: an image's root keeps these in its bounding set, so that
 * what it may do in its user namespace is what images expect of a container, no more. */
#define CAP_BIT(c) (1ULL << (c))
#define IMAGE_CAPS                                                                                                     \
    (CAP_BIT(CAP_CHOWN) | CAP_BIT(CAP_DAC_OVERRIDE) | CAP_BIT(CAP_FSETID) | CAP_BIT(CAP_FOWNER) |                      \
     CAP_BIT(CAP_SETGID) | CAP_BIT(CAP_SETUID) | CAP_BIT(CAP_SETFCAP) | CAP_BIT(CAP_SETPCAP) |                         \
     CAP_BIT(CAP_NET_BIND_SERVICE) | CAP_BIT(CAP_SYS_CHROOT) | CAP_BIT(CAP_KILL) | CAP_BIT(CAP_AUDIT_WRITE))

/* Drops every other capability from the bounding set (we hold CAP_SETPCAP in the image's
 * user namespace until the ids change); the kernel's last one answers EINVAL past it. */
static int limit_caps(void)
{
    for (int c = 0; c < 64; c++) {
        if (IMAGE_CAPS & CAP_BIT(c))
            continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0)
            return errno == EINVAL ? 0 : -1;
    }
    return 0;
}

_Static_assert(sizeof(gid_t) == sizeof(uint32_t), "ImageRun.groups are passed to setgroups as they are");

/* A WorkingDir the image lacks is made, owned by the image's root, as Docker does: in
 * the pivoted root (the image's symlinks resolve inside it), in the pod's own writable
 * layer. fsuid 0 first: ours (the agent's uid) has no id in the image's namespace, and a
 * file cannot be owned by an id the namespace cannot say. The later setresuid resets it. */
static int make_workdir(const char *cwd)
{
    char p[PATH_MAX];
    size_t n = strlen(cwd);
    if (n == 0 || n >= sizeof(p) || cwd[0] != '/')
        return -1;
    memcpy(p, cwd, n + 1);
    syscall(SYS_setfsgid, 0);
    syscall(SYS_setfsuid, 0);
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0')
            continue;
        char was = *c;
        *c = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return -1;
        *c = was;
        if (was == '\0')
            break;
    }
    return chdir(cwd);
}

/* In the vfork child, for an image: into its user namespace and its root, as its user
 * (docs/images.md; runtime-agent/README.md "Images"). The agent owns the user namespace, so
 * it holds every capability there, CAP_KILL included: STOP and the group kill reach the
 * user server whatever uid it runs as. Raw set*id syscalls: glibc's wrappers would signal
 * the agent's other threads to change theirs too. 0, or -1 with the step noted. */
static int enter_image(spawn_args_t *a)
{
    const Faas__ImageRun *im = a->spec->image;
    if (setns(a->userns_fd, CLONE_NEWUSER) != 0)
        return child_failed(a, STEP_USERNS);
    /* a mount namespace of its own, owned by the image's user namespace: the pod's mounts
     * stay as they are for the agent, and the image cannot undo them (they are locked) */
    if (unshare(CLONE_NEWNS) != 0)
        return child_failed(a, STEP_MOUNTNS);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return child_failed(a, STEP_PRIVATE);
    if (mount(im->root, im->root, NULL, MS_BIND | MS_REC, NULL) != 0) /* pivot_root wants a mount point */
        return child_failed(a, STEP_BIND);
    if (chdir(im->root) != 0 || syscall(SYS_pivot_root, ".", ".") != 0)
        return child_failed(a, STEP_PIVOT);
    if (umount2(".", MNT_DETACH) != 0) /* the old root, stacked on the new one: out of reach */
        return child_failed(a, STEP_OLDROOT);
    if (chdir(im->cwd[0] != '\0' ? im->cwd : "/") != 0 && (errno != ENOENT || make_workdir(im->cwd) != 0))
        return child_failed(a, STEP_CWD);
    if (limit_caps() != 0)
        return child_failed(a, STEP_CAPS);
    if (syscall(SYS_setgroups, im->n_groups, (const gid_t *)im->groups) != 0)
        return child_failed(a, STEP_GROUPS);
    if (syscall(SYS_setresgid, im->gid, im->gid, im->gid) != 0)
        return child_failed(a, STEP_GID);
    if (syscall(SYS_setresuid, im->uid, im->uid, im->uid) != 0)
        return child_failed(a, STEP_UID);
    /* a change of ids cleared the parent-death signal */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        return child_failed(a, STEP_DEATHSIG);
    if (getppid() != a->parent)
        _exit(127);
    return 0;
}

/* In the vfork child (shares our memory, we are suspended): syscalls only, never returns. */
static void child_exec(spawn_args_t *a)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    /* the agent's death (even SIGKILL) takes the user server with it */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != a->parent)
        _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    dup2(a->outfd, STDOUT_FILENO);
    dup2(a->errfd, STDERR_FILENO);
    if (a->spec != NULL && a->spec->image != NULL) {
        if (enter_image(a) != 0)
            _exit(127);
    } else if (chdir(a->cwd) != 0) {
        child_failed(a, STEP_CHDIR);
        _exit(127);
    }
    /* the user namespace's fd (and any other of ours) must not reach the user server;
     * the zygote keeps its socketpair as fd 3 (dup2 clears close-on-exec) */
    unsigned first = 3;
    if (a->zygfd >= 0) {
        if (a->zygfd == 3 ? fcntl(3, F_SETFD, 0) != 0 : dup2(a->zygfd, 3) != 3) {
            child_failed(a, STEP_EXEC);
            _exit(127);
        }
        first = 4;
    }
    syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC);
    /* last, so that the filter never refuses our own setup; the listener must not reach
     * the user server: with it, it could answer its own refused calls */
    int lfd = agent_seccomp_install();
    if (lfd == -2 || (lfd >= 0 && send_fd(a->fdsock, lfd) != 0)) {
        child_failed(a, STEP_SECCOMP);
        _exit(127);
    }
    if (lfd >= 0)
        close(lfd);
    execve(a->exe, a->argv, a->env);
    child_failed(a, STEP_EXEC);
    _exit(127);
}

/* Creates the two pipes: [0..1] stdout, [2..3] stderr, our ends non-blocking, and the
 * socketpair [4..5] the seccomp listener comes back on. */
static int make_pipes(int p[6])
{
    for (int i = 0; i < 6; i++)
        p[i] = -1;
    for (int i = 0; i < 2; i++)
        if (pipe2(p + 2 * i, O_CLOEXEC) != 0)
            return -1;
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, p + 4) != 0)
        return -1;
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    fcntl(p[2], F_SETFL, O_NONBLOCK);
    return 0;
}

static void close_fds(int *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 0)
            close(p[i]), p[i] = -1;
}

static void log_first_denial(const char *name)
{
    char line[160];
    snprintf(line, sizeof(line),
             "the platform refused the user server's %s syscall (EPERM); further refusals "
             "are counted in faas_wm_seccomp_denials_total, not logged",
             name);
    platform_log(line);
    FAAS_INFO("event=seccomp_denied fn=%s instance=%s syscall=%s first=1", us.spec ? us.spec->name : "-",
              us.spec ? us.spec->instance_id : "zygote", name);
}

static void report_denials(const agent_deny_delta_t *d, size_t n)
{
    if (us.cbs.on_denials != NULL && !us.zyg_dropping && us.spec != NULL)
        us.cbs.on_denials(d, n);
}

/* The child's seccomp listener, if it sent one, served from now on. */
static void watch_listener(int sock)
{
    int lfd = recv_fd(sock);
    if (lfd >= 0 && agent_seccomp_watch(us.loop, lfd, log_first_denial, report_denials) != 0)
        FAAS_WARN("event=seccomp_uncounted fn=%s msg=\"cannot watch the listener\"", us.spec ? us.spec->name : "-");
}

/* What the child's failed step means, in the user's words (FAILED, the function's log). */
static void step_message(const spawn_args_t *a, char *buf, size_t cap)
{
    const Faas__ImageRun *im = a->spec != NULL ? a->spec->image : NULL;
    const char *why = strerror(a->err), *pivot = NULL;
    switch (a->step) {
    case STEP_CHDIR:
        snprintf(buf, cap, "chdir %s: %s", a->cwd, why);
        return;
    case STEP_EXEC:
        snprintf(buf, cap, "exec %s%s: %s", im != NULL ? im->exe : a->argv[0], im != NULL ? " in the image" : "", why);
        return;
    case STEP_SECCOMP:
        snprintf(buf, cap, "install the seccomp filter for %s: %s", a->argv[0], why);
        return;
    case STEP_USERNS:
        snprintf(buf, cap, "cannot enter the image's user namespace: %s", why);
        return;
    case STEP_CWD:
        if (a->err == ENOENT || a->err == ENOTDIR)
            snprintf(buf, cap, "WorkingDir %s is not a directory in the image", im->cwd[0] ? im->cwd : "/");
        else
            snprintf(buf, cap, "WorkingDir %s in the image: %s", im->cwd[0] ? im->cwd : "/", why);
        return;
    case STEP_CAPS:
        snprintf(buf, cap, "cannot limit the capabilities of the image's user: %s", why);
        return;
    case STEP_GROUPS:
    case STEP_GID:
    case STEP_UID:
        snprintf(buf, cap, "cannot switch to the image's user %u:%u%s: %s", im->uid, im->gid,
                 a->step == STEP_GROUPS ? " (its supplementary groups)" : "", why);
        return;
    case STEP_DEATHSIG:
        snprintf(buf, cap, "cannot tie the user server to the agent's life: %s", why);
        return;
    case STEP_MOUNTNS:
        pivot = "a mount namespace of its own";
        break;
    case STEP_PRIVATE:
        pivot = "private mounts";
        break;
    case STEP_BIND:
        pivot = "bind its root";
        break;
    case STEP_PIVOT:
        pivot = "pivot_root";
        break;
    default:
        pivot = "detach the old root";
        break;
    }
    snprintf(buf, cap, "cannot pivot into the image (%s): %s", pivot, why);
}

/* The executable: an image's was resolved in the image by the worker manager (our PATH
 * and our filesystem say nothing about it); else argv[0] on the user's PATH. NULL with
 * *err when not found. */
static const char *pick_exe(const agent_spec_t *spec, char **env, const char **err)
{
    static char msg[256], exe[4096];
    if (spec->image != NULL)
        return spec->image->exe;
    const char *e = resolve_exe(spec->argv[0], env, exe, sizeof(exe));
    if (e == NULL) {
        snprintf(msg, sizeof(msg), "exec %s: not found in PATH", spec->argv[0]);
        *err = msg;
    }
    return e;
}

/* Starts a->exe in a process group of its own (child_exec), its stdout and stderr read
 * into lines and its seccomp listener watched; 0 or -1 with *err. */
static int spawn_proc(spawn_args_t *a, const char **err)
{
    static char msg[512];
    int p[6] = {-1, -1, -1, -1, -1, -1}; /* closed on every failure path */
    if (make_pipes(p) != 0) {
        close_fds(p, 6);
        return *err = "cannot create pipes", -1;
    }
    a->outfd = p[1], a->errfd = p[3], a->fdsock = p[5], a->parent = getpid();
    /* an image's child changes its ids in the memory it shares with us, and the kernel then
     * sets that memory's dumpable flag to fs.suid_dumpable: ours is put back once it exec'd
     * (main.c made us not dumpable; a host's suid_dumpable=2 must not change that) */
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    /* vfork: no page-table copy, the cheapest way to a new process (fork costs ms here) */
    pid_t pid = vfork();
    if (pid == 0)
        child_exec(a);
    if ((dumpable == 0 || dumpable == 1) && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != dumpable)
        prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
    close_fds((int[]){p[1], p[3], p[5]}, 3);
    if (pid > 0 && a->step == 0)
        watch_listener(p[4]);
    close(p[4]);
    if (pid < 0) {
        close_fds((int[]){p[0], p[2]}, 2);
        return *err = "fork failed", -1;
    }
    setpgid(pid, pid); /* also here: whoever runs first, the group exists before we kill it */
    us.pid = us.pgid = pid;
    watch_pipe(&us.out[0], p[0], "stdout");
    watch_pipe(&us.out[1], p[2], "stderr");
    if (a->step != 0) {
        step_message(a, msg, sizeof(msg));
        return *err = msg, -1;
    }
    return 0;
}

static int spawn(const agent_spec_t *spec, int userns_fd, const char **err)
{
    spawn_args_t a = {.spec = spec, .userns_fd = userns_fd, .argv = spec->argv, .cwd = spec->code_dir, .zygfd = -1};
    if (agent_seccomp_prepare(err) != 0)
        return -1;
    if (spec->image != NULL && userns_fd < 0)
        return *err = "no user namespace for the image", -1;
    if ((a.env = agent_build_env(spec, us.port)) == NULL)
        return *err = "out of memory", -1;
    a.exe = pick_exe(spec, a.env, err);
    int rc = a.exe != NULL ? spawn_proc(&a, err) : -1;
    free(a.env);
    return rc;
}

/* ---- the Python zygote (issue 18, docs/zygotes.md) ---- */

/* Stops reading the pipes of a process that is gone, for the next one's. */
static void close_pipes(void)
{
    for (int i = 0; i < 2; i++)
        if (us.out[i].fd >= 0) {
            evl_io_stop(&us.out[i].io);
            close(us.out[i].fd);
            us.out[i].fd = -1;
            us.out[i].len = 0;
        }
}

/* The zygote finished its imports (1) or will never (0): said once. */
static void zygote_settle(int ready)
{
    void (*cb)(int) = us.zyg_settled;
    us.zyg_settled = NULL;
    if (us.zyg_io.loop != NULL)
        evl_io_stop(&us.zyg_io);
    evl_timer_stop(us.loop, &us.zyg_timer);
    if (cb != NULL)
        cb(ready);
}

static void on_zygote_byte(evl_io_t *io, int events)
{
    char c = 0;
    ssize_t n = read(us.zyg_fd, &c, 1);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n == 1 && c == 'R') {
        FAAS_INFO("event=zygote_ready pid=%d", (int)us.pid);
        zygote_settle(1);
        return;
    }
    zygote_settle(0); /* it closed: its exit is reaped and logged */
}

static void zygote_discard(void);

static void zygote_too_slow(evl_timer_t *t)
{
    FAAS_WARN("event=zygote_slow msg=\"no ready byte after %d ms: the pod execs\"", ZYGOTE_READY_MS);
    zygote_discard();
}

/* The zygote will not run a function: killed and reaped here, its pipes and its seccomp
 * listener let go, so the function's own process starts clean. */
static void zygote_discard(void)
{
    zygote_settle(0);
    if (us.zyg_fd >= 0)
        close(us.zyg_fd), us.zyg_fd = -1;
    if (us.pgid > 0) /* what it forked too */
        kill(-us.pgid, SIGKILL);
    if (us.pid > 0)
        waitpid(us.pid, NULL, 0);
    us.pid = us.pgid = 0;
    close_pipes();
    us.n_tail = 0; /* its stderr is not the function's */
    us.zyg_dropping = 1;
    agent_seccomp_stop();
    us.zyg_dropping = 0;
}

/* The user servers' base environment and, last, a variable that only reserves room: the
 * zygote writes the function's environment over the area (/proc/<pid>/environ shows it),
 * and clears it from os.environ at handover. NULL when out of memory. */
static char **zygote_env(const agent_spec_t *none)
{
    char **base = agent_build_env(none, 0);
    size_t n = 0, bytes = 0;
    for (; base != NULL && base[n] != NULL; n++)
        bytes += strlen(base[n]) + 1;
    char **env = base != NULL ? malloc((n + 2) * sizeof(char *) + bytes + ZYGOTE_ENV_ROOM + 32) : NULL;
    if (env != NULL) {
        char *p = (char *)(env + n + 2);
        for (size_t i = 0; i < n; i++)
            env[i] = p, p = stpcpy(p, base[i]) + 1;
        env[n] = p;
        p = stpcpy(p, "FAAS_ZYGOTE_ENV_ROOM=");
        memset(p, '.', ZYGOTE_ENV_ROOM);
        p[ZYGOTE_ENV_ROOM] = '\0';
        env[n + 1] = NULL;
    }
    free(base);
    return env;
}

int agent_user_zygote_start(evl_loop_t *loop, const char *python, const char *preload, void (*settled)(int ready))
{
    const char *err = NULL;
    char real[PATH_MAX];
    us.loop = loop;
    if (realpath(python, real) == NULL || access(real, X_OK) != 0) {
        FAAS_WARN("event=zygote_off python=%s err=\"%s\"", python, strerror(errno));
        return -1;
    }
    agent_spec_t none = {.port_env = FAAS_SPEC_DEFAULT_PORT_ENV};
    char *argv[] = {(char *)python, "-c", (char *)zygote_py, (char *)(preload != NULL ? preload : ""), NULL};
    int sp[2] = {-1, -1};
    spawn_args_t a = {.exe = python, .argv = argv, .cwd = "/", .userns_fd = -1};
    if (agent_seccomp_prepare(&err) != 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0 ||
        (a.env = zygote_env(&none)) == NULL) {
        err = err ? err : strerror(errno);
        goto fail;
    }
    a.zygfd = sp[1];
    if (spawn_proc(&a, &err) != 0)
        goto fail;
    close(sp[1]), sp[1] = -1;
    us.zyg_timer.cb = zygote_too_slow;
    fcntl(sp[0], F_SETFL, O_NONBLOCK);
    if ((us.zyg_python = strdup(real)) == NULL || (us.zyg_preload = strdup(preload ? preload : "")) == NULL ||
        evl_io_start(loop, &us.zyg_io, sp[0], EVL_READ, on_zygote_byte) != 0 ||
        evl_timer_start(loop, &us.zyg_timer, ZYGOTE_READY_MS) != 0) {
        err = "out of memory";
        goto fail;
    }
    us.zyg_fd = sp[0];
    us.zyg_env = a.env;
    us.zyg_settled = settled;
    FAAS_INFO("event=zygote_started pid=%d python=%s preload=%s", (int)us.pid, python, preload ? preload : "");
    return 0;
fail:
    FAAS_WARN("event=zygote_failed python=%s err=\"%s\"", python, err);
    if (us.zyg_io.loop != NULL)
        evl_io_stop(&us.zyg_io);
    close_fds(sp, 2);
    free(a.env);
    free(us.zyg_python), us.zyg_python = NULL;
    free(us.zyg_preload), us.zyg_preload = NULL;
    zygote_discard();
    return -1;
}

int agent_user_in_zygote(void)
{
    return us.in_zygote;
}

/* A zip archive (zipimport finds one by its end record, so a shebang may come first, as
 * `python3 -m zipapp -p` writes) or compiled code (the magic's "\r\n"): python3 runs
 * those otherwise than source. */
static int not_source(int fd, off_t size)
{
    char head[4], tail[65536 + 22];
    if (pread(fd, head, sizeof(head), 0) == 4 && head[2] == '\r' && head[3] == '\n')
        return 1;
    off_t from = size > (off_t)sizeof(tail) ? size - (off_t)sizeof(tail) : 0;
    ssize_t n = pread(fd, tail, sizeof(tail), from);
    for (ssize_t i = n - 22; i >= 0; i--)
        if (memcmp(tail + i, "PK\5\6", 4) == 0)
            return 1;
    return 0;
}

/* 1 if the script's directory (sys.path[0] for it) holds its own copy of a module the
 * zygote pre-imported: python3 SCRIPT would import that copy, the zygote has the other. */
static int shadows_preload(const char *dir, char *why, size_t cap)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *de;
    int hit = 0;
    while (!hit && (de = readdir(d)) != NULL) {
        int dir = de->d_type == DT_DIR, unsure = de->d_type == DT_LNK || de->d_type == DT_UNKNOWN;
        if (agent_zygote_shadows(de->d_name, dir, us.zyg_preload) ||
            (unsure && agent_zygote_shadows(de->d_name, !dir, us.zyg_preload))) {
            snprintf(why, cap, "the code has its own %s, which the zygote imported from the system", de->d_name);
            hit = 1;
        }
    }
    closedir(d);
    return hit;
}

/* The script's file as python3 would open it: relative to the code directory; 1 if the
 * zygote runs it as python3 would, else 0 with why. */
static int script_fits(const agent_spec_t *spec, char *why, size_t cap)
{
    char path[PATH_MAX], real[PATH_MAX];
    const char *arg = spec->argv[1];
    struct stat st;
    if (snprintf(path, sizeof(path), "%s/%s", arg[0] == '/' ? "" : spec->code_dir, arg) >= (int)sizeof(path))
        return snprintf(why, cap, "the script's path is too long"), 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { /* python3 says why itself */
        snprintf(why, cap, "the script %s is not a readable file here", arg);
        goto no;
    }
    size_t n = strlen(path);
    if ((n > 4 && strcmp(path + n - 4, ".pyc") == 0) || not_source(fd, st.st_size)) {
        snprintf(why, cap, "the script %s is a zip archive or compiled code", arg);
        goto no;
    }
    close(fd);
    if (realpath(path, real) == NULL)
        return snprintf(why, cap, "the script %s is not a readable file here", arg), 0;
    *strrchr(real, '/') = '\0';
    return !shadows_preload(real[0] ? real : "/", why, cap);
no:
    if (fd >= 0)
        close(fd);
    return 0;
}

/* 1 if exe (absolute, not resolved) belongs to a virtual environment: python3 finds its
 * pyvenv.cfg next to the path it was started by, or one directory up. */
static int in_venv(const char *exe)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s", exe);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(p, '/');
        if (slash == NULL)
            return 0;
        strcpy(slash + 1, "pyvenv.cfg");
        if (access(p, F_OK) == 0)
            return 1;
        *slash = '\0';
    }
    return 0;
}

/* 1 if the zygote can be this function's user server, with the interpreter's path in exe;
 * else 0 with why. */
static int zygote_fits(const agent_spec_t *spec, char **env, char *exe, size_t exe_cap, char *why, size_t cap)
{
    Faas__FunctionSpec view = FAAS__FUNCTION_SPEC__INIT;
    view.command = (char **)spec->argv;
    view.n_command = spec->argc;
    view.runtime = (char *)spec->runtime;
    char real[PATH_MAX], key[64];
    if (spec->image != NULL)
        return snprintf(why, cap, "an image runs its own interpreter"), 0;
    if (!faas_spec_zygote_fit(&view))
        return snprintf(why, cap, spec->runtime != NULL && strcmp(spec->runtime, FAAS_SPEC_RUNTIME_EXEC) == 0
                                      ? "runtime: exec"
                                      : "the command is not `python3 SCRIPT [ARGS]`"),
               0;
    /* a name with a slash is relative to the code directory, as the exec would take it */
    const char *e = resolve_exe(spec->argv[0], env, exe, exe_cap);
    char rel[PATH_MAX];
    if (e != NULL && e[0] != '/' && snprintf(rel, sizeof(rel), "%s/%s", spec->code_dir, e) < (int)sizeof(rel))
        e = rel;
    if (e == NULL || realpath(e, real) == NULL || strcmp(real, us.zyg_python) != 0)
        return snprintf(why, cap, "%s is not the pool's interpreter (%s)", spec->argv[0], us.zyg_python), 0;
    if (in_venv(e))
        return snprintf(why, cap, "%s is a virtual environment's interpreter", spec->argv[0]), 0;
    if (e != exe)
        snprintf(exe, exe_cap, "%s", e);
    if (agent_zygote_env_fits(env, us.zyg_env, key, sizeof(key)) != 0)
        return snprintf(why, cap, "the function sets %s, which python3 reads as it starts", key), 0;
    return script_fits(spec, why, cap);
}

/* Hands the function to the zygote (0), or discards it and execs (spawn's return). */
static int zygote_take(const agent_spec_t *spec, int userns_fd, const char **err)
{
    char why[512], exe[PATH_MAX], line[640];
    char **env = agent_build_env(spec, us.port);
    size_t cap = 512 << 10, n = 0;
    char *msg = env != NULL ? malloc(cap) : NULL;
    if (msg == NULL)
        snprintf(why, sizeof(why), "out of memory");
    else if (zygote_fits(spec, env, exe, sizeof(exe), why, sizeof(why)) &&
             (n = agent_zygote_message(spec, exe, env, msg, cap)) == 0)
        snprintf(why, sizeof(why), "the command and environment are too large for it");
    /* one write (blocking: a large environment may exceed the socket's buffer while the
     * zygote is still importing); the zygote reads to the EOF that follows */
    us.zyg_settled = NULL; /* standalone: no HELLO waits on it */
    zygote_settle(0);
    /* blocking, bounded: a large environment can exceed the socket buffer while the
     * zygote still imports (standalone) or runs slowly under the function's cpu.max */
    struct timeval tmo = {.tv_sec = ZYGOTE_SEND_MS / 1000, .tv_usec = (ZYGOTE_SEND_MS % 1000) * 1000};
    fcntl(us.zyg_fd, F_SETFL, 0);
    setsockopt(us.zyg_fd, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof(tmo));
    int sent = n > 0 && send(us.zyg_fd, msg, n, MSG_NOSIGNAL) == (ssize_t)n;
    if (n > 0 && !sent)
        snprintf(why, sizeof(why), "the zygote is gone (%s)", strerror(errno));
    free(msg);
    free(env);
    if (sent) {
        close(us.zyg_fd);
        us.zyg_fd = -1;
        us.in_zygote = 1;
        us.n_tail = 0; /* the zygote's own stderr is not the function's */
        platform_log("user server started in the pod's pre-initialized python3 (zygote)");
        return 0;
    }
    FAAS_INFO("event=zygote_unused fn=%s why=\"%s\"", spec->name, why);
    if (faas_spec_is_python3(spec->argv[0])) { /* a Python function's owner wants to know why */
        snprintf(line, sizeof(line), "user server started by exec, not in the pod's python3 zygote: %s", why);
        platform_log(line);
    }
    zygote_discard();
    return spawn(spec, userns_fd, err);
}

int agent_user_start(evl_loop_t *loop, const agent_spec_t *spec, int userns_fd, uint64_t t0_us,
                     const agent_user_cbs_t *cbs, const char **err)
{
    us.loop = loop;
    us.spec = spec;
    us.cbs = *cbs;
    us.port = spec->port;
    int rc = us.port == 0 && pick_port(&us.port) != 0 ? (*err = "cannot pick a port for the user server", -1)
             : us.zyg_fd >= 0                        ? zygote_take(spec, userns_fd, err)
                                                      : spawn(spec, userns_fd, err);
    /* the user server is in it now, or will never be: kept no longer than needed */
    if (userns_fd >= 0)
        close(userns_fd);
    if (rc != 0) {
        us.failed = 1;
        char line[1024];
        if (spec->image != NULL)
            snprintf(line, sizeof(line), "cannot start the user server: %s", *err);
        else
            snprintf(line, sizeof(line), "cannot start the user server: %s (commands run in the code directory, %s)",
                     *err, spec->code_dir);
        platform_log(line);
        return -1;
    }
    us.exec_at_us = faas_now_us();
    us.exec_us = (uint32_t)(us.exec_at_us - t0_us);
    us.deadline_us = us.exec_at_us + (uint64_t)spec->cold_start_timeout_ms * 1000;
    if (start_probing() != 0)
        return *err = "cannot create the probe timer", -1;
    return 0;
}

/* Reads what the user server left in its pipes (it is gone: this ends at EOF, or at
 * EAGAIN if something it started still holds them). */
static void drain_pipes(void)
{
    for (int i = 0; i < 2; i++)
        if (us.out[i].fd >= 0)
            on_pipe(&us.out[i].io, EVL_READ);
}

/* The user server exited: FAILED (before ready) with why, then USER_EXIT. */
static void user_exited(int status)
{
    char how[96], msg[TAIL_LINE_BYTES + 160], line[256];
    if (WIFEXITED(status))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(how, sizeof(how), "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    if (us.ready) {
        snprintf(line, sizeof(line), "user server %s", how);
        platform_log(line);
    } else if (!us.failed) {
        drain_pipes(); /* its last words come first */
        snprintf(msg, sizeof(msg), "user server %s before it was ready%s%s", how, us.n_tail ? ": " : "", last_stderr());
        snprintf(line, sizeof(line), "user server %s before it was ready%s", how,
                 us.n_tail ? " (its stderr is above)" : "; it wrote nothing to stderr");
        fail(msg, line);
    }
}

void agent_user_reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid != us.pid)
            continue;
        if (us.spec == NULL) { /* the zygote, before any function: the pod execs instead */
            FAAS_WARN("event=zygote_exited status=%d", status);
            us.pid = 0; /* reaped: discard kills what is left of its group */
            zygote_discard();
            continue;
        }
        us.pid = 0;
        /* the leader is gone: take whatever it left in its group with it */
        kill(-us.pgid, SIGKILL);
        int was_ready = us.ready;
        user_exited(status);
        us.cbs.on_exit(status, was_ready);
    }
}

void agent_user_kill(uint32_t grace_ms)
{
    agent_seccomp_stop(); /* the last counts go up before the pod does */
    if (us.pgid <= 0)
        return;
    stop_probing();
    kill(-us.pgid, SIGTERM);
    uint64_t until = faas_now_us() + (uint64_t)grace_ms * 1000;
    while (us.pid > 0 && faas_now_us() < until) {
        if (waitpid(us.pid, NULL, WNOHANG) == us.pid) {
            us.pid = 0;
            break;
        }
        usleep(2000);
    }
    kill(-us.pgid, SIGKILL);
    if (us.pid > 0)
        waitpid(us.pid, NULL, 0);
    us.pid = 0;
}
