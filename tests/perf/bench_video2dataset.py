"""Cut detection against video2dataset's: wall time and cut accuracy on the same local sample videos.

video2dataset is installed into its own throwaway venv (reused when present) with ``--no-deps``: its requirements
pin torch 2.1.2, transformers 4.37.1, bitsandbytes, wandb and more for its other subsamplers, while its cut
detection needs only what it pins for it, ``scenedetect[opencv]==0.6.2`` (with numpy < 2, and OpenCV's headless
build below 4.11, the last built against numpy 1). ``v2d_cut_runner.py`` runs its ``CutDetectionSubsampler`` in
that venv with the arguments of its shipped ``downsample_ml.yaml`` (threshold 11.5, min_scene_len 15, downscaled to
~64 px wide, as the class sets it) and with the class defaults (threshold 27).

Ours: ``probe`` + ``segment_video`` (cuts, clip policy and keyframe JPEGs from one decode) with the profile's
segment settings, and with the settings before the profile moved to 64 px (320 px, swscale bilinear, every
keyframe candidate JPEG-encoded as it arrived is not reproducible: the store now encodes only the picks).

The decode floor: ffmpeg decoding every frame of the video stream and nothing else (one thread, output
discarded). Any detector that looks at every frame pays it; it bounds what the ratio can reach.

Reported per configuration: total wall and CPU seconds over the samples (best of ``--repeat`` per video),
``ratio`` = ours / video2dataset's, and cut precision / recall / F1 against the samples' truth (a detected cut
matches a true one within one frame). Targets: our F1 >= video2dataset's; our CPU time <= 0.5x theirs.

    python tests/perf/bench_video2dataset.py [out/perf/video2dataset.json] [--count 3] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra.stage import process_cpu_s as cpu_seconds  # this process and the ffmpeg it waited for
from perf_rows import row
from schemas.settings import load_settings
from tasks.probe import probe
from devdata.samples import make_samples
from tasks.segment import segment_video

V2D_VERSION = "1.3.0"
# What its cut detection imports (scenedetect's opencv extra, with the pin video2dataset sets) and the config reader.
V2D_DEPS = ("scenedetect==0.6.2", "numpy<2", "opencv-python-headless<4.11", "pyyaml")
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "saven-perf" / "v2d-venv"
RUNNER = Path(__file__).resolve().parent / "v2d_cut_runner.py"


def ensure_venv(venv: Path) -> Path:
    """The venv's python, installing video2dataset (no deps) and its cut-detection needs the first time."""
    python = venv / "bin" / "python"
    marker = venv / ".saven-installed"
    wanted = json.dumps([V2D_VERSION, *V2D_DEPS])
    if marker.is_file() and marker.read_text() == wanted and python.is_file():
        return python
    print(f"  creating {venv} (video2dataset {V2D_VERSION}, no deps, + {', '.join(V2D_DEPS)})", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for extra in (["--no-deps", f"video2dataset=={V2D_VERSION}"], list(V2D_DEPS)):
        # pip's resolver lists every requirement --no-deps left out: shown only when the install fails.
        proc = subprocess.run([*pip, *extra], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"pip install {' '.join(extra)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    marker.write_text(wanted)
    return python



def match_cuts(found: list[float], truth: list[float], tolerance_s: float) -> int:
    """How many true cuts have a detected cut within ``tolerance_s`` (each detected cut used once)."""
    unused, hits = sorted(found), 0
    for t in sorted(truth):
        best = min(unused, key=lambda f: abs(f - t), default=None)
        if best is not None and abs(best - t) <= tolerance_s:
            unused.remove(best)
            hits += 1
    return hits


def accuracy(per_video: dict[str, list[float]], truths: dict[str, object]) -> dict:
    found = true = hits = 0
    for name, cuts in per_video.items():
        truth = truths[name]
        found, true = found + len(cuts), true + len(truth.cuts_s)
        hits += match_cuts(cuts, truth.cuts_s, 1.0 / truth.fps + 1e-6)
    precision, recall = (hits / found if found else 1.0), (hits / true if true else 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"true_cuts": true, "found_cuts": found, "matched": hits, "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4)}


def run_decode_floor(videos: dict[str, Path], repeat: int) -> dict:
    """CPU seconds of ffmpeg decoding each video's first video stream, one thread, nothing else."""
    cpu = {}
    for name, path in videos.items():
        best = float("inf")
        for _ in range(repeat):
            c = cpu_seconds()
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(path), "-map", "0:v:0",
                            "-f", "null", "-"], check=True)
            best = min(best, cpu_seconds() - c)
        cpu[name] = best
    return cpu


def run_ours(videos: dict[str, Path], repeat: int, update: dict | None) -> dict:
    cfg = load_settings().segment
    if update:
        cfg = cfg.model_copy(update=update)
    seconds, cpu, cuts = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-v2d-") as tmp:
        for name, path in videos.items():
            best, best_cpu = float("inf"), float("inf")
            for _ in range(repeat):
                t, c = time.perf_counter(), cpu_seconds()
                facts = probe(path, "bench-v2d")
                result = segment_video(path, facts, "bench-v2d", Path(tmp), cfg)
                best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, cpu_seconds() - c)
            seconds[name], cpu[name], cuts[name] = best, best_cpu, result.cuts_s
    return {"detector": cfg.detector, "analysis_width": cfg.analysis_width, "analysis_scaler": cfg.analysis_scaler,
            "seconds": seconds, "cpu_seconds": cpu,
            "cuts_s": cuts}


def run_v2d(python: Path, videos: dict[str, Path], repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": ""}  # nothing of the project's venv leaks into theirs
    proc = subprocess.run([str(python), str(RUNNER), "--repeat", str(repeat), *map(str, videos.values())],
                          check=True, capture_output=True, text=True, env=env)
    raw = json.loads(proc.stdout)
    by_path = {str(p): n for n, p in videos.items()}
    return {"scenedetect": raw["scenedetect"],
            "configs": {label: {"args": c["args"],
                                "seconds": {by_path[p]: v["seconds"] for p, v in c["videos"].items()},
                                "cpu_seconds": {by_path[p]: v["cpu_seconds"] for p, v in c["videos"].items()},
                                "cuts_s": {by_path[p]: v["cuts_s"] for p, v in c["videos"].items()}}
                        for label, c in raw["configs"].items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "video2dataset.json")
    parser.add_argument("--count", type=int, default=3, help="number of synthetic samples")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs per video")
    parser.add_argument("--samples-dir", type=Path, default=load_settings().paths.output_dir / "samples")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args(argv)

    truths = {t.name: t for t in make_samples(args.samples_dir, seed=0, count=args.count)}
    videos = {name: (args.samples_dir / t.file).resolve() for name, t in truths.items()}
    python = ensure_venv(args.venv)
    v2d = run_v2d(python, videos, args.repeat)
    ours = {"profile": run_ours(videos, args.repeat, None),
            "320 px, bilinear": run_ours(videos, args.repeat, {"analysis_width": 320, "analysis_scaler": "bilinear"})}
    floor = run_decode_floor(videos, args.repeat)

    results = {"v2d": {}, "ours": {}}
    for label, c in v2d["configs"].items():
        results["v2d"][label] = {"args": c["args"], "seconds": round(sum(c["seconds"].values()), 3),
                                 "cpu_seconds": round(sum(c["cpu_seconds"].values()), 3),
                                 "per_video_s": c["seconds"], **accuracy(c["cuts_s"], truths)}
    for label, o in ours.items():
        results["ours"][label] = {"detector": o["detector"], "analysis_width": o["analysis_width"],
                                  "analysis_scaler": o["analysis_scaler"],
                                  "seconds": round(sum(o["seconds"].values()), 3),
                                  "cpu_seconds": round(sum(o["cpu_seconds"].values()), 3), "per_video_s": o["seconds"],
                                  **accuracy(o["cuts_s"], truths)}

    base, mine = results["v2d"]["downsample_ml.yaml"], results["ours"]["profile"]
    seconds_of_video = sum(t.duration_s for t in truths.values())
    rows = [row(f"cut F1 vs truth, ours ({mine['detector']}, {mine['analysis_width']} px) / video2dataset "
                "downsample_ml.yaml", mine["f1"], baseline=base["f1"], target="value >= baseline",
                passed=mine["f1"] >= base["f1"], baseline_name="video2dataset F1"),
            row("cut detection wall s, ours (probe + segment + keyframes) / video2dataset downsample_ml.yaml",
                mine["seconds"], baseline=base["seconds"], unit="s", baseline_name="video2dataset s",
                target="none (ours also writes keyframes)",
                note=f"{len(videos)} samples, {seconds_of_video:g} s of video, best of {args.repeat}"),
            row("cut detection CPU s, ours (probe + segment + keyframes) / video2dataset downsample_ml.yaml",
                mine["cpu_seconds"], baseline=base["cpu_seconds"], unit="s", baseline_name="video2dataset CPU s",
                target="ratio <= 0.5", passed=mine["cpu_seconds"] <= 0.5 * base["cpu_seconds"],
                note=f"{mine['analysis_width']} px {mine['analysis_scaler']}; CPU seconds: steadier than wall"),
            row("decode floor CPU s (ffmpeg decodes every frame, nothing else) / video2dataset downsample_ml.yaml",
                round(sum(floor.values()), 3), baseline=base["cpu_seconds"], unit="s",
                baseline_name="video2dataset CPU s", target="none (the bound of any every-frame detector)")]
    old = results["ours"]["320 px, bilinear"]
    rows.append(row("cut detection CPU s, ours / ours at 320 px bilinear (the profile before)", mine["cpu_seconds"],
                    baseline=old["cpu_seconds"], unit="s", baseline_name="320 px CPU s", target="none",
                    note=f"F1 {mine['f1']} vs {old['f1']}"))
    other = results["v2d"]["class defaults"]
    rows.append(row("cut F1, ours / video2dataset class defaults (threshold 27)", mine["f1"], baseline=other["f1"],
                    target="value >= baseline", passed=mine["f1"] >= other["f1"], baseline_name="video2dataset F1",
                    note=f"video2dataset wall {other['seconds']:.2f} s"))

    print_table(results, sum(floor.values()))
    report = {"video2dataset": V2D_VERSION, "scenedetect_v2d": v2d["scenedetect"], "samples": list(videos),
              "decode_floor_cpu_seconds": floor,
              "seconds_of_video": seconds_of_video, "repeat": args.repeat, "results": results, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_table(results: dict, floor_cpu_s: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cut detection on the sample videos: ours vs video2dataset (a cut matches within one frame)")
    for col in ("side", "configuration", "wall s", "cpu s", "true", "found", "matched", "precision", "recall", "F1"):
        table.add_column(col)
    for side, configs in results.items():
        for label, r in configs.items():
            table.add_row(side, label, f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}", str(r["true_cuts"]),
                          str(r["found_cuts"]), str(r["matched"]), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                          f"{r['f1']:.3f}")
    table.add_row("floor", "ffmpeg decode only", "", f"{floor_cpu_s:.2f}", *[""] * 6)
    Console(width=160).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
