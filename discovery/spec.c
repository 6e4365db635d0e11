/* discovery/spec.c - validation and defaults of FunctionSpec, kept pure (no I/O)
 * so the unit tests and the fuzzer can drive it with arbitrary bytes. */
#include "discovery/discovery.h"
#include "discovery/internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/spec.h"
#include "common/util.h"

int disc_valid_sha256(const char *s)
{
    if (s == NULL)
        return 0;
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        char c = s[i];
        if (i >= 64 || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return i == 64;
}

int disc_set_str(char **field, const char *v)
{
    char *copy = strdup(v);
    if (copy == NULL)
        return -1;
    /* unpacked proto3 strings that were never set point at the shared empty string */
    if (*field != NULL && *field != protobuf_c_empty_string)
        free(*field);
    *field = copy;
    return 0;
}

static int empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

/* Environment variable names the way POSIX shells accept them. */
static int valid_env_name(const char *s)
{
    if (empty(s) || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* gRPC service names as they appear in :path ("pkg.Service"), Thrift service names
 * as Kitex/THeader carry them; both must be safe to use as map keys and in logs. */
static int valid_service_name(const char *s, int allow_dash)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 255)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                 c == '.' || (allow_dash && c == '-');
        if (!ok)
            return 0;
    }
    return 1;
}

static int check_command_env(const Faas__FunctionSpec *s, const char **err)
{
    /* an image brings its own Entrypoint/Cmd; the worker checks them against the image */
    if (s->image == NULL && (s->n_command == 0 || empty(s->command[0]))) {
        *err = "command must be a non-empty argv (command[0] is the program to run)";
        return -1;
    }
    for (size_t i = 0; i < s->n_env; i++) {
        const Faas__KeyValue *kv = s->env[i];
        if (kv == NULL || !valid_env_name(kv->key)) {
            *err = "env keys must be names like [A-Za-z_][A-Za-z0-9_]*";
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->env[j]->key, kv->key) == 0) {
                *err = "env has the same key twice";
                return -1;
            }
    }
    return 0;
}

/* "sha256:<64 hex>", as OCI writes digests; 1 with the hex at *hex. */
int disc_oci_digest_hex(const char *d, const char **hex)
{
    if (d == NULL || strncmp(d, "sha256:", 7) != 0 || !disc_valid_sha256(d + 7))
        return 0;
    *hex = d + 7;
    return 1;
}

static int bounded_strings(char *const *v, size_t n, size_t max_n, size_t max_len)
{
    if (n > max_n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] == NULL || strlen(v[i]) > max_len)
            return 0;
    return 1;
}

/* The shape of an image reference; whether its blobs are stored is check_against_store's,
 * whether its entrypoint and user exist is the worker's (it has the rootfs). */
int disc_check_image(const Faas__FunctionSpec *s, const char **err)
{
    const Faas__ImageSpec *im = s->image;
    const char *hex;
    if (!empty(s->code_sha256)) {
        *err = "a function runs from code_sha256 or from an image, not both";
        return -1;
    }
    if (!disc_oci_digest_hex(im->manifest_digest, &hex) || im->manifest_size == 0) {
        *err = "image.manifest_digest must be sha256:<64 hex> with its manifest_size";
        return -1;
    }
    if (im->n_blobs == 0 || im->n_blobs > FAAS_SPEC_LIMIT_IMAGE_BLOBS) {
        *err = "image.blobs must list the config and at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_IMAGE_BLOBS) " blobs";
        return -1;
    }
    for (size_t i = 0; i < im->n_blobs; i++)
        if (!disc_oci_digest_hex(im->blobs[i], &hex)) {
            *err = "image.blobs must be sha256:<64 hex> digests";
            return -1;
        }
    if (!bounded_strings(im->entrypoint, im->n_entrypoint, 256, 4096) ||
        !bounded_strings(im->cmd, im->n_cmd, 256, 4096) || !bounded_strings(im->env, im->n_env, 1024, 32768) ||
        (im->working_dir && strlen(im->working_dir) > 4096) || (im->user && strlen(im->user) > 256) ||
        (im->ref && strlen(im->ref) > 4096)) {
        *err = "image config too large: at most 256 entrypoint/cmd words, 1024 env entries, 4 KiB strings";
        return -1;
    }
    for (size_t i = 0; i < im->n_env; i++)
        if (im->env[i][0] == '=' || strchr(im->env[i], '=') == NULL) {
            *err = "image Env entries must be KEY=VALUE";
            return -1;
        }
    if (!empty(im->working_dir) && im->working_dir[0] != '/') {
        *err = "image WorkingDir must be an absolute path";
        return -1;
    }
    return 0;
}

static int check_limits(const Faas__FunctionSpec *s, const char **err)
{
    if (s->port > 65535) {
        *err = "port must be 0 (platform picks) or 1-65535";
        return -1;
    }
    if (s->min_instances > s->max_instances) {
        *err = "min_instances must not exceed max_instances";
        return -1;
    }
    if (s->max_instances > FAAS_SPEC_LIMIT_INSTANCES) {
        *err = "max_instances must be at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_INSTANCES);
        return -1;
    }
    if (s->reserved > FAAS_SPEC_LIMIT_RESERVED) {
        *err = "reserved must be at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_RESERVED);
        return -1;
    }
    if (s->reserved > s->max_instances) {
        *err = "reserved must not exceed max_instances";
        return -1;
    }
    if (strcmp(s->network, "egress") != 0 && strcmp(s->network, "none") != 0) {
        *err = "network must be egress or none";
        return -1;
    }
    if (!faas_spec_runtime_valid(s->runtime)) {
        *err = "runtime must be " FAAS_SPEC_RUNTIME_CHOICES;
        return -1;
    }
    if (s->image != NULL && s->runtime != NULL && strcmp(s->runtime, FAAS_SPEC_RUNTIME_PYTHON3) == 0) {
        *err = "runtime python3 runs code: an image starts its own interpreter (leave runtime out)";
        return -1;
    }
    if (s->image != NULL)
        return disc_check_image(s, err);
    if (s->code_sha256 == NULL || s->code_sha256[0] == '\0') {
        *err = "code_sha256 is required: upload the code with UploadCode first";
        return -1;
    }
    if (!disc_valid_sha256(s->code_sha256)) {
        *err = "code_sha256 must be 64 lowercase hex characters";
        return -1;
    }
    return 0;
}

/* The async bounds (0 = the platform default, docs/async.md); the limits are
 * common/spec.h's, the same faasctl checks the manifest keys against. */
static int check_async(const Faas__AsyncSpec *a, const char **err)
{
    if (a == NULL)
        return 0;
    if (a->concurrency > FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY)
        *err = "async.concurrency must be at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY);
    else if (a->timeout_ms > FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_MS)
        *err = "async.timeout must be at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_HOURS) " hours";
    else if (a->retention_ms > FAAS_SPEC_LIMIT_ASYNC_RETENTION_MS)
        *err = "async.retention must be at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_RETENTION_DAYS) " days";
    else if (a->max_attempts > FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS)
        *err = "async.max_attempts must be at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS);
    else if (a->max_result_bytes > FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_BYTES)
        *err = "async.max_result must be at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_MIB) " MiB";
    else
        return 0;
    return -1;
}

/* The log bound (0 = the platform default, docs/security.md "Bounded logs"); the limits
 * are common/spec.h's, the same faasctl checks the manifest keys against. */
static int check_logs(const Faas__LogSpec *l, const char **err)
{
    if (l == NULL)
        return 0;
    if (l->max_bytes != 0 &&
        (l->max_bytes < FAAS_SPEC_LIMIT_LOG_MIN_BYTES || l->max_bytes > FAAS_SPEC_LIMIT_LOG_MAX_BYTES))
        *err = "logs.max_bytes must be " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_LOG_MIN_KIB) " KiB to " FAAS_SPEC_STR(
            FAAS_SPEC_LIMIT_LOG_MAX_MIB) " MiB";
    else if (l->keep > FAAS_SPEC_LIMIT_LOG_KEEP)
        *err = "logs.keep must be at most " FAAS_SPEC_STR(FAAS_SPEC_LIMIT_LOG_KEEP);
    else
        return 0;
    return -1;
}

/* A health check the protocol can answer. HTTP_GET is the zero value, so a
 * non-HTTP spec that leaves kind and path unset gets its protocol's default. */
static int fix_health(Faas__FunctionSpec *s, const char **err)
{
    if (s->health == NULL) {
        s->health = malloc(sizeof(*s->health));
        if (s->health == NULL)
            goto nomem;
        faas__health_check__init(s->health);
    }
    Faas__HealthCheck *h = s->health;
    if ((unsigned)h->kind > FAAS__HEALTH_CHECK__KIND__GRPC_HEALTH) {
        *err = "health.kind must be HTTP_GET, TCP or GRPC_HEALTH";
        return -1;
    }
    if (h->kind == FAAS__HEALTH_CHECK__KIND__HTTP_GET && s->protocol != FAAS__PROTOCOL__HTTP) {
        if (!empty(h->path)) {
            *err = "an HTTP_GET health check needs protocol HTTP; use TCP or GRPC_HEALTH";
            return -1;
        }
        h->kind = s->protocol == FAAS__PROTOCOL__GRPC ? FAAS__HEALTH_CHECK__KIND__GRPC_HEALTH
                                                      : FAAS__HEALTH_CHECK__KIND__TCP;
    }
    if (h->kind == FAAS__HEALTH_CHECK__KIND__HTTP_GET) {
        if (empty(h->path) && disc_set_str(&h->path, FAAS_SPEC_DEFAULT_HEALTH_PATH) != 0)
            goto nomem;
        if (h->path[0] != '/' || strpbrk(h->path, " \r\n\t") != NULL) {
            *err = "health.path must start with '/' and contain no whitespace";
            return -1;
        }
    }
    if (h->interval_ms == 0)
        h->interval_ms = FAAS_SPEC_DEFAULT_PROBE_INTERVAL_MS;
    return 0;
nomem:
    *err = "out of memory";
    return -1;
}

static int check_services(char **names, size_t n, int allow_dash, const char **err, const char *msg)
{
    for (size_t i = 0; i < n; i++) {
        if (!valid_service_name(names[i], allow_dash)) {
            *err = msg;
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) {
                *err = "a service is listed twice";
                return -1;
            }
    }
    return 0;
}

static int check_protocol(Faas__FunctionSpec *s, const char **err)
{
    switch (s->protocol) {
    case FAAS__PROTOCOL__HTTP:
    case FAAS__PROTOCOL__GRPC:
        if (s->n_thrift_services > 0 || !empty(s->thrift_transport)) {
            *err = "thrift_services and thrift_transport need protocol THRIFT";
            return -1;
        }
        if (s->protocol == FAAS__PROTOCOL__HTTP && s->n_grpc_services > 0) {
            *err = "grpc_services need protocol GRPC";
            return -1;
        }
        return check_services(s->grpc_services, s->n_grpc_services, 0, err,
                              "grpc_services must be names like pkg.Service ([A-Za-z0-9_.])");
    case FAAS__PROTOCOL__THRIFT:
        if (s->n_grpc_services > 0) {
            *err = "grpc_services need protocol GRPC";
            return -1;
        }
        if (empty(s->thrift_transport) && disc_set_str(&s->thrift_transport, FAAS_SPEC_DEFAULT_THRIFT_TRANSPORT) != 0) {
            *err = "out of memory";
            return -1;
        }
        if (strcmp(s->thrift_transport, "framed") != 0 && strcmp(s->thrift_transport, "theader") != 0 &&
            strcmp(s->thrift_transport, "ttheader") != 0) {
            *err = "thrift_transport must be framed, theader or ttheader";
            return -1;
        }
        return check_services(s->thrift_services, s->n_thrift_services, 1, err,
                              "thrift_services must be names of [A-Za-z0-9_.-]");
    default:
        *err = "protocol must be HTTP, GRPC or THRIFT";
        return -1;
    }
}

/* Fields this discovery does not know are dropped rather than stored and re-sent:
 * protobuf-c keeps them verbatim, including ones it could not re-read itself. */
static void drop_unknown(ProtobufCMessage *m)
{
    if (m == NULL)
        return;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        free(m->unknown_fields[i].data);
    free(m->unknown_fields);
    m->unknown_fields = NULL;
    m->n_unknown_fields = 0;
}

static void drop_all_unknown(Faas__FunctionSpec *s)
{
    drop_unknown(&s->base);
    if (s->health)
        drop_unknown(&s->health->base);
    if (s->resources)
        drop_unknown(&s->resources->base);
    if (s->async)
        drop_unknown(&s->async->base);
    for (size_t i = 0; i < s->n_env; i++)
        if (s->env[i])
            drop_unknown(&s->env[i]->base);
}

int disc_spec_normalize(Faas__FunctionSpec *s, const char **err)
{
    drop_all_unknown(s);
    const char *name = s->name ? s->name : "";
    if (faas_valid_function_name(name, strlen(name), err) != 0)
        return -1;
    if (check_command_env(s, err) != 0)
        return -1;
    if (faas_spec_fill_defaults(s) != 0) {
        *err = "out of memory";
        return -1;
    }
    if (!valid_env_name(s->port_env)) {
        *err = "port_env must be an environment variable name";
        return -1;
    }
    if (check_limits(s, err) != 0 || check_async(s->async, err) != 0 || check_logs(s->logs, err) != 0 ||
        check_protocol(s, err) != 0 || fix_health(s, err) != 0)
        return -1;
    return 0;
}

Faas__FunctionSpec *disc_spec_parse(const uint8_t *buf, size_t len, const char **err)
{
    Faas__FunctionSpec *s = faas__function_spec__unpack(NULL, len, buf);
    if (s == NULL) {
        *err = "the request is not a valid FunctionSpec message";
        return NULL;
    }
    if (disc_spec_normalize(s, err) != 0) {
        faas__function_spec__free_unpacked(s, NULL);
        return NULL;
    }
    return s;
}

Faas__FunctionSpec *disc_spec_dup(const Faas__FunctionSpec *spec)
{
    size_t len;
    uint8_t *buf = faas_pb_pack(&spec->base, &len);
    if (buf == NULL)
        return NULL;
    Faas__FunctionSpec *copy = faas__function_spec__unpack(NULL, len, buf);
    free(buf);
    return copy;
}
