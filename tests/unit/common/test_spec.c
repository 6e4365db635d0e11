/* The spec defaults and limits that docs/architecture.md, proto/faas.proto comments and
 * the example manifests promise: changing one here means changing those too. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/spec.h"

Test(spec, documented_defaults)
{
    cr_assert_eq(FAAS_SPEC_DEFAULT_TIMEOUT_MS, 30000);
    cr_assert_eq(FAAS_SPEC_DEFAULT_COLD_START_MS, 10000);
    cr_assert_eq(FAAS_SPEC_DEFAULT_IDLE_TIMEOUT_MS, 5 * 60 * 1000);
    cr_assert_eq(FAAS_SPEC_DEFAULT_MAX_DURATION_MS, 15 * 60 * 1000);
    cr_assert_eq(FAAS_SPEC_DEFAULT_MAX_BODY_BYTES, 8 * 1024 * 1024);
    cr_assert_eq(FAAS_SPEC_DEFAULT_MAX_INSTANCES, 100);
    cr_assert_eq(FAAS_SPEC_DEFAULT_CONCURRENCY, 0, "0 = unlimited");
    cr_assert_eq(FAAS_SPEC_DEFAULT_PROBE_INTERVAL_MS, 2);
    cr_assert_str_eq(FAAS_SPEC_DEFAULT_HEALTH_PATH, "/");
    cr_assert_str_eq(FAAS_SPEC_DEFAULT_PORT_ENV, "PORT");
    cr_assert_str_eq(FAAS_SPEC_DEFAULT_THRIFT_TRANSPORT, "framed");
    cr_assert_eq(FAAS_SPEC_DEFAULT_MEMORY_BYTES, 256ull * 1024 * 1024);
    cr_assert_eq(FAAS_SPEC_DEFAULT_PIDS, 256);
}

Test(spec, documented_limits)
{
    cr_assert_eq(FAAS_SPEC_LIMIT_INSTANCES, 100000);
    cr_assert_eq(FAAS_SPEC_LIMIT_CONCURRENCY, 1000000);
    cr_assert_eq(FAAS_TASK_LIST_DEFAULT_LIMIT, 100);
    cr_assert_eq(FAAS_TASK_LIST_LIMIT, 1000);
    cr_assert_str_eq(FAAS_SPEC_STR(FAAS_SPEC_LIMIT_INSTANCES), "100000");
    cr_assert(FAAS_SPEC_DEFAULT_MAX_INSTANCES <= FAAS_SPEC_LIMIT_INSTANCES);
}

Test(spec, documented_async_defaults_and_limits)
{
    cr_assert_eq(FAAS_SPEC_DEFAULT_ASYNC_CONCURRENCY, 16);
    cr_assert_eq(FAAS_SPEC_DEFAULT_ASYNC_TIMEOUT_MS, 3600 * 1000);
    cr_assert_eq(FAAS_SPEC_DEFAULT_ASYNC_RETENTION_MS, 7ull * 86400 * 1000);
    cr_assert_eq(FAAS_SPEC_DEFAULT_ASYNC_MAX_ATTEMPTS, 3);
    cr_assert_eq(FAAS_SPEC_DEFAULT_ASYNC_MAX_RESULT_BYTES, 8ull << 20);
    cr_assert_eq(FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY, 10000);
    cr_assert_eq(FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_MS, 24u * 3600 * 1000);
    cr_assert_eq(FAAS_SPEC_LIMIT_ASYNC_RETENTION_MS, 90ull * 86400 * 1000);
    cr_assert_eq(FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS, 10);
    cr_assert_eq(FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_BYTES, 8ull << 20);
    /* messages quote these */
    cr_assert_str_eq(FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_HOURS), "24");
    cr_assert_str_eq(FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_RETENTION_DAYS), "90");
    cr_assert_str_eq(FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_MIB), "8");
    cr_assert(FAAS_SPEC_DEFAULT_ASYNC_CONCURRENCY <= FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY);
    cr_assert(FAAS_SPEC_DEFAULT_ASYNC_TIMEOUT_MS <= FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_MS);
    cr_assert(FAAS_SPEC_DEFAULT_ASYNC_RETENTION_MS <= FAAS_SPEC_LIMIT_ASYNC_RETENTION_MS);
    cr_assert(FAAS_SPEC_DEFAULT_ASYNC_MAX_ATTEMPTS <= FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS);
}

Test(spec, fill_defaults_sets_only_unset_fields)
{
    Faas__FunctionSpec s;
    faas__function_spec__init(&s);
    cr_assert_eq(faas_spec_fill_defaults(&s), 0);
    cr_assert_str_eq(s.port_env, "PORT");
    cr_assert_eq(s.timeout_ms, FAAS_SPEC_DEFAULT_TIMEOUT_MS);
    cr_assert_eq(s.cold_start_timeout_ms, FAAS_SPEC_DEFAULT_COLD_START_MS);
    cr_assert_eq(s.idle_timeout_ms, FAAS_SPEC_DEFAULT_IDLE_TIMEOUT_MS);
    cr_assert_eq(s.max_duration_ms, FAAS_SPEC_DEFAULT_MAX_DURATION_MS);
    cr_assert_eq(s.max_body_bytes, FAAS_SPEC_DEFAULT_MAX_BODY_BYTES);
    cr_assert_eq(s.max_instances, FAAS_SPEC_DEFAULT_MAX_INSTANCES);
    cr_assert_eq(s.concurrency, 0, "concurrency 0 stays unlimited");
    free(s.port_env);
    free(s.network); /* both filled in: the test owns them */

    faas__function_spec__init(&s);
    s.port_env = strdup("HTTP_PORT");
    s.timeout_ms = 1500;
    s.max_instances = 3;
    s.max_body_bytes = 1;
    cr_assert_eq(faas_spec_fill_defaults(&s), 0);
    cr_assert_str_eq(s.port_env, "HTTP_PORT");
    cr_assert_eq(s.timeout_ms, 1500);
    cr_assert_eq(s.max_instances, 3);
    cr_assert_eq(s.max_body_bytes, 1);
    cr_assert_eq(s.cold_start_timeout_ms, FAAS_SPEC_DEFAULT_COLD_START_MS);
    free(s.port_env);
    free(s.network);
}

Test(spec, documented_log_bound)
{
    cr_assert_eq(FAAS_SPEC_DEFAULT_LOG_MAX_BYTES, 16ull << 20);
    cr_assert_eq(FAAS_SPEC_DEFAULT_LOG_KEEP, 2);
    cr_assert_eq(FAAS_SPEC_LIMIT_LOG_MIN_BYTES, 64ull << 10);
    cr_assert_eq(FAAS_SPEC_LIMIT_LOG_MAX_BYTES, 1024ull << 20);
    cr_assert_eq(FAAS_SPEC_LIMIT_LOG_KEEP, 10);
    cr_assert_str_eq(FAAS_SPEC_STR(FAAS_SPEC_LIMIT_LOG_MAX_MIB), "1024");
    cr_assert(FAAS_SPEC_DEFAULT_LOG_MAX_BYTES <= FAAS_SPEC_LIMIT_LOG_MAX_BYTES);
    cr_assert(FAAS_SPEC_DEFAULT_LOG_KEEP <= FAAS_SPEC_LIMIT_LOG_KEEP);
}

Test(spec, log_bound_falls_back_per_field)
{
    uint64_t max;
    uint32_t keep;
    faas_spec_log_bound(NULL, &max, &keep);
    cr_assert_eq(max, FAAS_SPEC_DEFAULT_LOG_MAX_BYTES);
    cr_assert_eq(keep, FAAS_SPEC_DEFAULT_LOG_KEEP);
    Faas__FunctionSpec s;
    Faas__LogSpec l;
    faas__function_spec__init(&s);
    faas__log_spec__init(&l);
    faas_spec_log_bound(&s, &max, &keep);
    cr_assert_eq(max, FAAS_SPEC_DEFAULT_LOG_MAX_BYTES);
    s.logs = &l;
    l.keep = 5;
    faas_spec_log_bound(&s, &max, &keep);
    cr_assert_eq(max, FAAS_SPEC_DEFAULT_LOG_MAX_BYTES, "an unset max_bytes keeps its default");
    cr_assert_eq(keep, 5);
    l.max_bytes = 1 << 20;
    faas_spec_log_bound(&s, &max, &keep);
    cr_assert_eq(max, 1 << 20);
}

Test(spec, endpoints_threshold)
{
    cr_assert_eq(FAAS_SPEC_DEFAULT_ENDPOINTS_THRESHOLD_RPS, 500, "docs/endpoints.md");
    cr_assert_str_eq(FAAS_SPEC_STR(FAAS_SPEC_LIMIT_ENDPOINTS_THRESHOLD_RPS), "10000000");
    cr_assert_eq(faas_spec_endpoints_threshold(NULL), FAAS_SPEC_DEFAULT_ENDPOINTS_THRESHOLD_RPS);
    Faas__FunctionSpec s;
    Faas__EndpointsSpec e;
    faas__function_spec__init(&s);
    faas__endpoints_spec__init(&e);
    cr_assert_eq(faas_spec_endpoints_threshold(&s), FAAS_SPEC_DEFAULT_ENDPOINTS_THRESHOLD_RPS);
    s.endpoints = &e;
    cr_assert_eq(faas_spec_endpoints_threshold(&s), FAAS_SPEC_DEFAULT_ENDPOINTS_THRESHOLD_RPS, "0: the default");
    e.threshold_rps = 20;
    cr_assert_eq(faas_spec_endpoints_threshold(&s), 20);
}

static Faas__FunctionSpec py_spec(const char *runtime, char **cmd, size_t n)
{
    Faas__FunctionSpec s = FAAS__FUNCTION_SPEC__INIT;
    s.runtime = (char *)runtime;
    s.command = cmd;
    s.n_command = n;
    return s;
}

Test(spec, runtime_values_and_python3_names)
{
    cr_assert(faas_spec_runtime_valid(NULL));
    cr_assert(faas_spec_runtime_valid(""));
    cr_assert(faas_spec_runtime_valid("python3"));
    cr_assert(faas_spec_runtime_valid("exec"));
    cr_assert_not(faas_spec_runtime_valid("python"));
    cr_assert_not(faas_spec_runtime_valid("Python3"));
    const char *yes[] = {"python3", "/usr/bin/python3", "python3.11", "/opt/py/bin/python3.12"};
    const char *no[] = {"python", "python2", "python3.", "python3.1a", "python3-config", "/usr/bin/", "", "ipython3"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++)
        cr_assert(faas_spec_is_python3(yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(*no); i++)
        cr_assert_not(faas_spec_is_python3(no[i]), "%s", no[i]);
}

Test(spec, zygote_fit_takes_plain_script_invocations_only)
{
    char *plain[] = {"/usr/bin/python3", "server.py", "--port", "1"};
    char *bare[] = {"python3", "app/main.py"};
    char *flag[] = {"python3", "-u", "server.py"};
    char *mod[] = {"python3", "-m", "http.server"};
    char *stdin_[] = {"python3", "-"};
    char *alone[] = {"python3"};
    char *script[] = {"server.py", "x"};
    char *native[] = {"./hello-http"};
    Faas__FunctionSpec s = py_spec("", plain, 4);
    cr_assert(faas_spec_zygote_fit(&s));
    s = py_spec(NULL, bare, 2);
    cr_assert(faas_spec_zygote_fit(&s));
    s = py_spec("exec", plain, 4);
    cr_assert_not(faas_spec_zygote_fit(&s), "runtime: exec opts out");
    s = py_spec("", flag, 3);
    cr_assert_not(faas_spec_zygote_fit(&s), "an interpreter option: plain exec");
    s = py_spec("", mod, 3);
    cr_assert_not(faas_spec_zygote_fit(&s));
    s = py_spec("", stdin_, 2);
    cr_assert_not(faas_spec_zygote_fit(&s));
    s = py_spec("", alone, 1);
    cr_assert_not(faas_spec_zygote_fit(&s));
    s = py_spec("", script, 2);
    cr_assert_not(faas_spec_zygote_fit(&s), "no interpreter and no runtime: a plain exec of the file");
    cr_assert_not(faas_spec_python_implied(&s));
    s = py_spec("python3", script, 2);
    cr_assert(faas_spec_python_implied(&s));
    cr_assert(faas_spec_zygote_fit(&s), "runtime: python3 supplies the interpreter");
    s = py_spec("python3", plain, 4);
    cr_assert_not(faas_spec_python_implied(&s), "the command names it already");
    cr_assert(faas_spec_zygote_fit(&s));
    s = py_spec("", native, 1);
    cr_assert_not(faas_spec_zygote_fit(&s));
    Faas__ImageSpec im = FAAS__IMAGE_SPEC__INIT;
    s = py_spec("", plain, 4);
    s.image = &im;
    cr_assert_not(faas_spec_zygote_fit(&s), "an image brings its own interpreter");
}
