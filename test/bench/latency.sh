#!/usr/bin/env bash
# Latency benchmark: from a ticket's commit to the receiver reading its
# webhook, at a steady rate of single-ticket transactions.
#
# pgbench commits one ticket per transaction at R per second for S seconds;
# a receiver on 127.0.0.1 notes the time it read each request and the
# ticket's id.  The commit time is the transaction's commit timestamp
# (track_commit_timestamp), so both ends use the same clock.
#
# The baseline, measured in the same run against the same receiver, is a
# plain HTTP client posting at the same rate over one kept-alive connection:
# from just before it sends to the receiver's read.  No sender can do better.
#
#   bash test/bench/latency.sh [rate, default 500] [seconds, default 30]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh postgresql-contrib >/dev/null
rate=${1:-500}
secs=${2:-30}
source test/bench/lib.sh
bench_cluster "track_commit_timestamp = on"

# the receiver: one line "epoch-seconds path object_id" per request read
bench_timing_receiver "$bench_dir/received"

# the baseline: a client posting {"object_id": -i} at the same rate for 5 s
python3 - "$recv_port" "$rate" "$bench_dir/sent" <<'PY'
import http.client, json, sys, time
port, rate, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port)
with open(path, "w") as out:
    start = time.time()
    for i in range(1, int(rate * 5) + 1):
        time.sleep(max(0, start + i / rate - time.time()))
        body = json.dumps({"object_id": -i})
        sent = time.time()
        conn.request("POST", "/baseline", body, {"Content-Type": "application/json"})
        conn.getresponse().read()
        out.write("%.6f %d\n" % (sent, -i))
PY

bench_profile latency "http://127.0.0.1:$recv_port/hooks"
echo "INSERT INTO tickets (summary, status_id, agent_id, priority_id) VALUES ('Printer on fire', 1, 1, 1);" \
    > "$bench_dir/commit.sql"
chmod 644 "$bench_dir/commit.sql"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
worker=$(bench_worker_pid) sender=$(bench_sender_pid)
worker_cpu=$(cpu_ticks "$worker") sender_cpu=$(cpu_ticks "$sender")
as_pg "$PGBIN/pgbench" -n -h "$bench_dir" -p "$bench_port" -c 4 -j 2 -R "$rate" -T "$secs" \
    -f "$bench_dir/commit.sql" postgres >/dev/null 2>&1
committed=$(psql -c "SELECT count(*) FROM tickets")
until [ "$(grep -vc ' -' "$bench_dir/received")" -ge "$committed" ]; do sleep 1; done
worker_cpu=$(( $(cpu_ticks "$worker") - worker_cpu )) sender_cpu=$(( $(cpu_ticks "$sender") - sender_cpu ))

psql <<SQL
CREATE TEMP TABLE received (at float8, path text, id bigint);
CREATE TEMP TABLE sent (at float8, id bigint);
\copy received FROM '$bench_dir/received' WITH (DELIMITER ' ')
\copy sent FROM '$bench_dir/sent' WITH (DELIMITER ' ')
CREATE TEMP TABLE latency AS
SELECT 'plain HTTP client (baseline)' AS sender, (r.at - s.at) * 1000 AS ms
  FROM received r JOIN sent s USING (id)
UNION ALL
SELECT 'webhook, commit to receipt', (r.at - extract(epoch FROM pg_xact_commit_timestamp(t.xmin))) * 1000
  FROM received r JOIN tickets t ON t.ticket_id = r.id;
\pset format aligned
\pset tuples_only off
\echo 'latency benchmark: $rate requests per second; webhook: single-ticket commits for $secs s'
WITH l AS (
  SELECT sender, count(*) AS requests,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
         percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS max
    FROM latency GROUP BY sender)
SELECT l.sender, l.requests, round(l.p50::numeric, 2) AS p50_ms, round(l.p99::numeric, 2) AS p99_ms,
       round(l.max::numeric, 2) AS max_ms,
       round((l.p50 / b.p50)::numeric, 1) AS p50_ratio, round((l.p99 / b.p99)::numeric, 1) AS p99_ratio
  FROM l, l AS b WHERE b.sender LIKE '%baseline%' ORDER BY l.sender;
\echo 'where the webhook time goes (medians, ms)'
SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY
                 extract(epoch FROM d.created_at - pg_xact_commit_timestamp(t.xmin))))::numeric * 1000, 2)
           AS commit_to_claim_step,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY
                 extract(epoch FROM a.started_at - d.created_at)))::numeric * 1000, 2) AS claim_step_to_send,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY
                 r.at - extract(epoch FROM a.started_at)))::numeric * 1000, 2) AS send_to_receipt
  FROM received r JOIN tickets t ON t.ticket_id = r.id
  JOIN webhook.delivery d ON (d.body->>'object_id')::bigint = t.ticket_id
  JOIN webhook.attempt a ON a.delivery_id = d.delivery_id AND a.attempt = 1;
\echo 'the queue after the run (it held every change for a few milliseconds)'
SELECT pg_size_pretty(pg_total_relation_size('webhook.occurrence')) AS occurrence_size,
       (SELECT count(*) FROM webhook.occurrence) AS occurrences_left,
       pg_size_pretty(pg_total_relation_size('webhook.delivery')) AS delivery_history_size;
SQL
# each commit is one step of the worker that carries its one delivery, and
# its share of the steps that record outcomes
echo "CPU per commit: worker $(( worker_cpu * 10000 / committed )) us, sender $(( sender_cpu * 10000 / committed )) us"
