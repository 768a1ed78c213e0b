#!/usr/bin/env python3
"""A local records webhook for benchmarks: answers 200 to every POST on a Unix
socket and counts the records it got (printed at exit, on SIGTERM or SIGINT).

    python3 bench/scripts/webhook-receiver.py /tmp/records.sock
"""
import json
import os
import signal
import socketserver
import sys
from http.server import BaseHTTPRequestHandler

records = 0
posts = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global records, posts
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        batch = json.loads(body)
        records += len(batch) if isinstance(batch, list) else 1
        posts += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    server = socketserver.UnixStreamServer(path, Handler)

    def stop(*_):
        print(f"records={records} posts={posts}", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
