"""`saven compact` and the finalize step's compaction: which keys of which tables are ready to be compacted.

Only what is committed moves (``schemas.compaction``): a video's tables once its marker exists, the dead letters
of a committed source or video, and the markers themselves (folded into ``_committed/index~c*.parquet``). What a
running batch may still rewrite stays in its own shards.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.commit import COMMIT_DIR, compact_markers, committed_sources
from schemas.records import VIDEO_TABLES
from schemas.compaction import CompactionReport, compact_table
from schemas.settings import Compaction
from schemas.shards import DEAD_LETTER_TABLE, visible_shards
from schemas.store import DatasetLike, DatasetStore


@dataclass
class DatasetCompaction:
    markers: int
    report: CompactionReport


def loose_files(dataset: DatasetLike) -> int:
    """Own (uncompacted) shards and loose markers: what compaction would gather."""
    store = DatasetStore.of(dataset)
    return (sum(len(visible_shards(store, t)) for t in (*VIDEO_TABLES, DEAD_LETTER_TABLE))
            + len(store.list_files(COMMIT_DIR, prefix="src-", suffix=".json")))


def compact_dataset(dataset: DatasetLike, cfg: Compaction) -> DatasetCompaction:
    """Compact every committed key of the dataset's tables, then fold the markers."""
    store = DatasetStore.of(dataset)
    markers = committed_sources(store)
    videos = {ref.video_id for ref in markers.values()}
    report = CompactionReport()
    target = int(cfg.target_mb * 1024**2)
    for table in VIDEO_TABLES:
        report.tables.append(compact_table(store, table, videos, target_bytes=target,
                                           row_group_rows=cfg.row_group_rows))
    # Dead letters: a committed source's ("src-<key>") and the write-stage ones of a committed video
    # ("<table>.<video id>").
    dead_keys = set(markers) | {f"{t}.{v}" for t in VIDEO_TABLES for v in videos}
    report.tables.append(compact_table(store, DEAD_LETTER_TABLE, dead_keys, target_bytes=target,
                                       row_group_rows=cfg.row_group_rows))
    return DatasetCompaction(markers=compact_markers(store), report=report)


def maybe_compact(dataset: DatasetLike, cfg: Compaction) -> DatasetCompaction | None:
    """Compact when at least ``cfg.min_loose_files`` small files have gathered (finalize calls this)."""
    if not cfg.enabled or loose_files(dataset) < cfg.min_loose_files:
        return None
    return compact_dataset(dataset, cfg)
