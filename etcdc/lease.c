/* etcdc/lease.c - leases: grant, one renewal, revoke.
 *
 * LeaseKeepAlive is a bidirectional stream in etcd's API; a single renewal is one
 * request, the client's half-close and one reply, which is a unary call on the wire
 * (etcd's handler answers, then sees the end of the stream and ends the call OK). */
#include <errno.h>
#include <string.h>

#include "etcdc/internal.h"

int etcdc_lease_grant(etcdc_t *c, int64_t ttl_s, int64_t *id)
{
    Etcdserverpb__LeaseGrantRequest rq;
    etcdserverpb__lease_grant_request__init(&rq);
    rq.ttl = ttl_s;
    ProtobufCMessage *resp = NULL;
    /* a grant that may have been applied is not retried: the lease would be granted twice
     * and the first one would only expire, but the caller's keys would not be on it */
    int rc = ec_call(c, "/etcdserverpb.Lease/LeaseGrant", &rq.base, &etcdserverpb__lease_grant_response__descriptor,
                     EC_WRITE, &resp);
    if (rc != 0)
        return rc;
    Etcdserverpb__LeaseGrantResponse *gr = (Etcdserverpb__LeaseGrantResponse *)resp;
    if (gr->error != NULL && gr->error[0] != '\0')
        rc = ec_fail(-EIO, "lease grant: %s", gr->error);
    else if (id)
        *id = gr->id;
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int etcdc_lease_keepalive(etcdc_t *c, int64_t id, int64_t *ttl_s)
{
    Etcdserverpb__LeaseKeepAliveRequest rq;
    etcdserverpb__lease_keep_alive_request__init(&rq);
    rq.id = id;
    ProtobufCMessage *resp = NULL;
    /* a renewal twice is a renewal: retried like a read */
    int rc = ec_call(c, "/etcdserverpb.Lease/LeaseKeepAlive", &rq.base,
                     &etcdserverpb__lease_keep_alive_response__descriptor, EC_READ, &resp);
    if (rc != 0)
        return rc;
    int64_t ttl = ((Etcdserverpb__LeaseKeepAliveResponse *)resp)->ttl;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (ttl <= 0) /* etcd's answer for a lease it no longer has */
        return ec_fail(-ENOENT, "lease %lld has expired", (long long)id);
    if (ttl_s)
        *ttl_s = ttl;
    return 0;
}

int etcdc_lease_revoke(etcdc_t *c, int64_t id)
{
    Etcdserverpb__LeaseRevokeRequest rq;
    etcdserverpb__lease_revoke_request__init(&rq);
    rq.id = id;
    ProtobufCMessage *resp = NULL;
    /* revoking twice ends in the same state (the second says NOT_FOUND) */
    int rc = ec_call(c, "/etcdserverpb.Lease/LeaseRevoke", &rq.base,
                     &etcdserverpb__lease_revoke_response__descriptor, EC_READ, &resp);
    if (rc == 0)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
