#!/bin/bash
# bench/receive.sh -- rows/s of sac_webhook.receive() in one session, against
# a bare INSERT of the same columns into a copy of the inbox.
#
# N payloads of the benchmark mix (200,000; QUICK=1: 50,000), every one a
# distinct resource, are stored twice, by two plpgsql procedures of the same
# shape: a loop over the rows issuing one statement per row, COMMIT after
# every BATCH (1,000) rows, with synchronous_commit on:
#   receive  id := sac_webhook.receive(payload)      (parse + INSERT ... ON
#            CONFLICT into sac_webhook.inbox, coalescing, wake-up at commit)
#   bare     INSERT INTO bench.bare_inbox (the 6 columns) VALUES (...)
#            RETURNING id, with the values already parsed
# bench.bare_inbox is CREATE TABLE ... (LIKE sac_webhook.inbox INCLUDING ALL):
# the same columns, defaults, checks, identity and (partial) indexes.  Both
# tables are emptied and checkpointed before each run; the runs alternate,
# REPS each, and the figure is the median.  No background worker runs.
#
# Target: receive() at least 0.5 of the bare INSERT's rows/s.

source "$(dirname "$0")/lib.sh"
bench_begin receive

N=$(size 200000 50000)
BATCH=1000
REPS=$(size 3 2)

pg_start

log "generating $N payloads"
q <<-EOF
	CREATE TABLE bench.recv AS
	SELECT n, bench.payload(floor(random() * 100)::integer, gen_random_uuid(), gen_random_uuid()) AS p
	  FROM generate_series(1, $N) n;
	ALTER TABLE bench.recv ADD PRIMARY KEY (n);
	-- the same notifications, parsed in advance, for the bare INSERT
	CREATE TABLE bench.recv_cols AS
	SELECT n, r.tenant_id, r.topic, r.status, r.resource, r.ticket_id, r.message_id
	  FROM bench.recv, LATERAL sac_webhook.parse(p) r;
	ALTER TABLE bench.recv_cols ADD PRIMARY KEY (n);
	CREATE TABLE bench.bare_inbox (LIKE sac_webhook.inbox INCLUDING ALL);
	VACUUM ANALYZE bench.recv;
	VACUUM ANALYZE bench.recv_cols;

	CREATE PROCEDURE bench.run_receive(batch integer) LANGUAGE plpgsql AS \$\$
	DECLARE
		lo bigint := 1;
		hi bigint := (SELECT max(n) FROM bench.recv);
		r record;
		id bigint;
	BEGIN
		WHILE lo <= hi LOOP
			FOR r IN SELECT p FROM bench.recv WHERE n >= lo AND n < lo + batch ORDER BY n LOOP
				id := sac_webhook.receive(r.p);
			END LOOP;
			COMMIT;
			lo := lo + batch;
		END LOOP;
	END
	\$\$;

	CREATE PROCEDURE bench.run_bare(batch integer) LANGUAGE plpgsql AS \$\$
	DECLARE
		lo bigint := 1;
		hi bigint := (SELECT max(n) FROM bench.recv_cols);
		r record;
		id bigint;
	BEGIN
		WHILE lo <= hi LOOP
			FOR r IN SELECT * FROM bench.recv_cols WHERE n >= lo AND n < lo + batch ORDER BY n LOOP
				INSERT INTO bench.bare_inbox (tenant_id, topic, status, resource, ticket_id, message_id)
				VALUES (r.tenant_id, r.topic, r.status, r.resource, r.ticket_id, r.message_id)
				RETURNING bare_inbox.id INTO id;
			END LOOP;
			COMMIT;
			lo := lo + batch;
		END LOOP;
	END
	\$\$;
EOF

# run_once PROCEDURE TABLE: empty both tables, checkpoint, run; prints
# "seconds wal_bytes" and checks that every row arrived.
run_once()
{
	local t0 t1 lsn0 lsn1 rows
	q -c "TRUNCATE sac_webhook.inbox, bench.bare_inbox RESTART IDENTITY" -c "CHECKPOINT"
	lsn0=$(q -c "SELECT pg_current_wal_insert_lsn()")
	t0=$(date +%s%N)
	q -c "CALL bench.$1($BATCH)"
	t1=$(date +%s%N)
	lsn1=$(q -c "SELECT pg_current_wal_insert_lsn() - '$lsn0'::pg_lsn")
	rows=$(q -c "SELECT count(*) FROM $2")
	[ "$rows" = "$N" ] || die "$1 stored $rows rows instead of $N"
	echo "$(calc "($t1 - $t0) / 1e9") $lsn1"
}

rec_rates=() bare_rates=() rec_wal=0 bare_wal=0
for i in $(seq "$REPS"); do
	read -r s w < <(run_once run_receive sac_webhook.inbox)
	rec_rates+=("$(fmt "$(calc "$N / $s")")")
	rec_wal=$w
	read -r s w < <(run_once run_bare bench.bare_inbox)
	bare_rates+=("$(fmt "$(calc "$N / $s")")")
	bare_wal=$w
	log "run $i: receive ${rec_rates[-1]} rows/s, bare INSERT ${bare_rates[-1]} rows/s"
done
rec=$(median "${rec_rates[@]}")
bare=$(median "${bare_rates[@]}")
ratio=$(calc "$rec / $bare")

raw "receive() rows/s per run ($N rows, COMMIT every $BATCH): ${rec_rates[*]} (median $rec)"
raw "bare INSERT rows/s per run: ${bare_rates[*]} (median $bare)"
raw "WAL per row: receive $(calc "$rec_wal / $N") B, bare INSERT $(calc "$bare_wal / $N") B (last run)"
raw "per row: receive $(fmt "$(calc "1e6 / $rec")" 1) us, bare INSERT $(fmt "$(calc "1e6 / $bare")" 1) us"

result "receive(): rows/s, one session" \
	"$(thousands "$rec") rows/s" \
	"bare INSERT: $(thousands "$bare") rows/s" \
	"$(fmt "$ratio" 2)" ">= 0.5" "$(yesno "$ratio >= 0.5")"
