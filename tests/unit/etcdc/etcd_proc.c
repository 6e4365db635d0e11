/* tests/unit/etcdc/etcd_proc.c - see etcd_proc.h. posix_spawn, never fork: the test
 * process runs grpc, which must not be inherited across fork. */
#include "etcd_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { READY_WAIT_MS = 20000 };

int etcd_proc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* GET /health answers {"health":"true"}. */
static int healthy(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {1, 0};
    char buf[2048];
    size_t n = 0;
    int ok = 0;
    if (fd < 0)
        return 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        static const char req[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1) {
            ssize_t r;
            while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
                n += (size_t)r;
            buf[n] = 0;
            ok = strstr(buf, "\"health\":\"true\"") != NULL;
        }
    }
    close(fd);
    return ok;
}

/* Starts the process (posix_spawn); 0 or -1. */
static int launch(etcd_proc_t *e)
{
    char data[192], curl[96], purl[96], cluster[512], log[192];
    snprintf(data, sizeof(data), "%s/data", e->dir);
    snprintf(log, sizeof(log), "%s/etcd.log", e->dir);
    snprintf(curl, sizeof(curl), "http://127.0.0.1:%d", e->client_port);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", e->peer_port);
    if (e->cluster[0] == 0)
        snprintf(cluster, sizeof(cluster), "default=%s", purl);
    else
        snprintf(cluster, sizeof(cluster), "%s", e->cluster);
    char *argv[] = {"/usr/bin/etcd", "--name", e->name[0] ? e->name : "default", "--data-dir", data,
                    "--listen-client-urls", curl, "--advertise-client-urls", curl, "--listen-peer-urls", purl,
                    "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(&e->pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? 0 : -1;
}

/* Waits (bounded) until it answers /health; 0, or -1 (killed) when it did not. */
static int await_ready(etcd_proc_t *e)
{
    for (long end = now_ms() + READY_WAIT_MS; now_ms() < end;) {
        if (healthy(e->client_port))
            return 0;
        if (waitpid(e->pid, NULL, WNOHANG) == e->pid) {
            e->pid = 0;
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    etcd_proc_kill(e);
    return -1;
}

static int spawn(etcd_proc_t *e)
{
    return launch(e) == 0 ? await_ready(e) : -1;
}

int etcd_cluster_start(etcd_proc_t *m, int n)
{
    char cluster[512] = "";
    size_t off = 0;
    memset(m, 0, sizeof(*m) * (size_t)n);
    for (int i = 0; i < n; i++) {
        snprintf(m[i].dir, sizeof(m[i].dir), "/tmp/etcdc-test-XXXXXX");
        if (mkdtemp(m[i].dir) == NULL)
            return -1;
        snprintf(m[i].name, sizeof(m[i].name), "m%d", i);
        m[i].client_port = etcd_proc_free_port();
        m[i].peer_port = etcd_proc_free_port();
        snprintf(m[i].endpoint, sizeof(m[i].endpoint), "127.0.0.1:%d", m[i].client_port);
        off += (size_t)snprintf(cluster + off, sizeof(cluster) - off, "%sm%d=http://127.0.0.1:%d", i ? "," : "", i,
                                m[i].peer_port);
    }
    /* all at once: a member is healthy only once a quorum elected a leader */
    for (int i = 0; i < n; i++) {
        snprintf(m[i].cluster, sizeof(m[i].cluster), "%s", cluster);
        if (launch(&m[i]) != 0)
            return -1;
    }
    for (int i = 0; i < n; i++)
        if (await_ready(&m[i]) != 0)
            return -1;
    return 0;
}

int etcd_proc_start(etcd_proc_t *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "/tmp/etcdc-test-XXXXXX");
    if (mkdtemp(e->dir) == NULL)
        return -1;
    /* a port picked free can be taken before etcd binds it: a few tries */
    for (int attempt = 0; attempt < 3; attempt++) {
        e->client_port = etcd_proc_free_port();
        e->peer_port = etcd_proc_free_port();
        snprintf(e->endpoint, sizeof(e->endpoint), "127.0.0.1:%d", e->client_port);
        if (e->client_port != e->peer_port && spawn(e) == 0)
            return 0;
    }
    return -1;
}

int etcd_proc_restart(etcd_proc_t *e)
{
    return spawn(e);
}

void etcd_proc_kill(etcd_proc_t *e)
{
    if (e->pid > 0) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
    }
    e->pid = 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

void etcd_proc_destroy(etcd_proc_t *e)
{
    etcd_proc_kill(e);
    if (e->dir[0])
        nftw(e->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    e->dir[0] = 0;
}

int etcd_proc_ctl(etcd_proc_t *e, ...)
{
    char ep[96];
    snprintf(ep, sizeof(ep), "--endpoints=%s", e->endpoint);
    char *argv[16] = {"/usr/bin/etcdctl", ep};
    int n = 2;
    va_list ap;
    va_start(ap, e);
    for (char *a; n < 15 && (a = va_arg(ap, char *)) != NULL;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int st = -1;
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) == 0 && waitpid(pid, &st, 0) == pid)
        st = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    posix_spawn_file_actions_destroy(&fa);
    return st;
}
