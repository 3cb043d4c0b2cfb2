#!/usr/bin/env bash
# Memory benchmark: the resident memory of the worker and the sender while
# they drain a backlog of N deliveries (default 1,000,000) into a local
# nginx answering 200.
#
# The backlog is made while the profile is disabled (held), then the
# profile is enabled.  /proc/<worker>/status is read every half second:
# RssAnon is the process's own memory, RssShmem the shared memory it has
# touched (shared buffers, shared with every backend), VmRSS their sum
# with the mapped files (postgres and its libraries).  Worker and sender
# are measured; the baseline is each, idle, just before the drain.
#
# With a payload kind (default small), the backlog carries it: "full" makes
# the worker read 5 linked rows for each delivery as it makes the backlog;
# "worker, backlog made" is its own memory once it has made all of it.
#
#   bash test/bench/memory.sh [N, default 1000000] [payload, default small]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh nginx-light >/dev/null
n=${1:-1000000}
payload=${2:-small}
source test/bench/lib.sh
bench_nginx
bench_cluster "shared_buffers = 128MB"

bench_profile bench "http://127.0.0.1:$nginx_port/hooks"
psql -c "SELECT webhook.disable_profile('bench')" -c "SELECT webhook.alter_profile('bench', payload => '$payload')" >/dev/null
worker_anon() { awk '$1 == "RssAnon:" { print $2 }' "/proc/$(bench_worker_pid)/status"; }
before_backlog=$(worker_anon)
for start in $(seq 1 100000 "$n"); do
    psql -c "INSERT INTO tickets (summary, status_id, agent_id, team_id, priority_id, client_id)
             SELECT 'Printer on fire ' || g, 1, 1 + g % 2, 1 + g % 2, 1 + g % 4, 1 + g % 2
               FROM generate_series($start, LEAST($start + 99999, $n)) g"
done
bench_wait_expanded
after_backlog=$(worker_anon)
psql -c "VACUUM ANALYZE" -c "CHECKPOINT"

# highest and idle figures per process (worker, sender) and field
declare -A pid idle high
pid[worker]=$(bench_worker_pid)
# (the sender has no database connection: it is not in pg_stat_activity)
# (a child of this cluster's postmaster: other servers may run)
pid[sender]=$(bench_sender_pid)
fields="RssAnon RssShmem VmRSS"
kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/${pid[$1]}/status"; }
for p in worker sender; do
    for f in $fields; do idle[$p.$f]=$(kb $p $f); high[$p.$f]=0; done
done
psql -c "SELECT webhook.enable_profile('bench')" >/dev/null
started=$(date +%s.%N)
while :; do
    for i in 1 2 3 4; do
        for p in worker sender; do
            for f in $fields; do
                v=$(kb $p $f)
                [ "$v" -gt "${high[$p.$f]}" ] && high[$p.$f]=$v
            done
        done
        sleep 0.5
    done
    [ "$(psql -c "SELECT NOT EXISTS (SELECT 1 FROM webhook.delivery WHERE status IN ('pending', 'retrying'))")" = t ] \
        && break
done
secs=$(echo "$(date +%s.%N) - $started" | bc)

mb() { echo "$1 / 1024" | bc -l; }
echo "memory benchmark: $n deliveries ($payload payload) drained in $(printf %.0f "$secs") s"
printf "%-26s %12s %12s %12s\n" "" "RssAnon MB" "RssShmem MB" "VmRSS MB"
printf "%-26s %12.1f\n" "worker, before the backlog" "$(mb "$before_backlog")"
printf "%-26s %12.1f\n" "worker, backlog made" "$(mb "$after_backlog")"
for p in worker sender; do
    printf "%-26s %12.1f %12.1f %12.1f\n" "$p, idle (baseline)" "$(mb "${idle[$p.RssAnon]}")" \
        "$(mb "${idle[$p.RssShmem]}")" "$(mb "${idle[$p.VmRSS]}")"
    printf "%-26s %12.1f %12.1f %12.1f\n" "$p, draining, highest" "$(mb "${high[$p.RssAnon]}")" \
        "$(mb "${high[$p.RssShmem]}")" "$(mb "${high[$p.VmRSS]}")"
    printf "%-26s %12.2f %12.2f %12.2f\n" "$p, ratio" \
        "$(echo "${high[$p.RssAnon]} / ${idle[$p.RssAnon]}" | bc -l)" \
        "$(echo "${high[$p.RssShmem]} / (${idle[$p.RssShmem]} + 1)" | bc -l)" \
        "$(echo "${high[$p.VmRSS]} / ${idle[$p.VmRSS]}" | bc -l)"
done
