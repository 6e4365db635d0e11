/* Unit tests for runtime-agent/spec.c: SPECIALIZE of an OCI image (Specialize.image). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "runtime-agent/internal.h"

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

/* A SPECIALIZE of an image: im as given, the function's env GREETING=manifest, no command,
 * no code_dir (neither is needed for an image). */
static uint8_t *pack_image(Faas__ImageRun *im, size_t *len)
{
    Faas__FunctionSpec fs = FAAS__FUNCTION_SPEC__INIT;
    Faas__KeyValue kv = FAAS__KEY_VALUE__INIT, *kvs[] = {&kv};
    Faas__Specialize sp = FAAS__SPECIALIZE__INIT;
    Faas__AgentCommand c = FAAS__AGENT_COMMAND__INIT;
    kv.key = "GREETING";
    kv.value = "manifest";
    fs.name = "img";
    fs.env = kvs;
    fs.n_env = 1;
    fs.port_env = "HTTP_PORT";
    sp.spec = &fs;
    sp.instance_id = "inst-1";
    sp.image = im;
    c.type = FAAS__AGENT_COMMAND__TYPE__SPECIALIZE;
    c.specialize = &sp;
    return faas_pb_pack(&c.base, len);
}

static char *argv_srv[] = {"srv", "--flag"};
static char *env_img[] = {"PATH=/bin", "GREETING=image", "EMPTY=", "EQ=a=b", "HOME=/home/app"};
static uint32_t groups[] = {1000, 2000};

static void image_init(Faas__ImageRun *im)
{
    faas__image_run__init(im);
    im->root = "/tmp/.faas/root";
    im->exe = "/usr/bin/srv";
    im->argv = argv_srv;
    im->n_argv = 2;
    im->env = env_img;
    im->n_env = 5;
    im->cwd = "/app";
    im->uid = 1000;
    im->gid = 1000;
    im->groups = groups;
    im->n_groups = 2;
}

Test(agent_image, decode_takes_the_images_command_and_env)
{
    Faas__ImageRun im;
    image_init(&im);
    size_t len;
    uint8_t *buf = pack_image(&im, &len);
    agent_cmd_t cmd;
    const char *err = NULL;
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), 0, "%s", err);
    const agent_spec_t *s = &cmd.spec;
    cr_assert_not_null(s->image);
    cr_assert_str_eq(s->image->root, "/tmp/.faas/root");
    cr_assert_str_eq(s->image->exe, "/usr/bin/srv");
    cr_assert_eq(s->image->uid, 1000);
    cr_assert_eq(s->image->n_groups, 2);
    cr_assert_eq(s->image->groups[1], 2000);
    cr_assert_eq(s->argc, 2);
    cr_assert_str_eq(s->argv[0], "srv");
    cr_assert_str_eq(s->argv[1], "--flag");
    cr_assert_null(s->argv[2]);
    char **env = agent_build_env(s, 8080);
    cr_assert_str_eq(env_get(env, "PATH"), "/bin"); /* the image's */
    cr_assert_str_eq(env_get(env, "HOME"), "/home/app");
    cr_assert_null(env_get(env, "LANG"));                   /* nothing of the pod's where the image says nothing */
    cr_assert_str_eq(env_get(env, "GREETING"), "manifest"); /* the function's env over the image's */
    cr_assert_str_eq(env_get(env, "EMPTY"), "");
    cr_assert_str_eq(env_get(env, "EQ"), "a=b");
    cr_assert_str_eq(env_get(env, "HTTP_PORT"), "8080");
    cr_assert_eq(env_count(env), 6); /* PATH HOME GREETING EMPTY EQ HTTP_PORT: no LANG */
    free(env);
    agent_cmd_free(&cmd);
    free(buf);
}

Test(agent_image, no_cwd_means_root_and_no_groups_is_fine)
{
    Faas__ImageRun im;
    image_init(&im);
    im.cwd = "";
    im.n_groups = 0;
    im.n_env = 0;
    size_t len;
    uint8_t *buf = pack_image(&im, &len);
    agent_cmd_t cmd;
    const char *err = NULL;
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), 0, "%s", err);
    cr_assert_str_eq(cmd.spec.image->cwd, "");
    char **env = agent_build_env(&cmd.spec, 1);
    cr_assert_null(env_get(env, "PATH")); /* the worker gives an image its PATH, not the agent */
    cr_assert_str_eq(env_get(env, "GREETING"), "manifest");
    free(env);
    agent_cmd_free(&cmd);
    free(buf);
}

Test(agent_image, bad_image_runs_are_refused)
{
    static char *none[] = {NULL};
    static char *bad_env1[] = {"NOEQUALS"}, *bad_env2[] = {"=value"};
    struct {
        const char *root, *exe, *cwd;
        char **argv, **env;
        size_t n_argv, n_env;
        const char *want;
    } cases[] = {
        {"tmp/root", NULL, NULL, NULL, NULL, 0, 0, "root"},    {"", NULL, NULL, NULL, NULL, 0, 0, "root"},
        {NULL, "srv", NULL, NULL, NULL, 0, 0, "executable"},   {NULL, NULL, "app", NULL, NULL, 0, 0, "WorkingDir"},
        {NULL, NULL, NULL, none, NULL, 0, 0, "no command"},    {NULL, NULL, NULL, NULL, bad_env1, 0, 1, "KEY=value"},
        {NULL, NULL, NULL, NULL, bad_env2, 0, 1, "KEY=value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Faas__ImageRun im;
        image_init(&im);
        if (cases[i].root)
            im.root = (char *)cases[i].root;
        if (cases[i].exe)
            im.exe = (char *)cases[i].exe;
        if (cases[i].cwd)
            im.cwd = (char *)cases[i].cwd;
        if (cases[i].argv)
            im.argv = cases[i].argv, im.n_argv = cases[i].n_argv;
        if (cases[i].env)
            im.env = cases[i].env, im.n_env = cases[i].n_env;
        size_t len;
        uint8_t *buf = pack_image(&im, &len);
        agent_cmd_t cmd;
        const char *err = NULL;
        cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), -1, "case %zu", i);
        cr_assert_not_null(strstr(err, cases[i].want), "case %zu: %s", i, err);
        free(buf);
    }
}

Test(agent_image, code_functions_still_need_command_and_code_dir)
{
    Faas__FunctionSpec fs = FAAS__FUNCTION_SPEC__INIT;
    Faas__Specialize sp = FAAS__SPECIALIZE__INIT;
    Faas__AgentCommand c = FAAS__AGENT_COMMAND__INIT;
    fs.name = "code";
    sp.spec = &fs;
    sp.code_dir = "/code";
    c.type = FAAS__AGENT_COMMAND__TYPE__SPECIALIZE;
    c.specialize = &sp;
    size_t len;
    uint8_t *buf = faas_pb_pack(&c.base, &len);
    agent_cmd_t cmd;
    const char *err = NULL;
    cr_assert_eq(agent_cmd_decode(buf, len, &cmd, &err), -1);
    cr_assert_str_eq(err, "function spec has no command");
    free(buf);
}
