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
#include "utils/snapmgr.h"

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

/* a row nobody (alive, with its lease running) holds */
#define CLAIM_FREE(w) \
"(" w ".lease_owner IS NULL OR " w ".lease_owner = $3 OR " w ".lease_until < pg_catalog.now()" \
" OR ($5 AND " w ".lease_owner NOT IN (SELECT a.pid FROM pg_catalog.pg_stat_activity a" \
"                                       WHERE a.pid IS NOT NULL)))"

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

/* notifications, oldest due first */
static const char *const claim_sql =
CLAIM_UPDATE
"        SELECT w.id FROM sac_webhook.inbox w"
"         WHERE w.state IN ('pending', 'retrying') AND w.priority = 0"
"           AND w.next_attempt_at <= pg_catalog.now() AND " CLAIM_FREE("w")
"           AND EXISTS (SELECT 1 FROM sac_webhook.tenants e"
"                        WHERE e.tenant_id = w.tenant_id AND " TENANT_READY("e") ")"
"         ORDER BY w.next_attempt_at LIMIT $1 FOR UPDATE OF w SKIP LOCKED))"
"   AND t.tenant_id = i.tenant_id"
CLAIM_RETURNING;

/*
 * Work queued by syncs, in what room the notifications leave: at most $8
 * rows of each tenant, the oldest due first, so that tenants share it.
 */
static const char *const claim_sync_work_sql =
CLAIM_UPDATE
"        SELECT x.id FROM sac_webhook.tenants e,"
"               LATERAL (SELECT w.id, w.next_attempt_at FROM sac_webhook.inbox w"
"                         WHERE w.tenant_id = e.tenant_id AND w.priority = 1"
"                           AND w.state IN ('pending', 'retrying')"
"                           AND w.next_attempt_at <= pg_catalog.now() AND " CLAIM_FREE("w")
"                         ORDER BY w.next_attempt_at LIMIT $8 FOR UPDATE OF w SKIP LOCKED) x"
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

/* State of one batch */
typedef struct Batch
{
	int			limit;			/* rows to claim at most */
	int			lease_s;
	SacJob	   *jobs;
	int			njobs;
	SacTenant  *tenants;
	int			ntenants;
	int64		next_due_ms;	/* when nothing was claimed: wait hint */
	MemoryContext cxt;			/* where claimed rows are copied to */
	bool		housekeeping;	/* take back lost leases, prune done rows */
} Batch;

/*
 * Find or add the batch's entry for a tenant.
 */
static SacTenant *
batch_tenant(Batch *b, const pg_uuid_t *id, HeapTuple tup, TupleDesc td)
{
	bool		isnull;
	Datum		d;
	char	   *base;

	for (int i = 0; i < b->ntenants; i++)
		if (memcmp(&b->tenants[i].id, id, sizeof(pg_uuid_t)) == 0)
			return &b->tenants[i];

	{
		SacTenant  *t = &b->tenants[b->ntenants++];

		memset(t, 0, sizeof(*t));
		memcpy(&t->id, id, sizeof(pg_uuid_t));
		d = SPI_getbinval(tup, td, 8, &isnull);
		base = isnull ? pstrdup(sac_api_base_url) : TextDatumGetCString(d);
		/* drop trailing slashes: resources start with one */
		for (int len = strlen(base); len > 0 && base[len - 1] == '/'; len--)
			base[len - 1] = '\0';
		t->base_url = base;
		d = SPI_getbinval(tup, td, 9, &isnull);
		t->access_token = isnull ? NULL : TextDatumGetCString(d);
		d = SPI_getbinval(tup, td, 10, &isnull);
		t->needs_refresh = isnull || DatumGetBool(d);
		d = SPI_getbinval(tup, td, 13, &isnull);
		t->single_message = isnull ? SAC_SINGLE_UNKNOWN :
			DatumGetBool(d) ? SAC_SINGLE_SERVED : SAC_SINGLE_UNSERVED;
		d = SPI_getbinval(tup, td, 14, &isnull);
		t->ok_recently = !isnull && DatumGetBool(d);
		d = SPI_getbinval(tup, td, 16, &isnull);
		t->ok_fresh = !isnull && DatumGetBool(d);
		return t;
	}
}

/*
 * Copy the rows returned by a claim statement into jobs.
 */
static void
collect_claimed(Batch *b)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	TupleDesc	td = SPI_tuptable->tupdesc;

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		SacJob	   *job = &b->jobs[b->njobs++];
		bool		isnull;
		char	   *s;

		memset(job, 0, sizeof(*job));
		job->id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		s = TextDatumGetCString(SPI_getbinval(tup, td, 2, &isnull));
		job->is_sync = strcmp(s, "sync") == 0;
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
		job->tenant = batch_tenant(b, &job->tenant_id, tup, td);
		job->cxt = b->cxt;
	}
	MemoryContextSwitchTo(old);
}

/* qsort comparator: jobs in inbox order */
static int
job_cmp(const void *a, const void *b)
{
	int64		ia = ((const SacJob *) a)->id;
	int64		ib = ((const SacJob *) b)->id;

	return (ia > ib) - (ia < ib);
}

/*
 * Unit: claim up to b->limit rows (see sac_run_batch).
 */
static void
claim_unit(void *arg)
{
	Batch	   *b = (Batch *) arg;
	Oid			types[8] = {INT4OID, INT4OID, INT4OID, INT4OID, BOOLOID, TEXTOID, INT4OID,
	INT4OID};
	Datum		values[8];
	int			ret;
	bool		isnull;
	bool		sync_work = false;
	bool		walks = false;

	/* the claim's best plan depends on the LIMIT and the queue: plan each call */
	sac_spi_prepare_custom(&claim_plan, claim_sql, 7, types);

	values[0] = Int32GetDatum(b->limit);
	values[1] = Int32GetDatum(b->lease_s);
	values[2] = Int32GetDatum(MyProcPid);
	values[3] = Int32GetDatum(sac_token_refresh_margin_s);
	values[4] = BoolGetDatum(b->housekeeping);
	values[5] = CStringGetTextDatum(sac_api_base_url);
	values[6] = Int32GetDatum(sac_api_alive_window_s);

	ret = SPI_execute_plan(claim_plan, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "inbox claim failed: %s", SPI_result_code_string(ret));
	collect_claimed(b);

	/* in the room notifications leave: work queued by syncs, then walks */
	if (b->njobs < b->limit && sac_sync_batch_size > 0)
	{
		sac_spi_prepare(&sync_pending_plan, sync_pending_sql, 0, NULL);
		/* not read-only: in process(), what earlier units queued must show */
		if (SPI_execute_plan(sync_pending_plan, NULL, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "sync look-up failed");
		sync_work = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		walks = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	if (sync_work && b->njobs < b->limit)
	{
		values[0] = Int32GetDatum(Min(b->limit - b->njobs, sac_sync_batch_size));
		values[7] = Int32GetDatum(Max(sac_sync_batch_size / 4, 1));
		sac_spi_prepare_custom(&claim_sync_work_plan, claim_sync_work_sql, 8, types);
		ret = SPI_execute_plan(claim_sync_work_plan, values, NULL, false, 0);
		if (ret != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "inbox claim failed: %s", SPI_result_code_string(ret));
		collect_claimed(b);
	}
	if (walks && b->njobs < b->limit)
	{
		values[0] = Int32GetDatum(Min(b->limit - b->njobs, SYNCS_PER_BATCH));
		sac_spi_prepare_custom(&claim_syncs_plan, claim_syncs_sql, 7, types);
		ret = SPI_execute_plan(claim_syncs_plan, values, NULL, false, 0);
		if (ret != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "sync claim failed: %s", SPI_result_code_string(ret));
		collect_claimed(b);
	}

	/* work (and announce changes) in the order notifications arrived */
	if (b->njobs > 1)
		qsort(b->jobs, b->njobs, sizeof(SacJob), job_cmp);

	if (b->housekeeping)
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
	if (b->housekeeping || b->njobs == 0)
	{
		sac_spi_prepare(&syncs_finish_plan, syncs_finish_sql, 0, NULL);
		ret = SPI_execute_plan(syncs_finish_plan, NULL, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "sync housekeeping failed: %s", SPI_result_code_string(ret));
	}

	if (b->njobs == 0)
	{
		sac_spi_prepare(&next_due_plan, next_due_sql, 0, NULL);
		ret = SPI_execute_plan(next_due_plan, NULL, NULL, true, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "inbox look-up failed: %s", SPI_result_code_string(ret));
		b->next_due_ms = -1;
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				b->next_due_ms = Max(DatumGetInt64(d), 0);
		}
	}
}

/*
 * Perform the given requests concurrently, and count them.
 */
static void
perform(SacHttpRequest **reqs, int n)
{
	sac_http_perform(reqs, n, !sac_in_worker, sac_in_worker ? &sac_stop_requested : NULL);
	if (sac_shared)
	{
		for (int i = 0; i < n; i++)
		{
			if (reqs[i]->interrupted)
				continue;
			pg_atomic_fetch_add_u64(&sac_shared->fetches, 1);
			if (reqs[i]->status == 0 || reqs[i]->status == 429 || reqs[i]->status >= 500)
				pg_atomic_fetch_add_u64(&sac_shared->fetch_failures, 1);
		}
	}
}

/*
 * Perform the current requests of the given jobs.  A 401 refreshes the
 * tenant's token (once per batch), then the request is made again, with a
 * token other than the refused one.
 */
static void
fetch_jobs(SacJob **jobs, int n)
{
	SacHttpRequest **reqs = palloc(sizeof(SacHttpRequest *) * Max(n, 1));
	int			nagain = 0;

	for (int i = 0; i < n; i++)
		reqs[i] = &jobs[i]->req;
	perform(reqs, n);

	for (int i = 0; i < n; i++)
	{
		SacJob	   *job = jobs[i];
		SacTenant  *t = job->tenant;

		if (job->req.status != 401 || t->unavailable)
			continue;
		if (!t->refreshed)
			sac_oauth_refresh(t, job->req.bearer);
		if (!t->unavailable && t->access_token != NULL &&
			t->access_token != job->req.bearer)
		{
			job->req.bearer = t->access_token;
			reqs[nagain++] = &job->req;
		}
	}
	perform(reqs, nagain);
	pfree(reqs);
}

/*
 * Resolve the jobs that need the API: rounds of concurrent requests, each
 * job asking for what its last answer calls for (resolve.c), until every
 * one is decided or resolved as gone.  Then, for tenants with resources
 * gone but no sign in this batch or lately that their API answers, one
 * probe each, and the deletions are confirmed or refused.
 */
static void
resolve_jobs(Batch *b)
{
	SacJob	  **todo = palloc(sizeof(SacJob *) * b->njobs);
	SacJob	  **next = palloc(sizeof(SacJob *) * b->njobs);
	SacHttpRequest **probes = palloc(sizeof(SacHttpRequest *) * Max(b->ntenants, 1));
	int			ntodo = 0;
	int			nprobes = 0;

	for (int i = 0; i < b->njobs; i++)
	{
		SacJob	   *job = &b->jobs[i];

		if (job->fetch && !job->tenant->unavailable)
		{
			sac_job_start(job);
			todo[ntodo++] = job;
		}
	}
	while (ntodo > 0 && !(sac_in_worker && sac_stop_requested))
	{
		int			nnext = 0;

		fetch_jobs(todo, ntodo);
		for (int i = 0; i < ntodo; i++)
		{
			SacJob	   *job = todo[i];

			if (job->req.interrupted || job->tenant->unavailable)
				continue;
			if (sac_job_advance(job))
				next[nnext++] = job;
		}
		memcpy(todo, next, sizeof(SacJob *) * nnext);
		ntodo = nnext;
	}

	for (int i = 0; i < b->njobs; i++)
	{
		SacTenant  *t = b->jobs[i].tenant;

		if (b->jobs[i].gone && !b->jobs[i].decided && !t->ok_now &&
			!(t->ok_recently && sac_api_alive_window_s > 0) &&
			!t->probed && !t->unavailable)
		{
			sac_tenant_prepare_probe(t);
			probes[nprobes++] = &t->probe;
		}
	}
	perform(probes, nprobes);
	for (int i = 0; i < b->njobs; i++)
		if (!b->jobs[i].req.interrupted)
			sac_job_confirm_gone(&b->jobs[i]);
}

/*
 * Run one batch: claim up to limit rows, fetch and apply them.  With
 * housekeeping, also take back rows whose owner is gone (rows whose lease
 * ran out are taken back by any claim), and prune finished rows.  *result
 * says how many rows were claimed (-1 if the claim failed, in the worker)
 * and finished, and, when none was claimed, how long until the next row is
 * due.
 */
void
sac_run_batch(int limit, bool housekeeping, SacBatchResult *result)
{
	Batch		b;
	SacUnitError error;

	memset(result, 0, sizeof(*result));
	result->next_due_ms = -1;
	memset(&b, 0, sizeof(b));
	b.limit = limit;
	b.cxt = CurrentMemoryContext;
	b.housekeeping = housekeeping;
	b.jobs = palloc0(sizeof(SacJob) * limit);
	b.tenants = palloc0(sizeof(SacTenant) * limit);
	/* a lease long enough for the whole batch, slow answers included */
	b.lease_s = sac_lease_s +
		((limit + sac_max_in_flight - 1) / sac_max_in_flight) *
		(sac_request_timeout_ms / 1000 + 1) * 2;

	if (!sac_run_unit(claim_unit, &b, &error))
	{
		sac_report_unit_error(sac_in_worker ? WARNING : ERROR, &error,
							  "while claiming inbox rows");
		result->claimed = -1;
		return;
	}
	result->next_due_ms = b.next_due_ms;
	result->claimed = b.njobs;
	if (b.njobs == 0)
		return;

	/* tokens that are missing or about to expire */
	for (int i = 0; i < b.ntenants; i++)
		if (b.tenants[i].needs_refresh)
			sac_oauth_refresh(&b.tenants[i], NULL);

	/* fetch and resolve what needs the API */
	for (int i = 0; i < b.njobs; i++)
	{
		SacJob	   *job = &b.jobs[i];

		job->fetch = !(job->status == SAC_CHANGE_DELETION && !sac_confirm_deletions);
		if (!job->fetch)
		{
			job->decided = true;
			job->action = SAC_ACT_DELETE;
		}
	}
	resolve_jobs(&b);

	/* rows that could not be fetched go back to the queue; then apply */
	for (int i = 0; i < b.njobs; i++)
	{
		SacJob	   *job = &b.jobs[i];
		SacTenant  *t = job->tenant;

		if (job->decided)
			continue;
		job->http_status = (int) job->req.status;
		if (job->fetch && t->unavailable)
		{
			/*
			 * Nothing was tried: the attempt is given back.  A tenant whose
			 * refresh failed holds its rows back itself (token_retry_at);
			 * otherwise the row waits a little, or as long as the tenant's
			 * credentials keep failing.
			 */
			if (t->busy)
				sac_job_defer(job, t->error, 1000, false);
			else if (t->backing_off)
				sac_job_defer(job, t->error, 0, false);
			else
				sac_job_defer(job, t->error, sac_backoff_ms(Max(t->failures, 1)), false);
		}
		else
		{
			/* interrupted by shutdown before it was decided */
			sac_job_defer(job, NULL, 0, false);
		}
	}
	result->finished = sac_apply_jobs(b.jobs, b.njobs);
	sac_apply_sync_progress(b.jobs, b.njobs);
	sac_apply_tenant_facts(b.tenants, b.ntenants);
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
 * none is due; returns how many rows it finished (done or dead).  The work
 * belongs to the caller's transaction, tokens rotated on the way included:
 * call it on its own, not in a transaction that may roll back.  Whatever
 * the caller's search_path, the pipeline's statements resolve names in
 * pg_catalog only (they name the extension's own objects with their
 * schema), since the caller may be a superuser.
 */
Datum
sac_webhook_process(PG_FUNCTION_ARGS)
{
	int32		max_events = PG_GETARG_INT32(0);
	int			claimed = 0;
	int			finished = 0;
	int			save_nestlevel;
	MemoryContext batch_cxt;
	MemoryContext old;
	bool		first = true;

	if (max_events < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must not be negative")));

	sac_in_worker = false;
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", SAC_SAFE_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	check_version();

	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "sac_webhook process batch",
									  ALLOCSET_DEFAULT_SIZES);
	while (claimed < max_events)
	{
		SacBatchResult r;

		old = MemoryContextSwitchTo(batch_cxt);
		sac_run_batch(Min(sac_batch_size, max_events - claimed), first, &r);
		MemoryContextSwitchTo(old);
		MemoryContextReset(batch_cxt);
		first = false;
		finished += r.finished;
		if (r.claimed <= 0)
			break;
		claimed += r.claimed;
		CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(batch_cxt);
	AtEOXact_GUC(true, save_nestlevel);
	PG_RETURN_INT32(finished);
}
