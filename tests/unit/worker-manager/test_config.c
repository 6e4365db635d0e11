/* Flag parsing of faas-workermgr. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker-manager/internal.h"

static int parse(wm_config_t *c, const char **err, int argc, char **argv)
{
    return wm_config_parse(c, argc, argv, err);
}

Test(config, defaults)
{
    wm_config_t c;
    const char *err = NULL;
    char *argv[] = {"faas-workermgr", NULL};
    cr_assert_eq(parse(&c, &err, 1, argv), 0);
    cr_assert_str_eq(c.listen, "127.0.0.1:7200");
    cr_assert_str_eq(c.discovery, "127.0.0.1:7100");
    cr_assert_str_eq(c.metrics_listen, "127.0.0.1:7201");
    cr_assert_eq(c.pool_size, 2);
    cr_assert_eq(c.lease_ttl_ms, 3000);
    cr_assert_eq(c.pod_uid, 65534);
    char cwd[PATH_MAX], want[PATH_MAX + 32];
    cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
    snprintf(want, sizeof(want), "%s/.faas/worker", cwd);
    cr_assert_str_eq(c.state_dir, want);
    cr_assert(strlen(c.id) > 0);
    cr_assert(strstr(c.agent, "/faas-agent") != NULL);
}

Test(config, all_flags)
{
    wm_config_t c;
    const char *err = NULL;
    char *argv[] = {"x",
                    "--listen",
                    "127.0.0.1:1",
                    "--discovery=127.0.0.1:2",
                    "--metrics-listen",
                    "127.0.0.1:3",
                    "--state-dir",
                    "/var/x/",
                    "--pool-size",
                    "5",
                    "--id",
                    "w-1",
                    "--lease-ttl-ms",
                    "900",
                    "--agent",
                    "/bin/agent",
                    "--pod-uid",
                    "1000",
                    NULL};
    cr_assert_eq(parse(&c, &err, 18, argv), 0, "%s", err ? err : "");
    cr_assert_str_eq(c.listen, "127.0.0.1:1");
    cr_assert_str_eq(c.discovery, "127.0.0.1:2");
    cr_assert_str_eq(c.metrics_listen, "127.0.0.1:3");
    cr_assert_str_eq(c.state_dir, "/var/x");
    cr_assert_eq(c.pool_size, 5);
    cr_assert_str_eq(c.id, "w-1");
    cr_assert_eq(c.lease_ttl_ms, 900);
    cr_assert_str_eq(c.agent, "/bin/agent");
    cr_assert_eq(c.pod_uid, 1000);
    cr_assert_eq(c.pod_gid, 1000);
}

Test(config, bad_flags_say_why)
{
    struct {
        char *flag, *val;
    } bad[] = {{"--pool-size", "-1"},     {"--pool-size", "x"}, {"--pool-size", "1000"},
               {"--listen", "nohost"},    {"--id", "a/b"},      {"--id", ""},
               {"--lease-ttl-ms", "5"},   {"--pod-uid", "0"},   {"--bogus", "1"},
               {"--discovery", "h:99999"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        wm_config_t c;
        const char *err = NULL;
        char *argv[] = {"x", bad[i].flag, bad[i].val, NULL};
        cr_assert_eq(parse(&c, &err, 3, argv), -1, "%s %s accepted", bad[i].flag, bad[i].val);
        cr_assert_not_null(err);
        cr_assert_null(strchr(err, '\n'));
    }
    wm_config_t c;
    const char *err = NULL;
    char *missing[] = {"x", "--listen", NULL};
    cr_assert_eq(parse(&c, &err, 2, missing), -1);
    char *extra[] = {"x", "positional", NULL};
    cr_assert_eq(parse(&c, &err, 2, extra), -1);
}

Test(config, discovery_list)
{
    wm_config_t c;
    const char *err = NULL;
    /* not on loopback: a loopback address is not registered in a discovery elsewhere */
    char *one[] = {"x", "--discovery", "10.0.0.1:7100", "--listen", "10.0.0.5:7200", NULL};
    cr_assert_eq(parse(&c, &err, 5, one), 0, "%s", err ? err : "");
    cr_assert_eq(c.n_discovery, 1);
    cr_assert_str_eq(c.discovery, "10.0.0.1:7100");
    cr_assert_str_eq(c.discoveries[0], "10.0.0.1:7100");
    char *two[] = {"x", "--discovery", "a.b:1,10.0.0.2:7100", NULL};
    cr_assert_eq(parse(&c, &err, 3, two), 0);
    cr_assert_eq(c.n_discovery, 2);
    cr_assert_str_eq(c.discovery, "a.b:1");
    cr_assert_str_eq(c.discoveries[1], "10.0.0.2:7100");
    /* the pick moves on when the one in use fails, and only then; a stale report of a
     * failure of the one before is ignored */
    cr_assert_str_eq(wm_discovery_pick(&c), "a.b:1");
    wm_discovery_failed(&c, "10.0.0.2:7100");
    cr_assert_str_eq(wm_discovery_pick(&c), "a.b:1");
    wm_discovery_failed(&c, "a.b:1");
    cr_assert_str_eq(wm_discovery_pick(&c), "10.0.0.2:7100");
    wm_discovery_failed(&c, "a.b:1");
    cr_assert_str_eq(wm_discovery_pick(&c), "10.0.0.2:7100");
    wm_discovery_failed(&c, "10.0.0.2:7100");
    cr_assert_str_eq(wm_discovery_pick(&c), "a.b:1");
    char *bad[] = {"a:1,", ",a:1", "a:1,,b:2", "a:1,b", "a:1,b:0x", "", "a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *argv[] = {"x", "--discovery", bad[i], NULL};
        err = NULL;
        cr_assert_eq(parse(&c, &err, 3, argv), -1, "--discovery %s accepted", bad[i]);
        cr_assert_not_null(err);
        cr_assert_null(strchr(err, '\n'));
    }
    char *eight[] = {"x", "--discovery", "a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8", NULL};
    cr_assert_eq(parse(&c, &err, 3, eight), 0);
    cr_assert_eq(c.n_discovery, 8);
    cr_assert_str_eq(c.discoveries[7], "a:8");
}

Test(config, token_file_defaults_next_to_the_state_dir)
{
    wm_config_t c;
    const char *err = NULL;
    char *a1[] = {"x", "--state-dir", "/srv/faas/worker/", NULL};
    cr_assert_eq(parse(&c, &err, 3, a1), 0, "%s", err);
    cr_assert_str_eq(c.token_file, "/srv/faas/discovery/token"); /* faasd's layout: DIR/worker, DIR/discovery */
    char *a2[] = {"x", "--state-dir", "/w", NULL};
    cr_assert_eq(parse(&c, &err, 3, a2), 0, "%s", err);
    cr_assert_str_eq(c.token_file, "/discovery/token");
    char *a3[] = {"x", "--state-dir", "/w", "--token-file", "/etc/faas/token", "--tls-ca", "/ca.pem", NULL};
    cr_assert_eq(parse(&c, &err, 7, a3), 0, "%s", err);
    cr_assert_str_eq(c.token_file, "/etc/faas/token");
    cr_assert_str_eq(c.tls_ca, "/ca.pem");
    cr_assert_str_eq(c.tls_cert, "");
}

Test(config, tls_cert_and_key_go_together)
{
    wm_config_t c;
    const char *err = NULL;
    char *a1[] = {"x", "--tls-cert", "/c.pem", NULL};
    cr_assert_eq(parse(&c, &err, 3, a1), -1);
    cr_assert(strstr(err, "together") != NULL);
    char *a2[] = {"x", "--tls-cert", "/c.pem", "--tls-key", "/k.pem", NULL};
    cr_assert_eq(parse(&c, &err, 5, a2), 0, "%s", err);
    cr_assert_str_eq(c.tls_key, "/k.pem");
    char *a3[] = {"x", "--token-file", "", NULL};
    cr_assert_eq(parse(&c, &err, 3, a3), -1);
}

/* argv with "x" in front; the parse's result. */
static int parse_list(wm_config_t *c, const char **err, char **args)
{
    char *argv[16] = {"x"};
    int n = 1;
    while (args[n - 1] != NULL && n < 15) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    return wm_config_parse(c, n, argv, err);
}

Test(config, several_hosts_flags)
{
    wm_config_t c;
    const char *err = NULL;
    char *def[] = {NULL};
    cr_assert_eq(parse_list(&c, &err, def), 0);
    cr_expect_str_eq(c.advertise, "127.0.0.1:7200", "the listen address by default");
    cr_expect_eq(c.pod_net, 0x0AC80000u);
    cr_expect_eq(c.pod_prefix, 16);
    cr_expect_str_eq(c.allow_from, "");
    char *set[] = {"--listen",
                   "0.0.0.0:7200",
                   "--advertise",
                   "192.168.1.7:7200",
                   "--pod-cidr",
                   "10.9.16.0/20",
                   "--allow-from=10.1.0.1,10.2.0.0/16",
                   NULL};
    cr_assert_eq(parse_list(&c, &err, set), 0, "%s", err ? err : "");
    cr_expect_str_eq(c.listen, "0.0.0.0:7200");
    cr_expect_str_eq(c.advertise, "192.168.1.7:7200");
    cr_expect_eq(c.pod_net, 0x0A091000u);
    cr_expect_eq(c.pod_prefix, 20);
    cr_expect_str_eq(c.allow_from, "10.1.0.1,10.2.0.0/16");
    /* the cluster's pod range: the /16 around the host's by default */
    cr_expect_eq(c.cluster_net, 0x0A090000u);
    cr_expect_eq(c.cluster_prefix, 16);
    char *cl[] = {"--pod-cidr", "10.9.16.0/20", "--cluster-cidr", "10.8.0.0/14", NULL};
    cr_assert_eq(parse_list(&c, &err, cl), 0, "%s", err ? err : "");
    cr_expect_eq(c.cluster_net, 0x0A080000u);
    cr_expect_eq(c.cluster_prefix, 14);
    char *edges[] = {"--pod-cidr", "10.0.0.0/28", "--listen", "10.0.0.1:1", NULL};
    cr_assert_eq(parse_list(&c, &err, edges), 0, "%s", err ? err : "");
    cr_expect_eq(c.pod_prefix, 28);
    cr_expect_str_eq(c.advertise, "10.0.0.1:1");
}

Test(config, several_hosts_flags_refuse_what_cannot_work)
{
    struct {
        char *args[5];
        const char *says; /* a word the one-line error must hold */
    } bad[] = {
        {{"--listen", "0.0.0.0:7200"}, "--advertise"}, /* other hosts cannot dial a wildcard */
        {{"--advertise", "0.0.0.0:1"}, "0.0.0.0"},
        {{"--advertise", ":7200"}, "--advertise"},
        {{"--advertise", "10.0.0.1:0"}, "port"},
        {{"--advertise", "nohost"}, "--advertise"},
        {{"--discovery", "10.0.0.9:7100"}, "loopback"}, /* --listen 127.0.0.1:7200 by default */
        {{"--pod-cidr", "10.200.0.0/15"}, "16-28"},
        {{"--pod-cidr", "10.200.0.0/29"}, "16-28"},
        {{"--pod-cidr", "10.200.0.1/24"}, "host bits"},
        {{"--pod-cidr", "10.200.0.0"}, "a.b.c.d/n"},
        {{"--pod-cidr", "10.200.0.0/"}, "a.b.c.d/n"},
        {{"--pod-cidr", "10.300.0.0/16"}, "a.b.c.d/n"},
        {{"--pod-cidr", "10.200.0.0/016x"}, "a.b.c.d/n"},
        {{"--cluster-cidr", "10.0.0.0/8", "--pod-cidr", "11.0.0.0/16"}, "--pod-cidr"}, /* must hold it */
        {{"--cluster-cidr", "10.200.0.0/20"}, "--pod-cidr"},                         /* narrower */
        {{"--cluster-cidr", "10.200.0.1/16"}, "--cluster-cidr"},
        {{"--allow-from", ""}, "--allow-from"},
        {{"--allow-from", "10.0.0.1,"}, "--allow-from"},
        {{"--allow-from", "10.0.0.1,,10.0.0.2"}, "--allow-from"},
        {{"--allow-from", "10.0.0.0/33"}, "--allow-from"},
        {{"--allow-from", "10.0.0.1/24"}, "--allow-from"}, /* host bits set */
        {{"--allow-from", "host.example"}, "--allow-from"},
        {{"--allow-from", "10.0.0.1 }; drop"}, "--allow-from"}, /* no nft text gets through */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        wm_config_t c;
        const char *err = NULL;
        cr_expect_eq(parse_list(&c, &err, bad[i].args), -1, "%s %s accepted", bad[i].args[0], bad[i].args[1]);
        cr_expect(err != NULL && strchr(err, '\n') == NULL && strstr(err, bad[i].says) != NULL, "%s %s: %s",
                  bad[i].args[0], bad[i].args[1], err ? err : "(none)");
    }
}

Test(config, the_advertised_host_is_an_address_or_a_name)
{
    wm_config_t c;
    const char *err = NULL;
    char *v6[] = {"--advertise", "[2001:db8::7]:7200", NULL};
    cr_expect_eq(parse_list(&c, &err, v6), 0, "%s", err ? err : "");
    char *name[] = {"--advertise", "node-3.example:7200", NULL};
    cr_expect_eq(parse_list(&c, &err, name), 0, "%s", err ? err : "");
    char *any6[] = {"--advertise", "[::]:7200", NULL};
    cr_expect_eq(parse_list(&c, &err, any6), -1);
    char *junk[] = {"--listen", "0.0.0.0:127..0.1:2", NULL}; /* the host part is "0.0.0.0:127..0.1" */
    cr_expect_eq(parse_list(&c, &err, junk), -1);
}

Test(config, python_pool_flags)
{
    wm_config_t c;
    const char *err = NULL;
    char *def[] = {NULL};
    cr_assert_eq(parse_list(&c, &err, def), 0, "%s", err ? err : "");
    cr_expect_eq(c.pool_python, 1);
    cr_expect_str_eq(c.python, "/usr/bin/python3");
    cr_expect_str_eq(c.python_preload, WM_PYTHON_PRELOAD_DEFAULT);
    cr_expect_eq(wm_python_preload_valid(WM_PYTHON_PRELOAD_DEFAULT, &err), 0, "the default passes its own rule");
    char *set[] = {"--pool-python", "64", "--python", "py/bin/python3.11", "--python-preload", "json,_x.y9,A", NULL};
    cr_assert_eq(parse_list(&c, &err, set), 0, "%s", err ? err : "");
    cr_expect_eq(c.pool_python, 64);
    cr_expect(c.python[0] == '/' && strstr(c.python, "/py/bin/python3.11") != NULL, "%s", c.python);
    cr_expect_str_eq(c.python_preload, "json,_x.y9,A");
    char *none[] = {"--pool-python", "0", "--python-preload", "", NULL};
    cr_assert_eq(parse_list(&c, &err, none), 0, "%s", err ? err : "");
    cr_expect_eq(c.pool_python, 0);
    cr_expect_str_eq(c.python_preload, "", "an empty list preloads nothing");
}

Test(config, python_pool_flags_refused)
{
    static char many[512], huge[4200];
    size_t n = 0;
    for (int i = 0; i < 65; i++) /* 65 names, well under 4096 bytes */
        n += (size_t)snprintf(many + n, sizeof(many) - n, "%sm%d", i ? "," : "", i);
    memset(huge, 'a', 4097); /* one name, one byte too long */
    huge[4097] = '\0';
    struct {
        char *args[3];
        const char *says;
    } bad[] = {
        {{"--pool-python", "65"}, "--pool-python"},
        {{"--pool-python", "-1"}, "--pool-python"},
        {{"--pool-python", "x"}, "--pool-python"},
        {{"--python", ""}, "--python"},
        {{"--python-preload", "json,"}, "module names"},
        {{"--python-preload", ",json"}, "module names"},
        {{"--python-preload", "json,,ssl"}, "module names"},
        {{"--python-preload", "1json"}, "module names"},
        {{"--python-preload", "http..server"}, "module names"},
        {{"--python-preload", "http.server."}, "module names"},
        {{"--python-preload", ".http"}, "module names"},
        {{"--python-preload", "http.9x"}, "module names"},
        {{"--python-preload", "os;import x"}, "module names"},
        {{"--python-preload", "json ssl"}, "module names"},
        {{"--python-preload", "caf\xc3\xa9"}, "module names"},
        {{"--python-preload", many}, "64"},
        {{"--python-preload", huge}, "4096"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        wm_config_t c;
        const char *err = NULL;
        char *args[] = {bad[i].args[0], bad[i].args[1], NULL};
        cr_expect_eq(parse_list(&c, &err, args), -1, "%s %.40s accepted", bad[i].args[0], bad[i].args[1]);
        cr_expect(err != NULL && strchr(err, '\n') == NULL && strstr(err, bad[i].says) != NULL, "%s %.40s: %s",
                  bad[i].args[0], bad[i].args[1], err ? err : "(none)");
    }
    /* the bounds themselves pass: 64 names, 4096 bytes */
    const char *err = NULL;
    many[strlen(many) - strlen(",m64")] = '\0';
    cr_expect_eq(wm_python_preload_valid(many, &err), 0, "%s", err ? err : "");
    huge[4096] = '\0';
    cr_expect_eq(wm_python_preload_valid(huge, &err), 0, "%s", err ? err : "");
}

Test(config, python_check_turns_the_pool_off_without_an_interpreter)
{
    wm_config_t c;
    const char *err = NULL;
    char *args[] = {"--pool-python", "3", NULL};
    cr_assert_eq(parse_list(&c, &err, args), 0, "%s", err ? err : "");
    snprintf(c.python, sizeof(c.python), "/bin/sh"); /* a file that runs: kept */
    cr_expect_eq(wm_python_check(&c), 0);
    cr_expect_eq(c.pool_python, 3);
    char plain[] = "/tmp/wm-python-XXXXXX"; /* a file without x bits (root runs these tests: access says so) */
    int fd = mkstemp(plain);
    cr_assert(fd >= 0);
    close(fd);
    const char *not_ok[] = {"/nonexistent/python3", "/tmp", plain}; /* absent, a dir, not executable */
    for (size_t i = 0; i < 3; i++) {
        c.pool_python = 3;
        snprintf(c.python, sizeof(c.python), "%s", not_ok[i]);
        cr_expect_eq(wm_python_check(&c), -1, "%s", not_ok[i]);
        cr_expect_eq(c.pool_python, 0, "%s", not_ok[i]);
    }
    unlink(plain);
    c.pool_python = 0; /* nothing asked for: nothing checked, nothing said */
    cr_expect_eq(wm_python_check(&c), 0);
}
