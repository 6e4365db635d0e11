/* runtime-agent/cgstat.c - the pod cgroup's CPU figures for the overload detector:
 * PSI cpu.pressure (cgroup v2, also on a hybrid host's unified tree) and cpu.stat's
 * throttling counts (v1 or v2, whichever holds the cpu controller), read from the
 * agent's own cgroup. The files are world-readable, so the unprivileged pod uid reads
 * them itself and the worker manager has nothing to relay. */
#include "runtime-agent/cgstat.h"

#include "common/util.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Where cgroup hierarchies are mounted: v2 at the root (pure) or unified/ (hybrid), v1
 * per controller (cpu,cpuacct joined or cpu alone). */
static const char *const V2_ROOTS[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"};
static const char *const V1_CPU_ROOTS[] = {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"};

int agent_cg_parse_psi(const char *text, uint64_t *some_us)
{
    const char *p = strstr(text, "some ");
    if (p == NULL || (p != text && p[-1] != '\n'))
        return -1;
    const char *t = strstr(p, "total=");
    const char *eol = strchr(p, '\n');
    if (t == NULL || (eol != NULL && t > eol))
        return -1;
    char *end;
    *some_us = strtoull(t + 6, &end, 10);
    return end == t + 6 ? -1 : 0;
}

static int stat_field(const char *text, const char *name, uint64_t *v)
{
    size_t nl = strlen(name);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ') {
            char *end;
            *v = strtoull(p + nl + 1, &end, 10);
            return end == p + nl + 1 ? -1 : 0;
        }
    }
    return -1;
}

int agent_cg_parse_stat(const char *text, uint64_t *periods, uint64_t *throttled)
{
    return stat_field(text, "nr_periods", periods) != 0 || stat_field(text, "nr_throttled", throttled) != 0 ? -1 : 0;
}

/* The path of this process's cgroup in the hierarchy named by want ("" for v2, else a
 * v1 controller), from /proc/self/cgroup. */
static int own_path(const char *want, char *out, size_t cap)
{
    char buf[4096];
    if (faas_read_small("/proc/self/cgroup", buf, sizeof(buf)) <= 0)
        return -1;
    for (char *line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1;
        int match = want[0] == '\0' ? ctrls[0] == '\0' : 0;
        for (char *tok = strtok_r((char *)ctrls, ",", &c1); tok && !match && want[0]; tok = strtok_r(NULL, ",", &c1))
            match = strcmp(tok, want) == 0;
        if (match)
            return snprintf(out, cap, "%s", c2 + 1) >= (int)cap ? -1 : 0;
    }
    return -1;
}

/* The first root/rel/file that reads and parses (the chosen path kept in out). */
static int find_file(const char *const *roots, size_t nroots, const char *rel, const char *file, char *out, size_t cap)
{
    char buf[1024];
    uint64_t a, b;
    for (size_t i = 0; i < nroots; i++) {
        if (snprintf(out, cap, "%s%s/%s", roots[i], strcmp(rel, "/") == 0 ? "" : rel, file) >= (int)cap)
            continue;
        if (faas_read_small(out, buf, sizeof(buf)) <= 0)
            continue;
        if (strcmp(file, "cpu.pressure") == 0 ? agent_cg_parse_psi(buf, &a) == 0
                                              : agent_cg_parse_stat(buf, &a, &b) == 0)
            return 0;
    }
    out[0] = '\0';
    return -1;
}

/* A quota is set: v2 cpu.max is not "max ...", v1 cpu.cfs_quota_us is not -1. */
static int has_quota(const char *stat_path, int v2)
{
    char path[PATH_MAX], buf[128];
    const char *slash = strrchr(stat_path, '/');
    if (slash == NULL || snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - stat_path), stat_path,
                                  v2 ? "cpu.max" : "cpu.cfs_quota_us") >= (int)sizeof(path))
        return 0;
    if (faas_read_small(path, buf, sizeof(buf)) <= 0)
        return 0;
    return v2 ? strncmp(buf, "max", 3) != 0 : strtoll(buf, NULL, 10) > 0;
}

void agent_cg_open(agent_cg_t *c)
{
    char rel[PATH_MAX];
    memset(c, 0, sizeof(*c));
    if (own_path("", rel, sizeof(rel)) == 0) {
        c->has_psi = find_file(V2_ROOTS, 2, rel, "cpu.pressure", c->psi, sizeof(c->psi)) == 0;
        if (find_file(V2_ROOTS, 2, rel, "cpu.stat", c->stat, sizeof(c->stat)) == 0 && has_quota(c->stat, 1))
            c->has_throttle = 1;
    }
    if (!c->has_throttle && own_path("cpu", rel, sizeof(rel)) == 0 &&
        find_file(V1_CPU_ROOTS, 2, rel, "cpu.stat", c->stat, sizeof(c->stat)) == 0 && has_quota(c->stat, 0))
        c->has_throttle = 1;
}

void agent_cg_read(const agent_cg_t *c, agent_ol_sample_t *s)
{
    char buf[1024];
    s->has_psi =
        c->has_psi && faas_read_small(c->psi, buf, sizeof(buf)) > 0 && agent_cg_parse_psi(buf, &s->psi_some_us) == 0;
    s->has_throttle = c->has_throttle && faas_read_small(c->stat, buf, sizeof(buf)) > 0 &&
                      agent_cg_parse_stat(buf, &s->nr_periods, &s->nr_throttled) == 0;
}
