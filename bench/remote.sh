#!/bin/bash
# bench/remote.sh -- the workers against a remote-like API: every answer of
# the mock is delayed by LATENCY_MS + uniform(0..JITTER_MS) ms (~200 ms), with
# the extension's default settings and notifications spread over 8 sellers
# (each a tenant of its own, with its own store in the mock).
#
#  1. drain: N_DRAIN ticket notifications stored while the tenants are
#     disabled, then all enabled in one transaction; the rate is that of the
#     rows done from its commit until the last row was claimed (while there
#     was a backlog: the very end of a drain waits for its slowest answer);
#     the whole drain is in the raw numbers.  Baseline: the concurrency bound,
#     sac_webhook.max_in_flight / the mean API latency.  Targets: >= 0.9 of
#     the bound and >= 1,000 events/s.
#  2. the same with a slow tail: 1% of the answers take 3 s.  Baseline: the
#     rate of section 1.  Target >= 0.85.
#  3. latency at a steady LIVE_RATE (100)/s for LIVE_SECONDS: for each
#     notification, from the commit of its receipt to the commit that made
#     the ticket visible.  Baseline: the API's own p99.  Target: p99 <= API
#     p99 + 50 ms.
#  4. a rate-limited seller beside an unlimited one: seller "slow" gets HTTP
#     429 (Retry-After: 1) beyond RATE_LIMIT requests/s at the mock, seller
#     "fast" none; both have a backlog of N_PAIR.  The figure is fast's drain
#     rate beside slow, the baseline fast's rate alone.  Target >= 0.9.
#
# Run as root after "make install"; QUICK=1 for smaller sizes.

source "$(dirname "$0")/lib.sh"
bench_begin remote

N_DRAIN=${N_DRAIN:-$(size 15000 5000)}
N_PAIR=${N_PAIR:-$(size 3000 1000)}
LATENCY_MS=190
JITTER_MS=20
TAIL_PERMILLE=10
TAIL_MS=3000
LIVE_RATE=100
LIVE_SECONDS=$(size 30 10)
RATE_LIMIT=20
SELLERS=8
DRAIN_TIMEOUT=600

MOCK_PORT=$(free_port)
MOCK_URL=http://127.0.0.1:$MOCK_PORT
start_bg mock "$PGBIN/sac_webhook_mock_api" --listen "127.0.0.1:$MOCK_PORT" --auto --auto-max 0 --quiet \
	--access-token "$MOCK_TOKEN" --threads 2
wait_http "$MOCK_URL/_mock/health"
mock_config() { curl -sf -X POST -H 'Content-Type: application/json' --data "$1" "$MOCK_URL/_mock/config" >/dev/null ||
	die "the mock refused $1"; }

# the extension's defaults, but for the 2 workers lib.sh's clusters lack
pg_start "sac_webhook.workers = 2
sac_webhook.api_base_url = '$MOCK_URL'
sac_webhook.done_retention = '30d'"
IN_FLIGHT=$(q -c "SHOW sac_webhook.max_in_flight")
PER_TENANT=$(q -c "SHOW sac_webhook.max_in_flight_per_tenant")
MEAN_MS=$(calc "$LATENCY_MS + $JITTER_MS / 2")
API_P99=$(calc "$LATENCY_MS + $JITTER_MS * 0.99")

tenant_of() { printf 'c0000000-0000-4000-8000-%012d' "$1"; }
q <<-EOF
	INSERT INTO sac_webhook.tenants (tenant_id, name, api_base_url, access_token, token_expires_at, enabled)
	SELECT format('c0000000-0000-4000-8000-%s', lpad(s::text, 12, '0'))::uuid, 's' || s,
	       '$MOCK_URL/sellers/s' || s, '$MOCK_TOKEN', now() + interval '7 days', false
	  FROM generate_series(1, $SELLERS + 2) s;
	UPDATE sac_webhook.tenants SET name = 'slow', api_base_url = '$MOCK_URL/sellers/slow'
	 WHERE tenant_id = '$(tenant_of $((SELLERS + 1)))';
	UPDATE sac_webhook.tenants SET name = 'fast', api_base_url = '$MOCK_URL/sellers/fast'
	 WHERE tenant_id = '$(tenant_of $((SELLERS + 2)))';
	CREATE FUNCTION bench.note(tenant uuid, id uuid) RETURNS text LANGUAGE sql AS
	\$\$ SELECT format('{"data": {"status": "CREATION", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, "tenant_id": "%s", "topic": "sac_ticket"}',
	                  id, id, tenant) \$\$;
	CREATE TABLE bench.sent (inbox_id bigint, ticket_id uuid);
EOF
mock_config "{\"latency_ms\": $LATENCY_MS, \"jitter_ms\": $JITTER_MS}"

waiting() { q -c "SELECT count(*) FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying') $1"; }
wait_for()
{
	local start=$SECONDS
	while [ "$(waiting "$1")" != 0 ]; do
		[ $((SECONDS - start)) -lt "$DRAIN_TIMEOUT" ] || die "the workers did not drain in ${DRAIN_TIMEOUT}s"
		sleep 0.5
	done
}

# drain N FIRST LAST: N notifications over the sellers FIRST..LAST, stored
# while they are disabled, then enabled at once.  Sets DRAIN_RATE (of the
# rows of seller LAST when ONLY_LAST=1) and DRAIN_SECONDS.
drain()
{
	local n=$1 first=$2 last=$3 first_id who t0
	first_id=$(q -c "SELECT coalesce(max(id), 0) + 1 FROM sac_webhook.inbox")
	q -c "SELECT count(sac_webhook.receive(bench.note(format('c0000000-0000-4000-8000-%s',
	                     lpad(($first + g % ($last - $first + 1))::text, 12, '0'))::uuid, gen_random_uuid())))
	        FROM generate_series(0, $n - 1) g" >/dev/null
	q -c "VACUUM ANALYZE sac_webhook.inbox" >/dev/null
	# one statement string is one transaction: the time is that of its commit,
	# about, and the notification received in it wakes the workers
	t0=$(q -c "UPDATE sac_webhook.tenants SET enabled = true
	            WHERE tenant_id IN (SELECT format('c0000000-0000-4000-8000-%s', lpad(s::text, 12, '0'))::uuid
	                                  FROM generate_series($first, $last) s);
	           SELECT FROM sac_webhook.receive(bench.note('$(tenant_of "$last")', gen_random_uuid()));
	           SELECT clock_timestamp()")
	who="AND id >= $first_id"
	[ "${ONLY_LAST:-0}" = 1 ] && who="$who AND tenant_id = '$(tenant_of "$last")'"
	wait_for "$who"
	[ "$(q -c "SELECT count(*) FROM sac_webhook.inbox WHERE state = 'dead'")" = 0 ] ||
		die "dead rows: $(q -c "SELECT last_error FROM sac_webhook.inbox WHERE state = 'dead' LIMIT 1")"
	DRAIN_SECONDS=$(q -c "SELECT extract(epoch FROM max(pg_xact_commit_timestamp(i.xmin)) - '$t0')
	                        FROM sac_webhook.inbox i WHERE state = 'done' $who")
	DRAIN_ROWS=$(q -c "SELECT count(*) FROM sac_webhook.inbox WHERE state = 'done' $who")
	DRAIN_RATE=$(calc "$DRAIN_ROWS / $DRAIN_SECONDS")
	# while the backlog lasted: until the last row was claimed (the end of a
	# drain waits for its slowest answer, whatever the rate was)
	read -r SUSTAINED_SECONDS SUSTAINED_ROWS <<<"$(q -F ' ' -c "
		WITH e AS (SELECT max(last_attempt_at) AS t FROM sac_webhook.inbox i WHERE state = 'done' $who)
		SELECT extract(epoch FROM e.t - '$t0'),
		       (SELECT count(*) FROM sac_webhook.inbox i WHERE state = 'done' $who
		           AND pg_xact_commit_timestamp(i.xmin) <= e.t)
		  FROM e")"
	SUSTAINED_RATE=$(calc "$SUSTAINED_ROWS / $SUSTAINED_SECONDS")
	q -c "UPDATE sac_webhook.tenants SET enabled = false" >/dev/null
}

# --- 1. drain ---------------------------------------------------------------
log "drain: $N_DRAIN notifications over $SELLERS sellers, API ~${MEAN_MS} ms"
drain "$N_DRAIN" 1 "$SELLERS"
rate1=$SUSTAINED_RATE
bound=$(calc "$IN_FLIGHT * 1000 / $MEAN_MS")
raw "remote drain: $DRAIN_ROWS events in $(fmt "$DRAIN_SECONDS" 2) s = $(fmt "$DRAIN_RATE") events/s; while the backlog lasted: $SUSTAINED_ROWS in $(fmt "$SUSTAINED_SECONDS" 2) s = $(fmt "$rate1") events/s; bound $IN_FLIGHT in flight / $MEAN_MS ms = $(fmt "$bound") events/s"
result "remote: drain, 8 sellers (~200 ms API)" "$(fmt "$rate1") events/s" \
	"bound: $(fmt "$bound") events/s ($IN_FLIGHT in flight / ${MEAN_MS} ms)" "$(fmt "$(calc "$rate1 / $bound")" 2)" \
	">= 0.9 and >= 1000/s" "$(yesno "$rate1 / $bound >= 0.9 && $rate1 >= 1000")"

# --- 2. with a slow tail ----------------------------------------------------
log "drain with 1% of the answers taking ${TAIL_MS} ms"
mock_config "{\"tail_permille\": $TAIL_PERMILLE, \"tail_ms\": $TAIL_MS}"
drain "$N_DRAIN" 1 "$SELLERS"
rate2=$SUSTAINED_RATE
mock_config "{\"tail_permille\": 0, \"tail_ms\": 0}"
raw "remote drain with the tail: $DRAIN_ROWS events in $(fmt "$DRAIN_SECONDS" 2) s = $(fmt "$DRAIN_RATE") events/s; while the backlog lasted: $SUSTAINED_ROWS in $(fmt "$SUSTAINED_SECONDS" 2) s = $(fmt "$rate2") events/s"
result "remote: drain, 1% of answers take 3 s" "$(fmt "$rate2") events/s" "the drain without the tail: $(fmt "$rate1")/s" \
	"$(fmt "$(calc "$rate2 / $rate1")" 2)" ">= 0.85" "$(yesno "$rate2 / $rate1 >= 0.85")"

# --- 3. latency at a steady rate ----------------------------------------------
log "latency: $LIVE_RATE notifications/s for ${LIVE_SECONDS}s"
q -c "UPDATE sac_webhook.tenants SET enabled = true" >/dev/null
cat >"$WORK/live.sql" <<-EOF
	\\set s random(1, $SELLERS)
	INSERT INTO bench.sent SELECT sac_webhook.receive(bench.note(format('c0000000-0000-4000-8000-%s', lpad(:s::text, 12, '0'))::uuid, g)), g FROM (SELECT gen_random_uuid() g) x;
EOF
chmod 644 "$WORK/live.sql"
pgbench -n -f "$WORK/live.sql" -R "$LIVE_RATE" -T "$LIVE_SECONDS" -c 4 -j 2 >"$WORK/pgbench.log" 2>&1 ||
	die "pgbench failed: $(tail -3 "$WORK/pgbench.log")"
wait_for ""
read -r p50 p99 n_live <<<"$(q -F ' ' -c "
	SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)), count(*)
	  FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(t.xmin) - pg_xact_commit_timestamp(s.xmin)) * 1000 AS ms
	          FROM bench.sent s JOIN sac_webhook.tickets t ON t.id = s.ticket_id) d")"
raw "remote latency at $LIVE_RATE/s: $n_live notifications, receipt -> visible p50 $p50 ms, p99 $p99 ms; API p50 $(calc "$LATENCY_MS + $JITTER_MS / 2") ms, p99 $(fmt "$API_P99" 1) ms"
result "remote: latency at 100/s, p99" "p50 $p50 / p99 $p99 ms" "API p99: $(fmt "$API_P99") ms" \
	"$(fmt "$(calc "$p99 / $API_P99")" 2)" "<= API p99 + 50 ms" "$(yesno "$p99 <= $API_P99 + 50")"
q -c "UPDATE sac_webhook.tenants SET enabled = false" >/dev/null

# --- 4. a rate-limited seller beside an unlimited one ---------------------------
log "429: seller fast alone, then beside seller slow (limited to $RATE_LIMIT requests/s)"
ONLY_LAST=1 drain "$N_PAIR" $((SELLERS + 2)) $((SELLERS + 2))
alone=$DRAIN_RATE
mock_config "{\"rate_limit\": {\"namespace\": \"slow\", \"per_second\": $RATE_LIMIT, \"burst\": $RATE_LIMIT}}"
s0=$(curl -sf "$MOCK_URL/_mock/stats" | sed 's/.*"rate_limited":\([0-9]*\).*/\1/')
ONLY_LAST=1 drain "$((2 * N_PAIR))" $((SELLERS + 1)) $((SELLERS + 2))
beside=$DRAIN_RATE
s1=$(curl -sf "$MOCK_URL/_mock/stats" | sed 's/.*"rate_limited":\([0-9]*\).*/\1/')
slow_done=$(q -c "SELECT count(*) FROM sac_webhook.inbox WHERE tenant_id = '$(tenant_of $((SELLERS + 1)))' AND state = 'done'")
slow_window=$(calc "$slow_done / $DRAIN_SECONDS")
raw "429 isolation: fast alone $(fmt "$alone") events/s (per-tenant cap $PER_TENANT in flight); beside slow $(fmt "$beside") events/s; slow meanwhile $(fmt "$slow_window") events/s with $((s1 - s0)) answers of HTTP 429"
result "remote: unlimited seller beside a 429-limited one" "$(fmt "$beside") events/s" "alone: $(fmt "$alone") events/s" \
	"$(fmt "$(calc "$beside / $alone")" 2)" ">= 0.9" "$(yesno "$beside / $alone >= 0.9")"
