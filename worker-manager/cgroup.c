/* cgroup.c - cgroup layout detection and per-pod cgroups, v1 and v2 alike.
 *
 * Hybrid hosts mount a controller-less v2 tree (membership, cgroup.kill) next to
 * v1 hierarchies; pure v2 hosts have everything at the root. Each controller goes
 * where it is available, so the same code serves both. */
#include "worker-manager/internal.h"

#include "common/spec.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *const wm_cg_names[WM_CG_N] = {"memory", "cpu", "pids"};

int wm_fmt(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int wm_write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = strlen(s);
    ssize_t w = write(fd, s, n);
    int e = errno;
    close(fd);
    if (w != (ssize_t)n) {
        errno = w < 0 ? e : EIO;
        return -1;
    }
    return 0;
}

static int exists(const char *dir, const char *file)
{
    char p[PATH_MAX];
    if (wm_fmt(p, sizeof(p), "%s/%s", dir, file) != 0)
        return 0;
    return access(p, F_OK) == 0;
}

/* Is word in the space-separated list s. */
static int has_word(const char *s, const char *word)
{
    size_t wl = strlen(word);
    for (const char *p = s; (p = strstr(p, word)) != NULL; p += wl) {
        int start = p == s || p[-1] == ' ' || p[-1] == '\n';
        int end = p[wl] == '\0' || p[wl] == ' ' || p[wl] == '\n';
        if (start && end)
            return 1;
    }
    return 0;
}

int wm_cg_detect(const char *root, wm_cg_layout_t *L, const char **err)
{
    memset(L, 0, sizeof(*L));
    char unified[PATH_MAX];
    wm_fmt(unified, sizeof(unified), "%s/unified", root);
    if (exists(root, "cgroup.controllers"))
        wm_fmt(L->v2, sizeof(L->v2), "%s", root);
    else if (exists(unified, "cgroup.controllers"))
        wm_fmt(L->v2, sizeof(L->v2), "%s", unified);

    char ctrls[512] = "";
    if (L->v2[0] != '\0') {
        char p[PATH_MAX];
        wm_fmt(p, sizeof(p), "%s/cgroup.controllers", L->v2);
        if (faas_read_small(p, ctrls, sizeof(ctrls)) < 0)
            ctrls[0] = '\0';
    }
    int any = L->v2[0] != '\0';
    for (int i = 0; i < WM_CG_N; i++) {
        if (L->v2[0] != '\0' && has_word(ctrls, wm_cg_names[i])) {
            L->on_v2[i] = 1;
            continue;
        }
        char d[PATH_MAX];
        wm_fmt(d, sizeof(d), "%s/%s", root, wm_cg_names[i]);
        if (exists(d, "cgroup.procs")) {
            wm_fmt(L->v1[i], sizeof(L->v1[i]), "%s", d);
            any = 1;
        }
    }
    if (!any) {
        *err = "no cgroup hierarchy found (neither v2 nor v1 memory/cpu/pids)";
        return -1;
    }
    return 0;
}

size_t wm_cg_dirs(const wm_cg_layout_t *L, const char *rel, char (*out)[PATH_MAX], size_t cap)
{
    size_t n = 0;
    if (L->v2[0] != '\0' && n < cap)
        wm_fmt(out[n++], PATH_MAX, "%s/%s", L->v2, rel);
    for (int i = 0; i < WM_CG_N && n < cap; i++)
        if (L->v1[i][0] != '\0')
            wm_fmt(out[n++], PATH_MAX, "%s/%s", L->v1[i], rel);
    return n;
}

static void add_write(wm_cg_write_t *out, size_t cap, size_t *n, const char *base, const char *rel, const char *file,
                      const char *value)
{
    if (*n >= cap)
        return;
    wm_fmt(out[*n].path, sizeof(out[*n].path), "%s/%s/%s", base, rel, file);
    wm_fmt(out[*n].value, sizeof(out[*n].value), "%s", value);
    (*n)++;
}

size_t wm_cg_limit_writes(const wm_cg_layout_t *L, const char *rel, const wm_limits_t *lim, wm_cg_write_t *out,
                          size_t cap)
{
    size_t n = 0;
    char v[64];
    uint64_t mem = lim->memory_bytes ? lim->memory_bytes : FAAS_SPEC_DEFAULT_MEMORY_BYTES;
    uint32_t pids = lim->pids ? lim->pids : FAAS_SPEC_DEFAULT_PIDS;
    wm_fmt(v, sizeof(v), "%llu", (unsigned long long)mem);
    if (L->on_v2[WM_CG_MEMORY])
        add_write(out, cap, &n, L->v2, rel, "memory.max", v);
    else if (L->v1[WM_CG_MEMORY][0])
        add_write(out, cap, &n, L->v1[WM_CG_MEMORY], rel, "memory.limit_in_bytes", v);

    /* quota per period: 1000 millis = one full CPU = period us per period */
    uint64_t quota = (uint64_t)lim->cpu_millis * WM_CPU_PERIOD_US / 1000u;
    if (lim->cpu_millis != 0 && quota < 1000)
        quota = 1000; /* the kernel refuses quotas under 1 ms */
    if (L->on_v2[WM_CG_CPU]) {
        if (lim->cpu_millis == 0)
            wm_fmt(v, sizeof(v), "max %u", WM_CPU_PERIOD_US);
        else
            wm_fmt(v, sizeof(v), "%llu %u", (unsigned long long)quota, WM_CPU_PERIOD_US);
        add_write(out, cap, &n, L->v2, rel, "cpu.max", v);
    } else if (L->v1[WM_CG_CPU][0]) {
        wm_fmt(v, sizeof(v), "%u", WM_CPU_PERIOD_US);
        add_write(out, cap, &n, L->v1[WM_CG_CPU], rel, "cpu.cfs_period_us", v);
        if (lim->cpu_millis == 0)
            wm_fmt(v, sizeof(v), "-1");
        else
            wm_fmt(v, sizeof(v), "%llu", (unsigned long long)quota);
        add_write(out, cap, &n, L->v1[WM_CG_CPU], rel, "cpu.cfs_quota_us", v);
    }

    wm_fmt(v, sizeof(v), "%u", pids);
    if (L->on_v2[WM_CG_PIDS])
        add_write(out, cap, &n, L->v2, rel, "pids.max", v);
    else if (L->v1[WM_CG_PIDS][0])
        add_write(out, cap, &n, L->v1[WM_CG_PIDS], rel, "pids.max", v);
    return n;
}

/* On v2 a controller is only usable in a child when every ancestor enables it. */
static void enable_v2_controllers(const wm_cg_layout_t *L, const char *rel)
{
    char ctl[64] = "";
    for (int i = 0; i < WM_CG_N; i++)
        if (L->on_v2[i]) {
            strcat(ctl, "+");
            strcat(ctl, wm_cg_names[i]);
            strcat(ctl, " ");
        }
    if (ctl[0] == '\0')
        return;
    char p[PATH_MAX];
    wm_fmt(p, sizeof(p), "%s/%s", L->v2, rel);
    /* every ancestor of the leaf, from the root down */
    size_t base = strlen(L->v2);
    for (size_t i = base; p[i] != '\0'; i++) {
        if (p[i] != '/')
            continue;
        p[i] = '\0';
        char f[PATH_MAX + 32];
        wm_fmt(f, sizeof(f), "%s/cgroup.subtree_control", p);
        (void)wm_write_file(f, ctl);
        p[i] = '/';
    }
}

int wm_cg_create(const wm_cg_layout_t *L, const char *rel, char *err, size_t errcap)
{
    char dirs[WM_CG_N + 1][PATH_MAX];
    size_t n = wm_cg_dirs(L, rel, dirs, WM_CG_N + 1);
    if (L->v2[0] != '\0') {
        /* create ancestors first so subtree_control can be set before the leaf */
        char parent[PATH_MAX];
        wm_fmt(parent, sizeof(parent), "%s", dirs[0]);
        char *slash = strrchr(parent, '/');
        if (slash != NULL)
            *slash = '\0';
        (void)faas_mkdirs(parent, 0755);
        enable_v2_controllers(L, rel);
    }
    for (size_t i = 0; i < n; i++) {
        if (faas_mkdirs(dirs[i], 0755) != 0) {
            wm_fmt(err, errcap, "mkdir %s: %s", dirs[i], strerror(errno));
            return -1;
        }
    }
    return 0;
}

int wm_cg_apply(const wm_cg_layout_t *L, const char *rel, const wm_limits_t *lim, char *err, size_t errcap)
{
    wm_cg_write_t w[8];
    size_t n = wm_cg_limit_writes(L, rel, lim, w, 8);
    for (size_t i = 0; i < n; i++) {
        if (wm_write_file(w[i].path, w[i].value) != 0) {
            wm_fmt(err, errcap, "write %s=%s: %s", w[i].path, w[i].value, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void kill_listed(const char *dir)
{
    char p[PATH_MAX + 16];
    wm_fmt(p, sizeof(p), "%s/cgroup.procs", dir);
    FILE *f = fopen(p, "re");
    if (f == NULL)
        return;
    long pid;
    while (fscanf(f, "%ld", &pid) == 1)
        if (pid > 1)
            kill((pid_t)pid, SIGKILL);
    fclose(f);
}

static int is_empty(const char *dir)
{
    char p[PATH_MAX + 16], buf[64];
    wm_fmt(p, sizeof(p), "%s/cgroup.procs", dir);
    if (faas_read_small(p, buf, sizeof(buf)) < 0)
        return 1;
    return buf[0] == '\0';
}

void wm_cg_kill(const wm_cg_layout_t *L, const char *rel)
{
    char dirs[WM_CG_N + 1][PATH_MAX];
    size_t n = wm_cg_dirs(L, rel, dirs, WM_CG_N + 1);
    for (size_t i = 0; i < n; i++) {
        char k[PATH_MAX + 16];
        wm_fmt(k, sizeof(k), "%s/cgroup.kill", dirs[i]);
        if (i == 0 && L->v2[0] != '\0' && wm_write_file(k, "1") == 0)
            continue;
        kill_listed(dirs[i]);
    }
}

/* Depth-first: kill, wait for the tasks to leave, rmdir. */
static int remove_dir_tree(const char *dir, int wait_ms)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.')
            continue;
        char sub[PATH_MAX];
        if (wm_fmt(sub, sizeof(sub), "%s/%s", dir, e->d_name) != 0)
            continue;
        if (remove_dir_tree(sub, wait_ms) != 0)
            rc = -1;
    }
    closedir(d);
    char k[PATH_MAX + 16];
    wm_fmt(k, sizeof(k), "%s/cgroup.kill", dir);
    if (wm_write_file(k, "1") != 0)
        kill_listed(dir);
    for (int waited = 0;; waited += 5) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return rc;
        if (errno != EBUSY || waited >= wait_ms)
            return -1;
        if (!is_empty(dir))
            kill_listed(dir);
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
}

int wm_cg_remove_tree(const wm_cg_layout_t *L, const char *rel, int wait_ms)
{
    char dirs[WM_CG_N + 1][PATH_MAX];
    size_t n = wm_cg_dirs(L, rel, dirs, WM_CG_N + 1);
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        if (remove_dir_tree(dirs[i], wait_ms) != 0)
            rc = -1;
    return rc;
}
