/* runtime-agent/grpc.c - gRPC calls: each stream that front.c hands over is bridged
 * (h2b/) to the user's gRPC server over one h2c connection to
 * 127.0.0.1:<user port>, reused across streams. */
#include "runtime-agent/grpc.h"

#include <stdio.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "grpcw/grpcw.h"
#include "h2b/h2b.h"
#include "runtime-agent/internal.h"

#define MAX_HEADERS 160

static int dropped(const nghttp2_nv *h)
{
    const char *n = (const char *)h->name;
    if (h->namelen == 0 || n[0] == ':')
        return 1;
    /* platform metadata stays in the platform; the request id goes on as x-request-id */
    if (h->namelen >= 5 && memcmp(n, "faas-", 5) == 0)
        return 1;
    return agent_header_is_hop(n, h->namelen) && !(h->namelen == 2 && memcmp(n, "te", 2) == 0);
}

#define NV(n, nl, v, vl) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE})

void agent_grpc_request(h2b_pair_t *p, int eos)
{
    uint16_t port = agent_user_port();
    if (port == 0) {
        h2b_pair_fail(p, faas_err_grpc(FAAS_ERR_UNAVAILABLE), "the function is not running");
        return;
    }
    char hp[32];
    snprintf(hp, sizeof(hp), "127.0.0.1:%u", port);
    h2b_conn_t *c = h2b_client_get(hp);
    if (c == NULL) {
        h2b_pair_fail(p, faas_err_grpc(FAAS_ERR_CRASHED), "cannot connect to the function");
        return;
    }
    nghttp2_nv nv[MAX_HEADERS + 8];
    size_t n = 0;
    static const char *pseudo[] = {":method", ":scheme", ":authority", ":path"};
    for (size_t k = 0; k < 4; k++) {
        const nghttp2_nv *v = h2b_find(&p->req, pseudo[k]);
        if (v != NULL)
            nv[n++] = *v;
    }
    for (size_t i = 0; i < p->req.n && n < MAX_HEADERS; i++)
        if (!dropped(&p->req.nv[i]))
            nv[n++] = p->req.nv[i];
    const nghttp2_nv *rid = h2b_find(&p->req, "faas-request-id");
    if (rid != NULL && h2b_find(&p->req, "x-request-id") == NULL)
        nv[n++] = NV("x-request-id", 12, rid->value, rid->valuelen);
    /* the user server sees the time actually left, in gRPC's own terms */
    const nghttp2_nv *dl = h2b_find(&p->req, "faas-deadline-ms");
    uint64_t left;
    char tmo[16];
    size_t tl;
    if (dl != NULL && http1_parse_u64((const char *)dl->value, dl->valuelen, &left) == 0 && left != 0 &&
        (tl = grpcw_format_timeout(left, tmo, sizeof(tmo))) != 0)
        nv[n++] = NV("grpc-timeout", 12, tmo, tl);
    if (h2b_pair_connect(p, c, nv, n) != 0)
        h2b_pair_fail(p, faas_err_grpc(FAAS_ERR_CRASHED), "cannot open a stream to the function");
}
