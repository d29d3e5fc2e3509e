"""`saven view --serve`: the site and the dataset over HTTP on 127.0.0.1, with byte ranges for the player."""

from __future__ import annotations

import os
import re
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlsplit

from schemas.store import DatasetLike, DatasetStore

class _FileSlice:
    """The bytes of one range of a file, for ``copyfile``: a Range request must not send the whole file."""

    def __init__(self, f, length: int):
        self.f, self.left = f, length

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


# Never served, wherever they sit: the LLM request cache (prompts and transcripts), the commit markers, and any
# hidden file or folder (a cookie jar, a temp file).
PRIVATE_FOLDERS = frozenset({"_cache", "_committed"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class _Handler(SimpleHTTPRequestHandler):
    """Serves the viewer and the dataset only (nothing else under their common folder, nothing private in them),
    with byte ranges: the browser seeks in a video by asking for a range, which ``http.server`` alone does not
    answer. Requests must name this loopback server as their Host: a web page whose name an attacker pointed at
    127.0.0.1 (DNS rebinding) is not answered."""

    allowed: tuple[Path, ...] = ()

    def translate_path(self, path: str) -> str:
        # Resolved first (symlinks followed), then checked: a link inside the dataset cannot lead out of it.
        local = Path(super().translate_path(path)).resolve()
        for base in self.allowed:
            if local == base or local.is_relative_to(base):
                inside = local.relative_to(base).parts
                if not any(part.startswith(".") or part in PRIVATE_FOLDERS for part in inside):
                    return str(local)
        return str(Path(self.directory) / ".not-served" / "404")

    def _host_ok(self) -> bool:
        try:
            host = urlsplit("//" + (self.headers.get("Host") or "").strip())
            name, port = host.hostname, host.port
        except ValueError:  # a malformed Host (a port that is no number)
            return False
        return name in LOOPBACK_HOSTS and port in (None, self.server.server_address[1])

    def send_head(self):
        if not self._host_ok():
            self.send_error(400, "this server answers for 127.0.0.1 only")
            return None
        path = self.translate_path(self.path)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        first, last = m.groups() if m else ("", "")
        # No range, an invalid one (last before first) or a malformed one: the whole file (RFC 9110, 14.2).
        if (first, last) == ("", "") or (first and last and int(last) < int(first)) or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start, end = (max(size - int(last), 0), size - 1) if first == "" else (
            int(first), min(int(last) if last else size - 1, size - 1))
        if start > end:  # starts past the end: unsatisfiable
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _FileSlice(f, end - start + 1)


def make_server(index: Path, dataset: DatasetLike, port: int = 8000) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server for the site on 127.0.0.1 only (the data is not for the network); returns it and the URL of
    index.html. Call ``serve_forever()`` on it."""
    site = Path(index).resolve().parent
    data = DatasetStore.of(dataset).local_path().resolve()
    root = Path(os.path.commonpath([site, data]))
    handler = type("ViewerHandler", (_Handler,), {"allowed": (site, data)})
    server = ThreadingHTTPServer(("127.0.0.1", port),
                                 lambda *a, **kw: handler(*a, directory=str(root), **kw))
    url = f"http://127.0.0.1:{server.server_address[1]}/{quote(Path(index).resolve().relative_to(root).as_posix())}"
    return server, url

