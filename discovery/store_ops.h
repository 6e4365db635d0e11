/* discovery/store_ops.h - the backends behind disc_store_* (store.c): SQLite in the
 * state dir (store_sqlite.c) or etcd (store_etcd.c). store.c does what both share
 * (validation, the artifact and service checks, the artifact files); a backend keeps
 * the functions, their version counters and, on etcd, the artifacts' holders. */
#ifndef DISC_STORE_OPS_H
#define DISC_STORE_OPS_H

#include <stdint.h>
#include <stdio.h>

#include "discovery/discovery.h"

typedef struct {
    const char *name; /* "sqlite" or "etcd": /metrics and the start log */
    /* s is normalized and checked: sets s->version (the name's next) and
     * s->created_unix_ms, stores it. 0, -EAGAIN (store unreachable), -EIO. */
    int (*deploy)(void *impl, Faas__FunctionSpec *s, char *errbuf, size_t errcap);
    int (*get)(void *impl, const char *name, Faas__FunctionSpec **out);
    int (*list)(void *impl, Faas__FunctionSpec ***out, size_t *n);
    int (*del)(void *impl, const char *name);
    uint64_t (*deploys)(void *impl);
    void (*close)(void *impl);
    /* Optional (NULL: one host, the artifact files are all there is). */
    /* 0 if some discovery holds sha, -ENOENT, -EAGAIN. */
    int (*artifact_known)(void *impl, const char *sha);
    /* Brings a copy of sha from a holder into dir; 0, -ENOENT (no holder has it), -EAGAIN, -EIO. */
    int (*artifact_fetch)(void *impl, const char *dir, const char *sha, uint64_t max_bytes, char *errbuf,
                          size_t errcap);
    /* This discovery now holds sha. 0, -EAGAIN, -EIO. */
    int (*artifact_added)(void *impl, const char *sha, uint64_t size);
    /* Loads every function into reg and keeps it current; returns how many, or negative. */
    int (*follow)(void *impl, disc_registry_t *reg, char *errbuf, size_t errcap);
    void (*metrics)(void *impl, FILE *out);
} disc_store_ops_t;

/* store_sqlite.c: <state_dir>/discovery.db. */
void *disc_sqlite_open(const char *state_dir, const char **err);
extern const disc_store_ops_t disc_sqlite_ops;

/* store_etcd.c: endpoints as etcdc_open takes them, keys under prefix. */
void *disc_etcd_open(const char *endpoints, const char *prefix, char *errbuf, size_t errcap);
void disc_etcd_set_advertise(void *impl, const char *addr);
void disc_etcd_advertise(void *impl, char *out, size_t cap);
struct etcdc *disc_etcd_client(void *impl);
extern const disc_store_ops_t disc_etcd_ops;

#endif
