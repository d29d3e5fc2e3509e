"""A small real HTTP server speaking ``POST /v1/chat/completions``, for faults the real vLLM cannot produce on demand.

It binds 127.0.0.1 on a free port and runs in a thread. What it answers is programmable per request:
``queue`` (consumed first, FIFO) then ``responder(body) -> action``. Actions:
- ``Reply(content)`` a normal completion (content may be any text, e.g. schema-breaking JSON);
- ``Fail(status)`` an HTTP error (500, 429, 400 ...);
- ``Hang(seconds)`` no answer until the client gives up (bounded, released on ``stop``).
The default responder answers every request with a valid instance of the JSON schema in its ``response_format``.
Every request body is recorded (``requests``), and the most requests seen in flight at once (``max_in_flight``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from loopback import LoopbackHTTPServer, QuietHandler


@dataclass(frozen=True)
class Reply:
    content: str
    finish_reason: str = "stop"
    delay_s: float = 0.0


@dataclass(frozen=True)
class Fail:
    status: int = 500
    message: str = "injected failure"


@dataclass(frozen=True)
class Hang:
    seconds: float = 5.0


Action = Reply | Fail | Hang
Responder = Callable[[dict[str, Any]], Action]


def schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("schema")


def schema_name_of(body: dict[str, Any]) -> str:
    fmt = body.get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("name", "")


def instance_of(schema: dict[str, Any], path: str = "value") -> Any:
    """A valid instance of a (strict, ref-free) JSON schema; strings differ per field so options stay distinct."""
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return instance_of(schema["anyOf"][0], path)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: instance_of(sub, f"{path}.{name}") for name, sub in props.items()}
    if kind == "array":
        n = max(schema.get("minItems", 1), 1)
        return [instance_of(schema.get("items", {"type": "string"}), f"{path}[{i}]") for i in range(n)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0.0))
    if kind == "boolean":
        return True
    text = f"text for {path}"
    min_len, max_len = schema.get("minLength", 0), schema.get("maxLength", 10_000)
    text = text.ljust(min_len, ".")
    return text[:max_len]


def schema_responder(body: dict[str, Any]) -> Action:
    schema = schema_of(body)
    if schema is None:
        return Reply("hello")
    return Reply(json.dumps(instance_of(schema)))


class FakeOpenAIServer(LoopbackHTTPServer):
    model = "fake-model"
    thread_name = "fake-openai"
    base_path = "/v1"

    def __init__(self, responder: Responder = schema_responder):
        self.responder = responder
        self.queue: list[Action] = []
        self.requests: list[dict[str, Any]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        super().__init__(self._handler_class())

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def stop(self) -> None:
        self._released.set()  # a handler parked in a Hang would otherwise hold its client until it times out
        super().stop()

    def _next_action(self, body: dict[str, Any]) -> Action:
        with self._lock:
            self.requests.append(body)
            if self.queue:
                return self.queue.pop(0)
        return self.responder(body)

    def _handler_class(self):
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    self._answer(body)
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _answer(self, body: dict[str, Any]) -> None:
                action = server._next_action(body)
                if isinstance(action, Hang):
                    server._released.wait(action.seconds)
                    return  # the client has given up; closing the socket without a reply
                if isinstance(action, Fail):
                    self._send(action.status, {"error": {"message": action.message, "type": "injected",
                                                         "code": action.status}})
                    return
                if action.delay_s:
                    time.sleep(action.delay_s)
                prompt_chars = sum(len(m.get("content") or "") for m in body.get("messages", []))
                self._send(200, {
                    "id": f"chatcmpl-fake-{server.count}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", server.model),
                    "choices": [{"index": 0, "finish_reason": action.finish_reason,
                                 "message": {"role": "assistant", "content": action.content}}],
                    "usage": {"prompt_tokens": prompt_chars // 4 + 1,
                              "completion_tokens": len(action.content) // 4 + 1,
                              "total_tokens": prompt_chars // 4 + len(action.content) // 4 + 2},
                })

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                self.send_body(status, json.dumps(payload).encode())

        return Handler
