/* http1/http1.h - pure HTTP/1.x pieces of the data path (no I/O, no allocation): a
 * response head parser, a request head parser (the agent's direct port), the body
 * framing rules of RFC 9112 section 6.3, a chunked decoder, list-token and decimal
 * helpers, and telling an h2 connection preface from an HTTP/1 request. Used by the
 * runtime agent towards the user server; depends on nothing but libc. Unit-tested
 * (tests/unit/http1) and fuzzed (tests/fuzz/fuzz_http1_response.c, fuzz_http1_request.c). */
#ifndef HTTP1_HTTP1_H
#define HTTP1_HTTP1_H

#include <stddef.h>
#include <stdint.h>

/* 1 if name appears as a token in a Connection header value. */
int http1_token_listed(const char *value, size_t vlen, const char *name, size_t nlen);
/* Parses a decimal millisecond count; 0 or -1. */
int http1_parse_u64(const char *s, size_t len, uint64_t *out);

/* One header of a parsed response head; points into the parsed buffer. */
typedef struct http1_hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} http1_hdr_t;

/* Parses an HTTP/1.x response head in buf: the head's length (> 0), -2 when incomplete,
 * -1 when malformed. hdrs has room for *nhdrs entries; *nhdrs becomes the count. */
int http1_parse_response(const char *buf, size_t len, int *minor, int *status, const char **msg, size_t *msg_len,
                         http1_hdr_t *hdrs, size_t *nhdrs);

/* Chunked transfer-coding decoder state; zero-initialized before a body. */
typedef struct http1_chunked {
    uint64_t left;
    int state, digits, crlf;
} http1_chunked_t;

/* Decodes buf[0..*len) in place: the decoded data is compacted at buf and *len becomes its
 * size. Returns -2 when the body goes on, -1 on a malformed body, or (body complete, trailer
 * consumed) how many bytes follow it, kept at buf + *len. */
long http1_chunked_decode(http1_chunked_t *d, char *buf, size_t *len);

/* What the first bytes on the agent's listener are. */
enum { HTTP1_SNIFF_H2 = 0, HTTP1_SNIFF_HTTP1 = 1, HTTP1_SNIFF_OTHER = 2 };
/* HTTP1_SNIFF_H2 while buf (len > 0) is a prefix of the h2 connection preface. */
int http1_sniff_preface(const char *buf, size_t len);

/* How an upstream HTTP/1.x response body is delimited. */
enum { HTTP1_BODY_NONE = 0, HTTP1_BODY_LENGTH = 1, HTTP1_BODY_CHUNKED = 2, HTTP1_BODY_EOF = 3 };
typedef struct http1_framing {
    int body;        /* HTTP1_BODY_* */
    uint64_t length; /* for HTTP1_BODY_LENGTH */
    int keepalive;   /* the connection can carry another request afterwards */
} http1_framing_t;

/* Decides body framing and connection reuse for a response head (RFC 9112 s6.3); 0, or -1
 * with *err for a response that cannot be framed safely. */
int http1_resp_framing(int minor_version, int status, int is_head, const http1_hdr_t *h, size_t n, http1_framing_t *out,
                       const char **err);

/* ---- requests: the agent's direct port (docs/endpoints.md) ---- */

typedef struct http1_request {
    const char *method, *target; /* point into the parsed buffer */
    size_t method_len, target_len;
    int minor; /* HTTP/1.<minor> */
} http1_request_t;

/* Parses an HTTP/1.x request head in buf: the head's length (> 0), -2 when incomplete,
 * -1 when malformed (obs-fold, bare CR, a bad request line, more than *nhdrs headers). */
int http1_parse_request(const char *buf, size_t len, http1_request_t *out, http1_hdr_t *hdrs, size_t *nhdrs);
/* A request body's framing (RFC 9112 6.3): chunked, Content-Length or none (a request is
 * never read to EOF), and whether the connection may carry another request. 0, or -1 with
 * *err for a request that cannot be framed safely (both headers, another coding,
 * differing lengths): the connection must then be closed after the error. */
int http1_req_framing(int minor_version, const http1_hdr_t *h, size_t n, http1_framing_t *out, const char **err);

#endif
