"""Records that one stage hands to the next inside a run (not dataset tables): what the media chain learns about a
video, and what each perception worker returns for one video.

They travel between processes (Ray tasks and actors), so they are pydantic models with ``extra="forbid"``, like
the dataset records in ``schemas.records``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from schemas.records import AudioEvent, Clip, DeadLetter, SpeechSegment, VisualCaption

SAMPLE_RATE = 16_000  # the one rate every audio stage works at (``infra.audio_io`` decodes to it)


class ProbeResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float
    duration_from: Literal["format", "stream", "packets"]
    video_duration_s: float | None = None  # the video stream's own, when stated (audio can outlast the video)
    fps: float
    fps_fraction: str  # exact rate as "num/den", for ffmpeg's fps filter
    video_stream_index: int = 0  # absolute index in the container (cover-art streams are skipped)
    width: int
    height: int
    video_codec: str
    has_audio: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    format_name: str
    size_bytes: int


class AudioResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    video_id: str
    path: str  # relative to the dataset folder
    sample_rate: int = SAMPLE_RATE
    num_samples: int
    duration_s: float
    decode_passes: int = 1


class SegmentResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video_id: str
    clips: list[Clip]
    cuts_s: list[float]  # raw detector cuts (first frame of each new scene), before the clip policy
    detector: str
    frames_decoded: int
    decoded_duration_s: float
    analysis_size: tuple[int, int]
    keyframe_size: tuple[int, int]
    keyframe_dir: str  # relative to the dataset folder
    candidates_kept: int
    decode_passes: int = 1


class VideoWork(BaseModel):
    """One video's clips for a perception worker: what ``StageWorker.run`` takes (with the ``VideoMedia``)."""

    model_config = ConfigDict(extra="forbid")

    video_id: str
    clips: list[Clip]
    dataset_dir: str = ""  # a local folder holding the video's audio and keyframes, when no VideoMedia is passed


@dataclass
class VideoMedia:
    """What the perception stages read of one video: its 16 kHz mono audio and the JPEG bytes of each clip's
    keyframes (in the order of ``Clip.keyframe_times``; None where a keyframe is missing).

    In a run it travels from the media task to the perception actors through Ray's object store (copied to a node
    only when a stage there needs it; numpy arrays are read in place), never as a path on another node's disk.
    ``from_folder`` reads the same from a local folder laid out as ``schemas.paths`` says (tests, benchmarks)."""

    video_id: str
    audio: np.ndarray | None  # None: the audio stage wrote nothing
    keyframes: dict[str, list[bytes | None]] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: Path | str, video_id: str, clips: list[Clip], *, in_memory: bool = False
                    ) -> "VideoMedia":
        """``in_memory``: load the audio whole instead of memory-mapping it (the folder is about to go)."""
        from schemas.paths import audio_path, clip_keyframe_paths

        folder = Path(folder)
        path = audio_path(folder, video_id)
        audio = None
        if path.is_file():
            audio = np.load(path, mmap_mode=None if in_memory else "r", allow_pickle=False)
        frames = {c.clip_id: [p.read_bytes() if p.is_file() else None for p in clip_keyframe_paths(folder, c)]
                  for c in clips}
        return cls(video_id, audio, frames)

    @property
    def nbytes(self) -> int:
        audio = 0 if self.audio is None else int(self.audio.nbytes)
        return audio + sum(len(b) for frames in self.keyframes.values() for b in frames if b)


class StageOutput(BaseModel):
    """What every perception worker returns for one video: its records (in the subclass), time and failures."""

    model_config = ConfigDict(extra="forbid")

    video_id: str
    seconds: float = 0.0
    dead_letters: list[DeadLetter] = Field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when the stage could not do its work for the whole video (not just for some clips)."""
        return any(d.item_id is None for d in self.dead_letters)


class ASROutput(StageOutput):
    speech: list[SpeechSegment] = Field(default_factory=list)
    language: str | None = None
    language_probability: float | None = None
    audio_s: float = 0.0


class AudioEventsOutput(StageOutput):
    events: list[AudioEvent] = Field(default_factory=list)
    audio_s: float = 0.0


class VisualCaptionOutput(StageOutput):
    captions: list[VisualCaption] = Field(default_factory=list)
    keyframes: int = 0
