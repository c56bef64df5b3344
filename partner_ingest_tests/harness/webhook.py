"""A Slack-compatible incoming-webhook receiver on 127.0.0.1: records each POSTed JSON body."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WEBHOOK_TOKEN_PATH = "/services/T000/B000/s3cr3t-token"


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list]]:
    """(URL to POST to, list of (path, body) received); the server stops on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{WEBHOOK_TOKEN_PATH}", server.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
