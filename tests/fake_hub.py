"""A loopback stand-in for the Hugging Face Hub: what ``huggingface_hub.snapshot_download`` asks of it, answered from
local folders (one per repository), at any commit the client names. It stands in for the hub only: the client,
its requests, the files and the checks on them are real.

Routes: ``GET /api/models/{repo}/revision/{rev}`` (a branch resolved to the repository's commit), ``GET
/api/models/{repo}/tree/{commit}`` (the file list), ``HEAD|GET /{repo}/resolve/{commit}/{path}`` (metadata with
``X-Repo-Commit`` and ``ETag``, then the bytes, ranges too). A repository given a commit (``commits``) has that
commit only: another one is "revision not found", as on the hub, so a wrong pin fails. Every request is logged in
``requests``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from loopback import LoopbackHTTPServer, QuietHandler

BRANCH_COMMIT = "0" * 40  # what a branch name resolves to


class _HubHandler(QuietHandler):
    def _repo(self, name: str) -> Path | None:
        folder = self.server.owner.repos.get(name)
        return folder if folder is not None and folder.is_dir() else None

    def _commit(self, name: str, rev: str) -> str | None:
        """The commit ``rev`` names in repository ``name`` (a branch: the repository's), or None when it has none
        such."""
        known = self.server.owner.commits.get(name)
        if not re.fullmatch(r"[0-9a-f]{40}", rev):
            return known or BRANCH_COMMIT
        return rev if known is None or rev == known else None

    def _route(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.owner.requests.append(f"{self.command} {path}")
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
            if self._repo(m[1]) is None:
                return self.send_body(404, b'{"error": "Repository not found"}')
            rev = self._commit(m[1], m[2])
            if rev is None:
                return self._no_revision(m[2])
            return self.send_body(200, json.dumps({"id": m[1], "sha": rev, "siblings": []}).encode())
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path):
            folder = self._repo(m[1])
            if folder is None:
                return self.send_body(404, b'{"error": "Repository not found"}')
            if self._commit(m[1], m[2]) is None:
                return self._no_revision(m[2])
            entries = [{"type": "file", "path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
                        "oid": _git_oid(p)} for p in sorted(folder.rglob("*")) if p.is_file()]
            return self.send_body(200, json.dumps(entries).encode())
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([0-9a-f]{40}|[^/]+)/(.+)", path):
            folder = self._repo(m[1])
            if folder is not None and self._commit(m[1], m[2]) is None:
                return self._no_revision(m[2])
            target = folder / m[3] if folder is not None else None
            if target is None or not target.is_file() or not target.resolve().is_relative_to(folder.resolve()):
                return self.send_body(404, b'{"error": "Entry not found"}')
            return self._file(target, m[2], head)
        self.send_body(404, b'{"error": "no such route"}')

    def _no_revision(self, rev: str) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "RevisionNotFound")
        self.send_header("X-Error-Message", f"Invalid rev id: {rev}")
        body = json.dumps({"error": f"Invalid rev id: {rev}"}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file(self, target: Path, revision: str, head: bool) -> None:
        data = target.read_bytes()
        first, last = 0, len(data) - 1
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            first = int(ranged[1])
            last = int(ranged[2]) if ranged[2] else last
        body = data[first:last + 1]
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", revision if re.fullmatch(r"[0-9a-f]{40}", revision) else BRANCH_COMMIT)
        self.send_header("ETag", f'"{_git_oid(target)}"')
        if ranged:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)


def _git_oid(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub(LoopbackHTTPServer):
    thread_name = "fake-hub"

    def __init__(self, repos: dict[str, Path], commits: dict[str, str] | None = None):
        self.repos = dict(repos)  # "org/name" -> the folder its files are in
        self.commits = dict(commits or {})  # "org/name" -> its one commit (absent: any commit serves the folder)
        self.requests: list[str] = []
        super().__init__(_HubHandler)
