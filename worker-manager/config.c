/* config.c - command-line flags of faas-workermgr. */
#include "worker-manager/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"

/* The index of the discovery in use for calls other than lease renewals: one WM per
 * process, and every thread must move on together once one sees it down. */
static _Atomic unsigned disc_cur;

void wm_usage(void)
{
    printf("usage: faas-workermgr [flags]\n"
           "  --listen ADDR          gRPC listen address (127.0.0.1:7200)\n"
           "  --advertise HOST:PORT  the address registered in discovery, where gateways reach this\n"
           "                         worker manager (default: --listen; refused if its host is\n"
           "                         0.0.0.0: give this host's own address then)\n"
           "  --discovery ADDR[,ADDR...]\n"
           "                         discovery addresses, at most 8 (127.0.0.1:7100). Every lease\n"
           "                         renewal goes to each (discoveries sharing one etcd each hold\n"
           "                         instances and leases in memory); other calls go to the first\n"
           "                         that answers\n"
           "  --metrics-listen ADDR  /metrics and /healthz (127.0.0.1:7201)\n"
           "  --state-dir DIR        code cache, pod dirs, logs (./.faas/worker)\n"
           "  --pool-size N          warm generic pods (2)\n"
           "  --pool-python N        warm pods whose agent also holds a Python zygote: an interpreter\n"
           "                         that has imported --python-preload and waits to run a function\n"
           "                         whose command is `python3 SCRIPT [ARGS]` (1; 0-64, 0: none)\n"
           "  --python PATH          the zygotes' interpreter (/usr/bin/python3). Not an executable\n"
           "                         file at start: no zygote pods (one warning, event=python_pool_off)\n"
           "  --python-preload LIST  the modules a zygote imports, comma-separated dotted names; one it\n"
           "                         cannot import is skipped; \"\" imports none (at most 64 names,\n"
           "                         4096 bytes). Default:\n"
           "                         " WM_PYTHON_PRELOAD_DEFAULT "\n"
           "  --id ID                worker id (hostname-pid; a WM that adopts its crashed\n"
           "                         predecessor's pods keeps that one's id instead)\n"
           "  --lease-ttl-ms MS      discovery lease (3000)\n"
           "  --agent PATH           faas-agent binary (next to this binary)\n"
           "  --pod-uid UID          uid and gid pods run as (65534)\n"
           "  --cgroup-root DIR      cgroup mount root (/sys/fs/cgroup)\n"
           "  --pod-deny LIST        addresses or CIDRs (comma-separated) no pod may reach even with\n"
           "                         network: egress; discovery's address is always on it. Put\n"
           "                         every control-plane host here when they are other machines\n"
           "  --pod-cidr CIDR        this host's pod addresses, a /30 per pod (10.200.0.0/16; prefix\n"
           "                         16-28). Every host gets its own range, routed to it by the\n"
           "                         operator (docs/multihost.md): endpoints are pods' addresses\n"
           "  --cluster-cidr CIDR    every host's pod ranges together: no pod opens a connection into\n"
           "                         it, so a function never reaches another host's pods (default:\n"
           "                         the /16 around --pod-cidr, as when hosts get /24s of one /16)\n"
           "  --allow-from LIST      addresses or CIDRs (comma-separated) allowed to open connections\n"
           "                         to this host's pods: the gateways' hosts when they are other\n"
           "                         machines (default: none; this host always can)\n"
           "  --no-pod-netns         pods share the host's network namespace, as before issue 13:\n"
           "                         a function can then reach every host service. Only to\n"
           "                         measure what the namespace costs (make bench)\n"
           "  --no-seccomp           user servers run without their seccomp filter. Only to\n"
           "                         measure what the filter costs (make bench)\n"
           "  --no-runq-bpf          do not load the eBPF run-queue probe; the pods' overload\n"
           "                         detectors then judge CPU saturation from cgroup PSI and\n"
           "                         throttling alone (slower to see a step: ~100 ms, not a few ms)\n"
           "  --token-file FILE      the platform token sent to discovery and required on every call\n"
           "                         to this worker manager (env FAAS_TOKEN wins; default\n"
           "                         STATE_DIR/../discovery/token, where faasd's discovery makes it)\n"
           "  --tls-cert FILE        serve gRPC over TLS with this PEM certificate chain (with --tls-key)\n"
           "  --tls-key FILE         the PEM private key of --tls-cert (default: plaintext gRPC)\n"
           "  --tls-ca FILE          talk TLS to discovery, trusting this PEM CA (default: plaintext)\n"
           "  --adopt-grace-ms MS    after a crash of this WM (not a clean stop), its pod helper\n"
           "                         keeps the pods running this long and waits on\n"
           "                         STATE_DIR/helper.sock (0600, root) for a successor to adopt\n"
           "                         them; then it kills them (5000; 0: kill them at once)\n"
           "  --umoci PATH           umoci, which unpacks OCI images (umoci, looked up in PATH).\n"
           "                         Without it image functions fail to start; code dirs run\n"
           "  --image-cache-bytes N  unpacked image rootfs kept on this host; past it the least\n"
           "                         recently used not running are removed (10737418240 = 10 GiB)\n"
           "  --image-id-base N      host uid/gid of an image's uid/gid 0: images get the 65536\n"
           "                         ids from it, owned by no host user (1000000000; > 65535 and\n"
           "                         N + 65536 < 4294967295)\n"
           "  --help\n");
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v > max || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              (c == '.' && i > 0)))
            return 0;
    }
    return 1;
}

static int set_addr(char *dst, size_t cap, const char *v, const char **err, const char *bad)
{
    char host[128];
    uint16_t port;
    const char *e;
    if (strlen(v) >= cap || faas_parse_hostport(v, host, sizeof(host), &port, &e) != 0) {
        *err = bad;
        return -1;
    }
    snprintf(dst, cap, "%s", v);
    return 0;
}

static int absolutize(char *dst, size_t cap, const char *v)
{
    if (v[0] == '/')
        return wm_fmt(dst, cap, "%s", v);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return -1;
    if (v[0] == '.' && v[1] == '/')
        v += 2;
    return wm_fmt(dst, cap, "%s/%s", cwd, v);
}

static void defaults(wm_config_t *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->listen, sizeof(c->listen), "127.0.0.1:7200");
    c->pod_net = 0x0AC80000u; /* 10.200.0.0/16 */
    c->pod_prefix = 16;
    snprintf(c->discovery, sizeof(c->discovery), "127.0.0.1:7100");
    snprintf(c->discoveries[0], sizeof(c->discoveries[0]), "127.0.0.1:7100");
    c->n_discovery = 1;
    snprintf(c->metrics_listen, sizeof(c->metrics_listen), "127.0.0.1:7201");
    snprintf(c->cgroup_root, sizeof(c->cgroup_root), "/sys/fs/cgroup");
    c->pool_size = 2;
    c->pool_python = 1;
    snprintf(c->python, sizeof(c->python), "/usr/bin/python3");
    snprintf(c->python_preload, sizeof(c->python_preload), "%s", WM_PYTHON_PRELOAD_DEFAULT);
    c->lease_ttl_ms = 3000;
    c->pod_uid = 65534;
    c->pod_gid = 65534;
    c->runq_bpf = 1;
    c->pod_netns = 1;
    c->adopt_grace_ms = 5000;
    snprintf(c->umoci, sizeof(c->umoci), "umoci");
    c->image_cache_bytes = 10ull << 30;
    c->image_id_base = 1000000000u;
}

static void default_id_and_agent(wm_config_t *c)
{
    if (c->id[0] == '\0') {
        char host[64] = "worker";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        for (char *p = host; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'))
                *p = '-';
        host[40] = '\0';
        wm_fmt(c->id, sizeof(c->id), "%s-%d", host, (int)getpid());
    }
    if (c->agent[0] == '\0') {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
            exe[n] = '\0';
            char *slash = strrchr(exe, '/');
            if (slash)
                *slash = '\0';
            wm_fmt(c->agent, sizeof(c->agent), "%s/faas-agent", exe);
        }
    }
}

enum {
    O_LISTEN = 256,
    O_DISC,
    O_METRICS,
    O_STATE,
    O_POOL,
    O_ID,
    O_TTL,
    O_AGENT,
    O_UID,
    O_CG,
    O_NO_RUNQ,
    O_DENY,
    O_NO_NETNS,
    O_NO_SECCOMP,
    O_HELP,
    O_TOKEN,
    O_CERT,
    O_KEY,
    O_CA,
    O_GRACE,
    O_UMOCI,
    O_IMG_CACHE,
    O_IMG_BASE,
    O_ADVERTISE,
    O_POD_CIDR,
    O_ALLOW,
    O_CLUSTER,
    O_POOL_PY,
    O_PYTHON,
    O_PRELOAD
};

/* The file flags, made absolute like --agent. */
static int apply_file(wm_config_t *c, int o, const char *v, const char **err)
{
    char *dst = o == O_TOKEN ? c->token_file : o == O_CERT ? c->tls_cert : o == O_KEY ? c->tls_key : c->tls_ca;
    if (v[0] == '\0' || absolutize(dst, PATH_MAX, v) != 0)
        return *err = "--token-file, --tls-cert, --tls-key and --tls-ca need a file path", -1;
    return 0;
}

/* The numeric flags; 0, or -1 with *err. */
static int apply_number(wm_config_t *c, int o, const char *v, const char **err)
{
    unsigned long n;
    switch (o) {
    case O_POOL:
        if (parse_uint(v, 64, &n) != 0)
            return *err = "--pool-size must be a number 0-64", -1;
        c->pool_size = (unsigned)n;
        return 0;
    case O_POOL_PY:
        if (parse_uint(v, 64, &n) != 0)
            return *err = "--pool-python must be a number 0-64", -1;
        c->pool_python = (unsigned)n;
        return 0;
    case O_TTL:
        if (parse_uint(v, 3600000, &n) != 0 || n < 300)
            return *err = "--lease-ttl-ms must be 300-3600000", -1;
        c->lease_ttl_ms = (unsigned)n;
        return 0;
    case O_IMG_CACHE:
        if (parse_uint(v, ULONG_MAX, &n) != 0 || n < (1ul << 20))
            return *err = "--image-cache-bytes must be a number of bytes, at least 1048576", -1;
        c->image_cache_bytes = n;
        return 0;
    case O_IMG_BASE:
        /* above every ordinary host id, and the whole 65536 below (uid_t)-1 */
        if (parse_uint(v, 0xFFFFFFFFul - WM_IMAGE_IDS - 1, &n) != 0 || n <= 65535)
            return *err = "--image-id-base must be 65536-4294901758", -1;
        c->image_id_base = (uint32_t)n;
        return 0;
    case O_GRACE:
        if (parse_uint(v, 3600000, &n) != 0)
            return *err = "--adopt-grace-ms must be 0-3600000", -1;
        c->adopt_grace_ms = (unsigned)n;
        return 0;
    default: /* O_UID */
        if (parse_uint(v, 65535 * 65536ul, &n) != 0 || n == 0)
            return *err = "--pod-uid must be a non-zero uid", -1;
        c->pod_uid = (uid_t)n;
        c->pod_gid = (gid_t)n;
        return 0;
    }
}

/* One module name of --python-preload (len bytes at s): dotted Python identifiers
 * (ASCII), each part [A-Za-z_][A-Za-z0-9_]*: the agent hands it to importlib as is. */
static int module_name_ok(const char *s, size_t len)
{
    int start = 1;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        int alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        if (ch == '.' && !start)
            start = 1;
        else if (alpha || (!start && ch >= '0' && ch <= '9'))
            start = 0;
        else
            return 0;
    }
    return len > 0 && !start;
}

int wm_python_preload_valid(const char *v, const char **err)
{
    size_t n = strlen(v), names = 0;
    if (n > WM_PYTHON_PRELOAD_MAX_BYTES)
        return *err = "--python-preload is longer than 4096 bytes", -1;
    for (const char *p = v; n > 0; names++) {
        size_t l = strcspn(p, ",");
        if (names == WM_PYTHON_PRELOAD_MAX_NAMES)
            return *err = "--python-preload names more than 64 modules", -1;
        if (!module_name_ok(p, l))
            return *err = "--python-preload must be module names (like http.server), comma-separated", -1;
        if (p[l] == '\0')
            break;
        p += l + 1;
        if (*p == '\0')
            return *err = "--python-preload must be module names (like http.server), comma-separated", -1;
    }
    return 0;
}

/* --pod-deny: IPv4 addresses or CIDRs only (it goes into an nftables set as text). */
static int set_deny(wm_config_t *c, const char *v, const char **err)
{
    size_t n = strlen(v);
    if (n == 0 || n >= sizeof(c->pod_deny) || strspn(v, "0123456789./,") != n)
        return *err = "--pod-deny must be IPv4 addresses or CIDRs, comma-separated", -1;
    snprintf(c->pod_deny, sizeof(c->pod_deny), "%s", v);
    return 0;
}

/* "a.b.c.d" or "a.b.c.d/n" (n 0-32) into *net (host order) and *prefix (32 without /n);
 * host bits must be zero, so that what is written is what is meant. 0 or -1. */
int wm_parse_cidr(const char *s, size_t len, uint32_t *net, int *prefix)
{
    char buf[24];
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    unsigned long p = 32;
    if (slash != NULL) {
        *slash = '\0';
        if (slash[1] == '\0' || parse_uint(slash + 1, 32, &p) != 0 || strlen(slash + 1) > 2)
            return -1;
    }
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1)
        return -1;
    uint32_t v = ntohl(a.s_addr), mask = p == 0 ? 0 : 0xFFFFFFFFu << (32 - p);
    if ((v & ~mask) != 0)
        return -1;
    *net = v;
    *prefix = (int)p;
    return 0;
}

/* --pod-cidr: 16-28, so that a host has from 3 to 16383 /30 blocks of pods (block 0
 * is never used: it holds the range's network address). */
static int set_pod_cidr(wm_config_t *c, const char *v, const char **err)
{
    uint32_t net;
    int prefix;
    if (wm_parse_cidr(v, strlen(v), &net, &prefix) != 0 || strchr(v, '/') == NULL)
        return *err = "--pod-cidr must be an IPv4 network a.b.c.d/n with its host bits zero", -1;
    if (prefix < WM_POD_PREFIX_MIN || prefix > WM_POD_PREFIX_MAX)
        return *err = "--pod-cidr prefix must be 16-28 (from 16383 pods down to 3)", -1;
    c->pod_net = net;
    c->pod_prefix = prefix;
    return 0;
}

/* --cluster-cidr: any prefix that holds the host's own range (checked once both are known). */
static int set_cluster_cidr(wm_config_t *c, const char *v, const char **err)
{
    if (wm_parse_cidr(v, strlen(v), &c->cluster_net, &c->cluster_prefix) != 0 || strchr(v, '/') == NULL ||
        c->cluster_prefix < 1)
        return *err = "--cluster-cidr must be an IPv4 network a.b.c.d/n with its host bits zero", -1;
    return 0;
}

/* The cluster's pod range: given, it must hold this host's; else the /16 around it. */
static int set_cluster(wm_config_t *c, const char **err)
{
    if (c->cluster_prefix == 0) {
        c->cluster_prefix = c->pod_prefix < 16 ? c->pod_prefix : 16;
        c->cluster_net = c->pod_net & (0xffffffffu << (32 - c->cluster_prefix));
        return 0;
    }
    uint32_t mask = 0xffffffffu << (32 - c->cluster_prefix);
    if (c->cluster_prefix > c->pod_prefix || (c->pod_net & mask) != c->cluster_net)
        return *err = "--cluster-cidr must hold this host's --pod-cidr", -1;
    return 0;
}

/* --allow-from: each element an IPv4 address or network, checked here because the list
 * goes into an nftables set as text, where a typo would fail only at start-up. */
static int set_allow(wm_config_t *c, const char *v, const char **err)
{
    static const char *bad = "--allow-from must be IPv4 addresses or CIDRs (a.b.c.d/n), comma-separated";
    size_t n = strlen(v);
    if (n == 0)
        return *err = bad, -1;
    if (n >= sizeof(c->allow_from))
        return *err = "--allow-from is too long", -1;
    for (const char *p = v;;) {
        size_t l = strcspn(p, ",");
        uint32_t net;
        int prefix;
        if (wm_parse_cidr(p, l, &net, &prefix) != 0)
            return *err = bad, -1;
        if (p[l] == '\0')
            break;
        p += l + 1;
        if (*p == '\0')
            return *err = bad, -1;
    }
    snprintf(c->allow_from, sizeof(c->allow_from), "%s", v);
    return 0;
}

/* --discovery A[,B...]: every element a host:port, at most WM_MAX_DISCOVERY. */
static int set_discovery(wm_config_t *c, const char *v, const char **err)
{
    static const char *bad = "--discovery must be host:port[,host:port...], at most 8";
    char tmp[WM_MAX_DISCOVERY][128] = {{0}};
    unsigned n = 0;
    for (const char *p = v;; n++) {
        size_t l = strcspn(p, ",");
        if (n == WM_MAX_DISCOVERY || l == 0 || l >= sizeof(tmp[0]))
            return *err = bad, -1;
        char one[128], host[128];
        uint16_t port;
        const char *e;
        memcpy(one, p, l);
        one[l] = '\0';
        if (faas_parse_hostport(one, host, sizeof(host), &port, &e) != 0)
            return *err = bad, -1;
        memcpy(tmp[n], one, l + 1);
        if (p[l] == '\0')
            break;
        p += l + 1;
    }
    memcpy(c->discoveries, tmp, sizeof(tmp));
    c->n_discovery = n + 1;
    snprintf(c->discovery, sizeof(c->discovery), "%s", tmp[0]);
    return 0;
}

const char *wm_discovery_pick(const wm_config_t *c)
{
    if (c->n_discovery == 0)
        return c->discovery;
    return c->discoveries[disc_cur % c->n_discovery];
}

void wm_discovery_failed(const wm_config_t *c, const char *addr)
{
    if (c->n_discovery < 2)
        return;
    unsigned cur = disc_cur;
    if (strcmp(c->discoveries[cur % c->n_discovery], addr) != 0)
        return; /* someone else already moved on */
    unsigned next = (cur + 1) % c->n_discovery;
    if (atomic_compare_exchange_strong(&disc_cur, &cur, next))
        FAAS_WARN("event=discovery_switch from=%s to=%s", addr, c->discoveries[next]);
}

int wm_discovery_down_rc(int rc)
{
    return rc < 0 || rc == FAAS_GRPC_UNAVAILABLE || rc == FAAS_GRPC_DEADLINE_EXCEEDED || rc == FAAS_GRPC_CANCELLED ||
           rc == FAAS_GRPC_UNKNOWN;
}

/* One flag o with value v (--state-dir is only noted: it is resolved once all flags are
 * in); 0, 1 for --help, or -1 with *err. */
static int apply(wm_config_t *c, int o, const char *v, const char **state, const char **err)
{
    switch (o) {
    case O_LISTEN:
        return set_addr(c->listen, sizeof(c->listen), v, err, "--listen must be host:port");
    case O_ADVERTISE:
        return set_addr(c->advertise, sizeof(c->advertise), v, err, "--advertise must be host:port");
    case O_POD_CIDR:
        return set_pod_cidr(c, v, err);
    case O_ALLOW:
        return set_allow(c, v, err);
    case O_CLUSTER:
        return set_cluster_cidr(c, v, err);
    case O_DISC:
        return set_discovery(c, v, err);
    case O_METRICS:
        return set_addr(c->metrics_listen, sizeof(c->metrics_listen), v, err, "--metrics-listen must be host:port");
    case O_STATE:
        *state = v;
        return 0;
    case O_POOL:
    case O_TTL:
    case O_UID:
    case O_GRACE:
    case O_IMG_CACHE:
    case O_IMG_BASE:
        return apply_number(c, o, v, err);
    case O_UMOCI:
        /* a bare name stays one: posix_spawnp looks it up in PATH when it runs */
        if (v[0] == '\0' || (strchr(v, '/') ? absolutize(c->umoci, sizeof(c->umoci), v)
                                            : wm_fmt(c->umoci, sizeof(c->umoci), "%s", v)) != 0)
            return *err = "--umoci needs a program name or path", -1;
        return 0;
    case O_ID:
        if (!valid_id(v))
            return *err = "--id must be 1-63 chars of [A-Za-z0-9._-]", -1;
        snprintf(c->id, sizeof(c->id), "%s", v);
        c->id_given = 1;
        return 0;
    case O_AGENT:
        if (absolutize(c->agent, sizeof(c->agent), v) != 0)
            return *err = "--agent path too long", -1;
        return 0;
    case O_CG:
        if (absolutize(c->cgroup_root, sizeof(c->cgroup_root), v) != 0)
            return *err = "--cgroup-root too long", -1;
        return 0;
    case O_NO_RUNQ:
        c->runq_bpf = 0;
        return 0;
    case O_DENY:
        return set_deny(c, v, err);
    case O_NO_NETNS:
        c->pod_netns = 0;
        return 0;
    case O_NO_SECCOMP:
        c->no_seccomp = 1;
        return 0;
    case O_POOL_PY:
        return apply_number(c, o, v, err);
    case O_PYTHON:
        /* checked at start (wm_python_check): a missing interpreter only turns the pool off */
        if (v[0] == '\0' || absolutize(c->python, sizeof(c->python), v) != 0)
            return *err = "--python needs an interpreter path", -1;
        return 0;
    case O_PRELOAD:
        if (wm_python_preload_valid(v, err) != 0)
            return -1;
        snprintf(c->python_preload, sizeof(c->python_preload), "%s", v);
        return 0;
    case O_TOKEN:
    case O_CERT:
    case O_KEY:
    case O_CA:
        return apply_file(c, o, v, err);
    case O_HELP:
        return 1; /* main prints the usage: parsing never writes anywhere */
    default:
        return *err = "unknown flag or missing value (see --help)", -1;
    }
}

/* The state dir, absolute and without trailing slashes (pod paths are built from it). */
static int set_state_dir(wm_config_t *c, const char *state, const char **err)
{
    if (state[0] == '\0' || absolutize(c->state_dir, sizeof(c->state_dir), state) != 0)
        return *err = "--state-dir is empty or too long", -1;
    size_t sl = strlen(c->state_dir);
    while (sl > 1 && c->state_dir[sl - 1] == '/')
        c->state_dir[--sl] = '\0';
    return 0;
}

/* <state_dir>/../discovery/token: where discovery keeps it in faasd's and the demo's
 * layout (<dir>/discovery next to <dir>/worker), so they need no flag. */
static int default_token_file(wm_config_t *c, const char **err)
{
    if (c->token_file[0] != '\0')
        return 0;
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", c->state_dir);
    char *slash = strrchr(parent, '/');
    if (slash != NULL)
        slash[slash == parent ? 1 : 0] = '\0';
    if (wm_fmt(c->token_file, sizeof(c->token_file), "%s%sdiscovery/token", parent,
               parent[strlen(parent) - 1] == '/' ? "" : "/") != 0)
        return *err = "--state-dir too long for the default --token-file", -1;
    return 0;
}

/* An address literal other than a wildcard, or a host name ([A-Za-z0-9.-]): what a
 * gateway on another machine can dial. */
static int dialable(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return a4.s_addr != htonl(INADDR_ANY);
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return !IN6_IS_ADDR_UNSPECIFIED(&a6);
    size_t n = strlen(host);
    return n > 0 && strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == n &&
           host[0] != '-' && host[0] != '.';
}

/* 127.0.0.0/8 or "localhost". */
static int loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0;
}

/* What discovery registers: --advertise, else --listen; never a wildcard, which other
 * hosts cannot dial (a gateway would connect to its own host). */
static int set_advertise(wm_config_t *c, const char **err)
{
    if (c->advertise[0] == '\0')
        snprintf(c->advertise, sizeof(c->advertise), "%s", c->listen);
    char host[128];
    uint16_t port;
    const char *e;
    if (faas_parse_hostport(c->advertise, host, sizeof(host), &port, &e) != 0 || !dialable(host) || port == 0)
        return *err = "the registered address (--advertise, else --listen) needs a host other gateways can dial, "
                      "not 0.0.0.0, and a port: give --advertise HOST:PORT",
               -1;
    /* a loopback address in a discovery on another machine sends every gateway to its own host */
    char dh[128];
    if (loopback(host) && faas_parse_hostport(c->discoveries[0], dh, sizeof(dh), &port, &e) == 0 && !loopback(dh) &&
        strspn(dh, "0123456789.") == strlen(dh))
        return *err = "a loopback address (--advertise, else --listen) cannot be registered in a discovery on another "
                      "machine: give --advertise HOST:PORT",
               -1;
    return 0;
}

int wm_python_check(wm_config_t *c)
{
    struct stat st;
    if (c->pool_python == 0)
        return 0;
    if (stat(c->python, &st) == 0 && S_ISREG(st.st_mode) && access(c->python, X_OK) == 0)
        return 0;
    FAAS_WARN("event=python_pool_off python=%s pool_python=%u msg=\"not an executable file: no Python zygote pods\"",
              c->python, c->pool_python);
    c->pool_python = 0;
    return -1;
}

int wm_config_parse(wm_config_t *c, int argc, char **argv, const char **err)
{
    static const struct option opts[] = {
        {"listen", required_argument, 0, O_LISTEN},
        {"discovery", required_argument, 0, O_DISC},
        {"metrics-listen", required_argument, 0, O_METRICS},
        {"state-dir", required_argument, 0, O_STATE},
        {"pool-size", required_argument, 0, O_POOL},
        {"id", required_argument, 0, O_ID},
        {"lease-ttl-ms", required_argument, 0, O_TTL},
        {"agent", required_argument, 0, O_AGENT},
        {"pod-uid", required_argument, 0, O_UID},
        {"cgroup-root", required_argument, 0, O_CG},
        {"no-runq-bpf", no_argument, 0, O_NO_RUNQ},
        {"pod-deny", required_argument, 0, O_DENY},
        {"no-pod-netns", no_argument, 0, O_NO_NETNS},
        {"no-seccomp", no_argument, 0, O_NO_SECCOMP},
        {"token-file", required_argument, 0, O_TOKEN},
        {"tls-cert", required_argument, 0, O_CERT},
        {"tls-key", required_argument, 0, O_KEY},
        {"tls-ca", required_argument, 0, O_CA},
        {"adopt-grace-ms", required_argument, 0, O_GRACE},
        {"umoci", required_argument, 0, O_UMOCI},
        {"image-cache-bytes", required_argument, 0, O_IMG_CACHE},
        {"image-id-base", required_argument, 0, O_IMG_BASE},
        {"advertise", required_argument, 0, O_ADVERTISE},
        {"pod-cidr", required_argument, 0, O_POD_CIDR},
        {"allow-from", required_argument, 0, O_ALLOW},
        {"cluster-cidr", required_argument, 0, O_CLUSTER},
        {"pool-python", required_argument, 0, O_POOL_PY},
        {"python", required_argument, 0, O_PYTHON},
        {"python-preload", required_argument, 0, O_PRELOAD},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    defaults(c);
    const char *state = "./.faas/worker";
    optind = 0; /* getopt keeps state between calls: 0 re-initialises it fully */
    opterr = 0; /* and must not print: the caller prints *err */
    int o, rc;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if ((rc = apply(c, o, optarg, &state, err)) != 0)
            return rc;
    if (optind < argc) {
        *err = "unexpected argument (see --help)";
        return -1;
    }
    if (set_state_dir(c, state, err) != 0)
        return -1;
    if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0')) {
        *err = "--tls-cert and --tls-key go together";
        return -1;
    }
    if (set_advertise(c, err) != 0 || set_cluster(c, err) != 0)
        return -1;
    default_id_and_agent(c);
    return default_token_file(c, err);
}
