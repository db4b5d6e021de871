/*-------------------------------------------------------------------------
 *
 * job.h
 *		What the pipeline's modules hand each other: a claimed row or sync
 *		(SacJob) and what is known of its tenant (SacTenant).  Types only.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_JOB_H
#define SAC_JOB_H

#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "sac_webhook.h"
#include "fetch.h"

/* Syncs a process walks at once at most (each a few pages at a time) */
#define SYNCS_PER_BATCH 4

/* Whether an API base serves GET /v0/tickets/{ticket}/messages/{message} */
typedef enum SacSingleMessage
{
	SAC_SINGLE_UNKNOWN,
	SAC_SINGLE_SERVED,
	SAC_SINGLE_UNSERVED
} SacSingleMessage;

/* A tenant with claimed rows (kept by the pipeline while it has some) */
typedef struct SacTenant
{
	pg_uuid_t	id;
	MemoryContext cxt;			/* its strings */
	char	   *base_url;		/* API base URL without trailing slash */
	char	   *access_token;	/* may be NULL */
	bool		needs_refresh;	/* expired, expiring or missing token */
	bool		refreshed;		/* a refresh was tried (oauth.c) */
	bool		unavailable;	/* refresh failed or is running elsewhere */
	bool		busy;			/* another session is refreshing it */
	bool		backing_off;	/* a refresh failed: the tenant's rows wait
								 * for its token_retry_at */
	char	   *error;			/* why it is unavailable */
	int			failures;		/* refreshes failed in a row */

	/* what the API showed of itself (resolve.c) */
	SacSingleMessage single_message;	/* as known for base_url */
	bool		single_learned; /* the batch learnt something of it */
	SacSingleMessage single_learnt;	/* what: served, not served, or
									 * (unknown) a sign it is not */
	const char *single_evidence;	/* why, for api_bases.evidence */
	bool		ok_recently;	/* answered 200 within sac_webhook.api_alive_window */
	bool		ok_fresh;		/* ... within the last minute: no need to say so */
	bool		ok_now;			/* answered 200 since that was last recorded */

	/* the pipeline's own (pipeline.c) */
	TimestampTz ok_at;			/* its API's last 200, in this process */
	SacHttpRequest probe;		/* a request that shows the API answers */
	MemoryContext probe_cxt;	/* its URL and answer */
	bool		probing;		/* the probe is under way */
	int			claimed;		/* its jobs in the pipeline */
	int			active;			/* ... with a request under way or waiting
								 * to start */
	int			in_flight;		/* ... under way */
	uint32		slot;			/* its count of requests in flight in shared
								 * memory (a hash of its id) */
	int			waiting;		/* its jobs whose request waits to start */
	bool		wants;			/* ... said in shared memory */
	double		window;			/* requests it may have under way: shrinks
								 * on HTTP 429, grows back */
	TimestampTz shrunk_at;		/* when the window last shrank */
	TimestampTz paused_until;	/* Retry-After: no request before */
	double		tokens;			/* request-rate budget */
	TimestampTz tokens_at;
	TimestampTz seen_at;		/* last claimed */
	const char *refused_token;	/* the token a failed refresh was for */
	uint64		mark;			/* pipeline.c: seen in the current group */
} SacTenant;

/* What becomes of a claimed row */
typedef enum SacApplyAction
{
	SAC_ACT_UPSERT,				/* store the fetched document */
	SAC_ACT_LIST,				/* store the ticket's complete message list */
	SAC_ACT_DELETE,				/* delete the resource (or its ticket) */
	SAC_ACT_SYNC,				/* store a sync's pages of tickets */
	SAC_ACT_RETRY,
	SAC_ACT_DEAD
} SacApplyAction;

/* What a job's current request asks for */
typedef enum SacStep
{
	SAC_STEP_RESOURCE,			/* the notified resource itself */
	SAC_STEP_LIST,				/* a page of the ticket's message list */
	SAC_STEP_TICKET,			/* the message's ticket: is it gone? */
	SAC_STEP_SYNC_PAGE			/* a page of the tenant's ticket list */
} SacStep;

/* A document from a message list, with its id */
typedef struct SacListedDoc
{
	pg_uuid_t	id;
	Jsonb	   *doc;
} SacListedDoc;

/*
 * One claimed inbox row, or one claimed sync (is_sync: id is the sync's, and
 * its walk is read a few pages at a time)
 */
typedef struct SacJob
{
	int64		id;
	bool		is_sync;
	int64		sync_id;		/* the sync that queued the row, or 0 */
	bool		sync_full;		/* a sync of every ticket */
	const char *sync_since;		/* updated_at_gte of the walk, or NULL */
	bool		walk_complete;	/* the walk's last page was read */
	int			walk_next_offset;	/* where the walk goes on */
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
	MemoryContext cxt;			/* the job's memory */
	bool		fetch;			/* needs HTTP requests */
	SacHttpRequest req;			/* the current one */
	TimestampTz started_at;		/* its first request */
	TimestampTz sent_at;		/* its current request */
	TimestampTz ready_at;		/* decided, waiting to be applied */
	bool		token_retried;	/* asked again after a 401 */
	int			state;			/* where it is in the pipeline (pipeline.c) */
	int			fly_slot;		/* ... in its list of requests under way */
	bool		holds_slot;		/* its request counts against the caps */

	/* where its requests stand (resolve.c) */
	SacStep		step;
	int			list_offset;	/* of the next page */
	int			list_limit;		/* _limit of the next page; 0: the API's
								 * default */
	int			pages;			/* list pages read */
	bool		single_not_found;	/* the message's own resource said 404 */
	SacListedDoc *listed;		/* the ticket's messages (a sync's tickets) so
								 * far */
	int			nlisted;
	int			listed_cap;
	bool		gone;			/* resolved as gone: deleted once the API is
								 * shown to answer for the tenant */
	bool		delete_ticket;	/* a message whose ticket is gone: delete the
								 * ticket with its messages */

	/* what to do with it */
	bool		decided;
	SacApplyAction action;
	char	   *error;			/* for last_error, or NULL */
	int64		delay_ms;		/* until the next attempt */
	bool		count_attempt;	/* false: the attempt is given back */
	bool		was_not_found;	/* deferred after a 404: counted in not_found */
	bool		recheck;		/* an upsert after a DELETION: the row comes
								 * back later to check again */
	bool		self_listed;	/* LIST: the message itself is in the list */
	const char *rid;			/* " (request id ...)" or "" */
	int			http_status;	/* for last_http_status; 0: none */
	int			unlisted_deleted;	/* LIST: stored messages it deleted */

	/* what came of it (apply.c) */
	Jsonb	   *doc;			/* the fetched document, while applied */
	bool		parsing;		/* reading the document when it failed */
	bool		held;			/* row still ours when finished: result applied */
	bool		finished;		/* row done or dead */
	bool		changed;		/* data changed */
	bool		stranded;		/* could not be given back: still ours */
} SacJob;

#endif							/* SAC_JOB_H */
