// FUZZ_SOURCES: gateway/endpoints_wire.c gateway/route.c
/* libFuzzer driver for the gateway's faas.EndpointsApi request parsing
 * (gateway/endpoints_wire.c). Checks: a parsed request names a valid function, a
 * refusal says why, an authority host stays inside out and is one of the shapes the
 * endpoints answer may print unescaped. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char fn[64], host[64];
    const char *err = NULL;
    if (gw_ep_parse_request(data, size, fn, &err) == 0) {
        size_t n = strlen(fn);
        if (n == 0 || n > 63 || fn[0] == '-')
            abort();
        for (size_t i = 0; i < n; i++)
            if (!((fn[i] >= 'a' && fn[i] <= 'z') || (fn[i] >= '0' && fn[i] <= '9') || fn[i] == '-'))
                abort();
    } else if (err == NULL || fn[0] != '\0') {
        abort();
    }
    size_t h = gw_ep_authority_host((const char *)data, size, host, sizeof(host));
    if (h >= sizeof(host) || strlen(host) != h || h > size)
        abort();
    for (size_t i = 0; i < h; i++)
        if (strchr("\"\\/ ?#@", host[i]) != NULL || (unsigned char)host[i] < 0x21 || (unsigned char)host[i] > 0x7e)
            abort();
    return 0;
}
