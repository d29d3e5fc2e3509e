"""Where AVBench's minutes go: wall and CPU seconds per phase of one ``run_avbench`` (each build filter, each
model, each counterfactual condition, the report, the export), written as ``report/timings.json`` and read by
``tests/perf/avbench_breakdown.py``.

CPU seconds are this process's (an in-process model's); a model served elsewhere (the ``openai`` adapters, the
build's LLM filters) spends its CPU in the server: its phase is mostly waiting here, so wall is the figure to read.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Iterator

from infra.stage import process_cpu_s


class PhaseTimer:
    """Accumulates wall and CPU seconds per named phase, in the order phases first ran."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), process_cpu_s()
        try:
            yield
        finally:
            spent = self.phases.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
            spent["wall_s"] += time.perf_counter() - wall
            spent["cpu_s"] += process_cpu_s() - cpu

    def as_dict(self) -> dict:
        return {"total_wall_s": round(time.perf_counter() - self._started, 3),
                "phases": {k: {m: round(v, 3) for m, v in p.items()} for k, p in self.phases.items()}}

    def write(self, path: Path) -> dict:
        from schemas.shards import write_bytes_atomic

        record = self.as_dict()
        write_bytes_atomic(Path(path), (json.dumps(record, indent=1) + "\n").encode())
        return record

    def line(self) -> str:
        """The phases by wall time, longest first: "score openai... 212 s, build filter blind 96 s, ..."."""
        ranked = sorted(self.phases.items(), key=lambda kv: -kv[1]["wall_s"])
        return ", ".join(f"{k} {p['wall_s']:.0f} s" for k, p in ranked)

