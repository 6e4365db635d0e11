/* runtime-agent/logsink.c - the function's log file as this agent writes it: one write
 * per line, the file's bound kept (docs/security.md "Bounded logs"). Nothing is ever
 * buffered here: a line that cannot go to the file now is counted and dropped, so a user
 * server printing without end costs the agent neither memory nor a blocked loop. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime-agent/internal.h"

/* A LOG_ROTATE whose LOG_FD never came (the worker manager does not block on a full
 * control socket) is asked again, at most this often, while lines are being dropped. */
#define LOG_REASK_US 1000000u

static struct {
    int fd;            /* -1: stderr */
    uint64_t asked_us; /* the last LOG_ROTATE */
    agent_logacct_t acct;
    const char *fn, *instance;
    agent_log_cbs_t cbs;
} lg = {.fd = -1};

void agent_log_init(int fd, uint64_t max_bytes, const char *fn, const char *instance, const agent_log_cbs_t *cbs)
{
    lg.fd = fd;
    lg.acct.max_bytes = fd >= 0 ? max_bytes : 0;
    lg.fn = fn;
    lg.instance = instance;
    if (cbs != NULL)
        lg.cbs = *cbs;
}

/* Writes line and learns where the file ends now; -1 when that is not known. */
static int64_t put(const char *line, size_t len)
{
    ssize_t w;
    do
        w = write(lg.fd, line, len);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -1;
    /* after an O_APPEND write the offset is the file's end, other pods' lines included */
    off_t end = lseek(lg.fd, 0, SEEK_CUR);
    return end < 0 ? -1 : (int64_t)end;
}

static size_t platform_line(char *line, size_t cap, const char *msg)
{
    return agent_format_log_line(line, cap, faas_unix_ms(), lg.fn, lg.instance, "platform", msg, strlen(msg));
}

void agent_log_write(const char *line, size_t len)
{
    if (lg.fd < 0) {
        (void)!write(STDERR_FILENO, line, len);
        return;
    }
    if (!agent_logacct_admit(&lg.acct, len)) {
        uint64_t now = faas_now_us();
        if (now - lg.asked_us >= LOG_REASK_US && lg.cbs.on_full != NULL) {
            lg.asked_us = now;
            lg.cbs.on_full(lg.acct.dropped_bytes, lg.acct.dropped_lines);
        }
        return;
    }
    if (agent_logacct_wrote(&lg.acct, put(line, len)) == 0)
        return;
    char msg[160], marker[512];
    snprintf(msg, sizeof(msg), "log file reached logs.max_bytes (%" PRIu64 "): output is dropped until it is rotated",
             lg.acct.max_bytes);
    /* past the accounting: whoever reads the file must see why lines are missing */
    size_t n = platform_line(marker, sizeof(marker), msg);
    if (n > 0)
        (void)put(marker, n);
    FAAS_INFO("event=log_full fn=%s max_bytes=%" PRIu64, lg.fn, lg.acct.max_bytes);
    lg.asked_us = faas_now_us();
    if (lg.cbs.on_full != NULL)
        lg.cbs.on_full(lg.acct.dropped_bytes, lg.acct.dropped_lines);
}

void agent_log_swap(int fd)
{
    uint64_t gap_bytes, gap_lines;
    if (lg.fd >= 0)
        close(lg.fd);
    lg.fd = fd;
    if (!agent_logacct_swap(&lg.acct, &gap_bytes, &gap_lines))
        return;
    char msg[160], line[512];
    snprintf(msg, sizeof(msg), "%" PRIu64 " lines (%" PRIu64 " bytes) of output were dropped while the log rotated",
             gap_lines, gap_bytes);
    FAAS_INFO("event=log_dropped fn=%s lines=%" PRIu64 " bytes=%" PRIu64, lg.fn, gap_lines, gap_bytes);
    /* counted like any line: a file that is full already asks for the next rotation */
    size_t n = platform_line(line, sizeof(line), msg);
    if (n > 0)
        agent_log_write(line, n);
    if (lg.cbs.on_dropped != NULL)
        lg.cbs.on_dropped(lg.acct.dropped_bytes, lg.acct.dropped_lines);
}
