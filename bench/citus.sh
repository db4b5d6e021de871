#!/bin/bash
# bench/citus.sh -- the background worker draining into Citus distributed
# tables, against the same drain into plain tables, in the same run, on the
# same server, with the same mock API.
#
#  1. a server with Citus (shared_preload_libraries = 'citus, sac_webhook'),
#     the coordinator holding shards; with NODES=3, two more clusters on
#     loopback join as worker nodes (all three hold shards).  N_TENANTS (8)
#     tenants, the mock API with --auto.
#  2. plain: sac_webhook.tickets is a plain table.  N_DRAIN (50,000; QUICK=1:
#     10,000) ticket notifications, spread over the tenants, are stored while
#     the tenants are disabled; then, in one transaction, the tenants are
#     enabled and one more notification received (its commit wakes the
#     workers).  The drain lasts from that commit to the commit of the last
#     row marked done (commit timestamps).
#  3. the tables are emptied and distributed by tenant_id
#     (sac_webhook.distribute_tables(), SHARD_COUNT shards, default Citus's
#     citus.shard_count); the same drain again, with fresh ids.
#  4. the ratio distributed / plain; after each drain the stored rows are
#     checked (every ticket drained is there, once).  With REPEAT (2;
#     QUICK=1: 1), each drain is run that many times, all the plain ones
#     first (Citus cannot turn an extension's table back into a plain one);
#     the figures are the medians.
#
# The workers run with the extension's defaults (2 workers, batch_size 500,
# max_in_flight 256 over all) unless WORKERS / BATCH_SIZE say otherwise.  Needs Citus
# for this PostgreSQL (scripts/install-citus.sh).  Target: >= 0.5.

source "$(dirname "$0")/lib.sh"
bench_begin citus

N_DRAIN=${N_DRAIN:-$(size 50000 10000)}
N_TENANTS=${N_TENANTS:-8}
NODES=${NODES:-1}
SHARD_COUNT=${SHARD_COUNT:-}
REPEAT=${REPEAT:-$(size 2 1)}
WORKERS=${WORKERS:-2}
BATCH_SIZE=${BATCH_SIZE:-}
MOCK_THREADS=${MOCK_THREADS:-2}
DRAIN_TIMEOUT=600 # seconds; a drain that takes longer fails the benchmark

PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
[ -f "$PKGLIBDIR/citus.so" ] ||
	die "Citus is not installed for this PostgreSQL ($PKGLIBDIR/citus.so): run scripts/install-citus.sh"
[ "$NODES" = 1 ] || [ "$NODES" = 3 ] || die "NODES must be 1 or 3"

# --- worker nodes (NODES=3), stopped at exit ------------------------------------
EXTRA_NODES=()
stop_extra_nodes()
{
	local d
	for d in "${EXTRA_NODES[@]}"; do
		[ -f "$d/postmaster.pid" ] &&
			runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
	done
	return 0
}
citus_exit()
{
	local rc=$?
	set +e
	stop_extra_nodes
	(exit "$rc")
	bench_cleanup
}
trap citus_exit EXIT

# start_node NAME: a cluster in $WORK/NAME with Citus, on a loopback port; sets NODE_PORT
start_node()
{
	local dir=$WORK/$1
	NODE_PORT=$(free_port)
	runuser -u postgres -- "$PGBIN/initdb" -D "$dir" -A trust -E UTF8 --locale=C.UTF-8 \
		>"$WORK/initdb_$1.log" 2>&1 || die "initdb of $1 failed"
	cat >>"$dir/postgresql.conf" <<-EOF
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$WORK'
		port = $NODE_PORT
		max_connections = 120
		shared_buffers = 128MB
		fsync = on
		synchronous_commit = on
		max_wal_size = 8GB
		checkpoint_timeout = 30min
		jit = off
		log_min_messages = warning
		shared_preload_libraries = 'citus'
	EOF
	EXTRA_NODES+=("$dir")
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir" -l "$WORK/$1.log" -w -t 60 start >/dev/null ||
		die "$1 did not start (see $WORK/$1.log)"
	psql -X -q -p "$NODE_PORT" -c 'CREATE EXTENSION citus' >/dev/null
}

# --- the mock API -------------------------------------------------------------
MOCK_PORT=$(free_port)
MOCK_URL=http://127.0.0.1:$MOCK_PORT
start_bg mock "$PGBIN/sac_webhook_mock_api" --listen "127.0.0.1:$MOCK_PORT" --auto --quiet \
	--access-token "$MOCK_TOKEN" --threads "$MOCK_THREADS"
wait_http "$MOCK_URL/_mock/health"

# --- the coordinator ------------------------------------------------------------
pg_start "listen_addresses = '127.0.0.1'
shared_preload_libraries = 'citus, sac_webhook'
sac_webhook.workers = $WORKERS
$([ -n "$BATCH_SIZE" ] && echo "sac_webhook.batch_size = $BATCH_SIZE")
sac_webhook.api_base_url = '$MOCK_URL'
sac_webhook.token_url = '$MOCK_URL/oauth/token'
sac_webhook.done_retention = '30d'"
q -c 'CREATE EXTENSION citus' >/dev/null
q -c "SELECT citus_set_coordinator_host('127.0.0.1', $PGPORT)" \
  -c "SELECT citus_set_node_property('127.0.0.1', $PGPORT, 'shouldhaveshards', true)" >/dev/null
if [ "$NODES" = 3 ]; then
	for n in worker1 worker2; do
		start_node "$n"
		q -c "SELECT citus_add_node('127.0.0.1', $NODE_PORT)" >/dev/null
	done
fi
log "Citus $(q -c "SELECT extversion FROM pg_extension WHERE extname = 'citus'"), $NODES node(s) holding shards"

q <<-EOF
	-- a ticket notification for a tenant
	CREATE FUNCTION bench.ticket_for(tenant uuid, t uuid) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT AS \$\$
		SELECT format('{"data": {"status": "CREATION", "params": {"id": "%s"}, "resource": "/v0/tickets/%s"}, '
		              '"tenant_id": "%s", "topic": "sac_ticket"}', t, t, tenant)
	\$\$;
	CREATE TABLE bench.tenant_list AS
	SELECT row_number() OVER () - 1 AS k, gen_random_uuid() AS tenant_id FROM generate_series(1, $N_TENANTS);
	INSERT INTO sac_webhook.tenants (tenant_id, client_id, client_secret, access_token, refresh_token,
	                                 token_expires_at, enabled)
	SELECT tenant_id, 'demo-client', 'demo-secret', '$MOCK_TOKEN', 'unused', now() + interval '7 days', false
	  FROM bench.tenant_list;
EOF

waiting() { q -c "SELECT count(*) FROM sac_webhook.inbox WHERE state IN ('pending', 'retrying')"; }

# wait_drained: until nothing waits; dies when rows keep failing to apply,
# after DRAIN_TIMEOUT, or when a row is dead
wait_drained()
{
	local start=$SECONDS err dead
	while [ "$(waiting)" != 0 ]; do
		[ $((SECONDS - start)) -lt "$DRAIN_TIMEOUT" ] || die "the workers did not drain the inbox in ${DRAIN_TIMEOUT}s"
		err=$(q -c "SELECT last_error FROM sac_webhook.inbox
		             WHERE state = 'retrying' AND last_error LIKE 'could not apply%' LIMIT 1")
		[ -z "$err" ] || die "rows fail to apply: $err"
		sleep 0.5
	done
	dead=$(q -c "SELECT count(*) FROM sac_webhook.inbox WHERE state = 'dead'")
	[ "$dead" = 0 ] || die "$dead inbox rows are dead: $(q -c "SELECT last_error FROM sac_webhook.inbox WHERE state = 'dead' LIMIT 1")"
}

# store N ticket notifications (fresh ids, tenants in turn) in transactions of 10,000
store_tickets()
{
	local left=$1 n
	while [ "$left" -gt 0 ]; do
		n=$((left < 10000 ? left : 10000))
		q -c "SELECT count(sac_webhook.receive(bench.ticket_for(t.tenant_id, gen_random_uuid())))
		        FROM generate_series(1, $n) g JOIN bench.tenant_list t ON t.k = g % $N_TENANTS" >/dev/null
		left=$((left - n))
	done
}

# drain N: the timed drain (see the header); sets DRAIN_RATE and DRAIN_SECONDS
drain()
{
	local n=$1 first_id n_done stored
	q -c "UPDATE sac_webhook.tenants SET enabled = false" >/dev/null
	first_id=$(q -c "SELECT coalesce(max(id), 0) + 1 FROM sac_webhook.inbox")
	store_tickets "$n"
	q -c "VACUUM ANALYZE sac_webhook.inbox" -c "CHECKPOINT"
	q -c "BEGIN" -c "UPDATE sac_webhook.tenants SET enabled = true" \
	  -c "SELECT sac_webhook.receive(bench.ticket_for((SELECT tenant_id FROM bench.tenant_list WHERE k = 0), gen_random_uuid()))" \
	  -c "COMMIT" >/dev/null
	wait_drained
	DRAIN_SECONDS=$(q -c "SELECT extract(epoch FROM max(pg_xact_commit_timestamp(i.xmin))
	                                   - (SELECT min(pg_xact_commit_timestamp(t.xmin)) FROM sac_webhook.tenants t))
	                        FROM sac_webhook.inbox i WHERE i.id >= $first_id")
	n_done=$(q -c "SELECT count(*) FROM sac_webhook.inbox WHERE id >= $first_id AND state = 'done'")
	[ "$n_done" = $((n + 1)) ] || die "drain: $n_done rows done instead of $((n + 1))"
	stored=$(q -c "SELECT count(*) FROM sac_webhook.tickets")
	[ "$stored" = $((n + 1)) ] || die "drain: $stored tickets stored instead of $((n + 1))"
	DRAIN_RATE=$(calc "($n + 1) / $DRAIN_SECONDS")
}

distributed() { q -c "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'sac_webhook.tickets'::regclass"; }

distribute()
{
	if [ "$(q -c "SELECT to_regprocedure('sac_webhook.distribute_tables(integer)') IS NOT NULL")" = t ]; then
		q -c "SELECT sac_webhook.distribute_tables(${SHARD_COUNT:-NULL})" >/dev/null
	else
		log "no sac_webhook.distribute_tables(integer): calling create_distributed_table directly"
		q -c "SELECT create_distributed_table('sac_webhook.tickets', 'tenant_id'${SHARD_COUNT:+, shard_count => $SHARD_COUNT})" \
		  -c "SELECT create_distributed_table('sac_webhook.messages', 'tenant_id', colocate_with => 'sac_webhook.tickets')" >/dev/null
	fi
	[ "$(distributed)" = 1 ] || die "sac_webhook.tickets is not distributed"
}

empty_tables() { q -c "TRUNCATE sac_webhook.tickets, sac_webhook.messages" >/dev/null; }

# --- warm-up (plain tables) ------------------------------------------------------
q -c "UPDATE sac_webhook.tenants SET enabled = true" >/dev/null
store_tickets 1000
wait_drained
empty_tables
SETTINGS="workers=$(q -c "SHOW sac_webhook.workers") batch_size=$(q -c "SHOW sac_webhook.batch_size") max_in_flight=$(q -c "SHOW sac_webhook.max_in_flight")"

# --- plain, then distributed ------------------------------------------------------
PLAIN=()
DIST=()
for r in $(seq "$REPEAT"); do
	empty_tables
	log "drain $r of $REPEAT: $N_DRAIN notifications of $N_TENANTS tenants into plain tables ($SETTINGS)"
	drain "$N_DRAIN"
	PLAIN+=("$DRAIN_RATE")
	raw "plain tables, drain $r: $((N_DRAIN + 1)) events in $(fmt "$DRAIN_SECONDS" 2) s = $(fmt "$DRAIN_RATE") events/s"
done
empty_tables
distribute
shards=$(q -c "SELECT count(*) || ' shards on ' || count(DISTINCT p.groupid) || ' node(s)'
               FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)
              WHERE s.logicalrelid = 'sac_webhook.tickets'::regclass")
for r in $(seq "$REPEAT"); do
	empty_tables
	log "drain $r of $REPEAT: the same into distributed tables ($shards)"
	drain "$N_DRAIN"
	DIST+=("$DRAIN_RATE")
	raw "distributed tables ($shards), drain $r: $((N_DRAIN + 1)) events in $(fmt "$DRAIN_SECONDS" 2) s = $(fmt "$DRAIN_RATE") events/s"
	n_dup=$(q -c "SELECT count(*) - count(DISTINCT (tenant_id, id)) FROM sac_webhook.tickets")
	[ "$n_dup" = 0 ] || die "$n_dup tickets stored twice"
done

plain=$(median "${PLAIN[@]}")
dist=$(median "${DIST[@]}")
ratio=$(calc "$dist / $plain")
topology=$([ "$NODES" = 1 ] && echo "coordinator holding the shards" || echo "coordinator + 2 worker nodes")
result "worker drain into Citus tables ($topology)" \
	"$(thousands "$dist") events/s ($N_TENANTS tenants, $shards)" \
	"plain tables: $(thousands "$plain") events/s" \
	"$(fmt "$ratio" 3)" ">= 0.5" "$(yesno "$ratio >= 0.5")"
