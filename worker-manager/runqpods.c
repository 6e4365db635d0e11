/* worker-manager/runqpods.c - the run-queue probe (runq.c) for this worker's pods: every
 * pod's cgroup is watched from its spawn, and its figures go to its agent as RUNQ
 * commands, the totals every tick while they change (the agent's windowed signal).
 *
 * An alert is judged here, not in the agent: the agent lives in the pod's cgroup, so
 * when the pod saturates its CPU quota the agent waits for CPU like the user server's
 * threads, up to a whole CFS period (100 ms), before it could read the alert. The worker
 * manager reports and scales at once, and tells the agent, whose detector then holds
 * the overload until every signal has cleared (its RECOVERED ends it, as for its own). */
#define WM_STATE
#include "worker-manager/internal.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"
#include "worker-manager/runq.h"

/* The agents sample every 100 ms (runtime-agent/overload.h): figures fresher than that
 * would not be read sooner. */
#define RUNQ_TICK_US 100000u

static void send_runq(wm_pod_t *p, const wm_runq_figures_t *f, uint64_t hot_ns)
{
    Faas__AgentCommand cmd = FAAS__AGENT_COMMAND__INIT;
    cmd.type = FAAS__AGENT_COMMAND__TYPE__RUNQ;
    cmd.runq_wait_ns = f->wait_ns;
    cmd.runq_waits = f->waits;
    cmd.runq_waiting = f->waiting > 0 ? (uint32_t)(f->waiting > UINT32_MAX ? UINT32_MAX : f->waiting) : 0;
    cmd.runq_hot_us = hot_ns != 0 && hot_ns < 1000 ? 1 : hot_ns / 1000;
    uint8_t buf[64]; /* five numbers: always fits */
    size_t len = protobuf_c_message_pack(&cmd.base, buf);
    /* a full socket drops a round of figures; the next one carries the totals again */
    (void)!send(p->ctl, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    p->runq_sent_waits = f->waits;
}

/* An overloaded pod's alerts are judged again after this: the agent's own reminder pace
 * (two of its windows: one for the instances asked for to start, one for their effect). */
#define RUNQ_REFIRE_US 2000000u

/* waiting tasks for the CPUs the pod may use: x waiting per CPU is a demand of 1+x
 * CPUs, so x more instances (the host's cap on CPU signals is scale_up's). */
static uint32_t runq_degree(const wm_pod_t *p, uint64_t waiting)
{
    const Faas__Resources *r = p->req != NULL && p->req->spec != NULL ? p->req->spec->resources : NULL;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t millis = r != NULL && r->cpu_millis != 0 ? r->cpu_millis : (uint64_t)(online > 0 ? online : 1) * 1000u;
    uint64_t d = (waiting * 1000u + millis - 1) / millis;
    return d < 1 ? 1 : d > 16 ? 16 : (uint32_t)d;
}

static void on_alert(void *ud, uint64_t cgroup_id, uint64_t waiting, uint64_t hot_ns)
{
    wm_t *wm = ud;
    for (wm_pod_t *p = wm->pods; p; p = p->next) {
        if (p->cgroup_id != cgroup_id)
            continue;
        wm_runq_figures_t f;
        if (p->state != POD_READY || wm_runq_read(cgroup_id, &f) != 0)
            return;
        f.waiting = (int64_t)waiting; /* the count when it was judged, not now */
        uint64_t now = faas_now_us();
        if (!p->overloaded || now - p->runq_fired_us >= RUNQ_REFIRE_US) {
            p->runq_fired_us = now;
            wm_pod_overload(wm, p, "runq_latency", runq_degree(p, waiting), 1, "worker-manager");
        }
        send_runq(p, &f, hot_ns);
        return;
    }
}

void wm_runq_start(wm_t *wm)
{
    char err[256];
    if (!wm->cfg->runq_bpf) {
        FAAS_INFO("event=runq_probe loaded=0 reason=\"--no-runq-bpf\"");
        return;
    }
    if (wm->cg.v2[0] == '\0') {
        FAAS_WARN("event=runq_probe loaded=0 reason=\"no cgroup v2 hierarchy to tell pods apart\"");
        return;
    }
    if (wm_runq_open(on_alert, wm, err, sizeof(err)) != 0) {
        FAAS_WARN("event=runq_probe loaded=0 reason=\"%s\"", err);
        return;
    }
    wm->runq = 1;
    FAAS_INFO("event=runq_probe loaded=1");
}

void wm_runq_pod_new(wm_t *wm, wm_pod_t *p)
{
    if (!wm->runq)
        return;
    char dir[PATH_MAX];
    wm_fmt(dir, sizeof(dir), "%s/faas/%s/%s", wm->cg.v2, wm->cfg->id, p->id);
    p->cgroup_id = wm_runq_watch(dir);
    if (p->cgroup_id == 0)
        FAAS_WARN("event=runq_watch_failed pod=%s dir=%s", p->id, dir);
}

void wm_runq_pod_gone(wm_t *wm, wm_pod_t *p)
{
    wm_runq_unwatch(p->cgroup_id);
    p->cgroup_id = 0;
}

uint64_t wm_runq_tick(wm_t *wm, uint64_t now)
{
    if (!wm->runq)
        return UINT64_MAX;
    if (now < wm->runq_next_us)
        return wm->runq_next_us;
    wm->runq_next_us = now + RUNQ_TICK_US;
    for (wm_pod_t *p = wm->pods; p; p = p->next) {
        wm_runq_figures_t f;
        if (p->state == POD_READY && p->cgroup_id != 0 && wm_runq_read(p->cgroup_id, &f) == 0 &&
            f.waits != p->runq_sent_waits)
            send_runq(p, &f, 0);
    }
    return wm->runq_next_us;
}
