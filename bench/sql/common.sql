-- bench/sql/common.sql: the schema "bench" that every benchmark uses.
--
-- The payload mix is defined here once (bench.payload) and mirrored by the
-- wrk script bench/lua/post.lua, so that every benchmark feeds the same kind
-- of notifications:
--   topic   30 % sac_ticket, 70 % sac_message
--   status  50 % CREATION, 40 % UPDATE, 10 % DELETION
--   ids     random (v4) UUIDs, so that nothing coalesces and index inserts
--           land at random places, as real ids do
--   tenant  one tenant, 3b5cf468-c858-404b-9e53-630e3df9d74a (also TENANT in lib.sh)
-- The layout is the one Magalu sends (keys as in its documentation).

CREATE SCHEMA bench;

-- k in 0..99 picks the kind: k % 10 < 3 is a ticket; k / 10 picks the status.
CREATE FUNCTION bench.payload(k integer, t uuid, m uuid) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT CASE WHEN k % 10 < 3 THEN
		format('{"data": {"status": "%s", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, '
			   '"tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_ticket"}',
			   s, t, t)
	ELSE
		format('{"data": {"status": "%s", "params": {"ticket_id": "%s", "id": "%s"}, '
			   '"resource": "/v0/tickets/%s/messages/%s"}, '
			   '"tenant_id": "3b5cf468-c858-404b-9e53-630e3df9d74a", "topic": "sac_message"}',
			   s, t, m, t, m)
	END
	FROM (SELECT CASE WHEN k / 10 < 5 THEN 'CREATION'
					  WHEN k / 10 < 9 THEN 'UPDATE'
					  ELSE 'DELETION' END AS s) x
$$;

-- A payload of the mix with fresh random ids.
CREATE FUNCTION bench.random_payload() RETURNS text
LANGUAGE sql VOLATILE AS $$
	SELECT bench.payload(floor(random() * 100)::integer, gen_random_uuid(), gen_random_uuid())
$$;

-- A ticket payload (sac_ticket / CREATION) for a given id.
CREATE FUNCTION bench.ticket_payload(t uuid) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT bench.payload(0, t, t)
$$;

-- Wall-clock milliseconds that a statement takes in this session.
CREATE FUNCTION bench.time_ms(stmt text) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
BEGIN
	EXECUTE stmt;
	RETURN extract(epoch FROM clock_timestamp() - t0) * 1000;
END
$$;
