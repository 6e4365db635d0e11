// FUZZ_SOURCES: gateway/tasks_http.c gateway/route.c common/util.c
/* libFuzzer driver for the task JSON writers (gw_task_json, gw_task_list_json,
 * gw_task_accepted_json). The input's first bytes are the task's numbers, the rest
 * its strings split at NUL bytes (each its own allocation, so ASan sees a read past
 * one). Every output must be exactly as long as announced, NUL-free, strict RFC 8259
 * JSON in UTF-8 (checked by the small validator below, which knows nothing of the
 * writer) with the members the contract lists; a smaller buffer must receive a
 * NUL-terminated prefix of the same text and never a byte more. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"

/* ---- a strict JSON validator ---- */

typedef struct {
    const unsigned char *p, *end;
    int depth;
} jv_t;

static void ws(jv_t *v)
{
    while (v->p < v->end && (*v->p == ' ' || *v->p == '\t' || *v->p == '\n' || *v->p == '\r'))
        v->p++;
}

static int lit(jv_t *v, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(v->end - v->p) < n || memcmp(v->p, s, n) != 0)
        return 0;
    v->p += n;
    return 1;
}

static int hexd(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* One UTF-8 sequence of a raw string byte >= 0x80 (RFC 3629 table 2). */
static int utf8(jv_t *v)
{
    const unsigned char *p = v->p;
    size_t left = (size_t)(v->end - p), n;
    unsigned lo = 0x80, hi = 0xbf;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3, lo = p[0] == 0xe0 ? 0xa0 : 0x80, hi = p[0] == 0xed ? 0x9f : 0xbf;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4, lo = p[0] == 0xf0 ? 0x90 : 0x80, hi = p[0] == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (left < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    v->p += n;
    return 1;
}

static int string(jv_t *v)
{
    if (!lit(v, "\""))
        return 0;
    while (v->p < v->end && *v->p != '"') {
        unsigned char c = *v->p;
        if (c < 0x20)
            return 0;
        if (c >= 0x80) {
            if (!utf8(v))
                return 0;
            continue;
        }
        v->p++;
        if (c != '\\')
            continue;
        if (v->p == v->end)
            return 0;
        c = *v->p++;
        if (c == 'u') {
            if (v->end - v->p < 4 || !hexd(v->p[0]) || !hexd(v->p[1]) || !hexd(v->p[2]) || !hexd(v->p[3]))
                return 0;
            /* the writer escapes controls and U+FFFD only: never half a surrogate pair */
            if ((v->p[0] == 'd' || v->p[0] == 'D') && strchr("89abAB", v->p[1]) != NULL)
                return 0;
            v->p += 4;
        } else if (strchr("\"\\/bfnrt", c) == NULL || c == '\0') {
            return 0;
        }
    }
    return lit(v, "\"");
}

static int digits(jv_t *v)
{
    const unsigned char *s = v->p;
    while (v->p < v->end && *v->p >= '0' && *v->p <= '9')
        v->p++;
    return v->p > s;
}

static int number(jv_t *v)
{
    if (v->p < v->end && *v->p == '-')
        v->p++;
    if (v->p < v->end && *v->p == '0')
        v->p++;
    else if (!digits(v))
        return 0;
    if (v->p < v->end && *v->p == '.' && (v->p++, !digits(v)))
        return 0;
    if (v->p < v->end && (*v->p == 'e' || *v->p == 'E')) {
        v->p++;
        if (v->p < v->end && (*v->p == '+' || *v->p == '-'))
            v->p++;
        if (!digits(v))
            return 0;
    }
    return 1;
}

static int value(jv_t *v);

/* An object or array; *members counts its members. */
static int container(jv_t *v, int obj, int *members)
{
    if (++v->depth > 32)
        return 0;
    v->p++;
    ws(v);
    *members = 0;
    if (lit(v, obj ? "}" : "]"))
        return v->depth--, 1;
    for (;;) {
        ws(v);
        if (obj && (!string(v) || (ws(v), !lit(v, ":"))))
            return 0;
        ws(v);
        if (!value(v))
            return 0;
        ++*members;
        ws(v);
        if (lit(v, obj ? "}" : "]"))
            return v->depth--, 1;
        if (!lit(v, ","))
            return 0;
    }
}

static int value(jv_t *v)
{
    int m;
    if (v->p == v->end)
        return 0;
    switch (*v->p) {
    case '{':
        return container(v, 1, &m);
    case '[':
        return container(v, 0, &m);
    case '"':
        return string(v);
    case 't':
        return lit(v, "true");
    case 'f':
        return lit(v, "false");
    case 'n':
        return lit(v, "null");
    default:
        return number(v);
    }
}

/* 1 if s[0..n) is one JSON object of `members` members and nothing else. */
static int json_object(const char *s, size_t n, int members)
{
    jv_t v = {(const unsigned char *)s, (const unsigned char *)s + n, 0};
    int m;
    ws(&v);
    if (v.p == v.end || *v.p != '{' || !container(&v, 1, &m) || m != members)
        return 0;
    ws(&v);
    return v.p == v.end;
}

/* ---- the driver ---- */

typedef size_t (*writer_t)(const void *arg, char *out, size_t cap);

static size_t w_task(const void *a, char *o, size_t c)
{
    return gw_task_json(a, o, c);
}
static size_t w_list(const void *a, char *o, size_t c)
{
    return gw_task_list_json(a, o, c);
}
static size_t w_accepted(const void *a, char *o, size_t c)
{
    return gw_task_accepted_json(a, o, c);
}

/* Writes with exactly-sized buffers (ASan catches a byte more) and a short one. */
static void check(writer_t w, const void *arg, int members, size_t small)
{
    size_t need = w(arg, NULL, 0);
    char *out = malloc(need + 1);
    if (w(arg, out, need + 1) != need || strlen(out) != need || !json_object(out, need, members))
        abort();
    small = small % (need + 1) + 1; /* 1..need+1 */
    char *part = malloc(small);
    if (w(arg, part, small) != need || strlen(part) != small - 1 || memcmp(part, out, small - 1) != 0)
        abort();
    free(part);
    free(out);
}

static uint64_t take(const uint8_t **d, size_t *n, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = 0; i<bytes && * n> 0; i++, (*d)++, (*n)--)
        v = v << 8 | **d;
    return v;
}

/* The next NUL-terminated piece of the input as its own allocation. */
static char *piece(const uint8_t **d, size_t *n)
{
    const uint8_t *z = memchr(*d, 0, *n);
    size_t len = z != NULL ? (size_t)(z - *d) : *n;
    char *s = malloc(len + 1);
    memcpy(s, *d, len);
    s[len] = '\0';
    *d += len + (z != NULL);
    *n -= len + (z != NULL);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Faas__Task t = FAAS__TASK__INIT;
    t.version = take(&data, &size, 8);
    t.status = (Faas__Task__Status)(int32_t)take(&data, &size, 1) - 1; /* -1..254 */
    t.attempts = (uint32_t)take(&data, &size, 4);
    t.created_unix_ms = (int64_t)take(&data, &size, 8);
    t.started_unix_ms = (int64_t)take(&data, &size, 6) - (1ll << 40);
    t.finished_unix_ms = (int64_t)take(&data, &size, 5);
    t.result_status = (uint32_t)take(&data, &size, 2);
    t.result_size = take(&data, &size, 8);
    size_t small = (size_t)take(&data, &size, 2), ntasks = (size_t)take(&data, &size, 1) % 4;
    t.callback_attempts = (uint32_t)take(&data, &size, 4);
    t.cancel_requested = (protobuf_c_boolean)(take(&data, &size, 1) & 1);
    char *s[7];
    for (int i = 0; i < 7; i++)
        s[i] = piece(&data, &size);
    t.id = s[0], t.function = s[1], t.error = s[2], t.callback_url = s[3], t.callback_status = s[4];
    t.instance_id = s[6];

    check(w_task, &t, 16, small);
    check(w_accepted, t.id, 2, small);
    Faas__Task *tasks[3] = {&t, &t, &t};
    Faas__TaskList l = FAAS__TASK_LIST__INIT;
    l.n_tasks = ntasks;
    l.tasks = tasks;
    l.next = s[5];
    check(w_list, &l, 2, small);
    for (int i = 0; i < 7; i++)
        free(s[i]);
    return 0;
}
