#!/bin/sh
# install-citus.sh: build and install Citus 13.2.2 for PostgreSQL 15 from its
# source tarball, for the scale-out test (t/050_citus.pl) and benchmark
# (bench/citus.sh).  Does nothing when Citus is already installed for this
# PostgreSQL ($(pg_config --pkglibdir)/citus.so and citus.control).
#
#   scripts/install-citus.sh            the tarball ../../shared/citus-13.2.2.tar.gz,
#                                       relative to this script
#   CITUS_TARBALL=/path/citus.tar.gz    another copy of the source
#   CITUS_FORCE=1                       build and install even when installed
#   PG_CONFIG=/path/pg_config           another PostgreSQL 15 (default: Debian's)
#
# Installs the Debian packages the build needs when they are missing, builds
# in a temporary directory (make -j$CITUS_JOBS, 2 by default) and installs as
# root (through sudo when not run as root).  Quiet unless something fails:
# then it prints the end of the build log and exits non-zero.  About two
# minutes on two cores.
#
# Citus 13.2.2's src/include/pg_version_compat.h defines have_createdb_privilege()
# for PostgreSQL 15 as a static inline function; PostgreSQL 15.20 exports a
# function of that name from commands/dbcommands.h, so the two declarations
# conflict.  When the server headers declare it, that definition is taken out
# of the unpacked source before building (the server's function does the
# same check).
set -eu

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
here=$(cd "$(dirname "$0")" && pwd)
TARBALL=${CITUS_TARBALL:-$here/../../shared/citus-13.2.2.tar.gz}
JOBS=${CITUS_JOBS:-2}

die() { echo "install-citus: $*" >&2; exit 1; }

# installed: citus.so and citus.control in this PostgreSQL's directories
installed()
{
	[ -x "$PG_CONFIG" ] &&
		[ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] &&
		[ -f "$("$PG_CONFIG" --sharedir)/extension/citus.control" ]
}
if [ "${CITUS_FORCE:-0}" != 1 ] && installed; then
	exit 0
fi

[ -f "$TARBALL" ] || die "no Citus source at $TARBALL (set CITUS_TARBALL)"
TARBALL=$(cd "$(dirname "$TARBALL")" && pwd)/$(basename "$TARBALL")

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "run as root or install sudo"
	SUDO="sudo"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/install-citus.XXXXXX")
log=$work/build.log
: >"$log"
fail()
{
	echo "install-citus: $* failed; the end of the log:" >&2
	tail -n 40 "$log" >&2
	exit 1
}
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# --- build dependencies (Debian 12) --------------------------------------------
# PostgreSQL 15 with PGXS and libpq, the compression libraries Citus links
# (lz4, zstd), OpenSSL, and the GSSAPI headers that the server's
# libpq/libpq-be.h includes (this PostgreSQL is built with GSSAPI)
missing=""
for p in build-essential postgresql-15 postgresql-server-dev-15 libpq-dev libssl-dev \
	liblz4-dev libzstd-dev libkrb5-dev; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	# shellcheck disable=SC2086 # $missing: one word per package
	{
		$SUDO apt-get update -qq &&
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
	} >>"$log" 2>&1 || fail "apt-get install$missing"
fi

[ -x "$PG_CONFIG" ] || die "no pg_config at $PG_CONFIG (set PG_CONFIG)"
case "$("$PG_CONFIG" --version)" in
	"PostgreSQL 15."*) ;;
	*) die "$("$PG_CONFIG" --version) is not PostgreSQL 15" ;;
esac
pkglibdir=$("$PG_CONFIG" --pkglibdir)

# --- unpack and fix ----------------------------------------------------------
tar -C "$work" -xzf "$TARBALL" >>"$log" 2>&1 || fail "unpacking $TARBALL"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'citus*' | head -n 1)
[ -n "$src" ] && [ -f "$src/configure" ] || fail "finding the source in $TARBALL"

compat=$src/src/include/pg_version_compat.h
server_h=$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h
if [ -f "$compat" ] && grep -q 'have_createdb_privilege' "$server_h" 2>/dev/null &&
	grep -q '^have_createdb_privilege(void)' "$compat"; then
	# drop "static inline bool" / "have_createdb_privilege(void)" / { ... }
	# up to the closing brace in column 0
	awk '
		skip { if ($0 ~ /^}[[:space:]]*$/) skip = 0; next }
		held != "" {
			if ($0 ~ /^have_createdb_privilege\(void\)[[:space:]]*$/) { held = ""; skip = 1; next }
			print held; held = ""
		}
		/^static inline bool[[:space:]]*$/ { held = $0; next }
		{ print }
		END { if (held != "") print held }
	' "$compat" >"$compat.new" && mv "$compat.new" "$compat"
	! grep -q '^have_createdb_privilege(void)' "$compat" ||
		fail "taking have_createdb_privilege() out of pg_version_compat.h"
	echo "install-citus: removed the PostgreSQL 15 have_createdb_privilege() from pg_version_compat.h" >>"$log"
fi

# --- build and install ---------------------------------------------------------
cd "$src"
./configure PG_CONFIG="$PG_CONFIG" --without-libcurl >>"$log" 2>&1 || fail "configure"
make -j"$JOBS" >>"$log" 2>&1 || fail "make"
$SUDO make install >>"$log" 2>&1 || fail "make install"
[ -f "$pkglibdir/citus.so" ] || fail "installing ($pkglibdir/citus.so is missing)"
