# bench/lib.sh -- helpers shared by the sac_webhook benchmarks (sourced, not run).
#
# Every benchmark script sources this file and then calls
#
#   bench_begin NAME   temporary directory, exit trap, result files
#   pg_start [CONF]    a throw-away PostgreSQL 15 cluster in that directory
#   start_bg NAME CMD  a background process that the exit trap stops
#   result ...         one row of the final table
#   raw ...            one line of raw numbers behind a row
#
# When run.sh drives the scripts it sets BENCH_RESULTS and BENCH_RAW, and the
# rows are collected there; a script run alone prints its own rows at the end.
#
# Everything runs as root: PostgreSQL itself runs as the postgres user (it
# refuses root), clients connect over the cluster's Unix socket with trust
# authentication.  Nothing is left behind: the exit trap stops every process
# that a script started (by pid) and removes the temporary directory.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$BENCH_DIR")
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
QUICK=${QUICK:-0}
# the tenant every benchmark payload belongs to
TENANT=3b5cf468-c858-404b-9e53-630e3df9d74a
# the access token the mock API accepts
MOCK_TOKEN=bench-token
CLK_TCK=$(getconf CLK_TCK)

export PATH="$PGBIN:$PATH"

# Pick the full size or, with QUICK=1, the smoke-run size.
size() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; }

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$BENCH_NAME" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Lifetime: temporary directory, background processes, exit trap
# ---------------------------------------------------------------------------
BENCH_NAME=bench
WORK=
PGDATA=
BG_PIDS=()
BG_NAMES=()
OWN_RESULTS=0

bench_begin()
{
	BENCH_NAME=$1
	[ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL runs as the postgres user)"
	id postgres >/dev/null 2>&1 || die "no postgres user: install postgresql-15"
	[ -x "$PGBIN/postgres" ] || die "PostgreSQL 15 not found in $PGBIN"
	[ -f "$("$PG_CONFIG" --pkglibdir)/sac_webhook.so" ] ||
		die "sac_webhook is not installed: run 'make install' at the top of the repository"
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/sac_bench.$BENCH_NAME.XXXXXX")
	chmod 755 "$WORK"
	chown postgres: "$WORK"
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
	if [ -z "${BENCH_RESULTS:-}" ]; then
		OWN_RESULTS=1
		BENCH_RESULTS=$WORK/results.tsv
		BENCH_RAW=$WORK/raw.txt
		: >"$BENCH_RESULTS"
		: >"$BENCH_RAW"
	fi
}

# Start a background process and remember its pid: start_bg NAME CMD...
# Its output goes to $WORK/NAME.log.  Sets BG_PID.
start_bg()
{
	local name=$1
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	BG_PID=$!
	BG_PIDS+=("$BG_PID")
	BG_NAMES+=("$name")
}

# Stop one background process started by start_bg: TERM, then KILL after 5 s.
stop_pid()
{
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

bench_cleanup()
{
	local rc=$? i
	trap - EXIT INT TERM
	set +e
	for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${BG_PIDS[$i]}"
	done
	if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
		runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -t 30 stop >/dev/null 2>&1 ||
			runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
	fi
	if [ "$rc" -ne 0 ] && [ -n "$WORK" ]; then
		# show what the servers said before their logs go away
		for f in "$WORK"/*.log; do
			[ -s "$f" ] || continue
			echo "--- tail of $(basename "$f")" >&2
			tail -n 15 "$f" >&2
		done
	fi
	if [ "$OWN_RESULTS" = 1 ] && [ -s "$BENCH_RESULTS" ]; then
		print_table "$BENCH_RESULTS"
		echo
		cat "$BENCH_RAW"
	fi
	[ -n "$WORK" ] && rm -rf "$WORK"
	exit "$rc"
}

# A free TCP port on the loopback interface.
free_port()
{
	perl -MIO::Socket::INET -e \
		'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0", ReuseAddr => 1)->sockport, "\n"'
}

# Wait until a URL answers (any HTTP status): wait_http URL
wait_http()
{
	local i
	for i in $(seq 100); do
		curl -s -o /dev/null --max-time 1 "$1" && return 0
		sleep 0.1
	done
	die "nothing answers at $1"
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

# pg_start [EXTRA_CONF_LINES]: init and start a cluster in $WORK/data with
# durable benchmark settings plus the given lines; creates the extension in
# the postgres database, and the bench schema (bench/sql/common.sql).
pg_start()
{
	PGDATA=$WORK/data
	PGPORT=$(free_port)
	export PGHOST=$WORK PGPORT PGUSER=postgres PGDATABASE=postgres
	runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -A trust -E UTF8 --locale=C.UTF-8 \
		>"$WORK/initdb.log" 2>&1 || die "initdb failed (see $WORK/initdb.log)"
	cat >>"$PGDATA/postgresql.conf" <<-EOF
		# --- sac_webhook benchmark settings ---
		listen_addresses = ''
		unix_socket_directories = '$WORK'
		port = $PGPORT
		max_connections = 120
		shared_buffers = 256MB
		work_mem = 16MB
		maintenance_work_mem = 256MB
		# durability is the point: every commit waits for its WAL flush
		fsync = on
		synchronous_commit = on
		full_page_writes = on
		wal_buffers = 16MB
		# no checkpoint in the middle of a measurement
		max_wal_size = 8GB
		checkpoint_timeout = 30min
		# exact commit times, for the end-to-end latency
		track_commit_timestamp = on
		jit = off
		log_min_messages = warning
		log_checkpoints = off
		shared_preload_libraries = 'sac_webhook'
		sac_webhook.database = 'postgres'
		sac_webhook.workers = 0
		# the benchmarks measure notifications (bench/sync.sh the syncs), and
		# the mock serves what a DELETION names: no re-checks to wait for
		sac_webhook.onboarding_sync = off
		sac_webhook.resync_interval = 0
		sac_webhook.deletion_rechecks = 0
		${1:-}
	EOF
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w -t 60 start \
		>/dev/null || die "PostgreSQL did not start (see $WORK/postgres.log)"
	psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION sac_webhook' \
		-v tenant="$TENANT" -f "$BENCH_DIR/sql/common.sql" >/dev/null
}

# q SQL...: run SQL, print the rows unaligned, stop on the first error.
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# pid of the postmaster
postmaster_pid() { head -n 1 "$PGDATA/postmaster.pid"; }

# ---------------------------------------------------------------------------
# Processes: CPU time and memory
# ---------------------------------------------------------------------------

# CPU seconds (user + system) used so far by the given pids, summed.
cpu_seconds()
{
	local pid total=0 t
	for pid in "$@"; do
		t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
		total=$((total + t))
	done
	awk -v t="$total" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'
}

# pids of the postmaster's children, except those given
pg_children_except()
{
	local pp c skip x
	pp=$(postmaster_pid)
	for c in $(cat "/proc/$pp/task/$pp/children" 2>/dev/null); do
		skip=0
		for x in "$@"; do [ "$c" = "$x" ] && skip=1; done
		[ "$skip" = 0 ] && echo "$c"
	done
}

# kB of a /proc/PID/status field: status_kb PID VmRSS
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# Busy share of both cores since the last call of cpu_busy_mark, in percent.
cpu_busy_mark() { CPU_MARK=$(awk '$1 == "cpu" { print $2+$3+$4+$7+$8, $5+$6 }' /proc/stat); }
cpu_busy_since()
{
	local now
	now=$(awk '$1 == "cpu" { print $2+$3+$4+$7+$8, $5+$6 }' /proc/stat)
	awk -v a="$CPU_MARK" -v b="$now" 'BEGIN {
		split(a, x, " "); split(b, y, " ");
		busy = y[1] - x[1]; idle = y[2] - x[2];
		total = busy + idle;
		printf "%.0f", (total > 0 ? 100 * busy / total : 0) }'
}

# ---------------------------------------------------------------------------
# Arithmetic and results
# ---------------------------------------------------------------------------

# calc EXPR: floating-point arithmetic through awk, e.g. calc "3 / 2"
calc() { awk "BEGIN { printf \"%.6g\", $* }"; }
# fmt N DIGITS: a number with the given decimals
fmt() { awk -v n="$1" -v d="${2:-0}" 'BEGIN { printf "%.*f", d, n }'; }
# thousands N: an integer with thin separators (12,345)
thousands() { awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); r = "";
	while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
	print s r }'; }
# yesno CONDITION: "yes" when the awk condition holds
yesno() { awk "BEGIN { print (($*) ? \"yes\" : \"no\") }"; }
# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
	print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# result BENCHMARK FIGURE BASELINE RATIO TARGET MET
result()
{
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$BENCH_RESULTS"
	log "$1: $2 | baseline $3 | ratio $4 | target $5 | met: $6"
}

# raw TEXT: a line of raw numbers, kept with the results
raw()
{
	printf '%s: %s\n' "$BENCH_NAME" "$*" >>"$BENCH_RAW"
	log "raw: $*"
}

# print_table FILE: the rows as an aligned text table
print_table()
{
	{
		printf 'benchmark\tfigure\tbaseline (same run)\tratio\ttarget\tmet?\n'
		cat "$1"
	} | awk -F'\t' '
		{ for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; nf = NF }
		END {
			for (r = 1; r <= n; r++) {
				line = "";
				for (i = 1; i <= nf; i++) line = line sprintf("%-*s", w[i], c[r, i]) (i < nf ? " | " : "");
				print line;
				if (r == 1) { sep = ""; for (i = 1; i <= nf; i++) { s = ""; for (k = 0; k < w[i]; k++) s = s "-"; sep = sep s (i < nf ? "-+-" : "") } print sep }
			}
		}'
}

# markdown_table FILE: the rows as a markdown table
markdown_table()
{
	printf '| benchmark | figure | baseline (same run) | ratio | target | met? |\n'
	printf '|---|---|---|---|---|---|\n'
	awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$1"
}
