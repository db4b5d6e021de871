--
-- Token refresh: what the token endpoint answers is not trusted as
-- well-formed, a rotated refresh token is never lost, a failing endpoint
-- puts the tenant (not each row) in back-off, and a cancelled refresh
-- leaves no lock behind.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS sac_webhook;
CREATE EXTENSION sac_webhook;
RESET client_min_messages;
\! rm -f results/mock.port; (timeout 600 test/mock_api/sac_webhook_mock_api --listen 127.0.0.1:0 --port-file results/mock.port --auto --quiet --access-token tok-1 --refresh-token rt-initial --client demo-client:demo-secret > results/mock_tokens.log 2>&1 & echo $! > results/mock.pid)
\! for i in $(seq 100); do test -s results/mock.port && break; sleep 0.1; done
\set mock_port `cat results/mock.port`
SELECT set_config('sac_webhook.api_base_url', 'http://127.0.0.1:' || :'mock_port', false) IS NOT NULL AS api_configured,
       set_config('sac_webhook.token_url', 'http://127.0.0.1:' || :'mock_port' || '/oauth/token', false) IS NOT NULL AS token_configured;
SET sac_webhook.connect_timeout = '1s';
SET sac_webhook.request_timeout = '5s';
SET sac_webhook.retry_base_delay = '60s';

CREATE FUNCTION pg_temp.n(id text)
RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "UPDATE", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}',
                id, id)
$$;
CREATE FUNCTION pg_temp.t(i int) RETURNS text LANGUAGE sql AS $$
  SELECT format('40000000-0000-4000-8000-%s', lpad(i::text, 12, '0'))
$$;
-- the tenant's token state, without the tokens
CREATE FUNCTION pg_temp.tenant()
RETURNS TABLE (refresh_token text, expires_in_min int, streak int, backing_off boolean, last_token_error text)
LANGUAGE sql AS $$
  SELECT refresh_token, round(extract(epoch FROM token_expires_at - now()) / 60)::int,
         token_failure_streak, token_retry_at > now(), last_token_error
    FROM sac_webhook.tenants
$$;
CREATE FUNCTION pg_temp.row_of(i int)
RETURNS TABLE (state sac_webhook.inbox_state, attempts int, last_error text)
LANGUAGE sql AS $$
  SELECT state, attempts, last_error FROM sac_webhook.inbox
   WHERE resource = '/v0/tickets/' || pg_temp.t(i) ORDER BY id DESC LIMIT 1
$$;
CREATE FUNCTION pg_temp.expire() RETURNS void LANGUAGE sql AS $$
  UPDATE sac_webhook.tenants SET token_expires_at = now()
$$;

INSERT INTO sac_webhook.tenants (tenant_id, client_id, client_secret, access_token, refresh_token, token_expires_at)
VALUES ('3b5cf468-c858-404b-9e53-630e3df9d74a', 'demo-client', 'demo-secret', 'tok-1', 'rt-initial',
        now() + interval '1 hour');

-- expires_in as a JSON number that is not an int4: the rotated refresh
-- token is stored, and the lifetime read (3600.0) or clamped (one day)
\! test/mock_ctl POST /_mock/tokens '{"access_token": "at-float"}'
\! test/mock_ctl POST /_mock/token_faults '{"body": "{\"access_token\": \"at-float\", \"refresh_token\": \"rt-float\", \"expires_in\": 3600.0}"}'
SELECT pg_temp.expire();
SELECT sac_webhook.receive(pg_temp.n(pg_temp.t(1))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of(1);
SELECT * FROM pg_temp.tenant();
\! test/mock_ctl POST /_mock/tokens '{"access_token": "at-big"}'
\! test/mock_ctl POST /_mock/token_faults '{"body": "{\"access_token\": \"at-big\", \"refresh_token\": \"rt-big\", \"expires_in\": 2147483648}"}'
SELECT pg_temp.expire();
SELECT sac_webhook.receive(pg_temp.n(pg_temp.t(2))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.tenant();
\! test/mock_ctl POST /_mock/tokens '{"access_token": "at-str"}'
\! test/mock_ctl POST /_mock/token_faults '{"body": "{\"access_token\": \"at-str\", \"expires_in\": \"7200\", \"token_type\": \"Bearer\"}"}'
SELECT pg_temp.expire();
SELECT sac_webhook.receive(pg_temp.n(pg_temp.t(3))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
-- (an answer without refresh_token keeps the current one)
SELECT * FROM pg_temp.tenant();
\! test/mock_ctl POST /_mock/tokens '{"access_token": "at-odd"}'
\! test/mock_ctl POST /_mock/token_faults '{"body": "{\"access_token\": \"at-odd\", \"refresh_token\": \"rt-odd\", \"expires_in\": -5e400}"}'
SELECT pg_temp.expire();
SELECT sac_webhook.receive(pg_temp.n(pg_temp.t(4))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.tenant();

-- An access token that is not a bearer token (CR LF would add request
-- headers) is refused; the rotated refresh token is kept all the same
\! test/mock_ctl POST /_mock/token_faults '{"body": "{\"access_token\": \"evil\\r\\nX-Injected: yes\", \"refresh_token\": \"rt-after-evil\", \"expires_in\": 3600}"}'
SELECT pg_temp.expire();
SELECT sac_webhook.receive(pg_temp.n(pg_temp.t(5))) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of(5);
SELECT * FROM pg_temp.tenant();
SELECT count(*) AS stored FROM sac_webhook.tenants WHERE access_token ~ '[\r\n :]';
-- other answers with no usable access token
UPDATE sac_webhook.tenants SET token_retry_at = NULL;
\! test/mock_ctl POST /_mock/token_faults '{"body": "{\"refresh_token\": \"rt-no-access\"}"}'
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.tenant();
UPDATE sac_webhook.tenants SET token_retry_at = NULL;
\! test/mock_ctl POST /_mock/token_faults '{"body": "{\"access_token\": 12345, \"refresh_token\": \"rt-number\"}"}'
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.tenant();
UPDATE sac_webhook.tenants SET token_retry_at = NULL;
\! test/mock_ctl POST /_mock/token_faults '{"body": "[\"access_token\"]"}'
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.tenant();
UPDATE sac_webhook.tenants SET token_retry_at = NULL;
\! test/mock_ctl POST /_mock/token_faults '{"body": "{\"access_token\": \"at-\\u0000\", \"refresh_token\": \"rt-kept\"}"}'
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.tenant();

-- A failing token endpoint: the tenant backs off as a whole.  Its rows are
-- not claimed until token_retry_at, so the endpoint is asked once, not once
-- per row or per batch; each failure in a row doubles the wait
DELETE FROM sac_webhook.inbox;
UPDATE sac_webhook.tenants SET refresh_token = 'rt-float', token_retry_at = NULL, token_failure_streak = 0,
       last_token_error = NULL;
\! test/mock_ctl POST /_mock/token_faults '{"status": 503, "count": 100}'
SELECT pg_temp.expire();
SELECT count(sac_webhook.receive(pg_temp.n(pg_temp.t(i)))) AS received FROM generate_series(10, 29) i;
\set before `test/mock_ctl GET /_mock/stats | sed 's/.*"token_requests":\([0-9]*\).*/\1/'`
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.row_of(10);
SELECT *, (SELECT extract(epoch FROM token_retry_at - now()) BETWEEN 50 AND 61 FROM sac_webhook.tenants) AS first_wait
  FROM pg_temp.tenant();
SELECT waiting_for_tenant AS waiting FROM sac_webhook.stats;
UPDATE sac_webhook.inbox SET next_attempt_at = now();
SELECT sac_webhook.process() AS finished;
SELECT sac_webhook.process() AS finished;
\set after `test/mock_ctl GET /_mock/stats | sed 's/.*"token_requests":\([0-9]*\).*/\1/'`
SELECT :after - :before AS token_requests;
-- the back-off ends: one request again, and a longer wait
UPDATE sac_webhook.tenants SET token_retry_at = now();
SELECT sac_webhook.process() AS finished;
\set after `test/mock_ctl GET /_mock/stats | sed 's/.*"token_requests":\([0-9]*\).*/\1/'`
SELECT :after - :before AS token_requests;
SELECT streak, (SELECT extract(epoch FROM token_retry_at - now()) BETWEEN 110 AND 121 FROM sac_webhook.tenants) AS second_wait
  FROM pg_temp.tenant();
-- new credentials end the back-off at once
\! test/mock_ctl POST /_mock/reset
\! test/mock_ctl POST /_mock/tokens '{"refresh_token": "rt-new"}'
UPDATE sac_webhook.tenants SET refresh_token = 'rt-new';
SELECT * FROM pg_temp.tenant();
SELECT sac_webhook.process() AS finished;
SELECT * FROM pg_temp.tenant();
SELECT count(*) AS waiting FROM sac_webhook.inbox WHERE state <> 'done';
-- the token recovered: notifications of the time it failed may be lost, so
-- a sync of what changed since the failures began is queued
SELECT kind, since IS NOT NULL AND since <= now() AS since_failures_began, state
  FROM sac_webhook.syncs;
SELECT token_failing_since FROM sac_webhook.tenants;
DELETE FROM sac_webhook.syncs;

-- A refresh cancelled half-way (statement_timeout during a slow token
-- request) releases the tenant's refresh lock
\! test/mock_ctl POST /_mock/token_faults '{"delay_ms": 3000}'
SELECT pg_temp.expire();
SELECT sac_webhook.receive(pg_temp.n(pg_temp.t(50))) > 0 AS received;
SET statement_timeout = '1s';
SELECT sac_webhook.process() AS finished;
RESET statement_timeout;
SELECT count(*) AS advisory_locks FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
\! sleep 2.5

-- Tokens and secrets appear in no inbox row, error or statistic
SELECT count(*) AS leaks FROM sac_webhook.inbox i
 WHERE i::text ~ '\m(tok-1|rt-initial|demo-secret|(at|rt)-[a-z0-9-]+)\M';
SELECT count(*) AS leaks FROM sac_webhook.stats s
 WHERE s::text ~ '\m(tok-1|rt-initial|demo-secret|(at|rt)-[a-z0-9-]+)\M';
SELECT count(*) AS leaks FROM sac_webhook.tenants t
 WHERE t.last_token_error ~ '\m(tok-1|rt-initial|demo-secret|evil|(at|rt)-[a-z0-9-]+)\M';

\! kill $(cat results/mock.pid) 2>/dev/null; rm -f results/mock.pid results/mock.port
