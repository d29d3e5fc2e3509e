"""Scoring: ask (through a cache), extract letters, grade, and aggregate with bootstrap confidence intervals.

- ``rotate(item, k)``: the item with its options shifted by k; circular evaluation asks all four rotations and
  counts an item right only if every rotation is right. Without it, only rotation 0 (the benchmark's order).
- ``PredictionCache``: raw answers in sqlite keyed by (model fingerprint, item id, rotation, prompt hash), so a
  re-score, or a build that runs the same filter again, sends nothing.
- An answer with no extractable letter is wrong and counted as a parse failure (never defaulted to A).
- ``score_items``: accuracy overall, per type, per kind, per duration bucket and on the core set, each with a
  seeded percentile-bootstrap 95% interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from benchmark.adapters import ModelAdapter, sha256_text
from schemas.mcq import extract
from schemas.mcq import LETTERS, rotate_options
from infra.sqlite_store import SqliteStore
from schemas.records import AVBenchItem, Prediction, Score

DURATION_EDGES_S = (60.0, 300.0, 1200.0)  # <1 min, 1-5 min, 5-20 min, >= 20 min
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def rotate(item: AVBenchItem, k: int) -> AVBenchItem:
    if k % 4 == 0:
        return item
    options, answer_index = rotate_options(item.options, item.answer_index, k)
    return AVBenchItem.model_validate({**item.model_dump(), "options": options, "answer_index": answer_index,
                                       "answer_letter": LETTERS[answer_index]})


class PredictionCache(SqliteStore):
    """Raw answers by (model fingerprint, item id, rotation, prompt hash) in one sqlite file (WAL, shareable)."""

    TABLE = "answers"
    SCHEMA = ("CREATE TABLE IF NOT EXISTS answers (model TEXT NOT NULL, item_id TEXT NOT NULL, rotation INTEGER NOT "
              "NULL, prompt_hash TEXT NOT NULL, raw_answer TEXT NOT NULL, PRIMARY KEY (model, item_id, rotation, "
              "prompt_hash))")

    def get(self, model: str, item_id: str, rotation: int, prompt_hash: str) -> str | None:
        row = self.one("SELECT raw_answer FROM answers WHERE model=? AND item_id=? AND rotation=? AND prompt_hash=?",
                       (model, item_id, rotation, prompt_hash))
        return None if row is None else row[0]

    def put(self, model: str, item_id: str, rotation: int, prompt_hash: str, raw_answer: str) -> None:
        self.execute(("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                      (model, item_id, rotation, prompt_hash, raw_answer)))


@dataclass(frozen=True)
class PredictionRow:
    """A ``Prediction`` plus how it was decided: the per-item log line."""

    prediction: Prediction
    rule: str  # the extraction rule (benchmark.extract)
    cached: bool
    error: str = ""  # why the adapter had no answer (then raw_answer is "")
    sheet: int = 0  # the answer sheet (a random baseline fills many; models fill one)

    def to_json(self) -> dict:
        return {**self.prediction.model_dump(mode="json"), "rule": self.rule, "cached": self.cached,
                "error": self.error, "sheet": self.sheet}


def predict(adapter: ModelAdapter, items: Sequence[AVBenchItem], rotations: Iterable[int] = (0,),
            cache: PredictionCache | None = None, model_name: str | None = None) -> list[PredictionRow]:
    """Every (item, rotation) answered, from the cache where possible, graded; ordered by item then rotation."""
    name = model_name or adapter.model_name
    fingerprint = adapter.fingerprint()
    asked: list[tuple[int, AVBenchItem, str]] = []  # (rotation, rotated item, prompt hash)
    for item in items:
        for k in rotations:
            rotated = rotate(item, k)
            asked.append((k, rotated, sha256_text(adapter.prompt(rotated))))
    raw: list[str | None] = [cache.get(fingerprint, it.item_id, k, ph) if cache else None for k, it, ph in asked]
    missing = [i for i, r in enumerate(raw) if r is None]
    errors: dict[int, str] = {}
    if missing:
        answers = adapter.answer([asked[i][1] for i in missing])
        if len(answers) != len(missing):
            raise RuntimeError(f"{name}: {len(answers)} answers for {len(missing)} questions")
        for j, (i, answer) in enumerate(zip(missing, answers, strict=True)):
            raw[i] = answer
            if j in adapter.errors:
                errors[i] = adapter.errors[j]
            elif cache is not None:
                k, it, ph = asked[i]
                cache.put(fingerprint, it.item_id, k, ph, answer)
    rows = []
    missing_set = set(missing)
    for i, ((k, it, _), answer) in enumerate(zip(asked, raw, strict=True)):
        got = extract(answer, it.options)
        rows.append(PredictionRow(
            Prediction(item_id=it.item_id, model_name=name, rotation=k, raw_answer=answer or "",
                       parsed_letter=got.letter, correct=got.letter == it.answer_letter),
            rule=got.rule, cached=i not in missing_set, error=errors.get(i, ""), sheet=adapter.sheet))
    return rows


def predict_sheets(adapter: ModelAdapter, items: Sequence[AVBenchItem], rotations: Iterable[int] = (0,),
                   cache: PredictionCache | None = None) -> list[PredictionRow]:
    """``predict`` for each of the adapter's answer sheets, under its run name."""
    rotations, name = list(rotations), adapter.run_name(len(items))
    return [row for sheet in range(adapter.sheets_for(len(items)))
            for row in predict(adapter.on_sheet(sheet), items, rotations, cache, model_name=name)]


@dataclass(frozen=True)
class ItemOutcome:
    item_id: str
    correct: bool  # circular: every rotation right
    rotations: int
    rotations_correct: int
    parse_failures: int
    errors: int
    sheet: int = 0


def item_outcomes(rows: Sequence[PredictionRow]) -> dict[tuple[str, int], ItemOutcome]:
    """One outcome per (item id, answer sheet)."""
    by_item: dict[tuple[str, int], list[PredictionRow]] = {}
    for row in rows:
        by_item.setdefault((row.prediction.item_id, row.sheet), []).append(row)
    return {key: ItemOutcome(
        item_id=key[0], sheet=key[1], correct=all(r.prediction.correct for r in group), rotations=len(group),
        rotations_correct=sum(r.prediction.correct for r in group),
        parse_failures=sum(r.prediction.parsed_letter is None for r in group),
        errors=sum(bool(r.error) for r in group)) for key, group in by_item.items()}


def bootstrap_ci(correct: Sequence[bool], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``correct``; the same seed gives the same interval."""
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return 0.0, 1.0
    point = float(values.mean())
    # For 0/1 outcomes, the mean of a resample with replacement is Binomial(n, p)/n: same distribution as
    # resampling the items, in O(resamples) memory however many items there are.
    means = np.random.default_rng(seed).binomial(values.size, point, size=resamples) / values.size
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    # Quantiles are interpolated; on tiny or all-equal samples they may miss the point estimate by rounding.
    return float(min(lo, point)), float(max(hi, point))


def duration_buckets(edges: Sequence[float] = DURATION_EDGES_S) -> list[str]:
    """Bucket names in order: edges (60, 300) give "<1m", "1m-5m", ">=5m"."""
    edges = sorted(edges)
    if not edges:
        return ["all"]
    return ([f"<{_minutes(edges[0])}"] + [f"{_minutes(a)}-{_minutes(b)}" for a, b in zip(edges, edges[1:])]
            + [f">={_minutes(edges[-1])}"])


def duration_bucket(duration_s: float, edges: Sequence[float] = DURATION_EDGES_S) -> str:
    names, edges = duration_buckets(edges), sorted(edges)
    return names[sum(duration_s >= e for e in edges)] if edges else names[0]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g}m"


def groups_of(item: AVBenchItem, edges: Sequence[float] = DURATION_EDGES_S) -> list[str]:
    groups = ["overall", f"type={item.type.value}", f"kind={item.kind.value}",
              f"duration={duration_bucket(item.duration_s, edges)}"]
    if item.core:
        groups.append("set=core")
    return groups


def score_items(model_name: str, items: Sequence[AVBenchItem], rows: Sequence[PredictionRow], *, seed: int = 0,
                edges: Sequence[float] = DURATION_EDGES_S) -> list[Score]:
    """One ``Score`` per group that has items: accuracy (circular when ``rows`` hold several rotations), CI, and
    the number of answers in the group that had no letter. With several answer sheets every (item, sheet) counts
    once, so accuracy is the mean over sheets (``n`` still counts items)."""
    by_item: dict[str, list[ItemOutcome]] = {}
    for outcome in item_outcomes(rows).values():
        by_item.setdefault(outcome.item_id, []).append(outcome)
    absent = [it.item_id for it in items if it.item_id not in by_item]
    if absent:
        raise ValueError(f"{model_name}: no predictions for {len(absent)} items, e.g. {absent[:3]}")
    members: dict[str, list[ItemOutcome]] = {}
    n_items: dict[str, int] = {}
    for item in items:
        for group in groups_of(item, edges):
            members.setdefault(group, []).extend(by_item[item.item_id])
            n_items[group] = n_items.get(group, 0) + 1
    buckets = duration_buckets(edges)
    scores = []
    for group in sorted(members, key=lambda g: _group_order(g, buckets)):
        got = members[group]
        correct = [o.correct for o in got]
        lo, hi = bootstrap_ci(correct, seed=seed)
        scores.append(Score(model_name=model_name, group=group, n=n_items[group], accuracy=float(np.mean(correct)),
                            ci_low=lo, ci_high=hi, parse_failures=sum(o.parse_failures for o in got)))
    return scores


def _group_order(group: str, buckets: list[str]) -> tuple[int, int, str]:
    kind, _, value = group.partition("=")
    rank = {"overall": 0, "set": 1, "kind": 2, "type": 3, "duration": 4}.get(kind, 9)
    return rank, buckets.index(value) if kind == "duration" and value in buckets else 0, group


def outcome_json(outcome: ItemOutcome) -> dict:
    return asdict(outcome)
