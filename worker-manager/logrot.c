/* worker-manager/logrot.c - the functions' log files on this worker kept bounded
 * (docs/security.md "Bounded logs"): <state>/logs/<fn>.log is rotated to .1, .2, ... up
 * to logs.keep when an agent says it passed logs.max_bytes (LOG_ROTATE) or when the
 * slow tick finds it past the bound plus slack (an agent that did not ask), and every pod
 * of the function gets the fresh file with LOG_FD. Agents never see the state directory:
 * they only ever hold an fd. Pod thread only, but for the metrics. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define WM_STATE
#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"
#include "worker-manager/internal.h"

/* Functions the metrics name; past this many, counts go unlabelled to the last slot's
 * function "-" so a worker that ran thousands of functions keeps a bounded /metrics. */
#define LOG_STATS_MAX 128

typedef struct {
    char fn[64];
    uint64_t rotations, dropped_bytes, dropped_lines;
} log_stats_t;

static struct {
    pthread_mutex_t mu;
    log_stats_t s[LOG_STATS_MAX];
    size_t n;
} st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t next_tick_us;

int wm_log_shift(const char *state_dir, const char *fn, unsigned keep)
{
    char from[PATH_MAX], to[PATH_MAX];
    if (keep == 0 || wm_log_path(to, sizeof(to), state_dir, fn, keep) != 0)
        return -1;
    /* emptied first: an fd someone still holds on it must not keep its blocks */
    if (truncate(to, 0) == 0 || errno != ENOENT)
        unlink(to);
    for (unsigned i = keep; i > 0; i--) {
        if (wm_log_path(from, sizeof(from), state_dir, fn, i - 1) != 0 ||
            wm_log_path(to, sizeof(to), state_dir, fn, i) != 0)
            return -1;
        if (rename(from, to) != 0 && errno != ENOENT)
            return -1;
    }
    return 0;
}

static log_stats_t *stats_of(const char *fn)
{
    for (size_t i = 0; i < st.n; i++)
        if (strcmp(st.s[i].fn, fn) == 0)
            return &st.s[i];
    if (st.n == LOG_STATS_MAX)
        return &st.s[LOG_STATS_MAX - 1];
    log_stats_t *s = &st.s[st.n++];
    wm_fmt(s->fn, sizeof(s->fn), "%s", st.n == LOG_STATS_MAX ? "-" : fn);
    return s;
}

static void count(const char *fn, uint64_t rotations, uint64_t bytes, uint64_t lines)
{
    pthread_mutex_lock(&st.mu);
    log_stats_t *s = stats_of(fn);
    s->rotations += rotations, s->dropped_bytes += bytes, s->dropped_lines += lines;
    pthread_mutex_unlock(&st.mu);
}

void wm_log_metrics(char *buf, size_t cap, int *n)
{
    static const char *const help[3][2] = {
        {"faas_wm_log_rotations_total", "Rotations of a function's log file on this worker."},
        {"faas_wm_log_dropped_bytes_total", "Log bytes agents dropped while a full log file rotated."},
        {"faas_wm_log_dropped_lines_total", "Log lines agents dropped while a full log file rotated."},
    };
    pthread_mutex_lock(&st.mu);
    for (int k = 0; k < 3; k++) {
        if (*n >= 0 && (size_t)*n < cap)
            *n += snprintf(buf + *n, cap - (size_t)*n, "# HELP %s %s\n# TYPE %s counter\n", help[k][0], help[k][1],
                           help[k][0]);
        for (size_t i = 0; i < st.n; i++) {
            uint64_t v = k == 0 ? st.s[i].rotations : k == 1 ? st.s[i].dropped_bytes : st.s[i].dropped_lines;
            if (*n >= 0 && (size_t)*n < cap)
                *n += snprintf(buf + *n, cap - (size_t)*n, "%s{function=\"%s\"} %" PRIu64 "\n", help[k][0], st.s[i].fn,
                               v);
        }
    }
    pthread_mutex_unlock(&st.mu);
}

int wm_log_open(wm_t *wm, const char *fn)
{
    char path[PATH_MAX];
    if (wm_log_path(path, sizeof(path), wm->cfg->state_dir, fn, 0) != 0)
        return -1;
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int wm_send_fds(int ctl, const ProtobufCMessage *msg, const int *fds, size_t nfds, int flags)
{
    size_t len;
    uint8_t *buf = faas_pb_pack(msg, &len);
    ssize_t n = buf ? faas_send_with_fds(ctl, buf, len, fds, nfds, flags) : -1;
    free(buf);
    return n == (ssize_t)len ? 0 : -1;
}

int wm_send_fd(int ctl, const ProtobufCMessage *msg, int fd, int flags)
{
    return wm_send_fds(ctl, msg, &fd, fd >= 0 ? 1 : 0, flags);
}

/* LOG_FD with fn's current file to one pod. */
static void send_log_fd(wm_t *wm, wm_pod_t *p)
{
    int fd = wm_log_open(wm, p->function);
    if (fd < 0) {
        FAAS_WARN("event=log_open_failed fn=%s err=\"%s\"", p->function, strerror(errno));
        return;
    }
    Faas__AgentCommand cmd = FAAS__AGENT_COMMAND__INIT;
    cmd.type = FAAS__AGENT_COMMAND__TYPE__LOG_FD;
    /* never blocks the pod thread: an agent whose socket is full asks again (logsink.c) */
    if (wm_send_fd(p->ctl, &cmd.base, fd, MSG_DONTWAIT) != 0)
        FAAS_WARN("event=log_fd_not_sent pod=%s fn=%s", p->id, p->function);
    close(fd);
}

/* The spec p runs (READY) or is being specialized for; NULL for a warm pod. */
static const Faas__FunctionSpec *spec_of(const wm_pod_t *p)
{
    if (p->state == POD_READY && p->req != NULL)
        return p->req->spec;
    if (p->state == POD_SPECIALIZING && p->acq != NULL && p->acq->req != NULL)
        return p->acq->req->spec;
    return NULL;
}

/* Shifts fn's files and hands every pod of fn the fresh one. */
static void rotate(wm_t *wm, const char *fn, uint32_t keep, const char *by)
{
    if (wm_log_shift(wm->cfg->state_dir, fn, keep) != 0) {
        FAAS_WARN("event=log_rotate_failed fn=%s err=\"%s\"", fn, strerror(errno));
        return;
    }
    FAAS_INFO("event=log_rotated fn=%s keep=%u by=%s", fn, keep, by);
    count(fn, 1, 0, 0);
    for (wm_pod_t *p = wm->pods; p; p = p->next)
        if (spec_of(p) != NULL && strcmp(p->function, fn) == 0)
            send_log_fd(wm, p);
}

static int64_t file_size(wm_t *wm, const char *fn, unsigned idx)
{
    char path[PATH_MAX];
    struct stat sb;
    if (wm_log_path(path, sizeof(path), wm->cfg->state_dir, fn, idx) != 0 || stat(path, &sb) != 0)
        return -1;
    return sb.st_size;
}

void wm_log_event(wm_t *wm, wm_pod_t *p, const Faas__AgentEvent *ev)
{
    const Faas__FunctionSpec *s = spec_of(p);
    if (s == NULL)
        return;
    count(p->function, 0, wm_log_delta(&p->log_dropped_bytes, ev->log_dropped_bytes),
          wm_log_delta(&p->log_dropped_lines, ev->log_dropped_lines));
    if (ev->type != FAAS__AGENT_EVENT__TYPE__LOG_ROTATE)
        return;
    uint64_t max;
    uint32_t keep;
    faas_spec_log_bound(s, &max, &keep);
    /* several pods fill one file at once: the first asks for the rotation, the others
     * only need the file that replaced the one they hold */
    if (file_size(wm, p->function, 0) >= (int64_t)max)
        rotate(wm, p->function, keep, "agent");
    else
        send_log_fd(wm, p);
}

/* A rotated file an agent kept writing to (it missed or ignored LOG_FD) is cut back. */
static void trim_rotated(wm_t *wm, const char *fn, uint64_t max, uint32_t keep)
{
    char path[PATH_MAX];
    for (unsigned i = 1; i <= keep; i++) {
        int64_t sz = file_size(wm, fn, i);
        if (sz > (int64_t)(max + WM_LOG_SLACK_BYTES) &&
            wm_log_path(path, sizeof(path), wm->cfg->state_dir, fn, i) == 0 && truncate(path, (off_t)max) == 0)
            FAAS_WARN("event=log_trimmed fn=%s file=%u size=%" PRId64, fn, i, sz);
    }
}

/* The bound holds even when agents do not keep it: each function with a pod here is
 * looked at once a tick. */
static void check_all(wm_t *wm)
{
    for (wm_pod_t *p = wm->pods; p; p = p->next) {
        const Faas__FunctionSpec *s = spec_of(p);
        wm_pod_t *q = wm->pods;
        while (q != p && (spec_of(q) == NULL || strcmp(q->function, p->function) != 0))
            q = q->next;
        if (s == NULL || q != p)
            continue; /* not running, or its function was seen already */
        uint64_t max;
        uint32_t keep;
        faas_spec_log_bound(s, &max, &keep);
        if (file_size(wm, p->function, 0) > (int64_t)(max + WM_LOG_SLACK_BYTES))
            rotate(wm, p->function, keep, "worker-manager");
        trim_rotated(wm, p->function, max, keep);
    }
}

uint64_t wm_log_tick(wm_t *wm, uint64_t now)
{
    if (now >= next_tick_us) {
        check_all(wm);
        next_tick_us = now + WM_LOG_TICK_US;
    }
    return next_tick_us;
}
