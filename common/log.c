#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_comp = "faas";
static int log_min = FAAS_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void faas_log_init(const char *component)
{
    log_comp = component;
    const char *lv = getenv("FAAS_LOG_LEVEL");
    if (lv == NULL)
        return;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(lv, level_names[i]) == 0)
            log_min = i;
}

void faas_log(int level, const char *fmt, ...)
{
    if (level < log_min)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s comp=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), level_names[level & 3], log_comp);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* one write(2) per line keeps lines whole when several processes share the fd */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

const char *faas_log_quote(char *buf, size_t cap, const char *s, size_t len)
{
    size_t o = 0;
    if (cap < 3)
        return "\"\"";
    buf[o++] = '"';
    for (size_t i = 0; i < len && o + 3 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else if (c < 0x20 || c == 0x7f) {
            buf[o++] = ' ';
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

size_t faas_fn_log_line(char *buf, size_t cap, int64_t unix_ms, const char *fn, const char *instance,
                        const char *stream, const char *msg, size_t len)
{
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(buf, cap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ fn=%s instance=%s stream=%s msg=",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(unix_ms % 1000), fn, instance, stream);
    if (n < 0 || (size_t)n + 4 > cap)
        return 0;
    /* the quoting helper needs room for the closing quote and NUL; keep one byte for '\n' */
    faas_log_quote(buf + n, cap - (size_t)n - 1, msg, len);
    size_t total = (size_t)n + strlen(buf + n);
    buf[total++] = '\n';
    return total;
}
