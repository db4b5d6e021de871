/*-------------------------------------------------------------------------
 *
 * sac_webhook.c
 *		Module load: configuration parameters, shared memory and the
 *		registration of the background worker.
 *
 * Loaded through shared_preload_libraries, the module reserves a small
 * shared-memory block (worker latches and counters) and starts the
 * background worker(s).  Loaded on demand in a session, parse(), receive()
 * and process() work all the same; only the worker and its counters are
 * missing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "sac_webhook.h"

PG_MODULE_MAGIC;

/* GUC variables */
char	   *sac_database = NULL;
int			sac_workers = 2;
char	   *sac_api_base_url = NULL;
char	   *sac_token_url = NULL;
int			sac_connect_timeout_ms = 5000;
int			sac_request_timeout_ms = 10000;
int			sac_max_in_flight = 256;
int			sac_max_in_flight_per_tenant = 64;
double		sac_max_requests_per_second = 0;
double		sac_max_requests_per_second_per_tenant = 0;
int			sac_batch_size = 500;
int			sac_max_attempts = 12;
int			sac_retry_base_delay_ms = 1000;
int			sac_retry_max_delay_s = 900;
int			sac_lease_s = 120;
int			sac_done_retention_s = 86400;
int			sac_poll_interval_ms = 10000;
int			sac_max_response_bytes = 1024 * 1024;
bool		sac_confirm_deletions = true;
int			sac_not_found_retries = 3;
int			sac_not_found_delay_ms = 2000;
int			sac_deletion_rechecks = 3;
int			sac_deletion_recheck_delay_ms = 60000;
int			sac_api_alive_window_s = 0;
int			sac_resync_interval_s = 3600;
int			sac_sync_batch_size = 32;
bool		sac_onboarding_sync = true;
char	   *sac_ca_file = NULL;
int			sac_token_refresh_margin_s = 60;

SacSharedState *sac_shared = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

void		_PG_init(void);

/*
 * Reserve our shared memory (PostgreSQL 15 and later ask in a hook).
 */
#if PG_VERSION_NUM >= 150000
static void
sac_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(SacSharedState)));
}
#endif

/*
 * Create or attach to the shared state.
 */
static void
sac_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sac_shared = ShmemInitStruct("sac_webhook", sizeof(SacSharedState), &found);
	if (!found)
	{
		memset(sac_shared->worker_latch, 0, sizeof(sac_shared->worker_latch));
		pg_atomic_init_u64(&sac_shared->fetches, 0);
		pg_atomic_init_u64(&sac_shared->fetch_failures, 0);
		pg_atomic_init_u64(&sac_shared->applied, 0);
		pg_atomic_init_u64(&sac_shared->deleted, 0);
		pg_atomic_init_u64(&sac_shared->token_refreshes, 0);
		pg_atomic_init_u64(&sac_shared->token_failures, 0);
		pg_atomic_init_u32(&sac_shared->in_flight, 0);
		for (int i = 0; i < SAC_TENANT_SLOTS; i++)
		{
			pg_atomic_init_u32(&sac_shared->tenant_in_flight[i], 0);
			pg_atomic_init_u32(&sac_shared->tenant_wanting[i], 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Is url an http(s) URL of the shape the tenants table accepts for
 * api_base_url (its CHECK constraint spells the same rule): a scheme, a
 * host (and port) with no user information, and an optional path, with no
 * query, fragment, white space or control character.
 */
static bool
valid_http_url(const char *url)
{
	const char *p;
	const char *host;

	if (pg_strncasecmp(url, "https://", 8) == 0)
		p = url + 8;
	else if (pg_strncasecmp(url, "http://", 7) == 0)
		p = url + 7;
	else
		return false;
	host = p;
	for (; *p != '\0' && *p != '/'; p++)
		if (strchr("?#@", *p) != NULL || isspace((unsigned char) *p) ||
			(unsigned char) *p < 0x20 || *p == 0x7f)
			return false;
	if (p == host)
		return false;
	for (; *p != '\0'; p++)
		if (strchr("?#", *p) != NULL || isspace((unsigned char) *p) ||
			(unsigned char) *p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/*
 * GUC check hook: an API or token URL must be a plain http(s) URL.
 */
static bool
check_http_url(char **newval, void **extra, GucSource source)
{
	(void) extra;
	(void) source;
	if (*newval == NULL)
		return true;
	if (!valid_http_url(*newval))
	{
		GUC_check_errdetail("The URL must start with \"https://\" or \"http://\" and name a host, "
							"with no user name, query, fragment or white space.");
		return false;
	}
	return true;
}

/*
 * Module load: define the GUCs, and when preloaded, shared memory and the
 * background worker.
 */
void
_PG_init(void)
{
	DefineCustomStringVariable("sac_webhook.api_base_url",
							   "Base URL of the seller API, for tenants without their own.",
							   NULL, &sac_api_base_url, "https://api.magalu.com/seller",
							   PGC_SUSET, 0, check_http_url, NULL, NULL);
	DefineCustomStringVariable("sac_webhook.token_url",
							   "OAuth token endpoint used to refresh access tokens.",
							   NULL, &sac_token_url, "https://id.magalu.com/oauth/token",
							   PGC_SUSET, 0, check_http_url, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.connect_timeout",
							"Timeout for opening an HTTP connection.",
							NULL, &sac_connect_timeout_ms, 5000, 100, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.request_timeout",
							"Timeout for a whole HTTP request, connection included.",
							NULL, &sac_request_timeout_ms, 10000, 100, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.max_in_flight",
							"Largest number of concurrent API requests, over all workers.",
							NULL,
							&sac_max_in_flight, 256, 1, 10000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.max_in_flight_per_tenant",
							"Largest number of concurrent API requests for one tenant, over all workers.",
							"A tenant answered with HTTP 429 gets fewer for a while.",
							&sac_max_in_flight_per_tenant, 64, 1, 10000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("sac_webhook.max_requests_per_second",
							 "Largest rate of API requests, over all workers (0: no limit).",
							 "Each worker keeps its share (divided by sac_webhook.workers).",
							 &sac_max_requests_per_second, 0, 0, 1000000,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("sac_webhook.max_requests_per_second_per_tenant",
							 "Largest rate of API requests for one tenant, over all workers (0: no limit).",
							 "Each worker keeps its share (divided by sac_webhook.workers).",
							 &sac_max_requests_per_second_per_tenant, 0, 0, 1000000,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("sac_webhook.ca_file",
							   "File of CA certificates that HTTPS servers are checked against.",
							   "Empty: the system's (libcurl's default).",
							   &sac_ca_file, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.batch_size",
							"Largest group of results applied in one transaction, and rows a worker holds beyond its requests in flight.",
							NULL, &sac_batch_size, 500, 1, 5000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.max_attempts",
							"Attempts before a notification is marked dead.",
							NULL, &sac_max_attempts, 12, 1, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.retry_base_delay",
							"First retry delay; each further retry doubles it.",
							NULL, &sac_retry_base_delay_ms, 1000, 1, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.retry_max_delay",
							"Longest delay between two retries.",
							NULL, &sac_retry_max_delay_s, 900, 1, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.lease_time",
							"How long a claimed row stays claimed before another worker may take it.",
							NULL, &sac_lease_s, 120, 5, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.done_retention",
							"How long finished inbox rows are kept (0 deletes them at once).",
							NULL, &sac_done_retention_s, 86400, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.poll_interval",
							"Fallback polling interval of the worker.",
							NULL, &sac_poll_interval_ms, 10000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.max_response_size",
							"Largest accepted API response body.",
							NULL, &sac_max_response_bytes, 1024 * 1024, 1024, 256 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomBoolVariable("sac_webhook.confirm_deletions",
							 "Apply a DELETION only once the API says the resource is gone.",
							 NULL, &sac_confirm_deletions, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.not_found_retries",
							"Retries of a 404 for a CREATION or UPDATE before the resource is taken as gone.",
							NULL, &sac_not_found_retries, 3, 0, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.not_found_retry_delay",
							"Delay before re-fetching a resource that answered 404 after a CREATION or UPDATE.",
							NULL, &sac_not_found_delay_ms, 2000, 1, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.deletion_rechecks",
							"Times a DELETION the API does not confirm is checked again.",
							"Each re-check waits four times as long as the one before.",
							&sac_deletion_rechecks, 3, 0, 20,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.deletion_recheck_delay",
							"Delay before the first re-check of a DELETION the API does not confirm.",
							NULL, &sac_deletion_recheck_delay_ms, 60000, 1, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.api_alive_window",
							"How recent a 200 from a tenant's API must be for a 404 to delete.",
							"Without one, a probe of the tenant's ticket list must answer 200 first.",
							&sac_api_alive_window_s, 0, 0, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.resync_interval",
							"How often each tenant is reconciled with what changed since the last time (0: never).",
							NULL, &sac_resync_interval_s, 3600, 0, 7 * 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.sync_batch_size",
							"Rows of reconciliation work a batch takes at most, in the room notifications leave (0: none).",
							"A quarter of them at most from one tenant.",
							&sac_sync_batch_size, 32, 0, 5000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("sac_webhook.onboarding_sync",
							 "Registering or enabling a tenant queues a full reconciliation of its tickets.",
							 NULL, &sac_onboarding_sync, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sac_webhook.token_refresh_margin",
							"Refresh an access token this long before it expires.",
							NULL, &sac_token_refresh_margin_s, 60, 0, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);

	/*
	 * The worker's settings exist only where the worker can: a postmaster
	 * setting cannot be defined once the server runs.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("sac_webhook.database",
								   "Database in which the background worker applies notifications.",
								   NULL, &sac_database, "postgres",
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomIntVariable("sac_webhook.workers",
								"Number of background workers (0 disables them).",
								NULL, &sac_workers, 2, 0, SAC_MAX_WORKERS,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
	}

	/* last: this drops placeholders of settings not defined by now */
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("sac_webhook");
#else
	EmitWarningsOnPlaceholders("sac_webhook");
#endif

	if (!process_shared_preload_libraries_in_progress)
		return;

#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = sac_shmem_request;
#else
	RequestAddinShmemSpace(MAXALIGN(sizeof(SacSharedState)));
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = sac_shmem_startup;

	sac_register_worker();
}
