/* deploy/image.c and image_json.c: faasctl's reader of OCI layouts, OCI archives and
 * docker save archives. Each test builds a small image in a temp dir from C (JSON files
 * and blobs with their real sha256s), then breaks it the way the case needs. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deploy/args.h"
#include "deploy/image.h"
#include "deploy/manifest.h"

static char dir[256], err[1024];
static ctl_image_t img;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/test_image.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    err[0] = '\0';
}

static void teardown(void)
{
    ctl_image_close(&img);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(image, .init = setup, .fini = teardown);

static void sha_hex(const void *p, size_t n, char hex[65])
{
    unsigned char md[32];
    EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
}

static void put(const char *rel, const void *p, size_t n)
{
    char path[512], *slash;
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    for (slash = strchr(path + strlen(dir) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(path, 0755);
        *slash = '/';
    }
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* Stores a blob under blobs/sha256/ and writes its descriptor ("..." with media type mt). */
static void blob(const char *mt, const void *p, size_t n, char *desc, size_t cap)
{
    char hex[65], rel[128];
    sha_hex(p, n, hex);
    snprintf(rel, sizeof(rel), "L/blobs/sha256/%s", hex);
    put(rel, p, n);
    snprintf(desc, cap, "{\"mediaType\":\"%s\",\"digest\":\"sha256:%s\",\"size\":%zu}", mt, hex, n);
}

static void blob_s(const char *mt, const char *s, char *desc, size_t cap)
{
    blob(mt, s, strlen(s), desc, cap);
}

static const char config_json[] =
    "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":[\"/bin/busybox\",\"httpd\"],"
    "\"Cmd\":[\"-f\",\"-p\",\"8080\"],\"Env\":[\"PATH=/bin\",\"GREETING=h\\u00e9 \\\"x\\\"\"],"
    "\"WorkingDir\":\"/srv\",\"User\":\"1000:1000\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:"
    "0000000000000000000000000000000000000000000000000000000000000000\"]}}";

/* A layout L with one image: config, one tar layer of layer_mt, the manifest of manifest_mt,
 * tagged tag. Returns the manifest descriptor in mdesc. */
static void layout(const char *manifest_mt, const char *layer_mt, const char *tag, char *mdesc, size_t cap)
{
    char cdesc[256], ldesc[256], m[1024], idx[2048];
    blob_s(strstr(manifest_mt, "docker") ? CTL_MT_DOCKER_CONFIG : CTL_MT_OCI_CONFIG, config_json, cdesc, sizeof(cdesc));
    blob_s(layer_mt, "pretend this is a tar", ldesc, sizeof(ldesc));
    snprintf(m, sizeof(m), "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":%s,\"layers\":[%s]}", manifest_mt,
             cdesc, ldesc);
    blob_s(manifest_mt, m, mdesc, cap);
    size_t l = strlen(mdesc);
    if (tag != NULL) /* the descriptor with its tag annotation */
        snprintf(mdesc + l - 1, cap - l + 1, ",\"annotations\":{\"org.opencontainers.image.ref.name\":\"%s\"}}", tag);
    snprintf(idx, sizeof(idx), "{\"schemaVersion\":2,\"manifests\":[%s]}", mdesc);
    put("L/index.json", idx, strlen(idx));
    put("L/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", 30);
}

static int open_ref(const char *suffix)
{
    char ref[512];
    snprintf(ref, sizeof(ref), "%s/%s", dir, suffix);
    ctl_image_close(&img);
    return ctl_image_open(ref, &img, err, sizeof(err));
}

static void expect_fail(const char *suffix, const char *needle)
{
    cr_assert_eq(open_ref(suffix), -1, "opened %s", suffix);
    cr_assert(strstr(err, needle) != NULL, "error \"%s\" lacks \"%s\"", err, needle);
    cr_assert(strchr(err, '\n') == NULL);
}

/* A file of the layout, rewritten. */
static char *blob_path(const char *digest)
{
    static char p[512];
    snprintf(p, sizeof(p), "%s/L/blobs/sha256/%s", dir, digest + 7);
    return p;
}

Test(image, oci_layout_ok_and_config_fields)
{
    char md[512];
    layout(CTL_MT_OCI_MANIFEST, CTL_MT_OCI_LAYER_GZIP, "v1", md, sizeof(md));
    cr_assert_eq(open_ref("L:v1"), 0, "%s", err);
    cr_assert_str_eq(img.tag, "v1");
    cr_assert_eq(img.manifest_written, 0);
    cr_assert(strstr(md, img.manifest_digest) != NULL, "the OCI manifest is kept as it is");
    cr_assert_eq(img.n_layers, 1);
    cr_assert_str_eq(img.layers[0].media_type, CTL_MT_OCI_LAYER_GZIP);
    cr_assert_eq(img.cfg.n_entrypoint, 2);
    cr_assert_str_eq(img.cfg.entrypoint[1], "httpd");
    cr_assert_eq(img.cfg.n_cmd, 3);
    cr_assert_str_eq(img.cfg.env[1], "GREETING=h\xc3\xa9 \"x\"");
    cr_assert_str_eq(img.cfg.working_dir, "/srv");
    cr_assert_str_eq(img.cfg.user, "1000:1000");

    Faas__ImageSpec s = FAAS__IMAGE_SPEC__INIT;
    cr_assert_eq(ctl_image_fill_spec(&img, &s), 0);
    cr_assert(strstr(s.ref, "L:v1") != NULL);
    cr_assert_str_eq(s.manifest_digest, img.manifest_digest);
    cr_assert_eq(s.manifest_size, img.manifest_len);
    cr_assert_eq(s.n_blobs, 2);
    cr_assert_str_eq(s.blobs[0], img.config.digest);
    cr_assert_str_eq(s.blobs[1], img.layers[0].digest);
    cr_assert_eq(s.size, img.manifest_len + strlen(config_json) + strlen("pretend this is a tar"));
    cr_assert_eq(s.n_env, 2);
    cr_assert_str_eq(s.working_dir, "/srv");
    /* the spec owns copies: it outlives the image */
    ctl_image_close(&img);
    cr_assert_str_eq(s.entrypoint[0], "/bin/busybox");
    Faas__ImageSpec *heap = malloc(sizeof(*heap));
    *heap = s;
    faas__image_spec__free_unpacked(heap, NULL);
}

Test(image, docker_typed_manifest_is_normalized)
{
    char md[512];
    layout(CTL_MT_DOCKER_MANIFEST, CTL_MT_DOCKER_LAYER_GZIP, NULL, md, sizeof(md));
    cr_assert_eq(open_ref("L"), 0, "%s", err);
    cr_assert_eq(img.manifest_written, 1);
    cr_assert(strstr(md, img.manifest_digest) == NULL, "a new manifest, a new digest");
    cr_assert(strstr((char *)img.manifest, CTL_MT_OCI_LAYER_GZIP) != NULL);
    cr_assert(strstr((char *)img.manifest, "docker") == NULL, "%s", (char *)img.manifest);
    cr_assert_str_eq(img.config.media_type, CTL_MT_OCI_CONFIG);
    char hex[65];
    sha_hex(img.manifest, img.manifest_len, hex);
    cr_assert_str_eq(img.manifest_digest + 7, hex);
}

Test(image, several_manifests_and_a_tag)
{
    char a[512], b[512], idx[2048];
    layout(CTL_MT_OCI_MANIFEST, CTL_MT_OCI_LAYER, "v1", a, sizeof(a));
    /* a second image: another config */
    char cdesc[256], m[1024];
    blob_s(CTL_MT_OCI_CONFIG, "{\"config\":{\"Cmd\":[\"two\"]}}", cdesc, sizeof(cdesc));
    snprintf(m, sizeof(m), "{\"schemaVersion\":2,\"config\":%s,\"layers\":[]}", cdesc);
    blob_s(CTL_MT_OCI_MANIFEST, m, b, sizeof(b));
    snprintf(b + strlen(b) - 1, 100, ",\"annotations\":{\"org.opencontainers.image.ref.name\":\"v2\"}}");
    snprintf(idx, sizeof(idx), "{\"schemaVersion\":2,\"manifests\":[%s,%s]}", a, b);
    put("L/index.json", idx, strlen(idx));

    cr_assert_eq(open_ref("L:v2"), 0, "%s", err);
    cr_assert_eq(img.n_layers, 0);
    cr_assert_str_eq(img.cfg.cmd[0], "two");
    cr_assert_eq(open_ref("L:v1"), 0, "%s", err);
    cr_assert_eq(img.n_layers, 1);
    expect_fail("L", "no tag to choose one");
    cr_assert(strstr(err, "v1, v2") != NULL, "%s", err);
    expect_fail("L:v3", "no image tagged \"v3\" (tags: v1, v2)");
}

Test(image, nested_index_is_followed)
{
    char md[512], inner[1024], idesc[512], idx[1024];
    layout(CTL_MT_OCI_MANIFEST, CTL_MT_OCI_LAYER, NULL, md, sizeof(md));
    /* the manifest behind a platform list, as multi-arch images have */
    snprintf(inner, sizeof(inner),
             "{\"schemaVersion\":2,\"manifests\":[%.*s,\"platform\":{\"os\":\"linux\","
             "\"architecture\":\"amd64\"}},%.*s,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}}]}",
             (int)strlen(md) - 1, md, (int)strlen(md) - 1, md);
    blob_s(CTL_MT_OCI_INDEX, inner, idesc, sizeof(idesc));
    snprintf(idx, sizeof(idx),
             "{\"schemaVersion\":2,\"manifests\":[%.*s,\"annotations\":{"
             "\"org.opencontainers.image.ref.name\":\"multi\"}}]}",
             (int)strlen(idesc) - 1, idesc);
    put("L/index.json", idx, strlen(idx));
    cr_assert_eq(open_ref("L:multi"), 0, "%s", err);
    cr_assert(strstr(md, img.manifest_digest) != NULL);
}

Test(image, digest_mismatch)
{
    char md[512];
    layout(CTL_MT_OCI_MANIFEST, CTL_MT_OCI_LAYER, NULL, md, sizeof(md));
    cr_assert_eq(open_ref("L"), 0, "%s", err);
    char *p = blob_path(img.layers[0].digest), layer[160];
    snprintf(layer, sizeof(layer), "blob %s does not match its digest", img.layers[0].digest);
    FILE *f = fopen(p, "r+b");
    cr_assert_not_null(f);
    fputc('P', f); /* same size, other bytes */
    fclose(f);
    expect_fail("L", layer);
}

Test(image, size_mismatch)
{
    char md[512];
    layout(CTL_MT_OCI_MANIFEST, CTL_MT_OCI_LAYER, NULL, md, sizeof(md));
    cr_assert_eq(open_ref("L"), 0, "%s", err);
    FILE *f = fopen(blob_path(img.layers[0].digest), "ab");
    cr_assert_not_null(f);
    fputs(" and more", f);
    fclose(f);
    expect_fail("L", "size mismatch");
    cr_assert(strstr(err, dir) != NULL, "the error names the path: %s", err);
}

Test(image, missing_config)
{
    char md[512];
    layout(CTL_MT_OCI_MANIFEST, CTL_MT_OCI_LAYER, NULL, md, sizeof(md));
    cr_assert_eq(open_ref("L"), 0, "%s", err);
    char cfg[72];
    strcpy(cfg, img.config.digest);
    cr_assert_eq(unlink(blob_path(cfg)), 0);
    expect_fail("L", "image has no config");
    cr_assert(strstr(err, cfg) != NULL, "%s", err);

    /* and a manifest that names none */
    char m[] = "{\"schemaVersion\":2,\"layers\":[]}", d[512], idx[1024];
    blob_s(CTL_MT_OCI_MANIFEST, m, d, sizeof(d));
    snprintf(idx, sizeof(idx), "{\"manifests\":[%s]}", d);
    put("L/index.json", idx, strlen(idx));
    expect_fail("L", "image has no config");
}

Test(image, unsupported_media_types)
{
    char md[512];
    layout(CTL_MT_OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+zstd", NULL, md, sizeof(md));
    expect_fail("L", "unsupported media type \"application/vnd.oci.image.layer.v1.tar+zstd\"");
    teardown();
    setup();
    layout(CTL_MT_OCI_MANIFEST, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", NULL, md, sizeof(md));
    expect_fail("L", "unsupported media type \"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\"");
    teardown();
    setup();
    layout("application/vnd.oci.artifact.manifest.v1+json", CTL_MT_OCI_LAYER, NULL, md, sizeof(md));
    expect_fail("L", "unsupported media type \"application/vnd.oci.artifact.manifest.v1+json\"");
}

Test(image, not_an_image)
{
    expect_fail("nothing-here:v1", "no such file or directory");
    put("empty/x", "x", 1);
    expect_fail("empty", "no index.json or manifest.json");
}

static void sh(const char *fmt, const char *arg)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), fmt, arg, arg, arg);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(image, oci_archive_and_truncated_archive)
{
    char md[512];
    layout(CTL_MT_OCI_MANIFEST, CTL_MT_OCI_LAYER, "v1", md, sizeof(md));
    sh("tar -C '%s/L' -czf '%s/L.tgz' .", dir);
    cr_assert_eq(open_ref("L.tgz:v1"), 0, "%s", err);
    char tmp[4096];
    strcpy(tmp, img.tmpdir);
    cr_assert(access(tmp, F_OK) == 0);
    ctl_image_close(&img);
    cr_assert(access(tmp, F_OK) != 0, "the extracted archive is removed");

    /* an unreferenced 64 KiB file puts the cut inside data, not in tar's end padding */
    static char big[65536];
    memset(big, 'x', sizeof(big));
    put("L/big", big, sizeof(big));
    sh("tar -C '%s/L' -cf '%s/L.tar' .", dir);
    char p[512];
    snprintf(p, sizeof(p), "%s/L.tar", dir);
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_eq(truncate(p, st.st_size / 2 - 7), 0);
    expect_fail("L.tar:v1", "corrupt or truncated archive");
}

/* A legacy docker save archive: manifest.json, <config hex>.json, <id>/layer.tar. */
static void docker_save(const char *layer, char diff_hex[65])
{
    char hex[65], cfg[1024], rel[128], man[512];
    sha_hex(layer, strlen(layer), diff_hex);
    put("D/0123abcd/layer.tar", layer, strlen(layer));
    snprintf(cfg, sizeof(cfg),
             "{\"config\":{\"Entrypoint\":[\"/app\"],\"Env\":[\"A=1\"]},\"rootfs\":{\"type\":\"layers\","
             "\"diff_ids\":[\"sha256:%s\"]}}",
             diff_hex);
    sha_hex(cfg, strlen(cfg), hex);
    snprintf(rel, sizeof(rel), "D/%s.json", hex);
    put(rel, cfg, strlen(cfg));
    snprintf(man, sizeof(man),
             "[{\"Config\":\"%s.json\",\"RepoTags\":[\"app:v1\"],\"Layers\":[\"0123abcd/layer.tar\"]}]", hex);
    put("D/manifest.json", man, strlen(man));
    put("D/repositories", "{}", 2);
}

Test(image, docker_save_legacy_converts_with_a_stable_digest)
{
    char diff[65], first[72];
    docker_save("a layer that is a tar", diff);
    sh("tar -C '%s/D' -cf '%s/d.tar' .", dir);
    cr_assert_eq(open_ref("d.tar:app:v1"), 0, "%s", err);
    cr_assert_str_eq(img.tag, "app:v1");
    cr_assert_eq(img.manifest_written, 1);
    cr_assert_eq(img.n_layers, 1);
    cr_assert_str_eq(img.layers[0].digest + 7, diff);
    cr_assert_str_eq(img.layers[0].media_type, CTL_MT_OCI_LAYER);
    cr_assert_str_eq(img.cfg.entrypoint[0], "/app");
    strcpy(first, img.manifest_digest);
    char want[1024], hex[65];
    snprintf(want, sizeof(want),
             "{\"schemaVersion\":2,\"mediaType\":\"" CTL_MT_OCI_MANIFEST
             "\",\"config\":{\"mediaType\":\"" CTL_MT_OCI_CONFIG
             "\",\"digest\":\"%s\",\"size\":%llu},\"layers\":[{\"mediaType\":\"" CTL_MT_OCI_LAYER
             "\",\"digest\":\"sha256:%s\",\"size\":21}]}",
             img.config.digest, (unsigned long long)img.config.size, diff);
    cr_assert_eq(img.manifest_len, strlen(want));
    cr_assert(memcmp(img.manifest, want, img.manifest_len) == 0, "%.*s", (int)img.manifest_len, img.manifest);
    sha_hex(want, strlen(want), hex);
    cr_assert_str_eq(first + 7, hex);
    /* the same image again (by its tag part, from the directory): the same digest */
    cr_assert_eq(open_ref("D:v1"), 0, "%s", err);
    cr_assert_str_eq(img.manifest_digest, first);
    expect_fail("D:v2", "no image tagged \"v2\"");
}

Test(image, docker_save_layer_not_its_diff_id)
{
    char diff[65];
    docker_save("a layer that is a tar", diff);
    put("D/0123abcd/layer.tar", "a layer that is a taR", 21);
    expect_fail("D", "does not match its digest");
    cr_assert(strstr(err, diff) != NULL, "%s", err);
}

/* The newer docker save form without an index.json: everything under blobs/sha256/. */
Test(image, docker_save_blobs_form)
{
    char lhex[65], chex[65], cfg[512], rel[160], man[512];
    const char layer[] = "another tar";
    sha_hex(layer, strlen(layer), lhex);
    snprintf(rel, sizeof(rel), "N/blobs/sha256/%s", lhex);
    put(rel, layer, strlen(layer));
    snprintf(cfg, sizeof(cfg), "{\"config\":{\"Cmd\":[\"/srv\"]},\"rootfs\":{\"diff_ids\":[\"sha256:%s\"]}}", lhex);
    sha_hex(cfg, strlen(cfg), chex);
    snprintf(rel, sizeof(rel), "N/blobs/sha256/%s", chex);
    put(rel, cfg, strlen(cfg));
    snprintf(man, sizeof(man),
             "[{\"Config\":\"blobs/sha256/%s\",\"RepoTags\":[\"x:1\"],\"Layers\":[\"blobs/sha256/%s\"]}]", chex, lhex);
    put("N/manifest.json", man, strlen(man));
    cr_assert_eq(open_ref("N"), 0, "%s", err);
    cr_assert_str_eq(img.layers[0].digest + 7, lhex);
    cr_assert_str_eq(img.config.digest + 7, chex);
    cr_assert_str_eq(img.cfg.cmd[0], "/srv");
    /* a blob whose bytes are not its name */
    snprintf(rel, sizeof(rel), "N/blobs/sha256/%s", lhex);
    put(rel, "another taR", 11);
    expect_fail("N", "does not match its digest");
    cr_assert(strstr(err, lhex) != NULL, "%s", err);
    /* and a path that leaves the archive */
    const char escape[] = "[{\"Config\":\"../x.json\",\"Layers\":[]}]";
    put("N/manifest.json", escape, strlen(escape));
    expect_fail("N", "leaves the archive");
}

/* ---- the pure parsers ---- */

Test(image_json, pick_by_docker_image_name)
{
    ctl_desc_t ds[2] = {0};
    size_t idx = 9;
    strcpy(ds[0].ref_name, "v1");
    strcpy(ds[0].image_name, "docker.io/library/app:v1");
    strcpy(ds[1].ref_name, "v1");
    strcpy(ds[1].image_name, "docker.io/library/other:v1");
    cr_assert_eq(ctl_image_pick(ds, 2, "other:v1", &idx, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(idx, 1);
    cr_assert_eq(ctl_image_pick(ds, 2, "docker.io/library/app:v1", &idx, err, sizeof(err)), 0);
    cr_assert_eq(idx, 0);
    cr_assert_eq(ctl_image_pick(ds, 2, "her:v1", &idx, err, sizeof(err)), -1, "a suffix is not a name");
    cr_assert_eq(ctl_image_pick(ds, 2, NULL, &idx, err, sizeof(err)), -1);
    cr_assert_eq(ctl_image_pick(ds, 2, "v1", &idx, err, sizeof(err)), -1, "ambiguous");
    cr_assert(strstr(err, "names 2 images") != NULL, "%s", err);
}

Test(image_json, descriptors)
{
    ctl_desc_t d;
    const char ok[] = "{\"mediaType\":\"x\",\"digest\":\"sha256:"
                      "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\",\"size\":12}";
    cr_assert_eq(ctl_image_parse_desc(ok, strlen(ok), &d, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(d.size, 12);
    const char *bad[] = {
        "{\"digest\":\"sha512:ff\",\"size\":1}",
        "{\"digest\":\"sha256:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\",\"size\":1}",
        "{\"digest\":\"sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\",\"size\":-1}",
        "{\"digest\":\"sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\"}",
        "{\"size\":3}",
        "[]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(ctl_image_parse_desc(bad[i], strlen(bad[i]), &d, err, sizeof(err)), -1, "%s", bad[i]);
}

Test(image_json, duplicate_keys_are_refused)
{
    /* deploy/json.c takes the first of two equal keys, umoci (Go) the last: checked
     * and unpacked must be the same layers */
    ctl_desc_t cfg, *layers = NULL;
    size_t n = 0;
    char mt[128];
    const char m[] = "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:"
                     "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\",\"size\":1},"
                     "\"layers\":[],\"layers\":[{\"digest\":\"sha256:"
                     "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\",\"size\":1}]}";
    cr_assert_eq(ctl_image_parse_manifest(m, strlen(m), mt, sizeof(mt), &cfg, &layers, &n, err, sizeof(err)), -1);
    cr_assert(strstr(err, "unique keys") != NULL, "%s", err);
    ctl_image_config_t c;
    const char cf[] = "{\"config\":{\"Cmd\":[\"a\"],\"Cmd\":[\"b\"]}}";
    cr_assert_eq(ctl_image_parse_config(cf, strlen(cf), &c, err, sizeof(err)), -1);
    const char fold[] = "{\"config\":{\"Cmd\":[\"a\"],\"cmd\":[\"b\"]}}";
    cr_assert_eq(ctl_image_parse_config(fold, strlen(fold), &c, err, sizeof(err)), -1, "Go folds case");
    const char esc[] = "{\"config\":{\"\\u0043md\":[\"b\"]}}";
    cr_assert_eq(ctl_image_parse_config(esc, strlen(esc), &c, err, sizeof(err)), -1, "Go decodes escapes");
    ctl_desc_t d;
    const char dd[] = "{\"digest\":\"sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\","
                      "\"size\":1,\"size\":2}";
    cr_assert_eq(ctl_image_parse_desc(dd, strlen(dd), &d, err, sizeof(err)), -1);
}

Test(image_json, config_nulls_and_absent_fields)
{
    ctl_image_config_t c;
    const char s[] = "{\"config\":{\"Entrypoint\":null,\"Cmd\":[\"sh\"],\"User\":null}}";
    cr_assert_eq(ctl_image_parse_config(s, strlen(s), &c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.n_entrypoint, 0);
    cr_assert_eq(c.n_cmd, 1);
    cr_assert_null(c.user);
    cr_assert_eq(c.has_diff_ids, 0);
    ctl_image_config_free(&c);
    const char b[] = "{\"config\":{\"Cmd\":\"sh\"}}";
    cr_assert_eq(ctl_image_parse_config(b, strlen(b), &c, err, sizeof(err)), -1);
    cr_assert(strstr(err, "Cmd") != NULL);
}

Test(image_json, layer_bound)
{
    char *m = malloc(200 * 140 + 512), *l = NULL;
    size_t o = (size_t)sprintf(m,
                               "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:%064d\",\"size\":1},"
                               "\"layers\":[",
                               0);
    for (int i = 0; i < 128; i++)
        o += (size_t)sprintf(m + o, "%s{\"digest\":\"sha256:%064d\",\"size\":1}", i ? "," : "", i);
    strcpy(m + o, "]}");
    char mt[128];
    ctl_desc_t cfg, *layers = NULL;
    size_t n = 0;
    cr_assert_eq(ctl_image_parse_manifest(m, strlen(m), mt, sizeof(mt), &cfg, &layers, &n, err, sizeof(err)), -1);
    cr_assert(strstr(err, "127") != NULL, "%s", err);
    free(m);
    free(l);
}

/* ---- the manifest key and the flag ---- */

Test(image_manifest, image_key_makes_command_optional_and_prints_back)
{
    const char y[] = "name: f\nimage: ./L:v1\n";
    faas_manifest_t m;
    const char *e = NULL;
    cr_assert_eq(faas_manifest_parse(y, strlen(y), &m, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(m.spec->image->ref, "./L:v1");
    cr_assert_eq(faas_manifest_validate(m.spec, &e), 0, "%s", e);
    m.spec->image->manifest_digest = strdup("sha256:abc");
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    faas_manifest_print(f, m.spec);
    fclose(f);
    cr_assert(strstr(out, "image: \"./L:v1\"\n") != NULL, "%s", out);
    cr_assert(strstr(out, "# image_manifest: sha256:abc") != NULL, "%s", out);
    cr_assert(strstr(out, "command:") == NULL, "%s", out);
    faas_manifest_t back;
    cr_assert_eq(faas_manifest_parse(out, n, &back, err, sizeof(err)), 0, "%s: %s", err, out);
    cr_assert_str_eq(back.spec->image->ref, "./L:v1");
    faas_manifest_free(&back);
    free(out);
    faas_manifest_free(&m);

    const char none[] = "name: f\n";
    cr_assert_eq(faas_manifest_parse(none, strlen(none), &m, err, sizeof(err)), 0);
    cr_assert_eq(faas_manifest_validate(m.spec, &e), -1);
    cr_assert(strstr(e, "image") != NULL);
    faas_manifest_free(&m);
    const char empty[] = "name: f\nimage: \"\"\n";
    cr_assert_eq(faas_manifest_parse(empty, strlen(empty), &m, err, sizeof(err)), -1);
}

Test(image_manifest, image_flag_overrides_the_key)
{
    ctl_args_t a;
    const char *e = NULL;
    char *argv[] = {"faasctl", "deploy", "f", "--image", "other.tar:v2", NULL};
    cr_assert_eq(ctl_args_parse(5, argv, &(ctl_env_t){0}, &a, &e), 0, "%s", e);
    const char y[] = "name: f\nimage: ./L:v1\n";
    faas_manifest_t m;
    cr_assert_eq(faas_manifest_parse(y, strlen(y), &m, err, sizeof(err)), 0);
    for (size_t i = 0; i < a.n_sets; i++)
        cr_assert_eq(faas_manifest_set(&m, a.sets[i].key, a.sets[i].value, &e), 0);
    cr_assert_str_eq(m.spec->image->ref, "other.tar:v2");
    faas_manifest_free(&m);
    ctl_args_free(&a);
    cr_assert(strstr(ctl_args_usage(CTL_DEPLOY), "--image PATH[:TAG]") != NULL);
}
