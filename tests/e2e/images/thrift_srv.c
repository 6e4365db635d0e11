/* thrift_srv.c - a Thrift user server for the test images (issue 15): static, framed
 * transport, strict binary protocol, written by hand (no Thrift C library in a
 * busybox image). The service, as IDL:
 *
 *   service ImgEcho {
 *     string echo(1: string s)   // s back
 *     string whoami()            // "uid=<uid> gid=<gid> imagefile=<content of /etc/imagefile>"
 *   }
 *
 * Any other method gets TApplicationException UNKNOWN_METHOD (1).
 * Listens on 0.0.0.0:$PORT (default 9090), one thread per connection.
 *
 * Build: cc -static -O2 -pthread -o thrift_srv thrift_srv.c */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FRAME (1u << 20)
#define T_CALL 1
#define T_REPLY 2
#define T_EXCEPTION 3
#define T_STOP 0
#define T_I32 8
#define T_STRING 11

/* A bounded cursor over one frame (in) or a reply being built (out). */
typedef struct {
    uint8_t *p;
    size_t len, off;
} buf_t;

static int get_u32(buf_t *b, uint32_t *v)
{
    if (b->len - b->off < 4)
        return -1;
    const uint8_t *p = b->p + b->off;
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    b->off += 4;
    return 0;
}

static int get_str(buf_t *b, const uint8_t **s, uint32_t *n)
{
    if (get_u32(b, n) != 0 || b->len - b->off < *n)
        return -1;
    *s = b->p + b->off;
    b->off += *n;
    return 0;
}

/* Skips a value of type t: the only types our arguments can hold. */
static int skip(buf_t *b, uint8_t t)
{
    static const size_t fixed[16] = {[2] = 1, [3] = 1, [4] = 8, [6] = 2, [8] = 4, [10] = 8};
    uint32_t n;
    const uint8_t *s;
    if (t == T_STRING)
        return get_str(b, &s, &n);
    if (t >= 16 || fixed[t] == 0 || b->len - b->off < fixed[t])
        return -1;
    b->off += fixed[t];
    return 0;
}

static void put(buf_t *o, const void *p, size_t n)
{
    if (o->len - o->off >= n) {
        memcpy(o->p + o->off, p, n);
        o->off += n;
    }
}

static void put_u8(buf_t *o, uint8_t v)
{
    put(o, &v, 1);
}

static void put_u32(buf_t *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(o, b, 4);
}

static void put_str(buf_t *o, const void *s, uint32_t n)
{
    put_u32(o, n);
    put(o, s, n);
}

static void put_field(buf_t *o, uint8_t t, uint16_t id)
{
    uint8_t b[3] = {t, (uint8_t)(id >> 8), (uint8_t)id};
    put(o, b, 3);
}

/* The string field 1 of the argument struct (empty if absent). */
static int arg_string(buf_t *b, const uint8_t **s, uint32_t *n)
{
    *s = (const uint8_t *)"";
    *n = 0;
    for (;;) {
        if (b->off >= b->len)
            return -1;
        uint8_t t = b->p[b->off++];
        if (t == T_STOP)
            return 0;
        if (b->len - b->off < 2)
            return -1;
        uint16_t id = (uint16_t)(b->p[b->off] << 8 | b->p[b->off + 1]);
        b->off += 2;
        if (id == 1 && t == T_STRING) {
            if (get_str(b, s, n) != 0)
                return -1;
        } else if (skip(b, t) != 0) {
            return -1;
        }
    }
}

static void whoami(char *out, size_t cap)
{
    char file[256] = "";
    int fd = open("/etc/imagefile", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, file, sizeof(file) - 1);
        file[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    file[strcspn(file, "\n")] = '\0';
    snprintf(out, cap, "uid=%u gid=%u imagefile=%s", (unsigned)getuid(), (unsigned)getgid(), file);
}

/* Answers one call frame into o (a whole framed reply); -1 closes the connection. */
static int handle(buf_t *in, buf_t *o)
{
    uint32_t ver, nlen, seqid, slen;
    const uint8_t *name, *s;
    char who[512];
    if (get_u32(in, &ver) != 0 || (ver & 0xffff0000u) != 0x80010000u || (ver & 0xff) != T_CALL ||
        get_str(in, &name, &nlen) != 0 || get_u32(in, &seqid) != 0 || arg_string(in, &s, &slen) != 0)
        return -1;
    int known = (nlen == 4 && memcmp(name, "echo", 4) == 0) || (nlen == 6 && memcmp(name, "whoami", 6) == 0);
    put_u32(o, 0); /* the frame length, set below */
    put_u32(o, 0x80010000u | (known ? T_REPLY : T_EXCEPTION));
    put_str(o, name, nlen);
    put_u32(o, seqid);
    if (!known) { /* TApplicationException {1: message, 2: type} */
        put_field(o, T_STRING, 1);
        put_str(o, "unknown method", 14);
        put_field(o, T_I32, 2);
        put_u32(o, 1);
    } else if (nlen == 4) {
        put_field(o, T_STRING, 0);
        put_str(o, s, slen);
    } else {
        whoami(who, sizeof(who));
        put_field(o, T_STRING, 0);
        put_str(o, who, (uint32_t)strlen(who));
    }
    put_u8(o, T_STOP); /* fits: name and s come from one frame, the reply adds < 64 bytes */
    uint32_t flen = (uint32_t)o->off - 4;
    size_t end = o->off;
    o->off = 0;
    put_u32(o, flen);
    o->off = end;
    return 0;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int send_all(int fd, const uint8_t *p, size_t n)
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

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    uint8_t *frame = malloc(MAX_FRAME), *reply = malloc(MAX_FRAME + 64);
    uint8_t hdr[4];
    while (frame != NULL && reply != NULL && read_full(fd, hdr, 4) == 0) {
        uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
        if (n > MAX_FRAME || read_full(fd, frame, n) != 0)
            break;
        buf_t in = {frame, n, 0}, out = {reply, MAX_FRAME + 64, 0};
        if (handle(&in, &out) != 0 || send_all(fd, reply, out.off) != 0)
            break;
    }
    free(frame);
    free(reply);
    close(fd);
    return NULL;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *port = getenv("PORT");
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port ? atoi(port) : 9090)};
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 128) != 0) {
        perror("thrift_srv: listen");
        return 1;
    }
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(long)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
}
