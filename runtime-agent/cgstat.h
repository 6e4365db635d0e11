/* runtime-agent/cgstat.h - the pod cgroup's CPU pressure and throttling, as the
 * overload detector samples them (cgroup v1 or v2; whichever the host has). */
#ifndef AGENT_CGSTAT_H
#define AGENT_CGSTAT_H

#include <limits.h>
#include <stdint.h>

#include "runtime-agent/overload.h"

/* The files found for this process's cgroup; has_* = 0 when the signal is not there. */
typedef struct {
    int has_psi, has_throttle; /* throttling only counts when a quota is set */
    char psi[PATH_MAX], stat[PATH_MAX];
} agent_cg_t;

/* Finds this process's cpu.pressure and cpu.stat (with a quota). */
void agent_cg_open(agent_cg_t *c);
/* Fills the sample's CPU fields (has_* cleared if a read fails). */
void agent_cg_read(const agent_cg_t *c, agent_ol_sample_t *s);
/* cpu.pressure text: the "some" line's total= (us); 0, or -1 if absent. */
int agent_cg_parse_psi(const char *text, uint64_t *some_us);
/* cpu.stat text (v1 or v2): nr_periods and nr_throttled; 0, or -1 if absent. */
int agent_cg_parse_stat(const char *text, uint64_t *periods, uint64_t *throttled);

#endif
