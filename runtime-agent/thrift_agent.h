/* runtime-agent/thrift_agent.h - the agent's Thrift data path: POST /_faas/thrift
 * from the dispatcher becomes one frame to the user server, in the function's
 * thrift_transport, over a pooled keep-alive TCP connection. */
#ifndef AGENT_THRIFT_AGENT_H
#define AGENT_THRIFT_AGENT_H

#include <stdint.h>

struct st_h2o_req_t;
struct st_h2o_evloop_t;

/* Points the Thrift path at the user server; transport is "framed" (default, also
 * for NULL or ""), "theader" or "ttheader". */
void agent_thrift_configure(struct st_h2o_evloop_t *loop, uint16_t port, const char *transport);
/* 1 if req is for the Thrift path (POST /_faas/thrift). */
int agent_thrift_is(struct st_h2o_req_t *req);
/* Handles a /_faas/thrift request (the user server is ready). */
void agent_thrift_handle(struct st_h2o_req_t *req);

#endif
