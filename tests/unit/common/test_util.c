/* Address helpers shared by every listener and connector. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

Test(util, sockaddr_parse_v4_v6_default_and_errors)
{
    struct sockaddr_storage ss;
    unsigned sl;
    const char *err = NULL;
    cr_assert_eq(faas_sockaddr_parse("127.0.0.1:8080", "0.0.0.0", &ss, &sl, &err), 0);
    cr_assert_eq(ss.ss_family, AF_INET);
    cr_assert_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    cr_assert_eq(faas_sockaddr_parse(":9", "127.0.0.1", &ss, &sl, &err), 0);
    cr_assert_eq(((struct sockaddr_in *)&ss)->sin_addr.s_addr, htonl(INADDR_LOOPBACK), "empty host = default");
    cr_assert_eq(faas_sockaddr_parse("[::1]:7100", "0.0.0.0", &ss, &sl, &err), 0);
    cr_assert_eq(ss.ss_family, AF_INET6);
    cr_assert_eq(sl, sizeof(struct sockaddr_in6));
    cr_assert_eq(faas_sockaddr_parse("localhost:80", "0.0.0.0", &ss, &sl, &err), -1);
    cr_assert_not_null(strstr(err, "numeric"));
    cr_assert_eq(faas_sockaddr_parse("127.0.0.1:99999", "0.0.0.0", &ss, &sl, &err), -1);
    cr_assert_eq(faas_sockaddr_parse("127.0.0.1", "0.0.0.0", &ss, &sl, &err), -1);
}

Test(util, listen_tcp_binds_and_reports_conflicts)
{
    const char *err = NULL;
    int fd = faas_listen_tcp("127.0.0.1:0", &err);
    cr_assert_geq(fd, 0, "%s", err ? err : "");
    struct sockaddr_in a;
    socklen_t l = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(a.sin_port));
    cr_assert_eq(faas_listen_tcp(addr, &err), -1, "the port is taken");
    cr_assert_not_null(err);
    close(fd);
    cr_assert_eq(faas_listen_tcp("not-an-ip:1", &err), -1);
}

static unsigned bound_port(int fd)
{
    struct sockaddr_in a;
    socklen_t l = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    return ntohs(a.sin_port);
}

static int sockopt(int fd, int opt)
{
    int v = 0;
    socklen_t l = sizeof(v);
    cr_assert_eq(getsockopt(fd, SOL_SOCKET, opt, &v, &l), 0);
    return v;
}

Test(util, listen_tcp_group_shares_one_port_and_refuses_a_taken_one)
{
    const char *err = NULL;
    int fds[3], other[2];
    cr_assert_eq(faas_listen_tcp_group("127.0.0.1:0", fds, 3, &err), 0, "%s", err ? err : "");
    unsigned port = bound_port(fds[0]);
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(bound_port(fds[k]), port, "port 0 picks one port for the whole group");
        cr_assert_eq(sockopt(fds[k], SO_ACCEPTCONN), 1);
        cr_assert_eq(sockopt(fds[k], SO_REUSEPORT), 1);
    }
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    err = NULL;
    /* our own uid's group would let a plain SO_REUSEPORT bind join it: the probe refuses */
    cr_assert_eq(faas_listen_tcp_group(addr, other, 2, &err), -1, "a second gateway on the port");
    cr_assert_not_null(err);
    cr_assert_eq(faas_listen_tcp(addr, &err), -1);
    for (int k = 0; k < 3; k++)
        close(fds[k]);
    int plain = faas_listen_tcp(addr, &err);
    cr_assert_geq(plain, 0, "the group released the port");
    err = NULL;
    cr_assert_eq(faas_listen_tcp_group(addr, other, 2, &err), -1, "a plain listener holds the port");
    cr_assert_not_null(err);
    close(plain);
}

Test(util, hostport_rejects_spaces_and_control_bytes)
{
    char host[64];
    uint16_t port = 0;
    const char *err = NULL;
    cr_assert_eq(faas_parse_hostport("db.local:7100", host, sizeof(host), &port, &err), 0);
    cr_assert_str_eq(host, "db.local");
    cr_assert_eq(port, 7100);
    cr_assert_eq(faas_parse_hostport("[::1]:1", host, sizeof(host), &port, &err), 0);
    cr_assert_str_eq(host, "::1");
    const char *bad[] = {"a b:1", "\x1b[31m:1", "h:1\n", "h\t:1", "h\x7f:2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        cr_assert_eq(faas_parse_hostport(bad[i], host, sizeof(host), &port, &err), -1, "%zu", i);
        cr_assert_not_null(strstr(err, "control bytes"));
    }
}

Test(util, printable_and_oneline)
{
    cr_assert(faas_printable("abc:/x?y=1"));
    cr_assert(faas_printable(""));
    cr_assert_not(faas_printable("a b"));
    cr_assert_not(faas_printable("a\x01"));
    char s[] = "line1\nline2\r\x7f\tend";
    faas_oneline(s);
    cr_assert_str_eq(s, "line1?line2???end");
}

Test(util, fmt_u64_hexval_and_name_hash)
{
    char b[21];
    cr_assert_eq(faas_fmt_u64(b, 0), 1);
    cr_assert_eq(memcmp(b, "0", 1), 0);
    cr_assert_eq(faas_fmt_u64(b, 18446744073709551615ULL), 20);
    cr_assert_eq(memcmp(b, "18446744073709551615", 20), 0);
    cr_assert_eq(faas_hexval('7'), 7);
    cr_assert_eq(faas_hexval('b'), 11);
    cr_assert_eq(faas_hexval('F'), 15);
    cr_assert_eq(faas_hexval('g'), -1);
    cr_assert_eq(faas_hexval('%'), -1);
    /* FNV-1a test vectors: "" and "a" */
    cr_assert_eq(faas_hash_name("", 0), (size_t)0xcbf29ce484222325ULL);
    cr_assert_eq(faas_hash_name("a", 1), (size_t)0xaf63dc4c8601ec8cULL);
}

Test(util, request_ids_are_16_hex_and_distinct)
{
    char a[17], b[17];
    faas_request_id(a);
    faas_request_id(b);
    cr_assert_eq(strlen(a), 16);
    cr_assert_eq(strspn(a, "0123456789abcdef"), 16);
    cr_assert_str_neq(a, b);
}

Test(util, check_code_dir_accepts_a_plain_dir_and_names_what_is_wrong)
{
    char dir[] = "/tmp/util-codedir-XXXXXX", err[512], missing[64];
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(faas_check_code_dir(dir, err, sizeof(err)), 0, "%s", err);
    DIR *d = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        entries += e->d_name[0] != '.' || strncmp(e->d_name, ".mode-probe", 11) == 0;
    closedir(d);
    cr_assert_eq(entries, 0, "the probe file was left behind");
    snprintf(missing, sizeof(missing), "%s/nope", dir);
    cr_assert_eq(faas_check_code_dir(missing, err, sizeof(err)), -1);
    cr_assert(strstr(err, missing) != NULL, "%s", err);
    rmdir(dir);
}

Test(util, cold_start_errors_round_trip_and_transport_text_stays_private)
{
    char msg[256], pub[256];
    faas_cold_start_error(msg, sizeof(msg), "hello", "exec ./nope: No such file or directory\n");
    cr_assert_str_eq(msg, "cold start of function hello failed: exec ./nope: No such file or directory?");
    cr_assert_str_eq(faas_cold_start_public(pub, sizeof(pub), "hello", msg),
                     "cold start failed: exec ./nope: No such file or directory?");
    /* grpc's own text for a worker manager it cannot reach names its address */
    cr_assert_str_eq(faas_cold_start_public(pub, sizeof(pub), "hello",
                                            "failed to connect to all addresses; last error: ipv4:127.0.0.1:7200"),
                     "cold start failed");
    /* another function's message, an empty reason, no message at all */
    cr_assert_str_eq(faas_cold_start_public(pub, sizeof(pub), "other", msg), "cold start failed");
    cr_assert_str_eq(faas_cold_start_public(pub, sizeof(pub), "hello", "cold start of function hello failed: "),
                     "cold start failed");
    cr_assert_str_eq(faas_cold_start_public(pub, sizeof(pub), "hello", NULL), "cold start failed");
}
