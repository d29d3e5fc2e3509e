"""``blind-llm``: the ``openai`` adapter with no context at all."""

from __future__ import annotations

from typing import Any

from benchmark.adapters.base import register
from benchmark.adapters.openai_chat import OpenAIAdapter
from benchmark.context import BenchContext


@register("blind-llm")
class BlindLLMAdapter(OpenAIAdapter):
    """The question and options only: what a text-only model can answer without the video."""

    def __init__(self, context: BenchContext | None = None, **kwargs: Any):
        if kwargs.setdefault("modality", "none") != "none":
            raise ValueError("blind-llm has no modality: it never sees the video's descriptions")
        super().__init__(context, **kwargs)
