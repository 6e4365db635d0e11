/* Unit tests of gateway/tasks_http.c: task routes, ids, the GET /tasks query, Prefer,
 * X-Callback-Url, and the status JSON (checked by Python's strict JSON decoder). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gateway/gateway.h"

#define ID "0123456789abcdef0123456789abcdef"

/* getrandom(2) as the test wants it: the real one, an error, or one byte a call.
 * Defined here, it is the one tasks_http.o binds to in this binary. */
static int fake_errno, fake_short;

ssize_t getrandom(void *buf, size_t len, unsigned int flags)
{
    if (fake_errno != 0) {
        errno = fake_errno;
        return -1;
    }
    return syscall(SYS_getrandom, buf, fake_short && len > 1 ? 1 : len, flags);
}

#define SLICE_EQ(s, lit)                                                                                               \
    cr_assert(s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0, "got '%.*s' want '%s'", (int)s.len, s.ptr, lit)

static int route(const char *p, gw_task_route_t *r, const char **err)
{
    *err = NULL;
    return gw_task_route_parse(p, strlen(p), r, err);
}

/* ---- routes ---- */

Test(tasks_route, submit)
{
    gw_task_route_t r;
    const char *err;
    cr_assert_eq(route("/async-function/hello/a/b?x=1", &r, &err), GW_TASK_ROUTE_SUBMIT);
    SLICE_EQ(r.name, "hello");
    SLICE_EQ(r.rest, "/a/b?x=1");
    SLICE_EQ(r.query, "x=1");
    cr_assert_eq(route("/async-function/h-1", &r, &err), GW_TASK_ROUTE_SUBMIT);
    SLICE_EQ(r.name, "h-1");
    cr_assert_eq(r.rest.len, 0);
    cr_assert_eq(r.query.len, 0);
    cr_assert_eq(route("/async-function/h?q", &r, &err), GW_TASK_ROUTE_SUBMIT);
    SLICE_EQ(r.rest, "?q");
    SLICE_EQ(r.query, "q");
}

Test(tasks_route, submit_malformed_as_function_routes)
{
    static const char *const bad[] = {
        "/async-function",
        "/async-function/",
        "/async-function?x",
        "/async-function//x",
        "/async-function/-a",
        "/async-function/A",
        "/async-function/a_b",
        "/async-function/"
        "0123456789012345678901234567890123456789012345678901234567890123", /* 64 */
        "/async-function/a b",
        "",
        "tasks",
        "/tasks\x01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_task_route_t r;
        const char *err;
        cr_assert_eq(route(bad[i], &r, &err), GW_ERR_MALFORMED, "%s", bad[i]);
        cr_assert(err != NULL && err[0] != '\0');
    }
    gw_task_route_t r;
    const char *err;
    route("/async-function?x", &r, &err);
    cr_assert_str_eq(err, "missing function name after /async-function/");
    char name63[100] = "/async-function/";
    memset(name63 + strlen(name63), 'a', 63);
    cr_assert_eq(route(name63, &r, &err), GW_TASK_ROUTE_SUBMIT);
}

Test(tasks_route, tasks_paths)
{
    gw_task_route_t r;
    const char *err;
    cr_assert_eq(route("/tasks", &r, &err), GW_TASK_ROUTE_LIST);
    cr_assert_eq(r.query.len, 0);
    cr_assert_eq(route("/tasks?limit=5&status=queued", &r, &err), GW_TASK_ROUTE_LIST);
    SLICE_EQ(r.query, "limit=5&status=queued");
    cr_assert_eq(route("/tasks?", &r, &err), GW_TASK_ROUTE_LIST);
    cr_assert_eq(r.query.len, 0);
    cr_assert_eq(route("/tasks/" ID, &r, &err), GW_TASK_ROUTE_TASK);
    SLICE_EQ(r.id, ID);
    cr_assert_eq(route("/tasks/" ID "?x", &r, &err), GW_TASK_ROUTE_TASK);
    SLICE_EQ(r.id, ID);
    SLICE_EQ(r.query, "x");
    cr_assert_eq(route("/tasks/" ID "/result", &r, &err), GW_TASK_ROUTE_RESULT);
    SLICE_EQ(r.id, ID);
    cr_assert_eq(route("/tasks/" ID "/result?a=/b", &r, &err), GW_TASK_ROUTE_RESULT);
    SLICE_EQ(r.query, "a=/b");
}

Test(tasks_route, bad_ids_are_400)
{
    static const char *const bad[] = {
        "/tasks/",
        "/tasks//result",
        "/tasks/0123456789ABCDEF0123456789abcdef",
        "/tasks/0123456789abcdef0123456789abcde",
        "/tasks/0123456789abcdef0123456789abcdef0",
        "/tasks/0123456789abcdeg0123456789abcdef",
        "/tasks/%30123456789abcdef0123456789abcde",
        "/tasks/xyz/result",
        "/tasks/xyz/other",
        "/tasks/?x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_task_route_t r;
        const char *err;
        cr_assert_eq(route(bad[i], &r, &err), GW_TASK_ERR_BAD_ID, "%s", bad[i]);
        cr_assert_str_eq(err, "task id must be 32 lowercase hex characters");
    }
}

Test(tasks_route, unknown_subpaths_are_404)
{
    static const char *const bad[] = {
        "/tasks/" ID "/",       "/tasks/" ID "/results",  "/tasks/" ID "/result/",
        "/tasks/" ID "/Result", "/tasks/" ID "/result/x", "/tasks/" ID "//result",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_task_route_t r;
        const char *err;
        cr_assert_eq(route(bad[i], &r, &err), GW_TASK_ERR_NOT_FOUND, "%s", bad[i]);
        cr_assert(err != NULL && err[0] != '\0');
    }
}

Test(tasks_route, other_paths)
{
    static const char *const other[] = {
        "/",      "/healthz", "/metrics",     "/function/x", "/task", "/tasksx", "/tasks-old/" ID, "/async-functions/x",
        "/async", "/Tasks",   "/x/tasks/" ID,
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        gw_task_route_t r;
        const char *err;
        cr_assert_eq(route(other[i], &r, &err), GW_TASK_ROUTE_OTHER, "%s", other[i]);
    }
}

/* ---- ids ---- */

Test(tasks_id, valid)
{
    cr_assert(gw_task_id_valid(ID, 32));
    cr_assert(gw_task_id_valid("ffffffffffffffffffffffffffffffff", 32));
    cr_assert_not(gw_task_id_valid(ID, 31));
    cr_assert_not(gw_task_id_valid(ID "0", 33));
    cr_assert_not(gw_task_id_valid("", 0));
    cr_assert_not(gw_task_id_valid("0123456789abcdeF0123456789abcdef", 32));
    cr_assert_not(gw_task_id_valid("0123456789abcdef0123456789abcde\0", 32));
    cr_assert_not(gw_task_id_valid("0123456789abcdef 123456789abcdef", 32));
    cr_assert_not(gw_task_id_valid("0123456789abcdef-123456789abcdef", 32));
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 33);
}

Test(tasks_id, new_ids_are_well_formed_and_unique)
{
    enum { N = 10000 };
    char(*ids)[33] = calloc(N, 33);
    cr_assert_not_null(ids);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(gw_task_id_new(ids[i]), 0);
        cr_assert_eq(strlen(ids[i]), 32);
        cr_assert(gw_task_id_valid(ids[i], 32), "%s", ids[i]);
    }
    qsort(ids, N, 33, cmp_id);
    for (int i = 1; i < N; i++)
        cr_assert_neq(memcmp(ids[i - 1], ids[i], 33), 0, "duplicate id %s", ids[i]);
    /* every hex digit shows up in every position over 10,000 random ids */
    for (int pos = 0; pos < 32; pos++) {
        unsigned mask = 0;
        for (int i = 0; i < N; i++)
            mask |= 1u << (ids[i][pos] <= '9' ? ids[i][pos] - '0' : ids[i][pos] - 'a' + 10);
        cr_assert_eq(mask, 0xffffu, "position %d", pos);
    }
    free(ids);
}

Test(tasks_id, short_getrandom_reads_are_completed)
{
    fake_short = 1;
    char a[33], b[33];
    cr_assert_eq(gw_task_id_new(a), 0);
    cr_assert_eq(gw_task_id_new(b), 0);
    cr_assert(gw_task_id_valid(a, strlen(a)));
    cr_assert_str_neq(a, b);
}

Test(tasks_id, enosys_falls_back_to_urandom)
{
    fake_errno = ENOSYS;
    char a[33], b[33];
    cr_assert_eq(gw_task_id_new(a), 0);
    cr_assert_eq(gw_task_id_new(b), 0);
    cr_assert(gw_task_id_valid(a, strlen(a)) && gw_task_id_valid(b, strlen(b)));
    cr_assert_str_neq(a, b);
}

Test(tasks_id, no_randomness_no_id)
{
    fake_errno = EIO;
    char a[33] = "x";
    cr_assert_eq(gw_task_id_new(a), -1);
    cr_assert_eq(errno, EIO);
    cr_assert_eq(a[0], '\0');
}

/* ---- GET /tasks query ---- */

static int query(const char *q, gw_tasks_query_t *out, const char **err)
{
    *err = NULL;
    return gw_tasks_query_parse(q, strlen(q), out, err);
}

Test(tasks_query, empty_is_defaults)
{
    gw_tasks_query_t q;
    const char *err;
    cr_assert_eq(query("", &q, &err), 0);
    cr_assert_str_eq(q.function, "");
    cr_assert_eq(q.by_status, 0);
    cr_assert_eq(q.limit, 100);
    cr_assert_str_eq(q.after, "");
    cr_assert_eq(query("&&", &q, &err), 0);
    cr_assert_eq(q.limit, 100);
}

Test(tasks_query, every_key)
{
    gw_tasks_query_t q;
    const char *err;
    cr_assert_eq(query("function=hello-1&status=running&limit=1000&after=" ID, &q, &err), 0, "%s", err);
    cr_assert_str_eq(q.function, "hello-1");
    cr_assert_eq(q.by_status, 1);
    cr_assert_eq(q.status, FAAS__TASK__STATUS__RUNNING);
    cr_assert_eq(q.limit, 1000);
    cr_assert_str_eq(q.after, ID);
    static const char *const words[] = {"queued", "running", "succeeded", "failed", "cancelled"};
    for (int s = 0; s < 5; s++) {
        char buf[64];
        snprintf(buf, sizeof(buf), "status=%s&", words[s]);
        cr_assert_eq(query(buf, &q, &err), 0, "%s", buf);
        cr_assert_eq((int)q.status, s);
        cr_assert_str_eq(gw_task_status_name(s), words[s]);
    }
    cr_assert_str_eq(gw_task_status_name(5), "unknown");
    cr_assert_str_eq(gw_task_status_name(-1), "unknown");
    cr_assert_eq(query("limit=1", &q, &err), 0);
    cr_assert_eq(q.limit, 1);
    cr_assert_eq(query("limit=0007", &q, &err), 0);
    cr_assert_eq(q.limit, 7);
}

Test(tasks_query, percent_decoding)
{
    gw_tasks_query_t q;
    const char *err;
    cr_assert_eq(query("fun%63tion=h%65llo&st%61tus=%71ueued&limit=%31%30", &q, &err), 0, "%s", err);
    cr_assert_str_eq(q.function, "hello");
    cr_assert_eq(q.status, FAAS__TASK__STATUS__QUEUED);
    cr_assert_eq(q.limit, 10);
    cr_assert_eq(query("after="
                       "%30123456789ABCDEF0123456789abcdef",
                       &q, &err),
                 GW_ERR_MALFORMED, "decoding does not lower-case an id");
}

Test(tasks_query, errors_say_why)
{
    static const struct {
        const char *q, *err;
    } bad[] = {
        {"limit=0", "limit must be a whole number from 1 to 1000"},
        {"limit=1001", "limit must be a whole number from 1 to 1000"},
        {"limit=", "limit must be a whole number from 1 to 1000"},
        {"limit=-1", "limit must be a whole number from 1 to 1000"},
        {"limit=+5", "limit must be a whole number from 1 to 1000"},
        {"limit=5x", "limit must be a whole number from 1 to 1000"},
        {"limit=99999999999999999999", "limit must be a whole number from 1 to 1000"},
        {"limit", "a query parameter has no '=<value>'"},
        {"limit=5&limit=6", "limit is given twice"},
        {"function=a&function=a", "function is given twice"},
        {"status=queued&status=failed", "status is given twice"},
        {"after=" ID "&after=" ID, "after is given twice"},
        {"status=QUEUED", "status must be queued, running, succeeded, failed or cancelled"},
        {"status=done", "status must be queued, running, succeeded, failed or cancelled"},
        {"status=", "status must be queued, running, succeeded, failed or cancelled"},
        {"after=xyz", "after must be a task id (32 lowercase hex characters)"},
        {"after=", "after must be a task id (32 lowercase hex characters)"},
        {"function=Hello", "function name must match [a-z0-9][a-z0-9-]*"},
        {"function=-a", "function name must match [a-z0-9][a-z0-9-]*"},
        {"function=a+b", "function name must match [a-z0-9][a-z0-9-]*"},
        {"function=a%00", "function name must match [a-z0-9][a-z0-9-]*"},
        {"function=", "missing function name"},
        {"function=0123456789012345678901234567890123456789012345678901234567890123",
         "function name longer than 63 bytes"},
        {"function=%zz", "the query has a '%' not followed by two hex digits"},
        {"function=a%4", "the query has a '%' not followed by two hex digits"},
        {"function=a%", "the query has a '%' not followed by two hex digits"},
        {"sort=id", "unknown query parameter: the known ones are function, status, limit and after"},
        {"=5", "unknown query parameter: the known ones are function, status, limit and after"},
        {"Limit=5", "unknown query parameter: the known ones are function, status, limit and after"},
        {"verylongunknownkey=5", "a query parameter is too long"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_tasks_query_t q;
        const char *err;
        cr_assert_eq(query(bad[i].q, &q, &err), GW_ERR_MALFORMED, "%s", bad[i].q);
        cr_assert_str_eq(err, bad[i].err, "%s", bad[i].q);
    }
}

Test(tasks_query, long_value_is_refused)
{
    char buf[4096] = "function=";
    memset(buf + strlen(buf), 'a', 3000);
    gw_tasks_query_t q;
    const char *err;
    cr_assert_eq(query(buf, &q, &err), GW_ERR_MALFORMED);
    cr_assert_str_eq(err, "a query parameter is too long");
}

/* ---- Prefer ---- */

Test(tasks_prefer, respond_async_found)
{
    static const char *const yes[] = {
        "respond-async",
        "Respond-Async",
        "RESPOND-ASYNC",
        " respond-async ",
        "respond-async, wait=10",
        "wait=10, respond-async",
        "return=minimal,respond-async",
        "respond-async; foo=bar",
        "respond-async ;x",
        "respond-async=\"\"",
        "handling=lenient, respond-async;a=\"x,y\", wait=5",
        "foo=\"a,b\", respond-async",
        "foo=\"a\\\",b\", respond-async",
        ",,respond-async,,",
        "\trespond-async\t",
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        cr_assert_eq(gw_prefer_respond_async(yes[i], strlen(yes[i])), 1, "%s", yes[i]);
}

Test(tasks_prefer, respond_async_not_found)
{
    static const char *const no[] = {
        "",
        "wait=10",
        "respond-asyncx",
        "xrespond-async",
        "respond-sync",
        "respond",
        "wait=10; respond-async",
        "foo=\"respond-async\"",
        "foo=\"a, respond-async\"",
        "foo=\"a\\\", respond-async\"",
        "respond-async x",
        "\"respond-async\"",
        "return=respond-async",
    };
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        cr_assert_eq(gw_prefer_respond_async(no[i], strlen(no[i])), 0, "%s", no[i]);
    /* the length bounds the value: a match past it does not count */
    cr_assert_eq(gw_prefer_respond_async("wait=1, respond-async", 8), 0);
}

/* ---- X-Callback-Url ---- */

static int url(const char *u, const char **err)
{
    *err = NULL;
    return gw_callback_url_check(u, strlen(u), err);
}

Test(tasks_callback, accepted)
{
    static const char *const good[] = {
        "http://example.com",
        "http://example.com/",
        "https://example.com/hook",
        "HTTP://Example.COM:8080/a/b?x=1&y=%2F",
        "http://10.0.0.1:1/",
        "http://[::1]:65535/cb",
        "http://[2001:db8::1]",
        "http://[::ffff:1.2.3.4]/x",
        "http://svc_name.ns.svc.cluster.local./x",
        "http://h?q",
        "http://h/p;a=b,c/~u/!$&'()*+,;=:@/",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const char *err;
        cr_assert_eq(url(good[i], &err), 0, "%s: %s", good[i], err);
    }
    char big[GW_CALLBACK_URL_MAX + 2] = "http://h/";
    memset(big + strlen(big), 'a', GW_CALLBACK_URL_MAX - strlen(big));
    big[GW_CALLBACK_URL_MAX] = '\0';
    const char *err;
    cr_assert_eq(url(big, &err), 0);
    big[GW_CALLBACK_URL_MAX] = 'a';
    big[GW_CALLBACK_URL_MAX + 1] = '\0';
    cr_assert_eq(url(big, &err), GW_ERR_MALFORMED);
    cr_assert_str_eq(err, "callback URL is longer than 2048 bytes");
}

Test(tasks_callback, refused_with_a_reason)
{
    static const struct {
        const char *u, *err;
    } bad[] = {
        {"", "callback URL is empty"},
        {"ftp://h/", "callback URL must be an absolute http:// or https:// URL"},
        {"/relative", "callback URL must be an absolute http:// or https:// URL"},
        {"http:/h", "callback URL must be an absolute http:// or https:// URL"},
        {"httpx://h", "callback URL must be an absolute http:// or https:// URL"},
        {"javascript:alert(1)", "callback URL must be an absolute http:// or https:// URL"},
        {"http://", "callback URL has no host"},
        {"http:///path", "callback URL has no host"},
        {"http://:80/", "callback URL has no host"},
        {"http://user@h/", "callback URL must not carry user information"},
        {"http://user:pw@h/", "callback URL must not carry user information"},
        {"http://h /", "callback URL has a space, a control or a non-ASCII byte"},
        {"http://h/\r\nX-Injected: 1", "callback URL has a space, a control or a non-ASCII byte"},
        {"http://h/\n", "callback URL has a space, a control or a non-ASCII byte"},
        {"http://h/\x7f", "callback URL has a space, a control or a non-ASCII byte"},
        {"http://h/\xc3\xa9", "callback URL has a space, a control or a non-ASCII byte"},
        {"http://h\t/", "callback URL has a space, a control or a non-ASCII byte"},
        {"http://h:0/", "callback URL port must be a number from 1 to 65535"},
        {"http://h:65536/", "callback URL port must be a number from 1 to 65535"},
        {"http://h:/", "callback URL port must be a number from 1 to 65535"},
        {"http://h:8o/", "callback URL port must be a number from 1 to 65535"},
        {"http://h:000080/", "callback URL port must be a number from 1 to 65535"},
        {"http://h:80:81/", "callback URL port must be a number from 1 to 65535"},
        {"http://h/#frag", "callback URL must not carry a fragment"},
        {"http://h#frag", "callback URL must not carry a fragment"},
        {"http://h/%zz", "callback URL has a '%' not followed by two hex digits"},
        {"http://h/%4", "callback URL has a '%' not followed by two hex digits"},
        {"http://h/a\"b", "callback URL path has a character RFC 3986 does not allow"},
        {"http://h/<script>", "callback URL path has a character RFC 3986 does not allow"},
        {"http://h/a\\b", "callback URL path has a character RFC 3986 does not allow"},
        {"http://h.\x2e/", "callback URL host has an empty label"},
        {"http://.h/", "callback URL host has an empty label"},
        {"http://h%2fx/", "callback URL host may hold only letters, digits, '-', '_' and '.'"},
        {"http://h!/", "callback URL host may hold only letters, digits, '-', '_' and '.'"},
        {"http://[::1/", "callback URL has a malformed IPv6 literal"},
        {"http://[]/", "callback URL has a malformed IPv6 literal"},
        {"http://[1.2.3.4]/", "callback URL has a malformed IPv6 literal"},
        {"http://[::1]x/", "callback URL has a malformed IPv6 literal"},
        {"http://[fe80::1%25eth0]/", "callback URL has a malformed IPv6 literal"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *err;
        cr_assert_eq(url(bad[i].u, &err), GW_ERR_MALFORMED, "%s", bad[i].u);
        cr_assert_str_eq(err, bad[i].err, "%s", bad[i].u);
    }
}

/* ---- JSON ---- */

/* Loads json with Python's strict decoder (raw controls and invalid UTF-8 fail it) and
 * prints expr evaluated on it (d); the printed line into line, or 0 if Python failed. */
static int py_eval(const char *json, size_t len, const char *expr, char *line, size_t cap)
{
    char path[] = "/tmp/test_tasks_http.XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, json, len), (ssize_t)len);
    close(fd);
    char cmd[8192];
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1],encoding=\"utf-8\")); "
             "print(eval(sys.argv[2]))' %s '%s' 2>&1",
             path, expr);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    line[0] = '\0';
    size_t n = fread(line, 1, cap - 1, p);
    line[n] = '\0';
    if (n > 0 && line[n - 1] == '\n')
        line[n - 1] = '\0';
    int st = pclose(p);
    unlink(path);
    return st == 0;
}

/* The checker itself: it must refuse what a sloppy escaper would produce. */
Test(tasks_json, checker_refuses_bad_json)
{
    static const char *const bad[] = {"{\"a\": \"\x01\"}", "{\"a\": \"\xff\"}", "{\"a\": \"\\x\"}", "{\"a\": }",
                                      "{\"a\": \"\"\"}"};
    char line[512];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(py_eval(bad[i], strlen(bad[i]), "d", line, sizeof(line)), "%s", bad[i]);
    const char *good = "{\"a\": \"\\u00e9\"}";
    cr_assert(py_eval(good, strlen(good), "ascii(d)", line, sizeof(line)), "%s", line);
    cr_assert_str_eq(line, "{'a': '\\xe9'}");
}

static Faas__Task sample(void)
{
    Faas__Task t = FAAS__TASK__INIT;
    t.id = ID;
    t.function = "hello";
    t.version = 7;
    t.status = FAAS__TASK__STATUS__SUCCEEDED;
    t.attempts = 2;
    t.created_unix_ms = 1714564800123;  /* 2024-05-01T12:00:00.123Z */
    t.started_unix_ms = 951782400000;   /* 2000-02-29T00:00:00.000Z */
    t.finished_unix_ms = 4102444799999; /* 2099-12-31T23:59:59.999Z */
    t.result_status = 201;
    t.result_size = 18446744073709551615ull;
    t.callback_url = "http://h/cb";
    t.callback_status = "delivered";
    t.callback_attempts = 3;
    t.instance_id = "fn-1";
    return t;
}

Test(tasks_json, status_json_exact)
{
    Faas__Task t = sample();
    char out[1024];
    size_t n = gw_task_json(&t, out, sizeof(out));
    const char *want = "{\"id\": \"" ID "\", \"function\": \"hello\", \"version\": 7, \"status\": \"succeeded\", "
                       "\"attempts\": 2, \"created\": \"2024-05-01T12:00:00.123Z\", "
                       "\"started\": \"2000-02-29T00:00:00.000Z\", \"finished\": \"2099-12-31T23:59:59.999Z\", "
                       "\"error\": null, \"result_status\": 201, \"result_size\": 18446744073709551615, "
                       "\"callback_url\": \"http://h/cb\", \"callback_status\": \"delivered\", "
                       "\"callback_attempts\": 3, \"instance\": \"fn-1\", \"cancel_requested\": false}";
    cr_assert_str_eq(out, want);
    cr_assert_eq(n, strlen(want));
}

Test(tasks_json, queued_task_has_nulls)
{
    Faas__Task t = FAAS__TASK__INIT;
    t.id = ID;
    t.function = "f";
    t.created_unix_ms = 1;
    t.result_status = 200; /* not finished: not shown */
    char out[1024], line[256];
    size_t n = gw_task_json(&t, out, sizeof(out));
    cr_assert_lt(n, sizeof(out));
    cr_assert(py_eval(out, n,
                      "[d[k] for k in (\"status\",\"created\",\"started\",\"finished\",\"error\",\"result_status\","
                      "\"result_size\",\"callback_url\",\"callback_status\",\"attempts\",\"version\","
                      "\"callback_attempts\",\"instance\",\"cancel_requested\")]",
                      line, sizeof(line)),
              "%s", line);
    cr_assert_str_eq(line,
                     "['queued', '1970-01-01T00:00:00.001Z', None, None, None, None, 0, None, None, 0, 0, 0, None, False]");
    t.status = FAAS__TASK__STATUS__FAILED;
    t.result_status = 0;
    t.error = "deadline";
    n = gw_task_json(&t, out, sizeof(out));
    cr_assert(py_eval(out, n, "(d[\"status\"], d[\"error\"], d[\"result_status\"])", line, sizeof(line)));
    cr_assert_str_eq(line, "('failed', 'deadline', None)");
}

Test(tasks_json, timestamps_across_the_range)
{
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {-1, "\"1969-12-31T23:59:59.999Z\""},
        {-62167219200000LL, "\"0000-01-01T00:00:00.000Z\""},
        {-62167219200001LL, "null"},
        {253402300799999LL, "\"9999-12-31T23:59:59.999Z\""},
        {253402300800000LL, "null"},
        {INT64_MIN, "null"},
        {INT64_MAX, "null"},
        {86400000LL * 59, "\"1970-03-01T00:00:00.000Z\""},
        {4107542400000LL, "\"2100-03-01T00:00:00.000Z\""},
        {1709164800000LL, "\"2024-02-29T00:00:00.000Z\""},
        {1000, "\"1970-01-01T00:00:01.000Z\""},
        {0, "null"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Faas__Task t = FAAS__TASK__INIT;
        t.created_unix_ms = cases[i].ms;
        char out[1024], want[128];
        gw_task_json(&t, out, sizeof(out));
        snprintf(want, sizeof(want), "\"created\": %s,", cases[i].want);
        cr_assert_not_null(strstr(out, want), "%lld: %s", (long long)cases[i].ms, out);
    }
    /* every day of 400 years (one Gregorian cycle) against Python's calendar */
    static char all[146100 * 30];
    size_t n = 0;
    all[n++] = '[';
    for (int64_t d = -73000; d < 73097; d++) {
        Faas__Task t = FAAS__TASK__INIT;
        t.created_unix_ms = d * 86400000LL + 43200000;
        char out[512];
        gw_task_json(&t, out, sizeof(out));
        char *c = strstr(out, "\"created\": ") + 11;
        n += (size_t)snprintf(all + n, sizeof(all) - n, "%s%.26s", n > 1 ? "," : "", c);
    }
    all[n++] = ']';
    char line[64];
    cr_assert(py_eval(all, n,
                      "all(s == (__import__(\"datetime\").datetime(1970,1,1,12) + "
                      "__import__(\"datetime\").timedelta(days=i-73000)).strftime(\"%Y-%m-%dT%H:%M:%S.000Z\") "
                      "for i, s in enumerate(d))",
                      line, sizeof(line)),
              "%s", line);
    cr_assert_str_eq(line, "True");
}

/* Hostile strings and what a strict decoder must read back: valid UTF-8 as is, each
 * byte that starts no valid sequence as U+FFFD. */
static const struct {
    const char *in, *out;
} hostile[] = {
    {"\"quote\\back\\\\slash\"", "\"quote\\back\\\\slash\""},
    {"\x01\x02\x1f\n\r\t\b\f", "\x01\x02\x1f\n\r\t\b\f"},
    {"\x7f", "\x7f"},
    {"</script><!--", "</script><!--"},
    {"\\u0000\\ud800", "\\u0000\\ud800"},
    {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"abc\xe2\x82", "abc\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xf8\x88\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e", "h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e"},
    {"\xe2\x80\xa8\xe2\x80\xa9", "\xe2\x80\xa8\xe2\x80\xa9"},
    {"\xef\xbf\xbf\xf4\x8f\xbf\xbf", "\xef\xbf\xbf\xf4\x8f\xbf\xbf"},
    {"a\"\x01\xc3", "a\"\x01\xef\xbf\xbd"},
    {"\xc3\"", "\xef\xbf\xbd\""},
    {"", ""},
};

static void hex(const char *s, char *out)
{
    for (; *s; s++, out += 2)
        sprintf(out, "%02x", (unsigned char)*s);
    *out = '\0';
}

Test(tasks_json, hostile_strings_round_trip)
{
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        Faas__Task t = FAAS__TASK__INIT;
        t.id = t.function = t.error = t.callback_url = t.callback_status = (char *)hostile[i].in;
        char out[4096], line[1024], want[1100];
        size_t n = gw_task_json(&t, out, sizeof(out));
        cr_assert_lt(n, sizeof(out));
        cr_assert_eq(strlen(out), n);
        for (size_t k = 0; k < n; k++)
            cr_assert((unsigned char)out[k] >= 0x20 && out[k] != 0x7f, "raw control in %s", out);
        cr_assert(py_eval(out, n,
                          "\" \".join(d[k].encode(\"utf-8\").hex() if d[k] is not None else \"-\" for k in "
                          "(\"id\",\"function\",\"error\",\"callback_url\",\"callback_status\"))",
                          line, sizeof(line)),
                  "case %zu: %s -> %s", i, out, line);
        char h[200];
        hex(hostile[i].out, h);
        if (hostile[i].in[0] == '\0')
            snprintf(want, sizeof(want), "  - - -"); /* id and function "", the rest null */
        else
            snprintf(want, sizeof(want), "%s %s %s %s %s", h, h, h, h, h);
        cr_assert_str_eq(line, want, "case %zu: %s", i, out);
    }
}

Test(tasks_json, long_hostile_string_and_sizing)
{
    enum { N = 20000 };
    char *s = malloc(N + 1);
    for (size_t i = 0; i < N; i++)
        s[i] = "\"\\\x01\xff"[i % 4];
    s[N] = '\0';
    Faas__Task t = FAAS__TASK__INIT;
    t.error = s;
    size_t need = gw_task_json(&t, NULL, 0);
    char *out = malloc(need + 1);
    cr_assert_eq(gw_task_json(&t, out, need + 1), need);
    cr_assert_eq(strlen(out), need);
    char line[64];
    cr_assert(py_eval(out, need, "len(d[\"error\"])", line, sizeof(line)), "%s", line);
    cr_assert_str_eq(line, "20000");
    /* too small a buffer: same answer, a NUL-terminated prefix */
    char small[40];
    memset(small, 'x', sizeof(small));
    cr_assert_eq(gw_task_json(&t, small, sizeof(small)), need);
    cr_assert_eq(strlen(small), sizeof(small) - 1);
    cr_assert_eq(memcmp(small, out, sizeof(small) - 1), 0);
    cr_assert_eq(gw_task_json(&t, small, 1), need);
    cr_assert_eq(small[0], '\0');
    free(out);
    free(s);
}

Test(tasks_json, list_and_accepted)
{
    Faas__Task a = sample(), b = FAAS__TASK__INIT;
    b.id = "ffffffffffffffffffffffffffffffff";
    b.function = "w\xff\"";
    b.status = 99;
    Faas__Task *tasks[] = {&a, &b};
    Faas__TaskList l = FAAS__TASK_LIST__INIT;
    char out[4096], line[512];
    size_t n = gw_task_list_json(&l, out, sizeof(out));
    cr_assert_str_eq(out, "{\"tasks\": [], \"next\": null}");
    cr_assert_eq(n, strlen(out));
    l.n_tasks = 2;
    l.tasks = tasks;
    l.next = b.id;
    n = gw_task_list_json(&l, out, sizeof(out));
    cr_assert_lt(n, sizeof(out));
    cr_assert(py_eval(out, n,
                      "ascii(([t[\"status\"] for t in d[\"tasks\"]], d[\"tasks\"][1][\"function\"], d[\"next\"]))",
                      line, sizeof(line)),
              "%s", line);
    cr_assert_str_eq(line, "(['succeeded', 'unknown'], 'w\\ufffd\"', 'ffffffffffffffffffffffffffffffff')");
    char small[16];
    cr_assert_eq(gw_task_list_json(&l, small, sizeof(small)), n);

    n = gw_task_accepted_json(ID, out, sizeof(out));
    cr_assert_str_eq(out, "{\"id\": \"" ID "\", \"status\": \"queued\"}");
    cr_assert_eq(n, strlen(out));
    cr_assert(py_eval(out, n, "d", line, sizeof(line)));
}
