/* imagerun.c - what a user server runs in an OCI image: argv, env, cwd, ids, exe.
 *
 * Runs on the pod thread at each cold start of an image function, so it stays cheap:
 * a few openat2 calls and a read of the image's /etc/passwd and /etc/group when the user
 * needs them. Every path is looked up with RESOLVE_IN_ROOT below an O_PATH fd of the
 * cached rootfs: the image's symlinks resolve inside it, never on the host. */
#include "worker-manager/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proto/faas.pb-c.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* An /etc/passwd or /etc/group larger than this is refused: the pod thread reads it. */
#define DB_MAX_BYTES (1u << 20)
/* fgetpwent_r/fgetgrent_r need a line and its group's member pointers in one buffer. */
#define LINE_BUF_MIN 4096u
#define LINE_BUF_MAX (8u << 20)

/* ---- paths inside the image ---- */

/* Opens path (as the image sees it) below rootfd; symlinks, ".." and absolute links stay
 * inside the rootfs. */
static int open_in_root(int rootfd, const char *path, int flags)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    while (*path == '/')
        path++;
    return (int)syscall(SYS_openat2, rootfd, *path ? path : ".", &how, sizeof(how));
}

/* An image's /etc file, read whole: glibc's fgetpwent_r asks a file stream for its
 * offset at each line (an lseek each, 60 of them for a usual pair of files), a memory
 * stream answers without a syscall. */
typedef struct {
    FILE *f; /* NULL: the image has no such file */
    char *buf;
} db_t;

static void db_close(db_t *db)
{
    if (db->f)
        fclose(db->f);
    free(db->buf);
    db->f = NULL;
    db->buf = NULL;
}

static int read_all(int fd, char *buf, size_t cap, size_t *len)
{
    *len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0 ? 0 : -1;
        *len += (size_t)n;
        if (*len == cap)
            return 0; /* it grew since fstat: what was there is enough */
    }
}

/* The image's file at path; db->f NULL when it is absent (or empty), -1 with err when it
 * cannot be read. O_NONBLOCK: a FIFO in the image must not hang the pod thread (it is
 * then refused as not a regular file); device nodes never reach the cache (image.c). */
static int open_db(int rootfd, const char *path, db_t *db, const char *ref, char *err, size_t errcap)
{
    struct stat st;
    size_t len = 0;
    db->f = NULL;
    db->buf = NULL;
    int fd = open_in_root(rootfd, path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (fd < 0 && (errno == ENOENT || errno == ENOTDIR))
        return 0;
    if (fd < 0)
        return wm_fmt(err, errcap, "cannot open %s in image %s: %s", path, ref, strerror(errno)), -1;
    int rc = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > DB_MAX_BYTES) {
        wm_fmt(err, errcap, "%s in image %s is not a regular file of at most 1 MiB", path, ref);
        goto out;
    }
    if (st.st_size > 0 &&
        ((db->buf = malloc((size_t)st.st_size)) == NULL || read_all(fd, db->buf, (size_t)st.st_size, &len) != 0 ||
         (len > 0 && (db->f = fmemopen(db->buf, len, "r")) == NULL))) {
        wm_fmt(err, errcap, "cannot read %s in image %s: %s", path, ref, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    close(fd);
    if (db->f == NULL)
        db_close(db);
    return rc;
}

/* 1 if path (as the image sees it) is a regular file with an x bit, following the
 * image's own symlinks. */
static int is_exe(int rootfd, const char *path)
{
    struct stat st;
    int fd = open_in_root(rootfd, path, O_PATH);
    if (fd < 0)
        return 0;
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
    close(fd);
    return ok;
}

/* ---- users and groups (Docker's and runc's rules) ---- */

typedef struct {
    char *buf;
    size_t cap;
} linebuf_t;

static int grow(linebuf_t *b)
{
    size_t cap = b->cap ? b->cap * 2 : LINE_BUF_MIN;
    if (cap > LINE_BUF_MAX)
        return -1;
    char *nb = realloc(b->buf, cap);
    if (nb == NULL)
        return -1;
    b->buf = nb;
    b->cap = cap;
    return 0;
}

/* NIS compat lines ("+name", "-name", "+") name no user of the image, and glibc leaves
 * their empty fields NULL. */
static int nis_line(const char *name)
{
    return name == NULL || name[0] == '+' || name[0] == '-';
}

/* Next entry of a passwd stream: 1, 0 at its end, -1 on a line longer than the buffer
 * may grow. Malformed lines are skipped (glibc's parser), and so are NIS lines. */
static int next_pw(FILE *f, linebuf_t *b, struct passwd *pw)
{
    struct passwd *res;
    for (;;) {
        if (b->cap == 0 && grow(b) != 0)
            return -1;
        int rc = fgetpwent_r(f, pw, b->buf, b->cap, &res);
        if (rc == 0 && nis_line(pw->pw_name))
            continue;
        if (rc == 0) {
            if (pw->pw_dir == NULL)
                pw->pw_dir = "";
            return 1;
        }
        if (rc != ERANGE)
            return 0;
        if (grow(b) != 0) /* glibc seeked back to the line's start */
            return -1;
    }
}

static int next_gr(FILE *f, linebuf_t *b, struct group *gr)
{
    struct group *res;
    for (;;) {
        if (b->cap == 0 && grow(b) != 0)
            return -1;
        int rc = fgetgrent_r(f, gr, b->buf, b->cap, &res);
        if (rc == 0 && nis_line(gr->gr_name))
            continue;
        if (rc == 0)
            return 1;
        if (rc != ERANGE)
            return 0;
        if (grow(b) != 0)
            return -1;
    }
}

/* A decimal id into *v (saturated: range-checked by the caller); 0, or -1 if s is a name. */
static int parse_id(const char *s, uint64_t *v)
{
    size_t n = strlen(s);
    if (n == 0 || strspn(s, "0123456789") != n)
        return -1;
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v = *v > UINT32_MAX ? *v : *v * 10 + (uint64_t)(s[i] - '0');
    return 0;
}

static int add_group(wm_image_ids_t *ids, uint32_t gid)
{
    for (size_t i = 0; i < ids->n_groups; i++)
        if (ids->groups[i] == gid)
            return 0;
    if (ids->n_groups == WM_IMAGE_MAX_GROUPS)
        return -1;
    ids->groups[ids->n_groups++] = gid;
    return 0;
}

/* The user part: by name or uid in passwd; a uid not there is taken with gid 0. */
static int find_user(const char *u, FILE *passwd, linebuf_t *b, wm_image_ids_t *ids, char *name, size_t namecap,
                     const char *ref, char *err, size_t errcap)
{
    uint64_t num = 0;
    int numeric = parse_id(u, &num) == 0;
    struct passwd pw;
    int r = 0;
    while (passwd != NULL && (r = next_pw(passwd, b, &pw)) == 1)
        if (numeric ? pw.pw_uid == num : strcmp(pw.pw_name, u) == 0) {
            ids->uid = pw.pw_uid;
            ids->gid = pw.pw_gid;
            wm_fmt(name, namecap, "%s", pw.pw_name);
            if (pw.pw_dir[0] != '/' || wm_fmt(ids->home, sizeof(ids->home), "%s", pw.pw_dir) != 0)
                snprintf(ids->home, sizeof(ids->home), "/");
            return 0;
        }
    if (r < 0)
        return wm_fmt(err, errcap, "image %s has a line too long in /etc/passwd", ref), -1;
    if (!numeric)
        return wm_fmt(err, errcap, "user %s is not defined in image %s (/etc/passwd)", u, ref), -1;
    if (num > UINT32_MAX)
        return wm_fmt(err, errcap, "user %s of image %s is outside the 65536 ids mapped for images", u, ref), -1;
    ids->uid = (uint32_t)num;
    ids->gid = 0;
    return 0;
}

/* An explicit group: a gid as given, or a name in /etc/group. */
static int find_group(const char *g, FILE *group, linebuf_t *b, wm_image_ids_t *ids, const char *ref, char *err,
                      size_t errcap)
{
    uint64_t num;
    if (parse_id(g, &num) == 0) {
        if (num > UINT32_MAX)
            return wm_fmt(err, errcap, "group %s of image %s is outside the 65536 ids mapped for images", g, ref), -1;
        ids->gid = (uint32_t)num;
        return 0;
    }
    struct group gr;
    int r = 0;
    while (group != NULL && (r = next_gr(group, b, &gr)) == 1)
        if (strcmp(gr.gr_name, g) == 0) {
            ids->gid = gr.gr_gid;
            return 0;
        }
    if (r < 0)
        return wm_fmt(err, errcap, "image %s has a line too long in /etc/group", ref), -1;
    return wm_fmt(err, errcap, "group %s is not defined in image %s (/etc/group)", g, ref), -1;
}

/* The supplementary groups: those whose member list names the user. */
static int find_groups(const char *name, FILE *group, linebuf_t *b, wm_image_ids_t *ids, const char *ref, char *err,
                       size_t errcap)
{
    struct group gr;
    int r = 0;
    while (group != NULL && (r = next_gr(group, b, &gr)) == 1)
        for (char **m = gr.gr_mem; m != NULL && *m != NULL; m++)
            if (strcmp(*m, name) == 0) {
                if (add_group(ids, gr.gr_gid) != 0)
                    return wm_fmt(err, errcap, "user %s is in more than %d groups in image %s", name,
                                  WM_IMAGE_MAX_GROUPS, ref),
                           -1;
                break;
            }
    if (r < 0)
        return wm_fmt(err, errcap, "image %s has a line too long in /etc/group", ref), -1;
    return 0;
}

static int check_range(const wm_image_ids_t *ids, const char *user, const char *ref, char *err, size_t errcap)
{
    int bad = ids->uid >= WM_IMAGE_IDS || ids->gid >= WM_IMAGE_IDS;
    for (size_t i = 0; i < ids->n_groups; i++)
        bad |= ids->groups[i] >= WM_IMAGE_IDS;
    if (bad)
        wm_fmt(err, errcap, "user %s of image %s is outside the %u ids mapped for images", user[0] ? user : "0", ref,
               WM_IMAGE_IDS);
    return bad ? -1 : 0;
}

int wm_image_user(const char *user, FILE *passwd, FILE *group, const char *ref, wm_image_ids_t *ids, char *err,
                  size_t errcap)
{
    char u[256], g[256] = "", name[256] = "";
    memset(ids, 0, sizeof(*ids));
    snprintf(ids->home, sizeof(ids->home), "/");
    if (wm_fmt(u, sizeof(u), "%s", user[0] ? user : "0") != 0)
        return wm_fmt(err, errcap, "user of image %s is too long", ref), -1;
    char *colon = strchr(u, ':');
    if (colon != NULL) { /* "name:" names no group */
        snprintf(g, sizeof(g), "%s", colon + 1);
        *colon = '\0';
    }
    if (u[0] == '\0') /* ":group": root with that group */
        snprintf(u, sizeof(u), "0");
    linebuf_t b = {0};
    int rc = find_user(u, passwd, &b, ids, name, sizeof(name), ref, err, errcap);
    if (rc == 0 && g[0] != '\0')
        rc = find_group(g, group, &b, ids, ref, err, errcap);
    else if (rc == 0 && name[0] != '\0')
        rc = find_groups(name, group, &b, ids, ref, err, errcap);
    free(b.buf);
    return rc == 0 ? check_range(ids, user, ref, err, errcap) : -1;
}

/* ---- argv, env, exe ---- */

static int push(char ***v, size_t *n, const char *s, size_t len)
{
    char **nv = realloc(*v, (*n + 2) * sizeof(char *));
    if (nv == NULL)
        return -1;
    *v = nv;
    if ((nv[*n] = strndup(s, len)) == NULL)
        return -1;
    nv[++*n] = NULL; /* NULL-terminated: execve-ready for tests and the agent alike */
    return 0;
}

static char *kv_dup(const char *k, const char *val)
{
    size_t kl = strlen(k), vl = strlen(val);
    char *s = malloc(kl + vl + 2);
    if (s != NULL) {
        memcpy(s, k, kl);
        s[kl] = '=';
        memcpy(s + kl + 1, val, vl + 1);
    }
    return s;
}

static int push_kv(char ***v, size_t *n, const char *k, const char *val)
{
    char *s = kv_dup(k, val);
    int rc = s != NULL ? push(v, n, s, strlen(s)) : -1;
    free(s);
    return rc;
}

/* The index of the first entry of env whose key is key (len kl), or -1: the one getenv
 * in the user server finds. */
static long env_find(char **env, size_t n, const char *key, size_t kl)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(env[i], key, kl) == 0 && (env[i][kl] == '=' || env[i][kl] == '\0'))
            return (long)i;
    return -1;
}

/* The image's Env, the manifest's env over it by key; PATH and HOME as Docker gives
 * them when neither sets them. */
static int build_env(wm_image_run_t *r, const Faas__ImageSpec *img, const Faas__FunctionSpec *spec, const char *home)
{
    for (size_t i = 0; i < img->n_env; i++)
        if (push(&r->env, &r->envc, img->env[i], strlen(img->env[i])) != 0)
            return -1;
    for (size_t i = 0; i < spec->n_env; i++) {
        const Faas__KeyValue *kv = spec->env[i];
        long at = env_find(r->env, r->envc, kv->key, strlen(kv->key));
        if (at < 0) {
            if (push_kv(&r->env, &r->envc, kv->key, kv->value) != 0)
                return -1;
            continue;
        }
        char *s = kv_dup(kv->key, kv->value);
        if (s == NULL)
            return -1;
        free(r->env[at]);
        r->env[at] = s;
    }
    if (env_find(r->env, r->envc, "PATH", 4) < 0 && push_kv(&r->env, &r->envc, "PATH", DEFAULT_PATH) != 0)
        return -1;
    if (env_find(r->env, r->envc, "HOME", 4) < 0 && push_kv(&r->env, &r->envc, "HOME", home) != 0)
        return -1;
    return 0;
}

/* dir (relative to cwd unless absolute) joined with name into out. */
static int join(char *out, size_t cap, const char *cwd, const char *dir, size_t dl, const char *name)
{
    if (dl == 0) /* an empty PATH element is the working directory (POSIX) */
        return wm_fmt(out, cap, "%s/%s", cwd, name);
    if (dir[0] == '/')
        return wm_fmt(out, cap, "%.*s/%s", (int)dl, dir, name);
    return wm_fmt(out, cap, "%s/%.*s/%s", strcmp(cwd, "/") ? cwd : "", (int)dl, dir, name);
}

/* argv[0] as execve in the image would find it: a path with '/', else along PATH. */
static int find_exe(int rootfd, wm_image_run_t *r, const char *ref, char *err, size_t errcap)
{
    const char *a0 = r->argv[0];
    if (strchr(a0, '/') != NULL) {
        int rc = a0[0] == '/' ? wm_fmt(r->exe, sizeof(r->exe), "%s", a0)
                              : join(r->exe, sizeof(r->exe), r->cwd, "", 0, a0[0] == '.' && a0[1] == '/' ? a0 + 2 : a0);
        if (rc == 0 && is_exe(rootfd, r->exe))
            return 0;
    } else if (a0[0] != '\0') {
        long at = env_find(r->env, r->envc, "PATH", 4);
        const char *p = at >= 0 ? r->env[at] + 5 : DEFAULT_PATH;
        for (;;) {
            size_t dl = strcspn(p, ":");
            if (join(r->exe, sizeof(r->exe), r->cwd, p, dl, a0) == 0 && is_exe(rootfd, r->exe))
                return 0;
            if (p[dl] == '\0')
                break;
            p += dl + 1;
        }
    }
    r->exe[0] = '\0';
    return wm_fmt(err, errcap, "entrypoint %s is not in image %s", a0, ref), -1;
}

static int build_argv(wm_image_run_t *r, const Faas__ImageSpec *img, const Faas__FunctionSpec *spec)
{
    if (spec->n_command > 0) {
        for (size_t i = 0; i < spec->n_command; i++)
            if (push(&r->argv, &r->argc, spec->command[i], strlen(spec->command[i])) != 0)
                return -1;
        return 0;
    }
    for (size_t i = 0; i < img->n_entrypoint; i++)
        if (push(&r->argv, &r->argc, img->entrypoint[i], strlen(img->entrypoint[i])) != 0)
            return -1;
    for (size_t i = 0; i < img->n_cmd; i++)
        if (push(&r->argv, &r->argc, img->cmd[i], strlen(img->cmd[i])) != 0)
            return -1;
    return 0;
}

/* The ids of the image's user, from its own /etc/passwd and /etc/group. */
static int resolve_user(int rootfd, const char *user, const char *ref, wm_image_ids_t *ids, char *err, size_t errcap)
{
    db_t pw, gr = {0};
    int rc = -1;
    if (open_db(rootfd, "/etc/passwd", &pw, ref, err, errcap) != 0 ||
        open_db(rootfd, "/etc/group", &gr, ref, err, errcap) != 0)
        goto out;
    rc = wm_image_user(user, pw.f, gr.f, ref, ids, err, errcap);
out:
    db_close(&pw);
    db_close(&gr);
    return rc;
}

int wm_image_resolve(const char *rootfs, const Faas__FunctionSpec *spec, wm_image_run_t *out, char *err, size_t errcap)
{
    const Faas__ImageSpec *img = spec->image;
    memset(out, 0, sizeof(*out));
    if (img == NULL)
        return wm_fmt(err, errcap, "function %s has no image", spec->name), -1;
    const char *ref = img->ref[0] ? img->ref : img->manifest_digest;
    const char *wd = img->working_dir[0] ? img->working_dir : "/";
    if (wd[0] != '/' || wm_fmt(out->cwd, sizeof(out->cwd), "%s", wd) != 0)
        return wm_fmt(err, errcap, "working directory %s of image %s is not an absolute path", wd, ref), -1;
    int rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return wm_fmt(err, errcap, "image %s is not unpacked on this worker: %s", ref, strerror(errno)), -1;
    /* a cold start is a use: the cache's LRU clock (wm_image_gc) is the rootfs's mtime */
    utimensat(AT_FDCWD, rootfs, NULL, 0);
    wm_image_ids_t ids;
    int rc = -1;
    if (build_argv(out, img, spec) != 0)
        goto nomem;
    if (out->argc == 0) {
        wm_fmt(err, errcap, "image %s has no Entrypoint or Cmd and the manifest no command", ref);
        goto out;
    }
    if (resolve_user(rootfd, img->user, ref, &ids, err, errcap) != 0)
        goto out;
    if (build_env(out, img, spec, ids.home) != 0)
        goto nomem;
    if (find_exe(rootfd, out, ref, err, errcap) != 0)
        goto out;
    out->uid = ids.uid;
    out->gid = ids.gid;
    out->n_groups = ids.n_groups;
    memcpy(out->groups, ids.groups, ids.n_groups * sizeof(ids.groups[0]));
    rc = 0;
    goto out;
nomem:
    wm_fmt(err, errcap, "out of memory resolving image %s", ref);
out:
    close(rootfd);
    if (rc != 0)
        wm_image_run_free(out);
    return rc;
}

void wm_image_run_free(wm_image_run_t *r)
{
    for (size_t i = 0; i < r->argc; i++)
        free(r->argv[i]);
    for (size_t i = 0; i < r->envc; i++)
        free(r->env[i]);
    free(r->argv);
    free(r->env);
    memset(r, 0, sizeof(*r));
}

void wm_image_run_pb(const wm_image_run_t *r, const char *root, Faas__ImageRun *pb)
{
    faas__image_run__init(pb);
    pb->root = (char *)root;
    pb->exe = (char *)r->exe;
    pb->n_argv = r->argc;
    pb->argv = r->argv;
    pb->n_env = r->envc;
    pb->env = r->env;
    pb->cwd = (char *)r->cwd;
    pb->uid = r->uid;
    pb->gid = r->gid;
    pb->n_groups = r->n_groups;
    pb->groups = (uint32_t *)r->groups;
}
