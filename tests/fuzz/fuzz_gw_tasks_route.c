// FUZZ_SOURCES: gateway/tasks_http.c gateway/route.c common/util.c
/* libFuzzer driver for the task routes (gw_task_route_parse) and task ids. Checks
 * what the server relies on: slices stay inside the input, every refusal says why,
 * /async-function/ routes exactly as /function/ does (same name, same rest, same
 * refusals), an id the router hands out is valid, and a path it calls OTHER is
 * neither "/tasks" nor under "/tasks/". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"

#define ASYNC "/async-function/"
#define ASYNC_LEN (sizeof(ASYNC) - 1)

static const char *g_base, *g_end;

static void inside(gw_slice_t s)
{
    if (s.ptr < g_base || s.ptr + s.len > g_end)
        abort();
}

static int own_id_check(const char *s, size_t len)
{
    if (len != 32)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789abcdef", s[i]) || s[i] == '\0')
            return 0;
    return 1;
}

/* The same path under /function/ must route the same way. */
static void same_as_function_route(const char *p, size_t size, int rc, const gw_task_route_t *r)
{
    int async = size >= ASYNC_LEN - 1 && memcmp(p, ASYNC, ASYNC_LEN - 1) == 0 &&
                (size == ASYNC_LEN - 1 || p[ASYNC_LEN - 1] == '/' || p[ASYNC_LEN - 1] == '?');
    if (!async)
        return;
    size_t tail = size - (ASYNC_LEN - 1);
    char *q = malloc(sizeof("/function") + tail);
    memcpy(q, "/function", 9);
    memcpy(q + 9, p + ASYNC_LEN - 1, tail);
    gw_slice_t name, rest;
    const char *err = NULL;
    int frc = gw_route_parse(q, 9 + tail, &name, &rest, &err);
    if ((frc == GW_ERR_MALFORMED) != (rc == GW_ERR_MALFORMED))
        abort();
    if (frc == GW_ROUTE_FUNCTION &&
        (rc != GW_TASK_ROUTE_SUBMIT || name.len != r->name.len || memcmp(name.ptr, r->name.ptr, name.len) != 0 ||
         rest.len != r->rest.len || memcmp(rest.ptr, r->rest.ptr, rest.len) != 0))
        abort();
    free(q);
}

static void check_query(const char *p, size_t size, const gw_task_route_t *r)
{
    const char *qm = memchr(p, '?', size);
    if (qm == NULL ? r->query.len != 0 : (r->query.ptr != qm + 1 || r->query.len != (size_t)(g_end - qm - 1)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        char id[33];
        if (gw_task_id_new(id) != 0 || !own_id_check(id, strlen(id)))
            abort();
        once = 1;
    }
    const char *p = (const char *)data;
    g_base = p;
    g_end = p + size;
    if (gw_task_id_valid(p, size) != own_id_check(p, size))
        abort();
    gw_task_route_t r;
    const char *err = NULL;
    int rc = gw_task_route_parse(p, size, &r, &err);
    inside(r.name), inside(r.rest), inside(r.id), inside(r.query);
    same_as_function_route(p, size, rc, &r);
    const char *qm = memchr(p, '?', size);
    size_t plen = qm != NULL ? (size_t)(qm - p) : size;
    switch (rc) {
    case GW_ERR_MALFORMED:
    case GW_TASK_ERR_BAD_ID:
    case GW_TASK_ERR_NOT_FOUND:
        if (err == NULL || err[0] == '\0')
            abort();
        if (rc == GW_TASK_ERR_BAD_ID && (plen < 7 || memcmp(p, "/tasks/", 7) != 0))
            abort();
        return 0;
    case GW_TASK_ROUTE_SUBMIT:
        if (r.rest.ptr + r.rest.len != g_end || (r.rest.len != 0 && r.rest.ptr[0] != '/' && r.rest.ptr[0] != '?'))
            abort();
        break;
    case GW_TASK_ROUTE_LIST:
        if (plen != 6 || memcmp(p, "/tasks", 6) != 0)
            abort();
        break;
    case GW_TASK_ROUTE_TASK:
    case GW_TASK_ROUTE_RESULT:
        if (r.id.ptr != p + 7 || !own_id_check(r.id.ptr, r.id.len) ||
            plen != 7 + 32 + (rc == GW_TASK_ROUTE_RESULT ? 7 : 0) ||
            (rc == GW_TASK_ROUTE_RESULT && memcmp(p + 39, "/result", 7) != 0))
            abort();
        break;
    case GW_TASK_ROUTE_OTHER:
        if ((plen == 6 && memcmp(p, "/tasks", 6) == 0) || (plen >= 7 && memcmp(p, "/tasks/", 7) == 0))
            abort();
        break;
    default:
        abort();
    }
    check_query(p, size, &r);
    return 0;
}
