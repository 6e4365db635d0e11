#include "common/log.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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

/* ---- rate limit of repeated events (issue 14: a fault must not flood the log) ----
 * Key: the format string's address. A call site's format is a string literal, one
 * address for every call from it, so the key costs nothing to compute and needs no
 * change at any call site (nor at the few that call faas_log directly); two sites with
 * the same literal may be merged by the linker and then share a key, which is right:
 * they print the same event. Slots: a fixed table hashed by key; keys that collide
 * share a slot, its budget and its report (rare with a few hundred call sites, and
 * it only makes the limit stricter). Window: one second of CLOCK_MONOTONIC_COARSE (a
 * vDSO read, no syscall). The fast path is lock-free: one atomic add on the slot. */
#define SLOTS 256
#define ERROR_BURST_FACTOR 5 /* a storm of errors is still a storm, but each one matters more */

typedef struct {
    _Atomic uint64_t state;     /* window second << 32 | lines admitted in it */
    _Atomic uint64_t dropped;   /* not yet reported by a log_suppressed line */
    _Atomic(const char *) site; /* format of the last site dropped here */
    _Atomic(const char *) file; /* and its __FILE__, __LINE__ (NULL: faas_log) */
    _Atomic int line;
    _Atomic int level; /* its level: the report is written at it */
} slot_t;

static slot_t slots[SLOTS];
static _Atomic uint32_t burst = FAAS_LOG_DEFAULT_BURST;
static _Atomic uint64_t dropped_total;
static _Atomic int flusher_on;

static void write_line(int level, const char *fmt, va_list ap);

static void emit(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, fmt, ap);
    va_end(ap);
}

static uint32_t window_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)ts.tv_sec;
}

static slot_t *slot_of(const char *fmt)
{
    /* Fibonacci hashing; string literals are rarely 8-aligned, so keep the low bits */
    return &slots[((uint64_t)(uintptr_t)fmt * 0x9E3779B97F4A7C15ull) >> (64 - 8)];
}

/* The event name of a format ("event=foo k=%s" gives "foo"), else "unnamed". */
static void event_name(const char *fmt, const char **p, int *len)
{
    const char *e = fmt != NULL ? strstr(fmt, "event=") : NULL;
    size_t n = e != NULL ? strcspn(e + 6, " \"\\%\n") : 0;
    *p = n > 0 ? e + 6 : "unnamed";
    *len = n > 0 ? (int)(n > 64 ? 64 : n) : 7;
}

/* Writes the slot's pending count, if any, as one line at the level of what it dropped.
 * An exchange, so each drop is reported exactly once whoever flushes (the thread that
 * opens the next window or the flusher). */
static void report(slot_t *sl)
{
    uint64_t n = atomic_exchange(&sl->dropped, 0);
    if (n == 0)
        return;
    const char *p, *file = atomic_load(&sl->file);
    int len, line = atomic_load(&sl->line);
    event_name(atomic_load(&sl->site), &p, &len);
    /* file and line are two stores: sites that share a slot may mix them (cosmetic) */
    if (file != NULL)
        emit(atomic_load(&sl->level),
             "event=log_suppressed site=%s:%d dropped_event=%.*s dropped=%" PRIu64 " window_s=1", file, line, len, p,
             n);
    else
        emit(atomic_load(&sl->level),
             "event=log_suppressed site=%.*s dropped_event=%.*s dropped=%" PRIu64 " window_s=1", len, p, len, p, n);
}

/* A site that goes quiet after a storm still gets its report: a thread started at the
 * first drop flushes every slot whose window has ended, within a quarter of a second.
 * Only a process that has dropped something has it. */
static void *flusher(void *arg)
{
    for (;;) {
        struct timespec d = {0, 250 * 1000 * 1000};
        nanosleep(&d, NULL);
        uint32_t w = window_now();
        for (int i = 0; i < SLOTS; i++)
            if (atomic_load_explicit(&slots[i].dropped, memory_order_relaxed) != 0 &&
                (uint32_t)(atomic_load(&slots[i].state) >> 32) != w)
                report(&slots[i]);
    }
    return arg;
}

static void start_flusher(void)
{
    int off = 0;
    if (!atomic_compare_exchange_strong(&flusher_on, &off, 1))
        return;
    /* all signals blocked in it: daemons that take theirs with signalfd or sigwait need
     * every thread to block them, and this one must never run a handler */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    if (pthread_create(&t, &a, flusher, NULL) != 0)
        atomic_store(&flusher_on, 0); /* reports then wait for the site's next line */
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* A forked child has no flusher thread and never gets one: a child that stays
 * single-threaded on purpose (the worker manager's pod helper: setns into a mount
 * namespace fails with EINVAL once a second thread exists) must not grow one from a
 * log call. Its drops are reported with the site's next line instead. */
static void after_fork_child(void)
{
    atomic_store(&flusher_on, 2);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

/* 1 if the line may be written. Opens the slot's next window when the second changed
 * (and reports the one that ended), else counts the line against the burst. */
static int admit(int level, const char *file, int line, const char *fmt)
{
    uint32_t b = atomic_load_explicit(&burst, memory_order_relaxed);
    if (b == 0 || level < FAAS_LOG_INFO)
        return 1;
    if (level >= FAAS_LOG_ERROR)
        b *= ERROR_BURST_FACTOR;
    slot_t *sl = slot_of(fmt);
    uint64_t w = window_now();
    uint64_t st = atomic_load_explicit(&sl->state, memory_order_relaxed);
    for (;;) {
        if (st >> 32 != w) {
            if (!atomic_compare_exchange_weak(&sl->state, &st, w << 32 | 1))
                continue;
            report(sl);
            return 1;
        }
        if ((uint32_t)st >= b)
            break;
        if (atomic_compare_exchange_weak(&sl->state, &st, st + 1))
            return 1;
    }
    atomic_store_explicit(&sl->site, fmt, memory_order_relaxed);
    atomic_store_explicit(&sl->file, file, memory_order_relaxed);
    atomic_store_explicit(&sl->line, line, memory_order_relaxed);
    atomic_store_explicit(&sl->level, level, memory_order_relaxed);
    atomic_fetch_add(&sl->dropped, 1);
    atomic_fetch_add_explicit(&dropped_total, 1, memory_order_relaxed);
    if (!atomic_load_explicit(&flusher_on, memory_order_relaxed))
        start_flusher();
    return 0;
}

void faas_log_set_burst(unsigned per_sec)
{
    if (per_sec > UINT32_MAX / ERROR_BURST_FACTOR)
        per_sec = UINT32_MAX / ERROR_BURST_FACTOR;
    atomic_store(&burst, per_sec);
}

uint64_t faas_log_dropped_total(void)
{
    return atomic_load_explicit(&dropped_total, memory_order_relaxed);
}

void faas_log_init(const char *component)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    log_comp = component;
    const char *bu = getenv("FAAS_LOG_BURST");
    if (bu != NULL && *bu != '\0') {
        char *end;
        unsigned long v = strtoul(bu, &end, 10);
        if (*end == '\0' && v <= UINT32_MAX / ERROR_BURST_FACTOR)
            faas_log_set_burst((unsigned)v);
    }
    pthread_once(&once, register_atfork);
    const char *lv = getenv("FAAS_LOG_LEVEL");
    if (lv == NULL)
        return;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(lv, level_names[i]) == 0)
            log_min = i;
}

void faas_log(int level, const char *fmt, ...)
{
    if (level < log_min || !admit(level, NULL, 0, fmt))
        return;
    va_list ap;
    va_start(ap, fmt);
    write_line(level, fmt, ap);
    va_end(ap);
}

void faas_log_at(int level, const char *file, int line, const char *fmt, ...)
{
    if (level < log_min || !admit(level, file, line, fmt))
        return;
    va_list ap;
    va_start(ap, fmt);
    write_line(level, fmt, ap);
    va_end(ap);
}

static void write_line(int level, const char *fmt, va_list ap)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s comp=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), level_names[level & 3], log_comp);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
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
