"""Compaction: many small per-key shards of a table merged into few size-bounded ones, without losing what resume
needs.

A pipeline commits one shard per table per video: ~9 files a video, 900k at 100k videos, which readers (pyarrow,
duckdb, HF ``datasets``) and object stores pay for per file. ``compact_table`` merges the shards of the keys it is
given (committed videos) into shards of about ``target_bytes`` (``<table>/<table>~cNNNNNN.parquet``, row groups
of ``row_group_rows``), each footer listing the keys it holds with their row counts:

- **Readers never see a row twice.** The compacted shard is written whole (atomic) *before* the key's own shards
  are deleted; from that moment readers (``schemas.shards.read_table``) take the compacted copy and skip own shards
  of any key it lists, so a compaction that stops half-way leaves leftovers, never duplicates.
- **Resume still works.** ``shard_keys`` reads the keys of compacted shards from their footers, so a rerun skips
  the compacted videos too; ``remove_key`` rewrites the one compacted shard that holds a key without its rows, so a
  video can be swept and redone without duplicates.
- **Few files stay few.** New keys first fill the table's last compacted shard up to the target (it is rewritten
  in place), then open new ones: after any number of compactions a table has about ``bytes / target`` compacted
  shards plus the keys committed since the last one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import arrow_schema
from schemas.shards import (COMPRESSION, KEY_ROWS, _check_whole_writes, _conform, _loose_key, _model_of,
                            compacted_keys, compacted_name, compacted_shards, key_rows_of, visible_shards)
from schemas.store import DatasetLike, DatasetStore

DEFAULT_TARGET_BYTES = 256 * 1024**2
DEFAULT_ROW_GROUP_ROWS = 100_000


@dataclass
class TableCompaction:
    table: str
    keys: int = 0  # keys moved into compacted shards
    files_before: int = 0
    files_after: int = 0
    shards_written: int = 0
    leftovers_removed: int = 0  # own shards of keys a compacted shard already held


@dataclass
class CompactionReport:
    tables: list[TableCompaction] = field(default_factory=list)

    @property
    def keys(self) -> int:
        return sum(t.keys for t in self.tables)


def _parquet(table: pa.Table, row_group_rows: int) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, row_group_size=row_group_rows)
    return sink.getvalue().to_pybytes()


def _with_keys(table: pa.Table, target: pa.Schema, key_rows: list[tuple[str, int]]) -> pa.Table:
    """The rows under the current schema, its metadata (schema version, record) and the footer's key list."""
    meta = {k: v for k, v in (target.metadata or {}).items()}
    meta[KEY_ROWS] = json.dumps(key_rows).encode()
    return table.replace_schema_metadata(meta)


def _read_keys(store: DatasetStore, table: str, target: pa.Schema, keys: list[str], parts: dict[str, list[str]]
               ) -> tuple[pa.Table, list[tuple[str, int]]]:
    """The rows of ``keys`` (their own shards, in key order) as one table under the current schema, and the rows of
    each key. Read through ``pyarrow.dataset`` (its threads read many small files at once)."""
    import pyarrow.dataset as pads

    names = [n for k in keys for n in sorted(parts[k])]
    multi = [k for k in keys if len(parts[k]) > 1]
    for key in multi:  # a key written in parts must come from one whole write
        metas = [pq.read_metadata(store.open_input_file(n)).metadata or {} for n in sorted(parts[key])]
        _check_whole_writes([store.url(n) for n in sorted(parts[key])], metas)
    dataset = pads.dataset([store.path(n) for n in names], schema=target, format="parquet", filesystem=store.fs)
    scanned = dataset.to_table(columns=[*target.names, "__fragment_index"])
    frag = scanned.column("__fragment_index").to_numpy()
    counts = np.bincount(frag, minlength=len(names))
    order = np.argsort(frag, kind="stable")  # fragment (file) order = key order; rows within a file keep theirs
    table = scanned.select(target.names).take(pa.array(order))
    per_name = dict(zip(names, counts.tolist()))
    key_rows = [(k, int(sum(per_name[n] for n in parts[k]))) for k in keys]
    return table, key_rows


def compact_table(dataset: DatasetLike, table: str, keys: Iterable[str], *,
                  target_bytes: int = DEFAULT_TARGET_BYTES,
                  row_group_rows: int = DEFAULT_ROW_GROUP_ROWS) -> TableCompaction:
    """Move the own shards of ``keys`` in ``table`` into compacted shards (see the module's doc)."""
    store = DatasetStore.of(dataset)
    target = arrow_schema(_model_of(table))
    wanted = set(keys)
    infos = {f"{table}/{n}": size for n, size, _ in store.list_infos(table, suffix=".parquet")}
    loose = [n for n in visible_shards(store, table)]
    held = compacted_keys(store, table)
    covered = {k for rows in held.values() for k, _ in rows}
    report = TableCompaction(table, files_before=len(loose) + len(held))

    # Leftovers of a compaction that stopped before deleting them: the compacted copy counts, these go.
    for name in loose:
        if _loose_key(name, table) in covered:
            store.delete(name)
            report.leftovers_removed += 1
    parts: dict[str, list[str]] = {}
    for name in loose:
        key = _loose_key(name, table)
        if key in wanted and key not in covered:
            parts.setdefault(key, []).append(name)
    if not parts:
        report.files_after = len(visible_shards(store, table)) + len(compacted_shards(store, table))
        return report

    # Fill the last compacted shard first (rewritten in place), then open new ones.
    names = sorted(held)
    seq = max((int(n.rsplit("~c", 1)[1][:6]) for n in names), default=0)
    open_name, open_table, open_keys = None, None, []
    if names and infos.get(names[-1], target_bytes) < target_bytes:
        open_name = names[-1]
        data = store.read_bytes(open_name)
        open_table = _conform(pq.read_table(pa.BufferReader(data)), target, open_name)
        open_keys = key_rows_of(pq.read_metadata(pa.BufferReader(data)).metadata)

    # Chunks of keys by the bytes their shards take; a merged shard is smaller than its parts (each small shard is
    # mostly footer), so the share it keeps is learned from each shard written.
    keys_sorted = sorted(parts)
    ratio = 0.5
    start = 0
    while start < len(keys_sorted):
        budget = target_bytes - (infos.get(open_name, 0) if open_name else 0)
        end, size = start, 0
        while end < len(keys_sorted) and (end == start or size * ratio < budget):
            size += sum(infos.get(n, 0) for n in parts[keys_sorted[end]])
            end += 1
        chunk = keys_sorted[start:end]
        merged, key_rows = _read_keys(store, table, target, chunk, parts)
        if open_table is not None:
            merged = pa.concat_tables([open_table.replace_schema_metadata(None), merged])
            key_rows = open_keys + key_rows
        if open_name is None:
            seq += 1
            open_name = compacted_name(table, seq)
        data = _parquet(_with_keys(merged, target, key_rows), row_group_rows)
        store.write_bytes(open_name, data)
        report.shards_written += 1
        for key in chunk:  # only now: the compacted shard lists them, readers take that copy
            for name in parts[key]:
                store.delete(name)
        report.keys += len(chunk)
        if size:
            ratio = max(0.05, min(1.0, (len(data) - (infos.get(open_name, 0) if open_table is not None else 0))
                                  / size))
        infos[open_name] = len(data)
        # The shard stays open while it is under the target; a full one is closed.
        if len(data) < target_bytes:
            open_table, open_keys = merged, key_rows
        else:
            open_name, open_table, open_keys = None, None, []
        start = end
    report.files_after = len(visible_shards(store, table)) + len(compacted_shards(store, table))
    return report
