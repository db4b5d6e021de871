#!/bin/sh
# install-deps.sh: install the Debian 12 packages that sac_webhook needs to
# build, test and run (PostgreSQL 15 and its PGXS headers, libcurl,
# libmicrohttpd, libpq, OpenSSL's libcrypto, the Perl TAP modules, curl, and
# nghttpx for the HTTP/2 test).
# Installs only what is missing; uses sudo when not run as root.
set -eu

PACKAGES="build-essential pkg-config curl ca-certificates
postgresql-15 postgresql-server-dev-15 postgresql-contrib
libcurl4-openssl-dev libmicrohttpd-dev libpq-dev libssl-dev libipc-run-perl
nghttp2-proxy
$*"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
