#!/usr/bin/env bash
# The demo: a throwaway cluster with the sample ticket schema and a local
# receiver; three webhook profiles (one batching, one custom); a few ticket
# changes; then what the receiver got and what webhook.deliveries shows.  Run as root on Debian 12.
#
#   bash scripts/demo.sh          run, show, clean up
#   bash scripts/demo.sh --keep   leave the cluster and receiver running
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

PGBIN=/usr/lib/postgresql/15/bin
PGPORT=5488
keep=no
[ "${1:-}" = "--keep" ] && keep=yes

dir=$(mktemp -d /tmp/webhook-demo.XXXXXX)
chmod 755 "$dir"
chown postgres: "$dir"
# as postgres, from a directory it can enter: the clone may be one it cannot
as_pg() { (cd "$dir" && runuser -u postgres -- "$@"); }
receiver_pid=
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
    rm -rf "$dir"
}
[ "$keep" = no ] && trap cleanup EXIT

echo "== A throwaway cluster in $dir (Unix socket only), with webhook preloaded"
as_pg "$PGBIN/initdb" -D "$dir/data" -A trust >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'webhook'
listen_addresses = ''
unix_socket_directories = '$dir'
port = $PGPORT
CONF
as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start >/dev/null

echo "== A receiver on 127.0.0.1 that records what it gets"
python3 test/receiver.py --port-file "$dir/receiver.port" --log "$dir/received.jsonl" &
receiver_pid=$!
for _ in $(seq 100); do [ -s "$dir/receiver.port" ] && break; sleep 0.05; done
receiver_port=$(cat "$dir/receiver.port")

psql=(as_pg "$PGBIN/psql" -X -h "$dir" -p "$PGPORT" -d postgres -v ON_ERROR_STOP=1)
"${psql[@]}" -q < test/sql/sample_schema.sql

echo "== The extension, the standard events, seven profiles, and some ticket changes"
"${psql[@]}" -e <<SQL
CREATE EXTENSION webhook;
-- tickets have a deadline: ticket.deadline fires when it comes
ALTER TABLE tickets ADD COLUMN deadline_at timestamptz;
SELECT * FROM webhook.define_ticket_events('tickets', 'actions', closed_statuses => '{9}',
                                           deadline => 'deadline_at');
-- and Halo's "1st SLA Warning", two seconds before it, for tickets still open
SELECT webhook.define_deadline_event('ticket.sla_warning', 'tickets', 'deadline_at', before => '2 seconds',
                                     condition => 'new.status_id <> 9', title => '1st SLA Warning',
                                     message => 'Ticket ID: {object_id:07} is due in two seconds.');
SELECT webhook.create_profile('sla-desk', 'http://127.0.0.1:$receiver_port/sla',
                              ARRAY['ticket.sla_warning', 'ticket.deadline'], envelope => 'halo');
SELECT webhook.create_profile('service-bus', 'http://127.0.0.1:$receiver_port/halo',
                              ARRAY['ticket.created', 'ticket.reassigned', 'ticket.closed', 'action.added']);
-- and any update of a P1 ticket
SELECT webhook.add_event('service-bus', 'ticket.updated',
                         '[{"field": "priority_id", "op": "eq", "value": 1}]');
-- every change of two seconds in one request
SELECT webhook.create_profile('warehouse', 'http://127.0.0.1:$receiver_port/warehouse',
                              ARRAY['ticket.created', 'ticket.updated', 'action.added'],
                              batching => 'any_event', batch_wait => '2 seconds');

-- a CRM that wants a few fields, lookups by name
SELECT webhook.create_profile('crm', 'http://127.0.0.1:$receiver_port/crm',
                              ARRAY['ticket.created', 'ticket.closed'], payload => 'custom');
SELECT webhook.set_payload_fields('crm', '[{"name": "summary", "column": "summary"},
                                           {"name": "status", "column": "status_id"},
                                           {"name": "agent", "column": "agent_id", "display": "email"},
                                           {"name": "client", "column": "client_id"}]');

-- a receiver written for Halo's own webhooks, which writes back as crm-sync:
-- Halo's body, and none of the changes it makes itself
SELECT webhook.create_profile('halo-receiver', 'http://127.0.0.1:$receiver_port/halo-shaped',
                              ARRAY['ticket.created', 'ticket.status_changed', 'action.added'],
                              envelope => 'halo', auth => 'basic', username => 'halo', password => 'pa:ss',
                              ignore_origins => '{crm-sync}');

-- a receiver that is down, and someone who hears when a delivery to it fails for good
SELECT webhook.create_profile('legacy', 'http://127.0.0.1:$receiver_port/status/500', ARRAY['ticket.created'],
                              max_attempts => 2, retry_schedule => '{0s}');
SELECT webhook.create_profile('ops-alerts', 'http://127.0.0.1:$receiver_port/ops-alerts',
                              ARRAY['webhook.delivery_failed', 'webhook.profile_disabled']);

INSERT INTO tickets (summary, details, status_id, agent_id, team_id, priority_id, client_id, deadline_at)
VALUES ('Printer on fire', 'Third floor, tray 2', 1, 1, 1, 1, 1, now() + interval '3 seconds'),
       ('VPN drops every hour', NULL, 1, NULL, 2, 3, 2, now() + interval '3 seconds');
-- the due times the worker waits for (the printer's: it is closed before then)
SELECT event, row_key, fire_at - now() AS fires_in FROM webhook.deadlines ORDER BY fire_at, event;

BEGIN;
INSERT INTO tickets (summary, status_id) VALUES ('Rolled back: never sent', 1);
ROLLBACK;

UPDATE tickets SET agent_id = 2 WHERE summary = 'Printer on fire';
INSERT INTO actions (ticket_id, agent_id, note)
SELECT ticket_id, 2, 'Replaced the fuser' FROM tickets WHERE summary = 'Printer on fire';
UPDATE tickets SET status_id = 9 WHERE summary = 'Printer on fire';
UPDATE tickets SET details = 'Seen by the network team' WHERE summary = 'VPN drops every hour';

-- the receiver's own write: halo-receiver does not get it back
SET webhook.origin = 'crm-sync';
UPDATE tickets SET status_id = 2 WHERE summary = 'VPN drops every hour';
RESET webhook.origin;
SQL

# until the batch's two seconds and the deadline are over and everything is sent
for _ in $(seq 300); do
    done=$("${psql[@]}" -Atc "SELECT count(*) FILTER (WHERE status = 'delivered') >= 17
                                     AND count(*) FILTER (WHERE status = 'delivered'
                                                            AND events = '{ticket.deadline}') = 1
                                     AND count(*) FILTER (WHERE status = 'delivered'
                                                            AND events = '{webhook.delivery_failed}') = 2
                                     AND count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0
                                FROM webhook.deliveries")
    [ "$done" = t ] && break
    sleep 0.05
done

echo
echo "== What the receiver got"
python3 - "$dir/received.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['method']} {r['path']}   webhook-id: {r['headers'].get('webhook-id')}")
    print(json.dumps(json.loads(r["body"]), indent=2))
    print()
PY

echo "== SELECT ... FROM webhook.deliveries"
"${psql[@]}" -c "SELECT delivery_id, profile, events, items, status, attempts, response_status,
                        round(duration_ms::numeric, 1) AS duration_ms,
                        round(extract(epoch FROM delivered_at - captured_at)::numeric * 1000, 1)
                          AS change_to_response_ms
                   FROM webhook.deliveries ORDER BY delivery_id"
echo "== SELECT ... FROM webhook.attempts (the first one)"
"${psql[@]}" -x -c "SELECT * FROM webhook.attempts ORDER BY delivery_id LIMIT 1"

echo "== SELECT ... FROM webhook.stats"
"${psql[@]}" -c "SELECT profile, enabled, queued, delivered, failed, p50_ms, p95_ms, last_error,
                        last_success_at IS NOT NULL AS succeeded
                   FROM webhook.stats ORDER BY profile"

echo "== webhook.preview: the request ticket 2 would make to crm now (nothing is sent)"
"${psql[@]}" -Atc "SELECT jsonb_pretty(webhook.preview('crm', 'ticket.created', ticket_id::text))
                     FROM tickets WHERE summary = 'VPN drops every hour'"

if [ "$keep" = yes ]; then
    echo "The cluster and the receiver are still running:"
    echo "  connect:  runuser -u postgres -- $PGBIN/psql -h $dir -p $PGPORT postgres"
    echo "  received: $dir/received.jsonl"
    echo "  stop:     runuser -u postgres -- $PGBIN/pg_ctl -D $dir/data stop; kill $receiver_pid; rm -rf $dir"
fi
