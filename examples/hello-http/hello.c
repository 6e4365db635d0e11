/* hello.c - a small, ordinary HTTP/1.1 server (it knows nothing of the platform).
 *
 * Listens on 127.0.0.1:$PORT (default 8000), one thread per connection, keep-alive.
 *   GET  /healthz     -> 200 "ok"
 *   GET  / or /hello  -> "hello from hello-http\n"
 *   POST /echo        -> the request body (?status=NNN: with that status and X-Echo-Status)
 *   GET  /slow?ms=N   -> answers after N ms
 *   GET  /burn?ms=N   -> spins N ms of CPU time (this thread's), then answers: CPU-bound
 *   GET  /locked?ms=N -> holds one process-wide mutex while sleeping N ms: requests run one
 *                        at a time, slow but not CPU-bound (a queue, not a busy CPU)
 *   GET  /env?name=X  -> the value of environment variable X (404 if unset)
 *   GET  /crash       -> the process exits abruptly, without answering
 *   GET  /whoami      -> JSON: uid, pid, memory limit, writable dirs, PID namespace
 *   GET  /try?what=W  -> "W=<errno name>\n" (OK on success): what a hostile function would
 *                        try (mount, bpf, ptrace, unshare, clone_newuser, clone3, kexec,
 *                        keyctl, perf, init_module, process_vm_readv, pidfd_getfd,
 *                        read_agent_mem, agent_fds, agent_environ, kill_agent) or a normal
 *                        one does (thread, fork); "the agent" is the parent process
 *   anything else     -> 404
 *
 * With HELLO_LOG_REQUESTS=1 in its environment it writes a line to stdout when it starts
 * and when it ends each request, with the X-Request-Id and the wall clock in ms: tests
 * count from the function's log how often, and how many at once, requests ran.
 *
 * Build: cc -O2 -pthread -o hello hello.c */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD 65536
#define MAX_BODY (64u << 20)

/* CPU time, not wall time: under a CPU quota the spin takes longer in wall time, as a
 * CPU-bound handler does. */
static void burn_cpu_ms(long ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    volatile unsigned long x = 0;
    do {
        for (int i = 0; i < 10000; i++)
            x += (unsigned long)i * 2654435761u;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000L + (t.tv_nsec - t0.tv_nsec) / 1000000L < ms);
}

static pthread_mutex_t the_lock = PTHREAD_MUTEX_INITIALIZER;

static void locked_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    pthread_mutex_lock(&the_lock);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    pthread_mutex_unlock(&the_lock);
}

typedef struct {
    int fd;
    char buf[MAX_HEAD];
    size_t len; /* bytes buffered (the head of the next request first) */
    int head;   /* the current request is HEAD: headers only */
} conn_t;

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* extra: more header lines ("" or "Name: value\r\n..."). */
static int respond_with(conn_t *c, int status, const char *reason, const char *ctype, const char *extra,
                        const char *body, size_t blen, int keep)
{
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sContent-Length: %zu\r\nConnection: %s\r\n\r\n", status,
                      reason, ctype, extra, blen, keep ? "keep-alive" : "close");
    if (hl < 0 || (size_t)hl >= sizeof(head))
        return -1;
    if (send_all(c->fd, head, (size_t)hl) != 0 || (!c->head && send_all(c->fd, body, blen) != 0))
        return -1;
    return 0;
}

static int respond(conn_t *c, int status, const char *reason, const char *ctype, const char *body, size_t blen,
                   int keep)
{
    return respond_with(c, status, reason, ctype, "", body, blen, keep);
}

/* Reads more bytes into the connection buffer; -1 on EOF or error. */
static int more(conn_t *c)
{
    if (c->len == sizeof(c->buf))
        return -1;
    ssize_t n;
    do
        n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    return 0;
}

/* Takes n bytes from the buffer front (they were consumed). */
static void consume(conn_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Reads exactly n body bytes into out (after what is buffered). */
static int read_exact(conn_t *c, char *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        if (c->len == 0 && more(c) != 0)
            return -1;
        size_t take = c->len < n - got ? c->len : n - got;
        memcpy(out + got, c->buf, take);
        consume(c, take);
        got += take;
    }
    return 0;
}

/* Reads a CRLF line from the buffer into line (NUL-terminated, CRLF stripped). */
static int read_line(conn_t *c, char *line, size_t cap)
{
    char *nl;
    while ((nl = memchr(c->buf, '\n', c->len)) == NULL)
        if (more(c) != 0)
            return -1;
    size_t l = (size_t)(nl - c->buf);
    size_t cl = l > 0 && nl[-1] == '\r' ? l - 1 : l;
    if (cl >= cap)
        return -1;
    memcpy(line, c->buf, cl);
    line[cl] = '\0';
    consume(c, l + 1);
    return 0;
}

static char *read_chunked(conn_t *c, size_t *len)
{
    char line[256];
    char *body = NULL;
    *len = 0;
    for (;;) {
        if (read_line(c, line, sizeof(line)) != 0)
            goto fail;
        unsigned long sz = strtoul(line, NULL, 16);
        if (sz == 0)
            break;
        if (*len + sz > MAX_BODY)
            goto fail;
        char *nb = realloc(body, *len + sz + 1);
        if (nb == NULL)
            goto fail;
        body = nb;
        if (read_exact(c, body + *len, sz) != 0 || read_line(c, line, sizeof(line)) != 0)
            goto fail;
        *len += sz;
    }
    do /* trailers */
        if (read_line(c, line, sizeof(line)) != 0)
            goto fail;
    while (line[0] != '\0');
    return body != NULL ? body : calloc(1, 1);
fail:
    free(body);
    return NULL;
}

/* ---- /whoami ---------------------------------------------------------------------- */

static int read_small(const char *path, char *out, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
    return 0;
}

static int can_write(const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/.hello-write-probe-%d", dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    close(fd);
    unlink(path);
    return 1;
}

/* Finds the memory limit of our cgroup: v1 memory.limit_in_bytes or v2 memory.max,
 * trying the path from /proc/self/cgroup under the usual mount points. 0 = none. */
static unsigned long long memory_limit(char *cg, size_t cgcap, char *src, size_t srccap)
{
    char lines[4096], val[64], path[PATH_MAX];
    cg[0] = src[0] = '\0';
    if (read_small("/proc/self/cgroup", lines, sizeof(lines)) != 0)
        return 0;
    for (char *save = NULL, *l = strtok_r(lines, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        char *c1 = strchr(l, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1, *cgpath = c2 + 1;
        int v1 = strstr(ctrls, "memory") != NULL, v2 = ctrls[0] == '\0';
        if (!v1 && !v2)
            continue;
        /* v1: the memory hierarchy; v2: the unified one, wherever it is mounted */
        static const char *const v1c[][2] = {{"/sys/fs/cgroup/memory", "memory.limit_in_bytes"}};
        static const char *const v2c[][2] = {{"/sys/fs/cgroup", "memory.max"},
                                             {"/sys/fs/cgroup/unified", "memory.max"}};
        const char *const(*cands)[2] = v1 ? v1c : v2c;
        int nc = v1 ? 1 : 2;
        for (int i = 0; i < nc; i++) {
            for (int root = 0; root < 2; root++) { /* the full path, then the namespace root */
                snprintf(path, sizeof(path), "%s%s/%s", cands[i][0], root ? "" : cgpath, cands[i][1]);
                if (read_small(path, val, sizeof(val)) != 0)
                    continue;
                snprintf(cg, cgcap, "%s", cgpath);
                snprintf(src, srccap, "%s", path);
                unsigned long long v = strtoull(val, NULL, 10);
                if (strcmp(val, "max") == 0 || v >= (1ull << 62))
                    return 0;
                return v;
            }
        }
    }
    return 0;
}

static void json_str(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            o += (size_t)snprintf(out + o, cap - o, "\\%c", ch);
        else if (ch < 0x20)
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        else
            out[o++] = (char)ch;
    }
    out[o] = '\0';
}

static size_t whoami(char *out, size_t cap)
{
    char cwd[PATH_MAX] = "?", comm[64] = "?", pidns[64] = "?", host[128] = "?", cg[512], src[PATH_MAX];
    char e_cwd[PATH_MAX * 2], e_comm[128], e_cg[1024], e_src[PATH_MAX * 2], e_host[256];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        snprintf(cwd, sizeof(cwd), "?");
    read_small("/proc/1/comm", comm, sizeof(comm));
    ssize_t n = readlink("/proc/self/ns/pid", pidns, sizeof(pidns) - 1);
    pidns[n > 0 ? n : 0] = '\0';
    gethostname(host, sizeof(host) - 1);
    unsigned long long mem = memory_limit(cg, sizeof(cg), src, sizeof(src));
    json_str(e_cwd, sizeof(e_cwd), cwd);
    json_str(e_comm, sizeof(e_comm), comm);
    json_str(e_cg, sizeof(e_cg), cg);
    json_str(e_src, sizeof(e_src), src);
    json_str(e_host, sizeof(e_host), host);
    char memv[32];
    if (mem)
        snprintf(memv, sizeof(memv), "%llu", mem);
    else
        snprintf(memv, sizeof(memv), "null");
    /* 4026531836 is the inode of the kernel's initial PID namespace (PROC_PID_INIT_INO) */
    int host_ns = strcmp(pidns, "pid:[4026531836]") == 0;
    int w = snprintf(out, cap,
                     "{\"uid\": %d, \"gid\": %d, \"pid\": %d, \"ppid\": %d, \"cwd\": \"%s\", \"cwd_writable\": %s, "
                     "\"tmp_writable\": %s, \"memory_limit\": %s, \"memory_cgroup\": \"%s\", "
                     "\"memory_limit_file\": \"%s\", \"pid1_comm\": \"%s\", \"pid_ns\": \"%s\", "
                     "\"host_pid_ns\": %s, \"hostname\": \"%s\"}\n",
                     (int)getuid(), (int)getgid(), (int)getpid(), (int)getppid(), e_cwd,
                     can_write(".") ? "true" : "false", can_write("/tmp") ? "true" : "false", memv, e_cg, e_src, e_comm,
                     pidns, host_ns ? "true" : "false", e_host);
    return w > 0 && (size_t)w < cap ? (size_t)w : 0;
}

/* ---- /try: syscalls a platform should refuse ------------------------------------------- */

static const char *errname(int rc, int e)
{
    static const struct {
        int e;
        const char *n;
    } t[] = {{EPERM, "EPERM"},   {EACCES, "EACCES"}, {ENOSYS, "ENOSYS"}, {EINVAL, "EINVAL"},
             {EFAULT, "EFAULT"}, {ENOENT, "ENOENT"}, {ESRCH, "ESRCH"},   {EBADF, "EBADF"}};
    if (rc >= 0)
        return "OK";
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (t[i].e == e)
            return t[i].n;
    return "EOTHER";
}

static void *noop_thread(void *arg)
{
    return arg;
}

static long try_clone(unsigned long flags)
{
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return pid;
}

static long try_fork(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return pid;
}

static long try_open(pid_t agent, const char *what, int dir)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/%s", (int)agent, what);
    int fd = open(p, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
    return fd;
}

/* Every signal the agent could act on, to the agent: the answer is kill's, the proof is
 * that the agent still serves afterwards. */
static long try_kill(pid_t agent)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGSTOP, SIGKILL};
    long rc = 0;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (kill(agent, sigs[i]) != 0)
            rc = -1;
    /* a forged "sent by kill from outside" (si_pid 0): the kernel only lets SI_QUEUE through */
    siginfo_t si = {.si_signo = SIGTERM, .si_code = SI_QUEUE};
    if (syscall(SYS_rt_sigqueueinfo, agent, SIGTERM, &si) != 0)
        rc = -1;
    return rc;
}

static long try_one(const char *w, pid_t agent)
{
    char buf[16];
    struct iovec local = {buf, sizeof(buf)}, remote = {(void *)0x400000, sizeof(buf)};
    pthread_t th;
    if (strcmp(w, "mount") == 0)
        return mount("none", "/tmp", "tmpfs", 0, NULL);
    if (strcmp(w, "bpf") == 0)
        return syscall(SYS_bpf, 0, NULL, 0);
    if (strcmp(w, "ptrace") == 0)
        return ptrace(PTRACE_ATTACH, agent, NULL, NULL);
    if (strcmp(w, "unshare") == 0)
        return unshare(CLONE_NEWUSER);
    if (strcmp(w, "clone_newuser") == 0)
        return try_clone(CLONE_NEWUSER);
    if (strcmp(w, "clone3") == 0)
        return syscall(SYS_clone3, NULL, 0);
    if (strcmp(w, "kexec") == 0)
        return syscall(SYS_kexec_load, 0, 0, NULL, 0);
    if (strcmp(w, "keyctl") == 0)
        return syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0);
    if (strcmp(w, "perf") == 0) {
        char attr[128] = {0};
        return syscall(SYS_perf_event_open, attr, 0, -1, -1, 0);
    }
    if (strcmp(w, "init_module") == 0)
        return syscall(SYS_init_module, NULL, 0, "");
    if (strcmp(w, "process_vm_readv") == 0)
        return process_vm_readv(agent, &local, 1, &remote, 1, 0);
    if (strcmp(w, "pidfd_getfd") == 0) {
        int pfd = (int)syscall(SYS_pidfd_open, agent, 0);
        long fd = syscall(SYS_pidfd_getfd, pfd, 3, 0);
        int e = errno;
        if (pfd >= 0)
            close(pfd);
        if (fd >= 0)
            close((int)fd);
        errno = e;
        return fd;
    }
    if (strcmp(w, "read_agent_mem") == 0)
        return try_open(agent, "mem", 0);
    if (strcmp(w, "agent_fds") == 0)
        return try_open(agent, "fd", 1);
    if (strcmp(w, "agent_environ") == 0)
        return try_open(agent, "environ", 0);
    if (strcmp(w, "kill_agent") == 0)
        return try_kill(agent);
    if (strcmp(w, "thread") == 0) {
        int e = pthread_create(&th, NULL, noop_thread, NULL);
        if (e != 0)
            return errno = e, -1;
        return pthread_join(th, NULL), 0;
    }
    if (strcmp(w, "fork") == 0)
        return try_fork();
    return errno = EINVAL, -1;
}

static size_t try_syscall(const char *query, char *out, size_t cap)
{
    const char *w = strncmp(query, "what=", 5) == 0 ? query + 5 : "";
    errno = 0;
    long rc = try_one(w, getppid());
    int n = snprintf(out, cap, "%s=%s\n", w, errname(rc < 0 ? -1 : 0, errno));
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- routing -------------------------------------------------------------------------- */

static int route(conn_t *c, const char *method, const char *target, const char *body, size_t blen, int keep)
{
    char path[1024], query[1024] = "";
    const char *q = strchr(target, '?');
    size_t pl = q ? (size_t)(q - target) : strlen(target);
    if (pl >= sizeof(path))
        pl = sizeof(path) - 1;
    memcpy(path, target, pl);
    path[pl] = '\0';
    if (q)
        snprintf(query, sizeof(query), "%s", q + 1);
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    if (get && strcmp(path, "/healthz") == 0)
        return respond(c, 200, "OK", "text/plain", "ok\n", 3, keep);
    if (get && (strcmp(path, "/") == 0 || strcmp(path, "/hello") == 0))
        return respond(c, 200, "OK", "text/plain", "hello from hello-http\n", 22, keep);
    if (strcmp(method, "POST") == 0 && strcmp(path, "/echo") == 0) {
        /* ?status=NNN answers with that status and says so in a header of its own */
        const char *st = strncmp(query, "status=", 7) == 0 ? query + 7 : NULL;
        long code = st != NULL ? strtol(st, NULL, 10) : 200;
        if (code < 200 || code > 599)
            code = 200;
        char extra[64];
        snprintf(extra, sizeof(extra), "X-Echo-Status: %ld\r\n", code);
        return respond_with(c, (int)code, code == 200 ? "OK" : "Custom", "application/octet-stream",
                            st != NULL ? extra : "", body, blen, keep);
    }
    if (get && strcmp(path, "/slow") == 0) {
        const char *ms = strstr(query, "ms=");
        long v = ms ? strtol(ms + 3, NULL, 10) : 1000;
        if (v < 0 || v > 600000)
            v = 1000;
        struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        char msg[64];
        int n = snprintf(msg, sizeof(msg), "slept %ld ms\n", v);
        return respond(c, 200, "OK", "text/plain", msg, (size_t)n, keep);
    }
    if (get && (strcmp(path, "/burn") == 0 || strcmp(path, "/locked") == 0)) {
        const char *ms = strstr(query, "ms=");
        long v = ms ? strtol(ms + 3, NULL, 10) : 10;
        if (v < 0 || v > 600000)
            v = 10;
        if (path[1] == 'b')
            burn_cpu_ms(v);
        else
            locked_sleep_ms(v);
        char msg[64];
        int n = snprintf(msg, sizeof(msg), "%s %ld ms\n", path[1] == 'b' ? "burnt" : "held the lock", v);
        return respond(c, 200, "OK", "text/plain", msg, (size_t)n, keep);
    }
    if (get && strcmp(path, "/spew") == 0) {
        /* ?bytes=N[&line=L]: N bytes of L-byte lines (default 100) on stdout, a function
         * that prints without end */
        const char *b = strstr(query, "bytes="), *l = strstr(query, "line=");
        long long v = b ? strtoll(b + 6, NULL, 10) : 0, left = v;
        long len = l ? strtol(l + 5, NULL, 10) : 100;
        static char block[65000];
        if (len < 2 || len > (long)sizeof(block))
            len = 100;
        size_t fill = sizeof(block) / (size_t)len * (size_t)len;
        for (size_t i = 0; i < fill; i++)
            block[i] = i % (size_t)len == (size_t)len - 1 ? '\n' : (char)('a' + i % (size_t)len % 26);
        while (left > 0) {
            ssize_t w = write(STDOUT_FILENO, block, left < (long long)fill ? (size_t)left : fill);
            if (w <= 0)
                break;
            left -= w;
        }
        char msg[64];
        int n = snprintf(msg, sizeof(msg), "spewed %lld bytes\n", v - left);
        return respond(c, 200, "OK", "text/plain", msg, (size_t)n, keep);
    }
    if (get && strcmp(path, "/crash") == 0)
        _exit(3); /* abruptly: no response, the connection resets */
    if (get && strcmp(path, "/whoami") == 0) {
        char out[24576];
        size_t n = whoami(out, sizeof(out));
        return respond(c, 200, "OK", "application/json", out, n, keep);
    }
    if (get && strcmp(path, "/try") == 0) {
        char out[128];
        size_t n = try_syscall(query, out, sizeof(out));
        return respond(c, 200, "OK", "text/plain", out, n, keep);
    }
    if (get && strcmp(path, "/env") == 0 && strncmp(query, "name=", 5) == 0) {
        const char *v = getenv(query + 5);
        if (v != NULL) {
            char msg[4096];
            int n = snprintf(msg, sizeof(msg), "%s\n", v);
            return respond(c, 200, "OK", "text/plain", msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1,
                           keep);
        }
    }
    return respond(c, 404, "Not Found", "text/plain", "not found\n", 10, keep);
}

/* One write(2) per line: lines of concurrent requests never interleave in the log. */
static void log_request(const char *what, const char *rid, const char *method, const char *target)
{
    static int on = -1;
    if (on < 0) {
        const char *v = getenv("HELLO_LOG_REQUESTS");
        on = v != NULL && *v != '\0' && strcmp(v, "0") != 0;
    }
    if (!on)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char line[512];
    int n = snprintf(line, sizeof(line), "hello: request %s id=%s t_ms=%lld %s %.200s\n", what, rid[0] ? rid : "-",
                     (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, method, target);
    if (n > 0)
        (void)!write(STDOUT_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* ---- one connection ---------------------------------------------------------------------- */

/* Parses one request head (already a whole line set in the buffer) and serves it. */
static int serve_one(conn_t *c)
{
    char line[8192], method[16], target[4096], version[16], rid[128] = "";
    size_t clen = 0;
    int chunked = 0, keep = 1, bad;
    if (read_line(c, line, sizeof(line)) != 0)
        return -1;
    if (line[0] == '\0') /* tolerate a stray CRLF between requests */
        return 0;
    bad = sscanf(line, "%15s %4095s %15s", method, target, version) != 3 || strncmp(version, "HTTP/1.", 7) != 0;
    if (!bad && strcmp(version, "HTTP/1.0") == 0)
        keep = 0;
    c->head = !bad && strcmp(method, "HEAD") == 0;
    for (;;) {
        if (read_line(c, line, sizeof(line)) != 0)
            return -1;
        if (line[0] == '\0')
            break;
        if (strncasecmp(line, "content-length:", 15) == 0)
            clen = strtoull(line + 15, NULL, 10);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0 && strcasestr(line, "chunked"))
            chunked = 1;
        else if (strncasecmp(line, "connection:", 11) == 0)
            keep = strcasestr(line, "close") ? 0 : strcasestr(line, "keep-alive") ? 1 : keep;
        else if (strncasecmp(line, "x-request-id:", 13) == 0)
            sscanf(line + 13, " %127[!-~]", rid);
    }
    if (bad) {
        respond(c, 400, "Bad Request", "text/plain", "bad request\n", 12, 0);
        return -1;
    }
    if (clen > MAX_BODY) {
        respond(c, 413, "Payload Too Large", "text/plain", "too large\n", 10, 0);
        return -1;
    }
    size_t blen = clen;
    char *body = chunked ? read_chunked(c, &blen) : malloc(clen + 1);
    if (body == NULL || (!chunked && read_exact(c, body, clen) != 0)) {
        free(body);
        return -1;
    }
    log_request("begin", rid, method, target);
    int rc = route(c, method, target, body, blen, keep);
    log_request("end", rid, method, target);
    free(body);
    return rc == 0 && keep ? 0 : -1;
}

static void *conn_main(void *arg)
{
    conn_t *c = arg;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    while (serve_one(c) == 0) {
    }
    close(c->fd);
    free(c);
    return NULL;
}

int main(void)
{
    const char *ps = getenv("PORT");
    int port = ps && *ps ? atoi(ps) : 8000;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "hello: bad PORT %s\n", ps);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 512) != 0) {
        fprintf(stderr, "hello: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 1;
    }
    printf("hello-http listening on 127.0.0.1:%d\n", port);
    fflush(stdout);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                usleep(10000); /* EMFILE and friends: back off instead of spinning */
            continue;
        }
        conn_t *c = malloc(sizeof(*c));
        pthread_t t;
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->len = 0;
        /* Out of threads (a pids limit, say): wait a little for one to finish
         * rather than dropping a connection the client already sent on. */
        int tries = 0;
        while (pthread_create(&t, &at, conn_main, c) != 0 && ++tries < 200)
            usleep(5000);
        if (tries == 200) {
            close(fd);
            free(c);
        }
    }
}
