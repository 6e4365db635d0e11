/* Unit tests for worker-manager/pool.c: which warm pod an acquisition takes, which kind
 * the pool spawns, and the kind a successor reads back from a warm pod's record. */
#include <criterion/criterion.h>
#include <string.h>

#define WM_STATE
#include "worker-manager/internal.h"

/* A list of n pods (index 0 first), each given state, kind and zygote. */
static wm_pod_t *list(wm_pod_t *v, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        v[i].next = &v[i + 1];
    v[n - 1].next = NULL;
    return v;
}

/* Sets p's state, kind and zygote; clears the rest but the list link. */
static void pod(wm_pod_t *p, wm_pod_state_t st, wm_pod_kind_t kind, int zygote)
{
    wm_pod_t *next = p->next;
    memset(p, 0, sizeof(*p));
    p->next = next;
    p->state = st;
    p->kind = kind;
    p->zygote = zygote;
}

Test(wm_pool, a_fitting_function_takes_a_zygote_first)
{
    wm_pod_t v[4] = {0};
    pod(&v[0], POD_WARM, WM_POD_GENERIC, 0);
    pod(&v[1], POD_STARTING, WM_POD_PYTHON, 0);
    pod(&v[2], POD_WARM, WM_POD_PYTHON, 1);
    pod(&v[3], POD_WARM, WM_POD_PYTHON, 1);
    wm_pod_t *l = list(v, 4);
    cr_expect_eq(wm_pool_pick(l, 1), &v[2]);
    cr_expect_eq(wm_pool_pick(l, 0), &v[0], "any other function spares the zygotes");
    v[0].state = POD_READY;
    cr_expect_eq(wm_pool_pick(l, 0), &v[2], "no generic pod warm: a zygote pod serves (its agent execs)");
    v[2].state = v[3].state = POD_SPECIALIZING;
    cr_expect_null(wm_pool_pick(l, 1), "a starting pod is not taken");
    cr_expect_null(wm_pool_pick(l, 0));
}

Test(wm_pool, a_python_pod_without_a_zygote_serves_as_generic)
{
    wm_pod_t v[2] = {0};
    pod(&v[0], POD_WARM, WM_POD_PYTHON, 0); /* its HELLO said zygote=false */
    pod(&v[1], POD_WARM, WM_POD_PYTHON, 1);
    wm_pod_t *l = list(v, 2);
    cr_expect_eq(wm_pool_pick(l, 0), &v[0]);
    cr_expect_eq(wm_pool_pick(l, 1), &v[1]);
    v[1].state = POD_READY;
    cr_expect_eq(wm_pool_pick(l, 1), &v[0], "a fitting function takes what is warm");
    uint32_t warm[WM_POD_KINDS];
    v[1].state = POD_WARM;
    wm_pool_warm(l, warm);
    cr_expect_eq(warm[WM_POD_GENERIC], 1, "counted by what it holds");
    cr_expect_eq(warm[WM_POD_PYTHON], 1);
}

Test(wm_pool, refill_keeps_both_counts)
{
    const unsigned pool[WM_POD_KINDS] = {2, 1};
    size_t none = 0, need[WM_POD_KINDS];
    wm_pool_deficit(NULL, none, pool, 0, need);
    cr_expect(need[WM_POD_GENERIC] == 2 && need[WM_POD_PYTHON] == 1, "empty: %zu %zu", need[0], need[1]);

    wm_pod_t v[5] = {0};
    pod(&v[0], POD_WARM, WM_POD_GENERIC, 0);
    pod(&v[1], POD_STARTING, WM_POD_GENERIC, 0);
    pod(&v[2], POD_READY, WM_POD_PYTHON, 1);  /* taken: leaves its slot */
    pod(&v[3], POD_STOPPING, WM_POD_GENERIC, 0);
    pod(&v[4], POD_SPECIALIZING, WM_POD_PYTHON, 1);
    wm_pod_t *l = list(v, 5);
    wm_pool_deficit(l, none, pool, 0, need);
    cr_expect(need[WM_POD_GENERIC] == 0 && need[WM_POD_PYTHON] == 1, "%zu %zu", need[0], need[1]);

    /* a python pod whose agent made no zygote still fills its slot: no endless spawning */
    pod(&v[2], POD_WARM, WM_POD_PYTHON, 0);
    wm_pool_deficit(l, none, pool, 0, need);
    cr_expect(need[WM_POD_GENERIC] == 0 && need[WM_POD_PYTHON] == 0, "%zu %zu", need[0], need[1]);

    /* deferred (a cold start in flight): only the waiters' pods, at once, and generic ones:
     * a fresh zygote would still be importing its preload list */
    wm_pool_deficit(NULL, 3, pool, 1, need);
    cr_expect(need[WM_POD_GENERIC] == 3 && need[WM_POD_PYTHON] == 0, "%zu %zu", need[0], need[1]);
    wm_pool_deficit(NULL, none, pool, 1, need);
    cr_expect(need[WM_POD_GENERIC] == 0 && need[WM_POD_PYTHON] == 0);
    /* pods already starting count against the waiters, of their kind only */
    pod(&v[0], POD_STARTING, WM_POD_PYTHON, 0);
    v[1].state = POD_READY;
    pod(&v[2], POD_STARTING, WM_POD_GENERIC, 0);
    wm_pool_deficit(l, 3, pool, 1, need);
    cr_expect(need[WM_POD_GENERIC] == 2 && need[WM_POD_PYTHON] == 0, "%zu %zu", need[0], need[1]);
    wm_pool_deficit(l, 3, pool, 0, need);
    cr_expect(need[WM_POD_GENERIC] == 4 && need[WM_POD_PYTHON] == 0, "%zu %zu", need[0], need[1]);
    v[0].state = POD_READY;
    wm_pool_deficit(l, 0, pool, 0, need);
    cr_expect(need[WM_POD_GENERIC] == 1 && need[WM_POD_PYTHON] == 1, "%zu %zu", need[0], need[1]);
}

Test(wm_pool, the_record_keeps_the_kind)
{
    wm_pod_t a = {0}, b = {0};
    for (int kind = 0; kind < WM_POD_KINDS; kind++)
        for (int zyg = 0; zyg < 2; zyg++) {
            pod(&a, POD_WARM, (wm_pod_kind_t)kind, zyg);
            uint8_t byte = wm_pool_rec_byte(&a);
            pod(&b, POD_WARM, WM_POD_GENERIC, 0);
            wm_pool_rec_apply(&b, &byte, 1);
            cr_expect(b.kind == a.kind && b.zygote == a.zygote, "kind %d zygote %d", kind, zyg);
        }
    pod(&b, POD_WARM, WM_POD_PYTHON, 1);
    wm_pool_rec_apply(&b, NULL, 0); /* an older WM's record: no byte */
    cr_expect(b.kind == WM_POD_GENERIC && b.zygote == 0);
    cr_expect_str_eq(wm_pod_kind_name(WM_POD_PYTHON), "python");
    cr_expect_str_eq(wm_pod_kind_name(WM_POD_GENERIC), "generic");
}
