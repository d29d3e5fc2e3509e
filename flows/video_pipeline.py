"""One batch of sources through the profile's pipeline, placed in Ray, committed per video.

This module knows no stage: it places the declared list (``infra.pipeline.Pipeline``) by each stage's placement.
- The media stages run in one Ray task per source (``flows.media_chain``), in the node's scratch folder; the video's
  audio and keyframes stay in Ray's object store for the actors.
- A video then goes through the stages before the first LLM stage as soon as its media task is done (so decoding
  and perception overlap): driver stages inline, each run of consecutive actor stages submitted at once to the run's
  actors (each model loaded once per actor), the next step when all of that run's calls are back.
- The LLM stages and whatever follows run over the whole batch: one client per LLM stage and batch, every video's
  requests in flight together so that the server batches them.
- A stage runs on a video only when every stage it reads from did its work for it; a required stage that fails a
  video (a media stage, a duplicate found by dedup) takes it out of the run; a transient failure leaves it
  uncommitted for the next run; otherwise the video commits with its dead letters, its tables collected by name.

Nothing here knows about Prefect: the flow calls ``run_batch`` once per Prefect task.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ray

from flows.media_chain import media_task, remove_published_files
from flows.report import RunStats
from infra.pipeline import Pipeline
from flows.placement import actor_counts, media_resources, node_types, placed_vocabulary
from infra.ray_stage import in_ray
from infra.stage import Stage, StageContext, process_cpu_s
from schemas.commit import commit_video, record_source_failure
from schemas.handoff import StageResult, VideoItem, WorkerStats
from schemas.lease import DatasetLease
from schemas.records import DUPLICATE, DeadLetter, StageName, utc_now
from schemas.settings import Settings
from schemas.store import DatasetLike, DatasetStore

log = logging.getLogger("saven.pipeline")
ACTOR_RESTARTS = 3  # per actor and run; a video whose calls outlive them is retried by the next run


class _RoundRobin:
    def __init__(self, actors: list):
        self.actors = list(actors)
        self._next = itertools.cycle(self.actors)

    def add(self, actors: list) -> None:
        self.actors += actors
        self._next = itertools.cycle(self.actors)

    def submit(self, item: VideoItem, media_ref):
        return next(self._next).run.remote(item, media_ref)


@dataclass
class RunStages:
    """A run's placed pipeline, shared by its batches: an actor pool per actor stage (created once), an instance of
    each driver stage (its setup once per run: the dedup index), and what every stage is given."""

    pipeline: Pipeline
    context: StageContext
    actors: dict[str, _RoundRobin] = field(default_factory=dict)
    drivers: dict[str, Stage] = field(default_factory=dict)
    lease: DatasetLease | None = None  # the run's hold on the dataset: checked before each commit
    _growing: threading.Lock = field(default_factory=threading.Lock, repr=False)  # batches run in threads

    @classmethod
    def create(cls, settings: Settings, dataset: DatasetLike, llm_cache: Path | None,
               lease: DatasetLease | None = None) -> "RunStages":
        pipeline = Pipeline.from_settings(settings)
        context = StageContext(settings, dataset=DatasetStore.of(dataset).uri, llm_cache=llm_cache,
                               vocabulary=placed_vocabulary(pipeline, settings))
        run = cls(pipeline, context, lease=lease)
        run.grow()
        for stage in pipeline.of("driver"):
            run.drivers[stage.name] = stage(context)
        return run

    def grow(self) -> dict[str, int]:
        """Start the actors the cluster holds now and the run does not have yet (at the start, then before each
        batch: the autoscaler may have added nodes); returns the count per actor stage."""
        settings = self.context.settings
        with self._growing:
            nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
            wanted = actor_counts(self.pipeline.of("actor"), settings, nodes)
            for stage in self.pipeline.of("actor"):
                pool = self.actors.setdefault(stage.name, _RoundRobin([]))
                missing = wanted[stage.name] - len(pool.actors)
                if missing <= 0:
                    continue
                # A killed actor process is restarted (its model loaded again) and the calls it held are retried
                # there, instead of failing every later video of the run: the calls only read the video's media.
                actor_cls = stage.in_ray(settings, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
                pool.add([actor_cls.remote(stage, self.context) for _ in range(missing)])
                if len(pool.actors) > missing:
                    log.info("%s: %d more actor(s), %d in all", stage.name, missing, len(pool.actors))
            return {name: len(pool.actors) for name, pool in self.actors.items()}

    def worker_stats(self) -> list[WorkerStats]:
        """Every actor's and driver stage's figures, each with the type of the node it ran on."""
        actors = [a for pool in self.actors.values() for a in pool.actors]
        found = ray.get([a.stats.remote() for a in actors]) + [d.worker_stats() for d in self.drivers.values()]
        types = node_types()
        return [w.model_copy(update={"node_type": types.get(w.node, "")}) for w in found]


RUNS: dict[str, RunStages] = {}  # the placed pipelines of the flow runs in this process, by run key


@dataclass
class BatchReport:
    committed: list[str] = field(default_factory=list)  # video ids
    failed: list[str] = field(default_factory=list)  # sources


class _Batch:
    """One batch's videos and what happens to them; every outcome is counted into ``stats``."""

    def __init__(self, run: RunStages, store: DatasetStore, stats: RunStats, report: BatchReport,
                 on_stage: Callable[[str], None]):
        self.run, self.store, self.stats, self.report, self.on_stage = run, store, stats, report, on_stage
        self.pipeline = run.pipeline
        stages = list(self.pipeline.stages[len(self.pipeline.of("media")):])
        first_llm = next((i for i, s in enumerate(stages) if s.placement == "llm"), len(stages))
        self.per_video, self.per_batch = stages[:first_llm], stages[first_llm:]
        self.live: dict[str, VideoItem] = {}  # video id -> item, for videos still in the run

    # -- bookkeeping --------------------------------------------------------------------------------------------

    def blocked(self, stage: type[Stage], item: VideoItem) -> bool:
        """A stage it reads from failed the video: the stage is skipped, and so are the stages that read it."""
        if self.pipeline.upstream(stage) & item.failed_stages:
            item.failed_stages.add(stage.name)
            self.stats.stage(stage.name).skipped += 1
            return True
        return False

    def take(self, stage: type[Stage], item: VideoItem, result: StageResult, seconds: float | None = None) -> bool:
        """Merge a result; False when the video left the run (a required stage failed it)."""
        item.take(stage.name, result, seconds)
        if result.failed and stage.required:
            self.drop(item, result.dead_letters, files_published=True)
            return False
        return True

    def count(self, item: VideoItem, *, landed: bool, duplicate: bool = False) -> None:
        """What each stage did for the video, into the batch's stats: what it made only when the video landed."""
        for name, result, seconds in item.results:
            self.stats.stage(name).add_result(result, seconds, landed=landed, failure=not duplicate)

    def drop(self, item: VideoItem, letters: list[DeadLetter], *, files_published: bool) -> None:
        """The video leaves the run uncommitted: its dead letters filed under its source, its files removed."""
        if self.live.get(item.video_id or "") is item:
            del self.live[item.video_id]
        if files_published and item.rows("videos"):
            remove_published_files(self.store, item.rows("videos")[0])
        record_source_failure(self.store, item.source, letters)
        duplicate = bool(letters) and all(d.error_class == DUPLICATE for d in letters)
        self.count(item, landed=False, duplicate=duplicate)
        if duplicate:  # not a failure: counted as a duplicate, like one found before download
            self.stats.duplicates += 1
            log.info("duplicate after download: %s (%s)", item.source, letters[0].message)
        else:
            self.stats.videos_failed += 1
            self.stats.dead_letters_by_stage.update(d.stage for d in letters)
            log.warning("source failed in %s: %s (%s)", letters[0].stage, letters[0].message, item.source)
        self.report.failed.append(item.source)

    def flow_failure(self, item: VideoItem, exc: BaseException, attempts: int = 1) -> None:
        """A Ray task or actor that died more often than its retries: the video is retried on the next run."""
        self.drop(item, [DeadLetter(stage=StageName.flow, source_id=item.source, video_id=item.video_id,
                                    error_class=type(exc).__name__, message=str(exc)[:2000] or repr(exc),
                                    attempts=attempts, failed_at=utc_now())], files_published=True)

    # -- per video, until the first LLM stage -------------------------------------------------------------------

    def advance(self, item: VideoItem, cursor: int, media_ref, waiting: dict) -> None:
        """Run the video's per-video stages from ``cursor`` until an actor run is in flight or it is done."""
        while cursor < len(self.per_video):
            stage = self.per_video[cursor]
            if stage.placement == "driver":
                cursor += 1
                if not self.blocked(stage, item) and not self.take(stage, item, self.run.drivers[stage.name].run(item)):
                    return
                continue
            group = list(itertools.takewhile(lambda s: s.placement == "actor", self.per_video[cursor:]))
            cursor += len(group)
            calls = [(s, self.run.actors[s.name].submit(item.subset(s.reads), media_ref))
                     for s in group if not self.blocked(s, item)]
            if calls:
                for _, ref in calls:
                    waiting[ref] = (item, cursor, media_ref, calls)
                return
        # Done with the per-video stages: the object store may let go of its media once no call holds it.

    def collect(self, ref, waiting: dict) -> None:
        item, cursor, media_ref, calls = waiting.pop(ref)
        if any(r in waiting for _, r in calls) or self.live.get(item.video_id) is not item:
            return  # the rest of its run is still out, or the video already left
        try:
            results = ray.get([r for _, r in calls])
        except Exception as exc:  # noqa: BLE001 — an actor died past its restarts: the next run retries the video
            self.flow_failure(item, exc)
            return
        for (stage, _), result in zip(calls, results):
            if not self.take(stage, item, result):
                return
        self.advance(item, cursor, media_ref, waiting)

    # -- the batch -------------------------------------------------------------------------------------------------

    def run_media_and_perception(self, sources: list[str]) -> None:
        settings = self.run.context.settings
        media = in_ray(media_task, media_resources(self.pipeline, settings), max_retries=2, num_returns=2)
        names = [s.name for s in self.pipeline.of("media")]
        media_refs = {}
        for src in sources:
            outcome_ref, media_ref = media.remote(src, self.run.context.dataset, settings, names)
            media_refs[outcome_ref] = (src, media_ref)
        waiting: dict = {}  # actor call ref -> (item, cursor after its run, media ref, the run's calls)
        n = len(sources)
        self.on_stage(f"media: 0/{n} videos decoded and cut")
        while media_refs or waiting:
            done, _ = ray.wait(list(media_refs) + list(waiting), num_returns=1)
            ref = done[0]
            if ref in waiting:
                self.collect(ref, waiting)
                continue
            src, media_ref = media_refs.pop(ref)
            self.on_stage(f"media: {n - len(media_refs)}/{n} videos decoded and cut; "
                          f"{len({id(v[0]) for v in waiting.values()})} in perception")
            try:
                item: VideoItem = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 — e.g. the worker died more often than max_retries
                self.flow_failure(VideoItem(source=src), exc, attempts=3)
                continue
            if item.failed_stages:
                self.drop(item, item.dead_letters, files_published=False)
                continue
            if item.video_id in self.live:
                # Two sources of this batch that are one video (ids no URL told apart before download): the files
                # are the first's, so the second leaves without touching them.
                twin = self.live[item.video_id]
                self.drop(item, [DeadLetter(stage=StageName.acquire, source_id=item.source, video_id=item.video_id,
                                            error_class=DUPLICATE, message=f"duplicate_of={item.video_id}: the same "
                                            f"video as {twin.source}, in the same batch", failed_at=utc_now())],
                          files_published=False)
                continue
            self.live[item.video_id] = item
            self.advance(item, 0, media_ref, waiting)
            del media_ref  # the actors hold it now: the object goes when they are done

    def run_rest(self) -> None:
        """The LLM stages and what follows them, over the whole batch."""
        for stage in self.per_batch:
            items = [i for i in self.live.values() if not self.blocked(stage, i)]
            self.on_stage(f"{stage.name}: {len(items)} videos, {sum(len(i.clips) for i in items)} clips")
            if not items:
                continue
            if stage.placement == "driver":
                for item in items:
                    self.take(stage, item, self.run.drivers[stage.name].run(item))
            else:  # llm (Pipeline.check keeps actor stages before the first LLM stage: they need the media)
                started, cpu_started = time.perf_counter(), process_cpu_s()
                instance = stage(self.run.context)  # setup: this batch's client
                try:
                    results = instance.run_many(items)
                finally:  # the client's tokens are spent whatever becomes of the batch
                    self.stats.stage(stage.name).add_counts(instance.teardown())
                    self.stats.stage(stage.name).seconds += time.perf_counter() - started
                    self.stats.stage(stage.name).cpu_seconds += process_cpu_s() - cpu_started
                for item, result in zip(items, results):
                    self.take(stage, item, result, seconds=0.0)

    def commit(self) -> None:
        self.on_stage(f"commit: {len(self.live)} videos")
        if self.run.lease is not None:
            self.run.lease.ensure()  # another run took the dataset over: write nothing more
        tables = self.pipeline.tables()
        for vid, item in list(self.live.items()):
            if any(d.transient for d in item.dead_letters):
                # E.g. the LLM server was down: committing would freeze a hole into the dataset. Leave the video
                # uncommitted so a rerun redoes it (completed LLM requests come from the cache).
                self.drop(item, item.dead_letters, files_published=False)
                continue
            commit_video(self.store, item.source, vid, {t: item.rows(t) for t in tables}, item.dead_letters,
                         records=tables)
            self.count(item, landed=True)
            self.stats.videos_ok += 1
            self.stats.clips += len(item.clips)
            self.stats.video_seconds += sum(v.duration_s for v in item.rows("videos"))
            self.stats.dead_letters_by_stage.update(d.stage for d in item.dead_letters)
            self.report.committed.append(vid)


def run_batch(sources: list[str], run: RunStages, stats: RunStats, *,
              on_stage: Callable[[str], None] = lambda what: None) -> BatchReport:
    """One batch end to end; ``on_stage`` hears which stage it is in (for the run's progress board)."""
    report = BatchReport()
    run.grow()
    batch = _Batch(run, DatasetStore.of(run.context.dataset), stats, report, on_stage)
    batch.run_media_and_perception(sources)
    batch.run_rest()
    batch.commit()
    return report
