/* libFuzzer driver: wm_tail_lines over arbitrary log contents and line counts.
 * Lines come back in file order, never contain '\n', and never exceed the ask. */
// FUZZ_SOURCES: worker-manager/logs.c
// FUZZ_PKGS: libprotobuf-c
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "worker-manager/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned n = data[0] % 32;
    int fd = memfd_create("log", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    char **lines;
    size_t count;
    if (wm_tail_lines(path, n, &lines, &count) == 0) {
        if (count > n)
            abort();
        size_t total = 0;
        for (size_t i = 0; i < count; i++) {
            size_t l = strlen(lines[i]);
            if (memchr(lines[i], '\n', l))
                abort();
            total += l;
            free(lines[i]);
        }
        if (total > size)
            abort();
        free(lines);
    }
    close(fd);
    return 0;
}
