#!/usr/bin/env bash
# The whole server under valgrind (memcheck, every process: the worker,
# the sender, the backends) through test/sql/valgrind_workload.sql and its
# deliveries to test/receiver.py; then the invalid reads and writes and
# the uses of uninitialised memory valgrind reported, and where.
#
#   bash test/valgrind.sh          (a few minutes: valgrind is slow)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh valgrind >/dev/null

PGBIN=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/webhook-valgrind.XXXXXX)
chmod 755 "$dir"; mkdir "$dir/vg"; chown -R postgres: "$dir"
# as postgres, from a directory it can enter: the clone may be one it cannot
as_pg() { (cd "$dir" && runuser -u postgres -- "$@"); }
psql() { as_pg "$PGBIN/psql" -X -q -At -h "$dir" -p 5477 -d postgres -v ON_ERROR_STOP=1 "$@"; }
receiver_pid=
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -t 120 stop >/dev/null 2>&1 || true
    [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$dir/data" -A trust >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'webhook'
listen_addresses = ''
unix_socket_directories = '$dir'
port = 5477
log_min_messages = warning
# the failing profile's 200 deliveries all fail: none may be held by its
# disabling, or the drain below would wait for them
webhook.disable_after_failures = 0
# a small allowance (8 x 4 deliveries a profile): the claims keep their place
webhook.max_per_profile = 4
CONF
as_pg valgrind --quiet --trace-children=yes --error-limit=no --log-file="$dir/vg/%p.log" \
    "$PGBIN/postgres" -D "$dir/data" >"$dir/server.log" 2>&1 &
for _ in $(seq 240); do psql -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done

python3 test/receiver.py --port-file "$dir/port" --log "$dir/received.jsonl" &
receiver_pid=$!
for _ in $(seq 50); do [ -s "$dir/port" ] && break; sleep 0.1; done

psql < test/sql/sample_schema.sql
psql -v url="http://127.0.0.1:$(cat "$dir/port")" < test/sql/valgrind_workload.sql >/dev/null
# one statement, one snapshot: an expansion between two would pass for a drain
for _ in $(seq 600); do
    [ "$(psql -c "SELECT NOT EXISTS (SELECT 1 FROM webhook.occurrence)
                     AND NOT EXISTS (SELECT 1 FROM webhook.delivery
                                      WHERE status IN ('pending', 'sending', 'retrying'))
                     AND NOT EXISTS (SELECT 1 FROM webhook.deadline)")" = t ] && break
    sleep 1
done
psql -c "SELECT status, count(*) FROM webhook.delivery GROUP BY 1 ORDER BY 1" | sed 's/^/deliveries: /'
as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -t 120 stop >/dev/null

invalid=$(cat "$dir"/vg/*.log | grep -c 'Invalid read\|Invalid write\|Invalid free' || true)
uninit=$(cat "$dir"/vg/*.log | grep -c 'Conditional jump\|uninitialised value' || true)
ours=$(grep -l 'webhook\.so\|src/[a-z]*\.c' "$dir"/vg/*.log 2>/dev/null | xargs -r grep -h -A12 'Invalid\|Conditional\|uninitialised' \
       | grep -c 'webhook\.so\|(\(init\|shmem\|launcher\|worker\|sender\|channel\|queue\|expand\|claims\|dispatch\|http\|capture\|conditions\|deadline\|envelope\|rowjson\|rowwrite\|linked\|sign\|network\|trust\|api\)\.c:' || true)
echo "valgrind: $(ls "$dir"/vg | wc -l) processes, $invalid invalid reads/writes/frees, $uninit uses of uninitialised values, $ours stack frames in webhook"
grep -h -B1 -A10 'Invalid\|Conditional\|Syscall param' "$dir"/vg/*.log | grep -E '==[0-9]+== (Invalid|Conditional|Syscall|   (at|by))' | head -40 || true
[ "$invalid" = 0 ] && [ "$ours" = 0 ]
