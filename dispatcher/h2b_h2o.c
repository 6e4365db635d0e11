/* dispatcher/h2b_h2o.c - runs the h2 stream bridge (h2b/) on h2o's event loop:
 * the gateway's side of the bridge's I/O seam (the agent has its own, on evl). */
#include <h2o.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "dispatcher/internal.h"
#include "h2b/h2b.h"

static struct {
    h2o_loop_t *loop;
    h2o_timeout_t zero;
    h2o_timeout_entry_t later_entry;
} hg;

static void nodelay(h2o_socket_t *sock)
{
    int one = 1;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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
    nodelay(sock);
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
