/* common/util.h - small helpers every component shares: clocks, ids, addresses, pb packing. */
#ifndef FAAS_UTIL_H
#define FAAS_UTIL_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Monotonic clock in microseconds / milliseconds. */
uint64_t faas_now_us(void);
uint64_t faas_now_ms(void);
/* Reads up to cap-1 bytes of a small file (a /proc or cgroup file: one read returns it
 * whole) into buf, NUL-terminated; the byte count, or -1 with errno set. */
long faas_read_small(const char *path, char *buf, size_t cap);
/* One packet of len bytes on a socket, with descriptor fd passed along (SCM_RIGHTS) when
 * fd >= 0; MSG_NOSIGNAL | flags. sendmsg's result. Async-signal-safe (no allocation):
 * a vfork child may call it. */
/* Like faas_send_with_fd with nfds (at most FAAS_MAX_SEND_FDS) fds in one SCM_RIGHTS. */
#define FAAS_MAX_SEND_FDS 4
ssize_t faas_send_with_fds(int sock, const void *buf, size_t len, const int *fds, size_t nfds, int flags);
ssize_t faas_send_with_fd(int sock, const void *buf, size_t len, int fd, int flags);
/* Wall clock in unix milliseconds. */
int64_t faas_unix_ms(void);
/* Writes a random 16-hex-char id into out (cap >= 17). */
void faas_random_id(char *out, size_t cap);
/* Splits "host:port" (host may be empty or [v6]; no spaces or control bytes);
 * 0 or -1 with *err set. */
int faas_parse_hostport(const char *s, char *host, size_t hostcap, uint16_t *port, const char **err);
/* 1 if s has no spaces and no control bytes: what may go into logs, argv and
 * request lines verbatim. */
int faas_printable(const char *s);
/* Replaces control bytes in s with '?', so a message quoting user input stays one line. */
void faas_oneline(char *s);
/* Decimal text of v into buf (room for 20 bytes, not terminated); its length.
 * snprintf costs ~1000 instructions a call, and the data path formats a number or
 * two per request. */
size_t faas_fmt_u64(char *buf, uint64_t v);
/* A request id: 16 hex chars and a NUL into out. Ids need to be unique, not
 * secret, so this is a splitmix64 sequence seeded once per thread from the kernel
 * (a getrandom(2) per request showed in the gateway's syscall counts). */
void faas_request_id(char out[17]);
/* 0-15 for a hex digit (either case), else -1. */
int faas_hexval(char c);
/* FNV-1a over len bytes: the hash of the name-keyed open-addressing tables. */
size_t faas_hash_name(const char *name, size_t len);
struct sockaddr_storage;
/* Resolves a numeric "ip:port" (v4 or [v6]; an empty host means default_host) into
 * *ss / *sl; 0 or -1 with *err set. No DNS: the platform talks to addresses. */
int faas_sockaddr_parse(const char *addr, const char *default_host, struct sockaddr_storage *ss, unsigned *sl,
                        const char **err);
/* A non-blocking, close-on-exec TCP listener on addr (SO_REUSEADDR, TCP_NODELAY
 * inherited by accepted sockets, backlog 1024); the fd, or -1 with *err set. */
int faas_listen_tcp(const char *addr, const char **err);
/* n listeners on one address with SO_REUSEPORT, one per event loop (the kernel spreads
 * connections over them), into fds[0..n); n == 1 is faas_listen_tcp. The address is
 * first bound once without SO_REUSEPORT, so a port another process holds is refused
 * as with one listener, and port 0 picks one port for all. 0, or -1 with *err (no fd
 * left open). */
int faas_listen_tcp_group(const char *addr, int *fds, unsigned n, const char **err);
/* The CPUs this process can use: those its affinity mask allows, fewer when its
 * cgroup (v2 cpu.max) grants less time (rounded up); at least 1. */
unsigned faas_cpu_count(void);
/* Packs a protobuf-c message into a malloc'd buffer. */
uint8_t *faas_pb_pack(const ProtobufCMessage *m, size_t *len);
/* mkdir -p with mode; 0 or -1 (errno set). */
int faas_mkdirs(const char *path, int mode);
/* 0 if files written into the existing directory dir keep their modes and can be
 * executed from it (function code is unpacked there and run by another uid); else -1
 * with a sentence in err saying why not (a noexec mount, modes not kept). */
int faas_check_code_dir(const char *dir, char *err, size_t errcap);
/* The status message of an Acquire the worker manager could not serve is
 * "cold start of function <fn> failed: <reason>", reason one line (control bytes become
 * '?') that names no internal address or host path. Written into buf; returns buf. */
const char *faas_cold_start_error(char *buf, size_t cap, const char *fn, const char *reason);
/* What a client is told about a failed Acquire of fn whose status message was msg:
 * "cold start failed: <reason>" when msg is one faas_cold_start_error made, else just
 * "cold start failed" (a transport error's text names addresses). Into buf; returns buf. */
const char *faas_cold_start_public(char *buf, size_t cap, const char *fn, const char *msg);
/* A function name is [a-z0-9][a-z0-9-]{0,62}; 0 if valid, else -1 with *err. */
int faas_valid_function_name(const char *name, size_t len, const char **err);

#endif
