/* gateway/epoll_lazy.h - lazy interest removal for the h2o loop's epoll set (see
 * epoll_lazy.c for why and how). */
#ifndef GW_EPOLL_LAZY_H
#define GW_EPOLL_LAZY_H

#include <stdint.h>

typedef struct {
    uint64_t lib_ctl;  /* epoll_ctl calls made on the managed set */
    uint64_t real_ctl; /* epoll_ctl syscalls they (and hidden events) cost */
    uint64_t hidden;   /* events the library no longer wanted, not delivered */
} gw_epoll_lazy_stats_t;

/* The next epoll_create() on this thread (the first one only, process-wide) makes
 * the managed set; call around h2o_evloop_create(). */
void gw_epoll_lazy_arm(void);
void gw_epoll_lazy_disarm(void);
/* The managed set's fd, or -1. */
int gw_epoll_lazy_fd(void);
/* Counters of the managed set (loop thread only). */
void gw_epoll_lazy_get_stats(gw_epoll_lazy_stats_t *out);

#endif
