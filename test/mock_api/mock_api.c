/*
 * mock_api.c -- sac_webhook_mock_api
 *
 * A mock of Magalu's seller SAC API (GET /v0/tickets/...) and of ID Magalu's
 * OAuth token endpoint (POST /oauth/token), with a control API under
 * /_mock/ that lets tests seed and delete documents, inject faults (error
 * statuses, delays, connection resets, malformed and oversized bodies),
 * expire tokens and read request counters.
 *
 * It is what sac_webhook's pg_regress and TAP suites and its demo talk to
 * instead of api.magalu.com / id.magalu.com, and the baseline server of the
 * benchmark, so the GET hot path is kept cheap: libmicrohttpd thread pool,
 * hash tables under read-write locks, sharded per-path counters, and an
 * atomic fast path when no faults are queued.  Delayed answers suspend the
 * connection (a timer thread resumes it), so a slow answer never blocks the
 * other connections of a pool thread.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define PROG_NAME        "sac_webhook_mock_api"
#define MAX_LIMIT        10               /* meta.page.max_limit of lists */
#define DOC_BODY_LIMIT   (64u << 20)      /* PUT document bodies */
#define CTL_BODY_LIMIT   (1u << 20)       /* other control / token bodies */
#define OVERSIZE_BYTES   (5u << 20)       /* "oversize" fault body */
#define MAX_DELAY_MS     600000L
#define MAX_COUNT        1000000000L
#define PC_SHARDS        16
#define PC_SHARD_MAX     65536            /* distinct counted paths per shard */
#define MAX_PATH_LEN     512

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
    struct client *clients;
    size_t         nclients;
} g_cfg = { "127.0.0.1:18080", NULL, 0, 0, 4, 3600, NULL, 0 };

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
/* document store                                                      */
/* ------------------------------------------------------------------ */

enum { DOC_NONE = 0, DOC_PUT = 1, DOC_DELETED = 2 };

struct msg {
    struct msg *next;         /* in its ticket's list, first-touch order */
    char       *body;
    size_t      len;
    int         state;
    char        key[74];      /* "<ticket_id>/<message_id>" */
};

struct ticket {
    char       *body;
    size_t      len;
    int         state;        /* DOC_NONE: placeholder holding messages */
    struct msg *head, *tail;
};

static pthread_rwlock_t g_docs_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct htab g_tickets;   /* ticket id -> struct ticket */
static struct htab g_msgs;      /* "tid/mid" -> struct msg (owned by ticket) */

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

/* Find or create the record of a ticket (caller holds the write lock). */
static struct ticket *ticket_get_or_add(const char *tid)
{
    uint64_t h = hash_bytes(tid, 36);
    struct hnode *e = ht_find(&g_tickets, tid, 36, h);
    if (e)
        return e->val;
    struct ticket *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    e = ht_add(&g_tickets, tid, 36, h);
    if (!e) {
        free(t);
        return NULL;
    }
    e->val = t;
    return t;
}

/* Find or create a message record and link it to its ticket (write lock). */
static struct msg *msg_get_or_add(struct ticket *t, const char *tid, const char *mid)
{
    char key[74];
    memcpy(key, tid, 36);
    key[36] = '/';
    memcpy(key + 37, mid, 36);
    key[73] = '\0';
    uint64_t h = hash_bytes(key, 73);
    struct hnode *e = ht_find(&g_msgs, key, 73, h);
    if (e)
        return e->val;
    struct msg *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    e = ht_add(&g_msgs, key, 73, h);
    if (!e) {
        free(m);
        return NULL;
    }
    memcpy(m->key, key, sizeof key);
    e->val = m;
    if (t->tail)
        t->tail->next = m;
    else
        t->head = m;
    t->tail = m;
    return m;
}

/* PUT a ticket document; takes ownership of body.  Returns 0 or -1. */
static int docs_put_ticket(const char *tid, char *body, size_t len)
{
    pthread_rwlock_wrlock(&g_docs_lock);
    struct ticket *t = ticket_get_or_add(tid);
    if (t) {
        free(t->body);
        t->body = body;
        t->len = len;
        t->state = DOC_PUT;
    }
    pthread_rwlock_unlock(&g_docs_lock);
    if (!t)
        free(body);
    return t ? 0 : -1;
}

/* DELETE a ticket: mark it deleted and drop all its stored messages. */
static int docs_del_ticket(const char *tid)
{
    pthread_rwlock_wrlock(&g_docs_lock);
    struct ticket *t = ticket_get_or_add(tid);
    if (t) {
        struct msg *m, *next;
        for (m = t->head; m; m = next) {
            next = m->next;
            ht_del(&g_msgs, m->key, 73, hash_bytes(m->key, 73), NULL);
            free(m->body);
            free(m);
        }
        t->head = t->tail = NULL;
        free(t->body);
        t->body = NULL;
        t->len = 0;
        t->state = DOC_DELETED;
    }
    pthread_rwlock_unlock(&g_docs_lock);
    return t ? 0 : -1;
}

/* PUT (body != NULL) or DELETE (body == NULL) one message. */
static int docs_set_msg(const char *tid, const char *mid, char *body, size_t len)
{
    struct msg *m = NULL;
    pthread_rwlock_wrlock(&g_docs_lock);
    struct ticket *t = ticket_get_or_add(tid);
    if (t)
        m = msg_get_or_add(t, tid, mid);
    if (m) {
        free(m->body);
        m->body = body;
        m->len = body ? len : 0;
        m->state = body ? DOC_PUT : DOC_DELETED;
    }
    pthread_rwlock_unlock(&g_docs_lock);
    if (!m)
        free(body);
    return m ? 0 : -1;
}

enum { LK_NOTFOUND, LK_BODY, LK_AUTO };

/*
 * Look up a ticket.  LK_BODY: *out is a malloc'd copy of the PUT body;
 * LK_AUTO: caller generates the document; LK_NOTFOUND: 404.
 */
static int docs_get_ticket(const char *tid, char **out, size_t *len)
{
    int r;
    pthread_rwlock_rdlock(&g_docs_lock);
    struct hnode *e = ht_find(&g_tickets, tid, 36, hash_bytes(tid, 36));
    struct ticket *t = e ? e->val : NULL;
    if (t && t->state == DOC_PUT) {
        *out = malloc(t->len ? t->len : 1);
        if (*out) {
            memcpy(*out, t->body, t->len);
            *len = t->len;
            r = LK_BODY;
        } else
            r = LK_NOTFOUND;
    } else if (t && t->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else
        r = g_cfg.auto_docs ? LK_AUTO : LK_NOTFOUND;
    pthread_rwlock_unlock(&g_docs_lock);
    return r;
}

/* Look up one message; same contract as docs_get_ticket. */
static int docs_get_msg(const char *tid, const char *mid, char **out, size_t *len)
{
    int r;
    char key[74];
    memcpy(key, tid, 36);
    key[36] = '/';
    memcpy(key + 37, mid, 36);
    key[73] = '\0';
    pthread_rwlock_rdlock(&g_docs_lock);
    struct hnode *te = ht_find(&g_tickets, tid, 36, hash_bytes(tid, 36));
    struct ticket *t = te ? te->val : NULL;
    struct hnode *me = t ? ht_find(&g_msgs, key, 73, hash_bytes(key, 73)) : NULL;
    struct msg *m = me ? me->val : NULL;
    if (t && t->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else if (m && m->state == DOC_PUT) {
        *out = malloc(m->len ? m->len : 1);
        if (*out) {
            memcpy(*out, m->body, m->len);
            *len = m->len;
            r = LK_BODY;
        } else
            r = LK_NOTFOUND;
    } else if (m && m->state == DOC_DELETED)
        r = LK_NOTFOUND;
    else
        r = g_cfg.auto_docs ? LK_AUTO : LK_NOTFOUND;
    pthread_rwlock_unlock(&g_docs_lock);
    return r;
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

/*
 * Build the paged message list of a ticket: the messages PUT for it, in
 * the order they were first stored.  Returns a malloc'd body, or NULL with
 * *notfound set when the ticket is deleted (or unknown without --auto).
 */
static char *docs_list_msgs(const char *tid, long off, long lim, size_t *len, int *notfound)
{
    char *out = NULL;
    *notfound = 0;
    pthread_rwlock_rdlock(&g_docs_lock);
    struct hnode *te = ht_find(&g_tickets, tid, 36, hash_bytes(tid, 36));
    struct ticket *t = te ? te->val : NULL;
    if ((t && t->state == DOC_DELETED) || (!t && !g_cfg.auto_docs)) {
        *notfound = 1;
        goto done;
    }
    long total = 0, count = 0;
    size_t need = 600;
    for (struct msg *m = t ? t->head : NULL; m; m = m->next) {
        if (m->state != DOC_PUT)
            continue;
        if (total >= off && total < off + lim) {
            need += m->len + 1;
            count++;
        }
        total++;
    }
    out = malloc(need);
    if (!out)
        goto done;
    size_t pos = 0;
    int bad = append_fmt(out, need, &pos,
                         "{\"meta\":{\"page\":{\"limit\":%ld,\"offset\":%ld,\"count\":%ld,"
                         "\"max_limit\":%d},\"links\":{", lim, off, count, MAX_LIMIT);
    if (off > 0)
        bad |= append_fmt(out, need, &pos, "\"previous\":\"?_offset=%ld&_limit=%ld\",",
                          off > lim ? off - lim : 0, lim);
    bad |= append_fmt(out, need, &pos, "\"self\":\"?_offset=%ld&_limit=%ld\"", off, lim);
    if (off + lim < total)
        bad |= append_fmt(out, need, &pos, ",\"next\":\"?_offset=%ld&_limit=%ld\"",
                          off + lim, lim);
    bad |= append_fmt(out, need, &pos, "}},\"results\":[");
    long i = 0, n = 0;
    for (struct msg *m = t ? t->head : NULL; m && !bad; m = m->next) {
        if (m->state != DOC_PUT)
            continue;
        if (i >= off && i < off + lim) {
            if (n++)
                out[pos++] = ',';
            memcpy(out + pos, m->body, m->len);
            pos += m->len;
        }
        i++;
    }
    bad |= append_fmt(out, need, &pos, "]}");
    if (bad) {
        free(out);
        out = NULL;
    } else
        *len = pos;
done:
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

/* The ticket document for an id in --auto mode, deterministic per id. */
static int gen_ticket(char *out, size_t cap, const char *tid)
{
    uint64_t h1 = hash_bytes(tid, 36);
    uint64_t h2 = hash_bytes((const char *) &h1, sizeof h1);
    char code[37];
    fmt_uuid(code, h1, h2);
    unsigned long long order_code = 1000000000000000ULL + h1 % 9000000000000000ULL;
    unsigned long long proto = h2 % 100000000000ULL;
    return snprintf(out, cap,
        "{\"created_at\":\"2024-08-07T13:42:45\",\"updated_at\":\"2024-08-07T13:42:46\","
        "\"id\":\"%s\",\"code\":\"%s\",\"type\":\"payment\","
        "\"order\":{\"id\":\"bcc662e8-527b-410f-87a5-bbc8f5e623da\",\"code\":\"%llu\","
        "\"delivery\":{\"id\":\"96061b77-b065-4cd8-9e41-b097bf95c173\","
        "\"seller\":{\"id\":\"c85be697-7b14-4460-a5c7-3e58b4a364f9\",\"name\":\"SellerName\"},"
        "\"items\":[{\"id\":\"63c54b4a-ea19-4c52-90a8-bd38cd1a3157\",\"sku\":\"livro-01\","
        "\"external_sku\":\"livro-seller-01\",\"name\":\"A Bela e a Fera em 3D\","
        "\"description\":\"Livro infantil a Bela e a Fera com encartes em 3D.\","
        "\"image\":\"https://imagem.do.livro/foto.jpg\",\"quantity\":1}]}},"
        "\"channel\":{\"id\":\"3f042852-3efc-4d47-97f8-f94989c7b0bc\"},"
        "\"status\":\"waiting\",\"closed\":false,\"reason\":null,"
        "\"protocol\":\"2023%011llu\",\"due_date\":\"2024-08-09T13:42:46\",\"origin\":\"customer\"}",
        tid, code, order_code, proto);
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
    unsigned long long api, token, unauthorized;
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
/* delayed answers: suspended connections resumed by a timer thread    */
/* ------------------------------------------------------------------ */

struct delayed {
    struct delayed        *next;
    struct MHD_Connection *c;
    struct timespec        due;
};

static pthread_mutex_t g_delay_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  g_delay_cv;
static struct delayed *g_delayed;       /* sorted by due time */
static int             g_delay_stop;

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/*
 * Suspend connection c and have the timer resume it after ms milliseconds.
 * Must be called from the access handler.  Returns 0 (and does nothing)
 * when shutting down, in which case the caller answers at once.
 */
static int delay_schedule(struct MHD_Connection *c, long ms)
{
    struct delayed *d = malloc(sizeof *d);
    if (!d)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &d->due);
    d->due.tv_sec += ms / 1000;
    d->due.tv_nsec += (ms % 1000) * 1000000L;
    if (d->due.tv_nsec >= 1000000000L) {
        d->due.tv_sec++;
        d->due.tv_nsec -= 1000000000L;
    }
    d->c = c;
    pthread_mutex_lock(&g_delay_mu);
    if (g_delay_stop) {
        pthread_mutex_unlock(&g_delay_mu);
        free(d);
        return 0;
    }
    MHD_suspend_connection(c);
    struct delayed **pp = &g_delayed;
    while (*pp && !ts_before(&d->due, &(*pp)->due))
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
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
        while (g_delayed && (g_delay_stop || !ts_before(&now, &g_delayed->due))) {
            struct delayed *d = g_delayed;
            g_delayed = d->next;
            MHD_resume_connection(d->c);
            free(d);
        }
        if (g_delay_stop)
            break;
        if (g_delayed)
            pthread_cond_timedwait(&g_delay_cv, &g_delay_mu, &g_delayed->due);
        else
            pthread_cond_wait(&g_delay_cv, &g_delay_mu);
    }
    pthread_mutex_unlock(&g_delay_mu);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* tiny JSON object scanner for control bodies                         */
/* ------------------------------------------------------------------ */

enum { JT_STR, JT_INT, JT_NULL, JT_BOOL };

struct jkv {
    char      key[32];
    int       type;
    char     *s;          /* JT_STR: decoded, NUL-terminated */
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
 * null.  Nested values, duplicate keys, keys longer than 31 bytes, more
 * than 16 keys and trailing garbage are errors (*err says which).
 */
static int json_scan(const char *buf, size_t len, struct jobj *o, const char **err)
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

enum { RT_NONE, RT_TICKET, RT_MSG, RT_LIST };

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
        return RT_LIST;
    if (*p++ != '/' || strnlen(p, 37) != 36 || !is_uuid(p))
        return RT_NONE;
    copy_lower(mid, p, 36);
    return RT_MSG;
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

/* Serve an API GET normally: bearer check, then the document or list. */
static enum MHD_Result api_serve(const struct call *k)
{
    char tid[37], mid[37];
    int rt = parse_doc_path(k->url, tid, mid);
    if (rt == RT_NONE)
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
    char gen[2048];
    int lk;
    if (rt == RT_LIST) {
        long off = parse_nonneg(MHD_lookup_connection_value(k->c, MHD_GET_ARGUMENT_KIND, "_offset"), 0);
        long lim = parse_nonneg(MHD_lookup_connection_value(k->c, MHD_GET_ARGUMENT_KIND, "_limit"), MAX_LIMIT);
        if (off < 0 || lim < 1)
            return reply_lit(k, 400, "{\"error\":\"invalid_parameter\"}");
        if (lim > MAX_LIMIT)
            lim = MAX_LIMIT;
        int nf;
        body = docs_list_msgs(tid, off, lim, &len, &nf);
        if (!body)
            return nf ? reply_lit(k, 404, J_NOT_FOUND) : MHD_NO;
        return reply(k, 200, CT_JSON, body, len, MHD_RESPMEM_MUST_FREE, NULL);
    }
    if (rt == RT_TICKET)
        lk = docs_get_ticket(tid, &body, &len);
    else
        lk = docs_get_msg(tid, mid, &body, &len);
    if (lk == LK_NOTFOUND)
        return reply_lit(k, 404, J_NOT_FOUND);
    if (lk == LK_BODY)
        return reply(k, 200, CT_JSON, body, len, MHD_RESPMEM_MUST_FREE, NULL);
    int n = rt == RT_TICKET ? gen_ticket(gen, sizeof gen, tid) : gen_msg(gen, sizeof gen, tid, mid);
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
    R_FAULTS, R_TOKEN_FAULTS, R_TOKENS, R_EXPIRE, R_RESET
};

struct req {
    int           route;
    char          tid[37], mid[37];
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
 * Answer a request on an API path (/v0/...): count it, route it (404/405),
 * then consume the first matching fault, if any; a fault with a delay
 * suspends the connection and is applied when the timer resumes it.
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

    char tid[37], mid[37];
    if (parse_doc_path(k->url, tid, mid) == RT_NONE)
        return reply_lit(k, 404, J_NOT_FOUND);
    if (strcmp(k->method, MHD_HTTP_METHOD_GET) != 0)
        return reply_405(k, "GET");

    struct action a;
    if (!fq_take(&g_faults, lp, &a))
        return api_serve(k);
    if (a.delay_ms > 0) {
        struct req *r = req_new(R_DELAYED, CTL_BODY_LIMIT);
        if (!r)
            return MHD_NO;
        r->a = a;
        *con_cls = r;
        if (delay_schedule(k->c, a.delay_ms))
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
    if (json_scan(r->buf ? r->buf : "", r->len, &o, &err) < 0)
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
    if (json_scan(r->buf ? r->buf : "", r->len, &o, &err) < 0)
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

/* POST /_mock/reset: documents, deletions, faults and counters. */
static void state_reset(void)
{
    pthread_rwlock_wrlock(&g_docs_lock);
    ht_clear(&g_msgs, NULL);
    ht_clear(&g_tickets, ticket_free);
    pthread_rwlock_unlock(&g_docs_lock);
    fq_clear(&g_faults);
    fq_clear(&g_tfaults);
    A_STORE(&g_stats.api, 0);
    A_STORE(&g_stats.token, 0);
    A_STORE(&g_stats.unauthorized, 0);
    for (int i = 0; i < PC_SHARDS; i++) {
        pthread_mutex_lock(&g_pc[i].mu);
        ht_clear(&g_pc[i].t, NULL);
        pthread_mutex_unlock(&g_pc[i].mu);
    }
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
        int e = r->route == R_PUT_TICKET ? docs_put_ticket(r->tid, b, n)
                                         : docs_set_msg(r->tid, r->mid, b, n);
        return e ? MHD_NO : reply_ok(k);
    }
    case R_DEL_TICKET:
        return docs_del_ticket(r->tid) ? MHD_NO : reply_ok(k);
    case R_DEL_MSG:
        return docs_set_msg(r->tid, r->mid, NULL, 0) ? MHD_NO : reply_ok(k);
    case R_FAULTS:
        return ctl_faults(k, r, 0);
    case R_TOKEN_FAULTS:
        return ctl_faults(k, r, 1);
    case R_TOKENS:
        return ctl_tokens(k, r);
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

/*
 * Does this request carry a body we must read (token endpoint, control
 * PUT/DELETE/POST)?  If so, fill in the route, ids and body size limit.
 */
static int body_route(const char *u, const char *m, int *route, char tid[37], char mid[37], size_t *limit)
{
    static const struct { const char *path; int route; } posts[] = {
        { "/_mock/faults", R_FAULTS }, { "/_mock/token_faults", R_TOKEN_FAULTS },
        { "/_mock/tokens", R_TOKENS }, { "/_mock/tokens/expire", R_EXPIRE },
        { "/_mock/reset", R_RESET }, { "/oauth/token", R_TOKEN }, { NULL, 0 }
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
    if ((!put && strcmp(m, MHD_HTTP_METHOD_DELETE) != 0) || strncmp(u, "/_mock/v0/", 10) != 0)
        return 0;
    int rt = parse_doc_path(u + 6, tid, mid);
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

    if (strncmp(u, "/_mock/v0/", 10) == 0) {
        char tid[37], mid[37];
        int rt = parse_doc_path(u + 6, tid, mid);
        if (rt != RT_TICKET && rt != RT_MSG)
            return reply_lit(k, 404, J_NOT_FOUND);
        return reply_405(k, "PUT, DELETE");
    }
    for (int i = 0; posts[i]; i++)
        if (strcmp(u, posts[i]) == 0)
            return reply_405(k, "POST");
    if (strcmp(u, "/_mock/stats") == 0) {
        if (!is_get)
            return reply_405(k, "GET");
        char b[200];
        int n = snprintf(b, sizeof b, "{\"api_requests\":%llu,\"token_requests\":%llu,\"unauthorized\":%llu}",
                         A_LOAD(&g_stats.api), A_LOAD(&g_stats.token), A_LOAD(&g_stats.unauthorized));
        return reply(k, 200, CT_JSON, b, (size_t) n, MHD_RESPMEM_MUST_COPY, NULL);
    }
    if (strcmp(u, "/_mock/count") == 0) {
        if (!is_get)
            return reply_405(k, "GET");
        const char *p = MHD_lookup_connection_value(k->c, MHD_GET_ARGUMENT_KIND, "path");
        char lp[MAX_PATH_LEN], b[32];
        if (!p || !*p)
            return reply_bad(k, "path parameter required");
        size_t n = strlen(p);
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
        char tid[37], mid[37];
        if (!body_route(url, method, &route, tid, mid, &limit)) {
            *con_cls = &g_pending;
            return MHD_YES;
        }
        if (!(r = req_new(route, limit)))
            return MHD_NO;
        memcpy(r->tid, tid, 37);
        memcpy(r->mid, mid, 37);
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
        if (strncmp(url, "/v0/", 4) == 0 || strcmp(url, "/v0") == 0)
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
        "                          unless deleted or overridden through the control API\n"
        "  --access-token TOKEN    an initially valid access token (repeatable)\n"
        "  --client ID:SECRET      a valid OAuth client (repeatable; default demo-client:demo-secret)\n"
        "  --refresh-token TOKEN   an initially valid refresh token (repeatable)\n"
        "  --token-ttl SECONDS     expires_in of issued tokens (default 3600)\n"
        "  --threads N             libmicrohttpd thread pool size (default 4)\n"
        "  --quiet                 no per-request log on stderr\n"
        "  --help                  this text\n"
        "\n"
        "API:     GET /v0/tickets/{id}, /v0/tickets/{id}/messages[/{id}] (Bearer auth)\n"
        "OAuth:   POST /oauth/token (grant_type=refresh_token, client_id, client_secret, refresh_token)\n"
        "Control: PUT|DELETE /_mock/v0/tickets/{id}[/messages/{id}], POST /_mock/faults,\n"
        "         POST /_mock/token_faults, POST /_mock/tokens, POST /_mock/tokens/expire,\n"
        "         POST /_mock/reset, GET /_mock/stats, GET /_mock/count?path=, GET /_mock/health\n");
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
                    !strcmp(name, "--threads");
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
    if (ht_init(&g_access) || ht_init(&g_refresh) || ht_init(&g_tickets) || ht_init(&g_msgs))
        die("out of memory");
    for (int i = 0; i < PC_SHARDS; i++) {
        pthread_mutex_init(&g_pc[i].mu, NULL);
        if (ht_init(&g_pc[i].t))
            die("out of memory");
    }
    parse_args(argc, argv);
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

    ht_destroy(&g_msgs, NULL);
    ht_destroy(&g_tickets, ticket_free);
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
