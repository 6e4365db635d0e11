/* libFuzzer driver for discovery's Deploy input path: any bytes must unpack+validate
 * to a spec or an error sentence, never crash or leak. A spec that passes must
 * pack, and validating it again must be a fixed point (same bytes), since the
 * stored spec is re-read and re-sent to every watcher. */
// FUZZ_SOURCES: discovery/spec.c common/util.c common/spec.c
// FUZZ_PKGS: libprotobuf-c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "discovery/discovery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *err = NULL;
    Faas__FunctionSpec *s = disc_spec_parse(data, size, &err);
    if (s == NULL) {
        if (err == NULL || err[0] == '\0')
            abort(); /* every refusal says why */
        return 0;
    }
    size_t len1, len2;
    uint8_t *p1 = faas_pb_pack(&s->base, &len1);
    Faas__FunctionSpec *again = disc_spec_parse(p1, len1, &err);
    if (again == NULL)
        abort(); /* a normalized spec must stay valid */
    uint8_t *p2 = faas_pb_pack(&again->base, &len2);
    if (len1 != len2 || memcmp(p1, p2, len1) != 0)
        abort(); /* defaults must be idempotent */
    if (!disc_valid_sha256(s->code_sha256) || s->health == NULL || s->port_env[0] == '\0')
        abort();
    free(p1);
    free(p2);
    faas__function_spec__free_unpacked(again, NULL);
    faas__function_spec__free_unpacked(s, NULL);
    return 0;
}
