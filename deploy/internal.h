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
} faas_http_req_t;

/* Sends req and copies the response body to out. 0 with *status set, or -1 with err. */
int faas_http_do(const faas_http_req_t *req, int *status, FILE *out, char *err, size_t errcap);
/* "http://host:port/prefix" -> host, port, prefix without a trailing '/'. 0 or -1 with *err. */
int faas_http_parse_url(const char *url, char *host, size_t hostcap, uint16_t *port, char *prefix, size_t prefcap,
                        const char **err);

#endif
