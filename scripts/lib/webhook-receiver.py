#!/usr/bin/env python3
"""Alertmanager's webhook receiver for local runs.

    webhook-receiver.py PORT FILE [ADDRESS]

Listens on ADDRESS:PORT (default 127.0.0.1) and appends every POST, whatever its path, to
FILE ("-": standard output) as a JSON line {"received_at": <unix seconds>, "path": "/page",
"notification": <Alertmanager's body>}; the path tells the receivers apart.
GET /-/healthy answers 200, for readiness checks.

With WEBHOOK_REFUSE_FILE set (the fire drill sets it), a POST to a path that file lists
(one a line; no file, none) is answered 503, a receiver that fails as Alertmanager would
see one, and appended with "refused": true.
"""

import contextlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def refused(path):
    try:
        with open(os.environ["WEBHOOK_REFUSE_FILE"], encoding="utf-8") as listed:
            return path in listed.read().split()
    except (KeyError, FileNotFoundError):
        return False
    except (OSError, ValueError) as e:   # a list that cannot be read: deliver, and say why
        sys.stderr.write(f"WEBHOOK_REFUSE_FILE unreadable ({e}): {path} not refused\n")
        return False


class Handler(BaseHTTPRequestHandler):
    log, lock = sys.stdout, threading.Lock()

    def do_POST(self):
        try:
            notification = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            return self.send_error(400, "not JSON")
        refuse = refused(self.path)
        record = {"received_at": time.time(), "path": self.path, "notification": notification}
        line = json.dumps({**record, "refused": True} if refuse else record, separators=(",", ":"))
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()
        self.reply(503 if refuse else 200)

    def do_GET(self):
        self.reply(200 if self.path == "/-/healthy" else 404)

    def reply(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass   # FILE is the record; a stderr line per request would be noise


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    port, path, address = int(sys.argv[1]), sys.argv[2], (sys.argv[3:] or ["127.0.0.1"])[0]
    with contextlib.nullcontext(sys.stdout) if path == "-" else open(path, "a", encoding="utf-8") as Handler.log:
        ThreadingHTTPServer((address, port), Handler).serve_forever()
