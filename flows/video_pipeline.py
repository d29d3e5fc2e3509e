"""One batch of sources through every stage, fanned out in Ray, committed per video.

acquire -> probe -> audio/segment/keyframes (Ray tasks, one per source)
        -> ASR, audio events, keyframe captions (Ray actors: each model loaded once per actor)
        -> audio captions (code) -> fusion -> QA (one async LLM client per batch, so the server batches)
        -> shards + commit marker per video.

A video enters perception as soon as its media stage finishes, so decoding and perception overlap. The media task
works in its node's scratch folder, puts the video's files into the dataset (a local folder or an object store),
and hands its audio and keyframes to the perception actors through Ray's object store, never as a path on
another node's disk. Nothing here knows about Prefect: the flow calls ``run_batch`` once per Prefect task.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ray

from flows.commit import commit_video, record_source_failure
from flows.media_chain import MediaResult, media_task, remove_published_files
from flows.report import RunStats
from infra.ray_stage import in_ray
from infra.registry import Registry
from infra.worker import StageWorker
from schemas.handoff import ASROutput, AudioEventsOutput, VideoWork, VisualCaptionOutput
from schemas.records import DedupDecision, KeyframeHash, VideoRecord
from schemas.settings import Dedup
from schemas.shards import read_table
from schemas.store import DatasetLike, DatasetStore
from tasks.dedup import DedupIndex
from schemas.records import DeadLetter, Stage, utc_now
from schemas.settings import Settings
from tasks.asr import ASRWorker
from tasks.audio_caption import caption_video
from tasks.audio_events import AudioEventsWorker
from tasks.captioners import CAPTIONERS
from tasks.fuse import FACTS_MODEL, group_inputs, run_fuse
from tasks.qa import QAOptions, run_qa
from tasks.scene_detectors import DETECTORS
from tasks.taggers import TAGGERS
from tasks.transcribers import TRANSCRIBERS
from tasks.visual_caption import VisualCaptionWorker

log = logging.getLogger("saven.pipeline")
ACTOR_RESTARTS = 3  # per perception actor and run; a video whose calls outlive them is retried by the next run

# Every backend choice of the profile: (section, field) -> the registry that must know the name.
BACKEND_FIELDS: dict[tuple[str, str], Registry] = {
    ("segment", "detector"): DETECTORS, ("asr", "kind"): TRANSCRIBERS, ("audio_tagger", "kind"): TAGGERS,
    ("visual_captioner", "kind"): CAPTIONERS,
}


def check_backends(cfg: Settings) -> None:
    """Every backend the profile names is registered (an unknown one raises, listing the known ones)."""
    for (section, name), registry in BACKEND_FIELDS.items():
        registry.get(getattr(getattr(cfg, section), name))


class _RoundRobin:
    def __init__(self, actors: list):
        self.actors = actors
        self._next = itertools.cycle(actors)

    def submit(self, work: VideoWork, media_ref):
        return next(self._next).run.remote(work, media_ref)


@dataclass
class PerceptionPool:
    """The model-holding actors of a run, created once and shared by every batch."""

    asr: _RoundRobin
    audio_events: _RoundRobin
    visual: _RoundRobin

    @classmethod
    def create(cls, cfg: Settings) -> "PerceptionPool":
        check_backends(cfg)

        def actors(worker: type[StageWorker], section):
            # A killed actor process is restarted (its model loaded again) and the calls it held are retried there,
            # instead of failing every later video of the run: the calls only read the video's files.
            actor_cls = worker.in_ray(section, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
            return _RoundRobin([actor_cls.remote(section) for _ in range(max(1, section.resources.replicas))])

        return cls(asr=actors(ASRWorker, cfg.asr), audio_events=actors(AudioEventsWorker, cfg.audio_tagger),
                   visual=actors(VisualCaptionWorker, cfg.visual_captioner))

    def all_actors(self) -> list:
        return self.asr.actors + self.audio_events.actors + self.visual.actors

    def stats(self) -> list[dict]:
        return [s.model_dump() for s in ray.get([a.stats.remote() for a in self.all_actors()])]


POOLS: dict[str, PerceptionPool] = {}  # the actors of the flow runs in this process, by run key
DEDUP: dict[str, DedupIndex] = {}  # the deduplication index of the flow runs in this process, by run key
DUPLICATE = "duplicate"  # a dead letter's error class for a video already in the dataset: not a failure


def load_dedup_index(dataset: DatasetLike, cfg: Dedup) -> DedupIndex:
    """The committed videos' checksums, durations and keyframe hashes (two columns' worth of reading)."""
    store = DatasetStore.of(dataset)
    index = DedupIndex(cfg)
    videos = read_table(store, "videos", VideoRecord).select(["video_id", "sha256", "duration_s"]).to_pylist()
    hashes: dict[str, list[KeyframeHash]] = {}
    for row in read_table(store, "fingerprints", KeyframeHash).to_pylist():
        hashes.setdefault(row["video_id"], []).append(KeyframeHash.model_validate(row))
    for v in videos:
        record = VideoRecord.model_construct(video_id=v["video_id"], sha256=v["sha256"], duration_s=v["duration_s"])
        index.add(record, hashes.get(v["video_id"], []))
    return index


@dataclass
class _Perceived:
    source: str
    media: MediaResult
    asr: ASROutput
    events: AudioEventsOutput
    visual: VisualCaptionOutput
    repeats: list[DedupDecision] = field(default_factory=list)  # clips repeating footage already kept

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return self.asr.dead_letters + self.events.dead_letters + self.visual.dead_letters


@dataclass
class BatchReport:
    committed: list[str] = field(default_factory=list)  # video ids
    failed: list[str] = field(default_factory=list)  # sources


def _media_task(cfg: Settings):
    # The chain is dominated by the decode, so it takes the segment stage's resources. max_retries covers a worker
    # process that dies (system failure); bad input is a DeadLetter, not an exception. Two returns: the result
    # (small, fetched here) and the video's audio and keyframes (left in the object store for the actors).
    return in_ray(media_task, cfg.segment.resources, max_retries=2, num_returns=2)


def run_batch(sources: list[str], dataset_dir: DatasetLike, cfg: Settings, pool: PerceptionPool, *,
              llm_cache: Path | None, qa_options: QAOptions | None, stats: RunStats,
              on_stage: Callable[[str], None] = lambda what: None, dedup: DedupIndex | None = None
              ) -> BatchReport:
    """One batch end to end; ``on_stage`` hears which stage it is in (for the run's progress board)."""
    report = BatchReport()
    store = DatasetStore.of(dataset_dir)
    n = len(sources)
    on_stage(f"media: 0/{n} videos decoded and cut")
    media = _media_task(cfg)
    media_refs = {}
    for src in sources:
        result_ref, media_ref = media.remote(src, store.uri, cfg)
        media_refs[result_ref] = (src, media_ref)
    perception: dict[str, tuple[str, MediaResult, tuple]] = {}

    while media_refs:
        done, _ = ray.wait(list(media_refs), num_returns=1)
        ref = done[0]
        src, media_ref = media_refs.pop(ref)
        try:
            outcome = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 — e.g. the worker died more often than max_retries
            outcome = DeadLetter(stage=Stage.flow, source_id=src, error_class=type(exc).__name__,
                                 message=str(exc)[:2000] or repr(exc), attempts=3, failed_at=utc_now())
        on_stage(f"media: {n - len(media_refs)}/{n} videos decoded and cut; perception running")
        if isinstance(outcome, DeadLetter):
            _fail(store, src, outcome, stats, report)
            continue
        stats.add_seconds(outcome.seconds)
        repeats: list[DedupDecision] = []
        if dedup is not None:
            duplicate, repeats = dedup.check(outcome.video, outcome.fingerprints)
            if duplicate is not None:  # the same video as one kept: no perception, no commit, its files go again
                remove_published_files(store, outcome)
                _duplicate(store, src, duplicate, stats, report)
                continue
        work = VideoWork(video_id=outcome.video.video_id, clips=outcome.clips)
        perception[work.video_id] = (src, outcome, (pool.asr.submit(work, media_ref),
                                                    pool.audio_events.submit(work, media_ref),
                                                    pool.visual.submit(work, media_ref)), repeats)
        del media_ref  # the actors hold it now: the object goes when they are done

    ready: list[_Perceived] = []
    for k, (vid, (src, result, refs, repeats)) in enumerate(perception.items()):
        on_stage(f"perception: {k}/{len(perception)} videos heard and seen")
        try:
            asr_out, events_out, visual_out = ray.get(list(refs))
        except Exception as exc:  # noqa: BLE001 — an actor died: the video is retried on the next run
            _fail(store, src, DeadLetter(stage=Stage.flow, source_id=src, video_id=vid,
                                               error_class=type(exc).__name__,
                                               message=str(exc)[:2000] or repr(exc), failed_at=utc_now()),
                  stats, report)
            continue
        stats.add_seconds({"asr": asr_out.seconds, "audio_events": events_out.seconds,
                           "visual_caption": visual_out.seconds})
        ready.append(_Perceived(src, result, asr_out, events_out, visual_out, repeats))

    perception.clear()
    if ready:
        _synthesize_and_commit(ready, store, cfg, llm_cache=llm_cache, qa_options=qa_options, stats=stats,
                               report=report, on_stage=on_stage)
    return report


def _duplicate(store: DatasetStore, source: str, decision: DedupDecision, stats: RunStats,
               report: BatchReport) -> None:
    """A downloaded video that is one already kept: a dead letter ``duplicate_of=<kept id>`` carrying the decision,
    counted as a duplicate, not a failure."""
    letter = DeadLetter(stage=Stage.acquire, source_id=source, video_id=decision.video_id, error_class=DUPLICATE,
                        message=f"duplicate_of={decision.kept_id}: the same video ({decision.kind}, "
                                f"{decision.method} distance {decision.distance:g})",
                        failed_at=utc_now(), detail=decision.model_dump_json())
    record_source_failure(store, source, [letter])
    stats.duplicates += 1
    report.failed.append(source)
    log.info("duplicate of %s after download: %s (%s, distance %g)", decision.kept_id, source, decision.kind,
             decision.distance)


def _fail(dataset_dir: DatasetStore, source: str, dead: DeadLetter, stats: RunStats, report: BatchReport) -> None:
    _fail_many(dataset_dir, source, [dead], stats, report)


def _fail_many(dataset_dir: DatasetStore, source: str, dead: list[DeadLetter], stats: RunStats, report: BatchReport) -> None:
    record_source_failure(dataset_dir, source, dead)
    stats.videos_failed += 1
    stats.dead_letters_by_stage.update(d.stage.value for d in dead)
    report.failed.append(source)
    log.warning("source failed in %s: %s (%s)", dead[0].stage.value, dead[0].message, source)


def _synthesize_and_commit(ready: list[_Perceived], dataset_dir: DatasetStore, cfg: Settings, *, llm_cache: Path | None,
                           qa_options: QAOptions | None, stats: RunStats, report: BatchReport,
                           on_stage: Callable[[str], None]) -> None:
    audio_captions = {p.media.video.video_id: caption_video(p.media.clips, p.asr, p.events) for p in ready}
    inputs, missing = [], []
    for p in ready:
        vid = p.media.video.video_id
        clip_inputs, dead = group_inputs(p.media.clips, p.visual.captions, audio_captions[vid], p.asr.speech)
        inputs += clip_inputs
        missing += dead

    on_stage(f"fusion: {len(inputs)} clips of {len(ready)} videos")
    t = time.perf_counter()
    fused = run_fuse(inputs, llm=cfg.llm, cache_path=llm_cache)
    stats.add_seconds({"fuse": time.perf_counter() - t})
    stats.llm.update(fused.llm)
    stats.llm_fuse.update(fused.llm)

    by_video = {p.media.video.video_id: [] for p in ready}
    for d in fused.descriptions:
        by_video[d.video_id].append(d)
    on_stage(f"QA: {len(ready)} videos, {len(fused.descriptions)} described clips")
    t = time.perf_counter()
    # A clip that repeats footage already in the dataset is described, but no question is written about it again.
    repeated = {r.clip_id for p in ready for r in p.repeats}
    qa_batch = run_qa([(p.media.video, sorted((d for d in by_video[p.media.video.video_id]
                                               if d.clip_id not in repeated), key=lambda d: d.start_s))
                       for p in ready], llm=cfg.llm, cache_path=llm_cache, options=qa_options)
    stats.add_seconds({"qa": time.perf_counter() - t})
    stats.llm.update(qa_batch.llm)
    stats.llm_qa.update(qa_batch.llm)
    qa_by_video = {r.video_id: r for r in qa_batch.results}
    on_stage(f"commit: {len(ready)} videos")

    for p in ready:
        vid = p.media.video.video_id
        qa = qa_by_video[vid]
        failures = (p.dead_letters + [d for d in missing + fused.dead_letters if d.video_id == vid]
                    + qa.dead_letters)
        if any(d.transient for d in failures):
            # E.g. the LLM server was down: committing would freeze a hole into the dataset. Leave the video
            # uncommitted so a rerun redoes it (completed LLM requests come from the cache).
            _fail_many(dataset_dir, p.source, failures, stats, report)
            continue
        tables = {
            "videos": [p.media.video], "clips": p.media.clips, "speech": p.asr.speech,
            "audio_events": p.events.events, "audio_captions": audio_captions[vid],
            "visual_captions": p.visual.captions, "descriptions": sorted(by_video[vid], key=lambda d: d.start_s),
            "qa": qa.items, "fingerprints": p.media.fingerprints, "dedup": p.repeats,
        }
        commit_video(dataset_dir, p.source, vid, tables, failures)
        stats.videos_ok += 1
        stats.clips += len(p.media.clips)
        stats.qa_by_type.update(item.type.value for item in qa.items)
        stats.descriptions += len(by_video[vid])
        stats.descriptions_from_facts += sum(1 for d in by_video[vid] if d.model == FACTS_MODEL)
        stats.qa_drafts += qa.drafts
        stats.qa_check_failures.update(qa.check_failures)
        stats.audio_events.update(e.label for e in p.events.events)
        objects = [{t.label.split(":", 1)[1] for t in c.tags if t.label.startswith("object:")} for c in p.visual.captions]
        stats.objects.update(label for seen in objects for label in seen)
        stats.keyframes += len(objects)
        stats.keyframes_with_objects += sum(1 for seen in objects if seen)
        stats.dead_letters_by_stage.update(d.stage.value for d in failures)
        report.committed.append(vid)
