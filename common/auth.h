/* common/auth.h - the platform token that every discovery and worker-manager call
 * carries (docs/security.md "Control-plane credentials").
 *
 * The token is 32 random bytes in hex, made by discovery at its first start in
 * <its state dir>/token (0600). Daemons and faasctl take it from FAAS_TOKEN, else
 * from --token-file, else from a default path. On the wire it is the gRPC metadata
 * "authorization: Bearer <token>". Everything here but the file and RNG helpers is
 * pure, so it is unit-tested and the rules live once. */
#ifndef FAAS_AUTH_H
#define FAAS_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* What a generated token looks like: 32 bytes, 64 hex chars. */
#define FAAS_TOKEN_BYTES 32
#define FAAS_TOKEN_HEX_LEN (2 * FAAS_TOKEN_BYTES)
/* What an operator's own token (FAAS_TOKEN) may be: visible ASCII, no spaces; long
 * enough that guessing is hopeless, short enough for one header. */
#define FAAS_TOKEN_MIN_LEN 32
#define FAAS_TOKEN_MAX_LEN 256
/* The metadata key and the scheme in front of the token. */
#define FAAS_AUTH_MD_KEY "authorization"
#define FAAS_AUTH_SCHEME "Bearer "
/* The environment variable that overrides every token file. */
#define FAAS_TOKEN_ENV "FAAS_TOKEN"

typedef struct {
    char s[FAAS_TOKEN_MAX_LEN + 1]; /* NUL-terminated */
    size_t len;
} faas_token_t;

/* Why a call is refused; FAAS_AUTH_OK when it is not. */
typedef enum {
    FAAS_AUTH_OK = 0,
    FAAS_AUTH_MISSING,   /* no authorization metadata */
    FAAS_AUTH_MALFORMED, /* present, but not "Bearer <token>" */
    FAAS_AUTH_WRONG,     /* a token, not the platform's */
    FAAS_AUTH_N_REASONS,
} faas_auth_result_t;

/* Fills t with a fresh random token (OpenSSL's RAND_bytes); 0 or -1. */
int faas_token_generate(faas_token_t *t);
/* Takes a token from text[0..n): one trailing newline (a file's) is dropped, the rest
 * must be FAAS_TOKEN_MIN_LEN..MAX_LEN visible ASCII chars. 0, or -1 with *err set. */
int faas_token_parse(const char *text, size_t n, faas_token_t *t, const char **err);
/* Reads and parses the token file at path; 0, or -1 with a sentence in err. */
int faas_token_read_file(const char *path, faas_token_t *t, char *err, size_t errcap);
/* Makes the token file at path if there is none: a fresh token written to a
 * temporary 0600 file in the same directory and linked into place, so a reader never
 * sees half a token and two creators cannot both win. 1 created, 0 already there,
 * -1 with a sentence in err. */
int faas_token_create_file(const char *path, char *err, size_t errcap);
/* The token a process uses: env (FAAS_TOKEN's value) if set and non-empty, else the
 * file flag_file (--token-file) if given, else default_file. *source names where it
 * came from (for the start-up log; never the token). 0, or -1 with a sentence in err. */
int faas_token_load(const char *env, const char *flag_file, const char *default_file, faas_token_t *t,
                    const char **source, char *err, size_t errcap);

/* Judges the authorization metadata value md[0..mdlen) (md NULL: none was sent)
 * against the platform token, in time independent of where they differ. */
faas_auth_result_t faas_auth_check(const char *md, size_t mdlen, const faas_token_t *want);
/* The one-line status message for a refusal. */
const char *faas_auth_reason(faas_auth_result_t r);
/* The short label of a refusal in metrics and logs: "missing", "malformed", "wrong". */
const char *faas_auth_label(faas_auth_result_t r);

/* Remembers the last few peers a refusal was logged for, so a client that retries in
 * a loop costs one log line per peer per interval, not one per call. */
#define FAAS_AUTH_LOG_SLOTS 16
typedef struct {
    struct {
        char peer[64];
        uint64_t last_ms;
        uint64_t suppressed;
    } slot[FAAS_AUTH_LOG_SLOTS];
} faas_auth_log_t;
/* 1 if a refusal from peer ("ipv4:10.0.0.1:5555"; the port is ignored, a client's
 * ports change per connection) should be logged at now_ms, else 0 (and counted). On
 * 1, *suppressed is how many were not logged for that peer since its last line. */
int faas_auth_log_allow(faas_auth_log_t *l, const char *peer, uint64_t now_ms, uint64_t interval_ms,
                        uint64_t *suppressed);

#endif
