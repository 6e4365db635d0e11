/* deploy/faasctl.c - the command line client of the platform.
 *
 * Exit codes: 0 success, 1 runtime failure (unreachable daemon, not found, HTTP
 * >= 400), 2 usage error. Every rpc has a deadline so the tool never hangs. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/rpc.h"
#include "common/util.h"
#include "deploy/internal.h"
#include "deploy/manifest.h"

extern char **environ;

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
enum { RPC_TIMEOUT_MS = 10000, UPLOAD_TIMEOUT_MS = 300000, DEPLOY_TIMEOUT_MS = 30000, CHUNK = 64 * 1024 };

static const char *g_discovery = "127.0.0.1:7100";
static const char *g_gateway = "http://127.0.0.1:8080";
static faas_rpc_channel_t *g_ch;

/* ---- usage ----------------------------------------------------------------------- */

static const char usage_main[] =
    "usage: faasctl [--discovery ADDR] [--gateway URL] <command> [args]\n"
    "\n"
    "commands:\n"
    "  deploy     deploy a function from a manifest (-f) and/or flags\n"
    "  list       list functions\n"
    "  get        print a function's spec\n"
    "  delete     delete a function\n"
    "  invoke     call a function over HTTP through the gateway\n"
    "  instances  list a function's running instances\n"
    "  logs       print a function's logs from every worker\n"
    "\n"
    "options (also accepted after the command):\n"
    "  --discovery ADDR  discovery gRPC address (env FAAS_DISCOVERY, default 127.0.0.1:7100)\n"
    "  --gateway URL     gateway URL (env FAAS_GATEWAY, default http://127.0.0.1:8080)\n"
    "  -h, --help        this help; `faasctl <command> --help` for a command's\n";

static const char usage_deploy[] =
    "usage: faasctl deploy [NAME] [-f function.yaml] [flags]\n"
    "\n"
    "Tars the code directory, uploads it to discovery and deploys the spec.\n"
    "Flags override the manifest's values.\n"
    "  -f, --file PATH             manifest (code: is relative to its directory)\n"
    "      --dir DIR               code directory (default: the manifest's code:, else .)\n"
    "      --cmd 'CMD ARGS'        command, split on spaces\n"
    "      --protocol P            http | grpc | thrift\n"
    "      --health PATH           HTTP readiness path (e.g. /healthz)\n"
    "      --health-tcp            readiness = the port accepts connections\n"
    "  -e, --env K=V               environment variable (repeatable)\n"
    "      --port N                port for the server (0 = platform picks, sets $PORT)\n"
    "      --memory SIZE           memory limit (128Mi, 1Gi)\n"
    "      --cpu Q                 CPU quota (500m, 1.5)\n"
    "      --pids N                max tasks\n"
    "      --timeout D             per-request deadline (30s, 1500ms, 2m)\n"
    "      --idle-timeout D        release idle instances after D\n"
    "      --cold-start-timeout D  bound on a cold start\n"
    "      --max-body SIZE         largest request body\n"
    "      --concurrency N         max in-flight requests per instance (0 = unlimited)\n"
    "      --min-instances N / --max-instances N\n"
    "      --grpc-service S        gRPC service served (repeatable)\n"
    "      --thrift-service S      Thrift service served (repeatable)\n";

static const char usage_list[] = "usage: faasctl list\n\nLists functions: NAME VERSION PROTOCOL INSTANCES COMMAND.\n";
static const char usage_get[] = "usage: faasctl get NAME\n\nPrints the function's spec as YAML.\n";
static const char usage_delete[] = "usage: faasctl delete NAME\n\nDeletes the function.\n";
static const char usage_invoke[] =
    "usage: faasctl invoke NAME [-d DATA] [-X METHOD] [-p PATH] [-H 'K: V']...\n"
    "\n"
    "Calls the function through the gateway (GATEWAY/function/NAME/PATH); prints the\n"
    "response body; exits 1 with the status on stderr when it is >= 400.\n"
    "  -d, --data DATA     request body: a string, @file, or - for stdin (method defaults to POST)\n"
    "  -X, --method M      HTTP method (default GET, POST with --data)\n"
    "  -p, --path /P       path inside the function (default /)\n"
    "  -H, --header 'K: V' extra header (repeatable)\n"
    "  -t, --timeout D     give up after D (default 60s)\n"
    "      --grpc /pkg.Service/Method\n"
    "                      one unary gRPC call through the gateway's gRPC port instead; the\n"
    "                      --data bytes are the raw request message, the reply is printed raw;\n"
    "                      exits 1 with the gRPC status on stderr when it is not OK. The gateway\n"
    "                      routes by the service (the function must declare it)\n"
    "      --base64        with --grpc: --data is base64 and the reply is printed as base64\n"
    "      --grpc-gateway ADDR  host:port of the gateway's gRPC port\n"
    "                      (default $FAAS_GRPC_GATEWAY or 127.0.0.1:8081)\n";
static const char usage_instances[] =
    "usage: faasctl instances NAME\n\nLists the function's instances: ID ENDPOINT WORKER STATE AGE.\n";
static const char usage_logs[] =
    "usage: faasctl logs NAME [--tail N]\n\nPrints the function's log lines from every worker (last N, default 100).\n";

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "faasctl%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see faasctl %s%s--help)\n", cmd ? cmd : "", cmd ? " " : "");
    return EXIT_USAGE;
}

/* ---- rpc helpers ------------------------------------------------------------------- */

static faas_rpc_channel_t *chan(void)
{
    if (g_ch == NULL)
        g_ch = faas_rpc_channel_open(g_discovery);
    return g_ch;
}

/* Reports an rpc failure as a sentence; returns the exit code. */
static int rpc_failed(int rc, const char *what, const char *fn, const char *addr, int timeout_ms, const char *msg)
{
    if (rc == FAAS_RPC_UNAVAILABLE)
        fprintf(stderr, "faasctl: cannot reach %s at %s: %s\n", what, addr, msg);
    else if (rc == FAAS_RPC_DEADLINE_EXCEEDED)
        fprintf(stderr, "faasctl: %s at %s did not answer within %d s (%s)\n", what, addr, timeout_ms / 1000, msg);
    else if (rc == FAAS_RPC_NOT_FOUND && fn != NULL)
        fprintf(stderr, "faasctl: function \"%s\" not found\n", fn);
    else if (rc == FAAS_RPC_UNIMPLEMENTED)
        fprintf(stderr, "faasctl: %s at %s does not implement this call: %s\n", what, addr, msg);
    else
        fprintf(stderr, "faasctl: %s: %s\n", what, msg);
    return EXIT_RUNTIME;
}

/* A unary call to discovery. 0, or an exit code after printing why. */
static int disc_call(const char *method, const ProtobufCMessage *req, const char *fn, uint8_t **resp,
                     size_t *resp_len)
{
    char errbuf[512] = "";
    size_t len = 0;
    uint8_t *buf = faas_pb_pack(req, &len);
    faas_rpc_channel_t *ch = chan();
    if (buf == NULL || ch == NULL) {
        free(buf);
        fprintf(stderr, "faasctl: cannot open a channel to discovery at %s\n", g_discovery);
        return EXIT_RUNTIME;
    }
    int rc = faas_rpc_unary(ch, method, buf, len, RPC_TIMEOUT_MS, resp, resp_len, errbuf, sizeof(errbuf));
    free(buf);
    if (rc == 0)
        return 0;
    free(*resp);
    *resp = NULL;
    return rpc_failed(rc, "discovery", fn, g_discovery, RPC_TIMEOUT_MS, errbuf);
}

static Faas__FunctionSpec *get_function(const char *name, int *code)
{
    Faas__FunctionName req = FAAS__FUNCTION_NAME__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    req.name = (char *)name;
    if ((*code = disc_call("/faas.Discovery/GetFunction", &req.base, name, &resp, &len)) != 0)
        return NULL;
    Faas__FunctionSpec *s = faas__function_spec__unpack(NULL, len, resp);
    free(resp);
    if (s == NULL) {
        fprintf(stderr, "faasctl: discovery sent a malformed FunctionSpec\n");
        *code = EXIT_RUNTIME;
    }
    return s;
}

/* ---- option parsing shared by every command ------------------------------------------ */

enum { OPT_DISCOVERY = 1000, OPT_GATEWAY, OPT_FIRST_CMD };

#define COMMON_OPTS                                                                                                \
    {"discovery", required_argument, NULL, OPT_DISCOVERY}, {"gateway", required_argument, NULL, OPT_GATEWAY},     \
        {"help", no_argument, NULL, 'h'}

/* Handles the options every command takes; 1 if handled, -1 for --help. */
static int common_opt(int c)
{
    if (c == OPT_DISCOVERY)
        g_discovery = optarg;
    else if (c == OPT_GATEWAY)
        g_gateway = optarg;
    else if (c == 'h')
        return -1;
    else
        return 0;
    return 1;
}

/* Parses a command with no flags of its own and want_args positionals. */
static int simple_args(int argc, char **argv, const char *usage, int want_args, const char **arg)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int h = common_opt(c);
        if (h < 0)
            return fputs(usage, stdout), -1;
        if (h == 0)
            return usage_error(argv[0], "%s", "bad option"), -2;
    }
    if (argc - optind != want_args)
        return usage_error(argv[0], want_args ? "expects %s" : "takes %s", want_args ? "a function name" : "no arguments"),
               -2;
    if (want_args)
        *arg = argv[optind];
    return 0;
}

#define SIMPLE_ARGS(usage, n, argp)                                                                                \
    do {                                                                                                           \
        int _r = simple_args(argc, argv, usage, n, argp);                                                          \
        if (_r < 0)                                                                                                \
            return _r == -1 ? 0 : EXIT_USAGE;                                                                      \
    } while (0)

/* ---- deploy -------------------------------------------------------------------------- */

typedef struct {
    int fd;
    pid_t pid;
    uint64_t total;
    uint8_t data[CHUNK];
    uint8_t *packed;
    int tar_failed;
} upload_t;

static int spawn_tar(const char *dir, upload_t *u)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    char *argv[] = {"tar", "-czf", "-", "-C", (char *)dir, ".", NULL};
    int rc = posix_spawnp(&u->pid, "tar", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        errno = rc;
        return -1;
    }
    u->fd = p[0];
    return 0;
}

/* Feeds CodeChunks of up to 64 KiB from tar's stdout; -1 aborts the stream if tar fails. */
static int upload_next(void *ud, const uint8_t **msg, size_t *len)
{
    upload_t *u = ud;
    size_t n = 0;
    while (n < CHUNK) {
        ssize_t r = read(u->fd, u->data + n, CHUNK - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return u->tar_failed = 1, -1;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n == 0) {
        int st = 0;
        while (waitpid(u->pid, &st, 0) < 0 && errno == EINTR) {
        }
        u->pid = 0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || u->total == 0)
            return u->tar_failed = 1, -1;
        return 0;
    }
    Faas__CodeChunk c = FAAS__CODE_CHUNK__INIT;
    c.data.data = u->data;
    c.data.len = n;
    free(u->packed);
    u->packed = faas_pb_pack(&c.base, len);
    if (u->packed == NULL)
        return -1;
    u->total += n;
    *msg = u->packed;
    return 1;
}

static int upload_code(const char *dir, Faas__CodeRef **ref)
{
    upload_t *u = calloc(1, sizeof(*u));
    char errbuf[512] = "";
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int code = EXIT_RUNTIME;
    if (u == NULL)
        return EXIT_RUNTIME;
    if (spawn_tar(dir, u) != 0) {
        fprintf(stderr, "faasctl: cannot run tar: %s\n", strerror(errno));
        free(u);
        return EXIT_RUNTIME;
    }
    faas_rpc_channel_t *ch = chan();
    int rc = ch == NULL ? -1
                        : faas_rpc_client_stream(ch, "/faas.Discovery/UploadCode", upload_next, u, UPLOAD_TIMEOUT_MS,
                                                 &resp, &rlen, errbuf, sizeof(errbuf));
    if (u->tar_failed)
        fprintf(stderr, "faasctl: packing %s with tar failed\n", dir);
    else if (rc != 0)
        rpc_failed(rc, "discovery", NULL, g_discovery, UPLOAD_TIMEOUT_MS, errbuf);
    else if ((*ref = faas__code_ref__unpack(NULL, rlen, resp)) == NULL)
        fprintf(stderr, "faasctl: discovery sent a malformed CodeRef\n");
    else
        code = 0;
    close(u->fd);
    if (u->pid > 0) { /* the stream ended early: don't leave tar behind */
        kill(u->pid, SIGTERM);
        waitpid(u->pid, NULL, 0);
    }
    free(u->packed);
    free(u);
    free(resp);
    return code;
}

static void human_size(char *buf, size_t cap, uint64_t b)
{
    if (b < 1024)
        snprintf(buf, cap, "%llu B", (unsigned long long)b);
    else if (b < (1u << 20))
        snprintf(buf, cap, "%.1f KiB", (double)b / 1024);
    else
        snprintf(buf, cap, "%.1f MiB", (double)b / (1 << 20));
}

/* The code directory: --dir as given, else the manifest's code: (or its directory). */
static int code_dir_of(const char *dir_flag, const char *manifest_path, const faas_manifest_t *m, char *out,
                       size_t cap)
{
    if (dir_flag != NULL)
        return snprintf(out, cap, "%s", dir_flag) < (int)cap ? 0 : -1;
    if (manifest_path == NULL)
        return snprintf(out, cap, ".") < (int)cap ? 0 : -1;
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", manifest_path);
    const char *base = dirname(tmp);
    const char *code = m->code_dir != NULL ? m->code_dir : ".";
    if (code[0] == '/')
        return snprintf(out, cap, "%s", code) < (int)cap ? 0 : -1;
    return snprintf(out, cap, "%s/%s", base, code) < (int)cap ? 0 : -1;
}

static int load_manifest(const char *path, faas_manifest_t *m)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "faasctl: cannot open %s: %s\n", path, strerror(errno));
        return EXIT_RUNTIME;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            char *nb = cap < (1u << 20) ? realloc(buf, cap = cap ? cap * 2 : 4096) : NULL;
            if (nb == NULL) {
                fprintf(stderr, "faasctl: %s: manifest too large\n", path);
                free(buf);
                fclose(f);
                return EXIT_RUNTIME;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        if (r == 0)
            break;
        len += r;
    }
    fclose(f);
    char err[512];
    int rc = faas_manifest_parse(buf, len, m, err, sizeof(err));
    free(buf);
    if (rc != 0) {
        fprintf(stderr, "faasctl: %s: %s\n", path, err);
        return EXIT_USAGE;
    }
    return 0;
}

/* Maps deploy's flags to manifest keys. */
static const struct option deploy_opts[] = {
    COMMON_OPTS,
    {"file", required_argument, NULL, 'f'},
    {"dir", required_argument, NULL, 'D'},
    {"env", required_argument, NULL, 'e'},
    {"cmd", required_argument, NULL, OPT_FIRST_CMD + 0},
    {"protocol", required_argument, NULL, OPT_FIRST_CMD + 1},
    {"health", required_argument, NULL, OPT_FIRST_CMD + 2},
    {"health-tcp", no_argument, NULL, OPT_FIRST_CMD + 3},
    {"port", required_argument, NULL, OPT_FIRST_CMD + 4},
    {"memory", required_argument, NULL, OPT_FIRST_CMD + 5},
    {"cpu", required_argument, NULL, OPT_FIRST_CMD + 6},
    {"pids", required_argument, NULL, OPT_FIRST_CMD + 7},
    {"timeout", required_argument, NULL, OPT_FIRST_CMD + 8},
    {"idle-timeout", required_argument, NULL, OPT_FIRST_CMD + 9},
    {"cold-start-timeout", required_argument, NULL, OPT_FIRST_CMD + 10},
    {"max-body", required_argument, NULL, OPT_FIRST_CMD + 11},
    {"concurrency", required_argument, NULL, OPT_FIRST_CMD + 12},
    {"min-instances", required_argument, NULL, OPT_FIRST_CMD + 13},
    {"max-instances", required_argument, NULL, OPT_FIRST_CMD + 14},
    {"grpc-service", required_argument, NULL, OPT_FIRST_CMD + 15},
    {"thrift-service", required_argument, NULL, OPT_FIRST_CMD + 16},
    {"max-duration", required_argument, NULL, OPT_FIRST_CMD + 17},
    {"port-env", required_argument, NULL, OPT_FIRST_CMD + 18},
    {NULL, 0, NULL, 0},
};
static const char *const deploy_keys[] = {
    "command",     "protocol",        "health.path", "health.tcp",         "port",          "resources.memory",
    "resources.cpu", "resources.pids", "timeout",    "idle_timeout",       "cold_start_timeout", "max_body",
    "concurrency", "min_instances",   "max_instances", "grpc_services",    "thrift_services", "max_duration",
    "port_env",
};

typedef struct {
    const char *key, *value, *flag;
} flag_set_t;

static int deploy_parse(int argc, char **argv, const char **file, const char **dir, flag_set_t *sets, size_t *n_sets)
{
    int c, idx = 0;
    while ((c = getopt_long(argc, argv, "hf:e:", deploy_opts, &idx)) != -1) {
        int h = common_opt(c);
        if (h < 0)
            return fputs(usage_deploy, stdout), -1;
        if (h > 0)
            continue;
        if (c == 'f')
            *file = optarg;
        else if (c == 'D')
            *dir = optarg;
        else if (c == 'e')
            sets[(*n_sets)++] = (flag_set_t){"env", optarg, "--env"};
        else if (c >= OPT_FIRST_CMD && c < OPT_FIRST_CMD + (int)(sizeof(deploy_keys) / sizeof(deploy_keys[0])))
            sets[(*n_sets)++] =
                (flag_set_t){deploy_keys[c - OPT_FIRST_CMD], c == OPT_FIRST_CMD + 3 ? "true" : optarg,
                             deploy_opts[idx].name};
        else
            return usage_error("deploy", "%s", "bad option"), -2;
    }
    if (argc - optind > 1)
        return usage_error("deploy", "unexpected argument \"%s\"", argv[optind + 1]), -2;
    if (argc - optind == 1)
        sets[(*n_sets)++] = (flag_set_t){"name", argv[optind], "NAME"};
    return 0;
}

static int do_deploy_rpc(faas_manifest_t *m, const char *dir)
{
    Faas__CodeRef *ref = NULL;
    int code = upload_code(dir, &ref);
    if (code != 0)
        return code;
    free(m->spec->code_sha256 != (char *)protobuf_c_empty_string ? m->spec->code_sha256 : NULL);
    m->spec->code_sha256 = strdup(ref->sha256);
    uint8_t *resp = NULL;
    size_t len = 0;
    char errbuf[512] = "";
    uint8_t *req = faas_pb_pack(&m->spec->base, &len);
    int rc = faas_rpc_unary(chan(), "/faas.Discovery/Deploy", req, len, DEPLOY_TIMEOUT_MS, &resp, &len, errbuf,
                            sizeof(errbuf));
    free(req);
    Faas__FunctionSpec *got = rc == 0 ? faas__function_spec__unpack(NULL, len, resp) : NULL;
    if (rc != 0)
        code = rpc_failed(rc, "discovery", NULL, g_discovery, DEPLOY_TIMEOUT_MS, errbuf);
    else if (got == NULL)
        code = (fprintf(stderr, "faasctl: discovery sent a malformed FunctionSpec\n"), EXIT_RUNTIME);
    else {
        char sz[32];
        human_size(sz, sizeof(sz), ref->size);
        printf("deployed %s version %llu (code sha256 %.8s..., %s)\n", got->name, (unsigned long long)got->version,
               ref->sha256, sz);
    }
    if (got != NULL)
        faas__function_spec__free_unpacked(got, NULL);
    free(resp);
    faas__code_ref__free_unpacked(ref, NULL);
    return code;
}

static int cmd_deploy(int argc, char **argv)
{
    const char *file = NULL, *dir_flag = NULL, *err = NULL;
    flag_set_t *sets = calloc((size_t)argc + 1, sizeof(*sets));
    size_t n_sets = 0;
    faas_manifest_t m = {0};
    char dir[PATH_MAX];
    struct stat st;
    int code = sets == NULL ? EXIT_RUNTIME : 0;

    int r = code ? 0 : deploy_parse(argc, argv, &file, &dir_flag, sets, &n_sets);
    if (r < 0)
        code = r == -1 ? 0 : EXIT_USAGE;
    if (r < 0 || code != 0)
        goto out;
    if ((code = file != NULL ? load_manifest(file, &m) : (faas_manifest_init(&m) ? EXIT_RUNTIME : 0)) != 0)
        goto out;
    for (size_t i = 0; i < n_sets; i++)
        if (faas_manifest_set(&m, sets[i].key, sets[i].value, &err) != 0) {
            fprintf(stderr, "faasctl deploy: %s%s \"%s\": %s\n", sets[i].flag[0] == '-' || sets[i].flag[0] == 'N' ? "" : "--",
                    sets[i].flag, sets[i].value, err);
            code = EXIT_USAGE;
            goto out;
        }
    if (faas_manifest_validate(m.spec, &err) != 0) {
        code = usage_error("deploy", "%s", err);
        goto out;
    }
    faas_manifest_defaults(m.spec);
    if (code_dir_of(dir_flag, file, &m, dir, sizeof(dir)) != 0 || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "faasctl: code directory %s is not a directory\n", dir_flag ? dir_flag : dir);
        code = EXIT_RUNTIME;
        goto out;
    }
    code = do_deploy_rpc(&m, dir);
out:
    faas_manifest_free(&m);
    free(sets);
    return code;
}

/* ---- list, get, delete ------------------------------------------------------------------ */

static void join_command(char *out, size_t cap, const Faas__FunctionSpec *s)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->n_command && o + 1 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? " " : "", s->command[i]);
    if (o >= cap && cap > 4)
        strcpy(out + cap - 4, "...");
}

static Faas__InstanceList *list_instances(const char *name, int *code)
{
    Faas__FunctionName req = FAAS__FUNCTION_NAME__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    req.name = (char *)name;
    if ((*code = disc_call("/faas.Discovery/ListInstances", &req.base, name[0] ? name : NULL, &resp, &len)) != 0)
        return NULL;
    Faas__InstanceList *l = faas__instance_list__unpack(NULL, len, resp);
    free(resp);
    if (l == NULL) {
        fprintf(stderr, "faasctl: discovery sent a malformed InstanceList\n");
        *code = EXIT_RUNTIME;
    }
    return l;
}

static int cmd_list(int argc, char **argv)
{
    SIMPLE_ARGS(usage_list, 0, NULL);
    Faas__Empty req = FAAS__EMPTY__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    int code = disc_call("/faas.Discovery/ListFunctions", &req.base, NULL, &resp, &len);
    if (code != 0)
        return code;
    Faas__FunctionList *fl = faas__function_list__unpack(NULL, len, resp);
    free(resp);
    if (fl == NULL)
        return fprintf(stderr, "faasctl: discovery sent a malformed FunctionList\n"), EXIT_RUNTIME;
    int icode;
    Faas__InstanceList *il = list_instances("", &icode);
    size_t w = 4;
    for (size_t i = 0; i < fl->n_functions; i++)
        if (strlen(fl->functions[i]->name) > w)
            w = strlen(fl->functions[i]->name);
    printf("%-*s  %-7s  %-8s  %-9s  %s\n", (int)w, "NAME", "VERSION", "PROTOCOL", "INSTANCES", "COMMAND");
    for (size_t i = 0; i < fl->n_functions; i++) {
        const Faas__FunctionSpec *s = fl->functions[i];
        char cmd[64], inst[16] = "-";
        join_command(cmd, sizeof(cmd), s);
        if (il != NULL) {
            unsigned n = 0;
            for (size_t j = 0; j < il->n_instances; j++)
                n += strcmp(il->instances[j]->function, s->name) == 0;
            snprintf(inst, sizeof(inst), "%u", n);
        }
        printf("%-*s  %-7llu  %-8s  %-9s  %s\n", (int)w, s->name, (unsigned long long)s->version,
               faas_protocol_name(s->protocol), inst, cmd);
    }
    if (il != NULL)
        faas__instance_list__free_unpacked(il, NULL);
    faas__function_list__free_unpacked(fl, NULL);
    return 0;
}

static int cmd_get(int argc, char **argv)
{
    const char *name = NULL;
    int code;
    SIMPLE_ARGS(usage_get, 1, &name);
    Faas__FunctionSpec *s = get_function(name, &code);
    if (s == NULL)
        return code;
    faas_manifest_print(stdout, s);
    faas__function_spec__free_unpacked(s, NULL);
    return 0;
}

static int cmd_delete(int argc, char **argv)
{
    const char *name = NULL;
    SIMPLE_ARGS(usage_delete, 1, &name);
    Faas__FunctionName req = FAAS__FUNCTION_NAME__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    req.name = (char *)name;
    int code = disc_call("/faas.Discovery/DeleteFunction", &req.base, name, &resp, &len);
    free(resp);
    if (code == 0)
        printf("deleted %s\n", name);
    return code;
}

/* ---- instances, logs -------------------------------------------------------------------- */

static void age_of(char *out, size_t cap, int64_t started_ms)
{
    int64_t s = started_ms > 0 ? (faas_unix_ms() - started_ms) / 1000 : -1;
    if (s < 0)
        snprintf(out, cap, "-");
    else if (s < 120)
        snprintf(out, cap, "%llds", (long long)s);
    else if (s < 7200)
        snprintf(out, cap, "%lldm", (long long)s / 60);
    else if (s < 172800)
        snprintf(out, cap, "%lldh", (long long)s / 3600);
    else
        snprintf(out, cap, "%lldd", (long long)s / 86400);
}

static int cmd_instances(int argc, char **argv)
{
    const char *name = NULL;
    int code;
    SIMPLE_ARGS(usage_instances, 1, &name);
    Faas__FunctionSpec *s = get_function(name, &code);
    if (s == NULL)
        return code;
    faas__function_spec__free_unpacked(s, NULL);
    Faas__InstanceList *l = list_instances(name, &code);
    if (l == NULL)
        return code;
    static const char *const states[] = {"STARTING", "READY", "DRAINING"};
    printf("%-20s  %-21s  %-16s  %-8s  %s\n", "ID", "ENDPOINT", "WORKER", "STATE", "AGE");
    for (size_t i = 0; i < l->n_instances; i++) {
        const Faas__Instance *in = l->instances[i];
        char age[16];
        age_of(age, sizeof(age), in->started_unix_ms);
        printf("%-20s  %-21s  %-16s  %-8s  %s\n", in->id, in->endpoint, in->worker_id,
               (unsigned)in->state < 3 ? states[in->state] : "?", age);
    }
    faas__instance_list__free_unpacked(l, NULL);
    return 0;
}

static int worker_logs(const Faas__Worker *w, const char *name, unsigned tail)
{
    Faas__LogsRequest req = FAAS__LOGS_REQUEST__INIT;
    req.function = (char *)name;
    req.tail = tail;
    size_t len = 0;
    uint8_t *buf = faas_pb_pack(&req.base, &len), *resp = NULL;
    char errbuf[512] = "";
    faas_rpc_channel_t *ch = faas_rpc_channel_open(w->address);
    int rc = ch == NULL || buf == NULL ? -1
                                       : faas_rpc_unary(ch, "/faas.WorkerManager/Logs", buf, len, RPC_TIMEOUT_MS,
                                                        &resp, &len, errbuf, sizeof(errbuf));
    free(buf);
    if (ch != NULL)
        faas_rpc_channel_close(ch);
    if (rc != 0) {
        char what[160];
        snprintf(what, sizeof(what), "worker %s", w->id);
        free(resp);
        return rpc_failed(rc, what, NULL, w->address, RPC_TIMEOUT_MS, errbuf);
    }
    Faas__LogLines *ll = faas__log_lines__unpack(NULL, len, resp);
    free(resp);
    if (ll == NULL)
        return fprintf(stderr, "faasctl: worker %s sent malformed LogLines\n", w->id), EXIT_RUNTIME;
    for (size_t i = 0; i < ll->n_lines; i++) {
        size_t l = strlen(ll->lines[i]);
        printf("%s%s", ll->lines[i], l > 0 && ll->lines[i][l - 1] == '\n' ? "" : "\n");
    }
    faas__log_lines__free_unpacked(ll, NULL);
    return 0;
}

static int cmd_logs(int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS, {"tail", required_argument, NULL, 'n'}, {NULL, 0, NULL, 0}};
    uint64_t tail = 100;
    const char *err;
    int c, code;
    while ((c = getopt_long(argc, argv, "hn:", opts, NULL)) != -1) {
        int h = common_opt(c);
        if (h < 0)
            return fputs(usage_logs, stdout), 0;
        if (h > 0)
            continue;
        if (c != 'n')
            return usage_error("logs", "%s", "bad option");
        if (faas_parse_uint(optarg, 1000000, &tail, &err) != 0)
            return usage_error("logs", "--tail: %s", err);
    }
    if (argc - optind != 1)
        return usage_error("logs", "%s", "expects a function name");
    const char *name = argv[optind];
    Faas__FunctionSpec *s = get_function(name, &code);
    if (s == NULL)
        return code;
    faas__function_spec__free_unpacked(s, NULL);
    Faas__Empty req = FAAS__EMPTY__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    if ((code = disc_call("/faas.Discovery/ListWorkers", &req.base, NULL, &resp, &len)) != 0)
        return code;
    Faas__WorkerList *wl = faas__worker_list__unpack(NULL, len, resp);
    free(resp);
    if (wl == NULL)
        return fprintf(stderr, "faasctl: discovery sent a malformed WorkerList\n"), EXIT_RUNTIME;
    if (wl->n_workers == 0)
        fprintf(stderr, "faasctl: no worker is registered with discovery\n");
    for (size_t i = 0; i < wl->n_workers; i++)
        code |= worker_logs(wl->workers[i], name, (unsigned)tail);
    faas__worker_list__free_unpacked(wl, NULL);
    return code ? EXIT_RUNTIME : 0;
}

/* ---- invoke ----------------------------------------------------------------------------- */

/* Reads --data: "@file", "-" (stdin) or the literal string. */
static char *read_data(const char *arg, size_t *len)
{
    if (arg[0] != '@' && strcmp(arg, "-") != 0) {
        *len = strlen(arg);
        return strdup(arg);
    }
    FILE *f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    FILE *mem = open_memstream(&buf, &cap);
    char tmp[65536];
    size_t r;
    while (mem != NULL && (r = fread(tmp, 1, sizeof(tmp), f)) > 0)
        fwrite(tmp, 1, r, mem);
    if (mem != NULL)
        fclose(mem);
    if (f != stdin)
        fclose(f);
    *len = cap;
    return buf;
}

static const char *grpc_code_name(int c)
{
    static const char *n[] = {"OK",        "CANCELLED",          "UNKNOWN",           "INVALID_ARGUMENT",
                              "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS",    "PERMISSION_DENIED",
                              "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                              "UNIMPLEMENTED", "INTERNAL",        "UNAVAILABLE",       "DATA_LOSS",
                              "UNAUTHENTICATED"};
    return c >= 0 && c < (int)(sizeof(n) / sizeof(n[0])) ? n[c] : "UNKNOWN";
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_print(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        putchar(b64chars[v >> 18 & 63]);
        putchar(b64chars[v >> 12 & 63]);
        putchar(i + 1 < n ? b64chars[v >> 6 & 63] : '=');
        putchar(i + 2 < n ? b64chars[v & 63] : '=');
    }
    putchar('\n');
}

/* Decodes base64 in place (whitespace ignored); -1 on a bad character. */
static int b64_decode(char *s, size_t *len)
{
    size_t o = 0, bits = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < *len; i++) {
        char c = s[i];
        if (c == '=' || c == '\n' || c == '\r' || c == ' ' || c == '\t')
            continue;
        const char *q = c ? strchr(b64chars, c) : NULL;
        if (q == NULL)
            return -1;
        acc = acc << 6 | (uint32_t)(q - b64chars);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            s[o++] = (char)(acc >> bits & 0xff);
        }
    }
    *len = o;
    return 0;
}

/* One unary gRPC call through the gateway's gRPC port (grpc core, raw bytes). */
static int invoke_grpc(const char *name, const char *gw, const char *method, const char *data, int b64, int timeout)
{
    size_t blen = 0;
    char *body = data != NULL ? read_data(data, &blen) : strdup("");
    if (body == NULL) {
        fprintf(stderr, "faasctl: cannot read %s: %s\n", data + (data[0] == '@'), strerror(errno));
        return EXIT_RUNTIME;
    }
    if (b64 && b64_decode(body, &blen) != 0) {
        free(body);
        return usage_error("invoke", "%s", "--data is not valid base64");
    }
    faas_rpc_channel_t *ch = faas_rpc_channel_open(gw);
    if (ch == NULL) {
        free(body);
        fprintf(stderr, "faasctl: cannot open a channel to %s\n", gw);
        return EXIT_RUNTIME;
    }
    uint8_t *resp = NULL;
    size_t rlen = 0;
    char errbuf[512] = "";
    int rc = faas_rpc_unary(ch, method, (const uint8_t *)body, blen, timeout, &resp, &rlen, errbuf, sizeof(errbuf));
    int code = 0;
    if (rc == 0) {
        if (b64)
            b64_print(resp, rlen);
        else
            fwrite(resp, 1, rlen, stdout);
    } else if (rc > 0) {
        fprintf(stderr, "faasctl: %s %s: gRPC status %d %s: %s\n", name, method, rc, grpc_code_name(rc), errbuf);
        code = EXIT_RUNTIME;
    } else {
        fprintf(stderr, "faasctl: %s %s via %s: %s\n", name, method, gw, errbuf);
        code = EXIT_RUNTIME;
    }
    free(resp);
    free(body);
    faas_rpc_channel_close(ch);
    return code;
}

static int cmd_invoke(int argc, char **argv)
{
    static const struct option opts[] = {
        COMMON_OPTS,
        {"data", required_argument, NULL, 'd'},
        {"method", required_argument, NULL, 'X'},
        {"path", required_argument, NULL, 'p'},
        {"header", required_argument, NULL, 'H'},
        {"timeout", required_argument, NULL, 't'},
        {"grpc", required_argument, NULL, 'G'},
        {"base64", no_argument, NULL, 'B'},
        {"grpc-gateway", required_argument, NULL, 'W'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *method = NULL, *path = "/", *err = NULL, *grpc_method = NULL;
    const char *grpc_gw = getenv("FAAS_GRPC_GATEWAY") && getenv("FAAS_GRPC_GATEWAY")[0] ? getenv("FAAS_GRPC_GATEWAY")
                                                                                          : "127.0.0.1:8081";
    int b64 = 0;
    const char **headers = calloc((size_t)argc, sizeof(char *));
    size_t n_headers = 0;
    uint64_t timeout = 60000;
    int c, code = EXIT_USAGE;
    while ((c = getopt_long(argc, argv, "hd:X:p:H:t:", opts, NULL)) != -1) {
        int h = common_opt(c);
        if (h < 0) {
            fputs(usage_invoke, stdout);
            code = 0;
            goto out;
        }
        if (h > 0)
            continue;
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'X':
            method = optarg;
            break;
        case 'p':
            path = optarg;
            break;
        case 'G':
            grpc_method = optarg;
            break;
        case 'B':
            b64 = 1;
            break;
        case 'W':
            grpc_gw = optarg;
            break;
        case 'H':
            if (strchr(optarg, ':') == NULL || strpbrk(optarg, "\r\n") != NULL) {
                usage_error("invoke", "header \"%s\" must be 'Name: value'", optarg);
                goto out;
            }
            headers[n_headers++] = optarg;
            break;
        case 't':
            if (faas_parse_duration_ms(optarg, &timeout, &err) != 0 || timeout == 0 || timeout > INT32_MAX) {
                usage_error("invoke", "--timeout: %s", err ? err : "must be positive");
                goto out;
            }
            break;
        default:
            usage_error("invoke", "%s", "bad option");
            goto out;
        }
    }
    if (argc - optind != 1) {
        usage_error("invoke", "%s", "expects a function name");
        goto out;
    }
    code = 0;
    {
        const char *name = argv[optind];
        if (faas_valid_function_name(name, strlen(name), &err) != 0) {
            code = usage_error("invoke", "%s", err);
            goto out;
        }
        if (grpc_method != NULL || b64) {
            code = grpc_method == NULL ? usage_error("invoke", "%s", "--base64 needs --grpc")
                                       : invoke_grpc(name, grpc_gw, grpc_method, data, b64, (int)timeout);
            goto out;
        }
        char host[256], prefix[512], full[2048];
        uint16_t port;
        if (faas_http_parse_url(g_gateway, host, sizeof(host), &port, prefix, sizeof(prefix), &err) != 0) {
            code = usage_error("invoke", "--gateway: %s", err);
            goto out;
        }
        snprintf(full, sizeof(full), "%s/function/%s%s%s", prefix, name, path[0] == '/' ? "" : "/", path);
        size_t blen = 0;
        char *body = data != NULL ? read_data(data, &blen) : NULL;
        if (data != NULL && body == NULL) {
            fprintf(stderr, "faasctl: cannot read %s: %s\n", data + (data[0] == '@'), strerror(errno));
            code = EXIT_RUNTIME;
            goto out;
        }
        faas_http_req_t req = {method ? method : data ? "POST" : "GET", host, port, full, headers, n_headers, body,
                               blen, (int)timeout};
        int status = 0;
        char errbuf[512];
        if (faas_http_do(&req, &status, stdout, errbuf, sizeof(errbuf)) != 0) {
            fflush(stdout);
            fprintf(stderr, "faasctl: invoking %s via gateway %s: %s\n", name, g_gateway, errbuf);
            code = EXIT_RUNTIME;
        } else if (status >= 400) {
            fflush(stdout);
            fprintf(stderr, "faasctl: %s answered HTTP %d\n", name, status);
            code = EXIT_RUNTIME;
        }
        free(body);
    }
out:
    free(headers);
    return code;
}

/* ---- main --------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} commands[] = {
    {"deploy", cmd_deploy}, {"list", cmd_list},           {"ls", cmd_list},   {"get", cmd_get},
    {"delete", cmd_delete}, {"rm", cmd_delete},           {"invoke", cmd_invoke}, {"instances", cmd_instances},
    {"logs", cmd_logs},
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    if (getenv("FAAS_DISCOVERY") != NULL && getenv("FAAS_DISCOVERY")[0])
        g_discovery = getenv("FAAS_DISCOVERY");
    if (getenv("FAAS_GATEWAY") != NULL && getenv("FAAS_GATEWAY")[0])
        g_gateway = getenv("FAAS_GATEWAY");
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int h = common_opt(c);
        if (h < 0)
            return fputs(usage_main, stdout), 0;
        if (h == 0)
            return fputs(usage_main, stderr), EXIT_USAGE;
    }
    if (optind >= argc) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    if (strcmp(cmd, "help") == 0)
        return fputs(usage_main, stdout), 0;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(cmd, commands[i].name) != 0)
            continue;
        int sub_argc = argc - optind;
        char **sub_argv = argv + optind;
        optind = 0; /* re-initialise getopt for the command's own flags */
        int code = commands[i].fn(sub_argc, sub_argv);
        fflush(stdout);
        if (g_ch != NULL)
            faas_rpc_channel_close(g_ch);
        return code;
    }
    fprintf(stderr, "faasctl: unknown command \"%s\"\n", cmd);
    fputs(usage_main, stderr);
    return EXIT_USAGE;
}
