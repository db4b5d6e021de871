#!/bin/bash
# bench/run.sh -- run every sac_webhook benchmark and print one table.
#
#   bench/run.sh                  all of them (about 10 minutes on 2 cores)
#   QUICK=1 bench/run.sh          smaller sizes: a smoke run (about 2 minutes)
#   bench/run.sh parse receiver   only the named ones (then results.md is not written)
#
# Run as root from a checkout: it installs what it needs (the build's
# packages, and wrk, Node.js and npm for the baselines), builds and installs
# the extension, then runs the benchmarks.  Each benchmark is a script
# beside this one (parse.sh, receive.sh, worker.sh, remote.sh, receiver.sh,
# sync.sh, citus.sh) that sets up its own temporary cluster and servers and
# stops them at exit; see README.md in this folder.  A full run writes the table,
# the raw numbers behind it, the date and the command to bench/results.md.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$BENCH_DIR/lib.sh"
BENCH_NAME=run

[ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL runs as the postgres user)"
log "installing what the benchmarks need, building and installing sac_webhook"
extra=""
command -v wrk >/dev/null || extra="$extra wrk"
command -v node >/dev/null || extra="$extra nodejs"
command -v npm >/dev/null || extra="$extra npm"
# shellcheck disable=SC2086
"$TOP/scripts/install-deps.sh" $extra || die "could not install the packages"
make -s -C "$TOP" -j2 PG_CONFIG="$PG_CONFIG" >/dev/null && make -s -C "$TOP" install PG_CONFIG="$PG_CONFIG" >/dev/null ||
	die "could not build and install sac_webhook"

ALL=(parse receive worker remote receiver sync)
# the scale-out figure where Citus is installed (scripts/install-citus.sh)
[ -f "$(/usr/lib/postgresql/15/bin/pg_config --pkglibdir)/citus.so" ] && ALL+=(citus)
if [ $# -gt 0 ]; then
	SELECTED=("$@")
	for b in "${SELECTED[@]}"; do
		[ -x "$BENCH_DIR/$b.sh" ] || die "no benchmark named '$b' (choose among: ${ALL[*]})"
	done
else
	SELECTED=("${ALL[@]}")
fi

COMMAND="bench/run.sh${*:+ $*}"
[ "$QUICK" = 1 ] && COMMAND="QUICK=1 $COMMAND"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/sac_bench.run.XXXXXX")
CHILD=
trap 'rm -rf "$OUT"' EXIT
# pass an interruption on to the benchmark under way, whose own exit trap
# stops its servers, and wait for it
trap '[ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD"; exit 130' INT TERM
export BENCH_RESULTS=$OUT/results.tsv BENCH_RAW=$OUT/raw.txt QUICK
: >"$BENCH_RESULTS"
: >"$BENCH_RAW"

started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
t0=$SECONDS
failed=()
for b in "${SELECTED[@]}"; do
	log "=== $b"
	"$BENCH_DIR/$b.sh" &
	CHILD=$!
	if ! wait "$CHILD"; then
		failed+=("$b")
		printf '%s\tFAILED (see its output above)\t-\t-\t-\tno\n' "$b" >>"$BENCH_RESULTS"
	fi
	CHILD=
done
elapsed=$((SECONDS - t0))

echo
echo "sac_webhook benchmarks -- $started -- $COMMAND -- $((elapsed / 60)) min $((elapsed % 60)) s"
echo "(ratio = figure / baseline, both measured in this run; see bench/README.md)"
echo
print_table "$BENCH_RESULTS"
echo
echo "Raw numbers:"
sed 's/^/  /' "$BENCH_RAW"

if [ $# -eq 0 ]; then
	{
		echo "# sac_webhook benchmark results"
		echo
		echo "- Date: $started"
		echo "- Command: \`$COMMAND\` (as root, from the top of the repository, after \`make install\`)"
		echo "- Duration: $((elapsed / 60)) min $((elapsed % 60)) s"
		echo "- Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
		echo "- PostgreSQL: $("$PGBIN/postgres" --version | sed 's/^postgres (PostgreSQL) //'), synchronous_commit on, shared_buffers 256MB"
		if [ "$QUICK" = 1 ]; then
			echo "- QUICK=1: reduced sizes, a smoke run; do not quote these figures"
		fi
		echo
		echo "Every ratio is the figure divided by a baseline measured in the same run, on the same"
		echo "(shared, noisy) machine; bench/README.md says what each row measures."
		echo
		markdown_table "$BENCH_RESULTS"
		echo
		echo "## Raw numbers"
		echo
		echo '```'
		cat "$BENCH_RAW"
		echo '```'
	} >"$BENCH_DIR/results.md"
	echo
	echo "Written to bench/results.md"
fi

[ ${#failed[@]} -eq 0 ] || die "failed: ${failed[*]}"
