/* image.c - the host's cache of unpacked OCI images: <state>/images/rootfs/<manifest hex>.
 *
 * Each image is fetched blob by blob from discovery (content-addressed: the blobs are the
 * artifacts faasctl uploaded), laid out as an OCI image layout and unpacked once by umoci
 * (layers, whiteouts, ids) with every id shifted to --image-id-base, so no file of an
 * image belongs to a host user. The rootfs is then read-only: pods mount it as the lower
 * layer of an overlay. Blocking (rpc, umoci, tree walks): fetch threads only. */
#include "worker-manager/internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "proto/faas.pb-c.h"

extern char **environ;

#define TMP_MAX_AGE_S 600 /* a temp dir this old belongs to no running unpack */
/* what the cache did since the worker started (wm_image_metrics) */
static struct {
    _Atomic uint64_t unpacks, failures, removed_unused, removed_full, bytes;
} M;

#define UMOCI_ERR_KEEP 100 /* bytes of umoci's last error line a cold start error keeps */
#define UNPACK_LIMIT_S 540 /* umoci is killed past it: below TMP_MAX_AGE_S, so its temp dir is still its own */

/* ---- running umoci ---- */

/* Below both, the disk holding the cache is too full to go on unpacking: a gzip bomb (or
 * just a huge image) must stop before it fills the host, not after (the cache bound is
 * only known once the rootfs is whole). */
#define DISK_RESERVE_BYTES (1ull << 30)
#define DISK_RESERVE_PERMILLE 50

static int disk_low(const char *dir)
{
    struct statvfs v;
    if (dir == NULL || statvfs(dir, &v) != 0)
        return 0;
    uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize, total = (uint64_t)v.f_blocks * v.f_frsize;
    return avail < DISK_RESERVE_BYTES && avail * 1000 < total * DISK_RESERVE_PERMILLE;
}

/* Waits for pid at most limit_s seconds, then kills it (a hung umoci: the fetch thread
 * and the sweep it holds off must not wait for ever); with watch, also as soon as the
 * disk holding watch runs low (*why says which). */
static int wait_bounded(pid_t pid, int *status, unsigned limit_s, const char *watch, const char **why)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    uint64_t deadline = faas_now_us() + (uint64_t)limit_s * 1000000u;
    while (pfd >= 0) {
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        int n = poll(&p, 1, 250);
        if (n > 0 || (n < 0 && errno != EINTR))
            break;
        const char *w = faas_now_us() >= deadline ? "it ran too long" : disk_low(watch) ? "the disk is almost full" : NULL;
        if (w != NULL) {
            FAAS_WARN("event=image_tool_killed pid=%d why=\"%s\"", (int)pid, w);
            kill(pid, SIGKILL);
            if (why)
                *why = w;
            break;
        }
    }
    if (pfd >= 0)
        close(pfd);
    while (waitpid(pid, status, 0) < 0)
        if (errno != EINTR)
            return errno;
    return 0;
}

/* Runs argv[0] (looked up in PATH) with stdout to /dev/null and stderr to errfile (or
 * /dev/null), for at most UNPACK_LIMIT_S; 0 with its wait status, or an errno when it
 * could not start. */
static int run_watched(char *const argv[], const char *errfile, int *status, const char *watch, const char **why)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none;
    pid_t pid;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, errfile ? errfile : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    /* fetch threads block SIGINT/SIGTERM (the pod thread reads a signalfd): umoci must not */
    sigemptyset(&none);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return rc;
    return wait_bounded(pid, status, UNPACK_LIMIT_S, watch, why);
}

static int run(char *const argv[], const char *errfile, int *status)
{
    return run_watched(argv, errfile, status, NULL, NULL);
}

static pthread_mutex_t umoci_mu = PTHREAD_MUTEX_INITIALIZER;
static int umoci_state; /* 0 not tried, 1 runs, -1 missing */

int wm_image_umoci_ok(const wm_config_t *cfg)
{
    pthread_mutex_lock(&umoci_mu);
    if (umoci_state == 0) {
        char *argv[] = {(char *)cfg->umoci, "--version", NULL};
        int st = 0, rc = run(argv, NULL, &st);
        umoci_state = rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 1 : -1;
        if (umoci_state < 0)
            FAAS_WARN("event=umoci_missing umoci=%s err=\"%s\" note=\"functions with an image cannot start here\"",
                      cfg->umoci, rc ? strerror(rc) : "umoci --version failed");
    }
    int ok = umoci_state > 0;
    pthread_mutex_unlock(&umoci_mu);
    return ok;
}

/* The last non-empty line of umoci's stderr, without its "⨯" mark and with tmp (the
 * temp dir: it means nothing to the user) cut out. */
static void last_err_line(const char *file, const char *tmp, char *out, size_t cap)
{
    char buf[4096];
    long n = faas_read_small(file, buf, sizeof(buf));
    out[0] = '\0';
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *end = buf + n;
    while (end > buf && (end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\r'))
        *--end = '\0';
    char *line = strrchr(buf, '\n');
    line = line ? line + 1 : buf;
    while (*line == ' ' || *line == '\t' || (unsigned char)*line >= 0x80) /* the mark is UTF-8 */
        line++;
    size_t tl = strlen(tmp), o = 0;
    for (const char *p = line; *p && o + 1 < cap;) {
        if (strncmp(p, tmp, tl) == 0) {
            p += tl + (p[tl] == '/');
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
    faas_oneline(out);
}

/* ---- tree walks (nftw has no user pointer: each thread its own accumulator) ---- */

static __thread uint64_t walk_bytes, walk_devices;
static __thread uint32_t walk_base;
static __thread int walk_fix;

/* Removes dir and everything under it, never following a symlink (the tree is an image:
 * its links point anywhere). GNU rm walks relative to directory fds, so no depth of the
 * image's paths defeats it (nftw's whole paths stop at PATH_MAX and leave the tree); its
 * files belong to image ids, so this runs as root. */
static void rm_tree(const char *dir)
{
    char *argv[] = {"rm", "-rf", "--one-file-system", "--", (char *)dir, NULL};
    int st = 0;
    if (run(argv, NULL, &st) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAAS_WARN("event=image_tree_not_removed path=%s", dir);
}

/* Counts what the disk holds. When walk_fix: removes device nodes (a block device of
 * the host's disk, mode 0666 in an image, would be a hole: pods have no device cgroup;
 * the pod's /dev is made by the root helper) and gives entries umoci left to host ids
 * (the parents of a layer's files when the layer has no entry for them come out
 * root:root) to the image's root, so no file of an image is a host user's. */
static int size_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    uint32_t hi = walk_base + WM_IMAGE_IDS;
    if (walk_fix && (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))) {
        walk_devices++;
        return unlink(path) == 0 ? 0 : -1;
    }
    walk_bytes += (uint64_t)st->st_blocks * 512u;
    if (walk_fix && (st->st_uid < walk_base || st->st_uid >= hi || st->st_gid < walk_base || st->st_gid >= hi)) {
        uid_t u = st->st_uid >= walk_base && st->st_uid < hi ? st->st_uid : walk_base;
        gid_t g = st->st_gid >= walk_base && st->st_gid < hi ? st->st_gid : walk_base;
        if (lchown(path, u, g) != 0)
            return -1;
    }
    /* The cache is on the host's disk: a file capability (umoci restores security.*
     * xattrs as root) or a set-id file there would be a way up for anyone on the host
     * who reached it. Pods mount it nosuid under no_new_privs and need neither. */
    if (walk_fix && flag == FTW_F) {
        if (lremovexattr(path, "security.capability") != 0 && errno != ENODATA && errno != ENOTSUP)
            return -1;
        if (S_ISREG(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)) &&
            chmod(path, st->st_mode & 07777 & ~(mode_t)(S_ISUID | S_ISGID)) != 0)
            return -1;
    }
    return 0;
}

/* The bytes under dir; fix: first unpack's walk (above). */
static int tree_size(const char *dir, uint32_t base, int fix, uint64_t *bytes)
{
    walk_bytes = walk_devices = 0;
    walk_base = base;
    walk_fix = fix;
    int rc = nftw(dir, size_entry, 32, FTW_PHYS);
    *bytes = walk_bytes;
    return rc == 0 ? 0 : -1;
}

/* Writes s to path (created 0644 or truncated); 0 or -1 with errno. */
static int write_text(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t n = strlen(s);
    ssize_t w = write(fd, s, n);
    int e = errno;
    if (close(fd) != 0 || w != (ssize_t)n)
        return errno = w < 0 ? e : EIO, -1;
    return 0;
}

/* ---- paths ---- */

/* The hex of a "sha256:<64 hex>" digest, or NULL: only these reach a path. */
static const char *digest_hex(const char *d)
{
    return strncmp(d, "sha256:", 7) == 0 && wm_valid_sha256(d + 7) ? d + 7 : NULL;
}

int wm_image_rootfs(const wm_config_t *cfg, const Faas__ImageSpec *img, char *out, size_t cap)
{
    const char *hex = digest_hex(img->manifest_digest);
    return hex ? wm_fmt(out, cap, "%s/images/rootfs/%s", cfg->state_dir, hex) : -1;
}

static const char *ref_of(const Faas__ImageSpec *img)
{
    return img->ref[0] ? img->ref : img->manifest_digest;
}

/* ---- unpacks in progress in this process: gc leaves their temp dirs alone, whatever
 * their age (a large image may take umoci longer than TMP_MAX_AGE_S) ---- */

#define MAX_ACTIVE 64
static pthread_mutex_t active_mu = PTHREAD_MUTEX_INITIALIZER;
static char active[MAX_ACTIVE][16]; /* "tmp.XXXXXX" */

static void set_active(const char *tmp, int on)
{
    const char *name = strrchr(tmp, '/') + 1;
    pthread_mutex_lock(&active_mu);
    for (int i = 0; i < MAX_ACTIVE; i++)
        if (on ? active[i][0] == '\0' : strcmp(active[i], name) == 0) {
            snprintf(active[i], sizeof(active[i]), "%s", on ? name : "");
            break;
        }
    pthread_mutex_unlock(&active_mu);
}

static int is_active(const char *name)
{
    int found = 0;
    pthread_mutex_lock(&active_mu);
    for (int i = 0; i < MAX_ACTIVE && !found; i++)
        found = strcmp(active[i], name) == 0;
    pthread_mutex_unlock(&active_mu);
    return found;
}

/* ---- ensure ---- */

typedef struct {
    const wm_config_t *cfg;
    const Faas__ImageSpec *img;
    const char *ref;
    char tmp[PATH_MAX];
    char blobs[PATH_MAX]; /* <tmp>/layout/blobs/sha256 */
} job_t;

/* Fetches blob hex into the layout and checks it against its name. */
static int fetch_one(job_t *j, const char *hex, wm_blob_fetch_fn fetch, void *ud, char *err, size_t errcap)
{
    char path[PATH_MAX], got[65];
    if (wm_fmt(path, sizeof(path), "%s/%s", j->blobs, hex) != 0)
        return wm_fmt(err, errcap, "state dir path too long"), -1;
    if (access(path, F_OK) == 0) /* a layer listed twice */
        return 0;
    if (fetch(ud, hex, path, err, errcap) != 0)
        return -1;
    if (wm_sha256_file(path, got) != 0 || strcmp(got, hex) != 0)
        return wm_fmt(err, errcap, "blob sha256:%s of image %s does not match its digest", hex, j->ref), -1;
    return 0;
}

static int fetch_all(job_t *j, wm_blob_fetch_fn fetch, void *ud, char *err, size_t errcap)
{
    const char *mhex = digest_hex(j->img->manifest_digest);
    if (fetch_one(j, mhex, fetch, ud, err, errcap) != 0)
        return -1;
    for (size_t i = 0; i < j->img->n_blobs; i++)
        if (fetch_one(j, digest_hex(j->img->blobs[i]), fetch, ud, err, errcap) != 0)
            return -1;
    struct stat st;
    char path[PATH_MAX];
    wm_fmt(path, sizeof(path), "%s/%s", j->blobs, mhex);
    if (stat(path, &st) != 0 || (uint64_t)st.st_size != j->img->manifest_size)
        return wm_fmt(err, errcap, "the manifest of image %s is not %llu bytes long as deployed", j->ref,
                      (unsigned long long)j->img->manifest_size),
               -1;
    return 0;
}

/* oci-layout and an index.json naming the manifest "faas", as umoci unpack reads them. */
static int write_layout(job_t *j, char *err, size_t errcap)
{
    char path[PATH_MAX], index[512];
    wm_fmt(index, sizeof(index),
           "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
           "\"digest\":\"%s\",\"size\":%llu,\"annotations\":{\"org.opencontainers.image.ref.name\":\"faas\"}}]}\n",
           j->img->manifest_digest, (unsigned long long)j->img->manifest_size);
    if (wm_fmt(path, sizeof(path), "%s/layout/oci-layout", j->tmp) != 0 ||
        write_text(path, "{\"imageLayoutVersion\":\"1.0.0\"}\n") != 0 ||
        wm_fmt(path, sizeof(path), "%s/layout/index.json", j->tmp) != 0 || write_text(path, index) != 0)
        return wm_fmt(err, errcap, "cannot write the layout of image %s: %s", j->ref, strerror(errno)), -1;
    return 0;
}

static int unpack(job_t *j, char *err, size_t errcap)
{
    char map[48], image[PATH_MAX], bundle[PATH_MAX], errfile[PATH_MAX], line[320];
    wm_fmt(map, sizeof(map), "0:%u:%u", j->cfg->image_id_base, WM_IMAGE_IDS);
    if (wm_fmt(image, sizeof(image), "%s/layout:faas", j->tmp) != 0 ||
        wm_fmt(bundle, sizeof(bundle), "%s/bundle", j->tmp) != 0 ||
        wm_fmt(errfile, sizeof(errfile), "%s/umoci.err", j->tmp) != 0)
        return wm_fmt(err, errcap, "state dir path too long"), -1;
    if (mkdir(bundle, 0700) != 0)
        return wm_fmt(err, errcap, "cannot make %s: %s", bundle, strerror(errno)), -1;
    strncat(bundle, "/rootfs", sizeof(bundle) - strlen(bundle) - 1);
    /* raw: the rootfs alone. A whole bundle would have umoci resolve User itself for a
     * config.json we never read, failing on a user the image lacks with its own words
     * before wm_image_resolve can say it in ours. */
    char *argv[] = {(char *)j->cfg->umoci, "raw", "unpack", "--uid-map", map, "--gid-map", map, "--image", image,
                    bundle, NULL};
    const char *killed = NULL;
    int st = 0, rc = run_watched(argv, errfile, &st, j->tmp, &killed);
    if (rc != 0)
        return wm_fmt(err, errcap, "umoci is not installed on this worker"), -1;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        last_err_line(errfile, j->tmp, line, sizeof(line));
        FAAS_WARN("event=image_unpack_failed manifest=%s status=%d", j->img->manifest_digest + 7, st);
        if (killed != NULL)
            return wm_fmt(err, errcap, "unpacking image %s stopped: %s", j->ref, killed), -1;
        /* umoci's errors run from the general to the cause ("create rootfs: unpack layer:
         * ...: no space left on device"): the end is what a cold start's line must keep */
        size_t ll = strlen(line);
        if (ll > UMOCI_ERR_KEEP) {
            memmove(line + 3, line + ll - (UMOCI_ERR_KEEP - 3), UMOCI_ERR_KEEP - 3 + 1);
            memcpy(line, "...", 3);
        }
        return wm_fmt(err, errcap, "unpacking image %s failed: %s", j->ref, line[0] ? line : "umoci said nothing"), -1;
    }
    return 0;
}

/* The unpacked rootfs: enterable by the pod, sized, then moved into the cache. */
static int install(job_t *j, const char *hex, char *err, size_t errcap)
{
    char root[PATH_MAX], final[PATH_MAX], sizef[PATH_MAX], sizetmp[PATH_MAX], num[24];
    struct stat st;
    uint64_t bytes = 0;
    wm_fmt(root, sizeof(root), "%s/bundle/rootfs", j->tmp);
    if (lstat(root, &st) != 0 || !S_ISDIR(st.st_mode))
        return wm_fmt(err, errcap, "unpacking image %s made no rootfs", j->ref), -1;
    if ((st.st_mode & 0755) != 0755 && chmod(root, (st.st_mode & 07777) | 0755) != 0)
        return wm_fmt(err, errcap, "cannot open up the rootfs of image %s: %s", j->ref, strerror(errno)), -1;
    if (tree_size(root, j->cfg->image_id_base, 1, &bytes) != 0)
        return wm_fmt(err, errcap, "cannot walk the rootfs of image %s: %s", j->ref, strerror(errno)), -1;
    if (walk_devices > 0)
        FAAS_WARN("event=image_devices_removed manifest=%s count=%llu", hex, (unsigned long long)walk_devices);
    if (wm_fmt(final, sizeof(final), "%s/images/rootfs/%s", j->cfg->state_dir, hex) != 0 ||
        wm_fmt(sizef, sizeof(sizef), "%s.size", final) != 0 || wm_fmt(sizetmp, sizeof(sizetmp), "%s/size", j->tmp))
        return wm_fmt(err, errcap, "state dir path too long"), -1;
    wm_fmt(num, sizeof(num), "%llu\n", (unsigned long long)bytes);
    /* the size first: a rootfs in place always has one, and gc counts only those */
    if (write_text(sizetmp, num) != 0 || rename(sizetmp, sizef) != 0)
        return wm_fmt(err, errcap, "cannot record the size of image %s: %s", j->ref, strerror(errno)), -1;
    if (rename(root, final) != 0 && access(final, F_OK) != 0) /* else a concurrent unpack won */
        return wm_fmt(err, errcap, "cannot move image %s into the cache: %s", j->ref, strerror(errno)), -1;
    atomic_fetch_add(&M.bytes, bytes);
    FAAS_INFO("event=image_unpacked manifest=%s bytes=%llu", hex, (unsigned long long)bytes);
    return 0;
}

/* Every digest of img well-formed, so none can name a path outside the layout. */
static int check_digests(const Faas__ImageSpec *img, const char *ref, char *err, size_t errcap)
{
    if (digest_hex(img->manifest_digest) == NULL)
        return wm_fmt(err, errcap, "image %s has no valid manifest digest", ref), -1;
    if (img->n_blobs == 0)
        return wm_fmt(err, errcap, "image %s has no config", ref), -1;
    for (size_t i = 0; i < img->n_blobs; i++)
        if (digest_hex(img->blobs[i]) == NULL)
            return wm_fmt(err, errcap, "image %s has an invalid blob digest", ref), -1;
    return 0;
}

/* j->tmp is set only once mkdtemp made it: the caller removes whatever it names. */
static int make_tmp(job_t *j, char *err, size_t errcap)
{
    char dir[PATH_MAX], tmp[PATH_MAX];
    j->tmp[0] = '\0';
    if (wm_fmt(dir, sizeof(dir), "%s/images/rootfs", j->cfg->state_dir) != 0 ||
        wm_fmt(tmp, sizeof(tmp), "%s/images/tmp.XXXXXX", j->cfg->state_dir) != 0 ||
        wm_fmt(j->blobs, sizeof(j->blobs), "%s/layout/blobs/sha256", tmp) != 0)
        return wm_fmt(err, errcap, "state dir path too long"), -1;
    /* root's alone: the rootfs files belong to the image ids, which no host user should
     * reach (the overlay reads its lower layer with the mounter's, root's, rights) */
    if (faas_mkdirs(dir, 0700) != 0 || mkdtemp(tmp) == NULL)
        return wm_fmt(err, errcap, "cannot create the image cache: %s", strerror(errno)), -1;
    char images[PATH_MAX];
    wm_fmt(images, sizeof(images), "%s/images", j->cfg->state_dir);
    if (chmod(images, 0700) != 0 || chmod(dir, 0700) != 0)
        return wm_fmt(err, errcap, "cannot close the image cache: %s", strerror(errno)), -1;
    memcpy(j->tmp, tmp, sizeof(tmp));
    set_active(j->tmp, 1);
    wm_fmt(j->blobs, sizeof(j->blobs), "%s/layout/blobs/sha256", j->tmp);
    if (faas_mkdirs(j->blobs, 0700) != 0)
        return wm_fmt(err, errcap, "cannot create the image cache: %s", strerror(errno)), -1;
    return 0;
}

int wm_image_ensure_with(const wm_config_t *cfg, const Faas__ImageSpec *img, wm_blob_fetch_fn fetch, void *ud,
                         wm_image_times_t *t, char *err, size_t errcap)
{
    job_t j = {.cfg = cfg, .img = img, .ref = ref_of(img)};
    char final[PATH_MAX];
    t->fetch_us = t->unpack_us = 0;
    if (check_digests(img, j.ref, err, errcap) != 0)
        return -1;
    if (wm_image_rootfs(cfg, img, final, sizeof(final)) != 0)
        return wm_fmt(err, errcap, "state dir path too long"), -1;
    if (utimensat(AT_FDCWD, final, NULL, 0) == 0) /* cached: now its most recent use */
        return 0;
    if (!wm_image_umoci_ok(cfg))
        return wm_fmt(err, errcap, "umoci is not installed on this worker"), -1;
    int rc = -1;
    if (make_tmp(&j, err, errcap) != 0)
        goto out;
    uint64_t t0 = faas_now_us();
    if (fetch_all(&j, fetch, ud, err, errcap) != 0)
        goto out;
    uint64_t t1 = faas_now_us();
    t->fetch_us = t1 - t0;
    if (write_layout(&j, err, errcap) != 0 || unpack(&j, err, errcap) != 0 ||
        install(&j, digest_hex(img->manifest_digest), err, errcap) != 0)
        goto out;
    t->unpack_us = faas_now_us() - t1;
    rc = 0;
out:
    atomic_fetch_add(rc == 0 ? &M.unpacks : &M.failures, 1);
    if (j.tmp[0] != '\0') {
        rm_tree(j.tmp);
        set_active(j.tmp, 0);
    }
    return rc;
}

typedef struct {
    const wm_config_t *cfg;
    faas_rpc_channel_t *ch; /* one connection for all the blobs of an image */
    const char *addr;       /* the discovery ch goes to */
} disc_fetch_t;

/* Each blob from the discovery in use; one that fails is tried on each other discovery
 * in turn (all serve the same artifacts: one lacking the bytes fetches them itself). */
static int fetch_discovery(void *ud, const char *hex, const char *path, char *err, size_t errcap)
{
    disc_fetch_t *d = ud;
    int rc = -1;
    for (unsigned i = 0; i < (d->cfg->n_discovery ? d->cfg->n_discovery : 1); i++) {
        const char *addr = wm_discovery_pick(d->cfg);
        if (d->ch != NULL && d->addr != addr) {
            faas_rpc_channel_close(d->ch);
            d->ch = NULL;
        }
        if (d->ch == NULL)
            d->ch = faas_rpc_channel_open(addr);
        d->addr = addr;
        rc = wm_fetch_blob(d->ch, addr, hex, path, "image blob", err, errcap);
        if (rc == 0)
            break;
        wm_discovery_failed(d->cfg, addr);
    }
    return rc;
}

int wm_image_ensure(const wm_config_t *cfg, const Faas__ImageSpec *img, wm_image_times_t *t, char *err, size_t errcap)
{
    disc_fetch_t d = {.cfg = cfg};
    int rc = wm_image_ensure_with(cfg, img, fetch_discovery, &d, t, err, errcap);
    if (d.ch != NULL)
        faas_rpc_channel_close(d.ch);
    return rc;
}

/* ---- gc ---- */

typedef struct {
    char hex[65];
    uint64_t bytes;
    struct timespec mtime;
    int keep; /* in use: never removed */
    int gone;
} cached_t;

static int listed(const char *hex, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] != NULL && strcmp(v[i], hex) == 0)
            return 1;
    return 0;
}

/* <hex>.size, or the tree walked again when it is missing or unreadable. */
static uint64_t cached_size(const char *dir, const char *hex, uint32_t base)
{
    char path[PATH_MAX], buf[32];
    uint64_t bytes = 0;
    wm_fmt(path, sizeof(path), "%s/%s.size", dir, hex);
    long n = faas_read_small(path, buf, sizeof(buf));
    if (n > 0) {
        buf[n] = '\0';
        return strtoull(buf, NULL, 10);
    }
    wm_fmt(path, sizeof(path), "%s/%s", dir, hex);
    tree_size(path, base, 0, &bytes);
    return bytes;
}

/* The cached rootfs (valid names only) into a malloc'd array. */
static int list_cached(const char *dir, uint32_t base, cached_t **out, size_t *n)
{
    DIR *d = opendir(dir);
    *out = NULL;
    *n = 0;
    if (d == NULL)
        return errno == ENOENT ? 0 : -1;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (!wm_valid_sha256(e->d_name) || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        if (*n == cap) {
            cached_t *nv = realloc(*out, (cap = cap ? cap * 2 : 16) * sizeof(**out));
            if (nv == NULL)
                break;
            *out = nv;
        }
        cached_t *c = &(*out)[(*n)++];
        memset(c, 0, sizeof(*c));
        memcpy(c->hex, e->d_name, 65);
        c->mtime = st.st_mtim;
        c->bytes = cached_size(dir, c->hex, base);
    }
    closedir(d);
    return 0;
}

/* ---- metrics: what the cache did since the worker started ---- */

void wm_image_metrics(char *buf, size_t cap, int *n)
{
    if (*n < 0 || (size_t)*n >= cap)
        return;
    *n += snprintf(buf + *n, cap - (size_t)*n,
                   "# HELP faas_wm_image_unpacks_total Images fetched and unpacked into this worker's cache.\n"
                   "# TYPE faas_wm_image_unpacks_total counter\nfaas_wm_image_unpacks_total %" PRIu64 "\n"
                   "# HELP faas_wm_image_unpack_failures_total Images whose fetch or unpack failed (a cold start "
                   "failure each).\n"
                   "# TYPE faas_wm_image_unpack_failures_total counter\nfaas_wm_image_unpack_failures_total %" PRIu64
                   "\n"
                   "# HELP faas_wm_image_removed_total Cached image rootfs removed by the sweep, by reason.\n"
                   "# TYPE faas_wm_image_removed_total counter\n"
                   "faas_wm_image_removed_total{reason=\"unused\"} %" PRIu64 "\n"
                   "faas_wm_image_removed_total{reason=\"cache_full\"} %" PRIu64 "\n"
                   "# HELP faas_wm_image_cache_bytes Bytes of unpacked image rootfs cached on this worker (as of the "
                   "last sweep or unpack).\n"
                   "# TYPE faas_wm_image_cache_bytes gauge\nfaas_wm_image_cache_bytes %" PRIu64 "\n",
                   atomic_load(&M.unpacks), atomic_load(&M.failures), atomic_load(&M.removed_unused),
                   atomic_load(&M.removed_full), atomic_load(&M.bytes));
}

static int ts_before(struct timespec a, struct timespec b)
{
    return a.tv_sec != b.tv_sec ? a.tv_sec < b.tv_sec : a.tv_nsec < b.tv_nsec;
}

/* Moves the rootfs out of the cache in one rename (a half-deleted tree never looks
 * cached), then deletes it, unless a cold start touched it since the sweep began (the pod
 * thread touches a rootfs before it resolves and mounts it; the sweep's lists are from
 * its start): then it goes back at once. */
static void remove_cached(const wm_config_t *cfg, const char *dir, cached_t *c, const char *reason,
                          struct timespec began)
{
    char trash[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
    if (wm_fmt(trash, sizeof(trash), "%s/images/trash.XXXXXX", cfg->state_dir) != 0 ||
        wm_fmt(from, sizeof(from), "%s/%s.size", dir, c->hex) != 0 || mkdtemp(trash) == NULL) {
        FAAS_WARN("event=image_remove_failed manifest=%s err=\"%s\"", c->hex, strerror(errno));
        return;
    }
    wm_fmt(from, sizeof(from), "%s/%s", dir, c->hex);
    if (wm_fmt(to, sizeof(to), "%s/%s", trash, c->hex) != 0 || rename(from, to) != 0) {
        FAAS_WARN("event=image_remove_failed manifest=%s err=\"%s\"", c->hex, strerror(errno));
        rmdir(trash);
        return;
    }
    struct stat st;
    if (stat(to, &st) == 0 && !ts_before(st.st_mtim, began) && rename(to, from) == 0) {
        rmdir(trash);
        c->keep = 1;
        FAAS_INFO("event=image_kept manifest=%s reason=used_during_sweep", c->hex);
        return;
    }
    wm_fmt(from, sizeof(from), "%s/%s.size", dir, c->hex);
    unlink(from);
    rm_tree(trash);
    c->gone = 1;
    atomic_fetch_add(strcmp(reason, "unused") == 0 ? &M.removed_unused : &M.removed_full, 1);
    FAAS_INFO("event=image_removed manifest=%s bytes=%llu reason=%s", c->hex, (unsigned long long)c->bytes, reason);
}


/* The least recently used rootfs that is neither in use nor gone, or NULL. */
static cached_t *lru(cached_t *v, size_t n)
{
    cached_t *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (!v[i].keep && !v[i].gone && (best == NULL || ts_before(v[i].mtime, best->mtime)))
            best = &v[i];
    return best;
}

/* Temp dirs of unpacks that died (older than TMP_MAX_AGE_S), trash of removals that
 * died, and .size files whose rootfs is gone. */
static void sweep_leftovers(const wm_config_t *cfg, const char *dir)
{
    char images[PATH_MAX], path[PATH_MAX];
    wm_fmt(images, sizeof(images), "%s/images", cfg->state_dir);
    DIR *d = opendir(images);
    struct dirent *e;
    time_t now = time(NULL);
    while (d != NULL && (e = readdir(d)) != NULL) {
        struct stat st;
        int tmp = strncmp(e->d_name, "tmp.", 4) == 0, trash = strncmp(e->d_name, "trash.", 6) == 0;
        if ((!tmp && !trash) || wm_fmt(path, sizeof(path), "%s/%s", images, e->d_name) != 0 || lstat(path, &st) != 0 ||
            (tmp && (now - st.st_mtime < TMP_MAX_AGE_S || is_active(e->d_name))))
            continue;
        rm_tree(path);
    }
    if (d)
        closedir(d);
    d = opendir(dir);
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        struct stat st;
        if (l != 69 || strcmp(e->d_name + 64, ".size") != 0 ||
            fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || now - st.st_mtime < TMP_MAX_AGE_S)
            continue;
        /* an unpack writes the .size just before the rootfs: young ones may be such */
        wm_fmt(path, sizeof(path), "%s/%.64s", dir, e->d_name);
        if (access(path, F_OK) != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    if (d)
        closedir(d);
}

int wm_image_gc(const wm_config_t *cfg, const char *const *needed_hex, size_t n_needed, const char *const *in_use_hex,
                size_t n_in_use, uint64_t *removed_bytes)
{
    char dir[PATH_MAX];
    cached_t *v;
    size_t n;
    struct timespec began;
    clock_gettime(CLOCK_REALTIME, &began);
    *removed_bytes = 0;
    if (wm_fmt(dir, sizeof(dir), "%s/images/rootfs", cfg->state_dir) != 0 ||
        list_cached(dir, cfg->image_id_base, &v, &n) != 0)
        return -1;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        v[i].keep = listed(v[i].hex, in_use_hex, n_in_use);
        if (!v[i].keep && !listed(v[i].hex, needed_hex, n_needed))
            remove_cached(cfg, dir, &v[i], "unused", began);
        if (v[i].gone)
            *removed_bytes += v[i].bytes;
        else
            total += v[i].bytes;
    }
    cached_t *c;
    while (total > cfg->image_cache_bytes && (c = lru(v, n)) != NULL) {
        remove_cached(cfg, dir, c, "cache_full", began);
        if (!c->gone)
            c->keep = 1; /* could not: do not pick it again */
        else {
            total -= c->bytes;
            *removed_bytes += c->bytes;
        }
    }
    free(v);
    atomic_store(&M.bytes, total);
    sweep_leftovers(cfg, dir);
    return 0;
}
