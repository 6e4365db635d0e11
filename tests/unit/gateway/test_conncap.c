/* gw_conncap_take/give: connection caps keyed by client IPv4 address or IPv6 /64. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "gateway/internal.h"

static struct sockaddr_storage addr(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        cr_assert_eq(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        cr_assert_eq(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    }
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

Test(gw_conncap, per_client_cap_and_slots_come_back)
{
    gw_conncap_config(3, 0);
    struct sockaddr_storage a = addr("10.0.0.1", 1000), a2 = addr("10.0.0.1", 2000), b = addr("10.0.0.2", 1000);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gw_conncap_take(i ? SA(a2) : SA(a)), 0, "the port is not part of the key");
    cr_assert_eq(gw_conncap_take(SA(a)), -1);
    cr_assert_eq(gw_conncap_last_reason(), 0);
    cr_assert_eq(gw_conncap_take(SA(b)), 0, "another address has its own cap");
    cr_assert_eq(gw_conncap_open(), 4);
    gw_conncap_give(SA(a));
    cr_assert_eq(gw_conncap_take(SA(a)), 0, "a closed connection's slot is free again");
    for (int i = 0; i < 3; i++)
        gw_conncap_give(SA(a));
    gw_conncap_give(SA(b));
    cr_assert_eq(gw_conncap_open(), 0);
    gw_conncap_give(SA(b)); /* more gives than takes: ignored */
    cr_assert_eq(gw_conncap_open(), 0);
}

Test(gw_conncap, ipv6_keyed_by_slash_64_and_mapped_v4_as_v4)
{
    gw_conncap_config(2, 0);
    struct sockaddr_storage x1 = addr("2001:db8:1:2::1", 1), x2 = addr("2001:db8:1:2:ffff::9", 1),
                            y = addr("2001:db8:1:3::1", 1), m = addr("::ffff:10.9.9.9", 1), v4 = addr("10.9.9.9", 1);
    cr_assert_eq(gw_conncap_take(SA(x1)), 0);
    cr_assert_eq(gw_conncap_take(SA(x2)), 0);
    cr_assert_eq(gw_conncap_take(SA(x1)), -1, "same /64");
    cr_assert_eq(gw_conncap_take(SA(y)), 0, "another /64");
    cr_assert_eq(gw_conncap_take(SA(m)), 0);
    cr_assert_eq(gw_conncap_take(SA(v4)), 0);
    cr_assert_eq(gw_conncap_take(SA(v4)), -1, "v4-mapped counts as the IPv4 address");
    gw_conncap_give(SA(x1));
    gw_conncap_give(SA(x2));
    gw_conncap_give(SA(y));
    gw_conncap_give(SA(m));
    gw_conncap_give(SA(v4));
    cr_assert_eq(gw_conncap_open(), 0);
}

Test(gw_conncap, total_cap_and_no_cap)
{
    gw_conncap_config(0, 5);
    struct sockaddr_storage a[6];
    char ip[32];
    for (int i = 0; i < 6; i++) {
        snprintf(ip, sizeof(ip), "192.0.2.%d", i + 1);
        a[i] = addr(ip, 1);
    }
    for (int i = 0; i < 5; i++)
        cr_assert_eq(gw_conncap_take(SA(a[i])), 0);
    cr_assert_eq(gw_conncap_take(SA(a[5])), -1);
    cr_assert_eq(gw_conncap_last_reason(), 1);
    gw_conncap_give(SA(a[0]));
    cr_assert_eq(gw_conncap_take(SA(a[5])), 0);
    for (int i = 1; i < 6; i++)
        gw_conncap_give(SA(a[i]));
    gw_conncap_config(0, 0);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(gw_conncap_take(SA(a[0])), 0, "0 = no cap");
    for (int i = 0; i < 1000; i++)
        gw_conncap_give(SA(a[0]));
    cr_assert_eq(gw_conncap_open(), 0);
}

Test(gw_conncap, non_ip_peers_are_not_capped)
{
    gw_conncap_config(1, 1);
    struct sockaddr_storage u;
    memset(&u, 0, sizeof(u));
    u.ss_family = AF_UNIX;
    cr_assert_eq(gw_conncap_take(SA(u)), 0);
    cr_assert_eq(gw_conncap_take(SA(u)), 0);
    cr_assert_eq(gw_conncap_open(), 0);
}
