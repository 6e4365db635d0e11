/* The agent's keep-alive pool (runtime-agent/pool.c) against a real loopback listener:
 * connect, reuse most recently used first, idle close by the server, idle timeout, and the
 * bound on connects in flight. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime-agent/internal.h"

static int lfd;
static uint16_t port;
static evl_loop_t *loop;
static agent_pool_t pool;

static void setup(void)
{
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(lfd, 512), 0);
    getsockname(lfd, (struct sockaddr *)&sin, &sl);
    port = ntohs(sin.sin_port);
    loop = evl_loop_new();
    memset(&pool, 0, sizeof(pool));
    agent_pool_init(&pool, loop, port, 100);
}

static void teardown(void)
{
    evl_run_once(loop, 0); /* frees what the test closed */
    evl_loop_free(loop);
    if (lfd >= 0)
        close(lfd);
}

static int connected, failed;
static void on_conn(agent_upconn_t *u, int err)
{
    if (err == 0)
        connected++;
    else
        failed++;
}

static void spin(int *what, int want)
{
    for (int i = 0; i < 300 && *what < want; i++)
        evl_run_once(loop, 5);
    cr_assert_geq(*what, want);
}

static size_t idle_count(void)
{
    size_t n = 0;
    for (evl_link_t *l = pool.idle.next; l != &pool.idle; l = l->next)
        n++;
    return n;
}

TestSuite(pool, .init = setup, .fini = teardown);

Test(pool, connects_then_reuses_most_recent_first)
{
    agent_upconn_t *a, *b, *c;
    connected = failed = 0;
    cr_assert_eq(agent_pool_acquire(&pool, 0, &pool, on_conn, &a), 0, "empty pool: a connect");
    cr_assert_eq(agent_pool_acquire(&pool, 0, &pool, on_conn, &b), 0);
    spin(&connected, 2);
    agent_pool_release(a);
    agent_pool_release(b);
    cr_assert_eq(idle_count(), 2);
    cr_assert_eq(agent_pool_acquire(&pool, 0, &pool, on_conn, &c), 1, "an idle one, usable at once");
    cr_assert_eq(c, b, "the most recently released");
    cr_assert(c->reused);
    cr_assert_eq(agent_pool_acquire(&pool, 1, &pool, on_conn, &a), 0, "fresh: never an idle one");
    agent_pool_close(a);
    agent_pool_close(c);
    evl_run_once(loop, 0);
}

Test(pool, idle_connections_closed_by_the_server_or_timeout_leave)
{
    agent_upconn_t *a, *b;
    connected = 0;
    agent_pool_acquire(&pool, 0, &pool, on_conn, &a);
    agent_pool_acquire(&pool, 0, &pool, on_conn, &b);
    spin(&connected, 2);
    int s1 = accept(lfd, NULL, NULL);
    cr_assert_geq(s1, 0);
    agent_pool_release(a);
    agent_pool_release(b);
    cr_assert_eq(idle_count(), 2);
    close(s1); /* the server drops one while it is idle: it leaves the pool at once */
    for (int i = 0; i < 50 && idle_count() != 1; i++)
        evl_run_once(loop, 5);
    cr_assert_eq(idle_count(), 1);
    for (int i = 0; i < 100 && idle_count() != 0; i++)
        evl_run_once(loop, 5); /* 100 ms idle timeout */
    cr_assert_eq(idle_count(), 0);
}

Test(pool, connects_in_flight_are_bounded_and_waiters_served_in_turn)
{
    enum { N = AGENT_POOL_MAX_CONNECTING + 10 };
    agent_upconn_t *u[N];
    connected = failed = 0;
    for (int i = 0; i < N; i++)
        cr_assert_eq(agent_pool_acquire(&pool, 0, &pool, on_conn, &u[i]), 0);
    cr_assert_eq(pool.connecting, AGENT_POOL_MAX_CONNECTING);
    cr_assert_null(u[N - 1]->sock, "past the bound: waiting, no socket yet");
    agent_pool_close(u[N - 2]); /* a waiter that gives up leaves the queue */
    spin(&connected, N - 1);
    cr_assert_eq(failed, 0);
    cr_assert_eq(pool.connecting, 0);
    cr_assert_not_null(u[N - 1]->sock);
    for (int i = 0; i < N; i++)
        if (i != N - 2)
            agent_pool_close(u[i]);
    evl_run_once(loop, 0);
}

Test(pool, refused_connect_is_reported)
{
    close(lfd);
    lfd = -1;
    agent_upconn_t *a;
    connected = failed = 0;
    int rc = agent_pool_acquire(&pool, 0, &pool, on_conn, &a);
    if (rc == 0) {
        spin(&failed, 1);
        agent_pool_close(a);
    } else {
        cr_assert_eq(rc, -1);
    }
    cr_assert_eq(connected, 0);
}
