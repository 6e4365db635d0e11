/* tests/fuzz/cli_argv.c - see cli_argv.h. Not a driver: drivers list it in
 * FUZZ_SOURCES. */
#include "tests/fuzz/cli_argv.h"

#include <stdlib.h>
#include <string.h>

int fuzz_cli_argv_make(fuzz_cli_argv_t *a, const char *prog, const uint8_t *data, size_t size)
{
    memset(a, 0, sizeof(*a));
    a->argv = calloc(FUZZ_CLI_MAX_ARGS + 2, sizeof(char *));
    a->owned = calloc(FUZZ_CLI_MAX_ARGS + 2, sizeof(char *));
    if (a->argv == NULL || a->owned == NULL || (a->owned[0] = strdup(prog)) == NULL) {
        fuzz_cli_argv_free(a);
        return -1;
    }
    a->argc = 1;
    size_t i = 0;
    /* an empty input is a bare program name; otherwise every NUL ends one argument */
    while (i < size && a->argc <= FUZZ_CLI_MAX_ARGS) {
        const uint8_t *end = memchr(data + i, 0, size - i);
        size_t n = end ? (size_t)(end - (data + i)) : size - i;
        char *s = malloc(n + 1);
        if (s == NULL) {
            fuzz_cli_argv_free(a);
            return -1;
        }
        memcpy(s, data + i, n);
        s[n] = '\0';
        a->owned[a->argc++] = s;
        i += n + 1;
    }
    memcpy(a->argv, a->owned, (size_t)a->argc * sizeof(char *));
    return 0;
}

void fuzz_cli_argv_free(fuzz_cli_argv_t *a)
{
    for (int i = 0; a->owned != NULL && i < a->argc; i++)
        free(a->owned[i]);
    if (a->owned != NULL && a->argc == 0)
        free(a->owned[0]);
    free(a->owned);
    free(a->argv);
    memset(a, 0, sizeof(*a));
}

void fuzz_cli_check_line(const char *s, size_t cap)
{
    if (s == NULL || s[0] == '\0')
        abort(); /* an error must say something */
    size_t n = strnlen(s, cap);
    if (n >= cap)
        abort(); /* unterminated within its buffer */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            abort(); /* one printable line, whatever argv held */
}

int fuzz_cli_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

void fuzz_cli_twice(fuzz_cli_parse_fn parse, const uint8_t *data, size_t size)
{
    char m1[256], m2[256];
    int r1 = parse(data, size, m1, sizeof(m1));
    int r2 = parse(data, size, m2, sizeof(m2));
    if (r1 != -2 && r2 != -2 && (r1 != r2 || strcmp(m1, m2) != 0))
        abort();
}
