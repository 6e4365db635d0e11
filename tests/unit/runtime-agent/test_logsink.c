/* The log sink against a real file: the bound holds whatever the user prints, the marker
 * and the summary say what was lost, and the worker manager hears of both. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime-agent/internal.h"

static int fulls, drops;
static uint64_t last_bytes;

static void on_full(uint64_t bytes, uint64_t lines)
{
    (void)lines;
    fulls++;
    last_bytes = bytes;
}

static void on_dropped(uint64_t bytes, uint64_t lines)
{
    (void)lines;
    drops++;
    last_bytes = bytes;
}

static int open_tmp(char *path)
{
    strcpy(path, "/tmp/faas-logsink-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    return open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
}

static off_t size_of(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return st.st_size;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

Test(logsink, a_file_stays_bounded_and_says_why_lines_are_missing)
{
    char p1[64], p2[64], line[128];
    agent_log_cbs_t cbs = {on_full, on_dropped};
    agent_log_init(open_tmp(p1), 1000, "fn", "i-1", &cbs);
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(line, sizeof(line), "line %04d of a function that prints without end\n", i);
        agent_log_write(line, (size_t)n);
    }
    cr_assert_eq(fulls, 1, "one LOG_ROTATE a file");
    cr_assert_leq(size_of(p1), 1000 + 60 + 300, "one line and the marker past the bound, got %lld",
                  (long long)size_of(p1));
    cr_assert_not_null(strstr(slurp(p1), "output is dropped until it is rotated"));
    cr_assert_eq(last_bytes, 0, "nothing was dropped when it filled");
    agent_log_swap(open_tmp(p2));
    cr_assert_eq(drops, 1);
    cr_assert_gt(last_bytes, 40000, "LOG_DROPPED carries the totals");
    agent_log_write("after\n", 6);
    char *text = slurp(p2);
    cr_assert_not_null(strstr(text, "lines ("), "%s", text);
    cr_assert_not_null(strstr(text, "were dropped while the log rotated"));
    cr_assert_not_null(strstr(text, "after\n"));
    unlink(p1);
    unlink(p2);
}
