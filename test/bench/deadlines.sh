#!/usr/bin/env bash
# Deadline benchmark: what a deadline event costs the ticket writer, what
# the worker reads to find what is due among 100,000 scheduled rows, and how
# fast and how late it fires them.
#
# 1. The writer: single-row UPDATE transactions (synchronous_commit = on,
#    one client) on tables of 100,000 tickets, in the same run, interleaved
#    round by round, median of the rounds, ratios to (a):
#      a  no trigger at all (the baseline)
#      u  an update event bound to a profile (what a deadline may cost at most)
#      d  a deadline event bound to a profile, each update moving the due time
#      e  the same deadline event, updates that leave the due time alone
#    The worker is kept from running (no background worker slot for it).
# 2. The worker, with 100,000 due times scheduled: the buffers its look for
#    what is due reads (EXPLAIN ANALYZE of its two statements, nothing due).
# 3. Firing: the 100,000 due times moved to one moment 5 s ahead; the rate at
#    which they become deliveries (held: the profile is disabled, so that
#    the figure is the firing, not the sending), and how late each fired
#    (its capture time less its due time): median, p99, max.
#
#   bash test/bench/deadlines.sh [seconds per measurement, default 3] [rounds, default 8]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh postgresql-contrib bc >/dev/null

secs=${1:-3}
rounds=${2:-8}
rows=100000
source test/bench/lib.sh
bench_cluster "synchronous_commit = on
max_worker_processes = 2
log_min_messages = error
checkpoint_timeout = 1h
autovacuum = off"
dir=$bench_dir

psql >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION webhook;
SQL
for cfg in a u d e; do
    psql >/dev/null <<SQL
CREATE TABLE tickets_$cfg (
    ticket_id bigint PRIMARY KEY, summary text NOT NULL, details text,
    status_id int NOT NULL, agent_id int, team_id int, priority_id int, client_id int,
    due_at timestamptz, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO tickets_$cfg (ticket_id, summary, details, status_id, agent_id, team_id, priority_id, client_id, due_at)
SELECT g, 'Printer on fire', 'Third floor', 1, 2, 3, 2, 5, now() + interval '1 year' + g * interval '1 second'
  FROM generate_series(1, $rows) g;
VACUUM ANALYZE tickets_$cfg;
SQL
done
psql >/dev/null <<'SQL'
SELECT webhook.define_event('u.updated', 'tickets_u', 'update');
SELECT webhook.create_profile('u', 'http://127.0.0.1:9/', ARRAY['u.updated'], enabled => false);
SELECT webhook.define_deadline_event('d.due', 'tickets_d', 'due_at', before => '1 hour');
SELECT webhook.create_profile('d', 'http://127.0.0.1:9/', ARRAY['d.due'], enabled => false);
SELECT webhook.define_deadline_event('e.due', 'tickets_e', 'due_at', before => '1 hour');
SELECT webhook.create_profile('e', 'http://127.0.0.1:9/', ARRAY['e.due'], enabled => false);
VACUUM ANALYZE webhook.deadline;
SQL
for cfg in a u e; do
    printf '\\set id random(1, %d)\nUPDATE tickets_%s SET summary = %s WHERE ticket_id = :id;\n' \
        "$rows" "$cfg" "'Printer on fire, ' || :id" > "$dir/update_$cfg.sql"
done
printf '\\set id random(1, %d)\nUPDATE tickets_d SET due_at = due_at + interval %s WHERE ticket_id = :id;\n' \
    "$rows" "'1 minute'" > "$dir/update_d.sql"
chown postgres: "$dir"/*.sql

measure() {
    local cfg=$1
    psql -c "TRUNCATE webhook.occurrence" >/dev/null
    as_pg "$PGBIN/pgbench" -n -h "$dir" -p "$bench_port" -c 1 -j 1 -T "$secs" -f "$dir/update_$cfg.sql" postgres 2>/dev/null |
        awk '/^tps/ { printf "%.0f\n", $3 }'
}
for cfg in a u d e; do measure "$cfg" >/dev/null; done
declare -A results
orders=("a u d e" "u d e a" "d e a u" "e a u d")
for round in $(seq "$rounds"); do
    for cfg in ${orders[$((round % 4))]}; do
        results[$cfg]+="$(measure "$cfg") "
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "1. the writer: single-row UPDATE transactions on $rows tickets, $rounds rounds of ${secs}s, median tx/s"
printf "%-58s %10s %8s\n" "set-up" "tx/s" "ratio"
declare -A names=([a]="a  no trigger" [u]="u  an update event, bound"
       [d]="d  a deadline event, bound, the due time moved" [e]="e  a deadline event, bound, the due time left alone")
base=$(echo "${results[a]}" | median)
for cfg in a u d e; do
    r=$(echo "${results[$cfg]}" | median)
    printf "%-58s %10s %8.2f\n" "${names[$cfg]}" "$r" "$(echo "$r / $base" | bc -l)"
done
printf "deadline (d) to update event (u): %.2f\n" \
    "$(echo "$(echo "${results[d]}" | median) / $(echo "${results[u]}" | median)" | bc -l)"

# 2. what the worker reads to find what is due, nothing due
scheduled=$(psql -c "SELECT count(*) FROM webhook.deadline")
take="WITH due AS (SELECT ctid AS entry, event_id, row_key, due FROM webhook.deadline WHERE fire_at <= now()
      ORDER BY fire_at, event_id, row_key FETCH FIRST 1000 ROWS WITH TIES),
      rows AS (SELECT DISTINCT event_id, row_key, due FROM due)
      SELECT r.event_id, array_agg(r.row_key), array_agg(r.due),
             (SELECT array_agg(d.entry) FROM due d WHERE d.event_id = r.event_id)
        FROM rows r GROUP BY r.event_id"
buffers() { psql -c "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) $1" |
    python3 -c 'import json,sys; p=json.load(sys.stdin)[0]; n=p["Plan"]; print(n.get("Shared Hit Blocks",0)+n.get("Shared Read Blocks",0), "%.3f ms" % p["Execution Time"])'; }
echo
echo "2. the worker's look for what is due, $scheduled due times scheduled, nothing due"
printf "%-58s %s\n" "statement" "buffers, time"
printf "%-58s %s\n" "the due entries (index on fire_at)" "$(buffers "$take")"
printf "%-58s %s\n" "the next due time" "$(buffers "SELECT min(fire_at) FROM webhook.deadline")"

# 3. firing: the worker runs now
psql -c "ALTER SYSTEM SET max_worker_processes = 8" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$dir/data" -w restart >/dev/null
psql -c "DELETE FROM webhook.deadline WHERE event_id <> (SELECT event_id FROM webhook.event WHERE name = 'd.due')" >/dev/null
due=$(psql -c "SELECT extract(epoch FROM date_trunc('second', clock_timestamp()) + interval '6 seconds')")
psql -c "UPDATE tickets_d SET due_at = to_timestamp($due) + interval '1 hour'" >/dev/null
until [ "$(psql -c "SELECT now() >= to_timestamp($due)")" = t ]; do sleep 0.2; done
until [ "$(psql -c "SELECT count(*) >= $rows FROM webhook.delivery")" = t ]; do sleep 0.5; done
psql -c "SELECT count(*), extract(epoch FROM max(captured_at)) - $due,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM captured_at) - $due),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM captured_at) - $due),
                extract(epoch FROM min(captured_at)) - $due
           FROM webhook.delivery" | {
    IFS='|' read -r n last p50 p99 first
    echo
    echo "3. firing $n due times due at one moment (held deliveries: the firing, not the sending)"
    printf "%-58s %10.3f s\n" "the first fired after its due time" "$first"
    printf "%-58s %10.0f /s\n" "rate (due time to the last)" "$(echo "$n / $last" | bc -l)"
    printf "%-58s %10.3f s  p99 %.3f s  max %.3f s\n" "lateness: median" "$p50" "$p99" "$last"
}
