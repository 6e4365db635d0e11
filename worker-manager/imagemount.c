/* worker-manager/imagemount.c - the pod helper's half of custom images (docs/images.md):
 * the image's root mounted in a pod, and the one user namespace image servers run in.
 *
 * Runs in the root helper only (single-threaded, so it may setns into a pod's mount
 * namespace and back). No fork on a cold start and nothing mounted on the host: new
 * mounts are made detached (fsopen/fsmount, open_tree) and moved into the pod. */
#include "worker-manager/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

/* The image server's writable layer: a tmpfs per pod, charged to the pod's memory
 * cgroup as it is written, so the cgroup limit is the real bound; this caps one pod
 * whose limit is larger than any sane scratch space. */
#define IMAGE_RW_SIZE "512m"

static int fail(char *err, size_t cap, const char *what)
{
    wm_fmt(err, cap, "mount image: %s: %s", what, strerror(errno));
    return -1;
}

/* ---- the user namespace ------------------------------------------------------------ */

/* One user namespace for every image server of this worker: uid and gid 0..65535 of
 * the image map to base..base+65535 on the host (the ids umoci unpacked the rootfs
 * with), owned by the pod uid so that the agent (that uid, no capability on the host)
 * may enter it and start servers in it, and signal them. Writing a map of more than
 * the writer's own id needs CAP_SETUID in the parent namespace: the helper's job. */
int wm_userns_make(const wm_config_t *cfg, char *err, size_t cap)
{
    int up[2] = {-1, -1}, down[2] = {-1, -1}, fd = -1;
    char path[64], map[64];
    if (pipe2(up, O_CLOEXEC) != 0 || pipe2(down, O_CLOEXEC) != 0)
        return fail(err, cap, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        char c = 0;
        close(up[0]);
        close(down[1]); /* else our own read below never sees EOF */
        gid_t g = cfg->pod_gid;
        if (setgroups(1, &g) != 0 || setresgid(g, g, g) != 0 ||
            setresuid(cfg->pod_uid, cfg->pod_uid, cfg->pod_uid) != 0 || unshare(CLONE_NEWUSER) != 0)
            _exit(1);
        (void)!write(up[1], &c, 1);
        (void)!read(down[0], &c, 1); /* the parent opens our namespace, then lets us go */
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    char c;
    if (pid < 0 || read(up[0], &c, 1) != 1) {
        wm_fmt(err, cap, "mount image: cannot make the images' user namespace");
        goto out;
    }
    wm_fmt(map, sizeof(map), "0 %u %u\n", cfg->image_id_base, WM_IMAGE_IDS);
    static const char *const maps[] = {"uid_map", "gid_map"};
    for (int i = 0; i < 2; i++) {
        wm_fmt(path, sizeof(path), "/proc/%d/%s", (int)pid, maps[i]);
        if (wm_write_file(path, map) != 0) {
            fail(err, cap, path);
            goto out;
        }
    }
    wm_fmt(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        fail(err, cap, "open the user namespace");
out:
    close(up[0]);
    close(down[1]); /* EOF: the child exits */
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    return fd;
}

/* ---- the image's root in a pod -------------------------------------------------------- */

/* path (relative, no "..") under dirfd, never through a symlink of the image: the
 * helper is root and the image is the user's. O_PATH fd or -1. */
static int beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .mode = (flags & O_CREAT) ? mode : 0,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* A mount point in the image root: a directory, or (file) a regular file. -1 if the
 * image has something else there (a symlink, a FIFO, ...), which the caller then skips.
 * Never opened for reading: an image's FIFO would hold the helper, and every pod with it. */
static int mount_point(int root, const char *rel, int file)
{
    if (!file) {
        if (mkdirat(root, rel, 0755) != 0 && errno != EEXIST)
            return -1;
        return beneath(root, rel, O_PATH | O_DIRECTORY, 0);
    }
    int fd = beneath(root, rel, O_PATH | O_NOFOLLOW, 0);
    if (fd < 0 && errno == ENOENT) {
        int made = beneath(root, rel, O_WRONLY | O_CREAT | O_EXCL | O_NONBLOCK, 0644);
        if (made < 0)
            return -1;
        close(made);
        fd = beneath(root, rel, O_PATH | O_NOFOLLOW, 0);
    }
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Moves a detached tree onto rel in the image root; 0, or -1 with errno. */
static int attach(int tree, int root, const char *rel, int file)
{
    int at = mount_point(root, rel, file);
    if (at < 0)
        return -1;
    int rc = (int)syscall(SYS_move_mount, tree, "", at, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
    int e = errno;
    close(at);
    errno = e;
    return rc;
}

/* A bind of src (a path in the pod) onto rel; missing sources and odd targets skipped. */
static int bind_from_pod(int root, const char *src, const char *rel, int file, char *err, size_t cap)
{
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0)
        return file ? 0 : fail(err, cap, src);
    int rc = attach(tree, root, rel, file);
    int e = errno;
    close(tree);
    errno = e;
    return rc == 0 || file ? 0 : fail(err, cap, rel);
}

static int fresh_tmp(int root, char *err, size_t cap)
{
    int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC), m = -1, rc = -1;
    if (fs < 0 || syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "mode", "1777", 0) != 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "size", "64m", 0) != 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0 ||
        (m = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)) < 0 ||
        attach(m, root, "tmp", 0) != 0)
        fail(err, cap, "tmpfs /tmp");
    else
        rc = 0;
    if (m >= 0)
        close(m);
    if (fs >= 0)
        close(fs);
    return rc;
}

/* In the pod's namespace, the image root at WM_POD_ROOT_DIR: what a server expects
 * besides the image (proc of its PID namespace, /dev, its own /tmp, the pod's name
 * resolution), each mount point opened beneath the root without following the image's
 * symlinks. */
static int furnish(char *err, size_t cap)
{
    int root = open(WM_POD_ROOT_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC), rc = -1;
    if (root < 0)
        return fail(err, cap, WM_POD_ROOT_DIR);
    if (bind_from_pod(root, "/proc", "proc", 0, err, cap) == 0 && bind_from_pod(root, "/dev", "dev", 0, err, cap) == 0 &&
        fresh_tmp(root, err, cap) == 0 && (mkdirat(root, "etc", 0755) == 0 || errno == EEXIST) &&
        bind_from_pod(root, "/etc/hosts", "etc/hosts", 1, err, cap) == 0 &&
        bind_from_pod(root, "/etc/resolv.conf", "etc/resolv.conf", 1, err, cap) == 0)
        rc = 0;
    close(root);
    return rc;
}

/* A new filesystem of type fstype, configured with key/value pairs, as a detached mount
 * fd (never attached on the host: no umount, and no RCU grace period, on the way). */
static int detached_fs(const char *fstype, const char *const *kv, size_t n, unsigned attrs, char *err, size_t cap)
{
    int fs = (int)syscall(SYS_fsopen, fstype, FSOPEN_CLOEXEC), m = -1;
    if (fs < 0)
        return fail(err, cap, fstype);
    for (size_t i = 0; i + 1 < n; i += 2)
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, kv[i], kv[i + 1], 0) != 0) {
            fail(err, cap, kv[i]);
            goto out;
        }
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0 ||
        (m = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs)) < 0)
        fail(err, cap, fstype);
out:
    close(fs);
    return m;
}

/* The overlay, detached: lower = the cached rootfs, upper = a fresh tmpfs (reached
 * through its fd's magic link) whose root takes the owner and mode of the image's /.
 * *upper_fd: that tmpfs, which the caller keeps until the pod goes, so that letting it
 * go (a grace period) is paid at teardown, not on the cold start. */
static int overlay_tree(const wm_config_t *cfg, const char *hex, int *upper_fd, char *err, size_t cap)
{
    char lower[PATH_MAX], up[64], work[64];
    struct stat st;
    *upper_fd = -1;
    wm_fmt(lower, sizeof(lower), "%s/images/rootfs/%s", cfg->state_dir, hex);
    /* overlay splits lowerdir on ':' (and takes '\\' as an escape) */
    if (strpbrk(cfg->state_dir, ":\\") != NULL) {
        wm_fmt(err, cap, "mount image: the state dir path has ':' or '\\': overlayfs cannot take it");
        return -1;
    }
    if (stat(lower, &st) != 0)
        return fail(err, cap, "the image's rootfs is not cached");
    static const char *const tmpfs_kv[] = {"mode", "0755", "size", IMAGE_RW_SIZE};
    int t = detached_fs("tmpfs", tmpfs_kv, 4, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, err, cap), tree = -1;
    if (t < 0)
        return -1;
    if (mkdirat(t, "upper", st.st_mode & 07777) != 0 || fchownat(t, "upper", st.st_uid, st.st_gid, 0) != 0 ||
        fchmodat(t, "upper", st.st_mode & 07777, 0) != 0 || mkdirat(t, "work", 0700) != 0) {
        fail(err, cap, "writable layer");
        close(t);
        return -1;
    }
    wm_fmt(up, sizeof(up), "/proc/self/fd/%d/upper", t);
    wm_fmt(work, sizeof(work), "/proc/self/fd/%d/work", t);
    const char *const ovl_kv[] = {"lowerdir", lower, "upperdir", up, "workdir", work};
    tree = detached_fs("overlay", ovl_kv, 6, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, err, cap);
    if (tree < 0)
        close(t);
    else
        *upper_fd = t;
    return tree;
}

int wm_image_mount_pod(const wm_config_t *cfg, int self_mnt, pid_t pid, const char *hex, int *upper_fd, char *err,
                       size_t cap)
{
    char ns[64];
    int tree = overlay_tree(cfg, hex, upper_fd, err, cap);
    if (tree < 0)
        return -1;
    wm_fmt(ns, sizeof(ns), "/proc/%d/ns/mnt", (int)pid);
    int rc = -1, nsfd = open(ns, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNS) != 0) {
        fail(err, cap, "enter the pod's mount namespace");
        goto out;
    }
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, WM_POD_ROOT_DIR, MOVE_MOUNT_F_EMPTY_PATH) != 0)
        fail(err, cap, "move into the pod");
    else
        rc = furnish(err, cap);
    if (setns(self_mnt, CLONE_NEWNS) != 0)
        rc = -2; /* every later path would resolve in a pod: the caller stops */
out:
    if (nsfd >= 0)
        close(nsfd);
    close(tree);
    return rc;
}
