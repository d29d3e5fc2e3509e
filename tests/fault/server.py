"""The loopback HTTP server the fault run's sources come from: real files plus fault routes, with byte counters.

Routes are registered per URL path (the path as the client sends it, percent-encoding included, is decoded before
lookup, so a path with shell metacharacters or ``%2F`` names one route). Each route answers one way:
- ``File``: the file, with single-range ``Range`` support (ffprobe seeks over HTTP; yt-dlp resumes);
- ``Status``: an HTTP error (404);
- ``Throttled``: 429 with ``Retry-After`` for the first ``times`` GETs, then the file (a transient fault);
- ``ShortBody``: states the full ``Content-Length`` but closes after ``fraction`` of it (a cut transfer).
Per route it counts requests and the body bytes it managed to write, so a test can prove a file was *not* fetched.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

try:  # as tests.fault (python -m tests.fault.run from the repo root)
    from ..loopback import LoopbackHTTPServer, QuietHandler
except ImportError:  # as fault, under pytest: tests/ (no __init__.py) is on sys.path, not the repo root
    from loopback import LoopbackHTTPServer, QuietHandler

CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class File:
    path: Path
    content_type: str = "video/mp4"


@dataclass(frozen=True)
class Status:
    code: int


@dataclass(frozen=True)
class Throttled:
    file: File
    times: int = 1


@dataclass(frozen=True)
class ShortBody:
    file: File
    fraction: float = 0.5


Route = File | Status | Throttled | ShortBody


@dataclass
class RouteStats:
    requests: int = 0
    bytes_sent: int = 0
    statuses: list[int] = field(default_factory=list)


class MediaServer(LoopbackHTTPServer):
    request_queue_size = 64
    # A client hanging up mid-transfer (the prober, yt-dlp's sniffing) is part of the run, not an error.
    quiet_disconnects = True
    thread_name = "fault-media"

    def __init__(self, port: int = 0):
        self.routes: dict[str, Route] = {}
        self.stats: dict[str, RouteStats] = {}
        self._gets: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__(self._handler_class(), port)

    def url(self, path: str) -> str:
        """The URL of a route path; characters a URL cannot hold raw stay raw here (the client encodes them)."""
        return f"{self.base_url}{path}"

    def add(self, path: str, route: Route) -> None:
        self.routes[path] = route

    def reset(self) -> None:
        """Counters and throttles back to zero (the reference run sees the same faults again)."""
        with self._lock:
            self.stats.clear()
            self._gets.clear()

    def bytes_sent(self, path: str) -> int:
        with self._lock:
            return self.stats.get(path, RouteStats()).bytes_sent

    def _record(self, path: str, status: int | None = None, sent: int = 0, request: bool = False) -> None:
        with self._lock:
            s = self.stats.setdefault(path, RouteStats())
            s.requests += request
            s.bytes_sent += sent
            if status is not None:
                s.statuses.append(status)

    def _handler_class(self):
        server = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                route = server.routes.get(path)
                server._record(path, request=True)
                if route is None or isinstance(route, Status):
                    code = route.code if route else 404
                    return self._error(path, code)
                if isinstance(route, Throttled):
                    with server._lock:
                        n = server._gets.get(path, 0)
                        if not head:
                            server._gets[path] = n + 1
                    if n < route.times:
                        return self._error(path, 429, {"Retry-After": "1"})
                    route = route.file
                if isinstance(route, ShortBody):
                    return self._send_file(path, route.file, head, stop_after=route.fraction)
                return self._send_file(path, route, head)

            def _error(self, path: str, code: int, headers: dict[str, str] | None = None) -> None:
                body = f"{code}\n".encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                server._record(path, status=code)

            def _send_file(self, path: str, route: File, head: bool, stop_after: float | None = None) -> None:
                size = route.path.stat().st_size
                start, end, status = 0, size - 1, 200
                m = _RANGE.match(self.headers.get("Range", "").strip())
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    else:  # a suffix range: the last N bytes
                        start = max(0, size - int(m.group(2)))
                    if start >= size or start > end:
                        return self._error(path, 416, {"Content-Range": f"bytes */{size}"})
                    status = 206
                length = end - start + 1
                self.send_response(status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                server._record(path, status=status)
                if head:
                    return
                limit = length if stop_after is None else int(length * stop_after)
                sent = 0
                try:
                    with open(route.path, "rb") as fh:
                        fh.seek(start)
                        while sent < limit:
                            chunk = fh.read(min(CHUNK, limit - sent))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            sent += len(chunk)
                            server._record(path, sent=len(chunk))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if stop_after is not None:
                    self.close_connection = True  # the promised length never arrives

        return Handler
