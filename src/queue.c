/*-------------------------------------------------------------------------
 *
 * queue.c
 *		The statements on the inbox and the syncs as a queue: the claims,
 *		the look-up of what waits, pruning, and the housekeeping of syncs.
 *
 * Each runs in the caller's unit of work (SPI connected), planned once and
 * kept.  The claims leave their rows in SPI_tuptable, in the column layout
 * of CLAIM_RETURNING; turning them into jobs is the pipeline's (pipeline.c).
 * Finishing or deferring a claimed row belongs to the unit that applies its
 * result, so those statements live with the applying (apply.c), where the
 * lease is checked in the same transaction as the data change.
 *
 * The search_path is pinned to pg_catalog wherever these statements run
 * (the worker's session, process()), and functions are named with their
 * schema all the same (but for the SQL constructs that look like functions:
 * multi-argument unnest in FROM, coalesce, greatest, least).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "sac_webhook.h"
#include "queue.h"
#include "unit.h"

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_sync_work_plan = NULL;
static SPIPlanPtr claim_syncs_plan = NULL;
static SPIPlanPtr syncs_finish_plan = NULL;
static SPIPlanPtr syncs_periodic_plan = NULL;
static SPIPlanPtr sync_pending_plan = NULL;
static SPIPlanPtr prune_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr refetch_plan = NULL;

static const char *const refetch_sql =
"UPDATE sac_webhook.inbox SET refetch = true WHERE id = ANY ($1)";

/*
 * The claims: due rows of enabled tenants that nobody holds, or whose holder
 * let its lease run out, or (with $5, at housekeeping) whose holder is
 * gone.  A claimed row keeps its state and gets a lease (lease_owner,
 * lease_until): no indexed column changes, so the update stays on its heap
 * page and writes no index entries.  A resource has at most one waiting row
 * (inbox_waiting_resource), so one lease per row is one fetch in flight per
 * resource.  The fetch that follows covers the notifications taken in so
 * far, so refetch is cleared.  Rows of a tenant whose token refresh failed
 * wait for the tenant (token_retry_at), not each for itself.  A row this
 * process holds but could not give back (a receipt kept it locked) is
 * taken again by its next claims as soon as it is free (see CLAIM_FREE).
 *
 * The rows are picked in a sub-select run once (the ARRAY()) and updated
 * through the primary key, and the statement is planned afresh each time
 * with the real LIMIT (see sac_queue_claim).
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
 * a row nobody (alive, with its lease running) holds; of the rows this
 * process holds, those its pipeline could not give back ($9), or all of
 * them when its pipeline has none ($13)
 */
#define CLAIM_FREE(w) \
"(" w ".lease_owner IS NULL OR " w ".lease_until < pg_catalog.now()" \
" OR (" w ".lease_owner = $3 AND ($13 OR " w ".id = ANY ($9)))" \
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
 * Notifications, at most what each tenant has room for (see TENANT_ROOM),
 * taken in turns: each tenant's oldest due row, then each one's second,
 * and so on, so that a tenant with a backlog does not keep another one's
 * fresh notification waiting, and a tenant the API slows down keeps its
 * backlog in the inbox, not in the pipeline.
 */
#define CLAIM_INBOX(priority) \
CLAIM_UPDATE \
"        SELECT x.id FROM sac_webhook.tenants e" TENANT_ROOMS("e") "," \
"               LATERAL (SELECT y.id, y.next_attempt_at," \
"                                pg_catalog.row_number() OVER (ORDER BY y.next_attempt_at) AS turn" \
"                          FROM (SELECT w.id, w.next_attempt_at FROM sac_webhook.inbox w" \
"                                 WHERE w.tenant_id = e.tenant_id AND w.priority = " priority \
"                                   AND w.state IN ('pending', 'retrying')" \
"                                   AND w.next_attempt_at <= pg_catalog.now() AND " CLAIM_FREE("w") \
"                                 ORDER BY w.next_attempt_at LIMIT " TENANT_ROOM \
"                                   FOR UPDATE OF w SKIP LOCKED) y) x" \
"         WHERE " TENANT_READY("e") \
"         ORDER BY x.turn, x.next_attempt_at LIMIT $1))" \
"   AND t.tenant_id = i.tenant_id" \
CLAIM_RETURNING

static const char *const claim_sql = CLAIM_INBOX("0");

/*
 * Work queued by syncs, in what room the notifications leave, the same
 * way (with $12 a smaller share per tenant), so that tenants share it.
 */
static const char *const claim_sync_work_sql = CLAIM_INBOX("1");

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


/*
 * Run a claim with its parameters (see SacClaimArg); the claimed rows are
 * left in SPI_tuptable.  Returns how many.  Each claim is planned afresh at
 * each call: its best plan depends on the LIMIT and the queue, and a
 * generic plan, guessing from statistics taken during a backlog, could
 * scan the whole inbox.
 */
uint64
sac_queue_claim(SacClaimKind kind, Datum *values)
{
	static const Oid types[SAC_CLAIM_NARGS] = {INT4OID, INT4OID, INT4OID, INT4OID, BOOLOID,
		TEXTOID, INT4OID, INT4OID, INT8ARRAYOID, UUIDARRAYOID, INT4ARRAYOID, INT4OID, BOOLOID};
	SPIPlanPtr *plan;
	const char *sql;
	int			ret;

	switch (kind)
	{
		case SAC_CLAIM_NOTIFICATIONS:
			plan = &claim_plan;
			sql = claim_sql;
			break;
		case SAC_CLAIM_SYNC_WORK:
			plan = &claim_sync_work_plan;
			sql = claim_sync_work_sql;
			break;
		default:
			plan = &claim_syncs_plan;
			sql = claim_syncs_sql;
			break;
	}
	sac_spi_prepare_custom(plan, sql, SAC_CLAIM_NARGS, (Oid *) types);
	ret = SPI_execute_plan(*plan, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "%s claim failed: %s", kind == SAC_CLAIM_WALKS ? "sync" : "inbox",
			 SPI_result_code_string(ret));
	return SPI_processed;
}

/*
 * Is there reconciliation work: rows a sync queued, walks?  Not read-only:
 * in process(), what earlier units queued must show.
 */
void
sac_queue_sync_pending(bool *rows, bool *walks)
{
	bool		isnull;

	sac_spi_prepare(&sync_pending_plan, sync_pending_sql, 0, NULL);
	if (SPI_execute_plan(sync_pending_plan, NULL, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "sync look-up failed");
	*rows = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*walks = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}

/* Drop rows done longer ago than sac_webhook.done_retention (a slice) */
void
sac_queue_prune(void)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(sac_done_retention_s)};

	sac_spi_prepare(&prune_plan, prune_sql, 1, types);
	if (SPI_execute_plan(prune_plan, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "inbox pruning failed");
}

/* Queue the periodic syncs that are due (sac_webhook.resync_interval) */
void
sac_queue_periodic_syncs(void)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(sac_resync_interval_s)};

	if (sac_resync_interval_s <= 0)
		return;
	sac_spi_prepare(&syncs_periodic_plan, syncs_periodic_sql, 1, types);
	if (SPI_execute_plan(syncs_periodic_plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "sync housekeeping failed");
}

/* Mark done the syncs whose walk and queued rows are all finished */
void
sac_queue_finish_syncs(void)
{
	sac_spi_prepare(&syncs_finish_plan, syncs_finish_sql, 0, NULL);
	if (SPI_execute_plan(syncs_finish_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "sync housekeeping failed");
}

/*
 * Have the given rows fetched again once they are finished (a claim took
 * them again while their job was still under way, clearing refetch).
 */
void
sac_queue_mark_refetch(Datum *ids, int nids)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];

	values[0] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	sac_spi_prepare(&refetch_plan, refetch_sql, 1, types);
	if (SPI_execute_plan(refetch_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "inbox update failed");
}

/*
 * Milliseconds until the next waiting row or walk is due, or -1 when none
 * waits.
 */
int64
sac_queue_next_due_ms(void)
{
	bool		isnull;
	Datum		d;

	sac_spi_prepare(&next_due_plan, next_due_sql, 0, NULL);
	if (SPI_execute_plan(next_due_plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "inbox look-up failed");
	if (SPI_processed != 1)
		return -1;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? -1 : Max(DatumGetInt64(d), 0);
}
