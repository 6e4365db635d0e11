/* discovery/httpd.c - a blocking HTTP/1.0 responder for /metrics and /healthz on its
 * own thread. Scrapes are rare and tiny, so one connection at a time with short
 * socket timeouts is enough and keeps grpc's threads out of it. */
#include "discovery/discovery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/util.h"

struct disc_httpd {
    int fd;
    pthread_t thread;
    disc_http_fn fn;
    void *ud;
    int stopping; /* atomic */
};

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads the request head (up to 8 KiB) and answers one request. */
static void serve(disc_httpd_t *h, int c)
{
    struct timeval tv = {.tv_sec = 2};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[8192];
    size_t n = 0;
    while (n < sizeof(req) - 1) {
        ssize_t r = recv(c, req + n, sizeof(req) - 1 - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        req[n] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    req[n] = '\0';
    int status = 400;
    char *body = NULL, path[1024] = "";
    size_t blen = 0;
    const char *ctype = "text/plain; charset=utf-8";
    char method[16];
    if (sscanf(req, "%15s %1023s", method, path) == 2) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            status = 405;
        } else {
            char *q = strchr(path, '?');
            if (q)
                *q = '\0';
            h->fn(h->ud, path, &status, &body, &blen, &ctype);
        }
    }
    if (body == NULL) {
        body = strdup(faas_http_reason(status));
        blen = body ? strlen(body) : 0;
    }
    char head[256];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                      status, faas_http_reason(status), ctype, blen);
    if (write_all(c, head, (size_t)hl) == 0 && strncmp(req, "HEAD", 4) != 0 && body)
        write_all(c, body, blen);
    free(body);
}

static void *httpd_main(void *arg)
{
    disc_httpd_t *h = arg;
    while (!__atomic_load_n(&h->stopping, __ATOMIC_ACQUIRE)) {
        int c = accept4(h->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            break; /* shutdown() on the listener lands here */
        }
        serve(h, c);
        close(c);
    }
    return NULL;
}

disc_httpd_t *disc_httpd_start(const char *addr, disc_http_fn fn, void *ud, int *bound_port, const char **err)
{
    char host[256];
    uint16_t port;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (faas_parse_hostport(addr, host, sizeof(host), &port, err) != 0)
        return NULL;
    if (host[0] == '\0')
        strcpy(host, "0.0.0.0");
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        *err = "metrics address must be an IPv4 host:port";
        return NULL;
    }
    sa.sin_port = htons(port);
    disc_httpd_t *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        *err = "out of memory";
        return NULL;
    }
    h->fn = fn;
    h->ud = ud;
    int one = 1;
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t sl = sizeof(sa);
    if (h->fd < 0 || setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(h->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(h->fd, 64) != 0 ||
        getsockname(h->fd, (struct sockaddr *)&sa, &sl) != 0) {
        *err = "cannot listen on the metrics address (in use?)";
        goto fail;
    }
    if (bound_port)
        *bound_port = ntohs(sa.sin_port);
    if (pthread_create(&h->thread, NULL, httpd_main, h) != 0) {
        *err = "cannot start the metrics thread";
        goto fail;
    }
    return h;
fail:
    if (h->fd >= 0)
        close(h->fd);
    free(h);
    return NULL;
}

void disc_httpd_stop(disc_httpd_t *h)
{
    if (h == NULL)
        return;
    __atomic_store_n(&h->stopping, 1, __ATOMIC_RELEASE);
    shutdown(h->fd, SHUT_RDWR); /* wakes the blocked accept */
    pthread_join(h->thread, NULL);
    close(h->fd);
    free(h);
}
