/* wm_config_parse as the fuzz driver uses it: --help prints nothing, errors are
 * one static line, and repeated calls do not see each other's getopt state. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <string.h>

#include "worker-manager/workermgr.h"

Test(wm_cli, help_returns_1_and_prints_nothing, .init = cr_redirect_stdout)
{
    static wm_config_t c;
    const char *err = NULL;
    char *argv[] = {"faas-workermgr", "--pool-size", "3", "--help", NULL};
    cr_assert_eq(wm_config_parse(&c, 4, argv, &err), 1);
    fflush(stdout);
    cr_assert_stdout_eq_str("");
}

Test(wm_cli, errors_are_one_line)
{
    char *bad[][3] = {
        {"x", "--pool-size", "65"},
        {"x", "--lease-ttl-ms", "299"},
        {"x", "--lease-ttl-ms", "3600001"},
        {"x", "--pod-uid", "-5"},
        {"x", "--id", "a\nb"},
        {"x", "--metrics-listen", "a:b"},
        {"x", "--state-dir", ""},
        {"x", "--listen", "\x1b[31m:1"},
        {"x", "-p", "1"},
        {"x", "--pool-python", "65"},
        {"x", "--python-preload", "a\nb"},
        {"x", "--python", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        static wm_config_t c;
        const char *err = NULL;
        char *argv[] = {bad[i][0], bad[i][1], bad[i][2], NULL};
        cr_assert_eq(wm_config_parse(&c, 3, argv, &err), -1, "%s %s accepted", bad[i][1], bad[i][2]);
        cr_assert_not_null(err);
        cr_assert(err[0] != '\0');
        for (const char *p = err; *p; p++)
            cr_assert((unsigned char)*p >= 0x20, "%s", err);
    }
}

Test(wm_cli, parses_again_after_an_error)
{
    static wm_config_t c;
    const char *err = NULL;
    char *a1[] = {"x", "--pool-size", "1", "--nope", "--id", "w", NULL};
    cr_assert_eq(wm_config_parse(&c, 6, a1, &err), -1);
    char *a2[] = {"x", "--id", "w-2", NULL};
    cr_assert_eq(wm_config_parse(&c, 3, a2, &err), 0, "%s", err);
    cr_assert_str_eq(c.id, "w-2");
    cr_assert_eq(c.pool_size, 2, "the first call's --pool-size leaked into the second");
}

Test(wm_cli, state_dir_trailing_slashes_and_relative)
{
    static wm_config_t c;
    const char *err = NULL;
    char *a1[] = {"x", "--state-dir", "///", NULL};
    cr_assert_eq(wm_config_parse(&c, 3, a1, &err), 0, "%s", err);
    cr_assert_str_eq(c.state_dir, "/");
    char *a2[] = {"x", "--state-dir", "./s//", "--cgroup-root", "cg", NULL};
    cr_assert_eq(wm_config_parse(&c, 5, a2, &err), 0, "%s", err);
    cr_assert_eq(c.state_dir[0], '/');
    cr_assert(strstr(c.state_dir, "/s") != NULL && c.state_dir[strlen(c.state_dir) - 1] == 's', "%s", c.state_dir);
    cr_assert_eq(c.cgroup_root[0], '/');
}

Test(wm_cli, usage_explains_the_python_pool, .init = cr_redirect_stdout)
{
    wm_usage();
    fflush(stdout);
    char buf[16384] = "";
    FILE *f = cr_get_redirected_stdout();
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    cr_expect(strstr(buf, "--pool-python N") != NULL);
    cr_expect(strstr(buf, "--python PATH") != NULL && strstr(buf, "/usr/bin/python3") != NULL);
    cr_expect(strstr(buf, "--python-preload LIST") != NULL);
    cr_expect(strstr(buf, WM_PYTHON_PRELOAD_DEFAULT) != NULL, "the default list is shown");
}
