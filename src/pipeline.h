/*-------------------------------------------------------------------------
 *
 * pipeline.h
 *		Types shared by the claim -> fetch -> apply pipeline modules
 *		(pipeline.c, oauth.c, apply.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_PIPELINE_H
#define SAC_PIPELINE_H

#include "executor/spi.h"
#include "utils/jsonb.h"

#include "sac_webhook.h"
#include "fetch.h"

/* A tenant seen in the current batch */
typedef struct SacTenant
{
	pg_uuid_t	id;
	char	   *base_url;		/* API base URL without trailing slash */
	char	   *access_token;	/* may be NULL */
	bool		needs_refresh;	/* expired, expiring or missing token */
	bool		refreshed;		/* refreshed during this batch */
	bool		unavailable;	/* refresh failed or is running elsewhere */
	bool		busy;			/* another session is refreshing it */
	bool		backing_off;	/* a refresh failed: the tenant's rows wait
								 * for its token_retry_at */
	char	   *error;			/* why it is unavailable */
	int			failures;		/* refreshes failed in a row */
} SacTenant;

/* What becomes of a claimed row */
typedef enum SacApplyAction
{
	SAC_ACT_UPSERT,
	SAC_ACT_DELETE,
	SAC_ACT_RETRY,
	SAC_ACT_DEAD
} SacApplyAction;

/* One claimed inbox row */
typedef struct SacJob
{
	int64		id;
	SacTopic	topic;
	SacChange	status;
	pg_uuid_t	tenant_id;
	pg_uuid_t	ticket_id;
	pg_uuid_t	message_id;
	int			attempts;		/* including the current one */
	int			not_found;		/* 404s answered for it so far */
	int			rechecks;		/* re-checks of an unconfirmed DELETION so far */
	char		resource[SAC_RESOURCE_MAXLEN];
	SacTenant  *tenant;
	MemoryContext cxt;			/* the batch's memory */
	bool		fetch;			/* needs an HTTP GET */
	SacHttpRequest req;

	/* what to do with it (apply.c) */
	bool		decided;
	SacApplyAction action;
	char	   *error;			/* for last_error, or NULL */
	int64		delay_ms;		/* until the next attempt */
	bool		count_attempt;	/* false: the attempt is given back */
	bool		was_not_found;	/* deferred after a 404: counted in not_found */
	bool		recheck;		/* an upsert after a DELETION: the row comes
								 * back later to check again */
	const char *rid;			/* " (request id ...)" or "" */

	/* what came of it */
	Jsonb	   *doc;			/* the fetched document, while applied */
	bool		parsing;		/* reading the document when it failed */
	bool		held;			/* row still ours when finished: result applied */
	bool		finished;		/* row done or dead */
	bool		changed;		/* data changed */
} SacJob;

/*
 * Unit of work: a transaction in the background worker, a subtransaction
 * of the caller's transaction in process().
 */
typedef void (*SacUnitFn) (void *arg);

/* Why a unit of work failed: its SQLSTATE and primary message */
typedef struct SacUnitError
{
	int			sqlerrcode;
	char	   *message;
} SacUnitError;

/* What one batch did */
typedef struct SacBatchResult
{
	int			claimed;		/* rows claimed; -1: the claim failed */
	int			finished;		/* rows done or dead */
	int64		next_due_ms;	/* nothing claimed: until the next row is due
								 * (-1: none waiting) */
} SacBatchResult;

extern bool sac_in_worker;
extern volatile sig_atomic_t sac_stop_requested;
extern void sac_run_batch(int limit, bool housekeeping, SacBatchResult *result);
extern bool sac_run_unit(SacUnitFn fn, void *arg, SacUnitError *error);
extern char *sac_installed_version(void);
extern void sac_report_unit_error(int elevel, const SacUnitError *error,
								  const char *context);
extern void sac_spi_prepare(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types);
extern void sac_set_local(const char *name, const char *value);

/* oauth.c */
extern void sac_oauth_refresh(SacTenant *tenant, const char *stale_token);

/* apply.c */
extern void sac_apply_defer(SacJob *job, const char *why, int64 delay_ms, bool count_attempt);
extern int	sac_apply_jobs(SacJob *jobs, int njobs);
extern int64 sac_backoff_ms(int attempts);

#endif							/* SAC_PIPELINE_H */
