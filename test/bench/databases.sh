#!/usr/bin/env bash
# Many-databases benchmark: N databases with the extension on one server,
# each committing one ticket every I seconds for S seconds, into one
# receiver on 127.0.0.1; beside it, in the same run, one database alone
# doing the same (the baseline).
#
# Commit-to-receipt is from the ticket's commit timestamp
# (track_commit_timestamp) to the receiver reading the request, both on
# this machine's clock.  "warm" is the N busy databases; "idle" is one more
# database that commits a ticket every 10 s, more than the idle timeout
# (webhook.worker_idle_timeout = 5s here), so that its worker has always
# left: its commits wait for a worker to start.  The most webhook processes
# (launcher, sender, workers) seen at once is sampled every 0.2 s.
#
#   bash test/bench/databases.sh [N, default 50] [I seconds, default 1] [S seconds, default 60]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh postgresql-contrib bc >/dev/null
n=${1:-50}
interval=${2:-1}
secs=${3:-60}
source test/bench/lib.sh
bench_cluster "track_commit_timestamp = on
max_worker_processes = 8
max_connections = $(( n + 40 ))
webhook.worker_idle_timeout = 5s
log_min_messages = warning"

bench_timing_receiver "$bench_dir/received"

schema=$(cat test/sql/sample_schema.sql)
make_database() {
    psql -c "CREATE DATABASE $1"
    as_pg "$PGBIN/psql" -X -q -h "$bench_dir" -p "$bench_port" -d "$1" -v ON_ERROR_STOP=1 >/dev/null <<SQL
$schema
CREATE EXTENSION webhook;
SELECT webhook.define_event('ticket.created', 'tickets', 'insert');
SELECT webhook.create_profile('bench', 'http://127.0.0.1:$recv_port/hooks/$1', ARRAY['ticket.created']);
SQL
}
for i in $(seq "$n"); do make_database "busy$i"; done
make_database idle
make_database alone
echo "INSERT INTO tickets (summary, status_id) VALUES ('Printer on fire', 1);" > "$bench_dir/commit.sql"
chmod 644 "$bench_dir/commit.sql"
rate=$(echo "1 / $interval" | bc -l)

# commits at the rate, one pgbench per database; returns when they end
run_load() {
    local pids=()
    for db in "$@"; do
        as_pg "$PGBIN/pgbench" -n -h "$bench_dir" -p "$bench_port" -c 1 -R "$rate" -T "$secs" \
            -f "$bench_dir/commit.sql" "$db" >/dev/null 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
}
processes() {
    psql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'webhook %'"
}
committed() {
    local total=0
    for db in "$@"; do
        total=$(( total + $(as_pg "$PGBIN/psql" -X -At -h "$bench_dir" -p "$bench_port" -d "$db" \
            -c "SELECT count(*) FROM tickets") ))
    done
    echo "$total"
}

# 1. the baseline: one database alone
run_load alone
until [ "$(grep -c ' alone ' "$bench_dir/received" || true)" -ge "$(committed alone)" ]; do sleep 0.5; done

# 2. the N busy databases, and the idle one every 10 s
most=0
( while :; do processes; sleep 0.2; done ) > "$bench_dir/processes" &
sampler=$!
bench_pids="$bench_pids $sampler"
started=$(date +%s.%N)
( for t in $(seq 10 10 "$secs"); do sleep 10; as_pg "$PGBIN/psql" -X -q -h "$bench_dir" -p "$bench_port" -d idle -f "$bench_dir/commit.sql"; done ) &
idle_load=$!
busy=()
for i in $(seq "$n"); do busy+=("busy$i"); done
run_load "${busy[@]}"
wait "$idle_load"
expected=$(committed "${busy[@]}" idle)
until [ "$(grep -vc ' alone ' "$bench_dir/received")" -ge "$expected" ]; do sleep 0.5; done
finished=$(date +%s.%N)
kill "$sampler" 2>/dev/null || true
most=$(sort -n "$bench_dir/processes" | tail -1)

# the commit times of every database's tickets, to join with what was received
: > "$bench_dir/committed"
for db in "${busy[@]}" idle alone; do
    as_pg "$PGBIN/psql" -X -At -F ' ' -h "$bench_dir" -p "$bench_port" -d "$db" \
        -c "SELECT '$db', ticket_id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM tickets" \
        >> "$bench_dir/committed"
done
chmod 644 "$bench_dir/committed" "$bench_dir/received"

echo
echo "databases benchmark: $n databases, one ticket each every ${interval}s for ${secs}s; the most webhook processes at once: $most"
psql <<SQL
CREATE TEMP TABLE received (at float8, db text, id bigint);
CREATE TEMP TABLE committed (db text, id bigint, at float8);
\copy received FROM '$bench_dir/received' WITH (DELIMITER ' ')
\copy committed FROM '$bench_dir/committed' WITH (DELIMITER ' ')
\pset format aligned
\pset tuples_only off
WITH l AS (
  SELECT CASE WHEN c.db = 'alone' THEN 'one database alone (baseline)'
              WHEN c.db = 'idle' THEN 'idle database, beside them'
              ELSE '$n busy databases' END AS databases,
         (r.at - c.at) * 1000 AS ms
    FROM committed c JOIN received r USING (db, id)),
s AS (
  SELECT databases, count(*) AS deliveries,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
         percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS max
    FROM l GROUP BY databases)
SELECT s.databases, s.deliveries, round(s.p50::numeric, 1) AS p50_ms, round(s.p99::numeric, 1) AS p99_ms,
       round(s.max::numeric, 1) AS max_ms,
       round((s.p50 / b.p50)::numeric, 1) AS p50_ratio, round((s.p99 / b.p99)::numeric, 1) AS p99_ratio
  FROM s, s AS b WHERE b.databases LIKE '%baseline%' ORDER BY s.databases;
SELECT count(*) AS not_delivered FROM committed c WHERE NOT EXISTS (SELECT FROM received r WHERE r.db = c.db AND r.id = c.id);
SQL
echo "deliveries per second over the run: $(echo "$expected / ($finished - $started)" | bc -l | xargs printf %.1f)"
