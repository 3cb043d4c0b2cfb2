#!/usr/bin/env bash
# Delivery benchmark: how fast the worker drains a backlog into a local
# nginx that answers 200, against the ceiling wrk measures on the same nginx
# in the same run.
#
# Backlogs of N tickets, one profile bound to ticket.created; every ticket
# links to 5 lookup rows (status, agent, team, priority, client):
#   committed   N tickets inserted in one transaction while the worker runs:
#               turning the queued occurrences into deliveries is included
#   full        as committed, with payload 'full': each delivery carries the
#               5 linked rows, read when it is made ("vs small": against the
#               committed row of the same run, just before it)
#   held        N tickets inserted while the profile is disabled (their
#               deliveries wait, held), then webhook.enable_profile
# Deliveries per second is N divided by the time from the first request
# started to the last response; worker and sender CPU are each process's
# user and system time over the drain, per delivery.
#
#   bash test/bench/delivery.sh [N, default 100000]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh nginx-light wrk bc >/dev/null
n=${1:-100000}
source test/bench/lib.sh
bench_nginx
bench_cluster

ceiling=$(wrk -t2 -c64 -d5s "http://127.0.0.1:$nginx_port/" 2>/dev/null | awk '/Requests\/sec/ { printf "%.0f", $2 }')

bench_profile bench "http://127.0.0.1:$nginx_port/hooks"
insert_tickets="INSERT INTO tickets (summary, status_id, agent_id, team_id, priority_id, client_id)
                SELECT 'Printer on fire ' || g, 1, 1 + g % 2, 1 + g % 2, 1 + g % 4, 1 + g % 2
                  FROM generate_series(1, $n) g"
worker_cpu() { awk '{ print $14 + $15 }' "/proc/$(bench_worker_pid)/stat"; }
sender_cpu() { awk '{ print $14 + $15 }' "/proc/$(bench_sender_pid)/stat"; }
rate() {
    psql -c "SELECT round(count(*) / extract(epoch FROM max(started_at + duration_ms * interval '1 ms')
                                                      - min(started_at)))::int,
                    count(*) FILTER (WHERE outcome <> 'response' OR response_status <> 200)
               FROM webhook.attempt"
}
row() {
    local label=$1 cpu_ticks=$2 sender_ticks=$3 rate failures
    IFS='|' read -r rate failures <<<"$(rate)"
    printf "%-44s %10s %8.3f %9s %12s %12s %9s\n" "$label" "$rate" "$(echo "$rate / $ceiling" | bc -l)" \
        "$failures" "$(( cpu_ticks * 10000 / n ))" "$(( sender_ticks * 10000 / n ))" \
        "${4:+$(printf %.3f "$(echo "$rate / $4" | bc -l)")}"
    last_rate=$rate
}

echo "delivery benchmark: $n deliveries, one profile, nginx on 127.0.0.1"
printf "%-44s %10s %8s %9s %12s %12s %9s\n" "set-up" "per second" "ratio" "failures" "worker us/d" \
    "sender us/d" "vs small"
printf "%-44s %10s %8.3f %9s %12s %12s %9s\n" "wrk -t2 -c64 (ceiling)" "$ceiling" 1 "-" "-" "-" "-"

cpu=$(worker_cpu) scpu=$(sender_cpu)
psql -c "$insert_tickets"
bench_wait_drained
row "committed: $n tickets in one transaction" $(( $(worker_cpu) - cpu )) $(( $(sender_cpu) - scpu ))
small_rate=$last_rate

psql -c "TRUNCATE webhook.attempt, webhook.delivery, tickets CASCADE" \
     -c "SELECT webhook.alter_profile('bench', payload => 'full')" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
cpu=$(worker_cpu) scpu=$(sender_cpu)
psql -c "$insert_tickets"
bench_wait_drained
row "full: $n tickets, 5 linked rows each" $(( $(worker_cpu) - cpu )) $(( $(sender_cpu) - scpu )) "$small_rate"
psql -c "SELECT webhook.alter_profile('bench', payload => 'small')" >/dev/null

psql -c "TRUNCATE webhook.attempt, webhook.delivery" -c "SELECT webhook.disable_profile('bench')" >/dev/null
psql -c "$insert_tickets"
bench_wait_expanded
psql -c "VACUUM ANALYZE" -c "CHECKPOINT"
cpu=$(worker_cpu) scpu=$(sender_cpu)
psql -c "SELECT webhook.enable_profile('bench')" >/dev/null
bench_wait_drained
row "held: $n deliveries, then enable_profile" $(( $(worker_cpu) - cpu )) $(( $(sender_cpu) - scpu ))
