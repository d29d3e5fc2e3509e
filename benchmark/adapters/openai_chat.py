"""``openai``: any OpenAI-compatible endpoint (the profile's vLLM server, a hosted model) answering from the video's
descriptions of one modality (``benchmark.context.video_context``)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, StringConstraints

from benchmark.adapters.base import ModelAdapter, register
from benchmark.context import SYSTEM_PROMPTS, VIEWS, BenchContext, Modality, View, video_context
from infra.llm_client import run_sync
from schemas.mcq import mcq_text
from schemas.records import AVBenchItem, StageName


class LetterReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: Literal["A", "B", "C", "D"]


class TextReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: Annotated[str, StringConstraints(min_length=1, max_length=200)]


@register("openai")
class OpenAIAdapter(ModelAdapter):
    """An OpenAI-compatible chat model reading the video's descriptions (per ``modality``) and the question.

    ``reply="letter"`` asks for the letter in a short plain-text reply (``max_tokens`` 8, no grammar) that the
    scorer's ranked extraction reads; ``reply="letter-json"`` constrains it to one letter by JSON-schema decoding
    (on a 2-core CPU server every such request first waits for its grammar: AVBench's filters send hundreds);
    ``reply="text"`` lets the model write up to 200 characters. An answer the extraction cannot read is wrong and
    counted, as with any model. Requests go through ``infra.llm_client`` (bounded concurrency, retries, its own
    request cache under ``context.cache_dir``).
    """

    def __init__(self, context: BenchContext | None = None, *, base_url: str | None = None,
                 model: str | None = None, api_key: str | None = None, modality: Modality = "av",
                 reply: Literal["letter", "letter-json", "text"] = "letter", max_tokens: int | str | None = None,
                 temperature: float | str = 0.0, seed: int | str = 0, max_context_chars: int | str = 6000,
                 max_concurrency: int | str | None = None, name: str | None = None, client: Any = None,
                 view: View = "description"):
        super().__init__(context)
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
        self.view = view
        if modality not in SYSTEM_PROMPTS:
            raise ValueError(f"modality must be one of {sorted(SYSTEM_PROMPTS)}, not {modality!r}")
        if reply not in ("letter", "letter-json", "text"):
            raise ValueError(f"reply must be 'letter', 'letter-json' or 'text', not {reply!r}")
        self.modality, self.reply = modality, reply
        self.max_tokens = int(max_tokens) if max_tokens is not None else (8 if reply == "letter" else 48)
        self.max_context_chars = int(max_context_chars)
        self._name = name
        self.client = client or self._client(base_url, model, api_key, float(temperature), int(seed),
                                             None if max_concurrency is None else int(max_concurrency))

    def _client(self, base_url, model, api_key, temperature, seed, max_concurrency):
        from schemas.settings import settings
        from infra.llm_client import LLMClient

        cache = self.context.cache_dir / "llm_cache.sqlite" if self.context.cache_dir else None
        overrides: dict[str, Any] = {"temperature": temperature, "seed": seed, "max_tokens": self.max_tokens}
        for key, value in (("base_url", base_url), ("model", model), ("api_key", api_key),
                           ("max_concurrency", max_concurrency)):
            if value is not None:
                overrides[key] = value
        return LLMClient.from_settings(settings().llm, cache_path=cache, **overrides)

    @property
    def model_name(self) -> str:
        if self._name:
            return self._name
        if self.modality == "none":
            return f"{self.client.model}[blind]"
        return f"{self.client.model}[{self.modality}{' facts' if self.view == 'facts' else ''}]"

    @property
    def takes_audio(self) -> bool:
        return self.modality in ("av", "audio")

    @property
    def baseline_condition(self) -> str:
        # The description view's ordinary "av" input is the fused text, the counterfactuals lay out pictures and
        # sound apart: its baseline is its own audio in that layout. The facts view already is that layout.
        return "own" if self.view == "description" else "original"

    def fingerprint(self) -> str:
        return (f"openai:{self.client.model}:modality={self.modality}:reply={self.reply}:"
                f"max_tokens={self.max_tokens}:temperature={self.client.temperature}:seed={self.client.seed}"
                + (f":view={self.view}" if self.view != "description" else "") + self._audio_suffix())

    def messages(self, item: AVBenchItem) -> list[dict[str, str]]:
        question = mcq_text(item.question, item.options)
        donor = self.donor_of(item.video_id) if self.audio_condition == "swapped" else None
        ctx = video_context(self.context, item.video_id, self.modality, self.max_context_chars,
                            audio=self.audio_condition, donor=donor, view=self.view)
        user = f"{ctx}\n\n{question}" if ctx else question
        return [{"role": "system", "content": SYSTEM_PROMPTS[self.modality]}, {"role": "user", "content": user}]

    def prompt(self, item: AVBenchItem) -> str:
        return json.dumps(self.messages(item), ensure_ascii=False)

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        if not items:
            return []
        return run_sync(self._answer_all(list(items)))

    async def _answer_all(self, items: list[AVBenchItem]) -> list[str]:
        from infra.errors import StageError

        reply_model = LetterReply if self.reply == "letter-json" else TextReply

        async def one(i: int, item: AVBenchItem) -> str:
            try:
                if self.reply == "letter":
                    reply = await self.client.complete_text(
                        self.messages(item), _answer_text, reply_name="avbench_letter", stage=StageName.benchmark,
                        subject=item.video_id, item_id=item.item_id, max_tokens=self.max_tokens,
                        max_invalid_retries=0, accept_cut=True)
                    return reply.value
                reply = await self.client.complete_json(
                    self.messages(item), reply_model, schema_name=f"avbench_{self.reply}", stage=StageName.benchmark,
                    subject=item.video_id, item_id=item.item_id, max_tokens=self.max_tokens)
            except StageError as exc:
                self.errors[i] = f"{exc.error_class}: {exc.message}"
                return ""
            return reply.value.answer

        try:
            return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))
        finally:
            await self.client.aclose()


def _answer_text(text: str) -> str:
    """A plain-text answer as it came; the scorer extracts the letter (and counts a reply it cannot read)."""
    if not text.strip():
        raise ValueError("an empty answer")
    return text.strip()
