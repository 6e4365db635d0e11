/* runtime-agent/task.c - async tasks (docs/async.md). A stream carrying faas-task-id is
 * answered 202 once its request is whole; the request then lives on its own (detached from
 * the h2 pair), runs through proxy.c against the user server, and its response is collected
 * in memory (bounded by faas-task-max-result, the function's async.max_result). The agent
 * reports TASK_STARTED, TASK_RENEW every 10 s, then TASK_DONE (chunked) or TASK_FAILED on the
 * control socket; without one (standalone) it logs them. A result over the bound and a run
 * past its deadline fail with no_retry: running the task again would end the same way. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/spec.h"
#include "common/util.h"
#include "runtime-agent/internal.h"

static struct {
    evl_loop_t *loop;
    int (*send)(uint8_t *pkt, size_t len);
    evl_link_t running;
    int init;
} tk;

void agent_task_init(evl_loop_t *loop, int (*send)(uint8_t *pkt, size_t len))
{
    tk.loop = loop;
    tk.send = send;
    if (!tk.init++)
        evl_list_init(&tk.running);
}

static int is_hex_id(const uint8_t *s, size_t n)
{
    if (n != 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

agent_task_t *agent_task_new(const nghttp2_nv *id, const nghttp2_nv *attempt, const nghttp2_nv *max_result,
                             const char **err)
{
    uint64_t a = 0, max = FAAS_SPEC_DEFAULT_ASYNC_MAX_RESULT_BYTES;
    *err = NULL;
    if (!is_hex_id(id->value, id->valuelen))
        return *err = "faas-task-id must be 32 lowercase hex characters\n", NULL;
    if (max_result != NULL &&
        (http1_parse_u64((const char *)max_result->value, max_result->valuelen, &max) != 0 || max == 0))
        return *err = "faas-task-max-result must be a positive number of bytes\n", NULL;
    agent_task_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    memcpy(t->id, id->value, id->valuelen);
    if (attempt != NULL)
        http1_parse_u64((const char *)attempt->value, attempt->valuelen, &a);
    t->attempt = (uint32_t)a;
    t->max_result = max;
    return t;
}

void agent_task_free(agent_task_t *t)
{
    if (evl_linked(&t->link))
        evl_list_unlink(&t->link);
    evl_timer_stop(tk.loop, &t->renew);
    for (size_t i = 0; i < t->nkv; i++) {
        free(t->kv[i].key);
        free(t->kv[i].value);
    }
    free(t->kv);
    evl_buf_free(&t->body);
    free(t);
}

/* ---- events ---- */

static int emit(void *ud, uint8_t *pkt, size_t len)
{
    (void)ud;
    return tk.send(pkt, len);
}

static void report(const agent_task_t *t, int type, const char *msg, int no_retry)
{
    if (tk.send == NULL)
        return;
    Faas__AgentEvent ev = FAAS__AGENT_EVENT__INIT;
    ev.type = type;
    ev.task_id = (char *)t->id;
    ev.no_retry = no_retry != 0;
    if (msg != NULL)
        ev.message = (char *)msg;
    size_t len;
    uint8_t *pkt = faas_pb_pack(&ev.base, &len);
    if (pkt != NULL)
        tk.send(pkt, len);
}

static void report_done(agent_task_t *t)
{
    FAAS_INFO("event=task_done task=%s attempt=%u status=%u headers=%zu bytes=%zu", t->id, t->attempt, t->status,
              t->nkv, t->body.len);
    if (tk.send == NULL)
        return;
    Faas__KeyValue **ptrs = calloc(t->nkv + 1, sizeof(*ptrs));
    if (ptrs == NULL) {
        report(t, FAAS__AGENT_EVENT__TYPE__TASK_FAILED, "the agent ran out of memory", 0);
        return;
    }
    for (size_t i = 0; i < t->nkv; i++)
        ptrs[i] = &t->kv[i];
    Faas__TaskResult res = FAAS__TASK_RESULT__INIT;
    res.status = t->status;
    res.headers = ptrs;
    res.n_headers = t->nkv;
    res.body.data = (uint8_t *)evl_buf_data(&t->body);
    res.body.len = t->body.len;
    if (agent_task_result_packets(t->id, &res, AGENT_TASK_CHUNK, emit, NULL) != 0)
        FAAS_WARN("event=task_report_failed task=%s", t->id);
    free(ptrs);
}

static void on_renew(evl_timer_t *tm)
{
    agent_task_t *t = tm->data;
    report(t, FAAS__AGENT_EVENT__TYPE__TASK_RENEW, NULL, 0);
    evl_timer_start(tk.loop, &t->renew, AGENT_TASK_RENEW_MS);
}

/* ---- the run ---- */

void agent_task_start(agent_req_t *r)
{
    agent_task_t *t = r->task;
    t->req = r;
    evl_list_insert(&tk.running, &t->link);
    t->renew.cb = on_renew;
    t->renew.data = t;
    FAAS_INFO("event=task_started task=%s attempt=%u", t->id, t->attempt);
    report(t, FAAS__AGENT_EVENT__TYPE__TASK_STARTED, NULL, 0);
    evl_timer_start(tk.loop, &t->renew, AGENT_TASK_RENEW_MS);
    agent_proxy_task_start(r, FAAS_SPEC_DEFAULT_ASYNC_TIMEOUT_MS);
}

int agent_task_head(agent_req_t *r, int status, const http1_hdr_t *h, size_t n)
{
    agent_task_t *t = r->task;
    t->status = (uint32_t)status;
    t->kv = calloc(n + 1, sizeof(*t->kv));
    if (t->kv == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        Faas__KeyValue *kv = &t->kv[t->nkv];
        faas__key_value__init(kv);
        kv->key = strndup(h[i].name, h[i].name_len);
        kv->value = strndup(h[i].value, h[i].value_len);
        t->nkv++;
        if (kv->key == NULL || kv->value == NULL)
            return -1;
    }
    return 0;
}

void agent_task_body(agent_req_t *r, const char *d, size_t n)
{
    agent_task_t *t = r->task;
    if (t->over || t->oom)
        return;
    if (t->body.len + n > t->max_result)
        t->over = 1;
    else if (evl_buf_append(&t->body, d, n) != 0)
        t->oom = 1;
}

/* Reports the end and frees r; err NULL = TASK_DONE. */
static void end(agent_req_t *r, const char *err, int no_retry)
{
    agent_task_t *t = r->task;
    evl_timer_stop(tk.loop, &r->deadline);
    evl_timer_stop(tk.loop, &t->renew);
    agent_proxy_end(r);
    char msg[160];
    if (err != NULL) { /* proxy.c's messages are response bodies: no trailing newline here */
        size_t l = strlen(err);
        if (l != 0 && err[l - 1] == '\n')
            l--;
        snprintf(msg, sizeof(msg), "%.*s", (int)l, err);
        err = msg;
    }
    if (err != NULL) {
        char q[256];
        FAAS_WARN("event=task_failed task=%s attempt=%u no_retry=%d err=%s", t->id, t->attempt, no_retry,
                  faas_log_quote(q, sizeof(q), err, strlen(err)));
        report(t, FAAS__AGENT_EVENT__TYPE__TASK_FAILED, err, no_retry);
    } else {
        report_done(t);
    }
    agent_req_release(r);
}

void agent_task_end(agent_req_t *r, const char *err)
{
    agent_task_t *t = r->task;
    char msg[96];
    if (t->over) { /* whatever else happened, this result can never be kept */
        snprintf(msg, sizeof(msg), "result larger than %llu bytes (async.max_result)",
                 (unsigned long long)t->max_result);
        end(r, msg, 1);
        return;
    }
    if (err == NULL && t->oom)
        err = "the agent ran out of memory collecting the result";
    end(r, err, 0);
}

void agent_task_deadline(agent_req_t *r)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "deadline: the task ran longer than %llu ms (async.timeout)",
             (unsigned long long)r->deadline_ms);
    end(r, msg, 1);
}

void agent_task_cancel(const char *id)
{
    if (!tk.init)
        return;
    for (evl_link_t *l = tk.running.next; l != &tk.running; l = l->next) {
        agent_task_t *t = (agent_task_t *)((char *)l - offsetof(agent_task_t, link));
        if (strcmp(t->id, id) == 0) {
            agent_task_end(t->req, "cancelled");
            return;
        }
    }
}
