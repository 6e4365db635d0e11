/* common/spec.h - FunctionSpec defaults and limits: the one place they are written.
 * A spec field left at zero (or empty) means "the platform default" everywhere:
 * faasctl fills these before deploy, discovery fills them before storing, and the
 * worker manager, the agent and the dispatcher fall back to them when a spec that
 * did not pass through discovery leaves one unset. docs/architecture.md ("Spec
 * defaults and limits") promises them; tests/unit/common/test_spec.c pins them. */
#ifndef FAAS_SPEC_H
#define FAAS_SPEC_H

#include "proto/faas.pb-c.h"

/* ---- defaults ---- */

/* Per-request deadline, counted from arrival (queue time included). */
#define FAAS_SPEC_DEFAULT_TIMEOUT_MS 30000u
/* Longest a cold start (pod specialized, user server ready) may take. */
#define FAAS_SPEC_DEFAULT_COLD_START_MS 10000u
/* An elastic instance idle this long is released. */
#define FAAS_SPEC_DEFAULT_IDLE_TIMEOUT_MS 300000u
/* Longest stream (gRPC/streamed call): 15 minutes, Lambda's bound. */
#define FAAS_SPEC_DEFAULT_MAX_DURATION_MS 900000u
/* Largest request body (HTTP) or request message (gRPC). */
#define FAAS_SPEC_DEFAULT_MAX_BODY_BYTES (8u << 20)
/* Instances of one function the platform starts at most. */
#define FAAS_SPEC_DEFAULT_MAX_INSTANCES 100u
/* In-flight requests per instance; 0 = unlimited (concurrency is a cap, not the signal). */
#define FAAS_SPEC_DEFAULT_CONCURRENCY 0u
/* Readiness probe interval: a cold start waits on it, so it is short. */
#define FAAS_SPEC_DEFAULT_PROBE_INTERVAL_MS 2u
/* HTTP readiness path. */
#define FAAS_SPEC_DEFAULT_HEALTH_PATH "/"
/* The environment variable that tells the user server its port. */
#define FAAS_SPEC_DEFAULT_PORT_ENV "PORT"
/* How the agent frames Thrift calls toward the user server. */
#define FAAS_SPEC_DEFAULT_THRIFT_TRANSPORT "framed"
/* A pod's way out: most services call a database or another service, so egress (NAT
 * through the host, never to the control plane) unless the manifest says none. */
#define FAAS_SPEC_DEFAULT_NETWORK "egress"
/* Pod limits when resources leave them unset (also the warm pod's limits). */
#define FAAS_SPEC_DEFAULT_MEMORY_BYTES (256ull << 20)
#define FAAS_SPEC_DEFAULT_PIDS 256u

/* Async tasks (FunctionSpec.async, manifest keys async.*, docs/async.md). The limits
 * are below with the others; the largest result is also the default. */
#define FAAS_SPEC_DEFAULT_ASYNC_CONCURRENCY 16u
#define FAAS_SPEC_DEFAULT_ASYNC_TIMEOUT_MS 3600000u
#define FAAS_SPEC_DEFAULT_ASYNC_RETENTION_MS (7ull * 24 * 3600 * 1000)
#define FAAS_SPEC_DEFAULT_ASYNC_MAX_ATTEMPTS 3u
#define FAAS_SPEC_DEFAULT_ASYNC_MAX_RESULT_BYTES FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_BYTES

/* Function logs (FunctionSpec.logs, manifest keys logs.*, docs/security.md "Bounded
 * logs"): one file of a function on one worker is rotated past max_bytes, and keep
 * rotated files stay beside it, so a function costs a worker at most about
 * (keep + 1) x max_bytes of disk: 48 MiB by default. */
#define FAAS_SPEC_DEFAULT_LOG_MAX_BYTES (16ull << 20)
#define FAAS_SPEC_DEFAULT_LOG_KEEP 2u

/* The endpoints API for meshes (FunctionSpec.endpoints, manifest key
 * endpoints.threshold_rps, docs/endpoints.md): at this many calls per second a
 * function's endpoints become its pods' direct ports. 500/s is where one gateway hop
 * starts to cost a function real CPU and latency (a loop thread serves tens of
 * thousands of calls a second), while a function below it is better served by the
 * gateway's holding, cold starts and scale-to-zero. */
#define FAAS_SPEC_DEFAULT_ENDPOINTS_THRESHOLD_RPS 500u

/* ---- limits (plain decimals, so error messages can quote them with FAAS_SPEC_STR) ---- */

/* Largest min_instances / max_instances a spec may ask for. */
#define FAAS_SPEC_LIMIT_INSTANCES 100000
/* Largest reserved count (instances kept specialized from deploy on, docs/scaling.md):
 * each is a running pod, so far below FAAS_SPEC_LIMIT_INSTANCES. */
#define FAAS_SPEC_LIMIT_RESERVED 1000
/* Blobs of an image (its config and layers): Docker's own layer cap is 127. */
#define FAAS_SPEC_LIMIT_IMAGE_BLOBS 128
/* Largest concurrency a spec may ask for. */
#define FAAS_SPEC_LIMIT_CONCURRENCY 1000000

/* Async task bounds, each in the unit its error message quotes. Tasks running at once
 * per function: a cap on claims, far above any one host's pods. */
#define FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY 10000
/* One attempt's run time: a day. */
#define FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_HOURS 24
#define FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_MS (FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_HOURS * 3600000u)
/* How long finished tasks and their results stay in discovery's database. */
#define FAAS_SPEC_LIMIT_ASYNC_RETENTION_DAYS 90
#define FAAS_SPEC_LIMIT_ASYNC_RETENTION_MS (FAAS_SPEC_LIMIT_ASYNC_RETENTION_DAYS * 86400000ull)
/* Runs of one task (the first included): retries of a platform failure back off up to
 * 60 s each, so 10 already spans minutes. */
#define FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS 10
/* A stored result: the agent and the worker manager hold it whole in memory and the
 * store keeps it as one BLOB. */
#define FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_MIB 8
#define FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_BYTES ((unsigned long long)FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_MIB << 20)
/* Log files: below the smallest, rotations would come faster than anyone can read a
 * file; the largest times keep+1 is what one function may cost a worker's disk at most
 * (11 GiB), which an operator must be able to plan for. */
#define FAAS_SPEC_LIMIT_LOG_MIN_KIB 64
#define FAAS_SPEC_LIMIT_LOG_MIN_BYTES ((unsigned long long)FAAS_SPEC_LIMIT_LOG_MIN_KIB << 10)
#define FAAS_SPEC_LIMIT_LOG_MAX_MIB 1024
#define FAAS_SPEC_LIMIT_LOG_MAX_BYTES ((unsigned long long)FAAS_SPEC_LIMIT_LOG_MAX_MIB << 20)
#define FAAS_SPEC_LIMIT_LOG_KEEP 10
/* endpoints.threshold_rps: ten million calls a second is beyond any one function's
 * fleet of pods; above it the setting can only be a typo. */
#define FAAS_SPEC_LIMIT_ENDPOINTS_THRESHOLD_RPS 10000000
/* async.retry_on items: the only one today. */
#define FAAS_SPEC_ASYNC_RETRY_5XX "5xx"

/* A page of ListTasks (GET /tasks?limit=): tasks when the query names no limit, and
 * the most it may ask for (docs/async.md). */
#define FAAS_TASK_LIST_DEFAULT_LIMIT 100
#define FAAS_TASK_LIST_LIMIT 1000

/* The decimal text of a limit, for messages: FAAS_SPEC_STR(FAAS_SPEC_LIMIT_INSTANCES). */
#define FAAS_SPEC_STR(x) FAAS_SPEC_STR_(x)
#define FAAS_SPEC_STR_(x) #x

/* Fills port_env and every number above that the spec leaves at zero (timeouts, max
 * body, max duration, max instances); the strings it sets are malloc'd like an
 * unpacked message's. Health and thrift_transport depend on the protocol and are
 * left to discovery's checks. 0, or -1 when out of memory. */
int faas_spec_fill_defaults(Faas__FunctionSpec *spec);
/* The log bound of spec (NULL or a zero field: the default), as the agent and the
 * worker manager apply it. */
void faas_spec_log_bound(const Faas__FunctionSpec *spec, uint64_t *max_bytes, uint32_t *keep);
/* The endpoints threshold of spec in calls per second (NULL or 0: the default). */
uint32_t faas_spec_endpoints_threshold(const Faas__FunctionSpec *spec);

/* ---- runtime: how the user server starts (issue 18, docs/zygotes.md) ---- */

/* FunctionSpec.runtime: "" (auto), or one of these. */
#define FAAS_SPEC_RUNTIME_PYTHON3 "python3"
#define FAAS_SPEC_RUNTIME_EXEC "exec"
/* What runtime may be, for messages. */
#define FAAS_SPEC_RUNTIME_CHOICES "python3 or exec"
/* 1 if rt is a runtime a manifest may name (NULL and "" are auto). */
int faas_spec_runtime_valid(const char *rt);
/* 1 if the last path component of argv0 names a Python 3 interpreter: python3 or
 * python3.N (the agent still checks that it is the interpreter its zygote runs). */
int faas_spec_is_python3(const char *argv0);
/* 1 when runtime: python3 supplies the interpreter: the command does not start with one
 * (command: [server.py] runs as python3 server.py). */
int faas_spec_python_implied(const Faas__FunctionSpec *spec);
/* 1 when a pre-initialized Python interpreter may run the function: code (an image
 * brings its own interpreter), runtime not exec, and the command is a plain script
 * invocation, `python3 SCRIPT [ARGS]` (the interpreter possibly implied), with no
 * interpreter option before the script. The worker manager picks pods by it; the agent
 * also checks the environment and the interpreter. */
int faas_spec_zygote_fit(const Faas__FunctionSpec *spec);

#endif
