// FUZZ_SOURCES: dispatcher/callback_req.c common/util.c
// FUZZ_PKGS: libh2o-evloop libnghttp2 libprotobuf-c
/* libFuzzer driver for the callback POST's request (dispatcher/callback_req.c). The
 * input is cut at NUL bytes into a URL, an error string and header name/value pairs:
 * the function's own result headers and the task's error flow into the request, so a
 * hostile function controls them. An accepted URL splits within its bounds; the request
 * head built from anything is well formed: a request line, then "name: value" lines of
 * token names and values without CR or LF, one blank line at the very end, and a
 * content-length equal to the body's size. disp_cb_sanitize keeps within cap and
 * writes only visible ASCII and spaces. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dispatcher/internal.h"

#define MAX_HDRS 16

static char *piece(const uint8_t **d, size_t *n)
{
    const uint8_t *z = memchr(*d, 0, *n);
    size_t len = z ? (size_t)(z - *d) : *n;
    char *s = malloc(len + 1);
    if (s == NULL)
        abort();
    memcpy(s, *d, len);
    s[len] = '\0';
    *d += len + (z != NULL);
    *n -= len + (z != NULL);
    return s;
}

static int tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

/* Aborts unless head is request line + header lines + CRLF, with content-length = body. */
static void check_head(const char *h, size_t len, size_t body)
{
    if (strlen(h) != len || len < 4 || memcmp(h + len - 4, "\r\n\r\n", 4) != 0 || strncmp(h, "POST ", 5) != 0)
        abort();
    const char *line = strstr(h, "\r\n") + 2, *end = h + len - 2;
    int cl = 0;
    while (line < end) {
        const char *eol = strstr(line, "\r\n");
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (eol == NULL || colon == NULL || colon == line || colon[1] != ' ')
            abort();
        for (const char *p = line; p < colon; p++)
            if (!tchar((unsigned char)*p))
                abort();
        for (const char *p = colon + 2; p < eol; p++)
            if (*p == '\r' || *p == '\n' || *p == '\0')
                abort();
        if (colon - line == 14 && strncasecmp(line, "content-length", 14) == 0) {
            cl++;
            if (strtoull(colon + 2, NULL, 10) != body)
                abort();
        }
        line = eol + 2;
    }
    if (cl != 1)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int status = data[0] % 6 - 1; /* -1..4: unknown and every Task status */
    int with_result = data[1] & 1;
    data += 2, size -= 2;
    char *url = piece(&data, &size), *error = piece(&data, &size);
    char *names[MAX_HDRS], *values[MAX_HDRS];
    Faas__KeyValue kv[MAX_HDRS], *kvp[MAX_HDRS];
    size_t n = 0;
    while (size > 0 && n < MAX_HDRS) {
        names[n] = piece(&data, &size), values[n] = piece(&data, &size);
        faas__key_value__init(&kv[n]);
        kv[n].key = names[n], kv[n].value = values[n], kvp[n] = &kv[n];
        n++;
    }

    char clean[64];
    size_t cl = disp_cb_sanitize(clean, sizeof(clean), error);
    if (cl >= sizeof(clean) || strlen(clean) != cl)
        abort();
    for (size_t i = 0; i < cl; i++)
        if (clean[i] < 0x20 || clean[i] > 0x7e)
            abort();

    disp_cb_url_t u;
    const char *err = NULL;
    if (disp_cb_url_parse(url, &u, &err) != 0) {
        if (err == NULL || *err == '\0')
            abort();
    } else {
        if (u.port == 0 || strlen(u.host) >= sizeof(u.host) || u.authority_len > strlen(url) ||
            u.target_len > strlen(url))
            abort();
        Faas__Task t = FAAS__TASK__INIT;
        t.id = "0123456789abcdef0123456789abcdef";
        t.status = (Faas__Task__Status)status;
        t.error = error;
        Faas__TaskResult r = FAAS__TASK_RESULT__INIT;
        r.status = 201;
        r.n_headers = n, r.headers = kvp;
        r.body.data = (uint8_t *)url, r.body.len = strlen(url);
        size_t len;
        char *head = disp_cb_request_head(&u, &t, with_result ? &r : NULL, &len);
        if (head == NULL)
            abort();
        check_head(head, len, with_result ? r.body.len : 0);
        free(head);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]), free(values[i]);
    free(url);
    free(error);
    return 0;
}
