"""What stages hand each other inside a run (not dataset tables): the video on its way through the pipeline
(``VideoItem``), what one stage made of it (``StageResult``), what the media stages learn about a video (probe,
audio, segments), and what a run counts per stage (``StageStats``) and per worker process (``WorkerStats``).

They travel between processes (Ray tasks and actors): pydantic models with ``extra="forbid"`` like the dataset
records in ``schemas.records``, or dataclasses where they hold arrays and bytes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from schemas.records import Clip, DeadLetter

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



@dataclass
class VideoItem:
    """One video on its way through the pipeline: the rows (by table) and hand-off values (by name) that the stages
    so far made of it, and the stages that could not do their work for it.

    A stage reads the names it declares (``Stage.reads``) and returns a ``StageResult``, which the runner merges in
    with ``take``. What travels to a Ray actor is ``subset(reads)``, not the whole item."""

    source: str
    video_id: str | None = None
    tables: dict[str, list[Any]] = field(default_factory=dict)
    handoff: dict[str, Any] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    failed_stages: set[str] = field(default_factory=set)  # stages that could not do their work for the whole video
    # A local folder holding the video's files (media stages work in it; in-process callers read media from it).
    work_dir: Path | None = None
    media: VideoMedia | None = None  # its audio and keyframes, once decoded (in a run: resolved by Ray)
    # What each stage returned, in order, with the seconds to count (None: the result's own): the run counts it
    # once the video is committed or dropped (``StageStats.add_result``).
    results: list[tuple[str, "StageResult", float | None]] = field(default_factory=list)

    @classmethod
    def in_folder(cls, folder: Path | str, video_id: str, clips: list[Clip], **tables: list[Any]) -> "VideoItem":
        """A video whose files are in a local folder laid out as ``schemas.paths`` says (tests, benchmarks)."""
        return cls(source=video_id, video_id=video_id, tables={"clips": list(clips), **tables},
                   work_dir=Path(folder))

    def rows(self, table: str) -> list[Any]:
        return self.tables.get(table, [])

    def value(self, name: str) -> Any:
        """A hand-off value (or a table's rows) an earlier stage left under ``name``."""
        if name in self.handoff:
            return self.handoff[name]
        if name in self.tables:
            return self.tables[name]
        raise KeyError(f"{name!r} is not in the item of {self.video_id or self.source}; an earlier stage must "
                       f"write or hand it off")

    @property
    def clips(self) -> list[Clip]:
        return self.rows("clips")

    def take(self, stage: str, result: "StageResult", seconds: float | None = None) -> None:
        """Merge one stage's result into the item (``seconds``: what the run counts for it, if not its own)."""
        self.results.append((stage, result, seconds))
        if result.video_id and not self.video_id:
            self.video_id = result.video_id
        for table, rows in result.tables.items():
            self.tables.setdefault(table, []).extend(rows)
        self.handoff.update(result.handoff)
        self.dead_letters.extend(result.dead_letters)
        if result.failed:
            self.failed_stages.add(stage)

    def subset(self, names: Iterable[str]) -> "VideoItem":
        """The item with only the tables and hand-offs ``names`` (what a stage in another process needs)."""
        names = set(names)
        return VideoItem(source=self.source, video_id=self.video_id,
                         tables={k: v for k, v in self.tables.items() if k in names},
                         handoff={k: v for k, v in self.handoff.items() if k in names}, work_dir=self.work_dir)

    def load_media(self, *, in_memory: bool = False) -> VideoMedia:
        """The video's audio and keyframes: the ones handed over, or read from ``work_dir``."""
        if self.media is None:
            if self.work_dir is None or self.video_id is None:
                raise ValueError(f"no media for {self.video_id or self.source}: neither handed over nor in a folder")
            self.media = VideoMedia.from_folder(self.work_dir, self.video_id, self.clips, in_memory=in_memory)
        return self.media


class StageResult(BaseModel):
    """What one stage made of one video: rows by table, hand-off values for later stages, the video's or its items'
    failures, and numbers the run adds up (``counts``: {"keyframes": 9}; ``tallies``: {"object": {"dog": 2}})."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    video_id: str | None = None
    tables: dict[str, list[Any]] = Field(default_factory=dict)
    handoff: dict[str, Any] = Field(default_factory=dict)
    dead_letters: list[DeadLetter] = Field(default_factory=list)
    counts: dict[str, float] = Field(default_factory=dict)
    tallies: dict[str, dict[str, int]] = Field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the process's CPU over process(), ffmpeg children included (infra.stage)

    @property
    def failed(self) -> bool:
        """True when the stage could not do its work for the whole video (not just for some items)."""
        return any(d.item_id is None for d in self.dead_letters)


class WorkerStats(BaseModel):
    """One stage instance's process: where it ran, its model loads, what it did (a run reports every actor's)."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    model: str
    model_loads: int  # setups of this stage in this process
    pid: int
    node: str = "local"  # the Ray node (short id) of the process
    node_type: str = ""  # that node's custom resources (media, perception, llm: deploy/ray-cluster.yaml's types)
    gpus: list[str] = Field(default_factory=list)  # the GPUs Ray gave it (CUDA_VISIBLE_DEVICES ids)
    setup_s: float
    alive_s: float = 0.0  # since it was built: ``seconds / alive_s`` is how busy it kept its share
    videos: int = 0
    clips: int = 0
    seconds: float = 0.0  # inside process(), summed
    cpu_seconds: float = 0.0  # the process's CPU inside process(), summed


class StageStats(BaseModel):
    """What one stage did over a batch or a run: videos, rows by table, failures, seconds and its own counters."""

    model_config = ConfigDict(extra="forbid")

    videos: int = 0
    failed: int = 0  # videos the stage could not do as a whole
    skipped: int = 0  # videos it did not run on: a stage it reads from had failed them
    rows: Counter = Field(default_factory=Counter)  # table -> rows written
    dead_letters: int = 0
    seconds: float = 0.0  # summed over videos, or the wall time of a batch for a stage that runs a batch at once
    # CPU seconds of the process that ran it (its ffmpeg children included). An LLM or driver stage runs in the
    # flow's process: its figure is that process's CPU over the call, which, with batches in flight, also holds what
    # the other batch did meanwhile (an upper bound). The LLM server's CPU is in its own processes
    # (tests/perf/bench_flow.py measures them).
    cpu_seconds: float = 0.0
    counts: dict[str, float] = Field(default_factory=dict)  # a stage's own numbers (seconds of audio, tokens)
    tallies: dict[str, Counter] = Field(default_factory=dict)

    def add_counts(self, counts: dict[str, float]) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def add_result(self, result: StageResult, seconds: float | None = None, *, landed: bool = True,
                   failure: bool = True) -> None:
        """One video's result; ``seconds`` replaces its own (0 for a stage whose batch wall time is counted).
        ``landed``: the video was committed; what it made (rows, counts, tallies) is counted only then, so a run's
        figures are those of its dataset. ``failure``: its dead letters are failures (not: a duplicate)."""
        self.videos += 1
        self.seconds += result.seconds if seconds is None else seconds
        self.cpu_seconds += result.cpu_seconds
        if failure:
            self.failed += int(result.failed)
            self.dead_letters += len(result.dead_letters)
        if not landed:
            return
        self.rows.update({t: len(r) for t, r in result.tables.items()})
        self.add_counts(result.counts)
        for name, tally in result.tallies.items():
            self.tallies.setdefault(name, Counter()).update(tally)

    def add(self, other: "StageStats") -> None:
        self.videos += other.videos
        self.failed += other.failed
        self.skipped += other.skipped
        self.rows.update(other.rows)
        self.dead_letters += other.dead_letters
        self.seconds += other.seconds
        self.cpu_seconds += other.cpu_seconds
        self.add_counts(other.counts)
        for name, tally in other.tallies.items():
            self.tallies.setdefault(name, Counter()).update(tally)

    def tally(self, name: str) -> Counter:
        return self.tallies.get(name, Counter())
