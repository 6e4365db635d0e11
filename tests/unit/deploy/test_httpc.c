#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

/* One canned answer on a loopback socket: an interim 100, then the final response. */
static void *serve_once(void *arg)
{
    int lfd = *(int *)arg, fd = accept(lfd, NULL, NULL);
    char buf[4096];
    if (fd < 0)
        return NULL;
    (void)!read(fd, buf, sizeof(buf));
    const char resp[] = "HTTP/1.1 100 Continue\r\n\r\n"
                        "HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok";
    (void)!write(fd, resp, sizeof(resp) - 1);
    close(fd);
    return NULL;
}

Test(httpc, head_is_copied_when_asked_without_the_interim_response)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(lfd, 1), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, serve_once, &lfd), 0);
    char *head = NULL, *body = NULL;
    size_t hl = 0, bl = 0;
    FILE *hf = open_memstream(&head, &hl), *bf = open_memstream(&body, &bl);
    faas_http_req_t req = {.method = "GET", .host = "127.0.0.1", .port = ntohs(sa.sin_port), .path = "/tasks/x/result",
                           .timeout_ms = 5000, .head = hf};
    int status = 0;
    char err[256];
    cr_assert_eq(faas_http_do(&req, &status, bf, err, sizeof(err)), 0, "%s", err);
    fclose(hf);
    fclose(bf);
    pthread_join(th, NULL);
    close(lfd);
    cr_assert_eq(status, 201);
    cr_assert_str_eq(head, "HTTP/1.1 201 Created\nX-A: 1\nContent-Length: 2\n\n");
    cr_assert_str_eq(body, "ok");
    free(head);
    free(body);
}
