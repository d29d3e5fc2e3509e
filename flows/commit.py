"""Per-video commits: a video's shards first, then its marker. The marker is what makes a video count.

A rerun skips sources whose marker exists, sweeps the shards of videos that never got one (a run killed between
the two), and rewrites by key, so nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flows.sources import source_key
from schemas.records import ALL_RECORDS, DeadLetter, Record, UtcDatetime, utc_now
from schemas.shards import DEAD_LETTER_TABLE, remove_key, shard_keys, write_bytes_atomic, write_dead_letters, write_shard

COMMIT_DIR = "_committed"
# The tables a committed video owns, keyed by its video id.
VIDEO_TABLES = ("videos", "clips", "speech", "audio_events", "audio_captions", "visual_captions", "descriptions", "qa")


class CommitMarker(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    source_key: str
    video_id: str
    rows: dict[str, int]
    invalid_rows: int
    committed_at: UtcDatetime


def marker_path(dataset_dir: Path, source: str) -> Path:
    return Path(dataset_dir) / COMMIT_DIR / f"{source_key(source)}.json"


def committed(dataset_dir: Path) -> dict[str, CommitMarker]:
    """Markers by source key."""
    folder = Path(dataset_dir) / COMMIT_DIR
    out = {}
    for path in sorted(folder.glob("src-*.json")) if folder.is_dir() else []:
        marker = CommitMarker.model_validate_json(path.read_text())
        out[marker.source_key] = marker
    return out


def sweep_uncommitted(dataset_dir: Path) -> list[str]:
    """Remove the shards of videos that have no marker; returns their video ids."""
    done = {m.video_id for m in committed(dataset_dir).values()}
    swept = set()
    for table in VIDEO_TABLES:
        for key in shard_keys(dataset_dir, table) - done:
            remove_key(dataset_dir, table, key)
            swept.add(key)
    return sorted(swept)


def commit_video(dataset_dir: Path, source: str, video_id: str, tables: Mapping[str, Sequence[Record]],
                 item_failures: Sequence[DeadLetter] = ()) -> CommitMarker:
    """Write every table of one video (empty ones too, so a rewrite replaces), its dead letters, then the marker."""
    unknown = set(tables) - set(VIDEO_TABLES)
    if unknown:
        raise ValueError(f"not video tables: {sorted(unknown)}")
    rows, invalid = {}, 0
    failures = list(item_failures)
    for table in VIDEO_TABLES:
        result = write_shard(dataset_dir, table, key=video_id, records=tables.get(table, ()),
                             model_cls=ALL_RECORDS[table])
        rows[table] = result.rows
        invalid += len(result.dead_letters)
    # Item-level failures of this video replace whatever an earlier attempt at this source left.
    write_dead_letters(dataset_dir, source_key(source), [d.filed_for(source, video_id) for d in failures])
    marker = CommitMarker(source=source, source_key=source_key(source), video_id=video_id, rows=rows,
                          invalid_rows=invalid, committed_at=utc_now())
    write_bytes_atomic(marker_path(dataset_dir, source), marker.model_dump_json(indent=2).encode())
    return marker


def record_source_failure(dataset_dir: Path, source: str, dead_letters: Sequence[DeadLetter]) -> None:
    """A source that produced no committed video: its dead letters, keyed by the source (a rerun replaces them)."""
    write_dead_letters(dataset_dir, source_key(source), [d.filed_for(source) for d in dead_letters])


def failed_sources(dataset_dir: Path) -> set[str]:
    """Source keys that currently hold dead letters."""
    return {k for k in shard_keys(dataset_dir, DEAD_LETTER_TABLE) if k.startswith("src-")}

