/* tests/fuzz/cli_argv.h - turns fuzz input into a command line for the CLI
 * drivers (fuzz_cli_*.c): argv[0] is the program, the input's NUL-separated
 * pieces the arguments. Each argument is its own allocation so ASan sees a read
 * past any one of them. */
#ifndef FUZZ_CLI_ARGV_H
#define FUZZ_CLI_ARGV_H

#include <stddef.h>
#include <stdint.h>

enum { FUZZ_CLI_MAX_ARGS = 40 };

typedef struct {
    int argc;
    char **argv;  /* argc + 1 entries, NULL-terminated; getopt may permute it */
    char **owned; /* the same strings in their original order, for freeing */
} fuzz_cli_argv_t;

/* 0, or -1 if out of memory. */
int fuzz_cli_argv_make(fuzz_cli_argv_t *a, const char *prog, const uint8_t *data, size_t size);
void fuzz_cli_argv_free(fuzz_cli_argv_t *a);

/* Aborts unless s is a non-empty line of printable bytes shorter than cap. */
void fuzz_cli_check_line(const char *s, size_t cap);

/* 1 if s has no byte <= 0x20 and no DEL (what an address or URL path may hold). */
int fuzz_cli_printable(const char *s);

/* A driver's parse step: 0, 1 or -1 as the parser answered, with its error line (or
 * "") in msg; -2 if no argv could be built. */
typedef int (*fuzz_cli_parse_fn)(const uint8_t *data, size_t size, char *msg, size_t cap);
/* Parses the input twice and aborts if the answers differ: getopt state left over
 * from one call would show here. */
void fuzz_cli_twice(fuzz_cli_parse_fn parse, const uint8_t *data, size_t size);

#endif
