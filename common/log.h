/* common/log.h - one logfmt line per event on stderr:
 *   ts=2026-11-22T11:00:00.123Z level=info comp=gateway event=... k=v
 * The caller formats the key=value tail; use faas_log_quote for free text. */
#ifndef FAAS_LOG_H
#define FAAS_LOG_H

#include <stddef.h>
#include <stdint.h>

enum { FAAS_LOG_DEBUG = 0, FAAS_LOG_INFO = 1, FAAS_LOG_WARN = 2, FAAS_LOG_ERROR = 3 };

/* Sets the comp= value and the minimum level (FAAS_LOG_LEVEL=debug|info|warn|error). */
void faas_log_init(const char *component);
/* Writes one line; fmt is printf-style and should produce `event=... k=v` pairs. */
void faas_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Quotes s for a logfmt value into buf ("..." with \" \\ \n escaped); returns buf. */
const char *faas_log_quote(char *buf, size_t cap, const char *s, size_t len);
/* One line of a function's log (what `faasctl logs` shows), written by the agent and the
 * worker manager alike: `ts=... fn=... instance=... stream=... msg="..."\n`. stream is
 * stdout/stderr for the user server's output, "platform" for what the platform says
 * about the function. Returns its length, 0 if cap is too small. */
size_t faas_fn_log_line(char *buf, size_t cap, int64_t unix_ms, const char *fn, const char *instance,
                        const char *stream, const char *msg, size_t len);

#define FAAS_DEBUG(...) faas_log(FAAS_LOG_DEBUG, __VA_ARGS__)
#define FAAS_INFO(...) faas_log(FAAS_LOG_INFO, __VA_ARGS__)
#define FAAS_WARN(...) faas_log(FAAS_LOG_WARN, __VA_ARGS__)
#define FAAS_ERROR(...) faas_log(FAAS_LOG_ERROR, __VA_ARGS__)

#endif
