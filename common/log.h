/* common/log.h - one logfmt line per event on stderr:
 *   ts=2026-11-22T11:00:00.123Z level=info comp=gateway event=... k=v
 * The caller formats the key=value tail; use faas_log_quote for free text.
 *
 * Repeated events are rate-limited so that a fault (an agent gone, a flood of bad
 * requests) cannot turn into a flood of log lines (issue 14): each call site may write
 * FAAS_LOG_BURST lines a second (default 20; error lines five times that; 0 turns the
 * limit off), the rest are dropped and counted, and when the site's one-second window
 * has ended one line says how many, at their level:
 *   level=warn comp=gateway event=log_suppressed site=dispatcher/call.c:182
 *   dropped_event=request_error dropped=1980 window_s=1
 * A site is keyed by its format string's address (a literal: free and stable); the
 * macros' __FILE__:__LINE__ only name it (a direct faas_log call is named by its event).
 * Sites whose keys hash to one of the 256 slots share its budget and its report. Every
 * daemon with a /metrics exports the count as the counter faas_log_dropped_lines_total.
 * Debug lines are never limited: they are off unless asked for, and whoever asks wants
 * all of them. Info is limited like warn: the gateway's per-request 404/400/413 lines
 * are info, and a client's flood is a flood as much as a fault's. */
#ifndef FAAS_LOG_H
#define FAAS_LOG_H

#include <stddef.h>
#include <stdint.h>

enum { FAAS_LOG_DEBUG = 0, FAAS_LOG_INFO = 1, FAAS_LOG_WARN = 2, FAAS_LOG_ERROR = 3 };
enum { FAAS_LOG_DEFAULT_BURST = 20 };

/* Sets the comp= value, the minimum level (FAAS_LOG_LEVEL=debug|info|warn|error) and
 * the rate limit's burst (FAAS_LOG_BURST=<lines per site per second>, 0 = off). */
void faas_log_init(const char *component);
/* Writes one line; fmt is printf-style and should produce `event=... k=v` pairs. fmt's
 * address is the rate limit's key: pass a string literal, not a built-up buffer. */
void faas_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* faas_log with the call site's __FILE__ and __LINE__, named in log_suppressed lines. */
void faas_log_at(int level, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Lines a call site may write per second (error: 5x); 0 = unlimited. faas_log_init reads
 * FAAS_LOG_BURST; this is for tests and embedders. */
void faas_log_set_burst(unsigned per_sec);
/* Lines dropped by the rate limit since the process started (all threads). */
uint64_t faas_log_dropped_total(void);
/* Quotes s for a logfmt value into buf ("..." with \" \\ \n escaped); returns buf. */
const char *faas_log_quote(char *buf, size_t cap, const char *s, size_t len);
/* One line of a function's log (what `faasctl logs` shows), written by the agent and the
 * worker manager alike: `ts=... fn=... instance=... stream=... msg="..."\n`. stream is
 * stdout/stderr for the user server's output, "platform" for what the platform says
 * about the function. Returns its length, 0 if cap is too small. */
size_t faas_fn_log_line(char *buf, size_t cap, int64_t unix_ms, const char *fn, const char *instance,
                        const char *stream, const char *msg, size_t len);

#define FAAS_DEBUG(...) faas_log_at(FAAS_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define FAAS_INFO(...) faas_log_at(FAAS_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define FAAS_WARN(...) faas_log_at(FAAS_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define FAAS_ERROR(...) faas_log_at(FAAS_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
