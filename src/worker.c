/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The background worker: runs the pipeline until told to stop.
 *
 * Started by the postmaster when the library is in shared_preload_libraries
 * (sac_webhook.workers of them), connected to sac_webhook.database.  It
 * keeps one pipeline (pipeline.c) and runs it a second at a time, seeing to
 * its own chores in between (reload, statistics, a memory context reset).
 * With nothing in the pipeline and nothing due it sleeps on its latch, which
 * receive() sets at commit, until the next row is due or
 * sac_webhook.poll_interval passes.  SIGHUP reloads the configuration;
 * SIGTERM (ShutdownRequestPending) stops it at once: requests still under
 * way are abandoned and every row it holds is given back, untried.  It then
 * exits.  After a crash the postmaster starts it again; rows it held come
 * back when their owner is seen gone or their lease runs out.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "sac_webhook.h"
#include "pipeline.h"

PG_FUNCTION_INFO_V1(sac_webhook_worker_counters);

/* How often the worker takes back lost leases and prunes finished rows */
#define HOUSEKEEPING_INTERVAL_MS 5000

/* How long the pipeline runs before the worker sees to its own chores */
#define RUN_BUDGET_MS 1000

static int	worker_slot = -1;

/*
 * Forget our latch in shared memory at exit.
 */
static void
worker_detach(int code, Datum arg)
{
	(void) code;
	(void) arg;
	if (sac_shared && worker_slot >= 0)
		sac_shared->worker_latch[worker_slot] = NULL;
}

/*
 * Register the workers at postmaster start.
 */
void
sac_register_worker(void)
{
	for (int i = 0; i < sac_workers; i++)
	{
		BackgroundWorker worker;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = 5;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "sac_webhook");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "sac_webhook_worker_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "sac_webhook worker %d", i);
		snprintf(worker.bgw_type, BGW_MAXLEN, "sac_webhook worker");
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

/* Whether the extension is installed in the worker's database, and usable */
typedef enum ExtensionState
{
	EXT_UNKNOWN,				/* not looked for yet, or a claim failed */
	EXT_MISSING,
	EXT_OTHER_VERSION,			/* ALTER EXTENSION ... UPDATE is due */
	EXT_READY
} ExtensionState;

typedef struct ExtensionCheck
{
	ExtensionState state;
	char		version[NAMEDATALEN];	/* the installed one */
} ExtensionCheck;

/*
 * Unit: is the extension installed in this database, at our version?  Asked
 * at start, and again whenever a claim fails (the extension may have been
 * dropped or updated) or it was not ready.
 */
static void
check_extension_unit(void *arg)
{
	ExtensionCheck *check = (ExtensionCheck *) arg;
	char	   *version = sac_installed_version();

	if (version == NULL)
		check->state = EXT_MISSING;
	else
	{
		strlcpy(check->version, version, sizeof(check->version));
		check->state = strcmp(version, SAC_EXTENSION_VERSION) == 0 ? EXT_READY : EXT_OTHER_VERSION;
	}
}

/*
 * Worker entry point.
 */
void
sac_webhook_worker_main(Datum main_arg)
{
	MemoryContext batch_cxt;
	TimestampTz last_housekeeping = 0;
	ExtensionCheck ext = {EXT_UNKNOWN, ""};
	ExtensionState reported = EXT_READY;
	SacEnv		env = {true, &ShutdownRequestPending};
	SacPipeline *pipeline = NULL;

	worker_slot = DatumGetInt32(main_arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(sac_database, NULL, 0);

	/*
	 * The worker is a superuser in a database that someone else may own:
	 * whatever search_path the database or its owner set, its statements
	 * resolve names in pg_catalog only (they name the extension's objects
	 * with their schema).
	 */
	SetConfigOption("search_path", SAC_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The worker's transactions redo what the inbox already holds: a crash
	 * that loses the last of them puts their rows back in the queue, with
	 * the changes they made, and they are fetched and applied again.  So
	 * they need not wait for their WAL to reach disk.  (Storing a rotated
	 * OAuth token is the exception: oauth.c commits that synchronously.)
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION);

	if (sac_shared && worker_slot >= 0 && worker_slot < SAC_MAX_WORKERS)
	{
		sac_shared->worker_latch[worker_slot] = MyLatch;
		on_shmem_exit(worker_detach, 0);
	}

	ereport(LOG,
			(errmsg("sac_webhook worker %d started in database \"%s\"",
					worker_slot, sac_database)));

	batch_cxt = AllocSetContextCreate(TopMemoryContext, "sac_webhook batch",
									  ALLOCSET_DEFAULT_SIZES);

	/*
	 * Every batch allocates and frees a few megabytes (documents, parse
	 * trees, tuples).  Keep that memory in the process between batches
	 * instead of returning it to the kernel and faulting it in again.
	 */
#ifdef __GLIBC__
	(void) mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
	(void) mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
#endif

	while (!ShutdownRequestPending)
	{
		long		sleep_ms = sac_poll_interval_ms;
		SacRunResult run = {0, 0, true, -1};
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		old = MemoryContextSwitchTo(batch_cxt);
		pgstat_report_activity(STATE_RUNNING, "sac_webhook pipeline");
		if (ext.state != EXT_READY)
			sac_run_unit(&env, check_extension_unit, &ext, NULL);
		if (ext.state == EXT_READY)
		{
			TimestampTz now = GetCurrentTimestamp();
			bool		housekeeping = TimestampDifferenceExceeds(last_housekeeping, now,
																  HOUSEKEEPING_INTERVAL_MS);

			reported = EXT_READY;
			if (housekeeping)
				last_housekeeping = now;
			if (pipeline == NULL)
				pipeline = sac_pipeline_create(&env, TopMemoryContext);
			sac_pipeline_run(pipeline, INT_MAX, RUN_BUDGET_MS, housekeeping, &run);
			/* dropped or broken: look for the extension again after a pause */
			if (run.claimed < 0)
				ext.state = EXT_UNKNOWN;
		}
		else if (pipeline != NULL)
		{
			/* the extension went away: give back the places it holds */
			sac_pipeline_destroy(pipeline);
			pipeline = NULL;
		}
		if (ext.state != EXT_READY && ext.state != reported)
		{
			if (ext.state == EXT_MISSING)
				ereport(LOG,
						(errmsg("sac_webhook worker waits for the extension in database \"%s\"",
								sac_database),
						 errhint("Run CREATE EXTENSION sac_webhook in that database.")));
			else if (ext.state == EXT_OTHER_VERSION)
				ereport(LOG,
						(errmsg("sac_webhook worker waits for extension \"sac_webhook\" version %s in database \"%s\", which has version %s",
								SAC_EXTENSION_VERSION, sac_database, ext.version),
						 errhint("Run ALTER EXTENSION sac_webhook UPDATE in that database.")));
			reported = ext.state;
		}
		pgstat_report_activity(STATE_IDLE, NULL);
		/* table statistics feed autovacuum: the inbox churns */
		pgstat_report_stat(false);
		MemoryContextSwitchTo(old);
		MemoryContextReset(batch_cxt);

		if (ShutdownRequestPending)
			continue;
		if (run.claimed < 0)
		{
			/* a claim failed: look again in a moment (what is in flight waits) */
			sleep_ms = Min(sleep_ms, 1000);
		}
		else if (!run.idle)
			continue;
		else if (run.next_due_ms >= 0)
			sleep_ms = Min(sleep_ms, Max(run.next_due_ms, 10));

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/* what is still in the pipeline goes back to the queue, untried */
	if (pipeline != NULL)
		sac_pipeline_drain(pipeline);
	ereport(LOG, (errmsg("sac_webhook worker %d stopping", worker_slot)));
	proc_exit(0);
}

/*
 * sac_webhook.worker_counters(): totals since server start, and how many
 * workers are running.
 */
Datum
sac_webhook_worker_counters(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[7];
	bool		nulls[7] = {false};
	int			running = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (sac_shared == NULL)
	{
		for (int i = 0; i < 6; i++)
			values[i] = Int64GetDatum(0);
	}
	else
	{
		values[0] = Int64GetDatum((int64) pg_atomic_read_u64(&sac_shared->fetches));
		values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&sac_shared->fetch_failures));
		values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&sac_shared->applied));
		values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&sac_shared->deleted));
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&sac_shared->token_refreshes));
		values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&sac_shared->token_failures));
		for (int i = 0; i < SAC_MAX_WORKERS; i++)
			if (sac_shared->worker_latch[i] != NULL)
				running++;
	}
	values[6] = Int32GetDatum(running);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
