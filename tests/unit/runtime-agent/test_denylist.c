/* Unit tests for runtime-agent/denylist.c (what the seccomp filter refuses, the tally and
 * its once-a-second reports), seccomp.c's programs, and spec.c's rule on who may stop
 * the agent. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime-agent/internal.h"

Test(agent_denylist, has_what_the_issue_names_and_fits_a_tally)
{
    static const char *const must[] = {"mount",   "kexec_load", "kexec_file_load", "bpf",          "perf_event_open",
                                       "ptrace",  "keyctl",     "init_module",     "finit_module", "delete_module",
                                       "unshare", "clone",      "setns",           "pidfd_getfd",  "process_vm_readv"};
    size_t n;
    const agent_deny_t *list = agent_deny_list(&n);
    cr_assert_leq(n, AGENT_DENY_MAX);
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
        cr_assert_geq(agent_deny_index(must[i]), 0, "%s is not refused", must[i]);
    /* what every server needs stays allowed */
    static const char *const never[] = {"clone3", "read", "execve", "socket", "kill", "mmap", "prctl"};
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        cr_assert_eq(agent_deny_index(never[i]), -1, "%s is refused", never[i]);
    /* only user namespaces are refused of clone and unshare: fork and threads go on */
    cr_assert_eq(list[agent_deny_index("clone")].only, AGENT_DENY_NEWUSER);
    cr_assert_eq(list[agent_deny_index("unshare")].only, AGENT_DENY_NEWUSER);
    cr_assert_eq(list[agent_deny_index("mount")].only, 0);
}

Test(agent_denylist, first_denial_of_each_syscall_is_logged_once)
{
    agent_deny_tally_t t = {0};
    int mount = agent_deny_index("mount"), bpf = agent_deny_index("bpf");
    cr_assert_eq(agent_deny_note(&t, mount), 1);
    cr_assert_eq(agent_deny_note(&t, mount), 0);
    cr_assert_eq(agent_deny_note(&t, bpf), 1);
    cr_assert_eq(agent_deny_note(&t, -1), 0);
    cr_assert_eq(agent_deny_note(&t, AGENT_DENY_MAX), 0);
    cr_assert_eq(t.pending[mount], 2);
}

Test(agent_denylist, reports_at_once_then_at_most_every_second)
{
    agent_deny_tally_t t = {0};
    agent_deny_delta_t d[AGENT_DENY_MAX];
    int mount = agent_deny_index("mount"), bpf = agent_deny_index("bpf");
    cr_assert_eq(agent_deny_due(&t, 5000), -1, "nothing pending");
    agent_deny_note(&t, mount);
    cr_assert_eq(agent_deny_due(&t, 5000), 0, "the first report goes at once");
    cr_assert_eq(agent_deny_take(&t, 5000, d, AGENT_DENY_MAX), 1);
    cr_assert_str_eq(d[0].name, "mount");
    cr_assert_eq(d[0].count, 1);
    cr_assert_eq(agent_deny_due(&t, 5100), -1);
    agent_deny_note(&t, mount);
    agent_deny_note(&t, bpf);
    agent_deny_note(&t, bpf);
    cr_assert_eq(agent_deny_due(&t, 5100), 900, "then a second after the last");
    cr_assert_eq(agent_deny_due(&t, 6000), 0);
    size_t n = agent_deny_take(&t, 6000, d, AGENT_DENY_MAX);
    cr_assert_eq(n, 2);
    /* list order: mount comes before bpf */
    cr_assert_str_eq(d[0].name, "mount");
    cr_assert_eq(d[0].count, 1);
    cr_assert_str_eq(d[1].name, "bpf");
    cr_assert_eq(d[1].count, 2);
    cr_assert_eq(agent_deny_due(&t, 6000), -1, "deltas: nothing left");
}

Test(agent_denylist, a_short_report_leaves_the_rest_pending)
{
    agent_deny_tally_t t = {0};
    agent_deny_delta_t d[1];
    agent_deny_note(&t, agent_deny_index("mount"));
    agent_deny_note(&t, agent_deny_index("bpf"));
    cr_assert_eq(agent_deny_take(&t, 1000, d, 1), 1);
    cr_assert(t.any_pending);
    cr_assert_eq(agent_deny_take(&t, 2000, d, 1), 1);
    cr_assert_str_eq(d[0].name, "bpf");
    cr_assert_not(t.any_pending);
}

Test(agent_signals, as_pod_init_only_signals_from_outside_stop_the_agent)
{
    cr_assert(agent_signal_may_stop(1, SI_USER, 0), "kill from the worker manager's namespace");
    cr_assert(agent_signal_may_stop(1, SI_KERNEL, 0), "the terminal's Ctrl-C");
    cr_assert_not(agent_signal_may_stop(1, SI_USER, 7), "kill from the user server");
    cr_assert_not(agent_signal_may_stop(1, SI_QUEUE, 0), "sigqueue forging pid 0");
    cr_assert_not(agent_signal_may_stop(1, SI_TKILL, 0), "tgkill");
    cr_assert(agent_signal_may_stop(0, SI_USER, 1234), "standalone: anyone");
}

/* The programs seccomp.c builds, installed in a child: refused calls fail, clone3 says
 * ENOSYS, ordinary calls work. With the listener closed the kernel answers notified
 * calls itself (ENOSYS), so no agent is needed here. */
Test(agent_seccomp, the_filter_refuses_and_allows_what_it_should)
{
    const char *err = NULL;
    cr_assert_eq(agent_seccomp_prepare(&err), 0, "%s", err ? err : "");
    pid_t pid = fork();
    if (pid == 0) {
        int fd = agent_seccomp_install();
        if (fd == -2)
            _exit(10);
        if (fd >= 0)
            close(fd);
        if (syscall(SYS_keyctl, 0, -3, 0) != -1)
            _exit(11);
        if (syscall(SYS_unshare, 0x10000000 /* CLONE_NEWUSER */) != -1)
            _exit(12);
        if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
            _exit(13);
        if (syscall(SYS_unshare, 0) != 0 || getpid() <= 0)
            _exit(14);
        _exit(0);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
}
