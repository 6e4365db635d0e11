/* Unit tests for runtime-agent/spec.c: control decoding, env/argv building, log lines,
 * header rules. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "runtime-agent/internal.h"

Test(agent_headers, hop_by_hop_dropped_case_insensitively)
{
    cr_assert(agent_header_is_hop("connection", 10));
    cr_assert(agent_header_is_hop("Transfer-Encoding", 17));
    cr_assert(agent_header_is_hop("te", 2));
    cr_assert(agent_header_is_hop("content-length", 14));
    cr_assert(agent_header_is_hop("host", 4));
    cr_assert_not(agent_header_is_hop("x-request-id", 12));
    cr_assert_not(agent_header_is_hop("faas-request-id", 15));
    cr_assert_not(agent_header_is_hop("tee", 3));
    cr_assert_not(agent_header_is_hop("t", 1));
}

Test(agent_cmdline, split_quotes_and_escapes)
{
    char **argv;
    size_t argc;
    const char *err = NULL;
    cr_assert_eq(agent_split_cmd("  python3 -c 'print(\"a b\")'  x\\ y \"q\\\"z\" ", &argv, &argc, &err), 0);
    cr_assert_eq(argc, 5);
    cr_assert_str_eq(argv[0], "python3");
    cr_assert_str_eq(argv[1], "-c");
    cr_assert_str_eq(argv[2], "print(\"a b\")");
    cr_assert_str_eq(argv[3], "x y");
    cr_assert_str_eq(argv[4], "q\"z");
    cr_assert_null(argv[5]);
    free(argv);
    cr_assert_eq(agent_split_cmd("a 'b", &argv, &argc, &err), -1);
    cr_assert_not_null(err);
    cr_assert_eq(agent_split_cmd("   ", &argv, &argc, &err), -1);
    cr_assert_eq(agent_split_cmd("''", &argv, &argc, &err), 0);
    cr_assert_eq(argc, 1);
    cr_assert_str_eq(argv[0], "");
    free(argv);
}

static const char *env_get(char **env, const char *key)
{
    size_t n = strlen(key);
    for (; *env != NULL; env++)
        if (strncmp(*env, key, n) == 0 && (*env)[n] == '=')
            return *env + n + 1;
    return NULL;
}

static size_t env_count(char **env)
{
    size_t n = 0;
    while (env[n] != NULL)
        n++;
    return n;
}

Test(agent_env, clean_base_spec_env_and_port)
{
    const char *kv[] = {"FOO", "bar", "PATH", "/opt/bin", "PORT", "1"};
    agent_spec_t s = {.env_kv = kv, .n_env = 3};
    agent_spec_defaults(&s);
    char **env = agent_build_env(&s, 8123);
    cr_assert_str_eq(env_get(env, "PATH"), "/opt/bin");
    cr_assert_str_eq(env_get(env, "HOME"), "/tmp");
    cr_assert_str_eq(env_get(env, "LANG"), "C.UTF-8");
    cr_assert_str_eq(env_get(env, "FOO"), "bar");
    cr_assert_str_eq(env_get(env, "PORT"), "8123"); /* the platform's port wins */
    cr_assert_eq(env_count(env), 5);
    free(env);
    s.port_env = "HTTP_PORT";
    env = agent_build_env(&s, 9);
    cr_assert_str_eq(env_get(env, "HTTP_PORT"), "9");
    cr_assert_str_eq(env_get(env, "PORT"), "1");
    free(env);
}

Test(agent_log, line_is_logfmt_and_quoted)
{
    char buf[256];
    const char msg[] = "say \"hi\"\\ now\tx";
    size_t n = agent_format_log_line(buf, sizeof(buf), 1700000000123, "hello", "i-1", "stderr", msg, strlen(msg));
    cr_assert_gt(n, 0);
    cr_assert_eq(buf[n - 1], '\n');
    buf[n] = '\0';
    cr_assert_str_eq(
        buf, "ts=2023-11-14T22:13:20.123Z fn=hello instance=i-1 stream=stderr msg=\"say \\\"hi\\\"\\\\ now x\"\n");
    /* a line longer than the buffer is cut, still one line */
    char big[1000];
    memset(big, 'a', sizeof(big));
    n = agent_format_log_line(buf, sizeof(buf), 0, "f", "i", "stdout", big, sizeof(big));
    cr_assert_leq(n, sizeof(buf));
    cr_assert_eq(buf[n - 1], '\n');
    cr_assert_eq(buf[n - 2], '"');
}

/* Packs an AgentCommand SPECIALIZE with the given pieces. */
static uint8_t *pack_specialize(const char *name, const char *dir, char **cmdv, size_t ncmd, uint32_t port,
                                uint32_t user_port, size_t *len)
{
    Faas__FunctionSpec fs = FAAS__FUNCTION_SPEC__INIT;
    Faas__HealthCheck hc = FAAS__HEALTH_CHECK__INIT;
    Faas__KeyValue kv = FAAS__KEY_VALUE__INIT, *kvs[] = {&kv};
    Faas__Specialize sp = FAAS__SPECIALIZE__INIT;
    Faas__AgentCommand c = FAAS__AGENT_COMMAND__INIT;
    kv.key = "GREETING";
    kv.value = "hi";
    fs.name = (char *)name;
    fs.command = cmdv;
    fs.n_command = ncmd;
    fs.env = kvs;
    fs.n_env = 1;
    fs.port = port;
    hc.kind = FAAS__HEALTH_CHECK__KIND__TCP;
    fs.health = &hc;
    sp.spec = &fs;
    sp.instance_id = "inst-1";
    sp.code_dir = (char *)dir;
    sp.user_port = user_port;
    c.type = FAAS__AGENT_COMMAND__TYPE__SPECIALIZE;
    c.specialize = &sp;
    return faas_pb_pack(&c.base, len);
}

Test(agent_control, decode_specialize_with_defaults)
{
    char *cmdv[] = {"./server", "--flag"};
    size_t len;
    uint8_t *buf = pack_specialize("hello", "/code", cmdv, 2, 0, 9000, &len);
    agent_cmd_t cmd;
    const char *err = NULL;
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), 0, "%s", err);
    cr_assert_eq(cmd.type, FAAS__AGENT_COMMAND__TYPE__SPECIALIZE);
    cr_assert_str_eq(cmd.spec.name, "hello");
    cr_assert_str_eq(cmd.spec.instance_id, "inst-1");
    cr_assert_str_eq(cmd.spec.code_dir, "/code");
    cr_assert_eq(cmd.spec.argc, 2);
    cr_assert_str_eq(cmd.spec.argv[1], "--flag");
    cr_assert_null(cmd.spec.argv[2]);
    cr_assert_eq(cmd.spec.port, 9000);
    cr_assert_str_eq(cmd.spec.port_env, "PORT");
    cr_assert_eq(cmd.spec.probe_kind, AGENT_PROBE_TCP);
    cr_assert_str_eq(cmd.spec.probe_path, "/");
    cr_assert_eq(cmd.spec.probe_interval_ms, 2);
    cr_assert_eq(cmd.spec.cold_start_timeout_ms, 10000);
    cr_assert_eq(cmd.spec.n_env, 1);
    cr_assert_str_eq(cmd.spec.env_kv[0], "GREETING");
    agent_cmd_free(&cmd);
    free(buf);
    /* the spec's own port wins over the worker manager's pick */
    buf = pack_specialize("hello", "/code", cmdv, 1, 7000, 9000, &len);
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), 0);
    cr_assert_eq(cmd.spec.port, 7000);
    agent_cmd_free(&cmd);
    free(buf);
}

Test(agent_control, decode_rejects_bad_specs)
{
    char *cmdv[] = {"./server"};
    size_t len;
    agent_cmd_t cmd;
    const char *err = NULL;
    struct {
        const char *name, *dir;
        size_t ncmd;
        uint32_t port;
    } bad[] = {{"hello", "/code", 0, 0},
               {"Bad_Name", "/code", 1, 0},
               {"hello", "rel/dir", 1, 0},
               {"hello", "/code", 1, 70000}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t *buf = pack_specialize(bad[i].name, bad[i].dir, cmdv, bad[i].ncmd, bad[i].port, 0, &len);
        err = NULL;
        cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), -1, "case %zu", i);
        cr_assert_not_null(err);
        free(buf);
    }
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    cr_assert_eq(agent_cmd_decode(garbage, sizeof(garbage), &cmd, &err), -1);
    const uint8_t no_body[] = {0x08, 0x00}; /* type = SPECIALIZE, no specialize */
    cr_assert_eq(agent_cmd_decode(no_body, sizeof(no_body), &cmd, &err), -1);
    const uint8_t stop[] = {0x08, 0x01};
    cr_assert_eq(agent_cmd_decode(stop, sizeof(stop), &cmd, &err), 0);
    cr_assert_eq(cmd.type, FAAS__AGENT_COMMAND__TYPE__STOP);
    agent_cmd_free(&cmd);
}

typedef struct {
    Faas__AgentEvent *ev[16];
    size_t n;
} pkts_t;

static int collect(void *ud, uint8_t *pkt, size_t len)
{
    pkts_t *p = ud;
    cr_assert_lt(len, 70 * 1024);
    p->ev[p->n++] = faas__agent_event__unpack(NULL, len, pkt);
    free(pkt);
    return 0;
}

Test(agent_task, result_split_into_chunks)
{
    static uint8_t body[150000];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)(i * 7);
    Faas__KeyValue kv = FAAS__KEY_VALUE__INIT, *kvs[] = {&kv};
    kv.key = "x-a";
    kv.value = "1";
    Faas__TaskResult res = FAAS__TASK_RESULT__INIT;
    res.status = 201;
    res.headers = kvs;
    res.n_headers = 1;
    res.body.data = body;
    res.body.len = sizeof(body);
    pkts_t p = {0};
    cr_assert_eq(agent_task_result_packets("0123", &res, 65536, collect, &p), 0);
    cr_assert_eq(p.n, 3);
    cr_assert_eq(p.ev[0]->type, FAAS__AGENT_EVENT__TYPE__TASK_DONE);
    cr_assert_eq(p.ev[0]->result->status, 201);
    cr_assert_str_eq(p.ev[0]->result->headers[0]->key, "x-a");
    cr_assert(p.ev[0]->more && p.ev[1]->more && !p.ev[2]->more);
    size_t off = p.ev[0]->result->body.len;
    cr_assert_eq(off, 65536);
    cr_assert_eq(memcmp(p.ev[0]->result->body.data, body, off), 0);
    for (size_t i = 1; i < 3; i++) {
        cr_assert_eq(p.ev[i]->type, FAAS__AGENT_EVENT__TYPE__TASK_RESULT_CHUNK);
        cr_assert_str_eq(p.ev[i]->task_id, "0123");
        cr_assert_eq(memcmp(p.ev[i]->chunk.data, body + off, p.ev[i]->chunk.len), 0);
        off += p.ev[i]->chunk.len;
    }
    cr_assert_eq(off, sizeof(body));
    for (size_t i = 0; i < p.n; i++)
        faas__agent_event__free_unpacked(p.ev[i], NULL);
    /* an empty body: one packet, nothing more */
    res.body.len = 0;
    p.n = 0;
    cr_assert_eq(agent_task_result_packets("0123", &res, 65536, collect, &p), 0);
    cr_assert_eq(p.n, 1);
    cr_assert(!p.ev[0]->more);
    faas__agent_event__free_unpacked(p.ev[0], NULL);
}

Test(agent_cmd, cancel_task_needs_an_id)
{
    Faas__AgentCommand c = FAAS__AGENT_COMMAND__INIT;
    c.type = FAAS__AGENT_COMMAND__TYPE__CANCEL_TASK;
    size_t len;
    uint8_t *buf = faas_pb_pack(&c.base, &len);
    agent_cmd_t cmd;
    const char *err = NULL;
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), -1);
    free(buf);
    c.task_id = "0123456789abcdef0123456789abcdef";
    buf = faas_pb_pack(&c.base, &len);
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), 0);
    cr_assert_str_eq(cmd.msg->task_id, c.task_id);
    agent_cmd_free(&cmd);
    free(buf);
}

Test(logacct, writes_until_the_file_passes_its_bound_then_drops_and_counts)
{
    agent_logacct_t a = {.max_bytes = 100};
    cr_assert_eq(agent_logacct_admit(&a, 60), 1);
    cr_assert_eq(agent_logacct_wrote(&a, 60), 0);
    cr_assert_eq(agent_logacct_admit(&a, 60), 1);
    cr_assert_eq(agent_logacct_wrote(&a, 120), 1, "the write that passes the bound says so, once");
    cr_assert_eq(agent_logacct_wrote(&a, 130), 0);
    cr_assert_eq(agent_logacct_admit(&a, 10), 0);
    cr_assert_eq(agent_logacct_admit(&a, 15), 0);
    cr_assert_eq(a.dropped_bytes, 25);
    cr_assert_eq(a.dropped_lines, 2);
    uint64_t b, l;
    cr_assert_eq(agent_logacct_swap(&a, &b, &l), 1);
    cr_assert_eq(b, 25);
    cr_assert_eq(l, 2);
    cr_assert_eq(agent_logacct_admit(&a, 10), 1, "a new file takes lines again");
    cr_assert_eq(agent_logacct_swap(&a, &b, &l), 0, "nothing dropped since: no summary");
    cr_assert_eq(a.dropped_bytes, 25, "totals only grow");
}

Test(logacct, other_pods_lines_count_and_unknown_ends_never_fill)
{
    agent_logacct_t a = {.max_bytes = 100};
    cr_assert_eq(agent_logacct_wrote(&a, -1), 0, "a pipe has no end to read");
    cr_assert_eq(agent_logacct_wrote(&a, 100), 1, "a 10-byte line that lands at 100: others wrote the rest");
    agent_logacct_t none = {0};
    cr_assert_eq(agent_logacct_wrote(&none, 1ll << 40), 0, "no bound (stderr)");
    cr_assert_eq(agent_logacct_admit(&none, 5), 1);
}

/* runtime: python3 with a bare script: the agent's argv gets the interpreter in front */
Test(agent_zygote, implied_interpreter_and_runtime_decoded)
{
    Faas__FunctionSpec fs = FAAS__FUNCTION_SPEC__INIT;
    Faas__Specialize sp = FAAS__SPECIALIZE__INIT;
    Faas__AgentCommand c = FAAS__AGENT_COMMAND__INIT;
    char *cmdv[] = {"app.py", "--x"};
    fs.name = "py";
    fs.command = cmdv;
    fs.n_command = 2;
    fs.runtime = "python3";
    sp.spec = &fs;
    sp.instance_id = "i";
    sp.code_dir = "/code";
    c.type = FAAS__AGENT_COMMAND__TYPE__SPECIALIZE;
    c.specialize = &sp;
    size_t len;
    uint8_t *buf = faas_pb_pack(&c.base, &len);
    agent_cmd_t cmd;
    const char *err = NULL;
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), 0, "%s", err);
    cr_assert_eq(cmd.spec.argc, 3);
    cr_assert_str_eq(cmd.spec.argv[0], "python3");
    cr_assert_str_eq(cmd.spec.argv[1], "app.py");
    cr_assert_str_eq(cmd.spec.argv[2], "--x");
    cr_assert_null(cmd.spec.argv[3]);
    cr_assert_str_eq(cmd.spec.runtime, "python3");
    agent_cmd_free(&cmd);
    free(buf);
    /* a command that names its interpreter is left as it is */
    char *full[] = {"/usr/bin/python3", "app.py"};
    fs.command = full;
    buf = faas_pb_pack(&c.base, &len);
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), 0, "%s", err);
    cr_assert_eq(cmd.spec.argc, 2);
    cr_assert_str_eq(cmd.spec.argv[0], "/usr/bin/python3");
    agent_cmd_free(&cmd);
    free(buf);
}

Test(agent_zygote, start_time_environment_must_match)
{
    char *zyg[] = {"PATH=/usr/bin", "HOME=/tmp", "LANG=C.UTF-8", "PORT=0", NULL};
    char *same[] = {"PATH=/opt/bin:/usr/bin", "HOME=/tmp", "LANG=C.UTF-8", "PORT=8080", "TZ=UTC", "GREETING=hi", NULL};
    char key[64] = "";
    cr_assert_eq(agent_zygote_env_fits(same, zyg, key, sizeof(key)), 0, "PATH, TZ and the rest are set at handover");
    char *py[] = {"HOME=/tmp", "LANG=C.UTF-8", "PYTHONPATH=/x", NULL};
    cr_assert_eq(agent_zygote_env_fits(py, zyg, key, sizeof(key)), -1);
    cr_assert_str_eq(key, "PYTHONPATH");
    char *lang[] = {"HOME=/tmp", "LANG=de_DE.UTF-8", NULL};
    cr_assert_eq(agent_zygote_env_fits(lang, zyg, key, sizeof(key)), -1);
    cr_assert_str_eq(key, "LANG");
    char *lc[] = {"HOME=/tmp", "LANG=C.UTF-8", "LC_ALL=C", NULL};
    cr_assert_eq(agent_zygote_env_fits(lc, zyg, key, sizeof(key)), -1);
    cr_assert_str_eq(key, "LC_ALL");
    char *pre[] = {"HOME=/tmp", "LANG=C.UTF-8", "LD_PRELOAD=/lib/x.so", NULL};
    cr_assert_eq(agent_zygote_env_fits(pre, zyg, key, sizeof(key)), -1);
    cr_assert_str_eq(key, "LD_PRELOAD");
    char *grpc[] = {"HOME=/tmp", "LANG=C.UTF-8", "GRPC_VERBOSITY=debug", NULL};
    cr_assert_eq(agent_zygote_env_fits(grpc, zyg, key, sizeof(key)), -1);
    cr_assert_str_eq(key, "GRPC_VERBOSITY");
    /* a variable the zygote started with but the function's environment lacks */
    char *nohome[] = {"LANG=C.UTF-8", NULL};
    cr_assert_eq(agent_zygote_env_fits(nohome, zyg, key, sizeof(key)), -1);
    cr_assert_str_eq(key, "HOME");
    /* HOMEDIR is not HOME */
    char *homedir[] = {"HOME=/tmp", "LANG=C.UTF-8", "HOMEDIR=/x", NULL};
    cr_assert_eq(agent_zygote_env_fits(homedir, zyg, key, sizeof(key)), 0);
}

Test(agent_zygote, message_is_nul_separated_fields)
{
    char *argv[] = {"python3", "srv.py", "a b", "", NULL};
    agent_spec_t s = {.code_dir = "/code", .argv = argv, .argc = 4};
    char *env[] = {"A=1", "PORT=9", NULL};
    char buf[256];
    size_t n = agent_zygote_message(&s, "/usr/bin/python3", env, buf, sizeof(buf));
    const char want[] = "/code\0/usr/bin/python3\0python3\0" "3\0srv.py\0a b\0\0" "2\0A=1\0PORT=9";
    cr_assert_eq(n, sizeof(want) - 1);
    cr_assert_eq(memcmp(buf, want, n), 0);
    cr_assert_eq(agent_zygote_message(&s, "/usr/bin/python3", env, buf, 40), 0, "over cap: nothing");
}
