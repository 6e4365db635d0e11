/* Unit tests for worker-manager/logrot.c and the rotated half of logs.c: file names,
 * shifting with keep, the agents' totals turned into counts, and a tail that spans a
 * rotation. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WM_STATE
#include "common/util.h"
#include "worker-manager/internal.h"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/faas-logrot-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char logs[128];
    snprintf(logs, sizeof(logs), "%s/logs", dir);
    cr_assert_eq(mkdir(logs, 0755), 0);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void)!system(cmd);
}

static void put(unsigned idx, const char *text)
{
    char p[PATH_MAX];
    cr_assert_eq(wm_log_path(p, sizeof(p), dir, "fn", idx), 0);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* The file's text, or NULL when it does not exist. */
static char *get(unsigned idx)
{
    static char buf[256];
    char p[PATH_MAX];
    cr_assert_eq(wm_log_path(p, sizeof(p), dir, "fn", idx), 0);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return NULL;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

Test(logrot, names)
{
    char p[PATH_MAX];
    cr_assert_eq(wm_log_path(p, sizeof(p), "/s", "hello", 0), 0);
    cr_assert_str_eq(p, "/s/logs/hello.log");
    cr_assert_eq(wm_log_path(p, sizeof(p), "/s", "hello", 3), 0);
    cr_assert_str_eq(p, "/s/logs/hello.log.3");
    cr_assert_eq(wm_log_path(p, 8, "/s", "hello", 0), -1, "too long is refused, not cut");
}

Test(logrot, shift_moves_each_file_up_and_drops_past_keep, .init = setup, .fini = teardown)
{
    put(0, "current\n");
    put(1, "older\n");
    put(2, "oldest\n");
    cr_assert_eq(wm_log_shift(dir, "fn", 2), 0);
    cr_assert_null(get(0), "the next open makes a fresh file");
    cr_assert_str_eq(get(1), "current\n");
    cr_assert_str_eq(get(2), "older\n");
    cr_assert_null(get(3), "nothing is kept past keep");
    /* a second rotation right after, with no current file yet */
    cr_assert_eq(wm_log_shift(dir, "fn", 2), 0);
    cr_assert_null(get(1));
    cr_assert_str_eq(get(2), "current\n");
}

Test(logrot, shift_with_keep_one_and_missing_files, .init = setup, .fini = teardown)
{
    cr_assert_eq(wm_log_shift(dir, "fn", 1), 0, "no files at all is fine");
    put(0, "a\n");
    cr_assert_eq(wm_log_shift(dir, "fn", 1), 0);
    put(0, "b\n");
    cr_assert_eq(wm_log_shift(dir, "fn", 1), 0);
    cr_assert_str_eq(get(1), "b\n");
    cr_assert_null(get(2));
    cr_assert_eq(wm_log_shift(dir, "fn", 0), -1, "keep 0 is the default's business, not a shift");
}

Test(logrot, delta_of_agent_totals)
{
    uint64_t seen = 0;
    cr_assert_eq(wm_log_delta(&seen, 100), 100);
    cr_assert_eq(wm_log_delta(&seen, 100), 0, "the same total twice counts once");
    cr_assert_eq(wm_log_delta(&seen, 250), 150);
    cr_assert_eq(wm_log_delta(&seen, 10), 0, "a total that shrank is no credit");
    cr_assert_eq(seen, 250);
    cr_assert_eq(wm_log_delta(&seen, 260), 10);
}

Test(logrot, tail_spans_the_last_rotation, .init = setup, .fini = teardown)
{
    put(1, "o1\no2\no3\no4\n");
    put(0, "c1\nc2\n");
    char p[PATH_MAX], **lines;
    size_t n;
    wm_log_path(p, sizeof(p), dir, "fn", 0);
    cr_assert_eq(wm_tail_log(p, 4, &lines, &n), 0);
    cr_assert_eq(n, 4);
    const char *want[] = {"o3", "o4", "c1", "c2"};
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(lines[i], want[i]);
        free(lines[i]);
    }
    free(lines);
    cr_assert_eq(wm_tail_log(p, 2, &lines, &n), 0);
    cr_assert_eq(n, 2, "enough in the current file: .1 is not read");
    cr_assert_str_eq(lines[0], "c1");
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
    put(0, "");
    cr_assert_eq(wm_tail_log(p, 10, &lines, &n), 0);
    cr_assert_eq(n, 4, "just rotated: all from .1");
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}
