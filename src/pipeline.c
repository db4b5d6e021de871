/*-------------------------------------------------------------------------
 *
 * pipeline.c
 *		claim -> fetch -> apply: one batch of inbox rows, for the background
 *		worker and for sac_webhook.process().
 *
 * 1. Claim, in one short unit of work: due pending/retrying rows of enabled
 *	  tenants that nobody holds, or whose holder died or let its lease run
 *	  out, FOR UPDATE SKIP LOCKED.  A claimed row gets a lease (owner pid
 *	  and expiry) and keeps its state.
 * 2. Refresh the access tokens that expire soon (oauth.c).
 * 3. Fetch every resource concurrently (fetch.c), outside any transaction
 *	  in the worker; a 401 refreshes the tenant's token once and fetches
 *	  again.
 * 4. Apply the results (apply.c): in the worker, the whole batch in one
 *	  transaction; a failing row is retried or marked dead on its own.
 *
 * A unit of work is a transaction in the worker and a subtransaction of the
 * caller's transaction in process(), which cannot commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/hsearch.h"
#include "utils/snapmgr.h"
#include "utils/array.h"
#include "utils/uuid.h"

#include "pipeline.h"

PG_FUNCTION_INFO_V1(sac_webhook_process);

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_sync_work_plan = NULL;
static SPIPlanPtr claim_syncs_plan = NULL;
static SPIPlanPtr syncs_finish_plan = NULL;
static SPIPlanPtr syncs_periodic_plan = NULL;
static SPIPlanPtr sync_pending_plan = NULL;
static SPIPlanPtr prune_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;

/*
 * The claim: due rows of enabled tenants that nobody holds, or whose holder
 * let its lease run out, or (with $5, at housekeeping) whose holder is
 * gone.  A claimed row keeps its state and gets a lease (lease_owner,
 * lease_until): no indexed column changes, so the update stays on its heap
 * page and writes no index entries.  A resource has at most one waiting row
 * (inbox_waiting_resource), so one lease per row is one fetch in flight per
 * resource.  The fetch that follows covers the notifications taken in so
 * far, so refetch is cleared.  Rows of a tenant whose token refresh failed
 * wait for the tenant (token_retry_at), not each for itself.  A row this
 * process still holds between two batches is one it could not give back
 * (a receipt kept it locked): it is taken again as soon as it is free.
 *
 * The search_path is pinned to pg_catalog wherever these statements run
 * (the worker's session, process()), and functions are named with their
 * schema all the same (but for the SQL constructs that look like functions:
 * multi-argument unnest in FROM, coalesce, greatest, least).
 *
 * The rows are picked in a sub-select run once (the ARRAY()) and updated
 * through the primary key, and the statement is planned afresh each time
 * with the real LIMIT (see claim_unit): a generic plan, guessing from
 * statistics taken during a backlog, could scan the whole inbox instead.
 */
#define CLAIM_UPDATE \
"UPDATE sac_webhook.inbox i" \
"   SET lease_until = pg_catalog.now() + pg_catalog.make_interval(secs => $2), lease_owner = $3," \
"       attempts = i.attempts + 1, last_attempt_at = pg_catalog.now(), refetch = false" \
"  FROM sac_webhook.tenants t" \
"       LEFT JOIN sac_webhook.api_bases b" \
"              ON b.base_url = pg_catalog.rtrim(coalesce(t.api_base_url, $6), '/')" \
" WHERE i.id = ANY (ARRAY("

/*
 * a row nobody (alive, with its lease running) holds; rows this process
 * holds are free but for those in its pipeline ($9)
 */
#define CLAIM_FREE(w) \
"(" w ".lease_owner IS NULL OR " w ".lease_until < pg_catalog.now()" \
" OR (" w ".lease_owner = $3 AND " w ".id <> ALL ($9))" \
" OR ($5 AND " w ".lease_owner NOT IN (SELECT a.pid FROM pg_catalog.pg_stat_activity a" \
"                                       WHERE a.pid IS NOT NULL)))"

/*
 * How many rows of each tenant may be claimed: $10/$11 for the tenants the
 * pipeline knows (their window less what they have in it), $8 for others,
 * and never more than $12
 */
#define TENANT_ROOM \
"pg_catalog.int4smaller(coalesce(r.room, $8), $12)"
#define TENANT_ROOMS(e) \
" LEFT JOIN unnest($10::pg_catalog.uuid[], $11::pg_catalog.int4[]) AS r(tenant_id, room)" \
"        ON r.tenant_id = " e ".tenant_id"

/* a tenant whose rows may be worked now */
#define TENANT_READY(e) \
"(" e ".enabled AND (" e ".token_retry_at IS NULL OR " e ".token_retry_at <= pg_catalog.now()))"

/* the tenant's columns, at the same positions in every claim (8-10, 13, 14, 16) */
#define CLAIM_RETURNING \
" RETURNING i.id, i.topic, i.status::text, i.tenant_id, i.ticket_id," \
"           i.message_id, i.attempts, t.api_base_url, t.access_token," \
"           (t.access_token IS NULL OR" \
"            coalesce(t.token_expires_at < pg_catalog.now() + pg_catalog.make_interval(secs => $4), false))," \
"           i.not_found, i.rechecks," \
"           CASE WHEN b.single_message_served" \
"                  OR b.learned_at > pg_catalog.now() - interval '1 day'" \
"                THEN b.single_message_served END," \
"           t.api_ok_at > pg_catalog.now() - pg_catalog.make_interval(secs => $7)," \
"           i.sync_id, t.api_ok_at > pg_catalog.now() - interval '1 minute'"

/*
 * Notifications, oldest due first, at most what each tenant has room for
 * (see TENANT_ROOM): a tenant the API slows down keeps its backlog in the
 * inbox, not in the pipeline, and the other tenants' rows go by it.
 */
static const char *const claim_sql =
CLAIM_UPDATE
"        SELECT x.id FROM sac_webhook.tenants e" TENANT_ROOMS("e") ","
"               LATERAL (SELECT w.id, w.next_attempt_at FROM sac_webhook.inbox w"
"                         WHERE w.tenant_id = e.tenant_id AND w.priority = 0"
"                           AND w.state IN ('pending', 'retrying')"
"                           AND w.next_attempt_at <= pg_catalog.now() AND " CLAIM_FREE("w")
"                         ORDER BY w.next_attempt_at LIMIT " TENANT_ROOM " FOR UPDATE OF w SKIP LOCKED) x"
"         WHERE " TENANT_READY("e")
"         ORDER BY x.next_attempt_at LIMIT $1))"
"   AND t.tenant_id = i.tenant_id"
CLAIM_RETURNING;

/*
 * Work queued by syncs, in what room the notifications leave, the same
 * way (with $12 a smaller share per tenant), so that tenants share it.
 */
static const char *const claim_sync_work_sql =
CLAIM_UPDATE
"        SELECT x.id FROM sac_webhook.tenants e" TENANT_ROOMS("e") ","
"               LATERAL (SELECT w.id, w.next_attempt_at FROM sac_webhook.inbox w"
"                         WHERE w.tenant_id = e.tenant_id AND w.priority = 1"
"                           AND w.state IN ('pending', 'retrying')"
"                           AND w.next_attempt_at <= pg_catalog.now() AND " CLAIM_FREE("w")
"                         ORDER BY w.next_attempt_at LIMIT " TENANT_ROOM " FOR UPDATE OF w SKIP LOCKED) x"
"         WHERE " TENANT_READY("e")
"         ORDER BY x.next_attempt_at LIMIT $1))"
"   AND t.tenant_id = i.tenant_id"
CLAIM_RETURNING;

/*
 * Syncs whose walk is due, of ready tenants, one per tenant at a time; the
 * columns of the claims above, then the walk's own.
 */
static const char *const claim_syncs_sql =
"UPDATE sac_webhook.syncs s"
"   SET lease_until = pg_catalog.now() + pg_catalog.make_interval(secs => $2), lease_owner = $3,"
"       attempts = s.attempts + 1,"
"       walk_started_at = coalesce(s.walk_started_at, pg_catalog.now())"
"  FROM sac_webhook.tenants t"
"       LEFT JOIN sac_webhook.api_bases b"
"              ON b.base_url = pg_catalog.rtrim(coalesce(t.api_base_url, $6), '/')"
" WHERE s.id = ANY (ARRAY("
"        SELECT w.id FROM sac_webhook.syncs w"
"         WHERE w.state = 'walking' AND w.next_attempt_at <= pg_catalog.now()"
"           AND " CLAIM_FREE("w")
"           AND EXISTS (SELECT 1 FROM sac_webhook.tenants e"
"                        WHERE e.tenant_id = w.tenant_id AND " TENANT_READY("e") ")"
"         ORDER BY w.next_attempt_at LIMIT $1 FOR UPDATE OF w SKIP LOCKED))"
"   AND t.tenant_id = s.tenant_id"
" RETURNING s.id, 'sync', 'UPDATE', s.tenant_id, NULL::uuid, NULL::uuid, s.attempts,"
"           t.api_base_url, t.access_token,"
"           (t.access_token IS NULL OR"
"            coalesce(t.token_expires_at < pg_catalog.now() + pg_catalog.make_interval(secs => $4), false)),"
"           0, 0,"
"           CASE WHEN b.single_message_served"
"                  OR b.learned_at > pg_catalog.now() - interval '1 day'"
"                THEN b.single_message_served END,"
"           t.api_ok_at > pg_catalog.now() - pg_catalog.make_interval(secs => $7),"
"           s.id, t.api_ok_at > pg_catalog.now() - interval '1 minute', s.since IS NULL,"
"           pg_catalog.to_char((s.since - interval '" SAC_SYNC_OVERLAP "') AT TIME ZONE 'UTC',"
"                              'YYYY-MM-DD\"T\"HH24:MI:SS'),"
"           s.next_offset, s.page_limit";

/* Is there reconciliation work: rows a sync queued, walks? (cheap probes) */
static const char *const sync_pending_sql =
"SELECT EXISTS (SELECT 1 FROM sac_webhook.inbox w"
"                WHERE w.state IN ('pending', 'retrying') AND w.priority = 1),"
"       EXISTS (SELECT 1 FROM sac_webhook.syncs s WHERE s.state = 'walking')";

/*
 * Housekeeping of syncs: a sync whose walk is over and whose queued rows
 * are all finished is done (its tickets deleted counted, its seen list
 * dropped) ...
 */
static const char *const syncs_finish_sql =
"WITH done AS ("
"  UPDATE sac_webhook.syncs s"
"     SET state = 'done', finished_at = pg_catalog.now(),"
"         tickets_deleted = (SELECT pg_catalog.count(*) FROM sac_webhook.inbox i"
"                             WHERE i.sync_id = s.id AND i.topic = 'sac_ticket' AND i.state = 'done'"
"                               AND i.last_http_status IN (404, 410))"
"   WHERE s.state = 'confirming'"
"     AND NOT EXISTS (SELECT 1 FROM sac_webhook.inbox i"
"                      WHERE i.sync_id = s.id AND i.state IN ('pending', 'retrying'))"
"  RETURNING s.id),"
" dropped AS (DELETE FROM sac_webhook.sync_seen v"
"              WHERE v.sync_id IN (SELECT id FROM done)"
"                 OR v.sync_id IN (SELECT f.id FROM sac_webhook.syncs f WHERE f.state = 'failed'))"
" SELECT pg_catalog.count(*) FROM done";

/*
 * ... and each enabled tenant gets a periodic sync every $1 seconds, of
 * what changed since its tickets are known to be in step (synced_until, see
 * sync_advance_sql in apply.c; or since the tenant was registered), with an
 * overlap.
 */
static const char *const syncs_periodic_sql =
"INSERT INTO sac_webhook.syncs (tenant_id, kind, since)"
" SELECT t.tenant_id, 'periodic',"
"        coalesce(t.synced_until, t.created_at)"
"   FROM sac_webhook.tenants t"
"  WHERE t.enabled"
"    AND NOT EXISTS (SELECT 1 FROM sac_webhook.syncs s"
"                     WHERE s.tenant_id = t.tenant_id"
"                       AND (s.finished_at IS NULL"
"                            OR s.started_at > pg_catalog.now() - pg_catalog.make_interval(secs => $1)))"
"    AND t.created_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)";

static const char *const prune_sql =
"DELETE FROM sac_webhook.inbox"
" WHERE id IN (SELECT id FROM sac_webhook.inbox"
"               WHERE state = 'done'"
"                 AND finished_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)"
"               LIMIT 10000)";

/*
 * Milliseconds until the next waiting row of an enabled tenant is due (a
 * held row: until its lease runs out; a tenant backing off: until it may
 * refresh again)
 */
static const char *const next_due_sql =
"SELECT (pg_catalog.date_part('epoch', pg_catalog.min(due) - pg_catalog.now()) * 1000)::bigint"
"  FROM (SELECT greatest(w.next_attempt_at, w.lease_until, e.token_retry_at) AS due"
"          FROM sac_webhook.inbox w JOIN sac_webhook.tenants e ON e.tenant_id = w.tenant_id AND e.enabled"
"         WHERE w.state IN ('pending', 'retrying')"
"        UNION ALL"
"        SELECT greatest(s.next_attempt_at, s.lease_until, e.token_retry_at)"
"          FROM sac_webhook.syncs s JOIN sac_webhook.tenants e ON e.tenant_id = s.tenant_id AND e.enabled"
"         WHERE s.state = 'walking') d";

/* Where a job is in the pipeline */
typedef enum JobState
{
	JOB_WAITING,				/* its next request waits to be started */
	JOB_IN_FLIGHT,				/* its request is under way */
	JOB_PARKED,					/* gone: waits for its tenant's probe */
	JOB_READY					/* decided: waits to be applied */
} JobState;

/* An entry of the pipeline's job table: inbox rows and syncs by id */
typedef struct JobKey
{
	int64		id;
	bool		is_sync;
} JobKey;

typedef struct JobEntry
{
	JobKey		key;
	SacJob	   *job;
} JobEntry;

/* An entry of the pipeline's tenant table */
typedef struct TenantEntry
{
	pg_uuid_t	id;
	SacTenant  *tenant;
} TenantEntry;

/* A growable array of jobs */
typedef struct JobArray
{
	SacJob	  **jobs;
	int			n;
	int			cap;
} JobArray;

/*
 * The pipeline of one process: claimed jobs from claim to apply, with the
 * transfers under way and what is known of the tenants they belong to.
 */
struct SacPipeline
{
	const SacEnv *env;
	MemoryContext cxt;			/* tables, arrays, tenants */
	MemoryContext jobs_cxt;		/* parent of every job's context */
	SacHttpEngine *engine;
	HTAB	   *job_table;		/* JobKey -> job, every job in the pipeline */
	HTAB	   *tenant_table;	/* tenant id -> SacTenant */
	int			njobs;			/* in the pipeline */
	JobArray	waiting;		/* JOB_WAITING, oldest first */
	JobArray	flying;			/* JOB_IN_FLIGHT */
	JobArray	ready;			/* JOB_READY, oldest first */
	int			window;			/* requests under way at most (this
								 * process's share of max_in_flight) */
	int			tenant_window;	/* ... for one tenant */
	double		rate;			/* requests a second at most (0: no limit) */
	double		tenant_rate;	/* ... for one tenant */
	double		tokens;			/* request-rate budget */
	TimestampTz tokens_at;
	int			sync_rows;		/* rows queued by syncs in the pipeline */
	int			walks;			/* syncs walking in the pipeline */
	bool		claim_more;		/* the last claim took all it asked for */
	TimestampTz last_claim_at;
	TimestampTz next_claim_at;	/* claim then even if not woken */
	TimestampTz next_start_at;	/* a waiting job may start then */
	int64		next_due_ms;	/* from the last claim that found nothing */
	bool		woken;			/* new notifications since the last claim */
	bool		applied;		/* results applied since the last claim */
	uint64		group_serial;
	MemoryContext loop_cxt;		/* reset at every turn of the loop */
};

/* Apply what is ready at least this often, and in groups of at most ... */
#define GROUP_DELAY_MS 5
#define GROUP_MAX (sac_batch_size)

/*
 * Rows claimed ahead of room to start them, so that a request can start as
 * soon as another one ends: a window's worth, and a quarter more
 */
#define PREFETCHED(window) ((window) + (window) / 4)

/* Claims close together are merged (when woken by new notifications) */
#define CLAIM_INTERVAL_MS 2

/* ... and with less than a quarter of a window free, only after */
#define CLAIM_STEP_MS 20

/* A claim that found nothing is tried again after at least */
#define CLAIM_RETRY_MS 10

/*
 * A request unanswered after this long is a straggler: it stops counting
 * against the windows (up to half a window's worth of them), so that a slow
 * tail of answers does not take the room of the others.
 */
#define STRAGGLER_MS 1000

/* Longest pause a Retry-After imposes on a tenant's other requests */
#define MAX_PAUSE_MS 60000

/* Tenants without jobs are forgotten after (their window grown back) */
#define TENANT_IDLE_MS 600000

static void
array_push(SacPipeline *p, JobArray *a, SacJob *job)
{
	if (a->n == a->cap)
	{
		a->cap = Max(a->cap * 2, 64);
		a->jobs = a->jobs ? repalloc(a->jobs, sizeof(SacJob *) * a->cap)
			: MemoryContextAlloc(p->cxt, sizeof(SacJob *) * a->cap);
	}
	a->jobs[a->n++] = job;
}

/* Take a job off the list of requests under way */
static void
flying_remove(SacPipeline *p, SacJob *job)
{
	SacJob	   *last = p->flying.jobs[--p->flying.n];

	p->flying.jobs[job->fly_slot] = last;
	last->fly_slot = job->fly_slot;
	job->tenant->in_flight--;
}

static int64
ms_between(TimestampTz from, TimestampTz to)
{
	return (to - from) / 1000;
}

/*
 * This process's share of the limits, which hold over all workers (from
 * the settings, again after a reload); tenants' windows shrink to fit.
 */
static void
set_limits(SacPipeline *p)
{
	int			workers = Max(sac_workers, 1);
	int			old_tenant_window = p->tenant_window;

	p->window = Max((sac_max_in_flight + workers - 1) / workers, 1);
	p->tenant_window = Max((sac_max_in_flight_per_tenant + workers - 1) / workers, 1);
	p->rate = sac_max_requests_per_second / workers;
	p->tenant_rate = sac_max_requests_per_second_per_tenant / workers;
	if (p->tenant_table != NULL && p->tenant_window != old_tenant_window)
	{
		HASH_SEQ_STATUS seq;
		TenantEntry *te;

		hash_seq_init(&seq, p->tenant_table);
		while ((te = hash_seq_search(&seq)) != NULL)
			te->tenant->window = te->tenant->window >= old_tenant_window ? p->tenant_window :
				Min(te->tenant->window, (double) p->tenant_window);
	}
}

/*
 * Make the pipeline of this process (the worker's, or one process() call's)
 * in a child of parent.
 */
SacPipeline *
sac_pipeline_create(const SacEnv *env, MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "sac_webhook pipeline",
											  ALLOCSET_DEFAULT_SIZES);
	SacPipeline *p = MemoryContextAllocZero(cxt, sizeof(SacPipeline));
	HASHCTL		ctl;

	p->env = env;
	p->cxt = cxt;
	p->jobs_cxt = AllocSetContextCreate(cxt, "sac_webhook jobs", ALLOCSET_SMALL_SIZES);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(JobKey);
	ctl.entrysize = sizeof(JobEntry);
	ctl.hcxt = cxt;
	p->job_table = hash_create("sac_webhook jobs", 1024, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(TenantEntry);
	ctl.hcxt = cxt;
	p->tenant_table = hash_create("sac_webhook tenants", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	set_limits(p);
	p->tokens = Max(p->rate, 1);
	p->tokens_at = GetCurrentTimestamp();
	p->next_due_ms = -1;
	p->loop_cxt = AllocSetContextCreate(cxt, "sac_webhook pipeline loop",
										ALLOCSET_DEFAULT_SIZES);
	/* room for the stragglers, and for probes */
	p->engine = sac_http_engine_create(p->window * 2);
	return p;
}

/*
 * Drop the pipeline: transfers under way are abandoned (call
 * sac_pipeline_drain() first to give its rows back).
 */
void
sac_pipeline_destroy(SacPipeline *p)
{
	sac_http_engine_destroy(p->engine);
	MemoryContextDelete(p->cxt);
}

/*
 * The pipeline's entry for a tenant, made and kept up to date from a
 * claimed row (columns 8-10, 13, 14, 16 of every claim).
 */
static SacTenant *
tenant_from_row(SacPipeline *p, const pg_uuid_t *id, HeapTuple tup, TupleDesc td,
				TimestampTz now)
{
	bool		found;
	bool		isnull;
	Datum		d;
	TenantEntry *e = hash_search(p->tenant_table, id, HASH_ENTER, &found);
	SacTenant  *t;
	char	   *base;

	if (!found)
	{
		MemoryContext cxt = AllocSetContextCreate(p->cxt, "sac_webhook tenant",
												  ALLOCSET_SMALL_SIZES);

		t = MemoryContextAllocZero(cxt, sizeof(SacTenant));
		t->cxt = cxt;
		memcpy(&t->id, id, sizeof(pg_uuid_t));
		t->window = p->tenant_window;
		t->tokens = Max(p->tenant_rate, 1);
		t->tokens_at = now;
		e->tenant = t;
	}
	t = e->tenant;
	t->seen_at = now;

	d = SPI_getbinval(tup, td, 8, &isnull);
	base = isnull ? pstrdup(sac_api_base_url) : TextDatumGetCString(d);
	/* drop trailing slashes: resources start with one */
	for (int len = strlen(base); len > 0 && base[len - 1] == '/'; len--)
		base[len - 1] = '\0';
	if (t->base_url == NULL || strcmp(t->base_url, base) != 0)
		t->base_url = MemoryContextStrdup(t->cxt, base);

	/* requests under way keep the token they were sent with */
	d = SPI_getbinval(tup, td, 9, &isnull);
	if (isnull)
		t->access_token = NULL;
	else
	{
		char	   *token = TextDatumGetCString(d);

		if (t->access_token == NULL || strcmp(t->access_token, token) != 0)
			t->access_token = MemoryContextStrdup(t->cxt, token);
		explicit_bzero(token, strlen(token));
	}
	d = SPI_getbinval(tup, td, 10, &isnull);
	t->needs_refresh = isnull || DatumGetBool(d);
	/* claimed, so ready again: its token is fresh, or due for a new try */
	t->unavailable = t->busy = t->backing_off = false;
	t->refused_token = NULL;
	d = SPI_getbinval(tup, td, 13, &isnull);
	if (!t->single_learned)
		t->single_message = isnull ? SAC_SINGLE_UNKNOWN :
			DatumGetBool(d) ? SAC_SINGLE_SERVED : SAC_SINGLE_UNSERVED;
	d = SPI_getbinval(tup, td, 14, &isnull);
	t->ok_recently = !isnull && DatumGetBool(d);
	d = SPI_getbinval(tup, td, 16, &isnull);
	t->ok_fresh = !isnull && DatumGetBool(d);
	return t;
}

/* What one claim unit does and finds */
typedef struct Claim
{
	SacPipeline *p;
	int			limit;			/* rows (and syncs) to claim at most */
	bool		housekeeping;	/* take back lost leases, prune done rows */
	int			lease_s;
	SacJob	  **jobs;			/* claimed */
	int			njobs;
	bool		live_full;		/* the notifications' claim took its limit */
	bool		sync_full;		/* ... the claim of rows queued by syncs */
	int64		next_due_ms;	/* found less than asked: until the next row
								 * is due (-1: none waiting) */
	TimestampTz now;
} Claim;

/*
 * Copy the rows returned by a claim statement into new jobs, each in a
 * memory context of its own.
 */
static void
collect_claimed(Claim *c)
{
	SacPipeline *p = c->p;
	TupleDesc	td = SPI_tuptable->tupdesc;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		MemoryContext cxt;
		MemoryContext old;
		SacJob	   *job;
		JobKey		key;
		JobEntry   *entry;
		bool		found;
		bool		isnull;
		char	   *s;

		memset(&key, 0, sizeof(key));
		key.id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		s = TextDatumGetCString(SPI_getbinval(tup, td, 2, &isnull));
		key.is_sync = strcmp(s, "sync") == 0;
		entry = hash_search(p->job_table, &key, HASH_ENTER, &found);
		if (found)
			continue;			/* ours already (its lease ran out) */

		cxt = AllocSetContextCreate(p->jobs_cxt, "sac_webhook job", ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(cxt);
		job = palloc0(sizeof(SacJob));
		entry->job = job;
		job->cxt = cxt;
		job->id = key.id;
		job->is_sync = key.is_sync;
		job->topic = strcmp(s, "sac_ticket") == 0 || job->is_sync ? SAC_TOPIC_TICKET :
			strcmp(s, "sac_message") == 0 ? SAC_TOPIC_MESSAGE : SAC_TOPIC_TICKET_MESSAGES;
		s = TextDatumGetCString(SPI_getbinval(tup, td, 3, &isnull));
		job->status = strcmp(s, "CREATION") == 0 ? SAC_CHANGE_CREATION :
			strcmp(s, "UPDATE") == 0 ? SAC_CHANGE_UPDATE : SAC_CHANGE_DELETION;
		memcpy(&job->tenant_id, DatumGetUUIDP(SPI_getbinval(tup, td, 4, &isnull)),
			   sizeof(pg_uuid_t));
		{
			Datum		t = SPI_getbinval(tup, td, 5, &isnull);

			if (!isnull)
				memcpy(&job->ticket_id, DatumGetUUIDP(t), sizeof(pg_uuid_t));
		}
		{
			Datum		m = SPI_getbinval(tup, td, 6, &isnull);

			if (!isnull)
				memcpy(&job->message_id, DatumGetUUIDP(m), sizeof(pg_uuid_t));
		}
		{
			Datum		d = SPI_getbinval(tup, td, 15, &isnull);

			job->sync_id = isnull ? 0 : DatumGetInt64(d);
		}
		if (job->is_sync)
		{
			Datum		d;

			job->sync_full = DatumGetBool(SPI_getbinval(tup, td, 17, &isnull));
			d = SPI_getbinval(tup, td, 18, &isnull);
			job->sync_since = isnull ? NULL : TextDatumGetCString(d);
			job->list_offset = DatumGetInt32(SPI_getbinval(tup, td, 19, &isnull));
			job->list_limit = DatumGetInt32(SPI_getbinval(tup, td, 20, &isnull));
		}
		job->attempts = DatumGetInt32(SPI_getbinval(tup, td, 7, &isnull));
		job->not_found = DatumGetInt32(SPI_getbinval(tup, td, 11, &isnull));
		job->rechecks = DatumGetInt32(SPI_getbinval(tup, td, 12, &isnull));
		/* the path is rebuilt from the validated ids, never read back */
		if (job->is_sync)
			strlcpy(job->resource, "/v0/tickets", sizeof(job->resource));
		else
			sac_format_resource(job->resource, job->topic, &job->ticket_id,
								&job->message_id);
		MemoryContextSwitchTo(old);

		job->tenant = tenant_from_row(p, &job->tenant_id, tup, td, c->now);
		job->tenant->claimed++;
		p->njobs++;
		if (job->is_sync)
			p->walks++;
		else if (job->sync_id != 0)
			p->sync_rows++;
		c->jobs[c->njobs++] = job;
	}
}

/* qsort comparator: jobs in inbox order */
static int
job_cmp(const void *a, const void *b)
{
	int64		ia = (*(SacJob *const *) a)->id;
	int64		ib = (*(SacJob *const *) b)->id;

	return (ia > ib) - (ia < ib);
}

/*
 * The claims' parameters: the rows in the pipeline ($9: inbox rows, or
 * syncs with syncs true), and the room of each tenant the pipeline knows
 * that has less than a whole window ($10, $11).
 */
static void
claim_arrays(SacPipeline *p, bool syncs, Datum *ids_out, Datum *tenants_out, Datum *rooms_out)
{
	HASH_SEQ_STATUS seq;
	JobEntry   *je;
	TenantEntry *te;
	Datum	   *ids = palloc(sizeof(Datum) * Max(p->njobs, 1));
	Datum	   *tids = palloc(sizeof(Datum) * Max(hash_get_num_entries(p->tenant_table), 1));
	Datum	   *rooms = palloc(sizeof(Datum) * Max(hash_get_num_entries(p->tenant_table), 1));
	int			nids = 0;
	int			ntenants = 0;
	TimestampTz now = GetCurrentTimestamp();

	hash_seq_init(&seq, p->job_table);
	while ((je = hash_seq_search(&seq)) != NULL)
		if (je->key.is_sync == syncs)
			ids[nids++] = Int64GetDatum(je->key.id);

	hash_seq_init(&seq, p->tenant_table);
	while ((te = hash_seq_search(&seq)) != NULL)
	{
		SacTenant  *t = te->tenant;
		int			room = now < t->paused_until ? 0 :
			Max(PREFETCHED((int) t->window) - t->active, 0);

		if (room >= PREFETCHED(p->tenant_window))
			continue;
		tids[ntenants] = UUIDPGetDatum(&t->id);
		rooms[ntenants++] = Int32GetDatum(room);
	}
	*ids_out = PointerGetDatum(construct_array(ids, nids, INT8OID, 8, FLOAT8PASSBYVAL,
											   TYPALIGN_DOUBLE));
	*tenants_out = PointerGetDatum(construct_array(tids, ntenants, UUIDOID, UUID_LEN, false,
												   TYPALIGN_CHAR));
	*rooms_out = PointerGetDatum(construct_array(rooms, ntenants, INT4OID, 4, true,
												 TYPALIGN_INT));
}

/*
 * Unit: claim up to c->limit rows: notifications first, then in the room
 * they leave rows queued by syncs and walks (up to their own limits);
 * housekeeping on the way.
 */
static void
claim_unit(void *arg)
{
	Claim	   *c = (Claim *) arg;
	SacPipeline *p = c->p;
	Oid			types[12] = {INT4OID, INT4OID, INT4OID, INT4OID, BOOLOID, TEXTOID, INT4OID,
		INT4OID, INT8ARRAYOID, UUIDARRAYOID, INT4ARRAYOID, INT4OID};
	Datum		values[12];
	int			ret;
	bool		isnull;
	bool		sync_work = false;
	bool		walks = false;
	int			sync_room = Max(sac_sync_batch_size - p->sync_rows, 0);
	int			walk_room = Max(SYNCS_PER_BATCH - p->walks, 0);

	values[0] = Int32GetDatum(c->limit);
	values[1] = Int32GetDatum(c->lease_s);
	values[2] = Int32GetDatum(MyProcPid);
	values[3] = Int32GetDatum(sac_token_refresh_margin_s);
	values[4] = BoolGetDatum(c->housekeeping);
	values[5] = CStringGetTextDatum(sac_api_base_url);
	values[6] = Int32GetDatum(sac_api_alive_window_s);
	values[7] = Int32GetDatum(PREFETCHED(p->tenant_window));
	claim_arrays(p, false, &values[8], &values[9], &values[10]);
	values[11] = Int32GetDatum(PREFETCHED(p->tenant_window));

	/* the claim's best plan depends on the LIMIT and the queue: plan each call */
	sac_spi_prepare_custom(&claim_plan, claim_sql, 12, types);
	ret = SPI_execute_plan(claim_plan, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "inbox claim failed: %s", SPI_result_code_string(ret));
	c->live_full = c->limit > 0 && SPI_processed >= (uint64) c->limit;
	collect_claimed(c);

	/* in the room notifications leave: work queued by syncs, then walks */
	if (c->njobs < c->limit && sac_sync_batch_size > 0 && (sync_room > 0 || walk_room > 0))
	{
		sac_spi_prepare(&sync_pending_plan, sync_pending_sql, 0, NULL);
		/* not read-only: in process(), what earlier units queued must show */
		if (SPI_execute_plan(sync_pending_plan, NULL, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "sync look-up failed");
		sync_work = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		walks = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	if (sync_work && sync_room > 0 && c->njobs < c->limit)
	{
		int			want = Min(c->limit - c->njobs, sync_room);

		values[0] = Int32GetDatum(want);
		values[11] = Int32GetDatum(Max(sac_sync_batch_size / 4, 1));
		sac_spi_prepare_custom(&claim_sync_work_plan, claim_sync_work_sql, 12, types);
		ret = SPI_execute_plan(claim_sync_work_plan, values, NULL, false, 0);
		if (ret != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "inbox claim failed: %s", SPI_result_code_string(ret));
		c->sync_full = SPI_processed >= (uint64) want;
		collect_claimed(c);
	}
	if (walks && walk_room > 0 && c->njobs < c->limit)
	{
		values[0] = Int32GetDatum(Min(c->limit - c->njobs, walk_room));
		claim_arrays(p, true, &values[8], &values[9], &values[10]);
		sac_spi_prepare_custom(&claim_syncs_plan, claim_syncs_sql, 12, types);
		ret = SPI_execute_plan(claim_syncs_plan, values, NULL, false, 0);
		if (ret != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "sync claim failed: %s", SPI_result_code_string(ret));
		collect_claimed(c);
	}

	if (c->housekeeping)
	{
		Oid			ptypes[1] = {INT4OID};
		Datum		pvalues[1] = {Int32GetDatum(sac_done_retention_s)};

		sac_spi_prepare(&prune_plan, prune_sql, 1, ptypes);
		ret = SPI_execute_plan(prune_plan, pvalues, NULL, false, 0);
		if (ret != SPI_OK_DELETE)
			elog(ERROR, "inbox pruning failed: %s", SPI_result_code_string(ret));

		if (sac_resync_interval_s > 0)
		{
			pvalues[0] = Int32GetDatum(sac_resync_interval_s);
			sac_spi_prepare(&syncs_periodic_plan, syncs_periodic_sql, 1, ptypes);
			ret = SPI_execute_plan(syncs_periodic_plan, pvalues, NULL, false, 0);
			if (ret != SPI_OK_INSERT)
				elog(ERROR, "sync housekeeping failed: %s", SPI_result_code_string(ret));
		}
	}

	/* syncs whose queued work is over are done (when idle, or now and then) */
	if (c->housekeeping || (c->njobs == 0 && p->njobs == 0))
	{
		sac_spi_prepare(&syncs_finish_plan, syncs_finish_sql, 0, NULL);
		ret = SPI_execute_plan(syncs_finish_plan, NULL, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "sync housekeeping failed: %s", SPI_result_code_string(ret));
	}

	/* nothing claimed and nothing in the pipeline: how long may it sleep? */
	c->next_due_ms = -1;
	if (c->njobs == 0 && p->njobs == 0)
	{
		sac_spi_prepare(&next_due_plan, next_due_sql, 0, NULL);
		ret = SPI_execute_plan(next_due_plan, NULL, NULL, true, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "inbox look-up failed: %s", SPI_result_code_string(ret));
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				c->next_due_ms = Max(DatumGetInt64(d), 0);
		}
	}
}

/*
 * Put a decided job in the queue of what is applied next.
 */
static void
job_ready(SacPipeline *p, SacJob *job)
{
	if (job->state == JOB_WAITING || job->state == JOB_IN_FLIGHT || job->state == JOB_PARKED)
		job->tenant->active--;
	job->state = JOB_READY;
	job->ready_at = GetCurrentTimestamp();
	array_push(p, &p->ready, job);
}

/*
 * Queue a job's next request.
 */
static void
job_wait(SacPipeline *p, SacJob *job)
{
	if (job->state == JOB_READY)
		job->tenant->active++;
	job->state = JOB_WAITING;
	array_push(p, &p->waiting, job);
}

/*
 * Give a job back to the queue because its tenant has no usable token:
 * nothing was tried, so the attempt is given back.  A tenant whose refresh
 * failed holds its rows back itself (token_retry_at); otherwise the row
 * waits a little, or as long as the tenant's credentials keep failing.
 */
static void
defer_unavailable(SacJob *job)
{
	SacTenant  *t = job->tenant;

	if (t->busy)
		sac_job_defer(job, t->error, 1000, false);
	else if (t->backing_off)
		sac_job_defer(job, t->error, 0, false);
	else
		sac_job_defer(job, t->error, sac_backoff_ms(Max(t->failures, 1)), false);
}

/*
 * Refresh a tenant's access token (stale: the one the API refused, or
 * NULL), outside any transaction in the worker.
 */
static void
refresh_tenant(SacPipeline *p, SacTenant *t, const char *stale)
{
	MemoryContext old = MemoryContextSwitchTo(t->cxt);

	t->unavailable = t->busy = t->backing_off = false;
	t->error = NULL;
	t->failures = 0;
	sac_oauth_refresh(p->env, t, stale);
	t->refused_token = stale;
	t->needs_refresh = t->unavailable;
	MemoryContextSwitchTo(old);
}

/*
 * Claim up to limit rows, refresh the tokens their tenants need, and queue
 * their first requests.  Returns the number claimed, or -1 when the claim
 * failed.
 */
static int
claim(SacPipeline *p, int limit, bool housekeeping)
{
	Claim		c;
	SacUnitError error;
	MemoryContext old;
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "sac_webhook claim",
											  ALLOCSET_DEFAULT_SIZES);

	memset(&c, 0, sizeof(c));
	c.p = p;
	c.limit = limit;
	c.housekeeping = housekeeping;
	c.now = GetCurrentTimestamp();
	/* a lease long enough for a job's requests, slow answers included */
	c.lease_s = sac_lease_s + 8 * (sac_request_timeout_ms / 1000 + 1) + MAX_PAUSE_MS / 1000;
	old = MemoryContextSwitchTo(tmp);
	c.jobs = palloc(sizeof(SacJob *) * limit);

	p->last_claim_at = c.now;
	p->woken = false;
	p->applied = false;
	if (!sac_run_unit(p->env, claim_unit, &c, &error))
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(tmp);
		sac_report_unit_error(p->env->own_transactions ? WARNING : ERROR, &error,
							  "while claiming inbox rows");
		return -1;
	}
	p->claim_more = c.live_full || c.sync_full;
	p->next_due_ms = c.next_due_ms;
	if (!p->claim_more && limit > 0)
	{
		/*
		 * With jobs in the pipeline, the next claim comes when results are
		 * applied (see claim_time); else when the next row is due.
		 */
		int64		wait = p->njobs > 0 || c.next_due_ms < 0 ? sac_poll_interval_ms :
			Min(Max(c.next_due_ms, CLAIM_RETRY_MS), sac_poll_interval_ms);

		p->next_claim_at = TimestampTzPlusMilliseconds(c.now, wait);
	}

	/* work (and announce changes) in the order notifications arrived */
	if (c.njobs > 1)
		qsort(c.jobs, c.njobs, sizeof(SacJob *), job_cmp);

	/* tokens that are missing or about to expire */
	for (int i = 0; i < c.njobs; i++)
	{
		SacTenant  *t = c.jobs[i]->tenant;

		if (t->needs_refresh && !t->unavailable && !sac_env_stopping(p->env))
			refresh_tenant(p, t, NULL);
	}

	for (int i = 0; i < c.njobs; i++)
	{
		SacJob	   *job = c.jobs[i];

		job->state = JOB_WAITING;
		job->tenant->active++;
		job->fetch = !(job->status == SAC_CHANGE_DELETION && !sac_confirm_deletions);
		if (!job->fetch)
		{
			job->decided = true;
			job->action = SAC_ACT_DELETE;
			job_ready(p, job);
		}
		else if (job->tenant->unavailable)
		{
			defer_unavailable(job);
			job_ready(p, job);
		}
		else
		{
			MemoryContextSwitchTo(job->cxt);
			sac_job_start(job);
			MemoryContextSwitchTo(tmp);
			array_push(p, &p->waiting, job);
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(tmp);
	return c.njobs;
}

/*
 * Refill a request-rate budget of rate a second (at most a second's worth).
 */
static void
refill(double *tokens, TimestampTz *at, double rate, TimestampTz now)
{
	*tokens = Min(*tokens + rate * (double) (now - *at) / 1000000.0, Max(rate, 1));
	*at = now;
}

/* When a budget of rate a second has a whole token again */
static TimestampTz
refilled_at(double tokens, double rate, TimestampTz now)
{
	return now + (TimestampTz) ((1.0 - tokens) / rate * 1000000.0) + 1000;
}

/*
 * Start the requests of waiting jobs, oldest first, as far as the limits
 * allow: the process's window, each tenant's window (and any pause its
 * Retry-After asked for), and the request rates.  next_start_at says when a
 * job held back by a pause or a rate may start.
 */
static void
start_waiting(SacPipeline *p, TimestampTz now)
{
	int			kept = 0;
	int			i;
	int			stragglers = 0;
	TimestampTz next_straggler = 0;
	TimestampTz slow = TimestampTzPlusMilliseconds(now, -STRAGGLER_MS);

	p->next_start_at = 0;
	if (p->waiting.n == 0)
		return;
	if (p->rate > 0)
		refill(&p->tokens, &p->tokens_at, p->rate, now);

	/* stragglers, over all and by tenant */
	for (i = 0; i < p->flying.n; i++)
		p->flying.jobs[i]->tenant->stragglers = 0;
	for (i = 0; i < p->flying.n; i++)
	{
		SacJob	   *job = p->flying.jobs[i];

		if (job->sent_at < slow)
		{
			stragglers++;
			job->tenant->stragglers++;
		}
		else if (next_straggler == 0 || job->sent_at < next_straggler)
			next_straggler = job->sent_at;
	}
	stragglers = Min(stragglers, p->window / 2);

	for (i = 0; i < p->waiting.n; i++)
	{
		SacJob	   *job = p->waiting.jobs[i];
		SacTenant  *t = job->tenant;

		if (job->state != JOB_WAITING)
			continue;			/* decided meanwhile */
		if (sac_http_running(p->engine) - stragglers >= p->window)
		{
			/* full: until an answer comes, or a request turns straggler */
			if (next_straggler != 0)
				p->next_start_at = TimestampTzPlusMilliseconds(next_straggler, STRAGGLER_MS);
			break;
		}
		if (now < t->paused_until)
		{
			if (p->next_start_at == 0 || t->paused_until < p->next_start_at)
				p->next_start_at = t->paused_until;
			p->waiting.jobs[kept++] = job;
			continue;
		}
		if (t->in_flight - Min(t->stragglers, (int) t->window / 2) >= Max((int) t->window, 1))
		{
			p->waiting.jobs[kept++] = job;
			continue;
		}
		if (p->tenant_rate > 0)
		{
			refill(&t->tokens, &t->tokens_at, p->tenant_rate, now);
			if (t->tokens < 1)
			{
				TimestampTz at = refilled_at(t->tokens, p->tenant_rate, now);

				if (p->next_start_at == 0 || at < p->next_start_at)
					p->next_start_at = at;
				p->waiting.jobs[kept++] = job;
				continue;
			}
		}
		if (p->rate > 0 && p->tokens < 1)
		{
			TimestampTz at = refilled_at(p->tokens, p->rate, now);

			if (p->next_start_at == 0 || at < p->next_start_at)
				p->next_start_at = at;
			break;
		}
		if (p->rate > 0)
			p->tokens -= 1;
		if (p->tenant_rate > 0)
			t->tokens -= 1;

		job->req.cxt = job->cxt;
		job->req.owner = job;
		job->sent_at = now;
		if (job->started_at == 0)
			job->started_at = now;
		sac_http_start(p->engine, &job->req);
		job->state = JOB_IN_FLIGHT;
		job->fly_slot = p->flying.n;
		array_push(p, &p->flying, job);
		t->in_flight++;
	}
	/* what was not looked at stays, in order */
	for (; i < p->waiting.n; i++)
		if (p->waiting.jobs[i]->state == JOB_WAITING)
			p->waiting.jobs[kept++] = p->waiting.jobs[i];
	p->waiting.n = kept;
}

/*
 * Count a finished request in the shared counters.
 */
static void
count_fetch(const SacHttpRequest *req)
{
	if (sac_shared == NULL || req->interrupted)
		return;
	pg_atomic_fetch_add_u64(&sac_shared->fetches, 1);
	if (req->status == 0 || req->status == 429 || req->status >= 500)
		pg_atomic_fetch_add_u64(&sac_shared->fetch_failures, 1);
}

/*
 * What an answer tells of the tenant's limits at the API: HTTP 429 (or a
 * Retry-After with a 5xx) halves its window, at most once for the requests
 * sent before the last halving, and holds its other requests back for the
 * Retry-After; any other answer grows the window back by about one request
 * per window's worth of answers (additive increase, multiplicative
 * decrease).
 */
static void
adapt_window(SacPipeline *p, SacTenant *t, const SacHttpRequest *req, TimestampTz sent_at,
			 TimestampTz now)
{
	if (req->status == 429 || (req->status >= 500 && req->retry_after_s >= 0))
	{
		if (sent_at >= t->shrunk_at)
		{
			t->window = Max(t->window / 2, 1.0);
			t->shrunk_at = now;
		}
		if (req->retry_after_s > 0)
		{
			TimestampTz until = TimestampTzPlusMilliseconds(now, Min((int64) req->retry_after_s * 1000,
																	 MAX_PAUSE_MS));

			t->paused_until = Max(t->paused_until, until);
		}
	}
	else if (req->status != 0 && t->window < p->tenant_window)
		t->window = Min(t->window + 1.0 / t->window, (double) p->tenant_window);
}

/*
 * A job resolved as gone: confirmed when its tenant's API answered 200
 * since the job's first request (or within the alive window); else it
 * waits for a probe of the tenant's API, one at a time per tenant.
 */
static void
confirm_gone(SacPipeline *p, SacJob *job)
{
	SacTenant  *t = job->tenant;

	if (t->ok_at >= job->started_at || (t->ok_recently && sac_api_alive_window_s > 0))
	{
		sac_job_confirm_gone(job, true, NULL);
		job_ready(p, job);
		return;
	}
	job->state = JOB_PARKED;
	if (!t->probing)
	{
		MemoryContext old;

		/* the last probe's URL and answer go */
		if (t->probe_cxt == NULL)
			t->probe_cxt = AllocSetContextCreate(t->cxt, "sac_webhook probe",
												 ALLOCSET_SMALL_SIZES);
		MemoryContextReset(t->probe_cxt);
		old = MemoryContextSwitchTo(t->probe_cxt);
		sac_tenant_prepare_probe(t, &t->probe);
		MemoryContextSwitchTo(old);
		t->probe.cxt = t->probe_cxt;
		t->probe.owner = NULL;
		t->probing = true;
		sac_http_start(p->engine, &t->probe);
	}
}

/*
 * A tenant's probe answered: decide the jobs that waited for it.
 */
static void
probe_done(SacPipeline *p, SacTenant *t, TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	JobEntry   *je;

	t->probing = false;
	if (t->probe.curl_code == 0 && t->probe.status == 200)
	{
		t->ok_at = now;
		t->ok_now = true;
	}
	hash_seq_init(&seq, p->job_table);
	while ((je = hash_seq_search(&seq)) != NULL)
	{
		SacJob	   *job = je->job;

		if (job->state == JOB_PARKED && job->tenant == t)
		{
			sac_job_confirm_gone(job, false, &t->probe);
			job_ready(p, job);
		}
	}
}

/*
 * A job's request finished: interpret the answer (resolve.c) and queue the
 * job's next request, or its result.  A 401 refreshes the tenant's token
 * (unless another request did so meanwhile) and asks again, once, with a
 * token other than the refused one.
 */
static void
request_done(SacPipeline *p, SacJob *job, TimestampTz now)
{
	SacTenant  *t = job->tenant;
	SacHttpRequest *req = &job->req;
	MemoryContext old;
	bool		more;

	flying_remove(p, job);
	adapt_window(p, t, req, job->sent_at, now);
	if (req->status == 200)
		t->ok_at = now;

	if (req->status == 401 && !job->token_retried && !sac_env_stopping(p->env))
	{
		job->token_retried = true;
		if ((t->access_token == NULL || strcmp(t->access_token, req->bearer) == 0) &&
			!(t->unavailable && t->refused_token == req->bearer))
			refresh_tenant(p, t, req->bearer);
		if (t->unavailable)
		{
			job->http_status = (int) req->status;
			defer_unavailable(job);
			job_ready(p, job);
			return;
		}
		if (t->access_token != NULL && strcmp(t->access_token, req->bearer) != 0)
		{
			req->bearer = t->access_token;
			job_wait(p, job);
			return;
		}
	}

	old = MemoryContextSwitchTo(job->cxt);
	more = sac_job_advance(p->env, job);
	MemoryContextSwitchTo(old);
	if (more)
		job_wait(p, job);
	else if (job->gone && !job->decided)
		confirm_gone(p, job);
	else
		job_ready(p, job);
}

/*
 * Apply the ready jobs as one group (apply.c), then let them go.
 */
static void
apply_ready(SacPipeline *p, SacRunResult *result)
{
	SacJob	  **jobs = p->ready.jobs;
	int			n = Min(p->ready.n, GROUP_MAX);
	SacTenant **tenants = palloc(sizeof(SacTenant *) * n);
	int			ntenants = 0;

	p->group_serial++;
	for (int i = 0; i < n; i++)
	{
		SacTenant  *t = jobs[i]->tenant;

		if (t->mark != p->group_serial)
		{
			t->mark = p->group_serial;
			tenants[ntenants++] = t;
		}
	}
	if (n > 1)
		qsort(jobs, n, sizeof(SacJob *), job_cmp);

	result->finished += sac_apply_jobs(p->env, jobs, n);
	sac_apply_sync_progress(p->env, jobs, n);
	sac_apply_tenant_facts(p->env, tenants, ntenants);

	for (int i = 0; i < n; i++)
	{
		SacJob	   *job = jobs[i];
		JobKey		key;

		memset(&key, 0, sizeof(key));
		key.id = job->id;
		key.is_sync = job->is_sync;
		hash_search(p->job_table, &key, HASH_REMOVE, NULL);
		job->tenant->claimed--;
		p->njobs--;
		if (job->is_sync)
			p->walks--;
		else if (job->sync_id != 0)
			p->sync_rows--;
		MemoryContextDelete(job->cxt);
	}
	memmove(jobs, jobs + n, sizeof(SacJob *) * (p->ready.n - n));
	p->ready.n -= n;
	pfree(tenants);
}

/*
 * Forget tenants that have had nothing in the pipeline for a while.
 */
static void
forget_idle_tenants(SacPipeline *p, TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	TenantEntry *te;

	hash_seq_init(&seq, p->tenant_table);
	while ((te = hash_seq_search(&seq)) != NULL)
	{
		SacTenant  *t = te->tenant;

		if (t->claimed == 0 && !t->probing &&
			ms_between(t->seen_at, now) > TENANT_IDLE_MS && now >= t->paused_until)
		{
			MemoryContext cxt = t->cxt;

			hash_search(p->tenant_table, &t->id, HASH_REMOVE, NULL);
			MemoryContextDelete(cxt);
		}
	}
}

/*
 * When to claim next: at once (merged with claims close together, so that
 * a burst of notifications is claimed in a few statements) when new
 * notifications came in (the latch); when the last claim took all it asked
 * for (more may be due) or results were applied since (tenants have room
 * again), as soon as a quarter of a window is free, or a little later for
 * less (each claim steps over the rows the workers hold); else at the time
 * the last claim set.  DT_NOEND when there is no room.
 */
static TimestampTz
claim_time(SacPipeline *p, int room)
{
	if (room <= 0)
		return DT_NOEND;
	if (p->woken)
		return TimestampTzPlusMilliseconds(p->last_claim_at, CLAIM_INTERVAL_MS);
	if (p->claim_more || p->applied)
		return TimestampTzPlusMilliseconds(p->last_claim_at,
										   room >= p->window / 4 ? CLAIM_INTERVAL_MS : CLAIM_STEP_MS);
	return p->next_claim_at;
}

/*
 * Give every job still in the pipeline back to the queue, untried (the
 * process is stopping), and apply that.
 */
void
sac_pipeline_drain(SacPipeline *p)
{
	HASH_SEQ_STATUS seq;
	JobEntry   *je;
	SacRunResult ignored;

	sac_http_abandon(p->engine);
	hash_seq_init(&seq, p->job_table);
	while ((je = hash_seq_search(&seq)) != NULL)
	{
		SacJob	   *job = je->job;

		job->tenant->probing = false;
		if (job->state == JOB_READY)
			continue;
		if (job->state == JOB_IN_FLIGHT)
			flying_remove(p, job);
		sac_job_defer(job, NULL, 0, false);
		job_ready(p, job);
	}
	memset(&ignored, 0, sizeof(ignored));
	while (p->ready.n > 0)
		apply_ready(p, &ignored);
	p->waiting.n = 0;
}

/*
 * Run the pipeline: claim rows as there is room (at most max_claims in
 * all), keep their requests under way, and apply results in small groups
 * as they come, until nothing claimed is left and nothing more is due, or
 * budget_ms have passed (the pipeline then keeps what it has for the next
 * call), or the process is asked to stop (then see sac_pipeline_drain).
 * With housekeeping, the first claim also takes back rows whose owner is
 * gone, prunes finished rows, and queues periodic syncs.
 */
void
sac_pipeline_run(SacPipeline *p, int max_claims, long budget_ms, bool housekeeping,
				 SacRunResult *result)
{
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz deadline = budget_ms < 0 ? DT_NOEND :
		TimestampTzPlusMilliseconds(start, budget_ms);
	int			left = max_claims;
	MemoryContext old = MemoryContextSwitchTo(p->loop_cxt);

	memset(result, 0, sizeof(*result));
	result->next_due_ms = -1;
	set_limits(p);
	if (housekeeping)
		forget_idle_tenants(p, start);
	p->woken = true;

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		int			room = PREFETCHED(p->window) - (p->njobs - p->ready.n);
		SacHttpWake wake;
		SacHttpRequest *req;
		long		timeout;
		TimestampTz until;

		MemoryContextReset(p->loop_cxt);
		if (sac_env_stopping(p->env))
			break;

		if (left > 0 && (housekeeping || now >= claim_time(p, room)))
		{
			int			n = claim(p, Max(Min(room, left), 0), housekeeping);

			housekeeping = false;
			if (n < 0)
			{
				result->claimed = -1;
				break;
			}
			result->claimed += n;
			left -= n;
			now = GetCurrentTimestamp();
		}
		start_waiting(p, now);

		/*
		 * Apply what is ready: a full group, one that waited long enough, or
		 * all of it when nothing else is in the pipeline.
		 */
		if (p->ready.n > 0 &&
			(p->ready.n >= GROUP_MAX ||
			 ms_between(p->ready.jobs[0]->ready_at, now) >= GROUP_DELAY_MS ||
			 p->ready.n == p->njobs))
		{
			apply_ready(p, result);
			p->applied = true;
			continue;
		}

		if (p->njobs == 0 && (left <= 0 || (!p->claim_more && !p->woken && !p->applied)))
		{
			result->idle = true;
			result->next_due_ms = p->next_due_ms;
			break;
		}
		if (now >= deadline)
			break;

		/* sleep until something happens or something is due */
		until = deadline;
		if (p->ready.n > 0)
			until = Min(until, TimestampTzPlusMilliseconds(p->ready.jobs[0]->ready_at, GROUP_DELAY_MS));
		if (left > 0)
			until = Min(until, claim_time(p, room));
		if (p->next_start_at != 0)
			until = Min(until, p->next_start_at);
		timeout = (long) Max(ms_between(now, until), 0);
		if (until > now && timeout == 0)
			timeout = 1;
		sac_http_wait(p->engine, Min(timeout, (long) sac_poll_interval_ms), &wake);
		p->woken |= wake.latch;
		CHECK_FOR_INTERRUPTS();

		now = GetCurrentTimestamp();
		while ((req = sac_http_next_done(p->engine)) != NULL)
		{
			count_fetch(req);
			if (req->owner == NULL)
			{
				/* a tenant's probe */
				probe_done(p, (SacTenant *) ((char *) req - offsetof(SacTenant, probe)), now);
				continue;
			}
			request_done(p, (SacJob *) req->owner, now);
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(p->loop_cxt);
}

/*
 * The version of the extension installed in this database, or NULL when it
 * is not installed.  Needs an SPI connection; the result lives in its
 * memory.
 */
char *
sac_installed_version(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute("SELECT e.extversion FROM pg_catalog.pg_extension e"
					" WHERE e.extname OPERATOR(pg_catalog.=) 'sac_webhook'",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "catalog look-up failed");
	if (SPI_processed != 1)
		return NULL;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

/* Refuse to run against an installed version other than ours */
static void
check_version(void)
{
	char	   *version;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	version = sac_installed_version();
	if (version == NULL || strcmp(version, SAC_EXTENSION_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"sac_webhook\" version %s is installed, but its library is version %s",
						version ? version : "(none)", SAC_EXTENSION_VERSION),
				 errhint("Run ALTER EXTENSION sac_webhook UPDATE.")));
	SPI_finish();
}

/*
 * sac_webhook.process(max_events integer) RETURNS integer
 *
 * Runs the pipeline in this session until max_events rows were claimed or
 * none is due, and everything claimed is applied; returns how many rows it
 * finished (done or dead).  The work belongs to the caller's transaction,
 * tokens rotated on the way included: call it on its own, not in a
 * transaction that may roll back.  Whatever the caller's search_path, the
 * pipeline's statements resolve names in pg_catalog only (they name the
 * extension's own objects with their schema), since the caller may be a
 * superuser.
 */
Datum
sac_webhook_process(PG_FUNCTION_ARGS)
{
	int32		max_events = PG_GETARG_INT32(0);
	int			save_nestlevel;
	SacEnv		env = {false, NULL};
	SacPipeline *volatile p = NULL;
	SacRunResult r;

	if (max_events < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must not be negative")));

	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", SAC_SAFE_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	check_version();

	memset(&r, 0, sizeof(r));
	PG_TRY();
	{
		p = sac_pipeline_create(&env, CurrentMemoryContext);
		if (max_events > 0)
			sac_pipeline_run(p, max_events, -1, true, &r);
	}
	PG_FINALLY();
	{
		/* transfers under way point into memory about to go */
		if (p != NULL)
			sac_pipeline_destroy(p);
	}
	PG_END_TRY();
	AtEOXact_GUC(true, save_nestlevel);
	PG_RETURN_INT32(r.finished);
}
