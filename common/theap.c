/* common/theap.c - timers in a binary min-heap (see theap.h). */
#include "common/theap.h"

#include <stdlib.h>

static void place(faas_theap_t *ts, size_t i, faas_timer_t *t)
{
    ts->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(faas_theap_t *ts, size_t i)
{
    faas_timer_t *t = ts->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (ts->heap[parent]->at <= t->at)
            break;
        place(ts, i, ts->heap[parent]);
        i = parent;
    }
    place(ts, i, t);
}

static void sift_down(faas_theap_t *ts, size_t i)
{
    faas_timer_t *t = ts->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = t->at;
        if (l < ts->n && ts->heap[l]->at < best)
            m = l, best = ts->heap[l]->at;
        if (r < ts->n && ts->heap[r]->at < best)
            m = r;
        if (m == i)
            break;
        place(ts, i, ts->heap[m]);
        i = m;
    }
    place(ts, i, t);
}

int faas_theap_add(faas_theap_t *ts, faas_timer_t *t, uint64_t at)
{
    faas_theap_del(ts, t);
    if (ts->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 64;
        faas_timer_t **h = realloc(ts->heap, cap * sizeof(*h));
        if (h == NULL)
            return -1;
        ts->heap = h;
        ts->cap = cap;
    }
    t->at = at;
    place(ts, ts->n++, t);
    sift_up(ts, ts->n - 1);
    return 0;
}

void faas_theap_del(faas_theap_t *ts, faas_timer_t *t)
{
    if (t->slot == 0)
        return;
    size_t i = t->slot - 1;
    t->slot = 0;
    faas_timer_t *last = ts->heap[--ts->n];
    if (i == ts->n)
        return;
    place(ts, i, last);
    /* the moved timer may belong above or below its new place */
    if (i > 0 && ts->heap[(i - 1) / 2]->at > last->at)
        sift_up(ts, i);
    else
        sift_down(ts, i);
}

faas_timer_t *faas_theap_pop(faas_theap_t *ts, uint64_t now_ms)
{
    if (ts->n == 0 || ts->heap[0]->at > now_ms)
        return NULL;
    faas_timer_t *t = ts->heap[0];
    faas_theap_del(ts, t);
    return t;
}

uint64_t faas_theap_next(const faas_theap_t *ts)
{
    return ts->n != 0 ? ts->heap[0]->at : UINT64_MAX;
}

void faas_theap_free(faas_theap_t *ts)
{
    for (size_t i = 0; i < ts->n; i++)
        ts->heap[i]->slot = 0;
    free(ts->heap);
    ts->heap = NULL;
    ts->n = ts->cap = 0;
}
