/* worker-manager/runq.h - run-queue latency of this worker's pods, from eBPF
 * (runq.c, bpf/runq.bpf.c). One probe per process; the pod thread drives it. */
#ifndef WM_RUNQ_H
#define WM_RUNQ_H

#include <stddef.h>
#include <stdint.h>

/* waiting tasks of a pod wait for CPU now, two or more of them without a break for hot_ns. */
typedef void (*wm_runq_alert_fn)(void *ud, uint64_t cgroup_id, uint64_t waiting, uint64_t hot_ns);

/* Loads and attaches the probe; alerts go to cb from wm_runq_poll. 0, or -1 with why in
 * err (not root, no BTF, built without BPF): the platform then runs without it. */
int wm_runq_open(wm_runq_alert_fn cb, void *ud, char *err, size_t cap);
/* The fd to poll for alerts (-1 when closed). */
int wm_runq_fd(void);
/* Delivers the pending alerts. */
void wm_runq_poll(void);
/* Starts measuring the tasks of the cgroup v2 directory; its id, or 0 when not possible. */
uint64_t wm_runq_watch(const char *cgroup_dir);
void wm_runq_unwatch(uint64_t id);
typedef struct {
    uint64_t wait_ns; /* the pod's tasks' run-queue waits since it was watched, summed */
    uint64_t waits;   /* how many */
    int64_t waiting;  /* its tasks waiting for CPU now */
} wm_runq_figures_t;
/* The pod's figures; 0 or -1. */
int wm_runq_read(uint64_t id, wm_runq_figures_t *f);
void wm_runq_close(void);

#endif
