#!/usr/bin/env bash
# Capture benchmark: what a webhook costs the ticket writer.
#
# Inserts into tickets tables (primary key, 10 columns) under four set-ups,
# measured in the same run, interleaved round by round, median of the rounds:
#   a  no trigger at all (the baseline)
#   b  a hand-written PL/pgSQL row trigger that inserts to_jsonb(NEW) into an outbox
#   c  webhook, 3 profiles whose bindings match every row
#   d  webhook, 3 bindings whose conditions match no row
# twice: bulk (INSERT ... SELECT of 100 rows per statement) and single-row
# transactions (synchronous_commit = on), one client each.  Ratios are to (a).
#
# The worker is kept from running (no background worker slot for it), so
# that the figures are the writer's cost alone, not the sending.
#
#   bash test/bench/capture.sh [seconds per measurement, default 3] [rounds, default 12]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh postgresql-contrib bc >/dev/null

secs=${1:-3}
rounds=${2:-12}
source test/bench/lib.sh
bench_cluster "synchronous_commit = on
# the launcher and the logical replication launcher take both slots
max_worker_processes = 2
log_min_messages = error
# no checkpoint or autovacuum in the middle of a measurement
checkpoint_timeout = 1h
autovacuum = off"
dir=$bench_dir

psql >/dev/null <<'SQL'
CREATE EXTENSION webhook;
CREATE TABLE outbox (id bigserial PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz DEFAULT now());
CREATE FUNCTION outbox_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (payload) VALUES (to_jsonb(NEW));
    RETURN NEW;
END $$;
SQL

# one table per set-up, made once; emptied before every measurement
for cfg in a b c d; do
    psql >/dev/null <<SQL
CREATE TABLE tickets_$cfg (
    ticket_id bigserial PRIMARY KEY, summary text NOT NULL, details text,
    status_id int NOT NULL, agent_id int, team_id int, priority_id int, client_id int,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
SQL
    echo "INSERT INTO tickets_$cfg (summary, details, status_id, agent_id, team_id, priority_id, client_id) SELECT 'Printer on fire', 'Third floor', 1, 2, 3, 2, 5 FROM generate_series(1, 100);" > "$dir/bulk_$cfg.sql"
    echo "INSERT INTO tickets_$cfg (summary, details, status_id, agent_id, team_id, priority_id, client_id) VALUES ('Printer on fire', 'Third floor', 1, 2, 3, 2, 5);" > "$dir/single_$cfg.sql"
done
chown postgres: "$dir"/*.sql
psql >/dev/null <<'SQL'
CREATE TRIGGER outbox AFTER INSERT ON tickets_b FOR EACH ROW EXECUTE FUNCTION outbox_trigger();
SELECT webhook.define_event('c.created', 'tickets_c', 'insert');
SELECT webhook.define_event('d.created', 'tickets_d', 'insert');
SELECT webhook.create_profile('c' || g, 'http://127.0.0.1:9/', ARRAY['c.created']) FROM generate_series(1, 3) g;
SELECT webhook.create_profile('d' || g, 'http://127.0.0.1:9/', ARRAY['d.created']) FROM generate_series(1, 3) g;
UPDATE webhook.binding SET conditions = '[{"field": "priority_id", "op": "eq", "value": 99}]'
 WHERE event_id = (SELECT event_id FROM webhook.event WHERE name = 'd.created');
SQL

# rows per second of one pgbench run, on an empty table
measure() {
    local kind=$1 cfg=$2 clients=$3 rows=$4
    psql -c "TRUNCATE tickets_$cfg, outbox, webhook.occurrence" >/dev/null
    as_pg "$PGBIN/pgbench" -n -h "$dir" -p "$bench_port" -c "$clients" -j "$clients" -T "$secs" -f "$dir/${kind}_$cfg.sql" postgres 2>/dev/null |
        awk -v rows="$rows" '/^tps/ { printf "%.0f\n", $3 * rows }'
}

# a warm-up round, not counted; then the rounds, each in another order
for cfg in a b c d; do measure bulk "$cfg" 1 100 >/dev/null; measure single "$cfg" 1 1 >/dev/null; done
declare -A results
orders=("a b c d" "b c d a" "c d a b" "d a b c")
for round in $(seq "$rounds"); do
    for cfg in ${orders[$((round % 4))]}; do
        results[bulk,$cfg]+="$(measure bulk "$cfg" 1 100) "
    done
    for cfg in ${orders[$((round % 4))]}; do
        results[single,$cfg]+="$(measure single "$cfg" 1 1) "
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "capture benchmark: $rounds rounds of ${secs}s, median rows/s, ratio to (a)"
printf "%-44s %12s %8s %12s %8s\n" "set-up" "bulk rows/s" "ratio" "single tx/s" "ratio"
declare -A names=([a]="a  no trigger" [b]="b  PL/pgSQL trigger to an outbox"
       [c]="c  webhook, 3 profiles matching every row" [d]="d  webhook, bindings matching no row")
base_bulk=$(echo "${results[bulk,a]}" | median)
base_single=$(echo "${results[single,a]}" | median)
for cfg in a b c d; do
    b=$(echo "${results[bulk,$cfg]}" | median)
    s=$(echo "${results[single,$cfg]}" | median)
    printf "%-44s %12s %8.2f %12s %8.2f\n" "${names[$cfg]}" "$b" "$(echo "$b / $base_bulk" | bc -l)" \
        "$s" "$(echo "$s / $base_single" | bc -l)"
done
