#!/bin/bash
# selfcheck.sh -- quick check of sac_webhook_mock_api's namespaces, lists,
# single-message modes, shifting pages, latency and rate limits.
#
# Usage: test/mock_api/selfcheck.sh [MOCK_BINARY]
# Starts the mock on a free loopback port, drives it with curl, and exits
# non-zero if any answer differs from what is expected.  Takes a few
# seconds; the 2,000-connection check runs only if wrk is installed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-${SAC_WEBHOOK_MOCK_API:-$here/sac_webhook_mock_api}}
[ -x "$bin" ] || { echo "selfcheck: no mock binary at $bin (make -C test/mock_api)" >&2; exit 2; }
command -v curl >/dev/null || { echo "selfcheck: curl is required" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT

fails=0
checks=0
ok() { checks=$((checks + 1)); }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*" >&2; }
# check NAME EXPECTED ACTUAL
check() { if [ "$2" = "$3" ]; then ok; else fail "$1: expected [$2], got [$3]"; fi; }
# check_match NAME REGEX ACTUAL
check_match() { if [[ $3 =~ $2 ]]; then ok; else fail "$1: [$3] does not match /$2/"; fi; }

# start_mock NAME ARGS...: start a mock, set $url
start_mock() {
	local name=$1
	shift
	rm -f "$tmp/$name.port"
	"$bin" --listen 127.0.0.1:0 --port-file "$tmp/$name.port" --quiet --access-token tok "$@" \
		>"$tmp/$name.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do [ -s "$tmp/$name.port" ] && break; sleep 0.05; done
	[ -s "$tmp/$name.port" ] || { echo "selfcheck: mock did not start:" >&2; cat "$tmp/$name.log" >&2; exit 1; }
	url=http://127.0.0.1:$(cat "$tmp/$name.port")
}

AUTH='Authorization: Bearer tok'
get() { curl -sS --max-time 10 -H "$AUTH" "$url$1"; }
code() { curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "$AUTH" "$url$1"; }
put() { curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X PUT --data-binary "$2" "$url/_mock$1"; }
del() { curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X DELETE "$url/_mock$1"; }
post() { curl -sS --max-time 10 -X POST -H 'Content-Type: application/json' --data-binary "$2" "$url$1"; }
config() { post /_mock/config "$1" >/dev/null; }
# the part of a list before its results
meta() { sed 's/,"results".*//'; }
# the last 4 digits of the ids of a list's results whose id starts with $1
ids() { grep -o "\"id\":\"$1[0-9a-f-]*\"" | sed 's/.*\(....\)"$/\1/' | tr '\n' ' ' | sed 's/ $//'; }
count_of() { sed 's/.*"count":\([0-9]*\).*/\1/'; }
# tid N / mid N: deterministic ids
tid() { printf 'a0000000-0000-4000-8000-%012d' "$1"; }
mid() { printf 'b0000000-0000-4000-8000-%012d' "$1"; }
# put_ticket NSPREFIX N UPDATED_AT
put_ticket() {
	put "$1/v0/tickets/$(tid "$2")" "{\"id\":\"$(tid "$2")\",\"updated_at\":\"$3\",\"status\":\"open\"}" >/dev/null
}
page() {
	local p=$1 pages=$2
	printf '{"meta":{"page":{"limit":%s,"offset":%s,"count":%s,"max_limit":%s},"links":{%s}}' \
		"${p%%,*}" "$(echo "$p" | cut -d, -f2)" "$(echo "$p" | cut -d, -f3)" "$(echo "$p" | cut -d, -f4)" "$pages"
}

start_mock main --auto
T1=$(tid 1)
M1=$(mid 1)

# --- namespaces -----------------------------------------------------------------
check "put default" 200 "$(put "/v0/tickets/$T1" "{\"id\":\"$T1\",\"status\":\"default-ns\"}")"
check "put s1" 200 "$(put "/sellers/s1/v0/tickets/$T1" "{\"id\":\"$T1\",\"status\":\"s1-ns\"}")"
check "get default" "{\"id\":\"$T1\",\"status\":\"default-ns\"}" "$(get "/v0/tickets/$T1")"
check "get s1" "{\"id\":\"$T1\",\"status\":\"s1-ns\"}" "$(get "/sellers/s1/v0/tickets/$T1")"
check_match "get s2 (auto)" '"updated_at":"2024-08-07T13:42:46","id":"a0000000-' "$(get "/sellers/s2/v0/tickets/$T1")"
check "delete s1" 200 "$(del "/sellers/s1/v0/tickets/$T1")"
check "s1 deleted" 404 "$(code "/sellers/s1/v0/tickets/$T1")"
check "default kept" 200 "$(code "/v0/tickets/$T1")"
check "name with a dot" 404 "$(code "/sellers/a.b/v0/tickets/$T1")"
check "empty name" 404 "$(code "/sellers//v0/tickets/$T1")"
n64=$(printf 'n%.0s' $(seq 64))
check "64-char name" 200 "$(code "/sellers/$n64/v0/tickets/$T1")"
check "65-char name" 404 "$(code "/sellers/${n64}n/v0/tickets/$T1")"
check "no route" 404 "$(code "/nothing/v0/tickets/$T1")"
check "prefix, no route" 404 "$(code "/sellers/s1/v1/tickets/$T1")"
check "count by prefixed path" 2 "$(get "/_mock/count?path=/sellers/s1/v0/tickets/$T1")"
check "control GET is 405" 405 "$(code "/_mock/sellers/s1/v0/tickets/$T1")"
check "401 without a token" 401 "$(curl -s -o /dev/null -w '%{http_code}' "$url/sellers/s1/v0/tickets")"

# --- tickets list: paging -------------------------------------------------------
check "empty list" "$(page 10,0,0,10 '"self":"?_offset=0&_limit=10"'),\"results\":[]}" "$(get /sellers/empty/v0/tickets)"
for i in $(seq 10); do put_ticket /sellers/p10 "$i" "2024-01-$(printf %02d "$i")T00:00:00"; done
for i in $(seq 11); do put_ticket /sellers/p11 "$i" "2024-01-$(printf %02d "$i")T00:00:00"; done
b=$(get '/sellers/p10/v0/tickets?_limit=10')
check "exactly max_limit: meta" "$(page 10,0,10,10 '"self":"?_offset=0&_limit=10"')" "$(echo "$b" | meta)"
check "exactly max_limit: desc order" "0010 0009 0008 0007 0006 0005 0004 0003 0002 0001" "$(echo "$b" | ids a0000000)"
check "default _limit 50 clamped" "$(page 10,0,10,10 '"self":"?_offset=0&_limit=10"')" "$(get /sellers/p10/v0/tickets | meta)"
check "offset at the end" "$(page 10,10,0,10 '"previous":"?_offset=0&_limit=10","self":"?_offset=10&_limit=10"'),\"results\":[]}" \
	"$(get '/sellers/p10/v0/tickets?_offset=10')"
check "offset past the end" "$(page 10,100,0,10 '"previous":"?_offset=90&_limit=10","self":"?_offset=100&_limit=10"'),\"results\":[]}" \
	"$(get '/sellers/p10/v0/tickets?_offset=100&_limit=1000')"
b=$(get '/sellers/p11/v0/tickets?_sort=updated_at:asc')
check "11 items, page 1" "$(page 10,0,10,10 '"self":"?_offset=0&_limit=10","next":"?_offset=10&_limit=10"')" "$(echo "$b" | meta)"
b=$(get '/sellers/p11/v0/tickets?_sort=updated_at:asc&_offset=10&_limit=10')
check "11 items, page 2" "$(page 10,10,1,10 '"previous":"?_offset=0&_limit=10","self":"?_offset=10&_limit=10"')" "$(echo "$b" | meta)"
check "11 items, page 2 item" "0011" "$(echo "$b" | ids a0000000)"
b=$(get '/sellers/p11/v0/tickets?_limit=3&_offset=4&_sort=updated_at:asc')
check "small limit" "$(page 3,4,3,10 '"previous":"?_offset=1&_limit=3","self":"?_offset=4&_limit=3","next":"?_offset=7&_limit=3"')" "$(echo "$b" | meta)"
check "small limit items" "0005 0006 0007" "$(echo "$b" | ids a0000000)"
for q in '_offset=-1' '_limit=0' '_limit=abc' '_offset=' '_limit=-5' '_offset=1x' '_sort=id:asc' \
	'updated_at_gte=yesterday' 'updated_at_lte=2024-13-01T00:00:00'; do
	check "400 for $q" 400 "$(code "/sellers/p11/v0/tickets?$q")"
done
check_match "400 is JSON" '^\{"error":"invalid_parameter","detail":"_offset' "$(get '/sellers/p11/v0/tickets?_offset=-1')"

# --- tickets list: order and filters ---------------------------------------------
put_ticket /sellers/ord 1 "2024-03-01T00:00:00"
put_ticket /sellers/ord 2 "2024-03-01T00:00:00"
put_ticket /sellers/ord 3 "2024-02-01T00:00:00.250000Z"
put_ticket /sellers/ord 4 "2024-04-01T09:00:00+03:00"
put "/sellers/ord/v0/tickets/$(tid 5)" "{\"id\":\"$(tid 5)\"}" >/dev/null   # no updated_at
check "asc (ties by id)" "0005 0003 0001 0002 0004" "$(get '/sellers/ord/v0/tickets?_sort=updated_at:asc' | ids a0000000)"
check "desc: exact reverse" "0004 0002 0001 0003 0005" "$(get '/sellers/ord/v0/tickets?_sort=updated_at:desc' | ids a0000000)"
check "default is desc" "0004 0002 0001 0003 0005" "$(get '/sellers/ord/v0/tickets' | ids a0000000)"
check "gte inclusive" "0001 0002 0004" "$(get '/sellers/ord/v0/tickets?_sort=updated_at:asc&updated_at_gte=2024-03-01T00:00:00' | ids a0000000)"
check "gte with Z and fraction" "0001 0002 0004" "$(get '/sellers/ord/v0/tickets?_sort=updated_at:asc&updated_at_gte=2024-03-01T00:00:00.000Z' | ids a0000000)"
check "gte fraction exclusive" "0004" "$(get '/sellers/ord/v0/tickets?_sort=updated_at:asc&updated_at_gte=2024-03-01T00:00:00.000001' | ids a0000000)"
check "lte inclusive, fraction" "0003" "$(get '/sellers/ord/v0/tickets?updated_at_lte=2024-02-01T00:00:00.25' | ids a0000000)"
check "lte before fraction" "" "$(get '/sellers/ord/v0/tickets?updated_at_lte=2024-02-01T00:00:00Z' | ids a0000000)"
check "offset zone (06:00Z)" "0004" "$(get '/sellers/ord/v0/tickets?updated_at_gte=2024-04-01T06:00:00Z&updated_at_lte=2024-04-01T06:00:00' | ids a0000000)"
check "range" "0003 0001 0002" "$(get '/sellers/ord/v0/tickets?_sort=updated_at:asc&updated_at_gte=2024-02-01&updated_at_lte=2024-03-01T00:00:00' | ids a0000000)"
config '{"list_ignores_filters": true}'
check "ignores filters: id order" "0001 0002 0003 0004 0005" "$(get '/sellers/ord/v0/tickets?_sort=updated_at:desc&updated_at_gte=2030-01-01' | ids a0000000)"
check "ignores filters: bad values too" 200 "$(code '/sellers/ord/v0/tickets?_sort=bogus&updated_at_gte=bogus')"
check "ignores filters: paging" "0004 0005" "$(get '/sellers/ord/v0/tickets?_offset=3&_limit=2' | ids a0000000)"
config '{"list_ignores_filters": false}'

# --- --auto tickets are listed; deleted ones vanish ------------------------------
get "/sellers/auto/v0/tickets/$(tid 2)" >/dev/null
get "/sellers/auto/v0/tickets/$(tid 1)" >/dev/null
get "/sellers/auto/v0/tickets/$(tid 1)" >/dev/null
check "auto tickets listed" "0001 0002" "$(get '/sellers/auto/v0/tickets?_sort=updated_at:asc' | ids a0000000)"
del "/sellers/auto/v0/tickets/$(tid 1)" >/dev/null
check "deleted one vanishes" "0002" "$(get '/sellers/auto/v0/tickets' | ids a0000000)"
put_ticket /sellers/auto 2 "2025-01-01T00:00:00"
check_match "PUT over an auto one" '^\{"meta".*"results":\[\{"id":"a0000000-0000-4000-8000-000000000002","updated_at":"2025-01-01T00:00:00","status":"open"\}\]\}$' \
	"$(get '/sellers/auto/v0/tickets')"

# --- messages list ---------------------------------------------------------------
MT=$(tid 7)
putm() { put "/sellers/m/v0/tickets/$MT/messages/$(mid "$1")" "{\"id\":\"$(mid "$1")\",\"created_at\":\"$2\"}" >/dev/null; }
putm 3 "2024-08-09T13:30:38.609142Z"
putm 1 "2024-08-09T13:30:38.609142"
putm 2 "2024-08-01T00:00:00"
putm 4 "2024-08-10T00:00:00"
check "messages by created_at, id" "0002 0001 0003 0004" "$(get "/sellers/m/v0/tickets/$MT/messages" | ids b0000000)"
b=$(get "/sellers/m/v0/tickets/$MT/messages?_offset=1&_limit=2")
check "messages page" "$(page 2,1,2,10 '"previous":"?_offset=0&_limit=2","self":"?_offset=1&_limit=2","next":"?_offset=3&_limit=2"')" "$(echo "$b" | meta)"
check "messages page items" "0001 0003" "$(echo "$b" | ids b0000000)"
check "messages 400" 400 "$(code "/sellers/m/v0/tickets/$MT/messages?_limit=x")"
del "/sellers/m/v0/tickets/$MT/messages/$(mid 3)" >/dev/null
get "/sellers/m/v0/tickets/$MT/messages/$(mid 5)" >/dev/null      # --auto: remembered
check "deleted vanishes, auto listed" "0002 0001 0005 0004" "$(get "/sellers/m/v0/tickets/$MT/messages" | ids b0000000)"
check "other namespace: empty" 0 "$(get "/v0/tickets/$MT/messages" | count_of)"
del "/sellers/m/v0/tickets/$MT" >/dev/null
check "deleted ticket: 404" 404 "$(code "/sellers/m/v0/tickets/$MT/messages")"

# --- single-message endpoint -----------------------------------------------------
MT=$(tid 8)
putm 1 "2024-08-09T00:00:00"
check "single on" 200 "$(code "/sellers/m/v0/tickets/$MT/messages/$M1")"
config '{"single_message": "off"}'
check "single off" 404 "$(code "/sellers/m/v0/tickets/$MT/messages/$M1")"
check "single off, in the list" "0001" "$(get "/sellers/m/v0/tickets/$MT/messages" | ids b0000000)"
config '{"single_message": "405"}'
check "single 405" 405 "$(code "/sellers/m/v0/tickets/$MT/messages/$M1")"
config '{"single_message": "on"}'
check "single on again" 200 "$(code "/sellers/m/v0/tickets/$MT/messages/$M1")"

# --- pages that shift ------------------------------------------------------------
for i in $(seq 6); do put_ticket /sellers/sh "$i" "2024-01-0${i}T00:00:00"; done
config '{"shift_per_page": 2}'
check "shift: page 1" "0001 0002" "$(get '/sellers/sh/v0/tickets?_sort=updated_at:asc&_limit=2' | ids a0000000)"
check "shift: page 2 skips" "0005 0006" "$(get '/sellers/sh/v0/tickets?_sort=updated_at:asc&_limit=2&_offset=2' | ids a0000000)"
today=$(date -u +%Y-%m-%d)
check_match "shifted doc served by GET" "^\{\"id\":\"$(tid 1)\",\"updated_at\":\"${today}T[0-9:]{8}\",\"status\":\"open\"\}$" \
	"$(get "/sellers/sh/v0/tickets/$(tid 1)")"
config '{"shift_per_page": 1}'
check_match "shift desc: page" '^0... 0...$' "$(get '/sellers/sh/v0/tickets?_limit=2' | ids a0000000)"
check_match "shift: the oldest moved" "\"updated_at\":\"${today}T" "$(get "/sellers/sh/v0/tickets/$(tid 5)")"
get "/sellers/sha/v0/tickets/$(tid 1)" >/dev/null                  # an --auto ticket
get '/sellers/sha/v0/tickets' >/dev/null
check_match "shifted auto ticket" "\"updated_at\":\"${today}T.*\"id\":\"$(tid 1)\"" "$(get "/sellers/sha/v0/tickets/$(tid 1)")"
config '{"shift_per_page": 0, "insert_per_page": 2}'
b=$(get '/sellers/ins/v0/tickets')
check "insert: first page before" 0 "$(echo "$b" | count_of)"
b=$(get '/sellers/ins/v0/tickets?_sort=updated_at:asc')
check "insert: created" "0001 0002" "$(echo "$b" | ids 90000000-0000-4000-8000-)"
check_match "insert: GET" "^\{\"created_at\":\"${today}T[0-9:]{8}\",\"updated_at\":\"${today}T.*\"id\":\"90000000-0000-4000-8000-000000000003\"" \
	"$(get /sellers/ins/v0/tickets/90000000-0000-4000-8000-000000000003)"
config '{"insert_per_page": 0}'
check "insert: total" 4 "$(get '/sellers/ins/v0/tickets' | count_of)"

# --- counters --------------------------------------------------------------------
check "count of a list path" 3 "$(get '/_mock/count?path=/sellers/ins/v0/tickets')"
check "count ignores a query" 3 "$(get '/_mock/count?path=/sellers/ins/v0/tickets?_offset=0')"
check_match "stats" '"list_requests":[1-9][0-9]*,"rate_limited":0' "$(get /_mock/stats)"

# --- rate limits -----------------------------------------------------------------
config '{"rate_limit": {"namespace": "rl", "per_second": 0, "burst": 2}}'
check "rate: 1" 200 "$(code "/sellers/rl/v0/tickets/$T1")"
check "rate: 2" 200 "$(code "/sellers/rl/v0/tickets")"
h=$(curl -sS -i -H "$AUTH" "$url/sellers/rl/v0/tickets/$T1" | tr -d '\r')
check_match "rate: 429" '^HTTP/1.1 429' "$h"
check_match "rate: Retry-After" $'\nRetry-After: 1\n' "$h"
check "rate: other namespace" 200 "$(code "/sellers/rl2/v0/tickets/$T1")"
check "rate: default namespace" 200 "$(code "/v0/tickets/$T1")"
config '{"rate_limit": {"namespace": "", "per_second": 5, "burst": 1}}'
check "rate default: 1" 200 "$(code "/v0/tickets/$T1")"
check "rate default: 2" 429 "$(code "/v0/tickets/$T1")"
sleep 0.25
check "rate default: refilled" 200 "$(code "/v0/tickets/$T1")"
check_match "stats rate_limited" '"rate_limited":2,' "$(get /_mock/stats)"
check_match "config shows limits" '"rate_limits":\[\{"namespace":"rl","per_second":0,"burst":2\},\{"namespace":"","per_second":5,"burst":1\}\]' "$(get /_mock/config)"
config '{"rate_limit": {"namespace": "rl"}}'
check "rate: removed" 200 "$(code "/sellers/rl/v0/tickets/$T1")"
config '{"rate_limit": null}'
check "rate: all removed" 200 "$(code "/v0/tickets/$T1")"
check_match "config: bad key" '"error":"bad_request","detail":"unknown key"' "$(post /_mock/config '{"nope": 1}')"
check_match "config: bad namespace" 'rate_limit.namespace' "$(post /_mock/config '{"rate_limit": {"namespace": "a b"}}')"
check_match "config: all or nothing" '"shift_per_page":0,' "$(post /_mock/config '{"shift_per_page": 3, "tail_permille": 2000}'; get /_mock/config)"

# --- latency ---------------------------------------------------------------------
config '{"latency_ms": 300, "jitter_ms": 50}'
t=$(curl -sS -o /dev/null -w '%{time_total}' -H "$AUTH" "$url/v0/tickets/$T1")
check_match "latency on a GET (${t}s)" '^0\.(3[0-9]|4[0-9])' "$t"
t=$(curl -sS -o /dev/null -w '%{time_total}' -H "$AUTH" "$url/sellers/p10/v0/tickets")
check_match "latency on a list (${t}s)" '^0\.(3[0-9]|4[0-9])' "$t"
t=$(curl -sS -o /dev/null -w '%{time_total}' "$url/_mock/stats")
check_match "no latency on /_mock/ (${t}s)" '^0\.0' "$t"
t=$(curl -sS -o /dev/null -w '%{time_total}' -X POST --data 'grant_type=x' "$url/oauth/token")
check_match "no latency on /oauth/token (${t}s)" '^0\.0' "$t"
config '{"latency_ms": 0, "jitter_ms": 0, "tail_permille": 1000, "tail_ms": 150}'
t=$(curl -sS -o /dev/null -w '%{time_total}' -H "$AUTH" "$url/v0/tickets/$T1")
check_match "tail latency (${t}s)" '^0\.1[5-9]' "$t"

# --- reset -----------------------------------------------------------------------
post /_mock/reset '' >/dev/null
check "reset: config" '{"single_message":"on","list_ignores_filters":false,"max_limit":10,"shift_per_page":0,"insert_per_page":0,"latency_ms":0,"jitter_ms":0,"tail_permille":0,"tail_ms":0,"rate_limits":[]}' "$(get /_mock/config)"
check "reset: stats" '{"api_requests":0,"token_requests":0,"unauthorized":0,"list_requests":0,"rate_limited":0,"suspended":0}' "$(get /_mock/stats)"
check "reset: namespaces" 0 "$(get /sellers/p10/v0/tickets | count_of)"

# --- command-line options ----------------------------------------------------------
start_mock opts --single-message 405 --list-ignores-filters --max-limit 3 --latency 20,0,0,0
for i in 3 1 2 4; do put_ticket "" "$i" "2024-01-0${i}T00:00:00"; done
check "--single-message 405" 405 "$(code "/v0/tickets/$T1/messages/$M1")"
b=$(get '/v0/tickets?_sort=updated_at:desc')
check "--max-limit, --list-ignores-filters" "$(page 3,0,3,3 '"self":"?_offset=0&_limit=3","next":"?_offset=3&_limit=3"')" "$(echo "$b" | meta)"
check "--list-ignores-filters order" "0001 0002 0003" "$(echo "$b" | ids a0000000)"
check "config from the command line" '{"single_message":"405","list_ignores_filters":true,"max_limit":3,"shift_per_page":0,"insert_per_page":0,"latency_ms":20,"jitter_ms":0,"tail_permille":0,"tail_ms":0,"rate_limits":[]}' "$(get /_mock/config)"
config '{"single_message": "on", "max_limit": 5}'
post /_mock/reset '' >/dev/null
check_match "reset restores the command line" '"single_message":"405","list_ignores_filters":true,"max_limit":3' "$(get /_mock/config | cut -d, -f1-3)"
check "--latency parse error" 2 "$("$bin" --latency 1,2,3 >/dev/null 2>&1; echo $?)"
check "--single-message parse error" 2 "$("$bin" --single-message maybe >/dev/null 2>&1; echo $?)"

# --- 2,000 concurrent delayed connections ------------------------------------------
if command -v wrk >/dev/null && [ "$(ulimit -n)" -ge 4200 ] 2>/dev/null; then
	start_mock conc --auto --threads 2 --latency 400
	out=$(wrk -t2 -c2000 -d2s --timeout 5s -H "$AUTH" "$url/v0/tickets/$T1" 2>&1)
	check_match "wrk: 2000 connections, no socket errors" 'Requests/sec' "$out"
	if echo "$out" | grep -qE 'Socket errors|Non-2xx'; then fail "wrk: errors: $(echo "$out" | grep -E 'Socket errors|Non-2xx')"; else ok; fi
	req=$(echo "$out" | awk '/requests in/ {print $1}')
	[ "${req:-0}" -ge 5000 ] && ok || fail "wrk: only ${req:-0} requests in 2 s at 2000 connections x 400 ms"
else
	echo "selfcheck: wrk not installed (or ulimit -n < 4200): 2,000-connection check skipped"
fi

echo "selfcheck: $checks checks, $fails failed"
[ "$fails" = 0 ]
