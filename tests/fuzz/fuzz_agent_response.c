// FUZZ_SOURCES: runtime-agent/spec.c common/util.c common/log.c
// FUZZ_PKGS: libh2o-evloop
/* Fuzzes how the agent frames a user server's HTTP/1.x response: the head parser the data
 * path uses (picohttpparser, bundled in libh2o), the framing rules, then chunked decoding of
 * whatever follows the head, fed in two pieces like a socket would. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime-agent/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int is_head = data[0] & 1;
    char *buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    size_t len = size - 1;
    struct phr_header h[100];
    size_t nh = 100, msg_len;
    const char *msg, *err = NULL;
    int minor, status;
    int r = phr_parse_response(buf, len, &minor, &status, &msg, &msg_len, h, &nh, 0);
    agent_framing_t f;
    if (r > 0 && agent_resp_framing(minor, status, is_head, h, nh, &f, &err) == 0) {
        if (f.body == AGENT_BODY_NONE && f.length != 0)
            abort();
        if (f.body == AGENT_BODY_EOF && f.keepalive)
            abort(); /* a close-delimited body can never leave the connection reusable */
        if (f.body == AGENT_BODY_CHUNKED) {
            struct phr_chunked_decoder dec;
            memset(&dec, 0, sizeof(dec));
            dec.consume_trailer = 1;
            size_t rest = len - (size_t)r, half = rest / 2, n1 = half, n2 = rest - half;
            ssize_t d = phr_decode_chunked(&dec, buf + r, &n1);
            if (n1 > half)
                abort();
            if (d == -2) {
                d = phr_decode_chunked(&dec, buf + r + half, &n2);
                if (n2 > rest - half)
                    abort();
            }
        }
    }
    free(buf);
    return 0;
}
