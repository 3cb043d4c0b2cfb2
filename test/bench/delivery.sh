#!/usr/bin/env bash
# Delivery benchmark: how fast the worker drains a backlog into a local
# nginx that answers 200, against the ceiling wrk measures on the same nginx
# in the same run.
#
# N tickets are inserted while the profile is disabled (their deliveries are
# held), then the profile is enabled: deliveries per second is N divided by
# the time from the first request started to the last response recorded.
#
#   bash test/bench/delivery.sh [N, default 100000]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh nginx-light wrk >/dev/null

n=${1:-100000}
PGBIN=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/webhook-bench.XXXXXX)
chmod 755 "$dir"; chown postgres: "$dir"
as_pg() { runuser -u postgres -- "$@"; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# nginx on 127.0.0.1 only, answering 200 to everything
mkdir -p "$dir/nginx"
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/nginx;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 '{"ok":true}'; }
    }
}
CONF
/usr/sbin/nginx -c "$dir/nginx.conf"

as_pg "$PGBIN/initdb" -D "$dir/data" -A trust >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'webhook'
listen_addresses = ''
unix_socket_directories = '$dir'
port = 5478
shared_buffers = 512MB
max_wal_size = 4GB
log_min_messages = warning
CONF
as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql() { as_pg "$PGBIN/psql" -X -q -At -h "$dir" -p 5478 -d postgres -v ON_ERROR_STOP=1 "$@"; }

echo "== wrk against nginx (the ceiling)"
ceiling=$(wrk -t2 -c64 -d5s -s /dev/null "http://127.0.0.1:$port/" 2>/dev/null | awk '/Requests\/sec/ { printf "%.0f", $2 }')

psql -f test/sql/sample_schema.sql >/dev/null
psql >/dev/null <<SQL
CREATE EXTENSION webhook;
SELECT webhook.define_ticket_events('tickets');
SELECT webhook.create_profile('bench', 'http://127.0.0.1:$port/hooks', ARRAY['ticket.created']);
SELECT webhook.disable_profile('bench');
INSERT INTO tickets (summary, status_id, agent_id, priority_id)
SELECT 'Printer on fire ' || g, 1, 1 + g % 2, 1 + g % 4 FROM generate_series(1, $n) g;
SQL
echo "== $n held deliveries, waiting for the worker to expand them"
until [ "$(psql -c "SELECT count(*) FROM webhook.delivery WHERE status = 'held'")" -ge "$n" ]; do sleep 0.5; done
psql -c "CHECKPOINT" >/dev/null

drain() {
    local label=$1
    psql -c "TRUNCATE webhook.attempt" -c "UPDATE webhook.delivery SET status = 'held', attempts = 0" >/dev/null
    psql -c "SELECT webhook.enable_profile('bench')" >/dev/null
    until [ "$(psql -c "SELECT count(*) FROM webhook.delivery WHERE status = 'delivered'")" -ge "$n" ]; do sleep 0.5; done
    psql -c "SELECT webhook.disable_profile('bench')" >/dev/null
    psql -c "SELECT round($n / extract(epoch FROM max(started_at + duration_ms * interval '1 ms') - min(started_at)))::int,
                    count(*) FILTER (WHERE outcome <> 'response' OR response_status <> 200)
               FROM webhook.attempt" | {
        IFS='|' read -r rate failures
        printf "%-40s %10s %8.3f %9s\n" "$label" "$rate" "$(echo "$rate / $ceiling" | bc -l)" "$failures"
    }
}

echo
echo "delivery benchmark: $n deliveries, one profile, nginx on 127.0.0.1"
printf "%-40s %10s %8s %9s\n" "set-up" "per second" "ratio" "failures"
printf "%-40s %10s %8.3f %9s\n" "wrk -t2 -c64 (ceiling)" "$ceiling" 1 "-"
drain "webhook, default settings"
psql -c "ALTER SYSTEM SET webhook.max_per_profile = 64" -c "SELECT pg_reload_conf()" >/dev/null
drain "webhook, max_per_profile = 64"
