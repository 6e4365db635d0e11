/* libFuzzer driver for the registry's Heartbeat path: the input is split into a few
 * LeaseRenewal messages (2-byte length prefixes) applied in turn, then every lease
 * lapses. Each must be accepted or refused, never crash or leak; every event must
 * re-read as a WatchEvent, and once all leases lapsed nothing may remain. */
// FUZZ_SOURCES: discovery/registry.c discovery/spec.c common/util.c common/spec.c common/log.c
// FUZZ_PKGS: libprotobuf-c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "discovery/discovery.h"

/* worker_up / lease_lapse lines for millions of runs would only fill the log */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setenv("FAAS_LOG_LEVEL", "error", 0);
    faas_log_init("fuzz");
    return 0;
}


static int sink(void *ctx, const uint8_t *buf, size_t len)
{
    Faas__WatchEvent *ev = faas__watch_event__unpack(NULL, len, buf);
    if (ev == NULL)
        abort();
    if (ev->type == FAAS__WATCH_EVENT__TYPE__INSTANCE_PUT && ev->instance->worker_id[0] == '\0')
        abort(); /* the lease owner is always filled in */
    faas__watch_event__free_unpacked(ev, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    disc_registry_t *r = disc_registry_new();
    if (r == NULL || disc_registry_subscribe(r, 1, 1, 1, sink, NULL) <= 0)
        abort();
    uint64_t now = 1000;
    while (size >= 2) {
        size_t n = (size_t)data[0] << 8 | data[1];
        data += 2;
        size -= 2;
        if (n > size)
            n = size;
        Faas__LeaseRenewal *lr = faas__lease_renewal__unpack(NULL, n, data);
        if (lr != NULL) {
            const char *err = NULL;
            if (disc_registry_heartbeat(r, lr, now, &err) != 0 && (err == NULL || err[0] == '\0'))
                abort();
            faas__lease_renewal__free_unpacked(lr, NULL);
        }
        data += n;
        size -= n;
        now += 10;
    }
    size_t len;
    free(disc_registry_list_instances(r, "", &len));
    free(disc_registry_list_workers(r, &len));
    disc_registry_expire(r, UINT64_MAX);
    disc_registry_stats_t st;
    disc_registry_stats(r, &st);
    if (st.workers != 0 || st.instances != 0)
        abort();
    disc_registry_free(r);
    return 0;
}
