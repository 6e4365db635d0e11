/* grpcw/grpcw.h - the gRPC wire rules, pure (no I/O, no allocation): grpc-timeout,
 * grpc-message percent-encoding, request paths, content types, which headers travel,
 * and length-prefixed message framing. Used by the gateway's gRPC front end; depends
 * on common/ only. Unit-tested (tests/unit/grpcw) and fuzzed (tests/fuzz/fuzz_grpcw.c). */
#ifndef GRPCW_GRPCW_H
#define GRPCW_GRPCW_H

#include <stddef.h>
#include <stdint.h>

/* A view into bytes owned by someone else. */
typedef struct {
    const char *ptr;
    size_t len;
} grpcw_slice_t;

/* grpc-timeout "<1-8 digits><H|M|S|m|u|n>" -> milliseconds, rounded up (a non-zero
 * timeout never becomes 0). 0 or -1. */
int grpcw_parse_timeout(const char *s, size_t len, uint64_t *ms);

/* Formats ms as a grpc-timeout value (at most 8 digits, coarsest exact-enough unit);
 * returns the length (0 if cap is too small). */
size_t grpcw_format_timeout(uint64_t ms, char *buf, size_t cap);

/* grpc-message percent-encoding: bytes outside 0x20-0x7e and '%' become %XX.
 * Returns the encoded length; writes at most cap bytes (no NUL). */
size_t grpcw_percent_encode(const char *in, size_t len, char *out, size_t cap);

/* Decodes %XX sequences (malformed ones are kept as they are, per the gRPC spec).
 * Returns the decoded length; out needs len bytes. */
size_t grpcw_percent_decode(const char *in, size_t len, char *out);

/* "/<service>/<method>" -> slices; 0, or -1 with *err (empty parts, extra '/', not
 * starting with '/', bytes outside visible ASCII). */
int grpcw_parse_path(const char *path, size_t len, grpcw_slice_t *service, grpcw_slice_t *method, const char **err);

/* 1 if content-type is application/grpc, optionally followed by "+<subtype>" or ';'. */
int grpcw_content_type_ok(const char *v, size_t len);

/* 1 if a custom metadata key is valid: [0-9a-z_.-]+, not starting with "grpc-" */
int grpcw_metadata_key_ok(const char *name, size_t len);

/* 1 if the client's request header goes to the function: pseudo headers, te,
 * grpc-timeout (rewritten), host, hop-by-hop and faas-* do not. name is lower case. */
int grpcw_header_forwarded(const char *name, size_t len);

/* Length-prefixed message framing: 1 byte compressed flag, 4 bytes big-endian length. */
void grpcw_frame_write(uint8_t out[5], int compressed, uint32_t len);

/* Incremental scanner over a gRPC message stream. */
typedef struct {
    uint8_t hdr[5];
    size_t hdr_have;
    uint64_t left; /* bytes of the current message still to come */
    uint64_t messages;
} grpcw_scan_t;

/* Feeds len bytes; 0, or -1 with *err for a bad compressed flag or a message over
 * max_msg (0 = no limit). messages counts the complete ones. */
int grpcw_scan(grpcw_scan_t *s, const uint8_t *buf, size_t len, uint32_t max_msg, const char **err);

/* The code a gRPC client infers from a response that has an HTTP status but no
 * grpc-status (the gRPC spec's table, doc/http-grpc-status-mapping.md): 504 is
 * UNAVAILABLE there. Not the platform's own errors: those are common/errors.h's
 * table, where a deadline the platform enforced is DEADLINE_EXCEEDED. */
int grpcw_code_for_http_response(int status);

#endif
