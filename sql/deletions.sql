--
-- Deleting only what the API confirms: a DELETION the API does not confirm
-- is checked again later; a 404 after a CREATION or UPDATE is counted, not
-- the attempts around it; a message is deleted only at the path the API
-- confirmed.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS sac_webhook;
CREATE EXTENSION sac_webhook;
RESET client_min_messages;
\! rm -f results/mock.port; (timeout 600 test/mock_api/sac_webhook_mock_api --listen 127.0.0.1:0 --port-file results/mock.port --auto --quiet --access-token tok-1 --refresh-token rt-initial --client demo-client:demo-secret > results/mock_deletions.log 2>&1 & echo $! > results/mock.pid)
\! for i in $(seq 100); do test -s results/mock.port && break; sleep 0.1; done
\set mock_port `cat results/mock.port`
SELECT set_config('sac_webhook.api_base_url', 'http://127.0.0.1:' || :'mock_port', false) IS NOT NULL AS api_configured;
SET sac_webhook.connect_timeout = '1s';
SET sac_webhook.request_timeout = '5s';
SET sac_webhook.retry_base_delay = '60s';
INSERT INTO sac_webhook.tenants (tenant_id, access_token, token_expires_at)
VALUES ('3b5cf468-c858-404b-9e53-630e3df9d74a', 'tok-1', now() + interval '1 hour');

CREATE FUNCTION pg_temp.n(status text, id text) RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "%s", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}',
                status, id, id)
$$;
CREATE FUNCTION pg_temp.m(status text, ticket text, id text) RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "%s", "params": {"ticket_id": "%s", "id": "%s"}, "resource": "/v0/tickets/%s/messages/%s"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_message"}',
                status, ticket, id, ticket, id)
$$;
CREATE FUNCTION pg_temp.row_of(rid text)
RETURNS TABLE (state sac_webhook.inbox_state, attempts int, not_found int, rechecks int, last_http_status int,
               wait_s int, last_error text)
LANGUAGE sql AS $$
  SELECT i.state, i.attempts, i.not_found, i.rechecks, i.last_http_status,
         CASE WHEN i.state = 'retrying' THEN round(extract(epoch FROM i.next_attempt_at - now()))::int END,
         regexp_replace(i.last_error, ' \(request id [^)]*\)', '') FROM sac_webhook.inbox i
   WHERE i.resource LIKE '%' || rid ORDER BY i.id DESC LIMIT 1
$$;
CREATE FUNCTION pg_temp.due() RETURNS void LANGUAGE sql AS $$
  UPDATE sac_webhook.inbox SET next_attempt_at = now() WHERE state IN ('pending', 'retrying')
$$;

-- A DELETION while the API still serves the ticket: kept, and checked
-- again (1 min, 4 min, 16 min later), then deleted once the API says so
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT sac_webhook.receive(pg_temp.n('DELETION', '10000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000001');
SELECT count(*) AS kept FROM sac_webhook.tickets;
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000001');
\! test/mock_ctl DELETE /_mock/v0/tickets/10000000-0000-4000-8000-000000000001
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000001');
SELECT count(*) AS kept FROM sac_webhook.tickets;
-- checked at most deletion_rechecks times, then done with the document kept
SET sac_webhook.deletion_rechecks = 1;
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000002')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT sac_webhook.receive(pg_temp.n('DELETION', '10000000-0000-4000-8000-000000000002')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000002');
SELECT count(*) AS kept FROM sac_webhook.tickets WHERE id = '10000000-0000-4000-8000-000000000002';
RESET sac_webhook.deletion_rechecks;

-- A 404 after a CREATION counts, the 503s around it do not: three 503s and
-- one 404 do not delete; it takes not_found_retries (here 2) more 404s
SET sac_webhook.not_found_retries = 2;
SET sac_webhook.max_attempts = 100;
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000003')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000003", "status": 503, "count": 3}'
SELECT sac_webhook.receive(pg_temp.n('UPDATE', '10000000-0000-4000-8000-000000000003')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000003", "status": 404, "count": 3}'
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000003');
SELECT count(*) AS kept FROM sac_webhook.tickets WHERE id = '10000000-0000-4000-8000-000000000003';
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000003');
SELECT count(*) AS kept FROM sac_webhook.tickets WHERE id = '10000000-0000-4000-8000-000000000003';
-- the third 404: gone
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000003');
SELECT count(*) AS kept FROM sac_webhook.tickets WHERE id = '10000000-0000-4000-8000-000000000003';
RESET sac_webhook.not_found_retries;
RESET sac_webhook.max_attempts;

-- A message is deleted only at the path the API confirmed: a DELETION of
-- /v0/tickets/T2/messages/M does not touch M stored under T1
SELECT sac_webhook.receive(pg_temp.m('CREATION', '10000000-0000-4000-8000-000000000011', '20000000-0000-4000-8000-000000000011')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000012/messages/20000000-0000-4000-8000-000000000011", "status": 404}'
SELECT sac_webhook.receive(pg_temp.m('DELETION', '10000000-0000-4000-8000-000000000012', '20000000-0000-4000-8000-000000000011')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000012/messages/20000000-0000-4000-8000-000000000011');
SELECT id, ticket_id FROM sac_webhook.messages;

-- requeue_dead() starts the counts afresh
UPDATE sac_webhook.inbox SET state = 'dead', finished_at = now(), not_found = 2, rechecks = 1
 WHERE resource LIKE '%10000000-0000-4000-8000-000000000003';
SELECT sac_webhook.requeue_dead() AS requeued;
SELECT state, attempts, not_found, rechecks FROM sac_webhook.inbox
 WHERE resource LIKE '%10000000-0000-4000-8000-000000000003';

DELETE FROM sac_webhook.inbox;
DELETE FROM sac_webhook.messages;
DELETE FROM sac_webhook.tickets;
DELETE FROM sac_webhook.tenants;
\! kill $(cat results/mock.pid) 2>/dev/null; rm -f results/mock.pid results/mock.port
