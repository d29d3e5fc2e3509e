"""The feature step: frozen encoder outputs computed once per video and cached beside the shards.

Cache: ``<dataset>/features/<preset>/<video_id>.safetensors`` with tensors ``vision`` [frames, tokens, Dv] and
``vision_t`` [frames] (seconds), ``audio`` [tokens, Da] and ``audio_t`` [tokens] (seconds), stored as float16, and
metadata (duration, encoder fingerprints). Files are written atomically and skipped when present with matching
fingerprints, so the step is idempotent. A video whose inputs cannot be read becomes a ``DeadLetter``.

``pack_windows`` turns one video's cached features into the fixed-size per-window tensors the AVTS resampler
takes; training and inference both go through it.
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import ModelConfig, ResamplerConfig, VisionConfig
from schemas.paths import features_path
from schemas.records import Clip, DeadLetter, StageName, VideoRecord, utc_now

FORMAT_VERSION = "1"
# The schema has no feature stage yet; dead letters are filed under the flow until it does.
FEATURE_STAGE = getattr(StageName, "features", StageName.flow)


class FeatureError(RuntimeError):
    pass


@dataclass
class VideoFeatures:
    video_id: str
    duration_s: float
    vision: torch.Tensor  # [frames, tokens per frame, Dv]
    vision_t: torch.Tensor  # [frames]
    audio: torch.Tensor  # [audio tokens, Da]
    audio_t: torch.Tensor  # [audio tokens]
    fingerprints: dict[str, str]


def save_features(path: Path, feats: VideoFeatures) -> None:
    tensors = {"vision": feats.vision.half().contiguous(), "vision_t": feats.vision_t.float().contiguous(),
               "audio": feats.audio.half().contiguous(), "audio_t": feats.audio_t.float().contiguous()}
    meta = {"video_id": feats.video_id, "duration_s": repr(float(feats.duration_s)), "version": FORMAT_VERSION,
            **{f"fingerprint.{k}": v for k, v in feats.fingerprints.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_features(path: Path) -> VideoFeatures:
    if not Path(path).is_file():
        raise FeatureError(f"no cached features at {path}: run the feature step (python -m model.features)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        t = {k: f.get_tensor(k).float() for k in f.keys()}
    if meta.get("version") != FORMAT_VERSION:
        raise FeatureError(f"{path}: feature cache version {meta.get('version')!r} != {FORMAT_VERSION}; recompute")
    fps = {k.split(".", 1)[1]: v for k, v in meta.items() if k.startswith("fingerprint.")}
    return VideoFeatures(meta["video_id"], float(meta["duration_s"]), t["vision"], t["vision_t"], t["audio"],
                         t["audio_t"], fps)


# --- inputs: each loader isolated, tolerant of what the media stages wrote ------------------------------------

def load_frames(dataset_dir: Path, video: VideoRecord, clips: list[Clip], vcfg: VisionConfig
                ) -> tuple[list[float], list[np.ndarray]]:
    """RGB frames and their times: the clips' keyframe JPEGs, else frames decoded from the media at fallback_fps."""
    from schemas.paths import clip_keyframe_paths

    times, frames = [], []
    for clip in sorted(clips, key=lambda c: c.start_s):
        for t, path in zip(clip.keyframe_times, clip_keyframe_paths(dataset_dir, clip)):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
            if img is not None:
                times.append(float(t))
                frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if frames:
        return times, frames
    return _decode_frames(Path(dataset_dir) / video.media_path, video.video_id, vcfg)


def _decode_frames(media: Path, video_id: str, vcfg: VisionConfig) -> tuple[list[float], list[np.ndarray]]:
    if not media.is_file():
        raise FeatureError(f"{video_id}: no keyframes and no media file at {media}")
    size = vcfg.image_size
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", str(media.resolve()), "-an", "-sn",
           "-vf", f"fps={vcfg.fallback_fps},scale={size}:{size}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    n = len(proc.stdout) // (size * size * 3)
    if n == 0:
        raise FeatureError(f"{video_id}: no frames decoded from {media.name}: {proc.stderr.decode()[-300:]}")
    arr = np.frombuffer(proc.stdout[: n * size * size * 3], np.uint8).reshape(n, size, size, 3)
    return [i / vcfg.fallback_fps for i in range(n)], list(arr)


def load_waveform(dataset_dir: Path, video: VideoRecord) -> np.ndarray | None:
    """16 kHz mono float32 samples: the audio stage's file, else decoded from the media; None without audio."""
    from infra.audio_io import decode_audio_array, load_audio
    from schemas.paths import audio_path

    if not video.has_audio:
        return None
    path = audio_path(dataset_dir, video.video_id)
    if path.is_file():
        return np.asarray(load_audio(path), dtype=np.float32)
    return decode_audio_array(Path(dataset_dir) / video.media_path, video.video_id)


# --- the step ------------------------------------------------------------------------------------------------

def encoder_dtype(config: ModelConfig, device: str) -> torch.dtype:
    """The one dtype the frozen encoders run in, for the feature cache, training and inference alike: bf16 on a
    GPU unless the preset asks for fp32, fp32 on a CPU."""
    return torch.bfloat16 if device.startswith("cuda") and config.train.precision != "fp32" else torch.float32


class FrozenEncoders:
    """Both encoders, loaded once (load once, process many); ``encode`` is one video's features."""

    def __init__(self, config: ModelConfig, device: str = "cpu", dtype: torch.dtype | None = None):
        dtype = dtype or encoder_dtype(config, device)
        from model.encoders import audio_tower, vision_tower

        self.config = config
        self.vision = vision_tower(config.vision, device, dtype)
        self.audio = audio_tower(config.audio, device, dtype)
        self.fingerprints = {"vision": self.vision.fingerprint, "audio": self.audio.fingerprint}

    def encode(self, dataset_dir: Path, video: VideoRecord, clips: list[Clip]) -> VideoFeatures:
        times, frames = load_frames(dataset_dir, video, clips, self.config.vision)
        audio, audio_t = self.audio.encode(load_waveform(dataset_dir, video))
        return VideoFeatures(video.video_id, video.duration_s, self.vision.encode(frames),
                             torch.tensor(times, dtype=torch.float32), audio, audio_t, dict(self.fingerprints))


@dataclass
class FeatureReport:
    written: list[str]
    skipped: list[str]
    dead_letters: list[DeadLetter]


def cached_fingerprints(path: Path) -> dict[str, str] | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 — an unreadable cache file is a missing one: it is written again
        return None
    return {k.split(".", 1)[1]: v for k, v in meta.items() if k.startswith("fingerprint.")}


def compute_features(dataset_dir: Path, config: ModelConfig, *, video_ids: list[str] | None = None,
                     device: str = "cpu", overwrite: bool = False, encoders: FrozenEncoders | None = None
                     ) -> FeatureReport:
    """Cache features for every video of the dataset (or ``video_ids``); failures become dead letters."""
    from schemas.shards import read_records, write_dead_letters

    dataset_dir = Path(dataset_dir)
    videos = {v.video_id: v for v in read_records(dataset_dir, "videos", VideoRecord)}
    clips: dict[str, list[Clip]] = {}
    for c in read_records(dataset_dir, "clips", Clip):
        clips.setdefault(c.video_id, []).append(c)
    encoders = encoders or FrozenEncoders(config, device)
    report = FeatureReport([], [], [])
    for vid in video_ids or sorted(videos):
        path = features_path(dataset_dir, config.preset, vid)
        if not overwrite and path.is_file() and cached_fingerprints(path) == encoders.fingerprints:
            report.skipped.append(vid)
            continue
        dead: list[DeadLetter] = []
        try:
            if vid not in videos:
                raise FeatureError(f"video {vid} is not in the dataset's videos table")
            save_features(path, encoders.encode(dataset_dir, videos[vid], clips.get(vid, [])))
            report.written.append(vid)
        except Exception as exc:  # noqa: BLE001 — one bad video must not stop the others; it is recorded, not lost
            dead.append(DeadLetter(
                stage=FEATURE_STAGE, source_id=videos[vid].source if vid in videos else None, video_id=vid,
                error_class=type(exc).__name__,
                message=f"feature step ({config.preset}): {str(exc) or repr(exc)}"[:2000], failed_at=utc_now()))
        # keyed per video: a rerun replaces (or, on success, clears) only this video's dead letter
        write_dead_letters(dataset_dir, f"features.{config.preset}.{vid}", dead)
        report.dead_letters += dead
    return report


# --- windows -------------------------------------------------------------------------------------------------

def window_spans(span: tuple[float, float], cfg: ResamplerConfig) -> torch.Tensor:
    """Equal windows covering ``span``: about window_s long, at most max_windows of them -> [T, 2]."""
    start, end = float(span[0]), max(float(span[1]), float(span[0]) + 1e-3)
    n = min(cfg.max_windows, max(1, math.ceil((end - start) / cfg.window_s - 1e-6)))
    edges = torch.linspace(start, end, n + 1)
    return torch.stack([edges[:-1], edges[1:]], 1)


def _evenly(idx: torch.Tensor, k: int) -> torch.Tensor:
    return idx if len(idx) <= k else idx[torch.linspace(0, len(idx) - 1, k).round().long()]


def pack_windows(feats: VideoFeatures, span: tuple[float, float], cfg: ResamplerConfig) -> dict[str, torch.Tensor]:
    """Per-window video/audio tokens with masks for ``span`` of the video.

    Video: the frames inside the window (evenly thinned to max_frames_per_window); a window with none gets the
    nearest frame, since keyframes are sampled per clip and the clip's look holds between them. Audio: the tokens
    whose centre is inside the window, average-pooled down to max_audio_per_window when there are more.
    """
    spans = window_spans(span, cfg)
    T, P, Dv = len(spans), feats.vision.shape[1], feats.vision.shape[2]
    Fv, Fa, Da = cfg.max_frames_per_window, cfg.max_audio_per_window, feats.audio.shape[1]
    video, vmask = torch.zeros(T, Fv * P, Dv), torch.zeros(T, Fv * P, dtype=torch.bool)
    audio, amask = torch.zeros(T, Fa, Da), torch.zeros(T, Fa, dtype=torch.bool)
    for t, (a, b) in enumerate(spans.tolist()):
        last = t == T - 1
        if len(feats.vision_t):
            inside = (feats.vision_t >= a) & ((feats.vision_t <= b) if last else (feats.vision_t < b))
            idx = inside.nonzero().flatten()
            if len(idx) == 0:
                idx = (feats.vision_t - (a + b) / 2).abs().argmin().view(1)
            frames = feats.vision[_evenly(idx, Fv)].reshape(-1, Dv)
            video[t, : len(frames)], vmask[t, : len(frames)] = frames, True
        inside = (feats.audio_t >= a) & ((feats.audio_t <= b) if last else (feats.audio_t < b))
        tokens = feats.audio[inside]
        if len(tokens) > Fa:
            tokens = torch.nn.functional.adaptive_avg_pool1d(tokens.T[None], Fa)[0].T
        audio[t, : len(tokens)], amask[t, : len(tokens)] = tokens, True
    return {"video": video, "video_mask": vmask, "audio": audio, "audio_mask": amask, "window_spans": spans,
            "duration": torch.tensor(float(feats.duration_s))}


def main(argv: list[str] | None = None) -> None:
    import argparse

    from model.config import preset_config

    p = argparse.ArgumentParser(description="Cache frozen encoder features for a dataset")
    p.add_argument("dataset_dir", type=Path)
    p.add_argument("--preset", default="smol")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    report = compute_features(args.dataset_dir, preset_config(args.preset), device=args.device,
                              overwrite=args.overwrite)
    print(f"features: {len(report.written)} written, {len(report.skipped)} cached, "
          f"{len(report.dead_letters)} failed")
    for d in report.dead_letters:
        print(f"  {d.video_id}: {d.error_class}: {d.message}")


if __name__ == "__main__":
    main()
