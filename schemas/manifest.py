"""``manifest.json``: every shard of a dataset with its row count and checksum, and a check against the files.

The dataset may be a local folder or an object-store prefix (``schemas.store``); names in the manifest are relative
to its root either way.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from schemas.records import SCHEMA_VERSION, UtcDatetime, utc_now
from schemas.shards import TABLE_PATTERN, visible_shards
from schemas.store import DatasetLike, DatasetStore

MANIFEST_NAME = "manifest.json"


class ShardEntry(BaseModel):
    file: str  # relative to the dataset folder, "/"-separated
    rows: int
    sha256: str
    bytes: int


class TableEntry(BaseModel):
    rows: int
    shards: list[ShardEntry]


class Manifest(BaseModel):
    schema_version: str = SCHEMA_VERSION
    created_at: UtcDatetime = Field(default_factory=utc_now)
    tables: dict[str, TableEntry]
    files: list[ShardEntry] = Field(default_factory=list)  # root-level Parquet files, e.g. dead_letter.parquet


def _entry(store: DatasetStore, rel: str) -> ShardEntry:
    data = store.read_bytes(rel)
    return ShardEntry(file=rel, rows=pq.read_metadata(pa.BufferReader(data)).num_rows,
                      sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def _tables(store: DatasetStore) -> dict[str, list[str]]:
    """Table folders (named like a table) and their finished shards."""
    out = {}
    for name in store.list_dirs():
        if TABLE_PATTERN.fullmatch(name):
            shards = visible_shards(store, name)
            if shards:
                out[name] = shards
    return out


def _root_files(store: DatasetStore) -> list[str]:
    return store.list_files("", suffix=".parquet")


def build_manifest(dataset_dir: DatasetLike) -> Manifest:
    """Describe every finished shard and root Parquet file, and write ``manifest.json`` atomically."""
    store = DatasetStore.of(dataset_dir)
    tables = {}
    for name, names in _tables(store).items():
        shards = [_entry(store, rel) for rel in names]
        tables[name] = TableEntry(rows=sum(s.rows for s in shards), shards=shards)
    manifest = Manifest(tables=tables, files=[_entry(store, rel) for rel in _root_files(store)])
    store.write_bytes(MANIFEST_NAME, manifest.model_dump_json(indent=2).encode() + b"\n")
    return manifest


def load_manifest(dataset_dir: DatasetLike) -> Manifest:
    return Manifest.model_validate_json(DatasetStore.of(dataset_dir).read_bytes(MANIFEST_NAME))


def _problems(store: DatasetStore, entry: ShardEntry) -> list[str]:
    try:
        data = store.read_bytes(entry.file)
    except FileNotFoundError:
        return [f"{entry.file}: missing"]
    problems = []
    if len(data) != entry.bytes:
        problems.append(f"{entry.file}: size {len(data)} != {entry.bytes} in the manifest")
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        problems.append(f"{entry.file}: checksum mismatch")
    try:
        rows = pq.read_metadata(pa.BufferReader(data)).num_rows
    except Exception as exc:  # any unreadable file is a finding, not a crash of the check
        problems.append(f"{entry.file}: unreadable Parquet ({type(exc).__name__}: {exc})")
    else:
        if rows != entry.rows:
            problems.append(f"{entry.file}: {rows} rows != {entry.rows} in the manifest")
    return problems


def verify_manifest(dataset_dir: DatasetLike) -> list[str]:
    """Problems between ``manifest.json`` and the files in the dataset; an empty list means they agree."""
    store = DatasetStore.of(dataset_dir)
    try:
        manifest = load_manifest(store)
    except FileNotFoundError:
        return [f"{MANIFEST_NAME}: missing"]
    except ValueError as exc:
        return [f"{MANIFEST_NAME}: invalid ({exc})"]
    problems = []
    if manifest.schema_version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        problems.append(f"{MANIFEST_NAME}: schema version {manifest.schema_version} is incompatible with "
                        f"{SCHEMA_VERSION}")
    listed = set()
    for name, table in manifest.tables.items():
        for entry in table.shards:
            listed.add(entry.file)
            problems += _problems(store, entry)
        if table.rows != sum(s.rows for s in table.shards):
            problems.append(f"{name}: table rows {table.rows} != the sum of its shards")
    for entry in manifest.files:
        listed.add(entry.file)
        problems += _problems(store, entry)
    present = [rel for names in _tables(store).values() for rel in names] + _root_files(store)
    problems += [f"{rel}: not in the manifest" for rel in sorted(present) if rel not in listed]
    return problems
