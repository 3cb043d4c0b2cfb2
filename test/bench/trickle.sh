#!/usr/bin/env bash
# Trickle benchmark: what one single-ticket commit costs the worker and its
# sender, at a steady rate, delivered to a local nginx that answers 200.
#
# pgbench commits one ticket per transaction at R per second for S seconds
# (one client); CPU is each process's user and system time over the run,
# divided by the deliveries recorded meanwhile.  With "statements", the
# cluster loads pg_stat_statements and the run ends with the worker's
# statements: calls per commit and execution time per call (the executor's
# start-up, a large share of a small statement, is not in that time; and
# the extension's own cost per statement raises the CPU figures).
#
#   bash test/bench/trickle.sh [rate, default 500] [seconds, default 10] [statements]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh nginx-light postgresql-contrib >/dev/null
rate=${1:-500}
secs=${2:-10}
statements=${3:-}
source test/bench/lib.sh
bench_nginx
if [ -n "$statements" ]; then
    bench_cluster "shared_preload_libraries = 'webhook,pg_stat_statements'
pg_stat_statements.track = all"
else
    bench_cluster
fi
bench_profile bench "http://127.0.0.1:$nginx_port/hooks"
[ -z "$statements" ] || psql -c "CREATE EXTENSION pg_stat_statements" >/dev/null
echo "INSERT INTO tickets (summary, status_id, agent_id, team_id, priority_id, client_id) VALUES ('Printer on fire', 1, 1, 1, 1, 1);" \
    > "$bench_dir/commit.sql"
chmod 644 "$bench_dir/commit.sql"
commit() {
    as_pg "$PGBIN/pgbench" -n -h "$bench_dir" -p "$bench_port" -c 1 -R "$rate" -T "$1" \
        -f "$bench_dir/commit.sql" postgres >/dev/null 2>&1
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
recorded() { psql -c "SELECT count(*) FROM webhook.attempt"; }

# a warm-up: plans made, caches filled
commit 2
sleep 1
worker=$(bench_worker_pid) sender=$(bench_sender_pid)
[ -z "$statements" ] || psql -c "SELECT pg_stat_statements_reset()" >/dev/null
before=$(recorded) worker_cpu=$(cpu_ticks "$worker") sender_cpu=$(cpu_ticks "$sender")
commit "$secs"
until [ "$(psql -c "SELECT NOT EXISTS (SELECT 1 FROM webhook.occurrence)
                       AND NOT EXISTS (SELECT 1 FROM webhook.delivery
                                        WHERE status IN ('pending', 'sending', 'retrying'))")" = t ]; do
    sleep 0.2
done
worker_cpu=$(( $(cpu_ticks "$worker") - worker_cpu )) sender_cpu=$(( $(cpu_ticks "$sender") - sender_cpu ))
n=$(( $(recorded) - before ))

echo "trickle benchmark: $rate single-ticket commits per second for $secs s, nginx on 127.0.0.1"
echo "deliveries: $n; CPU per commit: worker $(( worker_cpu * 10000 / n )) us, sender $(( sender_cpu * 10000 / n )) us"
if [ -n "$statements" ]; then
    psql -F ' | ' -v n="$n" <<'SQL'
\pset format aligned
\pset tuples_only off
SELECT round(calls::numeric / :n, 2) AS per_commit, round((total_exec_time / calls * 1000)::numeric, 1) AS us_per_call,
       left(regexp_replace(query, '\s+', ' ', 'g'), 60) AS statement
  FROM pg_stat_statements
 WHERE calls > :n / 20 AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE 'INSERT INTO tickets%'
   AND query NOT LIKE 'SELECT count(*) FROM webhook.attempt%' AND query NOT LIKE 'SELECT NOT EXISTS%'
 ORDER BY calls * total_exec_time / calls DESC;
SQL
fi
