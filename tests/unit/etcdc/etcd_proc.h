/* tests/unit/etcdc/etcd_proc.h - a real etcd for the tests: free ports, a temp data
 * dir, readiness by polling /health, killed by PID. */
#ifndef TESTS_ETCD_PROC_H
#define TESTS_ETCD_PROC_H

#include <sys/types.h>

typedef struct {
    char dir[128];      /* mkdtemp: data/ and etcd.log inside */
    int client_port, peer_port;
    char endpoint[64];  /* "127.0.0.1:P" */
    char name[16];      /* the member's name */
    char cluster[512];  /* --initial-cluster */
    pid_t pid;
} etcd_proc_t;

/* Starts one (bounded wait for /health); 0 or -1. */
int etcd_proc_start(etcd_proc_t *e);
/* Starts a cluster of n members (each its own dir and ports); 0 or -1. */
int etcd_cluster_start(etcd_proc_t *m, int n);
/* Starts it again on the same ports and data dir. */
int etcd_proc_restart(etcd_proc_t *e);
/* SIGKILL and reap (no graceful shutdown). */
void etcd_proc_kill(etcd_proc_t *e);
/* Kills it and removes its directory. */
void etcd_proc_destroy(etcd_proc_t *e);
/* A port nothing listens on now. */
int etcd_proc_free_port(void);
/* Runs etcdctl against it with the arguments given (NULL-terminated); exit status. */
int etcd_proc_ctl(etcd_proc_t *e, ...);

#endif
