--
-- process() (like the worker) runs as whoever calls it, often a superuser:
-- nothing that the database's owner or the caller put on the search_path
-- is ever called, whether it shadows a built-in by an exact type match or
-- by coming first.
--
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS sac_webhook;
CREATE EXTENSION sac_webhook;
RESET client_min_messages;
\! rm -f results/mock.port; (timeout 600 test/mock_api/sac_webhook_mock_api --listen 127.0.0.1:0 --port-file results/mock.port --auto --quiet --access-token tok-1 --refresh-token rt-initial --client demo-client:demo-secret > results/mock_search_path.log 2>&1 & echo $! > results/mock.pid)
\! for i in $(seq 100); do test -s results/mock.port && break; sleep 0.1; done
\set mock_port `cat results/mock.port`
SELECT set_config('sac_webhook.api_base_url', 'http://127.0.0.1:' || :'mock_port', false) IS NOT NULL AS api_configured,
       set_config('sac_webhook.token_url', 'http://127.0.0.1:' || :'mock_port' || '/oauth/token', false) IS NOT NULL AS token_configured;
SET sac_webhook.connect_timeout = '1s';
SET sac_webhook.request_timeout = '5s';
SET sac_webhook.not_found_retries = 0;

-- Look-alikes of what the pipeline's statements use, in public (found by
-- an exact type match, pg_catalog coming first) and in evil (put first on
-- the search_path): each one records that it was called.
CREATE SCHEMA evil;
CREATE TABLE public.hijacked (fn text);
CREATE FUNCTION public.make_interval(secs integer) RETURNS interval LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('public.make_interval'); SELECT pg_catalog.make_interval(secs => secs) $$;
CREATE FUNCTION public.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('public.jsonb_typeof'); SELECT pg_catalog.jsonb_typeof($1) $$;
CREATE FUNCTION public.unnest(uuid[]) RETURNS SETOF uuid LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('public.unnest'); SELECT pg_catalog.unnest($1) $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('evil.now'); SELECT pg_catalog.now() $$;
CREATE FUNCTION evil.make_interval(years int DEFAULT 0, months int DEFAULT 0, weeks int DEFAULT 0,
    days int DEFAULT 0, hours int DEFAULT 0, mins int DEFAULT 0, secs double precision DEFAULT 0)
  RETURNS interval LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('evil.make_interval');
        SELECT pg_catalog.make_interval(years, months, weeks, days, hours, mins, secs) $$;
CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('evil.jsonb_typeof'); SELECT pg_catalog.jsonb_typeof($1) $$;
CREATE FUNCTION evil.uuid_eq(uuid, uuid) RETURNS boolean LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('evil.='); SELECT pg_catalog.uuid_eq($1, $2) $$;
CREATE OPERATOR evil.= (leftarg = uuid, rightarg = uuid, function = evil.uuid_eq);
CREATE FUNCTION evil.textregexeq(text, text) RETURNS boolean LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('evil.~'); SELECT pg_catalog.textregexeq($1, $2) $$;
CREATE OPERATOR evil.~ (leftarg = text, rightarg = text, function = evil.textregexeq);
CREATE FUNCTION evil.jsonb_object_field_text(jsonb, text) RETURNS text LANGUAGE sql
  AS $$ INSERT INTO public.hijacked VALUES ('evil.->>'); SELECT pg_catalog.jsonb_object_field_text($1, $2) $$;
CREATE OPERATOR evil.->> (leftarg = jsonb, rightarg = text, function = evil.jsonb_object_field_text);
-- they do work when called
SELECT count(*) AS works FROM public.unnest(ARRAY['10000000-0000-4000-8000-000000000001'::uuid]);
SELECT count(*) AS calls FROM public.hijacked;
TRUNCATE public.hijacked;

INSERT INTO sac_webhook.tenants (tenant_id, client_id, client_secret, access_token, refresh_token, token_expires_at)
VALUES ('3b5cf468-c858-404b-9e53-630e3df9d74a', 'demo-client', 'demo-secret', 'tok-1', 'rt-initial', now());
CREATE FUNCTION pg_temp.n(status text, id text) RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "%s", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}',
                status, id, id)
$$;
CREATE FUNCTION pg_temp.m(ticket text, id text) RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": "CREATION", "params": {"ticket_id": "%s", "id": "%s"}, "resource": "/v0/tickets/%s/messages/%s"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_message"}',
                ticket, id, ticket, id)
$$;

-- The default search_path, with the look-alikes in public
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000001')) > 0 AS received,
       sac_webhook.receive(pg_temp.m('10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT fn AS called FROM public.hijacked;

-- evil first, as a database owner could set with ALTER DATABASE ... SET
UPDATE sac_webhook.tenants SET token_expires_at = now();
\! test/mock_ctl DELETE /_mock/v0/tickets/10000000-0000-4000-8000-000000000001
SET search_path = evil, public, pg_catalog;
SELECT sac_webhook.receive(pg_temp.n('CREATION', '10000000-0000-4000-8000-000000000002')) > 0 AS received,
       sac_webhook.receive(pg_temp.n('DELETION', '10000000-0000-4000-8000-000000000001')) > 0 AS received;
SELECT sac_webhook.process() AS finished;
SELECT sac_webhook.requeue_dead() AS requeued, sac_webhook.discard_dead() AS discarded,
       sac_webhook.discard_unregistered() AS discarded;
RESET search_path;
SELECT fn AS called FROM public.hijacked;
SELECT state, attempts, last_error FROM sac_webhook.inbox ORDER BY id;
SELECT id FROM sac_webhook.tickets ORDER BY id;
SELECT id FROM sac_webhook.messages ORDER BY id;
SELECT token_refreshed_at IS NOT NULL AS refreshed FROM sac_webhook.tenants;
SHOW search_path;

DROP SCHEMA evil CASCADE;
DROP FUNCTION public.make_interval(integer), public.jsonb_typeof(jsonb), public.unnest(uuid[]);
DROP TABLE public.hijacked;
DELETE FROM sac_webhook.inbox;
DELETE FROM sac_webhook.messages;
DELETE FROM sac_webhook.tickets;
DELETE FROM sac_webhook.tenants;
\! kill $(cat results/mock.pid) 2>/dev/null; rm -f results/mock.pid results/mock.port
