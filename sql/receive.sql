--
-- receive(): durable inbox, coalescing, nothing stored on rejection
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS sac_webhook;
RESET client_min_messages;
CREATE FUNCTION pg_temp.n(status text, id text DEFAULT 'debde69a-2dbb-427b-b478-6cffd7930ecf',
                          tenant text DEFAULT '3b5cf468-c858-404b-9e53-630e3df9d74a')
RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "%s", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, "tenant_id": "%s", "topic": "sac_ticket"}',
                status, id, id, tenant)
$$;
CREATE FUNCTION pg_temp.m(status text, ticket text, id text,
                          tenant text DEFAULT '3b5cf468-c858-404b-9e53-630e3df9d74a')
RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "%s", "params": {"ticket_id": "%s", "id": "%s"}, "resource": "/v0/tickets/%s/messages/%s"}, "tenant_id": "%s", "topic": "sac_message"}',
                status, ticket, id, ticket, id, tenant)
$$;

-- The inbox is a logged table
SELECT relpersistence FROM pg_class WHERE oid = 'sac_webhook.inbox'::regclass;

-- A burst for one resource coalesces into one waiting row
SELECT sac_webhook.receive(pg_temp.n('CREATION')) AS first_id \gset
SELECT sac_webhook.receive(pg_temp.n('UPDATE')) = :first_id AS same_row;
SELECT sac_webhook.receive(pg_temp.n('UPDATE')) = :first_id AS same_row;
-- ... and ids in other letter case are the same resource
SELECT sac_webhook.receive(pg_temp.n('UPDATE', 'DEBDE69A-2DBB-427B-B478-6CFFD7930ECF')) = :first_id AS same_row;
SELECT topic, status, resource, state, notifications, attempts, message_id
  FROM sac_webhook.inbox ORDER BY id;

-- Another resource, a message on the ticket, another tenant: rows of their own
SELECT sac_webhook.receive(pg_temp.n('CREATION', '11111111-2222-4333-8444-555555555555')) <> :first_id AS new_row;
SELECT sac_webhook.receive(pg_temp.m('CREATION', 'debde69a-2dbb-427b-b478-6cffd7930ecf', '3b5444b9-6fbb-40fd-b800-6c24176fb5ea')) <> :first_id AS new_row;
SELECT sac_webhook.receive(pg_temp.n('CREATION', 'debde69a-2dbb-427b-b478-6cffd7930ecf', '00000000-0000-4000-8000-000000000001')) <> :first_id AS new_row;
SELECT tenant_id, topic, status, resource, notifications FROM sac_webhook.inbox ORDER BY id;

-- The latest status wins; DELETION after CREATION is kept as DELETION
SELECT sac_webhook.receive(pg_temp.n('DELETION')) = :first_id AS same_row;
SELECT status, notifications FROM sac_webhook.inbox WHERE id = :first_id;

-- A row being fetched (held: lease_owner set) absorbs new notifications
-- too, and is marked refetch: the fetch under way then puts it back instead of
-- finishing it (the worker's test shows that)
UPDATE sac_webhook.inbox SET lease_owner = pg_backend_pid(), lease_until = now() + interval '1 minute' WHERE id = :first_id;
SELECT sac_webhook.receive(pg_temp.n('UPDATE')) = :first_id AS same_row;
SELECT state, lease_owner IS NOT NULL AS held, refetch, notifications FROM sac_webhook.inbox WHERE id = :first_id;
SELECT processing FROM sac_webhook.stats;
-- Once done, a notification makes a new waiting row
UPDATE sac_webhook.inbox SET state = 'done', finished_at = now(), lease_owner = NULL, lease_until = NULL
 WHERE id = :first_id;
SELECT sac_webhook.receive(pg_temp.n('UPDATE')) <> :first_id AS new_row;
SELECT sac_webhook.receive(pg_temp.n('UPDATE')) AS second_id \gset
-- (a row nobody holds is not marked refetch)
SELECT refetch FROM sac_webhook.inbox WHERE id = :second_id;
SELECT state, notifications FROM sac_webhook.inbox
 WHERE resource = '/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf'
   AND tenant_id = '3b5cf468-c858-404b-9e53-630e3df9d74a' ORDER BY id;

-- Retrying rows still absorb; done and dead rows do not
UPDATE sac_webhook.inbox SET state = 'retrying' WHERE id = :second_id;
SELECT sac_webhook.receive(pg_temp.n('UPDATE')) = :second_id AS same_row;
UPDATE sac_webhook.inbox SET state = 'dead' WHERE id = :second_id;
SELECT sac_webhook.receive(pg_temp.n('UPDATE')) <> :second_id AS new_row;

-- Rejected payloads store nothing, and roll back nothing else
SELECT count(*) AS rows_before FROM sac_webhook.inbox \gset
SELECT sac_webhook.receive('{"topic": "sac_ticket"}');
SELECT sac_webhook.receive('');
SELECT sac_webhook.receive(pg_temp.n('UPDATE', 'not-a-uuid'));
SELECT count(*) = :rows_before AS nothing_stored FROM sac_webhook.inbox;
SELECT sac_webhook.receive(NULL);

-- In the caller's transaction: a rollback takes the receipt back
BEGIN;
SELECT sac_webhook.receive(pg_temp.n('CREATION', '99999999-2222-4333-8444-555555555555')) > 0 AS stored;
ROLLBACK;
SELECT count(*) AS rolled_back FROM sac_webhook.inbox WHERE resource LIKE '%99999999-%';

-- Unregistered tenants' rows wait (nothing is fetched without credentials)
SELECT pending, retrying, processing, done, dead, waiting_for_tenant, notifications,
       oldest_pending_age > interval '0' AS has_age
  FROM sac_webhook.stats;

-- Re-queueing dead rows: a dead row merges into a waiting row of its resource,
-- or becomes pending again
SELECT sac_webhook.requeue_dead();
SELECT state, notifications FROM sac_webhook.inbox
 WHERE resource = '/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf'
   AND tenant_id = '3b5cf468-c858-404b-9e53-630e3df9d74a' ORDER BY id;
UPDATE sac_webhook.inbox SET state = 'dead', finished_at = now() WHERE topic = 'sac_message';
SELECT sac_webhook.requeue_dead(topic => 'sac_ticket') AS none_for_tickets;
SELECT sac_webhook.requeue_dead(tenant => '00000000-0000-4000-8000-000000000001') AS none_for_other_tenant;
SELECT sac_webhook.requeue_dead(tenant => '3b5cf468-c858-404b-9e53-630e3df9d74a', topic => 'sac_message') AS requeued;
SELECT state, attempts, finished_at FROM sac_webhook.inbox WHERE topic = 'sac_message';
SELECT sac_webhook.requeue_dead(topic => 'sac_order');

-- Throwing rows away: dead ones, and waiting ones of unknown tenants
UPDATE sac_webhook.inbox SET state = 'dead', finished_at = now() - interval '2 days'
 WHERE topic = 'sac_message';
SELECT sac_webhook.discard_dead(older_than => '3 days') AS too_recent;
SELECT sac_webhook.discard_dead(tenant => '00000000-0000-4000-8000-000000000001') AS other_tenant;
SELECT sac_webhook.discard_dead(older_than => '1 day') AS discarded;
SELECT sac_webhook.discard_unregistered() AS too_recent;
UPDATE sac_webhook.inbox SET last_received_at = now() - interval '8 days'
 WHERE tenant_id = '00000000-0000-4000-8000-000000000001';
SELECT sac_webhook.discard_unregistered() AS discarded;
SELECT tenant_id, state, count(*) FROM sac_webhook.inbox GROUP BY 1, 2 ORDER BY 1, 2;

-- Timestamps without a zone are UTC
SET timezone = 'America/Sao_Paulo';
SELECT sac_webhook.api_timestamp('2024-08-07T13:42:46') AS no_zone,
       sac_webhook.api_timestamp('2024-08-09T13:30:38.609142Z') AS zulu,
       sac_webhook.api_timestamp('2024-08-09T13:30:38-03:00') AS offset;
RESET timezone;

TRUNCATE sac_webhook.inbox;
