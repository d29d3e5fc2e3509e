"""The audio stage: the audio track decoded once to 16 kHz mono float32 and kept for every audio stage (ASR,
tagging).

One ffmpeg process (``infra.audio_io.decode_audio_array``) writes raw samples to a pipe; they are saved as
``<dataset>/audio/<video_id>.npy`` (``schemas.paths.audio_path``) and read back memory-mapped by
``infra.audio_io.load_audio``, so no later stage decodes the video's audio again.

A video without an audio stream raises ``PermanentError``: this is an audio-visual dataset, so such a source can
never yield a usable record and goes to the dead letter (the media chain probes first and reports it there).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from infra.audio_io import SAMPLE_RATE, decode_audio_array
from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import AudioResult, StageResult, VideoItem
from schemas.paths import audio_path
from schemas.records import StageName
from tasks.acquire import Acquired


def decode_audio(media_path: Path, dataset_dir: Path, video_id: str) -> AudioResult:
    """Decode once and save to ``<dataset>/audio/<video_id>.npy`` (atomically: a crash leaves no partial file)."""
    samples = decode_audio_array(media_path, video_id)
    target = audio_path(dataset_dir, video_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".npy.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, samples, allow_pickle=False)
    os.replace(tmp, target)
    return AudioResult(video_id=video_id, path=target.relative_to(dataset_dir).as_posix(),
                       num_samples=int(samples.size), duration_s=samples.size / SAMPLE_RATE)


@STAGES.register(StageName.audio)
class AudioStage(Stage):
    """The audio track decoded once, for every audio stage after it."""

    name = StageName.audio
    placement = "media"
    reads = ("acquired",)
    hands_off = ("audio",)

    def process(self, item: VideoItem) -> StageResult:
        acquired: Acquired = item.value("acquired")
        audio = decode_audio(item.work_dir / acquired.media_path, item.work_dir, acquired.video_id)
        return StageResult(handoff={"audio": audio}, counts={"audio_s": audio.duration_s, "decode_passes": 1})
