/* gateway/endpoints.c - the endpoints API for meshes (docs/endpoints.md): where a
 * service mesh should send a function's calls. GET /endpoints/<function> on the HTTP
 * port answers JSON; grpc.c answers the same as faas.EndpointsApi on the gRPC port.
 * The dispatcher (dispatcher/endpoints.c) measures the rate and keeps the mode; this
 * file adds the gateway's own addresses and says the answer in either form. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <h2o.h>

#include "common/errors.h"
#include "common/log.h"
#include "dispatcher/dispatcher.h"
#include "gateway/internal.h"

/* What each port is bound to (GW_PORT_*), set once at start: with several loop threads
 * every thread binds the same port (SO_REUSEPORT), the first one records it. */
static struct sockaddr_storage g_bound[GW_NPORTS];
static _Atomic int g_bound_set[GW_NPORTS];
static const char *g_advertise; /* --advertise-host, NULL = the address the client reached */

/* One answer, before it is said as JSON or protobuf. */
typedef struct {
    char function[64];
    disp_endpoints_t d;
    char gateway[96]; /* mode gateway: the port speaking the function's protocol ("" = none open) */
} gw_ep_answer_t;

void gw_endpoints_config(const char *advertise_host)
{
    g_advertise = advertise_host != NULL && advertise_host[0] != '\0' ? advertise_host : NULL;
}

void gw_endpoints_listener(int port, int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (port < 0 || port >= GW_NPORTS || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    int expect = 0;
    if (!atomic_compare_exchange_strong(&g_bound_set[port], &expect, 1))
        return;
    g_bound[port] = ss;
    atomic_store(&g_bound_set[port], 2); /* readers take it only once written */
}

static int is_wildcard(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
}

static uint16_t port_of(const struct sockaddr *sa)
{
    return ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                           : ((const struct sockaddr_in *)sa)->sin_port);
}

/* host:port, an IPv6 host in brackets; 0 or -1. */
static int format_host(char *out, size_t cap, const char *host, uint16_t port)
{
    int v6 = strchr(host, ':') != NULL && host[0] != '[';
    int n = snprintf(out, cap, v6 ? "[%s]:%u" : "%s:%u", host, port);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int format_addr(char *out, size_t cap, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN];
    const void *a = sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                                              : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if (inet_ntop(sa->sa_family, a, ip, sizeof(ip)) == NULL)
        return -1;
    return format_host(out, cap, ip, port_of(sa));
}

/* The address a client reaches port at: --advertise-host if given, else the bound host,
 * else (a wildcard bind) the local address of the client's own connection (local),
 * else local_host (gRPC: the host in :authority). 0, or -1 if the port is not open. */
static int gateway_addr(int port, const struct sockaddr *local, const char *local_host, char *out, size_t cap)
{
    if (atomic_load(&g_bound_set[port]) != 2)
        return -1;
    const struct sockaddr *b = (const struct sockaddr *)&g_bound[port];
    if (g_advertise != NULL)
        return format_host(out, cap, g_advertise, port_of(b));
    if (!is_wildcard(b))
        return format_addr(out, cap, b);
    if (local != NULL && (local->sa_family == AF_INET || local->sa_family == AF_INET6)) {
        char tmp[80];
        if (format_addr(tmp, sizeof(tmp), local) != 0)
            return -1;
        char *colon = strrchr(tmp, ':'); /* keep the host, put the port's own port */
        *colon = '\0';
        return snprintf(out, cap, "%s:%u", tmp, port_of(b)) < (int)cap ? 0 : -1;
    }
    if (local_host != NULL && local_host[0] != '\0')
        return format_host(out, cap, local_host, port_of(b));
    return -1;
}

static const char *const proto_names[DISP_NPROTO] = {"http", "grpc", "thrift"};
static const int proto_port[DISP_NPROTO] = {GW_PORT_HTTP, GW_PORT_GRPC, GW_PORT_THRIFT};

static int endpoints_answer(const char *fn, size_t len, const struct sockaddr *local, const char *local_host,
                            gw_ep_answer_t *a)
{
    memset(a, 0, sizeof(*a));
    if (len >= sizeof(a->function) || disp_endpoints(fn, len, &a->d) != 0)
        return -1;
    memcpy(a->function, fn, len);
    /* A mesh's endpoint set is per protocol: the gateway port that speaks the
     * function's own, like its pods' direct ports (docs/endpoints.md). */
    if (!a->d.pods && gateway_addr(proto_port[a->d.proto], local, local_host, a->gateway, sizeof(a->gateway)) != 0)
        a->gateway[0] = '\0';
    return 0;
}

static const char *proto_name(const gw_ep_answer_t *a)
{
    return proto_names[a->d.proto];
}

static size_t to_json(const gw_ep_answer_t *a, char *out, size_t cap)
{
    /* names, addresses and protocols are [a-z0-9.:\[\]-] only: nothing to escape */
    const char *proto = proto_name(a);
    size_t n = (size_t)snprintf(out, cap, "{\"function\":\"%s\",\"mode\":\"%s\",\"endpoints\":[", a->function,
                                a->d.pods ? "pods" : "gateway");
    size_t count = a->d.pods ? a->d.npods : a->gateway[0] != '\0';
    for (size_t i = 0; i < count; i++)
        n += (size_t)snprintf(out + (n < cap ? n : cap), n < cap ? cap - n : 0,
                              "%s{\"address\":\"%s\",\"kind\":\"%s\",\"protocol\":\"%s\"}", i ? "," : "",
                              a->d.pods ? a->d.pod[i] : a->gateway, a->d.pods ? "pod" : "gateway", proto);
    n += (size_t)snprintf(out + (n < cap ? n : cap), n < cap ? cap - n : 0, "],\"rps\":%.2f,\"threshold_rps\":%u}\n",
                          a->d.rps, a->d.threshold_rps);
    return n;
}

static uint8_t *to_pb(const gw_ep_answer_t *a, size_t *len)
{
    Faas__Endpoints m = FAAS__ENDPOINTS__INIT;
    Faas__Endpoint eps[DISP_ENDPOINTS_MAX_PODS], *ptrs[DISP_ENDPOINTS_MAX_PODS];
    size_t count = a->d.pods ? a->d.npods : a->gateway[0] != '\0';
    for (size_t i = 0; i < count; i++) {
        faas__endpoint__init(&eps[i]);
        eps[i].address = (char *)(a->d.pods ? a->d.pod[i] : a->gateway);
        eps[i].kind = a->d.pods ? FAAS__ENDPOINT__KIND__POD : FAAS__ENDPOINT__KIND__GATEWAY;
        eps[i].protocol = (char *)proto_name(a);
        ptrs[i] = &eps[i];
    }
    m.function = (char *)a->function;
    m.mode = (char *)(a->d.pods ? "pods" : "gateway");
    m.n_endpoints = count;
    m.endpoints = ptrs;
    m.rps = a->d.rps;
    m.threshold_rps = a->d.threshold_rps;
    *len = faas__endpoints__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf != NULL)
        faas__endpoints__pack(&m, buf);
    return buf;
}

uint8_t *gw_endpoints_get_pb(const char *fn, size_t len, const char *authority_host, size_t *plen, int *found)
{
    gw_ep_answer_t a;
    *found = endpoints_answer(fn, len, NULL, authority_host, &a) == 0;
    return *found ? to_pb(&a, plen) : NULL;
}

/* ---- GET /endpoints/<function> ---- */

static void send_json(h2o_req_t *req, const gw_ep_answer_t *a)
{
    size_t cap = 256 + DISP_ENDPOINTS_MAX_PODS * 128;
    char *body = h2o_mem_alloc_pool(&req->pool, cap);
    size_t n = to_json(a, body, cap);
    if (n >= cap)
        n = cap - 1; /* cannot happen with the bounds above; never send past the buffer */
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    req->res.content_length = n;
    h2o_send_inline(req, body, n);
}

static void answer(h2o_req_t *req, const char *name, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_sockname(req->conn, (struct sockaddr *)&ss);
    gw_ep_answer_t *a = h2o_mem_alloc_pool(&req->pool, sizeof(*a));
    if (endpoints_answer(name, len, sl != 0 ? (struct sockaddr *)&ss : NULL, NULL, a) != 0) {
        gw_send_platform_error(req, FAAS_ERR_NOT_FOUND, name, len, "no such function");
        return;
    }
    send_json(req, a);
}

static void answer_resolved(h2o_req_t *req, void *arg)
{
    gw_slice_t *name = arg;
    answer(req, name->ptr, name->len);
}

int gw_endpoints_serve(h2o_req_t *req)
{
    static const char prefix[] = "/endpoints/";
    gw_slice_t name, rest;
    const char *err = NULL;
    int rc = gw_route_under(req->path.base, req->path.len, prefix, sizeof(prefix) - 1,
                            "missing function name: /endpoints/<name>", &name, &rest, &err);
    if (rc == GW_ROUTE_OTHER)
        return 0;
    gw_metrics_other();
    if (rc == GW_ERR_MALFORMED) {
        gw_send_platform_error(req, FAAS_ERR_MALFORMED, NULL, 0, err);
        return 1;
    }
    if (rest.len != 0 && rest.ptr[0] != '?') {
        gw_send_platform_error(req, FAAS_ERR_NOT_FOUND, NULL, 0, "no route; /endpoints/<name> has no sub-path");
        return 1;
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD"));
        gw_send_error(req, 405, NULL, 0, "method not allowed: GET /endpoints/<name>", 0);
        return 1;
    }
    disp_fn_info_t info;
    if (disp_lookup(name.ptr, name.len, &info) == 0) {
        answer(req, name.ptr, name.len);
        return 1;
    }
    /* the table may only be behind discovery (a deploy a moment ago): ask before 404 */
    gw_slice_t *arg = h2o_mem_alloc_pool(&req->pool, sizeof(*arg));
    *arg = name;
    gw_resolve_req(req, name.ptr, name.len, answer_resolved, arg);
    return 1;
}
