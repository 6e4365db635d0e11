/* deploy/httpc.c - a tiny blocking HTTP/1.1 client for `faasctl invoke` and `tasks`: one request
 * per connection (Connection: close), Content-Length, chunked or read-to-EOF bodies,
 * one deadline for the whole exchange. */
#include "deploy/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

typedef struct {
    int fd;
    uint64_t deadline_ms;
    char buf[16384];
    size_t off, len;
    int eof;
} reader_t;

static int wait_fd(int fd, short ev, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = faas_now_ms();
        if (now >= deadline_ms)
            return errno = ETIMEDOUT, -1;
        struct pollfd p = {.fd = fd, .events = ev};
        int rc = poll(&p, 1, (int)(deadline_ms - now));
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

/* Refills the buffer; 0 on data, 1 on EOF, -1 on error/timeout. */
static int fill(reader_t *r)
{
    if (r->off > 0 && r->off == r->len)
        r->off = r->len = 0;
    if (r->len == sizeof(r->buf)) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (r->len == sizeof(r->buf))
        return errno = E2BIG, -1;
    if (wait_fd(r->fd, POLLIN, r->deadline_ms) != 0)
        return -1;
    ssize_t n = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    if (n == 0)
        return r->eof = 1, 1;
    r->len += (size_t)n;
    return 0;
}

/* Reads one CRLF-terminated line (without the CRLF) into line. */
static int read_line(reader_t *r, char *line, size_t cap)
{
    for (;;) {
        char *nl = memchr(r->buf + r->off, '\n', r->len - r->off);
        if (nl != NULL) {
            size_t l = (size_t)(nl - (r->buf + r->off));
            size_t cl = l > 0 && nl[-1] == '\r' ? l - 1 : l;
            if (cl >= cap)
                return errno = E2BIG, -1;
            memcpy(line, r->buf + r->off, cl);
            line[cl] = '\0';
            r->off += l + 1;
            return 0;
        }
        int rc = fill(r);
        if (rc != 0)
            return rc > 0 ? (errno = ECONNRESET, -1) : -1;
    }
}

/* Copies exactly n body bytes (or to EOF when n == UINT64_MAX) to out. */
static int copy_body(reader_t *r, uint64_t n, FILE *out)
{
    while (n > 0) {
        if (r->off == r->len) {
            int rc = fill(r);
            if (rc < 0)
                return -1;
            if (rc > 0)
                return n == UINT64_MAX ? 0 : (errno = ECONNRESET, -1);
            continue;
        }
        size_t avail = r->len - r->off;
        size_t take = (uint64_t)avail < n ? avail : (size_t)n;
        fwrite(r->buf + r->off, 1, take, out);
        r->off += take;
        if (n != UINT64_MAX)
            n -= take;
    }
    return 0;
}

static int copy_chunked(reader_t *r, FILE *out)
{
    char line[1024];
    for (;;) {
        if (read_line(r, line, sizeof(line)) != 0)
            return -1;
        char *end;
        unsigned long long sz = strtoull(line, &end, 16);
        if (end == line)
            return errno = EPROTO, -1;
        if (sz == 0) /* trailers until the empty line */
            for (;;) {
                if (read_line(r, line, sizeof(line)) != 0)
                    return -1;
                if (line[0] == '\0')
                    return 0;
            }
        if (copy_body(r, sz, out) != 0 || read_line(r, line, sizeof(line)) != 0)
            return -1;
    }
}

int faas_http_parse_url(const char *url, char *host, size_t hostcap, uint16_t *port, char *prefix, size_t prefcap,
                        const char **err)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strstr(p, "://") != NULL) {
        *err = "only http:// gateway URLs are supported";
        return -1;
    }
    const char *slash = strchr(p, '/');
    size_t hl = slash != NULL ? (size_t)(slash - p) : strlen(p);
    char hp[300];
    if (hl == 0 || hl >= sizeof(hp)) {
        *err = "gateway URL needs a host";
        return -1;
    }
    memcpy(hp, p, hl);
    hp[hl] = '\0';
    if (strchr(hp, ':') == NULL) {
        if (snprintf(host, hostcap, "%s", hp) >= (int)hostcap)
            return *err = "host too long", -1;
        *port = 80;
    } else if (faas_parse_hostport(hp, host, hostcap, port, err) != 0)
        return -1;
    /* a prefix never ends with '/', the request path brings its own */
    snprintf(prefix, prefcap, "%s", slash != NULL ? slash : "");
    size_t pl = strlen(prefix);
    while (pl > 0 && prefix[pl - 1] == '/')
        prefix[--pl] = '\0';
    return 0;
}

static int dial(const char *host, uint16_t port, uint64_t deadline_ms, char *err, size_t errcap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", port);
    int rc = getaddrinfo(host[0] ? host : "127.0.0.1", ps, &hints, &res);
    if (rc != 0) {
        snprintf(err, errcap, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 &&
            (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline_ms) != 0 ||
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || (errno = soerr) != 0)) {
            snprintf(err, errcap, "cannot connect to %s:%u: %s", host, port, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *p, size_t n, uint64_t deadline_ms)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN || wait_fd(fd, POLLOUT, deadline_ms) != 0)
                return -1;
            continue;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int has_header(const faas_http_req_t *req, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++)
        if (strncasecmp(req->headers[i], name, nl) == 0 && req->headers[i][nl] == ':')
            return 1;
    return 0;
}

static char *build_head(const faas_http_req_t *req, size_t *len)
{
    char *head = NULL;
    size_t hl = 0;
    FILE *f = open_memstream(&head, &hl);
    if (f == NULL)
        return NULL;
    fprintf(f, "%s %s HTTP/1.1\r\n", req->method, req->path);
    if (!has_header(req, "host"))
        fprintf(f, "Host: %s:%u\r\n", req->host, req->port);
    if (!has_header(req, "user-agent"))
        fputs("User-Agent: faasctl\r\n", f);
    for (size_t i = 0; i < req->n_headers; i++)
        fprintf(f, "%s\r\n", req->headers[i]);
    if (req->body != NULL || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0)
        fprintf(f, "Content-Length: %zu\r\n", req->body_len);
    fputs("Connection: close\r\n\r\n", f);
    fclose(f);
    *len = hl;
    return head;
}

/* Reads the status line and headers; leaves the reader at the body. */
static int read_head(reader_t *r, int *status, uint64_t *clen, int *chunked, FILE *head, char *err, size_t errcap)
{
    char line[8192];
    do { /* 1xx interim responses are skipped */
        if (read_line(r, line, sizeof(line)) != 0 || sscanf(line, "HTTP/%*d.%*d %d", status) != 1) {
            snprintf(err, errcap, "bad or missing response from the gateway%s%s", errno ? ": " : "",
                     errno ? strerror(errno) : "");
            return -1;
        }
        if (head != NULL && *status >= 200)
            fprintf(head, "%s\n", line);
        *clen = UINT64_MAX;
        *chunked = 0;
        for (;;) {
            if (read_line(r, line, sizeof(line)) != 0) {
                snprintf(err, errcap, "reading response headers: %s", strerror(errno));
                return -1;
            }
            if (head != NULL && *status >= 200)
                fprintf(head, "%s\n", line);
            if (line[0] == '\0')
                break;
            if (strncasecmp(line, "content-length:", 15) == 0)
                *clen = strtoull(line + 15, NULL, 10);
            else if (strncasecmp(line, "transfer-encoding:", 18) == 0 && strcasestr(line + 18, "chunked"))
                *chunked = 1;
        }
    } while (*status >= 100 && *status < 200);
    return 0;
}

int faas_http_do(const faas_http_req_t *req, int *status, FILE *out, char *err, size_t errcap)
{
    uint64_t deadline = faas_now_ms() + (uint64_t)(req->timeout_ms > 0 ? req->timeout_ms : 60000);
    size_t hl = 0;
    int rc = -1, chunked;
    uint64_t clen;
    reader_t *r = calloc(1, sizeof(*r));
    char *head = build_head(req, &hl);
    errno = 0;
    if (r == NULL || head == NULL) {
        snprintf(err, errcap, "out of memory");
        goto out;
    }
    if ((r->fd = dial(req->host, req->port, deadline, err, errcap)) < 0)
        goto out;
    r->deadline_ms = deadline;
    if (send_all(r->fd, head, hl, deadline) != 0 ||
        (req->body_len > 0 && send_all(r->fd, req->body, req->body_len, deadline) != 0)) {
        snprintf(err, errcap, "sending the request: %s", strerror(errno));
        goto out_close;
    }
    if (read_head(r, status, &clen, &chunked, req->head, err, errcap) != 0)
        goto out_close;
    int no_body = strcmp(req->method, "HEAD") == 0 || *status == 204 || *status == 304;
    rc = no_body ? 0 : chunked ? copy_chunked(r, out) : copy_body(r, clen, out);
    if (rc != 0)
        snprintf(err, errcap, "reading the response body: %s", strerror(errno));
out_close:
    close(r->fd);
out:
    free(head);
    free(r);
    return rc;
}
