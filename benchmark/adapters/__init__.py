"""Models behind one interface, found by name in a registry (lmms-eval style).

An adapter turns AVBench items into raw answer strings: ``answer(items) -> list[str]``, one per item, in order.
The scorer, not the adapter, extracts letters, rotates options and caches answers; so an adapter also says what
it asks (``prompt``) and who it is (``fingerprint``), which key that cache. An item the adapter could not answer
(server down, features missing) gets ``""`` and a message in ``errors`` under its index; such answers are
counted as wrong but never cached, so a re-score asks again.

One adapter per module of this package: ``random`` (seeded baseline, many answer sheets), ``openai`` (any
OpenAI-compatible endpoint given the clip descriptions and transcripts; ``modality`` none/audio/visual/av),
``blind-llm`` (``openai`` with no context), ``blind-hf`` (a second blind model from the model cache, in process),
``saven-vid`` (a SAVEn-Vid checkpoint over cached features). Adding a model is one module with a registered class.
"""

from benchmark.adapters.base import ADAPTERS, ModelAdapter, make_adapter, parse_model_spec, register, sha256_text
from benchmark.context import BenchContext, video_context

__all__ = ["ADAPTERS", "BenchContext", "ModelAdapter", "make_adapter", "parse_model_spec", "register", "sha256_text",
           "video_context"]
