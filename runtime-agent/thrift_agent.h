/* runtime-agent/thrift_agent.h - the agent's Thrift data path: POST /_faas/thrift
 * from the dispatcher becomes one frame to the user server, in the function's
 * thrift_transport, over a pooled keep-alive TCP connection. */
#ifndef AGENT_THRIFT_AGENT_H
#define AGENT_THRIFT_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/evl.h"
#include "thrift/thrift.h"

struct agent_req;

/* Points the Thrift path at the user server; transport is "framed" (default, also
 * for NULL or ""), "theader" or "ttheader". */
void agent_thrift_configure(evl_loop_t *loop, uint16_t port, const char *transport);
/* Handles a complete POST /_faas/thrift request (the user server is ready). */
void agent_thrift_start(struct agent_req *r);
/* The stream is gone (done or cancelled): let go of the upstream. */
void agent_thrift_end(struct agent_req *r);

/* ---- thrift_frame.c: pure helpers ---- */

/* spec.thrift_transport -> framing ("" or NULL = framed); 0, or -1 if unknown. */
int agent_thrift_transport(const char *name, thrift_framing_t *out);
/* Frames one unframed message (msg, in proto) for the user server, adding a
 * faas-request-id info header (rid) when the framing has headers; hs must have
 * room for nh + 1 entries. Returns the frame size (written when <= cap; call with
 * cap 0 to size it), or 0 when msg is not a Thrift message. */
size_t agent_thrift_request_frame(thrift_framing_t framing, thrift_proto_t proto, const uint8_t *msg, size_t len,
                                  thrift_header_t *hs, size_t nh, const char *rid, size_t rlen, uint8_t *out,
                                  size_t cap);

#endif
