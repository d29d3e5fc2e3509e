"""`make perf`: run every benchmark script, each measuring a ratio against a baseline in the same run, and gather
their reports into one table: out/perf/summary.json and out/perf/summary.md.

Every row states the metric, its value, the baseline, the ratio, the target, pass/fail and the machine it ran on.
Benchmarks that write ``"rows"`` (``perf_rows.row``) are taken as they are; the older reports are turned into rows
by the adapters below. Rows of benchmarks not run this time are kept from the previous summary, each still with
its own machine and time, so running one benchmark does not drop the others' latest numbers.

    python tests/perf/run_all.py [NAME ...] [--collect] [--out-dir out/perf]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_rows import row

BENCHES = {
    "media": "tests/perf/bench_media.py",
    "perception": "tests/perf/bench_perception.py",
    "llm": "tests/perf/bench_llm.py",
    "llm_sol": "tests/perf/bench_llm_sol.py",
    "structured_outputs": "tests/perf/bench_structured_outputs.py",
    "scale": "tests/perf/bench_scale.py",
    "train": "tests/perf/bench_train.py",
    "video2dataset": "tests/perf/bench_video2dataset.py",
    "memory_1h": "tests/perf/bench_memory_1h.py",
    "flow": "tests/perf/bench_flow.py",
    "backends": "tests/perf/bench_backends.py",
    "cost_model": "tests/perf/cost_model.py",
    "avbench_breakdown": "tests/perf/avbench_breakdown.py",
}


def machine() -> dict:
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in
                                                 Path("/proc/cpuinfo").read_text().splitlines()) if k.strip()}
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": info.get("model name", platform.processor() or "unknown"), "cores": cores,
            "memory_gib": round(mem_kb / 2**20, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(), "python": platform.python_version(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def machine_label(m: dict) -> str:
    load = m.get("load_avg_1m")
    return f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']:g} GiB" + (f", load {load:g}" if load is not None else "")


# ---------------------------------------------------------------- adapters for reports without "rows"


def media_rows(r: dict) -> list[dict]:
    s, videos = r["summary"], r["videos"]

    def total(key: str) -> float:
        return sum(v[key] for v in videos)

    target = s["target_ratio"]
    seg, scaled, seg_cpu, scaled_cpu = (total("segment_keyframes_s"), total("scaled_decode_s"),
                                        total("segment_keyframes_cpu_s"), total("scaled_decode_cpu_s"))
    rows = [row("segmentation + keyframes wall s / one decode at the same resolution", seg, baseline=scaled,
                unit="s", baseline_name="ffmpeg decode to BGR at the analysis size s",
                target=f"ratio <= {target} (every video)", passed=s["ratio_target_met"],
                note=f"{len(videos)} videos, best of {s['repeat']} interleaved rounds, max per-video ratio "
                     f"{s['max_ratio']}"),
            row("segmentation + keyframes CPU s / one decode at the same resolution", seg_cpu, baseline=scaled_cpu,
                unit="s", baseline_name="ffmpeg decode to BGR at the analysis size CPU s",
                target=f"ratio <= {target}", passed=seg_cpu / scaled_cpu <= target if scaled_cpu else None),
            row("segmentation + keyframes wall s / one decode at the source size", seg,
                baseline=total("plain_decode_s"), unit="s", baseline_name="ffmpeg decode, source size and format s",
                note="no target: the least any frame pipeline pays"),
            row("decode passes per video (frames + audio)",
                max(v["decode_passes"]["frames"] + v["decode_passes"]["audio"] for v in videos), baseline=2,
                baseline_name="one frames pass + one audio pass", target="ratio == 1",
                passed=s["passes_target_met"])]
    return rows


def perception_rows(r: dict) -> list[dict]:
    s, videos = r["summary"], r["videos"]

    def total(key: str) -> float:
        return sum(v[key] for v in videos)

    target = s["target_asr_ratio"]
    rows = [row("ASR in the pipeline wall s / plain faster-whisper", total("pipeline_asr_s"),
                baseline=total("plain_asr_s"), unit="s", baseline_name="plain WhisperModel.transcribe s",
                target=f"ratio <= {target}", passed=s["asr_target_met"],
                note=f"{len(videos)} video(s), {total('audio_s'):g} s of audio, best of {s['repeat']}"),
            row("ASR in the pipeline CPU s / plain faster-whisper", total("pipeline_asr_cpu_s"),
                baseline=total("plain_asr_cpu_s"), unit="s", baseline_name="plain CPU s",
                target=f"ratio <= {target}", passed=s["asr_cpu_target_met"])]
    if "ray_asr_ratio" in s:
        rows.append(row("ASR through a Ray actor wall s / plain faster-whisper", total("ray_asr_s"),
                        baseline=total("plain_asr_s"), unit="s", baseline_name="plain s",
                        target=f"ratio <= {target}", passed=s["ray_asr_target_met"]))
    for stage, st in r.get("stages", {}).items():
        rows.append(row(f"{stage} clips per second ({st['model']})", st["clips_per_s"], unit="clips/s",
                        target="none", note=f"{st['clips']} clips in {st['seconds']} s"))
    return rows


def llm_rows(r: dict) -> list[dict]:
    runs = r["runs"]
    baseline = (runs["baseline_1"]["tokens_per_s"] + runs["baseline_2"]["tokens_per_s"]) / 2
    return [row("LLM pipeline output tokens/s / plain client", runs["pipeline"]["tokens_per_s"], baseline=baseline,
                unit="tok/s", baseline_name="plain OpenAI client tok/s (mean of runs before and after)",
                target=f"ratio >= {r['target']}", passed=r["passed"],
                note=f"{r['clips']} clips, concurrency {r['concurrency']}, {r['model']}")]


def train_rows(r: dict) -> list[dict]:
    rows = []
    for k, v in enumerate(r["videos"]):
        long = k == len(r["videos"]) - 1
        rows.append(row(f"train step s, features on the fly / cached ({v['video_id']}, {v['duration_s']:g} s)",
                        v["on_the_fly_step_s"], baseline=v["cached_step_s"], unit="s",
                        baseline_name="cached-feature step s",
                        target=f"ratio >= {r['target_speedup']}" if long else "none (short video)",
                        passed=v["speedup"] >= r["target_speedup"] if long else None,
                        note=f"preset {r['preset']}"))
    return rows


ADAPTERS = {"media": media_rows, "perception": perception_rows, "llm": llm_rows, "train": train_rows}


def rows_of(name: str, report: dict) -> list[dict]:
    return report["rows"] if "rows" in report else ADAPTERS[name](report)


# ---------------------------------------------------------------- the table


def fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def markdown(summary: dict) -> str:
    lines = ["# SAVEn-Vid benchmarks", "",
             f"Written {summary['machine']['when']} by `tests/perf/run_all.py` (`make perf`). Each ratio is "
             "value / baseline, both measured in the same run on the machine named in its row.", "",
             "| bench | metric | value | baseline | ratio | target | result | machine | when |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        result = {True: "PASS", False: "FAIL", None: "-"}[r["passed"]]
        value = f"{fmt(r['value'])} {r['unit']}".strip()
        baseline = f"{fmt(r['baseline'])} ({r['baseline_name']})" if r["baseline"] is not None else "-"
        metric = r["metric"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {r['bench']} | {metric} | {value} | {baseline} | {fmt(r['ratio'])} | {r['target']} | "
                     f"{result} | {machine_label(r['machine'])} | {r['machine']['when']} |")
    if summary["failed"]:
        lines += ["", f"Benchmarks that failed to run this time: {', '.join(summary['failed'])}."]
    return "\n".join(lines) + "\n"


def print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"make perf: {machine_label(summary['machine'])}")
    for col in ("bench", "metric", "value", "baseline", "ratio", "target", "result"):
        table.add_column(col)
    for r in summary["rows"]:
        table.add_row(r["bench"], r["metric"], f"{fmt(r['value'])} {r['unit']}".strip(), fmt(r["baseline"]),
                      fmt(r["ratio"]), r["target"], {True: "PASS", False: "FAIL", None: "-"}[r["passed"]])
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, of {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--collect", action="store_true", help="gather the existing reports, run nothing")
    parser.add_argument("--out-dir", type=Path, default=REPO / "out" / "perf")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHES)
    if unknown := sorted(set(names) - set(BENCHES)):
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    here = machine()
    summary_path = out_dir / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    rows = [r for r in previous.get("rows", []) if r.get("bench") not in names]
    reports, failed = {}, []
    for name in names:
        report = out_dir / f"{name}.json"
        ran_on = machine()  # the load at the start of each benchmark says how busy the machine was for it
        if not args.collect:
            cmd = [sys.executable, BENCHES[name], str(report)]
            print(f"== {name}: {' '.join(cmd)}", flush=True)
            started = time.time()
            proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True)
            print(proc.stdout[-6000:], flush=True)
            if proc.returncode != 0 or not report.is_file() or report.stat().st_mtime < started:
                failed.append(name)
                print(proc.stderr[-4000:], file=sys.stderr)
                continue
        elif not report.is_file():
            failed.append(name)
            continue
        reports[name] = json.loads(report.read_text())
        ran_on["when"] = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(report.stat().st_mtime))
        if args.collect:
            ran_on["load_avg_1m"] = None  # not known for a report written earlier
        rows += [{"bench": name, **r, "machine": ran_on} for r in rows_of(name, reports[name])]
    order = list(BENCHES)
    rows.sort(key=lambda r: order.index(r["bench"]) if r["bench"] in order else len(order))
    summary = {"machine": here, "rows": rows, "failed": failed, "reports": sorted(reports)}
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out_dir / "summary.md").write_text(markdown(summary))
    print_table(summary)
    print(f"wrote {summary_path} and {out_dir / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
