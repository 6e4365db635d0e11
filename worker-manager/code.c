/* code.c - the host's code cache: <state>/code/<sha256>/, fetched once from discovery.
 *
 * Blocking (rpc client, tar): runs on its own thread, never on the pod thread. */
#include "worker-manager/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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

/* ---- sha256 (FIPS 180-4), small enough not to pull a crypto library in ---- */

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t n;
} sha_t;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(sha_t *s, const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

static void sha_init(sha_t *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof(iv));
    s->len = 0;
    s->n = 0;
}

static void sha_update(sha_t *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->len += len;
    while (len > 0) {
        size_t take = 64 - s->n < len ? 64 - s->n : len;
        memcpy(s->buf + s->n, p, take);
        s->n += take;
        p += take;
        len -= take;
        if (s->n == 64) {
            sha_block(s, s->buf);
            s->n = 0;
        }
    }
}

static void sha_final(sha_t *s, char *hex)
{
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80, zero = 0;
    sha_update(s, &pad, 1);
    while (s->n != 56)
        sha_update(s, &zero, 1);
    uint8_t l[8];
    for (int i = 0; i < 8; i++)
        l[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, l, 8);
    for (int i = 0; i < 8; i++)
        sprintf(hex + 8 * i, "%08x", s->h[i]);
}

void wm_sha256_hex(const void *data, size_t len, char *hex)
{
    sha_t s;
    sha_init(&s);
    sha_update(&s, data, len);
    sha_final(&s, hex);
}

int wm_sha256_file(const char *path, char *hex)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    sha_t s;
    sha_init(&s);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        sha_update(&s, buf, (size_t)n);
    close(fd);
    if (n < 0)
        return -1;
    sha_final(&s, hex);
    return 0;
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

static int fetch(const char *discovery, const char *sha, const char *tmpfile, char *err, size_t errcap)
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
    faas_rpc_channel_t *ch = faas_rpc_channel_open(discovery);
    char ebuf[256] = "";
    int rc = req && ch ? faas_rpc_server_stream(ch, "/faas.Discovery/FetchCode", req, len, 60000, on_chunk, &f, ebuf,
                                                sizeof(ebuf))
                       : -1;
    if (ch)
        faas_rpc_channel_close(ch);
    free(req);
    if (close(f.fd) != 0)
        f.failed = 1;
    if (rc != 0 || f.failed) {
        /* the transport's message names addresses: it goes to the log, not to the caller */
        FAAS_WARN("event=code_fetch_failed sha256=%s rc=%d err=\"%s\"", sha, rc, ebuf[0] ? ebuf : "write error");
        wm_fmt(err, errcap, "could not fetch code %.12s from discovery%s", sha,
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
    if (fetch(discovery, sha, tarball, err, errcap) != 0)
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
