"""Peak memory of each per-video worker stage on a generated 1-hour video (target: under 2.5 GB per worker).

The video is made in one ffmpeg call from lavfi sources: twelve scenes of different test patterns (so the detector
finds cuts and the clip policy splits long scenes), each with its own sound (tones, coloured noise, silence), the
first with an espeak-ng narration. Low resolution and x264's ultrafast preset keep generating it to a minute or
two; it is kept and reused (keyed by its parameters).

Each stage runs in a fresh subprocess, as a worker would run it, in pipeline order (each reads what the one before
wrote): probe, audio decode to 16 kHz, segmentation + keyframes, ASR, audio tagging, keyframe description. The
peak RSS of the worker's process tree (the Python worker plus the ffmpeg/tesseract processes it starts) is sampled
with psutil; the worker's own ``ru_maxrss`` is reported beside it. ASR runs over the whole hour through Silero VAD
as the pipeline does, so Whisper itself decodes only the speech (the one narrated minute): faster-whisper on an
hour of speech would take hours on two cores; memory there grows with the speech decoded, which this does not
measure at full length.

Baseline, in the same run: every stage on the first two minutes of the same video (a stream copy, so the same
scenes, speech and sounds). ``ratio`` = 1-hour peak / 2-minute peak: near 1 means the stage's memory does not grow
with the video's length.

    python tests/perf/bench_memory_1h.py [out/perf/memory_1h.json] [--minutes 60] [--fps 25] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_rows import row

TARGET_BYTES = 2.5e9
GB = 1e9
VIDEO_ID = "bench-long"
STAGES = ("probe", "audio", "segment", "asr", "audio_events", "visual_caption")
BASELINE_S = 120
SPEECH_S = 60
SIZE = "320x180"
# (video source, audio source) per scene; "speech" is the espeak-ng narration input.
SCENES = (
    ("testsrc2", "speech"),
    ("smptebars", "sine=frequency=440"),
    ("cellauto=rule=110", "anoisesrc=color=pink:amplitude=0.2"),
    ("rgbtestsrc", "sine=frequency=880"),
    ("life=mold=10:ratio=0.2:death_color=#204060", "anoisesrc=color=white:amplitude=0.05"),
    ("testsrc2,hue=h=120", "anoisesrc=color=brown:amplitude=0.3"),
    ("yuvtestsrc", "sine=frequency=220"),
    ("gradients=speed=0.02", "sine=frequency=660"),
    ("cellauto=rule=30", "anoisesrc=color=pink:amplitude=0.05"),
    ("smptehdbars", "sine=frequency=330"),
    ("life=ratio=0.5", "anullsrc=channel_layout=mono"),
    ("testsrc", "sine=frequency=1000"),
)


# ---------------------------------------------------------------- the video


def scene_durations(minutes: float) -> list[float]:
    rest = (minutes * 60 - SPEECH_S) / (len(SCENES) - 1)
    return [float(SPEECH_S)] + [round(rest, 2)] * (len(SCENES) - 1)


def narration(work: Path) -> Path:
    from devdata.samples import SENTENCES

    text, wav = work / "narration.txt", work / "narration.wav"
    if not wav.is_file():
        text.write_text(" ".join(SENTENCES * 3) + "\n")
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), "-f", str(text)], check=True)
    return wav


def generate(path: Path, minutes: float, fps: int, work: Path) -> dict:
    """Write the long video (one ffmpeg call) unless one with the same parameters is there."""
    params = {"minutes": minutes, "fps": fps, "size": SIZE, "scenes": SCENES, "speech_s": SPEECH_S}
    stamp = path.with_suffix(".params.json")
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(params)):
        return {"generated": False, "seconds": 0.0}
    speech = narration(work)
    parts, labels = [], []
    for k, ((video, audio), dur) in enumerate(zip(SCENES, scene_durations(minutes))):
        name, _, extra = video.partition(",")
        src = f"{name}{'=' if '=' not in name else ':'}size={SIZE}:rate={fps}:duration={dur}"
        if name.startswith(("cellauto", "life")):  # these have no duration option
            src = f"{name}{'=' if '=' not in name else ':'}size={SIZE}:rate={fps},trim=duration={dur}"
        parts.append(f"{src}{',' + extra if extra else ''},format=yuv420p,setsar=1[v{k}]")
        if audio == "speech":
            sound = f"[0:a]apad,atrim=duration={dur}"
        else:
            sound = f"{audio}{'=' if '=' not in audio else ':'}sample_rate=44100,atrim=duration={dur}"
        parts.append(f"{sound},aformat=sample_fmts=fltp:sample_rates=44100:channel_layouts=mono[a{k}]")
        labels.append(f"[v{k}][a{k}]")
    graph = ";".join(parts) + ";" + "".join(labels) + f"concat=n={len(SCENES)}:v=1:a=1[v][a]"
    tmp = path.with_suffix(".tmp.mp4")
    t = time.perf_counter()
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(speech),
                    "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", str(10 * fps), "-c:a", "aac", "-b:a", "64k",
                    "-movflags", "+faststart", str(tmp)], check=True)
    tmp.replace(path)
    stamp.write_text(json.dumps(params))
    return {"generated": True, "seconds": round(time.perf_counter() - t, 1)}


def first_minutes(src: Path, dst: Path, seconds: float) -> None:
    if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(src), "-t",
                        str(seconds), "-c", "copy", str(dst)], check=True)


# ---------------------------------------------------------------- one stage, in the worker subprocess


def run_stage(stage: str, video: Path, ds: Path) -> dict:
    from schemas.records import Clip
    from schemas.settings import load_settings

    cfg = load_settings()
    state = ds / "state"
    state.mkdir(parents=True, exist_ok=True)

    def clips() -> list[Clip]:
        return [Clip.model_validate(c) for c in json.loads((state / "clips.json").read_text())]

    if stage == "probe":
        from tasks.probe import probe

        facts = probe(video, VIDEO_ID)
        (state / "probe.json").write_text(facts.model_dump_json())
        return {"duration_s": facts.duration_s, "fps": facts.fps, "size": [facts.width, facts.height]}
    if stage == "audio":
        from tasks.audio import decode_audio

        audio = decode_audio(video, ds, VIDEO_ID)
        return {"samples": audio.num_samples, "audio_s": audio.duration_s}
    if stage == "segment":
        from schemas.handoff import ProbeResult
        from tasks.segment import segment_video

        facts = ProbeResult.model_validate_json((state / "probe.json").read_text())
        seg = segment_video(video, facts, VIDEO_ID, ds, cfg.segment)
        (state / "clips.json").write_text(json.dumps([c.model_dump(mode="json") for c in seg.clips]))
        return {"frames": seg.frames_decoded, "cuts": len(seg.cuts_s), "clips": len(seg.clips),
                "keyframes": sum(len(c.keyframe_times) for c in seg.clips)}
    from infra.pipeline import STAGES
    from schemas.handoff import VideoItem

    if stage in ("asr", "audio_events", "visual_caption"):
        out = STAGES.get(stage).standalone(settings=cfg).run(VideoItem.in_folder(ds, VIDEO_ID, clips()))
        rows = {table: len(records) for table, records in out.tables.items()}
        if stage == "asr":
            rows["words"] = sum(len(s.words) for s in out.tables.get("speech", []))
        return {**rows, **{k: v for k, v in out.counts.items() if k == "keyframes"},
                "dead_letters": [d.message for d in out.dead_letters]}
    raise SystemExit(f"unknown stage {stage}")


def worker_main(stage: str, video: Path, ds: Path, report: Path) -> None:
    t = time.perf_counter()
    result = run_stage(stage, video, ds)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    report.write_text(json.dumps({"result": result, "seconds": time.perf_counter() - t, "worker_maxrss": own,
                                  "largest_child_maxrss": kids}))


# ---------------------------------------------------------------- the parent: one subprocess per stage


def tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a child that ended between the listing and the reading
            pass
    return total


def measure(stage: str, video: Path, ds: Path, poll_s: float = 0.05) -> dict:
    import psutil

    report = ds / "state" / f"{stage}.report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--stage", stage, "--video", str(video), "--dataset", str(ds),
           "--report", str(report)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    handle, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(handle))
        except psutil.Error:
            break
        time.sleep(poll_s)
    wall = time.perf_counter() - t
    if proc.wait() != 0 or not report.is_file():
        raise SystemExit(f"stage {stage} failed on {video.name} (exit {proc.returncode})")
    data = json.loads(report.read_text())
    # Sampling can miss a short spike; the worker's own high-water mark cannot.
    return {**data, "tree_peak_rss": max(peak, data["worker_maxrss"]), "wall_s": round(wall, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "memory_1h.json")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--work", type=Path, default=REPO / "out" / "perf" / "memory_1h")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES,
                        help="a subset, in pipeline order (a stage reads what the ones before it wrote)")
    parser.add_argument("--keep", action="store_true", help="keep the stages' output (waveform, keyframes)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        worker_main(args.stage, args.video, args.dataset, args.report)
        return 0

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    long_video, short_video = work / "long.mp4", work / "first.mp4"
    made = generate(long_video, args.minutes, args.fps, work)
    print(f"  video: {long_video} ({'generated in %.0f s' % made['seconds'] if made['generated'] else 'reused'})",
          file=sys.stderr)
    first_minutes(long_video, short_video, BASELINE_S)

    measured: dict[str, dict] = {}
    for label, video in (("short", short_video), ("long", long_video)):
        ds = work / f"dataset-{label}"
        shutil.rmtree(ds, ignore_errors=True)  # no stage may find an earlier run's output
        for stage in args.stages:
            m = measure(stage, video, ds)
            measured.setdefault(stage, {})[label] = m
            print(f"  {label} {stage}: peak {m['tree_peak_rss'] / 2**20:.0f} MiB, {m['wall_s']:.1f} s, "
                  f"{m['result']}", file=sys.stderr)
        if not args.keep:  # the hour's waveform and keyframes are large; the video is kept for the next run
            shutil.rmtree(ds, ignore_errors=True)

    rows = []
    for stage, m in measured.items():
        peak, base = m["long"]["tree_peak_rss"], m["short"]["tree_peak_rss"]
        rows.append(row(f"peak RSS per worker on a {args.minutes:g}-min video: {stage}", peak / GB,
                        baseline=base / GB, unit="GB", baseline_name=f"same stage on the first {BASELINE_S} s",
                        target=f"value <= {TARGET_BYTES / GB:g} GB", passed=peak <= TARGET_BYTES,
                        note=f"worker alone {m['long']['worker_maxrss'] / GB:.3f} GB; {m['long']['wall_s']:.0f} s"
                             + ("; Whisper decodes the VAD-gated speech only" if stage == "asr" else "")))
    print_table(measured, args.minutes)
    report = {"minutes": args.minutes, "fps": args.fps, "size": SIZE, "video": str(long_video),
              "generation": made, "target_bytes": TARGET_BYTES, "stages": measured, "rows": rows,
              "all_under_target": all(r["passed"] for r in rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_table(measured: dict, minutes: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"peak RSS per worker stage, {minutes:g}-min video vs its first {BASELINE_S} s "
                        f"(target <= {TARGET_BYTES / GB:g} GB)")
    for col in ("stage", "peak MiB (tree)", "worker MiB", "largest child MiB", f"{BASELINE_S} s peak MiB", "ratio",
                "wall s", "result", "target"):
        table.add_column(col)
    for stage, m in measured.items():
        long, short = m["long"], m["short"]
        table.add_row(stage, f"{long['tree_peak_rss'] / 2**20:.0f}", f"{long['worker_maxrss'] / 2**20:.0f}",
                      f"{long['largest_child_maxrss'] / 2**20:.0f}", f"{short['tree_peak_rss'] / 2**20:.0f}",
                      f"{long['tree_peak_rss'] / short['tree_peak_rss']:.2f}", f"{long['wall_s']:.1f}",
                      json.dumps(long["result"])[:60], "PASS" if long["tree_peak_rss"] <= TARGET_BYTES else "FAIL")
    Console(width=180).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
