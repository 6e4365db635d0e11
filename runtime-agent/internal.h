/* runtime-agent/internal.h - private types and helpers of faas-agent. */
#ifndef AGENT_INTERNAL_H
#define AGENT_INTERNAL_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/evl.h"
#include "h2b/h2b.h"
#include "http1/http1.h"
#include "proto/faas.pb-c.h"

/* Health probe kinds, same numbers as faas.HealthCheck.Kind. */
enum { AGENT_PROBE_HTTP = 0, AGENT_PROBE_TCP = 1, AGENT_PROBE_GRPC = 2 };

/* What the agent needs to run one function. Strings point into the decoded
 * AgentCommand (or argv in standalone mode); the owner keeps them alive. */
typedef struct agent_spec {
    const char *name;
    const char *instance_id;
    const char *code_dir;
    char *const *argv; /* NULL-terminated */
    size_t argc;
    const char *const *env_kv; /* key0, value0, key1, value1, ... */
    size_t n_env;
    const char *port_env;
    uint16_t port; /* 0 = agent picks */
    int probe_kind;
    const char *probe_path;
    uint32_t probe_interval_ms;
    uint32_t cold_start_timeout_ms;
    uint32_t timeout_ms;
    uint32_t max_duration_ms;
    uint64_t max_body_bytes;
    uint32_t concurrency;   /* 0 = unlimited; at this many in flight the pod reports OVERLOAD */
    uint64_t log_max_bytes; /* the log file's bound (logs.max_bytes) */
    /* Specialize.image: the user server runs inside an OCI image (docs/images.md); argv and
     * env_kv are then the image's as the worker manager resolved them, code_dir is unused */
    const Faas__ImageRun *image;
    const char *runtime; /* FunctionSpec.runtime: "" auto, python3, exec (issue 18) */
} agent_spec_t;

/* A decoded control command. msg owns the memory spec points into. */
typedef struct agent_cmd {
    int type; /* FAAS__AGENT_COMMAND__TYPE__* */
    agent_spec_t spec;
    Faas__AgentCommand *msg;
    const char **kv; /* backing array for spec.env_kv */
    char **argv;     /* backing array for spec.argv */
    char *keys;      /* an image's env keys, NUL-terminated copies (spec.env_kv points in) */
} agent_cmd_t;

/* ---- spec.c: pure helpers (no I/O) ---- */

/* Decodes one AgentCommand packet and validates it; 0 or -1 with *err. */
int agent_cmd_decode(const uint8_t *buf, size_t len, agent_cmd_t *out, const char **err);
/* Frees what agent_cmd_decode allocated. */
void agent_cmd_free(agent_cmd_t *cmd);
/* Fills spec defaults (interval, timeouts, paths) for zero fields. */
void agent_spec_defaults(agent_spec_t *spec);
/* Builds the user server's environment: clean base + spec env + port var (for an image the
 * spec env is the image's Env, then the function's env over it). NULL-terminated, malloc'd
 * as one block (free() once). */
char **agent_build_env(const agent_spec_t *spec, uint16_t port);
/* 0 if the variables an interpreter reads as it starts (PYTHON*, LANG, LANGUAGE, LC_*,
 * HOME, LD_*, MALLOC_*, GLIBC_TUNABLES, OPENSSL_*, GRPC_*) are the same in the function's environment as in the zygote's,
 * else -1 with the first that differs in key (docs/zygotes.md). */
int agent_zygote_env_fits(char *const *fn_env, char *const *zygote_env, char *key, size_t cap);
/* The message a zygote becomes the function by: cwd (code_dir), the interpreter's path,
 * argv[0] as the command says it, the argument count and the arguments from the script
 * on, the variable count and env - NUL-separated. Its length, or 0 if over cap. */
size_t agent_zygote_message(const agent_spec_t *spec, const char *exe, char *const *env, char *buf, size_t cap);
/* Splits a command line on blanks honouring '..', ".." and backslash; malloc'd NULL-terminated
 * argv (free() once); 0 or -1 with *err. */
int agent_split_cmd(const char *s, char ***argv_out, size_t *argc_out, const char **err);
/* Formats one user-log line `ts=.. fn=.. instance=.. stream=.. msg="..."\n`; returns its length. */
size_t agent_format_log_line(char *buf, size_t cap, int64_t unix_ms, const char *fn, const char *instance,
                             const char *stream, const char *msg, size_t len);
/* 1 if the (lower-case) request header must not be forwarded to the user server. */
int agent_header_is_hop(const char *name, size_t len);
/* A task's result as control packets: TASK_DONE (status, headers, the first chunk of at most
 * chunk body bytes) then TASK_RESULT_CHUNK packets, `more` set on all but the last. emit owns
 * each malloc'd packet; its nonzero return stops. 0 or -1. */
int agent_task_result_packets(const char *task_id, const Faas__TaskResult *res, size_t chunk,
                              int (*emit)(void *ud, uint8_t *pkt, size_t len), void *ud);

/* The bound of the function's log file as one agent keeps it (docs/security.md "Bounded
 * logs"). The file is shared by every instance of the function on the worker, so the
 * agent does not count its own bytes against a share: after each write it reads where
 * the file ends (an O_APPEND write leaves the fd's offset there), which counts everyone's
 * lines, and stops writing once that passes max_bytes, until the worker manager hands it
 * a new file. Each agent then overshoots by at most one line and one marker. */
typedef struct agent_logacct {
    uint64_t max_bytes;                    /* 0 = no bound (stderr, a pipe) */
    int full;                              /* the file passed max_bytes: lines are dropped */
    uint64_t dropped_bytes, dropped_lines; /* since the agent started (reported, metrics) */
    uint64_t gap_bytes, gap_lines;         /* dropped since the file filled (the summary line) */
} agent_logacct_t;

/* Before writing a line of len bytes: 1 to write it, 0 to drop it (counted). */
int agent_logacct_admit(agent_logacct_t *a, size_t len);
/* After a write the file ends at end (-1: not known, e.g. a pipe): 1 when this made it
 * full (write the marker, ask for rotation), else 0. */
int agent_logacct_wrote(agent_logacct_t *a, int64_t end);
/* A new file came: writing resumes. 1 with what was dropped since the old one filled (the
 * gap, then cleared) when there was any, else 0. */
int agent_logacct_swap(agent_logacct_t *a, uint64_t *gap_bytes, uint64_t *gap_lines);

/* ---- logsink.c: the function's log file ---- */

typedef struct agent_log_cbs {
    void (*on_full)(uint64_t dropped_bytes, uint64_t dropped_lines);    /* ask for LOG_ROTATE */
    void (*on_dropped)(uint64_t dropped_bytes, uint64_t dropped_lines); /* LOG_DROPPED: totals */
} agent_log_cbs_t;

/* Lines go to fd (-1: stderr, unbounded), at most max_bytes a file; fn and instance
 * (kept alive by the caller) name the platform's own lines. */
void agent_log_init(int fd, uint64_t max_bytes, const char *fn, const char *instance, const agent_log_cbs_t *cbs);
/* Writes one formatted line (one write, so lines of several pods stay whole) or drops it. */
void agent_log_write(const char *line, size_t len);
/* LOG_FD: fd is the function's current file from now on (the old one is closed). */
void agent_log_swap(int fd);

/* ---- pool.c: keep-alive connections to the user server ---- */

typedef struct agent_pool agent_pool_t;

/* One connection to the user server. Idle ones stay registered and reading, so that a
 * close by the server is noticed at once and reuse costs no syscall. */
typedef struct agent_upconn {
    evl_sock_t *sock; /* sock->data is this upconn; NULL while waiting for a connect slot */
    agent_pool_t *pool;
    evl_link_t idle_link; /* in pool->idle, or pool->waiters while waiting */
    evl_timer_t idle_timer;
    void *owner; /* the request using it; NULL when idle */
    void (*on_connect)(struct agent_upconn *u, int err);
    int reused; /* carried a request before: the server may have closed it while idle */
} agent_upconn_t;

struct agent_pool {
    evl_loop_t *loop;
    struct sockaddr_in addr;
    evl_link_t idle;    /* most recently used first */
    evl_link_t waiters; /* acquisitions waiting for a connect slot or an idle connection */
    evl_defer_t kick;
    uint32_t idle_ms;
    uint32_t connecting; /* connects in flight (at most AGENT_POOL_MAX_CONNECTING) */
    int configured;
};

/* A burst of requests must not become a burst of connects larger than a user server's
 * accept backlog (python's TServerSocket listens with 128): past this many connects in
 * flight, acquisitions wait for one to finish or for a connection to come back. */
#define AGENT_POOL_MAX_CONNECTING 32

/* Points p at 127.0.0.1:port; idle connections live idle_ms. */
void agent_pool_init(agent_pool_t *p, evl_loop_t *loop, uint16_t port, uint32_t idle_ms);
/* Gives owner the most recently used idle connection (unless fresh): 1, usable now; or
 * starts a new one (or waits for a slot): 0, on_connect(u, err) follows from the loop;
 * -1 on failure. */
int agent_pool_acquire(agent_pool_t *p, int fresh, void *owner, void (*on_connect)(agent_upconn_t *u, int err),
                       agent_upconn_t **out);
/* Back to the idle list (the exchange ended cleanly, nothing unread). */
void agent_pool_release(agent_upconn_t *u);
/* Closes and frees u (also when idle). */
void agent_pool_close(agent_upconn_t *u);
/* Takes a connected socket with nothing unread as an idle connection; 0 or -1 (caller keeps s). */
int agent_pool_adopt(agent_pool_t *p, evl_sock_t *s);

/* ---- front.c: the h2c listener (the HELLO port) ---- */

enum { AGENT_REQ_HTTP = 0, AGENT_REQ_THRIFT = 1, AGENT_REQ_GRPC = 2 };

typedef struct agent_task agent_task_t;

/* One stream the agent answers itself (HTTP or Thrift), owned by its pair (p->owner) until,
 * for an async task (task set), it is detached from it and owned by the task (task.c). */
typedef struct agent_req {
    h2b_pair_t *pair;
    int kind;
    int body_over;  /* the body passed max_body: answered 413 */
    int has_body;   /* the request stream carried DATA (or could have) */
    evl_buf_t body; /* the request body, whole */
    evl_timer_t deadline;
    agent_upconn_t *up; /* while it uses one */
    uint64_t deadline_ms;
    /* HTTP */
    http1_framing_t framing;
    http1_chunked_t dec;
    uint64_t remaining;
    int state, is_head, started, retried, reading;
    evl_buf_t head; /* the request head for the user server */
    /* Thrift */
    int oneway, got_bytes;
    void *tpipe; /* the pipelined upstream connection its call is on (thrift_proxy.c) */
    agent_task_t *task;      /* an async task: its response is collected, not streamed */
    uint64_t t0_us, head_us; /* arrived; the user server's response head came (0: not yet) */
} agent_req_t;

/* The GOAWAY debug data of an agent whose user server is gone (the dispatcher drops the
 * instance on it; dispatcher/dispatcher.c). */
#define AGENT_GOAWAY_GONE "instance-gone"

/* Installs the bridge on loop (the evl adapter); max_body bounds request bodies. */
int agent_front_init(evl_loop_t *loop, uint64_t max_body);
/* Serves h2c with prior knowledge on a bound, listening fd (the agent's one port). */
int agent_front_listen(int fd);
/* The front's stream callbacks (the direct port serves h2c streams with them). */
const h2b_server_cbs_t *agent_front_cbs(void);
/* Hands the bytes already read on s (just given to h2b_io_accept) to the bridge. */
void agent_front_feed(evl_sock_t *s);
/* Requests are forwarded only once this is set. */
void agent_front_set_ready(int ready);
/* Calls cb each time a request brings the in-flight count to >= limit (limit 0 = never). */
void agent_front_set_overload(uint32_t limit, void (*cb)(uint32_t inflight, uint32_t limit));
/* Calls cb once, when the next request, call or stream enters. */
void agent_front_on_first(void (*cb)(void));
/* What the overload detector samples: requests, calls and streams in flight now; how many
 * ended, and the sum of their time in the agent (to the response head where it is seen). */
void agent_front_stats(uint32_t *inflight, uint64_t *completions, uint64_t *latency_us);
/* Answers a local stream with a platform-made error: status, `faas-error: reason`, text body. */
void agent_reply_error(h2b_pair_t *p, int status, const char *reason, const char *body);
/* The first request header called name (lower case), or NULL. */
const nghttp2_nv *agent_req_header(const agent_req_t *r, const char *name);
/* Ends a task's h2 stream with 202 and takes r off its pair: r then lives until agent_req_release. */
void agent_req_detach(agent_req_t *r);
/* Frees (or recycles) a request that no pair owns any more, with its task. */
void agent_req_release(agent_req_t *r);

/* ---- direct.c: the direct port (docs/endpoints.md, "The pod's direct port") ---- */

/* Binds the direct port on the address of the front's listener (front_fd), a port of its
 * own, not listening yet (connects are refused); 0 with *port, or -1. */
int agent_direct_bind(int front_fd, uint16_t *port);
/* The user server is READY: listens and serves proto (FAAS__PROTOCOL__*); a gRPC call
 * without grpc-timeout gets deadline_ms (0: none), an HTTP/1 body past max_body is 413. */
int agent_direct_start(evl_loop_t *loop, int proto, uint32_t deadline_ms, uint64_t max_body);
/* Requests, calls and streams the direct port took since the agent started. */
uint64_t agent_direct_calls(void);
/* How long a direct HTTP/1 or Thrift connection may sit with no call in progress. */
uint32_t agent_direct_idle_ms(void);
/* One more call taken (direct_thrift.c). */
void agent_direct_counted(void);
/* The agent's own h2c port as h2b_client_get takes it: where direct calls are sent on. */
const char *agent_direct_self(void);
/* direct_thrift.c: serves Thrift frames on an accepted direct connection (takes s). */
void agent_direct_thrift_accept(evl_loop_t *loop, evl_sock_t *s);

/* ---- proxy.c: HTTP streams -> HTTP/1.1 keep-alive pool ---- */

/* Points the HTTP path at the user server (call once, at specialization); requests without
 * faas-deadline-ms get default_deadline_ms to their first response byte. */
void agent_proxy_set_upstream(evl_loop_t *loop, uint16_t port, uint32_t default_deadline_ms);
/* Forwards a complete HTTP request (headers and whole body). */
void agent_proxy_start(agent_req_t *r);
/* Runs a complete task request: builds the upstream head from the pair's headers (faas-*
 * dropped), detaches r from its pair (202), then calls the user server; the outcome goes to
 * agent_task_end. deadline_ms bounds the whole run unless faas-deadline-ms says otherwise. */
void agent_proxy_task_start(agent_req_t *r, uint64_t deadline_ms);

/* ---- task.c: async tasks (docs/async.md) ---- */

#define AGENT_TASK_RENEW_MS 10000
#define AGENT_TASK_CHUNK (64 * 1024)

struct agent_task {
    agent_req_t *req;
    evl_link_t link; /* running tasks */
    evl_timer_t renew;
    char id[40];
    uint32_t attempt;
    uint64_t max_result; /* body bytes (faas-task-max-result) */
    int idempotent;
    int over; /* the body passed max_result: the task is rejected */
    int oom;  /* out of memory collecting the result: a retryable failure */
    uint32_t status;
    Faas__KeyValue *kv; /* response headers (names and values malloc'd) */
    size_t nkv, cap_kv;
    evl_buf_t body;
};

/* A task for the request carrying faas-task-id (id), with its faas-task-attempt and
 * faas-task-max-result headers (NULL: absent). NULL with *err set for a malformed header, NULL
 * with *err NULL when out of memory. */
agent_task_t *agent_task_new(const nghttp2_nv *id, const nghttp2_nv *attempt, const nghttp2_nv *max_result,
                             const char **err);
/* The request is whole: answer 202, report TASK_STARTED, run it. */
void agent_task_start(agent_req_t *r);
/* Records the response head (hop-by-hop headers dropped). */
int agent_task_head(agent_req_t *r, int status, const http1_hdr_t *h, size_t n);
/* Appends response body bytes (past max_result, marks the task over and drops them). */
void agent_task_body(agent_req_t *r, const char *d, size_t n);
/* The run ended: err NULL = the response is whole (TASK_DONE; or TASK_FAILED no_retry if it
 * was over max_result), else TASK_FAILED err, which the store retries. Frees r. */
void agent_task_end(agent_req_t *r, const char *err);
/* The task ran past its deadline: TASK_FAILED no_retry. Frees r. */
void agent_task_deadline(agent_req_t *r);
/* Frees the task's own memory (from agent_req_release). */
void agent_task_free(agent_task_t *t);
/* CANCEL_TASK: aborts the task if it runs here. */
void agent_task_cancel(const char *id);
/* Sets the loop and where events go (send: NULL = standalone, log them). */
void agent_task_init(evl_loop_t *loop, int (*send)(uint8_t *pkt, size_t len));
/* The response was taken by nghttp2: reading the user server may go on. */
void agent_proxy_drain(agent_req_t *r);
/* The stream is gone (done or cancelled): let go of the upstream. */
void agent_proxy_end(agent_req_t *r);
/* Adopts the readiness probe's keep-alive connection (response fully read) as an
 * idle pooled upstream, so the first request costs the user server no accept. */
int agent_proxy_adopt_upstream(evl_sock_t *sock);

/* ---- user.c: the user server process, its logs, its probe ---- */

struct agent_deny_delta;

typedef struct agent_user_cbs {
    void (*on_ready)(uint32_t exec_us, uint32_t ready_us);
    void (*on_failed)(const char *msg);
    void (*on_exit)(int status, int was_ready);
    /* seccomp refusals since the last call (at most one call a second), nonzero only */
    void (*on_denials)(const struct agent_deny_delta *d, size_t n);
} agent_user_cbs_t;

/* Forks/execs the user server for spec, its output going to logsink.c (agent_log_init
 * first), and starts the readiness probe; 0 or -1 with *err. t0_us = when specialization
 * began. userns_fd: for an image, the user namespace the user server enters (taken:
 * closed before this returns), else -1. */
int agent_user_start(evl_loop_t *loop, const agent_spec_t *spec, int userns_fd, uint64_t t0_us,
                     const agent_user_cbs_t *cbs, const char **err);
/* The port the user server was given (0 before start). */
uint16_t agent_user_port(void);
/* Starts the pod's Python zygote (issue 18, docs/zygotes.md): python -c zygote.py with the
 * comma-separated preload modules, waiting for a function; 0, or -1 (logged: the pod execs
 * user servers as usual). settled(1) once its imports are done, settled(0) if it dies or
 * takes too long first (then it is gone); never after agent_user_start. Before any
 * agent_user_start. */
int agent_user_zygote_start(evl_loop_t *loop, const char *python, const char *preload, void (*settled)(int ready));
/* 1 once the user server runs in the zygote (READY says so). */
int agent_user_in_zygote(void);
/* Called on SIGCHLD: reaps and reports. */
void agent_user_reap(void);
/* SIGTERM the user's process group, wait up to grace_ms, SIGKILL it. Blocks; used on exit. */
void agent_user_kill(uint32_t grace_ms);

/* ---- denylist.c: what the user server's seccomp filter refuses (pure) ---- */

/* The entry is refused only with CLONE_NEWUSER in its flags (argument 0). */
#define AGENT_DENY_NEWUSER 1
/* Room in a tally: at least the number of entries in the list. */
#define AGENT_DENY_MAX 48
/* Denials go up at most this often (the first at once). */
#define AGENT_DENY_REPORT_MS 1000

/* One syscall the filter refuses with EPERM. */
typedef struct agent_deny {
    const char *name; /* libseccomp's (and the metrics label's) name */
    int only;         /* 0, or AGENT_DENY_NEWUSER */
} agent_deny_t;

/* Denials of entries (by index in the list) not yet reported, and which were logged. */
typedef struct agent_deny_tally {
    uint64_t pending[AGENT_DENY_MAX];
    uint8_t logged[AGENT_DENY_MAX];
    int any_pending;
    uint64_t last_ms; /* when the last report went (0: never) */
} agent_deny_tally_t;

/* One line of a report: a syscall's name and its denials since the last report. */
typedef struct agent_deny_delta {
    const char *name;
    uint64_t count;
} agent_deny_delta_t;

/* The denied syscalls, *n of them. */
const agent_deny_t *agent_deny_list(size_t *n);
/* The list index of name, or -1. */
int agent_deny_index(const char *name);
/* Counts one denial of entry i; 1 if it is the first of that syscall (log it once). */
int agent_deny_note(agent_deny_tally_t *t, int i);
/* -1 if nothing is pending, 0 if a report is due now, else the ms until it is. */
int64_t agent_deny_due(const agent_deny_tally_t *t, uint64_t now_ms);
/* Moves up to cap pending counts to out (list order) and notes the report time; how many. */
size_t agent_deny_take(agent_deny_tally_t *t, uint64_t now_ms, agent_deny_delta_t *out, size_t cap);

/* ---- seccomp.c: the filter itself and its listener (libseccomp) ---- */

/* Builds the filter programs once, in the agent; 0 or -1 with *err. */
int agent_seccomp_prepare(const char **err);
/* In the vfork child (syscalls only): sets no_new_privs and installs the filter. The
 * listener fd (>= 0) if denials are counted, -1 if only refused (no listener: the kernel
 * lacks user notification, or an outer filter has a listener), -2 on failure (errno). */
int agent_seccomp_install(void);
/* Serves the listener on loop: each denial answered EPERM at once and counted; log_first
 * is told a syscall's name the first time, report gets the counts. Takes fd. */
int agent_seccomp_watch(evl_loop_t *loop, int fd, void (*log_first)(const char *name),
                        void (*report)(const agent_deny_delta_t *d, size_t n));
/* Reports what is pending now and stops serving the listener (closes it). */
void agent_seccomp_stop(void);

/* ---- spec.c: who may stop the agent ---- */

/* 1 if a terminating signal (signalfd's code and pid) may stop the agent: as the pod's
 * PID-namespace init (is_init), only one sent from outside the pod (kill(2) by a process
 * the pod cannot see: pid 0) or by the kernel; the user server's are ignored. */
int agent_signal_may_stop(int is_init, int32_t code, uint32_t pid);

#endif
