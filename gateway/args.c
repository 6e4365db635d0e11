/* args.c - faas-gateway's flags. Pure so unit tests and the libFuzzer driver
 * (tests/fuzz/fuzz_cli_gateway.c) can call it; main.c does the printing. */
#include "gateway/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/spec.h"
#include "common/util.h"

const char gw_args_usage[] =
    "usage: faas-gateway [--listen ADDR] [--discovery ADDR[,ADDR...]] [--max-body BYTES] [--queue-max N]\n"
    "                    [--cold-start-timeout-ms MS] [--threads N] [--domain D]\n"
    "  --listen ADDR               HTTP/1.1 + h2c listener (default 127.0.0.1:8080)\n"
    "  --discovery ADDR[,ADDR...]  faas-discovery gRPC addresses, at most 8 (default 127.0.0.1:7100):\n"
    "                              the watch and discovery calls use one, moving to the next when\n"
    "                              its stream ends (every worker manager renews with each)\n"
    "  --max-body BYTES            largest request body (default 8388608)\n"
    "  --queue-max N               requests held per function during cold start (default 1024)\n"
    "  --cold-start-timeout-ms MS  longest wait for an instance (default: the function's spec)\n"
    "  --sync-hold-ms MS           longest a call to a function the gateway does not know waits\n"
    "                              for discovery (the first snapshot after a start; a deploy whose\n"
    "                              watch event is late); then 503 + Retry-After (default 5000)\n"
    "  --threads N                 event loop threads, 1..256 (default: one per usable CPU)\n"
    "                              each with its own listeners (SO_REUSEPORT) and\n"
    "                              dispatcher replica (docs/threads.md)\n"
    "  --grpc-listen ADDR          gRPC port, h2c prior knowledge (default 127.0.0.1:8081; off = none)\n"
    "  --domain D                  also route Host <name>.D to function <name> (default: off)\n"
    "  --thrift-listen ADDR        Thrift port: framed, THeader, TTHeader (default 127.0.0.1:8082; off = none)\n"
    "  --thrift-default-function F function for Thrift calls that name no service (default: none)\n"
    "  --token-file FILE           the platform token sent to discovery and worker managers (env\n"
    "                              FAAS_TOKEN wins; default ./.faas/discovery/token). The gateway's\n"
    "                              own HTTP, gRPC and Thrift ports stay open: they are the users' API\n"
    "  --tls-ca FILE               talk TLS to discovery and worker managers, trusting this PEM CA\n"
    "  --thrift-idle-timeout-ms MS    close a Thrift connection with no bytes and no call in\n"
    "                                 flight for MS (default 60000)\n"
    "  --thrift-header-timeout-ms MS  a frame's length, header and method name must arrive\n"
    "                                 within MS of its first byte (default 10000)\n"
    "  --thrift-body-timeout-ms MS    a frame's body must grow by --thrift-body-min-bytes in\n"
    "  --thrift-body-min-bytes N      every MS window, else close (defaults 10000, 4096)\n"
    "  --thrift-max-frame BYTES       largest Thrift frame (default 16777216)\n"
    "  --thrift-max-header-bytes N    largest THeader/TTHeader header block and method name\n"
    "                                 (default 16384)\n"
    "  --thrift-max-partial-bytes N   unfinished frames held across all Thrift connections,\n"
    "                                 an equal share per loop thread; past its share a loop\n"
    "                                 closes its largest holder (default 67108864)\n"
    "  --max-url-bytes N           longest request path with query; longer: 414 (default 8192)\n"
    "  --max-header-bytes N        request header names + values; more: 431 (default 16384)\n"
    "  --max-conns-per-client N    connections per client IPv4 address or IPv6 /64, all ports\n"
    "                              together; more are closed at accept (default 512; 0 = no cap)\n"
    "  --max-conns N               connections in all (default: 3/4 of RLIMIT_NOFILE; 0 = no cap)\n"
    "  --http-header-timeout-ms MS HTTP/1 request head (and keep-alive idle) timeout (default 10000)\n"
    "  --advertise-host H          host the endpoints API (GET /endpoints/<fn>) gives for this\n"
    "                              gateway's ports (default: the bound address, or for a wildcard\n"
    "                              bind the local address the asking client reached)\n";

typedef struct {
    char *buf;
    size_t cap;
    const char **err;
} gw_errout_t;

/* "what: flag[=value]" with command-line bytes cut at 64 and control bytes shown
 * as '?', so the message is one line whatever argv held. */
static int fail(const gw_errout_t *o, const char *what, const char *flag, size_t flen, const char *val)
{
    snprintf(o->buf, o->cap, "%s: %.*s%s%.64s", what, (int)(flen < 64 ? flen : 64), flag, val ? "=" : "",
             val ? val : "");
    faas_oneline(o->buf);
    *o->err = o->buf;
    return -1;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int is_addr(const char *v)
{
    char host[128];
    uint16_t port;
    const char *e;
    return faas_parse_hostport(v, host, sizeof(host), &port, &e) == 0;
}

/* the dispatcher keeps at most DISP_MAX_DISCOVERY (dispatcher.h) */
#define GW_MAX_DISCOVERY 8

/* --discovery: host:port[,host:port...], no empty element, at most GW_MAX_DISCOVERY. */
static int is_addr_list(const char *v)
{
    unsigned n = 0;
    for (const char *p = v;; n++) {
        size_t l = strcspn(p, ",");
        char one[160];
        if (n == GW_MAX_DISCOVERY || l == 0 || l >= sizeof(one))
            return 0;
        memcpy(one, p, l);
        one[l] = '\0';
        if (!is_addr(one))
            return 0;
        if (p[l] == '\0')
            return 1;
        p += l + 1;
    }
}

/* A DNS name or an IP literal (IPv6 bare or in brackets): 1..253 bytes of
 * [A-Za-z0-9.:-] (brackets around), so it can go into JSON and an address unescaped. */
static int host_ok(const char *v)
{
    size_t n = strlen(v), i = 0;
    if (n >= 2 && v[0] == '[' && v[n - 1] == ']')
        i = 1, n--;
    if (n - i == 0 || n - i > 253)
        return 0;
    for (; i < n; i++)
        if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= '0' && v[i] <= '9') ||
              v[i] == '.' || v[i] == '-' || v[i] == ':'))
            return 0;
    return 1;
}

/* One loop per CPU the gateway may use (affinity, cgroup quota), at most 256 (the
 * dispatcher's limit): a 2-CPU container on a 64-core host runs 2. */
static uint32_t default_threads(void)
{
    unsigned n = faas_cpu_count();
    return n > 256 ? 256 : n;
}

static void defaults(gw_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen = "127.0.0.1:8080";
    cfg->discovery = "127.0.0.1:7100";
    cfg->max_body = FAAS_SPEC_DEFAULT_MAX_BODY_BYTES; /* a function without max_body gets this */
    cfg->queue_max = 1024;
    cfg->sync_hold_ms = 5000;
    cfg->threads = default_threads();
    cfg->domain = "";
    cfg->grpc_listen = NULL; /* default port, best effort */
    cfg->thrift_listen = "127.0.0.1:8082";
    cfg->thrift_default_fn = "";
    cfg->token_file = "./.faas/discovery/token"; /* where faasd and `make run` keep it */
    cfg->tls_ca = NULL;
    cfg->max_url_bytes = 8192;
    cfg->max_header_bytes = 16384;
    cfg->max_conns_per_client = 512; /* loopback benches open 256+ connections from one address */
    cfg->max_conns = 0;
    cfg->http_header_timeout_ms = 10000;
    cfg->thrift_idle_timeout_ms = 60000;
    cfg->thrift_header_timeout_ms = 10000;
    cfg->thrift_body_timeout_ms = 10000;
    cfg->thrift_body_min_bytes = 4096;
    cfg->thrift_max_frame = 16u << 20; /* thrift.h's THRIFT_DEFAULT_MAX_FRAME */
    cfg->thrift_max_header_bytes = 16384;
    cfg->thrift_max_partial_bytes = 64u << 20;
}

/* The Thrift port's limits; 0, 1 when the name is not one of them, -1 on a bad value. */
static int apply_thrift_limit(gw_config_t *cfg, const char *a, size_t nl, const char *v)
{
    uint64_t n;
#define IS(f) (nl == sizeof(f) - 1 && memcmp(a, f, nl) == 0)
#define U32(f, lo, hi, field)                                                                                          \
    if (IS(f))                                                                                                         \
        return parse_u64(v, lo, hi, &n) == 0 ? (cfg->field = (uint32_t)n, 0) : -1;
    U32("--thrift-idle-timeout-ms", 1, 86400000, thrift_idle_timeout_ms)
    U32("--thrift-header-timeout-ms", 1, 86400000, thrift_header_timeout_ms)
    U32("--thrift-body-timeout-ms", 1, 86400000, thrift_body_timeout_ms)
    U32("--thrift-body-min-bytes", 1, 1u << 30, thrift_body_min_bytes)
    U32("--thrift-max-frame", 64, 0x7fffffff, thrift_max_frame) /* the length's top bit means unframed */
    U32("--thrift-max-header-bytes", 64, 1u << 20, thrift_max_header_bytes)
    if (IS("--thrift-max-partial-bytes"))
        return parse_u64(v, 4096, UINT64_MAX, &n) == 0 ? (cfg->thrift_max_partial_bytes = n, 0) : -1;
#undef U32
#undef IS
    return 1;
}

/* Applies one flag; 0, or -1 if the name is unknown or the value out of range. */
static int apply(gw_config_t *cfg, const char *a, size_t nl, const char *v)
{
    uint64_t n;
    const char *e;
    int t = apply_thrift_limit(cfg, a, nl, v);
    if (t <= 0)
        return t;
#define IS(f) (nl == sizeof(f) - 1 && memcmp(a, f, nl) == 0)
    if (IS("--listen") && is_addr(v))
        cfg->listen = v;
    else if (IS("--discovery") && is_addr_list(v))
        cfg->discovery = v;
    else if (IS("--thrift-listen") && (strcmp(v, "off") == 0 || is_addr(v)))
        cfg->thrift_listen = v, cfg->thrift_listen_explicit = 1;
    else if (IS("--thrift-default-function") && (v[0] == '\0' || faas_valid_function_name(v, strlen(v), &e) == 0))
        cfg->thrift_default_fn = v;
    else if (IS("--grpc-listen") && (strcmp(v, "off") == 0 || is_addr(v)))
        cfg->grpc_listen = v;
    else if (IS("--token-file") && v[0] != '\0')
        cfg->token_file = v;
    else if (IS("--tls-ca") && v[0] != '\0')
        cfg->tls_ca = v;
    else if (IS("--advertise-host") && host_ok(v))
        cfg->advertise_host = v;
    else if (IS("--domain") && v[0] != '.')
        cfg->domain = v;
    else if (IS("--max-body") && parse_u64(v, 1, UINT64_MAX, &n) == 0)
        cfg->max_body = n;
    else if (IS("--queue-max") && parse_u64(v, 1, 1000000, &n) == 0)
        cfg->queue_max = (uint32_t)n;
    else if (IS("--cold-start-timeout-ms") && parse_u64(v, 0, 3600000, &n) == 0)
        cfg->cold_start_timeout_ms = (uint32_t)n;
    else if (IS("--sync-hold-ms") && parse_u64(v, 0, 600000, &n) == 0)
        cfg->sync_hold_ms = (uint32_t)n;
    else if (IS("--threads") && parse_u64(v, 1, 256, &n) == 0)
        cfg->threads = (uint32_t)n;
    else if (IS("--max-url-bytes") && parse_u64(v, 64, 1 << 20, &n) == 0)
        cfg->max_url_bytes = (uint32_t)n;
    else if (IS("--max-header-bytes") && parse_u64(v, 256, 1 << 20, &n) == 0)
        cfg->max_header_bytes = (uint32_t)n;
    else if (IS("--max-conns-per-client") && parse_u64(v, 0, 1 << 24, &n) == 0)
        cfg->max_conns_per_client = (uint32_t)n;
    else if (IS("--max-conns") && parse_u64(v, 0, 1 << 24, &n) == 0)
        cfg->max_conns = (uint32_t)n, cfg->max_conns_explicit = 1;
    else if (IS("--http-header-timeout-ms") && parse_u64(v, 100, 3600000, &n) == 0)
        cfg->http_header_timeout_ms = (uint32_t)n;
    else
        return -1;
#undef IS
    return 0;
}

int gw_args_parse(int argc, char **argv, gw_config_t *cfg, char *errbuf, size_t errcap, const char **err)
{
    gw_errout_t o = {errbuf, errcap, err};
    defaults(cfg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strncmp(a, "--", 2) != 0)
            return fail(&o, "unexpected argument", a, strlen(a), NULL);
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (eq != NULL)
            v = eq + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        else
            return fail(&o, "flag needs a value", a, nl, NULL);
        if (apply(cfg, a, nl, v) != 0)
            return fail(&o, "unknown flag or bad value", a, nl, v);
    }
    return 0;
}
