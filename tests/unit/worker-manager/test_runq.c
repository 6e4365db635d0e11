/* The run-queue probe against the real kernel: a cgroup of our own with tasks that
 * spin on one CPU must show waits and raise an alert; one whose task sleeps must not.
 * Needs root and BTF (what the worker manager needs); the build says whether it has
 * BPF at all, and a build with it must load here. */
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "worker-manager/bpf/runq.h"
#include "worker-manager/internal.h"
#include "worker-manager/runq.h"

static char dir[PATH_MAX];
static uint64_t alerted_id, alerted_waiting, alerted_hot;

static void on_alert(void *ud, uint64_t id, uint64_t waiting, uint64_t hot_ns)
{
    alerted_id = id;
    alerted_waiting = waiting;
    alerted_hot = hot_ns;
}

static void setup(void)
{
    wm_cg_layout_t L;
    const char *why;
    cr_assert_eq(wm_cg_detect("/sys/fs/cgroup", &L, &why), 0);
    cr_assert_neq(L.v2[0], '\0', "no cgroup v2 hierarchy");
    wm_fmt(dir, sizeof(dir), "%s/faas-runq-test-%d", L.v2, (int)getpid());
    cr_assert_eq(mkdir(dir, 0755), 0, "mkdir %s: %m", dir);
    char err[256];
    cr_assert_eq(wm_runq_open(on_alert, NULL, err, sizeof(err)), 0, "runq: %s", err);
}

static void teardown(void)
{
    wm_runq_close();
    for (int i = 0; i < 200 && rmdir(dir) != 0; i++)
        usleep(10000); /* the child's exit is reaped before its cgroup empties */
}

static void *spin(void *arg)
{
    uint64_t end = faas_now_us() + 400000;
    while (faas_now_us() < end)
        ;
    return NULL;
}

/* A child in the cgroup, pinned to one CPU: busy threads spin there (0: it sleeps). */
static pid_t child(int busy)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid != 0)
        return pid;
    char procs[PATH_MAX + 16], self[32];
    wm_fmt(procs, sizeof(procs), "%s/cgroup.procs", dir);
    wm_fmt(self, sizeof(self), "%d", (int)getpid());
    if (wm_write_file(procs, self) != 0)
        _exit(2);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    sched_setaffinity(0, sizeof(one), &one);
    if (busy == 0) {
        usleep(400000);
        _exit(0);
    }
    pthread_t t[8];
    for (int i = 0; i < busy; i++)
        pthread_create(&t[i], NULL, spin, NULL);
    for (int i = 0; i < busy; i++)
        pthread_join(t[i], NULL);
    _exit(0);
}

/* Polls the alert fd until the child exits (bounded by its own 400 ms). */
static void run(pid_t pid)
{
    int st = 0;
    pid_t r = 0;
    for (int i = 0; i < 300 && (r = waitpid(pid, &st, WNOHANG)) == 0; i++) {
        struct pollfd p = {.fd = wm_runq_fd(), .events = POLLIN};
        if (poll(&p, 1, 10) > 0)
            wm_runq_poll();
    }
    if (r == 0)
        r = waitpid(pid, &st, 0);
    cr_assert_eq(r, pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    wm_runq_poll();
}

Test(runq, spinning_tasks_on_one_cpu_wait_and_alert, .init = setup, .fini = teardown)
{
    uint64_t id = wm_runq_watch(dir);
    cr_assert_neq(id, 0);
    run(child(5));
    wm_runq_figures_t f;
    cr_assert_eq(wm_runq_read(id, &f), 0);
    /* five spinners on one CPU for 400 ms: four wait at any time, ~1.6 s in all */
    cr_assert_gt(f.waits, 10, "waits=%lu", (unsigned long)f.waits);
    cr_assert_gt(f.wait_ns, 300000000ull, "wait_ns=%lu", (unsigned long)f.wait_ns);
    cr_assert_eq(f.waiting, 0, "the count drifted: %ld waiting after all exited", (long)f.waiting);
    cr_assert_eq(alerted_id, id, "no alert for the cgroup");
    /* four wait at any time; the count is taken between two events, so 3 to 5 */
    cr_assert(alerted_waiting >= RUNQ_HOT_TASKS && alerted_waiting <= 5, "waiting=%lu", (unsigned long)alerted_waiting);
    cr_assert_geq(alerted_hot, RUNQ_HOT_NS);
    wm_runq_unwatch(id);
    cr_assert_neq(wm_runq_read(id, &f), 0, "still watched after unwatch");
}

Test(runq, a_sleeping_task_raises_nothing, .init = setup, .fini = teardown)
{
    uint64_t id = wm_runq_watch(dir);
    cr_assert_neq(id, 0);
    run(child(0));
    wm_runq_figures_t f;
    cr_assert_eq(wm_runq_read(id, &f), 0);
    cr_assert_lt(f.wait_ns, 50000000ull, "wait_ns=%lu", (unsigned long)f.wait_ns);
    cr_assert_eq(f.waiting, 0);
    cr_assert_eq(alerted_id, 0, "alert for a sleeping task");
}

Test(runq, an_unwatched_or_missing_cgroup_is_refused, .init = setup, .fini = teardown)
{
    wm_runq_figures_t f;
    cr_assert_eq(wm_runq_watch("/nonexistent/cgroup"), 0);
    cr_assert_neq(wm_runq_read(12345, &f), 0);
}
