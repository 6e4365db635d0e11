/* worker-manager/workermgr.h - faas-workermgr: one per host, owns the pods.
 *
 * A root helper forked before grpc spawns pods (PID/mount/IPC/UTS namespaces,
 * cgroups, uid 65534, no_new_privs); one pod thread owns them, keeps a warm
 * pool, specializes pods on Acquire and registers instances in discovery. */
#ifndef FAAS_WORKERMGR_H
#define FAAS_WORKERMGR_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#define WM_MAX_DISCOVERY 8

/* --python-preload's default: the modules the Python servers we host import (the stdlib
 * HTTP and socket servers, JSON, TLS, asyncio, logging; grpcio and python3-thrift where
 * installed: the agent's zygote skips a module it cannot import). The one copy: --help,
 * the README and faasd refer to it. */
#define WM_PYTHON_PRELOAD_DEFAULT                                                                                      \
    "http.server,socketserver,json,socket,ssl,selectors,threading,asyncio,logging,urllib.parse,email.parser,"          \
    "concurrent.futures,grpc,thrift.Thrift,thrift.protocol.TBinaryProtocol,thrift.transport.TSocket,"                  \
    "thrift.transport.TTransport,thrift.server.TServer"
#define WM_PYTHON_PRELOAD_MAX_NAMES 64
#define WM_PYTHON_PRELOAD_MAX_BYTES 4096

/* Command-line configuration; every path is absolute once parsed. */
typedef struct {
    char listen[128];    /* gRPC listen address */
    char advertise[128]; /* the address registered in discovery (--advertise; default listen) */
    char discovery[128]; /* the first discovery gRPC address (--discovery) */
    /* every --discovery address: each gets every lease renewal, the rest of the WM's calls
     * go to the one wm_discovery_pick names (all discoveries on one etcd serve the same
     * durable state; soft state - instances, leases - is in each one's memory) */
    char discoveries[WM_MAX_DISCOVERY][128];
    unsigned n_discovery;
    char metrics_listen[128]; /* /metrics + /healthz HTTP responder */
    char state_dir[PATH_MAX];
    char id[64];          /* worker id: names the cgroups faas/<id> */
    char agent[PATH_MAX]; /* faas-agent binary run in every pod */
    char cgroup_root[PATH_MAX];
    unsigned pool_size;
    /* warm pods holding a Python zygote (--pool-python, issue 18); set to 0 at start when
     * python is not an executable file */
    unsigned pool_python;
    char python[PATH_MAX];                                /* the zygotes' interpreter (--python) */
    char python_preload[WM_PYTHON_PRELOAD_MAX_BYTES + 1]; /* modules they import first (--python-preload) */
    unsigned lease_ttl_ms;
    uid_t pod_uid;
    gid_t pod_gid;
    int runq_bpf;        /* load the eBPF run-queue probe (default 1; --no-runq-bpf) */
    int pod_netns;       /* a network namespace per pod (default 1; --no-pod-netns to measure it) */
    int no_seccomp;      /* agents install no filter for the user server (--no-seccomp, to measure it) */
    char pod_deny[1024]; /* addresses/CIDRs pods never reach, comma-separated (--pod-deny) */
    char allow_from[1024]; /* addresses/CIDRs that may open connections to pods (--allow-from) */
    uint32_t pod_net;      /* this host's pod range (--pod-cidr), host order, and its prefix */
    int pod_prefix;
    uint32_t cluster_net;  /* every host's pod ranges (--cluster-cidr): no pod reaches them */
    int cluster_prefix;    /* 0 until set: then the /16 around pod_net (or pod_net itself) */
    /* the platform token (FAAS_TOKEN wins); default: the discovery dir next to
     * state_dir, <state_dir>/../discovery/token, as faasd and the demo lay them out */
    char token_file[PATH_MAX];
    char tls_cert[PATH_MAX], tls_key[PATH_MAX]; /* serve TLS with these PEM files; "" = plaintext */
    char tls_ca[PATH_MAX];                      /* TLS to discovery trusting this PEM CA; "" = plaintext */
    int id_given;                               /* --id was on the command line: never take the predecessor's */
    unsigned adopt_grace_ms;                    /* a crashed WM's helper keeps its pods this long for a successor */
    char umoci[PATH_MAX];                       /* umoci binary that unpacks images (a name: looked up in PATH) */
    uint64_t image_cache_bytes;                 /* unpacked image rootfs kept on this host, at most */
    uint32_t image_id_base;                     /* host uid/gid of an image's id 0: 65536 ids from it */
} wm_config_t;

/* Fills c from argv. Returns 0, 1 if --help was asked, or -1 with *err set to a
 * one-line static message. Never prints or exits (the fuzz driver calls it in a
 * loop); it reads only the cwd, the hostname and /proc/self/exe for defaults. */
int wm_config_parse(wm_config_t *c, int argc, char **argv, const char **err);

/* 0 if v is a valid --python-preload list (may be ""), else -1 with *err a static line. */
int wm_python_preload_valid(const char *v, const char **err);

/* At start: with a python pool asked for, c->python must be an executable file, else
 * one warning (event=python_pool_off) and c->pool_python becomes 0; then -1. */
int wm_python_check(wm_config_t *c);

/* The discovery calls other than lease renewals go to: the one that last answered. */
const char *wm_discovery_pick(const wm_config_t *c);

/* addr (an address wm_discovery_pick gave) did not answer: the next pick is the
 * next address of the list, unless another caller has already moved on. */
void wm_discovery_failed(const wm_config_t *c, const char *addr);

/* 1 if rc (a faas_rpc_* result) says the discovery did not answer (unreachable, down,
 * too slow): worth trying the next one; 0 for an answer, even a refusal. */
int wm_discovery_down_rc(int rc);

/* Prints the usage text on stdout. */
void wm_usage(void);

/* Runs the daemon until SIGINT/SIGTERM; returns the process exit code. */
int wm_run(const wm_config_t *c);

#endif
