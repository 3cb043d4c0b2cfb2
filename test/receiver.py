#!/usr/bin/env python3
"""A webhook receiver for tests and the demo: records every request it gets.

Listens on 127.0.0.1 only.  Each request is appended to the log file as one
JSON line: {"received_at", "method", "path", "headers", "body", "answer"},
where answer is the status it answers with, or "hang" or "reset".

How it answers depends on the path:
  /status/NNN     answers with status NNN (a 3xx with a Location header)
  /retry-after/S  answers 503 with Retry-After: S
  /slow/MS        waits MS milliseconds, then answers 200
  /hang           never answers (until the client gives up)
  /huge/MB        answers 200 with a body of MB megabytes
  /flaky/PCT      answers 500 to PCT percent of requests, at random, else 200
  /reset          closes the connection without answering
  /fault/...      as the mode file says, read at each request: one of the
                  above without slashes ("status 500", "slow 200", "hang",
                  "reset", "huge 50"), "fail-if TEXT" (500 to a request
                  whose body holds TEXT, 200 to the others) or "ok"; a test
                  rewrites it to change the answer while requests flow
  anything else   answers 200 with {"ok": true}

With --tls-cert and --tls-key it speaks HTTPS; with --client-ca too it
requires a client certificate signed by that CA, and records its subject's
common name as "client_cn".  With --proxy it is a forward proxy: a request
for an absolute http:// URL is recorded and passed on to it, and its
answer passed back.
"""
import argparse
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def behaviour(self):
        parts = self.path.strip("/").split("/")
        if parts[0] == "fault":
            try:
                with open(self.server.mode_path) as f:
                    parts = f.read().split()
            except (FileNotFoundError, TypeError):
                parts = []
        return parts or ["ok"]

    def forward(self, body):
        import http.client
        import urllib.parse
        target = urllib.parse.urlsplit(self.path)
        conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        path = target.path + ("?" + target.query if target.query else "")
        conn.request(self.command, path or "/", body=body, headers=headers)
        answer = conn.getresponse()
        reply = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        conn.close()

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.server.proxy:
            self.record(body, "proxied")
            self.forward(body)
            return
        parts = self.behaviour()
        if parts[0] == "flaky" and len(parts) > 1 and parts[1].isdigit():
            parts = ["status", "500"] if random.random() * 100 < int(parts[1]) else ["ok"]
        elif parts[0] == "fail-if" and len(parts) > 1:
            parts = ["status", "500"] if " ".join(parts[1:]).encode() in body else ["ok"]
        answer = 200
        if parts[0] == "status" and len(parts) > 1 and parts[1].isdigit():
            answer = int(parts[1])
        elif parts[0] == "retry-after":
            answer = 503
        elif parts[0] in ("hang", "reset"):
            answer = parts[0]
        self.record(body, answer)

        status, reply, extra = 200, b'{"ok": true}', {}
        if parts[0] == "status" and len(parts) > 1 and parts[1].isdigit():
            status, reply = int(parts[1]), b'{"status": %s}' % parts[1].encode()
            if 300 <= status < 400:
                extra["Location"] = "/redirected"
        elif parts[0] == "retry-after" and len(parts) > 1:
            status, reply = 503, b'{"status": 503}'
            extra["Retry-After"] = parts[1]
        elif parts[0] == "slow" and len(parts) > 1 and parts[1].isdigit():
            time.sleep(int(parts[1]) / 1000.0)
        elif parts[0] == "hang":
            time.sleep(3600)
        elif parts[0] == "reset":
            # an RST instead of a FIN: linger on, zero timeout
            import socket
            import struct
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        elif parts[0] == "huge" and len(parts) > 1 and parts[1].isdigit():
            size = int(parts[1]) * 1024 * 1024
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Receiver", "webhook-test")
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def record(self, body, answer):
        record = {
            "received_at": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "answer": answer,
        }
        peer = getattr(self.connection, "getpeercert", lambda: None)()
        if peer:
            record["client_cn"] = dict(x[0] for x in peer["subject"]).get("commonName")
        with log_lock:
            with open(self.server.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    do_POST = do_PUT = do_PATCH = do_GET = handle_any


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the chosen port here")
    parser.add_argument("--log", required=True, help="append requests here (JSON lines)")
    parser.add_argument("--mode-file", help="how /fault/... answers (see above)")
    parser.add_argument("--tls-cert", help="speak HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="and this key (PEM)")
    parser.add_argument("--client-ca", help="require a client certificate of this CA (PEM)")
    parser.add_argument("--proxy", action="store_true", help="be a forward proxy")
    args = parser.parse_args()

    # a listen backlog of 5 (the default) drops the SYNs of a burst of new
    # connections, which then wait a second for their retransmission
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.log_path = args.log
    server.mode_path = args.mode_file
    server.proxy = args.proxy
    if args.tls_cert:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(args.client_ca)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    open(args.log, "a").close()
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
