/* libFuzzer driver for faasctl's command line (ctl_args_parse), every command.
 * The input's NUL-separated pieces are the arguments. Any argv gives 0, 1 (help)
 * or -1 with one printable line; what is accepted is safe to act on: a command
 * and the operands it needs, deploy values faas_manifest_set takes, invoke
 * methods/paths/headers that cannot break the request line, bounded numbers.
 * A second parse of the same argv agrees, and ctl_args_free leaves no leak. */
// FUZZ_SOURCES: deploy/args.c deploy/manifest.c deploy/values.c deploy/httpc.c common/util.c tests/fuzz/cli_argv.c
// FUZZ_SOURCES: common/spec.c
// FUZZ_PKGS: yaml-0.1 libprotobuf-c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "deploy/args.h"
#include "deploy/manifest.h"
#include "tests/fuzz/cli_argv.h"

static void check_deploy(const ctl_args_t *a, int argc)
{
    faas_manifest_t m;
    const char *e;
    if (a->n_sets > (size_t)argc || faas_manifest_init(&m) != 0)
        abort();
    for (size_t i = 0; i < a->n_sets; i++)
        if (a->sets[i].key == NULL || a->sets[i].value == NULL || a->sets[i].flag == NULL ||
            faas_manifest_set(&m, a->sets[i].key, a->sets[i].value, &e) != 0)
            abort();
    faas_manifest_free(&m);
}

static void check_invoke(const ctl_args_t *a)
{
    const char *e;
    if (faas_valid_function_name(a->name, strlen(a->name), &e) != 0)
        abort();
    if (a->timeout_ms == 0 || a->timeout_ms > INT32_MAX || a->path == NULL || !fuzz_cli_printable(a->path))
        abort();
    if (a->method != NULL && (a->method[0] == '\0' || !fuzz_cli_printable(a->method)))
        abort();
    for (size_t i = 0; i < a->n_headers; i++) {
        const char *h = a->headers[i], *colon = strchr(h, ':');
        if (colon == NULL || colon == h)
            abort();
        for (const char *p = h; *p; p++)
            if (((unsigned char)*p < 0x20 && !(*p == '\t' && p > colon)) || *p == 0x7f)
                abort(); /* nothing that could end the header line early */
    }
    if (a->base64 && a->grpc_method == NULL)
        abort();
    if (a->grpc_method == NULL && (!fuzz_cli_printable(a->gw_host) || !fuzz_cli_printable(a->gw_prefix)))
        abort();
    if (a->async && a->grpc_method != NULL)
        abort();
    if (a->callback != NULL && (!a->async || !fuzz_cli_printable(a->callback)))
        abort(); /* it becomes the X-Callback-Url header line */
}

/* What reaches a /tasks request path or query unescaped: letters and digits only. */
static int alnum_token(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
            return 0;
    return 1;
}

static void check_tasks(const ctl_args_t *a)
{
    const char *e;
    if ((a->cmd == CTL_TASKS_LIST) != (a->task_id == NULL) || (a->task_id != NULL && !alnum_token(a->task_id)))
        abort();
    if (a->after != NULL && !alnum_token(a->after))
        abort();
    if (a->function != NULL && faas_valid_function_name(a->function, strlen(a->function), &e) != 0)
        abort();
    if (a->status != NULL && !alnum_token(a->status))
        abort();
    if (a->limit > 1000 || a->timeout_ms == 0 || a->timeout_ms > INT32_MAX)
        abort();
    if (!fuzz_cli_printable(a->gw_host) || !fuzz_cli_printable(a->gw_prefix))
        abort();
}

static void check_ok(const ctl_args_t *a, int argc)
{
    if (a->cmd == CTL_NONE || a->discovery == NULL || a->gateway == NULL || a->tail > 1000000)
        abort();
    if ((a->discovery[0] == '\0' || !fuzz_cli_printable(a->discovery)))
        abort();
    if (a->cmd == CTL_TASKS) /* the group word alone is only ever help */
        abort();
    if (a->cmd >= CTL_TASKS_LIST) {
        check_tasks(a);
        return;
    }
    if (a->cmd != CTL_LIST && a->cmd != CTL_DEPLOY && a->name == NULL)
        abort();
    if (a->cmd == CTL_DEPLOY)
        check_deploy(a, argc);
    if (a->cmd == CTL_INVOKE)
        check_invoke(a);
}

static int parse(const uint8_t *data, size_t size, const ctl_env_t *env, char *msg, size_t cap)
{
    fuzz_cli_argv_t v;
    if (fuzz_cli_argv_make(&v, "faasctl", data, size) != 0)
        return -2;
    ctl_args_t a;
    const char *err = NULL;
    int rc = ctl_args_parse(v.argc, v.argv, env, &a, &err);
    msg[0] = '\0';
    if (rc == -1) {
        if (err != a.errbuf)
            abort();
        fuzz_cli_check_line(err, sizeof(a.errbuf));
        strncpy(msg, err, cap - 1);
        msg[cap - 1] = '\0';
    } else if (rc == 0) {
        check_ok(&a, v.argc);
    } else if (rc != 1 || ctl_args_usage(a.cmd) == NULL) {
        abort();
    }
    ctl_args_free(&a);
    fuzz_cli_argv_free(&v);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the environment is an input too: the first byte picks one */
    static const ctl_env_t envs[] = {
        {NULL, NULL, NULL},
        {"127.0.0.1:1", "http://[::1]:9/p/", "127.0.0.1:2"},
        {"", "not a url", ""},
        {"x", "http://h:99999", "y"},
    };
    if (size < 1)
        return 0;
    const ctl_env_t *env = &envs[data[0] % (sizeof(envs) / sizeof(envs[0]))];
    char m1[256], m2[256];
    int r1 = parse(data + 1, size - 1, env, m1, sizeof(m1));
    int r2 = parse(data + 1, size - 1, env, m2, sizeof(m2));
    if (r1 != -2 && r2 != -2 && (r1 != r2 || strcmp(m1, m2) != 0))
        abort();
    return 0;
}
