#include <criterion/criterion.h>
#include <string.h>

#include "deploy/internal.h"

Test(httpc, parse_url)
{
    char host[64], prefix[64];
    uint16_t port = 0;
    const char *err = NULL;
    cr_assert_eq(faas_http_parse_url("http://127.0.0.1:8080", host, sizeof(host), &port, prefix, sizeof(prefix), &err), 0);
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, 8080);
    cr_assert_str_eq(prefix, "");
    cr_assert_eq(faas_http_parse_url("localhost:81/base//", host, sizeof(host), &port, prefix, sizeof(prefix), &err), 0);
    cr_assert_str_eq(host, "localhost");
    cr_assert_eq(port, 81);
    cr_assert_str_eq(prefix, "/base");
    cr_assert_eq(faas_http_parse_url("http://gw.example/", host, sizeof(host), &port, prefix, sizeof(prefix), &err), 0);
    cr_assert_eq(port, 80);
    cr_assert_str_eq(prefix, "");
    cr_assert_eq(faas_http_parse_url("https://x:1", host, sizeof(host), &port, prefix, sizeof(prefix), &err), -1);
    cr_assert(strstr(err, "http://") != NULL);
    cr_assert_eq(faas_http_parse_url("http:///x", host, sizeof(host), &port, prefix, sizeof(prefix), &err), -1);
}

Test(httpc, connection_refused_is_an_error)
{
    faas_http_req_t req = {"GET", "127.0.0.1", 1, "/", NULL, 0, NULL, 0, 2000, NULL};
    int status = 0;
    char err[256];
    FILE *out = fopen("/dev/null", "w");
    cr_assert_eq(faas_http_do(&req, &status, out, err, sizeof(err)), -1);
    fclose(out);
    cr_assert(strstr(err, "Connection refused") != NULL, "%s", err);
}
