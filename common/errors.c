/* common/errors.c - the tables behind common/errors.h. */
#include "common/errors.h"

#include <stddef.h>

/* DESIGN.md section 3, one row per kind. Every kind but MALFORMED is INTERNAL_ERROR for
 * Thrift: TApplicationException has no finer types a client could act on. */
static const faas_err_reply_t rows[FAAS_ERR_COUNT] = {
    [FAAS_ERR_NONE] = {200, FAAS_GRPC_OK, FAAS_TAPP_UNKNOWN, 0, 0, 0},
    [FAAS_ERR_NOT_FOUND] = {404, FAAS_GRPC_UNIMPLEMENTED, FAAS_TAPP_UNKNOWN_METHOD, 0, 0, 0},
    [FAAS_ERR_UNAVAILABLE] = {503, FAAS_GRPC_UNAVAILABLE, FAAS_TAPP_INTERNAL_ERROR, 1, 0, 0},
    [FAAS_ERR_DEADLINE] = {504, FAAS_GRPC_DEADLINE_EXCEEDED, FAAS_TAPP_INTERNAL_ERROR, 0, 0, 0},
    [FAAS_ERR_CRASHED] = {502, FAAS_GRPC_UNAVAILABLE, FAAS_TAPP_INTERNAL_ERROR, 0, 0, 0},
    [FAAS_ERR_EXHAUSTED] = {429, FAAS_GRPC_RESOURCE_EXHAUSTED, FAAS_TAPP_INTERNAL_ERROR, 0, 0, 0},
    [FAAS_ERR_TOO_LARGE] = {413, FAAS_GRPC_RESOURCE_EXHAUSTED, FAAS_TAPP_INTERNAL_ERROR, 0, 0, 0},
    /* a client sees a stream reset with PROTOCOL_ERROR as INTERNAL (gRPC's HTTP/2 mapping) */
    [FAAS_ERR_MALFORMED] = {400, FAAS_GRPC_INTERNAL, FAAS_TAPP_PROTOCOL_ERROR, 0, 1, 1},
    /* the table has this row for the gRPC control plane only; 401 is its HTTP twin */
    [FAAS_ERR_UNAUTHENTICATED] = {401, FAAS_GRPC_UNAUTHENTICATED, FAAS_TAPP_INTERNAL_ERROR, 0, 0, 0},
    [FAAS_ERR_INTERNAL] = {500, FAAS_GRPC_INTERNAL, FAAS_TAPP_INTERNAL_ERROR, 0, 0, 0},
};

const faas_err_reply_t *faas_err_reply(faas_err_t kind)
{
    return &rows[(unsigned)kind < FAAS_ERR_COUNT ? kind : FAAS_ERR_INTERNAL];
}

int faas_err_http(faas_err_t kind)
{
    return faas_err_reply(kind)->http;
}

int faas_err_grpc(faas_err_t kind)
{
    return faas_err_reply(kind)->grpc;
}

int faas_err_tapp(faas_err_t kind)
{
    return faas_err_reply(kind)->tapp;
}

faas_err_t faas_err_from_http(int status)
{
    if (status < 400)
        return FAAS_ERR_NONE;
    switch (status) {
    case 400:
        return FAAS_ERR_MALFORMED;
    case 401:
        return FAAS_ERR_UNAUTHENTICATED;
    case 404:
        return FAAS_ERR_NOT_FOUND;
    case 413:
        return FAAS_ERR_TOO_LARGE;
    case 429:
        return FAAS_ERR_EXHAUSTED;
    case 502:
        return FAAS_ERR_CRASHED;
    case 503:
        return FAAS_ERR_UNAVAILABLE;
    case 504:
        return FAAS_ERR_DEADLINE;
    default:
        return FAAS_ERR_INTERNAL;
    }
}

int faas_grpc_code_for_http(int status)
{
    return faas_err_grpc(faas_err_from_http(status));
}

int faas_tapp_for_http(int status)
{
    return faas_err_tapp(faas_err_from_http(status));
}

const char *faas_grpc_code_name(int code)
{
    static const char *const names[] = {
        "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED"};
    return code >= 0 && code < (int)(sizeof(names) / sizeof(names[0])) ? names[code] : "UNKNOWN";
}

/* Indexed by status - 100, not searched: the dispatcher asks once per HTTP/1.1
 * response. 413 and 422 keep their RFC 7231/4918 names, which clients still print. */
static const char *const reasons[] = {
    [100 - 100] = "Continue",
    [101 - 100] = "Switching Protocols",
    [200 - 100] = "OK",
    [201 - 100] = "Created",
    [202 - 100] = "Accepted",
    [203 - 100] = "Non-Authoritative Information",
    [204 - 100] = "No Content",
    [205 - 100] = "Reset Content",
    [206 - 100] = "Partial Content",
    [300 - 100] = "Multiple Choices",
    [301 - 100] = "Moved Permanently",
    [302 - 100] = "Found",
    [303 - 100] = "See Other",
    [304 - 100] = "Not Modified",
    [307 - 100] = "Temporary Redirect",
    [308 - 100] = "Permanent Redirect",
    [400 - 100] = "Bad Request",
    [401 - 100] = "Unauthorized",
    [402 - 100] = "Payment Required",
    [403 - 100] = "Forbidden",
    [404 - 100] = "Not Found",
    [405 - 100] = "Method Not Allowed",
    [406 - 100] = "Not Acceptable",
    [407 - 100] = "Proxy Authentication Required",
    [408 - 100] = "Request Timeout",
    [409 - 100] = "Conflict",
    [410 - 100] = "Gone",
    [411 - 100] = "Length Required",
    [412 - 100] = "Precondition Failed",
    [413 - 100] = "Payload Too Large",
    [414 - 100] = "URI Too Long",
    [415 - 100] = "Unsupported Media Type",
    [416 - 100] = "Range Not Satisfiable",
    [417 - 100] = "Expectation Failed",
    [421 - 100] = "Misdirected Request",
    [422 - 100] = "Unprocessable Entity",
    [425 - 100] = "Too Early",
    [426 - 100] = "Upgrade Required",
    [428 - 100] = "Precondition Required",
    [429 - 100] = "Too Many Requests",
    [431 - 100] = "Request Header Fields Too Large",
    [451 - 100] = "Unavailable For Legal Reasons",
    [500 - 100] = "Internal Server Error",
    [501 - 100] = "Not Implemented",
    [502 - 100] = "Bad Gateway",
    [503 - 100] = "Service Unavailable",
    [504 - 100] = "Gateway Timeout",
    [505 - 100] = "HTTP Version Not Supported",
    [511 - 100] = "Network Authentication Required",
};

const char *faas_http_reason(int status)
{
    if (status >= 100 && status - 100 < (int)(sizeof(reasons) / sizeof(reasons[0])) && reasons[status - 100] != NULL)
        return reasons[status - 100];
    return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
}
