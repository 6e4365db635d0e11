/* runtime-agent/main.c - faas-agent flags. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    "  --help            this text\n";

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

int main(int argc, char **argv)
{
    enum { O_LISTEN = 1, O_CFD, O_STANDALONE, O_CMD, O_DIR, O_HPATH, O_PENV, O_PORT, O_NAME, O_CST, O_TCP, O_HELP };
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
    uint32_t cfd = 0;
    int have_cfd = 0, c;
    faas_log_init("agent");
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_LISTEN:
            o.listen = optarg;
            break;
        case O_CFD:
            if (parse_u32(optarg, &cfd) != 0)
                return bad("--control-fd needs a number");
            have_cfd = 1;
            break;
        case O_STANDALONE:
            o.standalone = 1;
            break;
        case O_CMD:
            o.cmd = optarg;
            break;
        case O_DIR:
            o.dir = optarg;
            break;
        case O_HPATH:
            o.health_path = optarg;
            break;
        case O_PENV:
            o.port_env = optarg;
            break;
        case O_PORT:
            if (parse_u32(optarg, &o.user_port) != 0 || o.user_port > 65535)
                return bad("--port needs a port number");
            break;
        case O_NAME:
            o.name = optarg;
            break;
        case O_CST:
            if (parse_u32(optarg, &o.cold_start_timeout_ms) != 0)
                return bad("--cold-start-timeout-ms needs a number");
            break;
        case O_TCP:
            o.probe_tcp = 1;
            break;
        case O_HELP:
            fputs(usage, stdout);
            return 0;
        default:
            return bad("unknown flag");
        }
    }
    if (optind < argc)
        return bad("unexpected argument");
    if (!have_cfd && getenv("FAAS_AGENT_CONTROL_FD") != NULL) {
        if (parse_u32(getenv("FAAS_AGENT_CONTROL_FD"), &cfd) != 0)
            return bad("FAAS_AGENT_CONTROL_FD is not a number");
        have_cfd = 1;
    }
    if (o.standalone) {
        if (o.cmd == NULL || o.dir == NULL)
            return bad("--standalone needs --cmd and --dir");
    } else if (!have_cfd) {
        return bad("need FAAS_AGENT_CONTROL_FD, --control-fd or --standalone");
    } else {
        o.control_fd = (int)cfd;
    }
    return agent_run(&o);
}
