"""The contract of a model-holding stage: ``setup()`` once (load the model), ``process(work)`` many times.

As in cosmos-curate's stages and datatrove's steps, the stage author writes only those two methods (``setup`` has a
default: build the backend that the profile section's ``kind`` names from the stage's registry); this base
counts what every worker reports (model loads in the process, videos, clips, seconds) and places the class in Ray
with the resources of its profile section. The pipeline calls ``run``; the in-process callers (benchmarks, tests)
call the same ``run``, so both paths count alike.

``process`` never raises for bad input: a video it cannot handle comes back with dead letters in its output.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections import Counter
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from infra.registry import Registry
from schemas.handoff import StageOutput, VideoMedia, VideoWork
from schemas.records import Stage
from schemas.settings import Resources

Out = TypeVar("Out", bound=StageOutput)

# Model loads in this process, by stage: an actor proves "loaded once" with it (a restarted actor is a new process).
_LOADS: Counter = Counter()


class WorkerStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    model: str
    model_loads: int  # setups of this stage's workers in this process
    pid: int
    setup_s: float
    videos: int = 0
    clips: int = 0
    seconds: float = 0.0  # inside process(), summed


class StageWorker(ABC, Generic[Out]):
    stage: ClassVar[Stage]
    # Where the backend named by the profile section's ``kind`` is found; ``setup`` builds it as ``self.backend``.
    backends: ClassVar[Registry | None] = None

    def __init__(self, cfg: BaseModel):
        self.cfg = cfg
        started = time.perf_counter()
        self.setup()
        _LOADS[self.stage.value] += 1
        self._stats = WorkerStats(stage=self.stage.value, model=self.model_name, model_loads=0, pid=os.getpid(),
                                  setup_s=time.perf_counter() - started)

    def setup(self) -> None:
        """Load the model (once per worker): by default the registered backend the section's ``kind`` names."""
        self.backend = self.backends.get(self.cfg.kind)(self.cfg)

    @abstractmethod
    def process(self, work: VideoWork, media: VideoMedia) -> Out:
        """One video's records; failures are dead letters in the output, never exceptions."""

    @property
    def model_name(self) -> str:
        """What the records name as their producer (e.g. ``faster-whisper:whisper-base``)."""
        return self.backend.name

    def run(self, work: VideoWork, media: VideoMedia | None = None) -> Out:
        """``media``: the video's audio and keyframes (in a run, resolved by Ray from the media task's object);
        without it they are read from ``work.dataset_dir``."""
        started = time.perf_counter()
        if media is None:
            media = VideoMedia.from_folder(work.dataset_dir, work.video_id, work.clips)
        out = self.process(work, media)
        self._stats.videos += 1
        self._stats.clips += len(work.clips)
        self._stats.seconds += time.perf_counter() - started
        return out

    def stats(self) -> WorkerStats:
        return self._stats.model_copy(update={"model_loads": _LOADS[self.stage.value]})

    @classmethod
    def resources(cls, cfg: BaseModel) -> Resources:
        return cfg.resources

    @classmethod
    def in_ray(cls, cfg: BaseModel, **extra):
        """This worker as a Ray actor class holding the resources its profile section declares."""
        from infra.ray_stage import in_ray

        return in_ray(cls, cls.resources(cfg), **extra)
