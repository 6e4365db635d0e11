/* deploy/json.c - just enough JSON reading for faasctl's task commands: the gateway's
 * status objects are flat (strings, numbers, null) and its list is one array of them,
 * so members are found by scanning, never by building a tree. Every function stops at
 * the end of its input whatever the bytes are (the gateway is a peer, not trusted). */
#include "deploy/internal.h"

#include <string.h>
#include <strings.h>

static size_t ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* The index just past the string starting at s[i] == '"'; 0 if it does not end. */
static size_t skip_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* The index just past the value starting at s[i]; 0 if it is malformed or cut short. */
static size_t skip_value(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    if (s[i] == '"')
        return skip_string(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        size_t depth = 0;
        for (; i < n; i++) {
            if (s[i] == '"') {
                if ((i = skip_string(s, n, i)) == 0)
                    return 0;
                i--;
            } else if (s[i] == '{' || s[i] == '[')
                depth++;
            else if ((s[i] == '}' || s[i] == ']') && --depth == 0)
                return i + 1;
        }
        return 0;
    }
    size_t start = i;
    while (i < n && strchr(",}] \t\r\n", s[i]) == NULL)
        i++;
    return i > start ? i : 0;
}

int ctl_json_member(const char *s, size_t n, const char *key, const char **v, size_t *vn)
{
    size_t kl = strlen(key), i = ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return -1;
    for (i = ws(s, n, i + 1); i < n && s[i] != '}'; i = ws(s, n, i + 1)) {
        size_t kend = s[i] == '"' ? skip_string(s, n, i) : 0;
        if (kend == 0)
            return -1;
        size_t vs = ws(s, n, kend);
        if (vs >= n || s[vs] != ':')
            return -1;
        vs = ws(s, n, vs + 1);
        size_t ve = skip_value(s, n, vs);
        if (ve == 0)
            return -1;
        if (kend - i - 2 == kl && memcmp(s + i + 1, key, kl) == 0) {
            *v = s + vs;
            *vn = ve - vs;
            return 0;
        }
        i = ws(s, n, ve);
        if (i >= n || (s[i] != ',' && s[i] != '}'))
            return -1;
        if (s[i] == '}')
            break;
    }
    return -1;
}

int ctl_json_dup_key(const char *s, size_t n)
{
    enum { max = 256 };
    const char *keys[max];
    size_t lens[max], nk = 0, i = ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return -1;
    for (i = ws(s, n, i + 1); i < n && s[i] != '}'; i = ws(s, n, i + 1)) {
        size_t kend = s[i] == '"' ? skip_string(s, n, i) : 0;
        if (kend == 0 || nk == max)
            return -1;
        for (size_t j = i + 1; j + 1 < kend; j++)
            if (s[j] == '\\' || (unsigned char)s[j] >= 0x80)
                return 1;
        for (size_t k = 0; k < nk; k++)
            if (lens[k] == kend - i && strncasecmp(keys[k], s + i, lens[k]) == 0)
                return 1;
        keys[nk] = s + i;
        lens[nk++] = kend - i;
        size_t vs = ws(s, n, kend);
        if (vs >= n || s[vs] != ':')
            return -1;
        size_t ve = skip_value(s, n, ws(s, n, vs + 1));
        if (ve == 0)
            return -1;
        i = ws(s, n, ve);
        if (i >= n || (s[i] != ',' && s[i] != '}'))
            return -1;
        if (s[i] == '}')
            break;
    }
    return 0;
}

int ctl_json_next_item(const char *s, size_t n, size_t *pos, const char **v, size_t *vn)
{
    size_t i = ws(s, n, *pos);
    if (*pos == 0) { /* the opening bracket */
        if (i >= n || s[i] != '[')
            return -1;
        i = ws(s, n, i + 1);
    } else if (i < n && s[i] == ',')
        i = ws(s, n, i + 1);
    if (i < n && s[i] == ']')
        return 0;
    size_t e = skip_value(s, n, i);
    if (e == 0)
        return -1;
    *v = s + i;
    *vn = e - i;
    *pos = e;
    return 1;
}

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        v = v << 4 | (unsigned)(c >= '0' && c <= '9'   ? c - '0'
                                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                       : 0);
    }
    return v;
}

/* Appends code point cp as UTF-8 if it fits. */
static size_t put_utf8(char *out, size_t o, size_t cap, unsigned cp)
{
    char b[4];
    size_t k;
    if (cp < 0x80)
        b[0] = (char)cp, k = 1;
    else if (cp < 0x800)
        b[0] = (char)(0xc0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3f)), k = 2;
    else
        b[0] = (char)(0xe0 | cp >> 12), b[1] = (char)(0x80 | (cp >> 6 & 0x3f)), b[2] = (char)(0x80 | (cp & 0x3f)),
        k = 3;
    if (o + k >= cap)
        return o;
    memcpy(out + o, b, k);
    return o + k;
}

void ctl_json_text(const char *v, size_t vn, char *out, size_t cap)
{
    size_t o = 0;
    if (cap == 0)
        return;
    if (vn == 4 && memcmp(v, "null", 4) == 0)
        vn = 0; /* absent and null read the same */
    if (vn < 2 || v[0] != '"') {
        o = vn < cap ? vn : cap - 1;
        memcpy(out, v, o);
        out[o] = '\0';
        return;
    }
    for (size_t i = 1; i + 1 < vn && o + 1 < cap; i++) {
        char c = v[i];
        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        c = ++i + 1 < vn ? v[i] : '\\';
        if (c == 'u' && i + 4 < vn) {
            unsigned cp = hex4(v + i + 1);
            i += 4;
            /* the gateway escapes only controls; a surrogate half stands alone as U+FFFD */
            o = put_utf8(out, o, cap, cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp);
            continue;
        }
        const char *from = "bfnrt", *to = "\b\f\n\r\t", *m = strchr(from, c);
        out[o++] = m != NULL && c ? to[m - from] : c;
    }
    out[o] = '\0';
}
