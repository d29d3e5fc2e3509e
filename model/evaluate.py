"""Evaluation during training: the loss on AVBench's held-out videos, and, when a built AVBench is given, the model's
accuracy on it (per type) with its own audio and with the audio silenced, so a learning curve shows whether the
model comes to use the sound as well as whether it learns.

``Evaluator`` is built once per stage (examples, features, items) and called every ``train.eval_every`` steps and at
the end of the stage; ``train`` writes what it returns to metrics.jsonl and TensorBoard (``stage<N>/eval/...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.data import SavenVidDataset, collate


@dataclass
class Evaluator:
    dataset: SavenVidDataset | None  # the held-out examples (None: the dataset holds none out)
    batch_size: int
    bench_items: list | None = None  # AVBench items (kept), scored when given
    bench_context: Any = None  # benchmark.context.BenchContext over the dataset

    @torch.no_grad()
    def heldout_loss(self, model, device: torch.device, autocast) -> float | None:
        """Mean per-batch loss over the held-out examples (answer tokens only, as in training)."""
        if self.dataset is None or len(self.dataset) == 0:
            return None
        losses = []
        pad_id = model.tokenizer.pad_token_id
        for lo in range(0, len(self.dataset), self.batch_size):
            batch = collate([self.dataset[i] for i in range(lo, min(lo + self.batch_size, len(self.dataset)))],
                            pad_id)
            with autocast():
                losses.append(float(model({k: v.to(device) for k, v in batch.items()}).loss))
        return sum(losses) / len(losses)

    def bench(self, model, device: torch.device) -> dict[str, float]:
        """Accuracy (percent) overall and per type with the video's own audio, and overall with it silenced."""
        from benchmark.adapters.saven_vid import SavenVidAdapter
        from benchmark.score import predict, score_items
        from model.generate import SavenVidPredictor

        if not self.bench_items:
            return {}
        adapter = SavenVidAdapter(self.bench_context, predictor=SavenVidPredictor(model, device), name="in-training")
        out: dict[str, float] = {}
        for condition, runner in (("own", adapter), ("silenced", adapter.with_audio("silence"))):
            scores = score_items(condition, self.bench_items, predict(runner, self.bench_items))
            for s in scores:
                if s.group == "overall":
                    out[f"bench_accuracy_{condition}"] = 100 * s.accuracy
                elif s.group.startswith("type=") and condition == "own":
                    out[f"bench_type/{s.group[5:]}"] = 100 * s.accuracy
        out["bench_silence_drop"] = out["bench_accuracy_own"] - out["bench_accuracy_silenced"]
        return out

    def __call__(self, model, device: torch.device, autocast) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            result: dict[str, float] = {}
            loss = self.heldout_loss(model, device, autocast)
            if loss is not None:
                result["heldout_loss"] = loss
            result |= self.bench(model, device)
            return result
        finally:
            model.train(was_training)


def bench_items(bench_dir: Path) -> list:
    """The kept items of a built AVBench folder (``avbench-<version>/``)."""
    from benchmark.build import is_kept, load_avbench

    return [it for it in load_avbench(Path(bench_dir)).items if is_kept(it)]
