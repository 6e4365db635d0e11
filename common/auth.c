/* common/auth.c - the platform token: making, reading and checking it. See auth.h. */
#include "common/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

int faas_token_generate(faas_token_t *t)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[FAAS_TOKEN_BYTES];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(raw); i++) {
        t->s[2 * i] = hex[raw[i] >> 4];
        t->s[2 * i + 1] = hex[raw[i] & 15];
    }
    t->s[FAAS_TOKEN_HEX_LEN] = '\0';
    t->len = FAAS_TOKEN_HEX_LEN;
    OPENSSL_cleanse(raw, sizeof(raw));
    return 0;
}

int faas_token_parse(const char *text, size_t n, faas_token_t *t, const char **err)
{
    if (n > 0 && text[n - 1] == '\n')
        n--;
    if (n > 0 && text[n - 1] == '\r')
        n--;
    if (n < FAAS_TOKEN_MIN_LEN || n > FAAS_TOKEN_MAX_LEN) {
        *err = "the token must be 32 to 256 characters";
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (text[i] <= ' ' || text[i] > '~') {
            *err = "the token must be visible ASCII without spaces";
            return -1;
        }
    memcpy(t->s, text, n);
    t->s[n] = '\0';
    t->len = n;
    return 0;
}

int faas_token_read_file(const char *path, faas_token_t *t, char *err, size_t errcap)
{
    char buf[FAAS_TOKEN_MAX_LEN + 8];
    const char *why = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errcap, "cannot read token file %s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t n = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        why = "not a regular file";
    else if ((st.st_mode & 077) != 0) /* like ssh keys: a readable token is a leaked one */
        why = "readable by other users (chmod 600 it)";
    else if ((n = read(fd, buf, sizeof(buf))) < 0)
        why = strerror(errno);
    close(fd);
    if (why == NULL)
        faas_token_parse(buf, (size_t)n, t, &why); /* sets why only when it fails */
    OPENSSL_cleanse(buf, sizeof(buf));
    if (why != NULL) {
        snprintf(err, errcap, "unusable token file %s: %s", path, why);
        return -1;
    }
    return 0;
}

/* Writes a fresh token into the new file fd; 0 or -1 (errno set). */
static int write_token(int fd)
{
    faas_token_t t;
    if (faas_token_generate(&t) != 0) {
        errno = EIO;
        return -1;
    }
    t.s[t.len] = '\n';
    ssize_t w = write(fd, t.s, t.len + 1);
    OPENSSL_cleanse(&t, sizeof(t));
    if (w != (ssize_t)FAAS_TOKEN_HEX_LEN + 1) {
        if (w >= 0)
            errno = EIO;
        return -1;
    }
    return fsync(fd);
}

int faas_token_create_file(const char *path, char *err, size_t errcap)
{
    char tmp[4096];
    if (access(path, F_OK) == 0)
        return 0;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp)) {
        snprintf(err, errcap, "token path too long: %s", path);
        return -1;
    }
    int rc = -1;
    int fd = mkstemp(tmp); /* 0600, O_EXCL */
    if (fd < 0) {
        snprintf(err, errcap, "cannot create token file %s: %s", path, strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0600) != 0 || write_token(fd) != 0) {
        snprintf(err, errcap, "cannot write token file %s: %s", tmp, strerror(errno));
        goto out;
    }
    /* link(2) fails with EEXIST instead of replacing: whoever links first wins and the
     * others read the winner's token */
    if (link(tmp, path) == 0)
        rc = 1;
    else if (errno == EEXIST)
        rc = 0;
    else
        snprintf(err, errcap, "cannot create token file %s: %s", path, strerror(errno));
out:
    close(fd);
    unlink(tmp);
    return rc;
}

int faas_token_load(const char *env, const char *flag_file, const char *default_file, faas_token_t *t,
                    const char **source, char *err, size_t errcap)
{
    const char *why;
    if (env != NULL && env[0] != '\0') {
        *source = FAAS_TOKEN_ENV;
        if (faas_token_parse(env, strlen(env), t, &why) == 0)
            return 0;
        snprintf(err, errcap, "unusable " FAAS_TOKEN_ENV ": %s", why);
        return -1;
    }
    *source = flag_file != NULL && flag_file[0] != '\0' ? flag_file : default_file;
    if (faas_token_read_file(*source, t, err, errcap) == 0)
        return 0;
    /* say what else would have worked: the reader may not know where tokens come from */
    size_t n = strlen(err);
    if (n + 1 < errcap)
        snprintf(err + n, errcap - n, " (set " FAAS_TOKEN_ENV " or --token-file)");
    return -1;
}

faas_auth_result_t faas_auth_check(const char *md, size_t mdlen, const faas_token_t *want)
{
    static const size_t sl = sizeof(FAAS_AUTH_SCHEME) - 1;
    if (md == NULL || mdlen == 0)
        return FAAS_AUTH_MISSING;
    if (mdlen <= sl || strncasecmp(md, FAAS_AUTH_SCHEME, sl) != 0)
        return FAAS_AUTH_MALFORMED;
    /* the length of the platform token is no secret (64 hex chars); its bytes are */
    if (mdlen - sl != want->len || CRYPTO_memcmp(md + sl, want->s, want->len) != 0)
        return FAAS_AUTH_WRONG;
    return FAAS_AUTH_OK;
}

const char *faas_auth_reason(faas_auth_result_t r)
{
    switch (r) {
    case FAAS_AUTH_OK:
        return "ok";
    case FAAS_AUTH_MISSING:
        return "missing platform token: this call needs \"authorization: Bearer <token>\" "
               "(faasctl: set FAAS_TOKEN or --token-file)";
    case FAAS_AUTH_MALFORMED:
        return "malformed authorization metadata: expected \"Bearer <platform token>\"";
    default:
        return "wrong platform token";
    }
}

const char *faas_auth_label(faas_auth_result_t r)
{
    static const char *labels[] = {"ok", "missing", "malformed", "wrong"};
    return r < FAAS_AUTH_N_REASONS ? labels[r] : "wrong";
}

/* The peer without its port: "ipv4:10.0.0.1:5555" -> "ipv4:10.0.0.1". */
static size_t peer_host_len(const char *peer)
{
    const char *colon = strrchr(peer, ':');
    size_t n = colon != NULL && colon != strchr(peer, ':') ? (size_t)(colon - peer) : strlen(peer);
    return n < 63 ? n : 63;
}

int faas_auth_log_allow(faas_auth_log_t *l, const char *peer, uint64_t now_ms, uint64_t interval_ms,
                        uint64_t *suppressed)
{
    size_t n = peer_host_len(peer);
    size_t oldest = 0;
    for (size_t i = 0; i < FAAS_AUTH_LOG_SLOTS; i++) {
        if (l->slot[i].peer[0] != '\0' && strncmp(l->slot[i].peer, peer, n) == 0 && l->slot[i].peer[n] == '\0') {
            if (now_ms - l->slot[i].last_ms < interval_ms) {
                l->slot[i].suppressed++;
                return 0;
            }
            *suppressed = l->slot[i].suppressed;
            l->slot[i].suppressed = 0;
            l->slot[i].last_ms = now_ms;
            return 1;
        }
        if (l->slot[oldest].peer[0] != '\0' &&
            (l->slot[i].peer[0] == '\0' || l->slot[i].last_ms < l->slot[oldest].last_ms))
            oldest = i;
    }
    /* a new peer takes the slot logged longest ago: many peers at once still log */
    memcpy(l->slot[oldest].peer, peer, n);
    l->slot[oldest].peer[n] = '\0';
    l->slot[oldest].last_ms = now_ms;
    *suppressed = l->slot[oldest].suppressed = 0;
    return 1;
}
