"""Benchmark: how well does a whole build-dataset run keep the machine busy?

One real run of the flow (Prefect server, local Ray, vLLM CPU server) over the synthetic samples. Reported:
- ``flow wall / (stage work / cores)``: the run's wall time over the time its work would take if it were spread
  perfectly over the machine's cores (target <= 1.15). The work is the media and perception stages' seconds,
  measured per call, plus the CPU seconds of the LLM server's process tree while the run lasts (the server shares
  the cores; batches overlap, so the LLM stages' own wall times would count the same server time twice).
- CPU utilisation: CPU seconds of every process of the run (this process, Ray's workers, ffmpeg children and the
  LLM server's tree), sampled while it runs, over wall x cores.

    python tests/perf/bench_flow.py [out/perf/flow.json] [--samples 3]

Needs `make llm-server` (started here through the same code if it is not running) and starts the Prefect server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
import yaml

from perf_rows import row

TARGET = 1.15
LLM_STAGES = {"fuse", "qa"}


class TreeCPU:
    """CPU seconds of process trees, sampled in the background: a process that exits between samples keeps the
    last CPU time seen for it."""

    def __init__(self, roots: list[int], period_s: float = 0.5):
        self.roots, self.period_s = roots, period_s
        self.seen: dict[tuple[int, float], float] = {}  # (pid, create_time) -> cpu seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for root in self.roots:
            try:
                procs = [psutil.Process(root)]
                procs += procs[0].children(recursive=True)
            except psutil.Error:
                continue
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.seen[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def __enter__(self) -> "TreeCPU":
        self._sample()
        self.start = dict(self.seen)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def cpu_s(self) -> float:
        return sum(v - self.start.get(k, 0.0) for k, v in self.seen.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default=str(REPO / "out" / "perf" / "flow.json"))
    parser.add_argument("--samples", type=int, default=3, help="synthetic sample videos (75-130 s each)")
    parser.add_argument("--batch-size", type=int, default=2, help="2: two batches of the 3 samples overlap")
    parser.add_argument("--batches-in-flight", type=int, default=None, help="default: the profile's")
    args = parser.parse_args(argv)

    from infra import servers
    from schemas.settings import settings
    from devdata.samples import make_samples

    cfg = settings()
    servers.start_prefect_server(cfg)
    servers.start_llm_server(cfg)
    os.environ.update(servers.prefect_env(cfg))
    from flows.build_dataset import build_dataset  # after PREFECT_API_URL: the flow reports to our server

    work = Path(tempfile.mkdtemp(prefix="saven-bench-flow-"))
    try:
        samples_dir = cfg.paths.output_dir / "samples"
        truths = make_samples(samples_dir)[: args.samples]
        sources = work / "sources.yaml"
        sources.write_text(yaml.safe_dump([str(samples_dir / t.file) for t in truths]))
        llm_pid = json.loads((cfg.paths.run_dir / "llm-server.pid").read_text())["pid"]
        cores = len(os.sched_getaffinity(0))
        # A fresh LLM cache: every request reaches the server, as in a first run.
        with TreeCPU([os.getpid()]) as run_cpu, TreeCPU([llm_pid]) as llm_cpu:
            started = time.perf_counter()
            summary = build_dataset(sources=str(sources), output=str(work / "dataset"), batch_size=args.batch_size,
                                    batches_in_flight=args.batches_in_flight, llm_cache=str(work / "llm.sqlite"))
            wall = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)

    seconds = summary["seconds_by_stage"]
    stage_work = sum(v for k, v in seconds.items() if k not in LLM_STAGES)
    ideal = (stage_work + llm_cpu.cpu_s) / cores
    cpu_s = run_cpu.cpu_s + llm_cpu.cpu_s
    utilisation = cpu_s / (wall * cores)
    report = {
        "samples": [t.file for t in truths], "cores": cores, "wall_s": wall, "seconds_by_stage": seconds,
        "ideal_s": ideal, "cpu_s": cpu_s, "run_cpu_s": run_cpu.cpu_s, "llm_server_cpu_s": llm_cpu.cpu_s,
        "utilisation": utilisation, "videos_ok": summary["videos_ok"], "llm": summary["llm"],
        "batch_size": args.batch_size, "batches_in_flight": args.batches_in_flight or cfg.ray.batches_in_flight,
        "rows": [
            row("flow wall time / (stage work / cores)", wall, baseline=ideal, unit="s",
                baseline_name="(media+perception seconds + LLM server CPU s) / cores",
                target=f"ratio <= {TARGET}", passed=wall / ideal <= TARGET,
                note=f"{len(truths)} samples, {summary['videos_ok']} videos ok, batch size {args.batch_size}, "
                     f"{args.batches_in_flight or cfg.ray.batches_in_flight} batches in flight"),
            row("CPU utilisation of the run (all its processes + LLM server)", cpu_s, baseline=wall * cores,
                unit="cpu-s", baseline_name="wall x cores", note=f"{utilisation:.0%}"),
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wall {wall:.1f} s, ideal {ideal:.1f} s (ratio {wall / ideal:.2f}, target <= {TARGET}); "
          f"CPU utilisation {utilisation:.0%} of {cores} cores")
    for stage, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:20s} {s:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
