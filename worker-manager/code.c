/* code.c - the host's code cache: <state>/code/<sha256>/, fetched once from discovery.
 *
 * Blocking (rpc client, tar): runs on its own thread, never on the pod thread. */
#include "worker-manager/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "proto/faas.pb-c.h"

extern char **environ;

/* ---- sha256: OpenSSL's EVP digest (libcrypto is linked for the control plane already,
 * and it picks the CPU's SHA extensions where there are some) ---- */

static void put_hex(const unsigned char *md, unsigned n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[2 * n] = '\0';
}

void wm_sha256_hex(const void *data, size_t len, char *hex)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1)
        n = 0; /* "" matches no artifact name */
    put_hex(md, n, hex);
}

int wm_sha256_file(const char *path, char *hex)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    char buf[65536];
    ssize_t n = -1;
    int rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
            goto out;
    if (n < 0 || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
        goto out;
    put_hex(md, mdlen, hex);
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    close(fd);
    return rc;
}

int wm_valid_sha256(const char *s)
{
    size_t i = 0;
    for (; s[i] != '\0'; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == 64;
}

/* ---- fetch and unpack ---- */

typedef struct {
    int fd;
    int failed;
} fetch_t;

static int on_chunk(void *ud, const uint8_t *msg, size_t len)
{
    fetch_t *f = ud;
    Faas__CodeChunk *c = faas__code_chunk__unpack(NULL, len, msg);
    if (c == NULL) {
        f->failed = 1;
        return 1;
    }
    size_t off = 0;
    while (off < c->data.len) {
        ssize_t w = write(f->fd, c->data.data + off, c->data.len - off);
        if (w <= 0) {
            f->failed = 1;
            break;
        }
        off += (size_t)w;
    }
    faas__code_chunk__free_unpacked(c, NULL);
    return f->failed;
}

int wm_fetch_blob(struct faas_rpc_channel *chan, const char *discovery, const char *sha, const char *tmpfile,
                  const char *what, char *err, size_t errcap)
{
    fetch_t f = {.fd = open(tmpfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    if (f.fd < 0) {
        wm_fmt(err, errcap, "cannot create temp file: %s", strerror(errno));
        return -1;
    }
    Faas__CodeRef ref = FAAS__CODE_REF__INIT;
    ref.sha256 = (char *)sha;
    size_t len;
    uint8_t *req = faas_pb_pack(&ref.base, &len);
    faas_rpc_channel_t *ch = chan ? chan : faas_rpc_channel_open(discovery);
    char ebuf[256] = "";
    int rc = req && ch ? faas_rpc_server_stream(ch, "/faas.Discovery/FetchCode", req, len, 60000, on_chunk, &f, ebuf,
                                                sizeof(ebuf))
                       : -1;
    if (ch && ch != chan)
        faas_rpc_channel_close(ch);
    free(req);
    if (close(f.fd) != 0)
        f.failed = 1;
    if (rc != 0 || f.failed) {
        /* the transport's message names addresses: it goes to the log, not to the caller */
        FAAS_WARN("event=code_fetch_failed sha256=%s rc=%d err=\"%s\"", sha, rc, ebuf[0] ? ebuf : "write error");
        wm_fmt(err, errcap, "could not fetch %s %.12s from discovery%s", what, sha,
               rc == FAAS_GRPC_NOT_FOUND ? " (no such artifact)" : "");
        return -1;
    }
    return 0;
}

static int fix_mode(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    if (flag == FTW_SL)
        return 0;
    mode_t m = st->st_mode & 07777 & ~(mode_t)(S_ISUID | S_ISGID);
    m |= S_IRUSR | S_IRGRP | S_IROTH;
    if (S_ISDIR(st->st_mode) || (st->st_mode & S_IXUSR))
        m |= S_IXUSR | S_IXGRP | S_IXOTH;
    m &= ~(mode_t)(S_IWGRP | S_IWOTH);
    return chmod(path, m) == 0 ? 0 : -1;
}

static int untar(const char *tarball, const char *dir, char *err, size_t errcap)
{
    char *argv[] = {"tar", "--no-same-owner", "--no-same-permissions", "-xzf", (char *)tarball, "-C", (char *)dir,
                    NULL};
    pid_t pid;
    /* this thread blocks SIGINT/SIGTERM (the pod thread reads a signalfd): tar must not inherit that */
    posix_spawnattr_t at;
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawn(&pid, "/usr/bin/tar", NULL, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        wm_fmt(err, errcap, "cannot run tar: %s", strerror(rc));
        return -1;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        wm_fmt(err, errcap, "code archive is not a valid tar.gz");
        return -1;
    }
    if (nftw(dir, fix_mode, 16, FTW_PHYS) != 0) {
        wm_fmt(err, errcap, "chmod of unpacked code failed");
        return -1;
    }
    return 0;
}

static void rm_tree(const char *dir)
{
    char *argv[] = {"rm", "-rf", "--one-file-system", (char *)dir, NULL};
    pid_t pid;
    if (posix_spawn(&pid, "/bin/rm", NULL, NULL, argv, environ) == 0)
        waitpid(pid, NULL, 0);
}

int wm_code_ensure(const char *state_dir, const char *discovery, const char *sha, char *err, size_t errcap)
{
    char final[PATH_MAX], tmpdir[PATH_MAX], tarball[PATH_MAX], tag[24];
    wm_fmt(final, sizeof(final), "%s/code/%s", state_dir, sha);
    if (access(final, F_OK) == 0)
        return 0;
    faas_random_id(tag, sizeof(tag));
    wm_fmt(tmpdir, sizeof(tmpdir), "%s/code/.tmp-%s", state_dir, tag);
    wm_fmt(tarball, sizeof(tarball), "%s/code/.tmp-%s.tar.gz", state_dir, tag);
    if (mkdir(tmpdir, 0755) != 0) {
        wm_fmt(err, errcap, "cannot create code dir: %s", strerror(errno));
        return -1;
    }
    int rc = -1;
    char got[65];
    if (wm_fetch_blob(NULL, discovery, sha, tarball, "code", err, errcap) != 0)
        goto out;
    if (wm_sha256_file(tarball, got) != 0 || strcmp(got, sha) != 0) {
        wm_fmt(err, errcap, "code %.12s fetched from discovery does not match its sha256", sha);
        goto out;
    }
    if (untar(tarball, tmpdir, err, errcap) != 0)
        goto out;
    chmod(tmpdir, 0755);
    if (rename(tmpdir, final) != 0 && access(final, F_OK) != 0) {
        wm_fmt(err, errcap, "cannot move code into place: %s", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    unlink(tarball);
    if (access(tmpdir, F_OK) == 0)
        rm_tree(tmpdir);
    return rc;
}
