/* deploy/internal.h - helpers shared by faasctl and faasd (not a public interface). */
#ifndef FAAS_DEPLOY_INTERNAL_H
#define FAAS_DEPLOY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One HTTP/1.1 request for `faasctl invoke`. headers are "Name: value" lines. */
typedef struct {
    const char *method;
    const char *host;
    uint16_t port;
    const char *path; /* origin-form, starting with '/' */
    const char **headers;
    size_t n_headers;
    const char *body; /* NULL = none */
    size_t body_len;
    int timeout_ms; /* whole exchange; 0 = 60 s */
    FILE *head;     /* if set, the status line and header lines are copied there, then an empty line */
} faas_http_req_t;

/* Sends req and copies the response body to out. 0 with *status set, or -1 with err. */
int faas_http_do(const faas_http_req_t *req, int *status, FILE *out, char *err, size_t errcap);
/* "http://host:port/prefix" -> host, port, prefix without a trailing '/'. 0 or -1 with *err. */
int faas_http_parse_url(const char *url, char *host, size_t hostcap, uint16_t *port, char *prefix, size_t prefcap,
                        const char **err);

/* ---- deploy/json.c: reading the gateway's task JSON (flat objects, one array) ---- */

/* The raw text of member key of the JSON object s[0..n): 0, or -1 if absent or malformed. */
int ctl_json_member(const char *s, size_t n, const char *key, const char **v, size_t *vn);
/* 1 if two keys of the JSON object s[0..n) are equal ignoring ASCII case, or a key has
 * an escape or a non-ASCII byte; 0 if not; -1 if it is malformed or has more than 256
 * members. Readers disagree on such keys (this file takes the first match as written;
 * Go's encoding/json, umoci's, decodes escapes, folds case and takes the last), so what
 * faasctl checks and what a worker unpacks must not be allowed to differ that way. */
int ctl_json_dup_key(const char *s, size_t n);
/* The next element of the JSON array s[0..n); *pos starts at 0. 1 with it, 0 at the end, -1 malformed. */
int ctl_json_next_item(const char *s, size_t n, size_t *pos, const char **v, size_t *vn);
/* A value as text: a string decoded (escapes, \u as UTF-8), null as "", anything else
 * as written; cut to cap - 1 bytes. */
void ctl_json_text(const char *v, size_t vn, char *out, size_t cap);

#endif
