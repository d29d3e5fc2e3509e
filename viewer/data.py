"""What the viewer reads of a local dataset: every table a page shows, grouped by video, and its files by id."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from schemas.paths import keyframe_path
from schemas.shards import DEAD_LETTER_TABLE, read_table
from schemas.store import DatasetLike, DatasetStore, StoreError

PER_VIDEO_TABLES = ("clips", "speech", "audio_events", "audio_captions", "visual_captions", "descriptions", "qa",
                    DEAD_LETTER_TABLE)



@dataclass
class Dataset:
    root: Path
    videos: list[dict[str, Any]]
    rows: dict[str, dict[str | None, list[dict[str, Any]]]]  # table -> video_id -> rows

    def of(self, table: str, video_id: str) -> list[dict[str, Any]]:
        return self.rows[table].get(video_id, [])

    def total(self, table: str) -> int:
        return sum(len(v) for v in self.rows[table].values())

    def orphan_dead_letters(self) -> list[dict[str, Any]]:
        """Failures of sources that never became a video of the dataset (e.g. an audio-only file)."""
        known = {v["video_id"] for v in self.videos}
        return [d for vid, ds in self.rows[DEAD_LETTER_TABLE].items() if vid not in known for d in ds]


def load(dataset: DatasetLike) -> Dataset:
    """Every table a page shows, grouped by video; through the shard reader, so compacted datasets read too."""
    store = DatasetStore.of(dataset)
    if not store.local:
        # The pages play the media and show the keyframes from files beside them; an object store has none here.
        raise StoreError(f"{store.uri}: the viewer needs a local dataset folder (copy the dataset down first)")
    rows: dict[str, dict[str | None, list[dict[str, Any]]]] = {}
    for table in PER_VIDEO_TABLES:
        grouped: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for row in read_table(store, table).to_pylist():
            grouped[row.get("video_id")].append(row)
        rows[table] = grouped
    videos = sorted(read_table(store, "videos").to_pylist(), key=lambda v: v["video_id"])
    return Dataset(store.local_path(), videos, rows)


def inside(root: Path, rel: str | os.PathLike) -> Path | None:
    """``root/rel`` if it is an existing file inside ``root``: a recorded path never points a page elsewhere."""
    path = (root / rel).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


def href_to(target: Path, page_dir: Path) -> str:
    """A relative, URL-quoted href from a page's folder to a file (works from file:// and from a server)."""
    return quote(Path(os.path.relpath(target, page_dir)).as_posix())


def keyframes(ds: Dataset, clip: dict[str, Any]) -> list[tuple[float, Path]]:
    """(time, file) of a clip's keyframes that exist, in order."""
    out = []
    for k, t in enumerate(clip["keyframe_times"] or []):
        path = keyframe_path(ds.root, clip["video_id"], clip["clip_id"], k)
        if inside(ds.root, path):
            out.append((t, path))
    return out


def clips_of(ds: Dataset, video_id: str) -> list[dict[str, Any]]:
    return sorted(ds.of("clips", video_id), key=lambda c: c["index"])


def first_keyframe(ds: Dataset, video_id: str) -> Path | None:
    """The video's thumbnail: its first keyframe image."""
    return next((path for c in clips_of(ds, video_id) for _, path in keyframes(ds, c)), None)


