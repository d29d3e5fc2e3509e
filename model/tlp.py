"""Temporal Linear Projection: (start, end) seconds -> one time token in the LLM's hidden size.

Each timestamp is normalised twice: by a fixed horizon (``time_norm_s``, so absolute times such as
"00:05:53.160" stay distinguishable across videos) and by the video's duration (so "the end of the video" is the
same token for every length). The projection is a single ``nn.Linear`` over those four numbers, as in the paper.

``parse_time_range`` pulls the query's time range out of question text; the TLP turns it into the query time
token the AVTS resampler attends to.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_HMS = r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?"  # hh:mm:ss(.mmm) or mm:ss(.mmm)
_UNIT = r"(?:hours?|hrs?|h|minutes?|mins?|seconds?|secs?|s)"
_TIME = re.compile(rf"(?<![\w:.])(?:(?P<hms>{_HMS})|(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>{_UNIT}))(?![\w:])",
                   re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def _seconds(match: re.Match[str]) -> float:
    if match["hms"]:
        parts = match["hms"].replace(",", ".").split(":")
        value = 0.0
        for part in parts:
            value = value * 60 + float(part)
        return value
    unit = match["unit"].lower()
    key = "m" if unit.startswith("min") else unit[0]
    return float(match["num"]) * _UNIT_SECONDS[key]


def parse_time_range(text: str) -> tuple[float, float] | None:
    """The (start, end) seconds a question is about; a single time point gives (t, t); None when there is none.

    "from 1s to 13s" -> (1, 13); "At 00:03:57.480, ..." -> (237.48, 237.48);
    "From 00:05:53.160 to 00:08:07.200, ..." -> (353.16, 487.2). With more than two times, the first two are the
    range (later ones are usually options or examples). A reversed range is put in order.
    """
    times = [_seconds(m) for m in _TIME.finditer(text)]
    if not times:
        return None
    start, end = (times[0], times[0]) if len(times) == 1 else (times[0], times[1])
    return (min(start, end), max(start, end))


class TemporalLinearProjection(nn.Module):
    def __init__(self, d_model: int, time_norm_s: float):
        super().__init__()
        self.time_norm_s = time_norm_s
        self.proj = nn.Linear(4, d_model)

    def forward(self, spans: torch.Tensor, duration: torch.Tensor) -> torch.Tensor:
        """spans: [..., 2] seconds; duration: broadcastable to spans[..., 0] -> [..., d_model]."""
        start, end = spans.float().unbind(-1)
        duration = duration.float().clamp_min(1e-3)
        x = torch.stack([start / self.time_norm_s, end / self.time_norm_s, start / duration, end / duration], -1)
        return self.proj(x.to(self.proj.weight.dtype))
