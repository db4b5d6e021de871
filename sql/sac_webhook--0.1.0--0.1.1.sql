/* sac_webhook--0.1.0--0.1.1.sql: per-tenant token back-off, API timestamps */

\echo Use "ALTER EXTENSION sac_webhook UPDATE TO '0.1.1'" to load this file. \quit

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
-- Rows of tenants in back-off count as waiting for their tenant.
--
CREATE OR REPLACE VIEW @extschema@.stats AS
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
	learned_at timestamptz NOT NULL DEFAULT now(),
	evidence text
);
COMMENT ON TABLE @extschema@.api_bases IS 'what each API base showed of itself, as learnt by the workers';
REVOKE ALL ON @extschema@.api_bases FROM PUBLIC;
