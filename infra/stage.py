"""The one contract of a pipeline stage: media, perception and LLM stages alike.

A stage is a declared unit, as in datatrove's ``PipelineStep`` and cosmos-curate's stage specs: its ``name``, the
profile ``section`` that holds its settings (resources, the backend ``kind``), the ``backends`` registry that kind is
looked up in, where it runs (``placement``), the names it ``reads`` from earlier stages and the tables it ``writes``.
Its author writes ``setup`` (load the model once; the default builds the registered backend) and ``process`` (one
video in, one ``StageResult`` out). This base owns the rest, once for every stage: timing, counting, and turning an
exception into a dead letter (``run``), the same for a whole video or for each of its items (``each``).

Placements (``flows.video_pipeline`` places each):
- ``media``: in one Ray task per source, in order, in the node's scratch folder (acquire ... segment). A stage of
  this placement is required: a video it fails leaves the run.
- ``actor``: in Ray actors holding the model, placed with the section's resources; consecutive actor stages run at
  the same time (ASR, audio tagging, keyframe captions).
- ``driver``: in the process that runs the batch, once per run (code over earlier rows; the dedup index).
- ``llm``: once per batch, every video of the batch at once through one client (``infra.llm_stage``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import time
from abc import ABC
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, ClassVar, Iterable, Literal, Mapping, TypeVar

from pydantic import BaseModel

from infra.errors import StageError, dead_letter_from_exception
from infra.registry import Registry
from schemas.handoff import StageResult, StageStats, VideoItem, WorkerStats
from schemas.records import DeadLetter
from schemas.settings import Resources, Section, Settings

log = logging.getLogger("saven.stage")

Placement = Literal["media", "actor", "driver", "llm"]
T = TypeVar("T")

# Model loads in this process, by stage: an actor proves "loaded once" with it (a restarted actor is a new process).
_LOADS: Counter = Counter()


@dataclass
class StageContext:
    """What a run gives each stage besides its profile section."""

    settings: Settings
    dataset: str = ""  # the dataset's URI (a folder or an object-store prefix)
    llm_cache: Path | None = None  # the LLM request cache of the run
    # What a generated text may name: the vocabulary of the backends this run's perception stages use.
    vocabulary: frozenset[str] = field(default_factory=frozenset)


def process_cpu_s() -> float:
    """CPU seconds of this process (every thread: a model's intra-op pool counts) and of the children it has waited
    for (ffmpeg, ffprobe). A stage's CPU is the difference over its ``process``: exact in a Ray worker, which runs
    one task at a time; a driver-placed stage also counts what the driver's other threads did meanwhile."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Stage(ABC):
    """One stage of the pipeline. Subclasses declare the class attributes and write ``process``."""

    name: ClassVar[str]  # the key in reports and a dead letter's ``stage``
    title: ClassVar[str] = ""  # what people call it, for the dataset card ("ASR"); default: the name
    placement: ClassVar[Placement]
    # The profile section with this stage's settings: a field of ``Settings`` (the built-in stages), or a key of
    # the profile's ``stages:`` mapping validated by ``config`` (a stage added later). None: no settings.
    section: ClassVar[str | None] = None
    config: ClassVar[type[Section] | None] = None
    backends: ClassVar[Registry | None] = None  # where the section's ``backend_field`` is looked up
    backend_field: ClassVar[str] = "kind"
    reads: ClassVar[tuple[str, ...]] = ()  # tables and hand-off values of earlier stages
    optional: ClassVar[tuple[str, ...]] = ()  # those of ``reads`` a pipeline may lack: then read as empty
    writes: ClassVar[Mapping[str, type[BaseModel]]] = {}  # table -> record class
    hands_off: ClassVar[tuple[str, ...]] = ()  # values for later stages that are no table
    model_column: ClassVar[tuple[str, str] | None] = None  # (table, column) that names the model in the rows
    # A video this stage fails as a whole leaves the run uncommitted (media stages always; a duplicate's dedup).
    # Otherwise the video commits with the stage's dead letter and without what the stage and those reading it
    # would have made.
    required: ClassVar[bool] = False

    def __init__(self, context: StageContext, *, backend: Any = None):
        """``backend``: one already loaded (tests, benchmarks) instead of ``setup``'s."""
        self.context = context
        self.cfg = self.section_of(context.settings)
        started = time.perf_counter()
        if backend is None:
            self.setup()
        else:
            self.backend = backend
        _LOADS[self.name] += 1
        self._created = started
        self._worker = WorkerStats(stage=self.name, model=self.model_name, model_loads=0, pid=os.getpid(),
                                   node=node_id(), gpus=gpu_ids(), setup_s=time.perf_counter() - started)

    # -- what a stage author writes ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the model (once per instance): by default the registered backend the section's kind names."""
        if self.backends is not None:
            self.backend = self.backends.get(self.backend_kind(self.cfg))(self.cfg)

    def process(self, item: VideoItem) -> StageResult:
        """One video's rows and hand-offs. Raise a ``StageError`` (or anything) for a video it cannot do; use
        ``each`` for items that may fail alone."""
        raise NotImplementedError(f"stage {self.name!r} has no process()")

    def teardown(self) -> dict[str, float]:
        """Release what ``setup`` took; returns counts to add to the stage's (an LLM client's tokens)."""
        return {}

    # -- declared facts, read by the pipeline, the report and the card ------------------------------------------

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Whether the run places this stage (a profile can switch a stage off)."""
        return True

    @classmethod
    def section_of(cls, settings: Settings) -> Any:
        if cls.section is None:
            return None
        if cls.config is not None:  # an added stage: its mapping under ``stages:``, validated by its own model
            return cls.config.model_validate(settings.stages.get(cls.section, {}))
        return getattr(settings, cls.section)

    @classmethod
    def backend_kind(cls, section: Any) -> str | None:
        return getattr(section, cls.backend_field) if cls.backends is not None else None

    @classmethod
    def resources(cls, settings: Settings) -> Resources:
        return getattr(cls.section_of(settings), "resources", None) or Resources()

    @classmethod
    def _declared_by_backend(cls, settings: Settings, attr: str) -> Any:
        """What the profile's registered backend declares as ``attr``: ``attr(section)`` when it is callable, the
        value itself otherwise; None without a backend or such an attribute."""
        section = cls.section_of(settings)
        kind = cls.backend_kind(section)
        declared = getattr(cls.backends.get(kind), attr, None) if kind is not None else None
        return declared(section) if callable(declared) else declared

    @classmethod
    def model_card(cls, settings: Settings) -> str:
        """The real model behind this stage, for the dataset card (the backend's ``model_card``)."""
        return cls._declared_by_backend(settings, "model_card") or cls.backend_kind(cls.section_of(settings)) or "-"

    @classmethod
    def vocabulary(cls, settings: Settings) -> frozenset[str]:
        """The names this stage's backend can report (labels of a tagger, a detector's classes): what a generated
        question may name only when the video's rows name it too (``tasks.grounding``)."""
        return frozenset(cls._declared_by_backend(settings, "vocabulary") or ())

    @classmethod
    def models(cls, settings: Settings) -> list[str]:
        """The models this stage loads (cache names or hub repositories): what a node that runs it must hold. The
        backend's ``models(section)`` when it has one."""
        return list(cls._declared_by_backend(settings, "models") or ())

    @classmethod
    def served_endpoint(cls, settings: Settings) -> tuple[str, Any] | None:
        """(field, ``ModelEndpoint``) when the profile's backend sends its media to model servers (the ``vlm``
        captioner, the ``omni`` describer): the section's field its backend's ``endpoint_field`` names. What a run
        finds replicas for and checks before it downloads, and what ``saven llm-server start --serves`` starts."""
        field_name = cls._declared_by_backend(settings, "endpoint_field")
        return (field_name, getattr(cls.section_of(settings), field_name)) if field_name else None

    @classmethod
    def with_endpoint(cls, settings: Settings, endpoint: Any) -> Settings:
        """``settings`` with this stage's served endpoint replaced (its replicas found, its key resolved)."""
        field_name, _ = cls.served_endpoint(settings)
        section = cls.section_of(settings).model_copy(update={field_name: endpoint})
        return settings.model_copy(update={cls.section: section})

    @classmethod
    def report_lines(cls, stats: StageStats) -> list[str]:
        """Markdown this stage adds to the run report beyond its row in the stage table."""
        return []

    @property
    def model_name(self) -> str:
        """What the records name as their producer (e.g. ``faster-whisper:whisper-base``)."""
        backend = getattr(self, "backend", None)
        return getattr(backend, "name", None) or self.backend_kind(self.cfg) or self.name

    # -- what the base does for every stage ---------------------------------------------------------------------

    def run(self, item: VideoItem) -> StageResult:
        """``process`` timed and counted; an exception becomes the video's dead letter (never raised)."""
        started, cpu_started = time.perf_counter(), process_cpu_s()
        try:
            outcome: StageResult | Exception = self.process(item)
        except Exception as exc:  # noqa: BLE001 — the contract: one bad video is a dead letter, never a crash
            outcome = exc
        result = self.result_of(item, outcome, started)
        result.cpu_seconds = process_cpu_s() - cpu_started
        self._worker.videos += 1
        self._worker.clips += len(item.clips)
        self._worker.seconds += result.seconds
        self._worker.cpu_seconds += result.cpu_seconds
        return result

    def result_of(self, item: VideoItem, outcome: StageResult | Exception, started: float) -> StageResult:
        """What ``process`` did for ``item`` as its result, timed from ``started``: an exception becomes the
        video's dead letter."""
        result = outcome if isinstance(outcome, StageResult) else \
            StageResult(video_id=item.video_id, dead_letters=[self.dead_letter(outcome, item)])
        result.video_id = result.video_id or item.video_id
        result.seconds = time.perf_counter() - started
        return result

    def run_many(self, items: list[VideoItem]) -> list[StageResult]:
        """Every item of a batch (an LLM stage sends them all at once)."""
        return [self.run(item) for item in items]

    def each(self, things: Iterable[T], fn: Callable[[T], Any], *, video_id: str | None,
             item_id: Callable[[T], str | None]) -> tuple[list[Any], list[DeadLetter]]:
        """``fn`` over the items of one video; one that raises is a dead letter for that item and the rest go on."""
        return guarded(self.name, things, fn, key=lambda t: (video_id, item_id(t)))

    def dead_letter(self, exc: BaseException, item: VideoItem) -> DeadLetter:
        """The dead letter of a whole video; an unexpected exception is logged with its traceback."""
        if not isinstance(exc, StageError):
            log.error("stage %s failed on %s", self.name, item.video_id or item.source, exc_info=exc)
        source = (item.source or "<empty>") if item.video_id is None else None  # before acquisition: the source
        return dead_letter_from_exception(exc, self.name, item.video_id, source=source)

    def worker_stats(self) -> WorkerStats:
        return self._worker.model_copy(update={"model_loads": _LOADS[self.name],
                                               "alive_s": time.perf_counter() - self._created})

    @classmethod
    def standalone(cls, section: Any = None, *, settings: Settings | None = None, backend: Any = None,
                   **context: Any) -> "Stage":
        """This stage outside a run (tests, benchmarks): the profile's settings (default: the process's), with
        ``section`` in place of the stage's own section; ``backend``: one already loaded; ``context``: other
        ``StageContext`` fields."""
        from schemas.settings import settings as process_settings

        settings = settings or process_settings()
        if section is not None:
            if cls.config is not None:
                settings = settings.model_copy(update={"stages": {**settings.stages,
                                                                  cls.section: section.model_dump()}})
            else:
                settings = settings.model_copy(update={cls.section: section})
        return cls(StageContext(settings, **context), backend=backend)

    # -- placement ----------------------------------------------------------------------------------------------

    @classmethod
    def in_ray(cls, settings: Settings, **extra: Any):
        """This stage as a Ray actor class holding the resources its profile section declares."""
        from infra.ray_stage import in_ray

        return in_ray(StageActor, cls.resources(settings), **extra)


class StageActor:
    """A stage inside a Ray actor: built (its model loaded) once, then ``run`` for many videos."""

    def __init__(self, stage_cls: type[Stage], context: StageContext):
        self.stage = stage_cls(context)

    def run(self, item: VideoItem, media: Any = None) -> StageResult:
        """``media``: the video's audio and keyframes (resolved by Ray from the media task's object)."""
        if media is not None:
            item.media = media
        return self.stage.run(item)

    def stats(self) -> WorkerStats:
        return self.stage.worker_stats()


def item_letter(stage: str, exc: BaseException, video_id: str | None, item_id: str | None) -> DeadLetter:
    """The dead letter of one item (a clip, a question) of a video; an unexpected exception is logged."""
    if not isinstance(exc, StageError):
        log.error("stage %s failed on %s of %s", stage, item_id, video_id, exc_info=exc)
    letter = dead_letter_from_exception(exc, stage, video_id, item_id=item_id)
    if letter.item_id is None:  # a StageError raised without naming its item: it was about this one
        letter = letter.model_copy(update={"item_id": item_id})
    return letter


Key = Callable[[T], "tuple[str | None, str | None]"]  # an item's (video id, item id), for its dead letter


def guarded(stage: str, things: Iterable[T], fn: Callable[[T], Any], *, key: Key) -> tuple[list[Any], list[DeadLetter]]:
    """``fn`` over ``things``; one that raises is its own dead letter and the rest go on."""
    done, dead = [], []
    for thing in things:
        try:
            done.append(fn(thing))
        except Exception as exc:  # noqa: BLE001 — one item must not cost the video its other items
            dead.append(item_letter(stage, exc, *key(thing)))
    return done, dead


async def gather_guarded(stage: str, things: Iterable[T], fn: Callable[[T], Awaitable[Any]], *, key: Key
                         ) -> tuple[list[Any], list[DeadLetter]]:
    """``guarded`` for coroutines, all at once (an LLM client bounds how many requests are in flight)."""
    things = list(things)
    outcomes = await asyncio.gather(*(fn(t) for t in things), return_exceptions=True)
    done, dead = [], []
    for thing, outcome in zip(things, outcomes):
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome  # cancelled, interrupted: not a data problem
        if isinstance(outcome, Exception):
            dead.append(item_letter(stage, outcome, *key(thing)))
        else:
            done.append(outcome)
    return done, dead


def gpu_ids() -> list[str]:
    """The GPUs Ray assigned this process (none outside Ray or without GPUs)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return []
    return [str(g) for g in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]


def node_id() -> str:
    """This process's Ray node (a short id), or "local" outside Ray."""
    ray = sys.modules.get("ray")  # a process that never imported Ray is in none
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()[:12]
    return "local"
