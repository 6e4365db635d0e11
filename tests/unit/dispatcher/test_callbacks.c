/* tests/unit/dispatcher/test_callbacks.c - the pure half of callback delivery
 * (dispatcher/callbacks.c): the callback URL split for the client, which result headers
 * are passed on, header values made safe, and the POST's head byte for byte. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "dispatcher/internal.h"

TestSuite(callbacks);

static disp_cb_url_t url_ok(const char *s)
{
    disp_cb_url_t u;
    const char *err = NULL;
    cr_assert_eq(disp_cb_url_parse(s, &u, &err), 0, "%s: %s", s, err);
    return u;
}

static void expect_target(const disp_cb_url_t *u, const char *want)
{
    cr_assert_eq(u->target_len, strlen(want));
    cr_assert(memcmp(u->target, want, u->target_len) == 0);
}

Test(callbacks, url_http_default_port_and_target)
{
    disp_cb_url_t u = url_ok("http://example.com/hook?a=1&b=2");
    cr_assert_eq(u.tls, 0);
    cr_assert_str_eq(u.host, "example.com");
    cr_assert_eq(u.port, 80);
    cr_assert_eq(u.authority_len, strlen("example.com"));
    expect_target(&u, "/hook?a=1&b=2");
}

Test(callbacks, url_https_port_ipv6_and_case)
{
    disp_cb_url_t u = url_ok("HTTPS://[::1]:8443/x");
    cr_assert_eq(u.tls, 1);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 8443);
    cr_assert(memcmp(u.authority, "[::1]:8443", u.authority_len) == 0 && u.authority_len == 10);
    expect_target(&u, "/x");
    u = url_ok("https://h.example");
    cr_assert_eq(u.port, 443);
    expect_target(&u, "");
    u = url_ok("http://127.0.0.1:65535?q");
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 65535);
    expect_target(&u, "?q");
}

Test(callbacks, url_refused)
{
    static const char *const bad[] = {"ftp://h/", "http://", "http://:80/", "http://h:0/", "http://h:65536",
                                      "http://h:8x/", "http://h:/", "http://[::1/", "http://[]:80/", "http://u@h/",
                                      "http://h:123456/", "//h/",
                                      /* found by fuzz_disp_callback: CRLF would split the request line */
                                      "http://h/a\r\nx-injected: 1", "http://h/a b", "http://h/\x7f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        disp_cb_url_t u;
        const char *err = NULL;
        cr_assert_eq(disp_cb_url_parse(bad[i], &u, &err), -1, "%s", bad[i]);
        cr_assert_not_null(err);
    }
}

Test(callbacks, hop_by_hop_and_own_headers_dropped)
{
    static const char *const drop[] = {
        "connection",         "Keep-Alive",       "transfer-encoding", "te",   "trailer",         "upgrade",
        "proxy-authenticate", "Proxy-Connection", "content-length",    "host", "faas-request-id", "faas-task-status",
        "faas-result-status", "faas-task-error"};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        cr_assert(disp_cb_header_dropped(drop[i], strlen(drop[i])), "%s", drop[i]);
    static const char *const keep[] = {"content-type", "x-echo-status", "tea", "t", "faas-other", "proxy", "etag"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        cr_assert(!disp_cb_header_dropped(keep[i], strlen(keep[i])), "%s", keep[i]);
}

Test(callbacks, sanitize_controls_non_ascii_trim_and_cut)
{
    char out[32];
    cr_assert_eq(disp_cb_sanitize(out, sizeof(out),
                                  "  a\r\nb\tc\x7f"
                                  "d\xc3\xa9 "),
                 8);
    cr_assert_str_eq(out, "a  b c d");
    cr_assert_eq(disp_cb_sanitize(out, sizeof(out), ""), 0);
    cr_assert_str_eq(out, "");
    cr_assert_eq(disp_cb_sanitize(out, 5, "abcdefgh"), 4);
    cr_assert_str_eq(out, "abcd");
    cr_assert_eq(disp_cb_sanitize(out, sizeof(out), "\r\n\t "), 0);
}

static Faas__KeyValue kv(const char *k, const char *v)
{
    Faas__KeyValue x = FAAS__KEY_VALUE__INIT;
    x.key = (char *)k;
    x.value = (char *)v;
    return x;
}

Test(callbacks, head_of_a_succeeded_task)
{
    Faas__Task t = FAAS__TASK__INIT;
    t.id = "0123456789abcdef0123456789abcdef";
    t.status = FAAS__TASK__STATUS__SUCCEEDED;
    t.error = "";
    Faas__KeyValue h[] = {kv("content-type", "text/plain"),
                          kv("connection", "keep-alive"),
                          kv("content-length", "99"),
                          kv("x-echo-status", "201"),
                          kv("faas-task-status", "forged"),
                          kv("x-bad", "a\r\nx-injected: 1"),
                          kv("bad name", "v"),
                          kv("x-empty", "")};
    Faas__KeyValue *hp[8];
    for (int i = 0; i < 8; i++)
        hp[i] = &h[i];
    Faas__TaskResult r = FAAS__TASK_RESULT__INIT;
    r.status = 201;
    r.headers = hp;
    r.n_headers = 8;
    r.body.data = (uint8_t *)"hello";
    r.body.len = 5;
    disp_cb_url_t u = url_ok("http://127.0.0.1:9000/cb?x=1");
    size_t len = 0;
    char *head = disp_cb_request_head(&u, &t, &r, &len);
    cr_assert_not_null(head);
    const char *want = "POST /cb?x=1 HTTP/1.1\r\n"
                       "host: 127.0.0.1:9000\r\n"
                       "connection: close\r\n"
                       "content-length: 5\r\n"
                       "faas-request-id: 0123456789abcdef0123456789abcdef\r\n"
                       "faas-task-status: succeeded\r\n"
                       "faas-result-status: 201\r\n"
                       "content-type: text/plain\r\n"
                       "x-echo-status: 201\r\n"
                       "x-empty: \r\n"
                       "\r\n";
    cr_assert_str_eq(head, want);
    cr_assert_eq(len, strlen(want));
    free(head);
}

Test(callbacks, head_of_a_failed_task_without_result)
{
    Faas__Task t = FAAS__TASK__INIT;
    t.id = "ffffffffffffffffffffffffffffffff";
    t.status = FAAS__TASK__STATUS__FAILED;
    t.error = "deadline\r\nx-injected: 1";
    disp_cb_url_t u = url_ok("https://[::1]?only=query");
    size_t len = 0;
    char *head = disp_cb_request_head(&u, &t, NULL, &len);
    cr_assert_not_null(head);
    cr_assert_str_eq(head, "POST /?only=query HTTP/1.1\r\n"
                           "host: [::1]\r\n"
                           "connection: close\r\n"
                           "content-length: 0\r\n"
                           "faas-request-id: ffffffffffffffffffffffffffffffff\r\n"
                           "faas-task-status: failed\r\n"
                           "faas-task-error: deadline  x-injected: 1\r\n"
                           "\r\n");
    free(head);
}

Test(callbacks, cancelled_without_error_says_cancelled)
{
    Faas__Task t = FAAS__TASK__INIT;
    t.id = "ffffffffffffffffffffffffffffffff";
    t.status = FAAS__TASK__STATUS__CANCELLED;
    t.error = "";
    disp_cb_url_t u = url_ok("http://h/");
    size_t len = 0;
    char *head = disp_cb_request_head(&u, &t, NULL, &len);
    cr_assert_not_null(head);
    cr_assert(strstr(head, "faas-task-status: cancelled\r\nfaas-task-error: cancelled\r\n") != NULL, "%s", head);
    free(head);
    cr_assert_str_eq(disp_cb_task_status(FAAS__TASK__STATUS__SUCCEEDED), "succeeded");
    cr_assert_str_eq(disp_cb_task_status(FAAS__TASK__STATUS__FAILED), "failed");
}
