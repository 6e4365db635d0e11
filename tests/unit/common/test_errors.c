/* DESIGN.md section 3, row by row, and the reason phrases. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/errors.h"

/* One row of the DESIGN table: kind, HTTP, gRPC, Thrift. */
static void row(faas_err_t k, int http, int grpc, int tapp)
{
    cr_expect_eq(faas_err_http(k), http, "kind %d: HTTP", k);
    cr_expect_eq(faas_err_grpc(k), grpc, "kind %d: gRPC", k);
    cr_expect_eq(faas_err_tapp(k), tapp, "kind %d: Thrift", k);
    cr_expect_eq(faas_err_from_http(http), k, "HTTP %d -> kind", http);
}

Test(errors, design_table_rows)
{
    row(FAAS_ERR_NOT_FOUND, 404, 12, 1);   /* UNIMPLEMENTED, UNKNOWN_METHOD */
    row(FAAS_ERR_UNAVAILABLE, 503, 14, 6); /* UNAVAILABLE, INTERNAL_ERROR */
    row(FAAS_ERR_DEADLINE, 504, 4, 6);     /* DEADLINE_EXCEEDED */
    row(FAAS_ERR_CRASHED, 502, 14, 6);     /* UNAVAILABLE */
    row(FAAS_ERR_EXHAUSTED, 429, 8, 6);    /* RESOURCE_EXHAUSTED */
    row(FAAS_ERR_TOO_LARGE, 413, 8, 6);    /* RESOURCE_EXHAUSTED */
    row(FAAS_ERR_MALFORMED, 400, 13, 7);   /* reset: a client sees INTERNAL; PROTOCOL_ERROR */
    cr_expect_eq(faas_err_grpc(FAAS_ERR_UNAUTHENTICATED), 16);
    cr_expect_eq(faas_err_grpc(FAAS_ERR_INTERNAL), 13);
    cr_expect_eq(faas_err_http(FAAS_ERR_INTERNAL), 500);
}

Test(errors, design_table_flags)
{
    for (int k = 0; k < FAAS_ERR_COUNT; k++) {
        const faas_err_reply_t *r = faas_err_reply((faas_err_t)k);
        cr_expect_eq(r->retry_after, k == FAAS_ERR_UNAVAILABLE, "only 503 carries Retry-After (kind %d)", k);
        cr_expect_eq(r->grpc_reset, k == FAAS_ERR_MALFORMED, "only malformed resets the stream (kind %d)", k);
        cr_expect_eq(r->tapp_close, k == FAAS_ERR_MALFORMED, "only malformed closes Thrift (kind %d)", k);
    }
    cr_expect_eq(FAAS_H2_PROTOCOL_ERROR, 1);
    cr_expect_eq(FAAS_ERR_RETRY_AFTER_S, 1, "gateway/README.md promises Retry-After: 1");
    cr_expect_eq(faas_err_reply((faas_err_t)-1), faas_err_reply(FAAS_ERR_INTERNAL));
    cr_expect_eq(faas_err_reply(FAAS_ERR_COUNT), faas_err_reply(FAAS_ERR_INTERNAL));
}

Test(errors, http_status_to_kind_and_codes)
{
    cr_expect_eq(faas_err_from_http(200), FAAS_ERR_NONE);
    cr_expect_eq(faas_err_from_http(202), FAAS_ERR_NONE, "async accepted is not an error");
    cr_expect_eq(faas_err_from_http(401), FAAS_ERR_UNAUTHENTICATED);
    cr_expect_eq(faas_err_from_http(500), FAAS_ERR_INTERNAL);
    cr_expect_eq(faas_err_from_http(418), FAAS_ERR_INTERNAL);
    cr_expect_eq(faas_grpc_code_for_http(504), FAAS_GRPC_DEADLINE_EXCEEDED, "DESIGN: deadline is 4, not 14");
    cr_expect_eq(faas_grpc_code_for_http(404), FAAS_GRPC_UNIMPLEMENTED);
    cr_expect_eq(faas_grpc_code_for_http(413), FAAS_GRPC_RESOURCE_EXHAUSTED);
    cr_expect_eq(faas_grpc_code_for_http(429), FAAS_GRPC_RESOURCE_EXHAUSTED);
    cr_expect_eq(faas_grpc_code_for_http(502), FAAS_GRPC_UNAVAILABLE);
    cr_expect_eq(faas_grpc_code_for_http(503), FAAS_GRPC_UNAVAILABLE);
    cr_expect_eq(faas_grpc_code_for_http(500), FAAS_GRPC_INTERNAL);
    cr_expect_eq(faas_grpc_code_for_http(200), FAAS_GRPC_OK);
    cr_expect_eq(faas_tapp_for_http(404), FAAS_TAPP_UNKNOWN_METHOD);
    cr_expect_eq(faas_tapp_for_http(503), FAAS_TAPP_INTERNAL_ERROR);
    cr_expect_eq(faas_tapp_for_http(400), FAAS_TAPP_PROTOCOL_ERROR);
}

Test(errors, named_codes)
{
    static const char *const grpc[] = {
        "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED"};
    for (int c = 0; c <= 16; c++)
        cr_expect_str_eq(faas_grpc_code_name(c), grpc[c]);
    cr_expect_str_eq(faas_grpc_code_name(17), "UNKNOWN");
    cr_expect_str_eq(faas_grpc_code_name(-1), "UNKNOWN");
    cr_expect_eq(FAAS_GRPC_DEADLINE_EXCEEDED, 4);
    cr_expect_eq(FAAS_GRPC_RESOURCE_EXHAUSTED, 8);
    cr_expect_eq(FAAS_GRPC_UNIMPLEMENTED, 12);
    cr_expect_eq(FAAS_GRPC_UNAVAILABLE, 14);
    cr_expect_eq(FAAS_GRPC_UNAUTHENTICATED, 16);
    cr_expect_eq(FAAS_TAPP_UNKNOWN, 0);
    cr_expect_eq(FAAS_TAPP_UNKNOWN_METHOD, 1);
    cr_expect_eq(FAAS_TAPP_BAD_SEQUENCE_ID, 4);
    cr_expect_eq(FAAS_TAPP_INTERNAL_ERROR, 6);
    cr_expect_eq(FAAS_TAPP_PROTOCOL_ERROR, 7);
    cr_expect_eq(FAAS_TAPP_UNSUPPORTED_CLIENT_TYPE, 10);
}

Test(errors, reason_phrases)
{
    static const struct {
        int st;
        const char *r;
    } t[] = {{100, "Continue"},
             {200, "OK"},
             {202, "Accepted"},
             {204, "No Content"},
             {304, "Not Modified"},
             {308, "Permanent Redirect"},
             {400, "Bad Request"},
             {401, "Unauthorized"},
             {404, "Not Found"},
             {405, "Method Not Allowed"},
             {413, "Payload Too Large"},
             {429, "Too Many Requests"},
             {431, "Request Header Fields Too Large"},
             {451, "Unavailable For Legal Reasons"},
             {500, "Internal Server Error"},
             {502, "Bad Gateway"},
             {503, "Service Unavailable"},
             {504, "Gateway Timeout"},
             {505, "HTTP Version Not Supported"},
             {511, "Network Authentication Required"},
             /* not in the table: the class's phrase */
             {299, "OK"},
             {399, "Redirect"},
             {418, "Client Error"},
             {452, "Client Error"},
             {506, "Server Error"},
             {599, "Server Error"},
             {999, "Server Error"},
             {0, "OK"},
             {-5, "OK"}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        cr_expect_str_eq(faas_http_reason(t[i].st), t[i].r, "status %d", t[i].st);
    for (int st = -10; st < 1000; st++)
        cr_expect_not_null(faas_http_reason(st));
}
