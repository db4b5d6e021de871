#!/bin/bash
# bench/sync.sh -- the onboarding backfill of a seller with history against a
# remote-like API (every answer delayed ~200 ms), and the latency of another
# seller's notifications while it runs.
#
#   figure:   backfill rate, tickets plus messages per second, and the API
#             requests it made per second
#   baseline: the concurrency bound, requests in flight / API latency: the
#             least of max_in_flight, max_in_flight_per_tenant (one seller
#             is backfilled) and workers x (sync_batch_size + 4 walks), over
#             0.2 s
#   also:     p50 / p99 of receipt -> done of the other seller's
#             notifications during the backfill (target p99 <= 2 s)
#
# Run as root after "make install"; QUICK=1 for a smaller history.

source "$(dirname "$0")/lib.sh"
bench_begin sync

N_TICKETS=${N_TICKETS:-$(size 600 150)}
MESSAGES=2
LATENCY_MS=180
JITTER_MS=40
WORKERS=2
LIVE_RATE=5				# notifications per second of the other seller

MOCK_PORT=$(free_port)
MOCK_URL=http://127.0.0.1:$MOCK_PORT
start_bg mock "$PGBIN/sac_webhook_mock_api" --listen "127.0.0.1:$MOCK_PORT" --auto --auto-max 0 --quiet \
	--access-token "$MOCK_TOKEN" --threads 2
wait_http "$MOCK_URL/_mock/health"

# the history: N tickets with MESSAGES messages each, in the mock's store of seller "a"
log "storing $N_TICKETS tickets with $MESSAGES messages each in the mock"
put() { curl -sf -o /dev/null -X PUT -H 'Content-Type: application/json' --data-binary "$2" "$MOCK_URL/_mock/sellers/a$1" \
	|| die "could not store $1 in the mock"; }
for i in $(seq "$N_TICKETS"); do
	t=$(printf '50000000-0000-4000-8000-%012d' "$i")
	put "/v0/tickets/$t" "{\"id\": \"$t\", \"status\": \"open\", \"updated_at\": \"2024-08-07T13:42:46\"}"
	for j in $(seq "$MESSAGES"); do
		m=$(printf '6%07d-0000-4000-8000-%012d' "$i" "$j")
		put "/v0/tickets/$t/messages/$m" "{\"id\": \"$m\", \"message\": \"m\", \"ticket\": {\"id\": \"$t\"}, \"created_at\": \"2024-08-09T13:30:38Z\"}"
	done
done

pg_start "sac_webhook.workers = $WORKERS
sac_webhook.api_base_url = '$MOCK_URL'
sac_webhook.done_retention = '30d'
sac_webhook.onboarding_sync = on"
IN_FLIGHT=$(q -c "SELECT least(current_setting('sac_webhook.max_in_flight')::int,
                              current_setting('sac_webhook.max_in_flight_per_tenant')::int,
                              $WORKERS * (current_setting('sac_webhook.sync_batch_size')::int + 4))")

# seller "b", the live one, with nothing to backfill
q -c "INSERT INTO sac_webhook.tenants (tenant_id, api_base_url, access_token, token_expires_at)
      VALUES ('b0000000-0000-4000-8000-00000000000b', '$MOCK_URL/sellers/b', '$MOCK_TOKEN', now() + interval '7 days')" >/dev/null
curl -sf -X POST -H 'Content-Type: application/json' \
	--data "{\"latency_ms\": $LATENCY_MS, \"jitter_ms\": $JITTER_MS}" "$MOCK_URL/_mock/config" >/dev/null
requests() { curl -sf "$MOCK_URL/_mock/stats" | sed 's/.*"api_requests":\([0-9]*\).*/\1/'; }
r0=$(requests)

log "onboarding seller a; seller b notifies $LIVE_RATE/s meanwhile"
q -c "INSERT INTO sac_webhook.tenants (tenant_id, api_base_url, access_token, token_expires_at)
      VALUES ('a0000000-0000-4000-8000-00000000000a', '$MOCK_URL/sellers/a', '$MOCK_TOKEN', now() + interval '7 days')" >/dev/null
t0=$(date +%s.%N)
k=0
while [ "$(q -c "SELECT count(*) FROM sac_webhook.syncs WHERE tenant_id = 'a0000000-0000-4000-8000-00000000000a' AND finished_at IS NULL")" != 0 ]; do
	k=$((k + 1))
	[ "$k" -gt $((LIVE_RATE * 900)) ] && die "the backfill did not finish within 15 minutes"
	id=$(printf 'b1000000-0000-4000-8000-%012d' "$k")
	q -c "SELECT sac_webhook.receive('{\"data\": {\"status\": \"CREATION\", \"params\": {\"id\": \"$id\"}, \"resource\": \"/v0/tickets/$id\"}, \"tenant_id\": \"b0000000-0000-4000-8000-00000000000b\", \"topic\": \"sac_ticket\"}')" >/dev/null
	sleep "$(calc "1 / $LIVE_RATE")"
done
t1=$(date +%s.%N)
r1=$(requests)
elapsed=$(calc "$t1 - $t0")
stored=$(q -c "SELECT (SELECT count(*) FROM sac_webhook.tickets WHERE tenant_id = 'a0000000-0000-4000-8000-00000000000a')
               + (SELECT count(*) FROM sac_webhook.messages WHERE tenant_id = 'a0000000-0000-4000-8000-00000000000a')")
[ "$stored" = $((N_TICKETS * (1 + MESSAGES))) ] || die "the backfill stored $stored rows, not $((N_TICKETS * (1 + MESSAGES)))"
sleep 2
read -r p50 p99 n_live <<<"$(q -F ' ' -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)), count(*)
  FROM (SELECT extract(epoch FROM finished_at - received_at) * 1000 AS ms FROM sac_webhook.inbox
         WHERE tenant_id = 'b0000000-0000-4000-8000-00000000000b' AND state = 'done') d")"

rate=$(calc "$stored / $elapsed")
req_rate=$(calc "($r1 - $r0) / $elapsed")
bound=$(calc "$IN_FLIGHT * 1000 / ($LATENCY_MS + $JITTER_MS / 2)")
raw "backfill: $stored rows ($N_TICKETS tickets, $((N_TICKETS * MESSAGES)) messages) in $(fmt "$elapsed" 1) s; $((r1 - r0)) API requests; bound $IN_FLIGHT in flight / ${LATENCY_MS}+${JITTER_MS}/2 ms"
raw "live notifications during the backfill: $n_live, receipt -> done p50 $p50 ms, p99 $p99 ms"
result "sync: backfill, API requests/s (~200 ms API)" "$(fmt "$req_rate" 0) req/s; $(fmt "$rate" 0) tickets+messages/s" \
	"bound: $(fmt "$bound" 0) req/s ($IN_FLIGHT in flight / 0.2 s)" "$(fmt "$(calc "$req_rate / $bound")" 2)" "(report)" "-"
result "sync: other seller's notifications during it, p99" "p50 $p50 / p99 $p99 ms" "API latency: ~200 ms" \
	"$(fmt "$(calc "$p99 / 200")" 1)" "p99 <= 2000 ms" "$(yesno "$p99 <= 2000")"
