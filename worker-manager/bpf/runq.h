/* worker-manager/bpf/runq.h - what the run-queue BPF program (runq.bpf.c) and the
 * worker manager (runq.c) share: the per-pod record and the alert. Fixed-width types
 * only, so it compiles for the BPF target and for the host. */
#ifndef WM_BPF_RUNQ_H
#define WM_BPF_RUNQ_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Pods watched at once on one host. */
#define RUNQ_MAX_PODS 4096
/* An alert: at least RUNQ_HOT_TASKS of the pod's tasks have been waiting for a CPU,
 * without a break, for RUNQ_HOT_NS. Three: a pod serving one request at a time has two
 * tasks that may run (its agent and the thread serving it), and on a host busy with
 * other work both wait now and then; a third means requests are served side by side
 * and still wait (2 let a sequential client on a loaded CI host look overloaded). 1 ms,
 * at least one scheduler slice (0.75-3 ms): the waiting set has outlasted a round of
 * wake-up preemptions, yet a step to saturation is reported within the 5 ms aimed for.
 * The worker manager judges the alert alone (docs/scaling.md), without the agent's
 * count of requests in flight, so this count stands in for it. */
#define RUNQ_HOT_TASKS 3
#define RUNQ_HOT_NS 1000000ull
/* One alert per pod per this: the agent's reminder (and the worker manager's scale-up)
 * then goes at the agent's own pace. */
#define RUNQ_ALERT_GAP_NS 50000000ull

/* Value of the pods map, keyed by the pod's cgroup v2 id (its directory's inode). */
struct runq_pod {
    __u64 wait_ns;  /* run-queue waits of the pod's tasks, summed */
    __u64 waits;    /* how many waits */
    __s64 waiting;  /* its tasks runnable and not running now */
    __u64 hot_ns;   /* since when RUNQ_HOT_TASKS or more have been waiting (0: not) */
    __u64 alert_ns; /* the last alert */
};

/* Ring buffer record: waiting tasks of the pod have been waiting for CPU, at least
 * RUNQ_HOT_TASKS of them without a break for hot_ns. */
struct runq_alert {
    __u64 cgroup_id;
    __u64 waiting;
    __u64 hot_ns;
};

#endif
