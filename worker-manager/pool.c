/* pool.c - the warm pool's two kinds of pods (issue 18).
 *
 * A generic pod runs the agent alone; a python pod's agent also holds a Python zygote
 * (an interpreter that has imported --python-preload and waits). Either kind can run
 * any function: the agent kills an unused zygote and execs. The choices here only
 * decide which pod is wasted least, and which kind the pool refills. */
#define WM_STATE
#include "worker-manager/internal.h"

#include <string.h>

/* Record byte bits: what a successor needs to keep the pod in the right slot. */
#define REC_PYTHON 1u
#define REC_ZYGOTE 2u

const char *wm_pod_kind_name(wm_pod_kind_t k)
{
    return k == WM_POD_PYTHON ? "python" : "generic";
}

wm_pod_t *wm_pool_pick(wm_pod_t *pods, int fit)
{
    wm_pod_t *other = NULL;
    for (wm_pod_t *p = pods; p; p = p->next) {
        if (p->state != POD_WARM)
            continue;
        if ((p->zygote != 0) == (fit != 0))
            return p;
        if (other == NULL)
            other = p;
    }
    return other;
}

void wm_pool_deficit(const wm_pod_t *pods, size_t waiting, const unsigned pool[WM_POD_KINDS], int deferred,
                     size_t out[WM_POD_KINDS])
{
    size_t have[WM_POD_KINDS] = {0};
    for (const wm_pod_t *p = pods; p; p = p->next)
        if ((p->state == POD_STARTING || p->state == POD_WARM) && p->kind < WM_POD_KINDS)
            have[p->kind]++;
    for (int k = 0; k < WM_POD_KINDS; k++) {
        size_t target = (k == WM_POD_GENERIC ? waiting : 0) + (deferred ? 0 : pool[k]);
        out[k] = target > have[k] ? target - have[k] : 0;
    }
}

void wm_pool_warm(const wm_pod_t *pods, uint32_t out[WM_POD_KINDS])
{
    memset(out, 0, WM_POD_KINDS * sizeof(out[0]));
    for (const wm_pod_t *p = pods; p; p = p->next)
        if (p->state == POD_WARM)
            out[p->zygote ? WM_POD_PYTHON : WM_POD_GENERIC]++;
}

uint8_t wm_pool_rec_byte(const wm_pod_t *p)
{
    return (uint8_t)((p->kind == WM_POD_PYTHON ? REC_PYTHON : 0) | (p->zygote ? REC_ZYGOTE : 0));
}

void wm_pool_rec_apply(wm_pod_t *p, const uint8_t *tail, size_t len)
{
    p->kind = len >= 1 && (tail[0] & REC_PYTHON) ? WM_POD_PYTHON : WM_POD_GENERIC;
    p->zygote = len >= 1 && (tail[0] & REC_ZYGOTE) != 0;
}
