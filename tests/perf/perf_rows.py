"""The one row format of the `make perf` table: a measured value, the baseline measured in the same run, their
ratio, the target and whether it was met. run_all.py adds the machine; benchmarks emit these under ``"rows"``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The benchmark's JSON report (run_all.py reads its "rows"), also printed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def row(metric: str, value: float | None, *, baseline: float | None = None, target: str = "",
        passed: bool | None = None, unit: str = "", baseline_name: str = "", note: str = "") -> dict[str, Any]:
    """``ratio`` is value / baseline; ``target`` says what it is checked against ("ratio <= 1.3", "value <= 2.5");
    ``passed`` None means reported without a target."""
    ratio = round(value / baseline, 3) if value is not None and baseline else None
    return {"metric": metric, "value": None if value is None else round(float(value), 4), "unit": unit,
            "baseline": None if baseline is None else round(float(baseline), 4), "baseline_name": baseline_name,
            "ratio": ratio, "target": target, "passed": passed, "note": note}
