/* runtime-agent/thrift_frame.c - pure helpers of the agent's Thrift path (no I/O). */
#include <string.h>

#include "runtime-agent/thrift_agent.h"

int agent_thrift_transport(const char *name, thrift_framing_t *out)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, "framed") == 0)
        *out = THRIFT_FRAMED;
    else if (strcmp(name, "theader") == 0)
        *out = THRIFT_THEADER;
    else if (strcmp(name, "ttheader") == 0)
        *out = THRIFT_TTHEADER;
    else
        return -1;
    return 0;
}

size_t agent_thrift_request_frame(thrift_framing_t framing, thrift_proto_t proto, const uint8_t *msg, size_t len,
                                  thrift_header_t *hs, size_t nh, const char *rid, size_t rlen, uint8_t *out,
                                  size_t cap)
{
    thrift_bytes_t name;
    uint8_t mtype;
    int32_t seqid;
    const char *err;
    if (thrift_parse_message(proto, msg, len, &name, &mtype, &seqid, &err) != 0)
        return 0;
    /* the platform's request id travels as an info header when the framing has them;
     * hs has room for one more entry by contract */
    if (rid != NULL && rlen != 0 && framing != THRIFT_FRAMED) {
        hs[nh] =
            (thrift_header_t){.key = {(const uint8_t *)"faas-request-id", 15}, .value = {(const uint8_t *)rid, rlen}};
        nh++;
    }
    /* the header seqid follows the message's, as python3-thrift and Kitex servers do */
    return thrift_encode_frame(framing, proto, 0, seqid, hs, nh, msg, len, out, cap);
}
