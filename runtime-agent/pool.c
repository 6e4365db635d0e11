/* runtime-agent/pool.c - keep-alive connections to the user server, for the HTTP and the
 * Thrift paths (one pool each: a connection carries one protocol). Idle connections stay
 * registered and reading: data or EOF on an idle connection means the server is done
 * with it, and taking one back costs no syscall. Most recently used first, so that a
 * server with an idle timeout sees its warmest connections reused. Connects in flight
 * are bounded (AGENT_POOL_MAX_CONNECTING); acquisitions past that wait in order. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>

#include "runtime-agent/internal.h"

static void on_kick(evl_defer_t *d);

void agent_pool_init(agent_pool_t *p, evl_loop_t *loop, uint16_t port, uint32_t idle_ms)
{
    p->loop = loop;
    p->addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
    p->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->idle_ms = idle_ms;
    if (!p->configured) {
        evl_list_init(&p->idle);
        evl_list_init(&p->waiters);
        p->kick.cb = on_kick;
        p->kick.data = p;
    }
    p->configured = 1;
}

void agent_pool_close(agent_upconn_t *u)
{
    if (evl_linked(&u->idle_link))
        evl_list_unlink(&u->idle_link);
    evl_timer_stop(u->pool->loop, &u->idle_timer);
    if (u->sock != NULL) {
        if (u->on_connect != NULL && u->sock->connecting) {
            u->pool->connecting--;
            if (!evl_list_empty(&u->pool->waiters))
                evl_defer(u->pool->loop, &u->pool->kick);
        }
        evl_sock_close(u->sock);
    }
    free(u);
}

static void on_idle_read(evl_sock_t *s, int err)
{
    agent_pool_close(s->data); /* an idle connection has nothing to say */
}

static void on_idle_timeout(evl_timer_t *t)
{
    agent_pool_close(t->data);
}

void agent_pool_release(agent_upconn_t *u)
{
    u->owner = NULL;
    u->on_connect = NULL;
    if (u->sock->in.len != 0) {
        agent_pool_close(u);
        return;
    }
    evl_sock_read_start(u->sock, on_idle_read); /* already reading: no syscall */
    evl_list_insert(u->pool->idle.next, &u->idle_link);
    evl_timer_start(u->pool->loop, &u->idle_timer, u->pool->idle_ms);
    if (!evl_list_empty(&u->pool->waiters))
        evl_defer(u->pool->loop, &u->pool->kick);
}

static agent_upconn_t *upconn_new(agent_pool_t *p)
{
    agent_upconn_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->pool = p;
    u->idle_timer.cb = on_idle_timeout;
    u->idle_timer.data = u;
    return u;
}

static void on_connected(evl_sock_t *s, int err)
{
    agent_upconn_t *u = s->data;
    agent_pool_t *p = u->pool;
    p->connecting--;
    if (!evl_list_empty(&p->waiters))
        evl_defer(p->loop, &p->kick);
    u->on_connect(u, err);
}

/* Starts u's connect; 0 or -1 (errno set). */
static int start_connect(agent_pool_t *p, agent_upconn_t *u)
{
    evl_sock_t *s = evl_sock_connect(p->loop, (struct sockaddr *)&p->addr, sizeof(p->addr), on_connected);
    if (s == NULL)
        return -1;
    s->data = u;
    u->sock = s;
    p->connecting++;
    return 0;
}

/* Gives waiters idle connections, then free connect slots. */
static void on_kick(evl_defer_t *d)
{
    agent_pool_t *p = d->data;
    while (!evl_list_empty(&p->waiters)) {
        agent_upconn_t *w = EVL_CONTAINER(p->waiters.next, agent_upconn_t, idle_link);
        if (!evl_list_empty(&p->idle)) {
            agent_upconn_t *u = EVL_CONTAINER(p->idle.next, agent_upconn_t, idle_link);
            evl_list_unlink(&w->idle_link);
            /* the waiter takes over the idle connection's socket */
            w->sock = u->sock;
            w->sock->data = w;
            w->reused = 1;
            u->sock = NULL;
            agent_pool_close(u);
            w->on_connect(w, 0);
            continue;
        }
        if (p->connecting >= AGENT_POOL_MAX_CONNECTING)
            return;
        evl_list_unlink(&w->idle_link);
        if (start_connect(p, w) != 0)
            w->on_connect(w, errno != 0 ? errno : ECONNREFUSED);
    }
}

int agent_pool_acquire(agent_pool_t *p, int fresh, void *owner, void (*on_connect)(agent_upconn_t *u, int err),
                       agent_upconn_t **out)
{
    if (!fresh && !evl_list_empty(&p->idle)) {
        agent_upconn_t *u = EVL_CONTAINER(p->idle.next, agent_upconn_t, idle_link);
        evl_list_unlink(&u->idle_link);
        evl_timer_stop(p->loop, &u->idle_timer);
        u->reused = 1;
        u->owner = owner;
        *out = u;
        return 1;
    }
    agent_upconn_t *u = upconn_new(p);
    if (u == NULL)
        return -1;
    u->owner = owner;
    u->on_connect = on_connect;
    if (p->connecting >= AGENT_POOL_MAX_CONNECTING) {
        evl_list_insert(&p->waiters, &u->idle_link);
    } else if (start_connect(p, u) != 0) {
        free(u);
        return -1;
    }
    *out = u;
    return 0;
}

int agent_pool_adopt(agent_pool_t *p, evl_sock_t *s)
{
    if (!p->configured || s->in.len != 0)
        return -1;
    agent_upconn_t *u = upconn_new(p);
    if (u == NULL)
        return -1;
    u->sock = s;
    s->data = u;
    agent_pool_release(u);
    return 0;
}
