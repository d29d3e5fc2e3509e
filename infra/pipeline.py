"""The pipeline: the profile's ordered list of stage names (``settings.pipeline``), resolved to stage classes and
checked before anything runs.

Stages are found by name in ``STAGES``, a registry over the ``tasks`` package (a module there registers its stage
with ``@STAGES.register("name")``). What the checks guarantee, so that ``flows.video_pipeline`` can place the list
without knowing any stage:
- names are unique; each table has one writer, and every table a stage writes is a known record (an added stage's
  tables are registered with ``schemas.records.register_video_table``);
- every name a stage reads is written or handed off by a stage before it;
- the media stages come first; consecutive actor stages (run at the same time) do not read each other;
- every backend the profile names is registered (an unknown one is an error listing the known ones), and every
  section under the profile's ``stages:`` belongs to a stage of the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Any

from pydantic import BaseModel

from infra.registry import Registry, UnknownBackendError
from infra.stage import Placement, Stage
from schemas.records import register_video_table
from schemas.settings import Settings

STAGES: Registry[type[Stage]] = Registry("pipeline stage", package="tasks")


class PipelineError(ValueError):
    """The profile's pipeline cannot run as declared (a read nobody writes, an unknown stage or backend)."""


@dataclass(frozen=True)
class Pipeline:
    stages: tuple[type[Stage], ...]  # the enabled stages, in order
    # Stages the profile lists but switched off (``Stage.enabled``): what they would write is read as empty.
    disabled: tuple[type[Stage], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> "Pipeline":
        """The profile's stages that are enabled, in order, checked (raises ``PipelineError``)."""
        try:
            declared = [STAGES.get(name) for name in settings.pipeline]
        except UnknownBackendError as exc:
            raise PipelineError(str(exc)) from None
        orphans = set(settings.stages) - {s.section for s in declared if s.config is not None}
        if orphans:
            raise PipelineError(f"profile sections under stages: {sorted(orphans)} belong to no stage of the "
                                f"pipeline {settings.pipeline}")
        pipeline = cls(tuple(s for s in declared if s.enabled(settings)),
                       tuple(s for s in declared if not s.enabled(settings)))
        pipeline.check(settings)
        return pipeline

    # -- the checks -----------------------------------------------------------------------------------------------

    def check(self, settings: Settings) -> None:
        names = [str(s.name) for s in self.stages]
        if len(set(names)) != len(names):
            raise PipelineError(f"a stage is listed twice: {names}")
        produced: dict[str, str] = {o: str(s.name) for s in self.disabled for o in (*s.writes, *s.hands_off)}
        for stage in self.stages:
            missing = [n for n in stage.reads if n not in produced and n not in stage.optional]
            if missing:
                raise PipelineError(f"stage '{stage.name}' reads {missing}, which no stage before it writes or hands "
                                    f"off (pipeline: {names})")
            for out in (*stage.writes, *stage.hands_off):
                if out in produced:
                    raise PipelineError(f"{out!r} is written by both '{produced[out]}' and '{stage.name}'")
                produced[out] = stage.name
            for table, record in stage.writes.items():
                register_video_table(table, record)
        for stage in self.disabled:
            for table, record in stage.writes.items():
                register_video_table(table, record)  # committed empty, so a table's folder is there either way
        placements = [s.placement for s in self.stages]
        media = placements.count("media")
        if placements[:media] != ["media"] * media:
            raise PipelineError(f"media stages must come first, together: {list(zip(names, placements))}")
        if "llm" in placements and "actor" in placements[placements.index("llm"):]:
            raise PipelineError("actor stages must come before the first LLM stage: they read the video's media, "
                                f"which a run holds only until then ({list(zip(names, placements))})")
        for placement, group in self.waves():
            if placement == "actor":
                outs = {o for s in group for o in (*s.writes, *s.hands_off)}
                for s in group:
                    if outs & set(s.reads):
                        raise PipelineError(f"actor stage '{s.name}' reads {sorted(outs & set(s.reads))} from a stage "
                                            "that runs at the same time; put a stage of another placement between")
        for stage in self.stages:
            kind = stage.backend_kind(stage.section_of(settings))
            try:
                kind is None or stage.backends.get(kind)
            except UnknownBackendError as exc:
                raise PipelineError(f"stage '{stage.name}': {exc}") from None

    # -- what the runner, the report and the card read ------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [str(s.name) for s in self.stages]

    def of(self, placement: Placement) -> list[type[Stage]]:
        return [s for s in self.stages if s.placement == placement]

    def waves(self) -> list[tuple[Placement, list[type[Stage]]]]:
        """Runs of consecutive stages with the same placement, in order."""
        return [(p, list(group)) for p, group in groupby(self.stages, key=lambda s: s.placement)]

    def producer(self, name: str) -> str | None:
        """The enabled stage that writes or hands off ``name`` (None: a disabled stage's, read as empty)."""
        for stage in self.stages:
            if name in stage.writes or name in stage.hands_off:
                return stage.name
        return None

    def upstream(self, stage: type[Stage]) -> set[str]:
        """The enabled stages ``stage`` needs: those it reads from, less those of its ``optional`` reads (a video
        one of those failed still gets the stage, reading that input as empty)."""
        needed = [r for r in stage.reads if r not in stage.optional]
        return {p for p in map(self.producer, needed) if p is not None}

    def tables(self) -> dict[str, type[BaseModel]]:
        """Every table the pipeline's stages write, the disabled ones' too (committed empty), with its record."""
        return {t: r for s in (*self.stages, *self.disabled) for t, r in s.writes.items()}

    def models_by_node(self, settings: Settings) -> dict[str, list[str]]:
        """The models a node must hold, by the Ray resource that brings a stage there ("" for any node): the preflight
        checks every node for them before a run downloads anything."""
        out: dict[str, list[str]] = {}
        for stage in self.stages:
            names = stage.models(settings)
            if names:
                custom = stage.resources(settings).custom
                out.setdefault(next(iter(custom), ""), []).extend(names)
        return out

    def served_endpoints(self, settings: Settings) -> dict[str, tuple[type[Stage], Any]]:
        """The model servers the run's perception stages send media to, by name (``vlm``, ``omni``): the stage and
        its ``ModelEndpoint``."""
        out = {}
        for stage in self.stages:
            served = stage.served_endpoint(settings)
            if served is not None:
                out[served[0]] = (stage, served[1])
        return out

    def labels(self, settings: Settings) -> frozenset[str]:
        """The class names the run's backends can report (the union of each stage's ``vocabulary``)."""
        return frozenset().union(*(s.vocabulary(settings) for s in self.stages))
