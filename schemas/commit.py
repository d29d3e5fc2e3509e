"""Per-video commits: a video's shards first, then its marker. The marker is what makes a video count.

A rerun skips sources whose marker exists, sweeps the shards and files of videos that never got one (a run killed
between the two), and rewrites by key, so nothing is written twice. The dataset is a ``DatasetStore``: a local
folder or an object-store prefix, where each marker is one atomic PUT written after the video's shards.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from pydantic import BaseModel, ConfigDict

from schemas.records import VIDEO_TABLES, DeadLetter, Record, UtcDatetime, utc_now
from schemas.paths import video_files
from schemas.shards import (loose_keys, parquet_bytes, remove_key, shard_keys, write_dead_letters,
                            write_shard)
from schemas.store import DatasetLike, DatasetStore

COMMIT_DIR = "_committed"


def source_key(source: str) -> str:
    """A file-name-safe key for a source as given: dead letters and commit markers are keyed by it."""
    return "src-" + hashlib.sha256(source.encode()).hexdigest()[:16]


class CommitMarker(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    source_key: str
    video_id: str
    rows: dict[str, int]
    invalid_rows: int
    committed_at: UtcDatetime


def marker_name(source: str) -> str:
    return f"{COMMIT_DIR}/{source_key(source)}.json"


INDEX_PREFIX = "index~c"  # _committed/index~cNNNNNN.parquet: compacted markers, one row each


def committed(dataset_dir: DatasetLike) -> dict[str, CommitMarker]:
    """Markers by source key: those compacted into index shards, then the loose ones (which win)."""
    store = DatasetStore.of(dataset_dir)
    out = {}
    for name in store.list_files(COMMIT_DIR, prefix=INDEX_PREFIX, suffix=".parquet"):
        table = pq.read_table(pa.BufferReader(store.read_bytes(f"{COMMIT_DIR}/{name}")))
        for row in table.to_pylist():
            row["rows"] = json.loads(row["rows"])
            marker = CommitMarker.model_validate(row)
            out[marker.source_key] = marker
    for name in store.list_files(COMMIT_DIR, prefix="src-", suffix=".json"):
        marker = CommitMarker.model_validate_json(store.read_bytes(f"{COMMIT_DIR}/{name}"))
        out[marker.source_key] = marker
    return out


class CommittedSource(NamedTuple):
    video_id: str
    source: str


def committed_sources(dataset_dir: DatasetLike) -> dict[str, CommittedSource]:
    """Source key -> (video id, source) of every commit: what a resume and a sweep need, read as two columns of the
    index shards (not 100k validated markers: ~50 ms instead of ~2.5 s at 100k videos) plus the loose markers."""
    store = DatasetStore.of(dataset_dir)
    out: dict[str, CommittedSource] = {}
    for name in store.list_files(COMMIT_DIR, prefix=INDEX_PREFIX, suffix=".parquet"):
        table = pq.read_table(pa.BufferReader(store.read_bytes(f"{COMMIT_DIR}/{name}")),
                              columns=["source_key", "video_id", "source"])
        out.update(zip(table.column("source_key").to_pylist(),
                       map(CommittedSource._make, zip(table.column("video_id").to_pylist(),
                                                      table.column("source").to_pylist()))))
    for name in store.list_files(COMMIT_DIR, prefix="src-", suffix=".json"):
        marker = CommitMarker.model_validate_json(store.read_bytes(f"{COMMIT_DIR}/{name}"))
        out[marker.source_key] = CommittedSource(marker.video_id, marker.source)
    return out


FORGOTTEN_PREFIX = "forgotten~"  # _committed/forgotten~<uuid>.json: videos uncommit forgot, for the next sweep


def uncommit(dataset_dir: DatasetLike, source_keys: set[str]) -> int:
    """Forget the commits of these sources (their loose markers go, and the index shards are rewritten without
    them), so the next run sweeps their rows and redoes them. Returns how many markers were forgotten.

    Their video ids are written down first (``forgotten~*.json``): compacted shards hold only committed videos, so
    a sweep looks into them only for the videos listed there, not into every footer of the dataset."""
    store = DatasetStore.of(dataset_dir)
    videos = sorted({ref.video_id for key, ref in committed_sources(store).items() if key in source_keys})
    if videos:
        store.write_bytes(f"{COMMIT_DIR}/{FORGOTTEN_PREFIX}{uuid.uuid4().hex}.json",
                          json.dumps({"video_ids": videos}).encode())
    forgotten = 0
    for name in store.list_files(COMMIT_DIR, prefix="src-", suffix=".json"):
        if name.removesuffix(".json") in source_keys:
            store.delete(f"{COMMIT_DIR}/{name}")
            forgotten += 1
    for name in store.list_files(COMMIT_DIR, prefix=INDEX_PREFIX, suffix=".parquet"):
        rel = f"{COMMIT_DIR}/{name}"
        table = pq.read_table(pa.BufferReader(store.read_bytes(rel)))
        keep = [k not in source_keys for k in table.column("source_key").to_pylist()]
        if all(keep):
            continue
        forgotten += keep.count(False)
        kept = table.filter(pa.array(keep))
        if kept.num_rows:
            store.write_bytes(rel, parquet_bytes(kept))
        else:
            store.delete(rel)
    return forgotten


def compact_markers(dataset_dir: DatasetLike) -> int:
    """The loose markers folded into one new index shard (written whole first, then the loose files go: a stop in
    between leaves a marker twice, which ``committed`` reads once). Returns how many were folded."""
    store = DatasetStore.of(dataset_dir)
    loose = store.list_files(COMMIT_DIR, prefix="src-", suffix=".json")
    if not loose:
        return 0
    markers = [CommitMarker.model_validate_json(store.read_bytes(f"{COMMIT_DIR}/{n}")) for n in loose]
    rows = [{**m.model_dump(mode="python"), "rows": json.dumps(m.rows, sort_keys=True)} for m in markers]
    seq = max((int(n[len(INDEX_PREFIX):][:6]) for n in store.list_files(COMMIT_DIR, prefix=INDEX_PREFIX,
                                                                          suffix=".parquet")), default=0) + 1
    store.write_bytes(f"{COMMIT_DIR}/{INDEX_PREFIX}{seq:06d}.parquet", parquet_bytes(pa.Table.from_pylist(rows)))
    for name in loose:
        store.delete(f"{COMMIT_DIR}/{name}")
    return len(markers)


def sweep_uncommitted(dataset_dir: DatasetLike) -> list[str]:
    """Remove the shards and files (media, audio, keyframes) of videos that have no marker; returns their ids.

    A video's own shards are found by name. Compacted shards hold committed videos only (compaction takes nothing
    else), except those ``uncommit`` forgot: its lists say which, so no footer of the dataset is read otherwise."""
    store = DatasetStore.of(dataset_dir)
    done = {ref.video_id for ref in committed_sources(store).values()}
    swept = set()
    for table in VIDEO_TABLES:
        for key in loose_keys(store, table) - done:
            remove_key(store, table, key)
            swept.add(key)
    for name in store.list_files(COMMIT_DIR, prefix=FORGOTTEN_PREFIX, suffix=".json"):
        forgotten = set(json.loads(store.read_bytes(f"{COMMIT_DIR}/{name}"))["video_ids"]) - done
        for table in VIDEO_TABLES:
            for key in forgotten & shard_keys(store, table):
                remove_key(store, table, key)
        swept |= forgotten
        store.delete(f"{COMMIT_DIR}/{name}")  # last: a sweep that stops before this does it again
    for name in store.list_dirs() if store.local else []:
        if name.startswith(".acquire-"):  # a download's work folder of an older version, cookie jar and all
            store.delete_dir(name)
    for video_id in {n.rsplit(".", 1)[0] for n in store.list_files("media")} - done:
        for rel in video_files(store, video_id):
            store.delete(rel)
        store.delete_dir(f"keyframes/{video_id}")
        swept.add(video_id)
    return sorted(swept)


def commit_video(dataset_dir: DatasetLike, source: str, video_id: str, tables: Mapping[str, Sequence[Record]],
                 item_failures: Sequence[DeadLetter] = (), records: Mapping[str, type[Record]] | None = None
                 ) -> CommitMarker:
    """Write every table of one video (empty ones too, so a rewrite replaces), its dead letters, then the marker.
    ``records``: the tables a video has and their record classes (a run's pipeline's; default every video table
    known in this process)."""
    records = dict(records if records is not None else VIDEO_TABLES)
    unknown = set(tables) - set(records)
    if unknown:
        raise ValueError(f"not video tables: {sorted(unknown)} (a pipeline stage registers its tables)")
    rows, invalid = {}, 0
    failures = list(item_failures)
    for table, record in records.items():
        result = write_shard(dataset_dir, table, key=video_id, records=tables.get(table, ()), model_cls=record)
        rows[table] = result.rows
        invalid += len(result.dead_letters)
    # Item-level failures of this video replace whatever an earlier attempt at this source left.
    write_dead_letters(dataset_dir, source_key(source), [d.filed_for(source, video_id) for d in failures])
    marker = CommitMarker(source=source, source_key=source_key(source), video_id=video_id, rows=rows,
                          invalid_rows=invalid, committed_at=utc_now())
    DatasetStore.of(dataset_dir).write_bytes(marker_name(source), marker.model_dump_json(indent=2).encode())
    return marker


def record_source_failure(dataset_dir: DatasetLike, source: str, dead_letters: Sequence[DeadLetter]) -> None:
    """A source that produced no committed video: its dead letters, keyed by the source (a rerun replaces them)."""
    write_dead_letters(dataset_dir, source_key(source), [d.filed_for(source) for d in dead_letters])
