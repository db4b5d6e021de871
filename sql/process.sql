--
-- process(): claim -> fetch -> apply against the mock API, every outcome
--
-- The mock API runs for the length of this test on a free port.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS sac_webhook;
RESET client_min_messages;
\! rm -f results/mock.port; (timeout 600 test/mock_api/sac_webhook_mock_api --listen 127.0.0.1:0 --port-file results/mock.port --auto --quiet --access-token tok-1 --refresh-token rt-initial --client demo-client:demo-secret > results/mock.log 2>&1 & echo $! > results/mock.pid)
\! for i in $(seq 100); do test -s results/mock.port && break; sleep 0.1; done
\set mock_port `cat results/mock.port`
SELECT set_config('sac_webhook.api_base_url', 'http://127.0.0.1:' || :'mock_port', false) IS NOT NULL AS api_configured,
       set_config('sac_webhook.token_url', 'http://127.0.0.1:' || :'mock_port' || '/oauth/token', false) IS NOT NULL AS token_configured;
SET sac_webhook.connect_timeout = '1s';
SET sac_webhook.request_timeout = '1s';
SET sac_webhook.retry_base_delay = '60s';

CREATE FUNCTION pg_temp.n(status text, id text)
RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "%s", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}',
                status, id, id)
$$;
CREATE FUNCTION pg_temp.m(status text, ticket text, id text)
RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "%s", "params": {"ticket_id": "%s", "id": "%s"}, "resource": "/v0/tickets/%s/messages/%s"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_message"}',
                status, ticket, id, ticket, id)
$$;
-- the inbox row of a resource's latest notification
CREATE FUNCTION pg_temp.row_of(rid text)
RETURNS TABLE (state sac_webhook.inbox_state, attempts int, last_http_status int, last_error text)
LANGUAGE sql AS $$
  SELECT i.state, i.attempts, i.last_http_status,
         regexp_replace(i.last_error, ' \(request id [^)]*\)', '') FROM sac_webhook.inbox i
   WHERE i.resource LIKE '%' || rid ORDER BY i.id DESC LIMIT 1
$$;
-- make every waiting row due now
CREATE FUNCTION pg_temp.due() RETURNS void LANGUAGE sql AS $$
  UPDATE sac_webhook.inbox SET next_attempt_at = now() WHERE state IN ('pending', 'retrying')
$$;

-- Nothing is fetched for a tenant that is not registered
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000001');

INSERT INTO sac_webhook.tenants (tenant_id, name, client_id, client_secret, access_token, refresh_token, token_expires_at)
VALUES ('3b5cf468-c858-404b-9e53-630e3df9d74a', 'demo seller', 'demo-client', 'demo-secret', 'tok-1', 'rt-initial',
        now() + interval '1 hour');

-- CREATION of a ticket and of a message: rows appear with typed columns
SELECT sac_webhook.receive(pg_temp.m('CREATION', '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT id, code IS NOT NULL AS has_code, type, status, closed, reason, protocol, origin, order_id, channel_id,
       due_date, created_at, updated_at, data->'order'->'delivery'->'seller'->>'name' AS seller
  FROM sac_webhook.tickets;
SELECT id, ticket_id, message, sender_type, destination, status, created_at, updated_at
  FROM sac_webhook.messages;
SELECT state, attempts, last_http_status, last_error, notifications FROM sac_webhook.inbox ORDER BY id;

-- UPDATE: the fetched document replaces the stored one
\! test/mock_ctl PUT /_mock/v0/tickets/10000000-0000-4000-8000-000000000001 '{"id": "10000000-0000-4000-8000-000000000001", "status": "closed", "closed": true, "reason": "change_of_mind", "type": "cancellation", "created_at": "2024-08-07T13:42:45", "updated_at": "2024-08-08T09:00:00"}'
SELECT sac_webhook.receive(pg_temp.n('UPDATE', '10000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT status, closed, reason, type, updated_at FROM sac_webhook.tickets;

-- An older document never overwrites newer stored state
\! test/mock_ctl PUT /_mock/v0/tickets/10000000-0000-4000-8000-000000000001 '{"id": "10000000-0000-4000-8000-000000000001", "status": "waiting", "closed": false, "updated_at": "2024-08-07T13:42:46"}'
SELECT sac_webhook.receive(pg_temp.n('UPDATE', '10000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT status, closed, updated_at FROM sac_webhook.tickets;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000001');

-- A DELETION the API does not confirm deletes nothing (a forged one cannot
-- erase data); the row waits to check again later (sql/deletions.sql)
SELECT sac_webhook.receive(pg_temp.n('DELETION', '10000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT count(*) AS tickets FROM sac_webhook.tickets;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000001');

-- Moderation blocks a message: its text and attachments are not kept
\! test/mock_ctl PUT /_mock/v0/tickets/10000000-0000-4000-8000-000000000001/messages/20000000-0000-4000-8000-000000000001 '{"id": "20000000-0000-4000-8000-000000000001", "message": "call me on +55 11 99999-0000", "attachments": [{"url": "https://x/doc.pdf"}], "ticket": {"id": "10000000-0000-4000-8000-000000000001"}, "sender": {"type": "customer"}, "moderation": {"status": "blocked", "block_rules": ["phone_number"], "updated_at": "2024-08-10T10:00:00"}, "created_at": "2024-08-09T13:30:38.609142Z"}'
SELECT sac_webhook.receive(pg_temp.m('UPDATE', '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT status, message, data ? 'message' AS has_text, data ? 'attachments' AS has_attachments,
       data->'moderation'->'block_rules' AS block_rules, updated_at
  FROM sac_webhook.messages;
SELECT count(*) AS traces FROM sac_webhook.messages m WHERE m::text LIKE '%99999-0000%' OR m::text LIKE '%doc.pdf%';

-- Moderation: the message is gone upstream, and here
\! test/mock_ctl DELETE /_mock/v0/tickets/10000000-0000-4000-8000-000000000001/messages/20000000-0000-4000-8000-000000000001
SELECT sac_webhook.receive(pg_temp.m('DELETION', '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT count(*) AS messages FROM sac_webhook.messages;

-- A confirmed ticket DELETION takes the ticket's messages with it
SELECT sac_webhook.receive(pg_temp.m('CREATION', '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000002')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT count(*) AS messages_before FROM sac_webhook.messages;
\! test/mock_ctl DELETE /_mock/v0/tickets/10000000-0000-4000-8000-000000000001
SELECT sac_webhook.receive(pg_temp.n('DELETION', '10000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT (SELECT count(*) FROM sac_webhook.tickets) AS tickets, (SELECT count(*) FROM sac_webhook.messages) AS messages;
-- nothing of the deleted content remains in any table of the extension
SELECT count(*) AS traces FROM sac_webhook.inbox i
 WHERE i::text ILIKE '%change_of_mind%' OR i::text ILIKE '%Bela%' OR i::text ILIKE '%delivered next week%';

-- A message whose ticket is not stored is stored all the same
SELECT sac_webhook.receive(pg_temp.m('CREATION', '10000000-0000-4000-8000-000000000009', '20000000-0000-4000-8000-000000000009')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT ticket_id, (SELECT count(*) FROM sac_webhook.tickets t WHERE t.id = m.ticket_id) AS ticket_stored
  FROM sac_webhook.messages m;

-- A 404 after a CREATION may be lag: checked again, then taken as gone
SET sac_webhook.not_found_retries = 1;
\! test/mock_ctl DELETE /_mock/v0/tickets/10000000-0000-4000-8000-000000000002
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000002')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000002');
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000002');

-- 500: retried later; then it works
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000003", "status": 500}'
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000003')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000003');
SELECT next_attempt_at BETWEEN now() + interval '29 s' AND now() + interval '61 s' AS backoff
  FROM sac_webhook.inbox WHERE resource LIKE '%10000000-0000-4000-8000-000000000003';
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000003');

-- 429 with Retry-After: the next attempt waits as told
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000004", "status": 429, "retry_after": "300"}'
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000004')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000004');
SELECT next_attempt_at BETWEEN now() + interval '290 s' AND now() + interval '310 s' AS honours_retry_after
  FROM sac_webhook.inbox WHERE resource LIKE '%10000000-0000-4000-8000-000000000004';

-- Slow answer (timeout), connection reset (more than once, as libcurl itself
-- retries a request once when a kept-alive connection dies), invalid JSON: retried
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000005", "delay_ms": 3000}'
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000006", "mode": "reset", "count": 3}'
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000007", "mode": "badjson"}'
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-00000000000' || i)) > 0 AS received
  FROM generate_series(5, 7) i;
SELECT sac_webhook.process() AS finished;
SELECT i, r.state, r.attempts, r.last_http_status, r.last_error ~ 'timed out|Timeout' AS timed_out,
       r.last_error ~ 'not valid JSON' AS bad_json, r.last_error IS NOT NULL AS has_error
  FROM generate_series(5, 7) i, pg_temp.row_of('10000000-0000-4000-8000-00000000000' || i) r;
-- (drop the resets libcurl did not use up)
\! test/mock_ctl POST /_mock/reset

-- Oversized answers and client errors other than 404: dead at once
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000008", "mode": "oversize"}'
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000010", "status": 403}'
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-0000000000' || i)) > 0 AS received
  FROM (VALUES ('08'), ('10')) v(i);
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000008');
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000010');

-- Attempts run out: dead, visible, and re-queueable
SET sac_webhook.max_attempts = 2;
\! test/mock_ctl POST /_mock/faults '{"path": "/v0/tickets/10000000-0000-4000-8000-000000000011", "status": 503, "count": 2}'
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000011')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000011');
SELECT dead >= 3 AS dead_visible, last_error IS NOT NULL AS has_last_error FROM sac_webhook.stats;
RESET sac_webhook.max_attempts;
SELECT sac_webhook.requeue_dead() AS requeued;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000011');
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000008');

-- 401: the token is refreshed once, the rotated tokens are stored, the fetch repeated
\! test/mock_ctl POST /_mock/tokens/expire
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000012')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000012');
SELECT access_token <> 'tok-1' AS new_access, refresh_token <> 'rt-initial' AS rotated_refresh,
       token_expires_at > now() + interval '50 min' AS expiry_set, token_refreshed_at IS NOT NULL AS refreshed,
       last_token_error
  FROM sac_webhook.tenants;
SELECT refresh_token AS first_rotation FROM sac_webhook.tenants \gset

-- A token about to expire is refreshed before fetching
UPDATE sac_webhook.tenants SET token_expires_at = now() + interval '10 s';
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000013')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT refresh_token <> :'first_rotation' AS rotated_again, token_expires_at > now() + interval '50 min' AS expiry_set
  FROM sac_webhook.tenants;

-- A failing refresh leaves the rows waiting with a clear error; nothing was
-- tried, so no attempt is used up; the tenant backs off (its rows wait for
-- it), and each failure in a row waits longer
\! test/mock_ctl POST /_mock/token_faults '{"status": 500}'
\! test/mock_ctl POST /_mock/tokens/expire
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000014')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000014');
SELECT last_token_error, token_failure_streak, token_retry_at > now() AS backing_off FROM sac_webhook.tenants;
SELECT pg_temp.due();
SELECT sac_webhook.process() AS finished;
UPDATE sac_webhook.tenants SET token_retry_at = now();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000014');
SELECT last_token_error FROM sac_webhook.tenants;
SELECT access_token AS good_access, refresh_token AS good_refresh FROM sac_webhook.tenants \gset

-- A refresh token the endpoint refuses
UPDATE sac_webhook.tenants SET refresh_token = 'spent', token_expires_at = now();
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000015')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000015');
SELECT last_token_error, token_failure_streak FROM sac_webhook.tenants;

-- A document value that cannot be stored: the row retries, and its error
-- does not quote the document.  (The credentials set here end the tenant's
-- back-off: the row that waited for them is finished too.)
\! test/mock_ctl PUT /_mock/v0/tickets/10000000-0000-4000-8000-000000000017 '{"id": "10000000-0000-4000-8000-000000000017", "status": "open", "updated_at": "someday in 2024-private-data"}'
UPDATE sac_webhook.tenants SET refresh_token = :'good_refresh', access_token = :'good_access', token_expires_at = now() + interval '1 hour';
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000017')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000017');

-- A document holding \u0000 (which jsonb and text cannot store) is stored
-- with U+FFFD in its place; an escaped backslash before "u0000" is text
\! test/mock_ctl PUT /_mock/v0/tickets/10000000-0000-4000-8000-000000000018 '{"id": "10000000-0000-4000-8000-000000000018", "status": "open", "reason": "a\u0000b", "code": "c\\u0000d", "updated_at": "2024-08-07T13:42:46"}'
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000018')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT reason = E'a\uFFFDb' AS replaced, data->>'reason' = E'a\uFFFDb' AS in_data, code
  FROM sac_webhook.tickets WHERE id = '10000000-0000-4000-8000-000000000018';

-- Tokens and secrets appear nowhere but in tenants: the initial ones and
-- every one the token endpoint issued on the way (at-N, rt-N)
SELECT count(*) AS leaks FROM sac_webhook.inbox i
 WHERE i::text ~ '\m(tok-1|rt-initial|demo-secret|(at|rt)-[0-9]+)\M';
SELECT count(*) AS leaks FROM sac_webhook.stats s
 WHERE s::text ~ '\m(tok-1|rt-initial|demo-secret|(at|rt)-[0-9]+)\M';
SELECT count(*) AS tokens_issued FROM sac_webhook.tenants WHERE refresh_token ~ '^rt-[0-9]+$';
UPDATE sac_webhook.tenants SET refresh_token = 'spent', access_token = 'expired', token_expires_at = now();

-- A disabled tenant's rows wait
UPDATE sac_webhook.tenants SET enabled = false, access_token = :'good_access', refresh_token = :'good_refresh',
       token_expires_at = now() + interval '1 hour';
SELECT sac_webhook.receive(pg_temp.n('UPDATE', '10000000-0000-4000-8000-000000000016')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of('10000000-0000-4000-8000-000000000016');
SELECT waiting_for_tenant >= 1 AS waiting FROM sac_webhook.stats;

-- With confirmation off, a DELETION is applied without a fetch
DELETE FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying');
UPDATE sac_webhook.tenants SET enabled = true;
SET sac_webhook.confirm_deletions = off;
SELECT count(*) AS messages_before FROM sac_webhook.messages;
\! test/mock_ctl GET '/_mock/count?path=/v0/tickets/10000000-0000-4000-8000-000000000009/messages/20000000-0000-4000-8000-000000000009'
SELECT sac_webhook.receive(pg_temp.m('DELETION', '10000000-0000-4000-8000-000000000009', '20000000-0000-4000-8000-000000000009')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT count(*) AS messages_after FROM sac_webhook.messages;
\! test/mock_ctl GET '/_mock/count?path=/v0/tickets/10000000-0000-4000-8000-000000000009/messages/20000000-0000-4000-8000-000000000009'
RESET sac_webhook.confirm_deletions;

-- process() honours max_events
SELECT sac_webhook.receive(pg_temp.n('UPDATE', '30000000-0000-4000-8000-00000000000' || i)) > 0 AS received
  FROM generate_series(1, 5) i;
SELECT sac_webhook.process(2) AS finished;
SELECT sac_webhook.process(0) AS finished;
SELECT sac_webhook.process() AS finished;
SELECT sac_webhook.process(-1);

-- Finished rows are pruned after the retention period
SET sac_webhook.done_retention = 0;
SELECT sac_webhook.process() AS finished;
SELECT count(*) AS done_rows FROM sac_webhook.inbox WHERE state = 'done';
RESET sac_webhook.done_retention;

-- GUCs reject what is not http(s); only superusers may point the worker
-- elsewhere.  They follow the rule of tenants.api_base_url: no user name
-- (which would hide the real host), query, fragment or white space
SET sac_webhook.api_base_url = 'file:///etc/passwd';
SET sac_webhook.token_url = 'gopher://x';
SET sac_webhook.api_base_url = 'https://good.example@evil.example/';
SET sac_webhook.token_url = 'https://id.magalu.com/oauth/token?x=1';
SET sac_webhook.api_base_url = 'https:///seller';
SET sac_webhook.api_base_url = 'https://api.magalu.com/seller#frag';
SET sac_webhook.api_base_url = E'https://api.magalu.com/sel ler';
SET sac_webhook.api_base_url = 'HTTPS://api.magalu.com:443/seller';
SHOW sac_webhook.api_base_url;
\set VERBOSITY terse
INSERT INTO sac_webhook.tenants (tenant_id, api_base_url)
VALUES ('3b5cf468-c858-404b-9e53-630e3df90001', 'https://good.example@evil.example/');
\set VERBOSITY default

\! kill $(cat results/mock.pid) 2>/dev/null; rm -f results/mock.pid results/mock.port
