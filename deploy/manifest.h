/* deploy/manifest.h - function.yaml -> Faas__FunctionSpec, and the value parsers
 * (durations, sizes, CPU) that faasctl's flags share with it.
 *
 * The parser is pure: bytes in, a spec (or an error with a line number) out. */
#ifndef FAAS_MANIFEST_H
#define FAAS_MANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/faas.pb-c.h"

/* A parsed manifest: the spec plus what is not part of the spec. */
typedef struct {
    Faas__FunctionSpec *spec; /* malloc'd; free with faas_manifest_free */
    char *code_dir;           /* `code:` as written (NULL if absent), relative to the manifest */
} faas_manifest_t;

/* Parses a YAML manifest. 0, or -1 with a sentence ("line 3: unknown key ...") in err.
 * On failure *out is left empty (nothing to free). Never crashes on any bytes. */
int faas_manifest_parse(const char *buf, size_t len, faas_manifest_t *out, char *err, size_t errcap);
/* An empty manifest (spec allocated, every field unset), for building from flags. */
int faas_manifest_init(faas_manifest_t *m);
void faas_manifest_free(faas_manifest_t *m);

/* Sets one scalar key as a manifest would ("timeout", "30s"); keys with a dot reach
 * into maps ("resources.memory", "health.path", "async.timeout"); "env" takes "K=V"
 * and appends; "command" takes a string split on spaces; "async.retry_on" takes the
 * list's items separated by commas or spaces ("" = none) and replaces it. 0 or -1 with *err. */
int faas_manifest_set(faas_manifest_t *m, const char *key, const char *value, const char **err);

/* Checks what a deploy needs (a valid name, a command). 0 or -1 with *err. */
int faas_manifest_validate(const Faas__FunctionSpec *spec, const char **err);
/* Fills the platform defaults (common/spec.h) for fields left at 0/empty, so the spec
 * sent is the one discovery stores; 0, or -1 when out of memory. */
int faas_manifest_defaults(Faas__FunctionSpec *spec);
/* Prints the spec as YAML the parser reads back (platform-set fields as comments). */
void faas_manifest_print(FILE *f, const Faas__FunctionSpec *spec);

/* "1500ms", "30s", "2m", "1h", or a plain integer of milliseconds -> ms. 0 or -1 with *err. */
int faas_parse_duration_ms(const char *s, uint64_t *ms, const char **err);
/* "128Mi", "1Gi", "512Ki", "8M", "100k", "4096" (bytes) -> bytes. 0 or -1 with *err. */
int faas_parse_size(const char *s, uint64_t *bytes, const char **err);
/* "500m", "1", "1.5", "0.25" (cores) -> millicores. 0 or -1 with *err. */
int faas_parse_cpu_millis(const char *s, uint64_t *millis, const char **err);
/* Plain unsigned decimal <= max. 0 or -1 with *err. */
int faas_parse_uint(const char *s, uint64_t max, uint64_t *v, const char **err);

/* Protocol names: "http", "grpc", "thrift". */
const char *faas_protocol_name(int protocol);
int faas_protocol_parse(const char *s, int *protocol, const char **err);

#endif
