/*-------------------------------------------------------------------------
 *
 * queue.h
 *		The inbox and the syncs as a queue (queue.c): claims, look-ups,
 *		pruning, sync housekeeping.  Run inside the caller's unit of work.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SAC_QUEUE_H
#define SAC_QUEUE_H

#include "postgres.h"

/* How far back a sync's walk reaches before its `since` */
#define SAC_SYNC_OVERLAP "5 minutes"

/* Which claim */
typedef enum SacClaimKind
{
	SAC_CLAIM_NOTIFICATIONS,	/* inbox rows of priority 0 */
	SAC_CLAIM_SYNC_WORK,		/* inbox rows a sync queued (priority 1) */
	SAC_CLAIM_WALKS				/* syncs whose walk is due */
} SacClaimKind;

/*
 * The parameters of every claim, by position ($1 = [0]):
 *	 1 int4   rows to claim at most
 *	 2 int4   lease in seconds
 *	 3 int4   the claiming process's pid (lease_owner)
 *	 4 int4   sac_webhook.token_refresh_margin, seconds
 *	 5 bool   take back the rows of owners that are gone (housekeeping)
 *	 6 text   sac_webhook.api_base_url
 *	 7 int4   sac_webhook.api_alive_window, seconds
 *	 8 int4   rows of one tenant at most, for tenants not in $10
 *	 9 int8[] rows (or syncs) of this process it may take back
 *	10 uuid[] tenants with a room of their own ...
 *	11 int4[] ... and that room
 *	12 int4   rows of one tenant at most, whatever its room
 *	13 bool   this process holds none: all of its rows may be taken back
 *
 * The claimed rows' columns: 1 id, 2 topic ('sync' for a walk), 3 status,
 * 4 tenant_id, 5 ticket_id, 6 message_id, 7 attempts, 8 api_base_url,
 * 9 access_token, 10 token needs a refresh, 11 not_found, 12 rechecks,
 * 13 single message served (NULL: not known), 14 API answered within the
 * alive window, 15 sync_id, 16 ... within the last minute; walks add 17
 * full sync, 18 updated_at_gte of the walk, 19 next offset, 20 page limit.
 */
#define SAC_CLAIM_NARGS 13

extern uint64 sac_queue_claim(SacClaimKind kind, Datum *values);
extern void sac_queue_sync_pending(bool *rows, bool *walks);
extern void sac_queue_prune(void);
extern void sac_queue_periodic_syncs(void);
extern void sac_queue_finish_syncs(void);
extern int64 sac_queue_next_due_ms(void);
extern void sac_queue_mark_refetch(Datum *ids, int nids);

#endif							/* SAC_QUEUE_H */
