// FUZZ_SOURCES: gateway/route.c
/* libFuzzer driver for the gateway's routing key parser. Checks the invariants the
 * server relies on: slices stay inside the input, a routed name is a valid function
 * name, the rest is empty or starts with '/' or '?', errors always say why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    gw_slice_t name, rest;
    const char *err = NULL;
    int rc = gw_route_parse(p, size, &name, &rest, &err);
    if (rc == GW_ERR_MALFORMED) {
        if (err == NULL)
            abort();
        return 0;
    }
    if (rc == GW_ROUTE_OTHER)
        return 0;
    if (rc != GW_ROUTE_FUNCTION)
        abort();
    if (name.ptr < p || name.ptr + name.len > p + size || rest.ptr < p || rest.ptr + rest.len > p + size)
        abort();
    if (name.len == 0 || name.len > 63 || name.ptr[0] == '-')
        abort();
    for (size_t i = 0; i < name.len; i++)
        if (!((name.ptr[i] >= 'a' && name.ptr[i] <= 'z') || (name.ptr[i] >= '0' && name.ptr[i] <= '9') ||
              name.ptr[i] == '-'))
            abort();
    if (rest.len != 0 && rest.ptr[0] != '/' && rest.ptr[0] != '?')
        abort();
    if (rest.ptr + rest.len != p + size)
        abort();
    /* header helpers see the same bytes in the server */
    (void)gw_header_is_hop(p, size, p, size, p, size);
    (void)gw_request_id_sane(p, size);
    gw_slice_t hn;
    if (size > 0 && gw_route_host(p, size, p + size / 2, size - size / 2, &hn) == 0 &&
        (hn.len == 0 || hn.len > 63 || hn.ptr != p))
        abort();
    return 0;
}
