/* sha256, artifact names and log tailing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker-manager/internal.h"

Test(code, sha256_known_vectors)
{
    char hex[65];
    wm_sha256_hex("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    wm_sha256_hex("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    wm_sha256_hex(two, strlen(two), hex);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *mil = malloc(1000000);
    memset(mil, 'a', 1000000);
    wm_sha256_hex(mil, 1000000, hex);
    free(mil);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(code, sha256_file_matches_buffer)
{
    char path[] = "/tmp/wm-sha-XXXXXX";
    int fd = mkstemp(path);
    char data[200000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 31);
    cr_assert_eq(write(fd, data, sizeof(data)), (ssize_t)sizeof(data));
    close(fd);
    char a[65], b[65];
    cr_assert_eq(wm_sha256_file(path, a), 0);
    wm_sha256_hex(data, sizeof(data), b);
    unlink(path);
    cr_assert_str_eq(a, b);
}

/* Known answers through the file path: empty, shorter than a block, and 1,000,000 'a'
 * (FIPS 180-2 B.3), which spans several reads of wm_sha256_file's 64 KiB buffer. */
static void file_of(char *path, const char *data, size_t len)
{
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        cr_assert_gt(w, 0);
        off += (size_t)w;
    }
    close(fd);
}

Test(code, sha256_file_known_answers)
{
    static const struct {
        size_t len;
        char fill;
        const char *hex;
    } kat[] = {{0, 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
               {1000000, 'a', "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"}};
    char hex[65];
    for (size_t i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
        char path[] = "/tmp/wm-kat-XXXXXX";
        char *data = malloc(kat[i].len + 1);
        memset(data, kat[i].fill, kat[i].len);
        file_of(path, data, kat[i].len);
        free(data);
        cr_assert_eq(wm_sha256_file(path, hex), 0);
        unlink(path);
        cr_assert_str_eq(hex, kat[i].hex, "%zu bytes", kat[i].len);
    }
    char path[] = "/tmp/wm-kat-XXXXXX";
    file_of(path, "abc", 3);
    cr_assert_eq(wm_sha256_file(path, hex), 0);
    unlink(path);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cr_assert_eq(wm_sha256_file("/nonexistent/wm-kat", hex), -1);
}

Test(code, valid_sha)
{
    cr_assert(wm_valid_sha256("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    cr_assert_not(wm_valid_sha256("E3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    cr_assert_not(wm_valid_sha256("e3b0"));
    cr_assert_not(wm_valid_sha256("../../etc/passwd"));
    cr_assert_not(wm_valid_sha256(""));
}

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    fputs(s, f);
    fclose(f);
}

Test(code, tail_lines)
{
    char path[] = "/tmp/wm-tail-XXXXXX";
    close(mkstemp(path));
    write_file(path, "one\ntwo\nthree\nfour\n");
    char **l;
    size_t n;
    cr_assert_eq(wm_tail_lines(path, 2, &l, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(l[0], "three");
    cr_assert_str_eq(l[1], "four");
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
    cr_assert_eq(wm_tail_lines(path, 10, &l, &n), 0);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(l[0], "one");
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
    write_file(path, "no newline at end");
    cr_assert_eq(wm_tail_lines(path, 5, &l, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(l[0], "no newline at end");
    free(l[0]);
    free(l);
    unlink(path);
    cr_assert_eq(wm_tail_lines(path, 5, &l, &n), 0, "a missing log is empty, not an error");
    cr_assert_eq(n, 0);
    free(l);
}
