/* libFuzzer driver for the manifest parser: any bytes must give a spec or an error,
 * never a crash, leak or overflow. A parsed spec must also pack and print. */
// FUZZ_SOURCES: deploy/manifest.c deploy/values.c common/util.c common/spec.c
// FUZZ_PKGS: yaml-0.1
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    faas_manifest_t m;
    char err[256];
    if (faas_manifest_parse((const char *)data, size, &m, err, sizeof(err)) != 0) {
        if (strncmp(err, "line ", 5) != 0)
            abort(); /* every error names a line */
        return 0;
    }
    const char *e;
    (void)faas_manifest_validate(m.spec, &e);
    faas_manifest_defaults(m.spec);
    size_t n = faas__function_spec__get_packed_size(m.spec);
    uint8_t *buf = malloc(n + 1);
    faas__function_spec__pack(m.spec, buf);
    free(buf);
    FILE *f = fopen("/dev/null", "w");
    if (f != NULL) {
        faas_manifest_print(f, m.spec);
        fclose(f);
    }
    faas_manifest_free(&m);
    return 0;
}
