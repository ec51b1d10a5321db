"""A local webhook receiver (http.server in a thread on 127.0.0.1) and its faults.

    with WebhookReceiver() as hook:            # 200, records every request
    with WebhookReceiver(status=500) as hook:  # a receiver that fails
    with WebhookReceiver(hang=True) as hook:   # accepts the request and never answers
        hook.url, hook.requests
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class Request:
    """What the receiver got: method, path, headers and the JSON body (None if it was not JSON)."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None


class WebhookReceiver:
    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status, self.hang = status, hang
        self.requests: list[Request] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(Request("POST", self.path, dict(self.headers.items()), body))
                if receiver.hang:
                    receiver.release.wait()
                    return
                answer = b'{"ok": true}' if receiver.status < 300 else b'{"error": "receiver failed"}'
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/kolabmon"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
