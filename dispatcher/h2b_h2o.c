/* dispatcher/h2b_h2o.c - runs the h2 stream bridge (h2b/) on h2o's event loop:
 * the gateway's side of the bridge's I/O seam (the agent has its own, on evl). */
#include <h2o.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "dispatcher/internal.h"
#include "h2b/h2b.h"

static __thread struct {
    h2o_loop_t *loop;
    h2o_timeout_t zero;
    h2o_timeout_entry_t later_entry;
} hg;

/* An agent's host that dies without a word (power, network) sends no RST: a connection
 * to it would hold its calls until their deadlines and take new ones until the host's
 * lease lapses. Unacknowledged bytes end it after AGENT_USER_TIMEOUT_MS (the kernel
 * acknowledges for a live host, however busy its processes), and an idle one is probed
 * by keepalives, so the next call connects afresh (and gives up after 2 s,
 * dispatcher.c) instead of writing into a dead socket. */
#define AGENT_USER_TIMEOUT_MS 10000
#define AGENT_KEEPIDLE_S 5
#define AGENT_KEEPINTVL_S 2
#define AGENT_KEEPCNT 2

static void nodelay(h2o_socket_t *sock)
{
    int one = 1;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void tune(h2o_socket_t *sock)
{
    int fd = h2o_socket_get_fd(sock), one = 1, ut = AGENT_USER_TIMEOUT_MS, idle = AGENT_KEEPIDLE_S,
        intvl = AGENT_KEEPINTVL_S, cnt = AGENT_KEEPCNT;
    nodelay(sock);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
    h2b_io_connected(sock->data, err == NULL);
}

static void *io_connect(h2b_conn_t *c, const struct sockaddr *sa, unsigned len)
{
    h2o_socket_t *sock = h2o_socket_connect(hg.loop, (struct sockaddr *)sa, len, on_connect);
    if (sock == NULL)
        return NULL;
    sock->data = c;
    tune(sock);
    return sock;
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    if (err != NULL) {
        h2b_io_closed(sock->data);
        return;
    }
    ssize_t n = h2b_io_recv(sock->data, (const uint8_t *)sock->input->bytes, sock->input->size);
    if (n >= 0) /* else the connection died and sock is closed */
        h2o_buffer_consume(&sock->input, (size_t)n);
}

static void io_read_start(void *s, h2b_conn_t *c)
{
    h2o_socket_t *sock = s;
    sock->data = c;
    h2o_socket_read_start(sock, on_read);
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    h2b_io_written(sock->data, err == NULL);
}

static int io_write(void *sock, const void *data, size_t len)
{
    h2o_iovec_t v = h2o_iovec_init(data, len);
    h2o_socket_write(sock, &v, 1, on_written); /* h2o completes every write from the loop */
    return 0;
}

static void io_close(void *sock)
{
    h2o_socket_close(sock);
}

static void on_later(h2o_timeout_entry_t *e)
{
    h2b_io_run();
}

static void io_later(void)
{
    if (!h2o_timeout_is_linked(&hg.later_entry))
        h2o_timeout_link(hg.loop, &hg.zero, &hg.later_entry);
}

static const h2b_io_t h2o_io = {io_connect, io_read_start, io_write, io_close, io_later};

void disp_h2b_init(h2o_loop_t *loop)
{
    hg.loop = loop;
    h2o_timeout_init(loop, &hg.zero, 0);
    hg.later_entry.cb = on_later;
    h2b_init_io(&h2o_io);
}

int disp_h2b_accept(h2o_socket_t *sock, const h2b_server_cbs_t *cbs)
{
    nodelay(sock);
    if (h2b_io_accept(sock, cbs) == NULL) {
        h2o_socket_close(sock);
        return -1;
    }
    return 0;
}
