/* gateway/tasks_http.c - the pure pieces of the async task API (docs/async.md): task
 * routes, ids, the GET /tasks query, Prefer: respond-async, X-Callback-Url, and the
 * JSON the gateway answers with. No allocation and no I/O (gw_task_id_new reads the
 * kernel's randomness, nothing else), so the server can call them from its loop and
 * tests/fuzz can drive them. */
#include "gateway/gateway.h"
#include "gateway/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/spec.h"
#include "common/util.h"

#define ASYNC_PREFIX "/async-function/"
#define TASKS_PREFIX "/tasks"
#define LIT_LEN(s) (sizeof(s) - 1)
#define TASK_ID_LEN 32

/* ---- routes ---------------------------------------------------------------------- */

static gw_slice_t slice(const char *p, size_t len)
{
    gw_slice_t s = {p, len};
    return s;
}

/* /tasks, /tasks/<id>, /tasks/<id>/result; path already passed the byte check. */
static int tasks_route(const char *path, size_t len, gw_task_route_t *r, const char **err)
{
    const char *qm = memchr(path, '?', len);
    size_t q = qm != NULL ? (size_t)(qm - path) : len;
    if (qm != NULL)
        r->query = slice(qm + 1, len - q - 1);
    if (q < LIT_LEN(TASKS_PREFIX) || memcmp(path, TASKS_PREFIX, LIT_LEN(TASKS_PREFIX)) != 0)
        return GW_TASK_ROUTE_OTHER;
    size_t s = LIT_LEN(TASKS_PREFIX);
    if (q == s)
        return GW_TASK_ROUTE_LIST;
    if (path[s] != '/')
        return GW_TASK_ROUTE_OTHER; /* "/tasksfoo" */
    size_t e = ++s;
    while (e < q && path[e] != '/')
        e++;
    r->id = slice(path + s, e - s);
    if (!gw_task_id_valid(r->id.ptr, r->id.len)) {
        *err = "task id must be 32 lowercase hex characters";
        return GW_TASK_ERR_BAD_ID;
    }
    if (e == q)
        return GW_TASK_ROUTE_TASK;
    if (q - e == LIT_LEN("/result") && memcmp(path + e, "/result", LIT_LEN("/result")) == 0)
        return GW_TASK_ROUTE_RESULT;
    *err = "a task has no such resource: only /tasks/<id> and /tasks/<id>/result";
    return GW_TASK_ERR_NOT_FOUND;
}

int gw_task_route_parse(const char *path, size_t len, gw_task_route_t *r, const char **err)
{
    r->name = r->rest = r->id = r->query = slice(path, 0);
    int rc = gw_route_under(path, len, ASYNC_PREFIX, LIT_LEN(ASYNC_PREFIX),
                            "missing function name after /async-function/", &r->name, &r->rest, err);
    if (rc == GW_ERR_MALFORMED)
        return GW_ERR_MALFORMED;
    if (rc == GW_ROUTE_FUNCTION) {
        const char *qm = memchr(r->rest.ptr, '?', r->rest.len);
        if (qm != NULL)
            r->query = slice(qm + 1, (size_t)(path + len - qm - 1));
        return GW_TASK_ROUTE_SUBMIT;
    }
    return tasks_route(path, len, r, err);
}

/* ---- ids ----------------------------------------------------------------------------- */

int gw_task_id_valid(const char *s, size_t len)
{
    if (len != TASK_ID_LEN)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Kernels before 3.17 have no getrandom(2); their /dev/urandom is the same pool. */
static int read_urandom(uint8_t *b, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = -1;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO;
            goto out;
        }
        got += (size_t)r;
    }
    rc = 0;
out:;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static int fill_random(uint8_t *b, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(b + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == ENOSYS)
            return read_urandom(b + got, n - got);
        if (r == 0)
            errno = EIO;
        return -1;
    }
    return 0;
}

int gw_task_id_new(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[TASK_ID_LEN / 2];
    /* ids are guessable capabilities for a task's result: no fallback to a PRNG */
    if (fill_random(b, sizeof(b)) != 0) {
        out[0] = '\0';
        return -1;
    }
    for (size_t i = 0; i < sizeof(b); i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[TASK_ID_LEN] = '\0';
    return 0;
}

/* ---- GET /tasks query ------------------------------------------------------------------ */

static const char *const status_names[] = {
    [FAAS__TASK__STATUS__QUEUED] = "queued",       [FAAS__TASK__STATUS__RUNNING] = "running",
    [FAAS__TASK__STATUS__SUCCEEDED] = "succeeded", [FAAS__TASK__STATUS__FAILED] = "failed",
    [FAAS__TASK__STATUS__CANCELLED] = "cancelled",
};
#define N_STATUS (sizeof(status_names) / sizeof(status_names[0]))

const char *gw_task_status_name(int status)
{
    if (status < 0 || (size_t)status >= N_STATUS)
        return "unknown";
    return status_names[status];
}

/* Percent-decodes s into out (cap bytes, no NUL); -1 with *err on a broken escape or
 * a value longer than cap (no key or value of this query is longer than an id). */
static int pct_decode(const char *s, size_t n, char *out, size_t cap, size_t *olen, const char **err)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++, o++) {
        if (o == cap) {
            *err = "a query parameter is too long";
            return -1;
        }
        char c = s[i];
        if (c == '%') {
            int h = i + 2 < n ? faas_hexval(s[i + 1]) : -1, l = h >= 0 ? faas_hexval(s[i + 2]) : -1;
            if (l < 0) {
                *err = "the query has a '%' not followed by two hex digits";
                return -1;
            }
            c = (char)(h << 4 | l);
            i += 2;
        } else if (c == '+') {
            c = ' '; /* form encoding, what browsers and curl --data-urlencode send */
        }
        out[o] = c;
    }
    *olen = o;
    return 0;
}

static int q_function(const char *v, size_t n, gw_tasks_query_t *q, const char **err)
{
    if (gw_route_name_check(v, n, err) != 0)
        return -1;
    memcpy(q->function, v, n);
    q->function[n] = '\0';
    return 0;
}

static int q_status(const char *v, size_t n, gw_tasks_query_t *q, const char **err)
{
    for (size_t k = 0; k < N_STATUS; k++) {
        if (strlen(status_names[k]) == n && memcmp(v, status_names[k], n) == 0) {
            q->by_status = 1;
            q->status = (Faas__Task__Status)k;
            return 0;
        }
    }
    *err = "status must be queued, running, succeeded, failed or cancelled";
    return -1;
}

static int q_limit(const char *v, size_t n, gw_tasks_query_t *q, const char **err)
{
    uint32_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || (x = x * 10 + (uint32_t)(v[i] - '0')) > FAAS_TASK_LIST_LIMIT)
            goto bad;
    }
    if (n == 0 || x == 0)
        goto bad;
    q->limit = x;
    return 0;
bad:
    *err = "limit must be a whole number from 1 to " FAAS_SPEC_STR(FAAS_TASK_LIST_LIMIT);
    return -1;
}

static int q_after(const char *v, size_t n, gw_tasks_query_t *q, const char **err)
{
    if (!gw_task_id_valid(v, n)) {
        *err = "after must be a task id (32 lowercase hex characters)";
        return -1;
    }
    memcpy(q->after, v, n);
    q->after[n] = '\0';
    return 0;
}

static const struct {
    const char *key;
    const char *twice;
    int (*set)(const char *v, size_t n, gw_tasks_query_t *q, const char **err);
} query_keys[] = {
    {"function", "function is given twice", q_function},
    {"status", "status is given twice", q_status},
    {"limit", "limit is given twice", q_limit},
    {"after", "after is given twice", q_after},
};

/* One "key=value" of the query; seen has a bit per key already given. */
static int query_pair(const char *s, size_t n, gw_tasks_query_t *q, unsigned *seen, const char **err)
{
    char key[16], val[72]; /* longer than any valid value, so its check says why */
    size_t klen, vlen;
    const char *eq = memchr(s, '=', n);
    if (eq == NULL) {
        *err = "a query parameter has no '=<value>'";
        return -1;
    }
    if (pct_decode(s, (size_t)(eq - s), key, sizeof(key), &klen, err) != 0 ||
        pct_decode(eq + 1, (size_t)(s + n - eq - 1), val, sizeof(val) - 1, &vlen, err) != 0)
        return -1;
    for (size_t k = 0; k < sizeof(query_keys) / sizeof(query_keys[0]); k++) {
        if (strlen(query_keys[k].key) != klen || memcmp(key, query_keys[k].key, klen) != 0)
            continue;
        if (*seen & (1u << k)) {
            *err = query_keys[k].twice;
            return -1;
        }
        *seen |= 1u << k;
        return query_keys[k].set(val, vlen, q, err);
    }
    *err = "unknown query parameter: the known ones are function, status, limit and after";
    return -1;
}

int gw_tasks_query_parse(const char *query, size_t len, gw_tasks_query_t *out, const char **err)
{
    memset(out, 0, sizeof(*out));
    out->limit = FAAS_TASK_LIST_DEFAULT_LIMIT;
    unsigned seen = 0;
    for (size_t i = 0; i <= len;) {
        const char *amp = memchr(query + i, '&', len - i);
        size_t e = amp != NULL ? (size_t)(amp - query) : len;
        /* "a=1&&b=2" and a trailing '&' are what clients building queries produce */
        if (e > i && query_pair(query + i, e - i, out, &seen, err) != 0)
            return GW_ERR_MALFORMED;
        i = e + 1;
    }
    return 0;
}

/* ---- Prefer (RFC 7240) ------------------------------------------------------------------ */

/* RFC 7230 tchar */
static int tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static size_t skip_ows(const char *v, size_t i, size_t len)
{
    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    return i;
}

/* From i to the ',' that ends the preference (or len); a quoted string may hold ',' */
static size_t skip_preference(const char *v, size_t i, size_t len)
{
    int quoted = 0;
    for (; i < len; i++) {
        if (quoted && v[i] == '\\')
            i++;
        else if (v[i] == '"')
            quoted = !quoted;
        else if (!quoted && v[i] == ',')
            break;
    }
    return i < len ? i : len;
}

int gw_prefer_respond_async(const char *value, size_t len)
{
    static const char want[] = "respond-async";
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t s = i;
        while (i < len && tchar((unsigned char)value[i]))
            i++;
        size_t after = skip_ows(value, i, len);
        /* the preference's own token only: a parameter named respond-async is not one */
        if (i - s == LIT_LEN(want) && strncasecmp(value + s, want, LIT_LEN(want)) == 0 &&
            (after == len || value[after] == ',' || value[after] == ';' || value[after] == '='))
            return 1;
        i = skip_preference(value, i, len);
    }
    return 0;
}

/* ---- X-Callback-Url ------------------------------------------------------------------------ */

static int bad(const char **err, const char *why)
{
    *err = why;
    return GW_ERR_MALFORMED;
}

static int is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A registered name (letters, digits, '-', '_', dots between labels) or [IPv6]. */
static int url_host(const char *h, size_t n, const char **err)
{
    if (n == 0)
        return bad(err, "callback URL has no host");
    if (h[0] == '[') {
        if (n < 4 || h[n - 1] != ']' || memchr(h, ':', n) == NULL)
            return bad(err, "callback URL has a malformed IPv6 literal");
        for (size_t i = 1; i + 1 < n; i++)
            if (faas_hexval(h[i]) < 0 && h[i] != ':' && h[i] != '.')
                return bad(err, "callback URL has a malformed IPv6 literal");
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '.' && (i == 0 || h[i - 1] == '.'))
            return bad(err, "callback URL host has an empty label");
        if (!is_alnum(c) && c != '-' && c != '_' && c != '.')
            return bad(err, "callback URL host may hold only letters, digits, '-', '_' and '.'");
    }
    return 0;
}

static int url_authority(const char *a, size_t n, const char **err)
{
    if (memchr(a, '@', n) != NULL)
        return bad(err, "callback URL must not carry user information");
    /* the port's ':' is the last one after any IPv6 literal's ']' */
    const char *close = n > 0 && a[0] == '[' ? memchr(a, ']', n) : NULL;
    size_t from = close != NULL ? (size_t)(close - a) : 0, hlen = n;
    const char *colon = memchr(a + from, ':', n - from);
    if (colon != NULL)
        hlen = (size_t)(colon - a);
    if (url_host(a, hlen, err) != 0)
        return GW_ERR_MALFORMED;
    if (colon == NULL)
        return 0;
    uint32_t port = 0;
    size_t plen = n - hlen - 1;
    for (size_t i = hlen + 1; i < n && plen <= 5; i++) {
        if (a[i] < '0' || a[i] > '9')
            return bad(err, "callback URL port must be a number from 1 to 65535");
        port = port * 10 + (uint32_t)(a[i] - '0');
    }
    if (plen == 0 || plen > 5 || port == 0 || port > 65535)
        return bad(err, "callback URL port must be a number from 1 to 65535");
    return 0;
}

/* RFC 3986 path-abempty [ "?" query ]: pchar, '/', '?', and %XX escapes. */
static int url_path(const char *p, size_t n, const char **err)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '#')
            return bad(err, "callback URL must not carry a fragment");
        if (c == '%') {
            if (i + 2 >= n || faas_hexval(p[i + 1]) < 0 || faas_hexval(p[i + 2]) < 0)
                return bad(err, "callback URL has a '%' not followed by two hex digits");
            i += 2;
            continue;
        }
        if (!is_alnum(c) && strchr("-._~!$&'()*+,;=:@/?", c) == NULL)
            return bad(err, "callback URL path has a character RFC 3986 does not allow");
    }
    return 0;
}

int gw_callback_url_check(const char *url, size_t len, const char **err)
{
    if (len == 0)
        return bad(err, "callback URL is empty");
    if (len > GW_CALLBACK_URL_MAX)
        return bad(err, "callback URL is longer than " FAAS_SPEC_STR(GW_CALLBACK_URL_MAX) " bytes");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return bad(err, "callback URL has a space, a control or a non-ASCII byte");
    size_t s;
    if (len >= LIT_LEN("http://") && strncasecmp(url, "http://", LIT_LEN("http://")) == 0)
        s = LIT_LEN("http://");
    else if (len >= LIT_LEN("https://") && strncasecmp(url, "https://", LIT_LEN("https://")) == 0)
        s = LIT_LEN("https://");
    else
        return bad(err, "callback URL must be an absolute http:// or https:// URL");
    size_t e = s;
    while (e < len && url[e] != '/' && url[e] != '?' && url[e] != '#')
        e++;
    if (url_authority(url + s, e - s, err) != 0)
        return GW_ERR_MALFORMED;
    return url_path(url + e, len - e, err);
}

/* ---- JSON ----------------------------------------------------------------------------------- */

/* An snprintf-like writer: n counts every byte the output needs, only cap are kept. */
typedef struct {
    char *out;
    size_t cap;
    size_t n;
} jw_t;

static void put(jw_t *w, const char *s, size_t len)
{
    if (w->n < w->cap) {
        size_t room = w->cap - w->n;
        memcpy(w->out + w->n, s, len < room ? len : room);
    }
    w->n += len;
}

#define PUT_LIT(w, s) put(w, s, LIT_LEN(s))

static size_t finish(jw_t *w)
{
    if (w->cap > 0)
        w->out[w->n < w->cap ? w->n : w->cap - 1] = '\0';
    return w->n;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0], cp, min;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string of any bytes: runs of safe bytes are copied whole; '"', '\\', controls
 * and DEL become escapes, a byte that starts no valid UTF-8 sequence becomes U+FFFD. */
static void put_jstr(jw_t *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t n = strlen((const char *)p), run = 0;
    PUT_LIT(w, "\"");
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t k = c >= 0x80 ? utf8_seq(p + i, n - i) : 1;
        if (k != 0 && c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {
            i += k;
            run += k;
            continue;
        }
        put(w, (const char *)p + i - run, run);
        run = 0;
        if (k == 0) {
            PUT_LIT(w, "\\ufffd");
        } else if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(w, e, 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(w, e, 6);
        }
        i++;
    }
    put(w, (const char *)p + n - run, run);
    PUT_LIT(w, "\"");
}

/* A string that is null when empty. */
static void put_jstr_or_null(jw_t *w, const char *s)
{
    if (s == NULL || s[0] == '\0')
        PUT_LIT(w, "null");
    else
        put_jstr(w, s);
}

static void put_u64(jw_t *w, uint64_t v)
{
    char b[20];
    put(w, b, faas_fmt_u64(b, v));
}

static void put_2d(char *b, unsigned v)
{
    b[0] = (char)('0' + v / 10 % 10);
    b[1] = (char)('0' + v % 10);
}

/* 0000-01-01T00:00:00.000Z and 10000-01-01, in unix ms: RFC 3339 has 4-digit years. */
#define MS_MIN (-62167219200000LL)
#define MS_END 253402300800000LL
#define MS_DAY 86400000LL

/* Unix ms as RFC 3339 UTC with milliseconds ("2024-05-01T12:00:00.123Z"); null for 0
 * (not yet) and outside years 0000-9999. Days to civil date: Howard Hinnant's
 * algorithm, so no gmtime_r (which may read the time zone files). */
static void put_time(jw_t *w, int64_t ms)
{
    if (ms == 0 || ms < MS_MIN || ms >= MS_END) {
        PUT_LIT(w, "null");
        return;
    }
    int64_t days = ms / MS_DAY, rem = ms % MS_DAY;
    if (rem < 0)
        days--, rem += MS_DAY;
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    unsigned y = (unsigned)(yoe + era * 400 + (m <= 2));
    unsigned msec = (unsigned)rem;
    char b[] = "\"YYYY-MM-DDTHH:MM:SS.mmmZ\"";
    put_2d(b + 1, y / 100);
    put_2d(b + 3, y % 100);
    put_2d(b + 6, m);
    put_2d(b + 9, d);
    put_2d(b + 12, msec / 3600000);
    put_2d(b + 15, msec / 60000 % 60);
    put_2d(b + 18, msec / 1000 % 60);
    b[21] = (char)('0' + msec / 100 % 10);
    put_2d(b + 22, msec % 100);
    put(w, b, LIT_LEN(b));
}

static int finished(int status)
{
    return status == FAAS__TASK__STATUS__SUCCEEDED || status == FAAS__TASK__STATUS__FAILED ||
           status == FAAS__TASK__STATUS__CANCELLED;
}

static void put_task(jw_t *w, const Faas__Task *t)
{
    PUT_LIT(w, "{\"id\": ");
    put_jstr(w, t->id);
    PUT_LIT(w, ", \"function\": ");
    put_jstr(w, t->function);
    PUT_LIT(w, ", \"version\": ");
    put_u64(w, t->version);
    PUT_LIT(w, ", \"status\": ");
    put_jstr(w, gw_task_status_name(t->status));
    PUT_LIT(w, ", \"attempts\": ");
    put_u64(w, t->attempts);
    PUT_LIT(w, ", \"created\": ");
    put_time(w, t->created_unix_ms);
    PUT_LIT(w, ", \"started\": ");
    put_time(w, t->started_unix_ms);
    PUT_LIT(w, ", \"finished\": ");
    put_time(w, t->finished_unix_ms);
    PUT_LIT(w, ", \"error\": ");
    put_jstr_or_null(w, t->error);
    /* a task that ended without a response (deadline, cancelled while queued) has none */
    PUT_LIT(w, ", \"result_status\": ");
    if (finished(t->status) && t->result_status != 0)
        put_u64(w, t->result_status);
    else
        PUT_LIT(w, "null");
    PUT_LIT(w, ", \"result_size\": ");
    put_u64(w, t->result_size);
    PUT_LIT(w, ", \"callback_url\": ");
    put_jstr_or_null(w, t->callback_url);
    PUT_LIT(w, ", \"callback_status\": ");
    put_jstr_or_null(w, t->callback_status);
    PUT_LIT(w, ", \"callback_attempts\": ");
    put_u64(w, t->callback_attempts);
    /* the instance of the current or last attempt: attempts on other pods show here */
    PUT_LIT(w, ", \"instance\": ");
    put_jstr_or_null(w, t->instance_id);
    PUT_LIT(w, ", \"cancel_requested\": ");
    if (t->cancel_requested)
        PUT_LIT(w, "true");
    else
        PUT_LIT(w, "false");
    PUT_LIT(w, "}");
}

size_t gw_task_json(const Faas__Task *t, char *out, size_t cap)
{
    jw_t w = {out, cap, 0};
    put_task(&w, t);
    return finish(&w);
}

size_t gw_task_list_json(const Faas__TaskList *l, char *out, size_t cap)
{
    jw_t w = {out, cap, 0};
    PUT_LIT(&w, "{\"tasks\": [");
    for (size_t i = 0; i < l->n_tasks; i++) {
        if (i > 0)
            PUT_LIT(&w, ", ");
        put_task(&w, l->tasks[i]);
    }
    PUT_LIT(&w, "], \"next\": ");
    put_jstr_or_null(&w, l->next);
    PUT_LIT(&w, "}");
    return finish(&w);
}

size_t gw_task_accepted_json(const char *id, char *out, size_t cap)
{
    jw_t w = {out, cap, 0};
    PUT_LIT(&w, "{\"id\": ");
    put_jstr(&w, id);
    PUT_LIT(&w, ", \"status\": \"queued\"}");
    return finish(&w);
}
