"""Live progress of a build-dataset run: what the flow reports, what the LLM server is doing, shown with rich.

The flow keeps a ``ProgressBoard`` (``<dataset>/_progress.json``, rewritten atomically on every change): videos to
do, committed and failed, and the stage each batch in flight is in. Anyone can watch it: ``watch`` redraws a table
every couple of seconds from that file and from the LLM server's Prometheus ``/metrics`` (requests running and
waiting, generated and prompt tokens per second), until told to stop. ``saven build`` and ``make demo`` show it
while the flow runs, so a long run is never a silent terminal.

Names in the board are run data (source counts, batch numbers, stage names), never text from a video.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from schemas.store import is_remote

PROGRESS_FILE = "_progress.json"
REFRESH_S = 2.0


def progress_path(dataset_dir: Path | str) -> Path:
    """Where the run's board is, on the machine of the flow (the watcher reads it there): inside a local dataset,
    or, for an object-store dataset, in the system temp folder under a name made from its URL."""
    if is_remote(dataset_dir):
        digest = hashlib.sha256(str(dataset_dir).rstrip("/").encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / "saven-progress"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{digest}{PROGRESS_FILE}"
    return Path(dataset_dir) / PROGRESS_FILE


class ProgressBoard:
    """The run's progress, shared by its concurrent batches (threads of the flow process)."""

    def __init__(self, dataset_dir: Path, total: int, skipped: int = 0):
        self.path = progress_path(dataset_dir)
        self._lock = threading.Lock()
        self.state = {"total": total, "skipped_committed": skipped, "committed": 0, "failed": 0, "batches": {},
                      "started_at": time.time(), "updated_at": time.time(), "finished": False}
        self._write()

    def _write(self) -> None:
        self.state["updated_at"] = time.time()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)

    def stage(self, batch: int, what: str) -> None:
        with self._lock:
            self.state["batches"][str(batch)] = what
            self._write()

    def batch_done(self, batch: int, committed: int, failed: int) -> None:
        with self._lock:
            self.state["batches"].pop(str(batch), None)
            self.state["committed"] += committed
            self.state["failed"] += failed
            self._write()

    def finish(self) -> None:
        with self._lock:
            self.state["finished"] = True
            self.state["batches"] = {}
            self._write()


# The boards of the flow runs in this process, by run key. Here, in an imported module, because a served flow
# function is pickled by value: its own module's globals would be copies.
BOARDS: dict[str, ProgressBoard] = {}


def read_progress(dataset_dir: Path) -> dict | None:
    try:
        return json.loads(progress_path(dataset_dir).read_text())
    except (OSError, ValueError):
        return None


# --- the LLM server's side: vLLM's Prometheus metrics --------------------------------------------------------

@dataclass(frozen=True)
class ServerSample:
    at: float
    running: float
    waiting: float
    prompt_tokens: float
    generation_tokens: float


def sample_server(metrics_url: str, timeout_s: float = 2.0) -> ServerSample | None:
    """vLLM's request gauges and token counters (summed over models); None when the server does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(metrics_url, timeout=timeout_s).text
    except httpx.HTTPError:
        return None
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[s.name] = values.get(s.name, 0.0) + float(s.value)
    return ServerSample(time.time(), values.get("vllm:num_requests_running", 0.0),
                        values.get("vllm:num_requests_waiting", 0.0), values.get("vllm:prompt_tokens_total", 0.0),
                        values.get("vllm:generation_tokens_total", 0.0))


def metrics_url_of(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port/metrics``."""
    return base_url.rstrip("/").removesuffix("/v1") + "/metrics"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def progress_table(progress: dict | None, now: ServerSample | None, before: ServerSample | None) -> Table:
    table = Table(title="build-dataset", show_header=False, expand=False)
    table.add_column("what", style="bold")
    table.add_column("state")
    if progress is None:
        table.add_row("videos", "waiting for the flow to start")
    else:
        done = progress["committed"] + progress["failed"]
        table.add_row("videos", f"{done}/{progress['total']} done ({progress['committed']} committed, "
                                f"{progress['failed']} failed; {progress['skipped_committed']} committed before)")
        end = progress["updated_at"] if progress["finished"] else time.time()
        table.add_row("elapsed", _clock(end - progress["started_at"]))
        for batch, what in sorted(progress["batches"].items(), key=lambda kv: int(kv[0])):
            table.add_row(f"batch {batch}", what)
    if now is None:
        table.add_row("LLM server", "not answering /metrics")
    else:
        line = f"{now.running:.0f} running, {now.waiting:.0f} waiting"
        if before is not None and now.at > before.at:
            dt = now.at - before.at
            line += (f"; {(now.generation_tokens - before.generation_tokens) / dt:.1f} generated tok/s, "
                     f"{(now.prompt_tokens - before.prompt_tokens) / dt:.0f} prompt tok/s")
        table.add_row("LLM server", line)
    return table


def progress_line(progress: dict | None, now: ServerSample | None, before: ServerSample | None) -> str:
    """The table as one line, for a terminal that is a log file."""
    labels, values = progress_table(progress, now, before).columns
    return " | ".join(f"{a}: {b}" for a, b in zip(labels.cells, values.cells))


def watch(dataset_dir: Path, metrics_url: str | None, stop: Callable[[], bool], *, console: Console | None = None,
          refresh_s: float = REFRESH_S, log_every_s: float = 30.0) -> None:
    """Redraw the progress table every ``refresh_s`` until ``stop()`` is true (checked at each redraw). Where the
    console is not a terminal (a log, CI), one line every ``log_every_s`` instead."""
    console = console or Console(stderr=True)
    before = None
    if not console.is_terminal:
        last = 0.0
        while True:
            now = sample_server(metrics_url) if metrics_url else None
            done = stop()
            if done or time.time() - last >= log_every_s:
                console.print(progress_line(read_progress(dataset_dir), now, before), highlight=False,
                              soft_wrap=True)
                last = time.time()
                before = now or before
            if done:
                return
            time.sleep(refresh_s)
    with Live(progress_table(read_progress(dataset_dir), None, None), console=console, auto_refresh=False) as live:
        while True:
            now = sample_server(metrics_url) if metrics_url else None
            live.update(progress_table(read_progress(dataset_dir), now, before), refresh=True)
            before = now or before
            if stop():
                break
            time.sleep(refresh_s)


class Watcher:
    """``watch`` in a background thread: ``with Watcher(dataset, url): run_the_flow()``."""

    def __init__(self, dataset_dir: Path, metrics_url: str | None, console: Console | None = None):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=watch, args=(dataset_dir, metrics_url, self._stop.is_set),
                                        kwargs={"console": console}, daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * REFRESH_S + 5)
