/* worker-manager/logname.c - the pure half of logrot.c: where a function's log files are
 * and what an agent's reported totals add, apart so that the fuzz driver links them. */
#define WM_STATE
#include "worker-manager/internal.h"

int wm_log_path(char *out, size_t cap, const char *state_dir, const char *fn, unsigned idx)
{
    if (idx == 0)
        return wm_fmt(out, cap, "%s/logs/%s.log", state_dir, fn);
    return wm_fmt(out, cap, "%s/logs/%s.log.%u", state_dir, fn, idx);
}

uint64_t wm_log_delta(uint64_t *seen, uint64_t total)
{
    /* totals only grow in one agent; a smaller one is a confused agent, not a credit */
    uint64_t d = total > *seen ? total - *seen : 0;
    if (total > *seen)
        *seen = total;
    return d;
}
