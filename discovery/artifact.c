/* discovery/artifact.c - content-addressed code artifacts: uploads are streamed into
 * a temp file while hashing, then renamed to <dir>/<sha256>.tar.gz, so a reader
 * never sees a partial artifact and equal code is stored once. */
#include "discovery/discovery.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

struct disc_upload {
    char dir[3072];
    char tmp[3200];
    int fd;
    uint64_t size, max;
    EVP_MD_CTX *md;
};

disc_upload_t *disc_upload_begin(const char *dir, uint64_t max_bytes, const char **err)
{
    disc_upload_t *up = calloc(1, sizeof(*up));
    if (up == NULL || strlen(dir) >= sizeof(up->dir)) {
        *err = up ? "artifact directory path too long" : "out of memory";
        free(up);
        return NULL;
    }
    strcpy(up->dir, dir);
    snprintf(up->tmp, sizeof(up->tmp), "%s/.upload-XXXXXX", dir);
    up->max = max_bytes;
    up->fd = mkstemp(up->tmp);
    if (up->fd < 0) {
        *err = "cannot create a temp file for the upload";
        goto fail;
    }
    up->md = EVP_MD_CTX_new();
    if (up->md == NULL || EVP_DigestInit_ex(up->md, EVP_sha256(), NULL) != 1) {
        *err = "sha256 init failed";
        goto fail;
    }
    return up;
fail:
    disc_upload_abort(up);
    return NULL;
}

int disc_upload_write(disc_upload_t *up, const uint8_t *data, size_t len, const char **err)
{
    if (up->size + len > up->max || up->size + len < up->size) {
        *err = "the upload (code artifact or image blob) is larger than --max-artifact-bytes";
        return -EFBIG;
    }
    if (EVP_DigestUpdate(up->md, data, len) != 1) {
        *err = "sha256 update failed";
        return -EIO;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(up->fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            *err = "writing the upload failed (disk full?)";
            return -EIO;
        }
        off += (size_t)w;
    }
    up->size += len;
    return 0;
}

/* Hashes, syncs and renames into place; if want is set and the bytes' sha256 is not
 * it, the temp file is dropped instead (-EBADMSG), so nothing unasked-for lands. */
static int commit_as(disc_upload_t *up, const char *want, char *sha, uint64_t *size, const char **err)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    char final[3200];
    int rc = -EIO;
    if (up->size == 0) {
        *err = "empty upload: send the tar.gz of the code directory";
        rc = -EINVAL;
        goto out;
    }
    if (EVP_DigestFinal_ex(up->md, digest, &dlen) != 1 || dlen != 32) {
        *err = "sha256 final failed";
        goto out;
    }
    for (unsigned i = 0; i < 32; i++)
        snprintf(sha + 2 * i, 3, "%02x", digest[i]);
    if (want != NULL && strcmp(sha, want) != 0) {
        *err = "the bytes' sha256 is not the one asked for";
        rc = -EBADMSG;
        goto out;
    }
    /* durable before visible: Deploy may refer to it right after we answer */
    if (fsync(up->fd) != 0 || fchmod(up->fd, 0644) != 0) {
        *err = "syncing the upload failed";
        goto out;
    }
    if (disc_artifact_path(up->dir, sha, final, sizeof(final)) != 0 || rename(up->tmp, final) != 0) {
        *err = "storing the artifact failed";
        goto out;
    }
    up->tmp[0] = '\0';
    *size = up->size;
    rc = 0;
out:
    disc_upload_abort(up);
    return rc;
}

int disc_upload_commit(disc_upload_t *up, char *sha, uint64_t *size, const char **err)
{
    return commit_as(up, NULL, sha, size, err);
}

int disc_upload_commit_expect(disc_upload_t *up, const char *want, uint64_t *size, const char **err)
{
    char sha[65];
    return commit_as(up, want, sha, size, err);
}

void disc_upload_abort(disc_upload_t *up)
{
    if (up == NULL)
        return;
    if (up->fd >= 0)
        close(up->fd);
    if (up->tmp[0] != '\0' && up->fd >= 0)
        unlink(up->tmp);
    EVP_MD_CTX_free(up->md);
    free(up);
}

int disc_artifact_path(const char *dir, const char *sha, char *out, size_t cap)
{
    /* the sha is the only client-controlled part of the path: keep it to 64 hex */
    if (!disc_valid_sha256(sha))
        return -EINVAL;
    int n = snprintf(out, cap, "%s/%s.tar.gz", dir, sha);
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    return 0;
}

int disc_artifact_exists(const char *dir, const char *sha)
{
    char path[4096];
    int rc = disc_artifact_path(dir, sha, path, sizeof(path));
    if (rc != 0)
        return rc;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return -ENOENT;
    return 0;
}
