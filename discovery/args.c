/* args.c - faas-discovery's flags. Pure so unit tests and the libFuzzer driver
 * (tests/fuzz/fuzz_cli_discovery.c) can call it; main.c does the printing. */
#include "discovery/args.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/spec.h"
#include "common/util.h"
#include "discovery/discovery.h"

const char disc_args_usage[] =
    "usage: faas-discovery [options]\n"
    "  --listen ADDR              gRPC address (default 127.0.0.1:7100)\n"
    "  --state-dir DIR            SQLite db and code artifacts (default ./.faas/discovery)\n"
    "  --metrics-listen ADDR      HTTP /metrics and /healthz (default 127.0.0.1:7101; \"off\" disables)\n"
    "  --max-artifact-bytes N     largest upload: a code artifact or one image blob (default 4294967296)\n"
    "  --task-retention-ms N      keep finished async tasks and results this long (default 604800000: 7 days)\n"
    "  --callback-attempts N      X-Callback-Url deliveries tried per task (default 5)\n"
    "  --callback-backoff-ms N    wait after a failed delivery, doubling, at most 5 min (default 1000)\n"
    "  --token-file FILE          the platform token every gRPC call must carry; made (64 hex chars,\n"
    "                             0600) at the first start if missing (default STATE_DIR/token;\n"
    "                             FAAS_TOKEN in the environment overrides it)\n"
    "  --tls-cert FILE            serve gRPC over TLS with this PEM certificate chain (with --tls-key)\n"
    "  --tls-key FILE             the PEM private key of --tls-cert (default: plaintext gRPC)\n"
    "  --store sqlite|etcd://HOST:PORT[,HOST:PORT...]\n"
    "                             where functions, versions and artifact records live: SQLite in\n"
    "                             STATE_DIR for one host (default), or an etcd v3 cluster that several\n"
    "                             discoveries share (artifact bytes stay in each STATE_DIR and are\n"
    "                             fetched from the discovery holding them; docs/multihost-etcd.md)\n"
    "  --etcd-prefix P            every etcd key starts with P, which ends with '/' (default /faas/)\n"
    "  --advertise HOST:PORT      the gRPC address other discoveries fetch artifacts from this one at\n"
    "                             (default --listen; with --store etcd not 0.0.0.0 nor port 0 then)\n"
    "  --help                     this text\n";

/* "msg: arg" into a->errbuf. arg comes from the command line: control bytes become
 * '?' so the message stays one line on a terminal, and it is cut at 64 bytes. */
static int fail(disc_args_t *a, const char **err, const char *msg, const char *arg)
{
    snprintf(a->errbuf, sizeof(a->errbuf), "%s%s%.64s", msg, arg ? ": " : "", arg ? arg : "");
    faas_oneline(a->errbuf);
    *err = a->errbuf;
    return -1;
}

static int valid_addr(const char *v)
{
    char host[256];
    uint16_t port;
    const char *e;
    return faas_parse_hostport(v, host, sizeof(host), &port, &e) == 0;
}

/* A decimal number > 0 that fits in 64 bits, nothing around it. */
static int positive(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0' || end == v || n == 0 || v[0] == '-')
        return -1;
    *out = n;
    return 0;
}

/* Same, at most UINT32_MAX. */
static int positive32(const char *v, uint32_t *out)
{
    uint64_t n;
    if (positive(v, &n) != 0 || n > UINT32_MAX)
        return -1;
    *out = (uint32_t)n;
    return 0;
}

/* "etcd://h:p[,h:p...]": every endpoint a host:port, at most 16 of them. */
static int valid_etcd(const char *v)
{
    static const char scheme[] = "etcd://";
    if (strncmp(v, scheme, sizeof(scheme) - 1) != 0)
        return 0;
    const char *p = v + sizeof(scheme) - 1;
    for (int n = 0; n < 16; n++) {
        char one[300];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof(one))
            return 0;
        memcpy(one, p, len);
        one[len] = '\0';
        if (!valid_addr(one))
            return 0;
        if (p[len] == '\0')
            return 1;
        p += len + 1;
    }
    return 0;
}

/* With etcd, other discoveries fetch artifacts at the advertised address: it must be
 * one they can dial. Loopback is allowed (one-host tests run several discoveries). */
static int check_advertise(disc_args_t *a, const char **err)
{
    if (!a->store_etcd)
        return 0;
    const char *adv = a->advertise ? a->advertise : a->listen;
    char host[256];
    uint16_t port = 0;
    const char *e;
    if (faas_parse_hostport(adv, host, sizeof(host), &port, &e) != 0)
        return fail(a, err, "--advertise needs host:port", adv);
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 || host[0] == '\0')
        return fail(a, err,
                    a->advertise ? "--advertise must be an address other hosts can dial, not a wildcard"
                                 : "--store etcd needs --advertise HOST:PORT when --listen is a wildcard",
                    adv);
    if (port == 0 && a->advertise != NULL)
        return fail(a, err, "--advertise needs a port other than 0", adv);
    return 0;
}

int disc_args_parse(int argc, char **argv, disc_args_t *a, const char **err)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"state-dir", required_argument, NULL, 's'},
        {"metrics-listen", required_argument, NULL, 'm'},
        {"max-artifact-bytes", required_argument, NULL, 'x'},
        {"task-retention-ms", required_argument, NULL, 'r'},
        {"callback-attempts", required_argument, NULL, 'a'},
        {"callback-backoff-ms", required_argument, NULL, 'b'},
        {"token-file", required_argument, NULL, 't'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"store", required_argument, NULL, 'S'},
        {"etcd-prefix", required_argument, NULL, 'P'},
        {"advertise", required_argument, NULL, 'A'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    a->listen = "127.0.0.1:7100";
    a->state_dir = "./.faas/discovery";
    a->metrics_listen = "127.0.0.1:7101";
    a->max_artifact = 4ull << 30; /* image layers of many dependencies pass 1 GiB */
    a->task_retention_ms = FAAS_SPEC_DEFAULT_ASYNC_RETENTION_MS;
    a->callback_attempts = DISC_CB_ATTEMPTS;
    a->callback_backoff_ms = DISC_CB_BACKOFF_MS;
    a->token_file = a->tls_cert = a->tls_key = NULL;
    a->store = "sqlite";
    a->store_etcd = 0;
    a->etcd_prefix = "/faas/";
    a->advertise = NULL;
    a->errbuf[0] = '\0';
    optind = 0; /* getopt keeps state between calls: 0 re-initialises it fully */
    opterr = 0; /* and must not print: the caller prints *err */
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (!valid_addr(optarg))
                return fail(a, err, "--listen needs host:port", optarg);
            a->listen = optarg;
            break;
        case 's':
            if (optarg[0] == '\0')
                return fail(a, err, "--state-dir must not be empty", NULL);
            a->state_dir = optarg;
            break;
        case 'm':
            if (strcmp(optarg, "off") != 0 && !valid_addr(optarg))
                return fail(a, err, "--metrics-listen needs host:port or off", optarg);
            a->metrics_listen = optarg;
            break;
        case 'x':
            if (positive(optarg, &a->max_artifact) != 0)
                return fail(a, err, "--max-artifact-bytes needs a positive number", optarg);
            break;
        case 'r':
            if (positive(optarg, &a->task_retention_ms) != 0)
                return fail(a, err, "--task-retention-ms needs a positive number of milliseconds", optarg);
            break;
        case 'a':
            if (positive32(optarg, &a->callback_attempts) != 0)
                return fail(a, err, "--callback-attempts needs a positive number", optarg);
            break;
        case 'b':
            if (positive32(optarg, &a->callback_backoff_ms) != 0)
                return fail(a, err, "--callback-backoff-ms needs a positive number of milliseconds", optarg);
            break;
        case 't':
        case 'C':
        case 'K':
            if (optarg[0] == '\0')
                return fail(a, err, c == 't' ? "--token-file must not be empty" : "--tls-cert/--tls-key need a file",
                            NULL);
            *(c == 't' ? &a->token_file : c == 'C' ? &a->tls_cert : &a->tls_key) = optarg;
            break;
        case 'S':
            if (strcmp(optarg, "sqlite") != 0 && !valid_etcd(optarg))
                return fail(a, err, "--store needs sqlite or etcd://host:port[,host:port...]", optarg);
            a->store = optarg;
            a->store_etcd = strcmp(optarg, "sqlite") != 0;
            break;
        case 'P':
            if (optarg[0] != '/' || optarg[strlen(optarg) - 1] != '/' || strlen(optarg) > DISC_ETCD_PREFIX_MAX)
                return fail(a, err,
                            "--etcd-prefix must start and end with '/' and be at most " DISC_STR(DISC_ETCD_PREFIX_MAX)
                            " bytes",
                            optarg);
            a->etcd_prefix = optarg;
            break;
        case 'A':
            if (!valid_addr(optarg))
                return fail(a, err, "--advertise needs host:port", optarg);
            a->advertise = optarg;
            break;
        case 'h':
            return 1;
        default:
            /* optind moved past the bad option (and its missing value) */
            return fail(a, err, "unknown or incomplete option", optind > 0 && optind <= argc ? argv[optind - 1] : NULL);
        }
    }
    if (optind < argc)
        return fail(a, err, "unexpected argument", argv[optind]);
    if ((a->tls_cert == NULL) != (a->tls_key == NULL))
        return fail(a, err, "--tls-cert and --tls-key go together", NULL);
    return check_advertise(a, err);
}
