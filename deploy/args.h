/* deploy/args.h - the command lines of faasctl and faasd, parsed without side
 * effects: no printing, no exit, no environment reads, no I/O. main() prints
 * what these return; the unit tests and the libFuzzer drivers
 * (tests/fuzz/fuzz_cli_faasctl.c, fuzz_cli_faasd.c) call them directly.
 * Both use getopt_long and reset it (optind = 0) on entry; not thread-safe. */
#ifndef FAAS_DEPLOY_ARGS_H
#define FAAS_DEPLOY_ARGS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

/* ---- faasd ---- */

typedef struct {
    char state_dir[PATH_MAX / 2], bin_dir[PATH_MAX / 2]; /* bin_dir "" = faasd's own directory */
    char http[128], disc[128], wm[128];                  /* host:port, port 1..65534 */
    char disc_metrics[128], wm_metrics[128];             /* host:port (discovery's may be "off") */
    char pool[16];                                       /* decimal 0..64 */
    char thrift[128], grpc[128];                         /* host:port, "off", or "" = the gateway's default */
    char gw_threads[8];                                  /* decimal 1..256, or "" = the gateway's default */
    char pool_python[16];                                /* decimal 0..64, or "" = the worker manager's default */
    char python_preload[4097];                           /* module list, or "" = the worker manager's default */
    char errbuf[192];                                    /* backs *err after a failed parse */
} faasd_args_t;

/* Fills a from argv. 0 to run, 1 for -h/--help, or -1 with *err set to one
 * printable line naming the bad flag. */
int faasd_args_parse(int argc, char **argv, faasd_args_t *a, const char **err);
extern const char faasd_args_usage[];

/* ---- faasctl ---- */

typedef enum {
    CTL_NONE = 0, /* no command yet: help and errors are faasctl's own */
    CTL_DEPLOY,
    CTL_LIST,
    CTL_GET,
    CTL_DELETE,
    CTL_INVOKE,
    CTL_INSTANCES,
    CTL_LOGS,
    CTL_TASKS, /* `faasctl tasks` without a subcommand: only its help */
    CTL_TASKS_LIST,
    CTL_TASKS_GET,
    CTL_TASKS_RESULT,
    CTL_TASKS_CANCEL,
    CTL_TASKS_WAIT,
} ctl_cmd_t;

/* One deploy flag as a manifest key (faas_manifest_set), applied over the file's. */
typedef struct {
    const char *key, *value;
    const char *flag; /* as the user knows it: "--timeout", "--env", "NAME" */
} ctl_set_t;

/* Where to find the daemons unless flags say otherwise (FAAS_DISCOVERY,
 * FAAS_GATEWAY, FAAS_GRPC_GATEWAY in main); NULL or "" = the built-in default. */
typedef struct {
    const char *discovery, *gateway, *grpc_gateway;
} ctl_env_t;

typedef struct {
    ctl_cmd_t cmd;
    const char *discovery;  /* gRPC target of discovery */
    const char *gateway;    /* gateway URL */
    const char *token_file; /* --token-file; NULL = FAAS_TOKEN or the default path */
    const char *tls_ca;     /* --tls-ca: PEM roots for TLS to the control plane; NULL = plaintext */
    const char *name;       /* the NAME operand; NULL for list (and deploy without one) */
    /* deploy */
    const char *file, *dir; /* -f, --dir; NULL if absent */
    ctl_set_t *sets;        /* every value already passed faas_manifest_set */
    size_t n_sets;
    /* invoke */
    const char *data, *method, *path; /* method NULL = GET, or POST with data; path has no spaces/controls */
    const char *grpc_method, *grpc_gateway;
    int base64;
    const char **headers; /* "Name: value", no CR/LF */
    size_t n_headers;
    uint64_t timeout_ms;  /* 1..INT32_MAX; tasks wait: how long to wait */
    int async;            /* invoke --async: submit a task (/async-function/) */
    const char *callback; /* invoke --async --callback URL: X-Callback-Url, printable */
    /* tasks */
    const char *task_id;                   /* [A-Za-z0-9] only: safe in a path; the gateway judges the rest */
    const char *function, *status, *after; /* tasks list filters; NULL = none */
    uint64_t limit;                        /* tasks list --limit, 1..FAAS_TASK_LIST_LIMIT; 0 = the gateway's */
    int json;                              /* --json: the gateway's JSON as it came */
    int include;                           /* -i: the result's status line and headers before its body */
    char gw_host[256], gw_prefix[512];
    uint16_t gw_port; /* gateway URL, parsed for HTTP invokes */
    /* logs */
    uint64_t tail; /* 0..1000000 */
    char errbuf[256];
} ctl_args_t;

/* Parses `faasctl [global flags] COMMAND [flags] [operands]`. Returns 0 to run
 * a->cmd, 1 for help (print ctl_args_usage(a->cmd) on stdout), or -1 with *err
 * set to one printable line ("faasctl invoke: ... (see faasctl invoke --help)");
 * on -1 with a->cmd == CTL_NONE the caller also prints the main usage. Call
 * ctl_args_free afterwards whatever it returned. */
int ctl_args_parse(int argc, char **argv, const ctl_env_t *env, ctl_args_t *a, const char **err);
void ctl_args_free(ctl_args_t *a);
/* The --help text of a command (CTL_NONE: faasctl's). */
const char *ctl_args_usage(ctl_cmd_t cmd);

#endif
