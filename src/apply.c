/*-------------------------------------------------------------------------
 *
 * apply.c
 *		Apply the decided jobs of a group to sac_webhook.tickets / messages
 *		and finish their inbox rows.
 *
 * resolve.c has decided each job from its HTTP answers; here the database
 * work is done.  Each job's work first finishes its inbox row (or puts it
 * back, when a notification came in during the fetch), but only while this
 * process still holds its lease, and then changes the data, in the same
 * transaction: a row whose lease was taken over by another worker is left
 * alone, so a result is never applied twice, and a crash loses both or
 * neither.
 *
 * The background worker applies a whole group in one transaction (one
 * commit, one WAL flush for up to sac_webhook.batch_size rows).  Should any
 * row fail, that transaction is rolled back and every row is applied again
 * in a transaction of its own, so that the failing one is retried or marked
 * dead alone.  process() applies each row in a subtransaction of its
 * caller's transaction.
 *
 *	UPSERT	store the document, unless the stored copy is newer
 *			(updated_at); a message blocked by moderation loses its text and
 *			attachments; NOTIFY
 *	LIST	store every message of the ticket's complete list; delete the
 *			notified message if the list lacks it; queue the ticket's other
 *			stored messages that the list lacks to be checked one by one
 *	DELETE	delete the resource (a ticket with its messages; a message only
 *			under the ticket of its path; a message's ticket when that is
 *			gone); NOTIFY
 *	RETRY, DEAD
 *			put the row back in the queue, or mark it dead
 *
 * Rows are upserted in (tenant, id) order, so that two workers never lock
 * the same data rows in opposite orders.  The data tables may be Citus
 * distributed tables (sac_webhook.distribute_tables()): see data_prepare.  Error texts stored in last_error
 * never quote a fetched document.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "apply.h"
#include "resolve.h"

/* NOTIFY channel for applied changes (documented) */
#define SAC_NOTIFY_CHANNEL "sac_webhook"

/* The longest a job applied on its own waits for a row lock, in the worker */
#define ALONE_LOCK_TIMEOUT "2s"

static SPIPlanPtr done_plan = NULL;
static SPIPlanPtr done_skip_plan = NULL;
static SPIPlanPtr defer_plan = NULL;
static SPIPlanPtr defer_skip_plan = NULL;
static SPIPlanPtr ticket_upsert_plan = NULL;
static SPIPlanPtr message_upsert_plan = NULL;
static SPIPlanPtr ticket_delete_plan = NULL;
static SPIPlanPtr message_delete_plan = NULL;
static SPIPlanPtr unlisted_queue_plan = NULL;
static SPIPlanPtr api_ok_plan = NULL;
static SPIPlanPtr api_base_plan = NULL;
static SPIPlanPtr sync_hold_plan = NULL;
static SPIPlanPtr sync_seen_plan = NULL;
static SPIPlanPtr sync_checks_plan = NULL;
static SPIPlanPtr stored_tickets_plan = NULL;
static SPIPlanPtr unlisted_plan = NULL;
static SPIPlanPtr sync_advance_plan = NULL;
static SPIPlanPtr sync_defer_plan = NULL;
static SPIPlanPtr sync_progress_plan = NULL;

/*
 * Finish rows we still hold: done.  A row is ours while its lease_owner is
 * our pid: the lease is cleared whenever a row is finished or put back, and
 * a row taken over after its lease ran out has another owner.  A row that
 * took in a notification while we fetched it (refetch, set by receive()) is
 * put back instead, due at once, so that the change that came in meanwhile
 * is fetched too; the result in hand is applied all the same (the
 * updated_at guard keeps it from overwriting anything newer).  An array of
 * ids and the HTTP status (NULL: none) go in; the ids of the rows still
 * ours come out, with whether they are done.  (Looking rows up by id = ANY
 * keeps every plan on the primary key.)
 *
 * receive() locks a waiting row to count a notification in, so a worker
 * that finished a batch's rows waiting for such locks, in its own order,
 * could deadlock with a session receiving several of them in another.  In
 * a batch, rows locked by someone else are skipped (SKIP LOCKED) and
 * finished afterwards one at a time (see sac_apply_jobs).
 */
#define DONE_SET \
"UPDATE sac_webhook.inbox i" \
"   SET state = CASE WHEN i.refetch THEN 'pending' ELSE 'done' END::sac_webhook.inbox_state," \
"       finished_at = CASE WHEN i.refetch THEN NULL ELSE pg_catalog.now() END," \
"       next_attempt_at = CASE WHEN i.refetch THEN pg_catalog.now() ELSE i.next_attempt_at END," \
"       attempts = CASE WHEN i.refetch THEN 0 ELSE i.attempts END," \
"       not_found = CASE WHEN i.refetch THEN 0 ELSE i.not_found END," \
"       rechecks = CASE WHEN i.refetch THEN 0 ELSE i.rechecks END," \
"       refetch = false, lease_until = NULL, lease_owner = NULL," \
"       last_http_status = $2, last_error = NULL"

static const char *const done_sql =
DONE_SET
" WHERE i.id = ANY ($1::bigint[]) AND i.lease_owner = $3"
" RETURNING i.id, i.state = 'done'";

static const char *const done_skip_sql =
DONE_SET
" WHERE i.id = ANY (ARRAY(SELECT l.id FROM sac_webhook.inbox l"
"                          WHERE l.id = ANY ($1::bigint[]) AND l.lease_owner = $3"
"                            FOR UPDATE SKIP LOCKED))"
" RETURNING i.id, i.state = 'done'";

/*
 * Put a row we still hold back in the queue (or mark it dead).  A row that
 * took in a notification meanwhile goes back as new instead, due at once.
 * Skipped when locked, in a batch, as above.
 */
#define DEFER_SET \
"UPDATE sac_webhook.inbox" \
"   SET state = CASE WHEN refetch THEN 'pending' ELSE $4::sac_webhook.inbox_state END," \
"       finished_at = CASE WHEN NOT refetch AND $4 = 'dead' THEN pg_catalog.now() END," \
"       next_attempt_at = CASE WHEN refetch THEN pg_catalog.now()" \
"                              ELSE pg_catalog.now() + pg_catalog.make_interval(secs => $5 / 1000.0) END," \
"       attempts = CASE WHEN refetch THEN 0 ELSE attempts - $7 END," \
"       not_found = CASE WHEN refetch THEN 0 ELSE not_found + $8 END," \
"       rechecks = CASE WHEN refetch THEN 0 ELSE rechecks + $9 END," \
"       refetch = false, lease_until = NULL, lease_owner = NULL," \
"       last_http_status = coalesce($3, last_http_status)," \
"       last_error = coalesce($6, last_error)"

static const char *const defer_sql =
DEFER_SET
" WHERE id = $1 AND lease_owner = $2"
" RETURNING state::text";

static const char *const defer_skip_sql =
DEFER_SET
" WHERE id = (SELECT l.id FROM sac_webhook.inbox l"
"              WHERE l.id = $1 AND l.lease_owner = $2 FOR UPDATE SKIP LOCKED)"
" RETURNING state::text";

/*
 * The inbox statement to run, prepared once: the variant that skips locked
 * rows inside a batch (skip_locked), the one that waits for them otherwise.
 */
static SPIPlanPtr
inbox_plan(bool skip_locked, SPIPlanPtr *waits, const char *waits_sql, SPIPlanPtr *skips,
		   const char *skips_sql, int nargs, Oid *types)
{
	if (skip_locked)
	{
		sac_spi_prepare(skips, skips_sql, nargs, types);
		return *skips;
	}
	sac_spi_prepare(waits, waits_sql, nargs, types);
	return *waits;
}

/*
 * Whether the data tables are Citus distributed tables, as last looked up,
 * and when (see data_prepare).
 */
static bool data_distributed = false;
static TimestampTz data_checked_at = 0;

/* The kept plans of the statements that touch the data tables */
static SPIPlanPtr *const data_plans[] = {
	&ticket_upsert_plan, &message_upsert_plan, &ticket_delete_plan, &message_delete_plan,
	&unlisted_plan, &stored_tickets_plan
};

/*
 * Prepare a statement that touches the data tables.  On plain tables it is
 * planned once, generic; on Citus distributed tables, which Citus can route
 * only with the parameters' values in hand, at each execution.  Whether
 * they are distributed is looked up at most once a second (they may become
 * distributed while a worker runs: until then its statements fail and are
 * retried), and a change drops the kept plans.
 */
static void
data_prepare(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	TimestampTz now = GetCurrentTimestamp();

	if (TimestampDifferenceExceeds(data_checked_at, now, 1000))
	{
		bool		isnull;
		bool		distributed = false;

		if (SPI_execute("SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
						true, 1) != SPI_OK_SELECT)
			elog(ERROR, "catalog look-up failed");
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		{
			if (SPI_execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p"
							" WHERE p.logicalrelid OPERATOR(pg_catalog.=) 'sac_webhook.tickets'::pg_catalog.regclass)",
							true, 1) != SPI_OK_SELECT)
				elog(ERROR, "catalog look-up failed");
			distributed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
													 1, &isnull));
		}
		data_checked_at = now;
		if (distributed != data_distributed)
		{
			for (int i = 0; i < (int) lengthof(data_plans); i++)
				if (*data_plans[i] != NULL)
				{
					SPI_freeplan(*data_plans[i]);
					*data_plans[i] = NULL;
				}
			data_distributed = distributed;
		}
	}
	if (data_distributed)
		sac_spi_prepare_custom(plan, sql, nargs, types);
	else
		sac_spi_prepare(plan, sql, nargs, types);
}

/*
 * Upserts take arrays (a whole batch at once, or one row): tenant ids, ids,
 * documents (and, for messages, ticket ids); the rows they changed come
 * out.
 */
static const char *const ticket_upsert_sql =
"INSERT INTO sac_webhook.tickets AS t"
"  (tenant_id, id, code, type, status, closed, reason, protocol, origin,"
"   order_id, order_code, channel_id, due_date, created_at, updated_at, data, fetched_at)"
" SELECT s.tenant_id, s.id, d->>'code', d->>'type', d->>'status',"
"        CASE pg_catalog.jsonb_typeof(d->'closed') WHEN 'boolean' THEN (d->'closed')::boolean END,"
"        d->>'reason', d->>'protocol', d->>'origin',"
"        d->'order'->>'id', d->'order'->>'code', d->'channel'->>'id',"
"        sac_webhook.api_timestamp(d->>'due_date'),"
"        sac_webhook.api_timestamp(d->>'created_at'),"
"        sac_webhook.api_timestamp(d->>'updated_at'), d, pg_catalog.now()"
"   FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[]) AS s(tenant_id, id, d)"
" ON CONFLICT (tenant_id, id) DO UPDATE"
"   SET code = EXCLUDED.code, type = EXCLUDED.type, status = EXCLUDED.status,"
"       closed = EXCLUDED.closed, reason = EXCLUDED.reason, protocol = EXCLUDED.protocol,"
"       origin = EXCLUDED.origin, order_id = EXCLUDED.order_id,"
"       order_code = EXCLUDED.order_code, channel_id = EXCLUDED.channel_id,"
"       due_date = EXCLUDED.due_date, created_at = EXCLUDED.created_at,"
"       updated_at = EXCLUDED.updated_at, data = EXCLUDED.data,"
"       fetched_at = EXCLUDED.fetched_at"
" WHERE t.updated_at IS NULL OR EXCLUDED.updated_at IS NULL"
"    OR EXCLUDED.updated_at >= t.updated_at"
" RETURNING t.tenant_id, t.id";

/*
 * A message that moderation did not let through (any moderation status but
 * new, pending or approved) is kept without its text and attachments.
 */
static const char *const message_upsert_sql =
"INSERT INTO sac_webhook.messages AS m"
"  (tenant_id, id, ticket_id, code, message, sender_type, sender_id, sender_name,"
"   destination, status, created_at, updated_at, data, fetched_at)"
" SELECT s.tenant_id, s.id, s.ticket_id, d->>'code', CASE WHEN NOT blocked THEN d->>'message' END,"
"        d->'sender'->>'type', d->'sender'->>'id', d->'sender'->>'name', d->>'destination',"
"        d->'moderation'->>'status', sac_webhook.api_timestamp(d->>'created_at'),"
"        greatest(sac_webhook.api_timestamp(d->'moderation'->>'updated_at'),"
"                 sac_webhook.api_timestamp(d->>'created_at')),"
"        CASE WHEN blocked THEN d - 'message' - 'attachments' ELSE d END, pg_catalog.now()"
"   FROM unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::uuid[]) AS s(tenant_id, id, d, ticket_id),"
"        LATERAL (SELECT coalesce(d->'moderation'->>'status', 'approved')"
"                        NOT IN ('new', 'pending', 'approved') AS blocked) b"
" ON CONFLICT (tenant_id, id) DO UPDATE"
"   SET ticket_id = EXCLUDED.ticket_id, code = EXCLUDED.code,"
"       message = EXCLUDED.message, sender_type = EXCLUDED.sender_type,"
"       sender_id = EXCLUDED.sender_id, sender_name = EXCLUDED.sender_name,"
"       destination = EXCLUDED.destination,"
"       status = EXCLUDED.status,"
"       created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,"
"       data = EXCLUDED.data, fetched_at = EXCLUDED.fetched_at"
" WHERE m.updated_at IS NULL OR EXCLUDED.updated_at IS NULL"
"    OR EXCLUDED.updated_at >= m.updated_at"
" RETURNING m.tenant_id, m.id";

static const char *const ticket_delete_sql =
"WITH gone AS (DELETE FROM sac_webhook.messages WHERE tenant_id = $1 AND ticket_id = $2)"
" DELETE FROM sac_webhook.tickets WHERE tenant_id = $1 AND id = $2";

/* only the message at the confirmed path: /v0/tickets/$3/messages/$2 */
static const char *const message_delete_sql =
"DELETE FROM sac_webhook.messages WHERE tenant_id = $1 AND id = $2 AND ticket_id = $3";

/*
 * The stored messages of a ticket that its complete list ($3) lacks (but
 * the notified one, $4) are queued, each to be confirmed gone as a
 * notification would be (a list read once may have shifted under the walk,
 * or lag): one already waiting will do, and is not locked.  The data table
 * is read on its own, then the inbox written: a distributed table and a
 * local one do not join.
 */
static const char *const unlisted_sql =
"SELECT coalesce(pg_catalog.array_agg(m.id), '{}') FROM sac_webhook.messages m"
" WHERE m.tenant_id = $1 AND m.ticket_id = $2 AND m.id <> ALL ($3::uuid[]) AND m.id <> $4";

static const char *const unlisted_queue_sql =
"INSERT INTO sac_webhook.inbox (tenant_id, topic, status, resource, ticket_id, message_id,"
"                               priority, sync_id)"
" SELECT $1, 'sac_message', 'UPDATE', '/v0/tickets/' || $2::text || '/messages/' || x::text, $2, x,"
"        CASE WHEN $4 IS NULL THEN 0 ELSE 1 END, $4"
"   FROM pg_catalog.unnest($3::uuid[]) x"
" ON CONFLICT (tenant_id, resource) WHERE state IN ('pending', 'retrying') DO NOTHING";

/*
 * A sync's pages of tickets: the sync must still be ours; the tickets it
 * lists for the first time are recorded, and the reading of their
 * messages queued at low priority ...
 */
static const char *const sync_hold_sql =
"SELECT 1 FROM sac_webhook.syncs WHERE id = $1 AND lease_owner = $2 FOR UPDATE";

static const char *const sync_seen_sql =
"WITH seen AS ("
"  INSERT INTO sac_webhook.sync_seen (sync_id, ticket_id)"
"  SELECT $2, x FROM pg_catalog.unnest($3::uuid[]) x ON CONFLICT DO NOTHING RETURNING ticket_id),"
" queued AS ("
"  INSERT INTO sac_webhook.inbox (tenant_id, topic, status, resource, ticket_id, priority, sync_id)"
"  SELECT $1, 'sac_ticket_messages', 'UPDATE', '/v0/tickets/' || s.ticket_id::text || '/messages',"
"         s.ticket_id, 1, $2 FROM seen s"
"  ON CONFLICT (tenant_id, resource) WHERE state IN ('pending', 'retrying') DO NOTHING"
"  RETURNING 1)"
" SELECT (SELECT pg_catalog.count(*) FROM seen)::integer, (SELECT pg_catalog.count(*) FROM queued)::integer";

/*
 * ... a complete walk of every ticket queues the check of each stored
 * ticket it did not list (gone, unless the API still serves it) ...
 */
static const char *const stored_tickets_sql =
"SELECT coalesce(pg_catalog.array_agg(t.id), '{}') FROM sac_webhook.tickets t WHERE t.tenant_id = $1";

static const char *const sync_checks_sql =
"WITH queued AS ("
"  INSERT INTO sac_webhook.inbox (tenant_id, topic, status, resource, ticket_id, priority, sync_id)"
"  SELECT $1, 'sac_ticket', 'UPDATE', '/v0/tickets/' || x::text, x, 1, $2"
"    FROM pg_catalog.unnest($3::uuid[]) x"
"   WHERE NOT EXISTS (SELECT 1 FROM sac_webhook.sync_seen v WHERE v.sync_id = $2 AND v.ticket_id = x)"
"  ON CONFLICT (tenant_id, resource) WHERE state IN ('pending', 'retrying') DO NOTHING"
"  RETURNING 1)"
" SELECT pg_catalog.count(*)::integer FROM queued";

/*
 * ... and the walk goes on where it stands, or waits for what it queued.
 * A walk whose full pages bring nothing new three times in a row (a server
 * that ignores _offset, say) fails.
 */
static const char *const sync_advance_sql =
"WITH s AS ("
"UPDATE sac_webhook.syncs"
"   SET next_offset = $3, page_limit = $4, pages = pages + $5,"
"       tickets_seen = tickets_seen + $6, message_lists_queued = message_lists_queued + $7,"
"       checks_queued = checks_queued + $8,"
"       stalled_pages = CASE WHEN $9 THEN stalled_pages + 1 ELSE 0 END,"
"       state = CASE WHEN $10 THEN 'confirming' WHEN $9 AND stalled_pages >= 2 THEN 'failed'"
"                    ELSE 'walking' END,"
"       walk_finished_at = CASE WHEN $10 THEN pg_catalog.now() END,"
"       finished_at = CASE WHEN NOT $10 AND $9 AND stalled_pages >= 2 THEN pg_catalog.now() END,"
"       last_error = CASE WHEN NOT $10 AND $9 AND stalled_pages >= 2"
"                         THEN 'the ticket list does not advance: full pages bring no ticket not seen before' END,"
"       attempts = 0, next_attempt_at = pg_catalog.now(), lease_owner = NULL, lease_until = NULL,"
"       last_http_status = 200"
" WHERE id = $1 AND lease_owner = $2"
" RETURNING tenant_id, since, walk_started_at, walk_finished_at)"
/*
 * A complete walk that reached back to where the tenant was known to be in
 * step (or to the beginning) moves that point to when the walk began: the
 * next periodic sync starts there, and a walk of a shorter reach leaves no
 * gap behind it.
 */
" UPDATE sac_webhook.tenants t SET synced_until = s.walk_started_at"
"   FROM s"
"  WHERE t.tenant_id = s.tenant_id AND s.walk_finished_at IS NOT NULL"
"    AND (s.since IS NULL OR s.since <= coalesce(t.synced_until, t.created_at))"
"    AND (t.synced_until IS NULL OR t.synced_until < s.walk_started_at)";

/* A sync that failed this time: again later, or (dead) given up */
static const char *const sync_defer_sql =
"UPDATE sac_webhook.syncs"
"   SET lease_owner = NULL, lease_until = NULL,"
"       next_attempt_at = pg_catalog.now() + pg_catalog.make_interval(secs => $3 / 1000.0),"
"       attempts = attempts - $4, last_http_status = coalesce($5, last_http_status),"
"       last_error = coalesce($6, last_error),"
"       state = CASE WHEN $7 THEN 'failed' ELSE state END,"
"       finished_at = CASE WHEN $7 THEN pg_catalog.now() END"
" WHERE id = $1 AND lease_owner = $2";

/* What message lists read for a sync found */
static const char *const sync_progress_sql =
"UPDATE sac_webhook.syncs"
"   SET messages_seen = messages_seen + $2, messages_deleted = messages_deleted + $3"
" WHERE id = $1";

/* What the tenant's API showed of itself (sac_apply_tenant_facts) */
static const char *const api_ok_sql =
"UPDATE sac_webhook.tenants SET api_ok_at = pg_catalog.now()"
" WHERE tenant_id = ANY ($1::uuid[])"
"   AND (api_ok_at IS NULL OR api_ok_at < pg_catalog.now() - interval '1 minute')";

/*
 * What a base showed about single messages ($2): 'served' (a 200), 'not
 * served' (405, 501), or 'a sign' that it is not (a 404 for a message its
 * ticket's list holds, which a lagging resource shows too): three signs in
 * a row make it not served.
 */
static const char *const api_base_sql =
"INSERT INTO sac_webhook.api_bases AS b (base_url, single_message_served, not_served_signs, evidence)"
" VALUES ($1, $2 <> 'not served', CASE $2 WHEN 'served' THEN 0 WHEN 'not served' THEN 3 ELSE 1 END, $3)"
" ON CONFLICT (base_url) DO UPDATE"
"   SET not_served_signs = CASE $2 WHEN 'served' THEN 0 WHEN 'not served' THEN 3"
"                               ELSE b.not_served_signs + 1 END,"
"       single_message_served = CASE $2 WHEN 'served' THEN true WHEN 'not served' THEN false"
"                                    ELSE b.not_served_signs + 1 < 3 END,"
"       learned_at = pg_catalog.now(), evidence = EXCLUDED.evidence";


/*
 * Queue a NOTIFY describing an applied change of a job's topic (or of its
 * ticket, for a message whose ticket went): the resource id changed, and
 * the job's notification.
 */
static void
notify_change(SacJob *job, SacTopic topic, const pg_uuid_t *id, const char *action)
{
	char		tenant[40],
				ticket[40],
				resource[40];
	char	   *payload;

	sac_uuid_to_cstring(&job->tenant_id, tenant);
	sac_uuid_to_cstring(topic == SAC_TOPIC_TICKET ? id : &job->ticket_id, ticket);
	sac_uuid_to_cstring(id, resource);
	if (job->is_sync)
		payload = psprintf("{\"topic\":\"%s\",\"status\":\"%s\",\"action\":\"%s\","
						   "\"tenant_id\":\"%s\",\"id\":\"%s\",\"ticket_id\":\"%s\","
						   "\"inbox_id\":null,\"sync_id\":" INT64_FORMAT "}",
						   sac_topic_name(topic), sac_change_name(job->status),
						   action, tenant, resource, ticket, job->id);
	else
		payload = psprintf("{\"topic\":\"%s\",\"status\":\"%s\",\"action\":\"%s\","
						   "\"tenant_id\":\"%s\",\"id\":\"%s\",\"ticket_id\":\"%s\","
						   "\"inbox_id\":" INT64_FORMAT "}",
						   sac_topic_name(topic), sac_change_name(job->status),
						   action, tenant, resource, ticket, job->id);
	Async_Notify(SAC_NOTIFY_CHANNEL, payload);
}

/*
 * Read a 200 body: a JSON object whose "id" is the id that was asked for.
 * Returns NULL and sets *why when it is not; raises when it is not JSON.
 */
static Jsonb *
read_document(SacJob *job, const char **why)
{
	Jsonb	   *doc;
	JsonbValue	key;
	JsonbValue *id;
	char		want[40];

	job->parsing = true;
	doc = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(job->req.body)));
	job->parsing = false;
	if (!JB_ROOT_IS_OBJECT(doc))
	{
		*why = "the API answered with JSON that is not an object";
		return NULL;
	}
	key.type = jbvString;
	key.val.string.val = "id";
	key.val.string.len = 2;
	id = findJsonbValueFromContainer(&doc->root, JB_FOBJECT, &key);
	sac_uuid_to_cstring(job->topic == SAC_TOPIC_TICKET ? &job->ticket_id : &job->message_id, want);
	if (id == NULL || id->type != jbvString || id->val.string.len != 36 ||
		pg_strncasecmp(id->val.string.val, want, 36) != 0)
	{
		*why = "the API answered with a document whose \"id\" is not the requested one";
		return NULL;
	}
	return doc;
}

/*
 * Put the row back in the queue, or mark it dead, as decided.
 */
static void
execute_defer(SacJob *job, bool skip_locked)
{
	Oid			types[9] = {INT8OID, INT4OID, INT4OID, TEXTOID, INT8OID, TEXTOID, INT4OID,
	INT4OID, INT4OID};
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPIPlanPtr	plan = inbox_plan(skip_locked, &defer_plan, defer_sql,
								  &defer_skip_plan, defer_skip_sql, 9, types);
	int			ret;

	values[0] = Int64GetDatum(job->id);
	values[1] = Int32GetDatum(MyProcPid);
	values[2] = Int32GetDatum(job->http_status);
	if (job->http_status == 0)
		nulls[2] = 'n';
	values[3] = CStringGetTextDatum(job->action == SAC_ACT_DEAD ? "dead" : "retrying");
	values[4] = Int64GetDatum(job->delay_ms);
	if (job->error)
		values[5] = CStringGetTextDatum(job->error);
	else
		nulls[5] = 'n';
	values[6] = Int32GetDatum(job->count_attempt ? 0 : 1);
	values[7] = Int32GetDatum(job->was_not_found ? 1 : 0);
	values[8] = Int32GetDatum(job->recheck ? 1 : 0);
	ret = SPI_execute_plan(plan, values, nulls, false, 0);
	if (ret != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "inbox update failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		bool		isnull;
		char	   *state = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
															  SPI_tuptable->tupdesc,
															  1, &isnull));

		job->held = true;
		job->finished = strcmp(state, "dead") == 0;
	}
}

/*
 * Finish the given rows, where still ours (see done_sql); sets job->held
 * and job->finished.
 */
static void
finish_jobs(SacJob **jobs, int n, int http_status, bool skip_locked)
{
	Oid			types[3] = {INT8ARRAYOID, INT4OID, INT4OID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	Datum	   *ids = palloc(sizeof(Datum) * n);
	int			ret;

	for (int i = 0; i < n; i++)
		ids[i] = Int64GetDatum(jobs[i]->id);
	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = Int32GetDatum(http_status);
	if (http_status == 0)
		nulls[1] = 'n';
	values[2] = Int32GetDatum(MyProcPid);

	ret = SPI_execute_plan(inbox_plan(skip_locked, &done_plan, done_sql,
									  &done_skip_plan, done_skip_sql, 3, types),
						   values, nulls, false, 0);
	if (ret != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "inbox update failed: %s", SPI_result_code_string(ret));
	/*
	 * Match the rows that came back to the jobs: they were ours, and those
	 * done are finished (the others were put back).  They come back in the
	 * order given, so the search resumes where the last one matched: linear
	 * for a whole batch.
	 */
	for (uint64 r = 0, next = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 1, &isnull));
		bool		done = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[r],
													  SPI_tuptable->tupdesc, 2, &isnull));

		for (int k = 0; k < n; k++)
		{
			int			i = (next + k) % n;

			if (jobs[i]->id == id)
			{
				jobs[i]->held = true;
				jobs[i]->finished = done;
				next = i + 1;
				break;
			}
		}
	}
}

/* The table a job's documents go to: tickets or messages */
static inline SacTopic
table_of(const SacJob *job)
{
	return job->topic == SAC_TOPIC_TICKET_MESSAGES ? SAC_TOPIC_MESSAGE : job->topic;
}

/* One document to upsert, for a job */
typedef struct UpsertRow
{
	SacJob	   *job;
	const pg_uuid_t *id;
	Jsonb	   *doc;
} UpsertRow;

/* Rows of the same (tenant, id) */
static inline bool
same_row(const UpsertRow *a, const UpsertRow *b)
{
	return memcmp(&a->job->tenant_id, &b->job->tenant_id, UUID_LEN) == 0 &&
		memcmp(a->id, b->id, UUID_LEN) == 0;
}

/*
 * qsort comparator: rows in (tenant, id) order; of one document, the copies
 * read in a list before the one fetched on its own (which is kept)
 */
static int
row_cmp(const void *a, const void *b)
{
	const UpsertRow *ra = (const UpsertRow *) a;
	const UpsertRow *rb = (const UpsertRow *) b;
	int			c = memcmp(&ra->job->tenant_id, &rb->job->tenant_id, UUID_LEN);

	if (c == 0)
		c = memcmp(ra->id, rb->id, UUID_LEN);
	if (c == 0)
		c = (ra->job->action == SAC_ACT_UPSERT) - (rb->job->action == SAC_ACT_UPSERT);
	return c;
}

/*
 * Upsert the documents of one topic of the jobs whose rows were still ours:
 * the fetched document of an UPSERT, every listed message of a LIST.  Each
 * (tenant, id) once, in that order.  Announces each change.
 */
static void
upsert_jobs(SacJob **jobs, int n, SacTopic topic)
{
	Oid			types[4] = {UUIDARRAYOID, UUIDARRAYOID, JSONBARRAYOID, UUIDARRAYOID};
	Datum		values[4];
	UpsertRow  *rows;
	Datum	   *tenants;
	Datum	   *ids;
	Datum	   *docs;
	Datum	   *tickets;
	bool	   *changed;
	int			nrows = 0;
	int			cap = 0;
	int			m = 0;
	int			ret;

	for (int i = 0; i < n; i++)
		if (jobs[i]->held && table_of(jobs[i]) == topic)
			cap += jobs[i]->action == SAC_ACT_UPSERT ? 1 : jobs[i]->nlisted;
	if (cap == 0)
		return;
	rows = palloc(sizeof(UpsertRow) * cap);
	for (int i = 0; i < n; i++)
	{
		SacJob	   *job = jobs[i];

		if (!job->held || table_of(job) != topic)
			continue;
		if (job->action != SAC_ACT_UPSERT)
			for (int k = 0; k < job->nlisted; k++)
			{
				rows[nrows].job = job;
				rows[nrows].id = &job->listed[k].id;
				rows[nrows].doc = job->listed[k].doc;
				nrows++;
			}
		else
		{
			rows[nrows].job = job;
			rows[nrows].id = topic == SAC_TOPIC_TICKET ? &job->ticket_id : &job->message_id;
			rows[nrows].doc = job->doc;
			nrows++;
		}
	}
	if (nrows == 0)
		return;
	if (nrows > 1)
		qsort(rows, nrows, sizeof(UpsertRow), row_cmp);

	tenants = palloc(sizeof(Datum) * nrows);
	ids = palloc(sizeof(Datum) * nrows);
	docs = palloc(sizeof(Datum) * nrows);
	tickets = palloc(sizeof(Datum) * nrows);
	for (int r = 0; r < nrows; r++)
	{
		/*
		 * A document read twice in the batch goes in once: the last copy
		 * in that order (the one fetched on its own, if any)
		 */
		if (m > 0 && same_row(&rows[r], &rows[m - 1]))
			m--;
		rows[m] = rows[r];
		tenants[m] = UUIDPGetDatum(&rows[m].job->tenant_id);
		ids[m] = UUIDPGetDatum(rows[m].id);
		docs[m] = JsonbPGetDatum(rows[m].doc);
		tickets[m] = UUIDPGetDatum(&rows[m].job->ticket_id);
		m++;
	}
	values[0] = PointerGetDatum(construct_array(tenants, m, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	values[1] = PointerGetDatum(construct_array(ids, m, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	values[2] = PointerGetDatum(construct_array(docs, m, JSONBOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(tickets, m, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));

	if (topic == SAC_TOPIC_TICKET)
	{
		data_prepare(&ticket_upsert_plan, ticket_upsert_sql, 3, types);
		ret = SPI_execute_plan(ticket_upsert_plan, values, NULL, false, 0);
	}
	else
	{
		data_prepare(&message_upsert_plan, message_upsert_sql, 4, types);
		ret = SPI_execute_plan(message_upsert_plan, values, NULL, false, 0);
	}
	if (ret != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "upsert failed: %s", SPI_result_code_string(ret));

	/*
	 * Rows skipped by the stale-update guard do not come back; the others
	 * come back in the order given, so the search resumes where the last
	 * one matched: linear for a whole batch.
	 */
	changed = palloc0(sizeof(bool) * m);
	for (uint64 r = 0, next = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		pg_uuid_t  *tenant = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r],
														  SPI_tuptable->tupdesc, 1, &isnull));
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r],
													  SPI_tuptable->tupdesc, 2, &isnull));

		for (int k = 0; k < m; k++)
		{
			int			i = (next + k) % m;

			if (memcmp(id, rows[i].id, UUID_LEN) == 0 &&
				memcmp(tenant, &rows[i].job->tenant_id, UUID_LEN) == 0)
			{
				changed[i] = true;
				next = i + 1;
				break;
			}
		}
	}
	for (int i = 0; i < m; i++)
		if (changed[i])
		{
			rows[i].job->changed = true;
			notify_change(rows[i].job, topic, rows[i].id, "upsert");
		}
}

/*
 * Delete a job's resource: a ticket with its messages (also when it is a
 * message's ticket that is gone), or a message stored under the ticket of
 * its path.
 */
static void
delete_resource(SacJob *job)
{
	Oid			types[3] = {UUIDOID, UUIDOID, UUIDOID};
	Datum		values[3];
	int			ret;
	bool		ticket = job->topic == SAC_TOPIC_TICKET || job->delete_ticket;

	values[0] = UUIDPGetDatum(&job->tenant_id);
	if (ticket)
	{
		values[1] = UUIDPGetDatum(&job->ticket_id);
		data_prepare(&ticket_delete_plan, ticket_delete_sql, 2, types);
		ret = SPI_execute_plan(ticket_delete_plan, values, NULL, false, 0);
	}
	else
	{
		values[1] = UUIDPGetDatum(&job->message_id);
		values[2] = UUIDPGetDatum(&job->ticket_id);
		data_prepare(&message_delete_plan, message_delete_sql, 3, types);
		ret = SPI_execute_plan(message_delete_plan, values, NULL, false, 0);
	}
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "delete failed: %s", SPI_result_code_string(ret));
	job->changed = true;
	if (ticket)
		notify_change(job, SAC_TOPIC_TICKET, &job->ticket_id, "delete");
	else
		notify_change(job, SAC_TOPIC_MESSAGE, &job->message_id, "delete");
}

/*
 * Finish a deletion's row and delete the resource.
 */
static void
delete_job(SacJob *job, bool skip_locked)
{
	finish_jobs(&job, 1, job->http_status, skip_locked);
	if (job->held)				/* else the lease went to someone else */
		delete_resource(job);
}

/*
 * After a LIST was stored: the notified message, if the complete list lacks
 * it, is deleted (its own resource said 404 too, or is not served); the
 * ticket's other stored messages that the list lacks are queued to be
 * confirmed one by one.
 */
static void
apply_unlisted(SacJob *job)
{
	Oid			types[5] = {UUIDOID, UUIDOID, UUIDARRAYOID, UUIDOID, INT8OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum	   *ids = palloc(sizeof(Datum) * Max(job->nlisted, 1));
	int			ret;
	bool		isnull;

	if (job->topic == SAC_TOPIC_MESSAGE && !job->self_listed)
	{
		delete_resource(job);
		job->unlisted_deleted++;
	}
	for (int i = 0; i < job->nlisted; i++)
		ids[i] = UUIDPGetDatum(&job->listed[i].id);
	values[0] = UUIDPGetDatum(&job->tenant_id);
	values[1] = UUIDPGetDatum(&job->ticket_id);
	values[2] = PointerGetDatum(construct_array(ids, job->nlisted, UUIDOID, UUID_LEN, false,
												TYPALIGN_CHAR));
	values[3] = UUIDPGetDatum(&job->message_id);
	data_prepare(&unlisted_plan, unlisted_sql, 4, types);
	if (SPI_execute_plan(unlisted_plan, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "message look-up failed");
	values[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	/* what a sync's work queues is the sync's work too */
	values[3] = Int64GetDatum(job->sync_id);
	nulls[3] = job->sync_id == 0 ? 'n' : ' ';
	{
		Oid			qtypes[4] = {UUIDOID, UUIDOID, UUIDARRAYOID, INT8OID};

		sac_spi_prepare(&unlisted_queue_plan, unlisted_queue_sql, 4, qtypes);
		ret = SPI_execute_plan(unlisted_queue_plan, values, nulls, false, 0);
	}
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "inbox insert failed: %s", SPI_result_code_string(ret));
}

/*
 * A sync's walk: is the sync still ours?  Sets job->held.
 */
static void
hold_sync(SacJob *job)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		values[2];

	values[0] = Int64GetDatum(job->id);
	values[1] = Int32GetDatum(MyProcPid);
	sac_spi_prepare(&sync_hold_plan, sync_hold_sql, 2, types);
	if (SPI_execute_plan(sync_hold_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "sync look-up failed");
	job->held = SPI_processed == 1;
}

/*
 * After a sync's tickets were stored: record them as seen, queue the
 * reading of the messages of those seen for the first time, after a
 * complete walk of every ticket queue the check of those it did not list,
 * and move the walk on (see the statements).
 */
static void
advance_sync(SacJob *job)
{
	Oid			types[10] = {INT8OID, INT4OID, INT4OID, INT4OID, INT4OID, INT4OID, INT4OID,
	INT4OID, BOOLOID, BOOLOID};
	Datum		values[10];
	Datum	   *ids = palloc(sizeof(Datum) * Max(job->nlisted, 1));
	bool		isnull;
	int			seen;
	int			queued;
	int			checks = 0;

	for (int i = 0; i < job->nlisted; i++)
		ids[i] = UUIDPGetDatum(&job->listed[i].id);
	values[0] = UUIDPGetDatum(&job->tenant_id);
	values[1] = Int64GetDatum(job->id);
	values[2] = PointerGetDatum(construct_array(ids, job->nlisted, UUIDOID, UUID_LEN, false,
												TYPALIGN_CHAR));
	{
		Oid			stypes[3] = {UUIDOID, INT8OID, UUIDARRAYOID};

		sac_spi_prepare(&sync_seen_plan, sync_seen_sql, 3, stypes);
		if (SPI_execute_plan(sync_seen_plan, values, NULL, false, 0) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "sync update failed");
		seen = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		queued = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	if (job->walk_complete && job->sync_full)
	{
		Oid			ctypes[3] = {UUIDOID, INT8OID, UUIDARRAYOID};

		data_prepare(&stored_tickets_plan, stored_tickets_sql, 1, ctypes);
		if (SPI_execute_plan(stored_tickets_plan, values, NULL, true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "ticket look-up failed");
		values[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		sac_spi_prepare(&sync_checks_plan, sync_checks_sql, 3, ctypes);
		if (SPI_execute_plan(sync_checks_plan, values, NULL, false, 0) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "sync update failed");
		checks = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (seen > 0 || checks > 0)
		job->changed = true;

	values[0] = Int64GetDatum(job->id);
	values[1] = Int32GetDatum(MyProcPid);
	values[2] = Int32GetDatum(job->walk_next_offset);
	values[3] = Int32GetDatum(job->list_limit);
	values[4] = Int32GetDatum(job->pages);
	values[5] = Int32GetDatum(seen);
	values[6] = Int32GetDatum(queued);
	values[7] = Int32GetDatum(checks);
	values[8] = BoolGetDatum(!job->walk_complete && seen == 0);
	values[9] = BoolGetDatum(job->walk_complete);
	sac_spi_prepare(&sync_advance_plan, sync_advance_sql, 10, types);
	if (SPI_execute_plan(sync_advance_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "sync update failed");
}

/*
 * A sync's walk failed this time: put it back, or (dead) give it up.
 */
static void
defer_sync(SacJob *job)
{
	Oid			types[7] = {INT8OID, INT4OID, INT8OID, INT4OID, INT4OID, TEXTOID, BOOLOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(job->id);
	values[1] = Int32GetDatum(MyProcPid);
	values[2] = Int64GetDatum(job->delay_ms);
	values[3] = Int32GetDatum(job->count_attempt ? 0 : 1);
	values[4] = Int32GetDatum(job->http_status);
	nulls[4] = job->http_status == 0 ? 'n' : ' ';
	values[5] = job->error ? CStringGetTextDatum(job->error) : (Datum) 0;
	nulls[5] = job->error ? ' ' : 'n';
	values[6] = BoolGetDatum(job->action == SAC_ACT_DEAD);
	sac_spi_prepare(&sync_defer_plan, sync_defer_sql, 7, types);
	if (SPI_execute_plan(sync_defer_plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "sync update failed");
	job->held = SPI_processed == 1;
}

/*
 * Do the database work of the given jobs as decided: defer the deferred
 * ones, delete the deletions, and finish and upsert the others together.
 * skip_locked: leave inbox rows that another session has locked (in a
 * batch).  Needs an SPI connection; raises on failure.
 */
static void
execute(SacJob **jobs, int n, bool skip_locked)
{
	SacJob	  **upserts = palloc(sizeof(SacJob *) * n);
	SacJob	  **finishes = palloc(sizeof(SacJob *) * n);
	int			nupserts = 0;
	int			nfinishes = 0;

	for (int i = 0; i < n; i++)
	{
		SacJob	   *job = jobs[i];

		if (job->is_sync)
		{
			if (job->action == SAC_ACT_SYNC)
			{
				hold_sync(job);
				upserts[nupserts++] = job;
			}
			else
				defer_sync(job);
		}
		else if (job->action == SAC_ACT_RETRY || job->action == SAC_ACT_DEAD)
			execute_defer(job, skip_locked);
		else if (job->action == SAC_ACT_DELETE)
			delete_job(job, skip_locked);
		else
		{
			if (job->action == SAC_ACT_UPSERT)
			{
				const char *why = NULL;

				job->doc = read_document(job, &why);
				if (job->doc == NULL)
				{
					sac_job_defer(job, psprintf("%s%s", why, job->rid), -1, true);
					job->http_status = 200;
					execute_defer(job, skip_locked);
					continue;
				}
			}
			/* a DELETION checked again later goes back to the queue */
			if (job->recheck)
				execute_defer(job, skip_locked);
			else
				finishes[nfinishes++] = job;
			upserts[nupserts++] = job;
		}
	}
	if (nupserts == 0)
		return;
	if (nfinishes > 0)
		finish_jobs(finishes, nfinishes, 200, skip_locked);
	upsert_jobs(upserts, nupserts, SAC_TOPIC_TICKET);
	upsert_jobs(upserts, nupserts, SAC_TOPIC_MESSAGE);
	for (int i = 0; i < nupserts; i++)
	{
		if (!upserts[i]->held)
			continue;
		if (upserts[i]->action == SAC_ACT_LIST)
			apply_unlisted(upserts[i]);
		else if (upserts[i]->action == SAC_ACT_SYNC)
			advance_sync(upserts[i]);
	}
}

/* The jobs of one call to sac_apply_jobs, or one of them */
typedef struct JobList
{
	const SacEnv *env;
	SacJob	  **jobs;
	int			njobs;
} JobList;

/*
 * One job in a unit of its own.  In the worker, its waits for row locks are
 * bounded: a session that keeps a receipt's transaction open must not stall
 * the worker (the job is then retried later, or its lease runs out).
 */
static void
execute_one_unit(void *arg)
{
	JobList    *list = (JobList *) arg;

	if (list->env->own_transactions)
		sac_set_local("lock_timeout", ALONE_LOCK_TIMEOUT);
	execute(list->jobs, 1, false);
}

static void
execute_all_unit(void *arg)
{
	JobList    *list = (JobList *) arg;

	/* rows a receipt has locked are left for afterwards (see DONE_SET) */
	execute(list->jobs, list->njobs, true);
}

static void
reset_outcome(SacJob *job)
{
	job->held = false;
	job->finished = false;
	job->changed = false;
	job->parsing = false;
	job->doc = NULL;
	job->unlisted_deleted = 0;
}

/*
 * Apply one job in a unit of its own; if that fails, retry it with the
 * failure as its error, so that it is never left claimed.  Should even that
 * fail (a receipt keeps the row locked past the lock timeout), the row
 * stays ours (job->stranded): the caller's next claim takes it back once it
 * is free (see claim_sql in pipeline.c).
 */
static void
apply_alone(const SacEnv *env, SacJob *job)
{
	SacUnitError error;
	JobList		one = {env, &job, 1};

	reset_outcome(job);
	if (sac_run_unit(env, execute_one_unit, &one, &error))
		return;

	if (job->parsing)
		sac_job_defer(job, psprintf("the API answered HTTP 200 with a body that is not valid JSON%s",
									  job->rid), -1, true);
	else if (ERRCODE_TO_CATEGORY(error.sqlerrcode) == ERRCODE_DATA_EXCEPTION)
	{
		/* such messages quote the document: say only what kind of error */
		sac_job_defer(job, psprintf("could not apply %s: the API document has a value that cannot be stored (SQLSTATE %s)%s",
									  job->resource, unpack_sql_state(error.sqlerrcode),
									  job->rid), -1, true);
	}
	else
		sac_job_defer(job, psprintf("could not apply %s: %s (SQLSTATE %s)", job->resource,
									  error.message, unpack_sql_state(error.sqlerrcode)),
						-1, true);
	reset_outcome(job);
	if (!sac_run_unit(env, execute_one_unit, &one, &error))
	{
		job->stranded = true;
		sac_report_unit_error(env->own_transactions ? WARNING : ERROR, &error,
							  psprintf("while finishing inbox row " INT64_FORMAT, job->id));
	}
}

/*
 * Apply the outcomes of a group of claimed jobs (see the file header).
 * Returns how many of their rows finished (done or dead).
 */
int
sac_apply_jobs(const SacEnv *env, SacJob **jobs, int njobs)
{
	bool		together = false;
	int			finished = 0;

	for (int i = 0; i < njobs; i++)
		reset_outcome(jobs[i]);

	if (env->own_transactions && njobs > 1)
	{
		JobList		list = {env, jobs, njobs};

		together = sac_run_unit(env, execute_all_unit, &list, NULL);
	}
	for (int i = 0; i < njobs; i++)
	{
		/*
		 * Alone: all of them when the group failed, else those whose row was
		 * locked by a receipt (or is no longer ours: then nothing happens).
		 */
		if (!together || !jobs[i]->held)
			apply_alone(env, jobs[i]);
	}

	for (int i = 0; i < njobs; i++)
	{
		SacJob	   *job = jobs[i];

		if (job->finished)
			finished++;
		if (sac_shared && job->changed)
			pg_atomic_fetch_add_u64(job->action == SAC_ACT_DELETE ? &sac_shared->deleted
									: &sac_shared->applied, 1);
	}
	return finished;
}

/* The tenants of one call to sac_apply_tenant_facts */
typedef struct TenantList
{
	SacTenant **tenants;
	int			ntenants;
} TenantList;

/*
 * Unit: record when the tenants' APIs answered 200 (at most once a minute
 * each), and what their API bases showed about single messages.
 */
static void
tenant_facts_unit(void *arg)
{
	TenantList *list = (TenantList *) arg;
	Datum	   *ids = palloc(sizeof(Datum) * list->ntenants);
	int			nids = 0;

	for (int i = 0; i < list->ntenants; i++)
	{
		SacTenant  *t = list->tenants[i];

		if (t->ok_now && !t->ok_fresh)
			ids[nids++] = UUIDPGetDatum(&t->id);
		if (t->single_learned)
		{
			Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
			Datum		values[3];

			values[0] = CStringGetTextDatum(t->base_url);
			values[1] = CStringGetTextDatum(t->single_learnt == SAC_SINGLE_SERVED ? "served" :
											t->single_learnt == SAC_SINGLE_UNSERVED ? "not served" :
											"a sign");
			values[2] = CStringGetTextDatum(t->single_evidence);
			sac_spi_prepare(&api_base_plan, api_base_sql, 3, types);
			if (SPI_execute_plan(api_base_plan, values, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "API base update failed");
		}
	}
	if (nids > 0)
	{
		Oid			types[1] = {UUIDARRAYOID};
		Datum		values[1];

		values[0] = PointerGetDatum(construct_array(ids, nids, UUIDOID, UUID_LEN, false,
													TYPALIGN_CHAR));
		sac_spi_prepare(&api_ok_plan, api_ok_sql, 1, types);
		if (SPI_execute_plan(api_ok_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "tenant update failed");
	}
}

/*
 * Store what the batch learnt of its tenants' APIs; a failure only costs
 * the knowledge, so it is reported and nothing else.
 */
void
sac_apply_tenant_facts(const SacEnv *env, SacTenant **tenants, int ntenants)
{
	TenantList	list = {tenants, ntenants};
	SacUnitError error;
	bool		any = false;

	for (int i = 0; i < ntenants; i++)
		any |= (tenants[i]->ok_now && !tenants[i]->ok_fresh) || tenants[i]->single_learned;
	if (!any)
		return;
	if (!sac_run_unit(env, tenant_facts_unit, &list, &error))
	{
		sac_report_unit_error(WARNING, &error, "while recording what the API showed of itself");
		return;
	}
	/* recorded: not again until a claim says a minute has passed */
	for (int i = 0; i < ntenants; i++)
	{
		if (tenants[i]->ok_now)
			tenants[i]->ok_fresh = true;
		tenants[i]->ok_now = false;
		tenants[i]->single_learned = false;
	}
}

/*
 * Unit: add what the message lists read for syncs found to their progress.
 */
static void
sync_progress_unit(void *arg)
{
	JobList    *list = (JobList *) arg;
	Oid			types[3] = {INT8OID, INT4OID, INT4OID};

	sac_spi_prepare(&sync_progress_plan, sync_progress_sql, 3, types);
	for (int i = 0; i < list->njobs; i++)
	{
		SacJob	   *job = list->jobs[i];
		Datum		values[3];

		if (job->sync_id == 0 || !job->held || job->action != SAC_ACT_LIST)
			continue;
		values[0] = Int64GetDatum(job->sync_id);
		values[1] = Int32GetDatum(job->nlisted);
		values[2] = Int32GetDatum(job->unlisted_deleted);
		if (SPI_execute_plan(sync_progress_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "sync update failed");
	}
}

/*
 * Count what the batch's message lists found in the progress of the syncs
 * that queued them (after the batch, in a unit of its own: the syncs' rows
 * are shared by every worker).  A failure only costs the count.
 */
void
sac_apply_sync_progress(const SacEnv *env, SacJob **jobs, int njobs)
{
	JobList		list = {env, jobs, njobs};
	SacUnitError error;
	bool		any = false;

	for (int i = 0; i < njobs && !any; i++)
		any = jobs[i]->sync_id != 0 && jobs[i]->held && jobs[i]->action == SAC_ACT_LIST;
	if (any && !sac_run_unit(env, sync_progress_unit, &list, &error))
		sac_report_unit_error(WARNING, &error, "while counting the progress of syncs");
}
