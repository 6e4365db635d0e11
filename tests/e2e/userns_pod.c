/* tests/e2e/userns_pod.c - what the worker manager's root helper does for an image pod,
 * for tests/e2e/test_agent_image.py (run as root):
 *
 *   userns-pod ROOTFS ROOT SOCKFD AGENT [ARGS...]
 *
 * 1. makes the image's user namespace: a child drops to the pod uid 65534 and unshares
 *    CLONE_NEWUSER, we write "0 1000000000 65536" to its uid_map and gid_map, open its
 *    /proc/<pid>/ns/user and send that fd over the unix socket SOCKFD (the test, as the
 *    worker manager, passes it on in SPECIALIZE);
 * 2. in a mount namespace of our own, binds ROOTFS at ROOT with /proc at ROOT/proc and a
 *    fresh tmpfs at ROOT/tmp (the worker manager mounts an overlay there);
 * 3. drops to uid/gid 65534 with no_new_privs, as a pod's agent runs, and execs AGENT.
 * Any failure: a line on stderr, exit 1 (the test reads it). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define POD_ID 65534
#define ID_MAP "0 1000000000 65536\n"

static void die(const char *what)
{
    fprintf(stderr, "userns-pod: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s))
        die(path);
    close(fd);
}

/* The user namespace owned by uid 65534, mapped as the worker manager maps it; its fd. */
static int make_userns(void)
{
    int up[2], down[2];
    char b = 0, path[64];
    if (pipe2(up, O_CLOEXEC) != 0 || pipe2(down, O_CLOEXEC) != 0)
        die("pipe");
    pid_t c = fork();
    if (c < 0)
        die("fork");
    if (c == 0) {
        /* its owner is the creator's euid: the pod's */
        if (setresgid(POD_ID, POD_ID, POD_ID) != 0 || setresuid(POD_ID, POD_ID, POD_ID) != 0 ||
            unshare(CLONE_NEWUSER) != 0)
            _exit(1);
        if (write(up[1], &b, 1) != 1 || read(down[0], &b, 1) < 0)
            _exit(1);
        _exit(0);
    }
    if (read(up[0], &b, 1) != 1) {
        errno = ECHILD;
        die("the namespace child failed");
    }
    snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)c);
    write_file(path, ID_MAP);
    snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)c);
    write_file(path, ID_MAP);
    snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)c);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(path);
    if (write(down[1], &b, 1) != 1)
        die("release the namespace child");
    waitpid(c, NULL, 0);
    close(up[0]), close(up[1]), close(down[0]), close(down[1]);
    return fd;
}

static void send_fd(int sock, int fd)
{
    char one = 'u';
    struct iovec iov = {&one, 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    if (sendmsg(sock, &m, 0) != 1)
        die("send the namespace fd");
}

static void mount_root(const char *rootfs, const char *root)
{
    char path[4096];
    if (unshare(CLONE_NEWNS) != 0)
        die("unshare(CLONE_NEWNS)");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        die("make / private");
    if (mount(rootfs, root, NULL, MS_BIND | MS_REC, NULL) != 0)
        die("bind the rootfs");
    snprintf(path, sizeof(path), "%s/proc", root);
    if (mount("/proc", path, NULL, MS_BIND | MS_REC, NULL) != 0)
        die("bind /proc");
    snprintf(path, sizeof(path), "%s/tmp", root);
    if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777") != 0)
        die("mount /tmp");
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: userns-pod ROOTFS ROOT SOCKFD AGENT [ARGS...]\n");
        return 2;
    }
    int sock = atoi(argv[3]);
    int ns = make_userns();
    send_fd(sock, ns);
    close(ns);
    close(sock);
    mount_root(argv[1], argv[2]);
    if (setgroups(0, NULL) != 0 || setresgid(POD_ID, POD_ID, POD_ID) != 0 || setresuid(POD_ID, POD_ID, POD_ID) != 0)
        die("drop to the pod's uid");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die("no_new_privs");
    execv(argv[4], argv + 4);
    die(argv[4]);
}
