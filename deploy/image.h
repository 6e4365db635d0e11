/* deploy/image.h - faasctl's reader of OCI images on the client (issue 15, docs/images.md):
 * an OCI image layout directory, an OCI archive (a tar, maybe gzip'd, of a layout) or a
 * `docker save` archive. It picks one image, checks every blob it names (present, size,
 * sha256) before anything is uploaded, normalizes the manifest to OCI media types and
 * reads the config's Entrypoint, Cmd, Env, WorkingDir and User.
 *
 * The JSON parsers are pure (bytes in, descriptors out) so they can be unit-tested and
 * fuzzed (tests/fuzz/fuzz_image_json.c); ctl_image_open does the I/O. */
#ifndef FAAS_DEPLOY_IMAGE_H
#define FAAS_DEPLOY_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/faas.pb-c.h"

#define CTL_IMAGE_MAX_JSON (4u << 20) /* index.json, manifest.json, manifests, configs */
#define CTL_IMAGE_MAX_LAYERS 127      /* what one overlay mount takes comfortably */
#define CTL_IMAGE_MAX_ENTRIES 1024    /* manifests in an index, images in a docker save */

#define CTL_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define CTL_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define CTL_MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define CTL_MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
#define CTL_MT_OCI_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define CTL_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define CTL_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define CTL_MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define CTL_MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"

/* A content descriptor (OCI image-spec descriptor.md), with what an index entry adds. */
typedef struct {
    char media_type[128]; /* "" if absent */
    char digest[72];      /* "sha256:<64 lowercase hex>" */
    uint64_t size;
    char ref_name[256];   /* index entries: org.opencontainers.image.ref.name, "" if none */
    char image_name[256]; /* and io.containerd.image.name (docker save >= 25: "docker.io/library/app:v1") */
    char os[32], arch[32];
} ctl_desc_t;

/* The parts of an image config a function runs by. NULL/0 = absent. */
typedef struct {
    char **entrypoint, **cmd, **env, **diff_ids;
    size_t n_entrypoint, n_cmd, n_env, n_diff_ids;
    char *working_dir, *user;
    int has_diff_ids; /* rootfs.diff_ids was there (it may be empty) */
} ctl_image_config_t;

/* One `docker save` image: paths inside the archive, relative and checked (no "..", no "/"). */
typedef struct {
    char *config;
    char **layers;
    size_t n_layers;
} ctl_docker_entry_t;

/* An opened, checked image. */
typedef struct {
    char *ref;         /* PATH[:TAG] as given */
    char *path, *tag;  /* the split; tag NULL if none */
    char tmpdir[4096]; /* the extracted archive, removed by ctl_image_close; "" if none */
    uint8_t *manifest; /* the OCI manifest blob to upload (the image's own or written) */
    size_t manifest_len;
    char manifest_digest[72]; /* sha256 of manifest */
    int manifest_written;     /* 1: normalized from docker's, 0: the image's own bytes */
    ctl_desc_t config;        /* media type as in the uploaded manifest */
    char *config_path;
    ctl_desc_t *layers; /* bottom first */
    char **layer_paths;
    size_t n_layers;
    ctl_image_config_t cfg;
} ctl_image_t;

/* ---- pure parsers: 0, or -1 with a sentence in err ---- */

/* One descriptor object. Only sha256 digests are taken. */
int ctl_image_parse_desc(const char *s, size_t n, ctl_desc_t *d, char *err, size_t errcap);
/* index.json or an image index blob -> its manifests (malloc'd in *out). */
int ctl_image_parse_index(const char *s, size_t n, ctl_desc_t **out, size_t *n_out, char *err, size_t errcap);
/* Which of n index entries to run: the only one, else the one whose ref name is tag (or
 * whose containerd image name is tag, or ends in "/" tag, as docker save writes them),
 * else (tag NULL) the one for linux and the host's architecture; the error names the tags. */
int ctl_image_pick(const ctl_desc_t *ds, size_t n, const char *tag, size_t *idx, char *err, size_t errcap);
/* An image manifest -> its own mediaType ("" if absent), config and layers (malloc'd). */
int ctl_image_parse_manifest(const char *s, size_t n, char *media_type, size_t mtcap, ctl_desc_t *config,
                             ctl_desc_t **layers, size_t *n_layers, char *err, size_t errcap);
/* An image config -> the fields (free with ctl_image_config_free). */
int ctl_image_parse_config(const char *s, size_t n, ctl_image_config_t *c, char *err, size_t errcap);
void ctl_image_config_free(ctl_image_config_t *c);
/* A docker save manifest.json -> the entry whose RepoTags has tag (the whole "repo:tag"
 * or, if that names one image, the part after the last ':'), else the only one. */
int ctl_image_parse_docker(const char *s, size_t n, const char *tag, ctl_docker_entry_t *e, char *err, size_t errcap);
void ctl_image_docker_free(ctl_docker_entry_t *e);
/* A layer media type -> its OCI name, or NULL if the platform cannot unpack it. */
const char *ctl_image_layer_oci_type(const char *media_type);
/* The deterministic OCI manifest for config + layers (malloc'd JSON, *len bytes). */
char *ctl_image_write_manifest(const ctl_desc_t *config, const ctl_desc_t *layers, size_t n, size_t *len);

/* ---- the image on disk ---- */

/* Opens ref (PATH or PATH:TAG), extracting an archive into a temporary directory, and
 * checks every blob. 0, or -1 with one line naming the path and the blob in err. */
int ctl_image_open(const char *ref, ctl_image_t *img, char *err, size_t errcap);
/* Frees img and removes its temporary directory. */
void ctl_image_close(ctl_image_t *img);
/* Fills spec (whose fields are unset) from img: ref, manifest digest and size, blobs,
 * config fields and size. 0, or -1 when out of memory. */
int ctl_image_fill_spec(const ctl_image_t *img, Faas__ImageSpec *spec);

#endif
