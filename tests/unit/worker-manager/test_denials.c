/* Unit tests for worker-manager/denials.c: agents' seccomp refusals as metrics. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define WM_STATE
#include "worker-manager/internal.h"

static Faas__SyscallDenials item(const char *name, uint64_t count)
{
    Faas__SyscallDenials d = FAAS__SYSCALL_DENIALS__INIT;
    d.syscall = (char *)name;
    d.count = count;
    return d;
}

Test(wm_denials, deltas_add_up_by_function_and_syscall)
{
    wm_denials_t d = {0};
    Faas__SyscallDenials a = item("mount", 2), b = item("bpf", 1), c = item("mount", 3);
    Faas__SyscallDenials *ev1[] = {&a, &b}, *ev2[] = {&c};
    cr_assert_eq(wm_denials_add(&d, "hello", ev1, 2), 2);
    cr_assert_eq(wm_denials_add(&d, "hello", ev2, 1), 1);
    cr_assert_eq(wm_denials_add(&d, "other", ev2, 1), 1);
    char buf[4096];
    int n = 0;
    wm_denials_metrics(&d, buf, sizeof(buf), &n);
    cr_assert_gt(n, 0);
    cr_assert(strstr(buf, "# TYPE faas_wm_seccomp_denials_total counter\n") != NULL);
    cr_assert(strstr(buf, "faas_wm_seccomp_denials_total{function=\"hello\",syscall=\"mount\"} 5\n") != NULL, "%s",
              buf);
    cr_assert(strstr(buf, "faas_wm_seccomp_denials_total{function=\"hello\",syscall=\"bpf\"} 1\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "faas_wm_seccomp_denials_total{function=\"other\",syscall=\"mount\"} 3\n") != NULL, "%s",
              buf);
    wm_denials_free(&d);
}

Test(wm_denials, names_that_would_break_the_exposition_are_dropped)
{
    wm_denials_t d = {0};
    Faas__SyscallDenials q = item("mo\"unt", 1), up = item("Mount", 1), nl = item("a\nb", 1), empty = item("", 1),
                         zero = item("bpf", 0), null = item(NULL, 1),
                         lng = item("a_syscall_name_far_too_long_to_be_real", 1);
    Faas__SyscallDenials *ev[] = {&q, &up, &nl, &empty, &zero, &null, &lng, NULL};
    cr_assert_eq(wm_denials_add(&d, "hello", ev, 8), 0);
    Faas__SyscallDenials ok = item("bpf", 1), *one[] = {&ok};
    cr_assert_eq(wm_denials_add(&d, "he\"llo", one, 1), 0);
    cr_assert_eq(wm_denials_add(&d, "", one, 1), 0);
    cr_assert_eq(wm_denials_add(&d, NULL, one, 1), 0);
    cr_assert_eq(d.n, 0);
}

Test(wm_denials, series_are_bounded)
{
    wm_denials_t d = {0};
    Faas__SyscallDenials ok = item("bpf", 1), *one[] = {&ok};
    char fn[32];
    for (int i = 0; i < WM_DENIALS_MAX + 10; i++) {
        snprintf(fn, sizeof(fn), "fn%d", i);
        wm_denials_add(&d, fn, one, 1);
    }
    cr_assert_eq(d.n, WM_DENIALS_MAX);
    cr_assert(d.full_said);
    cr_assert_eq(wm_denials_add(&d, "fn0", one, 1), 1, "known series still count");
    wm_denials_free(&d);
}
