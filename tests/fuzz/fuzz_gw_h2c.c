// FUZZ_SOURCES: gateway/h2c.c gateway/route.c common/log.c
// FUZZ_PKGS: libh2o-evloop libnghttp2 openssl
/* libFuzzer driver for the HTTP port's preface sniffer (gw_h2c_sniff), fed the way the
 * socket feeds it: the same bytes in growing prefixes (reads may stop anywhere). Checks
 * that the verdict is HTTP/2 exactly when the input starts with the 24-byte preface,
 * HTTP/1 at the first byte that differs, "more" only for a strict prefix of it, and
 * that a verdict, once given, never changes as more bytes arrive. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/internal.h"
#include "h2b/h2b.h"

/* h2c.c's session code is not reached from the sniffer; the link needs these */
void h2b_server_options(nghttp2_option *opt)
{
}

static const char PRE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static int expected(const uint8_t *d, size_t n)
{
    size_t k = n < 24 ? n : 24;
    if (memcmp(d, PRE, k) != 0)
        return GW_SNIFF_HTTP1;
    return n >= 24 ? GW_SNIFF_H2 : GW_SNIFF_MORE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* half the inputs start with the preface (or a mutated one): both paths get depth */
    uint8_t *buf = malloc(size + 24);
    if (buf == NULL)
        return 0;
    size_t n = size;
    if (size > 0 && (data[0] & 1)) {
        memcpy(buf, PRE, 24);
        memcpy(buf + 24, data + 1, size - 1);
        n = size + 23;
    } else if (size > 0) {
        memcpy(buf, data, size);
    }
    int verdict = GW_SNIFF_MORE;
    for (size_t len = 0; len <= n; len += 1 + (len % 5)) {
        int v = gw_h2c_sniff((const char *)buf, len);
        if (v != expected(buf, len))
            abort();
        if (verdict != GW_SNIFF_MORE && v != verdict)
            abort(); /* a verdict never changes */
        verdict = v;
    }
    free(buf);
    return 0;
}
