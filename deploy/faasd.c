/* deploy/faasd.c - runs a one-machine platform: faas-discovery, one faas-workermgr and
 * faas-gateway as child processes, started in order (each waits for the previous to
 * accept TCP connections), restarted with backoff when they crash, stopped in
 * reverse order on SIGINT/SIGTERM.
 *
 * faasd never calls grpc: it only spawns, waits and signals. Children are spawned
 * with posix_spawn in their own process group, so a terminal's Ctrl-C reaches only
 * faasd, which then stops them in order (the gateway first, discovery last). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "deploy/args.h"

extern char **environ;

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
enum {
    READY_TIMEOUT_MS = 20000,
    STOP_TIMEOUT_MS = 10000,
    BACKOFF_MIN_MS = 500,
    BACKOFF_MAX_MS = 30000,
    STABLE_MS = 10000,
    MAX_ARGS = 24
};

typedef struct {
    const char *name;     /* "discovery" */
    char path[PATH_MAX];  /* binary */
    char *argv[MAX_ARGS]; /* argv[0] = path */
    int argc;
    char ready_addr[128]; /* host:port that accepts once it is up */
    pid_t pid;
    uint64_t started_ms, restart_at_ms;
    unsigned backoff_ms, restarts;
} child_t;

/* The flags plus the paths derived from them for the children's argv. */
typedef struct {
    faasd_args_t f;
    char disc_state[PATH_MAX], wm_state[PATH_MAX], agent[PATH_MAX];
    char token[PATH_MAX + 16]; /* discovery makes it at its first start; the others read it */
} config_t;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("faasd: ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
}

static void default_bin_dir(char *out, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        snprintf(out, cap, ".");
        return;
    }
    exe[n] = '\0';
    snprintf(out, cap, "%s", dirname(exe));
}

/* ---- children ----------------------------------------------------------------------- */

static void add_arg(child_t *ch, const char *a)
{
    if (ch->argc < MAX_ARGS - 1)
        ch->argv[ch->argc++] = (char *)a;
    ch->argv[ch->argc] = NULL;
}

static int setup_child(child_t *ch, const char *name, const char *bin_dir, const char *bin, const char *ready)
{
    memset(ch, 0, sizeof(*ch));
    ch->name = name;
    snprintf(ch->path, sizeof(ch->path), "%s/%s", bin_dir, bin);
    snprintf(ch->ready_addr, sizeof(ch->ready_addr), "%s", ready);
    ch->backoff_ms = BACKOFF_MIN_MS;
    add_arg(ch, ch->path);
    if (access(ch->path, X_OK) != 0) {
        fprintf(stderr, "faasd: cannot run %s: %s (use --bin-dir)\n", ch->path, strerror(errno));
        return -1;
    }
    return 0;
}

static int build_children(config_t *c, child_t *ch)
{
    if (setup_child(&ch[0], "discovery", c->f.bin_dir, "faas-discovery", c->f.disc) != 0 ||
        setup_child(&ch[1], "workermgr", c->f.bin_dir, "faas-workermgr", c->f.wm) != 0 ||
        setup_child(&ch[2], "gateway", c->f.bin_dir, "faas-gateway", c->f.http) != 0)
        return -1;
    snprintf(c->disc_state, sizeof(c->disc_state), "%s/discovery", c->f.state_dir);
    snprintf(c->wm_state, sizeof(c->wm_state), "%s/worker", c->f.state_dir);
    snprintf(c->agent, sizeof(c->agent), "%s/faas-agent", c->f.bin_dir);
    snprintf(c->token, sizeof(c->token), "%s/token", c->disc_state);
    const char *d[] = {"--listen", c->f.disc, "--metrics-listen", c->f.disc_metrics, "--state-dir", c->disc_state};
    const char *w[] = {"--listen", c->f.wm,       "--metrics-listen", c->f.wm_metrics, "--discovery",
                       c->f.disc,  "--state-dir", c->wm_state,        "--pool-size",   c->f.pool,
                       "--agent",  c->agent,      "--token-file",     c->token};
    const char *g[] = {"--listen", c->f.http, "--discovery", c->f.disc, "--token-file", c->token};
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
        add_arg(&ch[0], d[i]);
    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++)
        add_arg(&ch[1], w[i]);
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++)
        add_arg(&ch[2], g[i]);
    if (c->f.thrift[0] != '\0') { /* else the gateway's default, 127.0.0.1:8082, best effort */
        add_arg(&ch[2], "--thrift-listen");
        add_arg(&ch[2], c->f.thrift);
    }
    if (c->f.grpc[0] != '\0') { /* else the gateway's default, 127.0.0.1:8081, best effort */
        add_arg(&ch[2], "--grpc-listen");
        add_arg(&ch[2], c->f.grpc);
    }
    if (c->f.pool_python[0] != '\0') { /* else the worker manager's default */
        add_arg(&ch[1], "--pool-python");
        add_arg(&ch[1], c->f.pool_python);
    }
    if (c->f.python_preload[0] != '\0') {
        add_arg(&ch[1], "--python-preload");
        add_arg(&ch[1], c->f.python_preload);
    }
    if (c->f.gw_threads[0] != '\0') { /* else the gateway's default: one loop per online CPU */
        add_arg(&ch[2], "--threads");
        add_arg(&ch[2], c->f.gw_threads);
    }
    if (faas_mkdirs(c->disc_state, 0755) != 0 || faas_mkdirs(c->wm_state, 0755) != 0) {
        fprintf(stderr, "faasd: cannot create state dir %s: %s\n", c->f.state_dir, strerror(errno));
        return -1;
    }
    /* the worker manager refuses it too, but only after discovery is up: say it first */
    char why[PATH_MAX + 128];
    if (faas_check_code_dir(c->wm_state, why, sizeof(why)) != 0) {
        fprintf(stderr, "faasd: unusable --state-dir %s: %s\n", c->f.state_dir, why);
        return -1;
    }
    return 0;
}

static int spawn_child(child_t *ch)
{
    posix_spawnattr_t at;
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&dflt, sigs[i]);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dflt);
    posix_spawnattr_setpgroup(&at, 0);
    int rc = posix_spawn(&ch->pid, ch->path, NULL, &at, ch->argv, environ);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        ch->pid = 0;
        fprintf(stderr, "faasd: cannot start %s: %s\n", ch->path, strerror(rc));
        return -1;
    }
    ch->started_ms = faas_now_ms();
    return 0;
}

static int tcp_accepts(const char *addr)
{
    char host[100];
    uint16_t port;
    const char *err;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (faas_parse_hostport(addr, host, sizeof(host), &port, &err) != 0)
        return 0;
    sa.sin_port = htons(port);
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Reaps ch if it has exited; returns 1 (and describes the status) if it has. */
static int reaped(child_t *ch, char *how, size_t cap)
{
    int st;
    if (ch->pid <= 0 || waitpid(ch->pid, &st, WNOHANG) != ch->pid)
        return 0;
    if (WIFEXITED(st))
        snprintf(how, cap, "exited with status %d", WEXITSTATUS(st));
    else
        snprintf(how, cap, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    ch->pid = 0;
    return 1;
}

/* Waits for a signal up to ms; returns the signal or 0. */
static int wait_signal(const sigset_t *set, unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    int sig = sigtimedwait(set, NULL, &ts);
    return sig > 0 ? sig : 0;
}

/* Polls the child's port until it accepts. 0 ready, -1 failed, or the stop signal. */
static int wait_ready(child_t *ch, const sigset_t *set)
{
    uint64_t deadline = faas_now_ms() + READY_TIMEOUT_MS;
    char how[96];
    while (faas_now_ms() < deadline) {
        if (tcp_accepts(ch->ready_addr))
            return 0;
        if (reaped(ch, how, sizeof(how))) {
            fprintf(stderr, "faasd: %s %s before it was ready\n", ch->name, how);
            return -1;
        }
        int sig = wait_signal(set, 50);
        if (sig == SIGINT || sig == SIGTERM)
            return sig;
    }
    fprintf(stderr, "faasd: %s did not accept on %s within %d s\n", ch->name, ch->ready_addr, READY_TIMEOUT_MS / 1000);
    return -1;
}

static void stop_child(child_t *ch, const sigset_t *set)
{
    char how[96];
    if (ch->pid <= 0)
        return;
    kill(ch->pid, SIGTERM);
    uint64_t deadline = faas_now_ms() + STOP_TIMEOUT_MS;
    while (!reaped(ch, how, sizeof(how))) {
        if (faas_now_ms() >= deadline) {
            fprintf(stderr, "faasd: %s did not stop within %d s; killing it\n", ch->name, STOP_TIMEOUT_MS / 1000);
            kill(ch->pid, SIGKILL);
            waitpid(ch->pid, NULL, 0);
            ch->pid = 0;
            return;
        }
        wait_signal(set, 20); /* SIGCHLD wakes us early */
    }
    say("%s stopped", ch->name);
}

static void stop_all(child_t *ch, int n, const sigset_t *set)
{
    for (int i = n - 1; i >= 0; i--)
        stop_child(&ch[i], set);
}

/* After startup: reap crashes, schedule restarts with backoff, restart when due. */
static void supervise_tick(child_t *ch, int n)
{
    char how[96];
    uint64_t now = faas_now_ms();
    for (int i = 0; i < n; i++) {
        child_t *c = &ch[i];
        pid_t old = c->pid;
        if (reaped(c, how, sizeof(how))) {
            /* a child that stayed up a while starts over with a short backoff */
            if (now - c->started_ms >= STABLE_MS)
                c->backoff_ms = BACKOFF_MIN_MS;
            c->restart_at_ms = now + c->backoff_ms;
            say("%s (pid %d) %s; restarting in %u ms", c->name, (int)old, how, c->backoff_ms);
            c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
        }
        if (c->pid == 0 && c->restart_at_ms != 0 && now >= c->restart_at_ms) {
            c->restart_at_ms = 0;
            if (spawn_child(c) == 0) {
                c->restarts++;
                say("%s restarted (pid %d, restart %u)", c->name, (int)c->pid, c->restarts);
            } else
                c->restart_at_ms = now + c->backoff_ms;
        }
    }
}

int main(int argc, char **argv)
{
    config_t cfg;
    child_t ch[3];
    sigset_t set;
    const char *err = NULL;
    memset(&cfg, 0, sizeof(cfg));
    int rc = faasd_args_parse(argc, argv, &cfg.f, &err);
    if (rc == 1) {
        fputs(faasd_args_usage, stdout);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "faasd: %s (see faasd --help)\n", err);
        return EXIT_USAGE;
    }
    if (cfg.f.bin_dir[0] == '\0')
        default_bin_dir(cfg.f.bin_dir, sizeof(cfg.f.bin_dir));
    if (build_children(&cfg, ch) != 0)
        return EXIT_RUNTIME;

    /* A shell starts background jobs with SIGINT ignored; undo that so Ctrl-C and
     * kill -INT work, then take every signal synchronously. */
    sigemptyset(&set);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        signal(sigs[i], SIG_DFL);
        sigaddset(&set, sigs[i]);
    }
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (int i = 0; i < 3; i++) {
        if (spawn_child(&ch[i]) != 0) {
            stop_all(ch, i, &set);
            return EXIT_RUNTIME;
        }
        int r = wait_ready(&ch[i], &set);
        if (r != 0) {
            stop_all(ch, i + 1, &set);
            return r > 0 ? 0 : EXIT_RUNTIME;
        }
        say("%s up on %s (pid %d)", ch[i].name, ch[i].ready_addr, (int)ch[i].pid);
    }
    say("platform up: http://%s (discovery %s)", cfg.f.http, cfg.f.disc);
    /* started first and ready: discovery has made the token by now (unless FAAS_TOKEN is set) */
    if (getenv("FAAS_TOKEN") == NULL || getenv("FAAS_TOKEN")[0] == '\0')
        say("control-plane token in %s (faasctl reads ./.faas/discovery/token; elsewhere give it "
            "--token-file or FAAS_TOKEN)",
            cfg.token);

    for (;;) {
        int sig = wait_signal(&set, 200);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
            say("got %s, stopping", strsignal(sig));
            stop_all(ch, 3, &set);
            say("platform stopped");
            return 0;
        }
        supervise_tick(ch, 3);
    }
}
