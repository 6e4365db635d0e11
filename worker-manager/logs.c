/* logs.c - reading back the functions' log files (Logs rpc). */
#include "worker-manager/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int wm_tail_lines(const char *path, unsigned n, char ***lines, size_t *count)
{
    *lines = NULL;
    *count = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    /* lines are short logfmt records: the last MiB holds far more than asked for */
    off_t want = st.st_size < (1 << 20) ? st.st_size : (1 << 20);
    char *buf = malloc((size_t)want + 1);
    ssize_t got = buf ? pread(fd, buf, (size_t)want, st.st_size - want) : -1;
    close(fd);
    if (got < 0) {
        free(buf);
        return -1;
    }
    buf[got] = '\0';
    char **out = calloc(n ? n : 1, sizeof(char *));
    size_t k = 0;
    char *end = buf + got;
    if (end > buf && end[-1] == '\n')
        *--end = '\0';
    while (out && k < n && end > buf) {
        char *nl = end;
        while (nl > buf && nl[-1] != '\n')
            nl--;
        if (nl == buf && want < st.st_size)
            break; /* partial first line of the window */
        out[k++] = strndup(nl, (size_t)(end - nl));
        end = nl > buf ? nl - 1 : buf;
        *end = '\0';
    }
    free(buf);
    /* reverse into file order */
    for (size_t i = 0; out && i < k / 2; i++) {
        char *t = out[i];
        out[i] = out[k - 1 - i];
        out[k - 1 - i] = t;
    }
    *lines = out;
    *count = k;
    return out ? 0 : -1;
}

int wm_tail_log(const char *path, unsigned n, char ***lines, size_t *count)
{
    char older[PATH_MAX];
    char **cur, **old = NULL, **all;
    size_t nc, no = 0;
    if (wm_tail_lines(path, n, &cur, &nc) != 0)
        return -1;
    /* just after a rotation the current file is nearly empty: the newest lines are in .1 */
    if (nc < n && wm_fmt(older, sizeof(older), "%s.1", path) == 0 &&
        wm_tail_lines(older, n - (unsigned)nc, &old, &no) != 0)
        no = 0, old = NULL;
    if (no == 0) {
        free(old);
        *lines = cur, *count = nc;
        return 0;
    }
    all = realloc(old, (no + nc) * sizeof(char *));
    if (all == NULL)
        goto nomem;
    memcpy(all + no, cur, nc * sizeof(char *));
    free(cur);
    *lines = all, *count = no + nc;
    return 0;
nomem:
    for (size_t i = 0; i < no; i++)
        free(old[i]);
    free(old);
    *lines = cur, *count = nc; /* the current file's lines still answer */
    return 0;
}
