"""``blind-hf``: a second blind model, a causal LM from the model cache scored in this process."""

from __future__ import annotations

from typing import Sequence

from benchmark.adapters.base import ModelAdapter, register
from benchmark.context import BenchContext
from schemas.mcq import LETTERS
from schemas.records import AVBenchItem


@register("blind-hf")
class LocalBlindLMAdapter(ModelAdapter):
    """A second, different blind model: a causal LM from the model cache run in this process (no server), given
    only the question, picking the option it finds most likely as the question's answer (mean log-probability of
    the option's tokens after the question: the cloze scoring of lm-eval-harness; a 135M model asked for a
    letter answers "A" whatever the question, which measures nothing).

    AVBench drops an item as text-answerable only when two different blind models both answer it (as Daily-Omni
    does): one model's luck or bias then drops nothing. Default: SmolLM2-135M-Instruct, installed by ``make setup``
    (the served blind model is the profile's LLM, Qwen2.5-0.5B)."""

    def __init__(self, context: BenchContext | None = None, *, model: str = "smollm2-135m-instruct",
                 name: str | None = None, batch_size: int | str = 16):
        super().__init__(context)
        self.model_id, self._name, self.batch_size = model, name, int(batch_size)
        self._lm = None

    @property
    def model_name(self) -> str:
        return self._name or f"{self.model_id}[blind]"

    def fingerprint(self) -> str:
        return f"blind-hf:{self.model_id}:option-cloze"

    def _load(self):
        if self._lm is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from infra.model_cache import model_path

            path = model_path(self.model_id)
            tokenizer = AutoTokenizer.from_pretrained(path)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._lm = tokenizer, AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return self._lm

    @staticmethod
    def context_text(item: AVBenchItem) -> str:
        return f"Question: {item.question}\nAnswer:"

    def prompt(self, item: AVBenchItem) -> str:
        return self.context_text(item) + "\n" + "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(item.options))

    def _option_scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Mean log-probability of each continuation's tokens after its context (right-padded batches)."""
        import torch

        tokenizer, lm = self._load()
        scores: list[float] = []
        for lo in range(0, len(pairs), self.batch_size):
            chunk = pairs[lo:lo + self.batch_size]
            ctx_ids = [tokenizer.encode(c, add_special_tokens=False) for c, _ in chunk]
            full_ids = [tokenizer.encode(c + " " + o, add_special_tokens=False) for c, o in chunk]
            width = max(len(f) for f in full_ids)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, f in enumerate(full_ids):
                ids[i, :len(f)], mask[i, :len(f)] = torch.tensor(f), 1
            with torch.no_grad():
                logp = torch.log_softmax(lm(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for i, (c, f) in enumerate(zip(ctx_ids, full_ids)):
                start = min(len(c), len(f) - 1)  # the option's first token (tokenisation may merge at the seam)
                targets = torch.tensor(f[start:])
                scores.append(float(logp[i, start - 1:len(f) - 1].gather(1, targets[:, None]).mean()))
        return scores

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        pairs = [(self.context_text(it), o) for it in items for o in it.options]
        try:
            scores = self._option_scores(pairs)
        except Exception as exc:  # noqa: BLE001 — weights unreadable, out of memory: every item unanswered, a filter undecided
            self.errors = {i: f"{type(exc).__name__}: {exc}" for i in range(len(items))}
            return [""] * len(items)
        return [LETTERS[max(range(4), key=lambda k: scores[4 * i + k])] for i in range(len(items))]
