--
-- parse(): how deep a payload may nest, and \u0000
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS sac_webhook;
RESET client_min_messages;

CREATE FUNCTION pg_temp.verdict(payload text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
  PERFORM sac_webhook.parse(payload);
  RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RETURN CASE WHEN left(st, 2) = '22' THEN 'class 22' ELSE 'SQLSTATE ' || st END
         || ': ' || msg || ' | ' || det;
END $$;

CREATE FUNCTION pg_temp.verdict(payload jsonb) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
  PERFORM sac_webhook.parse(payload);
  RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RETURN CASE WHEN left(st, 2) = '22' THEN 'class 22' ELSE 'SQLSTATE ' || st END
         || ': ' || msg || ' | ' || det;
END $$;

-- t(...) builds a ticket payload with one part replaced; extra goes first in
-- the payload object
CREATE FUNCTION pg_temp.t(topic text DEFAULT '"sac_ticket"', tenant text DEFAULT '"3b5cf468-c858-404b-9e53-630e3df9d74a"',
  status text DEFAULT '"CREATION"', params text DEFAULT '{"id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}',
  resource text DEFAULT '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"', extra text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$
  SELECT format('{%s"data": {"status": %s, "params": %s, "resource": %s}, "tenant_id": %s, "topic": %s}',
                extra || ', ', status, params, resource, tenant, topic)
$$;

-- n arrays, one in the other
CREATE FUNCTION pg_temp.arrays(n integer) RETURNS text LANGUAGE sql
  AS $$ SELECT repeat('[', n) || repeat(']', n) $$;

-- n objects, one in the other
CREATE FUNCTION pg_temp.objects(n integer) RETURNS text LANGUAGE sql
  AS $$ SELECT repeat('{"a": ', n - 1) || '{}' || repeat('}', n - 1) $$;

--
-- Nesting: at most 64 levels, the payload object being the first
--
SELECT c.name, pg_temp.verdict(c.payload)
  FROM (VALUES
    ('64 levels of arrays',        pg_temp.t(extra => '"x": ' || pg_temp.arrays(63))),
    ('65 levels of arrays',        pg_temp.t(extra => '"x": ' || pg_temp.arrays(64))),
    ('64 levels of objects',       pg_temp.t(extra => '"x": ' || pg_temp.objects(63))),
    ('65 levels of objects',       pg_temp.t(extra => '"x": ' || pg_temp.objects(64))),
    ('64 levels, mixed',           pg_temp.t(extra => '"x": ' || repeat('[{"a": ', 31) || '[]' || repeat('}]', 31))),
    ('65 levels, mixed',           pg_temp.t(extra => '"x": ' || repeat('[{"a": ', 32) || '0' || repeat('}]', 32))),
    ('64 levels in data',          pg_temp.t(status => '"CREATION", "deep": ' || pg_temp.arrays(62))),
    ('65 levels in data',          pg_temp.t(status => '"CREATION", "deep": ' || pg_temp.arrays(63))),
    ('64 levels in params',        pg_temp.t(params => '{"id": "debde69a-2dbb-427b-b478-6cffd7930ecf", "deep": ' || pg_temp.arrays(61) || '}')),
    ('65 levels in params',        pg_temp.t(params => '{"id": "debde69a-2dbb-427b-b478-6cffd7930ecf", "deep": ' || pg_temp.arrays(62) || '}')),
    ('key shown as written',       pg_temp.t(extra => '"\u0078\"y": ' || pg_temp.arrays(64))),
    ('20,000 levels of arrays',    pg_temp.t(extra => '"x": ' || pg_temp.arrays(20000))),
    ('20,000 levels of objects',   pg_temp.t(extra => '"x": ' || pg_temp.objects(20000))),
    ('20,000 levels, unclosed',    pg_temp.t(extra => '"x": ' || repeat('[', 20000))),
    ('deep after the known keys',  rtrim(pg_temp.t(), '}') || ', "z": ' || pg_temp.arrays(20000) || '}')
  ) c(name, payload);

-- The jsonb form: the same limit
SELECT c.name, pg_temp.verdict(c.payload::jsonb)
  FROM (VALUES
    ('64 levels of arrays',        pg_temp.t(extra => '"x": ' || pg_temp.arrays(63))),
    ('65 levels of arrays',        pg_temp.t(extra => '"x": ' || pg_temp.arrays(64))),
    ('64 levels of objects',       pg_temp.t(extra => '"x": ' || pg_temp.objects(63))),
    ('65 levels of objects',       pg_temp.t(extra => '"x": ' || pg_temp.objects(64))),
    ('65 levels in data',          pg_temp.t(status => '"CREATION", "deep": ' || pg_temp.arrays(63)))
  ) c(name, payload);

-- However little stack the server allows, deep payloads are refused in
-- class 22, never with "stack depth limit exceeded"
CREATE TEMP TABLE deep AS
  SELECT pg_temp.t(extra => '"x": ' || pg_temp.arrays(5000)) AS p,
         pg_temp.t(extra => '"x": ' || pg_temp.objects(5000))::jsonb AS j;
SET max_stack_depth = '100kB';
SELECT pg_temp.verdict(p) AS text_form, pg_temp.verdict(j) AS jsonb_form FROM deep;
RESET max_stack_depth;

--
-- \u0000: ignored in unknown keys, an error naming the field in a known one
--
SELECT c.name, pg_temp.verdict(c.payload)
  FROM (VALUES
    ('value of an unknown key',    pg_temp.t(extra => '"x": "\u0000"')),
    ('name of an unknown key',     pg_temp.t(extra => '"a\u0000b": 1')),
    ('unknown key in data',        pg_temp.t(status => '"CREATION", "x": "\u0000\u0000"')),
    ('unknown key in params',      pg_temp.t(params => '{"\u0000": "\u0000", "id": "debde69a-2dbb-427b-b478-6cffd7930ecf"}')),
    ('in arrays and objects',      pg_temp.t(extra => '"x": [{"y": ["\u0000", {"\u0000z": "z\u0000"}]}, "\u0000"]')),
    ('64 levels deep',             pg_temp.t(extra => '"x": ' || repeat('[', 63) || '"\u0000"' || repeat(']', 63))),
    ('after the known keys',       rtrim(pg_temp.t(), '}') || ', "z": {"\u0000": ["\u0000"]}}'),
    ('with other escapes',         pg_temp.t(extra => '"x\n": "\ud83d\ude00\u0000\"\\\/\b\f\n\r\t\u00e9"')),
    ('"topic\u0000" is not topic', pg_temp.t(extra => '"topic\u0000": "sac_order"')),
    ('"st\u0000atus" is not status', pg_temp.t(status => '"CREATION", "st\u0000atus": "CREATED"')),
    ('topic',                      pg_temp.t(topic => '"sac_ticket\u0000"')),
    ('tenant_id',                  pg_temp.t(tenant => '"\u00003b5cf468-c858-404b-9e53-630e3df9d74a"')),
    ('data.status',                pg_temp.t(status => '"CRE\u0000ATION"')),
    ('data.params.id',             pg_temp.t(params => '{"id": "debde69a-2dbb-427b-b478-6cffd7930ecf\u0000"}')),
    ('data.params.ticket_id',      pg_temp.t(topic => '"sac_message"', params => '{"ticket_id": "\u0000", "id": "3b5444b9-6fbb-40fd-b800-6c24176fb5ea"}')),
    ('data.resource',              pg_temp.t(resource => '"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf\u0000"')),
    ('key written with escapes',   pg_temp.t(status => '"CREATION", "st\u0061tus": "\u0000"')),
    ('data',                       '{"data": "\u0000", "tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}')
  ) c(name, payload);

-- What the ignored keys hold does not change the row
SELECT * FROM sac_webhook.parse(pg_temp.t(extra => '"x": "\u0000", "topic\u0000": 1',
  status => '"UPDATE", "\u0000": [{"\u0000": "\u0000"}]'));

--
-- Every other escape is read as before
--
SELECT c.name, pg_temp.verdict(c.payload)
  FROM (VALUES
    ('escaped topic',              pg_temp.t(topic => '"sac\u005fticket"')),
    ('escaped keys',               '{"d\u0061ta": {"\u0073tatus": "CREATION", "params": {"\u0069d": "debde69a-2dbb-427b-b478-6cffd7930ecf"}, "resource": "/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"}, "tenant\u005fid": "3b5cf468-c858-404b-9e53-630e3df9d74a", "t\u006fpic": "sac_ticket"}'),
    ('escaped key, duplicate',     pg_temp.t(extra => '"t\u006fpic": "sac_ticket"')),
    ('escaped status',             pg_temp.t(status => '"CRE\u0041TION"')),
    ('escaped ids',                pg_temp.t(params => '{"id": "\u0064ebde69a-2dbb-427b-b478-6cffd7930ecf"}', tenant => '"3b5cf468-c858-404b-9e53-630e3df9d74\u0061"')),
    ('escaped resource',           pg_temp.t(resource => '"\/v0\/tickets\/debde69a-2dbb-427b-b478-6cffd7930ecf"')),
    ('escaped quote in status',    pg_temp.t(status => '"CREATION\""')),
    ('escaped newline in topic',   pg_temp.t(topic => '"sac_ticket\n"')),
    ('non-ASCII in status',        pg_temp.t(status => '"CRÉATION"')),
    ('escaped non-ASCII in status', pg_temp.t(status => '"CR\u00c9ATION"')),
    ('surrogate pair in status',   pg_temp.t(status => '"\ud83d\ude00"')),
    ('surrogate pair, unknown key', pg_temp.t(extra => '"\ud83d\ude00": "\ud83d\ude00"')),
    ('lone high surrogate, unknown value', pg_temp.t(extra => '"x": "\ud800"')),
    ('lone low surrogate, unknown key',    pg_temp.t(extra => '"\udc00": 1')),
    ('two high surrogates, unknown value', pg_temp.t(extra => '"x": ["\ud800\ud800"]')),
    ('high surrogate, then \n',    pg_temp.t(status => '"CREATION", "x": "\ud800\n"')),
    ('\u0000 after a high surrogate', pg_temp.t(extra => '"x": "\ud800\u0000"')),
    ('invalid escape, unknown key', pg_temp.t(extra => '"x": "\x"')),
    ('short \u escape',            pg_temp.t(extra => '"x": "\u12"')),
    ('raw tab in an unknown key',  pg_temp.t(extra => E'"x": "\t"'))
  ) c(name, payload);
