--
-- Reconciliation through the list endpoints: onboarding backfills a
-- tenant's history; resync() repairs what lost notifications left wrong,
-- incremental or full (deleting what the API confirms gone); messages are
-- read through their ticket's list when the API does not serve single
-- messages; a wrong base URL deletes nothing.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS sac_webhook;
CREATE EXTENSION sac_webhook;
RESET client_min_messages;
\! rm -f results/mock.port; (timeout 600 test/mock_api/sac_webhook_mock_api --listen 127.0.0.1:0 --port-file results/mock.port --quiet --access-token tok-1 --refresh-token rt-initial --client demo-client:demo-secret > results/mock_resync.log 2>&1 & echo $! > results/mock.pid)
\! for i in $(seq 100); do test -s results/mock.port && break; sleep 0.1; done
\set mock_port `cat results/mock.port`
\set base 'http://127.0.0.1:' :mock_port
SET sac_webhook.connect_timeout = '1s';
SET sac_webhook.request_timeout = '5s';
SET sac_webhook.retry_base_delay = '60s';
SET sac_webhook.not_found_retries = 0;

-- process() until nothing is due, at most n times
CREATE FUNCTION pg_temp.drain(n int DEFAULT 20) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	total int := 0;
	k int;
BEGIN
	FOR i IN 1 .. n LOOP
		k := sac_webhook.process();
		total := total + k;
		EXIT WHEN k = 0 AND NOT EXISTS (SELECT 1 FROM sac_webhook.syncs
										  WHERE finished_at IS NULL AND state = 'walking');
	END LOOP;
	RETURN total;
END $$;
CREATE FUNCTION pg_temp.t(i int) RETURNS uuid LANGUAGE sql AS $$
  SELECT format('50000000-0000-4000-8000-%s', lpad(i::text, 12, '0'))::uuid
$$;
CREATE FUNCTION pg_temp.m(i int, j int) RETURNS uuid LANGUAGE sql AS $$
  SELECT format('6%s-0000-4000-8000-%s', lpad(i::text, 7, '0'), lpad(j::text, 12, '0'))::uuid
$$;
CREATE FUNCTION pg_temp.note(tenant uuid, status text, ticket uuid, message uuid DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
  SELECT CASE WHEN message IS NULL THEN
    format('{"data": {"status": "%s", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, "tenant_id": "%s", "topic": "sac_ticket"}',
           status, ticket, ticket, tenant)
  ELSE
    format('{"data": {"status": "%s", "params": {"ticket_id": "%s", "id": "%s"}, "resource": "/v0/tickets/%s/messages/%s"}, "tenant_id": "%s", "topic": "sac_message"}',
           status, ticket, message, ticket, message, tenant)
  END
$$;
CREATE FUNCTION pg_temp.syncs()
RETURNS TABLE (kind text, full_walk boolean, state text, pages int, tickets_seen int, message_lists int,
               messages_seen int, checks int, tickets_deleted int, messages_deleted int, finished boolean,
               last_error text)
LANGUAGE sql AS $$
  SELECT kind, since IS NULL, state, pages, tickets_seen, message_lists_queued, messages_seen,
         checks_queued, tickets_deleted, messages_deleted, finished_at IS NOT NULL,
         regexp_replace(last_error, ' \(request id [^)]*\)', '')
    FROM sac_webhook.syncs ORDER BY id
$$;

-- A seller with history: 12 tickets, with 3, 10 (one full page), 11 (a
-- page and one), then no messages
\! test/mock_seed s1 12 3 10 11 0
SET sac_webhook.onboarding_sync = on;
INSERT INTO sac_webhook.tenants (tenant_id, api_base_url, access_token, token_expires_at)
VALUES ('a1000000-0000-4000-8000-000000000001', :'base' || '/sellers/s1', 'tok-1', now() + interval '1 hour');
SELECT * FROM pg_temp.syncs();
SELECT pg_temp.drain() > 0 AS worked;
SELECT * FROM pg_temp.syncs();
SELECT count(*) AS tickets, count(DISTINCT status) AS statuses FROM sac_webhook.tickets;
SELECT t.id, count(m.id) AS messages
  FROM sac_webhook.tickets t LEFT JOIN sac_webhook.messages m ON m.tenant_id = t.tenant_id AND m.ticket_id = t.id
 WHERE t.id IN (pg_temp.t(1), pg_temp.t(2), pg_temp.t(3), pg_temp.t(4)) GROUP BY t.id ORDER BY t.id;
SELECT count(*) AS messages FROM sac_webhook.messages;
SELECT count(*) AS waiting FROM sac_webhook.inbox WHERE state <> 'done';

-- Notifications lost: a ticket changed, one deleted (with its messages),
-- one new with messages, a message blocked by moderation, one deleted; a
-- full resync finds it all
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000001 '{"id": "50000000-0000-4000-8000-000000000001", "status": "closed", "closed": true, "created_at": "2024-08-07T13:42:45", "updated_at": "2024-09-01T10:00:00"}'
\! test/mock_ctl DELETE /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000002
\! test/mock_seed s1 0
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000013 '{"id": "50000000-0000-4000-8000-000000000013", "status": "open", "created_at": "2024-09-01T10:00:00", "updated_at": "2024-09-01T10:00:00"}'
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000013/messages/60000013-0000-4000-8000-000000000001 '{"id": "60000013-0000-4000-8000-000000000001", "message": "new", "ticket": {"id": "50000000-0000-4000-8000-000000000013"}, "created_at": "2024-09-01T10:00:01Z"}'
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000001/messages/60000001-0000-4000-8000-000000000001 '{"id": "60000001-0000-4000-8000-000000000001", "message": "call me on +55 11 99999-0000", "ticket": {"id": "50000000-0000-4000-8000-000000000001"}, "moderation": {"status": "blocked", "updated_at": "2024-09-01T10:00:00"}, "created_at": "2024-08-09T13:30:01.000000Z"}'
\! test/mock_ctl DELETE /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000003/messages/60000003-0000-4000-8000-000000000011
SELECT sac_webhook.resync('a1000000-0000-4000-8000-000000000001') AS queued;
-- one is running: nothing more to queue
SELECT sac_webhook.resync('a1000000-0000-4000-8000-000000000001') AS queued;
SELECT pg_temp.drain() > 0 AS worked;
SELECT * FROM pg_temp.syncs();
SELECT id, status, closed, updated_at AT TIME ZONE 'UTC' AS updated_at FROM sac_webhook.tickets
 WHERE id IN (pg_temp.t(1), pg_temp.t(2), pg_temp.t(13)) ORDER BY id;
SELECT count(*) AS messages_of_deleted_ticket FROM sac_webhook.messages WHERE ticket_id = pg_temp.t(2);
SELECT id, message, status, data ? 'message' AS has_text FROM sac_webhook.messages
 WHERE id IN (pg_temp.m(1, 1), '60000013-0000-4000-8000-000000000001') ORDER BY id;
SELECT count(*) AS messages_of_ticket_3 FROM sac_webhook.messages WHERE ticket_id = pg_temp.t(3);
SELECT count(*) AS traces FROM sac_webhook.messages WHERE message LIKE '%99999-0000%';

-- An incremental resync reads what changed since then, and checks nothing
-- it did not list
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004 "{\"id\": \"50000000-0000-4000-8000-000000000004\", \"status\": \"closed\", \"created_at\": \"2024-08-07T13:42:45\", \"updated_at\": \"$(date -u +%Y-%m-%dT%H:%M:%S)\"}"
SELECT sac_webhook.resync('a1000000-0000-4000-8000-000000000001', now() - interval '1 hour') AS queued;
SELECT pg_temp.drain() > 0 AS worked;
SELECT kind, full_walk, state, tickets_seen, checks, finished FROM pg_temp.syncs() OFFSET 2;
SELECT status FROM sac_webhook.tickets WHERE id = pg_temp.t(4);
-- ... the same when the server ignores the filter and the sort
\! test/mock_ctl POST /_mock/config '{"list_ignores_filters": true}'
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000005 "{\"id\": \"50000000-0000-4000-8000-000000000005\", \"status\": \"closed\", \"created_at\": \"2024-08-07T13:42:45\", \"updated_at\": \"$(date -u +%Y-%m-%dT%H:%M:%S)\"}"
SELECT sac_webhook.resync(NULL, now() - interval '1 hour') AS queued;
SELECT pg_temp.drain() > 0 AS worked;
SELECT kind, full_walk, state, tickets_seen, checks, finished FROM pg_temp.syncs() OFFSET 3;
SELECT status FROM sac_webhook.tickets WHERE id = pg_temp.t(5);
SELECT count(*) AS tickets FROM sac_webhook.tickets;
\! test/mock_ctl POST /_mock/config '{"list_ignores_filters": false}'

-- An API without the single message resource: a message is read through
-- its ticket's list; three such 404s for listed messages teach that the
-- base does not serve single messages, and later messages go straight to
-- the list; moderation and deletion work the same way
\! test/mock_ctl POST /_mock/config '{"single_message": "off"}'
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004/messages/60000004-0000-4000-8000-000000000001 '{"id": "60000004-0000-4000-8000-000000000001", "message": "first", "ticket": {"id": "50000000-0000-4000-8000-000000000004"}, "moderation": {"status": "new"}, "created_at": "2024-09-02T10:00:01Z"}'
SELECT sac_webhook.receive(pg_temp.note('a1000000-0000-4000-8000-000000000001', 'CREATION', pg_temp.t(4), pg_temp.m(4, 1))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT id, message, status FROM sac_webhook.messages WHERE ticket_id = pg_temp.t(4);
SELECT base_url = :'base' || '/sellers/s1' AS this_base, single_message_served, not_served_signs, evidence FROM sac_webhook.api_bases;
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004/messages/60000004-0000-4000-8000-000000000002 '{"id": "60000004-0000-4000-8000-000000000002", "message": "second", "ticket": {"id": "50000000-0000-4000-8000-000000000004"}, "created_at": "2024-09-02T10:00:02Z"}'
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004/messages/60000004-0000-4000-8000-000000000001 '{"id": "60000004-0000-4000-8000-000000000001", "message": "first", "ticket": {"id": "50000000-0000-4000-8000-000000000004"}, "moderation": {"status": "blocked", "updated_at": "2024-09-02T11:00:00"}, "created_at": "2024-09-02T10:00:01Z"}'
SELECT sac_webhook.receive(pg_temp.note('a1000000-0000-4000-8000-000000000001', 'CREATION', pg_temp.t(4), pg_temp.m(4, 2))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT id, message, status FROM sac_webhook.messages WHERE ticket_id = pg_temp.t(4) ORDER BY id;
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004/messages/60000004-0000-4000-8000-000000000003 '{"id": "60000004-0000-4000-8000-000000000003", "message": "third", "ticket": {"id": "50000000-0000-4000-8000-000000000004"}, "created_at": "2024-09-02T10:00:03Z"}'
SELECT sac_webhook.receive(pg_temp.note('a1000000-0000-4000-8000-000000000001', 'CREATION', pg_temp.t(4), pg_temp.m(4, 3))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT single_message_served, not_served_signs FROM sac_webhook.api_bases;
\! test/mock_ctl PUT /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004/messages/60000004-0000-4000-8000-000000000004 '{"id": "60000004-0000-4000-8000-000000000004", "message": "fourth", "ticket": {"id": "50000000-0000-4000-8000-000000000004"}, "created_at": "2024-09-02T10:00:04Z"}'
SELECT sac_webhook.receive(pg_temp.note('a1000000-0000-4000-8000-000000000001', 'CREATION', pg_temp.t(4), pg_temp.m(4, 4))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT count(*) AS messages FROM sac_webhook.messages WHERE ticket_id = pg_temp.t(4);
\! test/mock_ctl GET '/_mock/count?path=/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004/messages/60000004-0000-4000-8000-000000000003'
\! test/mock_ctl GET '/_mock/count?path=/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004/messages/60000004-0000-4000-8000-000000000004'
\! test/mock_ctl DELETE /_mock/sellers/s1/v0/tickets/50000000-0000-4000-8000-000000000004/messages/60000004-0000-4000-8000-000000000002
SELECT sac_webhook.receive(pg_temp.note('a1000000-0000-4000-8000-000000000001', 'DELETION', pg_temp.t(4), pg_temp.m(4, 2))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT id FROM sac_webhook.messages WHERE ticket_id = pg_temp.t(4) ORDER BY id;
\! test/mock_ctl POST /_mock/config '{"single_message": "on"}'

-- Pages that shift while the walk reads them (tickets changed meanwhile
-- move to the end): every ticket is stored, none taken for gone
\! test/mock_seed s2 30 0
INSERT INTO sac_webhook.tenants (tenant_id, api_base_url, access_token, token_expires_at)
VALUES ('a2000000-0000-4000-8000-000000000002', :'base' || '/sellers/s2', 'tok-1', now() + interval '1 hour');
\! test/mock_ctl POST /_mock/config '{"shift_per_page": 2}'
SELECT pg_temp.drain() > 0 AS worked;
\! test/mock_ctl POST /_mock/config '{"shift_per_page": 0}'
SELECT count(*) AS tickets FROM sac_webhook.tickets WHERE tenant_id = 'a2000000-0000-4000-8000-000000000002';
SELECT kind, state, tickets_seen >= 30 AS all_seen, finished FROM pg_temp.syncs() OFFSET 4;

-- A base URL that answers 404 to everything: the sync fails, saying so,
-- and a 404 for a stored ticket deletes nothing
INSERT INTO sac_webhook.tenants (tenant_id, api_base_url, access_token, token_expires_at)
VALUES ('a3000000-0000-4000-8000-000000000003', :'base' || '/nothing', 'tok-1', now() + interval '1 hour');
INSERT INTO sac_webhook.tickets (tenant_id, id, status, data)
VALUES ('a3000000-0000-4000-8000-000000000003', pg_temp.t(1), 'open', '{}');
SELECT pg_temp.drain() >= 0 AS worked;
SELECT kind, state, finished, last_error FROM pg_temp.syncs() OFFSET 5;
SELECT sac_webhook.receive(pg_temp.note('a3000000-0000-4000-8000-000000000003', 'DELETION', pg_temp.t(1))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT count(*) AS kept FROM sac_webhook.tickets WHERE tenant_id = 'a3000000-0000-4000-8000-000000000003';
SELECT state, regexp_replace(last_error, ' \(request id [^)]*\)', '') AS last_error FROM sac_webhook.inbox
 WHERE tenant_id = 'a3000000-0000-4000-8000-000000000003';

-- resync() refuses what it cannot do
\set VERBOSITY terse
SELECT sac_webhook.resync('a9000000-0000-4000-8000-000000000009');
SELECT sac_webhook.resync(NULL, now() + interval '1 day');
\set VERBOSITY default
-- registering with onboarding off queues nothing
SET sac_webhook.onboarding_sync = off;
INSERT INTO sac_webhook.tenants (tenant_id) VALUES ('a4000000-0000-4000-8000-000000000004');
SELECT count(*) AS syncs FROM sac_webhook.syncs WHERE tenant_id = 'a4000000-0000-4000-8000-000000000004';
SELECT syncs_running FROM sac_webhook.stats;

\! kill $(cat results/mock.pid) 2>/dev/null; rm -f results/mock.pid results/mock.port
