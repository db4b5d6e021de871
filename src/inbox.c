/*-------------------------------------------------------------------------
 *
 * inbox.c
 *		The durable inbox: sac_webhook.receive() and worker wake-up.
 *
 * receive() parses a notification strictly (parse.c) and stores it in the
 * logged table sac_webhook.inbox in the caller's transaction.  Notifications
 * for a resource that already has a row waiting (pending or retrying) coalesce
 * into that row: one fetch serves them all, the row counts how many
 * notifications it stands for and keeps the latest status.  A row that
 * waits after the API answered 200 (to check an unconfirmed DELETION again,
 * or after a document it could not store) becomes due at once: the new
 * notification is news.  (The statement uses only columns of every
 * version of the inbox, so that receipts go on while the library is newer
 * than the installed extension, until ALTER EXTENSION ... UPDATE.)  A row
 * that takes in a notification while its fetch is under way (it has a
 * lease) is marked refetch: that fetch puts it back instead of finishing it
 * (apply.c).
 * A partial unique index enforces "one waiting row per resource", and
 * INSERT ... ON CONFLICT makes concurrent receipts of the same resource
 * meet in that row without errors.
 *
 * At commit the background worker's latch is set, so it claims the new
 * rows at once instead of at its next poll.
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
#include "utils/uuid.h"

#include "sac_webhook.h"

PG_FUNCTION_INFO_V1(sac_webhook_receive);
PG_FUNCTION_INFO_V1(sac_webhook_wake_workers);

static SPIPlanPtr insert_plan = NULL;
static bool wake_at_commit = false;
static bool xact_callback_registered = false;

#define INSERT_SQL(priority) \
"INSERT INTO sac_webhook.inbox AS i" \
"  (tenant_id, topic, status, resource, ticket_id, message_id)" \
" VALUES ($1, $2, $3::sac_webhook.change, $4, $5, $6)" \
" ON CONFLICT (tenant_id, resource) WHERE state IN ('pending', 'retrying')" \
" DO UPDATE SET notifications = i.notifications + 1," \
"               status = EXCLUDED.status," \
"               last_received_at = EXCLUDED.last_received_at," \
"               next_attempt_at = CASE WHEN i.state = 'retrying' AND i.last_http_status = 200" \
"                                      THEN least(i.next_attempt_at, EXCLUDED.next_attempt_at)" \
"                                      ELSE i.next_attempt_at END," \
priority \
"               refetch = i.refetch OR i.lease_owner IS NOT NULL" \
" RETURNING id"

/*
 * A notification for a resource that a sync queued makes its row a
 * notification's (priority 0).  The statement of 0.1.0 inboxes lacks that.
 */
static const char *const insert_sql = INSERT_SQL("               priority = 0,");
static const char *const insert_sql_0_1_0 = INSERT_SQL("");

/*
 * Set the latches of the running workers, if any.
 */
void
sac_wake_worker(void)
{
	if (sac_shared == NULL)
		return;
	for (int i = 0; i < SAC_MAX_WORKERS; i++)
	{
		Latch	   *latch = sac_shared->worker_latch[i];

		if (latch != NULL)
			SetLatch(latch);
	}
}

/*
 * Transaction callback: wake the worker once the receipts are committed.
 */
static void inbox_xact_callback(XactEvent event, void *arg);

/*
 * Wake the workers when the current transaction commits.
 */
void
sac_wake_worker_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(inbox_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/*
 * sac_webhook.wake_workers(): wake the workers at commit (new tenants,
 * syncs queued).
 */
Datum
sac_webhook_wake_workers(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	sac_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/*
 * Transaction callback: wake the worker once the receipts are committed.
 */
static void
inbox_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				sac_wake_worker();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * sac_webhook.receive(payload text) RETURNS bigint
 *
 * Parse, then store (or coalesce) in the inbox; returns the inbox row id.
 */
Datum
sac_webhook_receive(PG_FUNCTION_ARGS)
{
	text	   *payload;
	SacNotification n;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int64		id;
	int			ret;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("webhook payload is null"),
				 errdetail("A webhook payload must be a JSON object.")));
	payload = PG_GETARG_TEXT_PP(0);
	sac_parse_payload(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload), &n);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (insert_plan == NULL)
	{
		Oid			types[6] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, UUIDOID};
		SPIPlanPtr	plan;

		/* the installed version's inbox: with priority, or (0.1.0) without */
		if (SPI_execute("SELECT 1 FROM pg_catalog.pg_attribute a"
						" WHERE a.attrelid OPERATOR(pg_catalog.=) 'sac_webhook.inbox'::pg_catalog.regclass"
						"   AND a.attname OPERATOR(pg_catalog.=) 'priority' AND NOT a.attisdropped",
						true, 1) != SPI_OK_SELECT)
			elog(ERROR, "catalog look-up failed");
		plan = SPI_prepare_cursor(SPI_processed == 1 ? insert_sql : insert_sql_0_1_0, 6, types,
								  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		insert_plan = plan;
	}

	values[0] = UUIDPGetDatum(&n.tenant_id);
	values[1] = CStringGetTextDatum(sac_topic_name(n.topic));
	values[2] = CStringGetTextDatum(sac_change_name(n.status));
	values[3] = CStringGetTextDatum(n.resource);
	values[4] = UUIDPGetDatum(&n.ticket_id);
	values[5] = UUIDPGetDatum(&n.message_id);
	if (n.topic == SAC_TOPIC_TICKET)
		nulls[5] = 'n';

	ret = SPI_execute_plan(insert_plan, values, nulls, false, 1);
	if (ret != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "inbox insert failed: %s", SPI_result_code_string(ret));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	sac_wake_worker_at_commit();

	PG_RETURN_INT64(id);
}
