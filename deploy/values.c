/* deploy/values.c - the scalar value syntaxes of manifests and faasctl flags:
 * durations, sizes, CPU quantities, plain integers, protocol names. */
#include "deploy/manifest.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

int faas_parse_uint(const char *s, uint64_t max, uint64_t *v, const char **err)
{
    uint64_t n = 0;
    if (s == NULL || *s == '\0') {
        *err = "expected a number";
        return -1;
    }
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p)) {
            *err = "expected a non-negative integer";
            return -1;
        }
        if (n > (UINT64_MAX - 9) / 10) {
            *err = "number too large";
            return -1;
        }
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (n > max) {
        *err = "number too large";
        return -1;
    }
    *v = n;
    return 0;
}

/* Reads the leading digits of *p; -1 if there are none or they overflow. */
static int read_digits(const char **p, uint64_t *v)
{
    const char *s = *p;
    uint64_t n = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    for (; isdigit((unsigned char)*s); s++) {
        if (n > (UINT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *v = n;
    return 0;
}

static const char duration_help[] = "bad duration (use e.g. 1500ms, 30s, 2m, 1h or an integer of milliseconds)";

int faas_parse_duration_ms(const char *s, uint64_t *ms, const char **err)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    const char *p = s;
    uint64_t total = 0, n;

    if (s == NULL || read_digits(&p, &n) != 0)
        goto bad;
    if (*p == '\0') { /* a plain integer is milliseconds */
        *ms = n;
        return 0;
    }
    /* one or more <number><unit> terms: "1m30s" */
    for (;;) {
        size_t best = 0;
        uint64_t mult = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t ul = strlen(units[i].unit);
            if (strncmp(p, units[i].unit, ul) == 0 && ul > best) {
                best = ul;
                mult = units[i].mult;
            }
        }
        if (best == 0 || (mult != 0 && n > UINT64_MAX / mult))
            goto bad;
        if (total > UINT64_MAX - n * mult)
            goto bad;
        total += n * mult;
        p += best;
        if (*p == '\0')
            break;
        if (read_digits(&p, &n) != 0)
            goto bad;
    }
    *ms = total;
    return 0;
bad:
    *err = duration_help;
    return -1;
}

int faas_parse_size(const char *s, uint64_t *bytes, const char **err)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } sfx[] = {
        {"", 1},
        {"B", 1},
        {"k", 1000ull},
        {"K", 1000ull},
        {"KB", 1000ull},
        {"M", 1000000ull},
        {"MB", 1000000ull},
        {"G", 1000000000ull},
        {"GB", 1000000000ull},
        {"T", 1000000000000ull},
        {"Ki", 1ull << 10},
        {"KiB", 1ull << 10},
        {"Mi", 1ull << 20},
        {"MiB", 1ull << 20},
        {"Gi", 1ull << 30},
        {"GiB", 1ull << 30},
        {"Ti", 1ull << 40},
        {"TiB", 1ull << 40},
    };
    const char *p = s;
    uint64_t n;
    if (s == NULL || read_digits(&p, &n) != 0)
        goto bad;
    for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        if (strcmp(p, sfx[i].suffix) != 0)
            continue;
        if (n > UINT64_MAX / sfx[i].mult) {
            *err = "size too large";
            return -1;
        }
        *bytes = n * sfx[i].mult;
        return 0;
    }
bad:
    *err = "bad size (use e.g. 128Mi, 1Gi, 512Ki, 100M or an integer of bytes)";
    return -1;
}

int faas_parse_cpu_millis(const char *s, uint64_t *millis, const char **err)
{
    const char *p = s;
    uint64_t n, frac = 0;
    if (s == NULL || read_digits(&p, &n) != 0 || n > 1000000)
        goto bad;
    if (strcmp(p, "m") == 0) {
        *millis = n;
        return 0;
    }
    if (*p == '.') {
        uint64_t scale = 100;
        p++;
        if (!isdigit((unsigned char)*p))
            goto bad;
        for (; isdigit((unsigned char)*p); p++, scale /= 10) {
            if (scale == 0)
                goto bad; /* finer than a millicore */
            frac += (uint64_t)(*p - '0') * scale;
        }
    }
    if (*p != '\0')
        goto bad;
    *millis = n * 1000 + frac;
    return 0;
bad:
    *err = "bad CPU quantity (use e.g. 500m, 1, 1.5)";
    return -1;
}

const char *faas_protocol_name(int protocol)
{
    switch (protocol) {
    case FAAS__PROTOCOL__HTTP:
        return "http";
    case FAAS__PROTOCOL__GRPC:
        return "grpc";
    case FAAS__PROTOCOL__THRIFT:
        return "thrift";
    default:
        return "unknown";
    }
}

int faas_protocol_parse(const char *s, int *protocol, const char **err)
{
    if (strcmp(s, "http") == 0)
        *protocol = FAAS__PROTOCOL__HTTP;
    else if (strcmp(s, "grpc") == 0)
        *protocol = FAAS__PROTOCOL__GRPC;
    else if (strcmp(s, "thrift") == 0)
        *protocol = FAAS__PROTOCOL__THRIFT;
    else {
        *err = "protocol must be http, grpc or thrift";
        return -1;
    }
    return 0;
}
