/* worker-manager/watch.c - the worker manager's one Watch stream on discovery. It asks
 * for functions and workers (reserved.c keeps its share of reserved instances from
 * them) and for task cancels (tasks.c aborts the running tasks of its pods): one stream
 * and one thread for both, instead of a stream per consumer, each event decoded once.
 * It reconnects with backoff on a fresh channel, like the dispatcher's watch. */
#define WM_STATE
#include "worker-manager/internal.h"

#include <pthread.h>

#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/util.h"

#define WATCH_BACKOFF_MS 100
#define WATCH_BACKOFF_MAX_MS 2000
#define WATCH_HEALTHY_MS 5000 /* a stream that lived this long starts the backoff over */

static int on_msg(void *ud, const uint8_t *msg, size_t len)
{
    wm_t *wm = ud;
    Faas__WatchEvent *e = faas__watch_event__unpack(NULL, len, msg);
    if (e == NULL) {
        FAAS_WARN("event=watch_bad_message len=%zu", len);
        return 0;
    }
    if (e->type == FAAS__WATCH_EVENT__TYPE__TASK_CANCEL)
        wm_task_on_cancel(wm, e);
    else
        wm_reserved_on_event(wm, e);
    faas__watch_event__free_unpacked(e, NULL);
    return 0;
}

static void *watch_main(void *arg)
{
    wm_t *wm = arg;
    Faas__WatchRequest wr = FAAS__WATCH_REQUEST__INIT;
    wr.functions = wr.workers = wr.task_cancels = 1;
    size_t len;
    uint8_t *req = faas_pb_pack(&wr.base, &len);
    uint32_t backoff = WATCH_BACKOFF_MS;
    const char *addr = wm_discovery_pick(wm->cfg);
    faas_rpc_channel_t *ch = faas_rpc_channel_open(addr);
    for (;;) {
        char err[256] = "";
        uint64_t t0 = faas_now_ms();
        wm_reserved_forget(); /* a fresh stream starts with a whole snapshot */
        int rc = req != NULL
                     ? faas_rpc_server_stream(ch, "/faas.Discovery/Watch", req, len, 0, on_msg, wm, err, sizeof(err))
                     : -1;
        if (faas_now_ms() - t0 > WATCH_HEALTHY_MS)
            backoff = WATCH_BACKOFF_MS;
        FAAS_WARN("event=watch_ended discovery=%s rc=%d err=\"%s\" retry_ms=%u", addr, rc, err, backoff);
        if (wm_discovery_down_rc(rc)) /* the next stream goes to the next discovery */
            wm_discovery_failed(wm->cfg, addr);
        usleep(backoff * 1000);
        backoff = backoff * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS : backoff * 2;
        /* a fresh channel: grpc's own reconnect backoff (up to minutes) must not delay the
         * watch once discovery is back; retries are paced here */
        faas_rpc_channel_close(ch);
        addr = wm_discovery_pick(wm->cfg);
        ch = faas_rpc_channel_open(addr);
    }
    return NULL;
}

int wm_watch_start(wm_t *wm)
{
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &at, watch_main, wm);
    pthread_attr_destroy(&at);
    return rc;
}
