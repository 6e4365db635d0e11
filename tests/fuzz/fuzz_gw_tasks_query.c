// FUZZ_SOURCES: gateway/tasks_http.c gateway/route.c common/util.c
/* libFuzzer driver for the task API's header and query parsers, each fed the whole
 * input: gw_tasks_query_parse (an accepted query is within bounds and writing it
 * back canonically parses to the same thing), gw_prefer_respond_async (a preference
 * listed before the value never changes the answer; respond-async listed first always
 * wins) and gw_callback_url_check (an accepted URL cannot break a request line or a
 * header, names no user and stays within the length limit). Refusals say why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/gateway.h"

static void check_err(const char *err)
{
    if (err == NULL || err[0] == '\0')
        abort();
    for (const char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            abort();
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return 1;
}

static void check_query(const char *p, size_t size)
{
    gw_tasks_query_t q, q2;
    const char *err = NULL;
    int rc = gw_tasks_query_parse(p, size, &q, &err);
    if (rc == GW_ERR_MALFORMED) {
        check_err(err);
        return;
    }
    if (rc != 0)
        abort();
    if ((q.function[0] != '\0' && !name_ok(q.function)) || q.limit < 1 || q.limit > 1000 ||
        (q.by_status && ((int)q.status < 0 || (int)q.status > 4)) ||
        (q.after[0] != '\0' && !gw_task_id_valid(q.after, strlen(q.after))))
        abort();
    char canon[256];
    int n = snprintf(canon, sizeof(canon), "limit=%u&status=%s&function=%s&after=%s", (unsigned)q.limit,
                     q.by_status ? gw_task_status_name(q.status) : "", q.function, q.after);
    /* empty values are refused, so leave out what was not given */
    char *pieces[4], buf[256];
    size_t k = 0, o = 0;
    memcpy(buf, canon, (size_t)n + 1);
    for (char *tok = strtok(buf, "&"); tok != NULL; tok = strtok(NULL, "&"))
        if (tok[strlen(tok) - 1] != '=')
            pieces[k++] = tok;
    for (size_t i = 0; i < k; i++)
        o += (size_t)snprintf(canon + o, sizeof(canon) - o, "%s%s", i ? "&" : "", pieces[i]);
    if (gw_tasks_query_parse(canon, o, &q2, &err) != 0 || memcmp(&q, &q2, sizeof(q)) != 0)
        abort();
}

static void check_prefer(const char *p, size_t size)
{
    int rc = gw_prefer_respond_async(p, size);
    if (rc != 0 && rc != 1)
        abort();
    char *b = malloc(size + 32);
    memcpy(b, "wait=5;x=\"y,z\", ", 16);
    memcpy(b + 16, p, size);
    if (gw_prefer_respond_async(b, size + 16) != rc)
        abort();
    memcpy(b, "Respond-Async; a, ", 18);
    memcpy(b + 18, p, size);
    if (gw_prefer_respond_async(b, size + 18) != 1)
        abort();
    free(b);
}

static void check_url(const char *p, size_t size)
{
    const char *err = NULL;
    int rc = gw_callback_url_check(p, size, &err);
    if (rc == GW_ERR_MALFORMED) {
        check_err(err);
        return;
    }
    if (rc != 0 || size > GW_CALLBACK_URL_MAX)
        abort();
    size_t s = size >= 7 && strncasecmp(p, "http://", 7) == 0    ? 7
               : size >= 8 && strncasecmp(p, "https://", 8) == 0 ? 8
                                                                 : 0;
    if (s == 0 || s >= size || p[s] == '/' || p[s] == '?' || p[s] == ':')
        abort();
    for (size_t i = 0; i < size; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f || p[i] == '#' || p[i] == '"' || p[i] == '\\')
            abort();
    size_t e = s;
    while (e < size && p[e] != '/' && p[e] != '?')
        e++;
    if (memchr(p + s, '@', e - s) != NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    check_query(p, size);
    check_prefer(p, size);
    check_url(p, size);
    return 0;
}
