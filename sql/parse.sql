--
-- parse(): every valid shape, and every class of rejection
--
CREATE EXTENSION sac_webhook;

-- The two examples of the webhook documentation
SELECT * FROM sac_webhook.parse('{
  "data": {
    "status": "CREATION",
    "params": { "id": "debde69a-2dbb-427b-b478-6cffd7930ecf" },
    "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"
  },
  "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a",
  "topic": "sac_ticket"
}');

SELECT * FROM sac_webhook.parse('{"data": {"status": "UPDATE",
  "params": {"ticket_id": "debde69a-2dbb-427b-b478-6cffd7930ecf", "id": "3b5444b9-6fbb-40fd-b800-6c24176fb5ea"},
  "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf/messages/3b5444b9-6fbb-40fd-b800-6c24176fb5ea"},
  "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_message"}');

-- jsonb overload, every status, both topics
SELECT p.topic, p.status, p.message_id IS NULL AS no_message
  FROM (VALUES ('sac_ticket'), ('sac_message')) t(topic),
       (VALUES ('CREATION'), ('UPDATE'), ('DELETION')) s(status),
       LATERAL sac_webhook.parse(jsonb_build_object(
         'topic', t.topic, 'tenant_id', '3b5cf468-c858-404b-9e53-630e3df9d74a',
         'data', jsonb_build_object('status', s.status,
           'params', CASE t.topic WHEN 'sac_ticket'
                     THEN '{"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}'::jsonb
                     ELSE '{"ticket_id": "debde69a-2dbb-427b-b478-6cffd7930ecf", "id": "3b5444b9-6fbb-40fd-b800-6c24176fb5ea"}'::jsonb END,
           'resource', CASE t.topic WHEN 'sac_ticket'
                     THEN '/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf'
                     ELSE '/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf/messages/3b5444b9-6fbb-40fd-b800-6c24176fb5ea' END))) p
 ORDER BY 1, 2;

-- Ids in any case come out canonical; unknown keys at any depth are ignored;
-- escaped characters are read as what they stand for
SELECT tenant_id, resource, params, ticket_id FROM sac_webhook.parse('{
  "topic": "sac_ticket", "extra": [1, {"topic": 5}], "tenant_id": "3B5CF468-C858-404B-9E53-630E3DF9D74A",
  "data": {"status": "DELETION", "more": {"status": null}, "params": {"id": "DEBDE69A-2dbb-427b-b478-6cffd7930ecf", "x": 1},
           "resource": "/v0/tickets/debde69a-2DBB-427b-b478-6cffd7930ecf"}}');
SELECT topic, ticket_id FROM sac_webhook.parse('{"topic": "sac_\u0074icket", "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a",
  "data": {"status": "UPDATE", "params": {"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"},
           "resource": "\/v0\/tickets\/debde69a-2dbb-427b-b478-6cffd7930ecf"}}');

-- The error as a client sees it
SELECT sac_webhook.parse('{"topic": "sac_ticket"}');
SELECT sac_webhook.parse('{"data": {"status": "CREATION", "params": {"id": 42}, "resource": "/v0/tickets/x"},
  "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}');

-- Every rejection: SQLSTATE class 22, lower-case message, detail naming the field
CREATE FUNCTION pg_temp.verdict(payload text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
  PERFORM sac_webhook.parse(payload);
  RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RETURN CASE WHEN left(st, 2) = '22' THEN 'class 22' ELSE 'SQLSTATE ' || st END
         || CASE WHEN left(msg, 1) = lower(left(msg, 1)) THEN '' ELSE ' (capitalised!)' END
         || ': ' || msg || ' | ' || det;
END $$;

-- t(...) builds a ticket payload with one part replaced
CREATE FUNCTION pg_temp.t(topic text DEFAULT '"sac_ticket"', tenant text DEFAULT '"3b5cf468-c858-404b-9e53-630e3df9d74a"',
  status text DEFAULT '"CREATION"', params text DEFAULT '{"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}',
  resource text DEFAULT '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"')
RETURNS text LANGUAGE sql AS $$
  SELECT format('{"data": {"status": %s, "params": %s, "resource": %s}, "tenant_id": %s, "topic": %s}',
                status, params, resource, tenant, topic)
$$;

SELECT c.name, pg_temp.verdict(c.payload)
  FROM (VALUES
    ('empty',               ''),
    ('blank',               E'  \n\t '),
    ('not json',            'not json'),
    ('truncated',           '{"topic": "sac_ticket"'),
    ('trailing junk',       pg_temp.t() || ' x'),
    ('array',               '[1, 2]'),
    ('string',              '"sac_ticket"'),
    ('number',              '42'),
    ('null',                'null'),
    ('empty object',        '{}'),
    ('missing topic',       '{"data": {"status": "CREATION", "params": {"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}, "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a"}'),
    ('missing tenant',      '{"data": {"status": "CREATION", "params": {"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}, "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"}, "topic": "sac_ticket"}'),
    ('missing data',        '{"tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}'),
    ('missing status',      '{"data": {"params": {"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}, "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}'),
    ('missing params',      '{"data": {"status": "CREATION", "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}'),
    ('missing resource',    '{"data": {"status": "CREATION", "params": {"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}'),
    ('missing params.id',   pg_temp.t(params => '{}')),
    ('message missing ticket_id', pg_temp.t(topic => '"sac_message"', resource => '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf/messages/3b5444b9-6fbb-40fd-b800-6c24176fb5ea"', params => '{"id": "3b5444b9-6fbb-40fd-b800-6c24176fb5ea"}')),
    ('message missing id',  pg_temp.t(topic => '"sac_message"', resource => '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf/messages/3b5444b9-6fbb-40fd-b800-6c24176fb5ea"', params => '{"ticket_id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}')),
    ('topic number',        pg_temp.t(topic => '1')),
    ('topic null',          pg_temp.t(topic => 'null')),
    ('topic object',        pg_temp.t(topic => '{}')),
    ('tenant array',        pg_temp.t(tenant => '["3b5cf468-c858-404b-9e53-630e3df9d74a"]')),
    ('data string',         '{"data": "x", "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}'),
    ('status boolean',      pg_temp.t(status => 'true')),
    ('params array',        pg_temp.t(params => '["debde69a-2dbb-427b-b478-6cffd7930ecf"]')),
    ('params.id number',    pg_temp.t(params => '{"id": 7}')),
    ('resource null',       pg_temp.t(resource => 'null')),
    ('unknown topic',       pg_temp.t(topic => '"sac_order"')),
    ('topic case',          pg_temp.t(topic => '"SAC_TICKET"')),
    ('unknown status',      pg_temp.t(status => '"CREATED"')),
    ('status case',         pg_temp.t(status => '"creation"')),
    ('tenant not uuid',     pg_temp.t(tenant => '"seller-1"')),
    ('tenant no hyphens',   pg_temp.t(tenant => '"3b5cf468c858404b9e53630e3df9d74a"')),
    ('tenant braces',       pg_temp.t(tenant => '"{3b5cf468-c858-404b-9e53-630e3df9d74a}"')),
    ('tenant trailing',     pg_temp.t(tenant => '"3b5cf468-c858-404b-9e53-630e3df9d74a0"')),
    ('id not uuid',         pg_temp.t(params => '{"id": "../../admin"}', resource => '"/v0/tickets/../../admin"')),
    ('absolute url',        pg_temp.t(resource => '"https://evil.example/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('api url',             pg_temp.t(resource => '"https://api.magalu.com/seller/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('protocol relative',   pg_temp.t(resource => '"//evil.example/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('dot dot',             pg_temp.t(resource => '"/v0/tickets/../tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('encoded dot',         pg_temp.t(resource => '"/v0/tickets/%2e%2e/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('query string',        pg_temp.t(resource => '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf?x=1"')),
    ('fragment',            pg_temp.t(resource => '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf#x"')),
    ('trailing slash',      pg_temp.t(resource => '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf/"')),
    ('trailing junk path',  pg_temp.t(resource => '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf/messages"')),
    ('no leading slash',    pg_temp.t(resource => '"v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('upper-case path',     pg_temp.t(resource => '"/V0/TICKETS/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('other version',       pg_temp.t(resource => '"/v1/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('mismatched id',       pg_temp.t(resource => '"/v0/tickets/00000000-2dbb-427b-b478-6cffd7930ecf"')),
    ('message path for ticket', pg_temp.t(resource => '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf/messages/3b5444b9-6fbb-40fd-b800-6c24176fb5ea"')),
    ('ticket path for message', pg_temp.t(topic => '"sac_message"', params => '{"ticket_id": "debde69a-2dbb-427b-b478-6cffd7930ecf", "id": "3b5444b9-6fbb-40fd-b800-6c24176fb5ea"}')),
    ('message ids swapped', pg_temp.t(topic => '"sac_message"', params => '{"ticket_id": "debde69a-2dbb-427b-b478-6cffd7930ecf", "id": "3b5444b9-6fbb-40fd-b800-6c24176fb5ea"}', resource => '"/v0/tickets/3b5444b9-6fbb-40fd-b800-6c24176fb5ea/messages/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('message wrong ticket', pg_temp.t(topic => '"sac_message"', params => '{"ticket_id": "debde69a-2dbb-427b-b478-6cffd7930ecf", "id": "3b5444b9-6fbb-40fd-b800-6c24176fb5ea"}', resource => '"/v0/tickets/00000000-0000-4000-8000-000000000000/messages/3b5444b9-6fbb-40fd-b800-6c24176fb5ea"')),
    ('duplicate topic',     '{"topic": "sac_ticket", ' || substr(pg_temp.t(), 2)),
    ('duplicate status',    pg_temp.t(status => '"UPDATE", "status": "DELETION"')),
    ('duplicate params.id', pg_temp.t(params => '{"id": "debde69a-2dbb-427b-b478-6cffd7930ecf", "id": "00000000-0000-4000-8000-000000000000"}')),
    ('duplicate data',      '{"data": {}, ' || substr(pg_temp.t(), 2)),
    ('nul escape',          pg_temp.t(status => '"CREATION\u0000"')),
    ('lone surrogate',      pg_temp.t(status => '"\ud800"'))
  ) c(name, payload);

-- Invalid UTF-8 never reaches the parser as text: the server rejects it first
\set VERBOSITY sqlstate
SELECT pg_temp.verdict(convert_from('\x7b22746f706963223a2022ff227d'::bytea, 'SQL_ASCII'));
\set VERBOSITY default

-- The jsonb form applies the same rules
SELECT pg_temp.verdict('{"topic": "sac_ticket"}'::jsonb::text);
SELECT sac_webhook.parse('[1]'::jsonb);
SELECT sac_webhook.parse('{"data": {"status": "CREATION", "params": {"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}, "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf?"}, "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}'::jsonb);

-- STRICT: NULL in, NULL out
SELECT sac_webhook.parse(NULL::text) IS NULL AS null_text, sac_webhook.parse(NULL::jsonb) IS NULL AS null_jsonb;

-- Volatility and parallel safety as documented
SELECT p.oid::regprocedure, p.provolatile, p.proparallel, p.proisstrict
  FROM pg_proc p WHERE p.proname = 'parse' AND p.pronamespace = 'sac_webhook'::regnamespace ORDER BY p.oid::regprocedure::text;
