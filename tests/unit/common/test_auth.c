/* The platform token: parsing, the constant-time check, the token file and the
 * per-peer log limiter. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/auth.h"

static const char *T64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static faas_token_t tok(const char *s)
{
    faas_token_t t;
    const char *err = NULL;
    cr_assert_eq(faas_token_parse(s, strlen(s), &t, &err), 0, "%s", err);
    return t;
}

Test(auth, generate_is_64_hex_and_fresh)
{
    faas_token_t a, b;
    cr_assert_eq(faas_token_generate(&a), 0);
    cr_assert_eq(faas_token_generate(&b), 0);
    cr_assert_eq(a.len, 64);
    cr_assert_eq(strlen(a.s), 64);
    cr_assert_eq(strspn(a.s, "0123456789abcdef"), 64);
    cr_assert_str_neq(a.s, b.s);
}

Test(auth, parse_drops_one_newline_and_rejects_bad_tokens)
{
    faas_token_t t;
    const char *err = NULL;
    char line[80];
    snprintf(line, sizeof(line), "%s\n", T64);
    cr_assert_eq(faas_token_parse(line, strlen(line), &t, &err), 0);
    cr_assert_str_eq(t.s, T64);
    cr_assert_eq(t.len, 64);
    cr_assert_eq(faas_token_parse("short", 5, &t, &err), -1);
    cr_assert(strstr(err, "32 to 256") != NULL);
    cr_assert_eq(faas_token_parse("0123456789abcdef 123456789abcdef0", 33, &t, &err), -1);
    cr_assert(strstr(err, "without spaces") != NULL);
    char big[300];
    memset(big, 'a', sizeof(big));
    cr_assert_eq(faas_token_parse(big, sizeof(big), &t, &err), -1);
    cr_assert_eq(faas_token_parse("", 0, &t, &err), -1);
}

Test(auth, check_says_missing_malformed_wrong_or_ok)
{
    faas_token_t want = tok(T64);
    char hdr[128];
    snprintf(hdr, sizeof(hdr), "Bearer %s", T64);
    cr_assert_eq(faas_auth_check(hdr, strlen(hdr), &want), FAAS_AUTH_OK);
    snprintf(hdr, sizeof(hdr), "bearer %s", T64); /* the scheme is case-insensitive (RFC 6750) */
    cr_assert_eq(faas_auth_check(hdr, strlen(hdr), &want), FAAS_AUTH_OK);
    cr_assert_eq(faas_auth_check(NULL, 0, &want), FAAS_AUTH_MISSING);
    cr_assert_eq(faas_auth_check("", 0, &want), FAAS_AUTH_MISSING);
    cr_assert_eq(faas_auth_check(T64, 64, &want), FAAS_AUTH_MALFORMED);
    cr_assert_eq(faas_auth_check("Bearer ", 7, &want), FAAS_AUTH_MALFORMED);
    snprintf(hdr, sizeof(hdr), "Bearer %s", T64);
    hdr[strlen(hdr) - 1] = '0'; /* last byte differs */
    cr_assert_eq(faas_auth_check(hdr, strlen(hdr), &want), FAAS_AUTH_WRONG);
    cr_assert_eq(faas_auth_check(hdr, strlen(hdr) - 1, &want), FAAS_AUTH_WRONG); /* a prefix */
    snprintf(hdr, sizeof(hdr), "Bearer %sX", T64);
    cr_assert_eq(faas_auth_check(hdr, strlen(hdr), &want), FAAS_AUTH_WRONG); /* longer */
}

Test(auth, reasons_are_one_line_and_distinct)
{
    for (int r = FAAS_AUTH_MISSING; r < FAAS_AUTH_N_REASONS; r++) {
        const char *m = faas_auth_reason((faas_auth_result_t)r);
        cr_assert(strchr(m, '\n') == NULL);
        cr_assert(strlen(m) > 10);
    }
    cr_assert(strstr(faas_auth_reason(FAAS_AUTH_MISSING), "missing") != NULL);
    cr_assert(strstr(faas_auth_reason(FAAS_AUTH_WRONG), "wrong") != NULL);
    cr_assert_str_eq(faas_auth_label(FAAS_AUTH_MALFORMED), "malformed");
}

static char dir[64];

static void mkdir_tmp(void)
{
    snprintf(dir, sizeof(dir), "/tmp/faas-auth-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

Test(auth, create_file_is_0600_once_and_readable, .init = mkdir_tmp)
{
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/token", dir);
    cr_assert_eq(faas_token_create_file(path, err, sizeof(err)), 1, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(st.st_size, 65); /* 64 hex chars and a newline */
    faas_token_t a, b;
    cr_assert_eq(faas_token_read_file(path, &a, err, sizeof(err)), 0, "%s", err);
    /* a second start keeps the token: clients that read it keep working */
    cr_assert_eq(faas_token_create_file(path, err, sizeof(err)), 0);
    cr_assert_eq(faas_token_read_file(path, &b, err, sizeof(err)), 0);
    cr_assert_str_eq(a.s, b.s);
    /* no temporary file is left next to it */
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 1", dir);
    cr_assert_eq(system(cmd), 0);
    unlink(path);
    rmdir(dir);
}

Test(auth, read_file_refuses_group_readable_and_missing, .init = mkdir_tmp)
{
    char path[128], err[256];
    faas_token_t t;
    snprintf(path, sizeof(path), "%s/token", dir);
    cr_assert_eq(faas_token_read_file(path, &t, err, sizeof(err)), -1);
    cr_assert(strstr(err, path) != NULL);
    FILE *f = fopen(path, "w");
    fprintf(f, "%s\n", T64);
    fclose(f);
    chmod(path, 0640);
    cr_assert_eq(faas_token_read_file(path, &t, err, sizeof(err)), -1);
    cr_assert(strstr(err, "chmod 600") != NULL, "%s", err);
    chmod(path, 0600);
    cr_assert_eq(faas_token_read_file(path, &t, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(t.s, T64);
    unlink(path);
    rmdir(dir);
}

Test(auth, load_prefers_env_then_flag_then_default, .init = mkdir_tmp)
{
    char path[128], err[256];
    const char *src = NULL;
    faas_token_t t;
    snprintf(path, sizeof(path), "%s/token", dir);
    cr_assert_eq(faas_token_create_file(path, err, sizeof(err)), 1);
    cr_assert_eq(faas_token_load(T64, path, "/nonexistent", &t, &src, err, sizeof(err)), 0);
    cr_assert_str_eq(src, "FAAS_TOKEN");
    cr_assert_str_eq(t.s, T64);
    cr_assert_eq(faas_token_load("", path, "/nonexistent", &t, &src, err, sizeof(err)), 0);
    cr_assert_str_eq(src, path);
    cr_assert_eq(faas_token_load(NULL, NULL, path, &t, &src, err, sizeof(err)), 0);
    cr_assert_str_eq(src, path);
    cr_assert_eq(faas_token_load(NULL, NULL, "/nonexistent/token", &t, &src, err, sizeof(err)), -1);
    cr_assert(strstr(err, "FAAS_TOKEN or --token-file") != NULL, "%s", err);
    cr_assert_eq(faas_token_load("bad token", NULL, path, &t, &src, err, sizeof(err)), -1);
    cr_assert(strstr(err, "FAAS_TOKEN") != NULL);
    unlink(path);
    rmdir(dir);
}

Test(auth, log_limiter_is_per_peer_host_and_counts_suppressed)
{
    faas_auth_log_t l;
    memset(&l, 0, sizeof(l));
    uint64_t sup = 99;
    cr_assert_eq(faas_auth_log_allow(&l, "ipv4:10.0.0.1:5000", 1000, 10000, &sup), 1);
    cr_assert_eq(sup, 0);
    /* another port of the same host is the same peer */
    cr_assert_eq(faas_auth_log_allow(&l, "ipv4:10.0.0.1:5001", 2000, 10000, &sup), 0);
    cr_assert_eq(faas_auth_log_allow(&l, "ipv4:10.0.0.1:5002", 3000, 10000, &sup), 0);
    cr_assert_eq(faas_auth_log_allow(&l, "ipv4:10.0.0.2:5000", 3000, 10000, &sup), 1);
    cr_assert_eq(faas_auth_log_allow(&l, "ipv4:10.0.0.1:5003", 11000, 10000, &sup), 1);
    cr_assert_eq(sup, 2);
    cr_assert_eq(faas_auth_log_allow(&l, "ipv6:[::1]:7", 11000, 10000, &sup), 1);
    cr_assert_eq(faas_auth_log_allow(&l, "ipv6:[::1]:8", 11001, 10000, &sup), 0);
    /* more peers than slots: a new one still logs */
    for (int i = 0; i < 40; i++) {
        char p[32];
        snprintf(p, sizeof(p), "ipv4:10.1.0.%d:1", i);
        cr_assert_eq(faas_auth_log_allow(&l, p, 20000 + (uint64_t)i, 10000, &sup), 1);
    }
}
