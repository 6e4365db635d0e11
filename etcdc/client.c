/* etcdc/client.c - endpoints, channels and the unary call with failover.
 *
 * Every endpoint has one plaintext channel for the client's life: the platform token
 * must never reach etcd, so common/rpc's channels (which carry it) are not used. A
 * call goes to the endpoint in use; when that one cannot be reached the client moves
 * to the next and retries there, unless the call is a write that may have been
 * applied (the connection broke after the request left). A call that timed out or was
 * refused as UNAVAILABLE also moves the client on, retried or not: a member that is up
 * but cut off keeps its connection READY and would otherwise get every later call.
 * Every call carries etcd's "hasleader" metadata, so such a member refuses at once. */
#include <ctype.h>
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc.h"
#include "etcdc/internal.h"

enum { EC_DEFAULT_TIMEOUT_MS = 5000, EC_ERR_CAP = 256, EC_MAX_ENDPOINTS = 16 };

static __thread char ec_err[EC_ERR_CAP];

int ec_fail(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ec_err, sizeof(ec_err), fmt, ap);
    va_end(ap);
    /* one line: etcd's and grpc's messages may carry newlines */
    for (char *p = ec_err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return rc;
}

const char *etcdc_error(void)
{
    return ec_err;
}

/* ---- endpoints -------------------------------------------------------------------- */

/* A "host:port" with a non-empty host and a port in 1..65535. */
static int ep_valid(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0')
        return 0;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return 0;
    for (const char *p = s; p < colon; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '[' && *p != ']' && *p != ':')
            return 0;
    return 1;
}

/* Splits the spec into c->eps; 0, or -1 with err filled. */
static int parse_endpoints(etcdc_t *c, const char *spec, char *err, size_t errcap)
{
    if (strncmp(spec, "etcd://", 7) == 0)
        spec += 7;
    char *copy = strdup(spec), *save = NULL;
    c->eps = calloc(EC_MAX_ENDPOINTS, sizeof(*c->eps));
    if (copy == NULL || c->eps == NULL) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (!ep_valid(t)) {
            snprintf(err, errcap, "bad etcd endpoint \"%.64s\" (want host:port)", t);
            goto fail;
        }
        if (c->n == EC_MAX_ENDPOINTS) {
            snprintf(err, errcap, "more than %d etcd endpoints", EC_MAX_ENDPOINTS);
            goto fail;
        }
        if ((c->eps[c->n++] = strdup(t)) == NULL) {
            snprintf(err, errcap, "out of memory");
            goto fail;
        }
    }
    if (c->n == 0) {
        snprintf(err, errcap, "no etcd endpoint in \"%.64s\"", spec);
        goto fail;
    }
    free(copy);
    return 0;
fail:
    free(copy);
    return -1;
}

static grpc_channel *channel_open(const char *target)
{
    grpc_arg args[5];
    memset(args, 0, sizeof(args));
    /* a range over many keys is one message */
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = 64 << 20;
    /* an etcd back from a restart is found within a second, not after minutes of backoff */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[1].value.integer = 1000;
    /* a watch on a host that vanished (no FIN, no RST) is noticed: pings on the idle
     * stream, no more often than etcd's default --grpc-keepalive-min-time (5 s) */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_KEEPALIVE_TIME_MS;
    args[2].value.integer = 10000;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
    args[3].value.integer = 5000;
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA;
    args[4].value.integer = 0;
    grpc_channel_args cargs = {5, args};
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, cr, &cargs);
    grpc_channel_credentials_release(cr);
    return ch;
}

/* ---- the poller -------------------------------------------------------------------
 * grpc core does its I/O on the threads that wait on completion queues. Between calls
 * nobody waits, so a connection etcd closed (a restart, a crash) stays READY until
 * grpc's backup poll 5 s later, and the next write goes to a dead socket and fails
 * in a way that cannot be told from a request etcd did receive. One thread per client
 * waits on its channels' connectivity, so a closed connection is noticed when it
 * closes and the next call reconnects first (and idle channels keep their keepalive
 * pings going). */

enum { POLL_REARM_MS = 1000 };

static void poll_arm(etcdc_t *c, size_t i)
{
    grpc_connectivity_state st = grpc_channel_check_connectivity_state(c->chans[i], 0);
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(POLL_REARM_MS, GPR_TIMESPAN));
    grpc_channel_watch_connectivity_state(c->chans[i], st, until, c->poll_cq, (void *)(uintptr_t)(i + 1));
}

static void *poll_main(void *arg)
{
    etcdc_t *c = arg;
    size_t armed = c->n;
    while (armed > 0) {
        grpc_event ev = grpc_completion_queue_next(c->poll_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        /* under mu: etcdc_close destroys the channels once closing is set */
        pthread_mutex_lock(&c->mu);
        if (c->closing)
            armed--;
        else
            poll_arm(c, (uintptr_t)ev.tag - 1);
        pthread_mutex_unlock(&c->mu);
    }
    return NULL;
}

static int poll_start(etcdc_t *c)
{
    c->poll_cq = grpc_completion_queue_create_for_next(NULL);
    for (size_t i = 0; i < c->n; i++)
        poll_arm(c, i);
    if (pthread_create(&c->poller, NULL, poll_main, c) != 0)
        return -1;
    c->polling = 1;
    return 0;
}

/* Joins the poller once its watches ended: destroying the channels ends them. */
static void poll_stop(etcdc_t *c)
{
    if (c->polling)
        pthread_join(c->poller, NULL);
    if (c->poll_cq != NULL) {
        grpc_completion_queue_shutdown(c->poll_cq);
        while (grpc_completion_queue_next(c->poll_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(c->poll_cq);
    }
}

etcdc_t *etcdc_open(const char *endpoints, int timeout_ms, char *err, size_t errcap)
{
    faas_rpc_global_init();
    etcdc_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : EC_DEFAULT_TIMEOUT_MS;
    if (endpoints == NULL || parse_endpoints(c, endpoints, err, errcap) != 0)
        goto fail;
    if ((c->chans = calloc(c->n, sizeof(*c->chans))) == NULL) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < c->n; i++)
        if ((c->chans[i] = channel_open(c->eps[i])) == NULL) {
            snprintf(err, errcap, "cannot open a channel to %s", c->eps[i]);
            goto fail;
        }
    if (poll_start(c) != 0) {
        snprintf(err, errcap, "cannot start the client's poller thread");
        goto fail;
    }
    return c;
fail:
    if (endpoints == NULL)
        snprintf(err, errcap, "no etcd endpoints");
    etcdc_close(c);
    return NULL;
}

void etcdc_close(etcdc_t *c)
{
    if (c == NULL)
        return;
    ec_watch_stop_all(c);
    pthread_mutex_lock(&c->mu);
    c->closing = 1;
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < c->n; i++)
        if (c->chans && c->chans[i])
            grpc_channel_destroy(c->chans[i]);
    poll_stop(c);
    for (size_t i = 0; i < c->n; i++)
        free(c->eps[i]);
    free(c->chans);
    free(c->eps);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

const char *etcdc_endpoint(etcdc_t *c)
{
    return c->eps[ec_current(c)];
}

size_t ec_current(etcdc_t *c)
{
    pthread_mutex_lock(&c->mu);
    size_t i = c->cur;
    pthread_mutex_unlock(&c->mu);
    return i;
}

void ec_advance(etcdc_t *c, size_t i)
{
    pthread_mutex_lock(&c->mu);
    if (c->cur == i)
        c->cur = (i + 1) % c->n;
    pthread_mutex_unlock(&c->mu);
}

size_t etcdc_prefix_end(const uint8_t *prefix, size_t plen, uint8_t *out, size_t cap)
{
    /* the first key after every key with the prefix: its last byte below 0xff plus one,
     * the rest dropped; a prefix of 0xff bytes only (or none) covers the whole keyspace */
    size_t i = plen < cap ? plen : cap;
    while (i > 0 && prefix[i - 1] == 0xff)
        i--;
    if (i == 0) {
        if (cap > 0)
            out[0] = 0;
        return 1;
    }
    memmove(out, prefix, i);
    out[i - 1]++;
    return i;
}

/* ---- one unary call on one channel ------------------------------------------------ */

typedef struct {
    grpc_status_code status;
    int ready_before; /* the channel was connected when the call started */
    int ready_after;
    char details[200];
} ec_outcome_t;

static gpr_timespec deadline_in(int ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static void outcome_details(ec_outcome_t *o, grpc_slice details, const char *error_string)
{
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n >= sizeof(o->details))
        n = sizeof(o->details) - 1;
    memcpy(o->details, GRPC_SLICE_START_PTR(details), n);
    o->details[n] = '\0';
    if (n == 0 && error_string != NULL)
        snprintf(o->details, sizeof(o->details), "%s", error_string);
}

/* Copies a received message (NULL: none or no memory). */
static uint8_t *bb_read(grpc_byte_buffer *bb, size_t *len)
{
    grpc_byte_buffer_reader r;
    if (bb == NULL || !grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    uint8_t *out = malloc(*len + 1);
    if (out != NULL)
        memcpy(out, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return out;
}

/* One call, everything in one batch (as grpc's own sync unary does). Returns the
 * reply bytes (NULL unless status is OK and a message came). */
static uint8_t *unary_once(grpc_channel *ch, const char *method, const uint8_t *req, size_t len, int timeout_ms,
                           size_t *rlen, ec_outcome_t *o)
{
    memset(o, 0, sizeof(*o));
    o->status = GRPC_STATUS_UNKNOWN;
    o->ready_before = grpc_channel_check_connectivity_state(ch, 1) == GRPC_CHANNEL_READY;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_static_string(method);
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                               deadline_in(timeout_ms), NULL);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)req, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1), *recv = NULL;
    grpc_slice_unref(s);
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    grpc_metadata md;
    ec_leader_md(&md);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 1;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &o->status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;
    uint8_t *out = NULL;
    if (call != NULL && grpc_call_start_batch(call, ops, 6, call, NULL) == GRPC_CALL_OK) {
        grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        outcome_details(o, details, error_string);
        if (o->status == GRPC_STATUS_OK && (out = bb_read(recv, rlen)) == NULL)
            o->status = GRPC_STATUS_INTERNAL, snprintf(o->details, sizeof(o->details), "no reply message");
    } else {
        snprintf(o->details, sizeof(o->details), "cannot start the call");
    }
    o->ready_after = grpc_channel_check_connectivity_state(ch, 0) == GRPC_CHANNEL_READY;
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    gpr_free((void *)error_string);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    if (call)
        grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return out;
}

/* Phrases grpc uses for a call that failed before any connection was up: the call
 * waited in the channel's picker (requests are only sent on a READY transport), so its
 * bytes never left. Only these: anything said about a transport that was up
 * ("Connection reset by peer", "Socket closed", etcd's "request timed out, possibly due
 * to connection lost") may come after etcd received the request. */
static const char *const ec_unsent[] = {
    "failed to connect to all addresses", /* pick_first: every address refused/failed */
    "DNS resolution failed",              /* the resolver: no address at all */
    "empty address list",
    "Connection refused", /* ECONNREFUSED exists only for connect() */
};

/* 1 when the request cannot have reached etcd: the channel was not connected when the
 * call started and grpc says it failed while connecting (or ran out of time while still
 * connecting). A write may be retried elsewhere only then. */
static int never_reached(const ec_outcome_t *o)
{
    if (o->ready_before)
        return 0;
    if (o->status == GRPC_STATUS_DEADLINE_EXCEEDED)
        return !o->ready_after;
    if (o->status != GRPC_STATUS_UNAVAILABLE)
        return 0;
    for (size_t k = 0; k < sizeof(ec_unsent) / sizeof(ec_unsent[0]); k++)
        if (strstr(o->details, ec_unsent[k]) != NULL)
            return 1;
    return 0;
}

/* etcd's own answers as errnos. */
static int status_errno(const ec_outcome_t *o)
{
    switch (o->status) {
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return -ETIMEDOUT;
    case GRPC_STATUS_NOT_FOUND: /* "etcdserver: requested lease not found" */
        return -ENOENT;
    case GRPC_STATUS_OUT_OF_RANGE: /* "mvcc: required revision has been compacted" */
        return strstr(o->details, "compacted") ? -ECANCELED : -EIO;
    default:
        return -EIO;
    }
}

int ec_call(etcdc_t *c, const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
            ec_retry_t retry, ProtobufCMessage **resp)
{
    *resp = NULL;
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL)
        return ec_fail(-ENOMEM, "out of memory");
    protobuf_c_message_pack(req, buf);
    int rc = -EAGAIN;
    size_t first = ec_current(c);
    for (size_t k = 0; k < c->n; k++) {
        size_t i = (first + k) % c->n, rlen = 0;
        ec_outcome_t o;
        uint8_t *out = unary_once(c->chans[i], method, buf, len, c->timeout_ms, &rlen, &o);
        if (o.status == GRPC_STATUS_OK) {
            *resp = protobuf_c_message_unpack(rd, NULL, rlen, out);
            free(out);
            rc = *resp ? 0 : ec_fail(-EIO, "%s: etcd %s sent a reply that does not parse", method, c->eps[i]);
            goto done;
        }
        int unreached = never_reached(&o);
        int retriable = unreached || (retry == EC_READ && o.status == GRPC_STATUS_UNAVAILABLE);
        if (!retriable) {
            /* a member that is up but cut off or leaderless answers every call this way:
             * the next call goes to the next endpoint, even though this one is not retried */
            if (o.status == GRPC_STATUS_UNAVAILABLE || o.status == GRPC_STATUS_DEADLINE_EXCEEDED)
                ec_advance(c, i);
            rc = ec_fail(o.status == GRPC_STATUS_UNAVAILABLE ? -EIO : status_errno(&o), "%s on %s: %s%s", method,
                         c->eps[i], o.details, o.status == GRPC_STATUS_UNAVAILABLE ? " (may have been applied)" : "");
            goto done;
        }
        ec_fail(-EAGAIN, "%s: no etcd endpoint answered (last %s: %s)", method, c->eps[i], o.details);
        ec_advance(c, i);
    }
done:
    free(buf);
    return rc;
}

int ec_kv_copy(etcdc_kv_t *out, const Mvccpb__KeyValue *kv)
{
    memset(out, 0, sizeof(*out));
    out->key = malloc(kv->key.len + 1);
    out->val = malloc(kv->value.len + 1);
    if (out->key == NULL || out->val == NULL) {
        etcdc_kv_free(out);
        return -1;
    }
    if (kv->key.len)
        memcpy(out->key, kv->key.data, kv->key.len);
    if (kv->value.len)
        memcpy(out->val, kv->value.data, kv->value.len);
    out->key[kv->key.len] = 0;
    out->val[kv->value.len] = 0;
    out->klen = kv->key.len;
    out->vlen = kv->value.len;
    out->create_rev = kv->create_revision;
    out->mod_rev = kv->mod_revision;
    out->version = kv->version;
    out->lease = kv->lease;
    return 0;
}

void etcdc_kv_free(etcdc_kv_t *kv)
{
    if (kv == NULL)
        return;
    free(kv->key);
    free(kv->val);
    kv->key = kv->val = NULL;
    kv->klen = kv->vlen = 0;
}
