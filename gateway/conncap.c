/* gateway/conncap.c - connection caps per client address and in all, on every port
 * (HTTP, gRPC, Thrift).
 *
 * Why: one client holding thousands of idle connections exhausts the gateway's file
 * descriptors for everyone. A slot is taken at accept and given back when the socket
 * closes; over a cap the connection is closed at once (HTTP gets a best-effort 503
 * first: it costs one non-blocking send).
 *
 * Key: the IPv4 address; for IPv6 the /64 (one subscriber's usual allocation, so a
 * client cannot walk its own prefix to get a fresh cap per address); IPv4-mapped
 * IPv6 counts as its IPv4 address. Threads: every loop thread accepts (SO_REUSEPORT),
 * and a client's connections land on any of them, so the table is shared under one
 * mutex, taken at accept and close only: a connection's requests never touch it. */
#include "gateway/internal.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>

#include "common/log.h"
#include "common/util.h"

#define NBUCKETS 1024

typedef struct cc_entry {
    struct cc_entry *next;
    uint8_t key[9]; /* family tag + 4 (IPv4) or 8 (IPv6 /64) bytes */
    uint32_t n;
} cc_entry_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static cc_entry_t *g_tab[NBUCKETS];
static uint32_t g_per_client, g_total, g_open; /* g_open: under mu, read atomically */
static __thread int g_last_reason;
static uint64_t g_last_log_us; /* under mu */

void gw_conncap_config(uint32_t per_client, uint32_t total)
{
    g_per_client = per_client;
    g_total = total;
}

uint32_t gw_conncap_open(void)
{
    return __atomic_load_n(&g_open, __ATOMIC_RELAXED);
}

int gw_conncap_last_reason(void)
{
    return g_last_reason;
}

/* 0 and the key of peer, or -1 for a family without one (AF_UNIX: not capped). */
static int key_of(const struct sockaddr *sa, uint8_t key[9])
{
    memset(key, 0, 9);
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) {
        key[0] = 4;
        memcpy(key + 1, a + 12, 4);
    } else {
        key[0] = 6;
        memcpy(key + 1, a, 8);
    }
    return 0;
}

static cc_entry_t **slot_of(const uint8_t key[9])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 9; i++)
        h = (h ^ key[i]) * 16777619u;
    cc_entry_t **pp = &g_tab[h & (NBUCKETS - 1)];
    while (*pp != NULL && memcmp((*pp)->key, key, 9) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* The entry holding peer's slots after a successful take, else NULL (refused, or no
 * memory: then the connection is refused too, as an fd would be the next to fail). */
static cc_entry_t *take_locked(const uint8_t key[9])
{
    if (g_total != 0 && g_open >= g_total) {
        g_last_reason = 1;
        return NULL;
    }
    cc_entry_t **pp = slot_of(key), *e = *pp;
    g_last_reason = 0;
    if (e != NULL && g_per_client != 0 && e->n >= g_per_client)
        return NULL;
    if (e == NULL) {
        if ((e = calloc(1, sizeof(*e))) == NULL)
            return NULL;
        memcpy(e->key, key, 9);
        *pp = e;
    }
    e->n++;
    __atomic_store_n(&g_open, g_open + 1, __ATOMIC_RELAXED);
    return e;
}

static cc_entry_t *take(const struct sockaddr *peer)
{
    uint8_t key[9];
    if (key_of(peer, key) != 0)
        return NULL;
    pthread_mutex_lock(&mu);
    cc_entry_t *e = take_locked(key);
    pthread_mutex_unlock(&mu);
    return e;
}

static void give_key(const uint8_t key[9])
{
    pthread_mutex_lock(&mu);
    cc_entry_t **pp = slot_of(key), *e = *pp;
    if (e != NULL) {
        __atomic_store_n(&g_open, g_open - 1, __ATOMIC_RELAXED);
        if (--e->n == 0) {
            *pp = e->next;
            free(e);
        }
    }
    pthread_mutex_unlock(&mu);
}

int gw_conncap_take(const struct sockaddr *peer)
{
    uint8_t key[9];
    if (key_of(peer, key) != 0)
        return 0; /* not an IP client: nothing to key a cap on */
    return take(peer) != NULL ? 0 : -1;
}

void gw_conncap_give(const struct sockaddr *peer)
{
    uint8_t key[9];
    if (key_of(peer, key) == 0)
        give_key(key);
}

/* h2o calls this once the socket is gone: the slot goes back. */
static void on_sock_close(void *data)
{
    cc_entry_t *e = data;
    uint8_t key[9];
    memcpy(key, e->key, 9); /* give_key may free e */
    give_key(key);
}

static const char *const port_names[GW_NPORTS] = {"http", "grpc", "thrift"};

/* A last word for HTTP/1 clients; never blocks, never retried. */
static void refuse_http(h2o_socket_t *sock)
{
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               "Retry-After: 1\r\nConnection: close\r\nContent-Length: 20\r\n\r\n"
                               "too many connections";
    ssize_t w = send(h2o_socket_get_fd(sock), resp, sizeof(resp) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w;
}

int gw_conncap_accept(h2o_socket_t *sock, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl = h2o_socket_getpeername(sock, (struct sockaddr *)&ss);
    uint8_t key[9];
    if (sl == 0 || key_of((struct sockaddr *)&ss, key) != 0)
        return 0;
    cc_entry_t *e = take((struct sockaddr *)&ss);
    if (e != NULL) {
        sock->on_close.cb = on_sock_close;
        sock->on_close.data = e;
        return 0;
    }
    gw_metrics_conn_refused(port, g_last_reason);
    uint64_t now = faas_now_us();
    pthread_mutex_lock(&mu);
    int log = now - g_last_log_us >= 1000000; /* a flood must not become a flood of log lines */
    if (log)
        g_last_log_us = now;
    pthread_mutex_unlock(&mu);
    if (log)
        FAAS_WARN("event=conn_refused port=%s reason=%s open=%u", port_names[port],
                  g_last_reason ? "total" : "per_client", gw_conncap_open());
    if (port == GW_PORT_HTTP)
        refuse_http(sock);
    h2o_socket_close(sock);
    return -1;
}
