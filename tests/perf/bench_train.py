"""Training-step benchmark: cached frozen-encoder features against encoding each video on the fly.

Both paths run the same stage-2 optimizer step on the same examples; they differ only in where the features come
from: ``cached`` reads ``<dataset>/features/<preset>/<video_id>.safetensors`` (from disk every step, no memory
cache), ``on_the_fly`` reads the keyframes and audio and runs the frozen vision tower and audio encoder first, as
a pipeline without the feature cache would. Reported per video length: median step seconds for each path, the
encode share, and ``speedup`` = on_the_fly / cached. Target >= 5x on videos of the paper's length (minutes): the
encoders' cost grows with the video while the step's cost is capped by the AVTS token budget (max_windows), so a
30 s clip shows less and a long video more.

    python tests/perf/bench_train.py [out/perf/train.json] [--preset smol] [--minutes 10] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch

from model.config import model_available, preset_config
from model.data import FeatureStore, collate, load_examples, make_sample
from model.features import FrozenEncoders, compute_features
from model.modeling import SavenVid, set_trainable
from devdata.model_sample import BUNNY, MEDIA_DIR, _keyframes, _qa, _records, _BUNNY_CLIPS, _video
from devdata.model_sample import build_sample_dataset
from model.train import make_optimizer, train_step, warmup_cosine
from schemas.records import Clip, QAType, VideoRecord

TARGET = 5.0
LONG = "local-bunnyloop"


def add_long_video(ds: Path, minutes: float) -> None:
    """The Big Buck Bunny excerpt looped to ``minutes`` (stream copy), with 30 s clips, keyframes, audio and QA."""
    from schemas.shards import read_records, write_shard
    from tasks.audio import decode_audio

    seconds = minutes * 60
    src = MEDIA_DIR / "big_buck_bunny_0_30.webm"
    looped = Path(tempfile.mkdtemp()) / "loop.webm"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-stream_loop", str(math.ceil(seconds / 30) - 1),
                    "-i", str(src.resolve()), "-c", "copy", "-t", str(seconds), str(looped)], check=True)
    video = _video(ds, LONG, looped, seconds, 1280, 720, 24.0)
    rows = [(s + 30 * k, e + 30 * k, *rest) for k in range(math.ceil(seconds / 30))
            for s, e, *rest in _BUNNY_CLIPS if s + 30 * k < seconds]
    rows = [(s, min(e, seconds), *rest) for s, e, *rest in rows]
    clips, descs = _records(LONG, rows)
    write_shard(ds, "clips", key=LONG, records=_keyframes(ds, ds / video.media_path, clips))
    write_shard(ds, "descriptions", key=LONG, records=descs)
    decode_audio(ds / video.media_path, ds, LONG)
    videos = read_records(ds, "videos", VideoRecord)
    write_shard(ds, "videos", key="all", records=[*videos, video])
    qa = [_qa(LONG, 1, "What animal is the main character of the video?",
              ["A big grey rabbit", "A brown dog", "A white horse", "A red fox"], 0, QAType.global_av_inference, [2]),
          _qa(LONG, 2, "What kind of sound accompanies the meadow scenes?",
              ["Heavy rock music", "Calm orchestral music with birdsong", "A news reporter", "Silence"], 1,
              QAType.global_av_inference, [0])]
    write_shard(ds, "qa", key=LONG, records=qa)


def bench(ds: Path, preset: str, video_id: str, steps: int, model, encoders, store) -> dict:
    from schemas.shards import read_records

    cfg = model.config
    video = next(v for v in read_records(ds, "videos", VideoRecord) if v.video_id == video_id)
    clips = [c for c in read_records(ds, "clips", Clip) if c.video_id == video_id]
    # Timing only: the AVBench held-out split (which may hold either video) does not apply here.
    examples = [e for e in load_examples(ds, 2, include_heldout=True) if e.video_id == video_id][:2]
    opt, _ = make_optimizer(model, 1e-4, 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(0, 100, 0.1))

    def step(on_the_fly: bool) -> tuple[float, float]:
        t0 = time.perf_counter()
        samples = []
        for ex in examples:
            feats = encoders.encode(ds, video, clips) if on_the_fly else store.get(ex.video_id)
            samples.append(make_sample(feats, ex.span, ex.prompt, ex.query, model.tokenizer, cfg, ex.target))
        t1 = time.perf_counter()
        train_step(model, opt, sched, [collate(samples, model.tokenizer.pad_token_id)])
        return time.perf_counter() - t0, t1 - t0

    step(False)  # warm-up: allocator, lazy imports, page cache
    cached = [step(False) for _ in range(steps)]
    fly = [step(True) for _ in range(steps)]
    c, f = statistics.median(t for t, _ in cached), statistics.median(t for t, _ in fly)
    return {"video_id": video_id, "duration_s": video.duration_s, "examples_per_step": len(examples),
            "cached_step_s": round(c, 3), "on_the_fly_step_s": round(f, 3),
            "on_the_fly_encode_s": round(statistics.median(e for _, e in fly), 3),
            "cached_load_s": round(statistics.median(e for _, e in cached), 4), "speedup": round(f / c, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, default=REPO / "out" / "perf" / "train.json")
    p.add_argument("--preset", default="smol" if model_available("smollm2-135m-instruct") else "tiny")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the long test video")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = build_sample_dataset(Path(tmp) / "ds")
        add_long_video(ds, args.minutes)
        cfg = preset_config(args.preset)
        encoders = FrozenEncoders(cfg)
        compute_features(ds, cfg, encoders=encoders)
        torch.manual_seed(0)
        model = SavenVid.build(cfg)
        set_trainable(model, 2)
        model.train()
        store = FeatureStore(ds, cfg.preset, max_cached=0)
        rows = [bench(ds, args.preset, vid, args.steps, model, encoders, store) for vid in (BUNNY, LONG)]
    result = {"preset": args.preset, "target_speedup": TARGET, "threads": torch.get_num_threads(), "videos": rows,
              "meets_target_on_long_video": rows[-1]["speedup"] >= TARGET}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
