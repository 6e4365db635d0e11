/* runtime-agent/spec.c - pure helpers: control decoding, env/argv building, log lines,
 * header rules. No I/O here so everything is unit-tested and fuzzed. */
#include "runtime-agent/internal.h"

#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"

void agent_spec_defaults(agent_spec_t *s)
{
    if (s->port_env == NULL || s->port_env[0] == '\0')
        s->port_env = FAAS_SPEC_DEFAULT_PORT_ENV;
    if (s->probe_path == NULL || s->probe_path[0] == '\0')
        s->probe_path = FAAS_SPEC_DEFAULT_HEALTH_PATH;
    if (s->probe_interval_ms == 0)
        s->probe_interval_ms = FAAS_SPEC_DEFAULT_PROBE_INTERVAL_MS;
    if (s->cold_start_timeout_ms == 0)
        s->cold_start_timeout_ms = FAAS_SPEC_DEFAULT_COLD_START_MS;
    if (s->timeout_ms == 0)
        s->timeout_ms = FAAS_SPEC_DEFAULT_TIMEOUT_MS;
    if (s->max_duration_ms == 0)
        s->max_duration_ms = FAAS_SPEC_DEFAULT_MAX_DURATION_MS;
    if (s->max_body_bytes == 0)
        s->max_body_bytes = FAAS_SPEC_DEFAULT_MAX_BODY_BYTES;
    if (s->log_max_bytes == 0)
        s->log_max_bytes = FAAS_SPEC_DEFAULT_LOG_MAX_BYTES;
    if (s->name == NULL)
        s->name = "";
    if (s->instance_id == NULL)
        s->instance_id = "";
}

static int valid_env_key(const char *k)
{
    if (k == NULL || k[0] == '\0' || strchr(k, '=') != NULL)
        return 0;
    return 1;
}

/* Limits on what a control packet may ask for (it is at most 256 KiB anyway). */
#define MAX_ARGS 4096
#define MAX_ENV 4096
#define MAX_GROUPS 65536 /* the kernel's NGROUPS_MAX */

/* A code-directory function: argv is the function's command, env its env. */
static int code_from_pb(const Faas__Specialize *sp, agent_cmd_t *cmd, const char **err)
{
    const Faas__FunctionSpec *fs = sp->spec;
    if (fs->n_command == 0 || fs->command[0] == NULL || fs->command[0][0] == '\0')
        return *err = "function spec has no command", -1;
    if (sp->code_dir == NULL || sp->code_dir[0] != '/')
        return *err = "code_dir must be an absolute path", -1;
    if (fs->n_env > MAX_ENV || fs->n_command > MAX_ARGS)
        return *err = "too many env entries or arguments", -1;
    /* runtime: python3 with a command that names no interpreter: python3 runs it */
    size_t lead = faas_spec_python_implied(fs) ? 1 : 0;
    cmd->argv = calloc(lead + fs->n_command + 1, sizeof(char *));
    cmd->kv = calloc(fs->n_env * 2 + 1, sizeof(char *));
    if (cmd->argv == NULL || cmd->kv == NULL)
        return *err = "out of memory", -1;
    if (lead)
        cmd->argv[0] = FAAS_SPEC_RUNTIME_PYTHON3;
    for (size_t i = 0; i < fs->n_command; i++)
        cmd->argv[lead + i] = fs->command[i];
    for (size_t i = 0; i < fs->n_env; i++) {
        if (!valid_env_key(fs->env[i]->key))
            return *err = "invalid env key", -1;
        cmd->kv[2 * i] = fs->env[i]->key;
        cmd->kv[2 * i + 1] = fs->env[i]->value;
    }
    cmd->spec.argc = lead + fs->n_command;
    cmd->spec.n_env = fs->n_env;
    return 0;
}

static int image_checks(const Faas__ImageRun *im, const char **err)
{
    if (im->root == NULL || im->root[0] != '/')
        return *err = "the image's root must be an absolute path", -1;
    if (im->exe == NULL || im->exe[0] != '/')
        return *err = "the image's executable must be an absolute path", -1;
    if (im->n_argv == 0 || im->n_argv > MAX_ARGS)
        return *err = "the image has no command, or too many arguments", -1;
    if (im->cwd != NULL && im->cwd[0] != '\0' && im->cwd[0] != '/')
        return *err = "the image's WorkingDir must be an absolute path", -1;
    if (im->n_env > MAX_ENV || im->n_groups > MAX_GROUPS)
        return *err = "too many env entries or groups in the image", -1;
    for (size_t i = 0; i < im->n_env; i++) {
        const char *eq = strchr(im->env[i], '=');
        if (eq == NULL || eq == im->env[i])
            return *err = "the image's env entries must be KEY=value", -1;
    }
    return 0;
}

/* An image (docs/images.md): argv is the image's command as the worker manager resolved it
 * (the function's command already in it); env the image's Env, then the function's env over
 * it, so that a manifest setting wins even where the worker manager did not merge it. */
static int image_from_pb(const Faas__Specialize *sp, agent_cmd_t *cmd, const char **err)
{
    const Faas__FunctionSpec *fs = sp->spec;
    const Faas__ImageRun *im = sp->image;
    if (image_checks(im, err) != 0)
        return -1;
    if (fs->n_env > MAX_ENV)
        return *err = "too many env entries or arguments", -1;
    size_t n = im->n_env + fs->n_env, keybytes = 0;
    for (size_t i = 0; i < im->n_env; i++)
        keybytes += (size_t)(strchr(im->env[i], '=') - im->env[i]) + 1;
    cmd->argv = calloc(im->n_argv + 1, sizeof(char *));
    cmd->kv = calloc(n * 2 + 1, sizeof(char *));
    cmd->keys = malloc(keybytes + 1);
    if (cmd->argv == NULL || cmd->kv == NULL || cmd->keys == NULL)
        return *err = "out of memory", -1;
    for (size_t i = 0; i < im->n_argv; i++)
        cmd->argv[i] = im->argv[i];
    char *k = cmd->keys;
    for (size_t i = 0; i < im->n_env; i++) {
        const char *eq = strchr(im->env[i], '=');
        size_t kl = (size_t)(eq - im->env[i]);
        memcpy(k, im->env[i], kl);
        k[kl] = '\0';
        cmd->kv[2 * i] = k;
        cmd->kv[2 * i + 1] = eq + 1;
        k += kl + 1;
    }
    for (size_t i = 0; i < fs->n_env; i++) {
        if (!valid_env_key(fs->env[i]->key))
            return *err = "invalid env key", -1;
        cmd->kv[2 * (im->n_env + i)] = fs->env[i]->key;
        cmd->kv[2 * (im->n_env + i) + 1] = fs->env[i]->value;
    }
    cmd->spec.argc = im->n_argv;
    cmd->spec.n_env = n;
    cmd->spec.image = im;
    return 0;
}

/* Copies what Specialize says into spec, pointing into the message. */
static int spec_from_pb(const Faas__Specialize *sp, agent_cmd_t *cmd, const char **err)
{
    const Faas__FunctionSpec *fs = sp->spec;
    agent_spec_t *s = &cmd->spec;
    if (fs == NULL)
        return *err = "specialize without a function spec", -1;
    if (faas_valid_function_name(fs->name, strlen(fs->name), err) != 0)
        return -1;
    if (fs->port > 65535 || sp->user_port > 65535)
        return *err = "port out of range", -1;
    if (fs->port_env[0] != '\0' && !valid_env_key(fs->port_env))
        return *err = "invalid port_env", -1;
    if ((sp->image != NULL ? image_from_pb(sp, cmd, err) : code_from_pb(sp, cmd, err)) != 0)
        return -1;
    s->name = fs->name;
    s->instance_id = sp->instance_id;
    s->code_dir = sp->code_dir;
    s->runtime = fs->runtime;
    s->argv = cmd->argv;
    s->env_kv = cmd->kv;
    s->port_env = fs->port_env;
    s->port = (uint16_t)(fs->port != 0 ? fs->port : sp->user_port);
    if (fs->health != NULL) {
        s->probe_kind = (int)fs->health->kind;
        if (s->probe_kind < AGENT_PROBE_HTTP || s->probe_kind > AGENT_PROBE_GRPC)
            return *err = "unknown health check kind", -1;
        s->probe_path = fs->health->path;
        if (s->probe_path[0] != '\0' && s->probe_path[0] != '/')
            return *err = "health path must start with /", -1;
        if (strpbrk(s->probe_path, " \r\n") != NULL)
            return *err = "health path has blanks", -1;
        s->probe_interval_ms = fs->health->interval_ms;
    }
    s->cold_start_timeout_ms = fs->cold_start_timeout_ms;
    s->timeout_ms = fs->timeout_ms;
    s->max_duration_ms = fs->max_duration_ms;
    s->max_body_bytes = fs->max_body_bytes;
    s->concurrency = fs->concurrency;
    uint32_t keep;
    faas_spec_log_bound(fs, &s->log_max_bytes, &keep);
    agent_spec_defaults(s);
    return 0;
}

int agent_cmd_decode(const uint8_t *buf, size_t len, agent_cmd_t *out, const char **err)
{
    memset(out, 0, sizeof(*out));
    out->msg = faas__agent_command__unpack(NULL, len, buf);
    if (out->msg == NULL)
        return *err = "malformed AgentCommand", -1;
    out->type = (int)out->msg->type;
    switch (out->msg->type) {
    case FAAS__AGENT_COMMAND__TYPE__STOP:
    case FAAS__AGENT_COMMAND__TYPE__LOG_FD: /* its one field is the fd beside it */
    case FAAS__AGENT_COMMAND__TYPE__RUNQ:   /* figures only: any value is a measurement */
        return 0;
    case FAAS__AGENT_COMMAND__TYPE__CANCEL_TASK:
        if (out->msg->task_id == NULL || out->msg->task_id[0] == '\0') {
            *err = "CANCEL_TASK without a task_id";
            goto fail;
        }
        return 0;
    case FAAS__AGENT_COMMAND__TYPE__SPECIALIZE:
        if (out->msg->specialize == NULL) {
            *err = "SPECIALIZE without a body";
            goto fail;
        }
        if (spec_from_pb(out->msg->specialize, out, err) != 0)
            goto fail;
        return 0;
    default:
        *err = "unknown command type";
        goto fail;
    }
fail:
    agent_cmd_free(out);
    return -1;
}

void agent_cmd_free(agent_cmd_t *cmd)
{
    if (cmd->msg != NULL)
        faas__agent_command__free_unpacked(cmd->msg, NULL);
    free(cmd->argv);
    free(cmd->kv);
    free(cmd->keys);
    memset(cmd, 0, sizeof(*cmd));
}

static const char *const base_env[] = {"PATH", "/usr/local/bin:/usr/bin:/bin", "HOME", "/tmp", "LANG", "C.UTF-8"};

/* Index of key in the kv list built so far, or -1. */
static ssize_t env_find(const char **keys, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i], key) == 0)
            return (ssize_t)i;
    return -1;
}

char **agent_build_env(const agent_spec_t *s, uint16_t port)
{
    /* an image brings its own environment (the worker adds PATH and HOME when it has
     * none, as Docker does); ours is for servers run on the pod's userland */
    size_t nb = s->image != NULL ? 0 : 3;
    size_t cap = nb + s->n_env + 1;
    const char *keys[cap], *vals[cap];
    char portbuf[8];
    size_t n = 0;
    snprintf(portbuf, sizeof(portbuf), "%u", (unsigned)port);
    for (size_t i = 0; i < cap; i++) {
        const char *k, *v;
        if (i < nb) {
            k = base_env[2 * i], v = base_env[2 * i + 1];
        } else if (i < nb + s->n_env) {
            k = s->env_kv[2 * (i - nb)], v = s->env_kv[2 * (i - nb) + 1];
        } else {
            k = s->port_env && s->port_env[0] ? s->port_env : "PORT", v = portbuf;
        }
        /* later settings win: the spec may override PATH, the port always wins */
        ssize_t at = env_find(keys, n, k);
        if (at >= 0) {
            vals[at] = v;
        } else {
            keys[n] = k, vals[n] = v, n++;
        }
    }
    size_t bytes = (n + 1) * sizeof(char *);
    for (size_t i = 0; i < n; i++)
        bytes += strlen(keys[i]) + strlen(vals[i]) + 2;
    char **env = malloc(bytes);
    if (env == NULL)
        return NULL;
    char *p = (char *)(env + n + 1);
    for (size_t i = 0; i < n; i++) {
        env[i] = p;
        p += sprintf(p, "%s=%s", keys[i], vals[i]) + 1;
    }
    env[n] = NULL;
    return env;
}

int agent_split_cmd(const char *s, char ***argv_out, size_t *argc_out, const char **err)
{
    size_t slen = strlen(s), maxargs = slen / 2 + 2;
    /* one block: pointer array, then the unquoted strings (never longer than the input) */
    char **argv = malloc(maxargs * sizeof(char *) + slen + maxargs + 1);
    if (argv == NULL)
        return *err = "out of memory", -1;
    char *o = (char *)(argv + maxargs);
    size_t argc = 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (*p == '\0')
            break;
        argv[argc++] = o;
        char q = 0;
        for (; *p != '\0'; p++) {
            if (q == 0 && (*p == ' ' || *p == '\t' || *p == '\n'))
                break;
            if (q == 0 && (*p == '\'' || *p == '"')) {
                q = *p;
            } else if (q != 0 && *p == q) {
                q = 0;
            } else if (*p == '\\' && q != '\'' && p[1] != '\0') {
                *o++ = *++p;
            } else {
                *o++ = *p;
            }
        }
        if (q != 0) {
            free(argv);
            return *err = "unterminated quote in command", -1;
        }
        *o++ = '\0';
    }
    if (argc == 0) {
        free(argv);
        return *err = "empty command", -1;
    }
    argv[argc] = NULL;
    *argv_out = argv;
    *argc_out = argc;
    return 0;
}

size_t agent_format_log_line(char *buf, size_t cap, int64_t unix_ms, const char *fn, const char *instance,
                             const char *stream, const char *msg, size_t len)
{
    return faas_fn_log_line(buf, cap, unix_ms, fn, instance, stream, msg, len); /* one format, common/log.c */
}

int agent_logacct_admit(agent_logacct_t *a, size_t len)
{
    if (!a->full)
        return 1;
    a->dropped_bytes += len, a->dropped_lines++;
    a->gap_bytes += len, a->gap_lines++;
    return 0;
}

int agent_logacct_wrote(agent_logacct_t *a, int64_t end)
{
    if (a->full || a->max_bytes == 0 || end < 0 || (uint64_t)end < a->max_bytes)
        return 0;
    a->full = 1;
    return 1;
}

int agent_logacct_swap(agent_logacct_t *a, uint64_t *gap_bytes, uint64_t *gap_lines)
{
    a->full = 0;
    *gap_bytes = a->gap_bytes, *gap_lines = a->gap_lines;
    a->gap_bytes = a->gap_lines = 0;
    return *gap_lines != 0;
}

int agent_header_is_hop(const char *name, size_t len)
{
    /* by length first: this runs for every header of every request */
    const char *c;
    switch (len) {
    case 2:
        c = "te";
        break;
    case 4:
        c = "host";
        break;
    case 6:
        c = "expect";
        break;
    case 7:
        c = "upgrade";
        break;
    case 10:
        c = tolower((unsigned char)name[0]) == 'c' ? "connection" : "keep-alive";
        break;
    case 14:
        c = tolower((unsigned char)name[0]) == 'c' ? "content-length" : "http2-settings";
        break;
    case 16:
        c = "proxy-connection";
        break;
    case 17:
        c = "transfer-encoding";
        break;
    case 19:
        c = "proxy-authorization";
        break;
    default:
        return 0;
    }
    return strncasecmp(c, name, len) == 0;
}

int agent_task_result_packets(const char *task_id, const Faas__TaskResult *res, size_t chunk,
                              int (*emit)(void *ud, uint8_t *pkt, size_t len), void *ud)
{
    /* the first packet carries status, headers and up to one chunk; the rest follow as
     * TASK_RESULT_CHUNK, each far below the control socket's buffer */
    size_t len = res->body.len, off = len < chunk ? len : chunk;
    Faas__TaskResult first = *res;
    first.body.len = off;
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__TASK_DONE;
    ev.task_id = (char *)task_id;
    ev.result = &first;
    ev.more = off < len;
    for (;;) {
        size_t pl;
        uint8_t *pkt = faas_pb_pack(&ev.base, &pl);
        if (pkt == NULL || emit(ud, pkt, pl) != 0)
            return -1;
        if (off >= len)
            return 0;
        size_t n = len - off < chunk ? len - off : chunk;
        ev = (Faas__AgentEvent)FAAS__AGENT_EVENT__INIT;
        ev.type = FAAS__AGENT_EVENT__TYPE__TASK_RESULT_CHUNK;
        ev.task_id = (char *)task_id;
        ev.chunk.data = res->body.data + off;
        ev.chunk.len = n;
        off += n;
        ev.more = off < len;
    }
}

int agent_signal_may_stop(int is_init, int32_t code, uint32_t pid)
{
    if (!is_init)
        return 1; /* standalone: no pod, nobody to tell apart */
    /* SI_USER and SI_KERNEL cannot be forged by sigqueue/rt_sigqueueinfo (the kernel
     * refuses codes >= 0 to other processes), and kill(2) from outside our PID namespace
     * arrives with pid 0: the worker manager, its helper, an operator on the host. */
    return code == SI_KERNEL || (code == SI_USER && pid == 0);
}

/* ---- the Python zygote (issue 18, docs/zygotes.md) ---- */

/* Variables the interpreter, the C library under it or a preloaded module's native
 * library (OpenSSL's config as ssl loads, gRPC core's settings) read once, at start or
 * import: a zygote started with other values cannot honour the function's. */
static int read_at_start(const char *kv, size_t klen)
{
    static const char *const prefixes[] = {"PYTHON", "LC_", "LD_", "MALLOC_", "OPENSSL_", "GRPC_"};
    static const char *const names[] = {"LANG", "LANGUAGE", "HOME", "GLIBC_TUNABLES"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(*prefixes); i++)
        if (strncmp(kv, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
        if (klen == strlen(names[i]) && strncmp(kv, names[i], klen) == 0)
            return 1;
    return 0;
}

/* The entry of env whose key is kv's, or NULL. */
static const char *env_lookup(char *const *env, const char *kv, size_t klen)
{
    for (; *env != NULL; env++)
        if (strncmp(*env, kv, klen) == 0 && (*env)[klen] == '=')
            return *env;
    return NULL;
}

/* Checks one side's start-time variables against the other's; 0 or -1 with the key. */
static int start_env_same(char *const *a, char *const *b, char *key, size_t cap)
{
    for (; *a != NULL; a++) {
        const char *eq = strchr(*a, '=');
        size_t klen = eq != NULL ? (size_t)(eq - *a) : strlen(*a);
        if (!read_at_start(*a, klen))
            continue;
        const char *other = env_lookup(b, *a, klen);
        if (other == NULL || strcmp(other, *a) != 0) {
            snprintf(key, cap, "%.*s", (int)klen, *a);
            return -1;
        }
    }
    return 0;
}

int agent_zygote_env_fits(char *const *fn_env, char *const *zygote_env, char *key, size_t cap)
{
    return start_env_same(fn_env, zygote_env, key, cap) == 0 && start_env_same(zygote_env, fn_env, key, cap) == 0
               ? 0
               : -1;
}

/* Appends s and its NUL; 0 or -1 when it does not fit. */
static int put_field(char *buf, size_t cap, size_t *n, const char *s)
{
    size_t l = strlen(s) + 1;
    if (l > cap - *n)
        return -1;
    memcpy(buf + *n, s, l);
    *n += l;
    return 0;
}

size_t agent_zygote_message(const agent_spec_t *s, const char *exe, char *const *env, char *buf, size_t cap)
{
    char num[24];
    size_t n = 0, envc = 0;
    while (env[envc] != NULL)
        envc++;
    if (put_field(buf, cap, &n, s->code_dir) || put_field(buf, cap, &n, exe) || put_field(buf, cap, &n, s->argv[0]))
        return 0;
    snprintf(num, sizeof(num), "%zu", s->argc - 1);
    if (put_field(buf, cap, &n, num))
        return 0;
    for (size_t i = 1; i < s->argc; i++)
        if (put_field(buf, cap, &n, s->argv[i]))
            return 0;
    snprintf(num, sizeof(num), "%zu", envc);
    if (put_field(buf, cap, &n, num))
        return 0;
    for (size_t i = 0; i < envc; i++)
        if (put_field(buf, cap, &n, env[i]))
            return 0;
    return n - 1; /* the last NUL ends the message: Python splits on it */
}
