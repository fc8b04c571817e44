#!/usr/bin/env python3
"""Alertmanager's webhook receiver for local runs (scripts/stand-ins/monitoring-stack.sh starts it).

    webhook-receiver.py PORT FILE [ADDRESS]

Listens on ADDRESS:PORT (default 127.0.0.1; the compose file's container gives 0.0.0.0).
Every POST, whatever its path, is appended to FILE ("-": standard output) as one JSON
line: {"received_at": <unix seconds>, "path": "/page", "notification": <Alertmanager's
JSON body>}. The path tells the receivers apart (alertmanager.yml gives each its own).
GET /-/healthy answers 200, for readiness checks.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(port, path, address):
    if path == "-":
        serve(port, sys.stdout, address)
    else:
        # FILE stays open for as long as the server runs: until this process is stopped
        with open(path, "a", encoding="utf-8") as log:
            serve(port, log, address)


def serve(port, log, address):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                notification = json.loads(body)
            except ValueError:
                self.send_error(400, "not JSON")
                return
            line = json.dumps({"received_at": time.time(), "path": self.path,
                               "notification": notification}, separators=(",", ":"))
            with lock:
                log.write(line + "\n")
                log.flush()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            self.send_response(200 if self.path == "/-/healthy" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass   # FILE is the record; one stderr line per request would only be noise

    ThreadingHTTPServer((address, port), Handler).serve_forever()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else "127.0.0.1")
