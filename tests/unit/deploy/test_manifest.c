#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/spec.h"
#include "deploy/manifest.h"

static char err[256];

static int parse(const char *y, faas_manifest_t *m)
{
    err[0] = '\0';
    return faas_manifest_parse(y, strlen(y), m, err, sizeof(err));
}

static void expect_error(const char *y, const char *line, const char *needle)
{
    faas_manifest_t m;
    cr_assert_eq(parse(y, &m), -1, "accepted: %s", y);
    cr_assert_null(m.spec);
    cr_assert(strncmp(err, line, strlen(line)) == 0, "error '%s' does not start with '%s'", err, line);
    cr_assert(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
}

Test(manifest, full_example)
{
    const char *y = "name: hello\n"
                    "protocol: http            # http | grpc | thrift\n"
                    "command: [\"./hello\", \"--flag\"]\n"
                    "env: {GREETING: hi, N: 3}\n"
                    "port: 0\n"
                    "port_env: PORT\n"
                    "health: {path: /healthz, interval_ms: 500}\n"
                    "resources: {memory: 128Mi, cpu: 500m, pids: 64}\n"
                    "concurrency: 4\n"
                    "min_instances: 1\n"
                    "max_instances: 10\n"
                    "reserved: 2\n"
                    "timeout: 30s\n"
                    "cold_start_timeout: 1500ms\n"
                    "idle_timeout: 5m\n"
                    "max_body: 8Mi\n"
                    "code: ./\n"
                    "thrift_transport: framed\n"
                    "max_duration: 15m\n";
    faas_manifest_t m;
    cr_assert_eq(parse(y, &m), 0, "%s", err);
    Faas__FunctionSpec *s = m.spec;
    cr_assert_str_eq(s->name, "hello");
    cr_assert_eq(s->protocol, FAAS__PROTOCOL__HTTP);
    cr_assert_eq(s->n_command, 2);
    cr_assert_str_eq(s->command[0], "./hello");
    cr_assert_str_eq(s->command[1], "--flag");
    cr_assert_eq(s->n_env, 2);
    cr_assert_str_eq(s->env[0]->key, "GREETING");
    cr_assert_str_eq(s->env[0]->value, "hi");
    cr_assert_str_eq(s->env[1]->value, "3");
    cr_assert_str_eq(s->port_env, "PORT");
    cr_assert_str_eq(s->health->path, "/healthz");
    cr_assert_eq(s->health->kind, FAAS__HEALTH_CHECK__KIND__HTTP_GET);
    cr_assert_eq(s->health->interval_ms, 500);
    cr_assert_eq(s->resources->memory_bytes, 128u << 20);
    cr_assert_eq(s->resources->cpu_millis, 500);
    cr_assert_eq(s->resources->pids, 64);
    cr_assert_eq(s->concurrency, 4);
    cr_assert_eq(s->min_instances, 1);
    cr_assert_eq(s->max_instances, 10);
    cr_assert_eq(s->reserved, 2);
    cr_assert_eq(s->timeout_ms, 30000);
    cr_assert_eq(s->cold_start_timeout_ms, 1500);
    cr_assert_eq(s->idle_timeout_ms, 300000);
    cr_assert_eq(s->max_body_bytes, 8u << 20);
    cr_assert_str_eq(m.code_dir, "./");
    cr_assert_str_eq(s->thrift_transport, "framed");
    cr_assert_eq(s->max_duration_ms, 900000);
    faas_manifest_free(&m);
}

Test(manifest, block_style_string_command_and_services)
{
    const char *y = "name: rpc-1\n"
                    "protocol: grpc\n"
                    "command: /usr/bin/python3  server.py --x\n"
                    "env:\n  A: b c\n"
                    "health:\n  tcp: true\n"
                    "grpc_services:\n  - pkg.Svc\n  - pkg.Other\n"
                    "timeout: 2500\n";
    faas_manifest_t m;
    cr_assert_eq(parse(y, &m), 0, "%s", err);
    cr_assert_eq(m.spec->n_command, 3);
    cr_assert_str_eq(m.spec->command[1], "server.py");
    cr_assert_str_eq(m.spec->env[0]->value, "b c");
    cr_assert_eq(m.spec->health->kind, FAAS__HEALTH_CHECK__KIND__TCP);
    cr_assert_eq(m.spec->n_grpc_services, 2);
    cr_assert_str_eq(m.spec->grpc_services[1], "pkg.Other");
    cr_assert_eq(m.spec->timeout_ms, 2500);
    cr_assert_null(m.code_dir);
    const char *e = NULL;
    cr_assert_eq(faas_manifest_validate(m.spec, &e), 0, "%s", e);
    faas_manifest_free(&m);
}

Test(manifest, errors_carry_line_numbers)
{
    expect_error("name: a\nprot: http\n", "line 2:", "unknown key \"prot\"");
    expect_error("name: a\ncommand: [x]\ntimeout: 3x\n", "line 3:", "duration");
    expect_error("name: a\nresources: {memory: lots}\n", "line 2:", "size");
    expect_error("name: Hello_World\n", "line 1:", "name");
    expect_error("name: a\nport: 70000\n", "line 2:", "too large");
    expect_error("name: a\nport: -1\n", "line 2:", "port");
    expect_error("name: a\nprotocol: smtp\n", "line 2:", "http, grpc or thrift");
    expect_error("name: a\nenv: [A]\n", "line 2:", "env must not be a list");
    expect_error("name: a\nenv: {1A: x}\n", "line 2:", "env");
    expect_error("name: a\ncommand: {a: b}\n", "line 2:", "command must not be a map");
    expect_error("name: a\ncommand: []\n", "line 2:", "empty");
    expect_error("name: a\ncommand: [[x]]\n", "line 2:", "string");
    expect_error("name: a\nname: b\n", "line 2:", "duplicate");
    expect_error("name: a\nhealth: {path: healthz}\n", "line 2:", "start with /");
    expect_error("name: a\nhealth: {udp: true}\n", "line 2:", "unknown health key");
    expect_error("name: a\nhealth: /x\n", "line 2:", "must be a map");
    expect_error("- a\n- b\n", "line 1:", "map of keys");
    expect_error("", "line 1:", "empty");
    expect_error("name: a\n  bad: [\n", "line ", "YAML syntax error");
    expect_error("name: a\nthrift_transport: http\n", "line 2:", "thrift_transport");
    expect_error("name: a\ntimeout: 100000000000\n", "line 2:", "too long");
}

Test(manifest, cyclic_alias_does_not_loop)
{
    faas_manifest_t m;
    cr_assert_eq(parse("name: a\ncommand: &x [*x]\n", &m), -1);
    cr_assert(strstr(err, "line 2") != NULL, "%s", err);
}

Test(manifest, set_overrides_and_defaults)
{
    faas_manifest_t m;
    const char *e = NULL;
    cr_assert_eq(parse("name: a\ncommand: ./x\nenv: {A: 1}\ntimeout: 1s\n", &m), 0, "%s", err);
    cr_assert_eq(faas_manifest_set(&m, "timeout", "2m", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "env", "A=2", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "env", "B=x=y", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "resources.memory", "64Mi", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "command", "./y  --z", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "bogus", "1", &e), -1);
    cr_assert_eq(faas_manifest_set(&m, "env", "novalue", &e), -1);
    cr_assert_eq(m.spec->timeout_ms, 120000);
    cr_assert_eq(m.spec->n_env, 2);
    cr_assert_str_eq(m.spec->env[0]->value, "2");
    cr_assert_str_eq(m.spec->env[1]->value, "x=y");
    cr_assert_eq(m.spec->resources->memory_bytes, 64u << 20);
    cr_assert_eq(m.spec->n_command, 2);
    cr_assert_str_eq(m.spec->command[0], "./y");
    faas_manifest_defaults(m.spec);
    cr_assert_str_eq(m.spec->port_env, "PORT");
    cr_assert_eq(m.spec->cold_start_timeout_ms, 10000);
    cr_assert_eq(m.spec->idle_timeout_ms, 300000);
    cr_assert_eq(m.spec->max_body_bytes, 8u << 20);
    cr_assert_eq(m.spec->timeout_ms, 120000);
    faas_manifest_free(&m);
}

Test(manifest, validate)
{
    faas_manifest_t m;
    const char *e = NULL;
    cr_assert_eq(faas_manifest_init(&m), 0);
    cr_assert_eq(faas_manifest_validate(m.spec, &e), -1);
    cr_assert(strstr(e, "name") != NULL);
    cr_assert_eq(faas_manifest_set(&m, "name", "ok", &e), 0);
    cr_assert_eq(faas_manifest_validate(m.spec, &e), -1);
    cr_assert(strstr(e, "command") != NULL);
    faas_manifest_free(&m);
}

Test(manifest, reserved_bounds)
{
    faas_manifest_t m;
    const char *e = NULL;
    cr_assert_eq(faas_manifest_init(&m), 0);
    cr_assert_eq(faas_manifest_set(&m, "reserved", "1001", &e), -1);
    cr_assert_eq(faas_manifest_set(&m, "reserved", "-1", &e), -1);
    cr_assert_eq(faas_manifest_set(&m, "name", "ok", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "command", "./s", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "max_instances", "2", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "reserved", "3", &e), 0);
    cr_assert_eq(faas_manifest_validate(m.spec, &e), -1);
    cr_assert(strstr(e, "reserved") != NULL, "%s", e);
    cr_assert_eq(faas_manifest_set(&m, "reserved", "2", &e), 0);
    cr_assert_eq(faas_manifest_validate(m.spec, &e), 0, "%s", e);
    faas_manifest_free(&m);
}

Test(manifest, print_round_trips)
{
    const char *y = "name: rt\nprotocol: thrift\ncommand: [\"./s\", \"a \\\"b\\\"\"]\nenv: {K: \"v:1\"}\n"
                    "health: {tcp: true}\nresources: {memory: 1Gi, cpu: 1.5, pids: 10}\n"
                    "thrift_services: [A, B]\nthrift_transport: ttheader\ntimeout: 1500ms\nreserved: 3\n";
    faas_manifest_t m, m2;
    cr_assert_eq(parse(y, &m), 0, "%s", err);
    m.spec->version = 7;
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    faas_manifest_print(f, m.spec);
    fclose(f);
    cr_assert_eq(faas_manifest_parse(out, outlen, &m2, err, sizeof(err)), 0, "%s\n%s", err, out);
    size_t l1 = faas__function_spec__get_packed_size(m.spec);
    m2.spec->version = 7;
    size_t l2 = faas__function_spec__get_packed_size(m2.spec);
    uint8_t b1[1024], b2[1024];
    cr_assert_lt(l1, sizeof(b1));
    cr_assert_eq(l1, l2, "%s", out);
    faas__function_spec__pack(m.spec, b1);
    faas__function_spec__pack(m2.spec, b2);
    cr_assert_eq(memcmp(b1, b2, l1), 0, "%s", out);
    free(out);
    faas_manifest_free(&m);
    faas_manifest_free(&m2);
}

Test(manifest, log_keys_bounds_and_round_trip)
{
    faas_manifest_t m, m2;
    cr_assert_eq(parse("name: l\ncommand: [./s]\nlogs: {max_bytes: 1Mi}\n", &m), 0, "%s", err);
    cr_assert_not_null(m.spec->logs);
    cr_assert_eq(m.spec->logs->max_bytes, 1u << 20);
    cr_assert_eq(m.spec->logs->keep, 0, "unset: the platform default");
    const char *e = NULL;
    cr_assert_eq(faas_manifest_set(&m, "logs.keep", "3", &e), 0, "%s", e);
    cr_assert_eq(m.spec->logs->keep, 3);
    cr_assert_neq(faas_manifest_set(&m, "logs.keep", "0", &e), 0);
    cr_assert_neq(faas_manifest_set(&m, "logs.keep", "11", &e), 0);
    cr_assert_neq(faas_manifest_set(&m, "logs.max_bytes", "63Ki", &e), 0);
    cr_assert_str_eq(e, "must be 64Ki to 1024Mi");
    cr_assert_neq(faas_manifest_set(&m, "logs.max_bytes", "1025Mi", &e), 0);
    cr_assert_neq(faas_manifest_set(&m, "logs.size", "1Mi", &e), 0);
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    faas_manifest_print(f, m.spec);
    fclose(f);
    cr_assert_eq(faas_manifest_parse(out, outlen, &m2, err, sizeof(err)), 0, "%s\n%s", err, out);
    cr_assert_eq(m2.spec->logs->max_bytes, 1u << 20, "%s", out);
    cr_assert_eq(m2.spec->logs->keep, 3, "%s", out);
    free(out);
    faas_manifest_free(&m);
    faas_manifest_free(&m2);
    expect_error("name: l\ncommand: [./s]\nlogs: {max_bytes: 10}\n",
                 "line 3:", "logs.max_bytes: must be 64Ki to 1024Mi");
}

Test(manifest, endpoints_threshold_bounds_and_round_trip)
{
    faas_manifest_t m, m2;
    cr_assert_eq(parse("name: p\ncommand: [./s]\n", &m), 0, "%s", err);
    cr_assert_null(m.spec->endpoints, "unset: no EndpointsSpec at all");
    cr_assert_eq(faas_spec_endpoints_threshold(m.spec), FAAS_SPEC_DEFAULT_ENDPOINTS_THRESHOLD_RPS);
    faas_manifest_free(&m);
    cr_assert_eq(parse("name: p\ncommand: [./s]\nendpoints: {threshold_rps: 20}\n", &m), 0, "%s", err);
    cr_assert_not_null(m.spec->endpoints);
    cr_assert_eq(m.spec->endpoints->threshold_rps, 20);
    cr_assert_eq(faas_spec_endpoints_threshold(m.spec), 20);
    const char *e = NULL;
    cr_assert_neq(faas_manifest_set(&m, "endpoints.threshold_rps", "0", &e), 0, "0 would mean the default");
    cr_assert_neq(faas_manifest_set(&m, "endpoints.threshold_rps", "10000001", &e), 0);
    cr_assert_str_eq(e, "must be 1-10000000 (calls per second)");
    cr_assert_neq(faas_manifest_set(&m, "endpoints.rps", "5", &e), 0);
    cr_assert_eq(faas_manifest_set(&m, "endpoints.threshold_rps", "10000000", &e), 0, "%s", e);
    cr_assert_eq(faas_manifest_set(&m, "endpoints.threshold_rps", "25", &e), 0, "%s", e);
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    faas_manifest_print(f, m.spec);
    fclose(f);
    cr_assert(strstr(out, "endpoints:\n  threshold_rps: 25\n") != NULL, "%s", out);
    cr_assert_eq(faas_manifest_parse(out, outlen, &m2, err, sizeof(err)), 0, "%s\n%s", err, out);
    cr_assert_eq(m2.spec->endpoints->threshold_rps, 25, "%s", out);
    free(out);
    faas_manifest_free(&m);
    faas_manifest_free(&m2);
    expect_error("name: p\ncommand: [./s]\nendpoints: 20\n", "line 3:", "endpoints must be a map (e.g. {threshold_rps: 500})");
    expect_error("name: p\ncommand: [./s]\nendpoints: {threshold_rps: -1}\n", "line 3:", "endpoints.threshold_rps");
}

Test(manifest, async_keys)
{
    const char *y = "name: a\ncommand: ./x\n"
                    "async:\n"
                    "  concurrency: 4\n"
                    "  timeout: 2h\n"
                    "  retention: 30d\n"
                    "  max_attempts: 5\n"
                    "  max_result: 1Mi\n"
                    "  retry_on: [5xx]\n";
    faas_manifest_t m;
    cr_assert_eq(parse(y, &m), 0, "%s", err);
    const Faas__AsyncSpec *a = m.spec->async;
    cr_assert_not_null(a);
    cr_assert_eq(a->concurrency, 4);
    cr_assert_eq(a->timeout_ms, 2 * 3600 * 1000);
    cr_assert_eq(a->retention_ms, 30ull * 86400 * 1000);
    cr_assert_eq(a->max_attempts, 5);
    cr_assert_eq(a->max_result_bytes, 1u << 20);
    cr_assert(a->retry_5xx);
    faas_manifest_free(&m);

    /* the limits themselves, flow style, retry_on as a scalar */
    cr_assert_eq(parse("name: a\ncommand: ./x\nasync: {concurrency: 10000, timeout: 24h, retention: 90d, "
                       "max_attempts: 10, max_result: 8Mi, retry_on: 5xx}\n",
                       &m),
                 0, "%s", err);
    cr_assert_eq(m.spec->async->concurrency, FAAS_SPEC_LIMIT_ASYNC_CONCURRENCY);
    cr_assert_eq(m.spec->async->timeout_ms, FAAS_SPEC_LIMIT_ASYNC_TIMEOUT_MS);
    cr_assert_eq(m.spec->async->retention_ms, FAAS_SPEC_LIMIT_ASYNC_RETENTION_MS);
    cr_assert_eq(m.spec->async->max_attempts, FAAS_SPEC_LIMIT_ASYNC_MAX_ATTEMPTS);
    cr_assert_eq(m.spec->async->max_result_bytes, FAAS_SPEC_LIMIT_ASYNC_MAX_RESULT_BYTES);
    cr_assert(m.spec->async->retry_5xx);
    faas_manifest_free(&m);

    /* an empty list clears retry_on; no async: at all leaves the spec's async unset */
    cr_assert_eq(parse("name: a\ncommand: ./x\nasync: {retry_on: []}\n", &m), 0, "%s", err);
    cr_assert_not(m.spec->async->retry_5xx);
    faas_manifest_free(&m);
    cr_assert_eq(parse("name: a\ncommand: ./x\n", &m), 0, "%s", err);
    cr_assert_null(m.spec->async, "no async: means every bound at the platform default");
    faas_manifest_defaults(m.spec);
    cr_assert_null(m.spec->async, "0 stays \"the default\" so discovery's --task-retention-ms still applies");
    faas_manifest_free(&m);
}

Test(manifest, async_bad_values_name_key_and_limit)
{
    static const struct {
        const char *yaml, *needle;
    } bad[] = {
        {"async: {concurrency: 0}", "async.concurrency: must be 1-10000"},
        {"async: {concurrency: 10001}", "async.concurrency: must be 1-10000"},
        {"async: {concurrency: -1}", "async.concurrency: expected a non-negative integer"},
        {"async: {concurrency: 99999999999999999999999}", "async.concurrency: number too large"},
        {"async: {timeout: 0s}", "async.timeout: must be more than 0 and at most 24h"},
        {"async: {timeout: 25h}", "async.timeout: must be more than 0 and at most 24h"},
        {"async: {timeout: soon}", "async.timeout: bad duration"},
        {"async: {retention: 91d}", "async.retention: must be more than 0 and at most 90d"},
        {"async: {retention: 0}", "async.retention: must be more than 0"},
        {"async: {max_attempts: 11}", "async.max_attempts: must be 1-10"},
        {"async: {max_attempts: 0}", "async.max_attempts: must be 1-10"},
        {"async: {max_result: 9Mi}", "async.max_result: must be more than 0 and at most 8Mi"},
        {"async: {max_result: lots}", "async.max_result: bad size"},
        {"async: {retry_on: [4xx]}", "async.retry_on: unknown item \"4xx\" (known: 5xx)"},
        {"async: {retry_on: [5xx, timeout]}", "unknown item \"timeout\""},
        {"async: {retry_on: [[5xx]]}", "async.retry_on: every item must be a string"},
        {"async: {retry_on: 5xx 4xx}", "async.retry_on: unknown retry_on item (known: 5xx)"},
        {"async: {colour: red}", "async.colour: unknown async key (known: concurrency, timeout, retention, "
                                 "max_attempts, max_result, retry_on)"},
        {"async: {timeout: {h: 1}}", "async.timeout: value must be a string or number"},
        {"async: 4", "async must be a map (e.g. {concurrency: 4, timeout: 2h})"},
        {"async: [1]", "async must not be a list"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char y[256];
        snprintf(y, sizeof(y), "name: a\ncommand: ./x\n%s\n", bad[i].yaml);
        expect_error(y, "line 3", bad[i].needle);
    }
}

Test(manifest, async_set_and_print_round_trip)
{
    faas_manifest_t m, m2;
    const char *e = NULL;
    cr_assert_eq(parse("name: a\ncommand: ./x\n", &m), 0, "%s", err);
    cr_assert_eq(faas_manifest_set(&m, "async.concurrency", "2", &e), 0, "%s", e);
    cr_assert_eq(faas_manifest_set(&m, "async.retention", "36h", &e), 0, "%s", e);
    cr_assert_eq(faas_manifest_set(&m, "async.retry_on", "5xx", &e), 0, "%s", e);
    cr_assert_eq(faas_manifest_set(&m, "async.retry_on", "", &e), 0, "%s", e);
    cr_assert_not(m.spec->async->retry_5xx, "a later value replaces the list");
    cr_assert_eq(faas_manifest_set(&m, "async.max_attempts", "x", &e), -1);
    cr_assert_eq(faas_manifest_set(&m, "async.bogus", "1", &e), -1);
    cr_assert(strstr(e, "unknown async key") != NULL, "%s", e);
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    faas_manifest_print(f, m.spec);
    fclose(f);
    /* set bounds as keys, the rest as comments with the defaults */
    cr_assert(strstr(out, "async:") != NULL, "%s", out);
    cr_assert(strstr(out, "\n  concurrency: 2\n") != NULL, "%s", out);
    cr_assert(strstr(out, "\n  retention: 36h\n") != NULL, "%s", out);
    cr_assert(strstr(out, "\n  # timeout: 1h\n") != NULL, "%s", out);
    cr_assert(strstr(out, "\n  # max_attempts: 3\n") != NULL, "%s", out);
    cr_assert(strstr(out, "\n  # max_result: 8Mi\n") != NULL, "%s", out);
    cr_assert(strstr(out, "\n  # retry_on: []\n") != NULL, "%s", out);
    cr_assert_eq(faas_manifest_parse(out, outlen, &m2, err, sizeof(err)), 0, "%s\n%s", err, out);
    cr_assert_eq(m2.spec->async->concurrency, 2);
    cr_assert_eq(m2.spec->async->retention_ms, 36ull * 3600 * 1000);
    cr_assert_eq(m2.spec->async->timeout_ms, 0, "a commented default is not set");
    free(out);
    faas_manifest_free(&m2);

    /* an async with nothing set prints as an empty map and parses back */
    m.spec->async->concurrency = 0;
    m.spec->async->retention_ms = 0;
    out = NULL;
    f = open_memstream(&out, &outlen);
    faas_manifest_print(f, m.spec);
    fclose(f);
    cr_assert(strstr(out, "async: {}") != NULL, "%s", out);
    cr_assert_eq(faas_manifest_parse(out, outlen, &m2, err, sizeof(err)), 0, "%s\n%s", err, out);
    free(out);
    faas_manifest_free(&m2);
    faas_manifest_free(&m);
}

Test(values, durations)
{
    uint64_t v;
    const char *e;
    cr_assert_eq(faas_parse_duration_ms("1500ms", &v, &e), 0);
    cr_assert_eq(v, 1500);
    cr_assert_eq(faas_parse_duration_ms("30s", &v, &e), 0);
    cr_assert_eq(v, 30000);
    cr_assert_eq(faas_parse_duration_ms("2m", &v, &e), 0);
    cr_assert_eq(v, 120000);
    cr_assert_eq(faas_parse_duration_ms("1h", &v, &e), 0);
    cr_assert_eq(v, 3600000);
    cr_assert_eq(faas_parse_duration_ms("1m30s", &v, &e), 0);
    cr_assert_eq(v, 90000);
    cr_assert_eq(faas_parse_duration_ms("250", &v, &e), 0);
    cr_assert_eq(v, 250);
    cr_assert_eq(faas_parse_duration_ms("0", &v, &e), 0);
    cr_assert_eq(v, 0);
    const char *bad[] = {"", "s", "10x", "-1s", "1.5s", "10 s", "1m30", "99999999999999999999", "18446744073709551615h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(faas_parse_duration_ms(bad[i], &v, &e), -1, "accepted %s", bad[i]);
}

Test(values, sizes)
{
    uint64_t v;
    const char *e;
    cr_assert_eq(faas_parse_size("128Mi", &v, &e), 0);
    cr_assert_eq(v, 128ull << 20);
    cr_assert_eq(faas_parse_size("1Gi", &v, &e), 0);
    cr_assert_eq(v, 1ull << 30);
    cr_assert_eq(faas_parse_size("512Ki", &v, &e), 0);
    cr_assert_eq(v, 512ull << 10);
    cr_assert_eq(faas_parse_size("8M", &v, &e), 0);
    cr_assert_eq(v, 8000000);
    cr_assert_eq(faas_parse_size("4096", &v, &e), 0);
    cr_assert_eq(v, 4096);
    cr_assert_eq(faas_parse_size("2MiB", &v, &e), 0);
    cr_assert_eq(v, 2ull << 20);
    const char *bad[] = {"", "Mi", "12Q", "1.5Gi", "-1", "99999999999Ti"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(faas_parse_size(bad[i], &v, &e), -1, "accepted %s", bad[i]);
}

Test(values, cpu_and_uint)
{
    uint64_t v;
    const char *e;
    cr_assert_eq(faas_parse_cpu_millis("500m", &v, &e), 0);
    cr_assert_eq(v, 500);
    cr_assert_eq(faas_parse_cpu_millis("2", &v, &e), 0);
    cr_assert_eq(v, 2000);
    cr_assert_eq(faas_parse_cpu_millis("1.5", &v, &e), 0);
    cr_assert_eq(v, 1500);
    cr_assert_eq(faas_parse_cpu_millis("0.25", &v, &e), 0);
    cr_assert_eq(v, 250);
    cr_assert_eq(faas_parse_cpu_millis("0.0005", &v, &e), -1);
    cr_assert_eq(faas_parse_cpu_millis("1.", &v, &e), -1);
    cr_assert_eq(faas_parse_cpu_millis("x", &v, &e), -1);
    cr_assert_eq(faas_parse_uint("42", 100, &v, &e), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(faas_parse_uint("101", 100, &v, &e), -1);
    cr_assert_eq(faas_parse_uint("4x", 100, &v, &e), -1);
    int p;
    cr_assert_eq(faas_protocol_parse("grpc", &p, &e), 0);
    cr_assert_eq(p, FAAS__PROTOCOL__GRPC);
    cr_assert_str_eq(faas_protocol_name(FAAS__PROTOCOL__THRIFT), "thrift");
}

Test(manifest, runtime_key_and_round_trip)
{
    faas_manifest_t m, m2;
    cr_assert_eq(parse("name: p\ncommand: [server.py]\nruntime: python3\n", &m), 0, "%s", err);
    cr_assert_str_eq(m.spec->runtime, "python3");
    cr_assert(faas_spec_zygote_fit(m.spec));
    const char *e = NULL;
    cr_assert_eq(faas_manifest_set(&m, "runtime", "exec", &e), 0, "%s", e);
    cr_assert_not(faas_spec_zygote_fit(m.spec));
    cr_assert_neq(faas_manifest_set(&m, "runtime", "node", &e), 0);
    cr_assert_str_eq(e, "runtime must be python3 or exec");
    char *out = NULL;
    size_t outlen = 0;
    FILE *f = open_memstream(&out, &outlen);
    faas_manifest_print(f, m.spec);
    fclose(f);
    cr_assert(strstr(out, "runtime: exec\n") != NULL, "%s", out);
    cr_assert_eq(faas_manifest_parse(out, outlen, &m2, err, sizeof(err)), 0, "%s\n%s", err, out);
    cr_assert_str_eq(m2.spec->runtime, "exec");
    free(out);
    faas_manifest_free(&m);
    faas_manifest_free(&m2);
    expect_error("name: p\ncommand: [./s]\nruntime: python2\n", "line 3:", "runtime must be python3 or exec");
}
