#!/bin/bash
# bench/receiver.sh -- durable receipts/s through sac_webhook_receiver, on
# loopback, against the database alone (pgbench) and against a small Node.js
# receiver (bench/node_receiver); then its latency at half its top rate and
# its memory under load.
#
# Same load for all three: -t2 / -j2 and 32 connections for DURATION (10 s;
# QUICK=1: 4 s), the benchmark payload mix with fresh random ids on every
# request (bench/lua/post.lua for the HTTP servers, bench/pgbench/receive.sql
# for pgbench), after a short warm-up; the inbox is emptied and checkpointed
# before each run.  No background worker runs: this measures the receipt
# path only.  Every client logs in as bench_receiver, a member of the
# sac_webhook_receiver role.
#
#   ours      wrk -> sac_webhook_receiver --db-connections POOL (defaults
#             otherwise: groups of up to 32 receipts per transaction)
#   pgbench   SELECT sac_webhook.receive(...) one per transaction, -c32 -M prepared
#   node      wrk -> fastify + pg Pool of POOL connections, one receive() per
#             transaction
# Receipts/s counts 2xx answers only (each one committed); the rows in the
# inbox are checked against that count.
#
# Latency (wrk2 is not available): wrk paced by WRK_DELAY_MS (see
# bench/lua/post.lua) so that the 32 connections offer about half of our top
# rate; p50/p99 from wrk's histogram.  The pause starts after each answer
# (closed loop), so a short calibration run measures the mean latency first
# and the pause is shortened by that much; the achieved rate is reported.
# Baseline: pgbench at the same rate (-R) and concurrency, i.e. receive()
# one per transaction without HTTP (schedule lag removed).
# Memory: the largest VmRSS of each server during its throughput run.
#
# Targets: ours >= 1.0x pgbench, >= 2x node; p99 < 20 ms at half rate.

source "$(dirname "$0")/lib.sh"
bench_begin receiver

DURATION=$(size 10 4)
WARMUP=2
CONNS=32
POOL=${POOL:-4}
SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

command -v wrk >/dev/null || die "wrk is missing: apt-get install -y wrk"
command -v node >/dev/null || die "node is missing"

# the Node.js baseline's packages, from its lockfile
if [ ! -d "$BENCH_DIR/node_receiver/node_modules" ]; then
	log "npm ci in bench/node_receiver"
	(cd "$BENCH_DIR/node_receiver" && npm ci --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1) ||
		die "npm ci failed: $(tail -n 5 "$WORK/npm.log")"
fi

pg_start
q <<-EOF
	CREATE ROLE bench_receiver LOGIN IN ROLE sac_webhook_receiver;
	GRANT USAGE ON SCHEMA bench TO bench_receiver;
EOF
CONNINFO="host=$WORK port=$PGPORT dbname=postgres user=bench_receiver"

# --- the servers ----------------------------------------------------------------
OUR_PORT=$(free_port)
start_bg receiver "$PGBIN/sac_webhook_receiver" --listen "127.0.0.1:$OUR_PORT" --db "$CONNINFO" \
	--secret "$SECRET" --db-connections "$POOL" --quiet
OUR_PID=$BG_PID
NODE_PORT=$(free_port)
start_bg node env LISTEN="127.0.0.1:$NODE_PORT" SECRET="$SECRET" POOL_SIZE="$POOL" \
	PGHOST="$WORK" PGPORT="$PGPORT" PGUSER=bench_receiver PGDATABASE=postgres \
	node "$BENCH_DIR/node_receiver/server.js"
NODE_PID=$BG_PID
wait_http "http://127.0.0.1:$OUR_PORT/healthz"
wait_http "http://127.0.0.1:$NODE_PORT/healthz"
OUR_URL=http://127.0.0.1:$OUR_PORT/webhooks/$SECRET
NODE_URL=http://127.0.0.1:$NODE_PORT/webhooks/$SECRET

# --- helpers ----------------------------------------------------------------------

# empty the inbox and checkpoint, so that each run starts alike
reset_inbox() { q -c "TRUNCATE sac_webhook.inbox RESTART IDENTITY" -c "CHECKPOINT"; }

# rss_sampler PID FILE: write VmRSS (kB) of PID to FILE every 0.2 s (background)
rss_sampler()
{
	(while kill -0 "$1" 2>/dev/null; do status_kb "$1" VmRSS; sleep 0.2; done) >"$2" 2>/dev/null &
	BG_PIDS+=("$!")
	BG_NAMES+=(rss_sampler)
	SAMPLER_PID=$!
}

# wrk_run URL SECONDS: the WRK_RESULT fields of one wrk run of post.lua
wrk_run()
{
	wrk -t2 -c"$CONNS" -d"${2}s" --timeout 10s -s "$BENCH_DIR/lua/post.lua" "$1" -- "$RANDOM" |
		grep '^WRK_RESULT' | cut -d' ' -f2-
}

# http_run NAME URL SERVER_PID: warm-up, then the measured run.  Sets RPS
# (2xx/s), MAX_RSS (kB), and a raw line.
http_run()
{
	local name=$1 url=$2 pid=$3 req dur non2xx err p50 p90 p99 max mean rows pgpids s_cpu p_cpu s_cpu0 p_cpu0 busy
	wrk_run "$url" "$WARMUP" >/dev/null
	reset_inbox
	pgpids=$(pg_children_except)
	s_cpu0=$(cpu_seconds "$pid")
	p_cpu0=$(cpu_seconds $pgpids)
	cpu_busy_mark
	rss_sampler "$pid" "$WORK/rss.$name"
	read -r req dur non2xx err p50 p90 p99 max mean < <(wrk_run "$url" "$DURATION")
	busy=$(cpu_busy_since)
	s_cpu=$(calc "$(cpu_seconds "$pid") - $s_cpu0")
	p_cpu=$(calc "$(cpu_seconds $pgpids) - $p_cpu0")
	stop_pid "$SAMPLER_PID"
	MAX_RSS=$(sort -n "$WORK/rss.$name" | tail -n 1)
	RPS=$(calc "($req - $non2xx) / $dur")
	rows=$(q -c "SELECT count(*) FROM sac_webhook.inbox")
	[ "$rows" -ge $((req - non2xx)) ] || die "$name: $((req - non2xx)) answered 2xx but only $rows rows in the inbox"
	raw "$name: $req requests in ${dur}s, $non2xx non-2xx, $err socket errors, $rows inbox rows; $(fmt "$RPS") receipts/s; latency p50 $p50 ms, p99 $p99 ms, max $max ms; server CPU ${s_cpu} s, postgres CPU ${p_cpu} s, both cores ${busy}% busy; max VmRSS $MAX_RSS kB"
}

# --- throughput ---------------------------------------------------------------------
log "ours: wrk -t2 -c$CONNS -d${DURATION}s"
http_run "sac_webhook_receiver (--db-connections $POOL)" "$OUR_URL" "$OUR_PID"
OUR_RPS=$RPS OUR_RSS=$MAX_RSS
groups=$(curl -s "http://127.0.0.1:$OUR_PORT/metrics" |
	awk '/^sac_webhook_receiver_group_size_sum/ { s = $2 } /^sac_webhook_receiver_group_size_count/ { c = $2 }
	     END { if (c > 0) printf "%.1f receipts per transaction on average (since start)", s / c }')
[ -n "$groups" ] && raw "sac_webhook_receiver grouping: $groups"

log "pgbench: -c$CONNS -j2 -T$DURATION"
pgb()
{
	(cd "$WORK" && PGUSER=bench_receiver pgbench -n -M prepared -f "$BENCH_DIR/pgbench/receive.sql" \
		-c "$CONNS" -j 2 "$@" >"$WORK/pgbench.out" 2>&1) || die "pgbench failed: $(tail -n 5 "$WORK/pgbench.out")"
	awk '/^tps/ { print $3 }' "$WORK/pgbench.out"
}
pgb -T "$WARMUP" >/dev/null
reset_inbox
PGB_TPS=$(pgb -T "$DURATION")
raw "pgbench (-M prepared -c$CONNS -j2 -T$DURATION, receive() one per transaction): $(fmt "$PGB_TPS") tps; $(grep -E '^latency average' "$WORK/pgbench.out")"

log "node: wrk -t2 -c$CONNS -d${DURATION}s"
http_run "node receiver (fastify + pg, pool $POOL)" "$NODE_URL" "$NODE_PID"
NODE_RPS=$RPS NODE_RSS=$MAX_RSS

r_pgb=$(calc "$OUR_RPS / $PGB_TPS")
r_node=$(calc "$OUR_RPS / $NODE_RPS")
result "receiver vs pgbench: receipts/s" "$(thousands "$OUR_RPS")/s" "pgbench receive(): $(thousands "$PGB_TPS")/s" \
	"$(fmt "$r_pgb" 2)x" ">= 1.0x" "$(yesno "$r_pgb >= 1.0")"
result "receiver vs Node.js: receipts/s" "$(thousands "$OUR_RPS")/s" "node: $(thousands "$NODE_RPS")/s" \
	"$(fmt "$r_node" 2)x" ">= 2x" "$(yesno "$r_node >= 2")"

# --- latency at half the top rate ---------------------------------------------------
HALF=$(calc "$OUR_RPS / 2")
# Each connection waits DELAY after an answer, so its period is DELAY plus the
# latency: a short calibration run at the naive pause measures the latency,
# and the measured run pauses that much less.
PERIOD_MS=$(calc "$CONNS * 1000 / $HALF")
reset_inbox
read -r _ _ _ _ _ _ _ _ cal_mean < <(WRK_DELAY_MS=$PERIOD_MS wrk_run "$OUR_URL" "$WARMUP")
DELAY_MS=$(calc "$PERIOD_MS - $cal_mean")
awk "BEGIN { exit !($DELAY_MS < 0.5) }" && DELAY_MS=0.5
log "latency at ~$(fmt "$HALF")/s: wrk -c$CONNS with a $(fmt "$DELAY_MS" 2) ms pause per connection"
reset_inbox
read -r req dur non2xx err p50 p90 p99 max mean < <(WRK_DELAY_MS=$DELAY_MS wrk_run "$OUR_URL" "$DURATION")
lat_rate=$(calc "($req - $non2xx) / $dur")
raw "latency run (wrk -t2 -c$CONNS, pause $(fmt "$DELAY_MS" 2) ms after each answer, aiming at $(fmt "$HALF")/s): $req requests, $non2xx non-2xx, $(fmt "$lat_rate")/s achieved; p50 $p50 ms, p90 $p90 ms, p99 $p99 ms, max $max ms, mean $mean ms"

reset_inbox
pgb -R "$(fmt "$HALF")" -T "$DURATION" -l --log-prefix="$WORK/pgblat" >/dev/null
read -r b_p50 b_p99 < <(cat "$WORK"/pgblat.* | awk '{ print ($3 - $7) / 1000 }' | sort -g |
	awk '{ v[NR] = $1 } END { printf "%.2f %.2f\n", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1] }')
raw "latency baseline: pgbench -R $(fmt "$HALF") -c$CONNS: $(fmt "$(awk '/^tps/ { print $3 }' "$WORK/pgbench.out")") tps, p50 $b_p50 ms, p99 $b_p99 ms (schedule lag removed)"
result "receiver p50 @ ~half rate ($(thousands "$lat_rate")/s)" "$p50 ms" "pgbench receive(): $b_p50 ms" \
	"$(fmt "$(calc "$p50 / $b_p50")" 1)" "(report)" "-"
result "receiver p99 @ ~half rate ($(thousands "$lat_rate")/s)" "$p99 ms" "pgbench receive(): $b_p99 ms" \
	"$(fmt "$(calc "$p99 / $b_p99")" 1)" "< 20 ms" "$(yesno "$p99 < 20")"

# --- memory -----------------------------------------------------------------------------
result "receiver RSS under load" "$(fmt "$(calc "$OUR_RSS / 1024")" 1) MB" \
	"node: $(fmt "$(calc "$NODE_RSS / 1024")" 1) MB" "$(fmt "$(calc "$OUR_RSS / $NODE_RSS")" 2)" "(report)" "-"
