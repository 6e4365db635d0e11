/* runtime-agent/agent.h - faas-agent: one per pod; starts the user server, probes it,
 * and proxies h2c from the dispatcher to it (see docs/architecture.md "Pods"). */
#ifndef AGENT_AGENT_H
#define AGENT_AGENT_H

#include <stdint.h>

/* How faas-agent was started (from its flags). */
typedef struct agent_opts {
    const char *listen; /* "127.0.0.1:0" */
    int control_fd;     /* -1 = none (standalone) */
    int standalone;     /* specialize from the flags below */
    const char *cmd;    /* standalone: the user command line */
    const char *dir;    /* standalone: its working directory */
    const char *health_path;
    const char *port_env;
    const char *name;
    uint32_t user_port;
    uint32_t cold_start_timeout_ms;
    int probe_tcp; /* standalone: TCP probe instead of HTTP GET */
} agent_opts_t;

/* Runs the agent until told to stop; returns the process exit code. */
int agent_run(const agent_opts_t *opts);

#endif
