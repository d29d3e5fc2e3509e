"""`make perf`: run every benchmark script, each measuring a ratio against a baseline in the same run, and gather
their reports into out/perf/summary.json and out/perf/summary.md (with the machine they ran on)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCHES = {
    "media": ["tests/perf/bench_media.py"],
    "perception": ["tests/perf/bench_perception.py"],
    "llm": ["tests/perf/bench_llm.py"],
    "train": ["tests/perf/bench_train.py"],
}


def machine() -> dict:
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "platform": platform.platform(),
            "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHES)
    out_dir = REPO / "out" / "perf"
    out_dir.mkdir(parents=True, exist_ok=True)
    results, md = {"machine": machine(), "benchmarks": {}}, ["# SAVEn-Vid benchmarks", "",
                                                            f"Machine: `{json.dumps(machine())}`", ""]
    failed = []
    for name in names:
        report = out_dir / f"{name}.json"
        cmd = [sys.executable, *BENCHES[name], str(report)]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True)
        print(proc.stdout[-6000:], flush=True)
        if proc.returncode != 0 or not report.is_file():
            failed.append(name)
            print(proc.stderr[-4000:], file=sys.stderr)
            continue
        results["benchmarks"][name] = json.loads(report.read_text())
        md += [f"## {name}", "", "```", proc.stdout.strip()[-6000:], "```", ""]
    (out_dir / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    (out_dir / "summary.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out_dir / 'summary.json'} and {out_dir / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
