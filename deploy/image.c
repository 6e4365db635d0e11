/* deploy/image.c - the I/O half of faasctl's image reader (deploy/image.h): finds the
 * image (layout directory, OCI archive, docker save archive), extracts archives with
 * GNU tar into a private temporary directory, and checks every blob's size and sha256
 * before faasctl uploads anything, so a bad image fails at deploy with its name and
 * not later as a cold start. Blobs are hashed as they are read, never slurped (layers
 * can be large); only JSON (bounded by CTL_IMAGE_MAX_JSON) is held in memory. */
#include "deploy/image.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { READ_CHUNK = 256 * 1024 };

/* ---- hashing -------------------------------------------------------------------- */

static void to_hex(const unsigned char *md, char hex[65])
{
    static const char x[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++)
        hex[2 * i] = x[md[i] >> 4], hex[2 * i + 1] = x[md[i] & 15];
    hex[64] = '\0';
}

/* sha256 of fd's contents from where it is; *size its length. 0 or -1 (errno). */
static int hash_fd(int fd, char hex[65], uint64_t *size)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(READ_CHUNK), md[32];
    int rc = -1;
    *size = 0;
    if (ctx == NULL || buf == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    for (;;) {
        ssize_t r = read(fd, buf, READ_CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            goto out;
        if (r == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)r);
        *size += (uint64_t)r;
    }
    if (EVP_DigestFinal_ex(ctx, md, NULL) != 1)
        goto out;
    to_hex(md, hex);
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}

static void hash_mem(const void *p, size_t n, char hex[65])
{
    unsigned char md[32];
    EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
    to_hex(md, hex);
}

/* ---- files ------------------------------------------------------------------------- */

/* A regular file of at most max bytes into memory (NUL-terminated). 0, -1 (errno), or -2 too large. */
static int read_file(const char *path, size_t max, uint8_t **out, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *out = NULL;
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = errno ? errno : EINVAL;
        return -1;
    }
    if ((uint64_t)st.st_size > max)
        return close(fd), -2;
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t n = 0;
    while (buf != NULL && n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (buf == NULL || n != (size_t)st.st_size) {
        free(buf);
        errno = EIO;
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static char *path_join(const char *a, const char *b)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", a, b) < 0 ? NULL : p;
}

/* A blob of the layout: present, of the descriptor's size and sha256. With out, its
 * bytes (the descriptor's size at most CTL_IMAGE_MAX_JSON) are returned too. */
static int check_blob(const ctl_image_t *img, const char *root, const ctl_desc_t *d, char **path_out, uint8_t **out,
                      size_t *out_len, char *err, size_t errcap)
{
    char hex[65], *path = path_join(root, "blobs/sha256/");
    uint64_t size = 0;
    int rc = -1, fd = -1;
    char *full = NULL;
    if (path == NULL || asprintf(&full, "%s%s", path, d->digest + 7) < 0)
        goto oom;
    if (out != NULL && d->size > CTL_IMAGE_MAX_JSON) {
        snprintf(err, errcap, "image %s: blob %s is %llu bytes, more than the %u allowed for JSON", img->path,
                 d->digest, (unsigned long long)d->size, CTL_IMAGE_MAX_JSON);
        goto out;
    }
    struct stat st;
    if ((fd = open(full, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errcap, "image %s: blob %s is missing (%s)", img->path, d->digest,
                 fd < 0 ? strerror(errno) : "not a regular file");
        goto out;
    }
    if ((uint64_t)st.st_size != d->size) {
        snprintf(err, errcap, "image %s: blob %s is %llu bytes, its descriptor says %llu (size mismatch)", img->path,
                 d->digest, (unsigned long long)st.st_size, (unsigned long long)d->size);
        goto out;
    }
    if (out != NULL) {
        close(fd), fd = -1;
        if (read_file(full, CTL_IMAGE_MAX_JSON, out, out_len) != 0) {
            snprintf(err, errcap, "image %s: cannot read blob %s: %s", img->path, d->digest, strerror(errno));
            goto out;
        }
        hash_mem(*out, *out_len, hex);
        size = *out_len;
    } else if (hash_fd(fd, hex, &size) != 0) {
        snprintf(err, errcap, "image %s: cannot read blob %s: %s", img->path, d->digest, strerror(errno));
        goto out;
    }
    if (size != d->size || strcmp(hex, d->digest + 7) != 0) {
        snprintf(err, errcap, "image %s: blob %s does not match its digest (its sha256 is %s)", img->path, d->digest,
                 hex);
        goto out;
    }
    if (path_out != NULL) {
        *path_out = full;
        full = NULL;
    }
    rc = 0;
    goto out;
oom:
    snprintf(err, errcap, "out of memory");
out:
    if (rc != 0 && out != NULL) {
        free(*out);
        *out = NULL;
    }
    if (fd >= 0)
        close(fd);
    free(full);
    free(path);
    return rc;
}

/* ---- archives ------------------------------------------------------------------------ */

/* GNU tar -x of path into dir; it detects gzip itself. 0 if tar succeeded. */
static int untar(const char *path, const char *dir)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int st = 0;
    char *argv[] = {"tar",       "-x", "--no-same-owner", "--no-same-permissions", "-f", (char *)path, "-C",
                    (char *)dir, NULL};
    posix_spawn_file_actions_init(&fa);
    /* its complaints ("Unexpected EOF") are summed up in our one line */
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&pid, "tar", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return errno = rc, -2;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -2;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

/* tar may extract directories without write permission: make them removable first. */
static int chmod_dir(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag == FTW_D && !S_ISLNK(sb->st_mode))
        chmod(p, 0700);
    return 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, chmod_dir, 16, FTW_PHYS);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- OCI layouts ------------------------------------------------------------------- */

static int is_index_type(const char *mt)
{
    return strcmp(mt, CTL_MT_OCI_INDEX) == 0 || strcmp(mt, CTL_MT_DOCKER_LIST) == 0;
}

static int is_manifest_type(const char *mt)
{
    return strcmp(mt, CTL_MT_OCI_MANIFEST) == 0 || strcmp(mt, CTL_MT_DOCKER_MANIFEST) == 0;
}

/* The manifest descriptor from index.json, following one nested index. */
static int oci_choose(ctl_image_t *img, const char *root, ctl_desc_t *out, char *err, size_t errcap)
{
    char e[512];
    uint8_t *buf = NULL;
    size_t len = 0, n = 0, idx = 0;
    ctl_desc_t *ds = NULL;
    char *ip = path_join(root, "index.json");
    int rc = ip == NULL ? -1 : read_file(ip, CTL_IMAGE_MAX_JSON, &buf, &len);
    free(ip);
    if (rc != 0) {
        snprintf(err, errcap, "image %s: %s index.json", img->path, rc == -2 ? "too large" : "cannot read");
        return -1;
    }
    for (int depth = 0;; depth++) {
        rc = ctl_image_parse_index((char *)buf, len, &ds, &n, e, sizeof(e));
        if (rc == 0)
            rc = ctl_image_pick(ds, n, depth == 0 ? img->tag : NULL, &idx, e, sizeof(e));
        free(buf);
        buf = NULL;
        if (rc != 0) {
            snprintf(err, errcap, "image %s: %s%s", img->path, depth ? "nested index: " : "index.json: ", e);
            break;
        }
        *out = ds[idx];
        free(ds);
        ds = NULL;
        if (!is_index_type(out->media_type))
            break;
        if (depth == 1) {
            snprintf(err, errcap, "image %s: index %s nests an index more than one level deep", img->path, out->digest);
            return -1;
        }
        if ((rc = check_blob(img, root, out, NULL, &buf, &len, err, errcap)) != 0)
            break;
    }
    free(ds);
    if (rc == 0 && !is_manifest_type(out->media_type)) {
        snprintf(err, errcap, "image %s: manifest %s has unsupported media type \"%s\"", img->path, out->digest,
                 out->media_type);
        rc = -1;
    }
    return rc;
}

/* Config and layer media types the platform unpacks; 1 if all already carry OCI names. */
static int check_types(ctl_image_t *img, char *err, size_t errcap)
{
    int oci = strcmp(img->config.media_type, CTL_MT_OCI_CONFIG) == 0;
    if (!oci && strcmp(img->config.media_type, CTL_MT_DOCKER_CONFIG) != 0) {
        snprintf(err, errcap, "image %s: config %s has unsupported media type \"%s\"", img->path, img->config.digest,
                 img->config.media_type);
        return -1;
    }
    for (size_t i = 0; i < img->n_layers; i++) {
        const char *mt = img->layers[i].media_type, *o = ctl_image_layer_oci_type(mt);
        if (o == NULL) {
            snprintf(err, errcap, "image %s: layer %s has unsupported media type \"%s\" (supported: tar, tar+gzip)",
                     img->path, img->layers[i].digest, mt);
            return -1;
        }
        oci &= strcmp(o, mt) == 0;
    }
    return oci;
}

static int parse_config(ctl_image_t *img, const uint8_t *buf, size_t len, char *err, size_t errcap)
{
    char e[256];
    if (ctl_image_parse_config((const char *)buf, len, &img->cfg, e, sizeof(e)) != 0) {
        snprintf(err, errcap, "image %s: config %s: %s", img->path, img->config.digest, e);
        return -1;
    }
    if (img->cfg.has_diff_ids && img->cfg.n_diff_ids != img->n_layers) {
        snprintf(err, errcap, "image %s: config %s lists %zu layers (rootfs.diff_ids), the manifest %zu", img->path,
                 img->config.digest, img->cfg.n_diff_ids, img->n_layers);
        return -1;
    }
    return 0;
}

/* The normalized manifest when the image's own is not OCI-typed throughout. */
static int write_manifest(ctl_image_t *img, char *err, size_t errcap)
{
    char hex[65];
    strcpy(img->config.media_type, CTL_MT_OCI_CONFIG);
    char *m = ctl_image_write_manifest(&img->config, img->layers, img->n_layers, &img->manifest_len);
    if (m == NULL)
        return snprintf(err, errcap, "out of memory"), -1;
    for (size_t i = 0; i < img->n_layers; i++)
        strcpy(img->layers[i].media_type, ctl_image_layer_oci_type(img->layers[i].media_type));
    free(img->manifest);
    img->manifest = (uint8_t *)m;
    img->manifest_written = 1;
    hash_mem(m, img->manifest_len, hex);
    snprintf(img->manifest_digest, sizeof(img->manifest_digest), "sha256:%s", hex);
    return 0;
}

static int open_oci(ctl_image_t *img, const char *root, char *err, size_t errcap)
{
    ctl_desc_t md;
    char mt[128], e[512];
    uint8_t *cbuf = NULL;
    size_t clen = 0;
    if (oci_choose(img, root, &md, err, errcap) != 0 ||
        check_blob(img, root, &md, NULL, &img->manifest, &img->manifest_len, err, errcap) != 0)
        return -1;
    memcpy(img->manifest_digest, md.digest, sizeof(md.digest));
    if (ctl_image_parse_manifest((char *)img->manifest, img->manifest_len, mt, sizeof(mt), &img->config, &img->layers,
                                 &img->n_layers, e, sizeof(e)) != 0) {
        snprintf(err, errcap, "image %s: manifest %s: %s", img->path, md.digest, e);
        return -1;
    }
    if (mt[0] != '\0' && strcmp(mt, md.media_type) != 0 && !is_manifest_type(mt)) {
        snprintf(err, errcap, "image %s: manifest %s has unsupported media type \"%s\"", img->path, md.digest, mt);
        return -1;
    }
    int oci = check_types(img, err, errcap);
    if (oci < 0)
        return -1;
    oci &= strcmp(mt[0] ? mt : md.media_type, CTL_MT_OCI_MANIFEST) == 0;
    if (check_blob(img, root, &img->config, &img->config_path, &cbuf, &clen, err, errcap) != 0) {
        if (strstr(err, "is missing") != NULL) /* the wording for it */
            snprintf(err, errcap, "image %s: image has no config (blob %s is missing)", img->path, img->config.digest);
        return -1;
    }
    int rc = parse_config(img, cbuf, clen, err, errcap);
    free(cbuf);
    if (rc != 0)
        return -1;
    if ((img->layer_paths = calloc(img->n_layers + 1, sizeof(char *))) == NULL)
        return snprintf(err, errcap, "out of memory"), -1;
    for (size_t i = 0; i < img->n_layers; i++)
        if (check_blob(img, root, &img->layers[i], &img->layer_paths[i], NULL, NULL, err, errcap) != 0)
            return -1;
    return oci ? 0 : write_manifest(img, err, errcap);
}

/* ---- docker save ----------------------------------------------------------------------- */

/* The hex a docker save path names its content by ("<hex>.json", "blobs/sha256/<hex>"), or NULL. */
static const char *named_hex(const char *p, char out[65])
{
    const char *b = strrchr(p, '/');
    b = b ? b + 1 : p;
    size_t n = strspn(b, "0123456789abcdef");
    if (n != 64 || (b[64] != '\0' && strcmp(b + 64, ".json") != 0))
        return NULL;
    memcpy(out, b, 64);
    out[64] = '\0';
    return out;
}

/* One docker save layer: hashed as it is (docker save layers are tar, so that is also
 * their diff_id), its type sniffed from its first bytes. */
static int docker_layer(ctl_image_t *img, const char *root, size_t i, const char *rel, char *err, size_t errcap)
{
    ctl_desc_t *d = &img->layers[i];
    char hex[65], named[65];
    unsigned char magic[4] = {0};
    int fd;
    struct stat st;
    if ((img->layer_paths[i] = path_join(root, rel)) == NULL)
        return snprintf(err, errcap, "out of memory"), -1;
    if ((fd = open(img->layer_paths[i], O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errcap, "image %s: layer %s is missing", img->path, rel);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ssize_t got = pread(fd, magic, sizeof(magic), 0);
    int rc = hash_fd(fd, hex, &d->size);
    close(fd);
    if (rc != 0 || got < 0)
        return snprintf(err, errcap, "image %s: cannot read layer %s: %s", img->path, rel, strerror(errno)), -1;
    snprintf(d->digest, sizeof(d->digest), "sha256:%s", hex);
    if (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd)
        return snprintf(err, errcap, "image %s: layer %s has unsupported media type \"%s+zstd\"", img->path, rel,
                        CTL_MT_OCI_LAYER),
               -1;
    strcpy(d->media_type, magic[0] == 0x1f && magic[1] == 0x8b ? CTL_MT_OCI_LAYER_GZIP : CTL_MT_OCI_LAYER);
    const char *want = named_hex(rel, named);
    if (want == NULL && img->cfg.has_diff_ids && strcmp(d->media_type, CTL_MT_OCI_LAYER) == 0)
        want = strncmp(img->cfg.diff_ids[i], "sha256:", 7) == 0 ? img->cfg.diff_ids[i] + 7 : img->cfg.diff_ids[i];
    if (want != NULL && strcmp(want, hex) != 0)
        return snprintf(err, errcap, "image %s: blob sha256:%s (layer %s) does not match its digest (its sha256 is %s)",
                        img->path, want, rel, hex),
               -1;
    return 0;
}

static int open_docker(ctl_image_t *img, const char *root, char *err, size_t errcap)
{
    ctl_docker_entry_t de;
    char e[512], hex[65], named[65];
    uint8_t *buf = NULL;
    size_t len = 0;
    char *mp = path_join(root, "manifest.json");
    int rc = mp == NULL ? -1 : read_file(mp, CTL_IMAGE_MAX_JSON, &buf, &len);
    free(mp);
    if (rc != 0)
        return snprintf(err, errcap, "image %s: %s manifest.json", img->path, rc == -2 ? "too large" : "cannot read"),
               -1;
    rc = ctl_image_parse_docker((char *)buf, len, img->tag, &de, e, sizeof(e));
    free(buf);
    buf = NULL;
    if (rc != 0)
        return snprintf(err, errcap, "image %s: %s", img->path, e), -1;
    rc = -1;
    if ((img->config_path = path_join(root, de.config)) == NULL)
        goto out;
    int r = read_file(img->config_path, CTL_IMAGE_MAX_JSON, &buf, &len);
    if (r != 0) {
        snprintf(err, errcap, "image %s: image has no config (%s: %s)", img->path, de.config,
                 r == -2 ? "larger than 4 MiB" : strerror(errno));
        goto out;
    }
    hash_mem(buf, len, hex);
    if (named_hex(de.config, named) != NULL && strcmp(named, hex) != 0) {
        snprintf(err, errcap, "image %s: blob sha256:%s (config %s) does not match its digest (its sha256 is %s)",
                 img->path, named, de.config, hex);
        goto out;
    }
    snprintf(img->config.digest, sizeof(img->config.digest), "sha256:%s", hex);
    strcpy(img->config.media_type, CTL_MT_OCI_CONFIG);
    img->config.size = len;
    img->n_layers = de.n_layers;
    if (parse_config(img, buf, len, err, errcap) != 0)
        goto out;
    if ((img->layers = calloc(de.n_layers + 1, sizeof(*img->layers))) == NULL ||
        (img->layer_paths = calloc(de.n_layers + 1, sizeof(char *))) == NULL) {
        snprintf(err, errcap, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < de.n_layers; i++)
        if (docker_layer(img, root, i, de.layers[i], err, errcap) != 0)
            goto out;
    rc = write_manifest(img, err, errcap);
out:
    if (img->layers == NULL)
        img->n_layers = 0;
    free(buf);
    ctl_image_docker_free(&de);
    return rc;
}

/* ---- the whole ------------------------------------------------------------------------------ */

/* PATH as given if it exists, else the longest existing prefix before a ':' (so a
 * docker "repo:tag" after the path stays whole). */
static int split_ref(ctl_image_t *img, char *err, size_t errcap)
{
    struct stat st;
    const char *r = img->ref, *slash = strrchr(r, '/');
    if (stat(r, &st) == 0)
        return (img->path = strdup(r)) != NULL ? 0 : -1;
    for (const char *c = strchr(slash ? slash : r, ':'); c != NULL; c = strchr(c + 1, ':')) {
        char *p = strndup(r, (size_t)(c - r));
        if (p != NULL && p[0] != '\0' && c[1] != '\0' && stat(p, &st) == 0) {
            img->path = p;
            return (img->tag = strdup(c + 1)) != NULL ? 0 : -1;
        }
        free(p);
    }
    snprintf(err, errcap, "image %s: no such file or directory", r);
    return -1;
}

int ctl_image_open(const char *ref, ctl_image_t *img, char *err, size_t errcap)
{
    struct stat st;
    const char *root;
    memset(img, 0, sizeof(*img));
    if ((img->ref = strdup(ref)) == NULL)
        return snprintf(err, errcap, "out of memory"), -1;
    if (split_ref(img, err, errcap) != 0)
        goto fail;
    if (stat(img->path, &st) != 0 || (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))) {
        snprintf(err, errcap, "image %s: not a directory or an archive", img->path);
        goto fail;
    }
    root = img->path;
    if (S_ISREG(st.st_mode)) {
        const char *t = getenv("TMPDIR");
        snprintf(img->tmpdir, sizeof(img->tmpdir), "%s/faasctl-image.XXXXXX", t && t[0] ? t : "/tmp");
        if (mkdtemp(img->tmpdir) == NULL) {
            snprintf(err, errcap, "image %s: cannot make a temporary directory: %s", img->path, strerror(errno));
            img->tmpdir[0] = '\0';
            goto fail;
        }
        int rc = untar(img->path, img->tmpdir);
        if (rc != 0) {
            if (rc == -2)
                snprintf(err, errcap, "image %s: cannot run tar: %s", img->path, strerror(errno));
            else
                snprintf(err, errcap, "image %s: corrupt or truncated archive", img->path);
            goto fail;
        }
        root = img->tmpdir;
    }
    char *ip = path_join(root, "index.json"), *mp = path_join(root, "manifest.json");
    int has_index = ip != NULL && access(ip, F_OK) == 0, has_docker = mp != NULL && access(mp, F_OK) == 0;
    free(ip);
    free(mp);
    if (!has_index && !has_docker) {
        snprintf(err, errcap,
                 "image %s: no index.json or manifest.json (not an OCI layout, OCI archive or docker save archive)",
                 img->path);
        goto fail;
    }
    /* a newer docker save holds both; its index.json is an OCI layout's */
    if ((has_index ? open_oci(img, root, err, errcap) : open_docker(img, root, err, errcap)) != 0)
        goto fail;
    return 0;
fail:
    ctl_image_close(img);
    return -1;
}

void ctl_image_close(ctl_image_t *img)
{
    if (img->tmpdir[0] != '\0')
        rm_tree(img->tmpdir);
    for (size_t i = 0; img->layer_paths != NULL && i < img->n_layers; i++)
        free(img->layer_paths[i]);
    free(img->layer_paths);
    free(img->layers);
    free(img->config_path);
    free(img->manifest);
    free(img->ref);
    free(img->path);
    free(img->tag);
    ctl_image_config_free(&img->cfg);
    memset(img, 0, sizeof(*img));
}

static int dup_strs(char ***dst, size_t *n, char *const *src, size_t sn)
{
    if (sn == 0)
        return 0;
    if ((*dst = calloc(sn, sizeof(char *))) == NULL)
        return -1;
    for (*n = 0; *n < sn; (*n)++)
        if (((*dst)[*n] = strdup(src[*n])) == NULL)
            return -1;
    return 0;
}

int ctl_image_fill_spec(const ctl_image_t *img, Faas__ImageSpec *s)
{
    const ctl_image_config_t *c = &img->cfg;
    s->ref = strdup(img->ref);
    s->manifest_digest = strdup(img->manifest_digest);
    s->working_dir = strdup(c->working_dir ? c->working_dir : "");
    s->user = strdup(c->user ? c->user : "");
    if (s->ref == NULL || s->manifest_digest == NULL || s->working_dir == NULL || s->user == NULL)
        return -1;
    s->manifest_size = img->manifest_len;
    s->size = img->manifest_len + img->config.size;
    if ((s->blobs = calloc(img->n_layers + 1, sizeof(char *))) == NULL ||
        (s->blobs[s->n_blobs++] = strdup(img->config.digest)) == NULL)
        return -1;
    for (size_t i = 0; i < img->n_layers; i++) {
        if ((s->blobs[s->n_blobs] = strdup(img->layers[i].digest)) == NULL)
            return -1;
        s->n_blobs++;
        s->size += img->layers[i].size;
    }
    if (dup_strs(&s->entrypoint, &s->n_entrypoint, c->entrypoint, c->n_entrypoint) != 0 ||
        dup_strs(&s->cmd, &s->n_cmd, c->cmd, c->n_cmd) != 0 || dup_strs(&s->env, &s->n_env, c->env, c->n_env) != 0)
        return -1;
    return 0;
}
