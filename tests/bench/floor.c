/* floor.c - the cold-start floor: what starting the user server costs with no
 * platform at all, so the harness can report "platform share = cold start - floor".
 *
 * N times: clone() the user server into new PID+mount+IPC+UTS namespaces (the
 * namespaces a pod gets), exec it with PORT set, poll with non-blocking connect()
 * in a tight loop until it accepts, send one GET, read the whole response, SIGKILL
 * it and reap it. Prints one line per run: the microseconds from clone() to the end
 * of the response. Nothing else (no cgroups, no mounts, no uid change): a floor.
 *
 * usage: floor N PATH ARGV0 [ARGS...]      (run as root; PATH e.g. /hello)
 * Each run gets a fresh free port (the previous run's port may sit in TIME_WAIT).
 * Build: cc -O2 -o floor floor.c */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char **child_argv;

/* A free loopback port, chosen by the kernel (outside the timed section). */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t l = sizeof(a);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int child_main(void *arg)
{
    (void)arg;
    /* the server's banner must not mix with our figures on stdout */
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) {
        dup2(null, 1);
        dup2(null, 2);
    }
    execv(child_argv[0], child_argv);
    _exit(127);
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* One non-blocking connect attempt; returns the connected fd or -1. A refused
 * connect is answered at once on loopback, so this loop spins as fast as the
 * kernel answers: the floor is not inflated by a poll interval. */
static int try_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
        return fd;
    if (errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t l = sizeof(err);
        if (poll(&p, 1, 1000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err == 0)
            return fd;
    }
    close(fd);
    return -1;
}

/* Sends GET path, reads until the peer has sent a full Content-Length body. */
static int one_request(int fd, const char *path)
{
    char req[512], buf[8192];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: floor\r\nConnection: close\r\n\r\n", path);
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    if (write(fd, req, (size_t)n) != n)
        return -1;
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = 0;
        char *eoh = strstr(buf, "\r\n\r\n");
        char *cl = strcasestr(buf, "content-length:");
        if (eoh && cl && got >= (size_t)(eoh + 4 - buf) + strtoul(cl + 15, NULL, 10))
            break;
        if (got == sizeof(buf) - 1)
            break;
    }
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: floor N PATH ARGV0 [ARGS...]\n");
        return 2;
    }
    int n = atoi(argv[1]);
    const char *path = argv[2];
    child_argv = argv + 3;
    static char stack[1 << 16] __attribute__((aligned(16)));
    for (int i = 0; i < n; i++) {
        int port = free_port();
        char portenv[32];
        snprintf(portenv, sizeof(portenv), "%d", port);
        setenv("PORT", portenv, 1);
        long long t0 = now_us();
        pid_t pid = clone(child_main, stack + sizeof(stack),
                          CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD, NULL);
        if (pid < 0) {
            perror("clone");
            return 1;
        }
        int fd = -1;
        long long deadline = t0 + 5000000;
        while ((fd = try_connect(port)) < 0 && now_us() < deadline) {
            /* still a tight loop, but a busy machine's only other runnable task may be
             * the server we wait for: do not sit on its core for a whole slice */
            sched_yield();
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                fprintf(stderr, "floor: the server exited before accepting\n");
                return 1;
            }
        }
        int rc = fd >= 0 ? one_request(fd, path) : -1;
        long long t1 = now_us();
        if (fd >= 0)
            close(fd);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (rc != 0) {
            fprintf(stderr, "floor: run %d failed (%s)\n", i, fd < 0 ? "never accepted" : "bad response");
            return 1;
        }
        printf("%lld\n", t1 - t0);
        fflush(stdout);
    }
    return 0;
}
