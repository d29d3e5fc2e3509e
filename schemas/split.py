"""The held-out split: which videos belong to AVBench, decided by a hash of the video id alone.

Split by video, never by item, so no question about a benchmark video can leak into training. The decision for
one video never depends on the others, so adding videos to the dataset never moves an existing one across the
split. Training code excludes ``is_heldout`` videos with the same fraction and salt.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

DEFAULT_SALT = "avbench-heldout-v1"
DEFAULT_FRACTION = 0.1


def heldout_score(video_id: str, salt: str = DEFAULT_SALT) -> float:
    """A uniform number in [0, 1) fixed by (salt, video_id)."""
    digest = hashlib.sha256(f"{salt}\x00{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_heldout(video_id: str, fraction: float = DEFAULT_FRACTION, salt: str = DEFAULT_SALT) -> bool:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1], not {fraction}")
    return heldout_score(video_id, salt) < fraction


def heldout_video_ids(video_ids: Iterable[str], fraction: float = DEFAULT_FRACTION,
                      salt: str = DEFAULT_SALT) -> list[str]:
    return sorted(v for v in set(video_ids) if is_heldout(v, fraction, salt))
