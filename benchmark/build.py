"""Build AVBench from a pipeline dataset: held-out videos -> filtered, letter-balanced, versioned items.

1. Held-out videos (``benchmark.split``: a hash of the video id) give the candidate items, one per QA item, in
   the QA stage's option order (item_id = qa_id).
2. Filters (``benchmark.filters``), each recorded on the item: near_duplicate and blind drop an item; audio_only
   and visual_only keep it out of the core set. ``core`` = every filter ran, decided, and passed; an authored
   item the QA stage's judge found one sense answers (``QAItem.judge_verdict``) is not core either.
3. Letters: within each set (core, other kept, dropped) items get target letters round-robin over a seeded
   permutation, so each set is balanced across A-D to within one item; the correct option is moved to its target
   letter and the distractors are shuffled by a per-item seeded RNG.
4. Output ``<out>/avbench-<version>/``: ``avbench/avbench-items-00000.parquet`` (schemas.shards), ``items.jsonl``
   (canonical: sorted by item_id, sorted keys) and ``manifest.json`` (config, counts, letter balance, content
   hash = sha256 of items.jsonl, inputs hash). Same inputs + config + filter models -> same content hash.
   Candidates that cannot become items (their video is missing) become dead letters in the same folder.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from benchmark.adapters import ModelAdapter
from benchmark.filters import (AUDIO_ONLY, BLIND, NEAR_DUPLICATE, VISUAL_ONLY, all_answer_filter, is_undecided,
                               make_similarity, model_filter, near_duplicate_filter)
from schemas.mcq import LETTERS
from benchmark.score import PredictionCache
from benchmark.split import DEFAULT_FRACTION, DEFAULT_SALT, HeldOut
from benchmark.timings import PhaseTimer
from schemas.records import (SCHEMA_VERSION, AVBenchItem, ClipDescription, DeadLetter, FilterResult, QAItem,
                             SpeechSegment, StageName, UtcDatetime, VideoRecord, utc_now)

TABLE = "avbench"
SHARD_KEY = "items"
ITEMS_JSONL = "items.jsonl"
MANIFEST = "manifest.json"
ALL_FILTERS = (NEAR_DUPLICATE, BLIND, AUDIO_ONLY, VISUAL_ONLY)


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(default="v1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$")
    seed: int = 0
    heldout_fraction: float = Field(default=DEFAULT_FRACTION, ge=0.0, le=1.0)
    split_salt: str = DEFAULT_SALT
    min_heldout_items: int = Field(default=0, ge=0)  # schemas.split.HeldOut: a small dataset holds out enough
    filter_rotations: int = Field(default=4, ge=1, le=4)  # an item is "answerable" if right in all of them
    similarity: Literal["auto", "minilm", "token_overlap"] = "auto"
    duplicate_threshold: float | None = Field(default=None, gt=0.0, le=1.0)  # None: the method's default
    duplicate_scope: Literal["video", "all"] = "video"


@dataclass
class FilterModels:
    """The models behind the model filters; a filter whose model is None is not run (and no item is core)."""

    blind: ModelAdapter | None = None
    audio_only: ModelAdapter | None = None
    visual_only: ModelAdapter | None = None
    second_blind: ModelAdapter | None = None  # a different blind model: an item is dropped when both answer it

    def fingerprints(self) -> dict[str, str]:
        return {name: m.fingerprint() for name, m in
                ((BLIND, self.blind), (AUDIO_ONLY, self.audio_only), (VISUAL_ONLY, self.visual_only),
                 (f"{BLIND}#2", self.second_blind)) if m}

    @property
    def blind_models(self) -> list[ModelAdapter]:
        return [m for m in (self.blind, self.second_blind) if m is not None]


class BenchManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "AVBench"
    version: str
    schema_version: str = SCHEMA_VERSION
    content_hash: str  # sha256 of items.jsonl
    inputs_hash: str  # what the build read and how: equal -> a rebuild would give the same items
    created_at: UtcDatetime = Field(default_factory=utc_now)
    config: BuildConfig
    filters_run: list[str]
    filter_models: dict[str, str]
    similarity: str
    counts: dict[str, int]
    by_type: dict[str, int]  # kept items
    letters: dict[str, dict[str, int]]  # set -> letter -> count
    files: dict[str, str]


@dataclass
class BuiltBench:
    folder: Path
    manifest: BenchManifest
    items: list[AVBenchItem]
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def kept(self) -> list[AVBenchItem]:
        return [it for it in self.items if is_kept(it)]

    def core(self) -> list[AVBenchItem]:
        return [it for it in self.items if it.core]


def bench_folder(out_dir: Path, version: str) -> Path:
    return Path(out_dir) / f"avbench-{version}"


def is_kept(item: AVBenchItem) -> bool:
    """In the benchmark: no dropping filter (near_duplicate, blind) failed it."""
    return all(f.passed for f in item.filters if f.name in (NEAR_DUPLICATE, BLIND))


def _canonical(records: Sequence[BaseModel]) -> list[dict]:
    return [r.model_dump(mode="json") for r in records]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _read(dataset_dir: Path, table: str, model_cls):
    from schemas.shards import read_records

    return read_records(dataset_dir, table, model_cls)


@dataclass
class _Inputs:
    videos: dict[str, VideoRecord]
    qa: list[QAItem]  # of held-out videos, sorted by qa_id
    descriptions: list[ClipDescription]
    speech: list[SpeechSegment]


def _load_inputs(dataset_dir: Path, config: BuildConfig) -> _Inputs:
    videos = {v.video_id: v for v in _read(dataset_dir, "videos", VideoRecord)}
    all_qa = _read(dataset_dir, "qa", QAItem)
    held = HeldOut.of((q.video_id for q in all_qa), config.heldout_fraction, config.split_salt,
                      config.min_heldout_items)
    qa = sorted((q for q in all_qa if held(q.video_id)), key=lambda q: q.qa_id)
    wanted = {q.video_id for q in qa}
    descriptions = sorted((d for d in _read(dataset_dir, "descriptions", ClipDescription) if d.video_id in wanted),
                          key=lambda d: (d.clip_id, d.start_s))
    speech = sorted((s for s in _read(dataset_dir, "speech", SpeechSegment) if s.video_id in wanted),
                    key=lambda s: (s.video_id, s.start_s, s.end_s, s.text))
    return _Inputs({v: r for v, r in videos.items() if held(v)}, qa, descriptions, speech)


def inputs_hash(inputs: _Inputs, config: BuildConfig, filter_models: FilterModels) -> str:
    """Everything a build reads about the held-out videos, plus the config and the filter models' identities."""
    return _digest({
        "schema": SCHEMA_VERSION,
        "config": config.model_dump(mode="json"),
        "filters": filter_models.fingerprints(),
        "videos": {vid: v.duration_s for vid, v in sorted(inputs.videos.items())},
        "qa": _canonical(inputs.qa),
        "descriptions": _canonical(inputs.descriptions),
        "speech": _canonical(inputs.speech),
    })


def candidate_item(qa: QAItem, duration_s: float, version: str) -> AVBenchItem:
    return AVBenchItem(item_id=qa.qa_id, qa_id=qa.qa_id, video_id=qa.video_id, kind=qa.kind, type=qa.type,
                       question=qa.question, options=list(qa.options), answer_index=qa.answer_index,
                       answer_letter=LETTERS[qa.answer_index], duration_s=duration_s,
                       evidence_clip_ids=list(qa.evidence_clip_ids), start_s=qa.start_s, end_s=qa.end_s,
                       filters=[], core=False, benchmark_version=version)


def target_letters(groups: dict[str, list[str]], seed: int) -> dict[str, int]:
    """Target answer index per item id: round-robin A-D over a seeded permutation of each group."""
    targets: dict[str, int] = {}
    for name in sorted(groups):
        ids = sorted(groups[name])
        random.Random(f"{seed}:letters:{name}").shuffle(ids)
        for i, item_id in enumerate(ids):
            targets[item_id] = i % len(LETTERS)
    return targets


def place_answer(item: AVBenchItem, target: int, seed: int) -> AVBenchItem:
    """``item`` with its correct option at ``target`` and the distractors in a per-item seeded order."""
    correct = item.options[item.answer_index]
    distractors = [o for i, o in enumerate(item.options) if i != item.answer_index]
    random.Random(f"{seed}:options:{item.item_id}").shuffle(distractors)
    options = distractors[:target] + [correct] + distractors[target:]
    return AVBenchItem.model_validate({**item.model_dump(), "options": options, "answer_index": target,
                                       "answer_letter": LETTERS[target]})


def items_jsonl(items: Sequence[AVBenchItem]) -> bytes:
    lines = [json.dumps(it.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
             for it in sorted(items, key=lambda it: it.item_id)]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _run_filters(candidates: list[AVBenchItem], config: BuildConfig, models: FilterModels,
                 cache: PredictionCache | None, timer: PhaseTimer
                 ) -> tuple[dict[str, list[FilterResult]], list[str], str]:
    results: dict[str, list[FilterResult]] = {it.item_id: [] for it in candidates}
    with timer.phase(f"build: {NEAR_DUPLICATE} filter"):
        similarity = make_similarity(config.similarity)
        for item_id, r in near_duplicate_filter(candidates, similarity, config.duplicate_threshold,
                                                config.duplicate_scope).items():
            results[item_id].append(r)
    run = [NEAR_DUPLICATE]
    alive = [it for it in candidates if all(r.passed for r in results[it.item_id])]
    if models.blind_models:
        with timer.phase(f"build: {BLIND} filter ({len(models.blind_models)} models)"):
            for item_id, r in all_answer_filter(BLIND, models.blind_models, alive, config.filter_rotations,
                                                cache).items():
                results[item_id].append(r)
        run.append(BLIND)
        alive = [it for it in alive if all(r.passed for r in results[it.item_id])]
    for name, model in ((AUDIO_ONLY, models.audio_only), (VISUAL_ONLY, models.visual_only)):
        if model is not None:
            with timer.phase(f"build: {name} filter"):
                for item_id, r in model_filter(name, model, alive, config.filter_rotations, cache).items():
                    results[item_id].append(r)
            run.append(name)
    return results, run, similarity.method


JUDGE = "judge"  # the QA stage's judge of an authored item (QAItem.judge_verdict): core only if it needs both


def judge_filter(qa: QAItem) -> FilterResult | None:
    if qa.judge_verdict is None:
        return None
    return FilterResult(name=JUDGE, passed=qa.judge_verdict == "both",
                        detail=f"the QA stage's judge: answered by {qa.judge_verdict}" if qa.judge_verdict != "both"
                        else "the QA stage's judge: needs both senses")


def _is_core(filters: list[FilterResult]) -> bool:
    by_name = {f.name: f for f in filters}
    return all(n in by_name and by_name[n].passed and not is_undecided(by_name[n]) for n in ALL_FILTERS) and \
        all(f.passed for f in filters if f.name == JUDGE)


def _letter_counts(items: Sequence[AVBenchItem]) -> dict[str, int]:
    counts = Counter(it.answer_letter for it in items)
    return {letter: counts.get(letter, 0) for letter in LETTERS}


def build_avbench(dataset_dir: Path, out_dir: Path, config: BuildConfig | None = None,
                  filter_models: FilterModels | None = None, cache: PredictionCache | None = None) -> BuiltBench:
    """Build (always) the benchmark of ``dataset_dir`` into ``out_dir/avbench-<version>/``."""
    config = config or BuildConfig()
    models = filter_models or FilterModels()
    inputs = _load_inputs(Path(dataset_dir), config)
    return _build(inputs, Path(out_dir), config, models, cache, inputs_hash(inputs, config, models))


def _build(inputs: _Inputs, out_dir: Path, config: BuildConfig, models: FilterModels,
           cache: PredictionCache | None, in_hash: str, timer: PhaseTimer | None = None) -> BuiltBench:
    from schemas.shards import write_bytes_atomic, write_dead_letters, write_shard

    dead: list[DeadLetter] = []
    candidates = []
    for qa in inputs.qa:
        video = inputs.videos.get(qa.video_id)
        if video is None:
            dead.append(DeadLetter(stage=StageName.benchmark, video_id=qa.video_id, item_id=qa.qa_id,
                                   error_class="MissingVideo", failed_at=utc_now(),
                                   message=f"QA item {qa.qa_id}: its video is not in the videos table "
                                           "(no duration, no media): left out of AVBench"))
            continue
        candidates.append(candidate_item(qa, video.duration_s, config.version))

    results, filters_run, method = _run_filters(candidates, config, models, cache, timer or PhaseTimer())
    for qa in inputs.qa:
        if qa.qa_id in results and (judged := judge_filter(qa)) is not None:
            results[qa.qa_id].append(judged)
    sets: dict[str, list[str]] = {"core": [], "kept": [], "dropped": []}
    flagged = []
    for it in candidates:
        filters = results[it.item_id]
        core = _is_core(filters)
        flagged.append(AVBenchItem.model_validate({**it.model_dump(), "filters": filters, "core": core}))
        kept = all(f.passed for f in filters if f.name in (NEAR_DUPLICATE, BLIND))
        sets["core" if core else "kept" if kept else "dropped"].append(it.item_id)
    targets = target_letters(sets, config.seed)
    items = sorted((place_answer(it, targets[it.item_id], config.seed) for it in flagged), key=lambda i: i.item_id)

    folder = bench_folder(out_dir, config.version)
    body = items_jsonl(items)
    write_shard(folder, TABLE, key=SHARD_KEY, records=items, model_cls=AVBenchItem)
    write_bytes_atomic(folder / ITEMS_JSONL, body)
    write_dead_letters(folder, "build", dead)

    kept = [it for it in items if is_kept(it)]
    by_filter = {name: sum(1 for it in items for f in it.filters if f.name == name and not f.passed)
                 for name in ALL_FILTERS}
    counts = {
        "videos_heldout": len(inputs.videos), "videos_with_items": len({it.video_id for it in items}),
        "candidates": len(candidates), "missing_video": len(dead),
        "dropped_near_duplicate": by_filter[NEAR_DUPLICATE], "dropped_blind": by_filter[BLIND],
        "answerable_audio_only": by_filter[AUDIO_ONLY], "answerable_visual_only": by_filter[VISUAL_ONLY],
        "undecided": sum(any(is_undecided(f) for f in it.filters) for it in items),
        "kept": len(kept), "core": sum(it.core for it in items),
    }
    manifest = BenchManifest(
        version=config.version, content_hash=hashlib.sha256(body).hexdigest(), inputs_hash=in_hash, config=config,
        filters_run=filters_run, filter_models=models.fingerprints(), similarity=method, counts=counts,
        by_type=dict(sorted(Counter(it.type.value for it in kept).items())),
        letters={"all": _letter_counts(items), "kept": _letter_counts(kept),
                 "core": _letter_counts([it for it in items if it.core])},
        files={"items_jsonl": ITEMS_JSONL, "parquet": f"{TABLE}/"})
    write_bytes_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2).encode() + b"\n")
    return BuiltBench(folder, manifest, items, dead)


def load_avbench(folder: Path) -> BuiltBench:
    """A built benchmark; raises if its items do not hash to the manifest's content hash."""
    from schemas.shards import read_records

    folder = Path(folder)
    manifest = BenchManifest.model_validate_json((folder / MANIFEST).read_bytes())
    items = sorted(read_records(folder, TABLE, AVBenchItem), key=lambda it: it.item_id)
    digest = hashlib.sha256(items_jsonl(items)).hexdigest()
    if digest != manifest.content_hash:
        raise ValueError(f"{folder}: items hash to {digest[:12]}, the manifest says {manifest.content_hash[:12]}: "
                         "the benchmark was changed after it was built; rebuild it")
    return BuiltBench(folder, manifest, items)


def ensure_avbench(dataset_dir: Path, out_dir: Path, config: BuildConfig | None = None,
                   filter_models: FilterModels | None = None, cache: PredictionCache | None = None,
                   rebuild: bool = False, before_build: Callable[[], None] | None = None,
                   timer: PhaseTimer | None = None) -> tuple[BuiltBench, bool]:
    """The benchmark for these inputs: the existing build when its inputs hash matches, else a new build
    (``before_build`` runs first, e.g. to check that the filter models' server is up).

    Returns (bench, built_now)."""
    config = config or BuildConfig()
    models = filter_models or FilterModels()
    inputs = _load_inputs(Path(dataset_dir), config)
    in_hash = inputs_hash(inputs, config, models)
    folder = bench_folder(out_dir, config.version)
    if not rebuild and (folder / MANIFEST).is_file():
        try:
            bench = load_avbench(folder)
        except (ValueError, OSError):
            bench = None
        if bench is not None and bench.manifest.inputs_hash == in_hash:
            return bench, False
    if before_build is not None:
        before_build()
    return _build(inputs, Path(out_dir), config, models, cache, in_hash, timer), True
