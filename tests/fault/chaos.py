"""An LLM chaos proxy on loopback: forwards to the real OpenAI-compatible server, and for a window answers faults.

The window opens at the ``start_after``-th request and lasts ``window_s`` seconds; inside it each request is answered
with a fault with probability ``fault_rate``:
- ``http_500``: a server error (the client retries with backoff, then gives up as transient);
- ``hang``: no answer for ``hang_s``, then the connection is dropped (what a client sees of a wedged server);
- ``garbage_body``: HTTP 200 whose JSON body is cut off (a broken server or proxy, not the model);
- ``garbage_content``: a well-formed completion whose content is not JSON of the schema (what a model gets wrong).
  The client treats such replies as the model's fault: a bounded number of retries, then a permanent failure. A
  request is therefore given that fault only as its *first* fault, so what ends a request that the chaos exhausts
  is always a server fault (transient), and the request is retried by the next run, not frozen as a hole.
Request bodies whose text matches ``capture`` are kept, so a check can see how data from the video was sent.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import Counter

import httpx

try:  # as tests.fault (python -m tests.fault.run from the repo root)
    from ..loopback import LoopbackHTTPServer, QuietHandler
except ImportError:  # as fault, under pytest: tests/ (no __init__.py) is on sys.path, not the repo root
    from loopback import LoopbackHTTPServer, QuietHandler

KINDS = ("http_500", "hang", "garbage_body", "garbage_content")


class ChaosProxy(LoopbackHTTPServer):
    thread_name = "chaos-proxy"
    base_path = "/v1"
    quiet_disconnects = True  # the fault run SIGKILLs flows with requests in flight: their resets are expected

    def __init__(self, upstream: str, *, seed: int = 0, start_after: int = 5, window_s: float = 60.0,
                 fault_rate: float = 0.8, hang_s: float = 15.0, capture: str | None = None,
                 kinds: tuple[str, ...] = KINDS):
        self.upstream = upstream.rstrip("/")
        self.kinds = kinds
        self.start_after, self.window_s, self.fault_rate, self.hang_s = start_after, window_s, fault_rate, hang_s
        self.capture = re.compile(capture, re.IGNORECASE) if capture else None
        self.captured: list[dict] = []
        self.requests = 0
        self.forwarded = 0
        self.faults: Counter[str] = Counter()
        self.opened_at: float | None = None
        self._faulted_keys: set[str] = set()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(None, connect=10.0))
        super().__init__(self._handler_class())

    def stop(self) -> None:
        self._released.set()  # a handler parked in a hang fault would otherwise hold its client for hang_s
        super().stop()
        self._client.close()

    def window_open(self) -> bool:
        return self.opened_at is not None and time.monotonic() - self.opened_at < self.window_s

    def summary(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "forwarded": self.forwarded, "faults": dict(self.faults),
                    "window_s": self.window_s, "window_opened": self.opened_at is not None}

    def _decide(self, body: dict) -> str | None:
        key = hashlib.sha256(json.dumps({k: v for k, v in body.items() if k != "seed"}, sort_keys=True)
                             .encode()).hexdigest()
        with self._lock:
            self.requests += 1
            if self.capture is not None and len(self.captured) < 200:
                text = json.dumps(body.get("messages", []), ensure_ascii=False)
                if self.capture.search(text):
                    self.captured.append(body)
            if self.opened_at is None and self.requests >= self.start_after:
                self.opened_at = time.monotonic()
            if not self.window_open() or self._rng.random() >= self.fault_rate:
                self.forwarded += 1
                return None
            kinds = [k for k in self.kinds if k != "garbage_content" or key not in self._faulted_keys]
            if not kinds:
                self.forwarded += 1
                return None
            kind = self._rng.choice(kinds)
            self._faulted_keys.add(key)
            self.faults[kind] += 1
            return kind

    def _handler_class(self):
        proxy = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                kind = proxy._decide(body) if self.path.rstrip("/").endswith("/chat/completions") else None
                if kind is None:
                    return self._forward(raw)
                if kind == "http_500":
                    return self.send_body(500, json.dumps({"error": {"message": "injected", "code": 500}}).encode())
                if kind == "hang":
                    proxy._released.wait(proxy.hang_s)
                    self.close_connection = True  # no reply at all
                    return
                if kind == "garbage_body":
                    return self.send_body(
                        200, b'{"id": "chatcmpl-chaos", "object": "chat.completion", "choices": [{"ind')
                content = '{"description": "cut off'  # garbage_content: not JSON of any schema
                return self.send_body(200, json.dumps({
                    "id": "chatcmpl-chaos", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "chaos"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode())

            def _forward(self, raw: bytes | None) -> None:
                root = proxy.upstream.removesuffix("/v1")
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "authorization", "accept")}
                try:
                    reply = proxy._client.request(self.command, root + self.path, content=raw, headers=headers)
                except httpx.HTTPError as exc:
                    return self.send_body(502, json.dumps({"error": {"message": f"upstream: {exc!r}"}}).encode())
                self.send_body(reply.status_code, reply.content, reply.headers.get("content-type", "application/json"))

        return Handler
