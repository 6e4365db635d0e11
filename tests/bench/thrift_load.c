/* tests/bench/thrift_load.c - a small Thrift load generator: C connections, each
 * keeping DEPTH framed binary calls in flight (DEPTH 1 = not pipelined), for a
 * fixed time; reports calls/s and latency percentiles (send to reply, per call).
 *
 *   thrift_load -p PORT [-H 127.0.0.1] [-c CONNS] [-d DEPTH] [-t SECONDS] [-m METHOD]
 *
 * The call is Calculator.add(1: i32 a, 2: i32 b) (examples/thrift-calc) unless
 * -m names a method of the same shape. One thread per connection, blocking I/O:
 * simple, and the generator is never the bottleneck at the rates of interest. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int id;
    uint64_t calls, errors;
    uint64_t *lat; /* microseconds */
    size_t nlat, caplat;
} worker_t;

static const char *host = "127.0.0.1";
static int port, conns = 1, depth = 1, seconds = 5;
static const char *method = "add";
static volatile int stop_flag;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A framed TBinaryProtocol CALL of method(a, b). */
static size_t encode_call(uint8_t *b, int32_t seqid, int32_t a, int32_t c)
{
    size_t ml = strlen(method), o = 4;
    put32(b + o, 0x80010001u), o += 4;
    put32(b + o, (uint32_t)ml), o += 4;
    memcpy(b + o, method, ml), o += ml;
    put32(b + o, (uint32_t)seqid), o += 4;
    b[o++] = 8, b[o++] = 0, b[o++] = 1, put32(b + o, (uint32_t)a), o += 4;
    b[o++] = 8, b[o++] = 0, b[o++] = 2, put32(b + o, (uint32_t)c), o += 4;
    b[o++] = 0;
    put32(b, (uint32_t)(o - 4));
    return o;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* Reads one frame; returns 1 if it is a REPLY, 0 if an EXCEPTION, -1 on I/O error. */
static int read_reply(int fd, uint8_t *buf, size_t cap, size_t *have)
{
    for (;;) {
        if (*have >= 4) {
            uint32_t len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
            if (len + 4 > cap)
                return -1;
            if (*have >= len + 4) {
                int ok = len >= 4 && buf[4] == 0x80 && buf[7] == 2; /* binary REPLY */
                memmove(buf, buf + len + 4, *have - len - 4);
                *have -= len + 4;
                return ok;
            }
        }
        ssize_t r = read(fd, buf + *have, cap - *have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        *have += (size_t)r;
    }
}

static void record(worker_t *w, uint64_t us)
{
    if (w->nlat == w->caplat) {
        w->caplat = w->caplat ? w->caplat * 2 : 65536;
        w->lat = realloc(w->lat, w->caplat * sizeof(*w->lat));
    }
    w->lat[w->nlat++] = us;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sin.sin_addr);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        perror("connect");
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint64_t *sent = calloc((size_t)depth, sizeof(*sent)); /* ring of send times: replies come in order */
    uint8_t out[256], in[1 << 16];
    size_t have = 0, head = 0;
    int32_t seq = w->id * 1000000;
    for (int i = 0; i < depth; i++) {
        size_t n = encode_call(out, ++seq, i, w->id);
        sent[i] = now_us();
        if (write_all(fd, out, n) != 0)
            goto done;
    }
    while (!stop_flag) {
        int r = read_reply(fd, in, sizeof(in), &have);
        if (r < 0)
            break;
        uint64_t t = now_us();
        record(w, t - sent[head]);
        r ? w->calls++ : w->errors++;
        size_t n = encode_call(out, ++seq, (int32_t)w->calls, w->id);
        sent[head] = now_us();
        head = (head + 1) % (size_t)depth;
        if (write_all(fd, out, n) != 0)
            break;
    }
done:
    close(fd);
    free(sent);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:c:d:t:m:")) != -1) {
        switch (c) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            conns = atoi(optarg);
            break;
        case 'd':
            depth = atoi(optarg);
            break;
        case 't':
            seconds = atoi(optarg);
            break;
        case 'm':
            method = optarg;
            break;
        default:
            fprintf(stderr, "usage: thrift_load -p PORT [-H HOST] [-c CONNS] [-d DEPTH] [-t SECONDS] [-m METHOD]\n");
            return 2;
        }
    }
    if (port <= 0 || conns < 1 || depth < 1 || seconds < 1 || strlen(method) > 64) {
        fprintf(stderr, "thrift_load: bad arguments (-p is required)\n");
        return 2;
    }
    worker_t *ws = calloc((size_t)conns, sizeof(*ws));
    pthread_t *th = calloc((size_t)conns, sizeof(*th));
    uint64_t t0 = now_us();
    for (int i = 0; i < conns; i++) {
        ws[i].id = i + 1;
        pthread_create(&th[i], NULL, run, &ws[i]);
    }
    struct timespec d = {seconds, 0};
    nanosleep(&d, NULL);
    stop_flag = 1;
    uint64_t elapsed = now_us() - t0;
    /* a blocked reader wakes when its in-flight replies arrive; give up on the rest */
    for (int i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    uint64_t calls = 0, errors = 0;
    size_t n = 0;
    for (int i = 0; i < conns; i++)
        calls += ws[i].calls, errors += ws[i].errors, n += ws[i].nlat;
    uint64_t *all = malloc((n ? n : 1) * sizeof(*all));
    size_t k = 0;
    for (int i = 0; i < conns; i++) {
        memcpy(all + k, ws[i].lat, ws[i].nlat * sizeof(*all));
        k += ws[i].nlat;
    }
    qsort(all, n, sizeof(*all), cmp);
    double p50 = n ? (double)all[n / 2] / 1000.0 : 0, p99 = n ? (double)all[(n * 99) / 100] / 1000.0 : 0;
    printf("conns=%d depth=%d calls=%llu errors=%llu calls_per_s=%.0f p50_ms=%.3f p99_ms=%.3f\n", conns, depth,
           (unsigned long long)calls, (unsigned long long)errors, (double)(calls + errors) * 1e6 / (double)elapsed,
           p50, p99);
    return calls > 0 ? 0 : 1;
}
