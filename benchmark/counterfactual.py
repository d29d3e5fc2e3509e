"""Counterfactual audio: does a model that takes audio use it?

A model can score on an audio-visual benchmark from the pictures alone. So every adapter that takes audio
(``ModelAdapter.takes_audio``) answers the same items again under two audio conditions:

- ``silence``: no audio (SAVEn-Vid: the audio encoder's features of a silent track; an LLM reading descriptions:
  the clip timeline without its heard part and without the transcript);
- ``swapped``: another video's audio (SAVEn-Vid: the donor's audio tokens, their times stretched to this video;
  an LLM: this video's pictures with the donor's heard part and transcript).

The drop (original accuracy minus counterfactual accuracy) per question type comes with a paired bootstrap 95%
interval over items (the same items resampled for both conditions). A drop whose interval lies above 0 is
significant; a type where no condition gives a significant drop is flagged as *not measuring listening* for that
model: its items can be answered as well without hearing the video.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from benchmark.score import BOOTSTRAP_RESAMPLES, CONFIDENCE, PredictionRow, item_outcomes
from schemas.records import AVBenchItem

AudioCondition = Literal["original", "silence", "swapped"]
COUNTERFACTUALS: tuple[AudioCondition, ...] = ("silence", "swapped")


def audio_donors(video_ids: Sequence[str], pool: Sequence[str]) -> dict[str, str]:
    """For each video, another video whose audio replaces its own in the ``swapped`` condition: the next one of
    ``pool`` in sorted order (a cycle, so no video is its own donor and every donor is used about equally).
    Videos get no donor when the pool has no other video."""
    ordered = sorted(set(pool) | set(video_ids))
    donors = {}
    for vid in sorted(set(video_ids)):
        candidates = [v for v in ordered[ordered.index(vid) + 1:] + ordered[:ordered.index(vid)] if v in set(pool)]
        if candidates:
            donors[vid] = candidates[0]
    return donors


def paired_drop_ci(original: Sequence[bool], counterfactual: Sequence[bool], *, seed: int = 0,
                   resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap interval of mean(original) - mean(counterfactual) over the same items, resampled
    together (the pairing is what makes a small drop on few items detectable)."""
    a = np.asarray(original, dtype=float)
    b = np.asarray(counterfactual, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} and {b.size}")
    if a.size == 0:
        return -1.0, 1.0
    diff = a - b
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    means = diff[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    point = float(diff.mean())
    return float(min(lo, point)), float(max(hi, point))


@dataclass(frozen=True)
class CounterfactualRow:
    model: str
    condition: str  # "silence" or "swapped"
    group: str  # "overall" or "type=<qa type>"
    n: int
    accuracy: float  # with the video's own audio
    counterfactual_accuracy: float
    drop: float
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        return self.ci_low > 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def _correct_by_item(rows: Sequence[PredictionRow]) -> dict[str, bool]:
    """Item id -> right (every rotation asked), from one answer sheet (models that take audio fill one)."""
    return {o.item_id: o.correct for o in item_outcomes(rows).values() if o.sheet == 0}


def drop_rows(model: str, condition: str, items: Sequence[AVBenchItem], original: Sequence[PredictionRow],
              counterfactual: Sequence[PredictionRow], *, seed: int = 0) -> list[CounterfactualRow]:
    """The drop overall and per question type, each with its paired interval."""
    before, after = _correct_by_item(original), _correct_by_item(counterfactual)
    missing = [it.item_id for it in items if it.item_id not in before or it.item_id not in after]
    if missing:
        raise ValueError(f"{model} [{condition}]: no paired answers for {len(missing)} items, e.g. {missing[:3]}")
    groups: dict[str, list[str]] = {"overall": [it.item_id for it in items]}
    for it in items:
        groups.setdefault(f"type={it.type.value}", []).append(it.item_id)
    out = []
    for group, ids in groups.items():
        a, b = [before[i] for i in ids], [after[i] for i in ids]
        lo, hi = paired_drop_ci(a, b, seed=seed)
        out.append(CounterfactualRow(model=model, condition=condition, group=group, n=len(ids),
                                     accuracy=float(np.mean(a)), counterfactual_accuracy=float(np.mean(b)),
                                     drop=float(np.mean(a) - np.mean(b)), ci_low=lo, ci_high=hi))
    return out


def not_measuring_listening(rows: Sequence[CounterfactualRow]) -> dict[str, list[str]]:
    """Model -> the question types (``type=...``) where no audio condition gave a significant drop."""
    seen: dict[str, dict[str, bool]] = {}
    for r in rows:
        if r.group.startswith("type="):
            by_type = seen.setdefault(r.model, {})
            by_type[r.group] = by_type.get(r.group, False) or r.significant
    return {model: sorted(g for g, sig in by_type.items() if not sig) for model, by_type in seen.items()}


def fmt_drop(r: CounterfactualRow) -> str:
    return (f"{100 * r.drop:+.1f} [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"
            + (" *" if r.significant else ""))


def as_table(rows: Sequence[CounterfactualRow], flags: Mapping[str, list[str]]) -> list[list[str]]:
    """Rows of: model, condition, group, n, accuracy, counterfactual accuracy, drop [CI], listening?"""
    return [[r.model, r.condition, r.group, str(r.n), f"{100 * r.accuracy:.1f}", f"{100 * r.counterfactual_accuracy:.1f}",
             fmt_drop(r), "not measuring listening" if r.group in flags.get(r.model, []) else ""] for r in rows]


COLUMNS = ["model", "audio", "group", "n", "accuracy %", "counterfactual %", "drop [95% CI]", "flag"]
