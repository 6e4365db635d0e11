/* etcdc/etcdc.h - a small etcd v3 client over grpc core: ranges, puts, deletes,
 * transactions, leases and watches, for discovery's durable state on several hosts
 * (docs/multihost.md). The messages are protobuf-c code generated at build time from
 * the .proto files etcd publishes (Debian's golang-etcd-server-dev).
 *
 * Calls block on the caller's thread (never call them from an event loop callback) and
 * are thread-safe. A client knows every endpoint it was given and moves to the next
 * one when the current one cannot be reached; it retries nothing that might have been
 * applied. A watch runs on a thread of its own and survives endpoint failures.
 *
 * Keys and values are byte strings: (pointer, length). Results: 0, or a negative errno:
 * -ENOENT (no such key), -EAGAIN (no endpoint reachable), -ETIMEDOUT (deadline),
 * -ECANCELED (compacted revision), -EIO (any other failure). etcdc_error() says why,
 * for the calling thread's last failed call. */
#ifndef ETCDC_ETCDC_H
#define ETCDC_ETCDC_H

#include <stddef.h>
#include <stdint.h>

typedef struct etcdc etcdc_t;

/* One key-value as etcd stores it; key and value are malloc'd, NUL-terminated beyond
 * their length (so text values can be used as strings). */
typedef struct {
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
    int64_t create_rev, mod_rev, version, lease;
} etcdc_kv_t;

/* A range's answer. */
typedef struct {
    etcdc_kv_t *kvs;
    size_t n;
    int64_t revision; /* the store's revision when it was read */
    int64_t count;    /* keys in the range (more than n when limited) */
    int more;         /* 1 when limit cut it short */
} etcdc_range_t;

/* Range flags. */
enum { ETCDC_KEYS_ONLY = 1, ETCDC_COUNT_ONLY = 2, ETCDC_SERIALIZABLE = 4 };

/* "etcd://h1:p1[,h2:p2...]" or "h1:p1[,...]"; nothing is contacted yet. timeout_ms is
 * every unary call's deadline (0 = 5000). NULL with err filled on a bad spec. */
etcdc_t *etcdc_open(const char *endpoints, int timeout_ms, char *err, size_t errcap);
/* Stops the client's watches and frees it. */
void etcdc_close(etcdc_t *c);
/* The calling thread's last failure, in one line ("" if none). */
const char *etcdc_error(void);
/* The endpoint in use now ("host:port"). */
const char *etcdc_endpoint(etcdc_t *c);

/* The end of the range of every key that starts with prefix (etcd's "prefix + 1"),
 * written into out (cap >= plen); returns its length, 1 for "\0" (the whole keyspace). */
size_t etcdc_prefix_end(const uint8_t *prefix, size_t plen, uint8_t *out, size_t cap);

/* One key: 0 with *out filled (free with etcdc_kv_free), -ENOENT, or an error. */
int etcdc_get(etcdc_t *c, const void *key, size_t klen, etcdc_kv_t *out);
/* [key, end) (end NULL: key alone) at revision rev (0 = newest), at most limit keys
 * (0 = all), sorted by key. Free out with etcdc_range_free. */
int etcdc_range(etcdc_t *c, const void *key, size_t klen, const void *end, size_t elen, int64_t rev, int64_t limit,
                int flags, etcdc_range_t *out);
void etcdc_kv_free(etcdc_kv_t *kv);
void etcdc_range_free(etcdc_range_t *r);
/* Stores key = val, attached to lease (0 = none); *rev (may be NULL) gets the new revision. */
int etcdc_put(etcdc_t *c, const void *key, size_t klen, const void *val, size_t vlen, int64_t lease, int64_t *rev);
/* Deletes [key, end) (end NULL: key alone); *deleted (may be NULL) gets how many. */
int etcdc_delete(etcdc_t *c, const void *key, size_t klen, const void *end, size_t elen, int64_t *deleted);

/* ---- transactions ---- */

typedef enum { ETCDC_CMP_VERSION, ETCDC_CMP_CREATE, ETCDC_CMP_MOD, ETCDC_CMP_VALUE } etcdc_cmp_target_t;
typedef enum { ETCDC_EQ, ETCDC_NE, ETCDC_LT, ETCDC_GT } etcdc_cmp_op_t;
/* "target(key) op operand": num for VERSION/CREATE/MOD (a key that does not exist has
 * version, create and mod revision 0), val for VALUE. */
typedef struct {
    etcdc_cmp_target_t target;
    etcdc_cmp_op_t op;
    const void *key;
    size_t klen;
    int64_t num;
    const void *val;
    size_t vlen;
} etcdc_cmp_t;

typedef enum { ETCDC_OP_PUT, ETCDC_OP_DELETE, ETCDC_OP_GET } etcdc_op_kind_t;
/* An operation of a transaction's branch; end as in etcdc_range/etcdc_delete. */
typedef struct {
    etcdc_op_kind_t kind;
    const void *key;
    size_t klen;
    const void *end;
    size_t elen;
    const void *val;
    size_t vlen;
    int64_t lease;
} etcdc_op_t;

/* If every cmp holds, runs then[], else otherwise[] (one atomic revision). *succeeded
 * says which ran; *rev (may be NULL) the revision after. gets (may be NULL) receives
 * one etcdc_range_t per ETCDC_OP_GET of the branch that ran, in order, *ngets of them
 * (free each with etcdc_range_free and the array with free). */
int etcdc_txn(etcdc_t *c, const etcdc_cmp_t *cmp, size_t ncmp, const etcdc_op_t *then, size_t nthen,
              const etcdc_op_t *otherwise, size_t notherwise, int *succeeded, int64_t *rev, etcdc_range_t **gets,
              size_t *ngets);

/* ---- leases ---- */

/* A lease of ttl_s seconds: *id. */
int etcdc_lease_grant(etcdc_t *c, int64_t ttl_s, int64_t *id);
/* Renews it once; *ttl_s (may be NULL) gets the TTL granted, -ENOENT once it expired. */
int etcdc_lease_keepalive(etcdc_t *c, int64_t id, int64_t *ttl_s);
/* Ends it now, deleting its keys. */
int etcdc_lease_revoke(etcdc_t *c, int64_t id);

/* ---- watches ---- */

enum { ETCDC_EV_PUT = 0, ETCDC_EV_DELETE = 1 };
typedef struct {
    int type;      /* ETCDC_EV_PUT or ETCDC_EV_DELETE */
    etcdc_kv_t kv; /* a DELETE has the key and mod_rev only */
} etcdc_event_t;

/* Called on the watch's thread with the events of one or more revisions, in order;
 * revision is the last one they cover. Return 0 to go on, non-zero to stop the watch. */
typedef int (*etcdc_watch_fn)(void *ud, const etcdc_event_t *evs, size_t n, int64_t revision);
/* Called on the watch's thread when etcd has compacted the revisions the watch still
 * needed (compact_rev is the oldest it keeps): the caller must read the range afresh
 * (etcdc_range) and return the revision it read at; the watch resumes after it. A
 * negative return stops the watch. Also called, with compact_rev 0, when etcd answers
 * at a revision below the last one delivered (rebuilt or restored at the same
 * address): what the caller holds may be gone there. */
typedef int64_t (*etcdc_resync_fn)(void *ud, int64_t compact_rev);

typedef struct etcdc_watch etcdc_watch_t;

/* Watches [key, end) for every revision from start_rev on (the revision of a range
 * read + 1, so nothing between the read and the watch is missed). Across endpoint
 * failures and etcd restarts it reconnects and resumes after the last revision
 * delivered, so no event is lost or repeated. NULL with err filled. */
etcdc_watch_t *etcdc_watch_start(etcdc_t *c, const void *key, size_t klen, const void *end, size_t elen,
                                 int64_t start_rev, etcdc_watch_fn fn, etcdc_resync_fn resync, void *ud, char *err,
                                 size_t errcap);
/* The last revision delivered to fn (start_rev - 1 before any). */
int64_t etcdc_watch_revision(etcdc_watch_t *w);
/* Stops it: no call to fn or resync happens after this returns. Not from fn itself. */
void etcdc_watch_stop(etcdc_watch_t *w);

#endif
