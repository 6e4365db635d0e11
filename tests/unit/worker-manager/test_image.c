/* Unit tests for worker-manager/imagerun.c (what runs in an image: argv, env, cwd, ids,
 * exe) over temp rootfs fixtures, and worker-manager/image.c (the rootfs cache: ensure
 * with a real umoci over layouts built here, gc over temp state dirs). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "proto/faas.pb-c.h"
#include "tests/unit/watchdog.h"
#include "worker-manager/internal.h"

/* ---- fixtures ---- */

static char tmpdir[64];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return (flag == FTW_DP ? rmdir : unlink)(p), 0;
}

static void cleanup(void)
{
    if (tmpdir[0])
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/wm-img-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

/* path under tmpdir */
static const char *at(const char *rel)
{
    static char buf[4][PATH_MAX];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, PATH_MAX, "%s/%s", tmpdir, rel);
    return b;
}

static void put(const char *rel, const char *text, mode_t mode)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", at(rel));
    *strrchr(dir, '/') = '\0';
    cr_assert_eq(faas_mkdirs(dir, 0755), 0);
    FILE *f = fopen(at(rel), "w");
    cr_assert_not_null(f, "%s", rel);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(at(rel), mode), 0);
}

/* A small image: root, app (1000, in wheel and audio), svc (uid 2000, gid 70000). */
static void rootfs(void)
{
    put("r/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
        "this line is malformed\n"
        "+ghost\n" /* NIS compat lines name nobody (and glibc leaves their fields NULL) */
        "+::::::\n"
        "big:x:70000:70000::/:/bin/sh\n"
        "svc:x:2000:2000::relative:/bin/sh\n",
        0644);
    put("r/etc/group",
        "root:x:0:\n"
        "+\n"
        "wheel:x:10:root,app\n"
        "audio:x:29:app\n"
        "app:x:1000:\n"
        "video:x:44:someone\n"
        "huge:x:80000:\n",
        0644);
    put("r/bin/srv", "#!/bin/sh\n", 0755);
    put("r/bin/notexec", "data\n", 0644);
    put("r/usr/bin/tool", "#!/bin/sh\n", 0755);
    put("r/app/run.sh", "#!/bin/sh\n", 0700);
    cr_assert_eq(symlink("srv", at("r/bin/sh")), 0);
    cr_assert_eq(mkdir(at("r/bin/adir"), 0755), 0);
}

typedef struct {
    Faas__FunctionSpec spec;
    Faas__ImageSpec img;
    Faas__KeyValue kv[4];
    Faas__KeyValue *kvp[4];
} fn_t;

static void fn_init(fn_t *f)
{
    faas__function_spec__init(&f->spec);
    faas__image_spec__init(&f->img);
    f->spec.name = "fn";
    f->spec.image = &f->img;
    f->img.ref = "img:t";
    f->img.manifest_digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    for (int i = 0; i < 4; i++) {
        faas__key_value__init(&f->kv[i]);
        f->kvp[i] = &f->kv[i];
    }
    f->spec.env = f->kvp;
}

static char *srv_argv[] = {"/bin/srv", "-a"};

static int resolve_user(const char *user, wm_image_run_t *r, char *err, size_t cap)
{
    fn_t f;
    fn_init(&f);
    f.img.user = (char *)user;
    f.img.entrypoint = srv_argv;
    f.img.n_entrypoint = 1;
    return wm_image_resolve(at("r"), &f.spec, r, err, cap);
}

TestSuite(image_resolve, .init = setup, .fini = cleanup);

Test(image_resolve, entrypoint_cmd_env_and_cwd_merge)
{
    rootfs();
    fn_t f;
    fn_init(&f);
    char *cmd[] = {"x"};
    char *env[] = {"A=1", "PATH=/nope:/bin", "B=2", "NOEQ"};
    f.img.entrypoint = srv_argv;
    f.img.n_entrypoint = 2;
    f.img.cmd = cmd;
    f.img.n_cmd = 1;
    f.img.env = env;
    f.img.n_env = 4;
    f.kv[0].key = "A", f.kv[0].value = "9";
    f.kv[1].key = "C", f.kv[1].value = "3";
    f.kv[2].key = "NOEQ", f.kv[2].value = "now";
    f.spec.n_env = 3;
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.argc, 3);
    cr_assert_str_eq(r.argv[0], "/bin/srv");
    cr_assert_str_eq(r.argv[1], "-a");
    cr_assert_str_eq(r.argv[2], "x");
    cr_assert_null(r.argv[3]);
    const char *want[] = {"A=9", "PATH=/nope:/bin", "B=2", "NOEQ=now", "C=3", "HOME=/root"};
    cr_assert_eq(r.envc, 6);
    for (size_t i = 0; i < 6; i++)
        cr_assert_str_eq(r.env[i], want[i]);
    cr_assert_null(r.env[6]);
    cr_assert_str_eq(r.exe, "/bin/srv");
    cr_assert_str_eq(r.cwd, "/");
    cr_assert_eq(r.uid, 0);
    cr_assert_eq(r.gid, 0);
    cr_assert_eq(r.n_groups, 1); /* root is in wheel, as Docker's `id` shows in such images */
    cr_assert_eq(r.groups[0], 10);

    Faas__ImageRun pb;
    wm_image_run_pb(&r, "/tmp/.faas/root", &pb);
    cr_assert_str_eq(pb.root, "/tmp/.faas/root");
    cr_assert_eq(pb.n_argv, 3);
    cr_assert_eq(pb.n_env, 6);
    cr_assert_eq(pb.n_groups, 1);
    size_t len = faas__image_run__get_packed_size(&pb);
    uint8_t *buf = malloc(len);
    faas__image_run__pack(&pb, buf);
    Faas__ImageRun *back = faas__image_run__unpack(NULL, len, buf);
    cr_assert_not_null(back);
    cr_assert_str_eq(back->exe, "/bin/srv");
    cr_assert_str_eq(back->env[0], "A=9");
    faas__image_run__free_unpacked(back, NULL);
    free(buf);
    wm_image_run_free(&r);
}

Test(image_resolve, manifest_command_wins_and_is_found_on_path)
{
    rootfs();
    fn_t f;
    fn_init(&f);
    char *cmd[] = {"tool", "--flag"};
    char *env[] = {"PATH=/nope:relative/bin::/usr/bin"};
    f.img.entrypoint = srv_argv;
    f.img.n_entrypoint = 2;
    f.img.env = env;
    f.img.n_env = 1;
    f.img.working_dir = "/app";
    f.spec.command = cmd;
    f.spec.n_command = 2;
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.argc, 2);
    cr_assert_str_eq(r.argv[0], "tool");
    cr_assert_str_eq(r.exe, "/usr/bin/tool");
    cr_assert_str_eq(r.cwd, "/app");
    wm_image_run_free(&r);

    /* no PATH in the image: the default one, and it is added to the env */
    f.img.n_env = 0;
    char *sh[] = {"sh"};
    f.spec.command = sh;
    f.spec.n_command = 1;
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(r.exe, "/bin/sh");
    cr_assert_str_eq(r.env[0], "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    wm_image_run_free(&r);
}

Test(image_resolve, relative_entrypoint_is_taken_from_the_working_dir)
{
    rootfs();
    fn_t f;
    fn_init(&f);
    char *a[] = {"./run.sh"};
    f.img.entrypoint = a;
    f.img.n_entrypoint = 1;
    f.img.working_dir = "/app";
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(r.exe, "/app/run.sh");
    wm_image_run_free(&r);
    /* the same from "/" is not there */
    f.img.working_dir = "";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "entrypoint ./run.sh is not in image img:t");
    /* an empty PATH element is the working dir too */
    char *env[] = {"PATH=/nope:"};
    char *bare[] = {"run.sh"};
    f.img.env = env;
    f.img.n_env = 1;
    f.img.entrypoint = bare;
    f.img.working_dir = "/app";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(r.exe, "/app/run.sh");
    wm_image_run_free(&r);
}

Test(image_resolve, missing_or_unusable_entrypoint_is_an_error)
{
    rootfs();
    const char *bad[] = {"/bin/nothere", "/bin/notexec", "/bin/adir", "nothere", "notexec", "/bin/srv/x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fn_t f;
        fn_init(&f);
        char *a[] = {(char *)bad[i]};
        f.img.entrypoint = a;
        f.img.n_entrypoint = 1;
        wm_image_run_t r;
        char err[256] = "", want[256];
        cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), -1, "%s", bad[i]);
        snprintf(want, sizeof(want), "entrypoint %s is not in image img:t", bad[i]);
        cr_assert_str_eq(err, want);
        cr_assert_null(r.argv);
    }
}

Test(image_resolve, an_entrypoint_symlink_escaping_the_root_resolves_inside)
{
    rootfs();
    /* /bin/escape -> /usr/bin/env exists on the host, not in the image */
    cr_assert_eq(symlink("/usr/bin/env", at("r/bin/escape")), 0);
    cr_assert_eq(symlink("../../../../../../usr/bin/env", at("r/bin/escape2")), 0);
    fn_t f;
    fn_init(&f);
    char *a[] = {"/bin/escape"};
    f.img.entrypoint = a;
    f.img.n_entrypoint = 1;
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), -1);
    a[0] = "/bin/escape2";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), -1);
    put("r/usr/bin/env", "#!/bin/sh\n", 0755);
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(r.exe, "/bin/escape2");
    wm_image_run_free(&r);
}

Test(image_resolve, no_entrypoint_and_no_command)
{
    rootfs();
    fn_t f;
    fn_init(&f);
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "image img:t has no Entrypoint or Cmd and the manifest no command");
}

Test(image_resolve, working_dir_must_be_absolute)
{
    rootfs();
    fn_t f;
    fn_init(&f);
    f.img.entrypoint = srv_argv;
    f.img.n_entrypoint = 1;
    f.img.working_dir = "app";
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(wm_image_resolve(at("r"), &f.spec, &r, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "working directory app of image img:t is not an absolute path");
}

Test(image_resolve, users_by_name_uid_and_group)
{
    rootfs();
    wm_image_run_t r;
    char err[256] = "";
    static const struct {
        const char *user;
        uint32_t uid, gid;
        size_t ngroups;
        uint32_t g0, g1;
        const char *home;
    } cases[] = {
        {"app", 1000, 1000, 2, 10, 29, "HOME=/home/app"},
        {"1000", 1000, 1000, 2, 10, 29, "HOME=/home/app"},
        {"app:wheel", 1000, 10, 0, 0, 0, "HOME=/home/app"},
        {"app:44", 1000, 44, 0, 0, 0, "HOME=/home/app"},
        {"1000:audio", 1000, 29, 0, 0, 0, "HOME=/home/app"},
        {"4242", 4242, 0, 0, 0, 0, "HOME=/"},
        {"4242:4343", 4242, 4343, 0, 0, 0, "HOME=/"},
        {"app:", 1000, 1000, 2, 10, 29, "HOME=/home/app"},
        {"", 0, 0, 1, 10, 0, "HOME=/root"},
        {":audio", 0, 29, 0, 0, 0, "HOME=/root"},
        {"svc", 2000, 2000, 0, 0, 0, "HOME=/"}, /* a relative home is no home */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(resolve_user(cases[i].user, &r, err, sizeof(err)), 0, "%s: %s", cases[i].user, err);
        cr_assert_eq(r.uid, cases[i].uid, "%s", cases[i].user);
        cr_assert_eq(r.gid, cases[i].gid, "%s", cases[i].user);
        cr_assert_eq(r.n_groups, cases[i].ngroups, "%s", cases[i].user);
        if (cases[i].ngroups > 0)
            cr_assert_eq(r.groups[0], cases[i].g0);
        if (cases[i].ngroups > 1)
            cr_assert_eq(r.groups[1], cases[i].g1);
        cr_assert_str_eq(r.env[r.envc - 1], cases[i].home, "%s", cases[i].user);
        wm_image_run_free(&r);
    }
}

Test(image_resolve, unknown_users_and_groups)
{
    rootfs();
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(resolve_user("ghost", &r, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "user ghost is not defined in image img:t (/etc/passwd)");
    cr_assert_eq(resolve_user("+ghost", &r, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "user +ghost is not defined in image img:t (/etc/passwd)");
    cr_assert_eq(resolve_user("app:ghosts", &r, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "group ghosts is not defined in image img:t (/etc/group)");
    /* without an /etc/passwd names are unknown, numbers are fine */
    cr_assert_eq(unlink(at("r/etc/passwd")), 0);
    cr_assert_eq(resolve_user("app", &r, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "user app is not defined in image img:t (/etc/passwd)");
    cr_assert_eq(resolve_user("77:78", &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.uid, 77);
    cr_assert_eq(r.gid, 78);
    wm_image_run_free(&r);
}

Test(image_resolve, ids_past_the_mapped_range_are_refused)
{
    rootfs();
    wm_image_run_t r;
    char err[256] = "";
    const char *bad[] = {"70000", "big", "app:80000", "app:huge", "99999999999", "0:65536"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(resolve_user(bad[i], &r, err, sizeof(err)), -1, "%s", bad[i]);
        cr_assert(strstr(err, "outside the 65536 ids mapped for images") != NULL, "%s: %s", bad[i], err);
    }
    cr_assert_eq(resolve_user("65535:65535", &r, err, sizeof(err)), 0, "%s", err);
    wm_image_run_free(&r);
}

/* The image's /etc/passwd is a link to an absolute path: it must be the image's file
 * at that path, never the host's. */
Test(image_resolve, passwd_symlinks_stay_inside_the_rootfs)
{
    rootfs();
    put("host-shadow", "intruder:x:5:5::/:/bin/sh\n", 0644);
    cr_assert_eq(unlink(at("r/etc/passwd")), 0);
    cr_assert_eq(symlink(at("host-shadow"), at("r/etc/passwd")), 0);
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(resolve_user("intruder", &r, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "user intruder is not defined in image img:t (/etc/passwd)");
    /* the same path inside the image is what is read */
    char inside[PATH_MAX];
    snprintf(inside, sizeof(inside), "r%s", at("host-shadow"));
    put(inside, "intruder:x:7:8::/:/bin/sh\n", 0644);
    cr_assert_eq(resolve_user("intruder", &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.uid, 7);
    cr_assert_eq(r.gid, 8);
    wm_image_run_free(&r);
    /* and ".." cannot climb out either */
    cr_assert_eq(unlink(at("r/etc/passwd")), 0);
    char up[PATH_MAX];
    snprintf(up, sizeof(up), "../../../../../../../..%s", at("host-shadow"));
    cr_assert_eq(symlink(up, at("r/etc/passwd")), 0);
    cr_assert_eq(resolve_user("intruder", &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(r.uid, 7);
    wm_image_run_free(&r);
}

Test(image_resolve, a_fifo_as_passwd_is_refused_not_read)
{
    rootfs();
    cr_assert_eq(unlink(at("r/etc/passwd")), 0);
    cr_assert_eq(mkfifo(at("r/etc/passwd"), 0644), 0);
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(resolve_user("app", &r, err, sizeof(err)), -1); /* and does not hang */
    cr_assert_str_eq(err, "/etc/passwd in image img:t is not a regular file of at most 1 MiB");
}

Test(image_resolve, an_absent_rootfs_is_an_error)
{
    wm_image_run_t r;
    char err[256] = "";
    cr_assert_eq(resolve_user("", &r, err, sizeof(err)), -1);
    cr_assert(strncmp(err, "image img:t is not unpacked on this worker", 41) == 0, "%s", err);
}

/* wm_image_user on streams: long lines and member lists grow the buffer. */
Test(image_user, long_member_lists)
{
    size_t n = 200000;
    char *grp = malloc(n + 64);
    char *p = grp + sprintf(grp, "many:x:33:");
    for (int i = 0; p - grp < (long)n - 16; i++)
        p += sprintf(p, "u%d,", i);
    strcpy(p, "app\n");
    FILE *pw = fmemopen("app:x:1000:1000::/home/app:/bin/sh\n", 35, "r");
    FILE *gr = fmemopen(grp, strlen(grp), "r");
    wm_image_ids_t ids;
    char err[256] = "";
    cr_assert_eq(wm_image_user("app", pw, gr, "img", &ids, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ids.n_groups, 1);
    cr_assert_eq(ids.groups[0], 33);
    fclose(pw);
    fclose(gr);
    free(grp);
}

/* ---- gc ---- */

static wm_config_t gc_cfg(uint64_t cap)
{
    wm_config_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.state_dir, sizeof(c.state_dir), "%s", tmpdir);
    c.image_cache_bytes = cap;
    c.image_id_base = 1000000000u;
    snprintf(c.umoci, sizeof(c.umoci), "umoci");
    return c;
}

static char hexes[4][65];

/* A cached rootfs named after digit d, with a .size of bytes and an mtime age_s old. */
static const char *cached(int d, uint64_t bytes, int age_s)
{
    char *h = hexes[d];
    memset(h, '0' + d, 64);
    h[64] = '\0';
    char rel[128], num[32];
    snprintf(rel, sizeof(rel), "images/rootfs/%s/etc/file", h);
    put(rel, "x", 0644);
    snprintf(rel, sizeof(rel), "images/rootfs/%s.size", h);
    snprintf(num, sizeof(num), "%llu\n", (unsigned long long)bytes);
    put(rel, num, 0644);
    snprintf(rel, sizeof(rel), "images/rootfs/%s", h);
    struct timespec ts[2] = {{.tv_sec = time(NULL) - age_s}, {.tv_sec = time(NULL) - age_s}};
    cr_assert_eq(utimensat(AT_FDCWD, at(rel), ts, 0), 0);
    return h;
}

static int is_cached(int d)
{
    char rel[128];
    snprintf(rel, sizeof(rel), "images/rootfs/%s", hexes[d]);
    int dir = access(at(rel), F_OK) == 0;
    snprintf(rel, sizeof(rel), "images/rootfs/%s.size", hexes[d]);
    cr_assert_eq(access(at(rel), F_OK) == 0, dir, "a .size outlives its rootfs or the reverse");
    return dir;
}

TestSuite(image_gc, .init = setup, .fini = cleanup);

Test(image_gc, unused_go_needed_and_in_use_stay)
{
    const char *a = cached(0, 100, 10), *b = cached(1, 200, 20), *c = cached(2, 400, 30);
    (void)c;
    wm_config_t cfg = gc_cfg(1ull << 30);
    const char *needed[] = {a}, *in_use[] = {b};
    uint64_t removed = 0;
    cr_assert_eq(wm_image_gc(&cfg, needed, 1, in_use, 1, &removed), 0);
    cr_assert(is_cached(0));
    cr_assert(is_cached(1));
    cr_assert_not(is_cached(2));
    cr_assert_eq(removed, 400);
    /* no trash left behind */
    char cmd[PATH_MAX];
    snprintf(cmd, sizeof(cmd), "ls %s/images | grep -q trash", tmpdir);
    cr_assert_neq(system(cmd), 0);
}

Test(image_gc, least_recently_used_not_in_use_go_past_the_bound)
{
    const char *a = cached(0, 100, 30), *b = cached(1, 100, 20), *c = cached(2, 100, 10), *d = cached(3, 100, 5);
    wm_config_t cfg = gc_cfg(250);
    /* a is the oldest but in use: b and c go (oldest first), d stays */
    const char *needed[] = {b, c, d}, *in_use[] = {a};
    uint64_t removed = 0;
    cr_assert_eq(wm_image_gc(&cfg, needed, 3, in_use, 1, &removed), 0);
    cr_assert(is_cached(0));
    cr_assert_not(is_cached(1));
    cr_assert_not(is_cached(2));
    cr_assert(is_cached(3));
    cr_assert_eq(removed, 200);
    /* in use past the bound: nothing more can go */
    const char *all[] = {a, d};
    cfg.image_cache_bytes = 1;
    cr_assert_eq(wm_image_gc(&cfg, all, 2, all, 2, &removed), 0);
    cr_assert_eq(removed, 0);
    cr_assert(is_cached(0));
    cr_assert(is_cached(3));
}

Test(image_gc, a_missing_size_is_measured_again)
{
    const char *a = cached(0, 100, 30);
    char rel[128];
    snprintf(rel, sizeof(rel), "images/rootfs/%s.size", a);
    cr_assert_eq(unlink(at(rel)), 0);
    wm_config_t cfg = gc_cfg(1ull << 30);
    uint64_t removed = 0;
    cr_assert_eq(wm_image_gc(&cfg, NULL, 0, NULL, 0, &removed), 0);
    cr_assert_gt(removed, 0); /* the walked blocks of etc/ and its file */
    snprintf(rel, sizeof(rel), "images/rootfs/%s", a);
    cr_assert_neq(access(at(rel), F_OK), 0);
}

Test(image_gc, old_temp_dirs_and_trash_go_young_ones_stay)
{
    put("images/tmp.old111/layout/x", "x", 0644);
    put("images/tmp.new222/layout/x", "x", 0644);
    put("images/trash.abc/0000/x", "x", 0644);
    put("images/rootfs/notahex/x", "x", 0644);
    struct timespec ts[2] = {{.tv_sec = time(NULL) - 3600}, {.tv_sec = time(NULL) - 3600}};
    cr_assert_eq(utimensat(AT_FDCWD, at("images/tmp.old111"), ts, 0), 0);
    wm_config_t cfg = gc_cfg(1);
    uint64_t removed = 0;
    cr_assert_eq(wm_image_gc(&cfg, NULL, 0, NULL, 0, &removed), 0);
    cr_assert_neq(access(at("images/tmp.old111"), F_OK), 0);
    cr_assert_neq(access(at("images/trash.abc"), F_OK), 0);
    cr_assert_eq(access(at("images/tmp.new222/layout/x"), F_OK), 0);
    cr_assert_eq(access(at("images/rootfs/notahex/x"), F_OK), 0); /* not ours: left alone */
}

/* ---- ensure, with a real umoci over layouts built here ---- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

typedef struct {
    char layout[256];
    char manifest[80];
    char *blobs[8];
    char blob_text[8][72]; /* what blobs point at */
    size_t n_blobs;
    uint64_t manifest_size;
    int calls;
    const char *corrupt; /* this hex gets other bytes */
    wm_config_t *gc_cfg; /* set: each fetch ages the temp dir by an hour, then runs gc */
    int gc_runs;
} src_t;

/* A gc in the middle of an unpack: its temp dir, made to look an hour old, stays. */
static void gc_during_fetch(src_t *s)
{
    char cmd[PATH_MAX];
    snprintf(cmd, sizeof(cmd), "touch -d '1 hour ago' %s/images/tmp.*", tmpdir);
    cr_assert_eq(system(cmd), 0);
    uint64_t removed;
    cr_assert_eq(wm_image_gc(s->gc_cfg, NULL, 0, NULL, 0, &removed), 0);
    snprintf(cmd, sizeof(cmd), "test -d %s/images/tmp.*/layout", tmpdir);
    cr_assert_eq(system(cmd), 0, "gc removed the temp dir of an unpack in progress");
    s->gc_runs++;
}

static int copy_fetch(void *ud, const char *hex, const char *path, char *err, size_t errcap)
{
    src_t *s = ud;
    s->calls++;
    if (s->gc_cfg)
        gc_during_fetch(s);
    if (s->corrupt && strcmp(hex, s->corrupt) == 0)
        return sh("echo tampered > %s", path) == 0 ? 0 : -1;
    if (sh("cp %s/blobs/sha256/%s %s", s->layout, hex, path) != 0) {
        snprintf(err, errcap, "no blob %s", hex);
        return -1;
    }
    return 0;
}

/* The image tagged t in s->layout: its manifest digest and size, and the manifest's
 * digests in order (config first, then the layers bottom first) as faasctl lists them. */
static void describe(src_t *s)
{
    char path[PATH_MAX], buf[8192];
    snprintf(path, sizeof(path), "%s/index.json", s->layout);
    FILE *f = fopen(path, "r");
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *d = strstr(buf, "sha256:");
    cr_assert_not_null(d);
    snprintf(s->manifest, sizeof(s->manifest), "%.71s", d);
    s->manifest_size = strtoull(strstr(buf, "\"size\":") + 7, NULL, 10);
    snprintf(path, sizeof(path), "%s/blobs/sha256/%s", s->layout, s->manifest + 7);
    f = fopen(path, "r");
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    cr_assert_eq(n, s->manifest_size);
    s->n_blobs = 0;
    for (char *p = buf; (p = strstr(p, "sha256:")) != NULL && s->n_blobs < 8; p += 71) {
        snprintf(s->blob_text[s->n_blobs], sizeof(s->blob_text[0]), "%.71s", p);
        s->blobs[s->n_blobs] = s->blob_text[s->n_blobs];
        s->n_blobs++;
    }
}

static void spec_of(src_t *s, Faas__ImageSpec *img)
{
    faas__image_spec__init(img);
    img->ref = "test:t";
    img->manifest_digest = s->manifest;
    img->manifest_size = s->manifest_size;
    img->blobs = s->blobs;
    img->n_blobs = s->n_blobs;
}

/* Two layers over an empty image: busybox with sh and ls links, /etc/gone, /etc/kept,
 * /etc/passwd and a block device /etc/disk; then a whiteout of /etc/gone. */
static void build_image(src_t *s)
{
    if (geteuid() != 0)
        cr_skip_test("umoci unpack with an id map needs root");
    if (sh("command -v umoci >/dev/null && test -x /bin/busybox") != 0)
        cr_skip_test("umoci or busybox-static is not installed");
    snprintf(s->layout, sizeof(s->layout), "%s/layout", tmpdir);
    put("src/bin/busybox", "", 0755);
    cr_assert_eq(sh("cp /bin/busybox %s/src/bin/busybox", tmpdir), 0);
    cr_assert_eq(symlink("busybox", at("src/bin/sh")), 0);
    cr_assert_eq(symlink("/bin/busybox", at("src/bin/ls")), 0);
    put("src/etc/gone", "lower\n", 0644);
    cr_assert_eq(mknod(at("src/etc/disk"), S_IFBLK | 0666, makedev(8, 0)), 0);
    put("src/etc/kept", "kept\n", 0600);
    put("src/etc/passwd", "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n", 0644);
    cr_assert_eq(sh("cd %s && umoci init --layout layout && umoci new --image layout:t && "
                    "umoci insert --image layout:t src/bin /bin && umoci insert --image layout:t src/etc /etc && "
                    "umoci insert --image layout:t --whiteout /etc/gone",
                    tmpdir),
                 0);
    describe(s);
    cr_assert_eq(s->n_blobs, 4); /* config + 3 layers */
}

/* the suite's bound covers its fixtures too (tests/unit/watchdog.h) */
static void setup_bounded(void)
{
    UNIT_WATCHDOG(60);
    setup();
}

TestSuite(image_ensure, .init = setup_bounded, .fini = cleanup);

Test(image_ensure, unpacks_with_whiteouts_and_shifted_ids_then_serves_from_cache)
{
    src_t s = {0};
    build_image(&s);
    Faas__ImageSpec img;
    spec_of(&s, &img);
    wm_config_t cfg = gc_cfg(1ull << 30);
    wm_image_times_t t;
    char err[512] = "", root[512], p[PATH_MAX];
    cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(s.calls, 5); /* the manifest and the four blobs */
    cr_assert_eq(wm_image_rootfs(&cfg, &img, root, sizeof(root)), 0);
    snprintf(p, sizeof(p), "%s/images/rootfs/%s", tmpdir, s.manifest + 7);
    cr_assert_str_eq(root, p);

    struct stat st;
    snprintf(p, sizeof(p), "%s/etc/kept", root);
    cr_assert_eq(lstat(p, &st), 0);
    cr_assert_eq(st.st_uid, 1000000000u);
    cr_assert_eq(st.st_gid, 1000000000u);
    cr_assert_eq(st.st_mode & 0777, 0600);
    snprintf(p, sizeof(p), "%s/etc/gone", root);
    cr_assert_neq(lstat(p, &st), 0, "the whiteout did not hide /etc/gone");
    snprintf(p, sizeof(p), "%s/etc/disk", root);
    cr_assert_neq(lstat(p, &st), 0, "a device node of the image is in the cache");
    cr_assert_eq(lstat(root, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0755);
    cr_assert_eq(st.st_uid, 1000000000u);
    /* every entry is an image id, none a host user's */
    cr_assert_neq(sh("find %s ! -uid 1000000000 | grep -q .", root), 0);
    snprintf(p, sizeof(p), "%s.size", root);
    char num[32] = "";
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(num, sizeof(num), f));
    fclose(f);
    cr_assert_gt(strtoull(num, NULL, 10), 500000, "busybox alone is ~1 MB: %s", num);
    /* nothing left in the temp area */
    cr_assert_neq(sh("ls %s/images | grep -q tmp", tmpdir), 0);

    /* resolve against the real unpacked tree: sh along PATH through busybox's links */
    Faas__FunctionSpec spec;
    faas__function_spec__init(&spec);
    spec.image = &img;
    char *cmd[] = {"sh", "-c", "true"};
    spec.command = cmd;
    spec.n_command = 3;
    img.user = "web";
    wm_image_run_t r;
    cr_assert_eq(wm_image_resolve(root, &spec, &r, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(r.exe, "/bin/sh");
    cr_assert_eq(r.uid, 33);
    wm_image_run_free(&r);

    /* cached: nothing fetched, the mtime is the LRU clock */
    struct timespec old[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
    cr_assert_eq(utimensat(AT_FDCWD, root, old, 0), 0);
    s.calls = 0;
    cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(s.calls, 0);
    cr_assert_eq(t.fetch_us + t.unpack_us, 0);
    cr_assert_eq(stat(root, &st), 0);
    cr_assert_gt(st.st_mtime, 1000);

    /* and gc removes it, as root, ids and all */
    uint64_t removed = 0;
    cr_assert_eq(wm_image_gc(&cfg, NULL, 0, NULL, 0, &removed), 0);
    cr_assert_gt(removed, 500000);
    cr_assert_neq(access(root, F_OK), 0);
}

Test(image_ensure, gc_leaves_an_unpack_in_progress_alone)
{
    src_t s = {0};
    build_image(&s);
    Faas__ImageSpec img;
    spec_of(&s, &img);
    wm_config_t cfg = gc_cfg(1ull << 30);
    s.gc_cfg = &cfg;
    wm_image_times_t t;
    char err[512] = "", root[512];
    cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(s.gc_runs, 5);
    wm_image_rootfs(&cfg, &img, root, sizeof(root));
    cr_assert_eq(access(root, F_OK), 0);
    /* and once it is over, an hour-old temp dir is a dead unpack's: it goes */
    put("images/tmp.dead00/layout/x", "x", 0644);
    cr_assert_eq(sh("touch -d '1 hour ago' %s/images/tmp.dead00", tmpdir), 0);
    uint64_t removed;
    const char *needed[] = {s.manifest + 7};
    cr_assert_eq(wm_image_gc(&cfg, needed, 1, NULL, 0, &removed), 0);
    cr_assert_neq(access(at("images/tmp.dead00"), F_OK), 0);
    cr_assert_eq(access(root, F_OK), 0);
}

Test(image_ensure, a_blob_that_does_not_match_its_digest)
{
    src_t s = {0};
    build_image(&s);
    s.corrupt = s.blobs[2] + 7;
    Faas__ImageSpec img;
    spec_of(&s, &img);
    wm_config_t cfg = gc_cfg(1ull << 30);
    wm_image_times_t t;
    char err[512] = "", want[512], root[PATH_MAX];
    cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "blob %s of image test:t does not match its digest", s.blobs[2]);
    cr_assert_str_eq(err, want);
    wm_image_rootfs(&cfg, &img, root, sizeof(root));
    cr_assert_neq(access(root, F_OK), 0);
    cr_assert_neq(sh("ls %s/images | grep -q tmp", tmpdir), 0);
}

Test(image_ensure, umoci_failures_say_why_without_temp_paths)
{
    src_t s = {0};
    build_image(&s);
    Faas__ImageSpec img;
    spec_of(&s, &img);
    img.n_blobs = 3; /* the top layer is not fetched: umoci cannot open it */
    wm_config_t cfg = gc_cfg(1ull << 30);
    wm_image_times_t t;
    char err[512] = "";
    cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), -1);
    cr_assert(strncmp(err, "unpacking image test:t failed: ", 31) == 0, "%s", err);
    cr_assert(strstr(err, s.blobs[3] + 7) != NULL, "%s", err);
    cr_assert_null(strstr(err, "tmp."), "%s", err);
    cr_assert_null(strstr(err, tmpdir), "%s", err);
    cr_assert_null(strchr(err, '\n'));
}

Test(image_ensure, a_manifest_size_unlike_the_deployed_one)
{
    src_t s = {0};
    build_image(&s);
    Faas__ImageSpec img;
    spec_of(&s, &img);
    img.manifest_size++;
    wm_config_t cfg = gc_cfg(1ull << 30);
    wm_image_times_t t;
    char err[512] = "";
    cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), -1);
    cr_assert(strstr(err, "the manifest of image test:t is not") != NULL, "%s", err);
}

Test(image_ensure, without_umoci)
{
    char *blobs[] = {"sha256:1111111111111111111111111111111111111111111111111111111111111111"};
    Faas__ImageSpec img;
    faas__image_spec__init(&img);
    img.ref = "x";
    img.manifest_digest = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    img.blobs = blobs;
    img.n_blobs = 1;
    wm_config_t cfg = gc_cfg(1ull << 30);
    snprintf(cfg.umoci, sizeof(cfg.umoci), "/nonexistent/umoci");
    src_t s = {0};
    wm_image_times_t t;
    char err[512] = "";
    cr_assert_eq(wm_image_umoci_ok(&cfg), 0);
    cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "umoci is not installed on this worker");
    cr_assert_eq(s.calls, 0);
}

Test(image_ensure, digests_that_are_not_sha256_hex_never_reach_a_path)
{
    const char *bad[] = {"sha256:../../etc", "md5:1111",
                         "sha256:1111111111111111111111111111111111111111111111111111111111111111/x",
                         "sha256:AAAA111111111111111111111111111111111111111111111111111111111111"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *blobs[] = {"sha256:1111111111111111111111111111111111111111111111111111111111111111", (char *)bad[i]};
        Faas__ImageSpec img;
        faas__image_spec__init(&img);
        img.ref = "x";
        img.manifest_digest = (char *)bad[i];
        img.blobs = blobs;
        img.n_blobs = 2;
        wm_config_t cfg = gc_cfg(1ull << 30);
        src_t s = {0};
        wm_image_times_t t;
        char err[512] = "", root[PATH_MAX];
        cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), -1);
        cr_assert_str_eq(err, "image x has no valid manifest digest");
        cr_assert_eq(wm_image_rootfs(&cfg, &img, root, sizeof(root)), -1);
        img.manifest_digest = blobs[0];
        cr_assert_eq(wm_image_ensure_with(&cfg, &img, copy_fetch, &s, &t, err, sizeof(err)), -1);
        cr_assert_str_eq(err, "image x has an invalid blob digest");
        cr_assert_eq(s.calls, 0);
    }
}

/* ---- flags (config.c) ---- */

static int parse_flags(wm_config_t *c, const char **err, const char *a, const char *b)
{
    char *argv[] = {"faas-workermgr", (char *)a, (char *)b, NULL};
    return wm_config_parse(c, a ? 3 : 1, argv, err);
}

Test(image_flags, defaults_and_values)
{
    wm_config_t c;
    const char *err = NULL;
    cr_assert_eq(parse_flags(&c, &err, NULL, NULL), 0);
    cr_assert_str_eq(c.umoci, "umoci");
    cr_assert_eq(c.image_cache_bytes, 10ull << 30);
    cr_assert_eq(c.image_id_base, 1000000000u);
    cr_assert_eq(parse_flags(&c, &err, "--umoci", "/opt/umoci"), 0, "%s", err);
    cr_assert_str_eq(c.umoci, "/opt/umoci");
    cr_assert_eq(parse_flags(&c, &err, "--umoci", "bin/umoci"), 0, "%s", err);
    cr_assert_eq(c.umoci[0], '/'); /* made absolute like --agent */
    cr_assert_eq(parse_flags(&c, &err, "--image-cache-bytes", "1048576"), 0, "%s", err);
    cr_assert_eq(c.image_cache_bytes, 1048576);
    cr_assert_eq(parse_flags(&c, &err, "--image-cache-bytes", "1099511627776"), 0, "%s", err);
    cr_assert_eq(c.image_cache_bytes, 1ull << 40);
    cr_assert_eq(parse_flags(&c, &err, "--image-id-base", "65536"), 0, "%s", err);
    cr_assert_eq(c.image_id_base, 65536);
    cr_assert_eq(parse_flags(&c, &err, "--image-id-base", "4294901758"), 0, "%s", err);
    cr_assert_eq(c.image_id_base, 4294901758u);
}

Test(image_flags, bad_values)
{
    wm_config_t c;
    const char *err = NULL;
    const char *bad[][2] = {{"--image-id-base", "65535"},       {"--image-id-base", "4294901759"},
                            {"--image-id-base", "-1"},          {"--image-id-base", "x"},
                            {"--image-cache-bytes", "1048575"}, {"--image-cache-bytes", "-5"},
                            {"--image-cache-bytes", "1e9"},     {"--umoci", ""}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        cr_assert_eq(parse_flags(&c, &err, bad[i][0], bad[i][1]), -1, "%s %s", bad[i][0], bad[i][1]);
        cr_assert_not_null(err);
    }
}

/* ---- ensure through a real faas-discovery: UploadCode in, FetchCode out ---- */

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "common/auth.h"
#include "common/rpc.h"

static pid_t disc_pid;

static void stop_discovery(void)
{
    if (disc_pid > 0) {
        kill(disc_pid, SIGTERM);
        waitpid(disc_pid, NULL, 0);
        disc_pid = 0;
    }
    cleanup();
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Starts build/faas-discovery (FAAS_BUILD, else ./build) on a free port with its state
 * in tmpdir/disc; waits (polling, bounded) for it to listen; configures the rpc client
 * with the token it made. Writes its address into addr. */
static void start_discovery(char *addr, size_t cap)
{
    char bin[PATH_MAX], state[256], listen[64], tokenf[PATH_MAX], err[256];
    const char *b = getenv("FAAS_BUILD");
    snprintf(bin, sizeof(bin), "%s/faas-discovery", b ? b : "build");
    if (access(bin, X_OK) != 0)
        cr_skip_test("%s is not built", bin);
    snprintf(state, sizeof(state), "%s/disc", tmpdir);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", free_port());
    disc_pid = fork();
    cr_assert_geq(disc_pid, 0);
    if (disc_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        execl(bin, bin, "--listen", listen, "--state-dir", state, "--metrics-listen", "off", (char *)NULL);
        _exit(127);
    }
    snprintf(tokenf, sizeof(tokenf), "%s/token", state);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sa.sin_port = htons((uint16_t)atoi(strchr(listen, ':') + 1));
    int up = 0;
    for (int i = 0; i < 1000 && !up; i++) { /* 10 s at most */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        up = access(tokenf, R_OK) == 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (!up) {
            cr_assert_eq(waitpid(disc_pid, NULL, WNOHANG), 0, "faas-discovery exited");
            usleep(10000);
        }
    }
    cr_assert(up, "faas-discovery did not listen within 10 s");
    static faas_token_t tok;
    cr_assert_eq(faas_token_read_file(tokenf, &tok, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(faas_rpc_client_configure(&tok, NULL, err, sizeof(err)), 0, "%s", err);
    snprintf(addr, cap, "%s", listen);
}

typedef struct {
    uint8_t *packed;
    size_t len;
    int sent;
} one_chunk_t;

static int next_chunk(void *ud, const uint8_t **msg, size_t *len)
{
    one_chunk_t *c = ud;
    if (c->sent++)
        return 0;
    *msg = c->packed;
    *len = c->len;
    return 1;
}

/* Uploads the layout's blob hex as one artifact and checks discovery names it so. */
static void upload(const char *disc, const char *layout, const char *hex)
{
    char path[PATH_MAX], err[256] = "";
    snprintf(path, sizeof(path), "%s/blobs/sha256/%s", layout, hex);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    static uint8_t data[4 << 20];
    size_t n = fread(data, 1, sizeof(data), f);
    fclose(f);
    Faas__CodeChunk chunk = FAAS__CODE_CHUNK__INIT;
    chunk.data.data = data;
    chunk.data.len = n;
    one_chunk_t c = {.packed = faas_pb_pack(&chunk.base, &c.len)};
    faas_rpc_channel_t *ch = faas_rpc_channel_open(disc);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int rc = faas_rpc_client_stream(ch, "/faas.Discovery/UploadCode", next_chunk, &c, 10000, &resp, &rlen, err,
                                    sizeof(err));
    faas_rpc_channel_close(ch);
    free(c.packed);
    cr_assert_eq(rc, 0, "UploadCode: %s", err);
    Faas__CodeRef *ref = faas__code_ref__unpack(NULL, rlen, resp);
    cr_assert_not_null(ref);
    cr_assert_str_eq(ref->sha256, hex);
    faas__code_ref__free_unpacked(ref, NULL);
    free(resp);
}

Test(image_discovery, ensure_fetches_from_a_real_discovery, .init = setup, .fini = stop_discovery)
{
    UNIT_WATCHDOG(60);
    src_t s = {0};
    build_image(&s);
    char disc[64];
    start_discovery(disc, sizeof(disc));
    upload(disc, s.layout, s.manifest + 7);
    for (size_t i = 0; i < s.n_blobs; i++)
        upload(disc, s.layout, s.blobs[i] + 7);
    Faas__ImageSpec img;
    spec_of(&s, &img);
    wm_config_t cfg = gc_cfg(1ull << 30);
    snprintf(cfg.discovery, sizeof(cfg.discovery), "%s", disc);
    wm_image_times_t t;
    char err[512] = "", root[512], p[PATH_MAX];
    cr_assert_eq(wm_image_ensure(&cfg, &img, &t, err, sizeof(err)), 0, "%s", err);
    cr_assert_gt(t.fetch_us, 0);
    cr_assert_gt(t.unpack_us, 0);
    wm_image_rootfs(&cfg, &img, root, sizeof(root));
    snprintf(p, sizeof(p), "%s/bin/busybox", root);
    cr_assert_eq(access(p, X_OK), 0);
    cr_log_info("fetch %llu us, unpack %llu us", (unsigned long long)t.fetch_us, (unsigned long long)t.unpack_us);

    /* a layer discovery never got */
    char missing[72] = "sha256:";
    memset(missing + 7, 'a', 64);
    missing[71] = '\0';
    char *blobs[8];
    memcpy(blobs, s.blobs, sizeof(blobs));
    blobs[s.n_blobs] = missing;
    img.blobs = blobs;
    img.n_blobs = s.n_blobs + 1;
    img.manifest_digest = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    cr_assert_eq(wm_image_ensure(&cfg, &img, &t, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "could not fetch image blob bbbbbbbbbbbb from discovery (no such artifact)");
    img.manifest_digest = s.manifest;
    cr_assert_eq(wm_image_ensure(&cfg, &img, &t, err, sizeof(err)), 0, "cached: %s", err);
}
