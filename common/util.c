#include "common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

uint64_t faas_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t faas_now_ms(void)
{
    return faas_now_us() / 1000u;
}

int64_t faas_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void faas_random_id(char *out, size_t cap)
{
    uint8_t b[8];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        uint64_t t = faas_now_us() ^ (uint64_t)(uintptr_t)out;
        memcpy(b, &t, sizeof(b));
    }
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < sizeof(b) && o + 2 < cap; i++) {
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    if (cap > 0)
        out[o < cap ? o : cap - 1] = '\0';
}

int faas_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

void faas_oneline(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

size_t faas_fmt_u64(char *buf, uint64_t v)
{
    char t[20];
    size_t n = 0;
    do
        t[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = t[n - 1 - i];
    return n;
}

void faas_request_id(char out[17])
{
    static __thread uint64_t state;
    if (state == 0) {
        char seed[17];
        faas_random_id(seed, sizeof(seed));
        state = strtoull(seed, NULL, 16) | 1;
    }
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, z >>= 4)
        out[i] = hex[z & 15];
    out[16] = '\0';
}

int faas_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t faas_hash_name(const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 0x100000001b3ULL;
    return (size_t)h;
}

int faas_parse_hostport(const char *s, char *host, size_t hostcap, uint16_t *port, const char **err)
{
    /* addresses end up in logs, discovery records and other daemons' argv */
    if (!faas_printable(s)) {
        *err = "address has spaces or control bytes";
        return -1;
    }
    const char *colon = strrchr(s, ':');
    if (colon == NULL) {
        *err = "address must be host:port";
        return -1;
    }
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= hostcap) {
        *err = "host part too long";
        return -1;
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || p < 0 || p > 65535) {
        *err = "port must be a number 0-65535";
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

uint8_t *faas_pb_pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return NULL;
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}

int faas_mkdirs(const char *path, int mode)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int faas_check_code_dir(const char *dir, char *err, size_t errcap)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) {
        snprintf(err, errcap, "cannot stat %s: %s", dir, strerror(errno));
        return -1;
    }
    if (vfs.f_flag & ST_NOEXEC) {
        snprintf(err, errcap, "%s is on a noexec mount: function code there could not be executed", dir);
        return -1;
    }
    /* a filesystem without Unix modes (vfat with a umask, some FUSE mounts) would show
     * the code to its owner only, never to the pod uid */
    char probe[4096], id[17];
    faas_random_id(id, sizeof(id));
    if (snprintf(probe, sizeof(probe), "%s/.mode-probe-%s", dir, id) >= (int)sizeof(probe)) {
        snprintf(err, errcap, "path too long: %s", dir);
        return -1;
    }
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (fd < 0) {
        snprintf(err, errcap, "cannot write in %s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    int kept = fchmod(fd, 0755) == 0 && fstat(fd, &st) == 0 && (st.st_mode & 0777) == 0755;
    close(fd);
    unlink(probe);
    if (!kept) {
        snprintf(err, errcap, "%s does not keep file modes: function code there would not be readable by pods", dir);
        return -1;
    }
    return 0;
}

#define COLD_START_FAILED "cold start failed"

const char *faas_cold_start_error(char *buf, size_t cap, const char *fn, const char *reason)
{
    snprintf(buf, cap, "cold start of function %s failed: %s", fn, reason);
    faas_oneline(buf);
    return buf;
}

const char *faas_cold_start_public(char *buf, size_t cap, const char *fn, const char *msg)
{
    char prefix[128];
    int n = snprintf(prefix, sizeof(prefix), "cold start of function %s failed: ", fn);
    if (msg != NULL && n > 0 && (size_t)n < sizeof(prefix) && strncmp(msg, prefix, (size_t)n) == 0 && msg[n] != '\0')
        snprintf(buf, cap, COLD_START_FAILED ": %s", msg + n);
    else
        snprintf(buf, cap, COLD_START_FAILED);
    faas_oneline(buf);
    return buf;
}

int faas_valid_function_name(const char *name, size_t len, const char **err)
{
    if (len == 0 || len > 63) {
        *err = "function name must be 1-63 characters";
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
        if (!ok) {
            *err = "function name must match [a-z0-9][a-z0-9-]*";
            return -1;
        }
    }
    return 0;
}

int faas_sockaddr_parse(const char *addr, const char *default_host, struct sockaddr_storage *ss, unsigned *sl,
                        const char **err)
{
    char host[128];
    uint16_t port;
    if (faas_parse_hostport(addr, host, sizeof(host), &port, err) != 0)
        return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host[0] ? host : default_host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *sl = sizeof(*sin);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *sl = sizeof(*sin6);
    } else {
        *err = "address must be a numeric IP and a port";
        return -1;
    }
    return 0;
}

int faas_listen_tcp(const char *addr, const char **err)
{
    struct sockaddr_storage ss;
    unsigned sl;
    if (faas_sockaddr_parse(addr, "0.0.0.0", &ss, &sl, err) != 0)
        return -1;
    int one = 1, fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, (socklen_t)sl) != 0 || listen(fd, 1024) != 0)
        goto fail;
    return fd;
fail:
    *err = strerror(errno);
    if (fd >= 0)
        close(fd);
    return -1;
}

/* One listener bound to ss, with SO_REUSEPORT when reuse; the fd or -1 (errno). */
/* backlog 0 binds without listening: a probe that no client can connect to, so
 * closing it resets nobody (a client polling the port at start-up got a reset) */
static int listen_on(const struct sockaddr_storage *ss, unsigned sl, int reuse, int backlog)
{
    int one = 1, fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if ((reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)ss, (socklen_t)sl) != 0 || (backlog > 0 && listen(fd, backlog) != 0)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int faas_listen_tcp_group(const char *addr, int *fds, unsigned n, const char **err)
{
    if (n <= 1) {
        fds[0] = faas_listen_tcp(addr, err);
        return fds[0] < 0 ? -1 : 0;
    }
    struct sockaddr_storage ss;
    unsigned sl;
    if (faas_sockaddr_parse(addr, "0.0.0.0", &ss, &sl, err) != 0)
        return -1;
    /* a plain bind first: EADDRINUSE if anyone listens there (a reuseport group of
     * another process included), and the port port 0 picked for the whole group */
    int probe = listen_on(&ss, sl, 0, 0);
    socklen_t l = sizeof(ss);
    if (probe < 0 || getsockname(probe, (struct sockaddr *)&ss, &l) != 0) {
        *err = strerror(errno);
        if (probe >= 0)
            close(probe);
        return -1;
    }
    close(probe);
    for (unsigned k = 0; k < n; k++)
        if ((fds[k] = listen_on(&ss, sl, 1, 1024)) < 0) {
            *err = strerror(errno);
            while (k > 0)
                close(fds[--k]);
            return -1;
        }
    return 0;
}

unsigned faas_cpu_count(void)
{
    cpu_set_t set;
    long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    /* a container's quota: "max 100000" is none, "200000 100000" is two CPUs */
    char buf[64];
    unsigned long long quota, period;
    if (faas_read_small("/sys/fs/cgroup/cpu.max", buf, sizeof(buf)) > 0 &&
        sscanf(buf, "%llu %llu", &quota, &period) == 2 && period != 0) {
        long q = (long)((quota + period - 1) / period);
        if (q >= 1 && q < n)
            n = q;
    }
    return n < 1 ? 1 : (unsigned)n;
}

long faas_read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return -1;
    }
    buf[n] = '\0';
    return (long)n;
}

ssize_t faas_send_with_fds(int sock, const void *buf, size_t len, const int *fds, size_t nfds, int flags)
{
    struct iovec iov = {(void *)buf, len};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(FAAS_MAX_SEND_FDS * sizeof(int))];
    } cm;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > FAAS_MAX_SEND_FDS) {
        errno = EINVAL;
        return -1;
    }
    if (nfds > 0) {
        memset(&cm, 0, sizeof(cm));
        m.msg_control = cm.b;
        m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    return sendmsg(sock, &m, MSG_NOSIGNAL | flags);
}

ssize_t faas_send_with_fd(int sock, const void *buf, size_t len, int fd, int flags)
{
    return faas_send_with_fds(sock, buf, len, &fd, fd >= 0 ? 1 : 0, flags);
}
