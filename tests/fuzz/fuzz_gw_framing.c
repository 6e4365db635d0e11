// FUZZ_SOURCES: gateway/framing.c
/* libFuzzer driver for the gateway's HTTP/1.1 framing rules. The input is split into
 * header lines ("name:value", '\n' between them; a line without ':' is an obs-fold
 * continuation), the first byte picks HTTP/1.0 or 1.1. Checks: no crash or read
 * outside the headers, a verdict is a known rule with a reason, and the rules the
 * server relies on hold: an accepted head has at most one Content-Length of digits
 * only, never TE with CL, and on 1.1 exactly one Host. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/internal.h"

#define MAXH 100 /* h2o's H2O_MAX_HEADERS */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int minor = data[0] & 1;
    /* a copy of exactly the input, so ASan sees any read past it */
    char *buf = malloc(size - 1 ? size - 1 : 1);
    memcpy(buf, data + 1, size - 1);
    gw_http1_hdr_t hs[MAXH];
    size_t n = 0, i = 0, len = size - 1;
    while (i < len && n < MAXH) {
        size_t e = i;
        while (e < len && buf[e] != '\n')
            e++;
        const char *colon = memchr(buf + i, ':', e - i);
        if (colon == NULL) {
            hs[n] = (gw_http1_hdr_t){NULL, 0, buf + i, e - i};
        } else {
            hs[n] = (gw_http1_hdr_t){buf + i, (size_t)(colon - (buf + i)), colon + 1, (size_t)(buf + e - colon - 1)};
        }
        n++;
        i = e + 1;
    }
    const char *err = NULL;
    int rc = gw_http1_framing_check(minor, hs, n, &err);
    if (rc > 0 || rc <= -GW_FRAMING_NRULES)
        abort();
    if (rc != GW_FRAMING_OK && (err == NULL || strcmp(gw_http1_framing_rule_name(rc), "unknown") == 0))
        abort();
    if (rc == GW_FRAMING_OK) {
        size_t ncl = 0, nte = 0, nhost = 0;
        for (size_t k = 0; k < n; k++) {
            if (hs[k].name == NULL)
                abort(); /* folding accepted */
            if (hs[k].name_len == 14 && strncasecmp(hs[k].name, "content-length", 14) == 0) {
                ncl++;
                if (hs[k].value_len == 0)
                    abort();
                for (size_t j = 0; j < hs[k].value_len; j++)
                    if (hs[k].value[j] < '0' || hs[k].value[j] > '9')
                        abort();
            }
            nte += hs[k].name_len == 17 && strncasecmp(hs[k].name, "transfer-encoding", 17) == 0;
            nhost += hs[k].name_len == 4 && strncasecmp(hs[k].name, "host", 4) == 0;
        }
        if (ncl > 1 || (ncl && nte) || (minor == 1 && nhost != 1) || nhost > 1 || (minor == 0 && nte))
            abort();
    }
    free(buf);
    return 0;
}
