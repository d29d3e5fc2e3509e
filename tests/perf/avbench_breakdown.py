"""Where AVBench's minutes go in the demo: each phase's wall seconds against the whole AVBench step's, from the
``report/timings.json`` that ``run_avbench`` wrote in the last ``make demo`` (``benchmark.timings``).

Rows: one per phase (each build filter, each model scored, each counterfactual condition, the report, the
lmms-eval export), value = the phase's wall seconds, baseline = the whole step's wall seconds (so ``ratio`` is
the phase's share). No targets: this is the map for batching what can be batched.

    python tests/perf/avbench_breakdown.py [OUT.json] [--timings out/demo/avbench/report/timings.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_rows import row, write_report

DEFAULT_TIMINGS = REPO / "out" / "demo" / "avbench" / "report" / "timings.json"


def breakdown_rows(timings: dict) -> list[dict]:
    total = timings["total_wall_s"]
    ranked = sorted(timings["phases"].items(), key=lambda kv: -kv[1]["wall_s"])
    rows = [row(f"AVBench phase: {name}", p["wall_s"], baseline=total, unit="s", baseline_name="AVBench wall s",
                target="none", note=f"{p['cpu_s']:.0f} CPU s in the demo's process") for name, p in ranked]
    rest = total - sum(p["wall_s"] for p in timings["phases"].values())
    rows.append(row("AVBench phase: the rest (loading the dataset, the split, writing the bench)", rest,
                    baseline=total, unit="s", baseline_name="AVBench wall s", target="none"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "avbench_breakdown.json")
    parser.add_argument("--timings", type=Path, default=DEFAULT_TIMINGS)
    args = parser.parse_args(argv)
    if not args.timings.is_file():
        raise SystemExit(f"{args.timings} not found: run `make demo` first (its AVBench step writes it)")
    timings = json.loads(args.timings.read_text())
    write_report(args.out, {"timings": str(args.timings), **timings, "rows": breakdown_rows(timings)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
