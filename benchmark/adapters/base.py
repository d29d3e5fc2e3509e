"""The model interface of AVBench, and the registry adapters are found in by name."""

from __future__ import annotations

import copy
import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

from benchmark.context import BenchContext
from infra.registry import Registry
from schemas.mcq import mcq_text
from schemas.records import AVBenchItem

# One adapter per module of this package (as lmms-eval keeps one model per file), found on the first lookup.
ADAPTERS: Registry[type["ModelAdapter"]] = Registry("model", package="benchmark.adapters")


def register(name: str) -> Callable[[type["ModelAdapter"]], type["ModelAdapter"]]:
    def add(cls: type[ModelAdapter]) -> type[ModelAdapter]:
        ADAPTERS.register(name)(cls)
        cls.registry_name = name
        return cls
    return add


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ModelAdapter(ABC):
    """One model. Subclasses set ``registry_name`` (via ``@register``) and implement ``answer``.

    Answer sheets: the scorer collects ``sheets_for(n_items)`` independent sheets, sheet k from ``on_sheet(k)``. A
    model fills one; a random baseline fills many, because one random sheet over a small benchmark says little
    about chance (2 items give 0, 50 or 100%), while the mean over many estimates it on these very items.
    """

    registry_name = "?"
    sheet = 0
    audio_condition = "original"  # benchmark.counterfactual: "silence" or "swapped" in a counterfactual run
    audio_donors: dict[str, str] = {}  # video id -> the video whose audio it gets when "swapped"

    def __init__(self, context: BenchContext | None = None):
        self.context = context or BenchContext()
        self.errors: dict[int, str] = {}  # index in the last ``answer`` call -> why that item has no answer

    @property
    def model_name(self) -> str:
        """The name in reports."""
        return self.registry_name

    @abstractmethod
    def fingerprint(self) -> str:
        """Everything that changes answers besides the prompt (model, weights, decoding): part of the cache key."""

    def prompt(self, item: AVBenchItem) -> str:
        """The exact text the model gets for ``item``; its hash is part of the cache key."""
        return mcq_text(item.question, item.options)

    @abstractmethod
    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        """Raw answers, one per item, in order."""

    def sheets_for(self, n_items: int) -> int:
        return 1

    def on_sheet(self, sheet: int) -> "ModelAdapter":
        """The adapter that fills answer sheet ``sheet`` (its own fingerprint, so each sheet is cached apart)."""
        if sheet != 0:
            raise ValueError(f"{self.model_name} answers one sheet, not sheet {sheet}")
        return self

    def run_name(self, n_items: int) -> str:
        """The name in reports of a run over ``n_items`` items."""
        sheets = self.sheets_for(n_items)
        return self.model_name if sheets == 1 else f"{self.model_name} mean of {sheets} sheets"

    @property
    def takes_audio(self) -> bool:
        """Whether the model hears the video (then AVBench also scores it with the audio removed and swapped)."""
        return False

    @property
    def baseline_condition(self) -> str:
        """The condition a counterfactual is compared with: the model hearing its own audio in the same form as the
        counterfactuals ("original" when its ordinary input already is that form)."""
        return "original"

    def with_audio(self, condition: str, donors: dict[str, str] | None = None) -> "ModelAdapter":
        """This model under an audio condition (``benchmark.counterfactual``): a copy that shares the loaded model
        and answers with its own fingerprint, so each condition (and each donor assignment) is cached apart."""
        if not self.takes_audio:
            raise ValueError(f"{self.model_name} takes no audio")
        if condition not in ("original", "own", "silence", "swapped"):
            raise ValueError(f"audio condition must be original, own, silence or swapped, not {condition!r}")
        if condition == "original":
            return self
        twin = copy.copy(self)
        twin.audio_condition, twin.audio_donors, twin.errors = condition, dict(donors or {}), {}
        if twin.fingerprint() == self.fingerprint():  # a subclass that forgot ``_audio_suffix``: a cache mix-up
            raise RuntimeError(f"{type(self).__name__}.fingerprint() ignores the audio condition")
        return twin

    def _audio_suffix(self) -> str:
        if self.audio_condition == "original":
            return ""
        if self.audio_condition != "swapped":
            return f":audio={self.audio_condition}"
        # which donor a video gets depends on the items scored: the assignment is part of the cache key
        return f":audio=swapped:donors={sha256_text(json.dumps(sorted(self.audio_donors.items())))[:12]}"

    def donor_of(self, video_id: str) -> str:
        donor = self.audio_donors.get(video_id)
        if donor is None:
            raise LookupError(f"no donor video to swap the audio of {video_id} with")
        return donor


def parse_model_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name"`` or ``"name:key=value,key=value"`` (lmms-eval's ``--model`` + ``--model_args`` in one string)."""
    name, _, args = spec.partition(":")
    kwargs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"model spec {spec!r}: argument {part!r} is not key=value")
        kwargs[key.strip()] = value.strip()
    return name.strip(), kwargs


def make_adapter(spec: str, context: BenchContext | None = None, **overrides: Any) -> ModelAdapter:
    name, kwargs = parse_model_spec(spec)
    return ADAPTERS.get(name)(context=context, **{**kwargs, **overrides})
