/*-------------------------------------------------------------------------
 *
 * sac_webhook.h
 *		Declarations shared by the modules of the sac_webhook extension.
 *
 * The extension keeps a live copy of Magalu seller customer-service
 * tickets and messages.  Modules, one per concern:
 *
 *	sac_webhook.c	module load: GUCs, shared memory, worker registration
 *	parse.c			strict webhook JSON parsing (parse())
 *	inbox.c			the durable inbox: receive(), requeue, worker wake-up
 *	fetch.c			HTTP GETs of resources with libcurl (multi interface)
 *	oauth.c			per-tenant OAuth access tokens and their refresh
 *	apply.c			applying fetched results to tickets/messages
 *	pipeline.c		claim -> fetch -> apply, shared by worker and process()
 *	worker.c		the background worker loop
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_WEBHOOK_H
#define SAC_WEBHOOK_H

#include "postgres.h"

#include "storage/latch.h"
#include "port/atomics.h"
#include "utils/uuid.h"

/*
 * Webhook topics, and the inbox's own: a ticket's whole message list, which
 * reconciliation queues
 */
typedef enum SacTopic
{
	SAC_TOPIC_TICKET,
	SAC_TOPIC_MESSAGE,
	SAC_TOPIC_TICKET_MESSAGES
} SacTopic;

/* Change kinds, in the order of the SQL enum sac_webhook.change */
typedef enum SacChange
{
	SAC_CHANGE_CREATION,
	SAC_CHANGE_UPDATE,
	SAC_CHANGE_DELETION
} SacChange;

/* Longest resource path: /v0/tickets/<36>/messages/<36> */
#define SAC_RESOURCE_MAXLEN 96

/* A validated notification, as produced by the parser */
typedef struct SacNotification
{
	SacTopic	topic;
	SacChange	status;
	pg_uuid_t	tenant_id;
	pg_uuid_t	ticket_id;
	pg_uuid_t	message_id;	/* only for SAC_TOPIC_MESSAGE */
	char		resource[SAC_RESOURCE_MAXLEN];	/* canonical, lower case */
} SacNotification;

/* The extension version (SQL objects) this library works with */
#define SAC_EXTENSION_VERSION "0.3.0"

/*
 * The search_path of every session that runs the pipeline: the worker runs
 * as a superuser, so nothing a database owner creates may be resolved.
 */
#define SAC_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

#define SAC_MAX_WORKERS 8

/*
 * Requests in flight are counted per tenant in this many slots (a tenant's
 * is the hash of its id; tenants that share a slot share its count, which
 * errs on the side of fewer requests)
 */
#define SAC_TENANT_SLOTS 4096

/*
 * Shared state, present when the library is in shared_preload_libraries.
 */
typedef struct SacSharedState
{
	Latch	   *worker_latch[SAC_MAX_WORKERS];	/* set at commit of receive() */
	pg_atomic_uint64 fetches;	/* HTTP GETs completed (any status) */
	pg_atomic_uint64 fetch_failures;	/* transport errors, 429 and 5xx */
	pg_atomic_uint64 applied;	/* rows upserted */
	pg_atomic_uint64 deleted;	/* rows deleted */
	pg_atomic_uint64 token_refreshes;	/* successful token refreshes */
	pg_atomic_uint64 token_failures;	/* failed token refreshes */
	pg_atomic_uint32 in_flight; /* API requests under way, all processes */
	pg_atomic_uint32 tenant_in_flight[SAC_TENANT_SLOTS];	/* ... by tenant slot */
	pg_atomic_uint32 tenant_wanting[SAC_TENANT_SLOTS];	/* processes with requests
														 * of the slot's tenants
														 * waiting to start */
} SacSharedState;

extern SacSharedState *sac_shared;

/* GUCs (sac_webhook.c) */
extern char *sac_database;
extern char *sac_api_base_url;
extern char *sac_token_url;
extern int	sac_connect_timeout_ms;
extern int	sac_request_timeout_ms;
extern int	sac_max_in_flight;
extern int	sac_max_in_flight_per_tenant;
extern double sac_max_requests_per_second;
extern double sac_max_requests_per_second_per_tenant;
extern int	sac_batch_size;
extern int	sac_max_attempts;
extern int	sac_retry_base_delay_ms;
extern int	sac_retry_max_delay_s;
extern int	sac_lease_s;
extern int	sac_done_retention_s;
extern int	sac_poll_interval_ms;
extern int	sac_max_response_bytes;
extern bool sac_confirm_deletions;
extern int	sac_not_found_retries;
extern int	sac_not_found_delay_ms;
extern int	sac_deletion_rechecks;
extern int	sac_deletion_recheck_delay_ms;
extern int	sac_api_alive_window_s;
extern int	sac_resync_interval_s;
extern int	sac_sync_batch_size;
extern bool sac_onboarding_sync;
extern char *sac_ca_file;
extern int	sac_token_refresh_margin_s;
extern int	sac_workers;

/* parse.c */
extern void sac_parse_payload(const char *json, int len, SacNotification *out);
extern const char *sac_topic_name(SacTopic topic);
extern const char *sac_change_name(SacChange change);
extern void sac_format_resource(char *buf, SacTopic topic,
								const pg_uuid_t *ticket_id,
								const pg_uuid_t *message_id);
extern void sac_uuid_to_cstring(const pg_uuid_t *uuid, char *buf);

/* inbox.c */
extern void sac_wake_worker(void);
extern void sac_wake_worker_at_commit(void);

/* worker.c */
extern void sac_register_worker(void);
PGDLLEXPORT void sac_webhook_worker_main(Datum main_arg);

#endif							/* SAC_WEBHOOK_H */
