/* dispatcher/timer.c - deadlines as a binary min-heap: any number of distinct
 * durations, each exact to the millisecond, O(log n) to arm and disarm. h2o 2.2.5's
 * timeouts have one fixed duration each, which made the dispatcher keep one per
 * distinct value (and, past 32 values, silently reuse the wrong one). Pure: the loop
 * glue in dispatcher.c keeps one h2o entry due when the earliest timer is. */
#include "dispatcher/internal.h"

#include <stdlib.h>

static void place(disp_timers_t *ts, size_t i, disp_timer_t *t)
{
    ts->heap[i] = t;
    t->pos = i + 1;
}

static void sift_up(disp_timers_t *ts, size_t i)
{
    disp_timer_t *t = ts->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (ts->heap[parent]->at_ms <= t->at_ms)
            break;
        place(ts, i, ts->heap[parent]);
        i = parent;
    }
    place(ts, i, t);
}

static void sift_down(disp_timers_t *ts, size_t i)
{
    disp_timer_t *t = ts->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = t->at_ms;
        if (l < ts->n && ts->heap[l]->at_ms < best)
            m = l, best = ts->heap[l]->at_ms;
        if (r < ts->n && ts->heap[r]->at_ms < best)
            m = r;
        if (m == i)
            break;
        place(ts, i, ts->heap[m]);
        i = m;
    }
    place(ts, i, t);
}

int disp_timers_add(disp_timers_t *ts, disp_timer_t *t, uint64_t at_ms)
{
    disp_timers_del(ts, t);
    if (ts->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 64;
        disp_timer_t **h = realloc(ts->heap, cap * sizeof(*h));
        if (h == NULL)
            return -1;
        ts->heap = h;
        ts->cap = cap;
    }
    t->at_ms = at_ms;
    place(ts, ts->n++, t);
    sift_up(ts, ts->n - 1);
    return 0;
}

void disp_timers_del(disp_timers_t *ts, disp_timer_t *t)
{
    if (t->pos == 0)
        return;
    size_t i = t->pos - 1;
    t->pos = 0;
    disp_timer_t *last = ts->heap[--ts->n];
    if (i == ts->n)
        return;
    place(ts, i, last);
    /* the moved timer may belong above or below its new place */
    if (i > 0 && ts->heap[(i - 1) / 2]->at_ms > last->at_ms)
        sift_up(ts, i);
    else
        sift_down(ts, i);
}

disp_timer_t *disp_timers_pop(disp_timers_t *ts, uint64_t now_ms)
{
    if (ts->n == 0 || ts->heap[0]->at_ms > now_ms)
        return NULL;
    disp_timer_t *t = ts->heap[0];
    disp_timers_del(ts, t);
    return t;
}

uint64_t disp_timers_next(const disp_timers_t *ts)
{
    return ts->n != 0 ? ts->heap[0]->at_ms : UINT64_MAX;
}

void disp_timers_free(disp_timers_t *ts)
{
    for (size_t i = 0; i < ts->n; i++)
        ts->heap[i]->pos = 0;
    free(ts->heap);
    ts->heap = NULL;
    ts->n = ts->cap = 0;
}
