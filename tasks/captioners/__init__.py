"""Captioner backends of the keyframe-caption stage (``settings.visual_captioner.kind``).

A captioner has a ``name`` and ``describe(frames) -> [(text, tags)]`` over the BGR keyframes of ONE clip, in time
order. Register one with ``@CAPTIONERS.register("name")`` in a module of this package; it is built as
``cls(cfg: settings.VisualCaptioner)`` once per worker.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from infra.registry import Registry
from schemas.records import Tag


class Captioner(Protocol):
    name: str

    def describe(self, frames: list[np.ndarray]) -> list[tuple[str, list[Tag]]]: ...


CAPTIONERS: Registry[type[Captioner]] = Registry("visual captioner", package=__name__)
