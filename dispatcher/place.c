/* dispatcher/place.c - where a cold start goes: one score per worker manager from what
 * its host last reported and what this gateway placed there since. Pure (no I/O, no
 * clock: callers pass now_ms) so the policy is unit-tested alone; O(workers) per
 * Acquire, no allocation.
 *
 * The score is a key compared as one unsigned 64-bit number, most significant first:
 *   bit 63      the worker is up (no Acquire to it went unreached within its backoff)
 *   bit 62      its host has room for the function's memory limit (or the spec gives
 *               none, or the host reports no memory figures)
 *   bits 32-61  warm pods left: reported pool_ready less the ones we took since
 *   bits 0-31   headroom: free CPU in per mille of the host's CPUs plus free memory in
 *               per mille of its total (0-2000), both less our charges of the last
 *               DISP_PLACE_CHARGE_MS; a figure a worker does not report counts 500, neither
 *               best nor worst (an older build, a /proc that cannot be read)
 * A warm pod is a cold start in milliseconds, an empty pool a fork and exec: warm pods
 * dominate and headroom only breaks their ties. A host without room is a cold start
 * the OOM killer ends, so it comes after every host with room but stays usable when
 * none has. Down comes last of all: the retry window (dispatcher.c) needs a target. */
#include "dispatcher/internal.h"

#include <string.h>

#define WARM_MAX ((1u << 29) - 1)

static int charges_live(const disp_place_t *w, uint64_t now_ms)
{
    /* no report since: drop them after a while rather than shun the host for good
     * (a lease renewal with no change in the rounded figures pushes no WORKER_PUT) */
    return w->charged_ms != 0 && now_ms - w->charged_ms < DISP_PLACE_CHARGE_MS;
}

static uint64_t mem_charge(const disp_place_need_t *need)
{
    return need->mem_bytes ? need->mem_bytes : DISP_PLACE_MEM_CHARGE;
}

static uint32_t cpu_charge(const disp_place_need_t *need)
{
    return need->cpu_milli ? need->cpu_milli : DISP_PLACE_CPU_CHARGE;
}

int disp_place_up(const disp_place_t *w, uint64_t now_ms)
{
    return w->down_until_ms == 0 || now_ms >= w->down_until_ms;
}

static uint64_t mem_free_now(const disp_place_t *w, uint64_t now_ms)
{
    uint64_t used = charges_live(w, now_ms) ? w->charge_mem : 0;
    return w->mem_free > used ? w->mem_free - used : 0;
}

static uint64_t headroom(const disp_place_t *w, uint64_t now_ms)
{
    uint64_t h = 0;
    if (w->cpus_milli == 0)
        h += 500;
    else {
        uint32_t used = charges_live(w, now_ms) ? w->charge_cpu_milli : 0;
        uint64_t free = w->cpu_free_milli > used ? w->cpu_free_milli - used : 0;
        uint64_t pm = free * 1000 / w->cpus_milli;
        h += pm > 1000 ? 1000 : pm;
    }
    if (w->mem_total == 0)
        h += 500;
    else {
        uint64_t pm = mem_free_now(w, now_ms) / (w->mem_total / 1000 ? w->mem_total / 1000 : 1);
        h += pm > 1000 ? 1000 : pm;
    }
    return h;
}

uint64_t disp_place_score(const disp_place_t *w, const disp_place_need_t *need, uint64_t now_ms)
{
    int room = w->mem_total == 0 || need->mem_bytes == 0 || mem_free_now(w, now_ms) >= need->mem_bytes;
    uint64_t warm = w->pool_ready > WARM_MAX ? WARM_MAX : w->pool_ready;
    return (uint64_t)disp_place_up(w, now_ms) << 63 | (uint64_t)room << 62 | warm << 32 | headroom(w, now_ms);
}

disp_worker_t *disp_place_pick(disp_worker_t *ws, size_t n, size_t start, const disp_place_need_t *need,
                               uint64_t now_ms)
{
    disp_worker_t *best = NULL;
    uint64_t best_score = 0;
    for (size_t k = 0; k < n; k++) {
        disp_worker_t *w = &ws[(start + k) % n];
        uint64_t s = disp_place_score(&w->pl, need, now_ms);
        if (best == NULL || s > best_score) { /* strict: a tie stays with the earlier in rotation */
            best = w;
            best_score = s;
        }
    }
    return best;
}

size_t disp_place_nup(const disp_worker_t *ws, size_t n, uint64_t now_ms)
{
    size_t up = 0;
    for (size_t k = 0; k < n; k++)
        up += disp_place_up(&ws[k].pl, now_ms);
    return up;
}

void disp_place_charge(disp_place_t *w, const disp_place_need_t *need, uint64_t now_ms)
{
    if (w->pool_ready > 0)
        w->pool_ready--; /* until the worker's next report, assume we took one */
    if (!charges_live(w, now_ms)) {
        w->charge_cpu_milli = 0;
        w->charge_mem = 0;
        w->charged_ms = now_ms ? now_ms : 1;
    }
    uint32_t c = cpu_charge(need);
    w->charge_cpu_milli = w->charge_cpu_milli > UINT32_MAX - c ? UINT32_MAX : w->charge_cpu_milli + c;
    uint64_t m = mem_charge(need);
    w->charge_mem = w->charge_mem > UINT64_MAX - m ? UINT64_MAX : w->charge_mem + m;
}

void disp_place_unreached(disp_place_t *w, const disp_place_need_t *need, uint64_t now_ms)
{
    /* nothing started there: the charge goes back (the warm pod stays counted as
     * taken: the next report says how many there are) */
    uint32_t c = cpu_charge(need);
    uint64_t m = mem_charge(need);
    w->charge_cpu_milli = w->charge_cpu_milli > c ? w->charge_cpu_milli - c : 0;
    w->charge_mem = w->charge_mem > m ? w->charge_mem - m : 0;
    w->backoff_ms = w->backoff_ms == 0                               ? DISP_PLACE_BACKOFF_MIN_MS
                    : w->backoff_ms >= DISP_PLACE_BACKOFF_MAX_MS / 2 ? DISP_PLACE_BACKOFF_MAX_MS
                                                                     : w->backoff_ms * 2;
    w->down_until_ms = now_ms + w->backoff_ms;
}

void disp_place_reached(disp_place_t *w)
{
    w->down_until_ms = 0;
    w->backoff_ms = 0;
}

void disp_place_report(disp_place_t *w, const Faas__Worker *pw)
{
    w->pool_ready = pw->pool_ready;
    w->cpus_milli = pw->cpus_milli;
    w->cpu_free_milli = pw->cpu_free_milli;
    w->mem_total = pw->mem_total_bytes;
    w->mem_free = pw->mem_free_bytes;
    /* The charges stay until they lapse: a report comes within milliseconds of the
     * Acquires it follows, its CPU figure an average over a whole lease period that does
     * not show them yet (a burst would pile on the host that looked best). Nor does a
     * report end a down mark: it says the worker reaches discovery, not that this
     * gateway reaches it (a wrong --advertise, a one-sided partition); the backoff runs
     * out, or an answered Acquire ends it. */
}
