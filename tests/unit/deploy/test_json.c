/* deploy/json.c: reading the gateway's task JSON without building a tree. */
#include <criterion/criterion.h>
#include <string.h>

#include "deploy/internal.h"

static const char *member(const char *json, const char *key, char *out, size_t cap)
{
    const char *v;
    size_t vn;
    if (ctl_json_member(json, strlen(json), key, &v, &vn) != 0)
        return NULL;
    ctl_json_text(v, vn, out, cap);
    return out;
}

Test(ctl_json, members_of_a_status_object)
{
    const char *j =
        "{\"id\": \"ab\", \"version\": 3, \"started\": null, \"error\": \"a \\\"q\\\" \\\\ \\n\\t\\u00e9\\u0001\","
        " \"nested\": {\"id\": \"inner\", \"l\": [1, \"]\", {}]}, \"last\":true}";
    char out[128];
    cr_assert_str_eq(member(j, "id", out, sizeof(out)), "ab");
    cr_assert_str_eq(member(j, "version", out, sizeof(out)), "3");
    cr_assert_str_eq(member(j, "started", out, sizeof(out)), "", "null reads as empty");
    cr_assert_str_eq(member(j, "error", out, sizeof(out)), "a \"q\" \\ \n\t\xc3\xa9\x01");
    cr_assert_str_eq(member(j, "last", out, sizeof(out)), "true");
    cr_assert_not_null(member(j, "nested", out, sizeof(out)));
    cr_assert_null(member(j, "missing", out, sizeof(out)));
    cr_assert_str_eq(member(j, "id", out, 2), "a", "cut to the buffer");
}

Test(ctl_json, list_items)
{
    const char *j = "{\"tasks\": [{\"id\": \"1\"}, {\"id\": \"2\", \"x\": [\"}\"]} ,{\"id\":\"3\"}], \"next\": \"3\"}";
    const char *arr, *it;
    size_t an, in, pos = 0;
    char out[16];
    cr_assert_eq(ctl_json_member(j, strlen(j), "tasks", &arr, &an), 0);
    const char *want[] = {"1", "2", "3"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ctl_json_next_item(arr, an, &pos, &it, &in), 1, "item %d", i);
        char obj[64];
        snprintf(obj, sizeof(obj), "%.*s", (int)in, it);
        cr_assert_str_eq(member(obj, "id", out, sizeof(out)), want[i]);
    }
    cr_assert_eq(ctl_json_next_item(arr, an, &pos, &it, &in), 0);
    cr_assert_str_eq(member(j, "next", out, sizeof(out)), "3");
    pos = 0;
    cr_assert_eq(ctl_json_next_item("[]", 2, &pos, &it, &in), 0);
}

Test(ctl_json, malformed_input_is_refused_not_overread)
{
    const char *bad[] = {"",
                         "[",
                         "{",
                         "{\"id\"",
                         "{\"id\":",
                         "{\"id\": \"unterminated",
                         "{\"id\" 1}",
                         "{1: 2}",
                         "{\"a\": [1, 2}",
                         "{\"a\": {\"b\": 1}",
                         "null",
                         "{\"id\": \"x\\"};
    char out[16];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_null(member(bad[i], "id", out, sizeof(out)), "accepted: %s", bad[i]);
    const char *it;
    size_t in, pos = 0;
    cr_assert_eq(ctl_json_next_item("{}", 2, &pos, &it, &in), -1);
    pos = 0;
    cr_assert_eq(ctl_json_next_item("[{\"a\": 1", 8, &pos, &it, &in), -1);
    /* a string value cut before its closing quote still decodes within bounds */
    ctl_json_text("\"ab\\", 4, out, sizeof(out));
    ctl_json_text("\"\\u12", 5, out, sizeof(out));
}
