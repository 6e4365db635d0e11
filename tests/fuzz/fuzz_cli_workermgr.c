/* libFuzzer driver for faas-workermgr's command line (wm_config_parse). The
 * input's NUL-separated pieces are the arguments. Any argv gives 0, 1 (--help) or
 * -1 with one printable line; an accepted config is within the documented bounds
 * (addresses host:port, pool 0..64, lease 300..3600000 ms, non-zero uid, absolute
 * paths, an advertised address that is no wildcard, a python pool of 0..64 with a preload
 * list of dotted names, a pod range of prefix 16-28 with its
 * host bits zero, an allow list of digits, dots, slashes and commas only: it goes into
 * nftables as text); a second parse of the same argv agrees. */
// FUZZ_SOURCES: worker-manager/config.c worker-manager/cgroup.c common/util.c common/log.c tests/fuzz/cli_argv.c
// FUZZ_PKGS: libprotobuf-c
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tests/fuzz/cli_argv.h"
#include "worker-manager/workermgr.h"

static int is_addr(const char *v)
{
    char host[128];
    uint16_t port;
    const char *e;
    return fuzz_cli_printable(v) && faas_parse_hostport(v, host, sizeof(host), &port, &e) == 0;
}

/* A --python-preload list as the documentation says: comma-separated dotted names, each
 * part [A-Za-z_][A-Za-z0-9_]*; empty allowed. Written here again, as the oracle. */
static int preload_ok(const char *v)
{
    int at_start = 1; /* of a part: a letter or '_' must come */
    if (*v == '\0')
        return 1;
    for (; *v != '\0'; v++) {
        char ch = *v;
        int alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        if (at_start ? !alpha : !(alpha || (ch >= '0' && ch <= '9') || ch == '.' || ch == ','))
            return 0;
        at_start = ch == '.' || ch == ',';
    }
    return !at_start;
}

/* NUL-terminated inside its array. */
#define TERMINATED(f) (memchr((f), 0, sizeof(f)) != NULL)

static void check_config(const wm_config_t *c)
{
    if (!TERMINATED(c->listen) || !TERMINATED(c->discovery) || !TERMINATED(c->metrics_listen) ||
        !TERMINATED(c->state_dir) || !TERMINATED(c->id) || !TERMINATED(c->agent) || !TERMINATED(c->cgroup_root))
        abort();
    if (!is_addr(c->listen) || !is_addr(c->discovery) || !is_addr(c->metrics_listen))
        abort();
    if (c->n_discovery < 1 || c->n_discovery > WM_MAX_DISCOVERY || strcmp(c->discovery, c->discoveries[0]) != 0)
        abort();
    for (unsigned i = 0; i < c->n_discovery; i++)
        if (!TERMINATED(c->discoveries[i]) || !is_addr(c->discoveries[i]))
            abort();
    if (c->pool_size > 64 || c->lease_ttl_ms < 300 || c->lease_ttl_ms > 3600000 || c->pod_uid == 0 ||
        c->pod_gid != c->pod_uid)
        abort();
    /* the python pool (issue 18): its list goes to every zygote pod's agent as text */
    if (c->pool_python > 64 || !TERMINATED(c->python) || !TERMINATED(c->python_preload) ||
        !preload_ok(c->python_preload))
        abort();
    char host[128];
    uint16_t port;
    const char *e;
    if (!TERMINATED(c->advertise) || faas_parse_hostport(c->advertise, host, sizeof(host), &port, &e) != 0 ||
        host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 || port == 0)
        abort();
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1 &&
        strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != strlen(host))
        abort();
    if (c->pod_prefix < 16 || c->pod_prefix > 28 || (c->pod_net & ((1u << (32 - c->pod_prefix)) - 1)) != 0)
        abort();
    if (!TERMINATED(c->allow_from) || strspn(c->allow_from, "0123456789./,") != strlen(c->allow_from))
        abort();
    size_t sl = strlen(c->state_dir);
    if (c->state_dir[0] != '/' || (sl > 1 && c->state_dir[sl - 1] == '/'))
        abort();
    if (c->cgroup_root[0] != '/' || c->id[0] == '\0' || (c->agent[0] != '\0' && c->agent[0] != '/'))
        abort();
}

static int parse(const uint8_t *data, size_t size, char *msg, size_t cap)
{
    fuzz_cli_argv_t a;
    if (fuzz_cli_argv_make(&a, "faas-workermgr", data, size) != 0)
        return -2;
    static wm_config_t c; /* several PATH_MAX arrays: too big for libFuzzer's stack budget */
    const char *err = NULL;
    int rc = wm_config_parse(&c, a.argc, a.argv, &err);
    msg[0] = '\0';
    if (rc == -1) {
        fuzz_cli_check_line(err, 256);
        strncpy(msg, err, cap - 1);
        msg[cap - 1] = '\0';
    } else if (rc == 0) {
        check_config(&c);
    } else if (rc != 1) {
        abort();
    }
    fuzz_cli_argv_free(&a);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_cli_twice(parse, data, size);
    return 0;
}
