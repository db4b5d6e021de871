/* sac_webhook--0.1.0--0.2.0.sql: per-tenant token back-off, API timestamps */

\echo Use "ALTER EXTENSION sac_webhook UPDATE TO '0.2.0'" to load this file. \quit

--
-- A tenant whose token refresh failed backs off as a whole: its rows are
-- not claimed before token_retry_at, which doubles with each failure in a
-- row (sac_webhook.retry_base_delay up to sac_webhook.retry_max_delay).
--
ALTER TABLE @extschema@.tenants ADD COLUMN token_retry_at timestamptz;
COMMENT ON COLUMN @extschema@.tenants.token_retry_at IS
	'after a failed token refresh: the tenant''s rows wait until then; NULL: no back-off';

-- New credentials, or enabling the tenant, end its back-off at once.
CREATE FUNCTION @extschema@.tenants_credentials_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF ((NEW.client_id, NEW.client_secret, NEW.refresh_token)
			IS DISTINCT FROM (OLD.client_id, OLD.client_secret, OLD.refresh_token)
		OR (NEW.enabled AND NOT OLD.enabled))
	   AND NEW.token_retry_at IS NOT DISTINCT FROM OLD.token_retry_at
	THEN
		NEW.token_retry_at := NULL;
	END IF;
	RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.tenants_credentials_changed() FROM PUBLIC;
CREATE TRIGGER tenants_credentials_changed BEFORE UPDATE ON @extschema@.tenants
	FOR EACH ROW EXECUTE FUNCTION @extschema@.tenants_credentials_changed();

--
-- A document timestamp: without a zone it is UTC, and so is a date alone.
-- A zone is an offset or Z after a time of day; a date's own "-01" is not
-- one.
--
CREATE OR REPLACE FUNCTION @extschema@.api_timestamp(value text)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN value ~ '\d:\d\d(:\d\d(\.\d*)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)$' THEN value::timestamptz
		ELSE value::timestamp AT TIME ZONE 'UTC'
	END
$$;


--
-- The inbox counts 404s (a CREATION or UPDATE is taken as gone after
-- sac_webhook.not_found_retries more of them, whatever else came in
-- between) and the re-checks of a DELETION the API did not confirm.
--
ALTER TABLE @extschema@.inbox ADD COLUMN not_found integer NOT NULL DEFAULT 0;
ALTER TABLE @extschema@.inbox ADD COLUMN rechecks integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.inbox.not_found IS '404s answered for this row so far';
COMMENT ON COLUMN @extschema@.inbox.rechecks IS 're-checks so far of a DELETION the API did not confirm';

-- Re-queued rows start their 404 count and re-checks afresh.
CREATE OR REPLACE FUNCTION @extschema@.requeue_dead(tenant uuid DEFAULT NULL, topic text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	d record;
	n bigint := 0;
	waiting bigint;
BEGIN
	IF topic IS NOT NULL AND topic NOT IN ('sac_ticket', 'sac_message') THEN
		RAISE EXCEPTION 'unknown webhook topic'
			USING ERRCODE = '22023',
				  DETAIL = format('Topic %L is neither "sac_ticket" nor "sac_message".', topic);
	END IF;
	FOR d IN
		SELECT i.id, i.tenant_id, i.resource, i.notifications
		  FROM sac_webhook.inbox i
		 WHERE i.state = 'dead'
		   AND (requeue_dead.tenant IS NULL OR i.tenant_id = requeue_dead.tenant)
		   AND (requeue_dead.topic IS NULL OR i.topic = requeue_dead.topic)
		 ORDER BY i.id
		   FOR UPDATE
	LOOP
		UPDATE sac_webhook.inbox w
		   SET notifications = w.notifications + d.notifications,
			   refetch = w.refetch OR w.lease_owner IS NOT NULL
		 WHERE w.tenant_id = d.tenant_id AND w.resource = d.resource
		   AND w.state IN ('pending', 'retrying')
		RETURNING w.id INTO waiting;
		IF waiting IS NULL THEN
			UPDATE sac_webhook.inbox
			   SET state = 'pending', attempts = 0, not_found = 0, rechecks = 0, next_attempt_at = now(),
				   finished_at = NULL, lease_until = NULL, lease_owner = NULL
			 WHERE id = d.id;
		ELSE
			DELETE FROM sac_webhook.inbox WHERE id = d.id;
		END IF;
		n := n + 1;
	END LOOP;
	RETURN n;
END
$$;

--
-- A 404 deletes only while the tenant's API is demonstrably answering:
-- when it last answered 200 for the tenant.
--
ALTER TABLE @extschema@.tenants ADD COLUMN api_ok_at timestamptz;
COMMENT ON COLUMN @extschema@.tenants.api_ok_at IS
	'when the API last answered 200 for this tenant (kept to the minute)';

--
-- What each API base showed of itself: whether it serves single messages
-- (GET /v0/tickets/{ticket}/messages/{message}, not documented).  Learnt by
-- the workers; a base found not to serve them is asked again after a day.
--
CREATE TABLE @extschema@.api_bases (
	base_url text PRIMARY KEY,
	single_message_served boolean NOT NULL,
	not_served_signs integer NOT NULL DEFAULT 0,	-- 404s for listed messages in a row
	learned_at timestamptz NOT NULL DEFAULT now(),
	evidence text
);
COMMENT ON TABLE @extschema@.api_bases IS 'what each API base showed of itself, as learnt by the workers';
REVOKE ALL ON @extschema@.api_bases FROM PUBLIC;

--
-- Reconciliation through the API's list endpoints.
--
-- A sync walks GET /v0/tickets for one tenant (tickets updated since
-- `since`, or all of them), stores every listed ticket, and queues in the
-- inbox, at low priority, the reading of each listed ticket's messages
-- and, after a complete walk (since NULL), the check of every stored
-- ticket the walk did not list.  It is finished once those queued rows
-- are.  Registering or enabling a tenant queues one (onboarding); the
-- workers queue one per tenant every sac_webhook.resync_interval
-- (periodic); resync() queues one (manual); a tenant whose token recovers
-- from failing refreshes gets one from when the failures began (recovery).
--
CREATE TABLE @extschema@.syncs (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	tenant_id uuid NOT NULL,
	kind text NOT NULL CHECK (kind IN ('onboarding', 'periodic', 'manual', 'recovery')),
	since timestamptz,				-- NULL: every ticket, and unlisted ones are checked
	started_at timestamptz NOT NULL DEFAULT now(),
	walk_started_at timestamptz,	-- the watermark of the next periodic sync
	walk_finished_at timestamptz,
	finished_at timestamptz,
	state text NOT NULL DEFAULT 'walking'
		CHECK (state IN ('walking', 'confirming', 'done', 'failed')),
	next_offset integer NOT NULL DEFAULT 0,
	page_limit integer NOT NULL DEFAULT 0,	-- 0: the API's default
	pages integer NOT NULL DEFAULT 0,
	tickets_seen integer NOT NULL DEFAULT 0,
	message_lists_queued integer NOT NULL DEFAULT 0,
	messages_seen integer NOT NULL DEFAULT 0,
	checks_queued integer NOT NULL DEFAULT 0,
	tickets_deleted integer NOT NULL DEFAULT 0,
	messages_deleted integer NOT NULL DEFAULT 0,
	stalled_pages integer NOT NULL DEFAULT 0,
	attempts integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	lease_owner integer,
	lease_until timestamptz,
	last_http_status integer,
	last_error text
);
COMMENT ON TABLE @extschema@.syncs IS 'reconciliations through the API''s list endpoints, one row each';
CREATE INDEX syncs_due ON @extschema@.syncs (next_attempt_at) WHERE state = 'walking';
CREATE INDEX syncs_open ON @extschema@.syncs (tenant_id) WHERE finished_at IS NULL;
CREATE INDEX syncs_tenant ON @extschema@.syncs (tenant_id, started_at);

-- the tickets a walk has listed, while it runs
CREATE TABLE @extschema@.sync_seen (
	sync_id bigint NOT NULL,
	ticket_id uuid NOT NULL,
	PRIMARY KEY (sync_id, ticket_id)
);
REVOKE ALL ON @extschema@.syncs, @extschema@.sync_seen FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.syncs_id_seq FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.syncs', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.syncs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.sync_seen', '');

-- Work a sync queues waits behind notifications (priority 1), and a ticket's
-- message list is a job of its own (topic sac_ticket_messages).
ALTER TABLE @extschema@.inbox ADD COLUMN priority smallint NOT NULL DEFAULT 0;
ALTER TABLE @extschema@.inbox ADD COLUMN sync_id bigint;
COMMENT ON COLUMN @extschema@.inbox.priority IS '0: a notification; 1: work queued by a sync';
COMMENT ON COLUMN @extschema@.inbox.sync_id IS 'the sync that queued the row, if any';
ALTER TABLE @extschema@.inbox DROP CONSTRAINT inbox_topic_check;
ALTER TABLE @extschema@.inbox ADD CONSTRAINT inbox_topic_check
	CHECK (topic IN ('sac_ticket', 'sac_message', 'sac_ticket_messages'));
DROP INDEX @extschema@.inbox_due;
CREATE INDEX inbox_due ON @extschema@.inbox (next_attempt_at)
	WHERE state IN ('pending', 'retrying') AND priority = 0;
CREATE INDEX inbox_sync_due ON @extschema@.inbox (tenant_id, next_attempt_at)
	WHERE state IN ('pending', 'retrying') AND priority = 1;
CREATE INDEX inbox_sync ON @extschema@.inbox (sync_id)
	WHERE sync_id IS NOT NULL AND state IN ('pending', 'retrying');

-- when the tenant's token refreshes began to fail (for the recovery sync)
ALTER TABLE @extschema@.tenants ADD COLUMN token_failing_since timestamptz;
-- the tenant's tickets are known to be in step with the API up to then: the
-- start of the last complete walk that reached back that far
ALTER TABLE @extschema@.tenants ADD COLUMN synced_until timestamptz;

-- Wake the workers at commit (as receive() does).
CREATE FUNCTION @extschema@.wake_workers()
RETURNS void
AS 'MODULE_PATHNAME', 'sac_webhook_wake_workers'
LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION @extschema@.wake_workers() FROM PUBLIC;

--
-- resync(tenant, since): queue a reconciliation of one tenant (NULL: every
-- enabled tenant) of the tickets updated since `since` (NULL: all, and
-- stored tickets the complete listing lacks are checked, and deleted once
-- the API confirms they are gone).  A tenant with an unfinished sync that
-- covers as much is left alone.  Returns how many were queued.
--
CREATE FUNCTION @extschema@.resync(tenant uuid DEFAULT NULL, since timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF resync.tenant IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM sac_webhook.tenants t WHERE t.tenant_id = resync.tenant) THEN
		RAISE EXCEPTION 'tenant % is not registered', resync.tenant
			USING ERRCODE = '22023',
				  HINT = 'Insert it into sac_webhook.tenants first.';
	END IF;
	IF resync.since > now() THEN
		RAISE EXCEPTION 'since must not be in the future'
			USING ERRCODE = '22023',
				  DETAIL = format('since is %s.', resync.since);
	END IF;
	n := sac_webhook.queue_sync(resync.tenant, resync.since, 'manual');
	RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@.resync(uuid, timestamptz) IS 'queue a reconciliation through the list endpoints; returns how many were queued';
REVOKE ALL ON FUNCTION @extschema@.resync(uuid, timestamptz) FROM PUBLIC;

-- Queue syncs of one kind for one tenant (NULL: every enabled one) that has
-- none unfinished covering as much; wakes the workers at commit.
CREATE FUNCTION @extschema@.queue_sync(tenant uuid, since timestamptz, kind text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	WITH queued AS (
		INSERT INTO sac_webhook.syncs (tenant_id, kind, since)
		SELECT t.tenant_id, queue_sync.kind, queue_sync.since
		  FROM sac_webhook.tenants t
		 WHERE (queue_sync.tenant IS NULL OR t.tenant_id = queue_sync.tenant)
		   AND (t.enabled OR queue_sync.tenant IS NOT NULL)
		   AND NOT EXISTS (SELECT 1 FROM sac_webhook.syncs s
							WHERE s.tenant_id = t.tenant_id AND s.finished_at IS NULL
							  AND (s.since IS NULL OR s.since <= queue_sync.since))
		RETURNING 1)
	SELECT count(*) INTO n FROM queued;
	IF n > 0 THEN
		PERFORM sac_webhook.wake_workers();
	END IF;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.queue_sync(uuid, timestamptz, text) FROM PUBLIC;

-- Registering or enabling a tenant queues its onboarding: a full sync
-- (unless sac_webhook.onboarding_sync is off).
CREATE FUNCTION @extschema@.tenants_onboard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.enabled AND (TG_OP = 'INSERT' OR NOT OLD.enabled)
	   AND coalesce(current_setting('sac_webhook.onboarding_sync', true), 'on') <> 'off' THEN
		PERFORM sac_webhook.queue_sync(NEW.tenant_id, NULL, 'onboarding');
	END IF;
	RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.tenants_onboard() FROM PUBLIC;
CREATE TRIGGER tenants_onboard AFTER INSERT OR UPDATE OF enabled ON @extschema@.tenants
	FOR EACH ROW EXECUTE FUNCTION @extschema@.tenants_onboard();

--
-- Rows of tenants in back-off count as waiting for their tenant; syncs
-- running show.
--
CREATE OR REPLACE VIEW @extschema@.stats AS
SELECT q.*, c.*, e.last_error, e.last_error_at,
	(SELECT count(*) FROM @extschema@.syncs s WHERE s.finished_at IS NULL) AS syncs_running
FROM (SELECT
		count(*) FILTER (WHERE i.state = 'pending' AND i.lease_owner IS NULL) AS pending,
		count(*) FILTER (WHERE i.state = 'retrying' AND i.lease_owner IS NULL) AS retrying,
		count(*) FILTER (WHERE i.state IN ('pending', 'retrying') AND i.lease_owner IS NOT NULL)
			AS processing,
		count(*) FILTER (WHERE i.state = 'done') AS done,
		count(*) FILTER (WHERE i.state = 'dead') AS dead,
		count(*) FILTER (WHERE i.state IN ('pending', 'retrying')
						 AND NOT EXISTS (SELECT 1 FROM @extschema@.tenants t
										  WHERE t.tenant_id = i.tenant_id AND t.enabled
											AND (t.token_retry_at IS NULL OR t.token_retry_at <= now())))
			AS waiting_for_tenant,
		now() - min(i.received_at) FILTER (WHERE i.state IN ('pending', 'retrying'))
			AS oldest_pending_age,
		coalesce(sum(i.notifications), 0) AS notifications
	  FROM @extschema@.inbox i) q
CROSS JOIN @extschema@.worker_counters() c
LEFT JOIN LATERAL (
	SELECT l.last_error, l.last_attempt_at AS last_error_at
	  FROM @extschema@.inbox l
	 WHERE l.last_error IS NOT NULL AND l.last_attempt_at IS NOT NULL
	 ORDER BY l.last_attempt_at DESC LIMIT 1) e ON true;

-- Tenants registered before reconciliation existed get their history too.
INSERT INTO @extschema@.syncs (tenant_id, kind)
SELECT t.tenant_id, 'onboarding' FROM @extschema@.tenants t
 WHERE t.enabled AND coalesce(current_setting('sac_webhook.onboarding_sync', true), 'on') <> 'off';

--
-- Scale-out with Citus: distribute tickets and messages by tenant_id,
-- co-located.  The inbox, tenants and sync state stay local tables on the
-- coordinator, where the workers run.  Rows stored before are moved to the
-- shards.  Calling it again, or on tables already distributed, changes
-- nothing.
--
CREATE FUNCTION @extschema@.distribute_tables(shard_count integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tab text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'extension "citus" is not installed in this database'
			USING ERRCODE = '55000',
				  HINT = 'Put citus first in shared_preload_libraries and run CREATE EXTENSION citus.';
	END IF;
	IF distribute_tables.shard_count IS NOT NULL AND distribute_tables.shard_count < 1 THEN
		RAISE EXCEPTION 'shard_count must be positive'
			USING ERRCODE = '22023',
				  DETAIL = format('shard_count is %s.', distribute_tables.shard_count);
	END IF;
	FOREACH tab IN ARRAY ARRAY['sac_webhook.tickets', 'sac_webhook.messages'] LOOP
		IF EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
					WHERE logicalrelid = tab::pg_catalog.regclass) THEN
			CONTINUE;
		END IF;
		IF tab = 'sac_webhook.messages' THEN
			PERFORM pg_catalog.create_distributed_table(tab::pg_catalog.regclass, 'tenant_id',
														colocate_with => 'sac_webhook.tickets');
		ELSIF distribute_tables.shard_count IS NULL THEN
			PERFORM pg_catalog.create_distributed_table(tab::pg_catalog.regclass, 'tenant_id');
		ELSE
			PERFORM pg_catalog.create_distributed_table(tab::pg_catalog.regclass, 'tenant_id',
														shard_count => distribute_tables.shard_count);
		END IF;
		PERFORM pg_catalog.truncate_local_data_after_distributing_table(tab::pg_catalog.regclass);
	END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.distribute_tables(integer) IS 'distribute tickets and messages by tenant_id with Citus, co-located';
REVOKE ALL ON FUNCTION @extschema@.distribute_tables(integer) FROM PUBLIC;
