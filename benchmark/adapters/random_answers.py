"""``random``: the seeded chance baseline, many answer sheets."""

from __future__ import annotations

import math
import random
from typing import Sequence

from benchmark.adapters.base import ModelAdapter, register, sha256_text
from benchmark.context import BenchContext
from schemas.mcq import LETTERS
from schemas.records import AVBenchItem

# Answers a random baseline gives in all (items x sheets) when its sheets are "auto": chance estimated to about
# +-1.4 points (one standard error) however small the benchmark.
RANDOM_ANSWERS = 1000


@register("random")
class RandomAdapter(ModelAdapter):
    """A letter drawn per (seed, sheet, item, option order): the same item asked again gets the same answer.

    ``sheets``: a number, or "auto" (default) for enough sheets that items x sheets >= ``RANDOM_ANSWERS``; the
    reported accuracy is their mean: chance on this benchmark's items, measured through the same extraction and
    grading as every model.
    """

    def __init__(self, context: BenchContext | None = None, seed: int | str = 0, sheets: int | str = "auto",
                 sheet: int | str = 0):
        super().__init__(context)
        self.seed, self.sheet = int(seed), int(sheet)
        self.sheets = None if sheets == "auto" else int(sheets)
        if (self.sheets is not None and self.sheets < 1) or self.sheet < 0:
            raise ValueError(f"random: sheets must be >= 1 or 'auto' and sheet >= 0, got {sheets=} {sheet=}")
        self.calls = 0  # items answered (not from the scorer's cache)

    @property
    def model_name(self) -> str:
        return f"random(seed={self.seed})"

    def fingerprint(self) -> str:
        # Sheet 0 keeps the one-sheet key, so caches written before sheets existed still answer it.
        return f"random:seed={self.seed}" + (f":sheet={self.sheet}" if self.sheet else "")

    def sheets_for(self, n_items: int) -> int:
        return self.sheets or max(1, math.ceil(RANDOM_ANSWERS / max(n_items, 1)))

    def on_sheet(self, sheet: int) -> "RandomAdapter":
        return self if sheet == self.sheet else RandomAdapter(self.context, seed=self.seed,
                                                              sheets=self.sheets or "auto", sheet=sheet)

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        self.calls += len(items)
        out = []
        sheet = f"{self.sheet}\x00" if self.sheet else ""
        for item in items:
            key = sha256_text(f"{self.seed}\x00{sheet}{item.item_id}\x00" + "\x00".join(item.options))
            out.append(random.Random(key).choice(LETTERS))
        return out
