/* runtime-agent/denylist.c - what the user server's seccomp filter refuses, and the tally
 * of refusals the agent reports to the worker manager. Pure (no I/O), so the list and the
 * batching rules are unit-tested; runtime-agent/seccomp.c turns them into a filter. */
#include <string.h>

#include "runtime-agent/internal.h"

/* Every entry is refused with EPERM, what an unprivileged caller of most of them already
 * gets from the kernel, so programs that probe (a runtime trying perf_event_open, a
 * library trying keyctl) take the path they take without privilege. Names this libseccomp
 * does not know are skipped when the filter is built. */
static const agent_deny_t DENY[] = {
    /* the filesystem view is the worker manager's to make */
    {"mount", 0},
    {"umount2", 0},
    {"pivot_root", 0},
    {"open_tree", 0},
    {"move_mount", 0},
    {"fsopen", 0},
    {"fsconfig", 0},
    {"fsmount", 0},
    {"fspick", 0},
    {"mount_setattr", 0},
    {"open_by_handle_at", 0}, /* opens any inode on a mounted filesystem by its handle */
    /* replacing or extending the kernel */
    {"kexec_load", 0},
    {"kexec_file_load", 0},
    {"reboot", 0},
    {"init_module", 0},
    {"finit_module", 0},
    {"delete_module", 0},
    /* kernel programmability and introspection: large attack surface, no server needs it */
    {"bpf", 0},
    {"perf_event_open", 0},
    {"userfaultfd", 0}, /* the classic way to stall the kernel mid-copy in exploits */
    {"syslog", 0},
    /* other processes' memory and fds: ptrace is refused outright (see docs/security.md) */
    {"ptrace", 0},
    {"process_vm_readv", 0},
    {"process_vm_writev", 0},
    {"pidfd_getfd", 0},
    /* kernel keyrings are not namespaced: a key is visible across pods of one uid */
    {"keyctl", 0},
    {"add_key", 0},
    {"request_key", 0},
    /* user namespaces give root-in-namespace and reach kernel code built for root */
    {"unshare", AGENT_DENY_NEWUSER},
    {"clone", AGENT_DENY_NEWUSER},
    {"setns", 0},
    /* host-wide knobs */
    {"swapon", 0},
    {"swapoff", 0},
    {"acct", 0},
    {"quotactl", 0},
    {"iopl", 0},
    {"ioperm", 0},
};

const agent_deny_t *agent_deny_list(size_t *n)
{
    *n = sizeof(DENY) / sizeof(DENY[0]);
    return DENY;
}

int agent_deny_index(const char *name)
{
    for (size_t i = 0; i < sizeof(DENY) / sizeof(DENY[0]); i++)
        if (strcmp(DENY[i].name, name) == 0)
            return (int)i;
    return -1;
}

int agent_deny_note(agent_deny_tally_t *t, int i)
{
    if (i < 0 || (size_t)i >= AGENT_DENY_MAX)
        return 0;
    t->pending[i]++;
    t->any_pending = 1;
    if (t->logged[i])
        return 0;
    t->logged[i] = 1;
    return 1;
}

int64_t agent_deny_due(const agent_deny_tally_t *t, uint64_t now_ms)
{
    if (!t->any_pending)
        return -1;
    if (t->last_ms == 0 || now_ms >= t->last_ms + AGENT_DENY_REPORT_MS)
        return 0;
    return (int64_t)(t->last_ms + AGENT_DENY_REPORT_MS - now_ms);
}

size_t agent_deny_take(agent_deny_tally_t *t, uint64_t now_ms, agent_deny_delta_t *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < AGENT_DENY_MAX && n < cap; i++) {
        if (t->pending[i] == 0)
            continue;
        out[n].name = DENY[i].name;
        out[n++].count = t->pending[i];
        t->pending[i] = 0;
    }
    t->any_pending = 0;
    for (size_t i = 0; i < AGENT_DENY_MAX; i++)
        if (t->pending[i] != 0)
            t->any_pending = 1; /* more than cap: the next report takes the rest */
    t->last_ms = now_ms;
    return n;
}
