#!/bin/bash
# demo.sh: run sac_webhook end to end on this machine.
#
# Installs what is missing, builds and installs the extension, starts a
# PostgreSQL cluster in .demo/ with the extension preloaded, the HTTP
# receiver and (without real credentials) the bundled mock of Magalu's API,
# then POSTs the webhook documentation's example notifications and shows,
# with the SQL it runs, a ticket and a message appearing, changing and
# disappearing.  Everything it started keeps running until Ctrl-C (or, when
# not run from a terminal, stops at the end).
#
#   scripts/demo.sh          run the demo
#   scripts/demo.sh stop     stop what an earlier run left running
#
# To use the real API instead of the mock, set a tenant's credentials:
#   SAC_TENANT_ID SAC_CLIENT_ID SAC_CLIENT_SECRET SAC_REFRESH_TOKEN
#   [SAC_API_BASE_URL] [SAC_TOKEN_URL]
# The receiver then waits for Magalu's POSTs at the URL it prints.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
demo="$top/.demo"
PGBIN=/usr/lib/postgresql/15/bin
PGPORT=${SAC_DEMO_PGPORT:-54329}
MOCK_PORT=${SAC_DEMO_MOCK_PORT:-18089}
RECEIVER_PORT=${SAC_DEMO_RECEIVER_PORT:-8089}
DB=sac_demo

bold=""; dim=""; off=""
if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; off=$'\e[0m'; fi

RUN=""
SUDO=""
if [ "$(id -u)" -eq 0 ]; then
	RUN="runuser -u postgres --"
else
	SUDO="sudo"
fi

say() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }

# Stop whatever an earlier run of this script left running.
stop_all()
{
	for p in receiver mock; do
		if [ -f "$demo/$p.pid" ]; then
			kill "$(cat "$demo/$p.pid")" 2>/dev/null
			rm -f "$demo/$p.pid"
		fi
	done
	if [ -f "$demo/pgdata/postmaster.pid" ]; then
		$RUN $PGBIN/pg_ctl -D "$demo/pgdata" -m fast -w stop >/dev/null 2>&1
	fi
}

if [ "${1:-}" = stop ]; then
	stop_all
	echo "stopped"
	exit 0
fi

real_api=false
if [ -n "${SAC_TENANT_ID:-}" ] && [ -n "${SAC_CLIENT_ID:-}" ] &&
   [ -n "${SAC_CLIENT_SECRET:-}" ] && [ -n "${SAC_REFRESH_TOKEN:-}" ]; then
	real_api=true
fi

say "Installing what is missing and building"
scripts/install-deps.sh || exit 1
make -s -j2 PG_CONFIG=$PGBIN/pg_config >/dev/null || { echo "build failed"; exit 1; }
$SUDO make -s install PG_CONFIG=$PGBIN/pg_config >/dev/null || { echo "install failed"; exit 1; }

stop_all
trap 'stop_all; echo; echo "demo stopped"; exit 0' INT TERM

# With real credentials an earlier cluster is kept: it holds the tenant's
# rotated refresh token, and the one in the environment is spent.
reuse=false
if $real_api && [ -f "$demo/pgdata/PG_VERSION" ]; then
	reuse=true
else
	rm -rf "$demo"
	mkdir -p "$demo"
	if [ -n "$RUN" ]; then
		chown postgres: "$demo"
		if ! $RUN test -w "$demo"; then
			# the checkout is out of the postgres user's reach (e.g. under /root)
			rmdir "$demo"
			demo=/var/tmp/sac_webhook_demo
			rm -rf "$demo"
			mkdir -p "$demo"
			chown postgres: "$demo"
			ln -sfn "$demo" "$top/.demo"
		fi
	fi
fi

if $real_api; then
	api_base=${SAC_API_BASE_URL:-https://api.magalu.com/seller}
	token_url=${SAC_TOKEN_URL:-https://id.magalu.com/oauth/token}
else
	api_base="http://127.0.0.1:$MOCK_PORT"
	token_url="http://127.0.0.1:$MOCK_PORT/oauth/token"
fi
# the socket lives in /tmp: a checkout's path may be too long for a socket
SOCKDIR=/tmp
psql_demo() { $RUN $PGBIN/psql -X -q -h $SOCKDIR -p $PGPORT -U postgres -d $DB "$@"; }
# show a query, then run it
show()
{
	printf '%s%s%s\n' "$dim" "$1" "$off"
	psql_demo -P pager=off -c "$1"
}
# start a program in the background (as postgres when root); check it answers
start_service()
{
	local name=$1 url=$2
	shift 2
	rm -f "$demo/$name.pid"
	# the program writes its own pid (runuser's would not pass signals on)
	$RUN sh -c 'echo $$ > "$0"; exec "$@"' "$demo/$name.pid" "$@" >"$demo/$name.log" 2>&1 &
	for _ in $(seq 20); do [ -s "$demo/$name.pid" ] && break; sleep 0.05; done
	for _ in $(seq 50); do
		curl -sf -o /dev/null "$url" && return 0
		kill -0 "$(cat "$demo/$name.pid")" 2>/dev/null || break
		sleep 0.1
	done
	echo "the $name did not start; its log ($demo/$name.log) says:"
	cat "$demo/$name.log"
	stop_all
	exit 1
}

say "Starting PostgreSQL in $demo (port $PGPORT) with sac_webhook preloaded"
if ! $reuse; then
	$RUN $PGBIN/initdb -D "$demo/pgdata" -A trust -U postgres >/dev/null || exit 1
	cat >> "$demo/pgdata/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$SOCKDIR'
EOF
	# create the database first, so that the worker finds it when it starts
	$RUN $PGBIN/pg_ctl -D "$demo/pgdata" -l "$demo/postgres.log" -w start >/dev/null ||
		{ echo "PostgreSQL did not start (is port $PGPORT taken? set SAC_DEMO_PGPORT)"; exit 1; }
	$RUN $PGBIN/createdb -h $SOCKDIR -p $PGPORT -U postgres $DB || exit 1
	psql_demo -v ON_ERROR_STOP=1 <<EOF || exit 1
CREATE EXTENSION sac_webhook;
CREATE ROLE sac_demo_receiver LOGIN IN ROLE sac_webhook_receiver;
EOF
	$RUN $PGBIN/pg_ctl -D "$demo/pgdata" -w stop >/dev/null || exit 1
	cat >> "$demo/pgdata/postgresql.conf" <<EOF
shared_preload_libraries = 'sac_webhook'
sac_webhook.database = '$DB'
sac_webhook.api_base_url = '$api_base'
sac_webhook.token_url = '$token_url'
EOF
fi
$RUN $PGBIN/pg_ctl -D "$demo/pgdata" -l "$demo/postgres.log" -w start >/dev/null ||
	{ echo "PostgreSQL did not start (is port $PGPORT taken? set SAC_DEMO_PGPORT)"; tail -5 "$demo/postgres.log"; exit 1; }

tenant=${SAC_TENANT_ID:-3b5cf468-c858-404b-9e53-630e3df9d74a}
if ! $real_api; then
	say "Starting the mock Magalu API on 127.0.0.1:$MOCK_PORT"
	start_service mock "http://127.0.0.1:$MOCK_PORT/_mock/health" \
		$PGBIN/sac_webhook_mock_api --listen 127.0.0.1:$MOCK_PORT --quiet \
		--client demo-client:demo-secret --refresh-token demo-refresh-token
	client_id=demo-client; client_secret=demo-secret; refresh_token=demo-refresh-token
else
	client_id=$SAC_CLIENT_ID; client_secret=$SAC_CLIENT_SECRET; refresh_token=$SAC_REFRESH_TOKEN
fi

if ! $reuse; then
	say "Registering the seller (tenant) with its OAuth credentials"
	printf '%sINSERT INTO sac_webhook.tenants (tenant_id, name, client_id, client_secret, refresh_token) VALUES (...);%s\n' "$dim" "$off"
	psql_demo -v ON_ERROR_STOP=1 -v tenant="$tenant" -v cid="$client_id" -v csec="$client_secret" -v rt="$refresh_token" <<'EOF' || exit 1
INSERT INTO sac_webhook.tenants (tenant_id, name, client_id, client_secret, refresh_token)
VALUES (:'tenant', 'demo seller', :'cid', :'csec', :'rt');
EOF
	echo "(no access token yet: the worker gets one with the refresh token)"
fi

say "Starting the receiver on 127.0.0.1:$RECEIVER_PORT"
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$secret" > "$demo/receiver.secret"
chmod 600 "$demo/receiver.secret"
[ -n "$RUN" ] && chown postgres: "$demo/receiver.secret"
start_service receiver "http://127.0.0.1:$RECEIVER_PORT/healthz" \
	$PGBIN/sac_webhook_receiver --listen 127.0.0.1:$RECEIVER_PORT --secret-file "$demo/receiver.secret" \
	--db "host=$SOCKDIR port=$PGPORT dbname=$DB user=sac_demo_receiver"
webhook_url="http://127.0.0.1:$RECEIVER_PORT/webhooks/$secret"

if $real_api; then
	say "Ready for Magalu's notifications"
	cat <<EOF
Register this URL (behind your TLS proxy) as the webhook of your application:
  $webhook_url
Watch the rows arrive:
  psql -h $SOCKDIR -p $PGPORT -U postgres $DB -c 'SELECT * FROM sac_webhook.stats'
Ctrl-C stops everything.
EOF
	while true; do sleep 3600; done
fi

ticket=80b31c59-6d31-4d93-982a-7a6f51e335f5
message=3b5444b9-6fbb-40fd-b800-6c24176fb5ea
mock_put() { curl -sf -o /dev/null -X PUT --data-binary "$2" "http://127.0.0.1:$MOCK_PORT/_mock$1"; }
mock_delete() { curl -sf -o /dev/null -X DELETE "http://127.0.0.1:$MOCK_PORT/_mock$1"; }
ticket_doc()
{
	cat <<EOF
{"created_at": "2024-08-07T13:42:45", "updated_at": "$1", "id": "$ticket",
 "code": "f148ae87-0ce9-435b-94a4-6aa572f0569a", "type": "payment",
 "order": {"id": "bcc662e8-527b-410f-87a5-bbc8f5e623da", "code": "1281270182459143",
   "delivery": {"id": "96061b77-b065-4cd8-9e41-b097bf95c173",
     "seller": {"id": "c85be697-7b14-4460-a5c7-3e58b4a364f9", "name": "SellerName"},
     "items": [{"id": "63c54b4a-ea19-4c52-90a8-bd38cd1a3157", "sku": "livro-01", "name": "A Bela e a Fera em 3D", "quantity": 1}]}},
 "channel": {"id": "3f042852-3efc-4d47-97f8-f94989c7b0bc"},
 "status": "$2", "closed": $3, "reason": $4,
 "protocol": "202301000001123", "due_date": "2024-08-09T13:42:46", "origin": "customer"}
EOF
}
post()
{
	local body=$1
	printf '%scurl -X POST %s -d %s%s\n' "$dim" "http://127.0.0.1:$RECEIVER_PORT/webhooks/***" "'$body'" "$off"
	curl -sS -X POST -H 'Content-Type: application/json' --data-binary "$body" "$webhook_url"
	echo
}
wait_for() { for _ in $(seq 100); do [ "$(psql_demo -At -c "$1")" = t ] && return 0; sleep 0.1; done; echo "(still waiting: $1)"; }
note()
{
	if [ "$2" = sac_ticket ]; then
		echo "{\"data\": {\"status\": \"$1\", \"params\": {\"id\": \"$ticket\"}, \"resource\": \"/v0/tickets/$ticket\"}, \"tenant_id\": \"$tenant\", \"topic\": \"sac_ticket\"}"
	else
		echo "{\"data\": {\"status\": \"$1\", \"params\": {\"ticket_id\": \"$ticket\", \"id\": \"$message\"}, \"resource\": \"/v0/tickets/$ticket/messages/$message\"}, \"tenant_id\": \"$tenant\", \"topic\": \"sac_message\"}"
	fi
}
TICKETS="SELECT id, status, type, closed, reason, updated_at FROM sac_webhook.tickets;"
MESSAGES="SELECT id, ticket_id, status, left(message, 40) AS message FROM sac_webhook.messages;"

say "1. A customer opens a ticket: Magalu notifies a CREATION"
mock_put "/v0/tickets/$ticket" "$(ticket_doc 2024-08-07T13:42:46 waiting false null)"
post "$(note CREATION sac_ticket)"
wait_for "SELECT count(*) = 1 FROM sac_webhook.tickets"
show "$TICKETS"

say "2. The ticket is closed: an UPDATE; the worker fetches the new state"
mock_put "/v0/tickets/$ticket" "$(ticket_doc 2024-08-08T09:00:00 closed true '"change_of_mind"')"
post "$(note UPDATE sac_ticket)"
wait_for "SELECT status = 'closed' FROM sac_webhook.tickets"
show "$TICKETS"

say "3. The seller answers: a message on the ticket"
mock_put "/v0/tickets/$ticket/messages/$message" "{\"id\": \"$message\", \"message\": \"The product will be delivered next week.\", \"code\": \"msg-2\", \"ticket\": {\"id\": \"$ticket\"}, \"sender\": {\"id\": \"sellerId\", \"name\": \"SellerName\", \"type\": \"seller\"}, \"moderation\": {\"id\": null, \"status\": \"approved\", \"block_rules\": [], \"updated_at\": \"2024-08-07T14:21:58.024000\"}, \"attachments\": [], \"destination\": \"customer\", \"created_at\": \"2024-08-09T13:30:38.609142Z\"}"
post "$(note CREATION sac_message)"
wait_for "SELECT count(*) = 1 FROM sac_webhook.messages"
show "$MESSAGES"

say "4. A forged or early DELETION: the API still has the ticket, so nothing is deleted"
post "$(note DELETION sac_ticket)"
wait_for "SELECT count(*) = 0 FROM sac_webhook.inbox WHERE state <> 'done'"
show "SELECT count(*) AS tickets FROM sac_webhook.tickets;"

say "5. The ticket is removed upstream: the DELETION is confirmed and applied, messages included"
mock_delete "/v0/tickets/$ticket"
post "$(note DELETION sac_ticket)"
wait_for "SELECT count(*) = 0 FROM sac_webhook.tickets"
show "$TICKETS"
show "$MESSAGES"

say "6. What the inbox and the monitoring view say"
show "SELECT id, topic, status, state, notifications, attempts, last_http_status FROM sac_webhook.inbox ORDER BY id;"
show "SELECT pending, retrying, done, dead, fetches, applied, deleted, token_refreshes FROM sac_webhook.stats;"

say "7. A bad payload is refused with the database's reason, and nothing is stored"
post '{"topic": "sac_ticket", "tenant_id": "x"}'

cat <<EOF

${bold}Running:${off}
  PostgreSQL  psql -h $SOCKDIR -p $PGPORT -U postgres $DB
  receiver    POST $webhook_url      (log: $demo/receiver.log)
  mock API    http://127.0.0.1:$MOCK_PORT   (the worker fetches from it)
Stop everything: Ctrl-C here, or scripts/demo.sh stop
Use the real API: set SAC_TENANT_ID, SAC_CLIENT_ID, SAC_CLIENT_SECRET and
SAC_REFRESH_TOKEN (optionally SAC_API_BASE_URL, SAC_TOKEN_URL) and run again.
EOF

if [ -t 0 ] && [ -z "${CI:-}" ]; then
	echo "Ctrl-C to stop."
	while true; do sleep 3600; done
fi
stop_all
echo "demo finished; everything it started is stopped"
