#!/bin/bash
# test.sh: build, install and run every test suite of sac_webhook, then print
# one summary line.
#
#   pg_regress  sql/*.sql against expected/*.out (SQL surface, process() against the mock API)
#   isolation   specs/*.spec (concurrent receipts and claims)
#   TAP         t/*.pl (the background worker, crashes and restarts, the HTTP receiver)
#
# Works as root on a fresh Debian 12 machine (the tests then run as the
# postgres user, since PostgreSQL refuses to run as root) or as a user with
# sudo.  Extra compiler flags: COPT="-Werror" scripts/test.sh
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

scripts/install-deps.sh || exit 1

SUDO=""
RUN=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

echo "== build"
make -s -j2 PG_CONFIG=$PG_CONFIG COPT="${COPT:-}" >/dev/null || { echo "build failed"; exit 1; }
$SUDO make -s install PG_CONFIG=$PG_CONFIG COPT="${COPT:-}" >/dev/null || { echo "install failed"; exit 1; }

src=$top
if [ "$(id -u)" -eq 0 ]; then
	# PostgreSQL refuses to run as root: the tests run as postgres, in a
	# copy of the tree that user owns (this checkout stays as it is)
	RUN="runuser -u postgres --"
	work=$(mktemp -d /tmp/sac_webhook_tests.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	tar -C "$top" --exclude=.git -cf - . | tar -C "$work" -xf -
	chown -R postgres: "$work"
	cd "$work" || exit 1
	top=$work
fi

log="$top/test-results.log"
: > "$log"
[ -n "$RUN" ] && chown postgres: "$log"
status=0

run_suite()
{
	local name=$1
	shift
	echo "== $name"
	$RUN make -s installcheck PG_CONFIG=$PG_CONFIG "$@" 2>&1 | tee -a "$log"
	[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

run_suite "pg_regress" ISOLATION= TAP_TESTS=
run_suite "isolation" REGRESS= TAP_TESTS=
run_suite "TAP" REGRESS= ISOLATION= PROVE_FLAGS=-v

for f in regression.diffs output_iso/regression.diffs; do
	[ -s "$f" ] && { echo "== $f"; head -200 "$f"; }
done
for f in tmp_check/log/regress_log_*; do
	[ -f "$f" ] && grep -q "not ok" "$f" && { echo "== $f"; tail -60 "$f"; }
done
[ "$top" != "$src" ] && cp "$log" "$src/test-results.log"

# count: pg_regress and isolation tests, and TAP subtests
passed=$(grep -cE '^(ok [0-9]+|(test| ) *[a-z_0-9]+ +\.\.\. ok)' "$log")
failed=$(grep -cE '^(not ok [0-9]+|(test| ) *[a-z_0-9]+ +\.\.\. FAILED)' "$log")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
	failed=1
fi
echo
echo "sac_webhook tests: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
