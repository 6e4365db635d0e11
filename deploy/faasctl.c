/* deploy/faasctl.c - the command line client of the platform.
 *
 * Exit codes: 0 success, 1 runtime failure (unreachable daemon, not found, HTTP
 * >= 400), 2 usage error. Every rpc has a deadline so the tool never hangs. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/errors.h"
#include "common/rpc.h"
#include "common/util.h"
#include "deploy/args.h"
#include "deploy/image.h"
#include "deploy/internal.h"
#include "deploy/manifest.h"

extern char **environ;

/* EXIT_NOT_DONE: a task result asked for too early (tasks result, wait --timeout). */
enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_NOT_DONE = 3 };
enum { RPC_TIMEOUT_MS = 10000, UPLOAD_TIMEOUT_MS = 300000, DEPLOY_TIMEOUT_MS = 30000, CHUNK = 64 * 1024 };

static const char *g_discovery = "127.0.0.1:7100";
static const char *g_gateway = "http://127.0.0.1:8080";
static faas_rpc_channel_t *g_ch;
/* Why no token is sent (empty when one is): said when a daemon refuses a call. */
static char g_token_why[600];

/* Where faasd and `make run` keep the token, relative to where they are run. */
#define CTL_DEFAULT_TOKEN_FILE "./.faas/discovery/token"

/* A usage error found after parsing (the manifest file, base64 data): one line. */
static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "faasctl %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see faasctl %s --help)\n", cmd);
    return EXIT_USAGE;
}

/* ---- rpc helpers ------------------------------------------------------------------- */

static faas_rpc_channel_t *chan(void)
{
    if (g_ch == NULL)
        g_ch = faas_rpc_channel_open(g_discovery);
    return g_ch;
}

/* Reports an rpc failure as a sentence; returns the exit code. */
static int rpc_failed(int rc, const char *what, const char *fn, const char *addr, int timeout_ms, const char *msg)
{
    if (rc == FAAS_GRPC_UNAVAILABLE)
        fprintf(stderr, "faasctl: cannot reach %s at %s: %s\n", what, addr, msg);
    else if (rc == FAAS_GRPC_DEADLINE_EXCEEDED)
        fprintf(stderr, "faasctl: %s at %s did not answer within %d s (%s)\n", what, addr, timeout_ms / 1000, msg);
    else if (rc == FAAS_GRPC_NOT_FOUND && fn != NULL)
        fprintf(stderr, "faasctl: function \"%s\" not found\n", fn);
    else if (rc == FAAS_GRPC_UNIMPLEMENTED)
        fprintf(stderr, "faasctl: %s at %s does not implement this call: %s\n", what, addr, msg);
    else if (rc == FAAS_GRPC_UNAUTHENTICATED && g_token_why[0] != '\0')
        fprintf(stderr, "faasctl: %s refused the call (UNAUTHENTICATED): %s\nfaasctl: no token sent: %s\n", what, msg,
                g_token_why);
    else if (rc == FAAS_GRPC_UNAUTHENTICATED)
        fprintf(stderr, "faasctl: %s refused the call (UNAUTHENTICATED): %s\n", what, msg);
    else
        fprintf(stderr, "faasctl: %s: %s\n", what, msg);
    return EXIT_RUNTIME;
}

/* A unary call to discovery. 0, or an exit code after printing why. */
static int disc_call(const char *method, const ProtobufCMessage *req, const char *fn, uint8_t **resp, size_t *resp_len)
{
    char errbuf[512] = "";
    size_t len = 0;
    uint8_t *buf = faas_pb_pack(req, &len);
    faas_rpc_channel_t *ch = chan();
    if (buf == NULL || ch == NULL) {
        free(buf);
        fprintf(stderr, "faasctl: cannot open a channel to discovery at %s\n", g_discovery);
        return EXIT_RUNTIME;
    }
    int rc = faas_rpc_unary(ch, method, buf, len, RPC_TIMEOUT_MS, resp, resp_len, errbuf, sizeof(errbuf));
    free(buf);
    if (rc == 0)
        return 0;
    free(*resp);
    *resp = NULL;
    return rpc_failed(rc, "discovery", fn, g_discovery, RPC_TIMEOUT_MS, errbuf);
}

static Faas__FunctionSpec *get_function(const char *name, int *code)
{
    Faas__FunctionName req = FAAS__FUNCTION_NAME__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    req.name = (char *)name;
    if ((*code = disc_call("/faas.Discovery/GetFunction", &req.base, name, &resp, &len)) != 0)
        return NULL;
    Faas__FunctionSpec *s = faas__function_spec__unpack(NULL, len, resp);
    free(resp);
    if (s == NULL) {
        fprintf(stderr, "faasctl: discovery sent a malformed FunctionSpec\n");
        *code = EXIT_RUNTIME;
    }
    return s;
}

/* ---- deploy -------------------------------------------------------------------------- */

typedef struct {
    int fd;
    pid_t pid;
    uint64_t total;
    uint8_t data[CHUNK];
    uint8_t *packed;
    int tar_failed;
} upload_t;

static int spawn_tar(const char *dir, upload_t *u)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    char *argv[] = {"tar", "-czf", "-", "-C", (char *)dir, ".", NULL};
    int rc = posix_spawnp(&u->pid, "tar", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        errno = rc;
        return -1;
    }
    u->fd = p[0];
    return 0;
}

/* Feeds CodeChunks of up to 64 KiB from tar's stdout; -1 aborts the stream if tar fails. */
static int upload_next(void *ud, const uint8_t **msg, size_t *len)
{
    upload_t *u = ud;
    size_t n = 0;
    while (n < CHUNK) {
        ssize_t r = read(u->fd, u->data + n, CHUNK - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return u->tar_failed = 1, -1;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n == 0 && u->pid <= 0) /* a blob: its end is the end */
        return u->total == 0 ? (u->tar_failed = 1, -1) : 0;
    if (n == 0) {
        int st = 0;
        while (waitpid(u->pid, &st, 0) < 0 && errno == EINTR) {
        }
        u->pid = 0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || u->total == 0)
            return u->tar_failed = 1, -1;
        return 0;
    }
    Faas__CodeChunk c = FAAS__CODE_CHUNK__INIT;
    c.data.data = u->data;
    c.data.len = n;
    free(u->packed);
    u->packed = faas_pb_pack(&c.base, len);
    if (u->packed == NULL)
        return -1;
    u->total += n;
    *msg = u->packed;
    return 1;
}

static int upload_code(const char *dir, Faas__CodeRef **ref)
{
    upload_t *u = calloc(1, sizeof(*u));
    char errbuf[512] = "";
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int code = EXIT_RUNTIME;
    if (u == NULL)
        return EXIT_RUNTIME;
    if (spawn_tar(dir, u) != 0) {
        fprintf(stderr, "faasctl: cannot run tar: %s\n", strerror(errno));
        free(u);
        return EXIT_RUNTIME;
    }
    faas_rpc_channel_t *ch = chan();
    int rc = ch == NULL ? -1
                        : faas_rpc_client_stream(ch, "/faas.Discovery/UploadCode", upload_next, u, UPLOAD_TIMEOUT_MS,
                                                 &resp, &rlen, errbuf, sizeof(errbuf));
    if (u->tar_failed)
        fprintf(stderr, "faasctl: packing %s with tar failed\n", dir);
    else if (rc != 0)
        rpc_failed(rc, "discovery", NULL, g_discovery, UPLOAD_TIMEOUT_MS, errbuf);
    else if ((*ref = faas__code_ref__unpack(NULL, rlen, resp)) == NULL)
        fprintf(stderr, "faasctl: discovery sent a malformed CodeRef\n");
    else
        code = 0;
    close(u->fd);
    if (u->pid > 0) { /* the stream ended early: don't leave tar behind */
        kill(u->pid, SIGTERM);
        waitpid(u->pid, NULL, 0);
    }
    free(u->packed);
    free(u);
    free(resp);
    return code;
}

static void human_size(char *buf, size_t cap, uint64_t b)
{
    if (b < 1024)
        snprintf(buf, cap, "%llu B", (unsigned long long)b);
    else if (b < (1u << 20))
        snprintf(buf, cap, "%.1f KiB", (double)b / 1024);
    else
        snprintf(buf, cap, "%.1f MiB", (double)b / (1 << 20));
}

/* ---- images (deploy/image.h, docs/images.md) ------------------------------------------ */

/* Streams one blob from fd with UploadCode and checks discovery stored what was meant. */
static int upload_blob(int fd, const char *hex, uint64_t size, const char *what)
{
    upload_t *u = calloc(1, sizeof(*u));
    char errbuf[512] = "";
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int code = EXIT_RUNTIME;
    Faas__CodeRef *ref = NULL;
    if (u == NULL)
        return EXIT_RUNTIME;
    u->fd = fd;
    faas_rpc_channel_t *ch = chan();
    int rc = ch == NULL ? -1
                        : faas_rpc_client_stream(ch, "/faas.Discovery/UploadCode", upload_next, u, UPLOAD_TIMEOUT_MS,
                                                 &resp, &rlen, errbuf, sizeof(errbuf));
    if (u->tar_failed)
        fprintf(stderr, "faasctl: reading %s sha256:%s failed\n", what, hex);
    else if (rc != 0)
        rpc_failed(rc, "discovery", NULL, g_discovery, UPLOAD_TIMEOUT_MS, errbuf);
    else if ((ref = faas__code_ref__unpack(NULL, rlen, resp)) == NULL)
        fprintf(stderr, "faasctl: discovery sent a malformed CodeRef\n");
    else if (strcmp(ref->sha256, hex) != 0 || ref->size != size) /* the file changed since it was checked */
        fprintf(stderr, "faasctl: %s sha256:%s was stored as sha256:%s (%llu bytes): did it change?\n", what, hex,
                ref->sha256, (unsigned long long)ref->size);
    else
        code = 0;
    if (ref != NULL)
        faas__code_ref__free_unpacked(ref, NULL);
    free(u->packed);
    free(u);
    free(resp);
    return code;
}

/* The manifest, config and layers once each, as hex, in upload order. */
static size_t image_blobs(const ctl_image_t *img, const char **hex, const char **path, uint64_t *size)
{
    size_t n = 0;
    for (size_t i = 0; i < img->n_layers + 2; i++) {
        const char *d = i == 0 ? img->manifest_digest : i == 1 ? img->config.digest : img->layers[i - 2].digest;
        size_t k = 0;
        while (k < n && strcmp(hex[k], d + 7) != 0)
            k++;
        if (k < n)
            continue;
        hex[n] = d + 7;
        path[n] = i == 0 ? NULL : i == 1 ? img->config_path : img->layer_paths[i - 2];
        size[n++] = i == 0 ? img->manifest_len : i == 1 ? img->config.size : img->layers[i - 2].size;
    }
    return n;
}

/* The manifest lives in memory (it may be the normalized one): a memfd streams it like a file. */
static int blob_fd(const ctl_image_t *img, const char *path)
{
    if (path != NULL)
        return open(path, O_RDONLY | O_CLOEXEC);
    int fd = memfd_create("faasctl-manifest", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (write(fd, img->manifest, img->manifest_len) != (ssize_t)img->manifest_len || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The blobs discovery lacks (MissingBlobs); 0 or an exit code. */
static int missing_blobs(const char **hex, size_t n, Faas__BlobList **missing)
{
    Faas__BlobList req = FAAS__BLOB_LIST__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    req.sha256 = (char **)hex;
    req.n_sha256 = n;
    int code = disc_call("/faas.Discovery/MissingBlobs", &req.base, NULL, &resp, &len);
    if (code != 0)
        return code;
    *missing = faas__blob_list__unpack(NULL, len, resp);
    free(resp);
    if (*missing == NULL)
        return fprintf(stderr, "faasctl: discovery sent a malformed BlobList\n"), EXIT_RUNTIME;
    return 0;
}

/* Uploads what discovery lacks of img, then says how much that was. */
static int upload_image(const ctl_image_t *img)
{
    const char *hex[CTL_IMAGE_MAX_LAYERS + 2], *path[CTL_IMAGE_MAX_LAYERS + 2];
    uint64_t size[CTL_IMAGE_MAX_LAYERS + 2], bytes = 0;
    size_t n = image_blobs(img, hex, path, size), k = 0;
    Faas__BlobList *missing = NULL;
    int code = missing_blobs(hex, n, &missing);
    for (size_t i = 0; code == 0 && i < n; i++) {
        int want = 0;
        for (size_t j = 0; j < missing->n_sha256 && !want; j++)
            want = strcmp(missing->sha256[j], hex[i]) == 0;
        if (!want)
            continue;
        const char *what = i == 0 ? "manifest" : path[i] == img->config_path ? "config" : "layer";
        int fd = blob_fd(img, path[i]);
        if (fd < 0) {
            fprintf(stderr, "faasctl: image %s: cannot open %s sha256:%s: %s\n", img->path, what, hex[i],
                    strerror(errno));
            code = EXIT_RUNTIME;
            break;
        }
        code = upload_blob(fd, hex[i], size[i], what);
        close(fd);
        k++;
        bytes += size[i];
    }
    if (code == 0)
        printf("image %s: %zu blobs, %zu uploaded (%llu bytes), %zu already stored\n", img->ref, n, k,
               (unsigned long long)bytes, n - k);
    if (missing != NULL)
        faas__blob_list__free_unpacked(missing, NULL);
    return code;
}

/* Reads, checks and uploads the image, and puts what a worker needs into the spec. */
static int deploy_image(faas_manifest_t *m)
{
    ctl_image_t img;
    char err[1024];
    if (ctl_image_open(m->spec->image->ref, &img, err, sizeof(err)) != 0) {
        fprintf(stderr, "faasctl: %s\n", err);
        return EXIT_RUNTIME;
    }
    int code = upload_image(&img);
    if (code == 0) {
        faas__image_spec__free_unpacked(m->spec->image, NULL);
        if ((m->spec->image = malloc(sizeof(*m->spec->image))) != NULL)
            faas__image_spec__init(m->spec->image);
        if (m->spec->image == NULL || ctl_image_fill_spec(&img, m->spec->image) != 0)
            code = (fprintf(stderr, "faasctl: out of memory\n"), EXIT_RUNTIME);
    }
    ctl_image_close(&img);
    return code;
}

/* The code directory: --dir as given, else the manifest's code: (or its directory). */
static int code_dir_of(const char *dir_flag, const char *manifest_path, const faas_manifest_t *m, char *out, size_t cap)
{
    if (dir_flag != NULL)
        return snprintf(out, cap, "%s", dir_flag) < (int)cap ? 0 : -1;
    if (manifest_path == NULL)
        return snprintf(out, cap, ".") < (int)cap ? 0 : -1;
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", manifest_path);
    const char *base = dirname(tmp);
    const char *code = m->code_dir != NULL ? m->code_dir : ".";
    if (code[0] == '/')
        return snprintf(out, cap, "%s", code) < (int)cap ? 0 : -1;
    return snprintf(out, cap, "%s/%s", base, code) < (int)cap ? 0 : -1;
}

static int load_manifest(const char *path, faas_manifest_t *m)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "faasctl: cannot open %s: %s\n", path, strerror(errno));
        return EXIT_RUNTIME;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            char *nb = cap < (1u << 20) ? realloc(buf, cap = cap ? cap * 2 : 4096) : NULL;
            if (nb == NULL) {
                fprintf(stderr, "faasctl: %s: manifest too large\n", path);
                free(buf);
                fclose(f);
                return EXIT_RUNTIME;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        if (r == 0)
            break;
        len += r;
    }
    fclose(f);
    char err[512];
    int rc = faas_manifest_parse(buf, len, m, err, sizeof(err));
    free(buf);
    if (rc != 0) {
        fprintf(stderr, "faasctl: %s: %s\n", path, err);
        return EXIT_USAGE;
    }
    return 0;
}

/* Uploads the code directory (dir) or the image (dir NULL), then deploys the spec. */
static int do_deploy_rpc(faas_manifest_t *m, const char *dir)
{
    Faas__CodeRef *ref = NULL;
    int code = dir != NULL ? upload_code(dir, &ref) : deploy_image(m);
    if (code != 0)
        return code;
    if (ref != NULL) {
        free(m->spec->code_sha256 != (char *)protobuf_c_empty_string ? m->spec->code_sha256 : NULL);
        m->spec->code_sha256 = strdup(ref->sha256);
    }
    uint8_t *resp = NULL;
    size_t len = 0;
    char errbuf[512] = "";
    uint8_t *req = faas_pb_pack(&m->spec->base, &len);
    int rc = faas_rpc_unary(chan(), "/faas.Discovery/Deploy", req, len, DEPLOY_TIMEOUT_MS, &resp, &len, errbuf,
                            sizeof(errbuf));
    free(req);
    Faas__FunctionSpec *got = rc == 0 ? faas__function_spec__unpack(NULL, len, resp) : NULL;
    if (rc != 0)
        code = rpc_failed(rc, "discovery", NULL, g_discovery, DEPLOY_TIMEOUT_MS, errbuf);
    else if (got == NULL)
        code = (fprintf(stderr, "faasctl: discovery sent a malformed FunctionSpec\n"), EXIT_RUNTIME);
    else if (ref != NULL) {
        char sz[32];
        human_size(sz, sizeof(sz), ref->size);
        printf("deployed %s version %llu (code sha256 %.8s..., %s)\n", got->name, (unsigned long long)got->version,
               ref->sha256, sz);
    } else {
        char sz[32];
        human_size(sz, sizeof(sz), m->spec->image->size);
        printf("deployed %s version %llu (image %s, manifest %.19s..., %s)\n", got->name,
               (unsigned long long)got->version, m->spec->image->ref, m->spec->image->manifest_digest, sz);
    }
    if (got != NULL)
        faas__function_spec__free_unpacked(got, NULL);
    free(resp);
    if (ref != NULL)
        faas__code_ref__free_unpacked(ref, NULL);
    return code;
}

/* The flags were checked by ctl_args_parse; here they go over the manifest's values. */
static int cmd_deploy(const ctl_args_t *a)
{
    const char *file = a->file, *dir_flag = a->dir, *err = NULL;
    faas_manifest_t m = {0};
    char dir[PATH_MAX];
    struct stat st;
    int code;

    if ((code = file != NULL ? load_manifest(file, &m) : (faas_manifest_init(&m) ? EXIT_RUNTIME : 0)) != 0)
        goto out;
    for (size_t i = 0; i < a->n_sets; i++)
        if (faas_manifest_set(&m, a->sets[i].key, a->sets[i].value, &err) != 0) {
            /* the value passed alone in parsing; this is the file's context saying no */
            fprintf(stderr, "faasctl deploy: %s \"%.64s\": %s\n", a->sets[i].flag, a->sets[i].value, err);
            code = EXIT_USAGE;
            goto out;
        }
    if (faas_manifest_validate(m.spec, &err) != 0) {
        code = usage_error("deploy", "%s", err);
        goto out;
    }
    if (faas_manifest_defaults(m.spec) != 0) {
        fprintf(stderr, "faasctl: out of memory\n");
        code = EXIT_RUNTIME;
        goto out;
    }
    if (m.spec->image != NULL) { /* validated: it has a ref */
        if (dir_flag != NULL || m.code_dir != NULL) {
            code = usage_error("deploy", "%s",
                               "an image function has no code directory: give --image/image: or --dir/code:, not both");
            goto out;
        }
        code = do_deploy_rpc(&m, NULL);
        goto out;
    }
    if (code_dir_of(dir_flag, file, &m, dir, sizeof(dir)) != 0 || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "faasctl: code directory %s is not a directory\n", dir_flag ? dir_flag : dir);
        code = EXIT_RUNTIME;
        goto out;
    }
    code = do_deploy_rpc(&m, dir);
out:
    faas_manifest_free(&m);
    return code;
}

/* ---- list, get, delete ------------------------------------------------------------------ */

static void join_command(char *out, size_t cap, const Faas__FunctionSpec *s)
{
    size_t o = 0;
    out[0] = '\0';
    if (s->n_command == 0 && s->image != NULL) /* the image's own Entrypoint and Cmd */
        o = (size_t)snprintf(out, cap, "(image %s)", s->image->ref);
    for (size_t i = 0; i < s->n_command && o + 1 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? " " : "", s->command[i]);
    if (o >= cap && cap > 4)
        strcpy(out + cap - 4, "...");
}

static Faas__InstanceList *list_instances(const char *name, int *code)
{
    Faas__FunctionName req = FAAS__FUNCTION_NAME__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    req.name = (char *)name;
    if ((*code = disc_call("/faas.Discovery/ListInstances", &req.base, name[0] ? name : NULL, &resp, &len)) != 0)
        return NULL;
    Faas__InstanceList *l = faas__instance_list__unpack(NULL, len, resp);
    free(resp);
    if (l == NULL) {
        fprintf(stderr, "faasctl: discovery sent a malformed InstanceList\n");
        *code = EXIT_RUNTIME;
    }
    return l;
}

static int cmd_list(const ctl_args_t *a)
{
    (void)a;
    Faas__Empty req = FAAS__EMPTY__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    int code = disc_call("/faas.Discovery/ListFunctions", &req.base, NULL, &resp, &len);
    if (code != 0)
        return code;
    Faas__FunctionList *fl = faas__function_list__unpack(NULL, len, resp);
    free(resp);
    if (fl == NULL)
        return fprintf(stderr, "faasctl: discovery sent a malformed FunctionList\n"), EXIT_RUNTIME;
    int icode;
    Faas__InstanceList *il = list_instances("", &icode);
    size_t w = 4;
    for (size_t i = 0; i < fl->n_functions; i++)
        if (strlen(fl->functions[i]->name) > w)
            w = strlen(fl->functions[i]->name);
    printf("%-*s  %-7s  %-8s  %-9s  %s\n", (int)w, "NAME", "VERSION", "PROTOCOL", "INSTANCES", "COMMAND");
    for (size_t i = 0; i < fl->n_functions; i++) {
        const Faas__FunctionSpec *s = fl->functions[i];
        char cmd[64], inst[16] = "-";
        join_command(cmd, sizeof(cmd), s);
        if (il != NULL) {
            unsigned n = 0;
            for (size_t j = 0; j < il->n_instances; j++)
                n += strcmp(il->instances[j]->function, s->name) == 0;
            snprintf(inst, sizeof(inst), "%u", n);
        }
        printf("%-*s  %-7llu  %-8s  %-9s  %s\n", (int)w, s->name, (unsigned long long)s->version,
               faas_protocol_name(s->protocol), inst, cmd);
    }
    if (il != NULL)
        faas__instance_list__free_unpacked(il, NULL);
    faas__function_list__free_unpacked(fl, NULL);
    return 0;
}

static void age_of(char *out, size_t cap, int64_t started_ms);

/* "# last-error: <line> (version N, <age> ago)" when a worker reports one; a discovery
 * without GetFunctionStatus (older) or any failure here just leaves the line out. */
static void print_last_error(const char *name)
{
    Faas__FunctionName req = FAAS__FUNCTION_NAME__INIT;
    req.name = (char *)name;
    size_t len = 0, rlen = 0;
    uint8_t *buf = faas_pb_pack(&req.base, &len), *resp = NULL;
    char errbuf[256];
    int rc = buf ? faas_rpc_unary(chan(), "/faas.Discovery/GetFunctionStatus", buf, len, RPC_TIMEOUT_MS, &resp, &rlen,
                                  errbuf, sizeof(errbuf))
                 : -1;
    free(buf);
    Faas__FunctionStatus *st = rc == 0 ? faas__function_status__unpack(NULL, rlen, resp) : NULL;
    free(resp);
    if (st != NULL && st->last_error != NULL) {
        char age[16], *msg = strdup(st->last_error->message);
        age_of(age, sizeof(age), st->last_error->unix_ms);
        if (msg != NULL) {
            faas_oneline(msg);
            printf("# last-error: %s (version %llu, %s ago)\n", msg, (unsigned long long)st->last_error->version, age);
        }
        free(msg);
    }
    if (st != NULL)
        faas__function_status__free_unpacked(st, NULL);
}

static int cmd_get(const ctl_args_t *a)
{
    const char *name = a->name;
    int code;
    Faas__FunctionSpec *s = get_function(name, &code);
    if (s == NULL)
        return code;
    faas_manifest_print(stdout, s);
    faas__function_spec__free_unpacked(s, NULL);
    print_last_error(name);
    return 0;
}

static int cmd_delete(const ctl_args_t *a)
{
    const char *name = a->name;
    Faas__FunctionName req = FAAS__FUNCTION_NAME__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    req.name = (char *)name;
    int code = disc_call("/faas.Discovery/DeleteFunction", &req.base, name, &resp, &len);
    free(resp);
    if (code == 0)
        printf("deleted %s\n", name);
    return code;
}

/* ---- instances, logs -------------------------------------------------------------------- */

static void age_of(char *out, size_t cap, int64_t started_ms)
{
    int64_t s = started_ms > 0 ? (faas_unix_ms() - started_ms) / 1000 : -1;
    if (s < 0)
        snprintf(out, cap, "-");
    else if (s < 120)
        snprintf(out, cap, "%llds", (long long)s);
    else if (s < 7200)
        snprintf(out, cap, "%lldm", (long long)s / 60);
    else if (s < 172800)
        snprintf(out, cap, "%lldh", (long long)s / 3600);
    else
        snprintf(out, cap, "%lldd", (long long)s / 86400);
}

/* An overloaded instance is ready too: overloaded says more (its agent asked for help). */
static const char *instance_state(const Faas__Instance *in)
{
    static const char *const states[] = {"starting", "ready", "draining"};
    if (in->overloaded && in->state == FAAS__INSTANCE__STATE__READY)
        return "overloaded";
    return (unsigned)in->state < sizeof(states) / sizeof(states[0]) ? states[in->state] : "?";
}

static int cmd_instances(const ctl_args_t *a)
{
    const char *name = a->name;
    int code;
    Faas__FunctionSpec *s = get_function(name, &code);
    if (s == NULL)
        return code;
    faas__function_spec__free_unpacked(s, NULL);
    Faas__InstanceList *l = list_instances(name, &code);
    if (l == NULL)
        return code;
    printf("%-20s  %-21s  %-16s  %-8s  %-10s  %-8s  %s\n", "ID", "ENDPOINT", "WORKER", "KIND", "STATE", "PID", "AGE");
    for (size_t i = 0; i < l->n_instances; i++) {
        const Faas__Instance *in = l->instances[i];
        char age[16];
        age_of(age, sizeof(age), in->started_unix_ms);
        printf("%-20s  %-21s  %-16s  %-8s  %-10s  %-8u  %s\n", in->id, in->endpoint, in->worker_id,
               in->kind == FAAS__INSTANCE__KIND__RESERVED ? "reserved" : "elastic", instance_state(in), in->pid, age);
    }
    faas__instance_list__free_unpacked(l, NULL);
    return 0;
}

static int worker_logs(const Faas__Worker *w, const char *name, unsigned tail)
{
    Faas__LogsRequest req = FAAS__LOGS_REQUEST__INIT;
    req.function = (char *)name;
    req.tail = tail;
    size_t len = 0;
    uint8_t *buf = faas_pb_pack(&req.base, &len), *resp = NULL;
    char errbuf[512] = "";
    faas_rpc_channel_t *ch = faas_rpc_channel_open(w->address);
    int rc = ch == NULL || buf == NULL ? -1
                                       : faas_rpc_unary(ch, "/faas.WorkerManager/Logs", buf, len, RPC_TIMEOUT_MS, &resp,
                                                        &len, errbuf, sizeof(errbuf));
    free(buf);
    if (ch != NULL)
        faas_rpc_channel_close(ch);
    if (rc != 0) {
        char what[160];
        snprintf(what, sizeof(what), "worker %s", w->id);
        free(resp);
        return rpc_failed(rc, what, NULL, w->address, RPC_TIMEOUT_MS, errbuf);
    }
    Faas__LogLines *ll = faas__log_lines__unpack(NULL, len, resp);
    free(resp);
    if (ll == NULL)
        return fprintf(stderr, "faasctl: worker %s sent malformed LogLines\n", w->id), EXIT_RUNTIME;
    for (size_t i = 0; i < ll->n_lines; i++) {
        size_t l = strlen(ll->lines[i]);
        printf("%s%s", ll->lines[i], l > 0 && ll->lines[i][l - 1] == '\n' ? "" : "\n");
    }
    faas__log_lines__free_unpacked(ll, NULL);
    return 0;
}

static int cmd_logs(const ctl_args_t *a)
{
    const char *name = a->name;
    uint64_t tail = a->tail;
    int code;
    Faas__FunctionSpec *s = get_function(name, &code);
    if (s == NULL)
        return code;
    faas__function_spec__free_unpacked(s, NULL);
    Faas__Empty req = FAAS__EMPTY__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    if ((code = disc_call("/faas.Discovery/ListWorkers", &req.base, NULL, &resp, &len)) != 0)
        return code;
    Faas__WorkerList *wl = faas__worker_list__unpack(NULL, len, resp);
    free(resp);
    if (wl == NULL)
        return fprintf(stderr, "faasctl: discovery sent a malformed WorkerList\n"), EXIT_RUNTIME;
    if (wl->n_workers == 0)
        fprintf(stderr, "faasctl: no worker is registered with discovery\n");
    for (size_t i = 0; i < wl->n_workers; i++)
        code |= worker_logs(wl->workers[i], name, (unsigned)tail);
    faas__worker_list__free_unpacked(wl, NULL);
    return code ? EXIT_RUNTIME : 0;
}

/* ---- invoke ----------------------------------------------------------------------------- */

/* Reads --data: "@file", "-" (stdin) or the literal string. */
static char *read_data(const char *arg, size_t *len)
{
    if (arg[0] != '@' && strcmp(arg, "-") != 0) {
        *len = strlen(arg);
        return strdup(arg);
    }
    FILE *f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    FILE *mem = open_memstream(&buf, &cap);
    char tmp[65536];
    size_t r;
    while (mem != NULL && (r = fread(tmp, 1, sizeof(tmp), f)) > 0)
        fwrite(tmp, 1, r, mem);
    if (mem != NULL)
        fclose(mem);
    if (f != stdin)
        fclose(f);
    *len = cap;
    return buf;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_print(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        putchar(b64chars[v >> 18 & 63]);
        putchar(b64chars[v >> 12 & 63]);
        putchar(i + 1 < n ? b64chars[v >> 6 & 63] : '=');
        putchar(i + 2 < n ? b64chars[v & 63] : '=');
    }
    putchar('\n');
}

/* Decodes base64 in place (whitespace ignored); -1 on a bad character. */
static int b64_decode(char *s, size_t *len)
{
    size_t o = 0, bits = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < *len; i++) {
        char c = s[i];
        if (c == '=' || c == '\n' || c == '\r' || c == ' ' || c == '\t')
            continue;
        const char *q = c ? strchr(b64chars, c) : NULL;
        if (q == NULL)
            return -1;
        acc = acc << 6 | (uint32_t)(q - b64chars);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            s[o++] = (char)(acc >> bits & 0xff);
        }
    }
    *len = o;
    return 0;
}

/* One unary gRPC call through the gateway's gRPC port (grpc core, raw bytes). */
static int invoke_grpc(const char *name, const char *gw, const char *method, const char *data, int b64, int timeout)
{
    size_t blen = 0;
    char *body = data != NULL ? read_data(data, &blen) : strdup("");
    if (body == NULL) {
        fprintf(stderr, "faasctl: cannot read %s: %s\n", data + (data[0] == '@'), strerror(errno));
        return EXIT_RUNTIME;
    }
    if (b64 && b64_decode(body, &blen) != 0) {
        free(body);
        return usage_error("invoke", "%s", "--data is not valid base64");
    }
    faas_rpc_channel_t *ch = faas_rpc_channel_open_public(gw); /* users' API: the token stays home */
    if (ch == NULL) {
        free(body);
        fprintf(stderr, "faasctl: cannot open a channel to %s\n", gw);
        return EXIT_RUNTIME;
    }
    uint8_t *resp = NULL;
    size_t rlen = 0;
    char errbuf[512] = "";
    int rc = faas_rpc_unary(ch, method, (const uint8_t *)body, blen, timeout, &resp, &rlen, errbuf, sizeof(errbuf));
    int code = 0;
    if (rc == 0) {
        if (b64)
            b64_print(resp, rlen);
        else
            fwrite(resp, 1, rlen, stdout);
    } else if (rc > 0) {
        fprintf(stderr, "faasctl: %s %s: gRPC status %d %s: %s\n", name, method, rc, faas_grpc_code_name(rc), errbuf);
        code = EXIT_RUNTIME;
    } else {
        fprintf(stderr, "faasctl: %s %s via %s: %s\n", name, method, gw, errbuf);
        code = EXIT_RUNTIME;
    }
    free(resp);
    free(body);
    faas_rpc_channel_close(ch);
    return code;
}

static int invoke_async(const ctl_args_t *a, const char *full, char *body, size_t blen);

static int cmd_invoke(const ctl_args_t *a)
{
    const char *name = a->name, *data = a->data;
    if (a->grpc_method != NULL)
        return invoke_grpc(name, a->grpc_gateway, a->grpc_method, data, a->base64, (int)a->timeout_ms);
    char full[2048];
    snprintf(full, sizeof(full), "%s/%s/%s%s%s", a->gw_prefix, a->async ? "async-function" : "function", name,
             a->path[0] == '/' ? "" : "/", a->path);
    size_t blen = 0;
    char *body = data != NULL ? read_data(data, &blen) : NULL;
    if (data != NULL && body == NULL) {
        fprintf(stderr, "faasctl: cannot read %s: %s\n", data + (data[0] == '@'), strerror(errno));
        return EXIT_RUNTIME;
    }
    if (a->async)
        return invoke_async(a, full, body, blen);
    const char *method = a->method != NULL ? a->method : data != NULL ? "POST" : "GET";
    faas_http_req_t req = {.method = method,
                           .host = a->gw_host,
                           .port = a->gw_port,
                           .path = full,
                           .headers = a->headers,
                           .n_headers = a->n_headers,
                           .body = body,
                           .body_len = blen,
                           .timeout_ms = (int)a->timeout_ms};
    int status = 0, code = 0;
    char errbuf[512];
    if (faas_http_do(&req, &status, stdout, errbuf, sizeof(errbuf)) != 0) {
        fflush(stdout);
        fprintf(stderr, "faasctl: invoking %s via gateway %s: %s\n", name, g_gateway, errbuf);
        code = EXIT_RUNTIME;
    } else if (status >= 400) {
        fflush(stdout);
        fprintf(stderr, "faasctl: %s answered HTTP %d\n", name, status);
        code = EXIT_RUNTIME;
    }
    free(body);
    return code;
}

/* ---- async tasks (docs/async.md): the gateway's task API ----------------------------------- */

typedef struct {
    char *body; /* malloc'd, NUL-terminated */
    size_t len;
    int status;
} gw_resp_t;

/* One exchange with the gateway, its body kept in memory (and the head copied to head
 * when set). 0, or an exit code after saying why. */
static int gw_exchange(const ctl_args_t *a, faas_http_req_t *req, gw_resp_t *r)
{
    char errbuf[512];
    FILE *mem = open_memstream(&r->body, &r->len);
    if (mem == NULL)
        return fprintf(stderr, "faasctl: out of memory\n"), EXIT_RUNTIME;
    req->host = a->gw_host;
    req->port = a->gw_port;
    int rc = faas_http_do(req, &r->status, mem, errbuf, sizeof(errbuf));
    fclose(mem);
    if (rc == 0)
        return 0;
    free(r->body);
    r->body = NULL;
    fprintf(stderr, "faasctl: gateway %s: %s\n", g_gateway, errbuf);
    return EXIT_RUNTIME;
}

/* GET/DELETE of a path under the gateway's prefix, with the short rpc deadline. */
static int gw_call(const ctl_args_t *a, const char *method, const char *path, FILE *head, gw_resp_t *r)
{
    char full[2048];
    snprintf(full, sizeof(full), "%s%s", a->gw_prefix, path);
    faas_http_req_t req = {.method = method, .path = full, .timeout_ms = RPC_TIMEOUT_MS, .head = head};
    return gw_exchange(a, &req, r);
}

/* The gateway's error body (one text line) for a message. */
static const char *gw_said(gw_resp_t *r)
{
    if (r->body == NULL)
        return "";
    faas_oneline(r->body);
    size_t n = strlen(r->body);
    while (n > 0 && r->body[n - 1] == ' ')
        r->body[--n] = '\0';
    return r->body;
}

/* A refusal of a /tasks request in the user's terms; the exit code. */
static int task_refused(const char *id, gw_resp_t *r)
{
    if (r->status == 404)
        fprintf(stderr, "faasctl: no task %s (unknown id, or purged after its retention)\n", id);
    else if (r->status == 400)
        fprintf(stderr, "faasctl: the gateway refused task id \"%s\": %s\n", id, gw_said(r));
    else
        fprintf(stderr, "faasctl: task %s: the gateway answered HTTP %d: %s\n", id, r->status, gw_said(r));
    return EXIT_RUNTIME;
}

static void member_text(const gw_resp_t *r, const char *key, char *out, size_t cap)
{
    const char *v;
    size_t vn;
    if (ctl_json_member(r->body, r->len, key, &v, &vn) == 0)
        ctl_json_text(v, vn, out, cap);
    else
        out[0] = '\0';
}

static int invoke_async(const ctl_args_t *a, const char *full, char *body, size_t blen)
{
    char *cb = NULL; /* whole, however long: the gateway judges the URL's length */
    const char **hdrs = calloc(a->n_headers + 1, sizeof(*hdrs));
    gw_resp_t r = {0};
    int code = EXIT_RUNTIME;
    if (hdrs == NULL || (a->callback != NULL && asprintf(&cb, "X-Callback-Url: %s", a->callback) < 0)) {
        cb = NULL;
        fprintf(stderr, "faasctl: out of memory\n");
        goto out;
    }
    memcpy(hdrs, a->headers, a->n_headers * sizeof(*hdrs));
    size_t nh = a->n_headers;
    if (cb != NULL)
        hdrs[nh++] = cb;
    const char *method = a->method != NULL ? a->method : body != NULL ? "POST" : "GET";
    faas_http_req_t req = {.method = method,
                           .path = full,
                           .headers = hdrs,
                           .n_headers = nh,
                           .body = body,
                           .body_len = blen,
                           .timeout_ms = (int)a->timeout_ms};
    if ((code = gw_exchange(a, &req, &r)) != 0)
        goto out;
    char id[80];
    member_text(&r, "id", id, sizeof(id));
    if (r.status != 202 || id[0] == '\0') {
        fprintf(stderr, "faasctl: submitting a task to %s: the gateway answered HTTP %d: %s\n", a->name, r.status,
                gw_said(&r));
        code = EXIT_RUNTIME;
    } else if (a->json)
        fwrite(r.body, 1, r.len, stdout);
    else
        printf("%s\n", id);
out:
    free(r.body);
    free((void *)hdrs);
    free(cb);
    free(body);
    return code;
}

/* What a task's status JSON says about it, for the commands that act on it. */
typedef struct {
    char status[16], error[512], result_status[16];
} task_state_t;

static int is_finished(const task_state_t *t)
{
    return strcmp(t->status, "succeeded") == 0 || strcmp(t->status, "failed") == 0 ||
           strcmp(t->status, "cancelled") == 0;
}

/* What GET /tasks/<id> answered, read into t. 0 or an exit code. */
static int task_state(const ctl_args_t *a, gw_resp_t *r, task_state_t *t)
{
    if (r->status != 200)
        return task_refused(a->task_id, r);
    member_text(r, "status", t->status, sizeof(t->status));
    member_text(r, "error", t->error, sizeof(t->error));
    member_text(r, "result_status", t->result_status, sizeof(t->result_status));
    faas_oneline(t->error);
    if (t->status[0] == '\0')
        return fprintf(stderr, "faasctl: the gateway sent a task status without \"status\"\n"), EXIT_RUNTIME;
    return 0;
}

/* GET /tasks/<id>; r keeps the JSON. 0 or an exit code. */
static int task_fetch(const ctl_args_t *a, gw_resp_t *r, task_state_t *t)
{
    char path[160];
    snprintf(path, sizeof(path), "/tasks/%s", a->task_id);
    int code = gw_call(a, "GET", path, NULL, r);
    return code != 0 ? code : task_state(a, r, t);
}

static const char *const task_fields[] = {"id",          "function",     "version",        "status", "attempts",
                                          "created",     "started",      "finished",       "error",  "result_status",
                                          "result_size", "callback_url", "callback_status"};

static int cmd_tasks_get(const ctl_args_t *a)
{
    gw_resp_t r = {0};
    task_state_t t;
    int code = task_fetch(a, &r, &t);
    if (code == 0 && a->json)
        fwrite(r.body, 1, r.len, stdout);
    else if (code == 0)
        for (size_t i = 0; i < sizeof(task_fields) / sizeof(task_fields[0]); i++) {
            char v[2200];
            const char *raw;
            size_t rn;
            if (ctl_json_member(r.body, r.len, task_fields[i], &raw, &rn) != 0)
                continue;
            ctl_json_text(raw, rn, v, sizeof(v));
            faas_oneline(v);
            printf("%s: %s\n", task_fields[i], v[0] ? v : "-");
        }
    free(r.body);
    return code;
}

/* The result of a task known to be finished, or why there is none. */
static int print_result(const ctl_args_t *a, const task_state_t *t)
{
    if (t->result_status[0] == '\0') { /* ended without a response */
        fprintf(stderr, "faasctl: task %s %s without a result%s%s\n", a->task_id, t->status, t->error[0] ? ": " : "",
                t->error);
        return EXIT_RUNTIME;
    }
    char path[160];
    snprintf(path, sizeof(path), "/tasks/%s/result", a->task_id);
    gw_resp_t r = {0};
    int code = gw_call(a, "GET", path, a->include ? stdout : NULL, &r);
    if (code != 0)
        return code;
    fwrite(r.body, 1, r.len, stdout);
    fflush(stdout);
    if (r.status >= 400) {
        fprintf(stderr, "faasctl: task %s: the function answered HTTP %d\n", a->task_id, r.status);
        code = EXIT_RUNTIME;
    }
    free(r.body);
    return code;
}

static int cmd_tasks_result(const ctl_args_t *a)
{
    gw_resp_t r = {0};
    task_state_t t;
    int code = task_fetch(a, &r, &t);
    free(r.body);
    if (code != 0)
        return code;
    if (!is_finished(&t)) {
        fprintf(stderr, "faasctl: task %s has not finished: it is %s (try faasctl tasks wait %s)\n", a->task_id,
                t.status, a->task_id);
        return EXIT_NOT_DONE;
    }
    return print_result(a, &t);
}

static int cmd_tasks_wait(const ctl_args_t *a)
{
    uint64_t deadline = faas_now_ms() + a->timeout_ms, delay = 50;
    task_state_t t = {.status = "unknown"};
    char path[160];
    snprintf(path, sizeof(path), "/tasks/%s", a->task_id);
    for (;;) {
        gw_resp_t r = {0};
        int code = gw_call(a, "GET", path, NULL, &r), busy = code == 0 && r.status == 503;
        /* 503: the task store is out of reach for a moment (discovery restarting); the
         * task is durable, so keep waiting rather than give up on it */
        if (code == 0 && !busy)
            code = task_state(a, &r, &t);
        free(r.body);
        if (code != 0)
            return code;
        if (!busy && is_finished(&t))
            return print_result(a, &t);
        uint64_t now = faas_now_ms();
        if (now >= deadline) {
            fprintf(stderr, "faasctl: task %s is still %s after %llu ms\n", a->task_id,
                    busy ? "unknown (the gateway answers 503)" : t.status, (unsigned long long)a->timeout_ms);
            return EXIT_NOT_DONE;
        }
        uint64_t nap = delay < deadline - now ? delay : deadline - now;
        usleep((useconds_t)(nap * 1000));
        delay = delay * 2 < 2000 ? delay * 2 : 2000; /* prompt for short tasks, gentle on long ones */
    }
}

static int cmd_tasks_cancel(const ctl_args_t *a)
{
    char path[160];
    snprintf(path, sizeof(path), "/tasks/%s", a->task_id);
    gw_resp_t r = {0};
    int code = gw_call(a, "DELETE", path, NULL, &r);
    if (code != 0)
        return code;
    char status[16];
    if (r.status == 409) {
        /* the gateway's 409 says the same in its own words: one sentence is enough */
        fprintf(stderr, "faasctl: task %s has already finished, nothing to cancel\n", a->task_id);
        code = EXIT_RUNTIME;
    } else if (r.status != 200)
        code = task_refused(a->task_id, &r);
    else if (a->json)
        fwrite(r.body, 1, r.len, stdout);
    else if (member_text(&r, "status", status, sizeof(status)), strcmp(status, "cancelled") == 0)
        printf("cancelled %s\n", a->task_id);
    else /* running: its pod is told to abort it, and it ends cancelled */
        printf("cancel requested for %s (it is %s; it ends cancelled once its pod stops it)\n", a->task_id, status);
    free(r.body);
    return code;
}

/* One row of `tasks list`. */
static void print_task_row(const char *obj, size_t n, int fw)
{
    static const char *const cols[] = {"id", "status", "function", "attempts", "created", "result_status", "error"};
    char v[7][128];
    for (size_t i = 0; i < 7; i++) {
        const char *raw;
        size_t rn;
        v[i][0] = '\0';
        if (ctl_json_member(obj, n, cols[i], &raw, &rn) == 0)
            ctl_json_text(raw, rn, v[i], sizeof(v[i]));
        faas_oneline(v[i]);
    }
    printf("%-32s  %-9s  %-*s  %8s  %-24s  %-6s  %s\n", v[0], v[1], fw, v[2], v[3], v[4][0] ? v[4] : "-",
           v[5][0] ? v[5] : "-", v[6]);
}

static void list_query(const ctl_args_t *a, char *path, size_t cap)
{
    size_t o = (size_t)snprintf(path, cap, "/tasks");
    char sep = '?';
    const struct {
        const char *k, *v;
    } q[] = {{"function", a->function}, {"status", a->status}, {"after", a->after}};
    /* the values were checked to be URL-safe tokens: no escaping needed */
    for (size_t i = 0; i < 3; i++)
        if (q[i].v != NULL && o < cap) {
            o += (size_t)snprintf(path + o, cap - o, "%c%s=%s", sep, q[i].k, q[i].v);
            sep = '&';
        }
    if (a->limit && o < cap)
        snprintf(path + o, cap - o, "%climit=%llu", sep, (unsigned long long)a->limit);
}

static int cmd_tasks_list(const ctl_args_t *a)
{
    char path[512];
    list_query(a, path, sizeof(path));
    gw_resp_t r = {0};
    int code = gw_call(a, "GET", path, NULL, &r);
    if (code != 0)
        return code;
    const char *arr, *it, *nx;
    size_t an, in, nn, pos = 0;
    int fw = 8;
    if (r.status != 200) {
        fprintf(stderr, "faasctl: listing tasks: the gateway answered HTTP %d: %s\n", r.status, gw_said(&r));
        code = EXIT_RUNTIME;
    } else if (a->json)
        fwrite(r.body, 1, r.len, stdout);
    else if (ctl_json_member(r.body, r.len, "tasks", &arr, &an) != 0) {
        fprintf(stderr, "faasctl: the gateway sent a task list without \"tasks\"\n");
        code = EXIT_RUNTIME;
    } else {
        if (a->function != NULL && (int)strlen(a->function) > fw)
            fw = (int)strlen(a->function);
        printf("%-32s  %-9s  %-*s  %8s  %-24s  %-6s  %s\n", "ID", "STATUS", fw, "FUNCTION", "ATTEMPTS", "CREATED",
               "RESULT", "ERROR");
        while (ctl_json_next_item(arr, an, &pos, &it, &in) == 1)
            print_task_row(it, in, fw);
        char next[80];
        if (ctl_json_member(r.body, r.len, "next", &nx, &nn) == 0 &&
            (ctl_json_text(nx, nn, next, sizeof(next)), next[0]))
            fprintf(stderr, "(more: faasctl tasks list --after %s%s%s)\n", next, a->function ? " --function " : "",
                    a->function ? a->function : "");
    }
    free(r.body);
    return code;
}

static int cmd_tasks_help(const ctl_args_t *a)
{
    (void)a;
    fputs(ctl_args_usage(CTL_TASKS), stderr);
    return EXIT_USAGE;
}

/* ---- main --------------------------------------------------------------------------------- */

/* Indexed by ctl_cmd_t. */
static int (*const commands[])(const ctl_args_t *a) = {
    NULL,     cmd_deploy,     cmd_list,       cmd_get,       cmd_delete,       cmd_invoke,       cmd_instances,
    cmd_logs, cmd_tasks_help, cmd_tasks_list, cmd_tasks_get, cmd_tasks_result, cmd_tasks_cancel, cmd_tasks_wait,
};
_Static_assert(sizeof(commands) / sizeof(commands[0]) == CTL_TASKS_WAIT + 1, "one function per command");

/* Sets up what every control-plane channel sends. A missing token is not an error
 * here: commands that only talk to the gateway need none, and a daemon that wants
 * one says so (rpc_failed then adds why none was sent). 0, or an exit code. */
static int setup_credentials(const ctl_args_t *a)
{
    faas_token_t t;
    const char *src = NULL;
    char err[512];
    int have = faas_token_load(getenv(FAAS_TOKEN_ENV), a->token_file, CTL_DEFAULT_TOKEN_FILE, &t, &src, g_token_why,
                               sizeof(g_token_why)) == 0;
    if (have)
        g_token_why[0] = '\0';
    if (faas_rpc_client_configure(have ? &t : NULL, a->tls_ca, err, sizeof(err)) != 0) {
        fprintf(stderr, "faasctl: --tls-ca: %s\n", err);
        return EXIT_USAGE;
    }
    return 0;
}

int main(int argc, char **argv)
{
    ctl_env_t env = {getenv("FAAS_DISCOVERY"), getenv("FAAS_GATEWAY"), getenv("FAAS_GRPC_GATEWAY")};
    ctl_args_t a;
    const char *err = NULL;
    int rc = ctl_args_parse(argc, argv, &env, &a, &err), code;
    if (rc == 1) {
        fputs(ctl_args_usage(a.cmd), stdout);
        code = 0;
    } else if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        if (a.cmd == CTL_NONE) /* no command yet: show which there are */
            fputs(ctl_args_usage(CTL_NONE), stderr);
        code = EXIT_USAGE;
    } else {
        g_discovery = a.discovery;
        g_gateway = a.gateway;
        code = setup_credentials(&a);
        if (code == 0)
            code = commands[a.cmd](&a);
    }
    fflush(stdout);
    if (g_ch != NULL)
        faas_rpc_channel_close(g_ch);
    ctl_args_free(&a);
    return code;
}
