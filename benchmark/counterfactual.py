"""Counterfactual audio: does a model that takes audio use it?

A model can score on an audio-visual benchmark from the pictures alone. So every adapter that takes audio
(``ModelAdapter.takes_audio``) answers the same items again under two audio conditions:

- ``silence``: no audio (SAVEn-Vid: the audio encoder's features of a silent track; an LLM reading descriptions:
  the clip timeline without its heard part and without the transcript);
- ``swapped``: another video's audio (SAVEn-Vid: the donor's audio tokens, their times stretched to this video;
  an LLM: this video's pictures with the donor's heard part and transcript).

The baseline is the model hearing its own audio in the same form as the counterfactuals (``baseline_condition``:
SAVEn-Vid's original features; for the LLM, "own": this video's pictures and its own heard part in the layout the
counterfactuals use, so the drop measures the audio, not a change of text layout). The drop (baseline accuracy minus
counterfactual accuracy) per question type comes with a paired bootstrap 95% interval over items (the same items
resampled for both conditions), for display; it is *significant* when an exact one-sided sign test on the items
whose verdict changed (McNemar) gives p < 0.025 (a percentile bootstrap of 0/1 differences calls 3 of 3 a sure
drop). A type where no condition gives a significant drop is flagged as *not measuring listening* for that model:
its items can be answered as well without hearing the video. An item the model could not answer under either
condition (an error, not a wrong answer) leaves the pairs and is counted apart.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from benchmark.score import BOOTSTRAP_RESAMPLES, CONFIDENCE, PredictionRow, item_outcomes
from schemas.records import AVBenchItem

AudioCondition = Literal["original", "own", "silence", "swapped"]
COUNTERFACTUALS: tuple[AudioCondition, ...] = ("silence", "swapped")
SIGNIFICANCE = 0.025  # one-sided: the upper tail of a two-sided 95% test


def audio_donors(video_ids: Sequence[str], pool: Sequence[str]) -> dict[str, str]:
    """For each video, another video whose audio replaces its own in the ``swapped`` condition: the next one of
    ``pool`` in sorted order (a cycle, so no video is its own donor and every donor is used about equally).
    Videos get no donor when the pool has no other video."""
    ordered = sorted(set(pool))
    donors = {}
    for vid in sorted(set(video_ids)):
        at = bisect.bisect_right(ordered, vid)
        for step in range(len(ordered)):
            candidate = ordered[(at + step) % len(ordered)]
            if candidate != vid:
                donors[vid] = candidate
                break
    return donors


def sign_test_p(lost: int, gained: int) -> float:
    """One-sided exact p-value that ``lost`` of ``lost + gained`` changed verdicts (right -> wrong) or more would
    come by chance if the condition made no difference (McNemar's exact test)."""
    n = lost + gained
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(lost, n + 1)) / 2 ** n


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
    n: int  # paired items (answered under both conditions)
    accuracy: float  # hearing its own audio (the baseline condition)
    counterfactual_accuracy: float
    drop: float
    ci_low: float
    ci_high: float
    p_value: float  # exact one-sided sign test on the changed verdicts
    errors: int = 0  # items left out: no answer under one of the two conditions

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE

    def to_json(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def _outcomes(rows: Sequence[PredictionRow]) -> dict[str, tuple[bool, bool]]:
    """Item id -> (right in every rotation asked, had an error), from answer sheet 0 (models that hear fill one)."""
    return {o.item_id: (o.correct, o.errors > 0) for o in item_outcomes(rows).values() if o.sheet == 0}


def drop_rows(model: str, condition: str, items: Sequence[AVBenchItem], baseline: Sequence[PredictionRow],
              counterfactual: Sequence[PredictionRow], *, seed: int = 0) -> list[CounterfactualRow]:
    """The drop overall and per question type, each with its paired interval and sign test."""
    before, after = _outcomes(baseline), _outcomes(counterfactual)
    missing = [it.item_id for it in items if it.item_id not in before or it.item_id not in after]
    if missing:
        raise ValueError(f"{model} [{condition}]: no paired answers for {len(missing)} items, e.g. {missing[:3]}")
    groups: dict[str, list[str]] = {"overall": [it.item_id for it in items]}
    for it in items:
        groups.setdefault(f"type={it.type.value}", []).append(it.item_id)
    out = []
    for group, ids in groups.items():
        paired = [i for i in ids if not before[i][1] and not after[i][1]]
        a, b = [before[i][0] for i in paired], [after[i][0] for i in paired]
        lo, hi = paired_drop_ci(a, b, seed=seed)
        lost = sum(x and not y for x, y in zip(a, b))
        gained = sum(y and not x for x, y in zip(a, b))
        out.append(CounterfactualRow(
            model=model, condition=condition, group=group, n=len(paired),
            accuracy=float(np.mean(a)) if a else 0.0, counterfactual_accuracy=float(np.mean(b)) if b else 0.0,
            drop=float(np.mean(a) - np.mean(b)) if a else 0.0, ci_low=lo, ci_high=hi,
            p_value=sign_test_p(lost, gained), errors=len(ids) - len(paired)))
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
    """Rows of: model, condition, group, n (+ errors), accuracy, counterfactual accuracy, drop [CI], p, flag."""
    return [[r.model, r.condition, r.group, str(r.n) + (f" (+{r.errors} errors)" if r.errors else ""),
             f"{100 * r.accuracy:.1f}", f"{100 * r.counterfactual_accuracy:.1f}", fmt_drop(r), f"{r.p_value:.3f}",
             "not measuring listening" if r.group in flags.get(r.model, []) else ""] for r in rows]


COLUMNS = ["model", "audio", "group", "n", "own audio %", "counterfactual %", "drop [95% CI]", "p", "flag"]
