/* The agent's Thrift framing toward the user server: each thrift_transport, with
 * the platform's request id as an info header where the framing has headers. */
#include <criterion/criterion.h>
#include <string.h>

#include "runtime-agent/thrift_agent.h"

/* binary CALL "add" seqid 7, args a=1 b=2 */
static const uint8_t msg[] = {0x80, 0x01, 0x00, 0x01, 0, 0, 0, 3, 'a', 'd', 'd', 0, 0, 0, 7,
                              8,    0,    1,    0,    0, 0, 1, 8, 0,   2,   0,   0, 0, 2, 0};

static int eq(thrift_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.ptr, s, b.len) == 0;
}

Test(thrift_agent, transport_names)
{
    thrift_framing_t f;
    cr_assert_eq(agent_thrift_transport(NULL, &f), 0);
    cr_assert_eq(f, THRIFT_FRAMED);
    cr_assert_eq(agent_thrift_transport("", &f), 0);
    cr_assert_eq(f, THRIFT_FRAMED);
    cr_assert_eq(agent_thrift_transport("theader", &f), 0);
    cr_assert_eq(f, THRIFT_THEADER);
    cr_assert_eq(agent_thrift_transport("ttheader", &f), 0);
    cr_assert_eq(f, THRIFT_TTHEADER);
    cr_assert_eq(agent_thrift_transport("zlib", &f), -1);
}

Test(thrift_agent, frames_for_each_transport)
{
    thrift_framing_t fr[] = {THRIFT_FRAMED, THRIFT_THEADER, THRIFT_TTHEADER};
    for (size_t i = 0; i < 3; i++) {
        thrift_header_t hs[2] = {{.key = {(const uint8_t *)"x-trace", 7}, .value = {(const uint8_t *)"t1", 2}}};
        uint8_t out[256];
        size_t n = agent_thrift_request_frame(fr[i], THRIFT_BINARY, msg, sizeof(msg), hs, 1, "rid-1", 5, NULL, 0);
        cr_assert(n > sizeof(msg) && n <= sizeof(out));
        cr_assert_eq(agent_thrift_request_frame(fr[i], THRIFT_BINARY, msg, sizeof(msg), hs, 1, "rid-1", 5, out,
                                                sizeof(out)),
                     n);
        thrift_frame_t f;
        const char *err = NULL;
        cr_assert_eq(thrift_parse(out, n, 0, &f, NULL, &err), (long)n, "%s", err ? err : "");
        cr_assert_eq(f.framing, fr[i]);
        cr_assert_eq(f.seqid, 7);
        cr_assert(eq(f.name, "add"));
        cr_assert_eq(f.payload.len, sizeof(msg));
        cr_assert(memcmp(f.payload.ptr, msg, sizeof(msg)) == 0, "payload untouched");
        if (fr[i] == THRIFT_FRAMED) {
            cr_assert_eq(f.n_headers, 0);
            continue;
        }
        cr_assert_eq(f.header_seqid, 7);
        cr_assert(eq(*thrift_header(&f, "x-trace"), "t1"));
        cr_assert(eq(*thrift_header(&f, "faas-request-id"), "rid-1"));
    }
}

Test(thrift_agent, rejects_non_thrift_bodies)
{
    thrift_header_t hs[1];
    const uint8_t junk[] = "GET / HTTP/1.1\r\n";
    cr_assert_eq(agent_thrift_request_frame(THRIFT_FRAMED, THRIFT_BINARY, junk, sizeof(junk) - 1, hs, 0, NULL,
                                            0, NULL, 0),
                 0);
    cr_assert_eq(agent_thrift_request_frame(THRIFT_THEADER, THRIFT_COMPACT, msg, sizeof(msg), hs, 0, NULL, 0,
                                            NULL, 0),
                 0); /* binary bytes declared compact */
}
