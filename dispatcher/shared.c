/* dispatcher/shared.c - what the gateway's loop threads share about functions and
 * instances (docs/threads.md). Every loop keeps its own replica of the table, fed by
 * the same watch events; what must be one number for all of them (an instance's calls
 * in flight, a function's held calls, the counters of metrics and of the endpoints
 * rate) lives in one block per function or instance name, found at creation under a
 * mutex and then touched with relaxed atomics only: the call path takes no lock. */
#include "dispatcher/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

__thread unsigned disp_tidx;

#define NBUCKETS 1024

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static disp_fshared_t *fbucket[NBUCKETS];
static disp_ishared_t *ibucket[NBUCKETS];

disp_fshared_t *disp_fshared_get(const char *name, size_t len)
{
    size_t b = faas_hash_name(name, len) & (NBUCKETS - 1);
    pthread_mutex_lock(&mu);
    disp_fshared_t *s = fbucket[b];
    while (s != NULL && !(s->len == len && memcmp(s->name, name, len) == 0))
        s = s->next;
    if (s == NULL && len < sizeof(s->name) && (s = calloc(1, sizeof(*s))) != NULL) {
        memcpy(s->name, name, len);
        s->len = len;
        s->next = fbucket[b];
        fbucket[b] = s; /* functions are never removed (as in the tables) */
    }
    pthread_mutex_unlock(&mu);
    return s;
}

disp_ishared_t *disp_ishared_get(const char *id)
{
    size_t len = strlen(id);
    size_t b = faas_hash_name(id, len) & (NBUCKETS - 1);
    pthread_mutex_lock(&mu);
    disp_ishared_t *s = ibucket[b];
    while (s != NULL && strcmp(s->id, id) != 0)
        s = s->next;
    if (s == NULL && len < sizeof(s->id) && (s = calloc(1, sizeof(*s))) != NULL) {
        memcpy(s->id, id, len + 1);
        s->next = ibucket[b];
        ibucket[b] = s;
    }
    if (s != NULL)
        s->refs++;
    pthread_mutex_unlock(&mu);
    return s;
}

void disp_ishared_put(disp_ishared_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&mu);
    if (--s->refs == 0) {
        size_t b = faas_hash_name(s->id, strlen(s->id)) & (NBUCKETS - 1);
        for (disp_ishared_t **pp = &ibucket[b]; *pp != NULL; pp = &(*pp)->next)
            if (*pp == s) {
                *pp = s->next;
                break;
            }
        free(s);
    }
    pthread_mutex_unlock(&mu);
}

uint32_t disp_ishared_inflight(const disp_ishared_t *s)
{
    /* seq_cst (a plain load on x86): disp_acquire_needed orders it before the held count */
    return __atomic_load_n(&s->inflight, __ATOMIC_SEQ_CST) & ~DISP_ISHARED_RELEASING;
}

int disp_ishared_begin(disp_ishared_t *s, uint32_t limit)
{
    uint32_t cur = __atomic_load_n(&s->inflight, __ATOMIC_RELAXED);
    do {
        if ((cur & DISP_ISHARED_RELEASING) || (limit != 0 && cur >= limit))
            return -1;
    } while (!__atomic_compare_exchange_n(&s->inflight, &cur, cur + 1, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return 0;
}

uint32_t disp_ishared_end(disp_ishared_t *s, uint64_t now_ms)
{
    uint32_t left = (__atomic_sub_fetch(&s->inflight, 1, __ATOMIC_SEQ_CST)) & ~DISP_ISHARED_RELEASING;
    if (left == 0)
        __atomic_store_n(&s->idle_since_ms, now_ms, __ATOMIC_RELAXED);
    return left;
}

int disp_ishared_try_release(disp_ishared_t *s)
{
    uint32_t idle = 0;
    return __atomic_compare_exchange_n(&s->inflight, &idle, DISP_ISHARED_RELEASING, 0, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED)
               ? 0
               : -1;
}

void disp_ishared_mark_releasing(disp_ishared_t *s)
{
    __atomic_fetch_or(&s->inflight, DISP_ISHARED_RELEASING, __ATOMIC_RELAXED);
}

int disp_ishared_releasing(const disp_ishared_t *s)
{
    return (__atomic_load_n(&s->inflight, __ATOMIC_RELAXED) & DISP_ISHARED_RELEASING) != 0;
}

int disp_fshared_hold(disp_fshared_t *s, uint32_t max, int local_now)
{
    /* seq_cst: a loop ending a call reads this after freeing its slot, and this loop
     * picks again after it (disp_hold): one of the two sees the other */
    uint32_t cur = __atomic_load_n(&s->nwaiters, __ATOMIC_SEQ_CST);
    do {
        if (cur >= max)
            return -1;
    } while (!__atomic_compare_exchange_n(&s->nwaiters, &cur, cur + 1, 1, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    if (local_now == 1)
        __atomic_fetch_or(&s->waitmask[disp_tidx / 64], 1ull << (disp_tidx % 64), __ATOMIC_RELAXED);
    return 0;
}

void disp_fshared_waiters_add(disp_fshared_t *s, int delta, int local_now)
{
    __atomic_add_fetch(&s->nwaiters, (uint32_t)delta, __ATOMIC_RELAXED);
    unsigned t = disp_tidx;
    uint64_t bit = 1ull << (t % 64);
    if (local_now == 0)
        __atomic_fetch_and(&s->waitmask[t / 64], ~bit, __ATOMIC_RELAXED);
    else if (delta > 0 && local_now == 1)
        __atomic_fetch_or(&s->waitmask[t / 64], bit, __ATOMIC_RELAXED);
}

uint32_t disp_fshared_waiters(const disp_fshared_t *s)
{
    return __atomic_load_n(&s->nwaiters, __ATOMIC_SEQ_CST);
}

uint64_t disp_fshared_counter(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

void disp_fshared_count(uint64_t *c)
{
    __atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}
