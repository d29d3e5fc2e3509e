"""Benchmark: how well does a whole build-dataset run keep the machine busy?

One real run of the flow (Prefect server, local Ray, vLLM CPU server) over the synthetic samples. Reported:
- ``flow wall / (stage work / cores)``: the run's wall time over the time its work would take if it were spread
  perfectly over the machine's cores (target <= 1.15). The work is the media and perception stages' seconds,
  measured per call, plus the CPU seconds of the LLM server's process tree while the run lasts (the server shares
  the cores; batches overlap, so the LLM stages' own wall times would count the same server time twice).
- CPU utilisation: CPU seconds of every process of the run (this process, Ray's workers, ffmpeg children and the
  LLM server's tree), sampled while it runs, over wall x cores.
- Throughput per stage, in video-minutes per CPU-minute: the committed videos' minutes over the CPU each stage
  spent (the run record's ``cpu_seconds_by_stage``: the process that ran it, its ffmpeg children included). An LLM
  stage is its client's CPU plus a share of the LLM server tree's CPU in proportion to the stage's batch wall time
  (the server does nothing else during the run; the stages take turns on it within a batch). The whole pipeline's
  figure (every stage's CPU and the server's) is each row's baseline: the ratio says how many times less CPU than
  the whole the stage costs per video-minute. Where the CPU goes is the ``cpu_share`` column of the report.

The sources are the demo's (``--sources demo``: the three samples, the shared media and the audio-only file that is
dead-lettered) or the first ``--samples`` samples alone (``--sources samples``).

    python tests/perf/bench_flow.py [out/perf/flow.json] [--sources demo|samples] [--samples 3]

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


def llm_stages() -> set[str]:
    """The stages placed on the LLM server (their work is its CPU, not their own process's)."""
    from infra.pipeline import STAGES

    return {name for name in STAGES.names() if STAGES.get(name).placement == "llm"}


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
    parser.add_argument("--sources", choices=("demo", "samples"), default="demo",
                        help="demo: the demo's source list; samples: the first --samples samples")
    parser.add_argument("--samples", type=int, default=3, help="synthetic sample videos (75-130 s each)")
    parser.add_argument("--batch-size", type=int, default=2, help="2: two batches of the 3 samples overlap")
    parser.add_argument("--batches-in-flight", type=int, default=None, help="default: the profile's")
    args = parser.parse_args(argv)

    from infra import servers
    from schemas.settings import settings

    cfg = settings()
    # The servers this benchmark starts, it stops (one left on 127.0.0.1:4200 makes the next `make test` refuse it).
    started = [stop for spec, start, stop in (
        (servers.prefect_server_spec(cfg), servers.start_prefect_server, servers.stop_prefect_server),
        (servers.llm_server_spec(cfg), servers.start_llm_server, servers.stop_llm_server))
        if not servers.is_running(spec, cfg.paths.run_dir) and start(cfg)]
    try:
        return run(args, cfg)
    finally:
        for stop in started:
            stop(cfg)


def run(args: argparse.Namespace, cfg) -> int:
    from infra import servers
    from devdata.samples import make_samples

    os.environ.update(servers.prefect_env(cfg))
    from flows.build_dataset import build_dataset  # after PREFECT_API_URL: the flow reports to our server

    work = Path(tempfile.mkdtemp(prefix="saven-bench-flow-"))
    try:
        samples_dir = cfg.paths.output_dir / "samples"
        truths = make_samples(samples_dir)[: args.samples]
        if args.sources == "demo":
            from flows.demo import write_demo_sources

            sources = write_demo_sources(work, [samples_dir / t.file for t in truths])
        else:
            sources = work / "sources.yaml"
            sources.write_text(yaml.safe_dump([str(samples_dir / t.file) for t in truths]))
        listed = yaml.safe_load(sources.read_text())
        listed = listed["sources"] if isinstance(listed, dict) else listed
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
    on_server = llm_stages()
    stage_work = sum(v for k, v in seconds.items() if k not in on_server)
    ideal = (stage_work + llm_cpu.cpu_s) / cores
    cpu_s = run_cpu.cpu_s + llm_cpu.cpu_s
    utilisation = cpu_s / (wall * cores)
    throughput = stage_throughput(summary, llm_cpu.cpu_s)
    report = {
        "sources": listed, "cores": cores, "wall_s": wall, "seconds_by_stage": seconds,
        "ideal_s": ideal, "cpu_s": cpu_s, "run_cpu_s": run_cpu.cpu_s, "llm_server_cpu_s": llm_cpu.cpu_s,
        "utilisation": utilisation, "videos_ok": summary["videos_ok"], "llm": summary["llm"],
        "batch_size": args.batch_size, "batches_in_flight": args.batches_in_flight or cfg.ray.batches_in_flight,
        "rows": [
            row("flow wall time / (stage work / cores)", wall, baseline=ideal, unit="s",
                baseline_name="(media+perception seconds + LLM server CPU s) / cores",
                target=f"ratio <= {TARGET}", passed=wall / ideal <= TARGET,
                note=f"{len(listed)} sources ({args.sources}), {summary['videos_ok']} videos ok, "
                     f"batch size {args.batch_size}, "
                     f"{args.batches_in_flight or cfg.ray.batches_in_flight} batches in flight"),
            row("CPU utilisation of the run (all its processes + LLM server)", cpu_s, baseline=wall * cores,
                unit="cpu-s", baseline_name="wall x cores", note=f"{utilisation:.0%}"),
            *throughput["rows"],
            row("CPU inside the stages' process() (+ the LLM server's) / all the run's CPU",
                sum(t["cpu_s"] for t in throughput["stages"].values()), baseline=cpu_s, unit="cpu-s",
                baseline_name="the run's CPU s", target="none",
                note="the rest: actors starting and loading models (setup), Ray, Prefect and the flow's driver"),
        ],
        "throughput": throughput["stages"], "video_seconds": summary["video_seconds"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wall {wall:.1f} s, ideal {ideal:.1f} s (ratio {wall / ideal:.2f}, target <= {TARGET}); "
          f"CPU utilisation {utilisation:.0%} of {cores} cores")
    print(f"{summary['video_seconds'] / 60:.2f} video-minutes committed; per stage: wall s, CPU s, share of the CPU, "
          "video-minutes per CPU-minute")
    for stage, t in sorted(throughput["stages"].items(), key=lambda kv: -kv[1]["cpu_s"]):
        print(f"  {stage:20s} {seconds.get(stage, 0.0):8.1f} {t['cpu_s']:8.1f} {t['cpu_share']:6.1%} "
              f"{t['video_min_per_cpu_min']:10.2f}")
    return 0


def stage_throughput(summary: dict, llm_server_cpu_s: float) -> dict:
    """Video-minutes per CPU-minute per stage and for the whole pipeline (see the module's docstring)."""
    video_min = summary["video_seconds"] / 60
    cpu = dict(summary["cpu_seconds_by_stage"])
    on_server = llm_stages()
    llm_wall = {k: v for k, v in summary["seconds_by_stage"].items() if k in on_server}
    for stage, wall in llm_wall.items():
        cpu[stage] = cpu.get(stage, 0.0) + llm_server_cpu_s * wall / (sum(llm_wall.values()) or 1.0)
    total = sum(cpu.values())
    whole = video_min / (total / 60) if total else None

    def per(cpu_s: float) -> float | None:
        return video_min / (cpu_s / 60) if cpu_s else None

    stages = {k: {"cpu_s": round(v, 2), "cpu_share": round(v / total, 4) if total else 0.0,
                  "video_min_per_cpu_min": per(v)} for k, v in cpu.items()}
    rows = [row("whole pipeline: video-minutes per CPU-minute (all stages + LLM server)", whole,
                unit="video-min/CPU-min", target="none", note=f"{video_min:.2f} video-minutes, {total:.0f} CPU s")]
    rows += [row(f"stage {k}: video-minutes per CPU-minute", t["video_min_per_cpu_min"], baseline=whole,
                 unit="video-min/CPU-min", baseline_name="whole pipeline", target="none",
                 note=f"{t['cpu_s']:.1f} CPU s, {t['cpu_share']:.0%} of the run's"
                      + (" (incl. its share of the LLM server's)" if k in llm_wall else ""))
             for k, t in sorted(stages.items(), key=lambda kv: -kv[1]["cpu_s"])]
    return {"stages": stages, "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
