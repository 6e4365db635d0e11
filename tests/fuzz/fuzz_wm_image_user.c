/* libFuzzer driver: wm_image_user, the image user string ("name", "uid", "name:group",
 * ...) looked up in an image's /etc/passwd and /etc/group as glibc's fgetpwent_r and
 * fgetgrent_r parse them. Input: flags byte, user string, '\n', passwd bytes, '\0',
 * group bytes (flags bit 0/1: that file is absent). Any input gives 0 or -1 with a
 * one-line error; an accepted user has every id below the 65536 mapped ones, no group
 * twice, an absolute home, the uid (and gid) it named when numeric; a second lookup
 * over the same files agrees. */
// FUZZ_SOURCES: worker-manager/imagerun.c worker-manager/cgroup.c common/util.c
// FUZZ_PKGS: libprotobuf-c
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker-manager/internal.h"

/* A stream over an exact-size copy (ASan sees a read past it), or NULL when absent or
 * empty (fmemopen refuses size 0 on some libcs: an empty file reads like none). */
static FILE *stream(const uint8_t *p, size_t n, int absent, char **copy)
{
    *copy = NULL;
    if (absent || n == 0)
        return NULL;
    *copy = malloc(n);
    memcpy(*copy, p, n);
    return fmemopen(*copy, n, "r");
}

static int all_digits(const char *s, size_t n)
{
    return n > 0 && n < 6 && strspn(s, "0123456789") >= n;
}

static void check(const char *user, int rc, const wm_image_ids_t *ids, const char *err, size_t cap)
{
    if (rc != 0) {
        if (rc != -1 || err[0] == '\0' || strnlen(err, cap) == cap || strchr(err, '\n') != NULL)
            abort();
        return;
    }
    if (ids->uid >= WM_IMAGE_IDS || ids->gid >= WM_IMAGE_IDS || ids->n_groups > WM_IMAGE_MAX_GROUPS ||
        ids->home[0] != '/')
        abort();
    for (size_t i = 0; i < ids->n_groups; i++) {
        if (ids->groups[i] >= WM_IMAGE_IDS)
            abort();
        for (size_t j = 0; j < i; j++)
            if (ids->groups[i] == ids->groups[j])
                abort();
    }
    const char *colon = strchr(user, ':');
    size_t ul = colon ? (size_t)(colon - user) : strlen(user);
    if (all_digits(user, ul) && ids->uid != strtoul(user, NULL, 10))
        abort();
    if (colon && all_digits(colon + 1, strlen(colon + 1)) && ids->gid != strtoul(colon + 1, NULL, 10))
        abort();
    if (colon && colon[1] != '\0' && ids->n_groups != 0) /* an explicit group: no supplementary ones */
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL || memchr(p, '\0', (size_t)(nl - p)) != NULL)
        return 0;
    char *user = strndup((const char *)p, (size_t)(nl - p));
    p = nl + 1;
    const uint8_t *z = memchr(p, '\0', (size_t)(end - p));
    size_t pwl = z ? (size_t)(z - p) : (size_t)(end - p);
    const uint8_t *g = z ? z + 1 : end;
    size_t grl = (size_t)(end - g);

    char *pwc, *grc;
    FILE *pw = stream(p, pwl, flags & 1, &pwc), *gr = stream(g, grl, flags & 2, &grc);
    wm_image_ids_t a, b;
    char err[200], err2[200];
    int rc = wm_image_user(user, pw, gr, "fuzz:img", &a, err, sizeof(err));
    check(user, rc, &a, err, sizeof(err));
    if (pw)
        rewind(pw);
    if (gr)
        rewind(gr);
    int rc2 = wm_image_user(user, pw, gr, "fuzz:img", &b, err2, sizeof(err2));
    if (rc2 != rc ||
        (rc == 0 && (a.uid != b.uid || a.gid != b.gid || a.n_groups != b.n_groups ||
                     memcmp(a.groups, b.groups, a.n_groups * sizeof(a.groups[0])) != 0 || strcmp(a.home, b.home) != 0)))
        abort();
    if (rc != 0 && strcmp(err, err2) != 0)
        abort();
    if (pw)
        fclose(pw);
    if (gr)
        fclose(gr);
    free(pwc);
    free(grc);
    free(user);
    return 0;
}
