/* runtime-agent/control.c - the agent's life: the listener, the control socket to the
 * worker manager (HELLO up, SPECIALIZE/STOP down, events up), signals, standalone mode. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"
#include "runtime-agent/agent.h"
#include "runtime-agent/cgstat.h"
#include "runtime-agent/grpc.h"
#include "runtime-agent/internal.h"
#include "runtime-agent/overload.h"
#include "runtime-agent/thrift_agent.h"

#define CONTROL_MAX_PACKET (256 * 1024)
#define KILL_GRACE_MS 2000
/* Queued-up events past which reports that only feed metrics are dropped: the worker
 * manager may be away for a while (a crash, until its successor adopts this pod, which
 * still holds the socket open), and the agent keeps serving without growing meanwhile. */
#define OUTQ_SOFT_BYTES (64 * 1024)

static struct {
    evl_loop_t *loop;
    const agent_opts_t *opts;
    uint16_t port; /* our h2c listener */
    uint16_t direct_port;    /* the direct port (direct.c; 0: none) */
    uint64_t direct_sent;    /* the direct call count last reported */
    evl_timer_t direct_tick; /* DIRECT_CALLS at most once a second, while it changes */
    int control_fd;
    evl_io_t control_io;
    evl_io_t signal_io;
    int specialized;
    int zygote; /* a Python zygote waits for the function (issue 18) */
    agent_cmd_t cmd; /* kept alive: the spec points into it */
    char **standalone_argv;
    int log_fd;
    agent_ol_t ol;         /* the overload detector */
    int has_runq;          /* the worker manager sends RUNQ figures */
    uint64_t runq_wait_ns; /* the last it sent */
    agent_cg_t cg;         /* where the pod cgroup's CPU figures are */
    evl_timer_t ol_tick;   /* samples for the detector */
    int exit;
    int exit_code;
    /* packets the socket had no room for (a task's result is many), sent in order once
     * it is writable again */
    struct outq {
        struct outq *next;
        size_t len;
        uint8_t data[];
    } * out_head, **out_tail;
    size_t out_bytes;     /* queued in out_head */
    uint64_t out_dropped; /* metric-only events dropped while the queue was past OUTQ_SOFT_BYTES */
} ag = {.control_fd = -1, .log_fd = -1, .out_tail = &ag.out_head};

static void quit(int code)
{
    ag.exit = 1;
    ag.exit_code = code;
}

/* ---- events up ---- */

/* Sends what waits in the queue; 0 when it is empty, 1 when the socket is full again. */
static int flush_out(void)
{
    while (ag.out_head != NULL) {
        struct outq *q = ag.out_head;
        if (send(ag.control_fd, q->data, q->len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                return 1;
            FAAS_WARN("event=control_send_failed err=\"%s\"", strerror(errno));
        }
        ag.out_head = q->next;
        if (ag.out_head == NULL)
            ag.out_tail = &ag.out_head;
        ag.out_bytes -= q->len;
        free(q);
    }
    if (ag.out_dropped != 0) {
        FAAS_INFO("event=control_backlog_cleared dropped_events=%llu", (unsigned long long)ag.out_dropped);
        ag.out_dropped = 0;
    }
    return 0;
}

/* Sends one packed event (takes buf), queueing it behind others or when the socket is full. */
static int send_packet(uint8_t *buf, size_t len)
{
    if (ag.control_fd < 0) {
        free(buf);
        return 0;
    }
    if (ag.out_head == NULL) {
        ssize_t n = send(ag.control_fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)
            FAAS_WARN("event=control_send_failed err=\"%s\"", strerror(errno));
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS)) {
            free(buf);
            return 0;
        }
    }
    struct outq *q = malloc(sizeof(*q) + len);
    if (q == NULL) {
        free(buf);
        FAAS_WARN("event=control_send_failed err=\"out of memory\"");
        return -1;
    }
    q->next = NULL;
    q->len = len;
    memcpy(q->data, buf, len);
    free(buf);
    int was_empty = ag.out_head == NULL;
    ag.out_bytes += len;
    *ag.out_tail = q;
    ag.out_tail = &q->next;
    if (was_empty)
        evl_io_set(&ag.control_io, EVL_READ | EVL_WRITE);
    return 0;
}

/* Events the worker manager only counts (or asks again for): lost, they cost a metric,
 * not a pod's state. READY, FAILED, USER_EXIT, HELLO, OVERLOAD/RECOVERED (rare, state)
 * and the tasks' reports always queue. */
static int droppable(Faas__AgentEvent__Type t)
{
    return t == FAAS__AGENT_EVENT__TYPE__FIRST_REQUEST || t == FAAS__AGENT_EVENT__TYPE__SECCOMP_DENIALS ||
           t == FAAS__AGENT_EVENT__TYPE__LOG_ROTATE || t == FAAS__AGENT_EVENT__TYPE__LOG_DROPPED;
}

static void send_event(Faas__AgentEvent *ev)
{
    if (ag.out_bytes >= OUTQ_SOFT_BYTES && droppable(ev->type)) {
        if (ag.out_dropped++ == 0)
            FAAS_WARN("event=control_backlog queued_bytes=%zu msg=\"no worker manager reads: dropping metric "
                      "events until it does\"",
                      ag.out_bytes);
        return;
    }
    size_t len;
    uint8_t *buf = faas_pb_pack(&ev->base, &len);
    if (buf != NULL)
        send_packet(buf, len);
}

/* The gateways' rate for the endpoints API counts the pods' direct calls too (so that
 * sending a mesh to the pods does not read as the traffic stopping): reported as a
 * cumulative count, which a lost or late report cannot skew. */
static void on_direct_tick(evl_timer_t *t)
{
    uint64_t n = agent_direct_calls();
    /* while no worker manager reads, nothing piles up: the count goes once it drains */
    if (n != ag.direct_sent && ag.out_bytes < OUTQ_SOFT_BYTES) {
        ag.direct_sent = n;
        Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
        ev.type = FAAS__AGENT_EVENT__TYPE__DIRECT_CALLS;
        ev.port = ag.port;
        ev.direct_calls = n;
        send_event(&ev);
    }
    evl_timer_start(ag.loop, t, 1000);
}

/* The direct port listens from now on, in the function's own protocol. */
static void direct_start(void)
{
    const Faas__Specialize *sp = ag.cmd.msg != NULL ? ag.cmd.msg->specialize : NULL;
    int proto = sp != NULL && sp->spec != NULL ? (int)sp->spec->protocol : FAAS__PROTOCOL__HTTP;
    if (ag.direct_port == 0 ||
        agent_direct_start(ag.loop, proto, ag.cmd.spec.timeout_ms, ag.cmd.spec.max_body_bytes) != 0)
        return;
    FAAS_INFO("event=direct_listening port=%u protocol=%d", ag.direct_port, proto);
    if (!ag.opts->standalone) {
        ag.direct_tick.cb = on_direct_tick;
        evl_timer_start(ag.loop, &ag.direct_tick, 1000);
    }
}

static void on_user_ready(uint32_t exec_us, uint32_t ready_us)
{
    agent_front_set_ready(1);
    direct_start();
    FAAS_INFO("event=ready fn=%s user_port=%u exec_us=%u ready_us=%u", ag.cmd.spec.name, agent_user_port(), exec_us,
              ready_us);
    if (ag.opts->standalone) {
        printf("READY port=%u\n", ag.port);
        fflush(stdout);
    }
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__READY;
    ev.port = ag.port;
    ev.exec_us = exec_us;
    ev.ready_us = ready_us;
    ev.zygote = agent_user_in_zygote();
    send_event(&ev);
}

static void on_user_failed(const char *msg)
{
    char q[512];
    agent_front_set_ready(0);
    FAAS_ERROR("event=specialize_failed fn=%s msg=%s", ag.cmd.spec.name ? ag.cmd.spec.name : "",
               faas_log_quote(q, sizeof(q), msg, strlen(msg)));
    if (ag.opts->standalone) {
        printf("FAILED msg=%s\n", q);
        fflush(stdout);
        quit(1);
    }
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__FAILED;
    ev.port = ag.port;
    ev.message = (char *)msg;
    send_event(&ev);
}

static void on_user_exit(int status, int was_ready)
{
    FAAS_WARN("event=user_exit fn=%s status=%d was_ready=%d", ag.cmd.spec.name, status, was_ready);
    /* the instance is gone: say so to every dispatcher at once, so it stops picking it
     * before discovery's deregistration reaches it */
    h2b_goaway_all(AGENT_GOAWAY_GONE);
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__USER_EXIT;
    ev.port = ag.port;
    ev.exit_status = status;
    send_event(&ev);
}

/* Says the verdict on the control channel at once: OVERLOAD with its degree and signal,
 * or RECOVERED. */
static void report(const agent_ol_verdict_t *v, uint32_t inflight)
{
    char msg[128];
    int fire = v->action == AGENT_OL_FIRE;
    int n = snprintf(msg, sizeof(msg), "signal=%s degree=%u inflight=%u wait_ratio=%.2f", v->signal, v->degree,
                     inflight, v->ratio);
    if (ag.cmd.spec.concurrency != 0 && n > 0 && (size_t)n < sizeof(msg))
        snprintf(msg + n, sizeof(msg) - (size_t)n, " concurrency=%u", ag.cmd.spec.concurrency);
    FAAS_INFO("event=%s fn=%s %s", fire ? "overload" : "recovered", ag.cmd.spec.name, msg);
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = fire ? FAAS__AGENT_EVENT__TYPE__OVERLOAD : FAAS__AGENT_EVENT__TYPE__RECOVERED;
    ev.port = ag.port;
    ev.message = msg;
    ev.degree = fire ? v->degree : 0;
    ev.signal = (char *)v->signal;
    send_event(&ev);
}

/* The worker manager times a scale-up to the new instance's first request. */
static void on_first_request(void)
{
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__FIRST_REQUEST;
    ev.port = ag.port;
    send_event(&ev);
}

/* The concurrency cap reached: the last-resort trigger. */
static void on_overload(uint32_t inflight, uint32_t limit)
{
    agent_ol_verdict_t v = agent_ol_cap(&ag.ol, faas_now_us(), inflight, limit);
    if (v.action != AGENT_OL_NONE)
        report(&v, inflight);
}

static void on_ol_tick(evl_timer_t *t)
{
    agent_ol_sample_t s = {.t_us = faas_now_us()};
    agent_front_stats(&s.inflight, &s.completions, &s.latency_us);
    agent_cg_read(&ag.cg, &s);
    s.has_runq = ag.has_runq;
    s.runq_wait_ns = ag.runq_wait_ns;
    agent_ol_verdict_t v = agent_ol_feed(&ag.ol, &s);
    if (v.action != AGENT_OL_NONE)
        report(&v, s.inflight);
    evl_timer_start(ag.loop, &ag.ol_tick, AGENT_OL_TICK_US / 1000);
}

/* The detector runs in every agent, with no configuration: it says which signals this
 * pod has, then samples every tick. */
static void overload_start(void)
{
    /* standalone (no worker manager) there is no message: no quota known, no figures */
    const Faas__Specialize *sp = ag.cmd.msg != NULL ? ag.cmd.msg->specialize : NULL;
    const Faas__Resources *r = sp != NULL && sp->spec != NULL ? sp->spec->resources : NULL;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    agent_ol_init(&ag.ol);
    ag.ol.cpus = r != NULL && r->cpu_millis != 0 ? r->cpu_millis / 1000.0 : online > 0 ? (double)online : 1.0;
    ag.has_runq = sp != NULL && sp->runq;
    agent_cg_open(&ag.cg);
    FAAS_INFO("event=overload_signals fn=%s queueing=1 runq_latency=%d cpu_pressure=%d cpu_throttled=%d cpus=%.2f",
              ag.cmd.spec.name, ag.has_runq, ag.cg.has_psi, ag.cg.has_throttle, ag.ol.cpus);
    ag.ol_tick.cb = on_ol_tick;
    evl_timer_start(ag.loop, &ag.ol_tick, AGENT_OL_TICK_US / 1000);
}

/* The worker manager keeps the totals (faas_wm_seccomp_denials_total): we send deltas. */
static void on_user_denials(const agent_deny_delta_t *d, size_t n)
{
    Faas__SyscallDenials items[AGENT_DENY_MAX], *ptrs[AGENT_DENY_MAX];
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__SECCOMP_DENIALS;
    for (size_t i = 0; i < n && i < AGENT_DENY_MAX; i++) {
        faas__syscall_denials__init(&items[i]);
        items[i].syscall = (char *)d[i].name;
        items[i].count = d[i].count;
        ptrs[i] = &items[i];
    }
    ev.n_denials = n < AGENT_DENY_MAX ? n : AGENT_DENY_MAX;
    ev.denials = ptrs;
    send_event(&ev);
}

static const agent_user_cbs_t user_cbs = {on_user_ready, on_user_failed, on_user_exit, on_user_denials};

/* LOG_ROTATE (the file is full) and LOG_DROPPED (lines were lost while it rotated), with
 * this agent's totals: the worker manager counts the difference per function. */
static void log_event(int type, uint64_t dropped_bytes, uint64_t dropped_lines)
{
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = type;
    ev.port = ag.port;
    ev.log_dropped_bytes = dropped_bytes;
    ev.log_dropped_lines = dropped_lines;
    send_event(&ev);
}

static void on_log_full(uint64_t bytes, uint64_t lines)
{
    log_event(FAAS__AGENT_EVENT__TYPE__LOG_ROTATE, bytes, lines);
}

static void on_log_dropped(uint64_t bytes, uint64_t lines)
{
    log_event(FAAS__AGENT_EVENT__TYPE__LOG_DROPPED, bytes, lines);
}

static const agent_log_cbs_t log_cbs = {on_log_full, on_log_dropped};

/* ---- specialization ---- */

/* userns_fd: an image's user namespace (taken), else -1. */
static void specialize(uint64_t t0_us, int userns_fd)
{
    const char *err = NULL;
    agent_spec_t *spec = &ag.cmd.spec;
    ag.specialized = 1;
    if (spec->image != NULL)
        FAAS_INFO("event=specialize fn=%s instance=%s image_root=%s exe=%s uid=%u gid=%u", spec->name,
                  spec->instance_id, spec->image->root, spec->image->exe, spec->image->uid, spec->image->gid);
    else
        FAAS_INFO("event=specialize fn=%s instance=%s dir=%s", spec->name, spec->instance_id, spec->code_dir);
    /* standalone there is no worker manager to rotate the file: stderr, unbounded */
    agent_log_init(ag.log_fd, spec->log_max_bytes, spec->name, spec->instance_id,
                   ag.opts->standalone ? NULL : &log_cbs);
    if (agent_user_start(ag.loop, spec, userns_fd, t0_us, &user_cbs, &err) != 0) {
        on_user_failed(err);
        return;
    }
    agent_proxy_set_upstream(ag.loop, agent_user_port(), spec->max_duration_ms);
    const Faas__Specialize *sp = ag.cmd.msg != NULL ? ag.cmd.msg->specialize : NULL;
    agent_thrift_configure(ag.loop, agent_user_port(),
                           sp != NULL && sp->spec != NULL ? sp->spec->thrift_transport
                                                          : getenv("FAAS_THRIFT_TRANSPORT"));
    agent_front_set_overload(spec->concurrency, on_overload);
    agent_front_on_first(on_first_request);
    overload_start();
}

/* The fds a packet may carry: the log file, then (SPECIALIZE of an image) a user namespace. */
#define PACKET_FDS 2

/* Receives one packet and the fds that came with it (the first PACKET_FDS kept, in order,
 * -1 where none came; others closed). */
static ssize_t recv_packet(uint8_t *buf, size_t cap, int fd_out[PACKET_FDS])
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 4)];
    } cbuf;
    struct iovec iov = {buf, cap};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b, .msg_controllen = sizeof(cbuf.b)};
    ssize_t n = recvmsg(ag.control_fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    size_t kept = 0;
    for (size_t i = 0; i < PACKET_FDS; i++)
        fd_out[i] = -1;
    if (n < 0)
        return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[4];
        memcpy(fds, CMSG_DATA(c), nfd * sizeof(int));
        for (size_t i = 0; i < nfd; i++) {
            if (kept < PACKET_FDS)
                fd_out[kept++] = fds[i];
            else
                close(fds[i]);
        }
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        errno = EMSGSIZE;
        return -2;
    }
    return n;
}

/* The worker manager's run-queue figures: kept for the next sample. An alert was judged
 * and reported by the worker manager already (this agent, in the saturated cgroup, reads
 * it late): the detector takes the overload on, to say RECOVERED when it is over. */
static void on_runq(const Faas__AgentCommand *m)
{
    if (!ag.specialized || !ag.has_runq)
        return;
    ag.runq_wait_ns = m->runq_wait_ns;
    if (m->runq_hot_us == 0)
        return;
    agent_ol_verdict_t v = agent_ol_runq_alert(&ag.ol, faas_now_us(), m->runq_waiting);
    if (v.action == AGENT_OL_FIRE)
        FAAS_INFO("event=overload fn=%s signal=runq_latency degree=%u waiting=%u hot_us=%llu judged_by=worker-manager",
                  ag.cmd.spec.name, v.degree, m->runq_waiting, (unsigned long long)m->runq_hot_us);
}

static void close_fds(int fds[PACKET_FDS], size_t from)
{
    for (size_t i = from; i < PACKET_FDS; i++)
        if (fds[i] >= 0)
            close(fds[i]), fds[i] = -1;
}

/* 1 if fd is a user namespace (what an image's SPECIALIZE brings second). */
static int is_userns(int fd)
{
    return fd >= 0 && ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWUSER;
}

/* SPECIALIZE: fds[0] the log file, fds[1] an image's user namespace. */
static void on_specialize(agent_cmd_t *cmd, int fds[PACKET_FDS], uint64_t t0_us)
{
    if (ag.specialized) {
        agent_cmd_free(cmd);
        close_fds(fds, 0);
        FAAS_WARN("event=specialize_ignored reason=already_specialized");
        return;
    }
    if (cmd->spec.image != NULL && !is_userns(fds[1])) {
        agent_cmd_free(cmd);
        close_fds(fds, 0);
        on_user_failed("no user namespace for the image");
        return;
    }
    if (cmd->spec.image == NULL)
        close_fds(fds, 1);
    ag.cmd = *cmd;
    ag.log_fd = fds[0];
    specialize(t0_us, fds[1]);
}

static void handle_command(const uint8_t *buf, size_t len, int fds[PACKET_FDS], uint64_t t0_us)
{
    agent_cmd_t cmd;
    const char *err = NULL;
    if (agent_cmd_decode(buf, len, &cmd, &err) != 0) {
        close_fds(fds, 0);
        on_user_failed(err);
        return;
    }
    if (cmd.type == FAAS__AGENT_COMMAND__TYPE__SPECIALIZE) {
        on_specialize(&cmd, fds, t0_us);
        return;
    }
    close_fds(fds, 1); /* only SPECIALIZE brings a second */
    if (cmd.type == FAAS__AGENT_COMMAND__TYPE__LOG_FD && ag.specialized && fds[0] >= 0)
        agent_log_swap(fds[0]); /* the new file takes the next line */
    else
        close_fds(fds, 0);
    if (cmd.type == FAAS__AGENT_COMMAND__TYPE__CANCEL_TASK) {
        FAAS_INFO("event=cancel_task task=%s", cmd.msg->task_id);
        agent_task_cancel(cmd.msg->task_id);
    } else if (cmd.type == FAAS__AGENT_COMMAND__TYPE__RUNQ) {
        on_runq(cmd.msg);
    } else if (cmd.type == FAAS__AGENT_COMMAND__TYPE__STOP) {
        FAAS_INFO("event=stop");
        quit(0);
    }
    agent_cmd_free(&cmd);
}

static void on_control(evl_io_t *io, int events)
{
    static uint8_t buf[CONTROL_MAX_PACKET]; /* bss: costs no memory until a packet arrives */
    if ((events & EVL_WRITE) && ag.out_head != NULL && flush_out() == 0)
        evl_io_set(io, EVL_READ);
    if (!(events & EVL_READ))
        return;
    for (;;) {
        int fds[PACKET_FDS];
        uint64_t t0 = faas_now_us();
        ssize_t n = recv_packet(buf, sizeof(buf), fds);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n == 0 || (n < 0 && n != -2)) {
            /* the worker manager is gone: so are we */
            FAAS_INFO("event=control_closed");
            quit(0);
            evl_io_stop(io);
            return;
        }
        if (n == -2) {
            close_fds(fds, 0);
            on_user_failed("control packet too large");
            continue;
        }
        handle_command(buf, (size_t)n, fds, t0);
        if (ag.exit)
            return;
    }
}

/* ---- signals ---- */

static void on_signal(evl_io_t *io, int events)
{
    struct signalfd_siginfo si;
    int fd = io->fd;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD) {
            agent_user_reap(); /* a forged one only makes us look */
        } else if (!agent_signal_may_stop(getpid() == 1, si.ssi_code, si.ssi_pid)) {
            FAAS_WARN("event=signal_ignored signo=%u from_pid=%u msg=\"sent from inside the pod\"", si.ssi_signo,
                      si.ssi_pid);
        } else {
            FAAS_INFO("event=signal signo=%u", si.ssi_signo);
            quit(0);
        }
    }
}

static int setup_signals(void)
{
    static int sfd;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        return -1;
    return evl_io_start(ag.loop, &ag.signal_io, sfd, EVL_READ, on_signal);
}

/* ---- listener ---- */

static int open_listener(const char *addr, uint16_t *port_out, const char **err)
{
    char host[256];
    uint16_t port;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    if (faas_parse_hostport(addr, host, sizeof(host), &port, err) != 0)
        return -1;
    if (host[0] == '\0')
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
        return *err = "--listen needs an IPv4 address", -1;
    sin.sin_port = htons(port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return *err = "socket failed", -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 1024) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
        close(fd);
        return *err = "cannot bind the listener", -1;
    }
    *port_out = ntohs(sin.sin_port);
    return fd;
}

/* Fills ag.cmd.spec from the standalone flags. */
static int standalone_spec(const agent_opts_t *o, const char **err)
{
    agent_spec_t *s = &ag.cmd.spec;
    size_t argc;
    if (o->cmd == NULL || o->dir == NULL)
        return *err = "--standalone needs --cmd and --dir", -1;
    if (agent_split_cmd(o->cmd, &ag.standalone_argv, &argc, err) != 0)
        return -1;
    static char dir[4096];
    if (realpath(o->dir, dir) == NULL)
        return *err = "--dir does not exist", -1;
    memset(s, 0, sizeof(*s));
    s->name = o->name ? o->name : "standalone";
    s->instance_id = "standalone";
    s->code_dir = dir;
    s->argv = ag.standalone_argv;
    s->argc = argc;
    s->port_env = o->port_env;
    s->port = (uint16_t)o->user_port;
    s->probe_kind = o->probe_tcp ? AGENT_PROBE_TCP : AGENT_PROBE_HTTP;
    s->probe_path = o->health_path;
    s->cold_start_timeout_ms = o->cold_start_timeout_ms;
    agent_spec_defaults(s);
    return 0;
}

static void hello(void)
{
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = FAAS__AGENT_EVENT__TYPE__HELLO;
    ev.port = ag.port;
    ev.direct_port = ag.direct_port;
    ev.zygote = ag.zygote;
    send_event(&ev);
}

/* HELLO waits for a zygote's imports: a pod is warm once a function would find them done
 * (one taken half-way paid the rest of the imports, up to a second and a half) */
static void on_zygote_settled(int ready)
{
    ag.zygote = ready;
    if (!ag.opts->standalone)
        hello();
}

static int setup_control(int fd)
{
    ag.control_fd = fd;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (evl_io_start(ag.loop, &ag.control_io, fd, EVL_READ, on_control) != 0)
        return -1;
    if (!ag.zygote)
        hello();
    return 0;
}

int agent_run(const agent_opts_t *o)
{
    const char *err = NULL;
    ag.opts = o;
    ag.loop = evl_loop_new();
    if (ag.loop == NULL || setup_signals() != 0) {
        FAAS_ERROR("event=start_failed msg=\"loop or signal setup failed\"");
        return 1;
    }
    agent_task_init(ag.loop, o->standalone ? NULL : send_packet);
    /* the front starts before any spec is known: the default bound is the agent's */
    agent_front_init(ag.loop, FAAS_SPEC_DEFAULT_MAX_BODY_BYTES);
    int lfd = open_listener(o->listen, &ag.port, &err);
    if (lfd < 0 || agent_front_listen(lfd) != 0) {
        FAAS_ERROR("event=start_failed msg=\"%s\"", err ? err : "listener setup failed");
        return 1;
    }
    if (agent_direct_bind(lfd, &ag.direct_port) != 0) /* the gateway path works without it */
        FAAS_WARN("event=direct_bind_failed err=\"%s\"", strerror(errno));
    FAAS_INFO("event=listening port=%u direct_port=%u", ag.port, ag.direct_port);
    /* libseccomp takes ~1 ms to build the filter: here, while the pod waits in the warm
     * pool, not on the cold start path (a failure is retried, and reported, at spawn) */
    if (agent_seccomp_prepare(&err) != 0)
        FAAS_WARN("event=seccomp_prepare_failed msg=\"%s\"", err);
    /* a pod of the worker manager's Python pool: the interpreter starts and imports now,
     * while the pod waits, not on the cold start path (docs/zygotes.md) */
    const char *python = getenv("FAAS_AGENT_ZYGOTE");
    if (python != NULL && python[0] != '\0')
        ag.zygote = agent_user_zygote_start(ag.loop, python, getenv("FAAS_AGENT_ZYGOTE_PRELOAD"),
                                            o->standalone ? NULL : on_zygote_settled) == 0;
    if (o->standalone) {
        uint64_t t0 = faas_now_us();
        if (standalone_spec(o, &err) != 0) {
            FAAS_ERROR("event=start_failed msg=\"%s\"", err);
            return 2;
        }
        specialize(t0, -1);
    } else if (setup_control(o->control_fd) != 0) {
        FAAS_ERROR("event=start_failed msg=\"bad control fd\"");
        return 1;
    }
    while (!ag.exit)
        if (evl_run_once(ag.loop, -1) != 0)
            break;
    agent_user_kill(KILL_GRACE_MS);
    FAAS_INFO("event=exit code=%d", ag.exit_code);
    return ag.exit_code;
}
