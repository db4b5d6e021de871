/* sac_webhook--0.1.0.sql: schema of the sac_webhook extension */

\echo Use "CREATE EXTENSION sac_webhook" to load this file. \quit

--
-- Roles.  Roles are cluster-wide: created once, shared by every database
-- that installs the extension, and left in place by DROP EXTENSION.
--
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'sac_webhook_receiver') THEN
		CREATE ROLE sac_webhook_receiver NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'sac_webhook_reader') THEN
		CREATE ROLE sac_webhook_reader NOLOGIN;
	END IF;
END
$roles$;

COMMENT ON ROLE sac_webhook_receiver IS 'may only call sac_webhook.receive()';
COMMENT ON ROLE sac_webhook_reader IS 'may read sac_webhook.tickets, messages and stats';

--
-- Types
--
CREATE TYPE @extschema@.change AS ENUM ('CREATION', 'UPDATE', 'DELETION');

-- A waiting row (pending or retrying) is being fetched while its lease_owner
-- is set; stats counts those as processing.
CREATE TYPE @extschema@.inbox_state AS ENUM (
	'pending',		-- waiting for its first fetch
	'retrying',		-- a fetch failed; waits until next_attempt_at
	'done',			-- applied; pruned after sac_webhook.done_retention
	'dead'			-- gave up; see last_error, re-queue with requeue_dead()
);

CREATE TYPE @extschema@.notification AS (
	topic text,
	status @extschema@.change,
	tenant_id uuid,
	resource text,
	params jsonb,
	ticket_id uuid,
	message_id uuid
);

--
-- Tenants: one row per seller, with its OAuth credentials.
--
CREATE TABLE @extschema@.tenants (
	tenant_id uuid PRIMARY KEY,
	name text,
	api_base_url text CHECK (api_base_url ~* '^https?://[^/?#@[:space:]]+(/[^?#[:space:]]*)?$'),
	client_id text,
	client_secret text,
	access_token text,
	refresh_token text,
	token_expires_at timestamptz,
	enabled boolean NOT NULL DEFAULT true,
	token_refreshed_at timestamptz,
	last_token_error text,
	token_failure_streak integer NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.tenants IS 'sellers and their OAuth credentials; readable only by the extension owner';

--
-- The inbox: one row per resource waiting to be fetched, plus the history
-- of finished and dead rows until they are pruned.
--
CREATE TABLE @extschema@.inbox (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	tenant_id uuid NOT NULL,
	topic text NOT NULL CHECK (topic IN ('sac_ticket', 'sac_message')),
	status @extschema@.change NOT NULL,
	resource text NOT NULL,
	ticket_id uuid NOT NULL,
	message_id uuid,
	state @extschema@.inbox_state NOT NULL DEFAULT 'pending',
	notifications integer NOT NULL DEFAULT 1,
	received_at timestamptz NOT NULL DEFAULT now(),
	last_received_at timestamptz NOT NULL DEFAULT now(),
	attempts integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	lease_until timestamptz,
	lease_owner integer,
	refetch boolean NOT NULL DEFAULT false,
	last_attempt_at timestamptz,
	last_http_status integer,
	last_error text,
	finished_at timestamptz,
	CHECK ((topic = 'sac_message') = (message_id IS NOT NULL))
);
COMMENT ON TABLE @extschema@.inbox IS 'durable queue of webhook notifications';
-- A queue table: every row is updated twice and deleted soon after, and the
-- claim scans its partial indexes from the front.  Vacuum it early.  Pages
-- are filled only half-way, so that the claim's update (a lease: no indexed
-- column changes) finds room on the row's own page and stays a HOT update,
-- writing no index entries.
ALTER TABLE @extschema@.inbox SET (autovacuum_vacuum_scale_factor = 0.01,
	autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02,
	autovacuum_vacuum_cost_delay = 0, fillfactor = 50);

-- One waiting row per resource, held or not: receipts coalesce into it, and
-- only one fetch of a resource is ever in flight.
CREATE UNIQUE INDEX inbox_waiting_resource ON @extschema@.inbox (tenant_id, resource)
	WHERE state IN ('pending', 'retrying');
-- Claim by due time.
CREATE INDEX inbox_due ON @extschema@.inbox (next_attempt_at)
	WHERE state IN ('pending', 'retrying');
-- Pruning and re-queueing.
CREATE INDEX inbox_finished ON @extschema@.inbox (finished_at)
	WHERE state IN ('done', 'dead');

--
-- The live copy: the product's output.
--
CREATE TABLE @extschema@.tickets (
	tenant_id uuid NOT NULL,
	id uuid NOT NULL,
	code text,
	type text,
	status text,
	closed boolean,
	reason text,
	protocol text,
	origin text,
	order_id text,
	order_code text,
	channel_id text,
	due_date timestamptz,
	created_at timestamptz,
	updated_at timestamptz,
	data jsonb NOT NULL,
	fetched_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id)
);
COMMENT ON TABLE @extschema@.tickets IS 'customer-service tickets as last fetched from the API';

CREATE TABLE @extschema@.messages (
	tenant_id uuid NOT NULL,
	id uuid NOT NULL,
	ticket_id uuid NOT NULL,
	code text,
	message text,
	sender_type text,
	sender_id text,
	sender_name text,
	destination text,
	status text,
	created_at timestamptz,
	updated_at timestamptz,
	data jsonb NOT NULL,
	fetched_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id)
);
CREATE INDEX messages_ticket ON @extschema@.messages (tenant_id, ticket_id);
COMMENT ON TABLE @extschema@.messages IS 'messages on tickets as last fetched from the API';
COMMENT ON COLUMN @extschema@.messages.updated_at IS 'the later of moderation.updated_at and created_at';
COMMENT ON COLUMN @extschema@.messages.status IS 'moderation.status: new, approved, blocked, ...';

-- pg_dump keeps the data of these extension tables.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.inbox', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.inbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tickets', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.messages', '');

--
-- Functions
--
CREATE FUNCTION @extschema@.parse(payload text)
RETURNS @extschema@.notification
AS 'MODULE_PATHNAME', 'sac_webhook_parse_text'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.parse(text) IS 'validate a webhook notification and return it as a typed row';

CREATE FUNCTION @extschema@.parse(payload jsonb)
RETURNS @extschema@.notification
AS 'MODULE_PATHNAME', 'sac_webhook_parse_jsonb'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.parse(jsonb) IS 'validate a webhook notification and return it as a typed row';

CREATE FUNCTION @extschema@.receive(payload text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'sac_webhook_receive'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.receive(text) IS 'validate a webhook notification and store it in the inbox; returns the inbox id';

-- A document timestamp: without a zone it is UTC.  (STABLE like the casts it
-- uses, and not STRICT though NULL gives NULL, so that the planner inlines
-- it into the upserts.)
CREATE FUNCTION @extschema@.api_timestamp(value text)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN value ~ '(Z|z|[+-]\d\d(:?\d\d)?)$' THEN value::timestamptz
		ELSE value::timestamp AT TIME ZONE 'UTC'
	END
$$;
COMMENT ON FUNCTION @extschema@.api_timestamp(text) IS 'read an API timestamp; one without a zone is UTC';

CREATE FUNCTION @extschema@.process(max_events integer DEFAULT 1000)
RETURNS integer
AS 'MODULE_PATHNAME', 'sac_webhook_process'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@.process(integer) IS 'claim, fetch and apply up to max_events inbox rows in this session; returns how many finished';

CREATE FUNCTION @extschema@.worker_counters(
	OUT fetches bigint, OUT fetch_failures bigint, OUT applied bigint,
	OUT deleted bigint, OUT token_refreshes bigint, OUT token_failures bigint,
	OUT workers_running integer)
AS 'MODULE_PATHNAME', 'sac_webhook_worker_counters'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@.worker_counters() IS 'counters of the workers and process() callers since server start';

--
-- Re-queue dead rows, all or by tenant and/or topic.  A dead row whose
-- resource already waits in another row merges into it.
--
CREATE FUNCTION @extschema@.requeue_dead(tenant uuid DEFAULT NULL, topic text DEFAULT NULL)
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
			   SET state = 'pending', attempts = 0, next_attempt_at = now(),
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
COMMENT ON FUNCTION @extschema@.requeue_dead(uuid, text) IS 'put dead inbox rows back in the queue; returns how many';

--
-- Throw away dead rows (all, or of one tenant) that finished before
-- older_than ago.
--
CREATE FUNCTION @extschema@.discard_dead(older_than interval DEFAULT '0', tenant uuid DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH gone AS (
		DELETE FROM sac_webhook.inbox i
		 WHERE i.state = 'dead' AND i.finished_at <= now() - older_than
		   AND (tenant IS NULL OR i.tenant_id = tenant)
		RETURNING 1)
	SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION @extschema@.discard_dead(interval, uuid) IS 'delete dead inbox rows; returns how many';

--
-- Throw away waiting rows of tenants that are not registered (or are
-- disabled) and last heard of before older_than ago.
--
CREATE FUNCTION @extschema@.discard_unregistered(older_than interval DEFAULT '7 days')
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH gone AS (
		DELETE FROM sac_webhook.inbox i
		 WHERE i.state IN ('pending', 'retrying')
		   AND i.last_received_at <= now() - older_than
		   AND NOT EXISTS (SELECT 1 FROM sac_webhook.tenants t
							WHERE t.tenant_id = i.tenant_id AND t.enabled)
		RETURNING 1)
	SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION @extschema@.discard_unregistered(interval) IS 'delete waiting inbox rows of unknown or disabled tenants; returns how many';

--
-- Monitoring
--
CREATE VIEW @extschema@.stats AS
SELECT q.*, c.*, e.last_error, e.last_error_at
FROM (SELECT
		count(*) FILTER (WHERE i.state = 'pending' AND i.lease_owner IS NULL) AS pending,
		count(*) FILTER (WHERE i.state = 'retrying' AND i.lease_owner IS NULL) AS retrying,
		count(*) FILTER (WHERE i.state IN ('pending', 'retrying') AND i.lease_owner IS NOT NULL)
			AS processing,
		count(*) FILTER (WHERE i.state = 'done') AS done,
		count(*) FILTER (WHERE i.state = 'dead') AS dead,
		count(*) FILTER (WHERE i.state IN ('pending', 'retrying')
						 AND NOT EXISTS (SELECT 1 FROM @extschema@.tenants t
										  WHERE t.tenant_id = i.tenant_id AND t.enabled))
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
COMMENT ON VIEW @extschema@.stats IS 'queue depth per state, age of the oldest waiting row, totals and the latest error';

--
-- Privileges: nothing for PUBLIC.
--
REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON TYPE @extschema@.change, @extschema@.inbox_state, @extschema@.notification FROM PUBLIC;

GRANT USAGE ON SCHEMA @extschema@ TO sac_webhook_receiver, sac_webhook_reader;
GRANT EXECUTE ON FUNCTION @extschema@.receive(text) TO sac_webhook_receiver;

GRANT USAGE ON TYPE @extschema@.change, @extschema@.notification TO sac_webhook_reader;
GRANT SELECT ON @extschema@.tickets, @extschema@.messages, @extschema@.stats TO sac_webhook_reader;
GRANT EXECUTE ON FUNCTION @extschema@.worker_counters() TO sac_webhook_reader;
GRANT EXECUTE ON FUNCTION @extschema@.parse(text), @extschema@.parse(jsonb),
	@extschema@.api_timestamp(text) TO sac_webhook_reader;
