"""Perception backends: seconds per minute of video of the embedded profile's real models against the model-free
describers they replaced, on the same videos in the same run.

- audio events: ``yamnet`` (with and without the signal measures) against ``signal-analysis``;
- keyframe captions: ``object-detector`` (SSD COCO + EfficientNet-Lite3 + PP-OCRv4 + Haar + colours) against
  ``opencv-describer`` (colours + Haar + tesseract).

Videos: the real media of ``../shared/media`` that have a picture (Big Buck Bunny excerpt, chaplin.mp4; the media
stage turns audio-only files away) plus one synthetic sample (75 s: tones, noise, beats, narration, drawn text),
each run through the real media stage first. Each backend is built before timing (setup is reported
separately); each timing is the best of ``--repeat`` runs. ``ratio`` = new / old seconds per minute: what the real
models cost over the fallback.

    python tests/perf/bench_backends.py [out/perf/backends.json] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_rows import row, write_report

from devdata.samples import make_samples
from flows.media_chain import MediaResult, process_source
from schemas.handoff import VideoItem
from schemas.settings import AudioTagger, VisualCaptioner, load_settings
from tasks.audio_events import AudioEventsStage
from tasks.visual_caption import VisualCaptionStage

SHARED_MEDIA = REPO.parent / "shared" / "media"
MEDIA = ("big_buck_bunny_0_30.webm", "chaplin.mp4")
AUDIO = {"signal-analysis (baseline)": AudioTagger(kind="signal-analysis"),
         "yamnet + signal measures": AudioTagger(kind="yamnet"),
         "yamnet alone": AudioTagger(kind="yamnet", signal_measures=False)}
VISUAL = {"opencv-describer (baseline)": VisualCaptioner(kind="opencv-describer"),
          "object-detector": VisualCaptioner(kind="object-detector")}


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "backends.json")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = load_settings()

    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        dataset = Path(tmp) / "dataset"
        sources = [str(SHARED_MEDIA / name) for name in MEDIA if (SHARED_MEDIA / name).is_file()]
        (truth,) = make_samples(Path(tmp) / "samples", seed=0, count=1)
        sources.append(str(Path(tmp) / "samples" / truth.file))
        media = []
        for src in sources:
            result = process_source(src, dataset, cfg)
            if isinstance(result, MediaResult):
                media.append(result)
            else:
                print(f"  skipped {Path(src).name}: {result.message}", file=sys.stderr)
        with_video = [m for m in media if sum(len(c.keyframe_times) for c in m.clips)]
        audio_min = sum(m.audio.duration_s for m in media if m.audio) / 60
        video_min = sum(m.video.duration_s for m in with_video) / 60
        keyframes = sum(len(c.keyframe_times) for m in with_video for c in m.clips)
        print(f"  {len(media)} videos, {audio_min:.2f} min of audio, {video_min:.2f} min of picture "
              f"({keyframes} keyframes)", file=sys.stderr)

        results: dict[str, dict] = {}
        for stage, kinds, stage_cls, videos, minutes in (
                ("audio_events", AUDIO, AudioEventsStage, [m for m in media if m.audio], audio_min),
                ("visual_caption", VISUAL, VisualCaptionStage, with_video, video_min)):
            for label, section in kinds.items():
                worker = stage_cls.standalone(section, settings=cfg)  # loads the backend once, timed by the stage
                setup_s = worker.worker_stats().setup_s
                items = [VideoItem.in_folder(dataset, m.video.video_id, m.clips) for m in videos]
                outputs = [worker.process(i) for i in items]  # warm: first-call allocations are not timed
                seconds = best_of(args.repeat, lambda: [worker.process(i) for i in items])  # noqa: B023 — run now
                found = sum(len(rows) for o in outputs for rows in o.tables.values())
                results[f"{stage}: {label}"] = {"stage": stage, "backend": label, "model": worker.model_name,
                                                "setup_s": round(setup_s, 3), "seconds": round(seconds, 3),
                                                "s_per_min": round(seconds / minutes, 3), "records": found}
                print(f"  {stage} {label}: {seconds:.2f} s, {seconds / minutes:.2f} s/min", file=sys.stderr)

    rows = []
    for stage, baseline_label in (("audio_events", "signal-analysis (baseline)"),
                                  ("visual_caption", "opencv-describer (baseline)")):
        base = results[f"{stage}: {baseline_label}"]
        for r in results.values():
            if r["stage"] != stage or r["backend"] == baseline_label:
                continue
            rows.append(row(f"{stage} seconds per minute of video: {r['backend']}", r["s_per_min"],
                            baseline=base["s_per_min"], baseline_name=baseline_label, unit="s/min",
                            note=f"setup {r['setup_s']:.1f} s (baseline {base['setup_s']:.1f} s); "
                                 f"{r['records']} records vs {base['records']}"))
    report = {"rows": rows, "backends": results, "audio_minutes": round(audio_min, 3),
              "video_minutes": round(video_min, 3), "keyframes": keyframes, "repeat": args.repeat}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
