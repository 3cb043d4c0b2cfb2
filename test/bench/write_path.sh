#!/usr/bin/env bash
# Write-path benchmark: what claiming and recording a delivery costs in
# bare SQL, as the worker's statements do it and as other layouts would.
#
# Copies of webhook.delivery and webhook.attempt (same columns, indexes and
# fillfactor) hold 100,000 deliveries; a procedure runs one statement per
# group of deliveries (256 claimed, 75 recorded: the worker's group sizes)
# and commits each, as the worker's steps do.  Times are per delivery,
# median of the rounds; ratios are to the worker's own form (the first row
# of each table), measured in the same run.
#
#   claim  update   the claim: status 'sending', attempts + 1 (a HOT update)
#          lock     the same rows read with FOR UPDATE (a row lock each)
#          read     the same rows read, nothing written
#   record update   the record: the delivery updated, its attempt inserted
#          inline   the delivery updated with its attempt in its own row
#          move     the delivery deleted and inserted into a history table
#                   that holds the attempt too
#          move+a   the same, the attempt in its own table
#
#   bash test/bench/write_path.sh [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh bc >/dev/null

rounds=${1:-3}
source test/bench/lib.sh
# no worker: the copies are the extension's tables, not its queue
bench_cluster "max_worker_processes = 2
log_min_messages = error"

psql >/dev/null <<'SQL'
CREATE EXTENSION webhook;
CREATE TABLE d (LIKE webhook.delivery INCLUDING ALL) WITH (fillfactor = 50);
CREATE TABLE a (LIKE webhook.attempt INCLUDING ALL);
CREATE TABLE h (LIKE webhook.delivery INCLUDING DEFAULTS);
ALTER TABLE h ADD COLUMN outcome text, ADD COLUMN response_headers jsonb,
              ADD COLUMN request_headers jsonb;
ALTER TABLE d ADD COLUMN outcome text, ADD COLUMN response_headers jsonb,
              ADD COLUMN request_headers jsonb;
CREATE UNIQUE INDEX ON h (delivery_id);
CREATE INDEX ON h (created_at);
CREATE FUNCTION fill(status text) RETURNS void LANGUAGE sql AS $$
TRUNCATE d, a, h;
INSERT INTO d (delivery_id, profile_id, webhook_id, events, items, body, status, attempts,
               next_attempt_at, last_attempt_at)
SELECT g, 1, 'msg_' || md5(g::text), '{ticket.created}', 1,
       ('{"event":"ticket.created","ticket":{"id":' || g || ',"summary":"Printer on fire"}}')::json,
       status, CASE status WHEN 'sending' THEN 1 ELSE 0 END,
       now() - interval '1 hour' + g * interval '1 ms', now()
  FROM generate_series(1, 100000) g;
$$;
SQL

# the recorded headers and response of one attempt, as the worker writes them
req='{"webhook-id":"msg_0123456789abcdef","webhook-signature":"v1,abcdefghijklmnopqrstuvwxyz0123456789abcdefghij=","webhook-timestamp":"1764614400","content-type":"application/json","user-agent":"webhook"}'
resp='{"server":"nginx","date":"Tue, 01 Dec 2026 18:00:00 GMT","content-type":"application/octet-stream","content-length":"11","connection":"keep-alive"}'
outcomes="SELECT g AS delivery_id, now() AS started_at, 0.5::float8 AS duration_ms, 'response' AS outcome,
                 200 AS response_status, '$resp'::jsonb AS response_headers, '{\"ok\":true}' AS response_body,
                 NULL::text AS error, '$req'::jsonb AS request_headers FROM generate_series(i, i + 74) g"
due="SELECT x.delivery_id FROM d x WHERE x.profile_id = 1 AND x.status IN ('pending', 'retrying')
        AND x.next_attempt_at <= now() AND x.body IS NOT NULL
        AND (x.next_attempt_at, x.delivery_id) > (mark_at, mark_id)
      ORDER BY x.next_attempt_at, x.delivery_id LIMIT 256"

statement() {
    case $1 in
    claim:update) echo "WITH c AS (UPDATE d SET status = 'sending', attempts = d.attempts + 1, last_attempt_at = now()
        WHERE d.delivery_id = ANY (ARRAY($due FOR UPDATE SKIP LOCKED))
        RETURNING d.delivery_id, d.next_attempt_at, d.body::text AS body)
        SELECT max(next_attempt_at), max(delivery_id), count(body) FROM c" ;;
    claim:lock) echo "WITH c AS (SELECT d.delivery_id, d.next_attempt_at, d.body::text AS body FROM d
        WHERE d.delivery_id = ANY (ARRAY($due FOR UPDATE SKIP LOCKED)) FOR UPDATE)
        SELECT max(next_attempt_at), max(delivery_id), count(body) FROM c" ;;
    claim:read) echo "WITH c AS (SELECT d.delivery_id, d.next_attempt_at, d.body::text AS body FROM d
        WHERE d.delivery_id = ANY (ARRAY($due)))
        SELECT max(next_attempt_at), max(delivery_id), count(body) FROM c" ;;
    record:update) echo "WITH r AS ($outcomes),
        u AS (UPDATE d SET status = 'delivered', next_attempt_at = NULL, delivered_at = now(),
                     response_status = r.response_status, duration_ms = r.duration_ms,
                     error = r.error, response_body = r.response_body
                FROM r WHERE d.delivery_id = r.delivery_id AND d.status = 'sending' RETURNING d.delivery_id),
        x AS (INSERT INTO a (delivery_id, attempt, started_at, duration_ms, outcome, response_status,
                             response_headers, response_body, error, request_headers)
              SELECT delivery_id, 1, started_at, duration_ms, outcome, response_status, response_headers,
                     response_body, error, request_headers
                FROM r WHERE r.delivery_id IN (SELECT delivery_id FROM u))
        SELECT count(*) FROM u" ;;
    record:inline) echo "WITH r AS ($outcomes),
        u AS (UPDATE d SET status = 'delivered', next_attempt_at = NULL, delivered_at = now(),
                     response_status = r.response_status, duration_ms = r.duration_ms,
                     error = r.error, response_body = r.response_body, outcome = r.outcome,
                     response_headers = r.response_headers, request_headers = r.request_headers
                FROM r WHERE d.delivery_id = r.delivery_id AND d.status = 'sending' RETURNING d.delivery_id)
        SELECT count(*) FROM u" ;;
    record:move|record:move+a) echo "WITH r AS ($outcomes),
        u AS (DELETE FROM d USING r WHERE d.delivery_id = r.delivery_id AND d.status = 'sending'
              RETURNING d.*, r.started_at AS r_started_at, r.outcome AS r_outcome,
                        r.response_headers AS r_response_headers, r.request_headers AS r_request_headers),
        i AS (INSERT INTO h (delivery_id, profile_id, webhook_id, events, items, body, status, attempts,
                             created_at, captured_at, last_attempt_at, delivered_at, response_status,
                             duration_ms, response_body, outcome, response_headers, request_headers)
              SELECT delivery_id, profile_id, webhook_id, events, items, body, 'delivered', attempts,
                     created_at, captured_at, last_attempt_at, now(), 200, 0.5, '{\"ok\":true}',
                     r_outcome, r_response_headers, r_request_headers FROM u)
        $( [ "$1" = record:move+a ] && echo ", x AS (INSERT INTO a (delivery_id, attempt, started_at, duration_ms, outcome,
                             response_status, response_headers, response_body, error, request_headers)
              SELECT delivery_id, 1, r_started_at, 0.5, r_outcome, 200, r_response_headers, '{\"ok\":true}',
                     NULL, r_request_headers FROM u)")
        SELECT count(*) FROM u" ;;
    esac
}

# microseconds per delivery of one variant, on freshly filled tables
measure() {
    local kind=${1%%:*} step into status
    if [ "$kind" = claim ]; then step=256 into="mark_at, mark_id, n" status=pending
    else step=75 into="n" status=sending; fi
    psql -c "SELECT fill('$status')" -c "VACUUM ANALYZE d, a, h" -c "CHECKPOINT" >/dev/null
    psql >/dev/null <<SQL
CREATE OR REPLACE PROCEDURE run() LANGUAGE plpgsql AS \$p\$
DECLARE i int := 1; n bigint; mark_at timestamptz := '-infinity'; mark_id bigint := 0;
        t0 timestamptz := clock_timestamp();
BEGIN
    WHILE i <= 99000 LOOP
        $(statement "$1") INTO $into;
        COMMIT;
        i := i + $step;
    END LOOP;
    RAISE NOTICE 'us %', round((extract(epoch FROM clock_timestamp() - t0) * 1e6 / (i - 1))::numeric, 2);
END \$p\$;
SQL
    psql -c "CALL run()" 2>&1 | sed -n 's/.*NOTICE:  us //p'
}

variants="claim:update claim:lock claim:read record:update record:inline record:move record:move+a"
declare -A results
for round in $(seq "$rounds"); do
    for v in $variants; do results[$v]+="$(measure "$v") "; done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "write-path benchmark: $rounds rounds, 100,000 deliveries each, median us per delivery"
printf "%-16s %10s %8s   %s\n" "variant" "us/d" "ratio" "rounds"
for v in $variants; do
    m=$(echo "${results[$v]}" | median)
    case $v in claim:update|record:update) base=$m ;; esac
    printf "%-16s %10s %8.2f   %s\n" "$v" "$m" "$(echo "$m / $base" | bc -l)" "${results[$v]}"
done
