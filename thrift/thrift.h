/* thrift/thrift.h - pure Thrift framing codec: bytes in, views out, no I/O and
 * no allocation (every parsed field is a slice of the caller's buffer; encoders
 * write into a caller buffer). Recognises, from the first bytes of a frame:
 *   - Apache THeader   (length, magic 0x0FFF, varint header fields, KEYVALUE info)
 *   - Kitex TTHeader   (length, magic 0x1000, fixed-width fields, KEYVALUE and
 *                       INTKEYVALUE info, optional inner frame length)
 *   - framed binary and framed compact
 * and reads the message header (name, type, seqid) inside the payload in the
 * binary (strict and old) and compact protocols. Used by the gateway's Thrift port
 * and the runtime agent; depends on nothing but libc. */
#ifndef THRIFT_THRIFT_H
#define THRIFT_THRIFT_H

#include <stddef.h>
#include <stdint.h>

#define THRIFT_MAX_HEADERS 32
#define THRIFT_DEFAULT_MAX_FRAME (16u << 20)

typedef enum {
    THRIFT_FRAMED = 1,   /* 4-byte length + message */
    THRIFT_THEADER = 2,  /* Apache THeader */
    THRIFT_TTHEADER = 3, /* Kitex TTHeader */
} thrift_framing_t;

typedef enum {
    THRIFT_BINARY = 0,
    THRIFT_COMPACT = 2,
} thrift_proto_t;

/* Message types of the Thrift protocols. */
enum { THRIFT_CALL = 1, THRIFT_REPLY = 2, THRIFT_EXCEPTION = 3, THRIFT_ONEWAY = 4 };

/* TApplicationException types are common/errors.h's FAAS_TAPP_*. */

/* Kitex TTHeader integer info keys the platform reads. */
enum { THRIFT_TTHEADER_KEY_TO_SERVICE = 6, THRIFT_TTHEADER_KEY_TO_METHOD = 9 };

/* THeader flag: the client accepts replies out of request order. */
#define THRIFT_THEADER_FLAG_OUT_OF_ORDER 0x0001u /* fbthrift HEADER_FLAG_SUPPORT_OUT_OF_ORDER */

typedef struct {
    const uint8_t *ptr;
    size_t len;
} thrift_bytes_t;

typedef struct {
    int is_int; /* TTHeader INTKEYVALUE entry: int_key is set, key empty */
    uint16_t int_key;
    thrift_bytes_t key;
    thrift_bytes_t value;
} thrift_header_t;

typedef struct {
    thrift_framing_t framing;
    thrift_proto_t proto;
    size_t frame_len;     /* bytes of the whole frame, length prefix included */
    uint16_t flags;       /* THeader/TTHeader flags */
    int32_t header_seqid; /* THeader/TTHeader sequence number */
    int inner_framed;     /* TTHeader payload carried its own 4-byte length */
    size_t n_headers;
    thrift_header_t headers[THRIFT_MAX_HEADERS];
    thrift_bytes_t acl_token; /* TTHeader ACL token, if any */
    thrift_bytes_t payload;   /* the Thrift message */
    /* the message header inside the payload */
    thrift_bytes_t name;    /* as sent, "Service:method" when multiplexed */
    thrift_bytes_t service; /* the part before ':' (empty when not multiplexed) */
    thrift_bytes_t method;  /* the part after ':' (or the whole name) */
    uint8_t mtype;
    int32_t seqid;
} thrift_frame_t;

/* Parses one frame at the start of buf. Returns the frame length (> 0) when a
 * whole frame is there, 0 when more bytes are needed (*need, if non-NULL, says
 * how many in total when known), or -1 with *err set on bytes that are not one
 * of the accepted framings, a frame over max_frame, or a malformed header. */
long thrift_parse(const uint8_t *buf, size_t len, size_t max_frame, thrift_frame_t *f, size_t *need, const char **err);

/* thrift_parse_head's answer for a head over max_header: the header block or the
 * method name is larger than the limit (f->name is then unknown). */
#define THRIFT_HEAD_TOO_LARGE (-2)

/* Parses the head of a frame from a prefix of it, without waiting for the whole
 * frame: the 4-byte length, a THeader/TTHeader header block and the message
 * header (name, type, seqid). Returns the head's length in bytes when it is all
 * in buf (f then has framing, proto, flags, seqids, info headers, name and
 * frame_len; payload is empty), 0 when more bytes are needed (*need, if non-NULL,
 * the total when known), -1 with *err on bytes that parse never accepts, or
 * THRIFT_HEAD_TOO_LARGE with *err when the header block or the method name is
 * over max_header bytes (checked from their announced lengths, before their
 * bytes arrive). The frame length is not checked against any maximum: the
 * caller decides, knowing the name. */
long thrift_parse_head(const uint8_t *buf, size_t len, size_t max_header, thrift_frame_t *f, size_t *need,
                       const char **err);

/* Reads a message header (name, type, seqid) from a Thrift message in proto. */
int thrift_parse_message(thrift_proto_t proto, const uint8_t *p, size_t len, thrift_bytes_t *name, uint8_t *mtype,
                         int32_t *seqid, const char **err);

/* Looks up a string info header by exact key; NULL if absent. */
const thrift_bytes_t *thrift_header(const thrift_frame_t *f, const char *key);
/* Looks up a TTHeader integer info header; NULL if absent. */
const thrift_bytes_t *thrift_int_header(const thrift_frame_t *f, uint16_t key);

/* The routing key, in the platform's order: TTHeader int key 6 (ToService) or
 * string "to_service"; THeader string "faas-function"; the "Service:" prefix of
 * a multiplexed method. Returns 0 and sets *key, or -1 when there is none (the
 * port's default function applies). */
int thrift_routing_key(const thrift_frame_t *f, thrift_bytes_t *key);

/* Encodes a frame in the given framing around payload (a whole Thrift message).
 * headers may be NULL. For FRAMED the headers are dropped. Returns the bytes
 * written, or the size needed when it exceeds cap (nothing useful written then). */
size_t thrift_encode_frame(thrift_framing_t framing, thrift_proto_t proto, uint16_t flags, int32_t seqid,
                           const thrift_header_t *headers, size_t n_headers, const uint8_t *payload, size_t payload_len,
                           uint8_t *out, size_t cap);

/* A reply frame around payload in the framing of the request req: its protocol,
 * flags and header seqid, and for TTHeader the inner 4-byte length if the
 * request had one. Returns bytes written or needed, as thrift_encode_frame. */
size_t thrift_encode_reply(const thrift_frame_t *req, const thrift_header_t *headers, size_t n_headers,
                           const uint8_t *payload, size_t payload_len, uint8_t *out, size_t cap);

/* Encodes a TApplicationException reply message (no framing) in proto with the
 * given method name and seqid. Returns bytes written or needed. */
size_t thrift_encode_exception_message(thrift_proto_t proto, thrift_bytes_t name, int32_t seqid, int32_t type,
                                       const char *msg, uint8_t *out, size_t cap);

/* A whole TApplicationException reply frame in the framing and protocol of the
 * request f (as thrift_encode_reply), echoing its seqids and name. Returns
 * bytes written or needed. */
size_t thrift_encode_error(const thrift_frame_t *f, int32_t type, const char *msg, uint8_t *out, size_t cap);

/* Info headers travel between gateway and agent as h2 headers:
 * "faas-thrift-h-<key>" for keys of [a-z0-9._-], "faas-thrift-x-<hex key>" for
 * other keys, "faas-thrift-i-<n>" for TTHeader integer keys; the value as is.
 * thrift_meta_name writes the name for h into out and returns its length, or
 * 0 when h cannot travel as an h2 header (value over THRIFT_MAX_META_VALUE,
 * not printable ASCII or with blanks at either end, key empty or over 200 bytes,
 * or cap too small). */
#define THRIFT_MAX_META_VALUE 4096
size_t thrift_meta_name(const thrift_header_t *h, char *out, size_t cap);
/* The reverse for one h2 header: 0 and *h filled (an x- key is decoded into
 * keybuf, which needs nlen / 2 bytes; other views point into name and value),
 * or -1 when the header is not one of ours. */
int thrift_meta_parse(const char *name, size_t nlen, const char *value, size_t vlen, uint8_t *keybuf, size_t cap,
                      thrift_header_t *h);

#endif
