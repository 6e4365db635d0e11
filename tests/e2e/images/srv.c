/* srv.c - the user server of the test images (issue 15): static, so an image holding
 * only busybox and this file runs it. It knows nothing of the platform; it reports what
 * it sees from inside, so the tests can tell the image's filesystem and ids from the
 * host's.
 *
 * Listens on 0.0.0.0:$PORT (default 8080), one thread per connection, keep-alive.
 *   GET /healthz      -> 200 "ok"; 503 until SRV_READY_AFTER_MS (env) have passed since start
 *   GET /hello        -> "hello\n"
 *   GET /info         -> JSON: uid, gid, groups, cwd, argv, env (FOO BAR PORT HOME PATH),
 *                        which of a fixed list of paths exist, /etc/imagefile's content,
 *                        /written's and /data/written's content (null if absent), and
 *                        whether /healthz would pass now ("ready")
 *   GET /exists?p=P   -> "yes" or "no" (stat of P)
 *   GET /ls?p=P       -> the names in directory P, sorted, one a line (404 if it cannot)
 *   GET /try?what=W   -> "OK" or the errno name of what a hostile server would try: mount
 *                        (a tmpfs on /tmp), kill1 (signal 0 to pid 1: the agent), environ1
 *                        (read /proc/1/environ), setuid0 (become root of the namespace)
 *   GET /write        -> JSON: the errno name (or "OK") of creating /tmp/x, /written and
 *                        /data/written (a directory the image gives its user); each
 *                        then holds "pid <our pid as we see it>"
 *   anything else     -> 404
 *
 * Build: cc -static -O2 -pthread -o srv srv.c */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD 16384
#define MAX_OUT 16384

static int g_argc;
static char **g_argv;
static struct timespec g_start;
static long g_ready_after_ms;

/* Whether the readiness delay has passed: a request the platform lets through before
 * its probe passed would see false. */
static int ready(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - g_start.tv_sec) * 1000L + (t.tv_nsec - g_start.tv_nsec) / 1000000L >= g_ready_after_ms;
}

/* The paths /info reports on: the image's own files, the whiteout, a host-only file
 * (Debian's marker, present on the host, absent in our images) and the pod's extras. */
static const char *const PROBES[] = {"/etc/imagefile", "/etc/debian_version", "/bin/busybox", "/etc/gone",
                                     "/etc/kept",      "/usr/bin/umoci",      "/proc/self",   "/dev/null",
                                     "/written",       "/data/written",       "/tmp/x",       NULL};

typedef struct {
    char buf[MAX_OUT];
    size_t len;
} out_t;

static void put(out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len = o->len + (size_t)n < sizeof(o->buf) ? o->len + (size_t)n : sizeof(o->buf) - 1;
}

/* A JSON string (or null): only what the tests put in files and env, escaped plainly. */
static void put_str(out_t *o, const char *s)
{
    if (s == NULL) {
        put(o, "null");
        return;
    }
    put(o, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            put(o, "\\%c", ch);
        else if (ch < 0x20)
            put(o, "\\u%04x", ch);
        else
            put(o, "%c", ch);
    }
    put(o, "\"");
}

/* The first 1 KiB of a file, NUL-terminated; NULL if it cannot be read. */
static char *slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return NULL;
    buf[n] = '\0';
    return buf;
}

static void info(out_t *o)
{
    gid_t groups[64];
    int ng = getgroups(64, groups);
    char cwd[512], f1[1024], f2[1024], f3[1024];
    put(o, "{\"uid\": %u, \"gid\": %u, \"groups\": [", (unsigned)getuid(), (unsigned)getgid());
    for (int i = 0; i < ng; i++)
        put(o, "%s%u", i ? ", " : "", (unsigned)groups[i]);
    put(o, "], \"cwd\": ");
    put_str(o, getcwd(cwd, sizeof(cwd)));
    put(o, ", \"argv\": [");
    for (int i = 0; i < g_argc; i++) {
        put(o, i ? ", " : "");
        put_str(o, g_argv[i]);
    }
    put(o, "], \"env\": {");
    static const char *const vars[] = {"FOO", "BAR", "PORT", "HOME", "PATH", NULL};
    for (int i = 0; vars[i]; i++) {
        put(o, "%s\"%s\": ", i ? ", " : "", vars[i]);
        put_str(o, getenv(vars[i]));
    }
    put(o, "}, \"exists\": {");
    for (int i = 0; PROBES[i]; i++) {
        struct stat st;
        put(o, "%s\"%s\": %s", i ? ", " : "", PROBES[i], stat(PROBES[i], &st) == 0 ? "true" : "false");
    }
    put(o, "}, \"imagefile\": ");
    put_str(o, slurp("/etc/imagefile", f1, sizeof(f1)));
    put(o, ", \"written\": ");
    put_str(o, slurp("/written", f2, sizeof(f2)));
    put(o, ", \"data_written\": ");
    put_str(o, slurp("/data/written", f3, sizeof(f3)));
    put(o, ", \"ready\": %s}\n", ready() ? "true" : "false");
}

static const char *try_create(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return strerrorname_np(errno);
    char line[64];
    int n = snprintf(line, sizeof(line), "pid %d\n", (int)getpid());
    ssize_t w = write(fd, line, (size_t)n);
    int err = w == n ? 0 : errno;
    close(fd);
    return err ? strerrorname_np(err) : "OK";
}

static const char *try_it(const char *what)
{
    int rc = -1;
    char buf[64];
    errno = EINVAL;
    if (strcmp(what, "mount") == 0) {
        rc = mount("none", "/tmp", "tmpfs", 0, NULL);
    } else if (strcmp(what, "kill1") == 0) {
        rc = kill(1, 0);
    } else if (strcmp(what, "environ1") == 0) {
        int fd = open("/proc/1/environ", O_RDONLY | O_CLOEXEC);
        rc = fd < 0 ? -1 : (int)read(fd, buf, sizeof(buf));
        rc = rc < 0 ? -1 : 0;
        if (fd >= 0)
            close(fd);
    } else if (strcmp(what, "setuid0") == 0) {
        rc = setuid(0);
    }
    return rc == 0 ? "OK" : strerrorname_np(errno);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int list_dir(out_t *o, const char *path)
{
    struct dirent **names;
    int n = scandir(path, &names, NULL, by_name);
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") != 0 && strcmp(names[i]->d_name, "..") != 0)
            put(o, "%s\n", names[i]->d_name);
        free(names[i]);
    }
    free(names);
    return 0;
}

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

/* Head and body in one send: two small writes would meet Nagle and the peer's delayed
 * ACK (40 ms a response). */
static int respond(int fd, int status, const char *ctype, const char *body, size_t blen)
{
    char head[256];
    int hl =
        snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n", status,
                 status == 200   ? "OK"
                 : status == 503 ? "Service Unavailable"
                                 : "Not Found",
                 ctype, blen);
    struct iovec iov[2] = {{head, (size_t)hl}, {(void *)body, blen}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t w;
    do
        w = sendmsg(fd, &m, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -1;
    if ((size_t)w >= (size_t)hl) /* the rest, if the socket took part of it */
        return send_all(fd, body + ((size_t)w - (size_t)hl), blen - ((size_t)w - (size_t)hl));
    return send_all(fd, head + w, (size_t)hl - (size_t)w) == 0 ? send_all(fd, body, blen) : -1;
}

/* One request: the target of its request line, already NUL-terminated. */
static int route(int fd, const char *target)
{
    out_t *o = calloc(1, sizeof(*o));
    int rc = -1;
    if (o == NULL)
        return -1;
    if (strcmp(target, "/healthz") == 0) {
        rc = ready() ? respond(fd, 200, "text/plain", "ok", 2) : respond(fd, 503, "text/plain", "not yet", 7);
    } else if (strcmp(target, "/hello") == 0) {
        rc = respond(fd, 200, "text/plain", "hello\n", 6);
    } else if (strcmp(target, "/info") == 0) {
        info(o);
        rc = respond(fd, 200, "application/json", o->buf, o->len);
    } else if (strncmp(target, "/exists?p=", 10) == 0) {
        struct stat st;
        rc = stat(target + 10, &st) == 0 ? respond(fd, 200, "text/plain", "yes", 3)
                                         : respond(fd, 200, "text/plain", "no", 2);
    } else if (strncmp(target, "/ls?p=", 6) == 0 && list_dir(o, target + 6) == 0) {
        rc = respond(fd, 200, "text/plain", o->buf, o->len);
    } else if (strncmp(target, "/try?what=", 10) == 0) {
        const char *r = try_it(target + 10);
        rc = respond(fd, 200, "text/plain", r, strlen(r));
    } else if (strcmp(target, "/write") == 0) {
        const char *tmp = try_create("/tmp/x");
        const char *root = try_create("/written");
        put(o, "{\"tmp\": \"%s\", \"root\": \"%s\", \"data\": \"%s\"}\n", tmp, root, try_create("/data/written"));
        rc = respond(fd, 200, "application/json", o->buf, o->len);
    } else {
        rc = respond(fd, 404, "text/plain", "not found\n", 10);
    }
    free(o);
    return rc;
}

/* Skips a request body announced by Content-Length (none of our routes reads one). */
static long content_length(const char *head)
{
    const char *p = strcasestr(head, "\ncontent-length:");
    return p ? strtol(p + 16, NULL, 10) : 0;
}

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    char *buf = malloc(MAX_HEAD + 1);
    size_t len = 0;
    while (buf != NULL) {
        char *end;
        buf[len] = '\0';
        while ((end = strstr(buf, "\r\n\r\n")) == NULL) {
            if (len == MAX_HEAD)
                goto done;
            ssize_t n = recv(fd, buf + len, MAX_HEAD - len, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                goto done;
            len += (size_t)n;
            buf[len] = '\0';
        }
        size_t used = (size_t)(end + 4 - buf);
        long body = content_length(buf);
        char method[16], target[1024];
        if (body < 0 || sscanf(buf, "%15s %1023s", method, target) != 2 || route(fd, target) != 0)
            goto done;
        /* drop the head and the body that follows it (part may still be unread) */
        size_t have = len - used, skip = (size_t)body < have ? (size_t)body : have;
        memmove(buf, buf + used + skip, have - skip);
        len = have - skip;
        for (long left = body - (long)skip; left > 0;) {
            char sink[4096];
            ssize_t n = recv(fd, sink, left < 4096 ? (size_t)left : 4096, 0);
            if (n <= 0)
                goto done;
            left -= n;
        }
    }
done:
    free(buf);
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
    clock_gettime(CLOCK_MONOTONIC, &g_start);
    const char *delay = getenv("SRV_READY_AFTER_MS");
    g_ready_after_ms = delay ? atol(delay) : 0;
    signal(SIGPIPE, SIG_IGN);
    const char *port = getenv("PORT");
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port ? atoi(port) : 8080)};
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 128) != 0) {
        perror("srv: listen");
        return 1;
    }
    fprintf(stderr, "srv: listening on %s as uid %u\n", port ? port : "8080", (unsigned)getuid());
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(long)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
}
