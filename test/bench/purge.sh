#!/usr/bin/env bash
# Purge benchmark: what one purge step of the worker costs, by the size of
# the delivery history.
#
# For each history size, webhook.delivery holds that many delivered
# deliveries younger than the retention, and 1,000 older ones.  Timed, each
# in a transaction rolled back, median of the rounds:
#   a  the purge step as it was before 0.3 (finished deliveries older than
#      the retention, oldest id first): the baseline
#   b  the worker's purge step (through delivery_finished_idx)
# and the step with nothing to delete.  Ratios are b / a.
#
#   bash test/bench/purge.sh [sizes, default "100000 1000000"] [rounds, default 5]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh bc >/dev/null

sizes=${1:-"100000 1000000"}
rounds=${2:-5}
source test/bench/lib.sh
# the worker's own purge keeps out of the way: nothing is older than its retention
bench_cluster "webhook.retention = '3650d'
autovacuum = off"
psql -c "CREATE EXTENSION webhook" >/dev/null

purge_step() {   # $1: the ORDER BY of the step (the index it can use)
    cat <<SQL
WITH old AS (
  SELECT delivery_id FROM webhook.delivery
   WHERE status IN ('delivered', 'failed') AND created_at < now() - interval '1 day'
   ORDER BY $1 LIMIT 1000
), gone AS (
  DELETE FROM webhook.attempt WHERE delivery_id IN (SELECT delivery_id FROM old)
)
DELETE FROM webhook.delivery WHERE delivery_id IN (SELECT delivery_id FROM old)
SQL
}

# ms of one run of the statement ($2), rolled back, after $1 (untimed)
time_ms() {
    psql <<SQL | grep -o 'Time: [0-9.]*' | awk '{print $2}'
SET enable_seqscan = off;
BEGIN;
$1
\timing on
$2;
\timing off
ROLLBACK;
SQL
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

printf '%-10s | %-14s | %14s | %14s | %7s\n' history "to delete" "before 0.3 ms" "0.3 ms" ratio
have=0
for size in $sizes; do
    psql -c "INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status, created_at)
             SELECT 1, gen_random_uuid()::text, '{x}', 1, '{}', 'delivered', now()
               FROM generate_series(1, $size - $have)" >/dev/null
    have=$size
    psql -c "VACUUM ANALYZE webhook.delivery" >/dev/null
    for what in 1000 0; do
        if [ "$what" = 1000 ]; then
            psql -c "INSERT INTO webhook.delivery (profile_id, webhook_id, events, items, body, status, created_at)
                     SELECT 1, gen_random_uuid()::text, '{x}', 1, '{}', 'delivered', now() - interval '2 days'
                       FROM generate_series(1, 1000)" >/dev/null
        fi
        # before 0.3 there was no index of finished deliveries
        a=$(for r in $(seq "$rounds"); do
                time_ms "DROP INDEX webhook.delivery_finished_idx;" "$(purge_step delivery_id)"; done | median)
        b=$(for r in $(seq "$rounds"); do time_ms "" "$(purge_step created_at)"; done | median)
        printf '%-10s | %-14s | %14.1f | %14.1f | %7.3f\n' "$size" "$what" "$a" "$b" "$(echo "$b / $a" | bc -l)"
        [ "$what" = 1000 ] && psql -c "DELETE FROM webhook.delivery WHERE created_at < now() - interval '1 day'" >/dev/null
    done
done
