/* common/errors.h - DESIGN.md section 3 as code: the platform's error kinds and, for
 * each, its reply in every protocol; gRPC status codes and Thrift TApplicationException
 * types by name; the one HTTP reason-phrase table. Pure and allocation-free, so the
 * static agent links it too. tests/unit/common/test_errors.c checks every row. */
#ifndef FAAS_ERRORS_H
#define FAAS_ERRORS_H

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum {
    FAAS_GRPC_OK = 0,
    FAAS_GRPC_CANCELLED = 1,
    FAAS_GRPC_UNKNOWN = 2,
    FAAS_GRPC_INVALID_ARGUMENT = 3,
    FAAS_GRPC_DEADLINE_EXCEEDED = 4,
    FAAS_GRPC_NOT_FOUND = 5,
    FAAS_GRPC_ALREADY_EXISTS = 6,
    FAAS_GRPC_PERMISSION_DENIED = 7,
    FAAS_GRPC_RESOURCE_EXHAUSTED = 8,
    FAAS_GRPC_FAILED_PRECONDITION = 9,
    FAAS_GRPC_ABORTED = 10,
    FAAS_GRPC_OUT_OF_RANGE = 11,
    FAAS_GRPC_UNIMPLEMENTED = 12,
    FAAS_GRPC_INTERNAL = 13,
    FAAS_GRPC_UNAVAILABLE = 14,
    FAAS_GRPC_DATA_LOSS = 15,
    FAAS_GRPC_UNAUTHENTICATED = 16,
};

/* Thrift TApplicationException types (Apache Thrift's TApplicationException.h). */
enum {
    FAAS_TAPP_UNKNOWN = 0,
    FAAS_TAPP_UNKNOWN_METHOD = 1,
    FAAS_TAPP_INVALID_MESSAGE_TYPE = 2,
    FAAS_TAPP_WRONG_METHOD_NAME = 3,
    FAAS_TAPP_BAD_SEQUENCE_ID = 4,
    FAAS_TAPP_MISSING_RESULT = 5,
    FAAS_TAPP_INTERNAL_ERROR = 6,
    FAAS_TAPP_PROTOCOL_ERROR = 7,
    FAAS_TAPP_INVALID_TRANSFORM = 8,
    FAAS_TAPP_INVALID_PROTOCOL = 9,
    FAAS_TAPP_UNSUPPORTED_CLIENT_TYPE = 10,
};

/* Seconds a 503's Retry-After asks for: about what a cold start or a new instance takes. */
#define FAAS_ERR_RETRY_AFTER_S 1

/* HTTP/2 error code a malformed gRPC request's stream is reset with (RFC 9113 s7). */
#define FAAS_H2_PROTOCOL_ERROR 1

/* What went wrong, independent of the protocol: one row of DESIGN.md section 3 each. */
typedef enum {
    FAAS_ERR_NONE = 0,        /* not an error (HTTP 1xx-3xx) */
    FAAS_ERR_NOT_FOUND,       /* no such function / method */
    FAAS_ERR_UNAVAILABLE,     /* cold start failed or timed out, no capacity */
    FAAS_ERR_DEADLINE,        /* the call's deadline passed */
    FAAS_ERR_CRASHED,         /* the user server crashed, reset or refused mid-request */
    FAAS_ERR_EXHAUSTED,       /* queue full / concurrency limit */
    FAAS_ERR_TOO_LARGE,       /* request body or message over the limit */
    FAAS_ERR_MALFORMED,       /* malformed request */
    FAAS_ERR_UNAUTHENTICATED, /* control plane call without a valid credential */
    FAAS_ERR_INTERNAL,        /* any other platform failure (not in the table) */
    FAAS_ERR_COUNT
} faas_err_t;

/* A kind's reply in each protocol. */
typedef struct {
    int http;                 /* status */
    int grpc;                 /* status of the Trailers-Only reply (what a client sees) */
    int tapp;                 /* TApplicationException type */
    unsigned retry_after : 1; /* HTTP: the reply carries Retry-After */
    unsigned grpc_reset : 1;  /* gRPC: reset the stream (FAAS_H2_PROTOCOL_ERROR) rather than reply */
    unsigned tapp_close : 1;  /* Thrift: close the connection after the exception */
} faas_err_reply_t;

/* The row of kind (FAAS_ERR_INTERNAL's for a value out of range). */
const faas_err_reply_t *faas_err_reply(faas_err_t kind);
/* The kind's HTTP status. */
int faas_err_http(faas_err_t kind);
/* The kind's gRPC status code. */
int faas_err_grpc(faas_err_t kind);
/* The kind's TApplicationException type. */
int faas_err_tapp(faas_err_t kind);
/* The kind a platform HTTP status stands for: <400 NONE, 400 MALFORMED, 401
 * UNAUTHENTICATED, 404 NOT_FOUND, 413 TOO_LARGE, 429 EXHAUSTED, 502 CRASHED, 503
 * UNAVAILABLE, 504 DEADLINE, anything else INTERNAL. */
faas_err_t faas_err_from_http(int status);
/* gRPC status for a platform HTTP status (faas_err_grpc of faas_err_from_http). */
int faas_grpc_code_for_http(int status);
/* TApplicationException type for a platform HTTP status. */
int faas_tapp_for_http(int status);
/* "UNAVAILABLE" for 14; "UNKNOWN" for a code out of range. */
const char *faas_grpc_code_name(int code);
/* The RFC 9110 reason phrase of an HTTP status; for one not in the table, its class's
 * ("OK", "Redirect", "Client Error", "Server Error"). Never NULL. */
const char *faas_http_reason(int status);

#endif
