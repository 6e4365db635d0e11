/* deploy/manifest.c - function.yaml -> Faas__FunctionSpec.
 *
 * libyaml's document API builds a node graph; the walk below never goes deeper
 * than top-level map -> value -> map/sequence item, so aliases (even cyclic ones)
 * cannot make it loop or expand. Every scalar goes through faas_manifest_set, so
 * flags and manifests share one set of rules. */
#include "deploy/manifest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common/spec.h"
#include "common/util.h"

#define EMPTY_STR ((char *)protobuf_c_empty_string)

/* ---- small field helpers --------------------------------------------------- */

static int set_str(char **dst, const char *v)
{
    char *c = strdup(v);
    if (c == NULL)
        return -1;
    if (*dst != NULL && *dst != EMPTY_STR)
        free(*dst);
    *dst = c;
    return 0;
}

static int append_str(char ***arr, size_t *n, const char *v)
{
    char *c = strdup(v);
    char **na = realloc(*arr, (*n + 1) * sizeof(char *));
    if (c == NULL || na == NULL) {
        free(c);
        if (na != NULL)
            *arr = na;
        return -1;
    }
    na[*n] = c;
    *arr = na;
    (*n)++;
    return 0;
}

static void clear_strs(char ***arr, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*arr)[i]);
    free(*arr);
    *arr = NULL;
    *n = 0;
}

static int valid_env_name(const char *s)
{
    if (s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return 0;
    return 1;
}

static int env_put(Faas__FunctionSpec *s, const char *k, const char *v, const char **err)
{
    if (!valid_env_name(k)) {
        *err = "environment variable names must match [A-Za-z_][A-Za-z0-9_]*";
        return -1;
    }
    for (size_t i = 0; i < s->n_env; i++)
        if (strcmp(s->env[i]->key, k) == 0)
            return set_str(&s->env[i]->value, v) == 0 ? 0 : (*err = "out of memory", -1);
    Faas__KeyValue *kv = malloc(sizeof(*kv));
    Faas__KeyValue **na = realloc(s->env, (s->n_env + 1) * sizeof(*na));
    if (na != NULL)
        s->env = na;
    if (kv == NULL || na == NULL)
        goto oom;
    faas__key_value__init(kv);
    if (set_str(&kv->key, k) != 0 || set_str(&kv->value, v) != 0) {
        faas__key_value__free_unpacked(kv, NULL);
        *err = "out of memory";
        return -1;
    }
    s->env[s->n_env++] = kv;
    return 0;
oom:
    free(kv);
    *err = "out of memory";
    return -1;
}

static Faas__HealthCheck *health_of(Faas__FunctionSpec *s)
{
    if (s->health == NULL && (s->health = malloc(sizeof(*s->health))) != NULL)
        faas__health_check__init(s->health);
    return s->health;
}

static Faas__Resources *resources_of(Faas__FunctionSpec *s)
{
    if (s->resources == NULL && (s->resources = malloc(sizeof(*s->resources))) != NULL)
        faas__resources__init(s->resources);
    return s->resources;
}

static int parse_bool(const char *v, int *b, const char **err)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "on", "1"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "off", "0"};
    for (size_t i = 0; i < 6; i++) {
        if (strcmp(v, yes[i]) == 0)
            return *b = 1, 0;
        if (strcmp(v, no[i]) == 0)
            return *b = 0, 0;
    }
    *err = "expected true or false";
    return -1;
}

static int set_u32(uint32_t *dst, const char *v, uint64_t max, const char **err)
{
    uint64_t n;
    if (faas_parse_uint(v, max, &n, err) != 0)
        return -1;
    *dst = (uint32_t)n;
    return 0;
}

static int set_duration(uint32_t *dst, const char *v, const char **err)
{
    uint64_t ms;
    if (faas_parse_duration_ms(v, &ms, err) != 0)
        return -1;
    if (ms > UINT32_MAX) {
        *err = "duration too long (at most 49 days)";
        return -1;
    }
    *dst = (uint32_t)ms;
    return 0;
}

/* Appends the space-separated words of v (a flag or a manifest scalar). */
static int append_words(char ***arr, size_t *n, const char *v, const char *seps)
{
    char *copy = strdup(v), *save = NULL;
    if (copy == NULL)
        return -1;
    int rc = 0;
    for (char *w = strtok_r(copy, seps, &save); w != NULL && rc == 0; w = strtok_r(NULL, seps, &save))
        rc = append_str(arr, n, w);
    free(copy);
    return rc;
}

/* ---- one key = one scalar ---------------------------------------------------- */

static int set_health(Faas__FunctionSpec *s, const char *sub, const char *v, const char **err)
{
    Faas__HealthCheck *h = health_of(s);
    int b;
    if (h == NULL)
        return *err = "out of memory", -1;
    if (strcmp(sub, "path") == 0) {
        if (v[0] != '/')
            return *err = "health path must start with /", -1;
        h->kind = FAAS__HEALTH_CHECK__KIND__HTTP_GET;
        return set_str(&h->path, v);
    }
    if (strcmp(sub, "tcp") == 0 || strcmp(sub, "grpc") == 0) {
        if (parse_bool(v, &b, err) != 0)
            return -1;
        if (b)
            h->kind = sub[0] == 't' ? FAAS__HEALTH_CHECK__KIND__TCP : FAAS__HEALTH_CHECK__KIND__GRPC_HEALTH;
        else if (h->kind == (sub[0] == 't' ? FAAS__HEALTH_CHECK__KIND__TCP : FAAS__HEALTH_CHECK__KIND__GRPC_HEALTH))
            h->kind = FAAS__HEALTH_CHECK__KIND__HTTP_GET;
        return 0;
    }
    if (strcmp(sub, "interval_ms") == 0 || strcmp(sub, "interval") == 0)
        return set_duration(&h->interval_ms, v, err);
    *err = "unknown health key (known: path, tcp, grpc, interval_ms)";
    return -1;
}

static int set_resources(Faas__FunctionSpec *s, const char *sub, const char *v, const char **err)
{
    Faas__Resources *r = resources_of(s);
    uint64_t n;
    if (r == NULL)
        return *err = "out of memory", -1;
    if (strcmp(sub, "memory") == 0) {
        if (faas_parse_size(v, &n, err) != 0)
            return -1;
        r->memory_bytes = n;
        return 0;
    }
    if (strcmp(sub, "cpu") == 0) {
        if (faas_parse_cpu_millis(v, &n, err) != 0)
            return -1;
        if (n > UINT32_MAX)
            return *err = "CPU quantity too large", -1;
        r->cpu_millis = (uint32_t)n;
        return 0;
    }
    if (strcmp(sub, "pids") == 0)
        return set_u32(&r->pids, v, 1u << 22, err);
    *err = "unknown resources key (known: memory, cpu, pids)";
    return -1;
}

static Faas__AsyncSpec *async_of(Faas__FunctionSpec *s)
{
    if (s->async == NULL && (s->async = malloc(sizeof(*s->async))) != NULL)
        faas__async_spec__init(s->async);
    return s->async;
}

/* A bound given explicitly must be a real one: 0 in the spec means "the platform
 * default", so accepting it here would silently turn "async.concurrency: 0" into 16. */
static int async_duration(const char *v, uint64_t max, uint64_t *ms, const char *range, const char **err)
{
    if (faas_parse_duration_ms(v, ms, err) != 0)
        return -1;
    if (*ms == 0 || *ms > max)
        return *err = range, -1;
    return 0;
}

static int async_uint(const char *v, uint64_t max, uint32_t *dst, const char *range, const char **err)
{
    uint64_t n;
    if (faas_parse_uint(v, UINT64_MAX, &n, err) != 0)
        return -1;
    if (n == 0 || n > max)
        return *err = range, -1;
    *dst = (uint32_t)n;
    return 0;
}

/* async.retry_on: the whole list is replaced; "" or [] means none. */
static int set_retry_on(Faas__AsyncSpec *a, const char *v, const char **err)
{
    char *copy = strdup(v), *save = NULL;
    if (copy == NULL)
        return *err = "out of memory", -1;
    int rc = 0;
    a->retry_5xx = 0;
    for (char *w = strtok_r(copy, " ,\t[]", &save); w != NULL && rc == 0; w = strtok_r(NULL, " ,\t[]", &save)) {
        if (strcmp(w, FAAS_SPEC_ASYNC_RETRY_5XX) == 0)
            a->retry_5xx = 1;
        else
            rc = (*err = "unknown retry_on item (known: " FAAS_SPEC_ASYNC_RETRY_5XX ")", -1);
    }
    free(copy);
    return rc;
}

static int set_async(Faas__FunctionSpec *s, const char *sub, const char *v, const char **err)
{
    Faas__AsyncSpec *a = async_of(s);
    uint64_t n;
    if (a == NULL)
        return *err = "out of memory", -1;
    if (strcmp(sub, "concurrency") == 0)
        return async_uint(v, FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY, &a->concurrency,
                          "must be 1-" FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY) " (tasks running at once)",
                          err);
    if (strcmp(sub, "max_attempts") == 0)
        return async_uint(v, FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS, &a->max_attempts,
                          "must be 1-" FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS), err);
    if (strcmp(sub, "timeout") == 0) {
        if (async_duration(v, FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_MS, &n,
                           "must be more than 0 and at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_HOURS) "h",
                           err) != 0)
            return -1;
        a->timeout_ms = (uint32_t)n;
        return 0;
    }
    if (strcmp(sub, "retention") == 0)
        return async_duration(
            v, FAAS_SPEC_LIMIT_ASYNC_RETENTION_MS, &a->retention_ms,
            "must be more than 0 and at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_RETENTION_DAYS) "d", err);
    if (strcmp(sub, "max_result") == 0) {
        if (faas_parse_size(v, &n, err) != 0)
            return -1;
        if (n == 0 || n > FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_BYTES) {
            *err = "must be more than 0 and at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_MIB) "Mi";
            return -1;
        }
        a->max_result_bytes = n;
        return 0;
    }
    if (strcmp(sub, "retry_on") == 0)
        return set_retry_on(a, v, err);
    *err = "unknown async key (known: concurrency, timeout, retention, max_attempts, max_result, retry_on)";
    return -1;
}

/* logs.max_bytes and logs.keep (docs/security.md "Bounded logs"): 0 is refused like
 * the async bounds', since in the spec it means the default. */
static int set_logs(Faas__FunctionSpec *s, const char *sub, const char *v, const char **err)
{
    uint64_t n;
    if (s->logs == NULL && (s->logs = malloc(sizeof(*s->logs))) != NULL)
        faas__log_spec__init(s->logs);
    if (s->logs == NULL)
        return *err = "out of memory", -1;
    if (strcmp(sub, "keep") == 0)
        return async_uint(v, FAAS_SPEC_LIMIT_LOG_KEEP, &s->logs->keep,
                          "must be 1-" FAAS_SPEC_STR(FAAS_SPEC_LIMIT_LOG_KEEP) " (rotated files kept)", err);
    if (strcmp(sub, "max_bytes") != 0)
        return *err = "unknown logs key (known: max_bytes, keep)", -1;
    if (faas_parse_size(v, &n, err) != 0)
        return -1;
    if (n < FAAS_SPEC_LIMIT_LOG_MIN_BYTES || n > FAAS_SPEC_LIMIT_LOG_MAX_BYTES)
        return *err = "must be " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_LOG_MIN_KIB) "Ki to " FAAS_SPEC_STR(
                   FAAS_SPEC_LIMIT_LOG_MAX_MIB) "Mi",
               -1;
    s->logs->max_bytes = n;
    return 0;
}

/* endpoints.threshold_rps (docs/endpoints.md): 0 is refused, it means the default. */
static int set_endpoints(Faas__FunctionSpec *s, const char *sub, const char *v, const char **err)
{
    if (strcmp(sub, "threshold_rps") != 0)
        return *err = "unknown endpoints key (known: threshold_rps)", -1;
    if (s->endpoints == NULL && (s->endpoints = malloc(sizeof(*s->endpoints))) != NULL)
        faas__endpoints_spec__init(s->endpoints);
    if (s->endpoints == NULL)
        return *err = "out of memory", -1;
    return async_uint(v, FAAS_SPEC_LIMIT_ENDPOINTS_THRESHOLD_RPS, &s->endpoints->threshold_rps,
                      "must be 1-" FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ENDPOINTS_THRESHOLD_RPS) " (calls per second)", err);
}

/* image: PATH[:TAG] as written; faasctl reads the image and fills the rest of ImageSpec. */
static int set_image(Faas__FunctionSpec *s, const char *v, const char **err)
{
    if (v[0] == '\0')
        return *err = "image must be a path (an OCI layout, an OCI or docker save archive)", -1;
    if (!faas_printable(v))
        return *err = "image must be printable", -1;
    if (s->image == NULL && (s->image = malloc(sizeof(*s->image))) != NULL)
        faas__image_spec__init(s->image);
    if (s->image == NULL || set_str(&s->image->ref, v) != 0)
        return *err = "out of memory", -1;
    return 0;
}

static int set_env_kv(Faas__FunctionSpec *s, const char *v, const char **err)
{
    const char *eq = strchr(v, '=');
    if (eq == NULL)
        return *err = "env must be KEY=VALUE", -1;
    char key[256];
    size_t kl = (size_t)(eq - v);
    if (kl >= sizeof(key))
        return *err = "environment variable name too long", -1;
    memcpy(key, v, kl);
    key[kl] = '\0';
    return env_put(s, key, eq + 1, err);
}

static int set_named(faas_manifest_t *m, const char *key, const char *v, const char **err)
{
    Faas__FunctionSpec *s = m->spec;
    uint64_t n;
    int p;
    if (strcmp(key, "name") == 0) {
        if (faas_valid_function_name(v, strlen(v), err) != 0)
            return -1;
        return set_str(&s->name, v);
    }
    if (strcmp(key, "protocol") == 0) {
        if (faas_protocol_parse(v, &p, err) != 0)
            return -1;
        s->protocol = (Faas__Protocol)p;
        return 0;
    }
    if (strcmp(key, "command") == 0) {
        clear_strs(&s->command, &s->n_command);
        if (append_words(&s->command, &s->n_command, v, " \t") != 0)
            return *err = "out of memory", -1;
        return s->n_command == 0 ? (*err = "command must not be empty", -1) : 0;
    }
    if (strcmp(key, "env") == 0)
        return set_env_kv(s, v, err);
    if (strcmp(key, "port") == 0)
        return set_u32(&s->port, v, 65535, err);
    if (strcmp(key, "port_env") == 0) {
        if (!valid_env_name(v))
            return *err = "port_env must be an environment variable name", -1;
        return set_str(&s->port_env, v);
    }
    if (strcmp(key, "concurrency") == 0)
        return set_u32(&s->concurrency, v, FAAS_SPEC_LIMIT_CONCURRENCY, err);
    if (strcmp(key, "min_instances") == 0)
        return set_u32(&s->min_instances, v, FAAS_SPEC_LIMIT_INSTANCES, err);
    if (strcmp(key, "max_instances") == 0)
        return set_u32(&s->max_instances, v, FAAS_SPEC_LIMIT_INSTANCES, err);
    if (strcmp(key, "reserved") == 0)
        return set_u32(&s->reserved, v, FAAS_SPEC_LIMIT_RESERVED, err);
    if (strcmp(key, "timeout") == 0)
        return set_duration(&s->timeout_ms, v, err);
    if (strcmp(key, "cold_start_timeout") == 0)
        return set_duration(&s->cold_start_timeout_ms, v, err);
    if (strcmp(key, "idle_timeout") == 0)
        return set_duration(&s->idle_timeout_ms, v, err);
    if (strcmp(key, "max_duration") == 0)
        return set_duration(&s->max_duration_ms, v, err);
    if (strcmp(key, "max_body") == 0) {
        if (faas_parse_size(v, &n, err) != 0)
            return -1;
        s->max_body_bytes = n;
        return 0;
    }
    return 1; /* not a plain key */
}

int faas_manifest_set(faas_manifest_t *m, const char *key, const char *v, const char **err)
{
    Faas__FunctionSpec *s = m->spec;
    int rc = set_named(m, key, v, err);
    if (rc <= 0)
        return rc;
    if (strncmp(key, "health.", 7) == 0)
        return set_health(s, key + 7, v, err);
    if (strncmp(key, "resources.", 10) == 0)
        return set_resources(s, key + 10, v, err);
    if (strncmp(key, "async.", 6) == 0)
        return set_async(s, key + 6, v, err);
    if (strncmp(key, "logs.", 5) == 0)
        return set_logs(s, key + 5, v, err);
    if (strncmp(key, "endpoints.", 10) == 0)
        return set_endpoints(s, key + 10, v, err);
    if (strcmp(key, "image") == 0)
        return set_image(s, v, err);
    if (strcmp(key, "code") == 0) {
        if (v[0] == '\0')
            return *err = "code must be a directory", -1;
        return set_str(&m->code_dir, v) == 0 ? 0 : (*err = "out of memory", -1);
    }
    if (strcmp(key, "grpc_services") == 0 || strcmp(key, "thrift_services") == 0) {
        int g = key[0] == 'g';
        if (append_words(g ? &s->grpc_services : &s->thrift_services, g ? &s->n_grpc_services : &s->n_thrift_services,
                         v, " ,\t") != 0)
            return *err = "out of memory", -1;
        return 0;
    }
    if (strcmp(key, "runtime") == 0) {
        if (v[0] == '\0' || !faas_spec_runtime_valid(v))
            return *err = "runtime must be " FAAS_SPEC_RUNTIME_CHOICES, -1;
        return set_str(&s->runtime, v);
    }
    if (strcmp(key, "network") == 0) {
        if (strcmp(v, "egress") != 0 && strcmp(v, "none") != 0)
            return *err = "network must be egress or none", -1;
        return set_str(&s->network, v);
    }
    if (strcmp(key, "thrift_transport") == 0) {
        if (strcmp(v, "framed") != 0 && strcmp(v, "theader") != 0 && strcmp(v, "ttheader") != 0)
            return *err = "thrift_transport must be framed, theader or ttheader", -1;
        return set_str(&s->thrift_transport, v);
    }
    *err = "unknown key";
    return -1;
}

/* ---- the YAML walk ---------------------------------------------------------- */

typedef struct {
    yaml_document_t *doc;
    faas_manifest_t *m;
    char *err;
    size_t errcap;
} walk_t;

static int fail(walk_t *w, yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(walk_t *w, yaml_node_t *n, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(w->err, w->errcap, "line %lu: %s", n != NULL ? (unsigned long)n->start_mark.line + 1 : 1ul, msg);
    return -1;
}

/* The node's scalar text, NUL-terminated by libyaml; NULL if not a scalar. Text with
 * an embedded NUL is refused so C strings never lie about their content. */
static const char *scalar(yaml_node_t *n)
{
    if (n == NULL || n->type != YAML_SCALAR_NODE)
        return NULL;
    if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
        return NULL;
    return (const char *)n->data.scalar.value;
}

static int set_at(walk_t *w, yaml_node_t *n, const char *key, const char *v)
{
    const char *e = NULL;
    if (faas_manifest_set(w->m, key, v, &e) != 0)
        return fail(w, n, "%s: %s (got \"%.60s\")", key, e, v);
    return 0;
}

static int walk_list(walk_t *w, yaml_node_t *n, const char *key)
{
    Faas__FunctionSpec *s = w->m->spec;
    char ***arr = key[0] == 'c' ? &s->command : key[0] == 'g' ? &s->grpc_services : &s->thrift_services;
    size_t *cnt = key[0] == 'c' ? &s->n_command : key[0] == 'g' ? &s->n_grpc_services : &s->n_thrift_services;
    clear_strs(arr, cnt);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *in = yaml_document_get_node(w->doc, *it);
        const char *v = scalar(in);
        if (v == NULL)
            return fail(w, in != NULL ? in : n, "%s: every item must be a string", key);
        if (append_str(arr, cnt, v) != 0)
            return fail(w, in, "out of memory");
    }
    if (key[0] == 'c' && *cnt == 0)
        return fail(w, n, "command must not be empty");
    return 0;
}

/* async.retry_on: [5xx]: each item goes through the scalar form's rules on its own
 * (so an odd one is named), then the list as a whole replaces the old one. */
static int walk_retry_on(walk_t *w, yaml_node_t *n)
{
    const char *all = "";
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *in = yaml_document_get_node(w->doc, *it);
        const char *v = scalar(in);
        if (v == NULL)
            return fail(w, in != NULL ? in : n, "async.retry_on: every item must be a string");
        if (strcmp(v, FAAS_SPEC_ASYNC_RETRY_5XX) != 0)
            return fail(w, in, "async.retry_on: unknown item \"%.60s\" (known: " FAAS_SPEC_ASYNC_RETRY_5XX ")", v);
        all = FAAS_SPEC_ASYNC_RETRY_5XX;
    }
    return set_at(w, n, "async.retry_on", all);
}

/* health, resources, async, logs, endpoints and env: a map of scalars (and async.retry_on's list). */
static int walk_map(walk_t *w, yaml_node_t *n, const char *key)
{
    char full[128];
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(w->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(w->doc, p->value);
        const char *k = scalar(kn), *v = scalar(vn);
        if (k == NULL)
            return fail(w, kn != NULL ? kn : n, "%s: keys must be strings", key);
        if (strcmp(key, "async") == 0 && strcmp(k, "retry_on") == 0 && vn != NULL && vn->type == YAML_SEQUENCE_NODE) {
            if (walk_retry_on(w, vn) != 0)
                return -1;
            continue;
        }
        if (v == NULL)
            return fail(w, vn != NULL ? vn : kn, "%s.%.60s: value must be a string or number", key, k);
        if (strcmp(key, "env") == 0) {
            const char *e = NULL;
            if (env_put(w->m->spec, k, v, &e) != 0)
                return fail(w, kn, "env: %s (got \"%.60s\")", e, k);
            continue;
        }
        snprintf(full, sizeof(full), "%s.%.60s", key, k);
        if (set_at(w, vn, full, v) != 0)
            return -1;
    }
    return 0;
}

static const char *const known_keys[] = {
    "name",          "protocol",      "command",         "env",              "port",         "port_env",
    "health",        "resources",     "concurrency",     "min_instances",    "max_instances", "timeout",
    "cold_start_timeout", "idle_timeout", "max_body",    "code",             "grpc_services", "thrift_services",
    "thrift_transport", "max_duration", "async",      "reserved",         "network",         "logs",
    "image",         "endpoints",     "runtime",
};

static int is_known(const char *k)
{
    for (size_t i = 0; i < sizeof(known_keys) / sizeof(known_keys[0]); i++)
        if (strcmp(k, known_keys[i]) == 0)
            return 1;
    return 0;
}

static int walk_value(walk_t *w, yaml_node_t *vn, yaml_node_t *kn, const char *k)
{
    int is_list = strcmp(k, "command") == 0 || strcmp(k, "grpc_services") == 0 || strcmp(k, "thrift_services") == 0;
    int is_map = strcmp(k, "env") == 0 || strcmp(k, "health") == 0 || strcmp(k, "resources") == 0 ||
                 strcmp(k, "async") == 0 || strcmp(k, "logs") == 0 || strcmp(k, "endpoints") == 0;
    if (vn == NULL)
        return fail(w, kn, "%s: missing value", k);
    if (vn->type == YAML_SEQUENCE_NODE) {
        if (!is_list)
            return fail(w, vn, "%s must not be a list", k);
        return walk_list(w, vn, k);
    }
    if (vn->type == YAML_MAPPING_NODE) {
        if (!is_map)
            return fail(w, vn, "%s must not be a map", k);
        return walk_map(w, vn, k);
    }
    const char *v = scalar(vn);
    if (v == NULL)
        return fail(w, vn, "%s: value contains a NUL byte", k);
    if (is_map)
        return fail(w, vn, "%s must be a map (e.g. %s)", k,
                    strcmp(k, "endpoints") == 0 ? "{threshold_rps: 500}"
                    : k[0] == 'e' ? "{KEY: value}"
                    : k[0] == 'h' ? "{path: /healthz}"
                    : k[0] == 'a' ? "{concurrency: 4, timeout: 2h}"
                                  : "{memory: 128Mi}");
    if (is_list) {
        Faas__FunctionSpec *s = w->m->spec;
        if (k[0] != 'c') /* a single service name; clear what an earlier value set */
            clear_strs(k[0] == 'g' ? &s->grpc_services : &s->thrift_services,
                       k[0] == 'g' ? &s->n_grpc_services : &s->n_thrift_services);
    }
    return set_at(w, vn, k, v);
}

static int walk_root(walk_t *w, yaml_node_t *root)
{
    if (root == NULL)
        return snprintf(w->err, w->errcap, "line 1: the manifest is empty"), -1;
    if (root->type != YAML_MAPPING_NODE)
        return fail(w, root, "the manifest must be a map of keys (name: ..., command: ...)");
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(w->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(w->doc, p->value);
        const char *k = scalar(kn);
        if (k == NULL)
            return fail(w, kn != NULL ? kn : root, "keys must be strings");
        if (!is_known(k))
            return fail(w, kn, "unknown key \"%.60s\"", k);
        for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < p; q++) {
            const char *k2 = scalar(yaml_document_get_node(w->doc, q->key));
            if (k2 != NULL && strcmp(k, k2) == 0)
                return fail(w, kn, "duplicate key \"%s\"", k);
        }
        if (walk_value(w, vn, kn, k) != 0)
            return -1;
    }
    return 0;
}

int faas_manifest_init(faas_manifest_t *m)
{
    m->code_dir = NULL;
    m->spec = malloc(sizeof(*m->spec));
    if (m->spec == NULL)
        return -1;
    faas__function_spec__init(m->spec);
    return 0;
}

void faas_manifest_free(faas_manifest_t *m)
{
    if (m->spec != NULL)
        faas__function_spec__free_unpacked(m->spec, NULL);
    free(m->code_dir);
    m->spec = NULL;
    m->code_dir = NULL;
}

int faas_manifest_parse(const char *buf, size_t len, faas_manifest_t *out, char *err, size_t errcap)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    walk_t w = {&doc, out, err, errcap};
    int rc = -1;

    if (faas_manifest_init(out) != 0) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errcap, "out of memory");
        goto out_free;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errcap, "line %lu: YAML syntax error: %s%s%s", (unsigned long)parser.problem_mark.line + 1,
                 parser.problem != NULL ? parser.problem : "unknown", parser.context != NULL ? " " : "",
                 parser.context != NULL ? parser.context : "");
        goto out_parser;
    }
    rc = walk_root(&w, yaml_document_get_root_node(&doc));
    yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&parser);
out_free:
    if (rc != 0)
        faas_manifest_free(out);
    return rc;
}

/* ---- validation, defaults, printing ---------------------------------------------- */

int faas_manifest_validate(const Faas__FunctionSpec *s, const char **err)
{
    if (s->name == NULL || faas_valid_function_name(s->name, strlen(s->name), err) != 0) {
        if (s->name == NULL || s->name[0] == '\0')
            *err = "the function needs a name";
        return -1;
    }
    int image = s->image != NULL && s->image->ref != NULL && s->image->ref[0] != '\0';
    if (s->n_command == 0 && !image) { /* an image's Entrypoint and Cmd are its command */
        *err = "the function needs a command (command: [\"./server\"] or --cmd) or an image (image: PATH or --image)";
        return -1;
    }
    if (s->max_instances != 0 && s->min_instances > s->max_instances) {
        *err = "min_instances is larger than max_instances";
        return -1;
    }
    if (s->max_instances != 0 && s->reserved > s->max_instances) {
        *err = "reserved is larger than max_instances";
        return -1;
    }
    if (s->n_grpc_services > 0 && s->protocol != FAAS__PROTOCOL__GRPC) {
        *err = "grpc_services needs protocol: grpc";
        return -1;
    }
    return 0;
}

int faas_manifest_defaults(Faas__FunctionSpec *s)
{
    return faas_spec_fill_defaults(s);
}

static void print_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void print_list(FILE *f, const char *key, char **items, size_t n)
{
    fprintf(f, "%s: [", key);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            fputs(", ", f);
        print_quoted(f, items[i]);
    }
    fputs("]\n", f);
}

/* The largest unit that divides ms exactly, so the text parses back to the same value. */
static void fmt_duration(char *out, size_t cap, uint64_t ms)
{
    static const struct {
        uint64_t mult;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (ms != 0 && ms % units[i].mult == 0) {
            snprintf(out, cap, "%llu%s", (unsigned long long)(ms / units[i].mult), units[i].unit);
            return;
        }
    snprintf(out, cap, ms == 0 ? "0s" : "%llums", (unsigned long long)ms);
}

static void print_duration(FILE *f, const char *key, uint64_t ms)
{
    char d[32];
    fmt_duration(d, sizeof(d), ms);
    fprintf(f, "%s: %s\n", key, d);
}

static void print_size(FILE *f, const char *key, uint64_t b)
{
    if (b != 0 && b % (1u << 30) == 0)
        fprintf(f, "%s: %lluGi\n", key, (unsigned long long)(b >> 30));
    else if (b != 0 && b % (1u << 20) == 0)
        fprintf(f, "%s: %lluMi\n", key, (unsigned long long)(b >> 20));
    else if (b != 0 && b % (1u << 10) == 0)
        fprintf(f, "%s: %lluKi\n", key, (unsigned long long)(b >> 10));
    else
        fprintf(f, "%s: %llu\n", key, (unsigned long long)b);
}

static void print_health(FILE *f, const Faas__HealthCheck *h)
{
    if (h == NULL)
        return;
    fputs("health: {", f);
    if (h->kind == FAAS__HEALTH_CHECK__KIND__TCP)
        fputs("tcp: true", f);
    else if (h->kind == FAAS__HEALTH_CHECK__KIND__GRPC_HEALTH)
        fputs("grpc: true", f);
    else {
        fputs("path: ", f);
        print_quoted(f, h->path != NULL && h->path[0] ? h->path : FAAS_SPEC_DEFAULT_HEALTH_PATH);
    }
    if (h->interval_ms)
        fprintf(f, ", interval_ms: %u", h->interval_ms);
    fputs("}\n", f);
}

/* A bound the spec leaves at 0 is printed as a comment with the default, so the text
 * parses back to the same spec and still says what applies. */
static void print_async_field(FILE *f, const char *key, uint64_t v, uint64_t dflt,
                              void (*pr)(FILE *, const char *, uint64_t))
{
    fputs(v ? "  " : "  # ", f);
    pr(f, key, v ? v : dflt);
}

static void print_uint(FILE *f, const char *key, uint64_t v)
{
    fprintf(f, "%s: %llu\n", key, (unsigned long long)v);
}

static void print_async(FILE *f, const Faas__AsyncSpec *a)
{
    if (a == NULL)
        return;
    if (!a->concurrency && !a->timeout_ms && !a->retention_ms && !a->max_attempts && !a->max_result_bytes &&
        !a->retry_5xx) {
        fputs("async: {}  # every bound at its default\n", f);
        return;
    }
    fputs("async:  # unset bounds (commented) take the platform default shown\n", f);
    print_async_field(f, "concurrency", a->concurrency, FAAS_SPEC_DEFAULT_ASYNC_CONCURRENCY, print_uint);
    print_async_field(f, "timeout", a->timeout_ms, FAAS_SPEC_DEFAULT_ASYNC_TIMEOUT_MS, print_duration);
    print_async_field(f, "retention", a->retention_ms, FAAS_SPEC_DEFAULT_ASYNC_RETENTION_MS, print_duration);
    print_async_field(f, "max_attempts", a->max_attempts, FAAS_SPEC_DEFAULT_ASYNC_MAX_ATTEMPTS, print_uint);
    print_async_field(f, "max_result", a->max_result_bytes, FAAS_SPEC_DEFAULT_ASYNC_MAX_RESULT_BYTES, print_size);
    fputs(a->retry_5xx ? "  retry_on: [" FAAS_SPEC_ASYNC_RETRY_5XX "]\n" : "  # retry_on: []\n", f);
}

static void print_logs(FILE *f, const Faas__LogSpec *l)
{
    if (l == NULL)
        return;
    if (!l->max_bytes && !l->keep) {
        fputs("logs: {}  # every bound at its default\n", f);
        return;
    }
    fputs("logs:  # unset bounds (commented) take the platform default shown\n", f);
    print_async_field(f, "max_bytes", l->max_bytes, FAAS_SPEC_DEFAULT_LOG_MAX_BYTES, print_size);
    print_async_field(f, "keep", l->keep, FAAS_SPEC_DEFAULT_LOG_KEEP, print_uint);
}

static void print_endpoints(FILE *f, const Faas__EndpointsSpec *e)
{
    if (e == NULL)
        return;
    fputs("endpoints:\n", f);
    print_async_field(f, "threshold_rps", e->threshold_rps, FAAS_SPEC_DEFAULT_ENDPOINTS_THRESHOLD_RPS, print_uint);
}

/* The image as the key that deploys it again, then what was deployed as comments. */
static void print_image(FILE *f, const Faas__ImageSpec *im)
{
    if (im == NULL || im->ref == NULL || im->ref[0] == '\0')
        return;
    fputs("image: ", f);
    print_quoted(f, im->ref);
    fputc('\n', f);
    if (im->manifest_digest != NULL && im->manifest_digest[0])
        fprintf(f, "# image_manifest: %s (%llu blobs, %llu bytes)\n", im->manifest_digest,
                (unsigned long long)im->n_blobs + 1, (unsigned long long)im->size);
}

void faas_manifest_print(FILE *f, const Faas__FunctionSpec *s)
{
    fprintf(f, "name: %s\nprotocol: %s\n", s->name, faas_protocol_name(s->protocol));
    if (s->n_command > 0 || s->image == NULL) /* an image function may run its own Entrypoint */
        print_list(f, "command", s->command, s->n_command);
    print_image(f, s->image);
    if (s->n_env > 0) {
        fputs("env:\n", f);
        for (size_t i = 0; i < s->n_env; i++) {
            fprintf(f, "  %s: ", s->env[i]->key);
            print_quoted(f, s->env[i]->value);
            fputc('\n', f);
        }
    }
    fprintf(f, "port: %u\n", s->port);
    if (s->port_env != NULL && s->port_env[0])
        fprintf(f, "port_env: %s\n", s->port_env);
    print_health(f, s->health);
    if (s->resources != NULL) {
        const Faas__Resources *r = s->resources;
        fputs("resources:\n", f);
        print_size(f, "  memory", r->memory_bytes);
        fprintf(f, "  cpu: %um\n  pids: %u\n", r->cpu_millis, r->pids);
    }
    fprintf(f, "concurrency: %u\nmin_instances: %u\nmax_instances: %u\n", s->concurrency, s->min_instances,
            s->max_instances);
    if (s->reserved)
        fprintf(f, "reserved: %u\n", s->reserved);
    print_duration(f, "timeout", s->timeout_ms);
    print_duration(f, "cold_start_timeout", s->cold_start_timeout_ms);
    print_duration(f, "idle_timeout", s->idle_timeout_ms);
    print_duration(f, "max_duration", s->max_duration_ms);
    print_size(f, "max_body", s->max_body_bytes);
    if (s->n_grpc_services > 0)
        print_list(f, "grpc_services", s->grpc_services, s->n_grpc_services);
    if (s->n_thrift_services > 0)
        print_list(f, "thrift_services", s->thrift_services, s->n_thrift_services);
    if (s->thrift_transport != NULL && s->thrift_transport[0])
        fprintf(f, "thrift_transport: %s\n", s->thrift_transport);
    if (s->network != NULL && s->network[0])
        fprintf(f, "network: %s\n", s->network);
    if (s->runtime != NULL && s->runtime[0])
        fprintf(f, "runtime: %s\n", s->runtime);
    print_async(f, s->async);
    print_logs(f, s->logs);
    print_endpoints(f, s->endpoints);
    if (s->version)
        fprintf(f, "# version: %llu\n", (unsigned long long)s->version);
    if (s->code_sha256 != NULL && s->code_sha256[0])
        fprintf(f, "# code_sha256: %s\n", s->code_sha256);
    if (s->created_unix_ms)
        fprintf(f, "# created_unix_ms: %lld\n", (long long)s->created_unix_ms);
}
