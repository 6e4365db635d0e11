/* runtime-agent/main.c - faas-agent flags. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "common/log.h"
#include "runtime-agent/agent.h"

static const char usage[] =
    "usage: faas-agent [--listen ADDR] [--control-fd N]\n"
    "       faas-agent --standalone --cmd 'ARGV...' --dir DIR [--health-path P] [--port-env NAME]\n"
    "                  [--port N] [--name FN] [--cold-start-timeout-ms MS] [--tcp-probe]\n"
    "\n"
    "One per pod: starts the function's user server when the worker manager says SPECIALIZE\n"
    "(control socket from FAAS_AGENT_CONTROL_FD), probes it, and proxies h2c to it.\n"
    "  --listen ADDR     h2c listener (default 127.0.0.1:0)\n"
    "  --control-fd N    control socket fd (overrides FAAS_AGENT_CONTROL_FD)\n"
    "  --standalone      no worker manager: specialize from the flags, print READY port=N\n"
    "  --help            this text\n"
    "\n"
    "FAAS_AGENT_ZYGOTE=PYTHON (and FAAS_AGENT_ZYGOTE_PRELOAD=MOD,...): start a Python zygote\n"
    "that imports the modules now and runs a `python3 SCRIPT` function when it comes\n"
    "(docs/zygotes.md); set by the worker manager for the pods of its Python pool.\n";

static int bad(const char *msg)
{
    fprintf(stderr, "faas-agent: %s (see --help)\n", msg);
    return 2;
}

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v > 0xffffffffUL)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

enum { O_LISTEN = 1, O_CFD, O_STANDALONE, O_CMD, O_DIR, O_HPATH, O_PENV, O_PORT, O_NAME, O_CST, O_TCP, O_HELP };

/* The control socket fd, and whether --control-fd gave one. */
typedef struct {
    uint32_t fd;
    int given;
} cfd_t;

/* One flag c with value v; 0, 1 for --help, or -1 with *msg saying what is wrong. */
static int apply(agent_opts_t *o, cfd_t *cfd, int c, char *v, const char **msg)
{
    switch (c) {
    case O_LISTEN:
        o->listen = v;
        return 0;
    case O_CFD:
        if (parse_u32(v, &cfd->fd) != 0)
            return *msg = "--control-fd needs a number", -1;
        cfd->given = 1;
        return 0;
    case O_STANDALONE:
        o->standalone = 1;
        return 0;
    case O_CMD:
        o->cmd = v;
        return 0;
    case O_DIR:
        o->dir = v;
        return 0;
    case O_HPATH:
        o->health_path = v;
        return 0;
    case O_PENV:
        o->port_env = v;
        return 0;
    case O_PORT:
        if (parse_u32(v, &o->user_port) != 0 || o->user_port > 65535)
            return *msg = "--port needs a port number", -1;
        return 0;
    case O_NAME:
        o->name = v;
        return 0;
    case O_CST:
        if (parse_u32(v, &o->cold_start_timeout_ms) != 0)
            return *msg = "--cold-start-timeout-ms needs a number", -1;
        return 0;
    case O_TCP:
        o->probe_tcp = 1;
        return 0;
    case O_HELP:
        return 1;
    default:
        return *msg = "unknown flag", -1;
    }
}

/* How the agent learns its work: --standalone flags, or a control socket from
 * --control-fd or, as the worker manager passes it, FAAS_AGENT_CONTROL_FD. 0, or -1
 * with *msg. */
static int pick_mode(agent_opts_t *o, cfd_t cfd, const char **msg)
{
    const char *env = getenv("FAAS_AGENT_CONTROL_FD");
    if (!cfd.given && env != NULL) {
        if (parse_u32(env, &cfd.fd) != 0)
            return *msg = "FAAS_AGENT_CONTROL_FD is not a number", -1;
        cfd.given = 1;
    }
    if (o->standalone) {
        if (o->cmd == NULL || o->dir == NULL)
            return *msg = "--standalone needs --cmd and --dir", -1;
    } else if (!cfd.given) {
        return *msg = "need FAAS_AGENT_CONTROL_FD, --control-fd or --standalone", -1;
    } else {
        o->control_fd = (int)cfd.fd;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"listen", required_argument, NULL, O_LISTEN},
                                             {"control-fd", required_argument, NULL, O_CFD},
                                             {"standalone", no_argument, NULL, O_STANDALONE},
                                             {"cmd", required_argument, NULL, O_CMD},
                                             {"dir", required_argument, NULL, O_DIR},
                                             {"health-path", required_argument, NULL, O_HPATH},
                                             {"port-env", required_argument, NULL, O_PENV},
                                             {"port", required_argument, NULL, O_PORT},
                                             {"name", required_argument, NULL, O_NAME},
                                             {"cold-start-timeout-ms", required_argument, NULL, O_CST},
                                             {"tcp-probe", no_argument, NULL, O_TCP},
                                             {"help", no_argument, NULL, O_HELP},
                                             {NULL, 0, NULL, 0}};
    agent_opts_t o = {.listen = "127.0.0.1:0", .control_fd = -1};
    cfd_t cfd = {0, 0};
    const char *msg = NULL;
    int c, rc;
    faas_log_init("agent");
    /* The user server runs as our uid: non-dumpable, we cannot be ptraced by it, nor can it
     * open /proc/<us>/mem, environ or fd (docs/security.md, "The agent is not the user's").
     * Before anything else, so no secret ever sits in a dumpable process. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        perror("faas-agent: prctl(PR_SET_DUMPABLE)");
        return 1;
    }
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if ((rc = apply(&o, &cfd, c, optarg, &msg)) < 0)
            return bad(msg);
        if (rc == 1) {
            fputs(usage, stdout);
            return 0;
        }
    }
    if (optind < argc)
        return bad("unexpected argument");
    if (pick_mode(&o, cfd, &msg) != 0)
        return bad(msg);
    return agent_run(&o);
}
