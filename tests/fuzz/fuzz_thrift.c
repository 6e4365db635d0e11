// FUZZ_SOURCES: thrift/thrift.c
// FUZZ_PKGS:
/* libFuzzer driver for the Thrift codec: parse any bytes, then re-encode what
 * parsed (error reply and re-framing) and parse that back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "thrift/thrift.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    if (size > 14 && size < 400) { /* the reverse direction on raw bytes: never reads past them */
        thrift_header_t h;
        uint8_t kb[200];
        (void)thrift_meta_parse((const char *)data, size, (const char *)data, size, kb, sizeof(kb), &h);
    }
    while (off < size) {
        thrift_frame_t f, g;
        const char *err = NULL;
        size_t need = 0;
        long r = thrift_parse(data + off, size - off, 1 << 20, &f, &need, &err);
        if (r <= 0) {
            if (r < 0 && err == NULL)
                abort(); /* every rejection names its reason */
            return 0;
        }
        thrift_bytes_t key;
        (void)thrift_routing_key(&f, &key);
        /* every info header that can travel as an h2 header must come back as itself */
        for (size_t i = 0; i < f.n_headers; i++) {
            char name[416];
            uint8_t kb[208];
            thrift_header_t h;
            size_t nl = thrift_meta_name(&f.headers[i], name, sizeof(name));
            if (nl == 0)
                continue;
            if (thrift_meta_parse(name, nl, (const char *)f.headers[i].value.ptr, f.headers[i].value.len, kb,
                                     sizeof(kb), &h) != 0 ||
                h.is_int != f.headers[i].is_int || h.int_key != f.headers[i].int_key ||
                h.key.len != f.headers[i].key.len ||
                (h.key.len && memcmp(h.key.ptr, f.headers[i].key.ptr, h.key.len) != 0))
                abort();
        }
        static uint8_t out[1 << 21];
        size_t m = thrift_encode_error(&f, FAAS_TAPP_INTERNAL_ERROR, "fuzz", out, sizeof(out));
        if (m <= sizeof(out) && thrift_parse(out, m, 1 << 21, &g, NULL, &err) != (long)m)
            abort(); /* our own replies must parse */
        m = thrift_encode_frame(f.framing, f.proto, f.flags, f.header_seqid, f.headers, f.n_headers, f.payload.ptr,
                                   f.payload.len, out, sizeof(out));
        if (m <= sizeof(out) && thrift_parse(out, m, 1 << 21, &g, NULL, &err) != (long)m)
            abort(); /* re-framing what we parsed must parse */
        off += (size_t)r;
    }
    return 0;
}
