/* Cgroup layout detection and limit files against fake trees in a temp dir. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "worker-manager/internal.h"

static char root[256];

static void touch(const char *rel, const char *content)
{
    char p[PATH_MAX];
    wm_fmt(p, sizeof(p), "%s/%s", root, rel);
    char d[PATH_MAX];
    wm_fmt(d, sizeof(d), "%s", p);
    *strrchr(d, '/') = '\0';
    cr_assert_eq(faas_mkdirs(d, 0755), 0);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(content, f);
    fclose(f);
}

static void setup(void)
{
    snprintf(root, sizeof(root), "/tmp/wm-cgtest-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
}

static void teardown(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    (void)!system(cmd);
}

TestSuite(cgroup, .init = setup, .fini = teardown);

Test(cgroup, hybrid_uses_v1_controllers_and_v2_membership)
{
    touch("unified/cgroup.controllers", "\n");
    touch("memory/cgroup.procs", "");
    touch("cpu/cgroup.procs", "");
    touch("pids/cgroup.procs", "");
    wm_cg_layout_t L;
    const char *err = NULL;
    cr_assert_eq(wm_cg_detect(root, &L, &err), 0);
    char want[PATH_MAX];
    wm_fmt(want, sizeof(want), "%s/unified", root);
    cr_assert_str_eq(L.v2, want);
    for (int i = 0; i < WM_CG_N; i++) {
        cr_assert_eq(L.on_v2[i], 0);
        wm_fmt(want, sizeof(want), "%s/%s", root, wm_cg_names[i]);
        cr_assert_str_eq(L.v1[i], want);
    }
    char dirs[4][PATH_MAX];
    cr_assert_eq(wm_cg_dirs(&L, "faas/w/p", dirs, 4), 4);
    wm_fmt(want, sizeof(want), "%s/unified/faas/w/p", root);
    cr_assert_str_eq(dirs[0], want);
}

Test(cgroup, pure_v2_puts_everything_at_the_root)
{
    touch("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    wm_cg_layout_t L;
    const char *err = NULL;
    cr_assert_eq(wm_cg_detect(root, &L, &err), 0);
    cr_assert_str_eq(L.v2, root);
    for (int i = 0; i < WM_CG_N; i++) {
        cr_assert_eq(L.on_v2[i], 1);
        cr_assert_str_eq(L.v1[i], "");
    }
    char dirs[4][PATH_MAX];
    cr_assert_eq(wm_cg_dirs(&L, "faas/w/p", dirs, 4), 1);
}

Test(cgroup, partial_v2_mixes)
{
    touch("unified/cgroup.controllers", "memory pids\n");
    touch("cpu/cgroup.procs", "");
    wm_cg_layout_t L;
    const char *err = NULL;
    cr_assert_eq(wm_cg_detect(root, &L, &err), 0);
    cr_assert_eq(L.on_v2[WM_CG_MEMORY], 1);
    cr_assert_eq(L.on_v2[WM_CG_PIDS], 1);
    cr_assert_eq(L.on_v2[WM_CG_CPU], 0);
    cr_assert_neq(L.v1[WM_CG_CPU][0], '\0');
}

Test(cgroup, nothing_is_an_error)
{
    wm_cg_layout_t L;
    const char *err = NULL;
    cr_assert_eq(wm_cg_detect(root, &L, &err), -1);
    cr_assert_not_null(err);
}

Test(cgroup, word_match_is_exact)
{
    /* "memory_recursiveprot"-like words must not count as memory */
    touch("unified/cgroup.controllers", "xmemory pidsx cpuset\n");
    wm_cg_layout_t L;
    const char *err = NULL;
    cr_assert_eq(wm_cg_detect(root, &L, &err), 0);
    for (int i = 0; i < WM_CG_N; i++)
        cr_assert_eq(L.on_v2[i], 0, "%s", wm_cg_names[i]);
}

static const char *find(wm_cg_write_t *w, size_t n, const char *suffix)
{
    for (size_t i = 0; i < n; i++) {
        size_t pl = strlen(w[i].path), sl = strlen(suffix);
        if (pl >= sl && strcmp(w[i].path + pl - sl, suffix) == 0)
            return w[i].value;
    }
    return NULL;
}

Test(cgroup, v1_limit_values)
{
    touch("unified/cgroup.controllers", "\n");
    touch("memory/cgroup.procs", "");
    touch("cpu/cgroup.procs", "");
    touch("pids/cgroup.procs", "");
    wm_cg_layout_t L;
    const char *err;
    cr_assert_eq(wm_cg_detect(root, &L, &err), 0);
    wm_cg_write_t w[8];
    wm_limits_t def = {0, 0, 0};
    size_t n = wm_cg_limit_writes(&L, "faas/w/p", &def, w, 8);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(find(w, n, "/memory/faas/w/p/memory.limit_in_bytes"), "268435456");
    cr_assert_str_eq(find(w, n, "/cpu/faas/w/p/cpu.cfs_quota_us"), "-1");
    cr_assert_str_eq(find(w, n, "/cpu/faas/w/p/cpu.cfs_period_us"), "100000");
    cr_assert_str_eq(find(w, n, "/pids/faas/w/p/pids.max"), "256");
    wm_limits_t lim = {64ull << 20, 500, 32};
    n = wm_cg_limit_writes(&L, "faas/w/p", &lim, w, 8);
    cr_assert_str_eq(find(w, n, "memory.limit_in_bytes"), "67108864");
    cr_assert_str_eq(find(w, n, "cpu.cfs_quota_us"), "50000");
    cr_assert_str_eq(find(w, n, "pids.max"), "32");
    wm_limits_t tiny = {0, 1, 0};
    n = wm_cg_limit_writes(&L, "faas/w/p", &tiny, w, 8);
    cr_assert_str_eq(find(w, n, "cpu.cfs_quota_us"), "1000", "quota is clamped to the kernel minimum");
}

Test(cgroup, v2_limit_values)
{
    touch("cgroup.controllers", "cpu memory pids\n");
    wm_cg_layout_t L;
    const char *err;
    cr_assert_eq(wm_cg_detect(root, &L, &err), 0);
    wm_cg_write_t w[8];
    wm_limits_t def = {0, 0, 0};
    size_t n = wm_cg_limit_writes(&L, "faas/w/p", &def, w, 8);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(find(w, n, "/faas/w/p/memory.max"), "268435456");
    cr_assert_str_eq(find(w, n, "/faas/w/p/cpu.max"), "max 100000");
    cr_assert_str_eq(find(w, n, "/faas/w/p/pids.max"), "256");
    wm_limits_t lim = {1ull << 30, 2000, 10};
    n = wm_cg_limit_writes(&L, "faas/w/p", &lim, w, 8);
    cr_assert_str_eq(find(w, n, "cpu.max"), "200000 100000");
    cr_assert_str_eq(find(w, n, "memory.max"), "1073741824");
}

Test(cgroup, create_and_apply_on_fake_tree)
{
    touch("unified/cgroup.controllers", "\n");
    touch("memory/cgroup.procs", "");
    wm_cg_layout_t L;
    const char *err;
    cr_assert_eq(wm_cg_detect(root, &L, &err), 0);
    char e[256];
    cr_assert_eq(wm_cg_create(&L, "faas/w/p", e, sizeof(e)), 0, "%s", e);
    char p[PATH_MAX];
    wm_fmt(p, sizeof(p), "%s/memory/faas/w/p/memory.limit_in_bytes", root);
    FILE *f = fopen(p, "w"); /* a real cgroupfs makes it; the fake tree needs it */
    fclose(f);
    wm_limits_t lim = {1 << 20, 0, 0};
    cr_assert_eq(wm_cg_apply(&L, "faas/w/p", &lim, e, sizeof(e)), 0, "%s", e);
    char buf[64] = "";
    f = fopen(p, "r");
    cr_assert_not_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    cr_assert_str_eq(buf, "1048576");
    wm_fmt(p, sizeof(p), "%s/unified/faas/w/p", root);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
}
