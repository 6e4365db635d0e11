/* etcdc/kv.c - ranges, puts, deletes and transactions. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "etcdc/internal.h"

#define BIN(p, n) ((ProtobufCBinaryData){(n), (uint8_t *)(uintptr_t)(p)})

int ec_range_copy(etcdc_range_t *out, const Etcdserverpb__RangeResponse *rr)
{
    memset(out, 0, sizeof(*out));
    out->revision = rr->header ? rr->header->revision : 0;
    out->count = rr->count;
    out->more = rr->more;
    if (rr->n_kvs == 0)
        return 0;
    if ((out->kvs = calloc(rr->n_kvs, sizeof(*out->kvs))) == NULL)
        return -1;
    for (size_t i = 0; i < rr->n_kvs; i++, out->n++)
        if (ec_kv_copy(&out->kvs[i], rr->kvs[i]) != 0) {
            etcdc_range_free(out);
            return -1;
        }
    return 0;
}

void etcdc_range_free(etcdc_range_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++)
        etcdc_kv_free(&r->kvs[i]);
    free(r->kvs);
    r->kvs = NULL;
    r->n = 0;
}

static void range_req(Etcdserverpb__RangeRequest *rq, const void *key, size_t klen, const void *end, size_t elen,
                      int64_t rev, int64_t limit, int flags)
{
    etcdserverpb__range_request__init(rq);
    rq->key = BIN(key, klen);
    if (end != NULL)
        rq->range_end = BIN(end, elen);
    rq->revision = rev;
    rq->limit = limit;
    rq->keys_only = (flags & ETCDC_KEYS_ONLY) != 0;
    rq->count_only = (flags & ETCDC_COUNT_ONLY) != 0;
    rq->serializable = (flags & ETCDC_SERIALIZABLE) != 0;
}

int etcdc_range(etcdc_t *c, const void *key, size_t klen, const void *end, size_t elen, int64_t rev, int64_t limit,
                int flags, etcdc_range_t *out)
{
    memset(out, 0, sizeof(*out));
    Etcdserverpb__RangeRequest rq;
    range_req(&rq, key, klen, end, elen, rev, limit, flags);
    ProtobufCMessage *resp = NULL;
    int rc = ec_call(c, "/etcdserverpb.KV/Range", &rq.base, &etcdserverpb__range_response__descriptor, EC_READ, &resp);
    if (rc != 0)
        return rc;
    if (ec_range_copy(out, (Etcdserverpb__RangeResponse *)resp) != 0)
        rc = ec_fail(-ENOMEM, "out of memory");
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int etcdc_get(etcdc_t *c, const void *key, size_t klen, etcdc_kv_t *out)
{
    memset(out, 0, sizeof(*out));
    etcdc_range_t r;
    int rc = etcdc_range(c, key, klen, NULL, 0, 0, 1, 0, &r);
    if (rc != 0)
        return rc;
    if (r.n == 0) {
        etcdc_range_free(&r);
        return ec_fail(-ENOENT, "no such key");
    }
    *out = r.kvs[0]; /* moved: the range keeps nothing else */
    r.n = 0;
    etcdc_range_free(&r);
    return 0;
}

int etcdc_put(etcdc_t *c, const void *key, size_t klen, const void *val, size_t vlen, int64_t lease, int64_t *rev)
{
    Etcdserverpb__PutRequest rq;
    etcdserverpb__put_request__init(&rq);
    rq.key = BIN(key, klen);
    rq.value = BIN(val, vlen);
    rq.lease = lease;
    ProtobufCMessage *resp = NULL;
    int rc = ec_call(c, "/etcdserverpb.KV/Put", &rq.base, &etcdserverpb__put_response__descriptor, EC_WRITE, &resp);
    if (rc != 0)
        return rc;
    Etcdserverpb__PutResponse *pr = (Etcdserverpb__PutResponse *)resp;
    if (rev)
        *rev = pr->header ? pr->header->revision : 0;
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

int etcdc_delete(etcdc_t *c, const void *key, size_t klen, const void *end, size_t elen, int64_t *deleted)
{
    Etcdserverpb__DeleteRangeRequest rq;
    etcdserverpb__delete_range_request__init(&rq);
    rq.key = BIN(key, klen);
    if (end != NULL)
        rq.range_end = BIN(end, elen);
    ProtobufCMessage *resp = NULL;
    int rc = ec_call(c, "/etcdserverpb.KV/DeleteRange", &rq.base, &etcdserverpb__delete_range_response__descriptor,
                     EC_WRITE, &resp);
    if (rc != 0)
        return rc;
    if (deleted)
        *deleted = ((Etcdserverpb__DeleteRangeResponse *)resp)->deleted;
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/* ---- transactions -------------------------------------------------------------- */

/* One branch operation and the request it points at, side by side so a branch is a
 * single allocation. */
typedef struct {
    Etcdserverpb__RequestOp op;
    union {
        Etcdserverpb__RangeRequest range;
        Etcdserverpb__PutRequest put;
        Etcdserverpb__DeleteRangeRequest del;
    } u;
} txn_op_t;

static void op_build(txn_op_t *t, const etcdc_op_t *o)
{
    etcdserverpb__request_op__init(&t->op);
    switch (o->kind) {
    case ETCDC_OP_PUT:
        etcdserverpb__put_request__init(&t->u.put);
        t->u.put.key = BIN(o->key, o->klen);
        t->u.put.value = BIN(o->val, o->vlen);
        t->u.put.lease = o->lease;
        t->op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        t->op.request_put = &t->u.put;
        break;
    case ETCDC_OP_DELETE:
        etcdserverpb__delete_range_request__init(&t->u.del);
        t->u.del.key = BIN(o->key, o->klen);
        if (o->end != NULL)
            t->u.del.range_end = BIN(o->end, o->elen);
        t->op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
        t->op.request_delete_range = &t->u.del;
        break;
    default:
        range_req(&t->u.range, o->key, o->klen, o->end, o->elen, 0, 0, 0);
        t->op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        t->op.request_range = &t->u.range;
        break;
    }
}

static const Etcdserverpb__Compare__CompareResult cmp_results[] = {
    [ETCDC_EQ] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL,
    [ETCDC_NE] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL,
    [ETCDC_LT] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS,
    [ETCDC_GT] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER,
};

static void cmp_build(Etcdserverpb__Compare *m, const etcdc_cmp_t *k)
{
    etcdserverpb__compare__init(m);
    m->result = cmp_results[k->op & 3];
    m->key = BIN(k->key, k->klen);
    switch (k->target) {
    case ETCDC_CMP_VERSION:
        m->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
        m->version = k->num;
        break;
    case ETCDC_CMP_CREATE:
        m->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        m->create_revision = k->num;
        break;
    case ETCDC_CMP_MOD:
        m->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        m->mod_revision = k->num;
        break;
    default:
        m->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
        m->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
        m->value = BIN(k->val, k->vlen);
        break;
    }
}

/* The GET answers of the branch that ran, in order. */
static int txn_gets(const Etcdserverpb__TxnResponse *tr, etcdc_range_t **gets, size_t *ngets)
{
    *gets = NULL;
    *ngets = 0;
    size_t n = 0;
    for (size_t i = 0; i < tr->n_responses; i++)
        n += tr->responses[i]->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
    if (n == 0)
        return 0;
    if ((*gets = calloc(n, sizeof(**gets))) == NULL)
        return -1;
    for (size_t i = 0; i < tr->n_responses; i++) {
        const Etcdserverpb__ResponseOp *r = tr->responses[i];
        if (r->response_case != ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
            continue;
        if (ec_range_copy(&(*gets)[*ngets], r->response_range) != 0)
            goto fail;
        (*gets)[(*ngets)++].revision = tr->header ? tr->header->revision : 0;
    }
    return 0;
fail:
    for (size_t i = 0; i < *ngets; i++)
        etcdc_range_free(&(*gets)[i]);
    free(*gets);
    *gets = NULL;
    *ngets = 0;
    return -1;
}

int etcdc_txn(etcdc_t *c, const etcdc_cmp_t *cmp, size_t ncmp, const etcdc_op_t *then, size_t nthen,
              const etcdc_op_t *otherwise, size_t notherwise, int *succeeded, int64_t *rev, etcdc_range_t **gets,
              size_t *ngets)
{
    size_t nops = nthen + notherwise;
    Etcdserverpb__Compare *cm = calloc(ncmp + 1, sizeof(*cm));
    Etcdserverpb__Compare **cmp_ptrs = calloc(ncmp + 1, sizeof(*cmp_ptrs));
    txn_op_t *ops = calloc(nops + 1, sizeof(*ops));
    Etcdserverpb__RequestOp **op_ptrs = calloc(nops + 1, sizeof(*op_ptrs));
    ProtobufCMessage *resp = NULL;
    int rc = -ENOMEM;
    if (gets)
        *gets = NULL, *ngets = 0;
    if (cm == NULL || cmp_ptrs == NULL || ops == NULL || op_ptrs == NULL) {
        ec_fail(rc, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < ncmp; i++)
        cmp_build(&cm[i], &cmp[i]), cmp_ptrs[i] = &cm[i];
    for (size_t i = 0; i < nops; i++)
        op_build(&ops[i], i < nthen ? &then[i] : &otherwise[i - nthen]), op_ptrs[i] = &ops[i].op;
    Etcdserverpb__TxnRequest rq;
    etcdserverpb__txn_request__init(&rq);
    rq.n_compare = ncmp, rq.compare = cmp_ptrs;
    rq.n_success = nthen, rq.success = op_ptrs;
    rq.n_failure = notherwise, rq.failure = op_ptrs + nthen;
    if ((rc = ec_call(c, "/etcdserverpb.KV/Txn", &rq.base, &etcdserverpb__txn_response__descriptor, EC_WRITE, &resp)))
        goto out;
    Etcdserverpb__TxnResponse *tr = (Etcdserverpb__TxnResponse *)resp;
    if (succeeded)
        *succeeded = tr->succeeded;
    if (rev)
        *rev = tr->header ? tr->header->revision : 0;
    if (gets && txn_gets(tr, gets, ngets) != 0)
        rc = ec_fail(-ENOMEM, "out of memory");
out:
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    free(cm);
    free(cmp_ptrs);
    free(ops);
    free(op_ptrs);
    return rc;
}
