/* Info headers as faas-thrift-* h2 headers (thrift_meta_name / _parse), the
 * encoding the gateway and the agent share. */
#include <criterion/criterion.h>
#include <string.h>

#include "thrift/thrift.h"

static thrift_header_t str_hdr(const char *k, const char *v)
{
    thrift_header_t h = {0};
    h.key = (thrift_bytes_t){(const uint8_t *)k, strlen(k)};
    h.value = (thrift_bytes_t){(const uint8_t *)v, strlen(v)};
    return h;
}

static void roundtrip(const thrift_header_t *h, const char *want_name)
{
    char name[416];
    uint8_t kb[256];
    size_t n = thrift_meta_name(h, name, sizeof(name));
    cr_assert_eq(n, strlen(want_name));
    cr_assert(memcmp(name, want_name, n) == 0, "%.*s", (int)n, name);
    thrift_header_t back;
    cr_assert_eq(thrift_meta_parse(name, n, (const char *)h->value.ptr, h->value.len, kb, sizeof(kb), &back), 0);
    cr_assert_eq(back.is_int, h->is_int);
    cr_assert_eq(back.int_key, h->int_key);
    cr_assert_eq(back.key.len, h->key.len);
    cr_assert(h->key.len == 0 || memcmp(back.key.ptr, h->key.ptr, h->key.len) == 0);
    cr_assert_eq(back.value.len, h->value.len);
}

Test(thrift_meta, plain_keys_keep_their_name)
{
    thrift_header_t h = str_hdr("x-trace.id_1", "abc 123");
    roundtrip(&h, "faas-thrift-h-x-trace.id_1");
}

Test(thrift_meta, other_keys_are_hex)
{
    thrift_header_t h = str_hdr("Trace:ID", "v");
    roundtrip(&h, "faas-thrift-x-54726163653a4944");
}

Test(thrift_meta, int_keys)
{
    thrift_header_t h = {.is_int = 1, .int_key = 65535, .value = {(const uint8_t *)"svc", 3}};
    roundtrip(&h, "faas-thrift-i-65535");
    h.int_key = 6;
    roundtrip(&h, "faas-thrift-i-6");
}

Test(thrift_meta, unprintable_values_and_long_keys_do_not_travel)
{
    char name[416];
    thrift_header_t h = str_hdr("k", "a\nb");
    cr_assert_eq(thrift_meta_name(&h, name, sizeof(name)), 0);
    h = str_hdr("k", " padded");
    cr_assert_eq(thrift_meta_name(&h, name, sizeof(name)), 0);
    char longk[202];
    memset(longk, 'a', 201);
    longk[201] = '\0';
    h = str_hdr(longk, "v");
    cr_assert_eq(thrift_meta_name(&h, name, sizeof(name)), 0);
    h = str_hdr("abc", "v");
    cr_assert_eq(thrift_meta_name(&h, name, 10), 0); /* cap too small */
    static char bigv[4098];
    memset(bigv, 'v', 4097);
    h = str_hdr("k", bigv);
    cr_assert_eq(thrift_meta_name(&h, name, sizeof(name)), 0);
    bigv[4096] = '\0';
    h = str_hdr("k", bigv); /* exactly the limit */
    cr_assert(thrift_meta_name(&h, name, sizeof(name)) > 0);
    h = str_hdr("", "v");
    cr_assert_eq(thrift_meta_name(&h, name, sizeof(name)), 0); /* found by fuzz_thrift (then fuzz_gw_thrift) */
}

Test(thrift_meta, parse_rejects_foreign_and_malformed_names)
{
    uint8_t kb[64];
    thrift_header_t h;
    const char *bad[] = {"faas-function", "faas-thrift-h-", "faas-thrift-q-abc", "faas-thrift-x-abc",
                         "faas-thrift-x-zz", "faas-thrift-i-65536", "faas-thrift-i-1a", "faas-thrift-i-123456",
                         "content-type"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(thrift_meta_parse(bad[i], strlen(bad[i]), "v", 1, kb, sizeof(kb), &h), -1, "%s", bad[i]);
    cr_assert_eq(thrift_meta_parse("faas-thrift-x-6162", 18, "v", 1, kb, 1, &h), -1); /* keybuf too small */
}
