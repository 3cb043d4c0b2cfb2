#!/usr/bin/env bash
# Batching benchmark, two parts.
#
# Throughput: N tickets committed in one transaction while the worker runs,
# one profile bound to ticket.created, sent to a local nginx that answers
# 200.  First without batching (one delivery per ticket, the baseline of
# this run), then with batching any_event, batch_max_items 100.  Tickets
# per second is N divided by the time from the commit to the last response:
# turning the queue into deliveries and batches is included.
#
# Timing: one profile per wait (same_event, 20 bindings each, one per
# ticket), a change to one of 20 tickets every 0.5 s for the longest wait
# plus 15 s, so that every ticket's first batch of each wait comes due.
# Each batch is due at its first change's capture time + batch_wait; its
# lateness is the start of its request minus that.  Batches still waiting
# at the end are counted, not measured.
#
#   bash test/bench/batching.sh [N, default 1000000; 0: timing only] [waits in seconds, default "1 30 360"; "": throughput only]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh nginx-light >/dev/null
n=${1:-1000000}
waits=${2-"1 30 360"}
source test/bench/lib.sh
bench_nginx
bench_cluster
bench_profile bench "http://127.0.0.1:$nginx_port/hooks"

insert_tickets="INSERT INTO tickets (summary, status_id, agent_id, priority_id)
                SELECT 'Printer on fire ' || g, 1, 1 + g % 2, 1 + g % 4 FROM generate_series(1, $n) g"
# drains the backlog of $n tickets; prints tickets per second and failures
drain() {
    local committed
    committed=$(psql -c "$insert_tickets" -c "SELECT extract(epoch FROM clock_timestamp())")
    bench_wait_drained
    psql -c "SELECT round($n / (extract(epoch FROM max(started_at + duration_ms * interval '1 ms')) - $committed))::int,
                    count(*) FILTER (WHERE outcome <> 'response' OR response_status <> 200),
                    count(*)
               FROM webhook.attempt"
}
reset() {
    psql -c "SET client_min_messages = warning" \
         -c "TRUNCATE webhook.attempt, webhook.delivery, tickets RESTART IDENTITY CASCADE" \
         -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
}

if [ "$n" -gt 0 ]; then
    echo "batching benchmark: $n tickets committed in one transaction, nginx on 127.0.0.1"
    printf "%-40s %12s %8s %10s %9s\n" "set-up" "tickets/s" "ratio" "requests" "failures"
    IFS='|' read -r base_rate base_failures base_requests <<< "$(drain)"
    printf "%-40s %12s %8.2f %10s %9s\n" "batching none (baseline)" "$base_rate" 1 "$base_requests" "$base_failures"
    reset
    psql -c "SELECT webhook.alter_profile('bench', batching => 'any_event', batch_max_items => 100)" >/dev/null
    IFS='|' read -r rate failures requests <<< "$(drain)"
    printf "%-40s %12s %8.2f %10s %9s\n" "batching any_event, 100 items" "$rate" \
        "$(python3 -c "print($rate / $base_rate)")" "$requests" "$failures"
    reset
fi
psql -c "SELECT webhook.drop_profile('bench')" >/dev/null

# timing
[ -z "$waits" ] && exit 0
longest=0
for w in $waits; do
    [ "$w" -gt "$longest" ] && longest=$w
    psql >/dev/null <<SQL
SELECT webhook.create_profile('wait_$w', 'http://127.0.0.1:$nginx_port/wait$w', ARRAY['action.added'],
                              batching => 'same_event', batch_wait => '$w seconds', batch_max_items => 10000);
SELECT webhook.add_event('wait_$w', 'action.added', format('[{"field": "ticket_id", "op": "eq", "value": %s}]', t)::jsonb)
  FROM generate_series(1, 20) t;
SELECT webhook.remove_event(binding_id) FROM webhook.bindings WHERE profile = 'wait_$w' AND conditions = '[]';
SQL
done
psql -c "INSERT INTO tickets (summary, status_id) SELECT 'timing ' || g, 1 FROM generate_series(1, 20) g" >/dev/null
run_for=$((longest + 15))
echo
echo "timing: a change every 0.5 s for $run_for s; per wait, 20 bindings (batches of one ticket each)"
end=$(( $(date +%s) + run_for ))
i=0
while [ "$(date +%s)" -lt "$end" ]; do
    psql -c "INSERT INTO actions (ticket_id, note) VALUES ($(( i % 20 + 1 )), 'change $i')" >/dev/null
    i=$((i + 1))
    sleep 0.5
done
sleep 2
printf "%-12s %8s %8s %14s %14s %14s\n" "batch_wait" "batches" "items" "median late ms" "p99 late ms" "max late ms"
for w in $waits; do
    psql -c "
        SELECT count(*), sum(d.items),
               round((percentile_cont(0.5) WITHIN GROUP (ORDER BY late))::numeric, 1),
               round((percentile_cont(0.99) WITHIN GROUP (ORDER BY late))::numeric, 1),
               round(max(late)::numeric, 1)
          FROM webhook.delivery d
          JOIN webhook.profile p USING (profile_id)
          JOIN webhook.attempt a ON a.delivery_id = d.delivery_id AND a.attempt = 1
         CROSS JOIN LATERAL (SELECT extract(epoch FROM a.started_at - (d.captured_at + p.batch_wait)) * 1000
                             ) AS l(late)
         WHERE p.name = 'wait_$w' AND d.status = 'delivered'" | {
        IFS='|' read -r batches items median p99 max
        printf "%-12s %8s %8s %14s %14s %14s\n" "${w}s" "$batches" "$items" "$median" "$p99" "$max"
    }
done
psql -c "SELECT count(*) FILTER (WHERE body IS NULL), count(*) FILTER (WHERE body IS NOT NULL)
           FROM webhook.delivery WHERE status <> 'delivered'" | {
    IFS='|' read -r waiting other
    echo "batches still waiting at the end: $waiting; other deliveries not delivered: $other"
}
