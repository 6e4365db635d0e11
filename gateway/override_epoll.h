/* gateway/override_epoll.h - the gateway binary's override of libc's epoll_create,
 * epoll_ctl, epoll_wait and close: lazy interest removal for the h2o loop's epoll set
 * (see override_epoll.c for why and how, docs/performance.md for what it buys).
 * Built in unless `make OVERRIDE_EPOLL=0`; FAAS_GW_OVERRIDE_EPOLL=0 in the environment
 * leaves it unarmed at run time; gw_run checks h2o against it at start-up and releases
 * the set when h2o does not behave as the override assumes. */
#ifndef GW_OVERRIDE_EPOLL_H
#define GW_OVERRIDE_EPOLL_H

#include <stdint.h>

#ifndef GW_OVERRIDE_EPOLL
#define GW_OVERRIDE_EPOLL 1
#endif

typedef struct {
    uint64_t lib_ctl;  /* epoll_ctl calls made on the managed set */
    uint64_t real_ctl; /* epoll_ctl syscalls they (and hidden events) cost */
    uint64_t hidden;   /* events the library no longer wanted, not delivered */
} gw_override_epoll_stats_t;

/* The next epoll_create() on this thread (the first one only, per thread) makes
 * this thread's managed set; call around h2o_evloop_create(). No-ops when built
 * without, or after a release. */
void gw_override_epoll_arm(void);
void gw_override_epoll_disarm(void);
/* This thread's managed set's fd, or -1. */
int gw_override_epoll_fd(void);
/* Counters of this thread's managed set. */
void gw_override_epoll_get_stats(gw_override_epoll_stats_t *out);
/* Stops managing this thread's set, and no set is managed after it: every fd gets
 * exactly the interest and data its user asked for, and later calls pass straight
 * through. Loop thread, nothing in epoll_wait, before other loops start. */
void gw_override_epoll_release(void);

#endif
