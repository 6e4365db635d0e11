/* worker-manager/runq.c - the host's run-queue latency probe (bpf/runq.bpf.c): loaded
 * once by the worker manager, which runs as root, for the pods of this worker. The
 * agents run unprivileged and get their pod's figures over the control channel
 * (pods.c). Built without it (WM_HAVE_BPF=0) when bpftool, clang, libbpf or the
 * kernel's BTF were missing at build time; then wm_runq_open says so and the agents
 * judge from the cgroup signals alone. */
#include "worker-manager/runq.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#ifndef WM_HAVE_BPF
#define WM_HAVE_BPF 0
#endif

#if WM_HAVE_BPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "worker-manager/bpf/runq.h"
#include "worker-manager/runq.skel.h"

static struct {
    struct runq *skel;
    struct ring_buffer *rb;
    int pods_fd;
    wm_runq_alert_fn cb;
    void *ud;
} R = {.pods_fd = -1};

/* libbpf prints its own diagnostics on stderr; the reason we give is enough. */
static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    return 0;
}

static int on_ring(void *ctx, void *data, size_t size)
{
    const struct runq_alert *a = data;
    if (size >= sizeof(*a) && R.cb != NULL)
        R.cb(R.ud, a->cgroup_id, a->waiting, a->hot_ns);
    return 0;
}

static void fail(char *err, size_t cap, const char *what, int rc)
{
    snprintf(err, cap, "%s: %s", what, strerror(rc < 0 ? -rc : rc));
}

int wm_runq_open(wm_runq_alert_fn cb, void *ud, char *err, size_t cap)
{
    libbpf_set_print(quiet);
    R.skel = runq__open();
    if (R.skel == NULL) {
        fail(err, cap, "open", errno);
        return -1;
    }
    int rc = runq__load(R.skel);
    if (rc != 0) {
        fail(err, cap, "load (needs root and a kernel with BTF)", rc);
        goto fail;
    }
    if ((rc = runq__attach(R.skel)) != 0) {
        fail(err, cap, "attach to sched_wakeup/sched_switch (tp_btf)", rc);
        goto fail;
    }
    R.cb = cb;
    R.ud = ud;
    R.rb = ring_buffer__new(bpf_map__fd(R.skel->maps.alerts), on_ring, NULL, NULL);
    if (R.rb == NULL) {
        fail(err, cap, "ring buffer", errno);
        goto fail;
    }
    R.pods_fd = bpf_map__fd(R.skel->maps.pods);
    return 0;
fail:
    runq__destroy(R.skel);
    R.skel = NULL;
    return -1;
}

int wm_runq_fd(void)
{
    return R.rb != NULL ? ring_buffer__epoll_fd(R.rb) : -1;
}

void wm_runq_poll(void)
{
    if (R.rb != NULL)
        (void)ring_buffer__consume(R.rb);
}

uint64_t wm_runq_watch(const char *cgroup_dir)
{
    struct stat st;
    if (R.skel == NULL || cgroup_dir[0] == '\0' || stat(cgroup_dir, &st) != 0)
        return 0;
    uint64_t id = (uint64_t)st.st_ino; /* a cgroup v2 id is its directory's inode */
    struct runq_pod zero = {0};
    return bpf_map_update_elem(R.pods_fd, &id, &zero, BPF_ANY) == 0 ? id : 0;
}

void wm_runq_unwatch(uint64_t id)
{
    if (R.skel != NULL && id != 0)
        (void)bpf_map_delete_elem(R.pods_fd, &id);
}

int wm_runq_read(uint64_t id, wm_runq_figures_t *f)
{
    struct runq_pod p;
    if (R.skel == NULL || id == 0 || bpf_map_lookup_elem(R.pods_fd, &id, &p) != 0)
        return -1;
    f->wait_ns = p.wait_ns;
    f->waits = p.waits;
    f->waiting = p.waiting;
    return 0;
}

void wm_runq_close(void)
{
    ring_buffer__free(R.rb);
    R.rb = NULL;
    runq__destroy(R.skel);
    R.skel = NULL;
    R.pods_fd = -1;
}

#else /* !WM_HAVE_BPF */

int wm_runq_open(wm_runq_alert_fn cb, void *ud, char *err, size_t cap)
{
    snprintf(err, cap, "built without BPF (bpftool, clang, libbpf-dev or /sys/kernel/btf/vmlinux was missing)");
    return -1;
}
int wm_runq_fd(void)
{
    return -1;
}
void wm_runq_poll(void)
{
}
uint64_t wm_runq_watch(const char *cgroup_dir)
{
    return 0;
}
void wm_runq_unwatch(uint64_t id)
{
}
int wm_runq_read(uint64_t id, wm_runq_figures_t *f)
{
    return -1;
}
void wm_runq_close(void)
{
}

#endif
