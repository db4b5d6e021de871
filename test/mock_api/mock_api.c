/*
 * mock_api.c -- sac_webhook_mock_api
 *
 * A mock of Magalu's seller SAC API (GET /v0/tickets/..., the ticket and
 * message lists) and of ID Magalu's OAuth token endpoint (POST
 * /oauth/token), with a control API under /_mock/ that lets tests seed and
 * delete documents, inject faults (error statuses, delays, connection
 * resets, malformed and oversized bodies), expire tokens, read request
 * counters, and change run-time behaviour (remote latency, per-seller rate
 * limits, a missing single-message endpoint, list pages that shift while
 * they are walked).  Any API path may carry a /sellers/<name> prefix: each
 * name is a separate document store (a tenant of its own).
 *
 * It is what sac_webhook's pg_regress and TAP suites and its demo talk to
 * instead of api.magalu.com / id.magalu.com, and the baseline server of the
 * benchmark, so the GET hot path is kept cheap: libmicrohttpd thread pool,
 * hash tables under read-write locks, sharded per-path counters, and atomic
 * fast paths when no faults, latency or rate limits are configured.  Delayed
 * answers suspend the connection (a timer thread resumes it), so a slow
 * answer never blocks the other connections of a pool thread and thousands
 * of them cost no threads.
 *
 * Build: make -C test/mock_api     Run: sac_webhook_mock_api --help
 * C99 + POSIX; depends only on libmicrohttpd and pthreads.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define PROG_NAME        "sac_webhook_mock_api"
#define DEFAULT_MAX_LIMIT 10              /* meta.page.max_limit of lists */
#define LIST_DEFAULT_LIMIT 50             /* _limit when absent (then clamped) */
#define MAX_MAX_LIMIT    1000
#define DOC_BODY_LIMIT   (64u << 20)      /* PUT document bodies */
#define CTL_BODY_LIMIT   (1u << 20)       /* other control / token bodies */
#define OVERSIZE_BYTES   (5u << 20)       /* "oversize" fault body */
#define MAX_DELAY_MS     600000L
#define MAX_COUNT        1000000000L
#define PC_SHARDS        16
#define PC_SHARD_MAX     65536            /* distinct counted paths per shard */
#define MAX_PATH_LEN     512
#define NS_NAME_MAX      64               /* /sellers/<name>: 1..64 of [A-Za-z0-9_-] */
#define NS_MAX           4096             /* namespaces besides the default one */
#define RL_MAX           256              /* namespaces with a rate limit */
#define MAX_PER_PAGE     1000             /* shift_per_page / insert_per_page */
#define DEFAULT_AUTO_MAX 1000000L         /* documents --auto remembers */
#define DEFAULT_CONN_MAX 10000u           /* MHD_OPTION_CONNECTION_LIMIT */
#define GEN_MAX          2048             /* generated documents fit in this */

#define A_INC(p)      __atomic_add_fetch((p), 1, __ATOMIC_RELAXED)
#define A_LOAD(p)     __atomic_load_n((p), __ATOMIC_RELAXED)
#define A_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/* ------------------------------------------------------------------ */
/* configuration                                                       */
/* ------------------------------------------------------------------ */

struct client { char *id; char *secret; };

static struct {
    const char    *listen;
    const char    *port_file;
    int            auto_docs;
    int            quiet;
    unsigned       threads;
    long           ttl;
    long           auto_max;
    unsigned       conn_max;
    struct client *clients;
    size_t         nclients;
} g_cfg = { "127.0.0.1:18080", NULL, 0, 0, 4, 3600, DEFAULT_AUTO_MAX, DEFAULT_CONN_MAX, NULL, 0 };

enum { SM_ON = 0, SM_OFF = 1, SM_405 = 2 };

/*
 * Settings that POST /_mock/config changes at run time.  g_rt_cli holds
 * the command line's values (what POST /_mock/reset restores); g_rt the
 * current ones, each field read with A_LOAD and written under g_rt_mu.
 */
struct rtcfg {
    long single_message;        /* SM_* */
    long list_ignores_filters;  /* tickets list: no _sort / filters, id order */
    long max_limit;
    long shift_per_page;        /* tickets whose updated_at becomes now, per page */
    long insert_per_page;       /* new tickets, per page */
    long latency_ms, jitter_ms, tail_permille, tail_ms;
};

static struct rtcfg g_rt_cli = { SM_ON, 0, DEFAULT_MAX_LIMIT, 0, 0, 0, 0, 0, 0 };
static struct rtcfg g_rt;
static int g_latency_on;                    /* any latency setting non-zero */
static pthread_mutex_t g_rt_mu = PTHREAD_MUTEX_INITIALIZER;

static void rt_apply(const struct rtcfg *c)
{
    A_STORE(&g_rt.single_message, c->single_message);
    A_STORE(&g_rt.list_ignores_filters, c->list_ignores_filters);
    A_STORE(&g_rt.max_limit, c->max_limit);
    A_STORE(&g_rt.shift_per_page, c->shift_per_page);
    A_STORE(&g_rt.insert_per_page, c->insert_per_page);
    A_STORE(&g_rt.latency_ms, c->latency_ms);
    A_STORE(&g_rt.jitter_ms, c->jitter_ms);
    A_STORE(&g_rt.tail_permille, c->tail_permille);
    A_STORE(&g_rt.tail_ms, c->tail_ms);
    A_STORE(&g_latency_on, (c->latency_ms | c->jitter_ms | c->tail_permille) != 0);
}

static void rt_read(struct rtcfg *c)
{
    c->single_message = A_LOAD(&g_rt.single_message);
    c->list_ignores_filters = A_LOAD(&g_rt.list_ignores_filters);
    c->max_limit = A_LOAD(&g_rt.max_limit);
    c->shift_per_page = A_LOAD(&g_rt.shift_per_page);
    c->insert_per_page = A_LOAD(&g_rt.insert_per_page);
    c->latency_ms = A_LOAD(&g_rt.latency_ms);
    c->jitter_ms = A_LOAD(&g_rt.jitter_ms);
    c->tail_permille = A_LOAD(&g_rt.tail_permille);
    c->tail_ms = A_LOAD(&g_rt.tail_ms);
}

/* ------------------------------------------------------------------ */
/* small chained hash table with string keys                           */
/* ------------------------------------------------------------------ */

struct hnode {
    struct hnode *next;
    uint64_t      hash;
    void         *val;
    uint64_t      u;          /* free slot for a counter */
    size_t        klen;
    char          key[];
};

struct htab {
    struct hnode **b;
    size_t         nb;        /* power of two */
    size_t         n;
};

/* FNV-1a over the bytes, with a final mix so low bits are well spread. */
static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) s[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static int ht_init(struct htab *t)
{
    t->nb = 64;
    t->n = 0;
    t->b = calloc(t->nb, sizeof *t->b);
    return t->b ? 0 : -1;
}

static struct hnode *ht_find(const struct htab *t, const char *k, size_t kl, uint64_t h)
{
    for (struct hnode *e = t->b[h & (t->nb - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == kl && memcmp(e->key, k, kl) == 0)
            return e;
    return NULL;
}

/* Double the bucket array (best effort: on allocation failure keep going). */
static void ht_grow(struct htab *t)
{
    size_t nnb = t->nb * 2;
    struct hnode **nb = calloc(nnb, sizeof *nb);
    if (!nb)
        return;
    for (size_t i = 0; i < t->nb; i++) {
        struct hnode *e = t->b[i], *next;
        for (; e; e = next) {
            next = e->next;
            size_t j = e->hash & (nnb - 1);
            e->next = nb[j];
            nb[j] = e;
        }
    }
    free(t->b);
    t->b = nb;
    t->nb = nnb;
}

/* Insert a key known to be absent; returns the new node (val NULL, u 0). */
static struct hnode *ht_add(struct htab *t, const char *k, size_t kl, uint64_t h)
{
    struct hnode *e = malloc(sizeof *e + kl + 1);
    if (!e)
        return NULL;
    e->hash = h;
    e->val = NULL;
    e->u = 0;
    e->klen = kl;
    memcpy(e->key, k, kl);
    e->key[kl] = '\0';
    size_t i = h & (t->nb - 1);
    e->next = t->b[i];
    t->b[i] = e;
    if (++t->n > t->nb)
        ht_grow(t);
    return e;
}

/* Unlink and free a node; returns 1 and its value in *val if it existed. */
static int ht_del(struct htab *t, const char *k, size_t kl, uint64_t h, void **val)
{
    for (struct hnode **pp = &t->b[h & (t->nb - 1)]; *pp; pp = &(*pp)->next) {
        struct hnode *e = *pp;
        if (e->hash == h && e->klen == kl && memcmp(e->key, k, kl) == 0) {
            *pp = e->next;
            if (val)
                *val = e->val;
            free(e);
            t->n--;
            return 1;
        }
    }
    return 0;
}

/* Free every node (calling fv on each value if given) and shrink back. */
static void ht_clear(struct htab *t, void (*fv)(void *))
{
    for (size_t i = 0; i < t->nb; i++) {
        struct hnode *e = t->b[i], *next;
        for (; e; e = next) {
            next = e->next;
            if (fv)
                fv(e->val);
            free(e);
        }
    }
    t->n = 0;
    if (t->nb > 64) {
        struct hnode **nb = calloc(64, sizeof *nb);
        if (nb) {
            free(t->b);
            t->b = nb;
            t->nb = 64;
            return;
        }
    }
    memset(t->b, 0, t->nb * sizeof *t->b);
}

static void ht_destroy(struct htab *t, void (*fv)(void *))
{
    if (!t->b)
        return;
    ht_clear(t, fv);
    free(t->b);
    t->b = NULL;
}

/* ------------------------------------------------------------------ */
/* timestamps and top-level JSON members of stored documents           */
/* ------------------------------------------------------------------ */

#define TS_NONE INT64_MIN       /* no parseable timestamp */

/* Timestamps of the documents --auto generates (before any shift). */
#define AUTO_T_CREATED "2024-08-07T13:42:45"
#define AUTO_T_UPDATED "2024-08-07T13:42:46"
#define AUTO_M_CREATED "2024-08-09T13:30:38.609142Z"

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* k decimal digits of s at offset at (within n bytes) into *out. */
static int digits_at(const char *s, size_t n, size_t at, int k, int *out)
{
    int v = 0;
    if (at + (size_t) k > n)
        return -1;
    for (int i = 0; i < k; i++) {
        if (!isdigit((unsigned char) s[at + i]))
            return -1;
        v = v * 10 + (s[at + i] - '0');
    }
    *out = v;
    return 0;
}

/*
 * Parse an ISO 8601 timestamp as the API writes them: YYYY-MM-DD, then
 * optionally T (or a space) and HH:MM[:SS[.fraction]], then optionally Z
 * or an offset +HH:MM / -HH:MM / +HHMM.  No zone means UTC.  Returns 0 with
 * *us set to microseconds since the epoch (fraction truncated), or -1.
 */
static int parse_ts(const char *s, size_t n, int64_t *us)
{
    int Y, M, D, h = 0, mi = 0, sec = 0;
    int64_t frac = 0, off = 0;
    size_t i = 10;
    if (n < 10 || digits_at(s, n, 0, 4, &Y) || s[4] != '-' || digits_at(s, n, 5, 2, &M) ||
        s[7] != '-' || digits_at(s, n, 8, 2, &D) || M < 1 || M > 12 || D < 1 || D > 31)
        return -1;
    if (i < n && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
        if (digits_at(s, n, i + 1, 2, &h) || i + 3 >= n || s[i + 3] != ':' ||
            digits_at(s, n, i + 4, 2, &mi))
            return -1;
        i += 6;
        if (i < n && s[i] == ':') {
            if (digits_at(s, n, i + 1, 2, &sec))
                return -1;
            i += 3;
            if (i < n && (s[i] == '.' || s[i] == ',')) {
                int nd = 0;
                if (++i >= n || !isdigit((unsigned char) s[i]))
                    return -1;
                for (; i < n && isdigit((unsigned char) s[i]); i++)
                    if (nd < 6) {
                        frac = frac * 10 + (s[i] - '0');
                        nd++;
                    }
                for (; nd < 6; nd++)
                    frac *= 10;
            }
        }
        if (h > 23 || mi > 59 || sec > 60)
            return -1;
        if (i < n && (s[i] == 'Z' || s[i] == 'z'))
            i++;
        else if (i < n && (s[i] == '+' || s[i] == '-')) {
            int oh, om, neg = s[i] == '-';
            if (digits_at(s, n, i + 1, 2, &oh))
                return -1;
            i += 3;
            if (i < n && s[i] == ':')
                i++;
            if (digits_at(s, n, i, 2, &om) || oh > 23 || om > 59)
                return -1;
            i += 2;
            off = (neg ? -1 : 1) * (int64_t) (oh * 3600 + om * 60);
        }
    }
    if (i != n)
        return -1;
    *us = ((days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + sec) - off) * 1000000 + frac;
    return 0;
}

/* Now, UTC, in the API's zone-less form (whole seconds), and as microseconds. */
static void fmt_now(char out[24], int64_t *us)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t t = ts.tv_sec;
    gmtime_r(&t, &tm);
    strftime(out, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    *us = (int64_t) t * 1000000;
}

static const char *jws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at '"': the position after the closing quote, or NULL. */
static const char *jstr_end(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* The position after the JSON value at p (shallowly checked), or NULL. */
static const char *jval_end(const char *p, const char *e)
{
    if (p >= e)
        return NULL;
    if (*p == '"')
        return jstr_end(p, e);
    if (*p == '{' || *p == '[') {
        long depth = 0;
        while (p < e) {
            if (*p == '"') {
                if (!(p = jstr_end(p, e)))
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    const char *q = p;
    while (q < e && *q != ',' && *q != '}' && *q != ']' && *q != ' ' && *q != '\t' &&
           *q != '\n' && *q != '\r')
        q++;
    return q > p ? q : NULL;
}

/*
 * Find the last top-level member named key of the JSON object b (the one
 * a JSON parser keeps).  Returns 1 with the value's span in [*vs, *ve), 0
 * if the object has no such member, -1 if b is not a JSON object.
 */
static int json_member(const char *b, size_t n, const char *key, const char **vs, const char **ve)
{
    const char *p = b, *e = b + n;
    size_t kl = strlen(key);
    int found = 0;
    p = jws(p, e);
    if (p >= e || *p++ != '{')
        return -1;
    p = jws(p, e);
    if (p < e && *p == '}')
        return jws(p + 1, e) == e ? 0 : -1;
    for (;;) {
        if (p >= e || *p != '"')
            return -1;
        const char *ks = p + 1, *ke = jstr_end(p, e);
        if (!ke)
            return -1;
        p = jws(ke, e);
        if (p >= e || *p++ != ':')
            return -1;
        p = jws(p, e);
        const char *v = p;
        if (!(p = jval_end(p, e)))
            return -1;
        if ((size_t) (ke - 1 - ks) == kl && memcmp(ks, key, kl) == 0) {
            *vs = v;
            *ve = p;
            found = 1;
        }
        p = jws(p, e);
        if (p < e && *p == ',') {
            p = jws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}')
            break;
        return -1;
    }
    return jws(p + 1, e) == e ? found : -1;
}

/* The timestamp in string member key of a JSON object, or TS_NONE. */
static int64_t json_ts(const char *b, size_t n, const char *key)
{
    const char *vs, *ve;
    int64_t us;
    if (json_member(b, n, key, &vs, &ve) != 1 || ve - vs < 2 || *vs != '"' ||
        parse_ts(vs + 1, (size_t) (ve - vs - 2), &us) < 0)
        return TS_NONE;
    return us;
}

/*
 * A malloc'd copy of the JSON object b with its top-level member key set
 * to the string val (the last such member replaced, or one added first).
 * NULL if b is not an object, or out of memory.
 */
static char *json_set_str(const char *b, size_t n, const char *key, const char *val, size_t *outlen)
{
    const char *vs, *ve;
    int r = json_member(b, n, key, &vs, &ve);
    if (r < 0)
        return NULL;
    size_t kl = strlen(key), vl = strlen(val), pos;
    char *o = malloc(n + kl + vl + 8);
    if (!o)
        return NULL;
    if (r == 1) {
        pos = (size_t) (vs - b);
        memcpy(o, b, pos);
        o[pos++] = '"';
        memcpy(o + pos, val, vl);
        pos += vl;
        o[pos++] = '"';
        memcpy(o + pos, ve, (size_t) (b + n - ve));
        pos += (size_t) (b + n - ve);
    } else {
        const char *brace = jws(b, b + n);
        size_t at = (size_t) (brace - b) + 1;
        int empty = *jws(brace + 1, b + n) == '}';
        memcpy(o, b, at);
        pos = at;
        pos += (size_t) snprintf(o + pos, kl + vl + 8, "\"%s\":\"%s\"%s", key, val, empty ? "" : ",");
        memcpy(o + pos, b + at, n - at);
        pos += n - at;
    }
    *outlen = pos;
    return o;
}

/* ------------------------------------------------------------------ */
/* document store: one per namespace                                   */
/* ------------------------------------------------------------------ */

/*
 * DOC_AUTO: a message created by an --auto GET; its body is generated when
 * served.  Tickets an --auto GET creates are kept apart, in a compact set
 * (struct aset), so that remembering them stays cheap on the GET hot path.
 */
enum { DOC_NONE = 0, DOC_PUT = 1, DOC_DELETED = 2, DOC_AUTO = 3 };

struct msg {
    struct msg *next;         /* in its ticket's list, first-touch order */
    char       *body;
    size_t      len;
    int         state;
    int64_t     created;      /* created_at: the list order */
    char        key[74];      /* "<ticket_id>/<message_id>" */
};

struct ticket {
    char       *body;
    size_t      len;
    int         state;        /* DOC_NONE: placeholder holding messages */
    int64_t     updated;      /* updated_at: list order and filters */
    struct msg *head, *tail;
    char        id[37];
};

/*
 * Ticket ids an --auto GET created, as 128-bit numbers: one shard of an
 * open-addressing set (linear probing, at most half full; {0,0} marks an
 * empty slot, so the all-zero id has its own flag).  A ticket is listed
 * from here unless the main table has it PUT (listed from there) or
 * DELETED.  Shards are used under the docs lock (read or write) and their
 * own mutex.
 */
#define AS_SHARDS 16

struct aset {
    pthread_mutex_t mu;
    uint64_t      (*k)[2];
    size_t          cap, n;     /* n counts the zero id too */
    int             zero;
};

/* An entry of a tickets list. */
struct lent {
    int64_t        updated;
    struct ticket *t;           /* NULL: an --auto ticket, body generated */
    char           id[37];
};

/* The listed tickets of a namespace in one order; rebuilt when gen moves. */
struct tcache {
    struct lent       *v;
    size_t             n, cap;
    unsigned long long gen;     /* 0: never built */
};

struct ns {
    struct htab        tickets;     /* ticket id -> struct ticket */
    struct htab        msgs;        /* "tid/mid" -> struct msg (owned by ticket) */
    unsigned long long gen;         /* bumped (atomically) on every change to the list */
    unsigned long long insert_seq;  /* ids of the tickets insert_per_page makes */
    pthread_mutex_t    cache_mu;    /* list requests share the read lock */
    struct tcache      by_upd;      /* (updated_at, id) ascending */
    struct tcache      by_id;       /* id ascending */
    struct aset        as[AS_SHARDS];
};

static pthread_rwlock_t g_docs_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct ns   g_ns0;           /* the default (unprefixed) namespace */
static struct htab g_nss;           /* name -> struct ns *: /sellers/<name> */
static long        g_auto_n;        /* documents --auto remembered (atomic) */
static int64_t     g_auto_t_upd, g_auto_m_created;

static int gen_ticket(char *out, size_t cap, const char *tid, const char *created, const char *updated);
static int gen_msg(char *out, size_t cap, const char *tid, const char *mid);

static void ticket_free(void *p)
{
    struct ticket *t = p;
    struct msg *m, *next;
    if (!t)
        return;
    for (m = t->head; m; m = next) {
        next = m->next;
        free(m->body);
        free(m);
    }
    free(t->body);
    free(t);
}

/* Hex digit values (0 for other bytes: only validated ids are parsed). */
static const unsigned char g_hexv[256] = {
    ['0'] = 0, ['1'] = 1, ['2'] = 2, ['3'] = 3, ['4'] = 4, ['5'] = 5, ['6'] = 6, ['7'] = 7,
    ['8'] = 8, ['9'] = 9, ['a'] = 10, ['b'] = 11, ['c'] = 12, ['d'] = 13, ['e'] = 14, ['f'] = 15,
    ['A'] = 10, ['B'] = 11, ['C'] = 12, ['D'] = 13, ['E'] = 14, ['F'] = 15,
};

/* A validated UUID as two 64-bit halves. */
static void uuid_bits(const char *id, uint64_t k[2])
{
    static const unsigned char pos[32] = {
        0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17,
        19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35
    };
    uint64_t a = 0, b = 0;
    for (int i = 0; i < 16; i++)
        a = (a << 4) | g_hexv[(unsigned char) id[pos[i]]];
    for (int i = 16; i < 32; i++)
        b = (b << 4) | g_hexv[(unsigned char) id[pos[i]]];
    k[0] = a;
    k[1] = b;
}

static void uuid_str(const uint64_t k[2], char out[37])
{
    snprintf(out, 37, "%08llx-%04llx-%04llx-%04llx-%012llx",
             (unsigned long long) (k[0] >> 32), (unsigned long long) ((k[0] >> 16) & 0xffff),
             (unsigned long long) (k[0] & 0xffff), (unsigned long long) (k[1] >> 48),
             (unsigned long long) (k[1] & 0xffffffffffffULL));
}

static uint64_t aset_hash(const uint64_t k[2])
{
    uint64_t h = k[0] ^ (k[1] * 0x9e3779b97f4a7c15ULL);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

/* Insert into a shard (its mutex held); 1 if added, 0 if present or OOM. */
static int aset_add(struct aset *a, const uint64_t k[2], uint64_t h)
{
    if (!k[0] && !k[1]) {
        if (a->zero)
            return 0;
        a->zero = 1;
        a->n++;
        return 1;
    }
    if (a->cap) {
        for (size_t i = h & (a->cap - 1);; i = (i + 1) & (a->cap - 1)) {
            if (a->k[i][0] == k[0] && a->k[i][1] == k[1])
                return 0;
            if (!a->k[i][0] && !a->k[i][1])
                break;
        }
    }
    if ((a->n + 1) * 2 > a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        uint64_t (*nk)[2] = calloc(nc, sizeof *nk);
        if (!nk)
            return 0;
        for (size_t i = 0; i < a->cap; i++) {
            if (!a->k[i][0] && !a->k[i][1])
                continue;
            size_t j = aset_hash(a->k[i]) & (nc - 1);
            while (nk[j][0] || nk[j][1])
                j = (j + 1) & (nc - 1);
            nk[j][0] = a->k[i][0];
            nk[j][1] = a->k[i][1];
        }
        free(a->k);
        a->k = nk;
        a->cap = nc;
    }
    size_t i = h & (a->cap - 1);
    while (a->k[i][0] || a->k[i][1])
        i = (i + 1) & (a->cap - 1);
    a->k[i][0] = k[0];
    a->k[i][1] = k[1];
    a->n++;
    return 1;
}

/* Empty a shard (docs write lock held: nobody else uses it). */
static void aset_clear(struct aset *a)
{
    free(a->k);
    a->k = NULL;
    a->cap = a->n = 0;
    a->zero = 0;
}

/* Remember an --auto ticket of namespace s (docs lock held, either mode). */
static void aset_remember(struct ns *s, const char *tid)
{
    uint64_t k[2];
    if (A_LOAD(&g_auto_n) >= g_cfg.auto_max)
        return;
    uuid_bits(tid, k);
    uint64_t h = aset_hash(k);
    struct aset *a = &s->as[h >> 60];
    pthread_mutex_lock(&a->mu);
    int added = aset_add(a, k, h);
    pthread_mutex_unlock(&a->mu);
    if (added) {
        A_INC(&g_auto_n);
        A_INC(&s->gen);
    }
}

static int ns_init(struct ns *s)
{
    memset(s, 0, sizeof *s);
    s->gen = 1;
    pthread_mutex_init(&s->cache_mu, NULL);
    for (int i = 0; i < AS_SHARDS; i++)
        pthread_mutex_init(&s->as[i].mu, NULL);
    if (ht_init(&s->tickets))
        return -1;
    if (ht_init(&s->msgs)) {
        ht_destroy(&s->tickets, NULL);
        return -1;
    }
    return 0;
}

static void tcache_drop(struct tcache *c)
{
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
    c->gen = 0;
}

/* Empty a namespace (write lock held). */
static void ns_clear(struct ns *s)
{
    ht_clear(&s->msgs, NULL);
    ht_clear(&s->tickets, ticket_free);
    for (int i = 0; i < AS_SHARDS; i++)
        aset_clear(&s->as[i]);
    A_INC(&s->gen);
    s->insert_seq = 0;
    tcache_drop(&s->by_upd);
    tcache_drop(&s->by_id);
}

static void ns_free(void *p)
{
    struct ns *s = p;
    if (!s)
        return;
    ht_destroy(&s->msgs, NULL);
    ht_destroy(&s->tickets, ticket_free);
    tcache_drop(&s->by_upd);
    tcache_drop(&s->by_id);
    for (int i = 0; i < AS_SHARDS; i++) {
        aset_clear(&s->as[i]);
        pthread_mutex_destroy(&s->as[i].mu);
    }
    pthread_mutex_destroy(&s->cache_mu);
    free(s);
}

/* The namespace of a name (length 0: the default one), or NULL; any lock. */
static struct ns *ns_find(const char *name, size_t n)
{
    if (n == 0)
        return &g_ns0;
    struct hnode *e = ht_find(&g_nss, name, n, hash_bytes(name, n));
    return e ? e->val : NULL;
}

/* Find or create a namespace (write lock); NULL if NS_MAX exist or OOM. */
static struct ns *ns_get_or_add(const char *name, size_t n)
{
    struct ns *s = ns_find(name, n);
    if (s || g_nss.n >= NS_MAX)
        return s;
    if (!(s = malloc(sizeof *s)))
        return NULL;
    if (ns_init(s)) {
        free(s);
        return NULL;
    }
    struct hnode *e = ht_add(&g_nss, name, n, hash_bytes(name, n));
    if (!e) {
        ns_free(s);
        return NULL;
    }
    e->val = s;
    return s;
}

/* Find or create the record of a ticket (caller holds the write lock). */
static struct ticket *ticket_get_or_add(struct ns *s, const char *tid)
{
    uint64_t h = hash_bytes(tid, 36);
    struct hnode *e = ht_find(&s->tickets, tid, 36, h);
    if (e)
        return e->val;
    struct ticket *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    e = ht_add(&s->tickets, tid, 36, h);
    if (!e) {
        free(t);
        return NULL;
    }
    memcpy(t->id, tid, 36);
    t->updated = TS_NONE;
    e->val = t;
    return t;
}

static struct ticket *ticket_find(const struct ns *s, const char *tid)
{
    struct hnode *e = s ? ht_find(&s->tickets, tid, 36, hash_bytes(tid, 36)) : NULL;
    return e ? e->val : NULL;
}

static void msg_key(char key[74], const char *tid, const char *mid)
{
    memcpy(key, tid, 36);
    key[36] = '/';
    memcpy(key + 37, mid, 36);
    key[73] = '\0';
}

/* Find or create a message record and link it to its ticket (write lock). */
static struct msg *msg_get_or_add(struct ns *s, struct ticket *t, const char *tid, const char *mid)
{
    char key[74];
    msg_key(key, tid, mid);
    uint64_t h = hash_bytes(key, 73);
    struct hnode *e = ht_find(&s->msgs, key, 73, h);
    if (e)
        return e->val;
    struct msg *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    e = ht_add(&s->msgs, key, 73, h);
    if (!e) {
        free(m);
        return NULL;
    }
    memcpy(m->key, key, sizeof key);
    m->created = TS_NONE;
    e->val = m;
    if (t->tail)
        t->tail->next = m;
    else
        t->head = m;
    t->tail = m;
    return m;
}

/* Results of the store's writers: 0, or one of these. */
enum { ST_OOM = -1, ST_NS_FULL = -2 };

/* PUT a ticket document; takes ownership of body. */
static int docs_put_ticket(const char *ns, size_t nl, const char *tid, char *body, size_t len)
{
    int64_t upd = json_ts(body, len, "updated_at");
    int rc = ST_OOM;
    pthread_rwlock_wrlock(&g_docs_lock);
    struct ns *s = ns_get_or_add(ns, nl);
    struct ticket *t = s ? ticket_get_or_add(s, tid) : NULL;
    if (t) {
        free(t->body);
        t->body = body;
        t->len = len;
        t->state = DOC_PUT;
        t->updated = upd;
        A_INC(&s->gen);
        rc = 0;
    } else if (!s && g_nss.n >= NS_MAX)
        rc = ST_NS_FULL;
    pthread_rwlock_unlock(&g_docs_lock);
    if (rc)
        free(body);
    return rc;
}

/* DELETE a ticket: mark it deleted and drop all its stored messages. */
static int docs_del_ticket(const char *ns, size_t nl, const char *tid)
{
    int rc = ST_OOM;
    pthread_rwlock_wrlock(&g_docs_lock);
    struct ns *s = ns_get_or_add(ns, nl);
    struct ticket *t = s ? ticket_get_or_add(s, tid) : NULL;
    if (t) {
        struct msg *m, *next;
        for (m = t->head; m; m = next) {
            next = m->next;
            ht_del(&s->msgs, m->key, 73, hash_bytes(m->key, 73), NULL);
            free(m->body);
            free(m);
        }
        t->head = t->tail = NULL;
        free(t->body);
        t->body = NULL;
        t->len = 0;
        t->state = DOC_DELETED;
        t->updated = TS_NONE;
        A_INC(&s->gen);
        rc = 0;
    } else if (!s && g_nss.n >= NS_MAX)
        rc = ST_NS_FULL;
    pthread_rwlock_unlock(&g_docs_lock);
    return rc;
}

/* PUT (body != NULL) or DELETE (body == NULL) one message. */
static int docs_set_msg(const char *ns, size_t nl, const char *tid, const char *mid, char *body, size_t len)
{
    int64_t created = body ? json_ts(body, len, "created_at") : TS_NONE;
    int rc = ST_OOM;
    struct msg *m = NULL;
    pthread_rwlock_wrlock(&g_docs_lock);
    struct ns *s = ns_get_or_add(ns, nl);
    struct ticket *t = s ? ticket_get_or_add(s, tid) : NULL;
    if (t)
        m = msg_get_or_add(s, t, tid, mid);
    if (m) {
        free(m->body);
        m->body = body;
        m->len = body ? len : 0;
        m->state = body ? DOC_PUT : DOC_DELETED;
        m->created = created;
        rc = 0;
    } else if (!s && g_nss.n >= NS_MAX)
        rc = ST_NS_FULL;
    pthread_rwlock_unlock(&g_docs_lock);
    if (rc)
        free(body);
    return rc;
}

enum { LK_NOTFOUND, LK_BODY, LK_AUTO };

static int copy_body(const char *b, size_t n, char **out, size_t *len)
{
    if (!(*out = malloc(n ? n : 1)))
        return LK_NOTFOUND;
    memcpy(*out, b, n);
    *len = n;
    return LK_BODY;
}

/*
 * An --auto GET of a ticket in a namespace that does not exist yet: create
 * it and remember the ticket.  Same results as docs_get_ticket.
 */
static int docs_auto_ticket(const char *ns, size_t nl, const char *tid, char **out, size_t *len)
{
    int r = LK_AUTO;
    pthread_rwlock_wrlock(&g_docs_lock);
    struct ns *s = ns_get_or_add(ns, nl);
    struct ticket *t = ticket_find(s, tid);
    if (t && t->state == DOC_PUT)
        r = copy_body(t->body, t->len, out, len);
    else if (t && t->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else if (s)
        aset_remember(s, tid);
    pthread_rwlock_unlock(&g_docs_lock);
    return r;
}

/*
 * Look up a ticket.  LK_BODY: *out is a malloc'd copy of the PUT body;
 * LK_AUTO: caller generates the document (remembered for the lists);
 * LK_NOTFOUND: 404.
 */
static int docs_get_ticket(const char *ns, size_t nl, const char *tid, char **out, size_t *len)
{
    int r, new_ns = 0;
    pthread_rwlock_rdlock(&g_docs_lock);
    struct ns *s = ns_find(ns, nl);
    struct ticket *t = ticket_find(s, tid);
    if (t && t->state == DOC_PUT)
        r = copy_body(t->body, t->len, out, len);
    else if (t && t->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else if (!g_cfg.auto_docs)
        r = LK_NOTFOUND;
    else {
        r = LK_AUTO;
        if (s)
            aset_remember(s, tid);
        else
            new_ns = A_LOAD(&g_auto_n) < g_cfg.auto_max;
    }
    pthread_rwlock_unlock(&g_docs_lock);
    return new_ns ? docs_auto_ticket(ns, nl, tid, out, len) : r;
}

/* docs_auto_ticket for a message (its ticket becomes a placeholder if new). */
static int docs_auto_msg(const char *ns, size_t nl, const char *tid, const char *mid, char **out, size_t *len)
{
    int r = LK_AUTO;
    struct msg *m = NULL;
    pthread_rwlock_wrlock(&g_docs_lock);
    struct ns *s = ns_get_or_add(ns, nl);
    struct ticket *t = s ? ticket_get_or_add(s, tid) : NULL;
    if (t && t->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else if (t)
        m = msg_get_or_add(s, t, tid, mid);
    if (m && m->state == DOC_PUT)
        r = copy_body(m->body, m->len, out, len);
    else if (m && m->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else if (m && m->state == DOC_NONE) {
        m->state = DOC_AUTO;
        m->created = g_auto_m_created;
        A_INC(&g_auto_n);
    }
    pthread_rwlock_unlock(&g_docs_lock);
    return r;
}

/* Look up one message; same contract as docs_get_ticket. */
static int docs_get_msg(const char *ns, size_t nl, const char *tid, const char *mid, char **out, size_t *len)
{
    int r, remember = 0;
    char key[74];
    msg_key(key, tid, mid);
    pthread_rwlock_rdlock(&g_docs_lock);
    struct ns *s = ns_find(ns, nl);
    struct ticket *t = ticket_find(s, tid);
    struct hnode *me = t ? ht_find(&s->msgs, key, 73, hash_bytes(key, 73)) : NULL;
    struct msg *m = me ? me->val : NULL;
    if (t && t->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else if (m && m->state == DOC_PUT)
        r = copy_body(m->body, m->len, out, len);
    else if (m && m->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else if (m && m->state == DOC_AUTO)
        r = LK_AUTO;
    else if (!g_cfg.auto_docs)
        r = LK_NOTFOUND;
    else {
        r = LK_AUTO;
        remember = A_LOAD(&g_auto_n) < g_cfg.auto_max;
    }
    pthread_rwlock_unlock(&g_docs_lock);
    return remember ? docs_auto_msg(ns, nl, tid, mid, out, len) : r;
}

static int append_fmt(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* snprintf at *pos, advancing it; returns -1 if it did not fit. */
static int append_fmt(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, cap - *pos, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t) n >= cap - *pos)
        return -1;
    *pos += (size_t) n;
    return 0;
}

/* A list page's "meta" and the opening of "results" (fits in 600 bytes). */
static int page_head(char *out, size_t cap, size_t *pos, long off, long lim, long count,
                     long total, long maxl)
{
    int bad = append_fmt(out, cap, pos,
                         "{\"meta\":{\"page\":{\"limit\":%ld,\"offset\":%ld,\"count\":%ld,"
                         "\"max_limit\":%ld},\"links\":{", lim, off, count, maxl);
    if (off > 0)
        bad |= append_fmt(out, cap, pos, "\"previous\":\"?_offset=%ld&_limit=%ld\",",
                          off > lim ? off - lim : 0, lim);
    bad |= append_fmt(out, cap, pos, "\"self\":\"?_offset=%ld&_limit=%ld\"", off, lim);
    if (off + count < total)
        bad |= append_fmt(out, cap, pos, ",\"next\":\"?_offset=%ld&_limit=%ld\"", off + lim, lim);
    bad |= append_fmt(out, cap, pos, "}},\"results\":[");
    return bad;
}

/* Append a raw document, or -1 if it does not fit. */
static int put_raw(char *out, size_t cap, size_t *pos, const char *b, size_t n)
{
    if (n > cap - *pos)
        return -1;
    memcpy(out + *pos, b, n);
    *pos += n;
    return 0;
}

/* Append a generated document (snprintf result n), or -1. */
static int put_gen(size_t cap, size_t *pos, int n)
{
    if (n < 0 || (size_t) n >= cap - *pos)
        return -1;
    *pos += (size_t) n;
    return 0;
}

static int cmp_msg(const void *a, const void *b)
{
    const struct msg *x = *(struct msg *const *) a, *y = *(struct msg *const *) b;
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return strcmp(x->key + 37, y->key + 37);
}

/*
 * Build the paged message list of a ticket: its stored (PUT or --auto)
 * messages by created_at, then id.  Returns a malloc'd body, or NULL with
 * *notfound set when the ticket is deleted (or unknown without --auto).
 */
static char *docs_list_msgs(const char *ns, size_t nl, const char *tid, long off, long lim,
                            long maxl, size_t *len, int *notfound)
{
    char *out = NULL;
    struct msg **v = NULL;
    size_t nm = 0;
    *notfound = 0;
    pthread_rwlock_rdlock(&g_docs_lock);
    struct ticket *t = ticket_find(ns_find(ns, nl), tid);
    if ((t && t->state == DOC_DELETED) || (!t && !g_cfg.auto_docs)) {
        *notfound = 1;
        goto done;
    }
    for (struct msg *m = t ? t->head : NULL; m; m = m->next)
        nm += m->state == DOC_PUT || m->state == DOC_AUTO;
    if (nm && !(v = malloc(nm * sizeof *v)))
        goto done;
    nm = 0;
    for (struct msg *m = t ? t->head : NULL; m; m = m->next)
        if (m->state == DOC_PUT || m->state == DOC_AUTO)
            v[nm++] = m;
    if (nm > 1)
        qsort(v, nm, sizeof *v, cmp_msg);
    long total = (long) nm;
    long first = off < total ? off : total;
    long last = lim < total - first ? first + lim : total;
    size_t need = 600;
    for (long i = first; i < last; i++)
        need += (v[i]->state == DOC_PUT ? v[i]->len : GEN_MAX) + 1;
    if (!(out = malloc(need)))
        goto done;
    size_t pos = 0;
    int bad = page_head(out, need, &pos, off, lim, last - first, total, maxl);
    for (long i = first; i < last && !bad; i++) {
        if (i > first)
            out[pos++] = ',';
        if (v[i]->state == DOC_PUT)
            bad = put_raw(out, need, &pos, v[i]->body, v[i]->len);
        else
            bad = put_gen(need, &pos, gen_msg(out + pos, need - pos, tid, v[i]->key + 37));
    }
    bad |= append_fmt(out, need, &pos, "]}");
    if (bad) {
        free(out);
        out = NULL;
    } else
        *len = pos;
done:
    pthread_rwlock_unlock(&g_docs_lock);
    free(v);
    return out;
}

static int cmp_upd(const void *a, const void *b)
{
    const struct lent *x = a, *y = b;
    if (x->updated != y->updated)
        return x->updated < y->updated ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int cmp_id(const void *a, const void *b)
{
    const struct lent *x = a, *y = b;
    return strcmp(x->id, y->id);
}

static int tcache_push(struct tcache *c, int64_t updated, struct ticket *t, const char *id)
{
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        struct lent *nv = realloc(c->v, nc * sizeof *nv);
        if (!nv)
            return -1;
        c->v = nv;
        c->cap = nc;
    }
    struct lent *e = &c->v[c->n++];
    e->updated = updated;
    e->t = t;
    memcpy(e->id, id, 37);
    return 0;
}

/*
 * Bring a list-order cache up to date (docs lock and s->cache_mu held):
 * the PUT tickets, and the --auto ones the main table does not have as
 * PUT or DELETED.  The generation is read first, so that an --auto ticket
 * remembered meanwhile (under the read lock) makes the next list rebuild.
 */
static int tcache_get(struct ns *s, struct tcache *c, int by_id)
{
    unsigned long long gen = A_LOAD(&s->gen);
    if (c->gen == gen)
        return 0;
    c->n = 0;
    for (size_t i = 0; i < s->tickets.nb; i++)
        for (struct hnode *e = s->tickets.b[i]; e; e = e->next) {
            struct ticket *t = e->val;
            if (t->state == DOC_PUT && tcache_push(c, t->updated, t, t->id) < 0)
                return -1;
        }
    for (int i = 0; i < AS_SHARDS; i++) {
        struct aset *a = &s->as[i];
        int bad = 0;
        char id[37];
        pthread_mutex_lock(&a->mu);
        for (size_t j = 0; j <= a->cap && !bad; j++) {
            static const uint64_t zero[2] = { 0, 0 };
            const uint64_t *k = j < a->cap ? a->k[j] : zero;
            if (j < a->cap ? (!k[0] && !k[1]) : !a->zero)
                continue;
            uuid_str(k, id);
            struct ticket *t = ticket_find(s, id);
            if (!t || t->state == DOC_NONE)
                bad = tcache_push(c, g_auto_t_upd, NULL, id) < 0;
        }
        pthread_mutex_unlock(&a->mu);
        if (bad)
            return -1;
    }
    if (c->n > 1)
        qsort(c->v, c->n, sizeof *c->v, by_id ? cmp_id : cmp_upd);
    c->gen = gen;
    return 0;
}

/* First index of the (updated_at, id) order with updated > v (or >= v). */
static size_t tcache_bound(const struct tcache *c, int64_t v, int strictly)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t u = c->v[mid].updated;
        if (u < v || (strictly && u == v))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * shift_per_page / insert_per_page, after a tickets list page of s was
 * built (write lock and s->cache_mu held): the `shift` listed tickets with
 * the oldest updated_at (then lowest id) get updated_at = now, in their
 * stored body too (an --auto ticket becomes a stored one); `insert` new
 * tickets are created with created_at = updated_at = now and ids
 * 90000000-0000-4000-8000-NNNNNNNNNNNN from a per-namespace counter (ids
 * already stored are skipped).
 */
static void ns_shift_insert(struct ns *s, long shift, long insert)
{
    char now[24], gen[GEN_MAX];
    int64_t now_us;
    fmt_now(now, &now_us);
    if (shift > 0 && tcache_get(s, &s->by_upd, 0) == 0) {
        struct lent pick[MAX_PER_PAGE];
        long np = 0;
        const char *vs, *ve;
        for (size_t i = 0; i < s->by_upd.n && np < shift; i++) {
            const struct lent *e = &s->by_upd.v[i];
            if (!e->t || json_member(e->t->body, e->t->len, "updated_at", &vs, &ve) >= 0)
                pick[np++] = *e;
        }
        for (long i = 0; i < np; i++) {
            struct ticket *t = pick[i].t;
            const char *b = t ? t->body : gen;
            size_t bl = t ? t->len : 0, nbl;
            if (!t) {
                int n = gen_ticket(gen, sizeof gen, pick[i].id, NULL, NULL);
                if (n < 0 || (size_t) n >= sizeof gen || !(t = ticket_get_or_add(s, pick[i].id)))
                    continue;
                bl = (size_t) n;
            }
            char *nb = json_set_str(b, bl, "updated_at", now, &nbl);
            if (!nb)
                continue;
            free(t->body);
            t->body = nb;
            t->len = nbl;
            t->state = DOC_PUT;
            t->updated = now_us;
        }
        A_INC(&s->gen);
    }
    for (long k = 0; k < insert; k++) {
        char id[40];
        do
            snprintf(id, sizeof id, "90000000-0000-4000-8000-%012llu", ++s->insert_seq % 1000000000000ULL);
        while (ticket_find(s, id));
        int n = gen_ticket(gen, sizeof gen, id, now, now);
        if (n < 0 || (size_t) n >= sizeof gen)
            break;
        char *b = malloc((size_t) n);
        struct ticket *t = b ? ticket_get_or_add(s, id) : NULL;
        if (!t) {
            free(b);
            break;
        }
        memcpy(b, gen, (size_t) n);
        free(t->body);
        t->body = b;
        t->len = (size_t) n;
        t->state = DOC_PUT;
        t->updated = now_us;
        A_INC(&s->gen);
    }
}

/* A tickets list request, validated. */
struct tlq {
    long    off, lim, maxl;
    int     desc;           /* updated_at descending (else ascending) */
    int     by_id;          /* --list-ignores-filters: all, id ascending */
    int     filtered;       /* an updated_at filter is present */
    int64_t gte, lte;       /* inclusive bounds */
    long    shift, insert;  /* mutations after the page is built */
};

/*
 * Build a page of the tickets list of a namespace: its PUT and --auto
 * tickets (deleted ones and message placeholders excluded), in
 * (updated_at, id) order ascending or exactly reversed, restricted to
 * gte <= updated_at <= lte when filtered (tickets without a parseable
 * updated_at never match a filter and sort first ascending); or all of
 * them in id order.  Then apply shift/insert.  A malloc'd body or NULL.
 */
static char *docs_list_tickets(const char *ns, size_t nl, const struct tlq *q, size_t *len)
{
    int mutate = q->shift > 0 || q->insert > 0;
    char *out = NULL;
    if (mutate)
        pthread_rwlock_wrlock(&g_docs_lock);
    else
        pthread_rwlock_rdlock(&g_docs_lock);
    struct ns *s = q->insert > 0 ? ns_get_or_add(ns, nl) : ns_find(ns, nl);
    struct tcache *c = NULL;
    size_t lo = 0, hi = 0;
    if (s) {
        pthread_mutex_lock(&s->cache_mu);
        c = q->by_id ? &s->by_id : &s->by_upd;
        if (tcache_get(s, c, q->by_id) < 0)
            goto unlock;
        hi = c->n;
        if (!q->by_id && q->filtered) {
            lo = tcache_bound(c, q->gte, 0);
            hi = tcache_bound(c, q->lte, 1);
            if (hi < lo)
                hi = lo;
        }
    }
    long total = (long) (hi - lo);
    long first = q->off < total ? q->off : total;
    long last = q->lim < total - first ? first + q->lim : total;
#define TAT(i) (q->desc && !q->by_id ? &c->v[hi - 1 - (size_t) (i)] : &c->v[lo + (size_t) (i)])
    size_t need = 600;
    for (long i = first; i < last; i++)
        need += (TAT(i)->t ? TAT(i)->t->len : GEN_MAX) + 1;
    if (!(out = malloc(need)))
        goto unlock;
    size_t pos = 0;
    int bad = page_head(out, need, &pos, q->off, q->lim, last - first, total, q->maxl);
    for (long i = first; i < last && !bad; i++) {
        const struct lent *e = TAT(i);
        if (i > first)
            out[pos++] = ',';
        if (e->t)
            bad = put_raw(out, need, &pos, e->t->body, e->t->len);
        else
            bad = put_gen(need, &pos, gen_ticket(out + pos, need - pos, e->id, NULL, NULL));
    }
#undef TAT
    bad |= append_fmt(out, need, &pos, "]}");
    if (bad) {
        free(out);
        out = NULL;
    } else
        *len = pos;
    if (s && mutate)
        ns_shift_insert(s, q->shift, q->insert);
unlock:
    if (s)
        pthread_mutex_unlock(&s->cache_mu);
    pthread_rwlock_unlock(&g_docs_lock);
    return out;
}

/* ------------------------------------------------------------------ */
/* auto-generated documents                                            */
/* ------------------------------------------------------------------ */

/* Format 128 bits as a version-4-looking UUID (lower case). */
static void fmt_uuid(char out[37], uint64_t a, uint64_t b)
{
    a = (a & ~0xf000ULL) | 0x4000ULL;                     /* version 4 */
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* variant */
    snprintf(out, 37, "%08llx-%04llx-%04llx-%04llx-%012llx",
             (unsigned long long) (a >> 32), (unsigned long long) ((a >> 16) & 0xffff),
             (unsigned long long) (a & 0xffff), (unsigned long long) (b >> 48),
             (unsigned long long) (b & 0xffffffffffffULL));
}

/* The body of a generated ticket after its two timestamps (TICKET_FMT). */
#define TICKET_FMT_REST \
        "\"id\":\"%s\",\"code\":\"%s\",\"type\":\"payment\"," \
        "\"order\":{\"id\":\"bcc662e8-527b-410f-87a5-bbc8f5e623da\",\"code\":\"%llu\"," \
        "\"delivery\":{\"id\":\"96061b77-b065-4cd8-9e41-b097bf95c173\"," \
        "\"seller\":{\"id\":\"c85be697-7b14-4460-a5c7-3e58b4a364f9\",\"name\":\"SellerName\"}," \
        "\"items\":[{\"id\":\"63c54b4a-ea19-4c52-90a8-bd38cd1a3157\",\"sku\":\"livro-01\"," \
        "\"external_sku\":\"livro-seller-01\",\"name\":\"A Bela e a Fera em 3D\"," \
        "\"description\":\"Livro infantil a Bela e a Fera com encartes em 3D.\"," \
        "\"image\":\"https://imagem.do.livro/foto.jpg\",\"quantity\":1}]}}," \
        "\"channel\":{\"id\":\"3f042852-3efc-4d47-97f8-f94989c7b0bc\"}," \
        "\"status\":\"waiting\",\"closed\":false,\"reason\":null," \
        "\"protocol\":\"2023%011llu\",\"due_date\":\"2024-08-09T13:42:46\",\"origin\":\"customer\"}"

/*
 * The ticket document for an id in --auto mode, deterministic per id and
 * timestamps (also the body of the tickets insert_per_page creates).
 * created NULL: the usual AUTO_T_* timestamps, literals in the format (the
 * GET hot path).
 */
static int gen_ticket(char *out, size_t cap, const char *tid, const char *created, const char *updated)
{
    uint64_t h1 = hash_bytes(tid, 36);
    uint64_t h2 = hash_bytes((const char *) &h1, sizeof h1);
    char code[37];
    fmt_uuid(code, h1, h2);
    unsigned long long order_code = 1000000000000000ULL + h1 % 9000000000000000ULL;
    unsigned long long proto = h2 % 100000000000ULL;
    if (!created)
        return snprintf(out, cap,
            "{\"created_at\":\"" AUTO_T_CREATED "\",\"updated_at\":\"" AUTO_T_UPDATED "\","
            TICKET_FMT_REST, tid, code, order_code, proto);
    return snprintf(out, cap, "{\"created_at\":\"%s\",\"updated_at\":\"%s\"," TICKET_FMT_REST,
                    created, updated, tid, code, order_code, proto);
}

/* The message document for (ticket id, message id) in --auto mode. */
static int gen_msg(char *out, size_t cap, const char *tid, const char *mid)
{
    uint64_t h = hash_bytes(mid, 36);
    return snprintf(out, cap,
        "{\"id\":\"%s\",\"message\":\"The product will be delivered next week.\","
        "\"code\":\"msg-%08llx\",\"ticket\":{\"id\":\"%s\"},"
        "\"sender\":{\"id\":\"sellerId\",\"name\":\"SellerName\",\"type\":\"seller\","
        "\"owner\":{\"name\":\"j.doe\",\"code\":\"John Doe\"}},"
        "\"moderation\":{\"id\":null,\"status\":\"approved\",\"block_rules\":[],"
        "\"updated_at\":\"2024-08-07T14:21:58.024000\"},"
        "\"attachments\":[],\"destination\":\"customer\","
        "\"created_at\":\"2024-08-09T13:30:38.609142Z\"}",
        mid, (unsigned long long) (h & 0xffffffffULL), tid);
}

static char *g_oversize;        /* OVERSIZE_BYTES of valid JSON */

/* Build the body served by the "oversize" fault: one object, ~5 MiB. */
static int build_oversize(void)
{
    static const char head[] = "{\"id\":\"oversize\",\"padding\":\"";
    static const char tail[] = "\"}";
    g_oversize = malloc(OVERSIZE_BYTES);
    if (!g_oversize)
        return -1;
    memcpy(g_oversize, head, sizeof head - 1);
    memset(g_oversize + sizeof head - 1, 'x', OVERSIZE_BYTES - (sizeof head - 1) - (sizeof tail - 1));
    memcpy(g_oversize + OVERSIZE_BYTES - (sizeof tail - 1), tail, sizeof tail - 1);
    return 0;
}

/* ------------------------------------------------------------------ */
/* tokens                                                              */
/* ------------------------------------------------------------------ */

static pthread_rwlock_t g_tok_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct htab g_access, g_refresh;     /* sets of valid tokens */
static unsigned long long g_tok_seq;         /* under g_tok_lock */

/* Add a token to a set (caller holds the write lock). */
static int tokset_add(struct htab *t, const char *tok)
{
    size_t n = strlen(tok);
    uint64_t h = hash_bytes(tok, n);
    if (ht_find(t, tok, n, h))
        return 0;
    return ht_add(t, tok, n, h) ? 0 : -1;
}

/* Is this bearer token a currently valid access token? */
static int access_token_valid(const char *tok, size_t n)
{
    uint64_t h = hash_bytes(tok, n);
    pthread_rwlock_rdlock(&g_tok_lock);
    int ok = ht_find(&g_access, tok, n, h) != NULL;
    pthread_rwlock_unlock(&g_tok_lock);
    return ok;
}

/* ------------------------------------------------------------------ */
/* counters                                                            */
/* ------------------------------------------------------------------ */

static struct {
    unsigned long long api, token, unauthorized, lists, rate_limited;
} g_stats;
static unsigned long long g_reqid;

static struct {
    pthread_mutex_t mu;
    struct htab     t;      /* lower-case path -> count in node->u */
} g_pc[PC_SHARDS];

/* Count one API request against its (lower-case) path. */
static void pathcount_inc(const char *lp, size_t n)
{
    uint64_t h = hash_bytes(lp, n);
    unsigned s = (unsigned) (h >> 60) % PC_SHARDS;
    pthread_mutex_lock(&g_pc[s].mu);
    struct hnode *e = ht_find(&g_pc[s].t, lp, n, h);
    if (!e && g_pc[s].t.n < PC_SHARD_MAX)
        e = ht_add(&g_pc[s].t, lp, n, h);
    if (e)
        e->u++;
    pthread_mutex_unlock(&g_pc[s].mu);
}

static unsigned long long pathcount_get(const char *lp, size_t n)
{
    uint64_t h = hash_bytes(lp, n);
    unsigned s = (unsigned) (h >> 60) % PC_SHARDS;
    pthread_mutex_lock(&g_pc[s].mu);
    struct hnode *e = ht_find(&g_pc[s].t, lp, n, h);
    unsigned long long c = e ? e->u : 0;
    pthread_mutex_unlock(&g_pc[s].mu);
    return c;
}

/* ------------------------------------------------------------------ */
/* fault queues                                                        */
/* ------------------------------------------------------------------ */

enum { MODE_NONE = 0, MODE_RESET, MODE_BADJSON, MODE_OVERSIZE };

#define FAULT_BODY_MAX 1024

struct action {
    int  status;            /* 0: none */
    long delay_ms;
    int  mode;
    char retry_after[65];   /* "" : none */
    char body[FAULT_BODY_MAX];  /* token faults: the answer's body; "" : none */
};

struct fault {
    struct fault *next;
    char         *path;     /* lower case; NULL matches any */
    long          count;
    struct action a;
};

struct fqueue {
    pthread_mutex_t mu;
    struct fault   *head, *tail;
    int             n;       /* entries; read atomically on the fast path */
};

static struct fqueue g_faults = { PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0 };
static struct fqueue g_tfaults = { PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0 };

static void fq_push(struct fqueue *q, struct fault *f)
{
    f->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
    A_STORE(&q->n, q->n + 1);
    pthread_mutex_unlock(&q->mu);
}

/*
 * Consume one use of the first queued fault matching lower-case path lp
 * (faults without a path match anything).  Returns 1 with *a filled in.
 */
static int fq_take(struct fqueue *q, const char *lp, struct action *a)
{
    if (A_LOAD(&q->n) == 0)
        return 0;
    int found = 0;
    pthread_mutex_lock(&q->mu);
    struct fault **pp = &q->head, *prev = NULL;
    for (; *pp; prev = *pp, pp = &(*pp)->next) {
        struct fault *f = *pp;
        if (f->path && (!lp || strcmp(f->path, lp) != 0))
            continue;
        *a = f->a;
        found = 1;
        if (--f->count <= 0) {
            *pp = f->next;
            if (q->tail == f)
                q->tail = prev;
            A_STORE(&q->n, q->n - 1);
            free(f->path);
            free(f);
        }
        break;
    }
    pthread_mutex_unlock(&q->mu);
    return found;
}

static void fq_clear(struct fqueue *q)
{
    pthread_mutex_lock(&q->mu);
    struct fault *f = q->head, *next;
    for (; f; f = next) {
        next = f->next;
        free(f->path);
        free(f);
    }
    q->head = q->tail = NULL;
    A_STORE(&q->n, 0);
    pthread_mutex_unlock(&q->mu);
}

/* ------------------------------------------------------------------ */
/* per-namespace rate limits (token buckets)                           */
/* ------------------------------------------------------------------ */

struct bucket {
    char            ns[NS_NAME_MAX + 1];
    size_t          nslen;
    long            per_second, burst;
    double          tokens;
    struct timespec last;
};

static pthread_mutex_t g_rl_mu = PTHREAD_MUTEX_INITIALIZER;
static struct bucket   g_rl[RL_MAX];
static int             g_rl_n;          /* entries; read atomically on the fast path */

static double ts_diff(const struct timespec *a, const struct timespec *b)
{
    return (double) (a->tv_sec - b->tv_sec) + (double) (a->tv_nsec - b->tv_nsec) / 1e9;
}

/* Take a token from the namespace's bucket: 1 if allowed (or unlimited). */
static int rl_take(const char *ns, size_t n)
{
    int ok = 1;
    pthread_mutex_lock(&g_rl_mu);
    for (int i = 0; i < g_rl_n; i++) {
        struct bucket *l = &g_rl[i];
        if (l->nslen != n || memcmp(l->ns, ns, n) != 0)
            continue;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        l->tokens += ts_diff(&now, &l->last) * (double) l->per_second;
        if (l->tokens > (double) l->burst)
            l->tokens = (double) l->burst;
        l->last = now;
        if (l->tokens >= 1.0)
            l->tokens -= 1.0;
        else
            ok = 0;
        break;
    }
    pthread_mutex_unlock(&g_rl_mu);
    return ok;
}

/* Set (per_second >= 0, bucket full) or remove (per_second < 0) a limit. */
static int rl_set(const char *ns, size_t n, long per_second, long burst)
{
    int rc = 0, i;
    pthread_mutex_lock(&g_rl_mu);
    for (i = 0; i < g_rl_n; i++)
        if (g_rl[i].nslen == n && memcmp(g_rl[i].ns, ns, n) == 0)
            break;
    if (per_second < 0) {
        if (i < g_rl_n) {
            g_rl[i] = g_rl[g_rl_n - 1];
            A_STORE(&g_rl_n, g_rl_n - 1);
        }
    } else if (i == g_rl_n && g_rl_n >= RL_MAX)
        rc = -1;
    else {
        struct bucket *l = &g_rl[i];
        memcpy(l->ns, ns, n);
        l->ns[n] = '\0';
        l->nslen = n;
        l->per_second = per_second;
        l->burst = burst;
        l->tokens = (double) burst;
        clock_gettime(CLOCK_MONOTONIC, &l->last);
        if (i == g_rl_n)
            A_STORE(&g_rl_n, g_rl_n + 1);
    }
    pthread_mutex_unlock(&g_rl_mu);
    return rc;
}

/* ------------------------------------------------------------------ */
/* simulated latency of a remote API                                   */
/* ------------------------------------------------------------------ */

static unsigned long long g_rng_seq;    /* reset by POST /_mock/reset */

/* splitmix64 over a shared counter: a fixed sequence from each reset. */
static uint64_t rng_next(void)
{
    uint64_t z = (uint64_t) A_INC(&g_rng_seq) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The delay of one API answer: tail_ms with probability tail_permille/1000,
 * else latency_ms + uniform(0..jitter_ms). */
static long latency_pick(void)
{
    long b = A_LOAD(&g_rt.latency_ms), j = A_LOAD(&g_rt.jitter_ms);
    long p = A_LOAD(&g_rt.tail_permille), t = A_LOAD(&g_rt.tail_ms);
    uint64_t r = rng_next();
    if (p > 0 && (long) (r % 1000) < p)
        return t;
    if (j > 0)
        b += (long) ((r >> 16) % (uint64_t) (j + 1));
    return b;
}

/* ------------------------------------------------------------------ */
/* delayed answers: suspended connections resumed by a timer thread    */
/* ------------------------------------------------------------------ */

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

struct delayed {
    struct timespec        due;
    unsigned long long     seq;     /* FIFO among equal due times */
    struct MHD_Connection *c;
};

static pthread_mutex_t     g_delay_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t      g_delay_cv;
static struct delayed     *g_heap;          /* binary min-heap on (due, seq) */
static size_t              g_heap_n, g_heap_cap;
static unsigned long long  g_delay_seq;
static int                 g_delay_stop;

static int dl_before(const struct delayed *a, const struct delayed *b)
{
    if (a->due.tv_sec != b->due.tv_sec)
        return a->due.tv_sec < b->due.tv_sec;
    if (a->due.tv_nsec != b->due.tv_nsec)
        return a->due.tv_nsec < b->due.tv_nsec;
    return a->seq < b->seq;
}

static int heap_push(const struct delayed *d)
{
    if (g_heap_n == g_heap_cap) {
        size_t nc = g_heap_cap ? g_heap_cap * 2 : 1024;
        struct delayed *nh = realloc(g_heap, nc * sizeof *nh);
        if (!nh)
            return -1;
        g_heap = nh;
        g_heap_cap = nc;
    }
    size_t i = g_heap_n++;
    while (i > 0 && dl_before(d, &g_heap[(i - 1) / 2])) {
        g_heap[i] = g_heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    g_heap[i] = *d;
    return 0;
}

static struct delayed heap_pop(void)
{
    struct delayed top = g_heap[0], last = g_heap[--g_heap_n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const struct delayed *best = &last;
        if (l < g_heap_n && dl_before(&g_heap[l], best)) {
            m = l;
            best = &g_heap[l];
        }
        if (l + 1 < g_heap_n && dl_before(&g_heap[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        g_heap[i] = g_heap[m];
        i = m;
    }
    if (g_heap_n)
        g_heap[i] = last;
    return top;
}

/*
 * Suspend connection c and have the timer resume it after ms milliseconds.
 * Must be called from the access handler.  Returns 0 (and does nothing)
 * when shutting down or out of memory, in which case the caller answers
 * at once.
 */
static int delay_schedule(struct MHD_Connection *c, long ms)
{
    struct delayed d;
    clock_gettime(CLOCK_MONOTONIC, &d.due);
    d.due.tv_sec += ms / 1000;
    d.due.tv_nsec += (ms % 1000) * 1000000L;
    if (d.due.tv_nsec >= 1000000000L) {
        d.due.tv_sec++;
        d.due.tv_nsec -= 1000000000L;
    }
    d.c = c;
    pthread_mutex_lock(&g_delay_mu);
    d.seq = ++g_delay_seq;
    if (g_delay_stop || heap_push(&d) < 0) {
        pthread_mutex_unlock(&g_delay_mu);
        return 0;
    }
    MHD_suspend_connection(c);
    if (g_heap[0].seq == d.seq)
        pthread_cond_signal(&g_delay_cv);
    pthread_mutex_unlock(&g_delay_mu);
    return 1;
}

/* Timer thread: resume connections when due; on stop, resume them all. */
static void *delay_thread(void *arg)
{
    (void) arg;
    pthread_mutex_lock(&g_delay_mu);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        while (g_heap_n && (g_delay_stop || !ts_before(&now, &g_heap[0].due))) {
            struct delayed d = heap_pop();
            MHD_resume_connection(d.c);
        }
        if (g_delay_stop)
            break;
        if (g_heap_n) {
            struct timespec due = g_heap[0].due;
            pthread_cond_timedwait(&g_delay_cv, &g_delay_mu, &due);
        } else
            pthread_cond_wait(&g_delay_cv, &g_delay_mu);
    }
    pthread_mutex_unlock(&g_delay_mu);
    return NULL;
}

static size_t delayed_now(void)
{
    pthread_mutex_lock(&g_delay_mu);
    size_t n = g_heap_n;
    pthread_mutex_unlock(&g_delay_mu);
    return n;
}

/* ------------------------------------------------------------------ */
/* tiny JSON object scanner for control bodies                         */
/* ------------------------------------------------------------------ */

enum { JT_STR, JT_INT, JT_NULL, JT_BOOL, JT_OBJ };

struct jkv {
    char      key[32];
    int       type;
    char     *s;          /* JT_STR: decoded, NUL-terminated; JT_OBJ: raw text */
    long long i;          /* JT_INT, JT_BOOL */
};

struct jobj {
    int        n;
    struct jkv kv[16];
};

struct jscan { const char *p, *end; };

static void js_ws(struct jscan *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int js_hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char) p[i]);
        if (h < 0)
            return 0;
        v = v * 16 + (unsigned) h;
    }
    *out = v;
    return 1;
}

/*
 * Parse a JSON string at j->p (which must be at the opening quote) into a
 * malloc'd, NUL-terminated UTF-8 buffer.  Rejects raw control characters,
 * bad escapes, lone surrogates and \u0000.  Returns NULL on error.
 */
static char *js_string(struct jscan *j, size_t *outlen)
{
    if (j->p >= j->end || *j->p != '"')
        return NULL;
    j->p++;
    char *o = malloc((size_t) (j->end - j->p) + 1);
    size_t n = 0;
    if (!o)
        return NULL;
    while (j->p < j->end) {
        unsigned char ch = (unsigned char) *j->p++;
        if (ch == '"') {
            o[n] = '\0';
            *outlen = n;
            return o;
        }
        if (ch < 0x20)
            break;
        if (ch != '\\') {
            o[n++] = (char) ch;
            continue;
        }
        if (j->p >= j->end)
            break;
        ch = (unsigned char) *j->p++;
        switch (ch) {
        case '"': case '\\': case '/': o[n++] = (char) ch; continue;
        case 'b': o[n++] = '\b'; continue;
        case 'f': o[n++] = '\f'; continue;
        case 'n': o[n++] = '\n'; continue;
        case 'r': o[n++] = '\r'; continue;
        case 't': o[n++] = '\t'; continue;
        case 'u': break;
        default: goto bad;
        }
        unsigned cp, lo;
        if (j->end - j->p < 4 || !js_hex4(j->p, &cp))
            break;
        j->p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' ||
                !js_hex4(j->p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                break;
            j->p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0)
            break;
        if (cp < 0x80)
            o[n++] = (char) cp;
        else if (cp < 0x800) {
            o[n++] = (char) (0xC0 | (cp >> 6));
            o[n++] = (char) (0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            o[n++] = (char) (0xE0 | (cp >> 12));
            o[n++] = (char) (0x80 | ((cp >> 6) & 0x3F));
            o[n++] = (char) (0x80 | (cp & 0x3F));
        } else {
            o[n++] = (char) (0xF0 | (cp >> 18));
            o[n++] = (char) (0x80 | ((cp >> 12) & 0x3F));
            o[n++] = (char) (0x80 | ((cp >> 6) & 0x3F));
            o[n++] = (char) (0x80 | (cp & 0x3F));
        }
    }
bad:
    free(o);
    return NULL;
}

/* Parse a JSON integer (no fraction or exponent; |v| <= 1e15). */
static int js_int(struct jscan *j, long long *out)
{
    int neg = 0;
    long long v = 0;
    if (j->p < j->end && *j->p == '-') {
        neg = 1;
        j->p++;
    }
    if (j->p >= j->end || !isdigit((unsigned char) *j->p))
        return -1;
    if (*j->p == '0' && j->p + 1 < j->end && isdigit((unsigned char) j->p[1]))
        return -1;
    while (j->p < j->end && isdigit((unsigned char) *j->p)) {
        v = v * 10 + (*j->p++ - '0');
        if (v > 1000000000000000LL)
            return -1;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return -1;
    *out = neg ? -v : v;
    return 0;
}

static void jobj_free(struct jobj *o)
{
    for (int i = 0; i < o->n; i++)
        free(o->kv[i].s);
    o->n = 0;
}

/*
 * Scan a flat JSON object whose values are strings, integers, booleans or
 * null (and, if nested, objects, kept as raw text for a second scan).
 * Other nested values, duplicate keys, keys longer than 31 bytes, more
 * than 16 keys and trailing garbage are errors (*err says which).
 */
static int json_scan(const char *buf, size_t len, struct jobj *o, const char **err, int nested)
{
    struct jscan j = { buf, buf + len };
    o->n = 0;
    *err = "malformed JSON";
    js_ws(&j);
    if (j.p >= j.end || *j.p++ != '{')
        goto bad;
    js_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        goto end;
    }
    for (;;) {
        size_t kl;
        js_ws(&j);
        char *k = js_string(&j, &kl);
        if (!k)
            goto bad;
        if (kl >= sizeof o->kv[0].key || o->n >= 16) {
            free(k);
            *err = kl >= sizeof o->kv[0].key ? "unknown key" : "too many keys";
            goto bad;
        }
        for (int i = 0; i < o->n; i++)
            if (strcmp(o->kv[i].key, k) == 0) {
                free(k);
                *err = "duplicate key";
                goto bad;
            }
        struct jkv *kv = &o->kv[o->n];
        memcpy(kv->key, k, kl + 1);
        free(k);
        kv->s = NULL;
        kv->i = 0;
        js_ws(&j);
        if (j.p >= j.end || *j.p++ != ':')
            goto bad;
        js_ws(&j);
        if (j.p >= j.end)
            goto bad;
        if (*j.p == '"') {
            size_t sl;
            kv->type = JT_STR;
            if (!(kv->s = js_string(&j, &sl)))
                goto bad;
        } else if (*j.p == '-' || isdigit((unsigned char) *j.p)) {
            kv->type = JT_INT;
            if (js_int(&j, &kv->i) < 0) {
                *err = "numbers must be integers";
                goto bad;
            }
        } else if (j.end - j.p >= 4 && memcmp(j.p, "null", 4) == 0) {
            kv->type = JT_NULL;
            j.p += 4;
        } else if (j.end - j.p >= 4 && memcmp(j.p, "true", 4) == 0) {
            kv->type = JT_BOOL;
            kv->i = 1;
            j.p += 4;
        } else if (j.end - j.p >= 5 && memcmp(j.p, "false", 5) == 0) {
            kv->type = JT_BOOL;
            j.p += 5;
        } else if (nested && *j.p == '{') {
            const char *e = jval_end(j.p, j.end);
            kv->type = JT_OBJ;
            if (!e || !(kv->s = malloc((size_t) (e - j.p) + 1)))
                goto bad;
            memcpy(kv->s, j.p, (size_t) (e - j.p));
            kv->s[e - j.p] = '\0';
            j.p = e;
        } else {
            if (*j.p == '{' || *j.p == '[')
                *err = "nested values not supported";
            goto bad;
        }
        o->n++;
        js_ws(&j);
        if (j.p < j.end && *j.p == ',') {
            j.p++;
            continue;
        }
        if (j.p < j.end && *j.p == '}') {
            j.p++;
            break;
        }
        goto bad;
    }
end:
    js_ws(&j);
    if (j.p != j.end)
        goto bad;
    return 0;
bad:
    jobj_free(o);
    return -1;
}

static struct jkv *jget(struct jobj *o, const char *key)
{
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->kv[i].key, key) == 0)
            return o->kv[i].type == JT_NULL ? NULL : &o->kv[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* HTTP helpers                                                        */
/* ------------------------------------------------------------------ */

struct call {
    struct MHD_Connection *c;
    const char            *method;
    const char            *url;
};

static const char CT_JSON[] = "application/json";
static const char CT_TEXT[] = "text/plain";

/* One log line per request (method, path, status) unless --quiet. */
static void log_req(const char *method, const char *url, const char *status)
{
    if (g_cfg.quiet)
        return;
    char line[MAX_PATH_LEN + 64];
    size_t n = 0;
    for (const char *p = method; *p && n < 16; p++)
        line[n++] = isprint((unsigned char) *p) ? *p : '?';
    line[n++] = ' ';
    for (const char *p = url; *p && n < MAX_PATH_LEN + 20; p++)
        line[n++] = isprint((unsigned char) *p) ? *p : '?';
    int k = snprintf(line + n, sizeof line - n, " %s\n", status);
    if (k > 0)
        n += (size_t) k < sizeof line - n ? (size_t) k : sizeof line - n - 1;
    fwrite(line, 1, n, stderr);
}

/*
 * Queue a response: body of len bytes (memory mode mm), Content-Type,
 * X-Request-ID and extra header name/value pairs (NULL-terminated array).
 */
static enum MHD_Result reply(const struct call *k, unsigned status, const char *ctype,
                             const char *body, size_t len, enum MHD_ResponseMemoryMode mm,
                             const char *const *hdrs)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *) body, mm);
    if (!r) {
        if (mm == MHD_RESPMEM_MUST_FREE)
            free((void *) body);
        return MHD_NO;
    }
    char rid[32], st[16];
    snprintf(rid, sizeof rid, "mock-%llu", A_INC(&g_reqid));
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, "X-Request-ID", rid);
    for (; hdrs && hdrs[0]; hdrs += 2)
        MHD_add_response_header(r, hdrs[0], hdrs[1]);
    enum MHD_Result ret = MHD_queue_response(k->c, status, r);
    MHD_destroy_response(r);
    snprintf(st, sizeof st, "%u", status);
    log_req(k->method, k->url, st);
    return ret;
}

/* Reply with a static JSON string. */
static enum MHD_Result reply_lit(const struct call *k, unsigned status, const char *json)
{
    return reply(k, status, CT_JSON, json, strlen(json), MHD_RESPMEM_PERSISTENT, NULL);
}

static enum MHD_Result reply_405(const struct call *k, const char *allow)
{
    const char *h[] = { MHD_HTTP_HEADER_ALLOW, allow, NULL };
    static const char body[] = "{\"error\":\"method_not_allowed\"}";
    return reply(k, 405, CT_JSON, body, sizeof body - 1, MHD_RESPMEM_PERSISTENT, h);
}

/* 400 with a detail string (always one of our own literals). */
static enum MHD_Result reply_bad(const struct call *k, const char *detail)
{
    char buf[160];
    int n = snprintf(buf, sizeof buf, "{\"error\":\"bad_request\",\"detail\":\"%s\"}", detail);
    return reply(k, 400, CT_JSON, buf, (size_t) n, MHD_RESPMEM_MUST_COPY, NULL);
}

static enum MHD_Result reply_ok(const struct call *k)
{
    return reply_lit(k, 200, "{\"ok\":true}");
}

/* Answer with an injected error status (and Retry-After if configured). */
static enum MHD_Result reply_fault_status(const struct call *k, const struct action *a)
{
    char buf[80];
    const char *h[] = { "Retry-After", a->retry_after, NULL };
    if (a->body[0])
        return reply(k, (unsigned) a->status, CT_JSON, a->body, strlen(a->body),
                     MHD_RESPMEM_MUST_COPY, a->retry_after[0] ? h : NULL);
    int n = snprintf(buf, sizeof buf, "{\"error\":\"injected_fault\",\"status\":%d}", a->status);
    return reply(k, (unsigned) a->status, CT_JSON, buf, (size_t) n, MHD_RESPMEM_MUST_COPY,
                 a->retry_after[0] ? h : NULL);
}

/* Drop the connection without answering; SO_LINGER 0 makes it an RST. */
static enum MHD_Result conn_reset(const struct call *k)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(k->c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        struct linger lg = { 1, 0 };
        setsockopt(ci->connect_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    log_req(k->method, k->url, "reset");
    return MHD_NO;
}

static int is_uuid(const char *p)
{
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (p[i] != '-')
                return 0;
        } else if (hexval((unsigned char) p[i]) < 0)
            return 0;
    }
    return 1;
}

static void copy_lower(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (char) tolower((unsigned char) src[i]);
    dst[n] = '\0';
}

enum { RT_NONE, RT_TICKET, RT_MSG, RT_MLIST, RT_TLIST };

/*
 * Parse "/v0/tickets/{id}", "/v0/tickets/{id}/messages" or
 * "/v0/tickets/{id}/messages/{id}"; ids are UUIDs in any case and are
 * returned lower-cased.  Anything else is RT_NONE.
 */
static int parse_doc_path(const char *p, char tid[37], char mid[37])
{
    static const char pre[] = "/v0/tickets/", msgs[] = "/messages";
    if (strncmp(p, pre, sizeof pre - 1) != 0)
        return RT_NONE;
    p += sizeof pre - 1;
    if (strnlen(p, 36) < 36 || !is_uuid(p))
        return RT_NONE;
    copy_lower(tid, p, 36);
    p += 36;
    if (*p == '\0')
        return RT_TICKET;
    if (strncmp(p, msgs, sizeof msgs - 1) != 0)
        return RT_NONE;
    p += sizeof msgs - 1;
    if (*p == '\0')
        return RT_MLIST;
    if (*p++ != '/' || strnlen(p, 37) != 36 || !is_uuid(p))
        return RT_NONE;
    copy_lower(mid, p, 36);
    return RT_MSG;
}

static int ns_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

/* A namespace name as accepted in paths: 1..64 of [A-Za-z0-9_-]. */
static int ns_name_ok(const char *s, size_t n)
{
    if (n < 1 || n > NS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!ns_char((unsigned char) s[i]))
            return 0;
    return 1;
}

struct route {
    int         rt;             /* RT_* */
    const char *ns;             /* namespace name (not NUL-terminated) */
    size_t      nslen;          /* 0: the default namespace */
    char        tid[37], mid[37];
};

/*
 * Parse an API path: optionally "/sellers/<name>", then "/v0/tickets" (the
 * tickets list) or one of parse_doc_path's paths.
 */
static int parse_api_path(const char *p, struct route *r)
{
    static const char sel[] = "/sellers/";
    r->ns = "";
    r->nslen = 0;
    if (p[1] == 's' && strncmp(p, sel, sizeof sel - 1) == 0) {
        const char *n = p + sizeof sel - 1;
        size_t l = 0;
        while (l <= NS_NAME_MAX && ns_char((unsigned char) n[l]))
            l++;
        if (l == 0 || l > NS_NAME_MAX || n[l] != '/')
            return r->rt = RT_NONE;
        r->ns = n;
        r->nslen = l;
        p = n + l;
    }
    if (strcmp(p, "/v0/tickets") == 0)
        return r->rt = RT_TLIST;
    return r->rt = parse_doc_path(p, r->tid, r->mid);
}

/* Parse a non-negative decimal query parameter; -1 if malformed. */
static long parse_nonneg(const char *s, long dflt)
{
    if (!s)
        return dflt;
    if (!*s || strlen(s) > 9)
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char) *s))
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* ------------------------------------------------------------------ */
/* API endpoints                                                       */
/* ------------------------------------------------------------------ */

static const char J_NOT_FOUND[] = "{\"error\":\"not_found\"}";

/* 400 for a list's query parameter. */
static enum MHD_Result reply_bad_param(const struct call *k, const char *detail)
{
    char buf[200];
    int n = snprintf(buf, sizeof buf, "{\"error\":\"invalid_parameter\",\"detail\":\"%s\"}", detail);
    return reply(k, 400, CT_JSON, buf, (size_t) n, MHD_RESPMEM_MUST_COPY, NULL);
}

static const char *qarg(const struct call *k, const char *name)
{
    return MHD_lookup_connection_value(k->c, MHD_GET_ARGUMENT_KIND, name);
}

/* _offset and _limit of a list (limit defaulted and clamped); 0 or -1. */
static int list_page_args(const struct call *k, long maxl, long *off, long *lim, const char **err)
{
    *off = parse_nonneg(qarg(k, "_offset"), 0);
    *lim = parse_nonneg(qarg(k, "_limit"), LIST_DEFAULT_LIMIT);
    if (*off < 0) {
        *err = "_offset must be a non-negative integer";
        return -1;
    }
    if (*lim < 1) {
        *err = "_limit must be a positive integer";
        return -1;
    }
    if (*lim > maxl)
        *lim = maxl;
    return 0;
}

/* GET [/sellers/<name>]/v0/tickets: parameters, then the page. */
static enum MHD_Result api_list_tickets(const struct call *k, const struct route *ro)
{
    struct tlq q;
    const char *err;
    memset(&q, 0, sizeof q);
    q.maxl = A_LOAD(&g_rt.max_limit);
    if (list_page_args(k, q.maxl, &q.off, &q.lim, &err) < 0)
        return reply_bad_param(k, err);
    q.by_id = A_LOAD(&g_rt.list_ignores_filters) != 0;
    q.desc = 1;
    q.gte = INT64_MIN + 1;      /* a filter never matches TS_NONE */
    q.lte = INT64_MAX;
    if (!q.by_id) {
        const char *sort = qarg(k, "_sort"), *gte = qarg(k, "updated_at_gte"),
                   *lte = qarg(k, "updated_at_lte");
        if (sort) {
            if (strcmp(sort, "updated_at:asc") == 0 || strcmp(sort, "updated_at") == 0)
                q.desc = 0;
            else if (strcmp(sort, "updated_at:desc") != 0)
                return reply_bad_param(k, "_sort must be updated_at:asc or updated_at:desc");
        }
        if (gte) {
            if (parse_ts(gte, strlen(gte), &q.gte) < 0)
                return reply_bad_param(k, "updated_at_gte must be an ISO 8601 timestamp");
            q.filtered = 1;
        }
        if (lte) {
            if (parse_ts(lte, strlen(lte), &q.lte) < 0)
                return reply_bad_param(k, "updated_at_lte must be an ISO 8601 timestamp");
            q.filtered = 1;
        }
    }
    q.shift = A_LOAD(&g_rt.shift_per_page);
    q.insert = A_LOAD(&g_rt.insert_per_page);
    size_t len = 0;
    char *body = docs_list_tickets(ro->ns, ro->nslen, &q, &len);
    if (!body)
        return MHD_NO;
    return reply(k, 200, CT_JSON, body, len, MHD_RESPMEM_MUST_FREE, NULL);
}

/* Serve an API GET normally: bearer check, then the document or list. */
static enum MHD_Result api_serve(const struct call *k)
{
    struct route ro;
    if (parse_api_path(k->url, &ro) == RT_NONE)
        return reply_lit(k, 404, J_NOT_FOUND);

    const char *auth = MHD_lookup_connection_value(k->c, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_AUTHORIZATION);
    int ok = 0;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *t = auth + 7;
        while (*t == ' ')
            t++;
        size_t n = strlen(t);
        while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
            n--;
        ok = n > 0 && access_token_valid(t, n);
    }
    if (!ok) {
        const char *h[] = { MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer", NULL };
        static const char body[] = "{\"error\":\"unauthorized\"}";
        A_INC(&g_stats.unauthorized);
        return reply(k, 401, CT_JSON, body, sizeof body - 1, MHD_RESPMEM_PERSISTENT, h);
    }

    char *body = NULL;
    size_t len = 0;
    char gen[GEN_MAX];
    int lk;
    if (ro.rt == RT_TLIST)
        return api_list_tickets(k, &ro);
    if (ro.rt == RT_MLIST) {
        long off, lim, maxl = A_LOAD(&g_rt.max_limit);
        const char *err;
        int nf;
        if (list_page_args(k, maxl, &off, &lim, &err) < 0)
            return reply_bad_param(k, err);
        body = docs_list_msgs(ro.ns, ro.nslen, ro.tid, off, lim, maxl, &len, &nf);
        if (!body)
            return nf ? reply_lit(k, 404, J_NOT_FOUND) : MHD_NO;
        return reply(k, 200, CT_JSON, body, len, MHD_RESPMEM_MUST_FREE, NULL);
    }
    if (ro.rt == RT_MSG) {
        long sm = A_LOAD(&g_rt.single_message);
        if (sm == SM_OFF)
            return reply_lit(k, 404, J_NOT_FOUND);
        if (sm == SM_405)               /* as if only some other method existed */
            return reply_405(k, "POST");
        lk = docs_get_msg(ro.ns, ro.nslen, ro.tid, ro.mid, &body, &len);
    } else
        lk = docs_get_ticket(ro.ns, ro.nslen, ro.tid, &body, &len);
    if (lk == LK_NOTFOUND)
        return reply_lit(k, 404, J_NOT_FOUND);
    if (lk == LK_BODY)
        return reply(k, 200, CT_JSON, body, len, MHD_RESPMEM_MUST_FREE, NULL);
    int n = ro.rt == RT_TICKET ? gen_ticket(gen, sizeof gen, ro.tid, NULL, NULL)
                               : gen_msg(gen, sizeof gen, ro.tid, ro.mid);
    if (n < 0 || (size_t) n >= sizeof gen)
        return MHD_NO;
    return reply(k, 200, CT_JSON, gen, (size_t) n, MHD_RESPMEM_MUST_COPY, NULL);
}

/* Apply a consumed fault (after its delay, if any), else serve normally. */
static enum MHD_Result api_apply(const struct call *k, const struct action *a)
{
    static const char badjson[] = "{\"id\": \"truncated\", \"status\": <html>not json";
    switch (a->mode) {
    case MODE_RESET:
        return conn_reset(k);
    case MODE_BADJSON:
        return reply(k, 200, CT_JSON, badjson, sizeof badjson - 1, MHD_RESPMEM_PERSISTENT, NULL);
    case MODE_OVERSIZE:
        return reply(k, 200, CT_JSON, g_oversize, OVERSIZE_BYTES, MHD_RESPMEM_PERSISTENT, NULL);
    default:
        break;
    }
    if (a->status)
        return reply_fault_status(k, a);
    return api_serve(k);
}

/* ------------------------------------------------------------------ */
/* per-request context (bodies, delayed answers)                       */
/* ------------------------------------------------------------------ */

enum {
    R_DELAYED = 1, R_TOKEN, R_PUT_TICKET, R_PUT_MSG, R_DEL_TICKET, R_DEL_MSG,
    R_FAULTS, R_TOKEN_FAULTS, R_TOKENS, R_EXPIRE, R_RESET, R_CONFIG
};

struct req {
    int           route;
    char          tid[37], mid[37];
    char          ns[NS_NAME_MAX + 1];  /* control PUT/DELETE: the namespace */
    size_t        nslen;
    char         *buf;
    size_t        len, cap, limit;
    int           too_big;
    struct action a;          /* R_DELAYED */
};

/* Sentinel context: the first call of a request needing no buffer was seen. */
static struct req g_pending;

static struct req *req_new(int route, size_t limit)
{
    struct req *r = calloc(1, sizeof *r);
    if (r) {
        r->route = route;
        r->limit = limit;
    }
    return r;
}

/* Append upload data, keeping a NUL after it; past the limit, discard. */
static void req_append(struct req *r, const char *data, size_t n)
{
    if (r->too_big)
        return;
    if (n > r->limit - r->len) {
        r->too_big = 1;
        free(r->buf);
        r->buf = NULL;
        r->len = r->cap = 0;
        return;
    }
    if (r->len + n + 1 > r->cap) {
        size_t nc = r->cap ? r->cap : 4096;
        while (nc < r->len + n + 1)
            nc *= 2;
        char *nb = realloc(r->buf, nc);
        if (!nb) {
            r->too_big = 1;
            free(r->buf);
            r->buf = NULL;
            r->len = r->cap = 0;
            return;
        }
        r->buf = nb;
        r->cap = nc;
    }
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

/* Request finished (answered, reset or aborted): free its context. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void) cls;
    (void) c;
    (void) toe;
    struct req *r = *con_cls;
    if (r && r != &g_pending) {
        free(r->buf);
        free(r);
    }
    *con_cls = NULL;
}

/*
 * Answer a request on an API path ([/sellers/<name>]/v0/...): count it,
 * route it (404/405), check the namespace's rate limit (429), else consume
 * the first matching fault, if any.  The answer is delayed by the fault's
 * delay plus the configured latency: the connection is suspended and the
 * answer made when the timer resumes it.  With none of these configured,
 * the answer is made at once.
 */
static enum MHD_Result api_first(const struct call *k, void **con_cls)
{
    char lp[MAX_PATH_LEN];
    size_t ul = strlen(k->url);
    A_INC(&g_stats.api);
    if (ul < sizeof lp) {
        copy_lower(lp, k->url, ul);
        pathcount_inc(lp, ul);
    } else
        lp[0] = '\0';

    struct route ro;
    if (parse_api_path(k->url, &ro) == RT_NONE)
        return reply_lit(k, 404, J_NOT_FOUND);
    if (strcmp(k->method, MHD_HTTP_METHOD_GET) != 0)
        return reply_405(k, "GET");
    if (ro.rt == RT_TLIST || ro.rt == RT_MLIST)
        A_INC(&g_stats.lists);

    struct action a;
    int have;
    if (A_LOAD(&g_rl_n) && !rl_take(ro.ns, ro.nslen)) {
        memset(&a, 0, sizeof a);
        a.status = 429;
        strcpy(a.retry_after, "1");
        strcpy(a.body, "{\"error\":\"too_many_requests\"}");
        A_INC(&g_stats.rate_limited);
        have = 1;
    } else
        have = fq_take(&g_faults, lp, &a);
    long delay = have ? a.delay_ms : 0;
    if (A_LOAD(&g_latency_on))
        delay += latency_pick();
    if (!have) {
        if (delay <= 0)
            return api_serve(k);
        memset(&a, 0, sizeof a);
    }
    if (delay > 0) {
        struct req *r = req_new(R_DELAYED, CTL_BODY_LIMIT);
        if (!r)
            return MHD_NO;
        r->a = a;
        *con_cls = r;
        if (delay_schedule(k->c, delay))
            return MHD_YES;
    }
    return api_apply(k, &a);
}

/* ------------------------------------------------------------------ */
/* OAuth token endpoint                                                */
/* ------------------------------------------------------------------ */

/* Percent-decode s[0..n) ('+' is a space) into a new string; NULL if bad. */
static char *pct_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    size_t j = 0;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+')
            o[j++] = ' ';
        else if (s[i] == '%') {
            int hi, lo;
            if (i + 2 >= n) {
                free(o);
                return NULL;
            }
            hi = hexval((unsigned char) s[i + 1]);
            lo = hexval((unsigned char) s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(o);
                return NULL;
            }
            o[j++] = (char) (hi * 16 + lo);
            i += 2;
        } else
            o[j++] = s[i];
    }
    o[j] = '\0';
    return o;
}

enum { F_GRANT, F_CID, F_SECRET, F_RT, F_N };

/*
 * Parse an application/x-www-form-urlencoded body, keeping the four
 * fields the token endpoint knows.  Repeated known fields or bad escapes
 * are errors (-1).  Unknown fields are ignored.
 */
static int form_parse(const char *b, size_t len, char *f[F_N])
{
    static const char *const names[F_N] = { "grant_type", "client_id", "client_secret", "refresh_token" };
    const char *p = b, *end = b + len;
    for (int i = 0; i < F_N; i++)
        f[i] = NULL;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t) (end - p));
        const char *pe = amp ? amp : end;
        if (pe > p) {
            const char *eq = memchr(p, '=', (size_t) (pe - p));
            const char *ke = eq ? eq : pe;
            char *key = pct_decode(p, (size_t) (ke - p));
            if (!key)
                goto bad;
            int idx = -1;
            for (int i = 0; i < F_N; i++)
                if (strcmp(key, names[i]) == 0)
                    idx = i;
            free(key);
            if (idx >= 0) {
                if (f[idx])
                    goto bad;
                f[idx] = eq ? pct_decode(eq + 1, (size_t) (pe - eq - 1)) : pct_decode("", 0);
                if (!f[idx])
                    goto bad;
            }
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
bad:
    for (int i = 0; i < F_N; i++) {
        free(f[i]);
        f[i] = NULL;
    }
    return -1;
}

/* POST /oauth/token: refresh_token grant with rotation. */
static enum MHD_Result token_endpoint(const struct call *k, struct req *r)
{
    struct action a;
    A_INC(&g_stats.token);
    if (fq_take(&g_tfaults, NULL, &a)) {
        /* a delay alone delays the usual answer; a body or status replaces it */
        if (a.delay_ms > 0) {
            struct timespec ts = { a.delay_ms / 1000, (a.delay_ms % 1000) * 1000000L };
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
        if (a.status)
            return reply_fault_status(k, &a);
    }

    const char *ct = MHD_lookup_connection_value(k->c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    static const char form[] = "application/x-www-form-urlencoded";
    if (ct && (strncasecmp(ct, form, sizeof form - 1) != 0 ||
               (ct[sizeof form - 1] && ct[sizeof form - 1] != ';' && ct[sizeof form - 1] != ' ')))
        return reply_lit(k, 400, "{\"error\":\"invalid_request\"}");

    char *f[F_N];
    if (form_parse(r->buf ? r->buf : "", r->len, f) < 0)
        return reply_lit(k, 400, "{\"error\":\"invalid_request\"}");

    enum MHD_Result ret;
    int client_ok = 0;
    for (size_t i = 0; f[F_CID] && f[F_SECRET] && i < g_cfg.nclients; i++)
        if (strcmp(g_cfg.clients[i].id, f[F_CID]) == 0 &&
            strcmp(g_cfg.clients[i].secret, f[F_SECRET]) == 0)
            client_ok = 1;
    if (!client_ok)
        ret = reply_lit(k, 401, "{\"error\":\"invalid_client\"}");
    else if (!f[F_GRANT] || strcmp(f[F_GRANT], "refresh_token") != 0)
        ret = reply_lit(k, 400, "{\"error\":\"unsupported_grant_type\"}");
    else {
        char at[40], rt[40];
        int rotated = 0, oom = 0;
        size_t n = f[F_RT] ? strlen(f[F_RT]) : 0;
        pthread_rwlock_wrlock(&g_tok_lock);
        if (n && ht_del(&g_refresh, f[F_RT], n, hash_bytes(f[F_RT], n), NULL)) {
            unsigned long long seq = ++g_tok_seq;
            snprintf(at, sizeof at, "at-%llu", seq);
            snprintf(rt, sizeof rt, "rt-%llu", seq);
            oom = tokset_add(&g_access, at) < 0 || tokset_add(&g_refresh, rt) < 0;
            rotated = 1;
        }
        pthread_rwlock_unlock(&g_tok_lock);
        if (!rotated)
            ret = reply_lit(k, 400, "{\"error\":\"invalid_grant\"}");
        else if (oom)
            ret = MHD_NO;
        else {
            char body[256];
            const char *h[] = { "Cache-Control", "no-store", "Pragma", "no-cache", NULL };
            int bl = snprintf(body, sizeof body,
                              "{\"access_token\":\"%s\",\"refresh_token\":\"%s\","
                              "\"token_type\":\"Bearer\",\"expires_in\":%ld}", at, rt, g_cfg.ttl);
            ret = reply(k, 200, CT_JSON, body, (size_t) bl, MHD_RESPMEM_MUST_COPY, h);
        }
    }
    for (int i = 0; i < F_N; i++)
        free(f[i]);
    return ret;
}

/* ------------------------------------------------------------------ */
/* control endpoints                                                   */
/* ------------------------------------------------------------------ */

/* Copy a header-safe Retry-After value from a JSON string or integer. */
static int retry_after_from(const struct jkv *v, char out[65])
{
    if (v->type == JT_INT) {
        if (v->i < 0)
            return -1;
        snprintf(out, 65, "%lld", v->i);
        return 0;
    }
    if (v->type != JT_STR || !v->s[0] || strlen(v->s) > 64)
        return -1;
    for (const char *p = v->s; *p; p++)
        if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e)
            return -1;
    strcpy(out, v->s);
    return 0;
}

/*
 * POST /_mock/faults or /_mock/token_faults: validate the JSON body and
 * queue the fault.  Token faults accept status, count, retry_after,
 * delay_ms (the usual answer, late) and body (the answer's body, HTTP 200
 * unless status says otherwise).
 */
static enum MHD_Result ctl_faults(const struct call *k, struct req *r, int token)
{
    static const char *const api_keys[] = { "path", "count", "status", "retry_after", "delay_ms", "mode", NULL };
    static const char *const tok_keys[] = { "count", "status", "retry_after", "delay_ms", "body", NULL };
    const char *const *allowed = token ? tok_keys : api_keys;
    struct jobj o;
    const char *err;
    if (json_scan(r->buf ? r->buf : "", r->len, &o, &err, 0) < 0)
        return reply_bad(k, err);

    struct fault *f = calloc(1, sizeof *f);
    const char *bad = NULL;
    if (!f) {
        jobj_free(&o);
        return MHD_NO;
    }
    f->count = 1;
    for (int i = 0; i < o.n && !bad; i++) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= strcmp(*a, o.kv[i].key) == 0;
        if (!ok)
            bad = "unknown key";
    }
    struct jkv *v;
    if (!bad && (v = jget(&o, "path"))) {
        if (v->type != JT_STR || v->s[0] != '/' || strlen(v->s) >= MAX_PATH_LEN || strchr(v->s, '?'))
            bad = "path must be a string starting with / (no query)";
        else if ((f->path = strdup(v->s)))
            copy_lower(f->path, f->path, strlen(f->path));
    }
    if (!bad && (v = jget(&o, "count"))) {
        if (v->type != JT_INT || v->i < 1 || v->i > MAX_COUNT)
            bad = "count must be an integer >= 1";
        else
            f->count = (long) v->i;
    }
    if (!bad && (v = jget(&o, "status"))) {
        if (v->type != JT_INT || v->i < 200 || v->i > 599)
            bad = "status must be an integer 200..599";
        else
            f->a.status = (int) v->i;
    }
    if (!bad && (v = jget(&o, "retry_after"))) {
        if (retry_after_from(v, f->a.retry_after) < 0)
            bad = "retry_after must be a printable string or a non-negative integer";
        else if (!f->a.status)
            bad = "retry_after needs status";
    }
    if (!bad && (v = jget(&o, "delay_ms"))) {
        if (v->type != JT_INT || v->i < 0 || v->i > MAX_DELAY_MS)
            bad = "delay_ms must be an integer 0..600000";
        else
            f->a.delay_ms = (long) v->i;
    }
    if (!bad && (v = jget(&o, "mode"))) {
        if (v->type != JT_STR)
            bad = "mode must be reset, badjson or oversize";
        else if (strcmp(v->s, "reset") == 0)
            f->a.mode = MODE_RESET;
        else if (strcmp(v->s, "badjson") == 0)
            f->a.mode = MODE_BADJSON;
        else if (strcmp(v->s, "oversize") == 0)
            f->a.mode = MODE_OVERSIZE;
        else
            bad = "mode must be reset, badjson or oversize";
        if (!bad && f->a.status)
            bad = "status and mode are exclusive";
    }
    if (!bad && token && (v = jget(&o, "body"))) {
        if (v->type != JT_STR || strlen(v->s) >= FAULT_BODY_MAX)
            bad = "body must be a string shorter than 1024 bytes";
        else {
            strcpy(f->a.body, v->s);
            if (!f->a.status)
                f->a.status = 200;
        }
    }
    if (!bad && token && !f->a.status && !f->a.delay_ms)
        bad = "status, body or delay_ms is required";
    if (!bad && !f->a.status && !f->a.mode && !jget(&o, "delay_ms"))
        bad = "one of status, delay_ms, mode is required";
    jobj_free(&o);
    if (bad) {
        free(f->path);
        free(f);
        return reply_bad(k, bad);
    }
    fq_push(token ? &g_tfaults : &g_faults, f);
    return reply_ok(k);
}

/* POST /_mock/tokens {"access_token":"..","refresh_token":".."}: add tokens. */
static enum MHD_Result ctl_tokens(const struct call *k, struct req *r)
{
    struct jobj o;
    const char *err;
    if (json_scan(r->buf ? r->buf : "", r->len, &o, &err, 0) < 0)
        return reply_bad(k, err);
    const char *bad = NULL;
    for (int i = 0; i < o.n && !bad; i++)
        if (strcmp(o.kv[i].key, "access_token") && strcmp(o.kv[i].key, "refresh_token"))
            bad = "unknown key";
    struct jkv *at = jget(&o, "access_token"), *rt = jget(&o, "refresh_token");
    if (!bad && !at && !rt)
        bad = "access_token or refresh_token required";
    if (!bad && ((at && (at->type != JT_STR || !at->s[0])) || (rt && (rt->type != JT_STR || !rt->s[0]))))
        bad = "tokens must be non-empty strings";
    if (bad) {
        jobj_free(&o);
        return reply_bad(k, bad);
    }
    pthread_rwlock_wrlock(&g_tok_lock);
    int e = (at && tokset_add(&g_access, at->s) < 0) || (rt && tokset_add(&g_refresh, rt->s) < 0);
    pthread_rwlock_unlock(&g_tok_lock);
    jobj_free(&o);
    return e ? MHD_NO : reply_ok(k);
}

/* POST /_mock/reset: documents, deletions, faults, counters, run-time settings. */
static void state_reset(void)
{
    pthread_rwlock_wrlock(&g_docs_lock);
    ns_clear(&g_ns0);
    ht_clear(&g_nss, ns_free);
    A_STORE(&g_auto_n, 0);
    pthread_rwlock_unlock(&g_docs_lock);
    fq_clear(&g_faults);
    fq_clear(&g_tfaults);
    A_STORE(&g_stats.api, 0);
    A_STORE(&g_stats.token, 0);
    A_STORE(&g_stats.unauthorized, 0);
    A_STORE(&g_stats.lists, 0);
    A_STORE(&g_stats.rate_limited, 0);
    for (int i = 0; i < PC_SHARDS; i++) {
        pthread_mutex_lock(&g_pc[i].mu);
        ht_clear(&g_pc[i].t, NULL);
        pthread_mutex_unlock(&g_pc[i].mu);
    }
    pthread_mutex_lock(&g_rt_mu);
    rt_apply(&g_rt_cli);
    pthread_mutex_unlock(&g_rt_mu);
    pthread_mutex_lock(&g_rl_mu);
    A_STORE(&g_rl_n, 0);
    pthread_mutex_unlock(&g_rl_mu);
    A_STORE(&g_rng_seq, 0);
}

static const char *sm_name(long sm)
{
    return sm == SM_OFF ? "off" : sm == SM_405 ? "405" : "on";
}

/* The current run-time settings as JSON (GET /_mock/config, POST's answer). */
static enum MHD_Result reply_config(const struct call *k)
{
    struct rtcfg c;
    size_t cap = 600 + (size_t) RL_MAX * (NS_NAME_MAX + 80), pos = 0;
    char *b = malloc(cap);
    if (!b)
        return MHD_NO;
    rt_read(&c);
    int bad = append_fmt(b, cap, &pos,
        "{\"single_message\":\"%s\",\"list_ignores_filters\":%s,\"max_limit\":%ld,"
        "\"shift_per_page\":%ld,\"insert_per_page\":%ld,\"latency_ms\":%ld,\"jitter_ms\":%ld,"
        "\"tail_permille\":%ld,\"tail_ms\":%ld,\"rate_limits\":[",
        sm_name(c.single_message), c.list_ignores_filters ? "true" : "false", c.max_limit,
        c.shift_per_page, c.insert_per_page, c.latency_ms, c.jitter_ms, c.tail_permille, c.tail_ms);
    pthread_mutex_lock(&g_rl_mu);
    for (int i = 0; i < g_rl_n && !bad; i++)
        bad = append_fmt(b, cap, &pos, "%s{\"namespace\":\"%s\",\"per_second\":%ld,\"burst\":%ld}",
                         i ? "," : "", g_rl[i].ns, g_rl[i].per_second, g_rl[i].burst);
    pthread_mutex_unlock(&g_rl_mu);
    bad |= append_fmt(b, cap, &pos, "]}");
    if (bad) {
        free(b);
        return MHD_NO;
    }
    return reply(k, 200, CT_JSON, b, pos, MHD_RESPMEM_MUST_FREE, NULL);
}

/*
 * The "rate_limit" object of POST /_mock/config: namespace (required; ""
 * is the default one), per_second (integer >= 0; absent or null removes
 * the limit), burst (integer >= 1; default max(per_second, 1)).
 */
static const char *rl_parse(const char *raw, char ns[NS_NAME_MAX + 1], size_t *nl, long *ps, long *burst)
{
    struct jobj o;
    const char *err, *bad = NULL;
    if (json_scan(raw, strlen(raw), &o, &err, 0) < 0)
        return "rate_limit: malformed object";
    struct jkv *v;
    for (int i = 0; i < o.n && !bad; i++)
        if (strcmp(o.kv[i].key, "namespace") && strcmp(o.kv[i].key, "per_second") &&
            strcmp(o.kv[i].key, "burst"))
            bad = "rate_limit: unknown key";
    *ps = -1;
    *burst = 0;
    if (!bad) {
        v = jget(&o, "namespace");
        if (!v || v->type != JT_STR || (v->s[0] && !ns_name_ok(v->s, strlen(v->s))))
            bad = "rate_limit.namespace must be \\\"\\\" or a name of 1-64 [A-Za-z0-9_-]";
        else {
            *nl = strlen(v->s);
            memcpy(ns, v->s, *nl + 1);
        }
    }
    if (!bad && (v = jget(&o, "per_second"))) {
        if (v->type != JT_INT || v->i < 0 || v->i > 1000000)
            bad = "rate_limit.per_second must be an integer 0..1000000";
        else
            *ps = (long) v->i;
    }
    if (!bad && (v = jget(&o, "burst"))) {
        if (v->type != JT_INT || v->i < 1 || v->i > 1000000)
            bad = "rate_limit.burst must be an integer 1..1000000";
        else
            *burst = (long) v->i;
    }
    if (!bad && *burst == 0)
        *burst = *ps > 1 ? *ps : 1;
    jobj_free(&o);
    return bad;
}

static int sm_parse(const struct jkv *v, long *out)
{
    if (v->type == JT_INT && v->i == 405)
        *out = SM_405;
    else if (v->type == JT_BOOL)
        *out = v->i ? SM_ON : SM_OFF;
    else if (v->type == JT_STR && strcmp(v->s, "on") == 0)
        *out = SM_ON;
    else if (v->type == JT_STR && strcmp(v->s, "off") == 0)
        *out = SM_OFF;
    else if (v->type == JT_STR && strcmp(v->s, "405") == 0)
        *out = SM_405;
    else
        return -1;
    return 0;
}

/*
 * POST /_mock/config: change run-time settings.  Every key is optional;
 * the body is validated as a whole and applied only if all of it is valid.
 */
static enum MHD_Result ctl_config(const struct call *k, struct req *r)
{
    static const struct { const char *key; size_t off; long lo, hi; } ints[] = {
        { "max_limit", offsetof(struct rtcfg, max_limit), 1, MAX_MAX_LIMIT },
        { "shift_per_page", offsetof(struct rtcfg, shift_per_page), 0, MAX_PER_PAGE },
        { "insert_per_page", offsetof(struct rtcfg, insert_per_page), 0, MAX_PER_PAGE },
        { "latency_ms", offsetof(struct rtcfg, latency_ms), 0, MAX_DELAY_MS },
        { "jitter_ms", offsetof(struct rtcfg, jitter_ms), 0, MAX_DELAY_MS },
        { "tail_permille", offsetof(struct rtcfg, tail_permille), 0, 1000 },
        { "tail_ms", offsetof(struct rtcfg, tail_ms), 0, MAX_DELAY_MS },
    };
    struct jobj o;
    const char *err, *bad = NULL;
    char msg[120];
    if (json_scan(r->buf ? r->buf : "", r->len, &o, &err, 1) < 0)
        return reply_bad(k, err);
    pthread_mutex_lock(&g_rt_mu);
    struct rtcfg c;
    rt_read(&c);
    int rl_have = 0, rl_clear = 0;
    char rl_ns[NS_NAME_MAX + 1];
    size_t rl_nl = 0;
    long rl_ps = -1, rl_burst = 0;
    for (int i = 0; i < o.n && !bad; i++) {
        struct jkv *v = &o.kv[i];
        size_t j;
        for (j = 0; j < sizeof ints / sizeof ints[0]; j++)
            if (strcmp(v->key, ints[j].key) == 0)
                break;
        if (j < sizeof ints / sizeof ints[0]) {
            if (v->type != JT_INT || v->i < ints[j].lo || v->i > ints[j].hi) {
                snprintf(msg, sizeof msg, "%s must be an integer %ld..%ld", ints[j].key, ints[j].lo, ints[j].hi);
                bad = msg;
            } else
                *(long *) (void *) ((char *) &c + ints[j].off) = (long) v->i;
        } else if (strcmp(v->key, "single_message") == 0) {
            if (sm_parse(v, &c.single_message) < 0)
                bad = "single_message must be on, off or 405";
        } else if (strcmp(v->key, "list_ignores_filters") == 0) {
            if (v->type != JT_BOOL)
                bad = "list_ignores_filters must be true or false";
            else
                c.list_ignores_filters = (long) v->i;
        } else if (strcmp(v->key, "rate_limit") == 0) {
            if (v->type == JT_NULL)
                rl_clear = 1;
            else if (v->type != JT_OBJ)
                bad = "rate_limit must be an object or null";
            else {
                bad = rl_parse(v->s, rl_ns, &rl_nl, &rl_ps, &rl_burst);
                rl_have = 1;
            }
        } else
            bad = "unknown key";
    }
    if (!bad && rl_have && rl_set(rl_ns, rl_nl, rl_ps, rl_burst) < 0)
        bad = "too many rate limits";
    if (!bad) {
        if (rl_clear) {
            pthread_mutex_lock(&g_rl_mu);
            A_STORE(&g_rl_n, 0);
            pthread_mutex_unlock(&g_rl_mu);
        }
        rt_apply(&c);
    }
    pthread_mutex_unlock(&g_rt_mu);
    jobj_free(&o);
    return bad ? reply_bad(k, bad) : reply_config(k);
}

/* Answer a control PUT/DELETE of a document by the store's result. */
static enum MHD_Result reply_store(const struct call *k, int e)
{
    if (e == ST_NS_FULL)
        return reply_lit(k, 507, "{\"error\":\"too_many_namespaces\"}");
    return e ? MHD_NO : reply_ok(k);
}

/* Last call of a request with a body: dispatch on the route. */
static enum MHD_Result finish_body(const struct call *k, struct req *r)
{
    if (r->too_big)
        return reply_lit(k, 413, "{\"error\":\"payload_too_large\"}");
    switch (r->route) {
    case R_TOKEN:
        return token_endpoint(k, r);
    case R_PUT_TICKET:
    case R_PUT_MSG: {
        if (r->len == 0)
            return reply_bad(k, "empty body");
        char *b = r->buf;
        size_t n = r->len;
        r->buf = NULL;
        r->len = r->cap = 0;
        return reply_store(k, r->route == R_PUT_TICKET
                                  ? docs_put_ticket(r->ns, r->nslen, r->tid, b, n)
                                  : docs_set_msg(r->ns, r->nslen, r->tid, r->mid, b, n));
    }
    case R_DEL_TICKET:
        return reply_store(k, docs_del_ticket(r->ns, r->nslen, r->tid));
    case R_DEL_MSG:
        return reply_store(k, docs_set_msg(r->ns, r->nslen, r->tid, r->mid, NULL, 0));
    case R_FAULTS:
        return ctl_faults(k, r, 0);
    case R_TOKEN_FAULTS:
        return ctl_faults(k, r, 1);
    case R_TOKENS:
        return ctl_tokens(k, r);
    case R_CONFIG:
        return ctl_config(k, r);
    case R_EXPIRE:
        pthread_rwlock_wrlock(&g_tok_lock);
        ht_clear(&g_access, NULL);
        pthread_rwlock_unlock(&g_tok_lock);
        return reply_ok(k);
    case R_RESET:
        state_reset();
        return reply_ok(k);
    default:
        return reply_lit(k, 404, J_NOT_FOUND);
    }
}

/* A control document path: /_mock[/sellers/<name>]/v0/tickets/... */
static int ctl_doc_path(const char *u, struct route *ro)
{
    if (strncmp(u, "/_mock/v0/", 10) != 0 && strncmp(u, "/_mock/sellers/", 15) != 0)
        return RT_NONE;
    return parse_api_path(u + 6, ro);
}

/*
 * Does this request carry a body we must read (token endpoint, control
 * PUT/DELETE/POST)?  If so, fill in the route, namespace, ids and body
 * size limit.
 */
static int body_route(const char *u, const char *m, int *route, struct route *ro, size_t *limit)
{
    static const struct { const char *path; int route; } posts[] = {
        { "/_mock/faults", R_FAULTS }, { "/_mock/token_faults", R_TOKEN_FAULTS },
        { "/_mock/tokens", R_TOKENS }, { "/_mock/tokens/expire", R_EXPIRE },
        { "/_mock/reset", R_RESET }, { "/_mock/config", R_CONFIG },
        { "/oauth/token", R_TOKEN }, { NULL, 0 }
    };
    *limit = CTL_BODY_LIMIT;
    if (strcmp(m, MHD_HTTP_METHOD_POST) == 0) {
        for (int i = 0; posts[i].path; i++)
            if (strcmp(u, posts[i].path) == 0) {
                *route = posts[i].route;
                return 1;
            }
        return 0;
    }
    int put = strcmp(m, MHD_HTTP_METHOD_PUT) == 0;
    if (!put && strcmp(m, MHD_HTTP_METHOD_DELETE) != 0)
        return 0;
    int rt = ctl_doc_path(u, ro);
    if (rt == RT_TICKET)
        *route = put ? R_PUT_TICKET : R_DEL_TICKET;
    else if (rt == RT_MSG)
        *route = put ? R_PUT_MSG : R_DEL_MSG;
    else
        return 0;
    if (put)
        *limit = DOC_BODY_LIMIT;
    return 1;
}

/*
 * Answer a /_mock/ request that has no body route: the GET endpoints, and
 * 405 / 404 for everything else.
 */
static enum MHD_Result control_other(const struct call *k)
{
    static const char *const posts[] = {
        "/_mock/faults", "/_mock/token_faults", "/_mock/tokens", "/_mock/tokens/expire",
        "/_mock/reset", NULL
    };
    const char *m = k->method, *u = k->url;
    int is_get = strcmp(m, MHD_HTTP_METHOD_GET) == 0;

    if (strncmp(u, "/_mock/v0/", 10) == 0 || strncmp(u, "/_mock/sellers/", 15) == 0) {
        struct route ro;
        int rt = ctl_doc_path(u, &ro);
        if (rt != RT_TICKET && rt != RT_MSG)
            return reply_lit(k, 404, J_NOT_FOUND);
        return reply_405(k, "PUT, DELETE");
    }
    for (int i = 0; posts[i]; i++)
        if (strcmp(u, posts[i]) == 0)
            return reply_405(k, "POST");
    if (strcmp(u, "/_mock/config") == 0)
        return is_get ? reply_config(k) : reply_405(k, "GET, POST");
    if (strcmp(u, "/_mock/stats") == 0) {
        if (!is_get)
            return reply_405(k, "GET");
        char b[300];
        int n = snprintf(b, sizeof b,
                         "{\"api_requests\":%llu,\"token_requests\":%llu,\"unauthorized\":%llu,"
                         "\"list_requests\":%llu,\"rate_limited\":%llu,\"suspended\":%zu}",
                         A_LOAD(&g_stats.api), A_LOAD(&g_stats.token), A_LOAD(&g_stats.unauthorized),
                         A_LOAD(&g_stats.lists), A_LOAD(&g_stats.rate_limited), delayed_now());
        return reply(k, 200, CT_JSON, b, (size_t) n, MHD_RESPMEM_MUST_COPY, NULL);
    }
    if (strcmp(u, "/_mock/count") == 0) {
        if (!is_get)
            return reply_405(k, "GET");
        const char *p = MHD_lookup_connection_value(k->c, MHD_GET_ARGUMENT_KIND, "path");
        char lp[MAX_PATH_LEN], b[32];
        if (!p || !*p)
            return reply_bad(k, "path parameter required");
        size_t n = strcspn(p, "?");     /* counts are by path, without a query */
        unsigned long long c = 0;
        if (n < sizeof lp) {
            copy_lower(lp, p, n);
            c = pathcount_get(lp, n);
        }
        int bl = snprintf(b, sizeof b, "%llu", c);
        return reply(k, 200, CT_TEXT, b, (size_t) bl, MHD_RESPMEM_MUST_COPY, NULL);
    }
    if (strcmp(u, "/_mock/health") == 0) {
        if (!is_get)
            return reply_405(k, "GET");
        return reply(k, 200, CT_TEXT, "ok", 2, MHD_RESPMEM_PERSISTENT, NULL);
    }
    return reply_lit(k, 404, J_NOT_FOUND);
}

/*
 * The libmicrohttpd access handler.  MHD calls it once when the headers
 * are in, once per chunk of body, and once more at the end; we answer only
 * on that last call (answering on the first one makes libmicrohttpd 0.9.75
 * close the connection, which would defeat keep-alive in the benchmark).
 * After a delayed connection is resumed it is called again.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void) cls;
    (void) version;
    struct call k = { c, method, url };
    struct req *r = *con_cls;

    if (!r) {
        int route;
        size_t limit;
        struct route ro;
        if (!body_route(url, method, &route, &ro, &limit)) {
            *con_cls = &g_pending;
            return MHD_YES;
        }
        if (!(r = req_new(route, limit)))
            return MHD_NO;
        if (route >= R_PUT_TICKET && route <= R_DEL_MSG) {
            memcpy(r->tid, ro.tid, 37);
            memcpy(r->mid, ro.mid, 37);
            memcpy(r->ns, ro.ns, ro.nslen);
            r->ns[ro.nslen] = '\0';
            r->nslen = ro.nslen;
        }
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        if (r != &g_pending)
            req_append(r, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r == &g_pending) {
        if (strncmp(url, "/v0/", 4) == 0 || strcmp(url, "/v0") == 0 ||
            strncmp(url, "/sellers/", 9) == 0)
            return api_first(&k, con_cls);
        if (strcmp(url, "/oauth/token") == 0)
            return reply_405(&k, "POST");
        if (strncmp(url, "/_mock/", 7) == 0)
            return control_other(&k);
        return reply_lit(&k, 404, J_NOT_FOUND);
    }
    if (r->route == R_DELAYED)
        return api_apply(&k, &r->a);
    return finish_body(&k, r);
}

/* libmicrohttpd's own diagnostics go to stderr, except with --quiet. */
static void mhd_logger(void *cls, const char *fm, va_list ap)
{
    (void) cls;
    if (g_cfg.quiet)
        return;
    fputs("mhd: ", stderr);
    vfprintf(stderr, fm, ap);
}

/* ------------------------------------------------------------------ */
/* startup                                                             */
/* ------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
        "usage: " PROG_NAME " [options]\n"
        "Mock of Magalu's seller SAC API and ID Magalu token endpoint, for sac_webhook tests.\n"
        "\n"
        "  --listen HOST:PORT      address to bind (default 127.0.0.1:18080; PORT 0 = ephemeral;\n"
        "                          [v6addr]:PORT for IPv6; empty HOST or * = all IPv4 addresses)\n"
        "  --port-file FILE        after binding, write the actual port and a newline to FILE\n"
        "                          (atomically: temp file + rename)\n"
        "  --auto                  every well-formed ticket/message id exists (generated document)\n"
        "                          unless deleted or overridden through the control API; a GET\n"
        "                          stores it, so that the lists show it from then on\n"
        "  --auto-max N            at most N documents stored that way (default 1000000; beyond,\n"
        "                          generated documents are still served but not listed; 0 = never)\n"
        "  --access-token TOKEN    an initially valid access token (repeatable)\n"
        "  --client ID:SECRET      a valid OAuth client (repeatable; default demo-client:demo-secret)\n"
        "  --refresh-token TOKEN   an initially valid refresh token (repeatable)\n"
        "  --token-ttl SECONDS     expires_in of issued tokens (default 3600)\n"
        "  --threads N             libmicrohttpd thread pool size (default 4)\n"
        "  --max-connections N     MHD_OPTION_CONNECTION_LIMIT, over all threads (default 10000);\n"
        "                          the soft RLIMIT_NOFILE is raised to N + 64 when the hard one allows\n"
        "                          (suspended, delayed connections hold no thread, only a socket)\n"
        "  --max-limit N           meta.page.max_limit of the lists (default 10, 1..1000)\n"
        "  --list-ignores-filters  GET /v0/tickets ignores _sort and updated_at_gte/lte: all\n"
        "                          tickets in id order (paging still applies)\n"
        "  --single-message MODE   GET /v0/tickets/{t}/messages/{m}: on (default), off (always 404,\n"
        "                          as if the endpoint did not exist) or 405 (Allow: POST); after\n"
        "                          the Bearer check and any queued fault; the lists are unaffected\n"
        "  --latency B[,J[,P,T]]   delay every answer on an API route by B + uniform(0..J) ms, or\n"
        "                          with probability P/1000 by T ms instead (not /_mock/, /oauth/token)\n"
        "  --quiet                 no per-request log on stderr\n"
        "  --help                  this text\n"
        "\n"
        "API (Bearer auth; any path may be prefixed with /sellers/<name>, name 1-64 of\n"
        "[A-Za-z0-9_-], case-sensitive: a separate document store per name, the unprefixed one\n"
        "being the default; at most 4096 names, a PUT beyond that answers 507):\n"
        "  GET /v0/tickets/{id}, /v0/tickets/{id}/messages/{id}\n"
        "  GET /v0/tickets/{id}/messages?_offset=&_limit=          by created_at, then id\n"
        "  GET /v0/tickets?_offset=&_limit=&_sort=updated_at:asc|desc&updated_at_gte=&updated_at_lte=\n"
        "      default _sort updated_at:desc (ties by id, descending: the exact reverse of asc);\n"
        "      bounds inclusive, ISO 8601 (2024-08-07T13:42:46, fractions, Z or +HH:MM; no zone = UTC)\n"
        "      (tickets without a parseable updated_at sort first and match no filter)\n"
        "  Lists show the PUT documents and those an --auto GET created, not deleted ones (nor a\n"
        "  ticket known only as the holder of PUT messages); _limit defaults to 50, clamped to\n"
        "  max_limit; meta.page {limit, offset, count (this page's), max_limit}, links {previous,\n"
        "  self, next (absent on the last page)}; 400 on a bad _offset/_limit (negative, not a\n"
        "  number, _limit 0), _sort or timestamp.\n"
        "  Order of an API answer: 404 (no route), 405 (not GET), 429 (rate limit; consumes no\n"
        "  fault), a queued fault, 401 (Bearer), the document; the latency, plus a fault's delay_ms,\n"
        "  delays all of these but the 404/405.\n"
        "OAuth:   POST /oauth/token (grant_type=refresh_token, client_id, client_secret, refresh_token)\n"
        "Control (the namespace prefix goes after /_mock):\n"
        "  PUT|DELETE /_mock[/sellers/<name>]/v0/tickets/{id}[/messages/{id}]\n"
        "  POST /_mock/faults, /_mock/token_faults, /_mock/tokens, /_mock/tokens/expire, /_mock/reset\n"
        "  POST /_mock/config {\"single_message\": \"on\"|\"off\"|\"405\", \"list_ignores_filters\": bool,\n"
        "       \"max_limit\": N, \"shift_per_page\": K, \"insert_per_page\": K, \"latency_ms\": B,\n"
        "       \"jitter_ms\": J, \"tail_permille\": P, \"tail_ms\": T,\n"
        "       \"rate_limit\": {\"namespace\": \"s1\" (\"\" = default), \"per_second\": R, \"burst\": B} | null}\n"
        "       shift_per_page: after each tickets list page is built, the K listed tickets with the\n"
        "       oldest (updated_at, id) get updated_at = now (UTC, 2024-08-07T13:42:46 form), in the\n"
        "       document single GETs return too (stored bodies that are not JSON objects are skipped);\n"
        "       insert_per_page: K new tickets, created_at = updated_at = now, ids\n"
        "       90000000-0000-4000-8000-NNNNNNNNNNNN (a counter per namespace, from 1);\n"
        "       rate_limit: a token bucket per namespace (starts full; R 0 = no refill; without\n"
        "       per_second the limit is removed; null removes all): beyond it, 429 + Retry-After: 1.\n"
        "       Validated as a whole (400 and no change on any error); answers the new settings.\n"
        "  POST /_mock/reset: documents, faults, counters, rate limits, and the settings back to\n"
        "       the command line's.\n"
        "  GET /_mock/config (settings), /_mock/stats (api_requests, token_requests, unauthorized,\n"
        "       list_requests, rate_limited, suspended = delayed answers now pending),\n"
        "       /_mock/count?path=PATH (API requests by path, case-insensitive, any query ignored),\n"
        "       /_mock/health\n");
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static long parse_long_arg(const char *name, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die("%s: expected an integer in %ld..%ld, got '%s'", name, lo, hi, s);
    return v;
}

/* --latency BASE_MS[,JITTER_MS[,TAIL_PERMILLE,TAIL_MS]] */
static void parse_latency(const char *val)
{
    long v[4] = { 0, 0, 0, 0 };
    static const long hi[4] = { MAX_DELAY_MS, MAX_DELAY_MS, 1000, MAX_DELAY_MS };
    int n = 0;
    const char *p = val;
    for (;;) {
        char part[32];
        size_t l = strcspn(p, ",");
        if (n == 4 || l == 0 || l >= sizeof part)
            die("--latency: expected BASE_MS[,JITTER_MS[,TAIL_PERMILLE,TAIL_MS]], got '%s'", val);
        memcpy(part, p, l);
        part[l] = '\0';
        v[n] = parse_long_arg("--latency", part, 0, hi[n]);
        n++;
        if (!p[l])
            break;
        p += l + 1;
    }
    if (n == 3)
        die("--latency: TAIL_PERMILLE needs TAIL_MS");
    g_rt_cli.latency_ms = v[0];
    g_rt_cli.jitter_ms = v[1];
    g_rt_cli.tail_permille = v[2];
    g_rt_cli.tail_ms = v[3];
}

/*
 * Parse the command line.  Options take their value as the next argument
 * or after '='.  Tokens are added straight to the token sets.
 */
static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        char name[32];
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t) (eq - a) : strlen(a);
        if (nl >= sizeof name)
            die("unknown option '%s' (try --help)", a);
        memcpy(name, a, nl);
        name[nl] = '\0';
        int takes = !strcmp(name, "--listen") || !strcmp(name, "--port-file") ||
                    !strcmp(name, "--access-token") || !strcmp(name, "--client") ||
                    !strcmp(name, "--refresh-token") || !strcmp(name, "--token-ttl") ||
                    !strcmp(name, "--threads") || !strcmp(name, "--auto-max") ||
                    !strcmp(name, "--max-connections") || !strcmp(name, "--max-limit") ||
                    !strcmp(name, "--single-message") || !strcmp(name, "--latency");
        if (takes) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                die("%s needs a value", name);
        } else if (eq)
            die("%s takes no value", name);

        if (!strcmp(name, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(name, "--auto"))
            g_cfg.auto_docs = 1;
        else if (!strcmp(name, "--quiet"))
            g_cfg.quiet = 1;
        else if (!strcmp(name, "--listen"))
            g_cfg.listen = val;
        else if (!strcmp(name, "--port-file"))
            g_cfg.port_file = val;
        else if (!strcmp(name, "--token-ttl"))
            g_cfg.ttl = parse_long_arg(name, val, 0, 100000000L);
        else if (!strcmp(name, "--threads"))
            g_cfg.threads = (unsigned) parse_long_arg(name, val, 1, 256);
        else if (!strcmp(name, "--auto-max"))
            g_cfg.auto_max = parse_long_arg(name, val, 0, 1000000000L);
        else if (!strcmp(name, "--max-connections"))
            g_cfg.conn_max = (unsigned) parse_long_arg(name, val, 16, 1000000L);
        else if (!strcmp(name, "--max-limit"))
            g_rt_cli.max_limit = parse_long_arg(name, val, 1, MAX_MAX_LIMIT);
        else if (!strcmp(name, "--list-ignores-filters"))
            g_rt_cli.list_ignores_filters = 1;
        else if (!strcmp(name, "--single-message")) {
            if (!strcmp(val, "on"))
                g_rt_cli.single_message = SM_ON;
            else if (!strcmp(val, "off"))
                g_rt_cli.single_message = SM_OFF;
            else if (!strcmp(val, "405"))
                g_rt_cli.single_message = SM_405;
            else
                die("--single-message: expected on, off or 405, got '%s'", val);
        } else if (!strcmp(name, "--latency"))
            parse_latency(val);
        else if (!strcmp(name, "--access-token") || !strcmp(name, "--refresh-token")) {
            if (!*val)
                die("%s: empty token", name);
            if (tokset_add(name[2] == 'a' ? &g_access : &g_refresh, val) < 0)
                die("out of memory");
        } else if (!strcmp(name, "--client")) {
            const char *colon = strchr(val, ':');
            if (!colon || colon == val)
                die("--client: expected ID:SECRET");
            struct client *nc = realloc(g_cfg.clients, (g_cfg.nclients + 1) * sizeof *nc);
            if (!nc)
                die("out of memory");
            g_cfg.clients = nc;
            nc[g_cfg.nclients].id = strndup(val, (size_t) (colon - val));
            nc[g_cfg.nclients].secret = strdup(colon + 1);
            if (!nc[g_cfg.nclients].id || !nc[g_cfg.nclients].secret)
                die("out of memory");
            g_cfg.nclients++;
        } else
            die("unknown option '%s' (try --help)", a);
    }
    if (g_cfg.nclients == 0) {
        g_cfg.clients = malloc(sizeof *g_cfg.clients);
        if (!g_cfg.clients)
            die("out of memory");
        g_cfg.clients[0].id = strdup("demo-client");
        g_cfg.clients[0].secret = strdup("demo-secret");
        if (!g_cfg.clients[0].id || !g_cfg.clients[0].secret)
            die("out of memory");
        g_cfg.nclients = 1;
    }
}

/*
 * Resolve --listen into a socket address.  *host_out receives the host as
 * it should be printed (IPv6 in brackets).  Prefers IPv4 for names.
 */
static void resolve_listen(struct sockaddr_storage *ss, int *v6, char *host_out, size_t hcap)
{
    const char *s = g_cfg.listen, *colon = strrchr(s, ':');
    char host[256];
    if (!colon)
        die("--listen: expected HOST:PORT, got '%s'", s);
    long port = parse_long_arg("--listen port", colon + 1, 0, 65535);
    size_t hl = (size_t) (colon - s);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (hl >= sizeof host)
        die("--listen: host too long");
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof *ss);
    *v6 = 0;
    if (hl == 0 || !strcmp(host, "*")) {
        struct sockaddr_in *sin = (struct sockaddr_in *) ss;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t) port);
        snprintf(host_out, hcap, "0.0.0.0");
        return;
    }
    struct addrinfo hints, *res, *ai, *pick = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(host, NULL, &hints, &res);
    if (e)
        die("--listen: cannot resolve '%s': %s", host, gai_strerror(e));
    for (ai = res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET && !pick)
            pick = ai;
    for (ai = res; ai && !pick; ai = ai->ai_next)
        if (ai->ai_family == AF_INET6)
            pick = ai;
    if (!pick) {
        freeaddrinfo(res);
        die("--listen: no IPv4/IPv6 address for '%s'", host);
    }
    memcpy(ss, pick->ai_addr, pick->ai_addrlen);
    if (pick->ai_family == AF_INET6) {
        *v6 = 1;
        ((struct sockaddr_in6 *) ss)->sin6_port = htons((uint16_t) port);
        snprintf(host_out, hcap, "[%s]", host);
    } else {
        ((struct sockaddr_in *) ss)->sin_port = htons((uint16_t) port);
        snprintf(host_out, hcap, "%s", host);
    }
    freeaddrinfo(res);
}

/*
 * Each connection is a socket: raise the soft RLIMIT_NOFILE towards
 * --max-connections + 64 (as far as the hard limit allows; say so if short).
 */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    rlim_t want = (rlim_t) g_cfg.conn_max + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want && !g_cfg.quiet)
        fprintf(stderr, PROG_NAME ": open files limited to %llu (hard limit): fewer than %u connections\n",
                (unsigned long long) rl.rlim_cur, g_cfg.conn_max);
}

/* Write "PORT\n" to --port-file through a temp file and rename(2). */
static int write_port_file(unsigned port)
{
    size_t n = strlen(g_cfg.port_file) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return -1;
    snprintf(tmp, n, "%s.tmp.%ld", g_cfg.port_file, (long) getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL;
    if (f) {
        ok = fprintf(f, "%u\n", port) > 0;
        ok = (fclose(f) == 0) && ok;
    }
    if (ok && rename(tmp, g_cfg.port_file) != 0)
        ok = 0;
    if (!ok) {
        fprintf(stderr, PROG_NAME ": cannot write port file %s: %s\n", g_cfg.port_file, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (ht_init(&g_access) || ht_init(&g_refresh) || ns_init(&g_ns0) || ht_init(&g_nss))
        die("out of memory");
    if (parse_ts(AUTO_T_UPDATED, strlen(AUTO_T_UPDATED), &g_auto_t_upd) ||
        parse_ts(AUTO_M_CREATED, strlen(AUTO_M_CREATED), &g_auto_m_created))
        die("bad built-in timestamp");
    for (int i = 0; i < PC_SHARDS; i++) {
        pthread_mutex_init(&g_pc[i].mu, NULL);
        if (ht_init(&g_pc[i].t))
            die("out of memory");
    }
    parse_args(argc, argv);
    rt_apply(&g_rt_cli);
    raise_fd_limit();
    if (build_oversize())
        die("out of memory");

    struct sockaddr_storage ss;
    int v6;
    char host[300];
    resolve_listen(&ss, &v6, host, sizeof host);

    /* Signals: SIGPIPE ignored; SIGINT/SIGTERM blocked in every thread and
     * taken synchronously by main with sigwait(). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g_delay_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t timer;
    if (pthread_create(&timer, NULL, delay_thread, NULL))
        die("cannot start timer thread");

    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    uint16_t port = ntohs(v6 ? ((struct sockaddr_in6 *) &ss)->sin6_port
                             : ((struct sockaddr_in *) &ss)->sin_port);
    /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: it means SO_REUSEPORT on
     * Linux, which would let two mocks share a port silently. */
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, port, NULL, NULL, on_request, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 120,
        MHD_OPTION_CONNECTION_LIMIT, g_cfg.conn_max,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int) 4096,
        /* with one thread there is no pool: end the list here */
        g_cfg.threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, g_cfg.threads,
        MHD_OPTION_END);
    int rc = 0;
    if (!d) {
        fprintf(stderr, PROG_NAME ": cannot listen on %s\n", g_cfg.listen);
        rc = 1;
    } else {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        unsigned actual = di ? di->port : port;
        if (g_cfg.port_file && write_port_file(actual) < 0)
            rc = 1;
        else {
            printf("mock api listening on http://%s:%u\n", host, actual);
            fflush(stdout);
            int sig;
            while (sigwait(&sigs, &sig) != 0)
                ;
        }
    }

    /* Shutdown: resume every delayed connection first (MHD must not be
     * stopped with suspended connections), then stop the daemon. */
    pthread_mutex_lock(&g_delay_mu);
    g_delay_stop = 1;
    pthread_cond_signal(&g_delay_cv);
    pthread_mutex_unlock(&g_delay_mu);
    pthread_join(timer, NULL);
    if (d)
        MHD_stop_daemon(d);

    ht_destroy(&g_nss, ns_free);
    ht_destroy(&g_ns0.msgs, NULL);
    ht_destroy(&g_ns0.tickets, ticket_free);
    tcache_drop(&g_ns0.by_upd);
    tcache_drop(&g_ns0.by_id);
    for (int i = 0; i < AS_SHARDS; i++)
        aset_clear(&g_ns0.as[i]);
    free(g_heap);
    ht_destroy(&g_access, NULL);
    ht_destroy(&g_refresh, NULL);
    for (int i = 0; i < PC_SHARDS; i++) {
        ht_destroy(&g_pc[i].t, NULL);
        pthread_mutex_destroy(&g_pc[i].mu);
    }
    fq_clear(&g_faults);
    fq_clear(&g_tfaults);
    for (size_t i = 0; i < g_cfg.nclients; i++) {
        free(g_cfg.clients[i].id);
        free(g_cfg.clients[i].secret);
    }
    free(g_cfg.clients);
    free(g_oversize);
    pthread_cond_destroy(&g_delay_cv);
    return rc;
}
