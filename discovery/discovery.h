/* discovery/discovery.h - the pieces of faas-discovery, testable without grpc:
 * spec validation, the durable function store (SQLite or etcd), content-addressed code
 * artifacts, and the soft-state registry of workers and instances with watchers. */
#ifndef DISC_DISCOVERY_H
#define DISC_DISCOVERY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/rpc.h"
#include "proto/faas.pb-c.h"

/* ---- function specs (spec.c) ------------------------------------------------ */

/* Validates an unpacked spec (one from protobuf_c unpack: strings are owned) and
 * fills its defaults in place. Does not look at artifacts. 0, or -1 with *err. */
int disc_spec_normalize(Faas__FunctionSpec *spec, const char **err);
/* Unpacks and normalizes; NULL with *err on bad bytes or a bad spec. */
Faas__FunctionSpec *disc_spec_parse(const uint8_t *buf, size_t len, const char **err);
/* Deep copy through pack/unpack; NULL on allocation failure. */
Faas__FunctionSpec *disc_spec_dup(const Faas__FunctionSpec *spec);
/* 1 if s is exactly 64 lowercase hex characters (a sha256 in an artifact name). */
int disc_valid_sha256(const char *s);
/* 1 if d is "sha256:<64 hex>" (an OCI digest), with *hex at the hex. */
int disc_oci_digest_hex(const char *d, const char **hex);
/* The shape of spec->image (non-NULL): digests, bounds, no code_sha256. 0, or -1 with *err. */
int disc_check_image(const Faas__FunctionSpec *spec, const char **err);

/* ---- code artifacts (artifact.c) ---------------------------------------------- */

typedef struct disc_upload disc_upload_t;

/* Starts an upload into a temp file under dir, capped at max_bytes. */
disc_upload_t *disc_upload_begin(const char *dir, uint64_t max_bytes, const char **err);
/* Appends bytes; -EFBIG once the cap is passed, other negatives on I/O errors. */
int disc_upload_write(disc_upload_t *up, const uint8_t *data, size_t len, const char **err);
/* Finishes: renames to <dir>/<sha256>.tar.gz, fills sha (65 bytes) and size, frees up. */
int disc_upload_commit(disc_upload_t *up, char *sha, uint64_t *size, const char **err);
/* Like disc_upload_commit, but only bytes whose sha256 is want land; others are
 * deleted (-EBADMSG). Frees up either way. */
int disc_upload_commit_expect(disc_upload_t *up, const char *want, uint64_t *size, const char **err);
/* Drops the temp file and frees up. */
void disc_upload_abort(disc_upload_t *up);
/* Writes <dir>/<sha>.tar.gz into out; -EINVAL if sha is not a sha256, -ENAMETOOLONG. */
int disc_artifact_path(const char *dir, const char *sha, char *out, size_t cap);
/* 0 if the artifact exists, -ENOENT if not, -EINVAL if sha is malformed. */
int disc_artifact_exists(const char *dir, const char *sha);

/* ---- durable function store (store.c; backends store_sqlite.c, store_etcd.c) ---- */

typedef struct disc_store disc_store_t;
typedef struct disc_registry disc_registry_t;
struct etcdc;

/* Opens (creating) <state_dir>/discovery.db in WAL mode and <state_dir>/artifacts/. */
disc_store_t *disc_store_open(const char *state_dir, const char **err);
/* Keeps functions, versions and artifact holders in etcd under prefix (endpoints as
 * etcdc_open takes them; docs/multihost-etcd.md), artifact bytes in <state_dir>/artifacts/.
 * Reads etcd once: NULL with errbuf filled when it cannot be reached. */
disc_store_t *disc_store_open_etcd(const char *state_dir, const char *endpoints, const char *prefix, char *errbuf,
                                   size_t errcap);
/* Stops following etcd (no registry call after it returns) and frees st. */
void disc_store_close(disc_store_t *st);
/* Directory holding the code artifacts. */
const char *disc_store_artifact_dir(disc_store_t *st);
/* "sqlite" or "etcd". */
const char *disc_store_backend(disc_store_t *st);
/* The etcd client of an etcd store (for the task store), NULL on SQLite. */
struct etcdc *disc_store_etcd(disc_store_t *st);
/* The host:port other discoveries fetch this one's artifacts at (etcd only). */
void disc_store_set_advertise(disc_store_t *st, const char *addr);
/* That address ("" if unset or on SQLite); valid until the next call. */
const char *disc_store_advertise(disc_store_t *st);
/* Largest artifact fetched from another discovery (default 4 GiB). */
void disc_store_set_max_fetch(disc_store_t *st, uint64_t max_bytes);
/* Fills reg with every stored function and, on etcd, keeps it following every change
 * made through any discovery (a watch from the revision read). Returns how many, or
 * negative with errbuf filled. Call once. */
int disc_store_follow(disc_store_t *st, disc_registry_t *reg, char *errbuf, size_t errcap);
/* 1 when the store itself puts deploys and deletes into the registry it follows (etcd):
 * the caller must not, or it could undo a newer change made through another discovery. */
int disc_store_publishes(disc_store_t *st);
/* 0 if the artifact is here or (etcd) held by some discovery; -ENOENT, -EINVAL (bad
 * sha), -EAGAIN (state store unreachable). */
int disc_store_artifact_known(disc_store_t *st, const char *sha);
/* 0 once <artifact_dir>/<sha>.tar.gz exists here: on etcd, bytes held only elsewhere
 * are fetched from a holder and verified first. -ENOENT (errbuf says why), -EINVAL,
 * -EAGAIN, -EIO. Blocks for the transfer. */
int disc_store_artifact_local(disc_store_t *st, const char *sha, char *errbuf, size_t errcap);
/* Records that this discovery holds sha (etcd; a no-op on SQLite). 0, -EAGAIN, -EIO. */
int disc_store_artifact_added(disc_store_t *st, const char *sha, uint64_t size);
/* Prometheus families of the store: its backend, and etcd's errors and peer fetches. */
void disc_store_metrics(disc_store_t *st, FILE *out);
/* Validates in, fills defaults, assigns the function's next version (1 for a name never
 * deployed; a delete does not reset it) and created_unix_ms, stores it.
 * *out gets the stored spec (free with faas__function_spec__free_unpacked).
 * -EINVAL with a sentence in errbuf on a bad spec, -EIO on storage failures, -EAGAIN
 * when the state store (etcd) cannot be reached. Get, list and delete also return
 * -EAGAIN for that. */
int disc_store_deploy(disc_store_t *st, const Faas__FunctionSpec *in, Faas__FunctionSpec **out, char *errbuf,
                      size_t errcap);
/* 0 with *out set, -ENOENT if absent, -EIO. */
int disc_store_get(disc_store_t *st, const char *name, Faas__FunctionSpec **out);
/* Every stored spec by name; free with disc_store_free_list. */
int disc_store_list(disc_store_t *st, Faas__FunctionSpec ***out, size_t *n);
void disc_store_free_list(Faas__FunctionSpec **list, size_t n);
/* 0, -ENOENT if absent, -EIO. */
int disc_store_delete(disc_store_t *st, const char *name);
/* Deploys ever stored in this state dir (survives restarts and deletes). */
uint64_t disc_store_deploys(disc_store_t *st);

/* ---- durable async tasks (tasks.c, docs/async.md) ------------------------------ */

typedef struct disc_tasks disc_tasks_t;

#define DISC_TASK_ID_LEN 32u      /* lowercase hex: 128 random bits */
/* The longest --etcd-prefix, in bytes: the one bound the flag, the store and the task
 * store (which keeps its keys under <prefix>async/) all check, small enough that the
 * longest key (prefix, "async/queue/", a function name, two 16-digit numbers, a task
 * id) stays far below the stores' key buffers. */
#define DISC_ETCD_PREFIX_MAX 64
#define DISC_STR_(x) #x
#define DISC_STR(x) DISC_STR_(x) /* a number macro as a string, for messages */
#define DISC_TASK_LEASE_MS 30000u /* a claim or report that names no lease */
#define DISC_TASK_CLAIM_MAX 100u  /* tasks one ClaimTasks may take */
#define DISC_TASK_LIST_LIMIT 100u /* ListTasks page without a limit */
#define DISC_TASK_LIST_MAX 1000u  /* largest ListTasks page */
#define DISC_TASK_BACKOFF_MS 1000 /* first retry waits this, then doubling */
#define DISC_TASK_BACKOFF_MAX_MS 60000
#define DISC_TASK_EXPIRE_EVERY_MS 500
#define DISC_TASK_PURGE_EVERY_MS 1000u /* indexed: an empty purge costs microseconds */
#define DISC_TASK_LEASE_LAPSED "lease lapsed (pod, worker manager or host gone)"
/* SQLite's PRAGMA synchronous values disc_task_open takes. */
#define DISC_TASK_SYNC_NORMAL 1
#define DISC_TASK_SYNC_FULL 2
/* Callbacks (X-Callback-Url): deliveries tried, the first wait, its cap, a claim's bounds. */
#define DISC_CB_ATTEMPTS 5u
#define DISC_CB_BACKOFF_MS 1000u
#define DISC_CB_BACKOFF_MAX_MS 300000
#define DISC_CB_LEASE_MS 30000u
#define DISC_CB_CLAIM_MAX 16u
#define DISC_CB_CLAIM_MAX_BYTES (16ull << 20) /* results in one ClaimCallbacks reply */

/* Outcomes of ReportCallback, for faas_task_callbacks_total{outcome}. */
enum { DISC_CB_DELIVERED, DISC_CB_RETRIED, DISC_CB_FAILED, DISC_CB_OUTCOMES };
extern const char *const disc_cb_outcome_names[DISC_CB_OUTCOMES];

/* What the store is told at start; 0 fields = the defaults. */
typedef struct {
    uint64_t retention_ms;        /* finished tasks kept this long (FAAS_SPEC_DEFAULT_ASYNC_RETENTION_MS) */
    uint32_t callback_attempts;   /* deliveries before callback_status "failed: ..." (DISC_CB_ATTEMPTS) */
    uint32_t callback_backoff_ms; /* wait after the first failed delivery, then doubling (DISC_CB_BACKOFF_MS) */
} disc_task_config_t;

/* Counters since open, for /metrics and the group-commit figures. */
typedef struct {
    uint64_t submitted; /* tasks committed by submit */
    uint64_t commits;   /* transactions that committed them */
    uint64_t attempts;  /* tasks claimed */
    uint64_t callbacks[DISC_CB_OUTCOMES]; /* ReportCallback outcomes */
} disc_task_counters_t;

/* Called once per async submission, on the committing thread, with submit's rc. */
typedef void (*disc_task_done_fn)(void *ud, int rc);

/* Opens the tasks table in <state_dir>/discovery.db on a connection of its own with
 * PRAGMA synchronous=synchronous, and starts the group-commit thread. */
disc_tasks_t *disc_task_open(const char *state_dir, int synchronous, const char **err);
typedef struct etcdc etcdc_t;
/* The same store kept in etcd under <prefix>async/ (/faas/async/), shared by every discovery that
 * opens it there (docs/async.md, "The task store on etcd"); c must outlive the store.
 * Results are bounded at 1.2 MiB (etcd's request limit) whatever async.max_result says. */
disc_tasks_t *disc_task_open_etcd(etcdc_t *c, const char *prefix, const char **err);
/* A function's AsyncSpec (FunctionSpec.async, 0 fields = defaults) into *out: 0, or
 * -ENOENT for a function not deployed (its tasks get the defaults). Called with the
 * store's lock held: it must be quick and must not call back into the store. */
typedef int (*disc_task_async_fn)(void *ud, const char *function, Faas__AsyncSpec *out);
/* Where the store looks up a function's bounds (NULL: every function has the defaults):
 * max_attempts, concurrency, max_result_bytes, retention_ms and retry_5xx apply. */
void disc_task_set_lookup(disc_tasks_t *ts, disc_task_async_fn fn, void *ud);
/* Sets the config (NULL = defaults); before the store is used, not concurrently. */
void disc_task_configure(disc_tasks_t *ts, const disc_task_config_t *c);
/* Commits what is still queued, stops the threads, closes. */
void disc_task_close(disc_tasks_t *ts);
/* 1 if id is exactly 32 lowercase hex characters. */
int disc_task_valid_id(const char *id);
/* The largest request body the store takes with a task (0: no bound of its own). */
uint64_t disc_task_max_request(const disc_tasks_t *ts);
/* Stores t as given (id, function, version, status, attempts, created, not_before,
 * callback fields, request); returns once committed, sharing the transaction with
 * concurrent submitters. 0, -EEXIST for a known id, -EINVAL (bad id, no function), -EIO. */
int disc_task_submit(disc_tasks_t *ts, const Faas__Task *t);
/* Same, without waiting: done(ud, rc) runs once committed. t must live until then.
 * 0 if queued (done will run), negative if not (done will not). */
int disc_task_submit_async(disc_tasks_t *ts, const Faas__Task *t, disc_task_done_fn done, void *ud);
/* Returns once every submission queued before the call is committed. */
void disc_task_flush(disc_tasks_t *ts);
/* The task without its request; a running task with a cancel pending says "cancel requested". 0 or -ENOENT. */
int disc_task_get(disc_tasks_t *ts, const char *id, Faas__Task **out);
/* The stored result: 0, -ENOENT unknown, -EAGAIN not finished, -ENODATA finished without one. */
int disc_task_get_result(disc_tasks_t *ts, const char *id, Faas__TaskResult **out);
/* A page ordered by id after query->after (limit 0 = 100, at most 1000); next = last id when more remain. */
int disc_task_list(disc_tasks_t *ts, const Faas__TaskQuery *query, Faas__TaskList **out);
/* Queued: cancelled now. Running: flagged until its report or lapse ends it cancelled.
 * -EALREADY when already finished, -ENOENT. */
int disc_task_cancel(disc_tasks_t *ts, const char *id, int64_t now_ms, Faas__Task **out);
/* Moves up to max (1..100) due queued tasks of function, oldest first, to running under
 * a lease of lease_ms (0 = 30 s), never more than the function's async.concurrency
 * running at once; returns them with their request. */
int disc_task_claim(disc_tasks_t *ts, const char *function, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                    Faas__TaskList **out);
/* Applies an agent's report to a running task under its function's bounds; *out (may be
 * NULL) gets the task after it, cancel_requested telling the agent to abort. FAILED
 * retries up to async.max_attempts; REJECTED fails at once; DONE over async.max_result
 * fails at once, and a 5xx DONE with async.retry_5xx counts as a failed attempt (result
 * kept). -ESTALE when it is not running or runs on another instance, -EINVAL for DONE
 * without a result or an unknown kind, -ENOENT. */
int disc_task_report(disc_tasks_t *ts, const Faas__TaskReport *r, int64_t now_ms, Faas__Task **out);
/* Treats every running task whose lease ended before now_ms as a FAILED report; returns how many. */
int disc_task_expire(disc_tasks_t *ts, int64_t now_ms);
/* Deletes tasks whose function's async.retention (set when they finished) ended before
 * now_ms; returns how many. */
int disc_task_purge(disc_tasks_t *ts, int64_t now_ms);
/* The wait before the retry that follows attempt n: 1 s * 2^(n-1), at most 60 s. */
int64_t disc_task_backoff_ms(uint32_t attempts);
/* Callbacks. A task that ends with a callback_url gets callback_status "pending", due at once.
 * Claim: up to max (1..16, the results at most 16 MiB together but always one) pending
 * callbacks due by now_ms whose callback lease lapsed, each with callback_attempts + 1 and
 * leased for lease_ms (0 = 30 s); result unset when the task ended without a response. */
int disc_task_claim_callbacks(disc_tasks_t *ts, uint32_t max, uint32_t lease_ms, int64_t now_ms,
                              Faas__CallbackDueList **out);
/* Delivered: "delivered". Not: pending again, due after the backoff, while callback_attempts
 * is under the configured limit, else "failed: <error>". -ENOMSG when no callback is pending. */
int disc_task_report_callback(disc_tasks_t *ts, const Faas__CallbackReport *r, int64_t now_ms, Faas__Task **out);
/* The wait after failed delivery n: base_ms * 2^(n-1), at most 5 min. */
int64_t disc_task_callback_backoff_ms(uint32_t base_ms, uint32_t attempts);
/* Starts/stops a thread expiring every 500 ms and purging every minute (wall clock). */
int disc_task_start_reaper(disc_tasks_t *ts);
void disc_task_stop_reaper(disc_tasks_t *ts);
void disc_task_counters(disc_tasks_t *ts, disc_task_counters_t *out);
/* Writes the Prometheus families faas_tasks, faas_task_queue_oldest_seconds and the task counters. */
void disc_task_metrics(disc_tasks_t *ts, FILE *out, int64_t now_ms);

/* ---- soft-state registry and watchers (registry.c) ---------------------------- */

/* Receives one packed WatchEvent; returns -1 once the subscriber is gone. Called with
 * the registry lock held, so it must not block nor call back into the registry.
 * ev == NULL (len 0) ends one change (a heartbeat's events, a snapshot): the events
 * since the last such call may be held until then and sent together. */
typedef int (*disc_sink_fn)(void *ctx, const uint8_t *ev, size_t len);

/* Sizes reported by disc_registry_stats. */
typedef struct {
    size_t functions, instances, workers, watchers;
    uint64_t revision;
} disc_registry_stats_t;

#define DISC_DEFAULT_TTL_MS 3000u

disc_registry_t *disc_registry_new(void);
/* Stops the reaper if running and frees everything (subscribers are dropped silently). */
void disc_registry_free(disc_registry_t *r);
/* Replaces the worker's instance set (pushing the differences) and its function errors,
 * and renews its lease until now_ms + ttl. 0, or -1 with *err on a malformed renewal. */
int disc_registry_heartbeat(disc_registry_t *r, const Faas__LeaseRenewal *lr, uint64_t now_ms, const char **err);
/* Deletes workers whose lease ended before now_ms, with their instances; returns how many. */
size_t disc_registry_expire(disc_registry_t *r, uint64_t now_ms);
/* Starts/stops a thread calling disc_registry_expire on time (monotonic clock). */
int disc_registry_start_reaper(disc_registry_t *r);
void disc_registry_stop_reaper(disc_registry_t *r);
/* Caches a deployed spec and pushes FUNCTION_PUT (older versions than cached are ignored). */
int disc_registry_function_put(disc_registry_t *r, const Faas__FunctionSpec *spec);
/* Drops a spec and pushes FUNCTION_DELETE; -ENOENT if it was not cached. */
int disc_registry_function_delete(disc_registry_t *r, const char *name);
/* What a watcher wants (WatchRequest): bits for disc_registry_subscribe_want. */
enum { DISC_WATCH_FUNCTIONS = 1, DISC_WATCH_INSTANCES = 2, DISC_WATCH_WORKERS = 4, DISC_WATCH_TASK_CANCELS = 8 };

/* Sends the snapshot asked for, SNAPSHOT_END, then every change to sink until
 * unsubscribed or sink returns -1. Returns a subscriber id (> 0) or negative. */
int64_t disc_registry_subscribe(disc_registry_t *r, int functions, int instances, int workers, disc_sink_fn sink,
                                void *ctx);
/* Same with DISC_WATCH_* bits; TASK_CANCELS adds no snapshot, only later TASK_CANCEL events. */
int64_t disc_registry_subscribe_want(disc_registry_t *r, int want, disc_sink_fn sink, void *ctx);
/* Sends TASK_CANCEL with t to every watcher that asked for task cancels (revision unchanged). */
void disc_registry_task_cancel(disc_registry_t *r, const Faas__Task *t);
/* Stops events to subscriber id; no sink call for it happens after this returns. */
void disc_registry_unsubscribe(disc_registry_t *r, int64_t id);
/* Packed InstanceList of one function (name "" or NULL = all); malloc'd. */
uint8_t *disc_registry_list_instances(disc_registry_t *r, const char *name, size_t *len);
/* Packed WorkerList; malloc'd. */
uint8_t *disc_registry_list_workers(disc_registry_t *r, size_t *len);
/* Packed FunctionStatus of a deployed function: last_error is the newest error a live
 * worker's lease reports for it. malloc'd; NULL with *missing = 1 if not deployed. */
uint8_t *disc_registry_function_status(disc_registry_t *r, const char *name, size_t *len, int *missing);
void disc_registry_stats(disc_registry_t *r, disc_registry_stats_t *out);
/* A deployed function's AsyncSpec (all 0 when its spec has none) into *out: 0, or -ENOENT. */
int disc_registry_function_async(disc_registry_t *r, const char *name, Faas__AsyncSpec *out);

/* ---- the gRPC service (service.c) ------------------------------------------------ */

typedef struct disc_service disc_service_t;

/* Binds the faas.Discovery methods to a store, a registry and a task store (all outlive it). */
disc_service_t *disc_service_new(disc_store_t *store, disc_registry_t *reg, disc_tasks_t *tasks,
                                 uint64_t max_artifact_bytes);
/* The method table to hand to faas_rpc_server_start. */
const faas_rpc_method_t *disc_service_methods(disc_service_t *s, size_t *n);
void disc_service_free(disc_service_t *s);
/* Writes the Prometheus text exposition of discovery's gauges and RPC counters. */
void disc_service_metrics(disc_service_t *s, FILE *out);

/* ---- tiny HTTP/1.0 responder for /metrics and /healthz (httpd.c) ---------------- */

typedef struct disc_httpd disc_httpd_t;

/* Fills a response for GET path: status, body (malloc'd, freed by the server) and type. */
typedef void (*disc_http_fn)(void *ud, const char *path, int *status, char **body, size_t *len,
                             const char **ctype);

/* Listens on addr ("127.0.0.1:7101", port 0 picks) and serves on its own thread. */
disc_httpd_t *disc_httpd_start(const char *addr, disc_http_fn fn, void *ud, int *bound_port, const char **err);
/* Stops accepting and joins the thread. */
void disc_httpd_stop(disc_httpd_t *h);

#endif
