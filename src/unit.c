/*-------------------------------------------------------------------------
 *
 * unit.c
 *		The unit-of-work runner: transactions, kept plans, transaction-local
 *		settings, and errors caught with their SQLSTATE.
 *
 * A unit of work is a transaction in the background worker and a
 * subtransaction of the caller's transaction in process(), which cannot
 * commit.  Every module that touches the database does so through units,
 * so that a failing statement rolls back its unit alone and comes back as
 * a SacUnitError instead of ending the worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "unit.h"

/*
 * Prepare a statement once per process and keep it, planned as
 * cursor_options say.
 */
static void
prepare_kept(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types,
			 int cursor_options)
{
	SPIPlanPtr	p;

	if (*plan != NULL)
		return;
	p = SPI_prepare_cursor(sql, nargs, types, cursor_options);
	if (p == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "SPI_keepplan failed");
	*plan = p;
}

/*
 * Prepare a statement that touches rows by key: planned once, generic.
 */
void
sac_spi_prepare(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	prepare_kept(plan, sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
}

/*
 * Prepare a statement whose best plan depends on its parameters: kept, but
 * planned afresh at each execution.
 */
void
sac_spi_prepare_custom(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	prepare_kept(plan, sql, nargs, types, CURSOR_OPT_CUSTOM_PLAN);
}

/*
 * Set a configuration parameter until the end of the current transaction.
 */
void
sac_set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Run fn in a unit of work (see the file header): a transaction when
 * env->own_transactions, else a subtransaction.  Returns false when fn
 * failed, with its SQLSTATE and message in *error (when not NULL); the unit
 * is then rolled back.  Only the primary message is kept: details can quote
 * fetched documents, which must never reach logs or tables other than the
 * data tables.  Query cancel and shutdown requests are re-thrown.
 */
bool
sac_run_unit(const SacEnv *env, SacUnitFn fn, void *arg, SacUnitError *error)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	if (env->own_transactions)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
	}
	else
		BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);

	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		fn(arg);
		SPI_finish();
		if (env->own_transactions)
		{
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
		else
			ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		if (env->own_transactions)
			AbortCurrentTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
			edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY ||
			edata->elevel > ERROR)
			ReThrowError(edata);
		if (error)
		{
			error->sqlerrcode = edata->sqlerrcode;
			error->message = pstrdup(edata->message ? edata->message : "unknown error");
		}
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return ok;
}

/*
 * Report a failed unit of work at elevel, keeping its SQLSTATE, with what
 * was being done as the context.
 */
void
sac_report_unit_error(int elevel, const SacUnitError *error, const char *context)
{
	ereport(elevel,
			(errcode(error->sqlerrcode),
			 errmsg_internal("%s", error->message),
			 errcontext("%s", context)));
}
