/* deploy/image_json.c - the pure half of faasctl's image reader (deploy/image.h): OCI
 * index, manifest and config JSON and docker save's manifest.json into descriptors and
 * fields, and the normalized OCI manifest back out. Bytes come from the user's files,
 * which may be anything: every read goes through deploy/json.c's bounded scanner, and
 * every count and length is capped. */
#include "deploy/image.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/internal.h"

enum { MAX_STRS = 4096 }; /* items of one Env/Cmd/Entrypoint/diff_ids/RepoTags array */

/* The JSON string v decoded into a fresh C string; NULL if v is not a string. */
static char *json_str(const char *v, size_t vn)
{
    if (vn < 2 || v[0] != '"')
        return NULL;
    char *out = malloc(vn + 1); /* decoding never lengthens: \uXXXX is 6 bytes, at most 3 out */
    if (out != NULL)
        ctl_json_text(v, vn, out, vn + 1);
    return out;
}

/* A member that must be a string, copied into out[cap]; 0 absent or null, 1 found, -1 not a string or too long. */
static int member_str(const char *s, size_t n, const char *key, char *out, size_t cap)
{
    const char *v;
    size_t vn;
    out[0] = '\0';
    if (ctl_json_member(s, n, key, &v, &vn) != 0 || (vn == 4 && memcmp(v, "null", 4) == 0))
        return 0;
    if (vn < 2 || v[0] != '"')
        return -1;
    ctl_json_text(v, vn, out, cap);
    return strlen(out) + 1 >= cap ? -1 : 1;
}

static int json_u64(const char *v, size_t vn, uint64_t *out)
{
    uint64_t x = 0;
    if (vn == 0 || vn > 16) /* 2^53 and then some: no blob is larger */
        return -1;
    for (size_t i = 0; i < vn; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

static void free_strs(char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

/* A JSON array of strings (or null) into a malloc'd vector. */
static int json_strs(const char *v, size_t vn, char ***out, size_t *n)
{
    const char *it;
    size_t in, pos = 0;
    int rc;
    *out = NULL;
    *n = 0;
    if (vn == 4 && memcmp(v, "null", 4) == 0)
        return 0;
    while ((rc = ctl_json_next_item(v, vn, &pos, &it, &in)) == 1) {
        char *x = *n < MAX_STRS ? json_str(it, in) : NULL;
        char **na = x != NULL ? realloc(*out, (*n + 1) * sizeof(char *)) : NULL;
        if (na == NULL) {
            free(x);
            goto fail;
        }
        *out = na;
        na[(*n)++] = x;
    }
    if (rc == 0)
        return 0;
fail:
    free_strs(*out, *n);
    *out = NULL;
    *n = 0;
    return -1;
}

static int valid_sha256(const char *d)
{
    if (strncmp(d, "sha256:", 7) != 0 || strlen(d) != 71)
        return 0;
    for (const char *p = d + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

int ctl_image_parse_desc(const char *s, size_t n, ctl_desc_t *d, char *err, size_t errcap)
{
    const char *v, *ann, *plat;
    size_t vn, an, pn;
    memset(d, 0, sizeof(*d));
    if (ctl_json_dup_key(s, n) != 0)
        return snprintf(err, errcap, "a descriptor is not a JSON object with unique keys"), -1;
    if (member_str(s, n, "mediaType", d->media_type, sizeof(d->media_type)) < 0)
        return snprintf(err, errcap, "a descriptor's mediaType is not a string"), -1;
    char dg[128];
    int got = member_str(s, n, "digest", dg, sizeof(dg));
    if (got == 0)
        return snprintf(err, errcap, "a descriptor has no digest"), -1;
    if (got < 0 || !valid_sha256(dg))
        return snprintf(err, errcap, "digest \"%.80s\" is not sha256:<64 hex> (only sha256 is supported)", dg), -1;
    memcpy(d->digest, dg, 72);
    if (ctl_json_member(s, n, "size", &v, &vn) != 0 || json_u64(v, vn, &d->size) != 0)
        return snprintf(err, errcap, "descriptor %s has no valid size", d->digest), -1;
    if (ctl_json_member(s, n, "annotations", &ann, &an) == 0 &&
        (member_str(ann, an, "org.opencontainers.image.ref.name", d->ref_name, sizeof(d->ref_name)) < 0 ||
         member_str(ann, an, "io.containerd.image.name", d->image_name, sizeof(d->image_name)) < 0))
        return snprintf(err, errcap, "descriptor %s: its ref name is not a string", d->digest), -1;
    if (ctl_json_member(s, n, "platform", &plat, &pn) == 0 &&
        (member_str(plat, pn, "os", d->os, sizeof(d->os)) < 0 ||
         member_str(plat, pn, "architecture", d->arch, sizeof(d->arch)) < 0))
        return snprintf(err, errcap, "descriptor %s: malformed platform", d->digest), -1;
    return 0;
}

/* A JSON array of descriptors into a malloc'd vector of at most max. */
static int parse_descs(const char *v, size_t vn, size_t max, const char *what, ctl_desc_t **out, size_t *n_out,
                       char *err, size_t errcap)
{
    const char *it;
    size_t in, pos = 0;
    int rc;
    *out = NULL;
    *n_out = 0;
    while ((rc = ctl_json_next_item(v, vn, &pos, &it, &in)) == 1) {
        if (*n_out == max) {
            snprintf(err, errcap, "more than %zu %s", max, what);
            goto fail;
        }
        ctl_desc_t *na = realloc(*out, (*n_out + 1) * sizeof(*na));
        if (na == NULL) {
            snprintf(err, errcap, "out of memory");
            goto fail;
        }
        *out = na;
        if (ctl_image_parse_desc(it, in, &na[*n_out], err, errcap) != 0)
            goto fail;
        (*n_out)++;
    }
    if (rc == 0)
        return 0;
    snprintf(err, errcap, "%s is not a JSON array", what);
fail:
    free(*out);
    *out = NULL;
    *n_out = 0;
    return -1;
}

int ctl_image_parse_index(const char *s, size_t n, ctl_desc_t **out, size_t *n_out, char *err, size_t errcap)
{
    const char *v;
    size_t vn;
    *out = NULL;
    *n_out = 0;
    if (ctl_json_dup_key(s, n) != 0 || ctl_json_member(s, n, "manifests", &v, &vn) != 0)
        return snprintf(err, errcap, "not a JSON object with \"manifests\""), -1;
    if (parse_descs(v, vn, CTL_IMAGE_MAX_ENTRIES, "manifests", out, n_out, err, errcap) != 0)
        return -1;
    if (*n_out == 0)
        return snprintf(err, errcap, "the index lists no manifest"), -1;
    return 0;
}

static const char *host_arch(void)
{
#if defined(__x86_64__)
    return "amd64";
#elif defined(__aarch64__)
    return "arm64";
#else
    return "";
#endif
}

/* "a, b, (untagged)" into buf: what the user can choose from. */
static void list_tags(const ctl_desc_t *ds, size_t n, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        int w = snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", ds[i].ref_name[0] ? ds[i].ref_name : "(untagged)");
        o += w > 0 ? (size_t)w : 0;
    }
}

/* "docker.io/library/app:v1" is named by itself and by "app:v1" (and "library/app:v1"). */
static int name_is(const char *name, const char *tag)
{
    size_t n = strlen(name), t = strlen(tag);
    if (name[0] == '\0' || t == 0 || t > n)
        return 0;
    return strcmp(name + n - t, tag) == 0 && (t == n || name[n - t - 1] == '/');
}

int ctl_image_pick(const ctl_desc_t *ds, size_t n, const char *tag, size_t *idx, char *err, size_t errcap)
{
    char tags[512];
    if (tag != NULL) {
        size_t hits = 0;
        for (size_t i = 0; i < n; i++)
            if (strcmp(ds[i].ref_name, tag) == 0 || name_is(ds[i].image_name, tag))
                *idx = i, hits++;
        if (hits == 1)
            return 0;
        list_tags(ds, n, tags, sizeof(tags));
        if (hits > 1) /* docker save >= 25 tags app:v1 and other:v1 both "v1" */
            return snprintf(err, errcap, "\"%.128s\" names %zu images (give repo:tag; tags: %s)", tag, hits, tags), -1;
        /* one untagged manifest: the tag cannot pick another */
        if (n == 1 && ds[0].ref_name[0] == '\0')
            return *idx = 0, 0;
        return snprintf(err, errcap, "no image tagged \"%.128s\" (tags: %s)", tag, tags), -1;
    }
    if (n == 1)
        return *idx = 0, 0;
    size_t found = n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(ds[i].os, "linux") == 0 && strcmp(ds[i].arch, host_arch()) == 0) {
            if (found != n) {
                found = n;
                break;
            }
            found = i;
        }
    if (found < n)
        return *idx = found, 0;
    list_tags(ds, n, tags, sizeof(tags));
    return snprintf(err, errcap, "%zu images and no tag to choose one (give PATH:TAG; tags: %s)", n, tags), -1;
}

int ctl_image_parse_manifest(const char *s, size_t n, char *media_type, size_t mtcap, ctl_desc_t *config,
                             ctl_desc_t **layers, size_t *n_layers, char *err, size_t errcap)
{
    const char *v;
    size_t vn;
    uint64_t sv;
    *layers = NULL;
    *n_layers = 0;
    if (ctl_json_dup_key(s, n) != 0)
        return snprintf(err, errcap, "the manifest is not a JSON object with unique keys"), -1;
    if (ctl_json_member(s, n, "schemaVersion", &v, &vn) != 0 || json_u64(v, vn, &sv) != 0 || sv != 2)
        return snprintf(err, errcap, "the manifest is not a JSON object with schemaVersion 2"), -1;
    if (member_str(s, n, "mediaType", media_type, mtcap) < 0)
        return snprintf(err, errcap, "the manifest's mediaType is not a string"), -1;
    if (ctl_json_member(s, n, "config", &v, &vn) != 0 || (vn == 4 && memcmp(v, "null", 4) == 0))
        return snprintf(err, errcap, "image has no config"), -1;
    if (ctl_image_parse_desc(v, vn, config, err, errcap) != 0)
        return -1;
    if (ctl_json_member(s, n, "layers", &v, &vn) != 0)
        return snprintf(err, errcap, "the manifest has no layers"), -1;
    return parse_descs(v, vn, CTL_IMAGE_MAX_LAYERS, "layers (the platform's bound)", layers, n_layers, err, errcap);
}

void ctl_image_config_free(ctl_image_config_t *c)
{
    free_strs(c->entrypoint, c->n_entrypoint);
    free_strs(c->cmd, c->n_cmd);
    free_strs(c->env, c->n_env);
    free_strs(c->diff_ids, c->n_diff_ids);
    free(c->working_dir);
    free(c->user);
    memset(c, 0, sizeof(*c));
}

/* config.Entrypoint etc.: absent and null read as unset. */
static int config_strs(const char *s, size_t n, const char *key, char ***out, size_t *cnt, char *err, size_t errcap)
{
    const char *v;
    size_t vn;
    if (ctl_json_member(s, n, key, &v, &vn) != 0)
        return 0;
    if (json_strs(v, vn, out, cnt) != 0)
        return snprintf(err, errcap, "config.%s is not a list of strings", key), -1;
    return 0;
}

static int config_str(const char *s, size_t n, const char *key, char **out, char *err, size_t errcap)
{
    const char *v;
    size_t vn;
    if (ctl_json_member(s, n, key, &v, &vn) != 0 || (vn == 4 && memcmp(v, "null", 4) == 0))
        return 0;
    if ((*out = json_str(v, vn)) == NULL)
        return snprintf(err, errcap, "config.%s is not a string", key), -1;
    return 0;
}

int ctl_image_parse_config(const char *s, size_t n, ctl_image_config_t *c, char *err, size_t errcap)
{
    const char *cf, *rf, *v;
    size_t cn, rn, vn;
    memset(c, 0, sizeof(*c));
    if (ctl_json_dup_key(s, n) != 0)
        return snprintf(err, errcap, "the image config is not a JSON object with unique keys (up to 256)"), -1;
    if (ctl_json_member(s, n, "rootfs", &rf, &rn) == 0 && ctl_json_member(rf, rn, "diff_ids", &v, &vn) == 0) {
        if (json_strs(v, vn, &c->diff_ids, &c->n_diff_ids) != 0)
            return snprintf(err, errcap, "the config's rootfs.diff_ids is not a list of strings"), -1;
        c->has_diff_ids = 1;
    }
    /* "config" is optional (an image with no defaults); anything else must be an object */
    if (ctl_json_member(s, n, "config", &cf, &cn) != 0 || (cn == 4 && memcmp(cf, "null", 4) == 0))
        return 0;
    if (cf[0] != '{' || ctl_json_dup_key(cf, cn) != 0)
        goto bad;
    if (config_strs(cf, cn, "Entrypoint", &c->entrypoint, &c->n_entrypoint, err, errcap) != 0 ||
        config_strs(cf, cn, "Cmd", &c->cmd, &c->n_cmd, err, errcap) != 0 ||
        config_strs(cf, cn, "Env", &c->env, &c->n_env, err, errcap) != 0 ||
        config_str(cf, cn, "WorkingDir", &c->working_dir, err, errcap) != 0 ||
        config_str(cf, cn, "User", &c->user, err, errcap) != 0)
        goto fail;
    return 0;
bad:
    snprintf(err, errcap, "the image config's \"config\" is not an object with unique keys (up to 256)");
fail:
    ctl_image_config_free(c);
    return -1;
}

/* A path inside the archive that stays inside it. */
static int safe_rel(const char *p)
{
    if (p[0] == '\0' || p[0] == '/')
        return 0;
    for (const char *c = p; *c; c = strchr(c, '/') ? strchr(c, '/') + 1 : c + strlen(c))
        if (strncmp(c, "..", 2) == 0 && (c[2] == '/' || c[2] == '\0'))
            return 0;
    return 1;
}

void ctl_image_docker_free(ctl_docker_entry_t *e)
{
    free(e->config);
    free_strs(e->layers, e->n_layers);
    memset(e, 0, sizeof(*e));
}

/* 1 if the entry's RepoTags has tag: exact (match 2) or by the part after the last ':' (1). */
static int tag_match(const char *it, size_t in, const char *tag)
{
    const char *v;
    size_t vn;
    char **tags = NULL;
    size_t nt = 0;
    int m = 0;
    if (ctl_json_member(it, in, "RepoTags", &v, &vn) != 0 || json_strs(v, vn, &tags, &nt) != 0)
        return 0;
    for (size_t i = 0; i < nt; i++) {
        const char *colon = strrchr(tags[i], ':');
        if (strcmp(tags[i], tag) == 0)
            m = 2;
        else if (m == 0 && colon != NULL && strchr(colon, '/') == NULL && strcmp(colon + 1, tag) == 0)
            m = 1;
    }
    free_strs(tags, nt);
    return m;
}

static void docker_tags(const char *s, size_t n, char *buf, size_t cap)
{
    const char *it, *v;
    size_t in, vn, pos = 0, o = 0;
    buf[0] = '\0';
    while (o + 1 < cap && ctl_json_next_item(s, n, &pos, &it, &in) == 1) {
        char **tags = NULL;
        size_t nt = 0;
        if (ctl_json_member(it, in, "RepoTags", &v, &vn) == 0)
            json_strs(v, vn, &tags, &nt);
        int w = snprintf(buf + o, cap - o, "%s%s", o ? ", " : "", nt ? tags[0] : "(untagged)");
        o += w > 0 ? (size_t)w : 0;
        free_strs(tags, nt);
    }
}

/* The index of the entry to use, or -1 with err. */
static long docker_pick(const char *s, size_t n, const char *tag, char *err, size_t errcap)
{
    const char *it;
    size_t in, pos = 0;
    long count = 0, exact = -1, by_tag = -1, n_by_tag = 0;
    int rc;
    while ((rc = ctl_json_next_item(s, n, &pos, &it, &in)) == 1 && count < CTL_IMAGE_MAX_ENTRIES) {
        int m = tag != NULL ? tag_match(it, in, tag) : 0;
        if (m == 2 && exact < 0)
            exact = count;
        if (m == 1)
            by_tag = count, n_by_tag++;
        count++;
    }
    if (rc < 0 || count == 0)
        return snprintf(err, errcap, "manifest.json is not a non-empty JSON array"), -1;
    if (exact >= 0)
        return exact;
    if (n_by_tag == 1)
        return by_tag;
    if (tag == NULL && count == 1)
        return 0;
    char tags[512];
    docker_tags(s, n, tags, sizeof(tags));
    if (tag != NULL)
        snprintf(err, errcap, "no image tagged \"%.128s\"%s (tags: %s)", tag, n_by_tag > 1 ? " alone" : "", tags);
    else
        snprintf(err, errcap, "%ld images and no tag to choose one (give PATH:TAG; tags: %s)", count, tags);
    return -1;
}

int ctl_image_parse_docker(const char *s, size_t n, const char *tag, ctl_docker_entry_t *e, char *err, size_t errcap)
{
    const char *it = NULL, *v;
    size_t in = 0, vn, pos = 0;
    memset(e, 0, sizeof(*e));
    long want = docker_pick(s, n, tag, err, errcap);
    if (want < 0)
        return -1;
    for (long i = 0; i <= want; i++)
        ctl_json_next_item(s, n, &pos, &it, &in);
    if (ctl_json_member(it, in, "Config", &v, &vn) != 0 || (e->config = json_str(v, vn)) == NULL) {
        snprintf(err, errcap, "image has no config (manifest.json names none)");
        goto fail;
    }
    if (ctl_json_member(it, in, "Layers", &v, &vn) != 0 || json_strs(v, vn, &e->layers, &e->n_layers) != 0) {
        snprintf(err, errcap, "manifest.json: Layers is not a list of paths");
        goto fail;
    }
    if (e->n_layers > CTL_IMAGE_MAX_LAYERS) {
        snprintf(err, errcap, "%zu layers, more than the platform's %d", e->n_layers, CTL_IMAGE_MAX_LAYERS);
        goto fail;
    }
    if (!safe_rel(e->config)) {
        snprintf(err, errcap, "manifest.json: config path \"%.128s\" leaves the archive", e->config);
        goto fail;
    }
    for (size_t i = 0; i < e->n_layers; i++)
        if (!safe_rel(e->layers[i])) {
            snprintf(err, errcap, "manifest.json: layer path \"%.128s\" leaves the archive", e->layers[i]);
            goto fail;
        }
    return 0;
fail:
    ctl_image_docker_free(e);
    return -1;
}

const char *ctl_image_layer_oci_type(const char *mt)
{
    if (strcmp(mt, CTL_MT_OCI_LAYER) == 0 || strcmp(mt, "application/vnd.docker.image.rootfs.diff.tar") == 0)
        return CTL_MT_OCI_LAYER;
    if (strcmp(mt, CTL_MT_OCI_LAYER_GZIP) == 0 || strcmp(mt, CTL_MT_DOCKER_LAYER_GZIP) == 0)
        return CTL_MT_OCI_LAYER_GZIP;
    return NULL; /* zstd, foreign/non-distributable, encrypted, anything else */
}

char *ctl_image_write_manifest(const ctl_desc_t *config, const ctl_desc_t *layers, size_t n, size_t *len)
{
    /* every field is fixed text or a checked digest/number: no escaping is needed */
    size_t cap = 256 + (n + 1) * 192, o;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    o = (size_t)snprintf(out, cap,
                         "{\"schemaVersion\":2,\"mediaType\":\"" CTL_MT_OCI_MANIFEST
                         "\",\"config\":{\"mediaType\":\"" CTL_MT_OCI_CONFIG
                         "\",\"digest\":\"%s\",\"size\":%llu},\"layers\":[",
                         config->digest, (unsigned long long)config->size);
    for (size_t i = 0; i < n && o < cap; i++) {
        const char *mt = ctl_image_layer_oci_type(layers[i].media_type);
        o +=
            (size_t)snprintf(out + o, cap - o, "%s{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%llu}", i ? "," : "",
                             mt != NULL ? mt : CTL_MT_OCI_LAYER, layers[i].digest, (unsigned long long)layers[i].size);
    }
    if (o < cap)
        o += (size_t)snprintf(out + o, cap - o, "]}");
    if (o >= cap) {
        free(out);
        return NULL;
    }
    *len = o;
    return out;
}
