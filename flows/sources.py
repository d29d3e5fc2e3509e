"""Sources files: the list of URLs, playlists or paths a dataset is built from (YAML, CSV or JSONL)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from schemas.store import is_remote


class SourcesError(ValueError):
    pass


def _entry(item: object, where: str) -> str:
    if isinstance(item, str):
        value = item
    elif isinstance(item, dict) and isinstance(item.get("source", item.get("url")), str):
        value = item.get("source", item.get("url"))
    else:
        raise SourcesError(f"{where}: expected a string or a mapping with 'source' (or 'url'), got {item!r}")
    value = value.strip()
    if not value:
        raise SourcesError(f"{where}: empty source")
    return value


def _resolve(value: str, base: Path) -> str:
    """Relative local paths are relative to the sources file; URLs and absolute paths stay as written."""
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def read_sources(path: Path | str) -> list[str]:
    """Sources in file order, duplicates removed (first kept). ``path`` may be an object-store URL
    (``s3://bucket/sources.yaml``): on a cluster the flow's node need not hold the list."""
    if is_remote(path):
        from schemas.store import DatasetStore

        parent, name = str(path).rsplit("/", 1)
        try:
            text = DatasetStore.of(parent).read_text(name)
        except (OSError, FileNotFoundError) as exc:
            raise SourcesError(f"sources file not readable: {path}: {exc}") from exc
        path = Path(name)
    else:
        path = Path(path)
        if not path.is_file():
            raise SourcesError(f"sources file not found: {path}")
        text = path.read_text()
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        doc = yaml.safe_load(text) or []
        items = doc.get("sources") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise SourcesError(f"{path}: expected a list of sources (or a mapping with a 'sources' list)")
        values = [_entry(item, f"{path}[{i}]") for i, item in enumerate(items)]
    elif suffix == ".jsonl":
        values = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    values.append(_entry(json.loads(line), f"{path}:{n}"))
                except json.JSONDecodeError as exc:
                    raise SourcesError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
    elif suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if rows and rows[0] and rows[0][0].strip().lower() in ("source", "url"):
            rows = rows[1:]
        values = [_entry(row[0], f"{path}:{n}") for n, row in enumerate(rows, start=2) if row and row[0].strip()]
    else:
        raise SourcesError(f"{path}: unknown sources format {suffix!r} (use .yaml, .csv or .jsonl)")
    resolved = [_resolve(v, path.parent) for v in values]
    return list(dict.fromkeys(resolved))


@dataclass(frozen=True)
class Duplicate:
    """A source whose video is already in the run's list or in the dataset under another spelling."""

    source: str
    video_id: str  # the canonical id both spellings share
    kept: str  # the source that keeps the video (or the committed one's)


def dedup_sources(sources: list[str], canonical_id: Callable[[str], str | None],
                  committed_ids: dict[str, str]) -> tuple[list[str], list[Duplicate]]:
    """The sources with one spelling per video, and the later spellings (``committed_ids``: video id -> the source
    that committed it). A source whose id cannot be worked out offline is kept as it is."""
    kept: list[str] = []
    dups: list[Duplicate] = []
    first: dict[str, str] = dict(committed_ids)
    for src in dict.fromkeys(sources):  # the very same string twice is one source
        vid = canonical_id(src)
        if vid is None:
            kept.append(src)
        elif vid in first and first[vid] != src:
            dups.append(Duplicate(src, vid, first[vid]))
        else:
            first.setdefault(vid, src)
            kept.append(src)
    return kept, dups
