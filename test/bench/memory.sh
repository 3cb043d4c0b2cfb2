#!/usr/bin/env bash
# Memory benchmark: the worker's resident memory while it drains a backlog
# of N deliveries (default 1,000,000) into a local nginx answering 200.
#
# The backlog is made while the profile is disabled (held), then the
# profile is enabled.  /proc/<worker>/status is read every half second:
# RssAnon is the worker's own memory, RssShmem the shared buffers it has
# touched (shared with every backend; at most shared_buffers), VmRSS their
# sum with mapped files.  The baseline is the same worker, idle, just
# before the drain.
#
#   bash test/bench/memory.sh [N, default 1000000]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh nginx-light >/dev/null
n=${1:-1000000}
source test/bench/lib.sh
bench_nginx
bench_cluster "shared_buffers = 128MB"

psql -f test/sql/sample_schema.sql >/dev/null
psql >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION webhook;
SELECT webhook.define_ticket_events('tickets');
SELECT webhook.create_profile('bench', 'http://127.0.0.1:$nginx_port/hooks', ARRAY['ticket.created']);
SELECT webhook.disable_profile('bench');
SQL
for start in $(seq 1 100000 "$n"); do
    psql -c "INSERT INTO tickets (summary, status_id, agent_id, priority_id)
             SELECT 'Printer on fire ' || g, 1, 1 + g % 2, 1 + g % 4
               FROM generate_series($start, LEAST($start + 99999, $n)) g"
done
until [ "$(psql -c "SELECT count(*) FROM webhook.delivery WHERE status = 'held'")" -ge "$n" ]; do sleep 2; done
psql -c "VACUUM ANALYZE" -c "CHECKPOINT"

pid=$(bench_worker_pid)
kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
idle_rss=$(kb VmRSS); idle_anon=$(kb RssAnon); idle_shmem=$(kb RssShmem)
max_rss=0; max_anon=0; max_shmem=0
psql -c "SELECT webhook.enable_profile('bench')" >/dev/null
started=$(date +%s.%N)
while :; do
    for i in 1 2 3 4; do
        r=$(kb VmRSS); a=$(kb RssAnon); s=$(kb RssShmem)
        [ "$r" -gt "$max_rss" ] && max_rss=$r
        [ "$a" -gt "$max_anon" ] && max_anon=$a
        [ "$s" -gt "$max_shmem" ] && max_shmem=$s
        sleep 0.5
    done
    [ "$(psql -c "SELECT count(*) FROM webhook.delivery WHERE status = 'delivered'")" -ge "$n" ] && break
done
secs=$(echo "$(date +%s.%N) - $started" | bc)

echo "memory benchmark: worker draining $n deliveries in $(printf %.0f "$secs") s"
printf "%-26s %12s %12s %12s\n" "" "RssAnon MB" "RssShmem MB" "VmRSS MB"
printf "%-26s %12.1f %12.1f %12.1f\n" "idle worker (baseline)" "$(echo "$idle_anon/1024" | bc -l)" \
    "$(echo "$idle_shmem/1024" | bc -l)" "$(echo "$idle_rss/1024" | bc -l)"
printf "%-26s %12.1f %12.1f %12.1f\n" "draining, highest" "$(echo "$max_anon/1024" | bc -l)" \
    "$(echo "$max_shmem/1024" | bc -l)" "$(echo "$max_rss/1024" | bc -l)"
printf "%-26s %12.2f %12.2f %12.2f\n" "ratio" "$(echo "$max_anon/$idle_anon" | bc -l)" \
    "$(echo "$max_shmem/($idle_shmem+1)" | bc -l)" "$(echo "$max_rss/$idle_rss" | bc -l)"
