// FUZZ_SOURCES: runtime-agent/spec.c common/util.c common/log.c
// FUZZ_SOURCES: runtime-agent/cgstat.c worker-manager/scale.c runtime-agent/overload.c
// FUZZ_SOURCES: worker-manager/denials.c worker-manager/logname.c worker-manager/cgroup.c common/spec.c
// FUZZ_PKGS: libprotobuf-c
/* Fuzzes the agent's control-message path: AgentCommand decoding and validation, then
 * the helpers a decoded spec feeds (env building), plus command splitting and log quoting;
 * the way back too: an AgentEvent as the worker manager reads OVERLOAD and RECOVERED
 * (signal, degree) and SECCOMP_DENIALS (names that become metric labels),
 * the cgroup CPU figures the agent parses (cpu.pressure, cpu.stat),
 * a RUNQ command's figures judged by the overload detector as the agent does, and the
 * log bound: a SPECIALIZE's logs.* as the agent applies them, LOG_FD (nothing but the
 * fd beside it), LOG_ROTATE/LOG_DROPPED totals as the worker manager counts them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime-agent/cgstat.h"
#include "runtime-agent/internal.h"
#include "runtime-agent/overload.h"
#define WM_STATE
#include "worker-manager/internal.h"

/* The worker manager's tally of SECCOMP_DENIALS: whatever the names, every exposition
 * line it makes is one well-formed sample, and the series stay bounded. */
static void fuzz_denials(const Faas__AgentEvent *ev)
{
    static wm_denials_t d;
    wm_denials_add(&d, "fn", ev->denials, ev->n_denials);
    if (ev->message != NULL && ev->message[0] != '\0')
        wm_denials_add(&d, ev->message, ev->denials, ev->n_denials);
    if (d.n > WM_DENIALS_MAX)
        abort();
    static char buf[192 * 1024];
    int n = 0;
    wm_denials_metrics(&d, buf, sizeof(buf), &n);
    if (n < 0)
        abort();
    for (char *l = buf; *l != '\0';) {
        char *e = strchr(l, '\n');
        if (e == NULL)
            break; /* cut at the buffer's end */
        static const char head[] = "faas_wm_seccomp_denials_total{function=\"";
        if (l[0] != '#' && (strncmp(l, head, sizeof(head) - 1) != 0 || memchr(l, '\\', (size_t)(e - l)) != NULL))
            abort();
        l = e + 1;
    }
    if (d.n > 64)
        wm_denials_free(&d); /* keep each run cheap */
}

/* The worker manager's reading of an OVERLOAD or RECOVERED. */
static void fuzz_event(const uint8_t *data, size_t size)
{
    Faas__AgentEvent *ev = faas__agent_event__unpack(NULL, size, data);
    if (ev == NULL)
        return;
    if (ev->type == FAAS__AGENT_EVENT__TYPE__OVERLOAD || ev->type == FAAS__AGENT_EVENT__TYPE__RECOVERED) {
        int sig = wm_scale_signal(ev->signal);
        if (sig < 0 || sig >= WM_SIG_N)
            abort();
        for (uint32_t have = 0; have < 4; have++)
            if (have + wm_scale_count(ev->degree, 0, have, 4) > 4)
                abort(); /* never past max_instances */
    }
    if (ev->type == FAAS__AGENT_EVENT__TYPE__SECCOMP_DENIALS)
        fuzz_denials(ev);
    if (ev->type == FAAS__AGENT_EVENT__TYPE__LOG_ROTATE || ev->type == FAAS__AGENT_EVENT__TYPE__LOG_DROPPED) {
        /* whatever an agent says, a function's counts only grow, and by no more than it said */
        static uint64_t seen_b, seen_l, sum_b, sum_l;
        uint64_t db = wm_log_delta(&seen_b, ev->log_dropped_bytes), dl = wm_log_delta(&seen_l, ev->log_dropped_lines);
        if (db > ev->log_dropped_bytes || dl > ev->log_dropped_lines || seen_b < ev->log_dropped_bytes)
            abort();
        sum_b += db, sum_l += dl;
        if (sum_b != seen_b || sum_l != seen_l)
            abort(); /* the counted sum is the largest total seen */
    }
    faas__agent_event__free_unpacked(ev, NULL);
}

/* A spec's log bound as the agent keeps it: the file it writes never passes the bound by
 * more than one line, and dropped lines are all counted. */
static void fuzz_log_bound(const agent_spec_t *spec, const uint8_t *data, size_t size)
{
    agent_logacct_t a = {.max_bytes = spec->log_max_bytes};
    uint64_t file = 0, dropped = 0, longest = 0, gb, gl;
    if (spec->log_max_bytes == 0)
        abort(); /* the default applies */
    for (size_t i = 0; i + 1 < size; i += 2) {
        size_t len = (size_t)data[i] * 64 + 1;
        if (data[i + 1] == 0xff) {
            agent_logacct_swap(&a, &gb, &gl);
            file = 0;
        } else if (agent_logacct_admit(&a, len)) {
            file += len;
            longest = len > longest ? len : longest;
            agent_logacct_wrote(&a, (int64_t)file);
        } else {
            dropped += len;
        }
        if (file > a.max_bytes + longest || a.dropped_bytes != dropped)
            abort();
    }
}

/* A RUNQ's figures, as control.c takes them: into the next samples and, for an alert,
 * judged at once. Whatever the numbers, a verdict is sane. */
static void fuzz_runq(const Faas__AgentCommand *m)
{
    static agent_ol_t d;
    static uint64_t t = 1000000;
    if (t == 1000000) {
        agent_ol_init(&d);
        d.cpus = 1.5;
    }
    agent_ol_sample_t s = {.t_us = t += AGENT_OL_TICK_US, .inflight = 3, .has_runq = 1};
    s.runq_wait_ns = m->runq_wait_ns;
    agent_ol_verdict_t v = agent_ol_feed(&d, &s);
    if (v.action == AGENT_OL_FIRE && (v.degree < 1 || v.degree > 16 || v.signal == NULL))
        abort();
    if (m->runq_hot_us != 0) {
        v = agent_ol_runq_alert(&d, t + 1, m->runq_waiting);
        if (v.action == AGENT_OL_FIRE && (v.degree < 1 || v.degree > 16 || strcmp(v.signal, "runq_latency") != 0))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_event(data, size);
    agent_cmd_t cmd;
    const char *err = NULL;
    if (agent_cmd_decode(data, size, &cmd, &err) == 0) {
        if (cmd.type == FAAS__AGENT_COMMAND__TYPE__SPECIALIZE) {
            char **env = agent_build_env(&cmd.spec, 8080);
            for (char **e = env; e != NULL && *e != NULL; e++)
                if (strchr(*e, '=') == NULL)
                    abort();
            free(env);
            fuzz_log_bound(&cmd.spec, data, size);
        }
        if (cmd.type == FAAS__AGENT_COMMAND__TYPE__LOG_FD && cmd.msg->specialize != NULL && cmd.spec.name != NULL)
            abort(); /* LOG_FD carries no spec: nothing of one may be taken from it */
        if (cmd.type == FAAS__AGENT_COMMAND__TYPE__RUNQ)
            fuzz_runq(cmd.msg);
        agent_cmd_free(&cmd);
    } else if (err == NULL) {
        abort(); /* a failing parser must say why */
    }
    /* the same bytes as a command line and as a user log line */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char **argv;
    size_t argc;
    if (agent_split_cmd(s, &argv, &argc, &err) == 0) {
        if (argc == 0 || argv[argc] != NULL)
            abort();
        free(argv);
    }
    uint64_t a, b;
    (void)agent_cg_parse_psi(s, &a);
    (void)agent_cg_parse_stat(s, &a, &b);
    char line[512];
    size_t n = agent_format_log_line(line, sizeof(line), 1700000000123, "fn", "inst", "stdout", s, size);
    if (n > sizeof(line) || (n > 0 && line[n - 1] != '\n'))
        abort();
    free(s);
    return 0;
}
