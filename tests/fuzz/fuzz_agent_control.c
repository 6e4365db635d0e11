// FUZZ_SOURCES: runtime-agent/spec.c common/util.c common/log.c
// FUZZ_PKGS: libprotobuf-c
/* Fuzzes the agent's control-message path: AgentCommand decoding and validation, then
 * the helpers a decoded spec feeds (env building), plus command splitting and log quoting. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime-agent/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    agent_cmd_t cmd;
    const char *err = NULL;
    if (agent_cmd_decode(data, size, &cmd, &err) == 0) {
        if (cmd.type == FAAS__AGENT_COMMAND__TYPE__SPECIALIZE) {
            char **env = agent_build_env(&cmd.spec, 8080);
            for (char **e = env; e != NULL && *e != NULL; e++)
                if (strchr(*e, '=') == NULL)
                    abort();
            free(env);
        }
        agent_cmd_free(&cmd);
    } else if (err == NULL) {
        abort(); /* a failing parser must say why */
    }
    /* the same bytes as a command line and as a user log line */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char **argv;
    size_t argc;
    if (agent_split_cmd(s, &argv, &argc, &err) == 0) {
        if (argc == 0 || argv[argc] != NULL)
            abort();
        free(argv);
    }
    char line[512];
    size_t n = agent_format_log_line(line, sizeof(line), 1700000000123, "fn", "inst", "stdout", s, size);
    if (n > sizeof(line) || (n > 0 && line[n - 1] != '\n'))
        abort();
    free(s);
    return 0;
}
