/* tests/unit/dispatcher/test_route.c - the routing index (table.c) and disp_route /
 * disp_lookup over disp_g.table: which function a routing key names, per protocol. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dispatcher/internal.h"

#define T (&disp_g.table) /* thread-local: the test thread's own */

static void setup(void)
{
    disp_table_init(T, 16);
}
static void teardown(void)
{
    disp_table_clear(T);
}

TestSuite(route, .init = setup, .fini = teardown);

static disp_fn_t *mkfn(const char *name)
{
    disp_fn_t *fn = disp_fn_get(T, name, strlen(name));
    cr_assert_not_null(fn);
    disp_fn_params_t p = {.version = 1, .timeout_ms = 1000};
    disp_fn_set_spec(T, fn, &p, NULL, 0);
    return fn;
}

static void services(disp_fn_t *fn, disp_proto_t proto, size_t n, ...)
{
    char *names[16];
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        names[i] = va_arg(ap, char *);
    va_end(ap);
    cr_assert_eq(disp_fn_set_services(T, fn, proto, names, n), 0);
}

static disp_fn_t *find(disp_proto_t proto, const char *key)
{
    return disp_route_find(T, proto, key, strlen(key));
}

/* disp_route's answer as a string ("" for none). */
static const char *route(disp_proto_t proto, const char *key)
{
    static char out[80];
    size_t len = 12345;
    const char *fn = disp_route(proto, key, strlen(key), &len);
    if (fn == NULL) {
        cr_assert_eq(len, 12345, "fnlen untouched when nothing routes");
        return "";
    }
    snprintf(out, sizeof(out), "%.*s", (int)len, fn);
    return out;
}

Test(route, http_by_function_name)
{
    disp_fn_t *fn = mkfn("hello");
    services(fn, DISP_PROTO_GRPC, 1, "pkg.Hello");
    services(fn, DISP_PROTO_THRIFT, 1, "HelloSvc");
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "hello"), "hello");
    cr_assert_eq(find(DISP_PROTO_HTTP, "hello"), fn);
    /* services are not HTTP routing keys */
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "pkg.Hello"), "");
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "HelloSvc"), "");
    /* prefixes and extensions of a name are other names */
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "hell"), "");
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "hello2"), "");
    cr_assert_str_eq(route(DISP_PROTO_HTTP, ""), "");
    /* the key is a slice: bytes past len do not count */
    size_t len = 0;
    const char *r = disp_route(DISP_PROTO_HTTP, "hello/extra", 5, &len);
    cr_assert_not_null(r);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(r, "hello", 5), 0);
}

Test(route, grpc_by_declared_service_only)
{
    disp_fn_t *fn = mkfn("greeter");
    services(fn, DISP_PROTO_GRPC, 2, "helloworld.Greeter", "helloworld.Other");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "helloworld.Greeter"), "greeter");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "helloworld.Other"), "greeter");
    /* a function name is not a gRPC service */
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "greeter"), "");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "helloworld.Greete"), "");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "helloworld.Greeter2"), "");
    /* a Thrift service of the same spelling is another protocol's key */
    disp_fn_t *t = mkfn("thr");
    services(t, DISP_PROTO_THRIFT, 1, "Shared");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "Shared"), "");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "helloworld.Greeter"), "");
}

Test(route, thrift_by_service_else_function_name)
{
    disp_fn_t *calc = mkfn("calc");
    services(calc, DISP_PROTO_THRIFT, 2, "Calculator", "CalcV2");
    mkfn("plain"); /* declares nothing: reachable by its name */
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "Calculator"), "calc");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "CalcV2"), "calc");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "calc"), "calc");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "plain"), "plain");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "Calc"), "");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "nosuch"), "");
}

Test(route, thrift_service_wins_over_a_function_of_that_name)
{
    mkfn("Calculator");
    disp_fn_t *calc = mkfn("calc");
    services(calc, DISP_PROTO_THRIFT, 1, "Calculator");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "Calculator"), "calc");
    /* HTTP knows names only */
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "Calculator"), "Calculator");
}

Test(route, unknown_table_and_keys)
{
    /* an empty table: nothing routes, nothing crashes */
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "x"), "");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "x"), "");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "x"), "");
    disp_fn_info_t info;
    cr_assert_eq(disp_lookup("x", 1, &info), -1);
}

Test(route, function_without_spec_does_not_route)
{
    /* instances can arrive before their function: the entry exists but is unknown */
    disp_fn_t *fn = disp_fn_get(T, "early", 5);
    services(fn, DISP_PROTO_GRPC, 1, "early.Svc");
    services(fn, DISP_PROTO_THRIFT, 1, "EarlySvc");
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "early"), "");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "early.Svc"), "");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "EarlySvc"), "");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "early"), "");
    disp_fn_params_t p = {.version = 1};
    disp_fn_set_spec(T, fn, &p, NULL, 0);
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "early"), "early");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "early.Svc"), "early");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "EarlySvc"), "early");
}

Test(route, forgotten_function_stops_routing_and_comes_back)
{
    disp_fn_t *fn = mkfn("f");
    services(fn, DISP_PROTO_GRPC, 1, "f.Svc");
    services(fn, DISP_PROTO_THRIFT, 1, "FSvc");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "f.Svc"), "f"); /* index built */
    disp_fn_forget(T, fn);
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "f"), "");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "f.Svc"), "");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "FSvc"), "");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "f"), "");
    disp_fn_info_t info;
    cr_assert_eq(disp_lookup("f", 1, &info), -1);
    /* deployed again */
    disp_fn_params_t p = {.version = 2};
    disp_fn_set_spec(T, fn, &p, NULL, 0);
    cr_assert_str_eq(route(DISP_PROTO_HTTP, "f"), "f");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "f.Svc"), "f");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "FSvc"), "f");
}

Test(route, service_declared_twice_routes_to_the_first)
{
    disp_fn_t *a = mkfn("a");
    disp_fn_t *b = mkfn("b");
    /* b declares it first in time, but a came first into the table */
    services(b, DISP_PROTO_GRPC, 1, "dup.Svc");
    services(a, DISP_PROTO_GRPC, 1, "dup.Svc");
    services(b, DISP_PROTO_THRIFT, 1, "Dup");
    services(a, DISP_PROTO_THRIFT, 1, "Dup");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "dup.Svc"), "a");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "Dup"), "a");
    /* stable across rebuilds */
    services(b, DISP_PROTO_GRPC, 2, "dup.Svc", "b.Only");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "dup.Svc"), "a");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "b.Only"), "b");
    /* the first one gone: the other declarer takes the key */
    disp_fn_forget(T, a);
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "dup.Svc"), "b");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "Dup"), "b");
}

Test(route, replacing_services_drops_the_old_ones)
{
    disp_fn_t *fn = mkfn("r");
    services(fn, DISP_PROTO_GRPC, 2, "r.One", "r.Two");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "r.One"), "r");
    services(fn, DISP_PROTO_GRPC, 1, "r.Three");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "r.One"), "");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "r.Two"), "");
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "r.Three"), "r");
    cr_assert_eq(fn->nservices[DISP_PROTO_GRPC], 1);
    /* replacing one protocol's keys leaves the other's alone */
    services(fn, DISP_PROTO_THRIFT, 1, "RThrift");
    services(fn, DISP_PROTO_GRPC, 0);
    cr_assert_str_eq(route(DISP_PROTO_GRPC, "r.Three"), "");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "RThrift"), "r");
    /* the names were copied: the caller's buffer may change afterwards */
    char buf[16];
    strcpy(buf, "Mutable");
    char *names[] = {buf};
    cr_assert_eq(disp_fn_set_services(T, fn, DISP_PROTO_THRIFT, names, 1), 0);
    strcpy(buf, "Changed");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "Mutable"), "r");
    cr_assert_str_eq(route(DISP_PROTO_THRIFT, "Changed"), "");
}

Test(route, many_functions_and_services)
{
    enum { NF = 500 };
    char name[64], s1[64], s2[64], t1[64];
    for (int i = 0; i < NF; i++) {
        snprintf(name, sizeof(name), "fn-%d", i);
        disp_fn_t *fn = mkfn(name);
        snprintf(s1, sizeof(s1), "pkg%d.Svc", i);
        snprintf(s2, sizeof(s2), "pkg%d.Alt", i);
        snprintf(t1, sizeof(t1), "Thrift%d", i);
        services(fn, DISP_PROTO_GRPC, 2, s1, s2);
        services(fn, DISP_PROTO_THRIFT, 1, t1);
        /* interleave lookups with deploys: the index rebuilds many times */
        if (i % 50 == 0)
            cr_assert_str_eq(route(DISP_PROTO_GRPC, s1), name);
    }
    for (int i = 0; i < NF; i++) {
        snprintf(name, sizeof(name), "fn-%d", i);
        snprintf(s1, sizeof(s1), "pkg%d.Svc", i);
        snprintf(s2, sizeof(s2), "pkg%d.Alt", i);
        snprintf(t1, sizeof(t1), "Thrift%d", i);
        cr_assert_str_eq(route(DISP_PROTO_HTTP, name), name);
        cr_assert_str_eq(route(DISP_PROTO_GRPC, s1), name);
        cr_assert_str_eq(route(DISP_PROTO_GRPC, s2), name);
        cr_assert_str_eq(route(DISP_PROTO_THRIFT, t1), name);
        cr_assert_str_eq(route(DISP_PROTO_THRIFT, name), name);
        cr_assert_str_eq(route(DISP_PROTO_GRPC, name), "");
        cr_assert_str_eq(route(DISP_PROTO_GRPC, t1), "");
        cr_assert_str_eq(route(DISP_PROTO_THRIFT, s1), "");
        snprintf(s1, sizeof(s1), "pkg%d.Svcx", i);
        cr_assert_str_eq(route(DISP_PROTO_GRPC, s1), "");
    }
    /* forgetting every other one drops exactly those */
    for (int i = 0; i < NF; i += 2) {
        snprintf(name, sizeof(name), "fn-%d", i);
        disp_fn_forget(T, disp_fn_find(T, name, strlen(name)));
    }
    for (int i = 0; i < NF; i++) {
        snprintf(name, sizeof(name), "fn-%d", i);
        snprintf(s1, sizeof(s1), "pkg%d.Svc", i);
        snprintf(t1, sizeof(t1), "Thrift%d", i);
        const char *want = i % 2 ? name : "";
        cr_assert_str_eq(route(DISP_PROTO_GRPC, s1), want);
        cr_assert_str_eq(route(DISP_PROTO_THRIFT, t1), want);
        cr_assert_str_eq(route(DISP_PROTO_HTTP, name), want);
    }
}

Test(route, lookup_fills_defaults)
{
    disp_fn_t *fn = disp_fn_get(T, "l", 1);
    disp_fn_params_t p = {.version = 1, .max_body_bytes = 1234};
    disp_fn_set_spec(T, fn, &p, NULL, 0);
    disp_fn_info_t info;
    cr_assert_eq(disp_lookup("l", 1, &info), 0);
    cr_assert_eq(info.max_body_bytes, 1234);
    cr_assert_eq(info.timeout_ms, 30000, "the default request timeout");
    cr_assert_eq(info.max_duration_ms, 900000, "the default stream duration");
    p.timeout_ms = 250;
    p.max_duration_ms = 5000;
    disp_fn_set_spec(T, fn, &p, NULL, 0);
    cr_assert_eq(disp_lookup("l", 1, &info), 0);
    cr_assert_eq(info.timeout_ms, 250);
    cr_assert_eq(info.max_duration_ms, 5000);
    cr_assert_eq(disp_lookup("lx", 2, &info), -1);
}
