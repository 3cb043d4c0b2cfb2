#!/usr/bin/env bash
# Installs what webhook needs on Debian 12 (only what is missing), then
# builds and installs the extension.  Run as root.  Used by the demo and the
# test runner; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
# procps: ps, pgrep and pkill for the tests; openssl: the TLS test's
# certificates; ca-certificates: npm reaches its
# registry over TLS (a minimal system has neither)
packages=(postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libipc-run-perl
          python3 make gcc procps ca-certificates openssl "$@")

# node and npm run the official Standard Webhooks verifier in the tests
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "webhook setup: installing ${missing[*]}"
    # no default cluster: the demo and the tests start their own
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Options::=--force-confold --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

make -s PG_CONFIG="$PG_CONFIG"
make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
