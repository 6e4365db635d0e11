/* The function store on etcd (store_etcd.c) against a real etcd that each test starts
 * (Debian's /usr/bin/etcd) on free loopback ports in a temp dir: deploys, versions that
 * survive deletes and concurrent deploys, artifact records, the watch that keeps a
 * registry current, and what a caller sees when etcd is gone. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "discovery/discovery.h"
#include "etcdc/etcdc.h"
#include "tests/unit/watchdog.h"

#define ETCD_BIN "/usr/bin/etcd"

static char dir[256];
static char endpoint[64];
static pid_t etcd_pid;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* 1 if GET /health on port answers healthy. */
static int healthy(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char buf[2048];
    size_t got = 0;
    ssize_t n;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return 0;
    }
    static const char req[] = "GET /health HTTP/1.0\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        close(fd);
        return 0;
    }
    while (got < sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
    close(fd);
    return strstr(buf, "\"health\":\"true\"") != NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void start_etcd(void)
{
    int cport = free_port(), pport = free_port();
    char data[300], curl[64], purl[64], cluster[96], log[300];
    snprintf(data, sizeof(data), "%s/etcd", dir);
    snprintf(log, sizeof(log), "%s/etcd.log", dir);
    snprintf(curl, sizeof(curl), "http://127.0.0.1:%d", cport);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", pport);
    snprintf(cluster, sizeof(cluster), "default=%s", purl);
    snprintf(endpoint, sizeof(endpoint), "etcd://127.0.0.1:%d", cport);
    etcd_pid = fork();
    cr_assert(etcd_pid >= 0);
    if (etcd_pid == 0) {
        /* a test process that dies without its teardown (a sanitizer abort, a
         * timeout) takes its etcd with it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *f = freopen(log, "w", stdout);
        (void)f;
        dup2(1, 2);
        execl(ETCD_BIN, ETCD_BIN, "--data-dir", data, "--listen-client-urls", curl, "--advertise-client-urls", curl,
              "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl, "--initial-cluster", cluster, "--name",
              "default", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) { /* 30 s at most */
        if (healthy(cport))
            return;
        sleep_ms(100);
    }
    cr_assert_fail("etcd did not become healthy (see %s)", log);
}

static void stop_etcd(void)
{
    if (etcd_pid > 0) {
        kill(etcd_pid, SIGKILL);
        waitpid(etcd_pid, NULL, 0);
        etcd_pid = 0;
    }
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/disc-etcd-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    if (access(ETCD_BIN, X_OK) != 0)
        cr_skip_test("no %s", ETCD_BIN);
    start_etcd();
}

static void teardown(void)
{
    char cmd[300];
    stop_etcd();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* the suite's bound covers its fixtures too (tests/unit/watchdog.h) */
static void setup_bounded(void)
{
    UNIT_WATCHDOG(120);
    setup();
}

TestSuite(store_etcd, .init = setup_bounded, .fini = teardown);

/* A store with a state dir of its own (one "host"). */
static disc_store_t *open_host(const char *name)
{
    char sd[300], err[512];
    snprintf(sd, sizeof(sd), "%s/%s", dir, name);
    disc_store_t *st = disc_store_open_etcd(sd, endpoint, "/t/", err, sizeof(err));
    cr_assert_not_null(st, "%s", err);
    disc_store_set_advertise(st, name);
    cr_assert_str_eq(disc_store_backend(st), "etcd");
    return st;
}

/* Uploads bytes into st's artifact dir and records the holder, as UploadCode does. */
static void upload(disc_store_t *st, const char *content, char *sha)
{
    const char *err = NULL;
    uint64_t size = 0;
    disc_upload_t *up = disc_upload_begin(disc_store_artifact_dir(st), 1 << 20, &err);
    cr_assert_not_null(up, "%s", err);
    cr_assert_eq(disc_upload_write(up, (const uint8_t *)content, strlen(content), &err), 0);
    cr_assert_eq(disc_upload_commit(up, sha, &size, &err), 0, "%s", err);
    cr_assert_eq(disc_store_artifact_added(st, sha, size), 0);
}

static char *argv_hello[] = {"./hello"};

static int deploy(disc_store_t *st, const char *name, const char *sha, uint64_t *version)
{
    Faas__FunctionSpec s = FAAS__FUNCTION_SPEC__INIT, *out = NULL;
    char err[512];
    s.name = (char *)name;
    s.n_command = 1;
    s.command = argv_hello;
    s.code_sha256 = (char *)sha;
    int rc = disc_store_deploy(st, &s, &out, err, sizeof(err));
    if (rc == 0) {
        *version = out->version;
        faas__function_spec__free_unpacked(out, NULL);
    }
    return rc;
}

Test(store_etcd, deploy_get_list_delete)
{
    char sha[65];
    uint64_t v = 0;
    disc_store_t *st = open_host("a");
    upload(st, "code of a", sha);
    cr_assert_eq(deploy(st, "fa", sha, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(deploy(st, "fb", sha, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(deploy(st, "fa", sha, &v), 0);
    cr_assert_eq(v, 2);
    Faas__FunctionSpec *got = NULL;
    cr_assert_eq(disc_store_get(st, "fa", &got), 0);
    cr_assert_str_eq(got->name, "fa");
    cr_assert_eq(got->version, 2);
    cr_assert_str_eq(got->code_sha256, sha);
    cr_assert_gt(got->created_unix_ms, 0);
    faas__function_spec__free_unpacked(got, NULL);
    Faas__FunctionSpec **list;
    size_t n;
    cr_assert_eq(disc_store_list(st, &list, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(list[0]->name, "fa");
    cr_assert_str_eq(list[1]->name, "fb");
    disc_store_free_list(list, n);
    cr_assert_eq(disc_store_deploys(st), 3);
    cr_assert_eq(disc_store_delete(st, "fa"), 0);
    cr_assert_eq(disc_store_get(st, "fa", &got), -ENOENT);
    cr_assert_eq(disc_store_delete(st, "fa"), -ENOENT);
    /* an artifact nobody uploaded is refused as on SQLite */
    cr_assert_eq(deploy(st, "fc", "0000000000000000000000000000000000000000000000000000000000000000", &v), -EINVAL);
    disc_store_close(st);
}

Test(store_etcd, version_survives_delete_and_other_discoveries)
{
    char sha[65];
    uint64_t v = 0;
    disc_store_t *a = open_host("a"), *b = open_host("b");
    upload(a, "code", sha);
    cr_assert_eq(deploy(a, "f", sha, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(disc_store_delete(a, "f"), 0);
    /* b has no file of the artifact, but etcd says a holds it */
    cr_assert_eq(deploy(b, "f", sha, &v), 0);
    cr_assert_eq(v, 2);
    cr_assert_eq(deploy(a, "f", sha, &v), 0);
    cr_assert_eq(v, 3);
    cr_assert_eq(disc_store_deploys(b), 3);
    disc_store_close(a);
    disc_store_close(b);
}

typedef struct {
    disc_store_t *st;
    const char *sha;
    uint64_t versions[20];
    int fails;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    for (int i = 0; i < 20; i++)
        if (deploy(r->st, "hot", r->sha, &r->versions[i]) != 0)
            r->fails++;
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Two discoveries deploying one name at once: every deploy gets its own version. */
Test(store_etcd, concurrent_deploys_get_distinct_versions)
{
    char sha[65];
    disc_store_t *a = open_host("a"), *b = open_host("b");
    upload(a, "hot code", sha);
    racer_t ra = {.st = a, .sha = sha}, rb = {.st = b, .sha = sha};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race, &ra);
    pthread_create(&tb, NULL, race, &rb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cr_assert_eq(ra.fails + rb.fails, 0);
    uint64_t all[40];
    memcpy(all, ra.versions, sizeof(ra.versions));
    memcpy(all + 20, rb.versions, sizeof(rb.versions));
    qsort(all, 40, sizeof(all[0]), cmp_u64);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(all[i], (uint64_t)i + 1, "versions not 1..40: [%d] = %llu", i, (unsigned long long)all[i]);
    Faas__FunctionSpec *got = NULL;
    cr_assert_eq(disc_store_get(b, "hot", &got), 0);
    cr_assert_eq(got->version, 40);
    faas__function_spec__free_unpacked(got, NULL);
    disc_store_close(a);
    disc_store_close(b);
}

Test(store_etcd, artifact_records_name_every_holder)
{
    char sha[65], sha2[65], err[512];
    disc_store_t *a = open_host("a"), *b = open_host("b");
    upload(a, "shared bytes", sha);
    cr_assert_eq(disc_artifact_exists(disc_store_artifact_dir(b), sha), -ENOENT);
    cr_assert_eq(disc_store_artifact_known(b, sha), 0);
    cr_assert_eq(disc_store_artifact_known(b, "1111111111111111111111111111111111111111111111111111111111111111"),
                 -ENOENT);
    cr_assert_eq(disc_store_artifact_known(b, "../x"), -EINVAL);
    /* b uploads the same bytes: both hold them, each named once */
    upload(b, "shared bytes", sha2);
    cr_assert_str_eq(sha, sha2);
    upload(b, "shared bytes", sha2);
    etcdc_t *c = etcdc_open(endpoint, 0, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    char key[128];
    snprintf(key, sizeof(key), "/t/artifacts/%s", sha);
    etcdc_kv_t kv;
    cr_assert_eq(etcdc_get(c, key, strlen(key), &kv), 0, "%s", etcdc_error());
    Faas__ArtifactMeta *m = faas__artifact_meta__unpack(NULL, kv.vlen, kv.val);
    cr_assert_not_null(m);
    cr_assert_str_eq(m->sha256, sha);
    cr_assert_eq(m->size, strlen("shared bytes"));
    cr_assert_eq(m->n_holders, 2);
    cr_assert_str_eq(m->holders[0], "a");
    cr_assert_str_eq(m->holders[1], "b");
    faas__artifact_meta__free_unpacked(m, NULL);
    etcdc_kv_free(&kv);
    etcdc_close(c);
    /* a holder that cannot be reached: NOT_FOUND-worthy, with a sentence saying why */
    disc_store_t *d = open_host("127.0.0.1:1");
    cr_assert_eq(disc_store_artifact_local(d, sha, err, sizeof(err)), -ENOENT);
    cr_assert(strstr(err, "held by no reachable discovery") != NULL, "%s", err);
    cr_assert_eq(disc_store_artifact_local(a, sha, err, sizeof(err)), 0);
    disc_store_close(a);
    disc_store_close(b);
    disc_store_close(d);
}

/* Files in d, dot files (an upload's temp file) included. */
static int files_in(const char *d)
{
    DIR *dh = opendir(d);
    cr_assert_not_null(dh);
    int n = 0;
    for (struct dirent *de; (de = readdir(dh)) != NULL;)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(dh);
    return n;
}

/* A peer copy lands only under the sha asked for: wrong bytes leave nothing behind. */
Test(store_etcd, copy_with_the_wrong_sha_leaves_nothing)
{
    const char *err = NULL, *abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    uint64_t size = 0;
    disc_store_t *a = open_host("a");
    const char *ad = disc_store_artifact_dir(a);
    disc_upload_t *up = disc_upload_begin(ad, 1 << 20, &err);
    cr_assert_not_null(up, "%s", err);
    cr_assert_eq(disc_upload_write(up, (const uint8_t *)"abd", 3, &err), 0);
    cr_assert_eq(files_in(ad), 1); /* the temp file */
    cr_assert_eq(disc_upload_commit_expect(up, abc, &size, &err), -EBADMSG);
    cr_assert(strstr(err, "not the one asked for") != NULL, "%s", err);
    cr_assert_eq(files_in(ad), 0);
    up = disc_upload_begin(ad, 1 << 20, &err);
    cr_assert_eq(disc_upload_write(up, (const uint8_t *)"abc", 3, &err), 0);
    cr_assert_eq(disc_upload_commit_expect(up, abc, &size, &err), 0, "%s", err);
    cr_assert_eq(size, 3);
    cr_assert_eq(disc_artifact_exists(ad, abc), 0);
    cr_assert_eq(files_in(ad), 1);
    disc_store_close(a);
}

/* What a watcher of the registry saw last, per function: its version, 0 once deleted. */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char name[64];
    uint64_t version;
} seen[16];

static int sink(void *ctx, const uint8_t *ev, size_t len)
{
    Faas__WatchEvent *e = ev ? faas__watch_event__unpack(NULL, len, ev) : NULL;
    if (e == NULL || e->function == NULL || e->function->name == NULL) {
        if (e)
            faas__watch_event__free_unpacked(e, NULL);
        return 0;
    }
    uint64_t v = e->type == FAAS__WATCH_EVENT__TYPE__FUNCTION_PUT ? e->function->version : 0;
    pthread_mutex_lock(&seen_mu);
    for (int i = 0; i < 16; i++)
        if (seen[i].name[0] == '\0' || strcmp(seen[i].name, e->function->name) == 0) {
            snprintf(seen[i].name, sizeof(seen[i].name), "%s", e->function->name);
            seen[i].version = v;
            break;
        }
    pthread_mutex_unlock(&seen_mu);
    faas__watch_event__free_unpacked(e, NULL);
    return 0;
}

static uint64_t seen_version(const char *name)
{
    uint64_t v = 0;
    pthread_mutex_lock(&seen_mu);
    for (int i = 0; i < 16; i++)
        if (strcmp(seen[i].name, name) == 0)
            v = seen[i].version;
    pthread_mutex_unlock(&seen_mu);
    return v;
}

/* 1 once the watcher saw name at version (0: deleted or never), polling at most 10 s. */
static int reg_reaches(const char *name, uint64_t version)
{
    for (int i = 0; i < 1000; i++) {
        if (seen_version(name) == version)
            return 1;
        sleep_ms(10);
    }
    return 0;
}

/* A registry following etcd sees what another discovery deploys and deletes, and one
 * that starts later reads what is there. */
Test(store_etcd, follow_applies_changes_made_elsewhere)
{
    char sha[65], err[512];
    uint64_t v = 0;
    disc_store_t *a = open_host("a"), *b = open_host("b");
    disc_registry_t *reg = disc_registry_new();
    cr_assert_gt(disc_registry_subscribe(reg, 1, 0, 0, sink, NULL), 0);
    upload(b, "code", sha);
    cr_assert_eq(deploy(b, "early", sha, &v), 0);
    cr_assert_eq(disc_store_follow(a, reg, err, sizeof(err)), 1, "%s", err);
    cr_assert(disc_store_publishes(a));
    cr_assert(reg_reaches("early", 1));
    cr_assert_eq(deploy(b, "late", sha, &v), 0);
    cr_assert(reg_reaches("late", 1));
    cr_assert_eq(deploy(b, "late", sha, &v), 0);
    cr_assert(reg_reaches("late", 2));
    cr_assert_eq(disc_store_delete(b, "early"), 0);
    cr_assert(reg_reaches("early", 0));
    /* a's own deploy is in its registry when the call returns */
    cr_assert_eq(deploy(a, "mine", sha, &v), 0);
    cr_assert_eq(seen_version("mine"), 1);
    disc_store_close(a); /* stops the watch before the registry goes */
    disc_registry_free(reg);
    disc_store_close(b);
}

Test(store_etcd, unreachable_etcd)
{
    char err[512], sha[65];
    uint64_t v;
    disc_store_t *st = open_host("a");
    upload(st, "code", sha);
    stop_etcd();
    cr_assert_eq(deploy(st, "f", sha, &v), -EAGAIN);
    Faas__FunctionSpec **list;
    size_t n;
    cr_assert_eq(disc_store_list(st, &list, &n), -EAGAIN);
    disc_store_close(st);
    char sd[300];
    snprintf(sd, sizeof(sd), "%s/b", dir);
    cr_assert_null(disc_store_open_etcd(sd, endpoint, "/t/", err, sizeof(err)));
    cr_assert(strstr(err, "etcd unreachable") != NULL, "%s", err);
}
