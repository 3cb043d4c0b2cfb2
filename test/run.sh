#!/usr/bin/env bash
# Builds, installs and runs every webhook test: pg_regress (the SQL API) and
# TAP (the worker end to end, against a real receiver on 127.0.0.1).
# Run as root on Debian 12; it installs what is missing.  Clusters run as
# the postgres OS user in a throwaway directory and are stopped at the end.
#
#   bash test/run.sh            everything
#   bash test/run.sh t/001*.pl  only the TAP files given (relative to test/)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

PGBIN=/usr/lib/postgresql/15/bin
PGXS_DIR=/usr/lib/postgresql/15/lib/pgxs
work=$(mktemp -d /tmp/webhook-test.XXXXXX)
chmod 755 "$work"
cleanup() {
    # stop any cluster or receiver a failed test left behind
    pkill -u postgres -f "$work" 2>/dev/null
    for pidfile in "$work"/*/tmp_check/t_*_data/pgdata/postmaster.pid "$work"/tmp_regress/data/postmaster.pid; do
        [ -f "$pidfile" ] && kill -9 "$(head -1 "$pidfile")" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT

cp -r Makefile webhook.control sql expected test "$work/"
passed=0
failed=0

# the official Standard Webhooks verifier, for the signature tests: without
# it they fail, and the run counts one failure more to say why
echo "== npm install standardwebhooks (the signature verifier)"
if ! (cd "$work/test" && npm install --no-save --no-audit --no-fund standardwebhooks >"$work/npm.out" 2>&1 &&
      node --input-type=module -e 'import "standardwebhooks"' >>"$work/npm.out" 2>&1); then
    cat "$work/npm.out"
    echo "FAILED: could not install the standardwebhooks npm package; the signature tests cannot pass"
    failed=$((failed + 1))
fi
chown -R postgres: "$work"
# as postgres; every caller first enters a directory of $work, as the clone
# may be one that postgres cannot enter
as_pg() { runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"; }

# 1. pg_regress, in a temporary instance that preloads the library
if [ $# -eq 0 ]; then
    echo "== pg_regress"
    (cd "$work" && as_pg make -s installcheck PG_CONFIG="$PGBIN/pg_config") > "$work/regress.out" 2>&1
    cat "$work/regress.out"
    ok=$(grep -cE '\.\.\. ok' "$work/regress.out")
    bad=$(grep -cE '\.\.\. FAILED|\.\.\. failed' "$work/regress.out")
    if [ "$ok" -eq 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"
    passed=$((passed + ok)); failed=$((failed + bad))
fi

# 2. TAP: the worker end to end
echo "== TAP"
if [ $# -gt 0 ]; then tests=("$@"); else tests=(--ext=.pl t/); fi
(cd "$work/test" && as_pg env PERL5LIB="$PGXS_DIR/src/test/perl:$work/test/lib" \
    PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" TESTDIR="$work/test" \
    PG_TEST_TIMEOUT_DEFAULT=60 WEBHOOK_SEED="${WEBHOOK_SEED:-}" WEBHOOK_DURATION="${WEBHOOK_DURATION:-}" \
    prove -v "${tests[@]}") > "$work/tap.out" 2>&1
tap_status=$?
cat "$work/tap.out"
ok=$(grep -cE '^\s*ok [0-9]+' "$work/tap.out")
bad=$(grep -cE '^\s*not ok [0-9]+' "$work/tap.out" || true)
dubious=$(grep -cE 'Bad plan|No plan found|Parse errors' "$work/tap.out")
if [ "$tap_status" -ne 0 ] && [ "$bad" -eq 0 ] && [ "$dubious" -eq 0 ]; then dubious=1; fi
passed=$((passed + ok)); failed=$((failed + bad + dubious))
if [ "$failed" -gt 0 ]; then
    for log in "$work"/test/tmp_check/log/*.log; do
        [ -f "$log" ] || continue
        echo "== tail of $log"; tail -n 40 "$log"
    done
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
