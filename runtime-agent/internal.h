/* runtime-agent/internal.h - private types and helpers of faas-agent. */
#ifndef AGENT_INTERNAL_H
#define AGENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
    uint32_t concurrency; /* 0 = unlimited; at this many in flight the pod reports OVERLOAD */
} agent_spec_t;

/* A decoded control command. msg owns the memory spec points into. */
typedef struct agent_cmd {
    int type; /* FAAS__AGENT_COMMAND__TYPE__* */
    agent_spec_t spec;
    Faas__AgentCommand *msg;
    const char **kv; /* backing array for spec.env_kv */
    char **argv;     /* backing array for spec.argv */
} agent_cmd_t;

/* ---- spec.c: pure helpers (no I/O) ---- */

/* Decodes one AgentCommand packet and validates it; 0 or -1 with *err. */
int agent_cmd_decode(const uint8_t *buf, size_t len, agent_cmd_t *out, const char **err);
/* Frees what agent_cmd_decode allocated. */
void agent_cmd_free(agent_cmd_t *cmd);
/* Fills spec defaults (interval, timeouts, paths) for zero fields. */
void agent_spec_defaults(agent_spec_t *spec);
/* Builds the user server's environment: clean base + spec env + port var. NULL-terminated, malloc'd
 * as one block (free() once). */
char **agent_build_env(const agent_spec_t *spec, uint16_t port);
/* Splits a command line on blanks honouring '..', ".." and backslash; malloc'd NULL-terminated
 * argv (free() once); 0 or -1 with *err. */
int agent_split_cmd(const char *s, char ***argv_out, size_t *argc_out, const char **err);
/* Formats one user-log line `ts=.. fn=.. instance=.. stream=.. msg="..."\n`; returns its length. */
size_t agent_format_log_line(char *buf, size_t cap, int64_t unix_ms, const char *fn, const char *instance,
                             const char *stream, const char *msg, size_t len);
/* 1 if the (lower-case) request header must not be forwarded to the user server. */
int agent_header_is_hop(const char *name, size_t len);
/* 1 if name appears as a token in a Connection header value. */
int agent_connection_lists(const char *value, size_t vlen, const char *name, size_t nlen);
/* Parses a decimal millisecond count; 0 or -1. */
int agent_parse_ms(const char *s, size_t len, uint64_t *out);
/* Rounds a deadline down onto a coarse grid so that few distinct timers exist. */
uint32_t agent_quantize_ms(uint32_t ms);

/* picohttpparser, bundled (and exported) by libh2o but without a public header. */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers, size_t last_len);
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
    char _reserved[64]; /* room in case the bundled version's struct is larger */
};
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

/* How an upstream HTTP/1.x response body is delimited. */
enum { AGENT_BODY_NONE = 0, AGENT_BODY_LENGTH = 1, AGENT_BODY_CHUNKED = 2, AGENT_BODY_EOF = 3 };
typedef struct agent_framing {
    int body;        /* AGENT_BODY_* */
    uint64_t length; /* for AGENT_BODY_LENGTH */
    int keepalive;   /* the connection can carry another request afterwards */
} agent_framing_t;

/* Decides body framing and connection reuse for a response head (RFC 9112 s6.3); 0, or -1
 * with *err for a response that cannot be framed safely. */
int agent_resp_framing(int minor_version, int status, int is_head, const struct phr_header *h, size_t n,
                       agent_framing_t *out, const char **err);

/* ---- proxy.c: the h2c/HTTP front end and the upstream pool ---- */

struct st_h2o_evloop_t;
/* Starts serving on the bound listener fd; 0 or -1. */
int agent_proxy_init(struct st_h2o_evloop_t *loop, int listen_fd, uint64_t max_body);
/* Points the proxy at the user server (call once, at specialization); requests without
 * faas-deadline-ms get default_deadline_ms to their first response byte. */
void agent_proxy_set_upstream(uint16_t port, uint32_t default_deadline_ms);
/* Calls cb each time a forwarded request brings the in-flight count to >= limit (limit 0 = never). */
void agent_proxy_set_overload(uint32_t limit, void (*cb)(uint32_t inflight, uint32_t limit));
/* Requests are forwarded only once this is set. */
void agent_proxy_set_ready(int ready);
/* Adopts the readiness probe's keep-alive connection (response fully read) as an
 * idle pooled upstream, so the first request costs the user server no accept. */
struct st_h2o_socket_t;
int agent_proxy_adopt_upstream(struct st_h2o_socket_t *sock);

/* ---- user.c: the user server process, its logs, its probe ---- */

typedef struct agent_user_cbs {
    void (*on_ready)(uint32_t exec_us, uint32_t ready_us);
    void (*on_failed)(const char *msg);
    void (*on_exit)(int status, int was_ready);
} agent_user_cbs_t;

/* Forks/execs the user server for spec, wiring logs to log_fd (-1 = stderr only) and
 * starting the readiness probe; 0 or -1 with *err. t0_us = when specialization began. */
int agent_user_start(struct st_h2o_evloop_t *loop, const agent_spec_t *spec, int log_fd, uint64_t t0_us,
                     const agent_user_cbs_t *cbs, const char **err);
/* The port the user server was given (0 before start). */
uint16_t agent_user_port(void);
/* Called on SIGCHLD: reaps and reports. */
void agent_user_reap(void);
/* SIGTERM the user's process group, wait up to grace_ms, SIGKILL it. Blocks; used on exit. */
void agent_user_kill(uint32_t grace_ms);

#endif
