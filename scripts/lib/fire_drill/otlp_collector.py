#!/usr/bin/env python3
"""A stand-in for the OpenTelemetry Collector: takes OTLP over HTTP (POST /v1/traces),
keeps nothing and answers an empty success, so that farol's exports succeed. The fire
drill's farol sends its spans here; the traces scenario stops it (every export fails)
and starts it again on the same port.

    otlp_collector.py PORT

Serves 127.0.0.1:PORT until killed.
"""

import errno
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# a whole body at most: farol's batches of 512 spans are about 100 KB
MAX_BODY = 16 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # farol's exporter keeps its connection

    def do_POST(self):  # noqa: N802 (the standard library's name)
        length = int(self.headers.get("Content-Length") or -1)
        if self.path != "/v1/traces" or not 0 <= length <= MAX_BODY:
            self.send_response(404 if self.path != "/v1/traces" else 411)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        self.rfile.read(length)
        # an empty ExportTraceServiceResponse: full success
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main(port):
    # Started again on its port after the scenario's fault: a loopback connection may
    # hold the port as its source for a moment meanwhile.
    deadline = time.monotonic() + 10
    while True:
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
            break
        except OSError as err:
            if err.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
