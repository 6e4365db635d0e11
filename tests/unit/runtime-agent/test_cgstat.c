/* Unit tests: parsing the pod cgroup's CPU figures (runtime-agent/cgstat.c). */
#include <criterion/criterion.h>

#include "runtime-agent/cgstat.h"

Test(cgstat, psi_some_total)
{
    uint64_t v = 0;
    cr_expect_eq(agent_cg_parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=123456\n"
                                    "full avg10=0.00 avg60=0.00 avg300=0.00 total=99\n",
                                    &v),
                 0);
    cr_expect_eq(v, 123456);
    cr_expect_eq(agent_cg_parse_psi("full avg10=0.00 avg60=0.00 avg300=0.00 total=99\n", &v), -1);
    cr_expect_eq(agent_cg_parse_psi("some avg10=0.00\nfull total=5\n", &v), -1, "total= of another line");
    cr_expect_eq(agent_cg_parse_psi("", &v), -1);
}

Test(cgstat, throttling_v1_and_v2)
{
    uint64_t p = 0, t = 0;
    cr_expect_eq(agent_cg_parse_stat("nr_periods 40\nnr_throttled 12\nthrottled_time 5000000\n", &p, &t), 0); /* v1 */
    cr_expect(p == 40 && t == 12);
    cr_expect_eq(agent_cg_parse_stat("usage_usec 10\nuser_usec 5\nsystem_usec 5\nnr_periods 7\nnr_throttled 3\n"
                                     "throttled_usec 9\n",
                                     &p, &t),
                 0); /* v2 */
    cr_expect(p == 7 && t == 3);
    cr_expect_eq(agent_cg_parse_stat("usage_usec 10\nuser_usec 5\n", &p, &t), -1, "no cpu controller: no counts");
    cr_expect_eq(agent_cg_parse_stat("xnr_periods 1\nnr_throttled 1\n", &p, &t), -1);
}
