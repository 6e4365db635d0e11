/* Unit tests for worker-manager/reserved.c: every worker manager computes its share of a
 * function's reserved instances from the same worker list, so the shares must add up to
 * the total whatever order the list comes in, and no two workers may both take the
 * remainder. */
#include <criterion/criterion.h>

#define WM_STATE
#include "worker-manager/internal.h"

Test(reserved_share, one_worker_keeps_all)
{
    const char *w[] = {"wm-a"};
    cr_assert_eq(wm_reserved_share(w, 1, "wm-a", 5), 5);
    cr_assert_eq(wm_reserved_share(w, 1, "wm-a", 0), 0);
}

Test(reserved_share, remainder_goes_to_the_first_ids_in_sorted_order)
{
    const char *w[] = {"wm-c", "wm-a", "wm-b"};
    cr_assert_eq(wm_reserved_share(w, 3, "wm-a", 5), 2);
    cr_assert_eq(wm_reserved_share(w, 3, "wm-b", 5), 2);
    cr_assert_eq(wm_reserved_share(w, 3, "wm-c", 5), 1);
    cr_assert_eq(wm_reserved_share(w, 3, "wm-a", 1), 1);
    cr_assert_eq(wm_reserved_share(w, 3, "wm-b", 1), 0);
    cr_assert_eq(wm_reserved_share(w, 3, "wm-c", 1), 0);
}

Test(reserved_share, shares_add_up_whatever_the_order)
{
    const char *orders[][4] = {{"d", "b", "a", "c"}, {"a", "b", "c", "d"}, {"c", "a", "d", "b"}};
    for (uint32_t total = 0; total < 11; total++)
        for (size_t o = 0; o < 3; o++) {
            uint32_t sum = 0;
            for (size_t i = 0; i < 4; i++) {
                uint32_t mine = wm_reserved_share(orders[o], 4, orders[1][i], total);
                cr_assert_eq(mine, wm_reserved_share(orders[0], 4, orders[1][i], total), "order must not matter");
                sum += mine;
            }
            cr_assert_eq(sum, total);
        }
}

Test(reserved_share, unlisted_worker_and_duplicates)
{
    const char *w[] = {"wm-a", "wm-b", "wm-a"};
    cr_assert_eq(wm_reserved_share(w, 3, "wm-z", 4), 0, "a worker whose lease is not seen keeps none");
    cr_assert_eq(wm_reserved_share(w, 3, "wm-a", 3), 2, "a duplicate id counts once");
    cr_assert_eq(wm_reserved_share(w, 3, "wm-b", 3), 1);
    cr_assert_eq(wm_reserved_share(NULL, 0, "wm-a", 3), 0);
}
