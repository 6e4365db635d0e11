/* worker-manager/internal.h - private pieces of faas-workermgr. */
#ifndef FAAS_WM_INTERNAL_H
#define FAAS_WM_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "worker-manager/workermgr.h"

/* Where a pod sees its code (read-only, the user server's working directory): a fixed
 * path inside the pod's own /tmp tmpfs, so nothing is created on the host's root
 * filesystem and no host directory above the state dir has to be enterable by the
 * pod uid. */
#define WM_POD_FAAS_DIR "/tmp/.faas"
#define WM_POD_CODE_DIR WM_POD_FAAS_DIR "/code"

#define WM_CPU_PERIOD_US 100000u

/* ---- cgroups (cgroup.c) ---------------------------------------------------- */

enum { WM_CG_MEMORY, WM_CG_CPU, WM_CG_PIDS, WM_CG_N };

/* Where each controller lives: v2 when the v2 root enables it, else its v1 hierarchy. */
typedef struct {
    char v2[PATH_MAX];          /* v2 mount ("" if none): membership and cgroup.kill */
    int on_v2[WM_CG_N];         /* controller handled by the v2 tree */
    char v1[WM_CG_N][PATH_MAX]; /* v1 hierarchy of the controller ("" if on v2 or absent) */
} wm_cg_layout_t;

typedef struct {
    uint64_t memory_bytes; /* 0 = default */
    uint32_t cpu_millis;   /* 0 = unlimited */
    uint32_t pids;         /* 0 = default */
} wm_limits_t;

typedef struct {
    char path[PATH_MAX];
    char value[64];
} wm_cg_write_t;

extern const char *const wm_cg_names[WM_CG_N];

/* Detects the layout under root ("/sys/fs/cgroup"): pure v2, hybrid or v1 only. */
int wm_cg_detect(const char *root, wm_cg_layout_t *L, const char **err);
/* The distinct directories of cgroup rel ("faas/w/p") in every hierarchy used. */
size_t wm_cg_dirs(const wm_cg_layout_t *L, const char *rel, char (*out)[PATH_MAX], size_t cap);
/* The file writes that apply lim to cgroup rel; returns how many (<= cap). */
size_t wm_cg_limit_writes(const wm_cg_layout_t *L, const char *rel, const wm_limits_t *lim, wm_cg_write_t *out,
                          size_t cap);
/* Creates cgroup rel everywhere (enabling v2 controllers on the way). */
int wm_cg_create(const wm_cg_layout_t *L, const char *rel, char *err, size_t errcap);
/* Writes the limits; 0 or -1 with err. */
int wm_cg_apply(const wm_cg_layout_t *L, const char *rel, const wm_limits_t *lim, char *err, size_t errcap);
/* Kills every task of rel (cgroup.kill in v2, else SIGKILL to each listed pid). */
void wm_cg_kill(const wm_cg_layout_t *L, const char *rel);
/* Kills and removes rel and everything under it, waiting up to wait_ms for tasks to go. */
int wm_cg_remove_tree(const wm_cg_layout_t *L, const char *rel, int wait_ms);
/* snprintf that says -1 when the output did not fit. */
int wm_fmt(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Writes s to path; 0 or -1 (errno). */
int wm_write_file(const char *path, const char *s);

/* ---- pod networks (netns.c) ---------------------------------------------------- */

/* Pods' addresses: a /30 each out of the host's --pod-cidr (default 10.200.0.0/16,
 * docs/security.md, docs/multihost.md), whose prefix is 16-28. */
#define WM_POD_PREFIX_MIN 16
#define WM_POD_PREFIX_MAX 28
/* The host (.1) or pod (.2) end's address of /30 block number block of the range net. */
uint32_t wm_net_block_addr(uint32_t net, uint32_t block, int pod_end);
/* The host end's link name of the /30 at address block_addr ("fv" + its address / 4 in
 * hex): the name is the lock on that address for every worker manager of the host. */
void wm_net_host_ifname(uint32_t block_addr, char out[16]);
/* "a.b.c.d[/n]" (len bytes of s) into *net (host order) and *prefix (32 without /n);
 * host bits must be zero. 0 or -1 (config.c). */
int wm_parse_cidr(const char *s, size_t len, uint32_t *net, int *prefix);
/* Gives the pod pid (just cloned, with its own network namespace) a veth to the host
 * and a /30 of its own out of net/prefix; *pod_addr is its address (host order). self_net
 * is the caller's network namespace fd, to come back to. 0, -1 with err, or -2 when the
 * caller could not return to its own namespace (it must stop). Root only. */
int wm_net_setup(pid_t pid, int self_net, uint32_t net, int prefix, uint32_t *pod_addr, char *err, size_t errcap);

/* netrules.c: the host's nftables table for pods, shared by its worker managers. */
typedef struct {
    const char *deny;  /* addresses/CIDRs pods never reach, comma-separated ("" = none) */
    const char *allow; /* addresses/CIDRs that may open connections to pods ("" = none) */
    uint32_t pod_net;  /* this worker manager's pod range (host order) */
    int pod_prefix;
    uint32_t cluster_net; /* every host's pods: no pod opens a connection into it */
    int cluster_prefix;
    int host_forwarded; /* the host forwarded IPv4 before any worker manager */
} wm_net_rules_t;
/* The ruleset text; 0, or -1 when it does not fit in cap. */
int wm_net_rules_text(char *out, size_t cap, const wm_net_rules_t *r);
/* Writes the table (r->host_forwarded is found here) and turns IPv4 forwarding on (for
 * egress); 0 or -1 with err. */
int wm_net_rules_apply(const wm_net_rules_t *r, char *err, size_t errcap);
/* The forwarding setting recorded in the table before any worker manager changed it:
 * 0, 1, or -1 when the table has no record. */
int wm_net_rules_recorded_forwarding(void);

/* network: none for the pod pid: its default route goes. 0, -1 with err, or -2 as above. */
int wm_net_no_egress(pid_t pid, int self_net, char *err, size_t errcap);

/* ---- the host's load, reported in the lease (load.c) -------------------------- */

/* One reading of /proc/stat's "cpu" line: jiffies idle (idle + iowait) and in all. */
typedef struct {
    uint64_t idle, total, t_ms;
    uint32_t ncpu; /* cpuN lines: the online CPUs */
} wm_cpu_sample_t;
/* What the lease reports (Worker fields), rounded. */
typedef struct {
    uint32_t cpus_milli, cpu_free_milli;
    uint64_t mem_total_bytes, mem_free_bytes;
} wm_load_t;
#define WM_LOAD_SAMPLES 8
/* The samples of about the last lease period (heartbeat thread only). */
typedef struct {
    wm_cpu_sample_t ring[WM_LOAD_SAMPLES];
    unsigned head, n;
} wm_load_sampler_t;
/* Parses /proc/stat text into s (t_ms left 0); 0 or -1. */
int wm_load_parse_stat(const char *text, wm_cpu_sample_t *s);
/* MemTotal and MemAvailable of /proc/meminfo text, in bytes; 0 or -1. */
int wm_load_parse_meminfo(const char *text, uint64_t *total, uint64_t *avail);
/* raw rounded to a multiple of step, unless last (a multiple of step) is within 3/4 of
 * a step of raw: then last, so a value near a step's edge does not flap. */
uint64_t wm_load_quantize(uint64_t raw, uint64_t last, uint64_t step);
/* Idle milli-cores between old and now (old NULL or not older: since boot). */
uint32_t wm_load_cpu_free(const wm_cpu_sample_t *old, const wm_cpu_sample_t *now);
/* Folds a reading into s and out (whose previous values are the "last" of the rounding). */
void wm_load_update(wm_load_sampler_t *s, const wm_cpu_sample_t *now, uint64_t mem_total, uint64_t mem_avail,
                    unsigned period_ms, wm_load_t *out);
/* Reads /proc/stat and /proc/meminfo and updates out; 0, or -1 leaving out as it was. */
int wm_load_sample(wm_load_sampler_t *s, unsigned period_ms, wm_load_t *out);

/* ---- the pod spawner helper (spawner.c) ------------------------------------- */

typedef struct {
    int fd; /* WM end of the helper socket */
    pid_t pid;
    int child; /* forked by this process (else adopted from a crashed predecessor) */
} wm_helper_t;

/* A pod a crashed predecessor's helper kept running, handed over at adoption. */
typedef struct {
    char pod[48];
    pid_t pid;
    uint32_t addr; /* host order */
    int ctl;       /* the WM's end of its control socket */
    uint8_t *rec;  /* the predecessor's record (wm_helper_record); NULL: state unclear */
    size_t rec_len;
} wm_adopted_t;

/* Forks the helper. Must run before any thread or grpc call. */
int wm_helper_start(wm_helper_t *h, const wm_config_t *c, const wm_cg_layout_t *L, const char **err);
/* Spawns a pod: returns its host pid, the WM end of its control socket and its address
 * (host order; the agent listens there, netns.c). python non-NULL: its agent gets
 * FAAS_AGENT_ZYGOTE=python and FAAS_AGENT_ZYGOTE_PRELOAD=preload (a python pod). */
int wm_helper_spawn(wm_helper_t *h, const char *pod_id, const char *python, const char *preload, pid_t *pid,
                    int *ctl_fd, uint32_t *addr, char *err, size_t errcap);
/* Bind-mounts <state>/code/<sha> read-only at WM_POD_CODE_DIR in the pod's mount ns and,
 * for a function with network: none, takes its route out (one round trip for both). */
int wm_helper_mount_code(wm_helper_t *h, const char *pod_id, pid_t pid, const char *sha, int no_egress, char *err,
                         size_t errcap);
/* MOUNT_IMAGE: the image's root in the pod (wm_image_mount_pod) and, on success, a new
 * fd to the images' user namespace in *userns_fd (the caller closes it). */
int wm_helper_mount_image(wm_helper_t *h, const char *pod_id, pid_t pid, const char *manifest_hex, int no_egress,
                          int *userns_fd, char *err, size_t errcap);
/* Kills the pod, reaps it, removes its cgroups and directory. */
int wm_helper_kill(wm_helper_t *h, const char *pod_id, pid_t pid);
/* Removes leftovers of a previous run (cgroups of worker prev_id; pod dirs and mounts
 * under <state>/pods, where builds before WM_POD_CODE_DIR mounted the code). */
int wm_helper_cleanup(wm_helper_t *h, const char *prev_id);
/* kill_pods: tells the helper to kill whatever is left and exit (a clean stop) and waits
 * for it. 0 (this WM failed to start): only lets go of it, so pods it adopted stay up
 * for another successor, as after a crash. */
void wm_helper_stop(wm_helper_t *h, int kill_pods);
/* Keeps rec (len 0: none, the pod's state is unclear) as pid's record in the helper, for
 * a successor if this WM crashes. One-way: no round trip. 0 or -1. */
int wm_helper_record(wm_helper_t *h, pid_t pid, const uint8_t *rec, size_t len);
/* Tries <state>/helper.sock: 1 when a crashed predecessor's helper took us (h is its
 * link, *pods its pods, malloc'd; c->id becomes its id unless --id was given), 0 when
 * none waits, -1 when its config differs (it was told to kill its pods and exit) or it
 * did not answer (then left alone). */
int wm_helper_adopt(wm_helper_t *h, wm_config_t *c, wm_adopted_t **pods, size_t *n);

/* ---- code cache (code.c) -------------------------------------------------------- */

/* Hex sha256 of the file at path into hex (65 bytes); 0 or -1. */
int wm_sha256_file(const char *path, char *hex);
/* Hex sha256 of a buffer. */
void wm_sha256_hex(const void *data, size_t len, char *hex);
/* Is s 64 lowercase hex chars. */
int wm_valid_sha256(const char *s);
struct faas_rpc_channel;
/* Streams artifact sha (64 hex) from discovery's FetchCode into path (created 0600 or
 * truncated), unverified; what ("code", "image blob") names it in err. On ch if given
 * (several blobs share one connection), else on a channel of its own. Blocking; 0 or -1. */
int wm_fetch_blob(struct faas_rpc_channel *ch, const char *discovery, const char *sha, const char *path,
                  const char *what, char *err, size_t errcap);
/* Makes <state>/code/<sha> exist (fetching from discovery if needed). Blocking. */
int wm_code_ensure(const char *state_dir, const char *discovery, const char *sha, char *err, size_t errcap);

/* ---- OCI images (image.c: the host's rootfs cache; imagerun.c: what runs in one) ---- */

struct Faas__ImageSpec;
struct Faas__FunctionSpec;
struct Faas__ImageRun;

/* Ids an image's files and users may have: uid/gid 0..65535 inside the user namespace,
 * mapped to --image-id-base.. on the host (umoci unpacks them so). */
#define WM_IMAGE_IDS 65536u
#define WM_IMAGE_MAX_GROUPS 256
/* Where a pod sees the image's root (the overlay the root helper mounts). */
#define WM_POD_ROOT_DIR WM_POD_FAAS_DIR "/root"

/* The two phases of an image's first cold start on this host. */
typedef struct {
    uint64_t fetch_us, unpack_us;
} wm_image_times_t;

/* Fetches blob hex (64 hex) into path, unverified: discovery's FetchCode, or a test's copy. */
typedef int (*wm_blob_fetch_fn)(void *ud, const char *hex, const char *path, char *err, size_t errcap);

/* Makes <state>/images/rootfs/<manifest hex> exist (fetch every blob, verify, umoci
 * unpack with the ids shifted to --image-id-base, rename into place); a cached one has
 * its mtime touched (LRU). Blocking: a fetch thread's, never the pod thread's. 0 or -1
 * with err, a sentence for the function's cold start error. */
int wm_image_ensure(const wm_config_t *cfg, const struct Faas__ImageSpec *img, wm_image_times_t *t, char *err,
                    size_t errcap);
/* wm_image_ensure with another blob source (tests). */
int wm_image_ensure_with(const wm_config_t *cfg, const struct Faas__ImageSpec *img, wm_blob_fetch_fn fetch, void *ud,
                         wm_image_times_t *t, char *err, size_t errcap);
/* The cached rootfs of an image into out: <state>/images/rootfs/<manifest hex>; 0, or -1
 * when its digest is not "sha256:<64 hex>" or the path is too long. */
int wm_image_rootfs(const wm_config_t *cfg, const struct Faas__ImageSpec *img, char *out, size_t cap);
/* Runs `umoci --version` once (later calls answer from memory): 1 if it runs, else 0
 * after one event=umoci_missing warning. Call at start-up; ensure calls it too. */
int wm_image_umoci_ok(const wm_config_t *cfg);
/* Appends the image cache's metrics (Prometheus text) to buf at *n. */
void wm_image_metrics(char *buf, size_t cap, int *n);
/* Removes cached rootfs in neither list (hex digests), then the least recently used not
 * in use until the .size files total at most cfg->image_cache_bytes, and temp dirs older
 * than 10 minutes. Blocking (it deletes trees). *removed_bytes: what went. 0 or -1. */
int wm_image_gc(const wm_config_t *cfg, const char *const *needed_hex, size_t n_needed, const char *const *in_use_hex,
                size_t n_in_use, uint64_t *removed_bytes);

/* The ids of an image user: uid, gid and supplementary groups, and its home. */
typedef struct {
    uint32_t uid, gid;
    uint32_t groups[WM_IMAGE_MAX_GROUPS];
    size_t n_groups;
    char home[256];
} wm_image_ids_t;

/* What a user server in an image runs, as the image sees it; strings owned here. argv
 * and env are NULL-terminated. */
typedef struct {
    char **argv;
    size_t argc;
    char **env;
    size_t envc;
    char exe[PATH_MAX]; /* argv[0] found in the image: absolute */
    char cwd[PATH_MAX];
    uint32_t uid, gid;
    uint32_t groups[WM_IMAGE_MAX_GROUPS];
    size_t n_groups;
} wm_image_run_t;

/* Docker's user rules: "" (root), name, uid, and each with ":group" or ":gid"; names
 * from passwd and group (streams of the image's files, NULL when absent); a uid not in
 * passwd is taken with gid 0; without an explicit group the groups whose member list
 * names the user are its supplementary ones. Ids >= WM_IMAGE_IDS are refused. 0 or -1
 * with err naming ref. */
int wm_image_user(const char *user, FILE *passwd, FILE *group, const char *ref, wm_image_ids_t *ids, char *err,
                  size_t errcap);
/* Resolves spec (its image field set) against the unpacked rootfs: argv (the manifest's
 * command, else Entrypoint + Cmd), env (the image's, the manifest's over it by key),
 * cwd, ids, and exe (argv[0] in the image, along PATH without a '/'). Cheap enough for
 * the pod thread: no fork, a few file reads. 0, or -1 with err; out is freed on error. */
int wm_image_resolve(const char *rootfs, const struct Faas__FunctionSpec *spec, wm_image_run_t *out, char *err,
                     size_t errcap);
/* Frees what wm_image_resolve put in r. */
void wm_image_run_free(wm_image_run_t *r);
/* Points pb (initialized here) at r's strings and root: valid while r lives. */
void wm_image_run_pb(const wm_image_run_t *r, const char *root, struct Faas__ImageRun *pb);

/* ---- pods and the event loop (pods.c) ----------------------------------------------- */

typedef struct wm wm_t;
typedef struct faas_rpc_call faas_rpc_call_t;

/* Work posted to the pod thread by rpc handlers. */
int wm_post_acquire(wm_t *wm, faas_rpc_call_t *call, const uint8_t *req, size_t len);
int wm_post_release(wm_t *wm, faas_rpc_call_t *call, const uint8_t *req, size_t len);
/* Answers from the published snapshot (any thread). */
void wm_answer_list(wm_t *wm, faas_rpc_call_t *call, const uint8_t *req, size_t len);
void wm_answer_stats(wm_t *wm, faas_rpc_call_t *call);
void wm_answer_logs(wm_t *wm, faas_rpc_call_t *call, const uint8_t *req, size_t len);
/* Prometheus text into buf. */
size_t wm_metrics_text(wm_t *wm, char *buf, size_t cap);
/* Packs the current lease (malloc'd) for the heartbeat; empty=1 gives no instances. */
uint8_t *wm_lease_pack(wm_t *wm, int empty, size_t *len);

/* Logs: last n lines of file into a malloc'd array. */
int wm_tail_lines(const char *path, unsigned n, char ***lines, size_t *count);
/* The last n lines of a log whose older lines went to path.1 at its last rotation:
 * path's, preceded by path.1's when path alone has fewer. */
int wm_tail_log(const char *path, unsigned n, char ***lines, size_t *count);

/* ---- images, helper side (imagemount.c) ---- */

/* The user namespace image servers run in (ids 0..65535 -> image_id_base..), owned by
 * the pod uid; an fd to it, or -1 with err. Helper only. */
int wm_userns_make(const wm_config_t *cfg, char *err, size_t cap);
/* Mounts the cached rootfs <state>/images/rootfs/<hex> (overlay, a tmpfs upper of its
 * own) at WM_POD_ROOT_DIR in the mount namespace of pod init pid, with /proc, /dev,
 * /tmp and the resolver files. *upper_fd: the upper tmpfs, to close once the pod is
 * gone. 0; -1 with err; -2: the helper could not return to its own namespace self_mnt
 * (it must stop). Helper only. */
int wm_image_mount_pod(const wm_config_t *cfg, int self_mnt, pid_t pid, const char *hex, int *upper_fd, char *err,
                       size_t cap);

#endif

/* ---- daemon state shared by the pod thread and the rpc/heartbeat/metrics threads ---- */
#ifdef WM_STATE
#include "proto/faas.pb-c.h"
#include <pthread.h>

typedef enum { POD_STARTING, POD_WARM, POD_SPECIALIZING, POD_READY, POD_STOPPING } wm_pod_state_t;

typedef struct wm_acq wm_acq_t;

/* tasks.c: a task running in a pod, and its result while its chunks arrive */
typedef struct wm_ptask {
    struct wm_ptask *next;
    char id[40];
    Faas__TaskResult *res; /* TASK_DONE seen, chunks pending */
    size_t cap;
    int cancel_sent; /* CANCEL_TASK went to the agent: once is enough */
} wm_ptask_t;

typedef struct wm_pod wm_pod_t;

/* pool.c: the warm pool's two kinds of pods (issue 18, README "Pod kinds") */
typedef enum {
    WM_POD_GENERIC, /* the agent alone */
    WM_POD_PYTHON,  /* the agent was asked to hold a Python zygote (FAAS_AGENT_ZYGOTE) */
    WM_POD_KINDS
} wm_pod_kind_t;
/* "generic" or "python", for logs and metric labels. */
const char *wm_pod_kind_name(wm_pod_kind_t k);
/* The warm pod an acquisition takes, NULL if none is warm. A function a zygote can run
 * (fit: faas_spec_zygote_fit) takes a pod whose agent confirmed its zygote first; any
 * other takes a pod without one first, since its agent would kill the zygote it holds. */
wm_pod_t *wm_pool_pick(wm_pod_t *pods, int fit);
/* How many pods of each kind to spawn (out): a generic one for each of waiting
 * acquisitions and, unless deferred, pool[k] warm ones of each kind, less the pods of
 * that kind already STARTING or WARM (counted by the kind they were spawned as, so pods
 * whose agent could not make a zygote do not make the pool grow). A waiter's pod is
 * generic whatever it runs: a fresh zygote first imports the whole preload list, which
 * takes longer than python3 starting the script itself (README "Pod kinds"). */
void wm_pool_deficit(const wm_pod_t *pods, size_t waiting, const unsigned pool[WM_POD_KINDS], int deferred,
                     size_t out[WM_POD_KINDS]);
/* Warm pods by what they hold: python = zygote confirmed by HELLO, generic = the rest. */
void wm_pool_warm(const wm_pod_t *pods, uint32_t out[WM_POD_KINDS]);
/* The byte after a warm pod's record (pod_record) that keeps its kind for a successor,
 * and its reading; a record without it (an older WM's) leaves the pod generic. */
uint8_t wm_pool_rec_byte(const wm_pod_t *p);
void wm_pool_rec_apply(wm_pod_t *p, const uint8_t *tail, size_t len);

/* Feeds one TASK_* event of a pod running instance inst: 1 with *out a packed TaskReport to
 * relay (malloc'd), 0 when nothing is to be said yet (a chunked result is incomplete), -1 on a
 * malformed event. list is the pod's running tasks, kept up to date. A TASK_FAILED with
 * no_retry, or a result body past max_result bytes, becomes a REJECTED report. */
int wm_task_feed(wm_ptask_t **list, const Faas__AgentEvent *ev, const char *inst, uint64_t max_result, uint8_t **out,
                 size_t *len);
/* The pod a cancel of task id (running on instance inst, "" = not known) goes to: the one
 * running inst, else the one whose list has the task; NULL when none runs it here. */
wm_pod_t *wm_task_route(wm_pod_t *pods, const char *id, const char *inst);
/* 1 when a ReportTask reply (a packed Task) asks for the task to be aborted (running with
 * cancel_requested), with its id and instance copied out; else 0. */
int wm_task_cancel_wanted(const uint8_t *task, size_t len, char *id, size_t idcap, char *inst, size_t instcap);
/* 1 when a Watch message is a TASK_CANCEL, with the task's id and instance copied out; else 0. */
int wm_task_cancel_event(const Faas__WatchEvent *e, char *id, size_t idcap, char *inst, size_t instcap);
/* A TASK_CANCEL from the watch: CANCEL_TASK to the pod, if the instance is ours. */
void wm_task_on_cancel(wm_t *wm, const Faas__WatchEvent *e);
/* The pod is gone: posts a FAILED report (why) for each task of list, empties it; how many. */
size_t wm_task_gone(wm_ptask_t **list, const char *inst, const char *why,
                    void (*post)(void *ud, uint8_t *pkt, size_t len), void *ud);
/* Queues a packed TaskReport (takes buf) for the relay thread. Never blocks on the network. */
void wm_task_post(void *ud, uint8_t *buf, size_t len);
/* Starts / stops (after relaying what is queued) the thread that calls ReportTask; a reply
 * asking for a cancel is posted to wm's pod thread. */
int wm_task_relay_start(wm_t *wm);
void wm_task_relay_stop(void);
/* Starts the thread that watches discovery's TASK_CANCEL events and posts those for this
 * worker's instances to the pod thread. Never joined: it lives until the process exits. */
/* The one Watch stream on discovery (watch.c): functions, workers, task cancels. */
int wm_watch_start(wm_t *wm);

struct wm_pod {
    struct wm_pod *next;
    char id[20];
    pid_t pid;
    int ctl;
    wm_pod_state_t state;
    uint32_t addr; /* its own address (host order): the agent listens at addr:port */
    uint32_t port;
    uint32_t direct_port;  /* the agent's direct listener (HELLO; 0 = none): addr:direct_port */
    uint64_t direct_calls; /* calls it took there (DIRECT_CALLS, cumulative): Instance.direct_calls */
    uint64_t deadline_us; /* HELLO, READY or STOP deadline; 0 = none */
    char inst_id[24];
    char function[64];
    uint64_t version;
    int64_t started_ms;
    uint32_t concurrency;
    int overloaded;            /* OVERLOAD reported, RECOVERED not yet */
    wm_acq_t *acq;             /* the acquisition being served while SPECIALIZING */
    Faas__AcquireRequest *req; /* what the pod runs (READY): kept to scale up on OVERLOAD */
    wm_ptask_t *tasks;         /* async tasks it runs */
    int reserved;              /* kept for FunctionSpec.reserved (reserved.c): never released on request */
    uint64_t cgroup_id;        /* watched by the run-queue probe (runqpods.c); 0: not */
    uint64_t runq_sent_waits;  /* the probe's count of waits last sent to the agent */
    uint64_t runq_fired_us;    /* the last overload judged here on a probe alert */
    uint64_t t_overload;       /* started by a scale-up: when the report came, until its first request */
    uint64_t log_dropped_bytes, log_dropped_lines; /* the agent's last reported totals (logrot.c) */
    wm_pod_kind_t kind;                            /* what it was spawned as: the pool slot it fills until taken */
    int zygote;                                    /* its agent's HELLO said it holds a zygote (AgentEvent.zygote) */
};

struct wm_acq {
    wm_acq_t *next;
    faas_rpc_call_t *call; /* NULL: the WM's own scale-up after an OVERLOAD */
    Faas__AcquireRequest *req;
    uint64_t t0, t_code_start, t_code_done, t_taken, t_sent, deadline_us;
    int code_ready;
    int agent_logged;    /* the agent wrote why it failed into the function's log */
    char inst_id[24];    /* the instance being made for it, once a pod is taken */
    int reserved;        /* started by reserved.c: the instance will be RESERVED */
    int fit;             /* faas_spec_zygote_fit of its spec: which pod kind it prefers */
    uint64_t t_overload; /* a scale-up: when the OVERLOAD that asked for it came (else 0) */
    uint32_t image_fetch_us, image_unpack_us; /* an image this host had not cached */
    wm_image_run_t *run;                      /* an image's server, resolved once its rootfs is here */
};

/* A function's last cold start failure on this worker, sent with every lease renewal
 * until a cold start of the function succeeds here (then discovery forgets it too). */
typedef struct {
    char function[64];
    uint64_t version;
    char message[256]; /* the line clients see: "cold start failed: <reason>" */
    int64_t unix_ms;
} wm_fn_error_t;

#define WM_MAX_FN_ERRORS 64

typedef enum { WORK_ACQUIRE, WORK_RELEASE, WORK_CODE_DONE, WORK_CANCEL_TASK } wm_work_kind_t;

typedef struct wm_work {
    struct wm_work *next;
    wm_work_kind_t kind;
    faas_rpc_call_t *call;
    wm_acq_t *acq;
    char arg[128]; /* instance id (RELEASE, CANCEL_TASK) or sha256 of code or image manifest (CODE_DONE) */
    uint32_t image_fetch_us, image_unpack_us; /* CODE_DONE of an image */
    char task[40]; /* CANCEL_TASK */
    int rc;
    char err[256];
} wm_work_t;

/* scale.c: what scaling on OVERLOAD reports as metrics. */
enum {
    WM_SIG_QUEUEING,
    WM_SIG_RUNQ,
    WM_SIG_CPU_PRESSURE,
    WM_SIG_CPU_THROTTLED,
    WM_SIG_CONCURRENCY,
    WM_SIG_UNKNOWN,
    WM_SIG_N
};
#define WM_SCALE_BUCKETS 12
typedef struct {
    uint64_t bucket[WM_SCALE_BUCKETS + 1]; /* last: +Inf */
    uint64_t sum_us, count;
} wm_hist_t;
typedef struct {
    uint64_t by_signal[WM_SIG_N];
    wm_hist_t ready; /* report to the new instance's READY */
    wm_hist_t first; /* report to the new instance's first request */
} wm_scale_stats_t;
/* The index of an OVERLOAD's signal name (WM_SIG_UNKNOWN for none or another). */
int wm_scale_signal(const char *name);
/* Counts one report-to-READY or report-to-first-request time. */
void wm_hist_observe(wm_hist_t *h, uint64_t us);
/* Appends the scale metrics (Prometheus text) to buf at *n; caller holds mu. */
void wm_scale_metrics(const wm_scale_stats_t *st, char *buf, size_t cap, int *n);
/* How many instances to start for an OVERLOAD asking for degree more, with starting already
 * on their way and have running (ready or starting), under max. */
uint32_t wm_scale_count(uint32_t degree, uint32_t starting, uint32_t have, uint32_t max);
/* The instance limit on this worker for a report of signal: a CPU signal (run-queue
 * latency, CPU pressure, throttling) says the pod wants more CPU, and instances past
 * what the host's ncpu can run side by side, each with its quota of cpu_millis, add
 * none: at most ncpu*1000/cpu_millis, and 1 without a quota (one pod may use every CPU,
 * so its CPU waits are the host's). Queueing is not bounded so: other signals get max. */
uint32_t wm_scale_cpu_cap(int signal, uint32_t max, uint32_t cpu_millis, uint32_t ncpu);

/* denials.c: the user servers' seccomp refusals (SECCOMP_DENIALS events), by function
 * and syscall, as faas_wm_seccomp_denials_total. */
#define WM_DENIALS_MAX 1024 /* series kept (about 100 bytes of /metrics each); past it new ones are dropped */
typedef struct {
    char function[64], syscall[32];
    uint64_t count;
} wm_denial_t;
typedef struct {
    wm_denial_t *v;
    size_t n, cap;
    int full_said;
} wm_denials_t;
/* Adds an event's counts for function; names that are not [a-z0-9_] (syscall) or not
 * printable without quotes (function) are dropped. Caller holds mu. How many were taken. */
size_t wm_denials_add(wm_denials_t *d, const char *function, Faas__SyscallDenials *const *items, size_t n);
/* Appends faas_wm_seccomp_denials_total (Prometheus text) to buf at *n; caller holds mu. */
void wm_denials_metrics(const wm_denials_t *d, char *buf, size_t cap, int *n);
/* Frees the table. */
void wm_denials_free(wm_denials_t *d);

/* What other threads may read, copied out by the pod thread under mu. */
typedef struct {
    char id[24], function[64], endpoint[32], direct_endpoint[32];
    uint64_t version;
    uint64_t direct_calls;
    int64_t started_ms;
    uint32_t pid, concurrency;
    int reserved;
    int overloaded; /* its agent reported OVERLOAD and not yet RECOVERED */
} wm_inst_snap_t;

struct wm {
    const wm_config_t *cfg;
    struct faas_rpc_server *rpc; /* set before the metrics thread starts: its refusal counters */
    wm_cg_layout_t cg;
    wm_helper_t helper;
    int efd, sfd;
    wm_adopted_t *adopted; /* a crashed predecessor's pods, taken over by the loop's start */
    size_t n_adopted;
    char prev_id[64]; /* the previous run's id (<state>/worker.id), deregistered first if not ours */

    /* pod thread only */
    wm_pod_t *pods;
    wm_acq_t *waiting_code, *waiting_pod;
    char (*fetching)[65];
    size_t n_fetching;
    uint64_t refill_after_us, refill_defer_us;
    int runq;              /* the run-queue probe is loaded (runq.c) */
    uint64_t runq_next_us; /* the next RUNQ figures round */
    /* no heartbeat is woken before this (a cold start is in flight): discovery, its
     * watchers and the heartbeat would take the CPU from the starting user server */
    uint64_t hb_quiet_until_us;
    int hb_pending; /* a change was published during the quiet window */
    int stop;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    wm_work_t *work_head, *work_tail;
    int closing, changed, hb_stop;
    wm_inst_snap_t *snap;
    size_t n_snap;
    uint32_t pool_ready, pool_starting;
    uint32_t pool_warm[WM_POD_KINDS]; /* warm pods by what they hold (wm_pool_warm) */
    uint64_t zygote_starts;           /* cold starts whose READY said the server runs in the zygote */
    uint64_t acquisitions, cold_starts, failures, overloads, pods_spawned;
    wm_scale_stats_t scale; /* OVERLOAD reports by signal, report-to-READY times */
    wm_denials_t denials;   /* seccomp refusals by function and syscall */
    uint64_t last_total_us;
    wm_fn_error_t errors[WM_MAX_FN_ERRORS];
    size_t n_errors;
    wm_load_t load; /* the host's headroom as the heartbeat last sampled it (load.c) */
};

/* pods.c */
/* "a.b.c.d:port", where dispatchers reach p's agent. */
void wm_pod_endpoint(const wm_pod_t *p, char *out, size_t cap);
/* "a.b.c.d:direct_port", where a mesh reaches p's direct port; "" if the agent has none. */
void wm_pod_direct_endpoint(const wm_pod_t *p, char *out, size_t cap);
/* Asks the pod thread to send CANCEL_TASK for task id to the pod running it (any thread). */
int wm_post_cancel_task(wm_t *wm, const char *id, const char *inst);
/* 1 if inst is one of this worker's instances (from the published snapshot; any thread). */
int wm_owns_instance(wm_t *wm, const char *inst);
/* Starts an acquisition of the worker's own (no caller waits on a->call == NULL). */
void wm_acquire_own(wm_t *wm, wm_acq_t *a);
/* An overload of pod p (fire) or its end, judged by "agent" or "worker-manager":
 * counted by signal, shown to discovery (Instance.overloaded), and scaled on. */
void wm_pod_overload(wm_t *wm, wm_pod_t *p, const char *signal, uint32_t degree, int fire, const char *by);
/* Takes a READY instance out of the set and tells its agent to stop (Release's path). */
void wm_pod_stop(wm_t *wm, wm_pod_t *p);

/* runqpods.c: the run-queue probe's figures to the pods' agents */
/* Loads the probe unless the config says not to; says in the log whether it runs. */
void wm_runq_start(wm_t *wm);
/* Watches a new pod's cgroup; forgets a pod's. */
void wm_runq_pod_new(wm_t *wm, wm_pod_t *p);
void wm_runq_pod_gone(wm_t *wm, wm_pod_t *p);
/* Pod thread: sends the figures that changed to READY pods when due; when next (us). */
uint64_t wm_runq_tick(wm_t *wm, uint64_t now);

/* logrot.c: the functions' log files kept bounded (docs/security.md "Bounded logs") */
/* How far past logs.max_bytes a file may grow before the tick rotates it without an
 * agent's asking: agents stop within a line (at most ~8 KiB formatted) and a marker
 * each, so this covers some thirty pods filling one file at the same moment. */
#define WM_LOG_SLACK_BYTES (256u << 10)
#define WM_LOG_TICK_US 1000000u
/* <state>/logs/<fn>.log (idx 0) or its rotated <fn>.log.<idx>; 0 or -1 when too long. */
int wm_log_path(char *out, size_t cap, const char *state_dir, const char *fn, unsigned idx);
/* Rotates fn's files: .keep is emptied and removed, .i becomes .i+1, the current file
 * .1 (the next open creates a fresh one). 0, or -1 with errno. */
int wm_log_shift(const char *state_dir, const char *fn, unsigned keep);
/* What an agent's new total adds to what was seen of it (seen is updated); 0 if less. */
uint64_t wm_log_delta(uint64_t *seen, uint64_t total);
/* Opens fn's current log file for appending (created if missing); fd or -1. */
int wm_log_open(wm_t *wm, const char *fn);
/* Sends msg packed with fd beside it (SCM_RIGHTS), with send flags (MSG_DONTWAIT); 0 or -1. */
int wm_send_fd(int ctl, const ProtobufCMessage *msg, int fd, int flags);
/* The same with nfds fds in one packet (SPECIALIZE of an image: the log and the user namespace). */
int wm_send_fds(int ctl, const ProtobufCMessage *msg, const int *fds, size_t nfds, int flags);
/* LOG_ROTATE or LOG_DROPPED from pod p: counted, and the file rotated or p's fd renewed. */
void wm_log_event(wm_t *wm, wm_pod_t *p, const Faas__AgentEvent *ev);
/* Pod thread: once a second, rotates files past their bound plus slack; when next (us). */
uint64_t wm_log_tick(wm_t *wm, uint64_t now);
/* Appends the log metrics (Prometheus text) to buf at *n. */
void wm_log_metrics(char *buf, size_t cap, int *n);

/* reserved.c */
/* This worker's part of total reserved instances: total split evenly over the distinct
 * worker ids, the remainder to the first ids in sorted order; 0 if me is not listed. */
uint32_t wm_reserved_share(const char *const *workers, size_t n, const char *me, uint32_t total);
/* Starts the thread that watches discovery's functions and workers for reserved.c. */
/* Function and worker events from the watch; forget before a fresh stream's snapshot. */
void wm_reserved_on_event(wm_t *wm, const Faas__WatchEvent *e);
void wm_reserved_forget(void);
/* The manifest sha256s of the current versions' images (malloc'd, *n of them), for the
 * image cache sweep; -1 before the watch's first snapshot (nothing is known unneeded). */
int wm_reserved_needed_images(char (**out)[65], size_t *n);

/* imagegc.c */
/* The hex of img's manifest digest ("sha256:<hex>"); NULL if img is NULL or not one. */
const char *wm_image_hex(const Faas__ImageSpec *img);
/* Pod thread: starts a sweep of the image cache every 30 s; when to call it again. */
uint64_t wm_image_gc_tick(wm_t *wm, uint64_t now);
/* Pod thread: starts, stops and replaces this worker's reserved instances when the
 * watch saw a change or a tick passed; returns when it wants to run next (us). */
uint64_t wm_reserved_reconcile(wm_t *wm, uint64_t now);
int wm_loop_init(wm_t *wm);
void wm_loop_run(wm_t *wm);
void wm_loop_shutdown(wm_t *wm);
#endif
