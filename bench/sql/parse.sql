-- bench/sql/parse.sql: the plain-SQL baseline of sac_webhook.parse(text).
--
-- bench.sql_parse(payload text) does the validation work of the C parser
-- with jsonb operators and casts, and returns the same row:
--   * the text is parsed as JSON (the cast to jsonb) and must be an object;
--   * topic: a string, "sac_ticket" or "sac_message";
--   * tenant_id: a string of the 8-4-4-4-12 hexadecimal UUID shape, cast to uuid;
--   * data: an object; data.status: a string, one of the enum's labels, cast
--     to sac_webhook.change;
--   * data.params: an object; data.params.id (and data.params.ticket_id for a
--     message): strings of the UUID shape, cast to uuid;
--   * data.resource: a string equal, ignoring case, to the canonical path that
--     the topic and the ids imply;
--   * the row has the canonical resource and the params rebuilt from the
--     validated ids, like the C function's.
-- A defect raises an ERROR in SQLSTATE class 22 naming the field, like the C
-- function (through bench.reject, which valid payloads never reach).
-- parse.sh checks on a sample that both functions return the same rows.
--
-- What it does not do and the C parser does: reject a key given twice (jsonb
-- silently keeps the last one) and say where a JSON syntax error is.  So the
-- baseline does slightly LESS work than the C function.
--
-- It is written to be as fast as plain SQL gets, so that the ratio is not
-- flattered by a slow baseline:
--   * RETURNS SETOF, STABLE, not STRICT, one SELECT: the planner inlines it
--     into the calling query (LATERAL bench.sql_parse(p)), with no SQL-function
--     call per row.  A scalar "RETURNS sac_webhook.notification" version that
--     is called per row took about twice as long during development;
--   * the OFFSET 0 fences make each expensive step (the jsonb cast, the field
--     extraction, the uuid casts) run once per row; without them the planner
--     copies the expressions into every reference (2.5x slower).

-- Raise the class-22 error that names a field.  STABLE, not IMMUTABLE: it
-- must never be folded into a constant at plan time, and a VOLATILE call
-- would keep the function from being inlined.
CREATE FUNCTION bench.reject(field text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
	RAISE EXCEPTION 'invalid webhook payload'
		USING ERRCODE = '22023', DETAIL = format('Field "%s" is missing or invalid.', field);
END
$$;

CREATE FUNCTION bench.sql_parse(payload text) RETURNS SETOF sac_webhook.notification
LANGUAGE sql STABLE PARALLEL SAFE AS $$
	SELECT c.topic, c.status, c.tenant_id, c.expected,
		   CASE WHEN c.message THEN jsonb_build_object('id', c.id, 'ticket_id', c.tid)
				ELSE jsonb_build_object('id', c.id) END,
		   CASE WHEN c.message THEN c.tid ELSE c.id END,
		   CASE WHEN c.message THEN c.id END
	FROM (
		-- the casts, on validated texts only, and the canonical resource
		SELECT v.bad, v.topic, v.message, v.resource,
			   CASE WHEN v.bad IS NULL THEN v.status::sac_webhook.change END AS status,
			   CASE WHEN v.bad IS NULL THEN v.tenant::uuid END AS tenant_id,
			   CASE WHEN v.bad IS NULL THEN v.id::uuid END AS id,
			   CASE WHEN v.bad IS NULL AND v.message THEN v.tid::uuid END AS tid,
			   CASE WHEN v.bad IS NOT NULL THEN NULL
					WHEN v.message THEN '/v0/tickets/' || v.tid::uuid || '/messages/' || v.id::uuid
					ELSE '/v0/tickets/' || v.id::uuid END AS expected
		FROM (
			-- the checks, in field order; bad names the first failing field
			SELECT f.*, CASE
				WHEN f.j_t IS DISTINCT FROM 'object' THEN 'payload'
				WHEN f.topic_t IS DISTINCT FROM 'string' OR f.topic NOT IN ('sac_ticket', 'sac_message') THEN 'topic'
				WHEN f.tenant_t IS DISTINCT FROM 'string' OR f.tenant !~ '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$' THEN 'tenant_id'
				WHEN f.data_t IS DISTINCT FROM 'object' THEN 'data'
				WHEN f.status_t IS DISTINCT FROM 'string' OR f.status NOT IN ('CREATION', 'UPDATE', 'DELETION') THEN 'data.status'
				WHEN f.params_t IS DISTINCT FROM 'object' THEN 'data.params'
				WHEN f.message AND (f.tid_t IS DISTINCT FROM 'string' OR f.tid !~ '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$') THEN 'data.params.ticket_id'
				WHEN f.id_t IS DISTINCT FROM 'string' OR f.id !~ '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$' THEN 'data.params.id'
				WHEN f.resource_t IS DISTINCT FROM 'string' THEN 'data.resource'
			END AS bad
			FROM (
				-- each known field: its JSON type and its text
				SELECT jsonb_typeof(j) AS j_t, jsonb_typeof(j -> 'topic') AS topic_t, j ->> 'topic' AS topic,
					   (j ->> 'topic') = 'sac_message' AS message,
					   jsonb_typeof(j -> 'tenant_id') AS tenant_t, j ->> 'tenant_id' AS tenant,
					   jsonb_typeof(j -> 'data') AS data_t,
					   jsonb_typeof(j -> 'data' -> 'status') AS status_t, j -> 'data' ->> 'status' AS status,
					   jsonb_typeof(j -> 'data' -> 'params') AS params_t,
					   jsonb_typeof(j -> 'data' -> 'params' -> 'id') AS id_t, j -> 'data' -> 'params' ->> 'id' AS id,
					   jsonb_typeof(j -> 'data' -> 'params' -> 'ticket_id') AS tid_t, j -> 'data' -> 'params' ->> 'ticket_id' AS tid,
					   jsonb_typeof(j -> 'data' -> 'resource') AS resource_t, j -> 'data' ->> 'resource' AS resource
				FROM (SELECT payload::jsonb AS j OFFSET 0) jj
				OFFSET 0) f
			OFFSET 0) v
		OFFSET 0) c
	-- a defect raises; a valid payload passes
	WHERE CASE WHEN c.bad IS NOT NULL THEN bench.reject(c.bad)
			   WHEN lower(c.resource) <> c.expected THEN bench.reject('data.resource')
			   ELSE true END
$$;
