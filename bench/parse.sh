#!/bin/bash
# bench/parse.sh -- sac_webhook.parse(text) in C against the same validation
# written in plain SQL (bench/sql/parse.sql).
#
# Both run over the same table of N payloads (1,000,000; QUICK=1: 200,000)
# of the benchmark mix (bench/sql/common.sql), all valid, in one session,
# without parallel workers, as
#     SELECT count(r.ticket_id) FROM bench.payloads, LATERAL f(p) r
# alternating C and SQL, REPS times each; the figure is the median.  A plain
# scan of the table (count(length(p))) is timed too: it is part of both
# figures, so the ratio of the totals understates the C parser's lead.
#
# Target: the C parser at least 3x as fast as the SQL one.

source "$(dirname "$0")/lib.sh"
bench_begin parse

N=$(size 1000000 200000)
REPS=$(size 3 3)

pg_start
q -f "$BENCH_DIR/sql/parse.sql" >/dev/null

log "generating $N payloads"
q <<-EOF
	CREATE TABLE bench.payloads AS
	SELECT n, bench.payload(floor(random() * 100)::integer, gen_random_uuid(), gen_random_uuid()) AS p
	  FROM generate_series(1, $N) n;
	VACUUM ANALYZE bench.payloads;
EOF

# Same rows from both functions (on a sample), and the SQL one is inlined.
same=$(q -c "SELECT count(*) FILTER (WHERE c IS NOT DISTINCT FROM s)
               FROM (SELECT p FROM bench.payloads LIMIT 20000) x,
                    LATERAL sac_webhook.parse(p) c, LATERAL bench.sql_parse(p) s")
[ "$same" = 20000 ] || die "C and SQL parsers disagree on $((20000 - same)) of 20000 payloads"
if q -c "EXPLAIN SELECT count(r.ticket_id) FROM bench.payloads, LATERAL bench.sql_parse(p) r" |
	grep -q 'Function Scan on sql_parse'; then
	die "bench.sql_parse was not inlined: the baseline would be needlessly slow"
fi
kinds=$(q -c "SELECT string_agg(k || '=' || c, ' ' ORDER BY k) FROM (
               SELECT r.topic || '/' || r.status AS k, count(*) AS c
                 FROM bench.payloads, LATERAL sac_webhook.parse(p) r GROUP BY 1) x")
raw "payload mix over $N rows: $kinds"

# time_ms QUERY: milliseconds of one run, in a session without parallelism
time_ms()
{
	q -c "SET max_parallel_workers_per_gather = 0" \
	  -c "SELECT round(bench.time_ms(\$q\$$1\$q\$)::numeric, 1)" | tail -n 1
}

C_Q='SELECT count(r.ticket_id) FROM bench.payloads, LATERAL sac_webhook.parse(p) r'
SQL_Q='SELECT count(r.ticket_id) FROM bench.payloads, LATERAL bench.sql_parse(p) r'
SCAN_Q='SELECT count(length(p)) FROM bench.payloads'

time_ms "$SCAN_Q" >/dev/null # warm the cache
c_runs=() sql_runs=() scan_runs=()
for i in $(seq "$REPS"); do
	scan_runs+=("$(time_ms "$SCAN_Q")")
	c_runs+=("$(time_ms "$C_Q")")
	sql_runs+=("$(time_ms "$SQL_Q")")
	log "run $i: scan ${scan_runs[-1]} ms, C ${c_runs[-1]} ms, SQL ${sql_runs[-1]} ms"
done
c_ms=$(median "${c_runs[@]}")
sql_ms=$(median "${sql_runs[@]}")
scan_ms=$(median "${scan_runs[@]}")
ratio=$(calc "$sql_ms / $c_ms")
net_ratio=$(calc "($sql_ms - $scan_ms) / ($c_ms - $scan_ms)")

raw "C parse ms per run over $N rows: ${c_runs[*]} (median $c_ms)"
raw "SQL parse ms per run over $N rows: ${sql_runs[*]} (median $sql_ms)"
raw "table scan alone ms per run: ${scan_runs[*]} (median $scan_ms); net of the scan the ratio is $(fmt "$net_ratio" 2)x"
raw "per payload: C $(fmt "$(calc "$c_ms * 1000 / $N")" 2) us, SQL $(fmt "$(calc "$sql_ms * 1000 / $N")" 2) us (scan included)"

result "parse: C vs plain SQL" \
	"$(thousands "$(calc "$N / $c_ms * 1000")") payloads/s ($(fmt "$(calc "$c_ms / 1000")" 2) s / $(thousands "$N"))" \
	"SQL: $(thousands "$(calc "$N / $sql_ms * 1000")") payloads/s ($(fmt "$(calc "$sql_ms / 1000")" 2) s)" \
	"$(fmt "$ratio" 2)x" ">= 3x" "$(yesno "$ratio >= 3")"
