/* spawner.c - the root pod spawner helper.
 *
 * grpc core starts threads and must not be inherited across fork, so the helper
 * is forked at the very start of main, stays single-threaded (setns into a mount
 * namespace needs that) and does every clone/mount/kill for the WM over a
 * SOCK_SEQPACKET socket, one fixed-size request and reply per packet. */
#include "worker-manager/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/mount.h>
#include <poll.h>
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
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

/* RECORD and EXIT are one-way (no reply); ADOPT comes only on <state>/helper.sock. */
enum { OP_SPAWN = 1, OP_MOUNT = 2, OP_KILL = 3, OP_CLEANUP = 4, OP_RECORD = 5, OP_EXIT = 6, OP_ADOPT = 7, OP_MOUNT_IMAGE = 8 };

/* Largest packet either side sends: a request with its payload (RECORD: a pod's
 * record; ADOPT: the successor's config) or an adopted pod with its record. */
#define HELPER_MAX_PACKET (64 * 1024)

typedef struct {
    uint32_t op;
    uint32_t no_egress; /* MOUNT: network none */
    int32_t pid;
    char pod[48];
    char arg[96]; /* sha256 (MOUNT), manifest sha256 (MOUNT_IMAGE) or previous worker id (CLEANUP) */
} hreq_t;

typedef struct {
    int32_t rc;
    int32_t pid;
    uint32_t addr; /* SPAWN: the pod's address (host order) */
    char err[240];
} hrep_t;

/* A pod as the helper keeps it. Why the WM's per-pod state lives here and not in files
 * under the state dir: the helper is what outlives a WM crash, and the pods live exactly
 * as long as it does (PDEATHSIG), so a record here can never outlive its pod nor be
 * found without it, costs no disk write on a cold start, and comes back to a successor
 * in the same packet as the pod's control socket. */
typedef struct {
    char pod[48];
    pid_t pid;
    int ctl;       /* a dup of the WM's end of the control socket: the agent never sees EOF */
    uint32_t addr; /* the pod's address (host order) */
    uint8_t *rec;  /* the WM's record of the pod (wm_pod_record); NULL: state unclear */
    int upper;     /* an image pod's writable layer (imagemount.c), let go with the pod; -1 */
    size_t rec_len;
} hpod_t;

/* What a successor sends with ADOPT: the config that decides whether the pods are its. */
typedef struct {
    char id[64]; /* "" = take the helper's */
    char state_dir[PATH_MAX], cgroup_root[PATH_MAX], agent[PATH_MAX];
    uint32_t uid, gid, pod_netns, no_seccomp;
    uint32_t pod_net, pod_prefix; /* the pods' addresses are in the predecessor's range */
} adopt_cfg_t;

/* One adopted pod on the wire (its record follows, its control fd rides along);
 * pod[0] == '\0' ends the list. */
typedef struct {
    char pod[48];
    int32_t pid;
    uint32_t addr;
    uint32_t rec_len;
} hpod_wire_t;

/* Helper-side state: a copy of the config and the pods it has cloned. */
static struct {
    wm_config_t cfg;
    wm_cg_layout_t cg;
    hpod_t *pods;
    size_t n_pods, cap_pods;
    int self_mnt; /* the helper's own mount namespace, to return to after a MOUNT */
    int self_net; /* and network namespace, after configuring a pod's (netns.c) */
    int userns;   /* the images' user namespace (imagemount.c), made at the first image; -1 */
    int lfd;      /* <state>/helper.sock: a successor's way in after a WM crash; -1: none */
    char sock[108];
    ino_t sock_ino; /* the file bound at sock: unlinked at exit only while it is still ours */
    dev_t sock_dev;
} H = {.lfd = -1, .userns = -1};

typedef struct {
    const char *pod;
    const char *zygote, *preload; /* a python pod's env values (SPAWN's payload); NULL: generic */
    int ctl;     /* pod end of the control socket */
    int errpipe; /* CLOEXEC: exec success closes it, failure writes why */
    char cg_procs[WM_CG_N + 1][PATH_MAX];
    size_t n_cg;
} child_arg_t;

static void child_fail(int fd, const char *what)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "%s: %s", what, strerror(errno));
    if (n > 0)
        (void)!write(fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
    _exit(127);
}

/* ---- the pod's root: only what a server needs ------------------------------------
 * A tmpfs root of its own, built in the pod's mount namespace and pivoted into before
 * the agent runs: the system directories read-only, a minimal /etc and /dev, /proc of
 * its PID namespace, its own cgroup directories (the agent reads its CPU figures there),
 * a private /tmp with the code's mount point. Not the host's /root, /home, /var, /run,
 * /sys, the platform's state directory or any other function's code. */

#define POD_ROOT "/tmp" /* staging: the pod's own mount namespace hides the host's /tmp */

/* System directories: bound read-only, or re-made as the same symlink (merged /usr). */
static const char *const SYSTEM_DIRS[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
/* What programs read in /etc: the loader's cache, users and groups for getpwuid, name
 * resolution, TLS roots, time zone, Debian's alternatives symlinks. */
static const char *const ETC_FILES[] = {
    "/etc/ld.so.cache", "/etc/ld.so.conf",    "/etc/ld.so.conf.d",    "/etc/passwd",
    "/etc/group",       "/etc/nsswitch.conf", "/etc/hosts",           "/etc/resolv.conf",
    "/etc/host.conf",   "/etc/gai.conf",      "/etc/services",        "/etc/protocols",
    "/etc/localtime",   "/etc/ssl",           "/etc/ca-certificates", "/etc/alternatives",
    "/etc/mime.types",  "/etc/os-release",    "/etc/debian_version",  "/etc/python3",
    "/etc/python3.11",  "/etc/locale.alias"};
static const char *const DEV_NODES[] = {"/dev/null",   "/dev/zero",    "/dev/full",
                                        "/dev/random", "/dev/urandom", "/dev/tty"};

static void in_root(char *out, size_t cap, const char *path)
{
    wm_fmt(out, cap, "%s%s", POD_ROOT, path);
}

/* Binds host path src (a file or a directory) at the same path in the new root, read-only
 * unless dev (device nodes need their device access). Missing sources are skipped. */
static void bind_ro(child_arg_t *a, const char *src, int dev)
{
    struct stat st;
    char dst[PATH_MAX];
    if (stat(src, &st) != 0)
        return;
    in_root(dst, sizeof(dst), src);
    char parent[PATH_MAX];
    wm_fmt(parent, sizeof(parent), "%s", dst);
    *strrchr(parent, '/') = '\0';
    if (faas_mkdirs(parent, 0755) != 0)
        child_fail(a->errpipe, parent);
    if (S_ISDIR(st.st_mode) ? mkdir(dst, 0755) != 0 && errno != EEXIST
                            : close(open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) != 0)
        child_fail(a->errpipe, dst);
    unsigned long ro = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (dev ? 0 : MS_NODEV);
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0 || mount(NULL, dst, NULL, ro, NULL) != 0)
        child_fail(a->errpipe, src);
}

static void system_dir(child_arg_t *a, const char *path)
{
    struct stat st;
    char link[PATH_MAX], dst[PATH_MAX];
    if (lstat(path, &st) != 0)
        return;
    if (!S_ISLNK(st.st_mode)) {
        bind_ro(a, path, 0);
        return;
    }
    ssize_t n = readlink(path, link, sizeof(link) - 1);
    if (n <= 0)
        return;
    link[n] = '\0';
    in_root(dst, sizeof(dst), path);
    if (symlink(link, dst) != 0)
        child_fail(a->errpipe, dst);
}

static void minimal_dev(child_arg_t *a)
{
    static const char *const links[][2] = {{"/proc/self/fd", "/dev/fd"},
                                           {"/proc/self/fd/0", "/dev/stdin"},
                                           {"/proc/self/fd/1", "/dev/stdout"},
                                           {"/proc/self/fd/2", "/dev/stderr"}};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof(DEV_NODES) / sizeof(DEV_NODES[0]); i++)
        bind_ro(a, DEV_NODES[i], 1);
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        in_root(p, sizeof(p), links[i][1]);
        if (symlink(links[i][0], p) != 0)
            child_fail(a->errpipe, p);
    }
    in_root(p, sizeof(p), "/dev/shm");
    if (mkdir(p, 01777) != 0 || mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=16m") != 0)
        child_fail(a->errpipe, "mount /dev/shm");
}

/* The pod's own cgroup directories, at their host paths (the agent finds them from
 * /proc/self/cgroup): read-only, so the pod reads its figures and changes nothing. */
static void own_cgroups(child_arg_t *a)
{
    for (size_t i = 0; i < a->n_cg; i++) {
        char dir[PATH_MAX];
        wm_fmt(dir, sizeof(dir), "%s", a->cg_procs[i]);
        *strrchr(dir, '/') = '\0';
        bind_ro(a, dir, 0);
    }
}

/* Builds the root at POD_ROOT and pivots into it; the old root is detached. */
static void pod_root(child_arg_t *a)
{
    char p[PATH_MAX];
    /* the WM's umask (077 for a careful root) must not lock the pod uid out of the
     * directories made here; 022 is also what a server expects to inherit */
    umask(022);
    if (mount("tmpfs", POD_ROOT, "tmpfs", MS_NOSUID, "mode=0755,size=1m") != 0)
        child_fail(a->errpipe, "mount the pod's root");
    for (size_t i = 0; i < sizeof(SYSTEM_DIRS) / sizeof(SYSTEM_DIRS[0]); i++)
        system_dir(a, SYSTEM_DIRS[i]);
    for (size_t i = 0; i < sizeof(ETC_FILES) / sizeof(ETC_FILES[0]); i++)
        bind_ro(a, ETC_FILES[i], 0);
    minimal_dev(a);
    own_cgroups(a);
    static const char *const dirs[] = {"/proc", "/tmp", "/etc"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        in_root(p, sizeof(p), dirs[i]);
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            child_fail(a->errpipe, p);
    }
    /* pivot_root(".", "."): the old root ends up under the new one, then goes */
    if (chdir(POD_ROOT) != 0 || syscall(SYS_pivot_root, ".", ".") != 0 || umount2(".", MNT_DETACH) != 0 ||
        chdir("/") != 0)
        child_fail(a->errpipe, "pivot into the pod's root");
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        child_fail(a->errpipe, "mount /proc");
}

/* The root tmpfs read-only once everything is mounted on it: the pod writes only /tmp. */
static void seal_root(child_arg_t *a)
{
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID, NULL) != 0)
        child_fail(a->errpipe, "make the pod's root read-only");
}

/* The pod's own /tmp, with the (root-owned, so the pod uid cannot move it) mount point
 * of its code at WM_POD_CODE_DIR. */
static void mount_tmp(child_arg_t *a)
{
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m") != 0)
        child_fail(a->errpipe, "mount tmpfs /tmp");
    /* chmod too: a umask of the WM (027, 077) must not lock the pod uid out */
    if (faas_mkdirs(WM_POD_CODE_DIR, 0755) != 0 || chmod(WM_POD_FAAS_DIR, 0755) != 0 ||
        chmod(WM_POD_CODE_DIR, 0755) != 0 || mkdir(WM_POD_ROOT_DIR, 0755) != 0 || chmod(WM_POD_ROOT_DIR, 0755) != 0)
        child_fail(a->errpipe, "mkdir " WM_POD_CODE_DIR);
}

static void drop_privileges(child_arg_t *a)
{
    gid_t g = H.cfg.pod_gid;
    if (setgroups(1, &g) != 0 || setresgid(g, g, g) != 0 || setresuid(H.cfg.pod_uid, H.cfg.pod_uid, H.cfg.pod_uid) != 0)
        child_fail(a->errpipe, "drop to pod uid");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        child_fail(a->errpipe, "no_new_privs");
    /* after the uid change: a credential change clears the parent-death signal */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        child_fail(a->errpipe, "pdeathsig");
}

static int pod_main(void *arg)
{
    child_arg_t *a = arg;
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);

    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        child_fail(a->errpipe, "make mounts private");
    /* join the cgroups before exec so the agent never runs outside them */
    for (size_t i = 0; i < a->n_cg; i++)
        if (wm_write_file(a->cg_procs[i], "0") != 0)
            child_fail(a->errpipe, a->cg_procs[i]);
    /* Hold the agent binary open across the new root: its build tree (a CI checkout
     * under /tmp, say) is not in the pod. */
    int agent_fd = open(H.cfg.agent, O_PATH | O_CLOEXEC);
    if (agent_fd < 0 || (agent_fd = fcntl(agent_fd, F_DUPFD_CLOEXEC, 10)) < 0)
        child_fail(a->errpipe, H.cfg.agent);
    pod_root(a);
    mount_tmp(a);
    seal_root(a);
    if (sethostname(a->pod, strlen(a->pod)) != 0)
        child_fail(a->errpipe, "sethostname");
    drop_privileges(a);

    /* control socket at 3 (survives exec), error pipe at 4 (closes on exec) */
    int ctl = fcntl(a->ctl, F_DUPFD, 10), ep = fcntl(a->errpipe, F_DUPFD_CLOEXEC, 10);
    if (ctl < 0 || ep < 0 || dup2(ctl, 3) < 0 || dup3(ep, 4, O_CLOEXEC) < 0)
        child_fail(a->errpipe, "dup control fd");
    /* not close-on-exec: a script agent is read by its interpreter via /dev/fd/5 */
    if (dup2(agent_fd, 5) < 0)
        child_fail(4, "dup agent fd");
    if (syscall(SYS_close_range, 6, ~0u, 0) != 0)
        child_fail(4, "close_range");
    /* stdin is the WM's (maybe a terminal): a pod has no business reading it */
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0)
        child_fail(4, "stdin from /dev/null");
    if (devnull != 0)
        close(devnull);
    /* any address of the pod's own namespace: its eth0 for the host, lo for nobody */
    char *argv[] = {H.cfg.agent, "--listen", H.cfg.pod_netns ? "0.0.0.0:0" : "127.0.0.1:0", NULL};
    char podenv[96];
    wm_fmt(podenv, sizeof(podenv), "FAAS_POD_ID=%s", a->pod);
    const char *lvl = getenv("FAAS_LOG_LEVEL");
    char lvlenv[64];
    wm_fmt(lvlenv, sizeof(lvlenv), "FAAS_LOG_LEVEL=%s", lvl ? lvl : "info");
    static char zyg[PATH_MAX + 32], pre[WM_PYTHON_PRELOAD_MAX_BYTES + 32]; /* the child's copy of memory */
    if (a->zygote != NULL && (wm_fmt(zyg, sizeof(zyg), "FAAS_AGENT_ZYGOTE=%s", a->zygote) != 0 ||
                              wm_fmt(pre, sizeof(pre), "FAAS_AGENT_ZYGOTE_PRELOAD=%s", a->preload) != 0))
        child_fail(4, "zygote env too long");
    char *envp[] = {"FAAS_AGENT_CONTROL_FD=3",
                    "PATH=/usr/local/bin:/usr/bin:/bin",
                    "HOME=/tmp",
                    "LANG=C.UTF-8",
                    podenv,
                    lvlenv,
                    H.cfg.no_seccomp ? "FAAS_AGENT_NO_SECCOMP=1" : NULL,
                    NULL,
                    NULL,
                    NULL};
    /* after a NULL entry envp would end early: the optional ones go in order */
    size_t ne = H.cfg.no_seccomp ? 7 : 6;
    if (a->zygote != NULL) {
        envp[ne++] = zyg;
        envp[ne++] = pre;
    }
    if (chdir("/") != 0)
        child_fail(4, "chdir /");
    syscall(SYS_execveat, 5, "", argv, envp, AT_EMPTY_PATH);
    child_fail(4, H.cfg.agent);
    return 127;
}

static void track(const char *pod, pid_t pid)
{
    hpod_t z = {.pid = pid, .ctl = -1, .upper = -1};
    if (H.n_pods == H.cap_pods) {
        size_t nc = H.cap_pods ? H.cap_pods * 2 : 16;
        hpod_t *np = realloc(H.pods, nc * sizeof(*np));
        if (np == NULL)
            return;
        H.pods = np;
        H.cap_pods = nc;
    }
    wm_fmt(z.pod, sizeof(z.pod), "%s", pod);
    H.pods[H.n_pods++] = z;
}

static hpod_t *tracked(pid_t pid)
{
    for (size_t i = 0; i < H.n_pods; i++)
        if (H.pods[i].pid == pid)
            return &H.pods[i];
    return NULL;
}

static void untrack(pid_t pid)
{
    hpod_t *p = tracked(pid);
    if (p == NULL)
        return;
    if (p->ctl >= 0)
        close(p->ctl);
    if (p->upper >= 0)
        close(p->upper);
    free(p->rec);
    *p = H.pods[--H.n_pods];
}

/* RECORD: the WM's state of a pod, replaced whole; an empty one means "unclear" (a
 * SPECIALIZE or STOP in flight): a successor kills such a pod rather than guess. */
static void do_record(const hreq_t *q, const uint8_t *rec, size_t len)
{
    hpod_t *p = tracked(q->pid);
    if (p == NULL)
        return;
    free(p->rec);
    p->rec = NULL;
    p->rec_len = 0;
    if (len > 0 && (p->rec = malloc(len)) != NULL) {
        memcpy(p->rec, rec, len);
        p->rec_len = len;
    }
}

static void pod_rel(char *out, size_t cap, const char *pod)
{
    wm_fmt(out, cap, "faas/%s/%s", H.cfg.id, pod);
}

/* A pod dir of the old layout (<state>/pods/<pod>/code, an empty mount point): never
 * follows into mounts. */
static void rm_rf(const char *path)
{
    char p[PATH_MAX];
    wm_fmt(p, sizeof(p), "%s/code", path);
    (void)umount2(p, MNT_DETACH);
    (void)rmdir(p);
    (void)rmdir(path);
}

static int do_kill(const hreq_t *q, hrep_t *r);

/* SPAWN's payload for a python pod: "<python>\0<preload>\0"; a generic pod has none. 0,
 * or -1 when it is malformed. */
static int spawn_payload(const uint8_t *pl, size_t len, const char **python, const char **preload)
{
    *python = *preload = NULL;
    if (len == 0)
        return 0;
    const char *a = (const char *)pl, *z = memchr(a, '\0', len);
    if (z == NULL || z == a || memchr(z + 1, '\0', len - (size_t)(z + 1 - a)) == NULL)
        return -1;
    *python = a;
    *preload = z + 1;
    return 0;
}

static int do_spawn(const hreq_t *q, const uint8_t *pl, size_t pl_len, hrep_t *r, int *out_fd)
{
    char rel[PATH_MAX];
    pod_rel(rel, sizeof(rel), q->pod);
    wm_limits_t lim = {0, 0, 0};
    if (wm_cg_create(&H.cg, rel, r->err, sizeof(r->err)) != 0 ||
        wm_cg_apply(&H.cg, rel, &lim, r->err, sizeof(r->err)) != 0)
        goto fail_cg;

    child_arg_t a = {.pod = q->pod};
    if (spawn_payload(pl, pl_len, &a.zygote, &a.preload) != 0) {
        wm_fmt(r->err, sizeof(r->err), "malformed zygote settings");
        goto fail_cg;
    }
    char dirs[WM_CG_N + 1][PATH_MAX];
    a.n_cg = wm_cg_dirs(&H.cg, rel, dirs, WM_CG_N + 1);
    for (size_t i = 0; i < a.n_cg; i++)
        wm_fmt(a.cg_procs[i], PATH_MAX, "%s/cgroup.procs", dirs[i]);
    int sv[2], ep[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        goto fail_errno;
    if (pipe2(ep, O_CLOEXEC) != 0) {
        close(sv[0]);
        close(sv[1]);
        goto fail_errno;
    }
    /* the pod end must survive exec */
    fcntl(sv[1], F_SETFD, 0);
    a.ctl = sv[1];
    a.errpipe = ep[1];
    size_t stack_sz = 256 * 1024;
    char *stack = malloc(stack_sz);
    pid_t pid = stack ? clone(pod_main, stack + stack_sz,
                              CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                                  (H.cfg.pod_netns ? CLONE_NEWNET : 0) | SIGCHLD,
                              &a)
                      : -1;
    int cerr = errno;
    free(stack);
    close(sv[1]);
    close(ep[1]);
    if (pid < 0) {
        close(sv[0]);
        close(ep[0]);
        errno = cerr;
        goto fail_errno;
    }
    char why[200];
    ssize_t n = read(ep[0], why, sizeof(why) - 1);
    close(ep[0]);
    if (n > 0) {
        why[n] = '\0';
        waitpid(pid, NULL, 0);
        close(sv[0]);
        wm_fmt(r->err, sizeof(r->err), "pod setup failed: %s", why);
        goto fail_cg;
    }
    track(q->pod, pid);
    r->addr = 0x7f000001u; /* --no-pod-netns: the host's loopback */
    int nrc = H.cfg.pod_netns
                  ? wm_net_setup(pid, H.self_net, H.cfg.pod_net, H.cfg.pod_prefix, &r->addr, r->err, sizeof(r->err))
                  : 0;
    if (nrc == -2) {
        FAAS_ERROR("event=helper_lost_namespace err=\"%s\"", r->err);
        _exit(1); /* every later link would land in a pod: better the WM sees the helper go */
    }
    if (nrc != 0) {
        close(sv[0]);
        hreq_t k = {.op = OP_KILL, .pid = pid};
        memcpy(k.pod, q->pod, sizeof(k.pod));
        hrep_t kr = {0};
        do_kill(&k, &kr); /* its namespace, and the veth in it, go with it */
        return -1;
    }
    r->pid = pid;
    hpod_t *t = tracked(pid);
    if (t != NULL) {
        t->ctl = fcntl(sv[0], F_DUPFD_CLOEXEC, 0); /* kept: the pod outlives a WM crash */
        t->addr = r->addr;
    }
    *out_fd = sv[0];
    return 0;
fail_errno:
    wm_fmt(r->err, sizeof(r->err), "spawn: %s", strerror(errno));
fail_cg:
    wm_cg_remove_tree(&H.cg, rel, 1000);
    return -1;
}

/* network: none takes the pod's route out at specialization (netns.c). */
static int no_egress(const hreq_t *q, hrep_t *r)
{
    if (!q->no_egress || !H.cfg.pod_netns)
        return 0;
    int nrc = wm_net_no_egress(q->pid, H.self_net, r->err, sizeof(r->err));
    if (nrc == -2) {
        FAAS_ERROR("event=helper_lost_namespace err=\"%s\"", r->err);
        _exit(1);
    }
    return nrc;
}

/* An image pod: its root mounted (imagemount.c) and, in the reply, the images' user
 * namespace for the agent, made once. */
static int do_mount_image(const hreq_t *q, hrep_t *r, int *pass)
{
    if (!wm_valid_sha256(q->arg)) {
        wm_fmt(r->err, sizeof(r->err), "mount image: bad manifest digest");
        return -1;
    }
    hpod_t *hp = tracked(q->pid);
    if (hp == NULL) { /* a pid no pod of ours has (any more): never another process's namespace */
        wm_fmt(r->err, sizeof(r->err), "mount image: no such pod");
        return -1;
    }
    if (H.userns < 0 && (H.userns = wm_userns_make(&H.cfg, r->err, sizeof(r->err))) < 0)
        return -1;
    int upper = -1;
    int rc = wm_image_mount_pod(&H.cfg, H.self_mnt, q->pid, q->arg, &upper, r->err, sizeof(r->err));
    if (rc == -2) {
        FAAS_ERROR("event=helper_lost_namespace err=\"%s\"", strerror(errno));
        _exit(1);
    }
    hp = tracked(q->pid);
    if (hp != NULL && hp->upper < 0)
        hp->upper = upper;
    else if (upper >= 0)
        close(upper);
    if (rc != 0 || no_egress(q, r) != 0)
        return -1;
    *pass = dup(H.userns); /* send_reply's caller closes what it passed */
    return *pass < 0 ? -1 : 0;
}

/* The source is cloned in the host namespace, the target resolved in the pod's,
 * so neither needs to be visible in the other. The helper does it itself (no
 * fork: that cost milliseconds per cold start) and steps back into its own
 * namespace, which it may since it is single-threaded. */
static int do_mount(const hreq_t *q, hrep_t *r)
{
    char src[PATH_MAX], ns[64];
    wm_fmt(src, sizeof(src), "%s/code/%s", H.cfg.state_dir, q->arg);
    wm_fmt(ns, sizeof(ns), "/proc/%d/ns/mnt", (int)q->pid);
    const char *what = "open_tree code";
    int rc = -1, nsfd = -1;
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0)
        goto out;
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
    what = "make code read-only";
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) != 0)
        goto out;
    what = "enter pod mount namespace";
    nsfd = open(ns, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNS) != 0)
        goto out;
    what = "mount code in pod";
    rc = (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, WM_POD_CODE_DIR, MOVE_MOUNT_F_EMPTY_PATH);
    int e = errno;
    if (setns(H.self_mnt, CLONE_NEWNS) != 0) {
        /* every later path would resolve in a pod: better to stop and let the WM see it */
        FAAS_ERROR("event=helper_lost_namespace err=\"%s\"", strerror(errno));
        _exit(1);
    }
    errno = e;
    if (rc == 0 && no_egress(q, r) != 0) {
        rc = -1;
        what = NULL; /* r->err says why */
    }
out:
    if (rc != 0 && what != NULL)
        wm_fmt(r->err, sizeof(r->err), "mount code: %s: %s", what, strerror(errno));
    if (nsfd >= 0)
        close(nsfd);
    if (tree >= 0)
        close(tree);
    return rc;
}

static int do_kill(const hreq_t *q, hrep_t *r)
{
    char rel[PATH_MAX];
    pod_rel(rel, sizeof(rel), q->pod);
    wm_cg_kill(&H.cg, rel);
    if (q->pid > 0) {
        /* init of the pod's PID namespace: its death takes every pod process along */
        kill(q->pid, SIGKILL);
        while (waitpid(q->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        untrack(q->pid);
    }
    int rc = wm_cg_remove_tree(&H.cg, rel, 2000);
    if (rc != 0)
        wm_fmt(r->err, sizeof(r->err), "cgroup %s not removed", rel);
    return rc;
}

static void umount_stale(void)
{
    char prefix[PATH_MAX];
    wm_fmt(prefix, sizeof(prefix), "%s/pods/", H.cfg.state_dir);
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return;
    char line[8192];
    while (fgets(line, sizeof(line), f) != NULL) {
        char mp[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && strncmp(mp, prefix, strlen(prefix)) == 0)
            (void)umount2(mp, MNT_DETACH);
    }
    fclose(f);
}

static int do_cleanup(const hreq_t *q, hrep_t *r)
{
    char rel[PATH_MAX];
    int rc = 0;
    if (q->arg[0] != '\0') {
        wm_fmt(rel, sizeof(rel), "faas/%s", q->arg);
        rc = wm_cg_remove_tree(&H.cg, rel, 2000);
    }
    wm_fmt(rel, sizeof(rel), "faas/%s", H.cfg.id);
    if (wm_cg_remove_tree(&H.cg, rel, 2000) != 0)
        rc = -1;
    /* plain rmdir, never the recursive kill: other workers on this host live under faas/ */
    char dirs[WM_CG_N + 1][PATH_MAX];
    size_t n = wm_cg_dirs(&H.cg, "faas", dirs, WM_CG_N + 1);
    for (size_t i = 0; i < n; i++)
        (void)rmdir(dirs[i]);
    umount_stale();
    char pods[PATH_MAX];
    wm_fmt(pods, sizeof(pods), "%s/pods", H.cfg.state_dir);
    DIR *d = opendir(pods);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char p[PATH_MAX];
            if (wm_fmt(p, sizeof(p), "%s/%s", pods, e->d_name) == 0)
                rm_rf(p);
        }
        closedir(d);
    }
    if (rc != 0)
        wm_fmt(r->err, sizeof(r->err), "some stale cgroups could not be removed");
    return rc;
}

static void send_reply(int fd, const hrep_t *r, int pass_fd)
{
    while (faas_send_with_fd(fd, r, sizeof(*r), pass_fd, 0) < 0 && errno == EINTR)
        ;
}

static void helper_shutdown(void)
{
    for (size_t i = H.n_pods; i-- > 0;) {
        hreq_t q = {.op = OP_KILL, .pid = H.pods[i].pid};
        memcpy(q.pod, H.pods[i].pod, sizeof(q.pod));
        hrep_t r = {0};
        do_kill(&q, &r);
    }
    hreq_t q = {.op = OP_CLEANUP};
    hrep_t r = {0};
    do_cleanup(&q, &r);
}

/* Serves one WM on fd until it says EXIT (1) or goes away (0). */
static int helper_serve(int fd)
{
    static uint8_t pkt[HELPER_MAX_PACKET];
    for (;;) {
        ssize_t n = recv(fd, pkt, sizeof(pkt), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < (ssize_t)sizeof(hreq_t))
            return 0; /* the WM is gone (EOF) or spoke nonsense */
        hreq_t q;
        memcpy(&q, pkt, sizeof(q));
        q.pod[sizeof(q.pod) - 1] = '\0';
        q.arg[sizeof(q.arg) - 1] = '\0';
        hrep_t r;
        memset(&r, 0, sizeof(r));
        int pass = -1;
        switch (q.op) {
        case OP_SPAWN:
            r.rc = do_spawn(&q, pkt + sizeof(q), (size_t)n - sizeof(q), &r, &pass);
            break;
        case OP_MOUNT:
            r.rc = do_mount(&q, &r);
            break;
        case OP_MOUNT_IMAGE:
            r.rc = do_mount_image(&q, &r, &pass);
            break;
        case OP_KILL:
            r.rc = do_kill(&q, &r);
            break;
        case OP_CLEANUP:
            r.rc = do_cleanup(&q, &r);
            break;
        case OP_RECORD:
            do_record(&q, pkt + sizeof(q), (size_t)n - sizeof(q));
            continue;
        case OP_EXIT:
            return 1;
        default:
            r.rc = -1;
            wm_fmt(r.err, sizeof(r.err), "bad op");
            break;
        }
        send_reply(fd, &r, pass);
        if (pass >= 0)
            close(pass); /* the helper keeps its own dup (do_spawn) */
    }
}

/* <state>/helper.sock, root only; -1 when it cannot be made (no adoption then). */
static int listen_successors(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (wm_fmt(H.sock, sizeof(H.sock), "%s/helper.sock", H.cfg.state_dir) != 0) {
        FAAS_WARN("event=helper_sock_unusable msg=\"state dir path too long for a unix socket: no adoption\"");
        H.sock[0] = '\0';
        return -1;
    }
    memcpy(sa.sun_path, H.sock, strlen(H.sock) + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    (void)unlink(H.sock);
    mode_t old = umask(077);
    int ok =
        fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && chmod(H.sock, 0600) == 0 && listen(fd, 4) == 0;
    umask(old);
    struct stat st;
    if (ok && stat(H.sock, &st) == 0) {
        H.sock_ino = st.st_ino;
        H.sock_dev = st.st_dev;
    }
    if (!ok) {
        FAAS_WARN("event=helper_sock_unusable path=%s err=\"%s\"", H.sock, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* What of the successor's config must equal ours for our pods to be its. NULL if all. */
static const char *adopt_mismatch(const adopt_cfg_t *a)
{
    if (a->id[0] != '\0' && strcmp(a->id, H.cfg.id) != 0)
        return "another --id";
    if (strcmp(a->state_dir, H.cfg.state_dir) != 0)
        return "another --state-dir";
    if (strcmp(a->cgroup_root, H.cfg.cgroup_root) != 0)
        return "another --cgroup-root";
    if (strcmp(a->agent, H.cfg.agent) != 0)
        return "another --agent";
    if (a->uid != H.cfg.pod_uid || a->gid != H.cfg.pod_gid)
        return "another --pod-uid";
    if ((a->pod_netns != 0) != (H.cfg.pod_netns != 0) || (a->no_seccomp != 0) != (H.cfg.no_seccomp != 0))
        return "another --no-pod-netns or --no-seccomp";
    /* adopted pods keep their addresses: in another range, the host may no longer be
     * routed their traffic, and the new range's blocks would not be named by them */
    if (a->pod_net != H.cfg.pod_net || a->pod_prefix != (uint32_t)H.cfg.pod_prefix)
        return "another --pod-cidr";
    return NULL;
}

/* Hands every pod (record and control fd) to the successor on fd, then the end mark. */
static int send_pods(int fd)
{
    static uint8_t pkt[HELPER_MAX_PACKET];
    for (size_t i = 0; i < H.n_pods; i++) {
        hpod_t *p = &H.pods[i];
        hpod_wire_t w = {.pid = p->pid, .addr = p->addr};
        memcpy(w.pod, p->pod, sizeof(w.pod));
        w.rec_len = p->rec_len <= sizeof(pkt) - sizeof(w) ? (uint32_t)p->rec_len : 0;
        memcpy(pkt, &w, sizeof(w));
        if (w.rec_len)
            memcpy(pkt + sizeof(w), p->rec, w.rec_len);
        if (faas_send_with_fd(fd, pkt, sizeof(w) + w.rec_len, p->ctl, 0) < 0)
            return -1;
    }
    hpod_wire_t end = {.pid = 0};
    return faas_send_with_fd(fd, &end, sizeof(end), -1, 0) < 0 ? -1 : 0;
}

/* One successor's ADOPT on c: 0 when it now owns the pods (c is its link), -1 when the
 * connection is no good. A config mismatch is answered and still returns 0: the
 * successor then sends EXIT on c. */
static int adopt_handshake(int c)
{
    struct ucred cr;
    socklen_t cl = sizeof(cr);
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 || cr.uid != 0)
        return -1; /* the socket is 0600 root, and a second lock costs nothing */
    static uint8_t pkt[sizeof(hreq_t) + sizeof(adopt_cfg_t)];
    struct pollfd pf = {c, POLLIN, 0};
    if (poll(&pf, 1, 2000) != 1)
        return -1;
    ssize_t n = recv(c, pkt, sizeof(pkt), 0);
    hreq_t q;
    adopt_cfg_t a;
    if (n != (ssize_t)sizeof(pkt))
        return -1;
    memcpy(&q, pkt, sizeof(q));
    memcpy(&a, pkt + sizeof(q), sizeof(a));
    a.id[sizeof(a.id) - 1] = a.state_dir[PATH_MAX - 1] = a.cgroup_root[PATH_MAX - 1] = a.agent[PATH_MAX - 1] = '\0';
    if (q.op != OP_ADOPT)
        return -1;
    hrep_t r = {.rc = 0, .pid = (int32_t)H.n_pods};
    const char *why = adopt_mismatch(&a);
    if (why != NULL) {
        r.rc = -1;
        wm_fmt(r.err, sizeof(r.err), "%s", why);
        FAAS_WARN("event=helper_adopt_refused reason=\"%s\" pods=%zu", why, H.n_pods);
        return send(c, &r, sizeof(r), MSG_NOSIGNAL) == (ssize_t)sizeof(r) ? 0 : -1;
    }
    wm_fmt(r.err, sizeof(r.err), "%s", H.cfg.id);
    if (send(c, &r, sizeof(r), MSG_NOSIGNAL) != (ssize_t)sizeof(r) || send_pods(c) != 0)
        return -1;
    FAAS_INFO("event=helper_handed_over pods=%zu id=%s", H.n_pods, H.cfg.id);
    return 0;
}

/* The WM crashed: keep the pods and wait up to the grace for a successor. Its link, or
 * -1 when none came in time. */
static int await_successor(void)
{
    FAAS_WARN("event=helper_orphaned pods=%zu grace_ms=%u sock=%s", H.n_pods, H.cfg.adopt_grace_ms, H.sock);
    uint64_t end = faas_now_us() + (uint64_t)H.cfg.adopt_grace_ms * 1000u;
    for (;;) {
        uint64_t now = faas_now_us();
        if (now >= end)
            break;
        struct pollfd pf = {H.lfd, POLLIN, 0};
        int r = poll(&pf, 1, (int)((end - now + 999) / 1000));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        int c = accept4(H.lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        if (adopt_handshake(c) == 0)
            return c;
        close(c);
    }
    FAAS_WARN("event=helper_no_successor pods=%zu msg=\"killing them\"", H.n_pods);
    return -1;
}

/* The helper's life: serve the WM; after a crash (EOF without EXIT, pods left), wait for
 * a successor and serve it; on EXIT or when none comes, every pod goes. */
static void helper_main(int fd)
{
    for (;;) {
        int exit_asked = helper_serve(fd);
        if (exit_asked || H.n_pods == 0 || H.lfd < 0 || H.cfg.adopt_grace_ms == 0)
            break;
        close(fd);
        if ((fd = await_successor()) < 0)
            break;
    }
    if (H.lfd >= 0) {
        /* only if the path is still ours: a successor's fresh helper may have bound it
         * (a socket fd's fstat names sockfs, not the file: the file's was kept at bind) */
        struct stat now;
        if (stat(H.sock, &now) == 0 && now.st_ino == H.sock_ino && now.st_dev == H.sock_dev)
            (void)unlink(H.sock);
        close(H.lfd);
    }
    helper_shutdown();
    /* closed last: a WM waiting for our EOF (wm_helper_stop, a refused successor) knows
     * the pods and the socket path are gone by then */
    if (fd >= 0)
        close(fd);
}

int wm_helper_start(wm_helper_t *h, const wm_config_t *c, const wm_cg_layout_t *L, const char **err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        *err = "socketpair failed";
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        *err = "fork of the pod helper failed";
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        /* Ctrl-C hits the whole process group: the WM tears pods down through us */
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        prctl(PR_SET_NAME, "faas-wm-helper", 0, 0, 0);
        H.cfg = *c;
        H.cg = *L;
        H.self_mnt = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
        H.self_net = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (H.self_mnt < 0 || H.self_net < 0)
            _exit(1);
        /* bound now, accepted on only once the WM is gone: a successor started right
         * after a crash never finds it missing */
        if (c->adopt_grace_ms > 0)
            H.lfd = listen_successors();
        helper_main(sv[1]);
        _exit(0);
    }
    close(sv[1]);
    h->fd = sv[0];
    h->pid = pid;
    h->child = 1;
    return 0;
}

/* One request (with payload: pl_len bytes after it in the same packet) and its reply. */
static int call_with(wm_helper_t *h, const hreq_t *q, const void *pl, size_t pl_len, hrep_t *r, int *fd_out, char *err,
                     size_t errcap)
{
    if (fd_out)
        *fd_out = -1;
    struct iovec out[2] = {{(void *)q, sizeof(*q)}, {(void *)pl, pl_len}};
    struct msghdr om = {.msg_iov = out, .msg_iovlen = pl_len ? 2 : 1};
    if (sendmsg(h->fd, &om, MSG_NOSIGNAL) != (ssize_t)(sizeof(*q) + pl_len)) {
        wm_fmt(err, errcap, "pod helper gone");
        return -1;
    }
    struct iovec iov = {r, sizeof(*r)};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
    ssize_t n;
    while ((n = recvmsg(h->fd, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof(*r)) {
        wm_fmt(err, errcap, "pod helper gone");
        return -1;
    }
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (c != NULL && c->cmsg_type == SCM_RIGHTS) {
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof(int));
        if (fd_out)
            *fd_out = fd;
        else
            close(fd);
    }
    r->err[sizeof(r->err) - 1] = '\0';
    if (r->rc != 0)
        wm_fmt(err, errcap, "%s", r->err);
    return r->rc;
}

static int call(wm_helper_t *h, const hreq_t *q, hrep_t *r, int *fd_out, char *err, size_t errcap)
{
    return call_with(h, q, NULL, 0, r, fd_out, err, errcap);
}

int wm_helper_spawn(wm_helper_t *h, const char *pod_id, const char *python, const char *preload, pid_t *pid,
                    int *ctl_fd, uint32_t *addr, char *err, size_t errcap)
{
    hreq_t q = {.op = OP_SPAWN};
    wm_fmt(q.pod, sizeof(q.pod), "%s", pod_id);
    hrep_t r;
    /* the settings ride with each SPAWN rather than in the helper's copy of the config:
     * a helper adopted from a predecessor has that one's config */
    static char pl[PATH_MAX + WM_PYTHON_PRELOAD_MAX_BYTES + 2];
    size_t pl_len = 0;
    if (python != NULL) {
        size_t a = strlen(python) + 1, b = strlen(preload ? preload : "") + 1;
        if (a + b > sizeof(pl)) {
            wm_fmt(err, errcap, "zygote settings too long");
            return -1;
        }
        memcpy(pl, python, a);
        memcpy(pl + a, preload ? preload : "", b);
        pl_len = a + b;
    }
    if (call_with(h, &q, pl, pl_len, &r, ctl_fd, err, errcap) != 0)
        return -1;
    if (*ctl_fd < 0) {
        wm_fmt(err, errcap, "pod helper sent no control socket");
        return -1;
    }
    *pid = r.pid;
    *addr = r.addr;
    return 0;
}

int wm_helper_mount_code(wm_helper_t *h, const char *pod_id, pid_t pid, const char *sha, int no_egress, char *err,
                         size_t errcap)
{
    hreq_t q = {.op = OP_MOUNT, .pid = pid, .no_egress = (uint32_t)(no_egress != 0)};
    wm_fmt(q.pod, sizeof(q.pod), "%s", pod_id);
    wm_fmt(q.arg, sizeof(q.arg), "%s", sha);
    hrep_t r;
    return call(h, &q, &r, NULL, err, errcap);
}

int wm_helper_mount_image(wm_helper_t *h, const char *pod_id, pid_t pid, const char *manifest_hex, int no_egress,
                          int *userns_fd, char *err, size_t errcap)
{
    hreq_t q = {.op = OP_MOUNT_IMAGE, .pid = pid, .no_egress = (uint32_t)(no_egress != 0)};
    wm_fmt(q.pod, sizeof(q.pod), "%s", pod_id);
    wm_fmt(q.arg, sizeof(q.arg), "%s", manifest_hex);
    hrep_t r;
    if (call(h, &q, &r, userns_fd, err, errcap) != 0) {
        if (*userns_fd >= 0)
            close(*userns_fd);
        *userns_fd = -1;
        return -1;
    }
    if (*userns_fd < 0) {
        wm_fmt(err, errcap, "pod helper sent no user namespace");
        return -1;
    }
    return 0;
}

int wm_helper_kill(wm_helper_t *h, const char *pod_id, pid_t pid)
{
    hreq_t q = {.op = OP_KILL, .pid = pid};
    wm_fmt(q.pod, sizeof(q.pod), "%s", pod_id);
    hrep_t r;
    char err[256];
    int rc = call(h, &q, &r, NULL, err, sizeof(err));
    if (rc != 0)
        FAAS_WARN("event=pod_cleanup_failed pod=%s err=\"%s\"", pod_id, err);
    return rc;
}

int wm_helper_cleanup(wm_helper_t *h, const char *prev_id)
{
    hreq_t q = {.op = OP_CLEANUP};
    wm_fmt(q.arg, sizeof(q.arg), "%s", prev_id ? prev_id : "");
    hrep_t r;
    char err[256];
    int rc = call(h, &q, &r, NULL, err, sizeof(err));
    if (rc != 0)
        FAAS_WARN("event=cleanup_incomplete err=\"%s\"", err);
    return rc;
}

int wm_helper_record(wm_helper_t *h, pid_t pid, const uint8_t *rec, size_t len)
{
    static uint8_t pkt[HELPER_MAX_PACKET];
    hreq_t q = {.op = OP_RECORD, .pid = pid};
    if (len > sizeof(pkt) - sizeof(q))
        len = 0; /* too big to keep: the pod is then "unclear" to a successor, killed */
    memcpy(pkt, &q, sizeof(q));
    if (len)
        memcpy(pkt + sizeof(q), rec, len);
    return send(h->fd, pkt, sizeof(q) + len, MSG_NOSIGNAL) == (ssize_t)(sizeof(q) + len) ? 0 : -1;
}

/* Waits (bounded) for the helper at the other end of h->fd to close it: it has exited
 * or, for an adopted one, is about to. */
static void await_close(int fd, int ms)
{
    uint8_t b[64];
    struct pollfd pf = {fd, POLLIN, 0};
    uint64_t end = faas_now_us() + (uint64_t)ms * 1000u;
    while (faas_now_us() < end && poll(&pf, 1, 100) >= 0)
        if ((pf.revents & (POLLIN | POLLHUP)) && recv(fd, b, sizeof(b), MSG_DONTWAIT) == 0)
            return;
}

/* Receives one adopted pod; 1 for a pod, 0 at the end mark, -1 on a broken link. */
static int recv_pod(int fd, wm_adopted_t *out)
{
    static uint8_t pkt[HELPER_MAX_PACKET];
    struct iovec iov = {pkt, sizeof(pkt)};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cm;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, 5000) != 1)
        return -1;
    ssize_t n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    hpod_wire_t w;
    int ctl = -1;
    struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL;
    if (c != NULL && c->cmsg_type == SCM_RIGHTS)
        memcpy(&ctl, CMSG_DATA(c), sizeof(int));
    if (n < (ssize_t)sizeof(w)) {
        if (ctl >= 0)
            close(ctl);
        return -1;
    }
    memcpy(&w, pkt, sizeof(w));
    if (w.pod[0] == '\0')
        return ctl >= 0 ? (close(ctl), 0) : 0;
    memset(out, 0, sizeof(*out));
    w.pod[sizeof(w.pod) - 1] = '\0';
    wm_fmt(out->pod, sizeof(out->pod), "%s", w.pod);
    out->pid = w.pid;
    out->addr = w.addr;
    out->ctl = ctl;
    if (w.rec_len > 0 && (size_t)n == sizeof(w) + w.rec_len && (out->rec = malloc(w.rec_len)) != NULL) {
        memcpy(out->rec, pkt + sizeof(w), w.rec_len);
        out->rec_len = w.rec_len;
    }
    return 1;
}

/* ADOPT on fd; 1 with the pods when the helper took us, 0 when it refused (mismatch),
 * -1 when it did not answer properly. */
static int adopt_talk(int fd, wm_config_t *c, wm_adopted_t **pods, size_t *n, char *why, size_t whycap)
{
    static uint8_t pkt[sizeof(hreq_t) + sizeof(adopt_cfg_t)];
    hreq_t q = {.op = OP_ADOPT};
    adopt_cfg_t a = {.uid = c->pod_uid,
                     .gid = c->pod_gid,
                     .pod_netns = (uint32_t)c->pod_netns,
                     .no_seccomp = (uint32_t)c->no_seccomp,
                     .pod_net = c->pod_net,
                     .pod_prefix = (uint32_t)c->pod_prefix};
    wm_fmt(a.id, sizeof(a.id), "%s", c->id_given ? c->id : "");
    wm_fmt(a.state_dir, sizeof(a.state_dir), "%s", c->state_dir);
    wm_fmt(a.cgroup_root, sizeof(a.cgroup_root), "%s", c->cgroup_root);
    wm_fmt(a.agent, sizeof(a.agent), "%s", c->agent);
    memcpy(pkt, &q, sizeof(q));
    memcpy(pkt + sizeof(q), &a, sizeof(a));
    hrep_t r;
    struct pollfd pf = {fd, POLLIN, 0};
    if (send(fd, pkt, sizeof(pkt), MSG_NOSIGNAL) != (ssize_t)sizeof(pkt) || poll(&pf, 1, 3000) != 1 ||
        recv(fd, &r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return wm_fmt(why, whycap, "the helper did not answer"), -1;
    r.err[sizeof(r.err) - 1] = '\0';
    if (r.rc != 0)
        return wm_fmt(why, whycap, "%s", r.err), 0;
    size_t cap = r.pid > 0 ? (size_t)r.pid : 1;
    *pods = calloc(cap, sizeof(**pods));
    *n = 0;
    int got = 1;
    while (*pods != NULL && *n < cap && (got = recv_pod(fd, &(*pods)[*n])) == 1)
        (*n)++;
    if (*pods != NULL && *n == cap) { /* then the end mark, nothing more */
        wm_adopted_t extra = {.ctl = -1};
        if ((got = recv_pod(fd, &extra)) == 1) {
            if (extra.ctl >= 0)
                close(extra.ctl);
            free(extra.rec);
            got = -1;
        }
    }
    /* a list that broke off part-way is no list: the link may be dead too */
    if (*pods == NULL || got < 0)
        return wm_fmt(why, whycap, "the pod list broke off"), -1;
    if (!c->id_given)
        wm_fmt(c->id, sizeof(c->id), "%s", r.err); /* the predecessor's: its lease is simply renewed */
    return 1;
}

int wm_helper_adopt(wm_helper_t *h, wm_config_t *c, wm_adopted_t **pods, size_t *n)
{
    *pods = NULL;
    *n = 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (wm_fmt(sa.sun_path, sizeof(sa.sun_path), "%s/helper.sock", c->state_dir) != 0)
        return 0;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return 0; /* no helper waits: the usual start */
    }
    char why[256] = "";
    int rc = adopt_talk(fd, c, pods, n, why, sizeof(why));
    if (rc == 1) {
        h->fd = fd;
        h->pid = -1;
        h->child = 0;
        FAAS_INFO("event=helper_adopted id=%s pods=%zu", c->id, *n);
        return 1;
    }
    for (size_t i = 0; i < *n; i++) {
        if ((*pods)[i].ctl >= 0)
            close((*pods)[i].ctl);
        free((*pods)[i].rec);
    }
    free(*pods);
    *pods = NULL;
    *n = 0;
    if (rc < 0) {
        /* no answer: a helper still serving a live WM (two on one state dir?) or a broken
         * one; an EXIT queued behind our ADOPT would kill pods we know nothing about */
        FAAS_WARN("event=adopt_failed reason=\"%s\" msg=\"starting a fresh helper\"", why);
        close(fd);
        return -1;
    }
    /* its pods are not ours to run: it kills them and goes, then we start as after a
     * crash without adoption (a fresh helper, the old id deregistered) */
    FAAS_WARN("event=adopt_refused reason=\"%s\" msg=\"the old helper kills its pods\"", why);
    hreq_t q = {.op = OP_EXIT};
    (void)!send(fd, &q, sizeof(q), MSG_NOSIGNAL);
    await_close(fd, 15000);
    close(fd);
    return -1;
}

void wm_helper_stop(wm_helper_t *h, int kill_pods)
{
    if (h->fd >= 0 && kill_pods) {
        /* a clean stop: the helper kills whatever is left and exits, never waits for a successor */
        hreq_t q = {.op = OP_EXIT};
        (void)!send(h->fd, &q, sizeof(q), MSG_NOSIGNAL);
        if (!h->child)
            await_close(h->fd, 15000);
    }
    if (h->fd >= 0)
        close(h->fd);
    if (!kill_pods && h->child && h->pid > 0)
        h->pid = -1; /* pods left: it waits for a successor (or exits at once without any) */
    h->fd = -1;
    if (h->pid > 0 && h->child)
        while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    h->pid = -1;
}
