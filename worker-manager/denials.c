/* denials.c - the user servers' seccomp refusals, as the agents report them (docs/security.md,
 * "Seccomp"): totals by function and syscall for /metrics. The agent sends deltas at most
 * once a second; the names become label values, so they are checked here, not trusted. */
#define WM_STATE
#include "worker-manager/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int syscall_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(((wm_denial_t *)0)->syscall))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* Function names are checked at deploy; this only keeps the exposition well-formed. */
static int function_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(((wm_denial_t *)0)->function))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

static wm_denial_t *find_or_add(wm_denials_t *d, const char *fn, const char *sys)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->v[i].function, fn) == 0 && strcmp(d->v[i].syscall, sys) == 0)
            return &d->v[i];
    if (d->n >= WM_DENIALS_MAX)
        return NULL;
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 16;
        wm_denial_t *nv = realloc(d->v, nc * sizeof(*nv));
        if (nv == NULL)
            return NULL;
        d->v = nv;
        d->cap = nc;
    }
    wm_denial_t *e = &d->v[d->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->function, sizeof(e->function), "%s", fn);
    snprintf(e->syscall, sizeof(e->syscall), "%s", sys);
    return e;
}

size_t wm_denials_add(wm_denials_t *d, const char *function, Faas__SyscallDenials *const *items, size_t n)
{
    size_t taken = 0;
    if (function == NULL || !function_name_ok(function))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i] == NULL || items[i]->syscall == NULL || !syscall_name_ok(items[i]->syscall) ||
            items[i]->count == 0)
            continue;
        wm_denial_t *e = find_or_add(d, function, items[i]->syscall);
        if (e == NULL) {
            d->full_said = 1;
            continue;
        }
        e->count += items[i]->count;
        taken++;
    }
    return taken;
}

static void put(char *buf, size_t cap, int *n, const char *fn, const char *sys, unsigned long long v)
{
    if (*n < 0 || (size_t)*n >= cap)
        return;
    int w = snprintf(buf + *n, cap - (size_t)*n, "faas_wm_seccomp_denials_total{function=\"%s\",syscall=\"%s\"} %llu\n",
                     fn, sys, v);
    *n = w < 0 ? -1 : *n + w;
}

void wm_denials_metrics(const wm_denials_t *d, char *buf, size_t cap, int *n)
{
    if (*n < 0 || (size_t)*n >= cap)
        return;
    int w = snprintf(buf + *n, cap - (size_t)*n,
                     "# HELP faas_wm_seccomp_denials_total Syscalls the user servers' seccomp filter refused, by "
                     "function and syscall.\n# TYPE faas_wm_seccomp_denials_total counter\n");
    *n = w < 0 ? -1 : *n + w;
    for (size_t i = 0; i < d->n; i++)
        put(buf, cap, n, d->v[i].function, d->v[i].syscall, (unsigned long long)d->v[i].count);
}

void wm_denials_free(wm_denials_t *d)
{
    free(d->v);
    memset(d, 0, sizeof(*d));
}
