# Shared by the benchmarks: a throwaway cluster and a private nginx, both
# on loopback or a socket in a temporary directory, removed on exit.
#
#   source test/bench/lib.sh
#   bench_cluster "extra postgresql.conf lines"   # starts it; defines psql
#   bench_nginx                                   # sets $nginx_port
#   bench_profile NAME URL                        # schema, extension, a profile
PGBIN=/usr/lib/postgresql/15/bin
bench_dir=$(mktemp -d /tmp/webhook-bench.XXXXXX)
chmod 755 "$bench_dir"; chown postgres: "$bench_dir"
bench_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# as postgres, from a directory it can enter: the clone may be one it cannot
as_pg() { (cd "$bench_dir" && runuser -u postgres -- "$@"); }
psql() { as_pg "$PGBIN/psql" -X -q -At -h "$bench_dir" -p "$bench_port" -d postgres -v ON_ERROR_STOP=1 "$@"; }

bench_cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$bench_dir/data" -m immediate stop >/dev/null 2>&1 || true
    [ -f "$bench_dir/nginx.pid" ] && kill "$(cat "$bench_dir/nginx.pid")" 2>/dev/null || true
    [ -n "${bench_pids:-}" ] && kill $bench_pids 2>/dev/null || true
    rm -rf "$bench_dir"
}
trap bench_cleanup EXIT

bench_cluster() {
    as_pg "$PGBIN/initdb" -D "$bench_dir/data" -A trust >/dev/null
    cat >> "$bench_dir/data/postgresql.conf" <<CONF
shared_preload_libraries = 'webhook'
listen_addresses = ''
unix_socket_directories = '$bench_dir'
port = $bench_port
shared_buffers = 512MB
max_wal_size = 4GB
log_min_messages = warning
${1:-}
CONF
    as_pg "$PGBIN/pg_ctl" -D "$bench_dir/data" -l "$bench_dir/log" -w start >/dev/null
}

# nginx on 127.0.0.1 only, answering 200 to everything
bench_nginx() {
    nginx_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$bench_dir/nginx"
    cat > "$bench_dir/nginx.conf" <<CONF
worker_processes 1;
pid $bench_dir/nginx.pid;
error_log $bench_dir/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $bench_dir/nginx;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nginx_port;
        location / { return 200 '{"ok":true}'; }
    }
}
CONF
    /usr/sbin/nginx -c "$bench_dir/nginx.conf"
}

# The sample ticket schema, the extension, and a profile NAME sending
# ticket.created to URL.
bench_profile() {
    psql < test/sql/sample_schema.sql >/dev/null
    psql >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION webhook;
SELECT webhook.define_ticket_events('tickets', 'actions');
SELECT webhook.create_profile('$1', '$2', ARRAY['ticket.created']);
SQL
}

# The pid of the webhook worker of database postgres.
bench_worker_pid() {
    psql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'webhook worker' AND datname = 'postgres'"
}

# The pid of that worker's sender: a child of this cluster's postmaster
# (it has no database connection, so pg_stat_activity does not list it).
bench_sender_pid() {
    pgrep -P "$(head -1 "$bench_dir/data/postmaster.pid")" -f 'webhook sender for database postgres'
}

# Until nothing waits to be sent: no queued change, no delivery pending or
# retrying (cheap: their own index), then none on the wire.  A count over
# webhook.delivery would read the whole table at each poll: on a backlog of
# a million, seconds of CPU taken from what is measured.
bench_wait_drained() {
    until [ "$(psql -c "SELECT NOT EXISTS (SELECT 1 FROM webhook.occurrence)
                           AND NOT EXISTS (SELECT 1 FROM webhook.delivery
                                            WHERE status IN ('pending', 'retrying'))")" = t ]; do
        sleep 1
    done
    # then once more with what is on the wire, which may come back to retry
    until [ "$(psql -c "SELECT NOT EXISTS (SELECT 1 FROM webhook.occurrence)
                           AND NOT EXISTS (SELECT 1 FROM webhook.delivery
                                            WHERE status IN ('pending', 'sending', 'retrying'))")" = t ]; do
        sleep 0.2
    done
}

# Until every queued change is a delivery.
bench_wait_expanded() {
    until [ "$(psql -c "SELECT NOT EXISTS (SELECT 1 FROM webhook.occurrence)")" = t ]; do sleep 1; done
}
