/*-------------------------------------------------------------------------
 *
 * pipeline.c
 *		claim -> fetch -> resolve -> apply, streaming: the pipeline of the
 *		background worker and of sac_webhook.process().
 *
 * Requests stay in flight continuously.  Each turn of the loop:
 *
 * 1. Claims rows when there is room (queue.c), in one short unit of work:
 *	  each tenant's due rows in turns, up to what the tenant has room for
 *	  (tenant_claims).  Tokens that expire soon are refreshed (oauth.c).
 * 2. Starts the requests of waiting jobs under the caps (take_slot): the
 *	  requests in flight over all processes and per tenant, counted in
 *	  shared memory; a tenant's window, which HTTP 429 halves and answers
 *	  grow back (adapt_window); the request rates.
 * 3. Applies the jobs that are decided (apply.c) in a group: within
 *	  GROUP_DELAY_MS of the first, up to sac_webhook.batch_size.
 * 4. Waits on the latch and the transfers' sockets (fetch.c) and hands each
 *	  answer to the policy (resolve.c), which decides the job or asks for
 *	  its next request; a 401 refreshes the tenant's token and asks again.
 *
 * No transaction is open while it waits or fetches (in the worker); a job
 * is applied in the same transaction that finishes its row, with the lease
 * checked there, so a killed worker's rows are neither lost nor applied
 * twice.  A unit of work is a transaction in the worker and a
 * subtransaction of the caller's transaction in process(), which cannot
 * commit (SacEnv).  Each job has a memory context of its own, dropped once
 * it is applied; the loop's own allocations go at every turn.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "common/hashfn.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/hsearch.h"
#include "utils/snapmgr.h"
#include "utils/array.h"
#include "utils/uuid.h"

#include "apply.h"
#include "fetch.h"
#include "job.h"
#include "oauth.h"
#include "pipeline.h"
#include "queue.h"
#include "resolve.h"

PG_FUNCTION_INFO_V1(sac_webhook_process);

/* Where a job is in the pipeline */
typedef enum JobState
{
	JOB_NEW,					/* just claimed */
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

/*
 * Fill in a job's key in the job table, in place: the key is hashed whole,
 * padding included, so it is zeroed first (a copy need not keep padding).
 */
static void
job_key(JobKey *key, int64 id, bool is_sync)
{
	memset(key, 0, sizeof(*key));
	key->id = id;
	key->is_sync = is_sync;
}

/* A row the pipeline could not give back, and since when */
typedef struct StrandedRow
{
	JobKey		key;
	TimestampTz since;
} StrandedRow;

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
	int			startable;		/* waiting jobs their tenants let start */
	int			holding;		/* places it holds in the caps on requests
								 * in flight (see take_slot) */
	int			stragglers;		/* requests under way that gave theirs back */
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
	StrandedRow *stranded;		/* rows it could not give back (still ours) */
	int			nstranded;
};

/* Rows the pipeline could not give back, remembered at most */
#define MAX_STRANDED 1024

/*
 * Apply what is ready at least this often, and in groups of at most ...;
 * while there is a backlog (the last claim took all it asked for), rows
 * wait in the inbox anyway: then in groups up to BACKLOG_GROUP_DELAY_MS
 * apart, which cost less per row.
 */
#define GROUP_DELAY_MS 5
#define BACKLOG_GROUP_DELAY_MS 50
#define GROUP_MAX (sac_batch_size)

/*
 * Rows claimed ahead of room to start them, so that a request can start as
 * soon as another one ends: a window's worth, and a quarter more
 */
#define PREFETCHED(window) ((window) + (window) / 4)

/* Claims close together are merged (when woken by new notifications) */
#define CLAIM_INTERVAL_MS 2

/* ... and with less than a quarter of a window free, only after */
#define CLAIM_STEP_MS 50

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

/* Add one to a shared count if it stays within cap */
static bool
count_up(pg_atomic_uint32 *count, uint32 cap)
{
	uint32		cur = pg_atomic_read_u32(count);

	while (cur < cap)
	{
		if (pg_atomic_compare_exchange_u32(count, &cur, cur + 1))
			return true;
	}
	return false;
}

/* Why a request may not start now */
typedef enum SlotResult
{
	SLOT_TAKEN,
	SLOT_ALL_BUSY,				/* max_in_flight requests are under way */
	SLOT_TENANT_BUSY			/* ... or as many of the tenant's as its window */
} SlotResult;

/*
 * Take a place for one request of tenant t under the caps on requests in
 * flight: over all processes in shared memory (without it, in process()
 * with the library not preloaded, over this process alone).
 */
static SlotResult
take_slot(SacPipeline *p, SacTenant *t)
{
	uint32		tenant_cap = (uint32) Max((int) t->window, 1);

	if (sac_shared == NULL)
	{
		if (p->holding >= p->window)
			return SLOT_ALL_BUSY;
		if (t->in_flight >= (int) tenant_cap)
			return SLOT_TENANT_BUSY;
		return SLOT_TAKEN;
	}
	/* a fair share of the tenant's cap while other processes want it too */
	{
		uint32		wanting = Max(pg_atomic_read_u32(&sac_shared->tenant_wanting[t->slot]), 1);

		if ((uint32) t->in_flight >= (tenant_cap + wanting - 1) / wanting)
			return SLOT_TENANT_BUSY;
	}
	if (!count_up(&sac_shared->in_flight, (uint32) p->window))
		return SLOT_ALL_BUSY;
	if (!count_up(&sac_shared->tenant_in_flight[t->slot], tenant_cap))
	{
		pg_atomic_fetch_sub_u32(&sac_shared->in_flight, 1);
		return SLOT_TENANT_BUSY;
	}
	return SLOT_TAKEN;
}

/* Give back a place taken by take_slot() */
static void
give_slot(SacPipeline *p, SacJob *job)
{
	if (!job->holds_slot)
		return;
	job->holds_slot = false;
	p->holding--;
	if (sac_shared != NULL)
	{
		pg_atomic_fetch_sub_u32(&sac_shared->in_flight, 1);
		pg_atomic_fetch_sub_u32(&sac_shared->tenant_in_flight[job->tenant->slot], 1);
	}
}

/* Take a job off the list of requests under way */
static void
flying_remove(SacPipeline *p, SacJob *job)
{
	SacJob	   *last = p->flying.jobs[--p->flying.n];

	p->flying.jobs[job->fly_slot] = last;
	last->fly_slot = job->fly_slot;
	job->tenant->in_flight--;
	if (job->holds_slot)
		give_slot(p, job);
	else
		p->stragglers--;
}

/*
 * The pipeline whose places in the shared counts go back should the
 * process exit without destroying it (FATAL in process()), and the exit
 * callback that does so, registered once per process.
 */
static SacPipeline *exiting_pipeline = NULL;
static bool exit_callback_registered = false;

static void tenant_wants(SacTenant *t, bool wants);

/* Give back what the pipeline counts in shared memory */
static void
release_shared(SacPipeline *p)
{
	HASH_SEQ_STATUS seq;
	TenantEntry *te;

	for (int i = 0; i < p->flying.n; i++)
		give_slot(p, p->flying.jobs[i]);
	hash_seq_init(&seq, p->tenant_table);
	while ((te = hash_seq_search(&seq)) != NULL)
		tenant_wants(te->tenant, false);
}

static void
give_back_at_exit(int code, Datum arg)
{
	SacPipeline *p = exiting_pipeline;

	(void) code;
	(void) arg;
	if (p == NULL)
		return;
	release_shared(p);
	exiting_pipeline = NULL;
}

static int64
ms_between(TimestampTz from, TimestampTz to)
{
	return (to - from) / 1000;
}

/*
 * How many rows may be in the pipeline for a window of requests: enough to
 * refill it at once as answers come, and at least a group's worth (so
 * that a fast API is applied in large groups).
 */
static int
claims(int window)
{
	int			n = Max(PREFETCHED(window), sac_batch_size);

	/* under a request-rate cap, no more than about ten seconds' worth */
	if (sac_max_requests_per_second > 0)
		n = Min(n, Max((int) (sac_max_requests_per_second * 10 / Max(sac_workers, 1)), 1));
	return n;
}

/*
 * ... and for a tenant: up to half of them while its window is whole (the
 * other half is for the other tenants); only its window and a quarter
 * while the API slows it down (so that its backlog stays in the inbox);
 * none while it waits for a Retry-After.  (t NULL: a tenant it knows
 * nothing of.)
 */
static int
tenant_claims(const SacPipeline *p, const SacTenant *t, TimestampTz now)
{
	int			n;

	if (t != NULL && now < t->paused_until)
		return 0;
	if (t == NULL || t->window >= p->tenant_window)
		n = Max(PREFETCHED(p->tenant_window), claims(p->window) / 2);
	else
		n = PREFETCHED(Max((int) t->window, 1));
	/* under a tenant's request-rate cap, no more than about ten seconds' worth */
	if (p->tenant_rate > 0)
		n = Min(n, Max((int) (p->tenant_rate * 10), 1));
	return n;
}

/*
 * The limits, from the settings (again after a reload): the caps on
 * requests in flight hold over all processes through the counts in shared
 * memory (see take_slot); of the request rates each worker keeps its share.
 * Tenants' windows shrink to fit.
 */
static void
set_limits(SacPipeline *p)
{
	int			workers = Max(sac_workers, 1);
	int			old_tenant_window = p->tenant_window;

	p->window = sac_max_in_flight;
	p->tenant_window = sac_max_in_flight_per_tenant;
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
	p->stranded = MemoryContextAlloc(cxt, sizeof(StrandedRow) * MAX_STRANDED);
	/* room for the stragglers, and for probes */
	p->engine = sac_http_engine_create(p->window * 2);
	if (!exit_callback_registered)
	{
		before_shmem_exit(give_back_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}
	exiting_pipeline = p;
	return p;
}

/*
 * Drop the pipeline: transfers under way are abandoned (call
 * sac_pipeline_drain() first to give its rows back).
 */
void
sac_pipeline_destroy(SacPipeline *p)
{
	release_shared(p);
	if (exiting_pipeline == p)
		exiting_pipeline = NULL;
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
		t->slot = hash_bytes((const unsigned char *) id, sizeof(pg_uuid_t)) % SAC_TENANT_SLOTS;
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
	Datum	   *again;			/* rows it claimed that were in the pipeline */
	int			nagain;
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
	TupleDesc	td;

	if (SPI_tuptable == NULL || SPI_processed == 0)
		return;
	td = SPI_tuptable->tupdesc;
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

		s = TextDatumGetCString(SPI_getbinval(tup, td, 2, &isnull));
		job_key(&key, DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull)), strcmp(s, "sync") == 0);
		entry = hash_search(p->job_table, &key, HASH_ENTER, &found);
		if (found)
		{
			/*
			 * Ours already: its lease ran out while it waited, and the claim
			 * took it again, clearing its refetch.  A notification may have
			 * come in meanwhile: the row is fetched again once finished.
			 */
			if (!key.is_sync && c->nagain < c->limit)
				c->again[c->nagain++] = Int64GetDatum(key.id);
			continue;
		}

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
 * The claims' parameters: the rows this process holds but could not give
 * back ($9: inbox rows, or syncs with syncs true) and whether its pipeline
 * holds none at all ($13), and the room of each tenant the pipeline knows
 * that has less than the default ($10, $11).
 */
static void
claim_arrays(SacPipeline *p, bool syncs, Datum *values)
{
	HASH_SEQ_STATUS seq;
	TenantEntry *te;
	Datum	   *ids = palloc(sizeof(Datum) * Max(p->nstranded, 1));
	Datum	   *tids = palloc(sizeof(Datum) * Max(hash_get_num_entries(p->tenant_table), 1));
	Datum	   *rooms = palloc(sizeof(Datum) * Max(hash_get_num_entries(p->tenant_table), 1));
	int			nids = 0;
	int			ntenants = 0;
	TimestampTz now = GetCurrentTimestamp();
	int			default_room = tenant_claims(p, NULL, now);

	for (int i = 0; i < p->nstranded; i++)
		if (p->stranded[i].key.is_sync == syncs)
			ids[nids++] = Int64GetDatum(p->stranded[i].key.id);

	hash_seq_init(&seq, p->tenant_table);
	while ((te = hash_seq_search(&seq)) != NULL)
	{
		SacTenant  *t = te->tenant;
		int			room = Max(tenant_claims(p, t, now) - t->active, 0);

		if (room >= default_room)
			continue;
		tids[ntenants] = UUIDPGetDatum(&t->id);
		rooms[ntenants++] = Int32GetDatum(room);
	}
	values[8] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[9] = PointerGetDatum(construct_array(tids, ntenants, UUIDOID, UUID_LEN, false,
												TYPALIGN_CHAR));
	values[10] = PointerGetDatum(construct_array(rooms, ntenants, INT4OID, 4, true,
												 TYPALIGN_INT));
	values[12] = BoolGetDatum(syncs ? p->walks == 0 : p->njobs - p->walks == 0);
}

/*
 * Forget the rows the pipeline could not give back that a claim took
 * again, or whose lease has run out since (anyone may take them now).
 */
static void
forget_stranded(SacPipeline *p, TimestampTz now, int lease_s)
{
	int			kept = 0;

	for (int i = 0; i < p->nstranded; i++)
	{
		StrandedRow *row = &p->stranded[i];

		/* moved bytewise: the key's padding must stay zero (it is hashed) */
		if (hash_search(p->job_table, &row->key, HASH_FIND, NULL) == NULL &&
			!TimestampDifferenceExceeds(row->since, now, lease_s * 1000))
			memmove(&p->stranded[kept++], row, sizeof(StrandedRow));
	}
	p->nstranded = kept;
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
	Datum		values[SAC_CLAIM_NARGS];
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
	values[7] = Int32GetDatum(tenant_claims(p, NULL, 0));
	claim_arrays(p, false, values);
	values[11] = Int32GetDatum(tenant_claims(p, NULL, 0));

	if (c->limit > 0)
	{
		c->live_full = sac_queue_claim(SAC_CLAIM_NOTIFICATIONS, values) >= (uint64) c->limit;
		collect_claimed(c);
	}

	/* in the room notifications leave: work queued by syncs, then walks */
	if (c->njobs < c->limit && sac_sync_batch_size > 0 && (sync_room > 0 || walk_room > 0))
		sac_queue_sync_pending(&sync_work, &walks);
	if (sync_work && sync_room > 0 && c->njobs < c->limit)
	{
		int			want = Min(c->limit - c->njobs, sync_room);

		values[0] = Int32GetDatum(want);
		values[11] = Int32GetDatum(Max(sac_sync_batch_size / 4, 1));
		c->sync_full = sac_queue_claim(SAC_CLAIM_SYNC_WORK, values) >= (uint64) want;
		collect_claimed(c);
	}
	if (walks && walk_room > 0 && c->njobs < c->limit)
	{
		values[0] = Int32GetDatum(Min(c->limit - c->njobs, walk_room));
		claim_arrays(p, true, values);
		sac_queue_claim(SAC_CLAIM_WALKS, values);
		collect_claimed(c);
	}

	if (c->housekeeping)
	{
		sac_queue_prune();
		sac_queue_periodic_syncs();
	}
	/* syncs whose queued work is over are done (when idle, or now and then) */
	if (c->housekeeping || (c->njobs == 0 && p->njobs == 0))
		sac_queue_finish_syncs();

	if (c->nagain > 0)
		sac_queue_mark_refetch(c->again, c->nagain);

	/* nothing claimed and nothing in the pipeline: how long may it sleep? */
	c->next_due_ms = c->njobs == 0 && p->njobs == 0 ? sac_queue_next_due_ms() : -1;
}

/*
 * Say in shared memory whether this process has requests of tenant t
 * waiting to start: the tenant's cap is shared among the processes that
 * want it (see take_slot).
 */
static void
tenant_wants(SacTenant *t, bool wants)
{
	if (sac_shared == NULL || t->wants == wants)
		return;
	t->wants = wants;
	if (wants)
		pg_atomic_fetch_add_u32(&sac_shared->tenant_wanting[t->slot], 1);
	else
		pg_atomic_fetch_sub_u32(&sac_shared->tenant_wanting[t->slot], 1);
}

/*
 * Move a job to another state, keeping its tenant's counts: active (a
 * request under way or to come), waiting (to start).
 */
static void
set_state(SacJob *job, JobState state)
{
	SacTenant  *t = job->tenant;
	bool		was_active = job->state == JOB_WAITING || job->state == JOB_IN_FLIGHT ||
		job->state == JOB_PARKED;
	bool		active = state == JOB_WAITING || state == JOB_IN_FLIGHT || state == JOB_PARKED;

	t->active += (int) active - (int) was_active;
	t->waiting += (int) (state == JOB_WAITING) - (int) (job->state == JOB_WAITING);
	job->state = state;
	tenant_wants(t, t->waiting > 0);
}

/*
 * Take a job out of the pipeline (applied, or its claim rolled back) and
 * free its memory.
 */
static void
forget_job(SacPipeline *p, SacJob *job)
{
	JobKey		key;

	job_key(&key, job->id, job->is_sync);
	hash_search(p->job_table, &key, HASH_REMOVE, NULL);
	job->tenant->claimed--;
	p->njobs--;
	if (job->is_sync)
		p->walks--;
	else if (job->sync_id != 0)
		p->sync_rows--;
	MemoryContextDelete(job->cxt);
}

/*
 * Put a decided job in the queue of what is applied next.
 */
static void
job_ready(SacPipeline *p, SacJob *job)
{
	set_state(job, JOB_READY);
	job->ready_at = GetCurrentTimestamp();
	array_push(p, &p->ready, job);
}

/*
 * Queue a job's next request.
 */
static void
job_wait(SacPipeline *p, SacJob *job)
{
	set_state(job, JOB_WAITING);
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
	c.jobs = palloc(sizeof(SacJob *) * Max(limit, 1));
	c.again = palloc(sizeof(Datum) * Max(limit, 1));

	p->last_claim_at = c.now;
	p->woken = false;
	p->applied = false;
	if (!sac_run_unit(p->env, claim_unit, &c, &error))
	{
		/* the claim was rolled back: so are the jobs it had collected */
		for (int i = 0; i < c.njobs; i++)
			forget_job(p, c.jobs[i]);
		MemoryContextSwitchTo(old);
		MemoryContextDelete(tmp);
		sac_report_unit_error(p->env->own_transactions ? WARNING : ERROR, &error,
							  "while claiming inbox rows");
		return -1;
	}
	/* more is due: the claim took its limit, or a tenant all its room */
	p->claim_more = c.live_full || c.sync_full;
	for (int i = 0; i < c.njobs && !p->claim_more; i++)
		p->claim_more = c.jobs[i]->tenant->claimed >= tenant_claims(p, c.jobs[i]->tenant, c.now);
	p->next_due_ms = c.next_due_ms;
	if (p->nstranded > 0)
		forget_stranded(p, c.now, c.lease_s);
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

		set_state(job, JOB_WAITING);
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
	TimestampTz next_straggler = 0;
	TimestampTz slow = TimestampTzPlusMilliseconds(now, -STRAGGLER_MS);
	bool		others = false;

	p->next_start_at = 0;
	p->startable = 0;
	if (p->waiting.n == 0)
		return;
	if (p->rate > 0)
		refill(&p->tokens, &p->tokens_at, p->rate, now);

	/* requests slow to answer give their places back (half a window at most) */
	for (i = 0; i < p->flying.n; i++)
	{
		SacJob	   *job = p->flying.jobs[i];

		if (!job->holds_slot)
			continue;
		if (p->stragglers >= p->window / 2)
		{
			next_straggler = 0;	/* no more of them: wait for answers */
			break;
		}
		if (job->sent_at < slow)
		{
			give_slot(p, job);
			p->stragglers++;
		}
		else if (next_straggler == 0 || job->sent_at < next_straggler)
			next_straggler = job->sent_at;
	}

	for (i = 0; i < p->waiting.n; i++)
	{
		SacJob	   *job = p->waiting.jobs[i];
		SacTenant  *t = job->tenant;
		SlotResult	slot;

		if (job->state != JOB_WAITING)
			continue;			/* decided meanwhile */
		if (now < t->paused_until)
		{
			if (p->next_start_at == 0 || t->paused_until < p->next_start_at)
				p->next_start_at = t->paused_until;
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
		slot = take_slot(p, t);
		if (slot == SLOT_TENANT_BUSY)
		{
			/* another process's answers may free it: look again soon */
			others |= t->in_flight == 0;
			p->waiting.jobs[kept++] = job;
			continue;
		}
		if (slot == SLOT_ALL_BUSY)
		{
			/* until an answer comes, or a request turns straggler */
			if (next_straggler != 0)
				p->next_start_at = TimestampTzPlusMilliseconds(next_straggler, STRAGGLER_MS);
			others |= p->holding == 0;
			break;
		}
		if (p->rate > 0)
			p->tokens -= 1;
		if (p->tenant_rate > 0)
			t->tokens -= 1;

		/* on the list first: should starting fail, the place goes back */
		job->holds_slot = true;
		p->holding++;
		job->req.cxt = job->cxt;
		job->req.owner = job;
		job->sent_at = now;
		if (job->started_at == 0)
			job->started_at = now;
		set_state(job, JOB_IN_FLIGHT);
		job->fly_slot = p->flying.n;
		array_push(p, &p->flying, job);
		t->in_flight++;
		sac_http_start(p->engine, &job->req);
	}
	/* what was not looked at stays, in order */
	for (; i < p->waiting.n; i++)
		if (p->waiting.jobs[i]->state == JOB_WAITING)
			p->waiting.jobs[kept++] = p->waiting.jobs[i];
	p->waiting.n = kept;

	/* held back by other processes' requests alone: no answer of ours will wake us */
	if (others)
	{
		TimestampTz soon = TimestampTzPlusMilliseconds(now, GROUP_DELAY_MS);

		if (p->next_start_at == 0 || soon < p->next_start_at)
			p->next_start_at = soon;
	}

	/* how many could start as soon as there is room */
	for (i = 0; i < p->waiting.n; i++)
		if (now >= p->waiting.jobs[i]->tenant->paused_until)
			p->startable++;
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
 * Retry-After with a 5xx) halves its window (or what of it was in use),
 * at most once for the requests
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
			/* half of what was really under way (this one included) */
			t->window = Max(Min(t->window, (double) (t->in_flight + 1)) / 2, 1.0);
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
	set_state(job, JOB_PARKED);
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
		if ((t->access_token == NULL || req->bearer == NULL ||
			 strcmp(t->access_token, req->bearer) == 0) &&
			!(t->unavailable && t->refused_token == req->bearer))
			refresh_tenant(p, t, req->bearer);
		if (t->unavailable)
		{
			job->http_status = (int) req->status;
			defer_unavailable(job);
			job_ready(p, job);
			return;
		}
		if (t->access_token != NULL &&
			(req->bearer == NULL || strcmp(t->access_token, req->bearer) != 0))
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

		/* still ours: a later claim takes it back (beyond, its lease runs out) */
		if (job->stranded && p->nstranded < MAX_STRANDED)
		{
			job_key(&p->stranded[p->nstranded].key, job->id, job->is_sync);
			p->stranded[p->nstranded++].since = GetCurrentTimestamp();
		}
		forget_job(p, job);
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
 * again), as soon as few claimed rows are left to start, or most of the
 * rows have left, else a little later (each claim steps over the rows the
 * workers hold, so a backlog is claimed in large steps); else at the time
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
										   p->startable < p->window / 4 ||
										   room >= claims(p->window) * 3 / 4 ?
										   CLAIM_INTERVAL_MS : CLAIM_STEP_MS);
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
		int			room = claims(p->window) - (p->njobs - p->ready.n);
		SacHttpWake wake;
		SacHttpRequest *req;
		long		timeout;
		TimestampTz until;
		int			group_delay;

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
		 * Apply what is ready: a full group, one that waited long enough
		 * (see BACKLOG_GROUP_DELAY_MS), or all of it when nothing else is in
		 * the pipeline.
		 */
		group_delay = p->claim_more ? BACKLOG_GROUP_DELAY_MS : GROUP_DELAY_MS;
		if (p->ready.n > 0 &&
			(p->ready.n >= GROUP_MAX ||
			 ms_between(p->ready.jobs[0]->ready_at, now) >= group_delay ||
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
			until = Min(until, TimestampTzPlusMilliseconds(p->ready.jobs[0]->ready_at, group_delay));
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
