#!/bin/bash
# bench/worker.sh -- the background worker against the mock API on loopback.
#
#  1. capacity of the mock itself: wrk, GET /v0/tickets/{random id} with the
#     Bearer token, -t2 -c32, for WRK_SECONDS, before the drain and again
#     after it (section 3, once the inbox is vacuumed); the mean of the two
#     requests/s is the baseline.
#  2. drain: N_DRAIN (100,000; QUICK=1: 20,000) ticket notifications stored
#     with receive() while the tenant is disabled; then, in one transaction,
#     the tenant is enabled and one more notification received (its commit
#     wakes the worker).  The drain lasts from that commit to the commit of
#     the last row marked done (commit timestamps); events/s is compared with
#     the mock's requests/s.  CPU seconds of the worker, of the other
#     PostgreSQL processes and of the mock during the drain are reported.
#  3. latency: pgbench calls receive() with a new ticket id at a steady
#     LAT_RATE (500)/s for LAT_SECONDS; for each one, the time from the commit
#     of the receipt to the commit that made the ticket visible in
#     sac_webhook.tickets (both from track_commit_timestamp).  p50 and p99,
#     against the latency of the receive() transaction itself (pgbench's log),
#     with a breakdown from the inbox row's timestamps.  Measured twice: right
#     after the drain, while the inbox's indexes still hold the dead entries
#     of the drained rows, and after a VACUUM of the inbox (the table's figure).
#  4. (information) the drain again with ALT_WORKERS (1) worker(s): the
#     server restarts with sac_webhook.workers = ALT_WORKERS.
#  5. memory, with that one worker doing all the work: RssAnon (private
#     memory) and VmRSS of the worker backend after a warm-up of 1,000
#     events, and again once it has finished RSS_EVENTS (1,000,000; QUICK=1:
#     100,000) events in all, of the full payload mix.  The target is on
#     RssAnon: VmRSS also counts the pages of shared_buffers that the backend
#     has touched, which grows towards shared_buffers (256MB) without any
#     leak.
#
# The workers run with the extension's defaults (2 workers, batch_size 500,
# max_in_flight 256 over all) unless WORKERS / BATCH_SIZE / MAX_IN_FLIGHT say otherwise;
# N_DRAIN and RSS_EVENTS override the sizes.  PROFILE=1 loads
# pg_stat_statements (track = all) and prints the statements the drains spent
# their time in (not for the table: tracking costs a little).
# Targets: drain >= 0.3 of the mock's capacity and >= 3,000 events/s; worker
# RssAnon growth < 10 MB over RSS_EVENTS.

source "$(dirname "$0")/lib.sh"
bench_begin worker

N_DRAIN=${N_DRAIN:-$(size 100000 20000)}
RSS_EVENTS=${RSS_EVENTS:-$(size 1000000 100000)}
LAT_RATE=500
LAT_SECONDS=$(size 15 5)
WRK_SECONDS=$(size 5 3)
MOCK_THREADS=${MOCK_THREADS:-2}
WORKERS=${WORKERS:-2}		# the extension's default (lib.sh's clusters have none)
ALT_WORKERS=${ALT_WORKERS:-1}	# sections 4 and 5 run with this many workers
BATCH_SIZE=${BATCH_SIZE:-}		# empty: the extension's default, as MAX_IN_FLIGHT
MAX_IN_FLIGHT=${MAX_IN_FLIGHT:-}
PROFILE=${PROFILE:-0} # 1: pg_stat_statements shows where the drains spend their time
DRAIN_TIMEOUT=900 # seconds; a drain that takes longer fails the benchmark

# --- the mock API -------------------------------------------------------------
MOCK_PORT=$(free_port)
MOCK_URL=http://127.0.0.1:$MOCK_PORT
start_bg mock "$PGBIN/sac_webhook_mock_api" --listen "127.0.0.1:$MOCK_PORT" --auto --auto-max 0 --quiet \
	--access-token "$MOCK_TOKEN" --threads "$MOCK_THREADS"
MOCK_PID=$BG_PID
wait_http "$MOCK_URL/_mock/health"

# --- the cluster, with the worker ---------------------------------------------
pg_start "sac_webhook.workers = $WORKERS
$([ -n "$BATCH_SIZE" ] && echo "sac_webhook.batch_size = $BATCH_SIZE")
$([ -n "$MAX_IN_FLIGHT" ] && echo "sac_webhook.max_in_flight = $MAX_IN_FLIGHT")
sac_webhook.api_base_url = '$MOCK_URL'
sac_webhook.token_url = '$MOCK_URL/oauth/token'
# done rows stay, for the latency join
sac_webhook.done_retention = '30d'
$(if [ "$PROFILE" = 1 ]; then
	printf '%s\n' "shared_preload_libraries = 'sac_webhook,pg_stat_statements'" "pg_stat_statements.track = all"
fi)"
[ "$PROFILE" = 1 ] && q -c "CREATE EXTENSION pg_stat_statements"

q <<-EOF
	INSERT INTO sac_webhook.tenants (tenant_id, client_id, client_secret, access_token, refresh_token,
	                                 token_expires_at, enabled)
	VALUES ('$TENANT', 'demo-client', 'demo-secret', '$MOCK_TOKEN', 'unused', now() + interval '7 days', false);
	CREATE TABLE bench.sent (inbox_id bigint, ticket_id uuid);
EOF

worker_pids() { q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'sac_webhook worker' ORDER BY pid"; }

# waiting: notifications not finished yet (rows being fetched included).
# Cheaper than the stats view (which aggregates the whole inbox) thanks to
# the partial indexes, so that polling takes little CPU from the worker.
waiting()
{
	q -c "SELECT count(*) FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying')"
}

# wait_drained: poll once a second until nothing waits, then check in
# sac_webhook.stats that nothing is dead; dies after DRAIN_TIMEOUT
wait_drained()
{
	local start=$SECONDS w dead
	while [ "$(waiting)" != 0 ]; do
		[ $((SECONDS - start)) -lt "$DRAIN_TIMEOUT" ] || die "the worker did not drain the inbox in ${DRAIN_TIMEOUT}s"
		sleep 1
	done
	read -r w dead < <(q -F ' ' -c "SELECT pending + retrying + processing, dead FROM sac_webhook.stats")
	[ "$w" = 0 ] || die "stats still shows $w waiting rows"
	[ "$dead" = 0 ] || die "$dead inbox rows are dead: $(q -c "SELECT last_error FROM sac_webhook.inbox WHERE state = 'dead' LIMIT 1")"
}

# store N ticket notifications (fresh ids) in transactions of 10,000
store_tickets()
{
	local left=$1 n
	while [ "$left" -gt 0 ]; do
		n=$((left < 10000 ? left : 10000))
		q -c "SELECT count(sac_webhook.receive(bench.ticket_payload(gen_random_uuid())))
		        FROM generate_series(1, $n)" >/dev/null
		left=$((left - n))
	done
}

# inbox_updates: row updates of the inbox so far, and how many were HOT
inbox_updates()
{
	q -F ' ' -c "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
	              WHERE relid = 'sac_webhook.inbox'::regclass"
}

# drain N: the timed drain of N stored notifications (see the header).
# Sets DRAIN_RATE, DRAIN_SECONDS and DRAIN_CPU (a text).
drain()
{
	local n=$1 first_id wpids others t_cpu0 m_cpu0 o_cpu0 w_cpu0 w_cpu m_cpu o_cpu busy upd0 hot0 upd1 hot1
	q -c "UPDATE sac_webhook.tenants SET enabled = false" >/dev/null
	first_id=$(q -c "SELECT coalesce(max(id), 0) + 1 FROM sac_webhook.inbox")
	store_tickets "$n"
	q -c "VACUUM ANALYZE sac_webhook.inbox" -c "CHECKPOINT"
	[ "$PROFILE" = 1 ] && q -c "SELECT pg_stat_statements_reset()" >/dev/null
	wpids=$(worker_pids)
	others=$(pg_children_except $wpids)
	w_cpu0=$(cpu_seconds $wpids)
	m_cpu0=$(cpu_seconds "$MOCK_PID")
	o_cpu0=$(cpu_seconds $others)
	read -r upd0 hot0 < <(inbox_updates)
	cpu_busy_mark
	q -c "BEGIN" -c "UPDATE sac_webhook.tenants SET enabled = true" \
	  -c "SELECT sac_webhook.receive(bench.ticket_payload(gen_random_uuid()))" -c "COMMIT" >/dev/null
	wait_drained
	busy=$(cpu_busy_since)
	w_cpu=$(calc "$(cpu_seconds $wpids) - $w_cpu0")
	m_cpu=$(calc "$(cpu_seconds "$MOCK_PID") - $m_cpu0")
	o_cpu=$(calc "$(cpu_seconds $others) - $o_cpu0")
	DRAIN_SECONDS=$(q -c "SELECT extract(epoch FROM max(pg_xact_commit_timestamp(i.xmin))
	                                   - (SELECT pg_xact_commit_timestamp(t.xmin) FROM sac_webhook.tenants t))
	                        FROM sac_webhook.inbox i WHERE i.id >= $first_id")
	local done
	done=$(q -c "SELECT count(*) FROM sac_webhook.inbox WHERE id >= $first_id AND state = 'done'")
	[ "$done" = $((n + 1)) ] || die "drain: $done rows done instead of $((n + 1))"
	DRAIN_RATE=$(calc "($n + 1) / $DRAIN_SECONDS")
	if [ "$PROFILE" = 1 ]; then
		q -F ' | ' -c "SELECT calls, round(total_exec_time) || ' ms', round((total_exec_time * 1000 / calls)::numeric, 1) || ' us/call',
		                      left(regexp_replace(query, '\s+', ' ', 'g'), 70)
		                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 6" |
			while read -r line; do raw "drain profile: $line"; done
	fi
	# seconds from the start to 25 %, 50 %, 75 % and 100 % of the rows done:
	# shows whether the pace holds during the drain
	DRAIN_PROGRESS=$(q -c "
		SELECT string_agg(round(extract(epoch FROM c - t0)::numeric, 1)::text, ' / ')
		  FROM (SELECT unnest(percentile_disc(array[0.25, 0.5, 0.75, 1]) WITHIN GROUP (ORDER BY c)) AS c, t0
		          FROM (SELECT pg_xact_commit_timestamp(i.xmin) AS c,
		                       (SELECT pg_xact_commit_timestamp(t.xmin) FROM sac_webhook.tenants t) AS t0
		                  FROM sac_webhook.inbox i WHERE i.id >= $first_id) x
		         GROUP BY t0) y")
	# the workers send their table statistics at most once a second
	sleep 1.5
	read -r upd1 hot1 < <(inbox_updates)
	DRAIN_HOT="$((upd1 - upd0)) inbox row updates, $(fmt "$(calc "100 * ($hot1 - $hot0) / ($upd1 - $upd0)")")% of them HOT"
	DRAIN_CPU="worker(s) ${w_cpu} s CPU ($(fmt "$(calc "100 * $w_cpu / $DRAIN_SECONDS")")% of a core), other postgres processes ${o_cpu} s, mock ${m_cpu} s, in $(fmt "$DRAIN_SECONDS" 2) s; both cores ${busy}% busy"
}

# --- 1. the mock's capacity ---------------------------------------------------
# mock_capacity WHEN: wrk against the mock, once nothing else runs (no
# autovacuum); adds the requests/s to MOCK_SAMPLES and writes the raw line
MOCK_SAMPLES=()
mock_capacity()
{
	local when=$1 line req dur non2xx err p50 p99 rps
	for _ in $(seq 60); do
		[ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'" 2>/dev/null || echo 0)" = 0 ] && break
		sleep 0.5
	done
	log "mock capacity ($when): wrk -t2 -c32 -d${WRK_SECONDS}s"
	line=$(wrk -t2 -c32 -d"${WRK_SECONDS}s" -H "Authorization: Bearer $MOCK_TOKEN" \
		-s "$BENCH_DIR/lua/get.lua" "$MOCK_URL" -- "$RANDOM" | grep '^WRK_RESULT')
	read -r _ req dur non2xx err p50 _ p99 _ _ <<<"$line"
	[ "$non2xx" = 0 ] && [ "$err" = 0 ] || die "mock: $non2xx non-2xx answers, $err socket errors"
	rps=$(calc "$req / $dur")
	MOCK_SAMPLES+=("$rps")
	raw "mock API capacity ($when; wrk -t2 -c32, GET ticket, --threads $MOCK_THREADS): $req requests in ${dur}s = $(fmt "$rps") req/s, p50 ${p50} ms, p99 ${p99} ms"
}
mock_capacity "before the drain"

# --- warm-up ---------------------------------------------------------------------
q -c "UPDATE sac_webhook.tenants SET enabled = true" >/dev/null
store_tickets 1000
wait_drained
[ -n "$(worker_pids)" ] || die "no sac_webhook worker is running"
SETTINGS="workers=$(q -c "SHOW sac_webhook.workers") batch_size=$(q -c "SHOW sac_webhook.batch_size") max_in_flight=$(q -c "SHOW sac_webhook.max_in_flight")"

# --- 2. drain -------------------------------------------------------------------
log "drain: $N_DRAIN notifications, $SETTINGS"
drain "$N_DRAIN"
raw "drain: $((N_DRAIN + 1)) events in $(fmt "$DRAIN_SECONDS" 2) s = $(fmt "$DRAIN_RATE") events/s ($SETTINGS)"
raw "drain CPU: $DRAIN_CPU"
raw "drain updates: $DRAIN_HOT"
raw "drain progress: 25 / 50 / 75 / 100 % done after $DRAIN_PROGRESS s"
# the drain's figure waits for the second measurement of the mock (section 3)
DRAIN_MAIN=("$DRAIN_RATE" "$DRAIN_SECONDS")


# --- 3. latency at a steady rate ------------------------------------------------
# latency_run NAME: LAT_SECONDS of receipts at LAT_RATE/s; sets LAT_P50,
# LAT_P99 (receipt commit -> ticket commit), RC_P50, RC_P99 (the receive()
# transaction alone) and writes the raw lines.
latency_run()
{
	local name=$1 sent n max breakdown tps
	log "latency ($name): receive() at ${LAT_RATE}/s for ${LAT_SECONDS}s"
	q -c "TRUNCATE bench.sent"
	rm -f "$WORK"/lat.*
	(cd "$WORK" && pgbench -n -f "$BENCH_DIR/pgbench/latency.sql" -R "$LAT_RATE" -c 4 -j 2 \
		-T "$LAT_SECONDS" -l --log-prefix="$WORK/lat" >"$WORK/pgbench_latency.out" 2>&1) ||
		die "pgbench failed: $(tail -n 5 "$WORK/pgbench_latency.out")"
	wait_drained
	sent=$(q -c "SELECT count(*) FROM bench.sent")
	read -r n LAT_P50 LAT_P99 max < <(q -F ' ' -c "
		SELECT count(*),
		       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
		       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
		       round(max(ms)::numeric, 2)
		  FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(t.xmin) - pg_xact_commit_timestamp(s.xmin)) * 1000 AS ms
		          FROM bench.sent s
		          JOIN sac_webhook.tickets t ON t.tenant_id = '$TENANT' AND t.id = s.ticket_id) x")
	[ "$n" = "$sent" ] || die "latency: only $n of $sent tickets arrived"
	# where the time goes, from the inbox row's own timestamps: receipt commit
	# -> claim (start of the claiming transaction) -> start of the apply
	# transaction (claim committed, fetch done) -> its commit
	breakdown=$(q -c "
		SELECT 'wait for claim p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY a)::numeric, 2)
		    || ' / p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY a)::numeric, 2)
		    || ' ms; claim to apply start (claim + fetch) p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY b)::numeric, 2)
		    || ' / p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY b)::numeric, 2)
		    || ' ms; apply transaction p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY c)::numeric, 2)
		    || ' / p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY c)::numeric, 2) || ' ms'
		  FROM (SELECT extract(epoch FROM i.last_attempt_at - pg_xact_commit_timestamp(s.xmin)) * 1000 AS a,
		               extract(epoch FROM i.finished_at - i.last_attempt_at) * 1000 AS b,
		               extract(epoch FROM pg_xact_commit_timestamp(t.xmin) - i.finished_at) * 1000 AS c
		          FROM bench.sent s
		          JOIN sac_webhook.inbox i ON i.id = s.inbox_id
		          JOIN sac_webhook.tickets t ON t.tenant_id = '$TENANT' AND t.id = s.ticket_id) x")
	# the receive() transactions themselves: pgbench's per-transaction log,
	# latency minus the schedule lag (columns: client tx time script epoch us lag)
	read -r RC_P50 RC_P99 < <(cat "$WORK"/lat.* | awk '{ print ($3 - $7) / 1000 }' | sort -g |
		awk '{ v[NR] = $1 } END { printf "%.2f %.2f\n", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1] }')
	tps=$(awk '/^tps/ { print $3 }' "$WORK/pgbench_latency.out")
	raw "latency ($name): $sent receipts at $(fmt "$tps" 1)/s (pgbench -R $LAT_RATE -c 4 -j 2 -T $LAT_SECONDS); receipt commit -> ticket commit: p50 $LAT_P50 ms, p99 $LAT_P99 ms, max $max ms"
	raw "latency ($name) breakdown: $breakdown"
	raw "latency ($name) baseline, the receive() transaction alone (pgbench log, schedule lag removed): p50 $RC_P50 ms, p99 $RC_P99 ms"
}

# First right after the drain: the inbox's partial indexes still hold the
# entries of the 100,000 rows that were just claimed and done,
# until (auto)vacuum removes them.  Then after a VACUUM of the inbox: the
# figure in the table.
latency_run "right after the drain"
burst_p50=$LAT_P50 burst_p99=$LAT_P99
q -c "VACUUM ANALYZE sac_webhook.inbox"

# the mock again, now that the drain's vacuum is done: the baseline is the
# mean of both measurements, so that a machine that speeds up or slows down
# during the run weighs on both sides alike
mock_capacity "after the drain"
MOCK_RPS=$(calc "(${MOCK_SAMPLES[0]} + ${MOCK_SAMPLES[1]}) / 2")
read -r DRAIN_RATE DRAIN_SECONDS <<<"${DRAIN_MAIN[*]}"
ratio=$(calc "$DRAIN_RATE / $MOCK_RPS")
result "worker drain: events/s" \
	"$(thousands "$DRAIN_RATE") events/s ($(thousands $((N_DRAIN + 1))) in $(fmt "$DRAIN_SECONDS" 1) s)" \
	"mock: $(thousands "$MOCK_RPS") req/s (mean of 2)" \
	"$(fmt "$ratio" 3)" ">= 0.3 and >= 3,000/s" "$(yesno "$ratio >= 0.3 && $DRAIN_RATE >= 3000")"

latency_run "after VACUUM"
result "worker latency p50 @ ${LAT_RATE}/s" "$LAT_P50 ms (commit to visible)" "receive() txn: $RC_P50 ms" \
	"$(fmt "$(calc "$LAT_P50 / $RC_P50")" 1)" "(report)" "-"
result "worker latency p99 @ ${LAT_RATE}/s" "$LAT_P99 ms (commit to visible)" "receive() txn: $RC_P99 ms" \
	"$(fmt "$(calc "$LAT_P99 / $RC_P99")" 1)" "(report)" "-"
result "worker latency @ ${LAT_RATE}/s, right after the drain" "p50 $burst_p50 / p99 $burst_p99 ms" \
	"after VACUUM: p50 $LAT_P50 / p99 $LAT_P99 ms" "$(fmt "$(calc "$burst_p50 / $LAT_P50")" 1) (p50)" "(report)" "-"

# --- 4. (information) the drain with ALT_WORKERS worker(s) -------------------------
log "drain again with $ALT_WORKERS worker(s) (information)"
echo "sac_webhook.workers = $ALT_WORKERS" >>"$PGDATA/postgresql.conf"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w -t 60 restart >/dev/null
for i in $(seq 50); do [ "$(worker_pids | wc -l)" = "$ALT_WORKERS" ] && break; sleep 0.2; done
drain "$N_DRAIN"
raw "drain with $ALT_WORKERS worker(s): $((N_DRAIN + 1)) events in $(fmt "$DRAIN_SECONDS" 2) s = $(fmt "$DRAIN_RATE") events/s"
raw "drain with $ALT_WORKERS worker(s), CPU: $DRAIN_CPU"
raw "drain with $ALT_WORKERS worker(s), updates: $DRAIN_HOT"
raw "drain with $ALT_WORKERS worker(s), progress: 25 / 50 / 75 / 100 % done after $DRAIN_PROGRESS s"
result "worker drain, $ALT_WORKERS worker(s) (info)" \
	"$(thousands "$DRAIN_RATE") events/s" "mock: $(thousands "$MOCK_RPS") req/s" \
	"$(fmt "$(calc "$DRAIN_RATE / $MOCK_RPS")" 3)" "(report)" "-"

# --- 5. one worker's memory over RSS_EVENTS events -------------------------------
# after a warm-up of 1,000 events of the full mix
q -c "SELECT count(sac_webhook.receive(bench.random_payload())) FROM generate_series(1, 1000)" >/dev/null
wait_drained
WPID=$(worker_pids | head -n 1)
[ "$(worker_pids | wc -l)" = 1 ] || log "memory: of the first of $(worker_pids | wc -l) workers"
rss0=$(status_kb "$WPID" VmRSS) anon0=$(status_kb "$WPID" RssAnon) shm0=$(status_kb "$WPID" RssShmem)
done0=$(q -c "SELECT count(*) FROM sac_webhook.inbox WHERE state = 'done'")
left=$RSS_EVENTS
log "memory: $left more events of the full mix, until $RSS_EVENTS since the warm-up"
t_rss0=$SECONDS
peak_anon=$anon0
while [ "$left" -gt 0 ]; do
	n=$((left < 50000 ? left : 50000))
	# keep at most ~100,000 waiting, so the worker works at a steady pace
	while [ "$(waiting)" -gt 50000 ]; do
		a=$(status_kb "$WPID" RssAnon)
		[ "$a" -gt "$peak_anon" ] && peak_anon=$a
		sleep 2
	done
	q -c "SELECT count(sac_webhook.receive(bench.random_payload())) FROM generate_series(1, $n)" >/dev/null
	left=$((left - n))
done
wait_drained
[ "$(worker_pids | head -n 1)" = "$WPID" ] || die "the worker was restarted during the run"
done_end=$(q -c "SELECT count(*) FROM sac_webhook.inbox WHERE state = 'done'")
events=$((done_end - done0))
rss1=$(status_kb "$WPID" VmRSS) anon1=$(status_kb "$WPID" RssAnon) shm1=$(status_kb "$WPID" RssShmem)
[ "$anon1" -gt "$peak_anon" ] && peak_anon=$anon1
growth_mb=$(calc "($anon1 - $anon0) / 1024")
raw "worker memory after warm-up: VmRSS $rss0 kB (RssAnon $anon0, RssShmem $shm0); after $events more events (in $((SECONDS - t_rss0)) s for the last part): VmRSS $rss1 kB (RssAnon $anon1, peak $peak_anon, RssShmem $shm1)"
raw "inbox mix of those events: $(q -c "SELECT string_agg(topic || '/' || status || '=' || c, ' ' ORDER BY topic, status) FROM (SELECT topic, status, count(*) c FROM sac_webhook.inbox GROUP BY 1, 2) x")"
result "worker memory over $(thousands "$events") events" \
	"RssAnon $(fmt "$(calc "$anon1 / 1024")" 1) MB (+$(fmt "$growth_mb" 1) MB)" \
	"after warm-up: $(fmt "$(calc "$anon0 / 1024")" 1) MB" \
	"$(fmt "$(calc "$anon1 / $anon0")" 2)" "growth < 10 MB" "$(yesno "$growth_mb < 10")"

