// FUZZ_SOURCES: thrift/thrift.c
// FUZZ_PKGS:
/* libFuzzer driver for thrift_parse_head: any bytes, every prefix. Checks that a head
 * never claims more bytes than it was given, that once complete it stays the same
 * for longer prefixes, that a rejection names its reason, and that it agrees with
 * thrift_parse on a whole frame. The first byte picks the header limit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "thrift/thrift.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t max_header = 64 + (size_t)data[0] * 64;
    data++, size--;
    long head = 0;
    thrift_frame_t f;
    for (size_t k = 0; k <= size; k++) {
        const char *err = NULL;
        long r = thrift_parse_head(data, k, max_header, &f, NULL, &err);
        if (r < 0) {
            if (err == NULL || head > 0)
                abort(); /* a rejection names its reason; a complete head is not rejected later */
            return 0;
        }
        if (r == 0) {
            if (head > 0)
                abort();
            continue;
        }
        if ((size_t)r > k || (head > 0 && r != head))
            abort();
        head = r;
    }
    if (head <= 0 || f.frame_len > size)
        return 0;
    thrift_frame_t g;
    const char *err = NULL;
    long n = thrift_parse(data, f.frame_len, 1u << 30, &g, NULL, &err);
    /* thrift_parse may still reject what follows the head (e.g. none of it is read
     * there); when it accepts, both agree on what they both read */
    if (n > 0 && (g.framing != f.framing || g.proto != f.proto || g.seqid != f.seqid || g.mtype != f.mtype ||
                  g.name.len != f.name.len || g.name.ptr != f.name.ptr || g.n_headers != f.n_headers ||
                  g.inner_framed != f.inner_framed || g.header_seqid != f.header_seqid))
        abort();
    return 0;
}
