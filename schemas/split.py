"""The held-out split: which videos belong to AVBench, decided by a hash of the video id alone.

Split by video, never by item, so no question about a benchmark video can leak into training. The decision for
one video never depends on the others, so adding videos to the dataset never moves an existing one across the
split. Training code excludes ``is_heldout`` videos with the same fraction and salt.

A small dataset can still leave the hash with no held-out video that has questions (or no training video): with 7
videos and a fraction of 0.5, about one build in a hundred. ``HeldOut`` fixes that: among the videos that have QA
items, when the hash holds out none of two or more, the one nearest the cut joins the held-out side (and when it
holds out all of them, the farthest joins training). And with ``min_items``, when the held-out videos hold fewer
questions than that, the training videos nearest the cut join the held-out side one by one until they do, always
leaving one training video with questions: on the demo's seven videos, whose ids come from paths, the hash alone
held out one 30-second video in one clone (7 AVBench items) and three in another (37). AVBench and training both
decide with ``HeldOut.of(qa_video_ids, ...)`` (one id per QA item) over the same QA table, so they agree; on a large
dataset it is the hash alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
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


@dataclass(frozen=True)
class HeldOut:
    """Which videos are held out: the hash, plus at most one video moved so that both sides have questions."""

    fraction: float = DEFAULT_FRACTION
    salt: str = DEFAULT_SALT
    moved_in: frozenset[str] = frozenset()
    moved_out: frozenset[str] = frozenset()

    @classmethod
    def of(cls, qa_video_ids: Iterable[str], fraction: float = DEFAULT_FRACTION, salt: str = DEFAULT_SALT,
           min_items: int = 0) -> "HeldOut":
        """``qa_video_ids``: the video id of every QA item (a video's count is its number of questions)."""
        counts = Counter(qa_video_ids)
        ids = sorted(counts, key=lambda v: (heldout_score(v, salt), v))
        held = [v for v in ids if is_heldout(v, fraction, salt)]
        if len(ids) < 2 or fraction in (0.0, 1.0):
            return cls(fraction, salt)
        if len(held) == len(ids):
            return cls(fraction, salt, moved_out=frozenset(ids[-1:]))
        training = [v for v in ids if v not in held]  # nearest the cut first
        moved = training[:1] if not held else []
        while (sum(counts[v] for v in held + moved) < min_items and len(training) - len(moved) > 1):
            moved.append(training[len(moved)])
        return cls(fraction, salt, moved_in=frozenset(moved))

    def __call__(self, video_id: str) -> bool:
        return video_id in self.moved_in or (is_heldout(video_id, self.fraction, self.salt)
                                             and video_id not in self.moved_out)
