/* discovery/args.h - faas-discovery's command line, parsed without side effects. */
#ifndef DISC_ARGS_H
#define DISC_ARGS_H

#include <stdint.h>

typedef struct {
    const char *listen;           /* gRPC host:port (port 0 = any) */
    const char *state_dir;        /* non-empty */
    const char *metrics_listen;   /* host:port, or "off" */
    uint64_t max_artifact;        /* bytes, > 0 */
    uint64_t task_retention_ms;   /* finished tasks are purged after this, > 0 */
    uint32_t callback_attempts;   /* X-Callback-Url deliveries tried, > 0 */
    uint32_t callback_backoff_ms; /* wait after the first failed one, then doubling, > 0 */
    const char *token_file;       /* the platform token; NULL = <state_dir>/token */
    const char *tls_cert;         /* PEM certificate chain and key for TLS; both NULL = plaintext */
    const char *tls_key;
    const char *store;       /* "sqlite", or the etcd endpoints ("etcd://h:p[,h:p...]") */
    int store_etcd;          /* 1 when store names etcd */
    const char *etcd_prefix; /* every etcd key starts with it; ends with '/' */
    const char *advertise;   /* host:port other discoveries reach this one at; NULL = --listen */
    char errbuf[192]; /* backs *err after a failed parse */
} disc_args_t;

/* Fills a from argv (strings point into argv). Returns 0 to run, 1 for --help, or
 * -1 with *err set to one printable line naming the bad flag. Never prints or
 * exits; resets getopt itself, so it may be called again. */
int disc_args_parse(int argc, char **argv, disc_args_t *a, const char **err);

/* The --help text. */
extern const char disc_args_usage[];

#endif
