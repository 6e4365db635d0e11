#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/internal.h"

static char *render(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    gw_metrics_write(f);
    fclose(f);
    return buf;
}

Test(metrics, counters_and_histogram)
{
    gw_metrics_record("fa", 2, 200, 1, 700);     /* 0.7 ms, h2 */
    gw_metrics_record("fa", 2, 200, 1, 3000);    /* 3 ms */
    gw_metrics_record("fa", 2, 503, 0, 2000000); /* 2 s, http/1.1 */
    gw_metrics_other();
    char *t = render();
    cr_assert(strstr(t, "faas_requests_total{function=\"fa\",code=\"200\",protocol=\"h2\"} 2\n"), "%s", t);
    cr_assert(strstr(t, "faas_requests_total{function=\"fa\",code=\"503\",protocol=\"http1.1\"} 1\n"), "%s", t);
    cr_assert(strstr(t, "faas_request_duration_seconds_bucket{function=\"fa\",le=\"0.0005\"} 0\n"), "%s", t);
    cr_assert(strstr(t, "faas_request_duration_seconds_bucket{function=\"fa\",le=\"0.001\"} 1\n"), "%s", t);
    cr_assert(strstr(t, "faas_request_duration_seconds_bucket{function=\"fa\",le=\"0.005\"} 2\n"), "%s", t);
    cr_assert(strstr(t, "faas_request_duration_seconds_bucket{function=\"fa\",le=\"2.5\"} 3\n"), "%s", t);
    cr_assert(strstr(t, "faas_request_duration_seconds_bucket{function=\"fa\",le=\"+Inf\"} 3\n"), "%s", t);
    cr_assert(strstr(t, "faas_request_duration_seconds_count{function=\"fa\"} 3\n"), "%s", t);
    cr_assert(strstr(t, "faas_gateway_other_requests_total 1\n"), "%s", t);
    cr_assert(strstr(t, "# TYPE faas_request_duration_seconds histogram\n"), "%s", t);
    free(t);
}

Test(metrics, many_functions_each_counted_once)
{
    /* the name index grows several times; each name keeps one entry */
    char name[32];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 500; i++) {
            int n = snprintf(name, sizeof(name), "fn-%d", i);
            gw_metrics_record(name, (size_t)n, 200, 0, 100);
        }
    char *t = render();
    cr_assert(strstr(t, "faas_requests_total{function=\"fn-0\",code=\"200\",protocol=\"http1.1\"} 2\n"), "%s", t);
    cr_assert(strstr(t, "faas_requests_total{function=\"fn-499\",code=\"200\",protocol=\"http1.1\"} 2\n"));
    cr_assert(strstr(t, "faas_request_duration_seconds_count{function=\"fn-250\"} 2\n"));
    size_t entries = 0;
    for (const char *p = t; (p = strstr(p, "faas_request_duration_seconds_count{")) != NULL; p++)
        entries++;
    cr_assert_eq(entries, 500);
    free(t);
}
