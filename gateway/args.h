/* gateway/args.h - faas-gateway's command line, parsed without side effects. */
#ifndef GW_ARGS_H
#define GW_ARGS_H

#include "gateway/gateway.h"

/* Fills cfg from argv (strings point into argv; fields the flags do not set get
 * their defaults, unknown future fields 0). Returns 0 to run, 1 for --help/-h, or
 * -1 with *err set to one printable line naming the bad flag; errbuf backs that
 * message (160 bytes hold the longest). Never prints, exits or keeps state.
 * Accepted: --flag VALUE and --flag=VALUE; addresses host:port (port 0-65535,
 * 0 = any), --max-body > 0, --queue-max 1..1000000, --cold-start-timeout-ms
 * 0..3600000, --threads 1..256, --grpc-listen host:port or off,
 * --thrift-default-function a function name or "", Thrift timeouts 1..86400000 ms,
 * --thrift-body-min-bytes 1..2^30, --thrift-max-frame 64..2^31-1,
 * --thrift-max-header-bytes 64..2^20, --thrift-max-partial-bytes >= 4096,
 * --max-url-bytes 64..1048576,
 * --max-header-bytes 256..1048576, --max-conns-per-client and --max-conns
 * 0..16777216 (0 = no cap), --http-header-timeout-ms 100..3600000, --advertise-host
 * a DNS name or IP literal (1..253 of [A-Za-z0-9.:-], IPv6 optionally in brackets). */
int gw_args_parse(int argc, char **argv, gw_config_t *cfg, char *errbuf, size_t errcap, const char **err);

/* The --help text. */
extern const char gw_args_usage[];

#endif
