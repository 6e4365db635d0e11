// FUZZ_SOURCES: grpcw/grpcw.c common/util.c common/errors.c
// FUZZ_PKGS:
/* libFuzzer driver for the gRPC wire rules (grpcw/). The first byte picks the
 * helper; the rest is its input. Invariants: grpc-timeout round-trips (parse(format(x))
 * >= x, never 0 for x > 0), percent-encoding round-trips and its output is printable,
 * path slices stay inside the input and hold no '/', the frame scanner gives the same
 * answer whatever way the stream is split. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grpcw/grpcw.h"

static void timeouts(const uint8_t *d, size_t n)
{
    uint64_t ms;
    if (grpcw_parse_timeout((const char *)d, n, &ms) == 0) {
        char b[32];
        size_t l = grpcw_format_timeout(ms, b, sizeof(b));
        uint64_t back;
        if (l == 0 || grpcw_parse_timeout(b, l, &back) != 0 || back < ms)
            abort();
    }
    uint64_t x = 0;
    memcpy(&x, d, n < 8 ? n : 8);
    char b[32];
    size_t l = grpcw_format_timeout(x, b, sizeof(b));
    uint64_t back;
    /* beyond 99999999 hours the value is capped there */
    uint64_t cap = 99999999ull * 3600000ull;
    if (l == 0 || l > 9 || grpcw_parse_timeout(b, l, &back) != 0 || back < (x < cap ? x : cap) ||
        (x > 0 && back == 0))
        abort();
}

static void percent(const uint8_t *d, size_t n)
{
    size_t need = grpcw_percent_encode((const char *)d, n, NULL, 0);
    char *enc = malloc(need + 1), *dec = malloc(need + 1);
    if (grpcw_percent_encode((const char *)d, n, enc, need) != need)
        abort();
    for (size_t i = 0; i < need; i++)
        if (enc[i] < 0x20 || enc[i] > 0x7e)
            abort();
    size_t dl = grpcw_percent_decode(enc, need, dec);
    if (dl != n || memcmp(dec, d, n) != 0)
        abort();
    /* decoding arbitrary input never grows it */
    char *raw = malloc(n + 1);
    if (grpcw_percent_decode((const char *)d, n, raw) > n)
        abort();
    free(raw);
    free(enc);
    free(dec);
}

static void path(const uint8_t *d, size_t n)
{
    grpcw_slice_t s, m;
    const char *err = NULL;
    const char *p = (const char *)d;
    if (grpcw_parse_path(p, n, &s, &m, &err) != 0) {
        if (err == NULL)
            abort();
        return;
    }
    if (s.ptr != p + 1 || s.len == 0 || m.len == 0 || m.ptr + m.len != p + n || memchr(s.ptr, '/', s.len) ||
        memchr(m.ptr, '/', m.len))
        abort();
    grpcw_header_forwarded(p, n);
    grpcw_metadata_key_ok(p, n);
    grpcw_content_type_ok(p, n);
}

static void frames(const uint8_t *d, size_t n)
{
    if (n < 2)
        return;
    uint32_t max = d[0] * 64u;
    size_t step = d[1] % 7 + 1;
    d += 2;
    n -= 2;
    grpcw_scan_t a = {0}, b = {0};
    const char *ea = NULL, *eb = NULL;
    int ra = grpcw_scan(&a, d, n, max, &ea), rb = 0;
    for (size_t off = 0; off < n && rb == 0; off += step)
        rb = grpcw_scan(&b, d + off, off + step <= n ? step : n - off, max, &eb);
    if (ra != rb || (ra == 0 && (a.messages != b.messages || a.left != b.left || a.hdr_have != b.hdr_have)))
        abort();
    if (ra != 0 && (ea == NULL || eb == NULL))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 4) {
    case 0:
        timeouts(data + 1, size - 1);
        break;
    case 1:
        percent(data + 1, size - 1);
        break;
    case 2:
        path(data + 1, size - 1);
        break;
    default:
        frames(data + 1, size - 1);
        break;
    }
    return 0;
}
