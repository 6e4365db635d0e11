/* common/theap.h - timers in a binary min-heap by expiry: any number of distinct
 * durations, each exact to the millisecond, O(log n) to arm and disarm. The one timer
 * structure of the evl loops (common/evl.c) and of the dispatcher on h2o's loop. Pure:
 * the caller owns the clock and runs what is due. */
#ifndef FAAS_THEAP_H
#define FAAS_THEAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct faas_timer faas_timer_t;
struct faas_timer {
    uint64_t at; /* expiry on the caller's millisecond clock */
    size_t slot; /* heap index + 1; 0 = not armed */
    void (*cb)(faas_timer_t *t);
    void *data;
};

typedef struct {
    faas_timer_t **heap;
    size_t n, cap;
} faas_theap_t;

/* Arms t for at (re-arms it if armed). 0, or -1 on OOM (t is then not armed). */
int faas_theap_add(faas_theap_t *h, faas_timer_t *t, uint64_t at);
/* Disarms t (no-op when not armed). */
void faas_theap_del(faas_theap_t *h, faas_timer_t *t);
/* The earliest timer due at or before now, disarmed; NULL if none. */
faas_timer_t *faas_theap_pop(faas_theap_t *h, uint64_t now);
/* When the earliest timer is due; UINT64_MAX if none. */
uint64_t faas_theap_next(const faas_theap_t *h);
/* Disarms everything and frees the heap's array. */
void faas_theap_free(faas_theap_t *h);
static inline int faas_timer_armed(const faas_timer_t *t)
{
    return t->slot != 0;
}

#endif
