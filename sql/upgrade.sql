--
-- An installation of 0.1.0 that holds data is upgraded in place (through
-- 0.2.0 to 0.3.0) with
-- ALTER EXTENSION ... UPDATE: its data stays, the new objects appear, and
-- the library refuses to work on the old objects until then.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS sac_webhook;
CREATE EXTENSION sac_webhook VERSION '0.1.0';
RESET client_min_messages;
SELECT extversion FROM pg_extension WHERE extname = 'sac_webhook';

INSERT INTO sac_webhook.tenants (tenant_id, name, client_id, client_secret, access_token, refresh_token, token_expires_at,
                                 token_failure_streak, last_token_error)
VALUES ('3b5cf468-c858-404b-9e53-630e3df9d74a', 'demo seller', 'demo-client', 'demo-secret', 'tok-1', 'rt-1',
        now() + interval '1 hour', 2, 'token refresh failed: HTTP 503');
SELECT sac_webhook.receive(format('{"data": {"status": "%s", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}',
                                  s, id, id)) AS inbox_id
  FROM (VALUES ('UPDATE', '10000000-0000-4000-8000-000000000001'),
               ('DELETION', '10000000-0000-4000-8000-000000000002')) v(s, id);
INSERT INTO sac_webhook.tickets (tenant_id, id, status, updated_at, data)
VALUES ('3b5cf468-c858-404b-9e53-630e3df9d74a', '10000000-0000-4000-8000-000000000001', 'open', '2024-08-07 13:42:45+00',
        '{"id": "10000000-0000-4000-8000-000000000001"}'),
       ('3b5cf468-c858-404b-9e53-630e3df9d74a', '10000000-0000-4000-8000-000000000002', 'open', '2024-08-07 13:42:45+00',
        '{"id": "10000000-0000-4000-8000-000000000002"}');
INSERT INTO sac_webhook.messages (tenant_id, id, ticket_id, message, data)
VALUES ('3b5cf468-c858-404b-9e53-630e3df9d74a', '20000000-0000-4000-8000-000000000001',
        '10000000-0000-4000-8000-000000000001', 'hello', '{"id": "20000000-0000-4000-8000-000000000001"}');
SET TimeZone = 'America/Sao_Paulo';
SELECT sac_webhook.api_timestamp('2024-01-01') AT TIME ZONE 'UTC' AS date_only_before;
RESET TimeZone;

-- the library works only on the objects of its own version
SET sac_webhook.confirm_deletions = off;
SELECT sac_webhook.process();

ALTER EXTENSION sac_webhook UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'sac_webhook';

-- tenants registered before get their history (unless onboarding_sync is
-- off, as in these tests' configuration)
SELECT count(*) AS syncs_queued FROM sac_webhook.syncs;

-- the data is all there
SELECT tenant_id, name, refresh_token, token_failure_streak, last_token_error, token_retry_at
  FROM sac_webhook.tenants;
SELECT id, status, notifications, resource FROM sac_webhook.inbox ORDER BY id;
SELECT id, status, updated_at FROM sac_webhook.tickets ORDER BY id;
SELECT id, ticket_id, message FROM sac_webhook.messages ORDER BY id;
SELECT pending, retrying, waiting_for_tenant, notifications FROM sac_webhook.stats;
SET TimeZone = 'America/Sao_Paulo';
SELECT sac_webhook.api_timestamp('2024-01-01') AT TIME ZONE 'UTC' AS date_only_after;
RESET TimeZone;

-- and the pipeline carries on with it
SELECT sac_webhook.process() AS finished;
SELECT id, state FROM sac_webhook.inbox ORDER BY id;
SELECT id FROM sac_webhook.tickets ORDER BY id;
-- the new back-off: new credentials end it
UPDATE sac_webhook.tenants SET token_retry_at = now() + interval '1 hour';
UPDATE sac_webhook.tenants SET refresh_token = 'rt-2';
SELECT token_retry_at FROM sac_webhook.tenants;
RESET sac_webhook.confirm_deletions;

-- the inbox has the indexes of a fresh installation (0.3.0: due rows by tenant)
SELECT indexname, indexdef FROM pg_indexes
 WHERE schemaname = 'sac_webhook' AND tablename = 'inbox' ORDER BY 1;

-- the members of the extension are those of a fresh installation
SELECT pg_describe_object(classid, objid, objsubid) AS member
  FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'sac_webhook')
 ORDER BY 1;
\d sac_webhook.tenants

SET client_min_messages = warning;
DROP EXTENSION sac_webhook;
CREATE EXTENSION sac_webhook;
RESET client_min_messages;
SELECT extversion FROM pg_extension WHERE extname = 'sac_webhook';
