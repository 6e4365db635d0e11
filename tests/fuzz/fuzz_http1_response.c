// FUZZ_SOURCES: http1/http1.c common/util.c
// FUZZ_PKGS:
/* Fuzzes the agent's HTTP/1.x byte parsers (http1/http1.c): the user server's
 * response head, the framing rules, then chunked decoding of whatever follows the head,
 * whole and in two pieces like a socket would deliver it (both must decode the same);
 * and the listener's h2-preface / HTTP/1 sniff. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1/http1.h"

static void check_chunked(const char *body, size_t rest)
{
    /* one shot */
    char *a = malloc(rest + 1), *b = malloc(rest + 1);
    memcpy(a, body, rest);
    memcpy(b, body, rest);
    http1_chunked_t d1 = {0}, d2 = {0};
    size_t n1 = rest;
    long r1 = http1_chunked_decode(&d1, a, &n1);
    if (n1 > rest || (r1 >= 0 && n1 + (size_t)r1 > rest))
        abort();
    /* two pieces: the decoder keeps its state across calls */
    size_t half = rest / 2, p1 = half, p2 = rest - half;
    long r2 = http1_chunked_decode(&d2, b, &p1);
    if (p1 > half)
        abort();
    size_t out = p1;
    if (r2 == -2) {
        memmove(b + out, body + half, p2);
        r2 = http1_chunked_decode(&d2, b + out, &p2);
        if (p2 > rest - half)
            abort();
        out += p2;
    }
    /* the same verdict and the same bytes, however the input was cut (when the body
     * ended in the first piece, what followed it is left undecoded either way) */
    if ((r1 == -1) != (r2 == -1))
        abort();
    if (r1 != -1 && r2 != -1 && (r1 >= 0) == (r2 >= 0) && (out != n1 || memcmp(a, b, n1) != 0))
        abort();
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int is_head = data[0] & 1;
    char *buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    size_t len = size - 1;
    if (len > 0 && http1_sniff_preface(buf, len) == HTTP1_SNIFF_H2 && buf[0] != 'P')
        abort();
    http1_hdr_t h[100];
    size_t nh = 100, msg_len;
    const char *msg, *err = NULL;
    int minor, status;
    int r = http1_parse_response(buf, len, &minor, &status, &msg, &msg_len, h, &nh);
    if (r > (int)len || r == 0 || r < -2)
        abort();
    http1_framing_t f;
    if (r > 0) {
        if (status < 100 || status > 999 || nh > 100 || msg + msg_len > buf + r)
            abort();
        for (size_t i = 0; i < nh; i++)
            if (h[i].name_len == 0 || h[i].name < buf || h[i].value + h[i].value_len > buf + r)
                abort();
    }
    if (r > 0 && http1_resp_framing(minor, status, is_head, h, nh, &f, &err) == 0) {
        if (f.body == HTTP1_BODY_NONE && f.length != 0)
            abort();
        if (f.body == HTTP1_BODY_EOF && f.keepalive)
            abort(); /* a close-delimited body can never leave the connection reusable */
        if (f.body == HTTP1_BODY_CHUNKED)
            check_chunked(buf + r, len - (size_t)r);
    }
    free(buf);
    return 0;
}
