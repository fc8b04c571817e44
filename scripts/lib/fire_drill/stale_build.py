#!/usr/bin/env python3
"""A stand-in for a farol build that no longer exports what the SLOs read: /metrics has
farol_build_info and nothing else, /health answers ok. The fire drill declares it as a
farol target to prove SLOMetricAbsent (the target is up, the SLI series are missing).

    stale_build.py PORT SECONDS

Serves 127.0.0.1:PORT and exits by itself after SECONDS.
"""

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS = b'# TYPE farol_build_info gauge\nfarol_build_info{version="stale",commit="none"} 1\n'
ANSWERS = {"/metrics": (METRICS, "text/plain; version=0.0.4; charset=utf-8"),
           "/health": (b'{"status":"ok"}', "application/json")}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        body, kind = ANSWERS.get(self.path.split("?")[0], (b"", "text/plain"))
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main(port, seconds):
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Timer(seconds, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
