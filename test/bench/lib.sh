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

# The pid of the sender, which serves every database.
bench_sender_pid() {
    psql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'webhook sender'"
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

# A receiver on 127.0.0.1 that notes, one line per request read, the time
# it read it, the last part of its path and the body's object_id, in FILE;
# sets $recv_port.
bench_timing_receiver() {
    recv_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 - "$recv_port" "$1" <<'PY' &
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, path = int(sys.argv[1]), sys.argv[2]
out = open(path, "w", buffering=1)
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        now = time.time()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        out.write("%.6f %s %s\n" % (now, self.path.rsplit("/", 1)[1], json.loads(body)["object_id"]))
    def log_message(self, *args):
        pass
ThreadingHTTPServer.request_queue_size = 128   # not 5: a burst of connections must not wait for SYN retries
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
    bench_pids="${bench_pids:-} $!"
    sleep 0.5
}
