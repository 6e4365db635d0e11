/* libFuzzer driver for faasctl's JSON reading (deploy/json.c): whatever a gateway
 * sends, every member lookup, array walk and text decoding stays inside the input and
 * the output buffer, and a found value lies within the bytes it was found in. */
// FUZZ_SOURCES: deploy/json.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/internal.h"

static void within(const char *s, size_t n, const char *v, size_t vn)
{
    if (v < s || vn == 0 || v + vn > s + n)
        abort();
}

static void text(const char *v, size_t vn)
{
    char out[64];
    ctl_json_text(v, vn, out, sizeof(out));
    if (strlen(out) >= sizeof(out))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes, so ASan sees any read past the end */
    char *s = malloc(size ? size : 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    static const char *const keys[] = {"id", "status", "tasks", "next", "error", ""};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        const char *v, *it;
        size_t vn, in, pos = 0;
        if (ctl_json_member(s, size, keys[k], &v, &vn) != 0)
            continue;
        within(s, size, v, vn);
        text(v, vn);
        for (int i = 0; i < 1000 && ctl_json_next_item(v, vn, &pos, &it, &in) == 1; i++) {
            within(v, vn, it, in);
            text(it, in);
        }
    }
    size_t pos = 0, in;
    const char *it;
    while (ctl_json_next_item(s, size, &pos, &it, &in) == 1)
        within(s, size, it, in);
    free(s);
    return 0;
}
