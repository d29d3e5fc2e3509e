"""The base of the tests' loopback HTTP servers: bound in the constructor, served from a thread, stopped once.

A subclass passes its handler class (usually a ``QuietHandler``) to ``__init__`` and may set
``request_queue_size``, ``quiet_disconnects``, ``thread_name`` and ``base_path`` (what ``base_url`` ends with,
e.g. ``/v1``).
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

HOST = "127.0.0.1"


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps test output quiet and answers with one body, ignoring a client that hung up."""

    def log_message(self, *args: Any) -> None:
        pass

    def send_body(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    # A handler parked in a hang fault must neither keep the process alive nor block server_close().
    daemon_threads = True

    def __init__(self, owner: LoopbackHTTPServer, port: int, handler: type[BaseHTTPRequestHandler]):
        self.owner = owner
        self.request_queue_size = owner.request_queue_size  # listen() reads it inside super().__init__
        super().__init__((HOST, port), handler)

    def handle_error(self, request, client_address) -> None:
        if self.owner.quiet_disconnects and isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class LoopbackHTTPServer:
    # The default (5) resets connections under a burst of concurrent clients.
    request_queue_size = 128
    # Set where clients hanging up mid-transfer is part of the test, so it does not print tracebacks.
    quiet_disconnects = False
    thread_name = "loopback-http"
    base_path = ""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0):
        # Bound here, not in start(), so the URL can be handed out before the server runs.
        self._httpd = _Server(self, port, handler)
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}{self.base_path}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:  # shutdown() waits for serve_forever, so it would block forever without one
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
