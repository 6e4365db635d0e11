/* worker-manager/imagegc.c - when the image cache is swept (the sweep itself is
 * wm_image_gc in image.c): every IMAGE_GC_EVERY_US, on its own thread, with what the
 * pod thread knows is in use (its pods and the acquisitions waiting) and what the
 * watch knows is needed (the current version of every function). Before the watch's
 * first snapshot nothing is known to be unneeded, so nothing is swept. */
#define WM_STATE
#include "worker-manager/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define IMAGE_GC_EVERY_US (30ull * 1000 * 1000)

typedef char hex_t[65];

typedef struct {
    const wm_config_t *cfg;
    hex_t *needed, *in_use;
    size_t n_needed, n_in_use;
} gc_arg_t;

static atomic_int running;
static uint64_t next_us;

const char *wm_image_hex(const Faas__ImageSpec *img)
{
    const char *d = img ? img->manifest_digest : NULL;
    return d != NULL && strncmp(d, "sha256:", 7) == 0 && wm_valid_sha256(d + 7) ? d + 7 : NULL;
}

static void add(hex_t **v, size_t *n, size_t *cap, const Faas__FunctionSpec *s)
{
    const char *hex = s ? wm_image_hex(s->image) : NULL;
    if (hex == NULL)
        return;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        hex_t *nv = realloc(*v, nc * sizeof(*nv));
        if (nv == NULL)
            return; /* one fewer kept: it is re-unpacked at its next cold start */
        *v = nv;
        *cap = nc;
    }
    wm_fmt((*v)[(*n)++], sizeof(hex_t), "%s", hex);
}

static const char **ptrs(hex_t *v, size_t n)
{
    const char **p = calloc(n + 1, sizeof(*p));
    for (size_t i = 0; p && i < n; i++)
        p[i] = v[i];
    return p;
}

static void *gc_main(void *arg)
{
    gc_arg_t *g = arg;
    const char **need = ptrs(g->needed, g->n_needed), **use = ptrs(g->in_use, g->n_in_use);
    uint64_t removed = 0;
    if (need && use)
        (void)wm_image_gc(g->cfg, need, g->n_needed, use, g->n_in_use, &removed);
    free(need);
    free(use);
    free(g->needed);
    free(g->in_use);
    free(g);
    atomic_store(&running, 0);
    return NULL;
}

/* What this worker's pods run or are about to run. */
static void collect_in_use(wm_t *wm, gc_arg_t *g)
{
    size_t cap = 0;
    for (wm_pod_t *p = wm->pods; p; p = p->next) {
        add(&g->in_use, &g->n_in_use, &cap, p->req ? p->req->spec : NULL);
        add(&g->in_use, &g->n_in_use, &cap, p->acq && p->acq->req ? p->acq->req->spec : NULL);
    }
    for (wm_acq_t *a = wm->waiting_code; a; a = a->next)
        add(&g->in_use, &g->n_in_use, &cap, a->req->spec);
    for (wm_acq_t *a = wm->waiting_pod; a; a = a->next)
        add(&g->in_use, &g->n_in_use, &cap, a->req->spec);
}

uint64_t wm_image_gc_tick(wm_t *wm, uint64_t now)
{
    if (now < next_us)
        return next_us;
    next_us = now + IMAGE_GC_EVERY_US;
    if (atomic_load(&running) || wm->n_fetching > 0)
        return next_us; /* a rootfs being unpacked is in no list yet */
    gc_arg_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return next_us;
    g->cfg = wm->cfg;
    if (wm_reserved_needed_images(&g->needed, &g->n_needed) != 0) {
        free(g);
        return next_us;
    }
    collect_in_use(wm, g);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    atomic_store(&running, 1);
    if (pthread_create(&t, &at, gc_main, g) != 0) {
        atomic_store(&running, 0);
        free(g->needed);
        free(g->in_use);
        free(g);
    }
    pthread_attr_destroy(&at);
    return next_us;
}
