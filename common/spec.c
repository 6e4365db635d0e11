/* common/spec.c - filling a FunctionSpec's defaults, shared by faasctl and discovery so
 * the spec a user sees before deploy is the one discovery stores. */
#include "common/spec.h"

#include <stdlib.h>
#include <string.h>

int faas_spec_fill_defaults(Faas__FunctionSpec *s)
{
    if (s->port_env == NULL || s->port_env[0] == '\0') {
        char *v = strdup(FAAS_SPEC_DEFAULT_PORT_ENV);
        if (v == NULL)
            return -1;
        /* unpacked proto3 strings that were never set point at the shared empty string */
        if (s->port_env != NULL && s->port_env != protobuf_c_empty_string)
            free(s->port_env);
        s->port_env = v;
    }
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
