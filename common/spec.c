/* common/spec.c - filling a FunctionSpec's defaults, shared by faasctl and discovery so
 * the spec a user sees before deploy is the one discovery stores. */
#include "common/spec.h"

#include <stdlib.h>
#include <string.h>

/* An empty string field gets def (0, or -1 out of memory). */
static int default_str(char **field, const char *def)
{
    if (*field != NULL && (*field)[0] != '\0')
        return 0;
    char *v = strdup(def);
    if (v == NULL)
        return -1;
    /* unpacked proto3 strings that were never set point at the shared empty string */
    if (*field != NULL && *field != protobuf_c_empty_string)
        free(*field);
    *field = v;
    return 0;
}

int faas_spec_fill_defaults(Faas__FunctionSpec *s)
{
    if (default_str(&s->port_env, FAAS_SPEC_DEFAULT_PORT_ENV) != 0 ||
        default_str(&s->network, FAAS_SPEC_DEFAULT_NETWORK) != 0)
        return -1;
    if (s->timeout_ms == 0)
        s->timeout_ms = FAAS_SPEC_DEFAULT_TIMEOUT_MS;
    if (s->cold_start_timeout_ms == 0)
        s->cold_start_timeout_ms = FAAS_SPEC_DEFAULT_COLD_START_MS;
    if (s->idle_timeout_ms == 0)
        s->idle_timeout_ms = FAAS_SPEC_DEFAULT_IDLE_TIMEOUT_MS;
    if (s->max_body_bytes == 0)
        s->max_body_bytes = FAAS_SPEC_DEFAULT_MAX_BODY_BYTES;
    if (s->max_instances == 0)
        s->max_instances = FAAS_SPEC_DEFAULT_MAX_INSTANCES;
    if (s->max_duration_ms == 0)
        s->max_duration_ms = FAAS_SPEC_DEFAULT_MAX_DURATION_MS;
    return 0;
}

void faas_spec_log_bound(const Faas__FunctionSpec *s, uint64_t *max_bytes, uint32_t *keep)
{
    const Faas__LogSpec *l = s != NULL ? s->logs : NULL;
    *max_bytes = l != NULL && l->max_bytes != 0 ? l->max_bytes : FAAS_SPEC_DEFAULT_LOG_MAX_BYTES;
    *keep = l != NULL && l->keep != 0 ? l->keep : FAAS_SPEC_DEFAULT_LOG_KEEP;
}

uint32_t faas_spec_endpoints_threshold(const Faas__FunctionSpec *s)
{
    const Faas__EndpointsSpec *e = s != NULL ? s->endpoints : NULL;
    return e != NULL && e->threshold_rps != 0 ? e->threshold_rps : FAAS_SPEC_DEFAULT_ENDPOINTS_THRESHOLD_RPS;
}

int faas_spec_runtime_valid(const char *rt)
{
    return rt == NULL || rt[0] == '\0' || strcmp(rt, FAAS_SPEC_RUNTIME_PYTHON3) == 0 ||
           strcmp(rt, FAAS_SPEC_RUNTIME_EXEC) == 0;
}

int faas_spec_is_python3(const char *argv0)
{
    if (argv0 == NULL)
        return 0;
    const char *slash = strrchr(argv0, '/');
    const char *b = slash != NULL ? slash + 1 : argv0;
    if (strncmp(b, "python3", 7) != 0)
        return 0;
    if (b[7] == '\0')
        return 1;
    if (b[7] != '.' || b[8] == '\0')
        return 0;
    for (const char *c = b + 8; *c != '\0'; c++)
        if (*c < '0' || *c > '9')
            return 0;
    return 1;
}

int faas_spec_python_implied(const Faas__FunctionSpec *s)
{
    return s->runtime != NULL && strcmp(s->runtime, FAAS_SPEC_RUNTIME_PYTHON3) == 0 && s->n_command > 0 &&
           !faas_spec_is_python3(s->command[0]);
}

int faas_spec_zygote_fit(const Faas__FunctionSpec *s)
{
    if (s == NULL || s->image != NULL || (s->runtime != NULL && strcmp(s->runtime, FAAS_SPEC_RUNTIME_EXEC) == 0))
        return 0;
    size_t script = faas_spec_python_implied(s) ? 0 : 1;
    if (script == 1 && (s->n_command < 2 || !faas_spec_is_python3(s->command[0])))
        return 0;
    /* "-" is stdin and "-u", "-m", ... change how the interpreter starts: plain exec */
    const char *arg = s->command[script];
    return arg != NULL && arg[0] != '\0' && arg[0] != '-';
}
