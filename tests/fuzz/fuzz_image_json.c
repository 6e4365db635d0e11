/* libFuzzer driver for faasctl's image JSON (deploy/image_json.c): whatever an image
 * file holds, parsing it as an index, a manifest, a config or docker save's
 * manifest.json stays inside the input, returns bounded results, frees what it made,
 * and a manifest written from what was parsed parses back to the same descriptors. */
// FUZZ_SOURCES: deploy/image_json.c deploy/json.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/image.h"

static void roundtrip(const ctl_desc_t *config, const ctl_desc_t *layers, size_t n)
{
    size_t len = 0, n2 = 0;
    char *m = ctl_image_write_manifest(config, layers, n, &len), mt[128], err[256];
    ctl_desc_t c2, *l2 = NULL;
    if (m == NULL)
        return;
    if (ctl_image_parse_manifest(m, len, mt, sizeof(mt), &c2, &l2, &n2, err, sizeof(err)) != 0 || n2 != n ||
        strcmp(c2.digest, config->digest) != 0 || c2.size != config->size || strcmp(mt, CTL_MT_OCI_MANIFEST) != 0)
        abort();
    for (size_t i = 0; i < n; i++)
        if (strcmp(l2[i].digest, layers[i].digest) != 0 || l2[i].size != layers[i].size)
            abort();
    free(l2);
    free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes, so ASan sees any read past the end */
    char *s = malloc(size ? size : 1), err[512], mt[128];
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    ctl_desc_t *ds = NULL, cfg;
    size_t n = 0, idx = 0;
    if (ctl_image_parse_index(s, size, &ds, &n, err, sizeof(err)) == 0) {
        if (n == 0 || n > CTL_IMAGE_MAX_ENTRIES)
            abort();
        if (ctl_image_pick(ds, n, NULL, &idx, err, sizeof(err)) == 0 && idx >= n)
            abort();
        if (ctl_image_pick(ds, n, "latest", &idx, err, sizeof(err)) == 0 && idx >= n)
            abort();
        free(ds);
    }
    if (ctl_image_parse_manifest(s, size, mt, sizeof(mt), &cfg, &ds, &n, err, sizeof(err)) == 0) {
        if (n > CTL_IMAGE_MAX_LAYERS || strlen(cfg.digest) != 71)
            abort();
        roundtrip(&cfg, ds, n);
        free(ds);
    }
    ctl_image_config_t c;
    if (ctl_image_parse_config(s, size, &c, err, sizeof(err)) == 0)
        ctl_image_config_free(&c);
    ctl_docker_entry_t e;
    if (ctl_image_parse_docker(s, size, NULL, &e, err, sizeof(err)) == 0) {
        if (e.config == NULL || e.config[0] == '/' || e.n_layers > CTL_IMAGE_MAX_LAYERS)
            abort();
        ctl_image_docker_free(&e);
    }
    if (ctl_image_parse_docker(s, size, "app:v1", &e, err, sizeof(err)) == 0)
        ctl_image_docker_free(&e);
    if (strlen(err) >= sizeof(err))
        abort();
    free(s);
    return 0;
}
