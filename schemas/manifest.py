"""``manifest.json``: every shard of a dataset with its row count and checksum, and a check against the files.

The dataset may be a local folder or an object-store prefix (``schemas.store``); names in the manifest are relative
to its root either way. Building it is incremental: a file whose size and modification time are those the previous
manifest recorded keeps its entry (no read, no hash), so a resume pays for what it added, not for the dataset;
``verify_manifest`` (``saven verify``) reads and hashes every file.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from schemas.records import SCHEMA_VERSION, UtcDatetime, utc_now
from schemas.shards import TABLE_PATTERN, compacted_shards, visible_shards
from schemas.store import DatasetLike, DatasetStore

MANIFEST_NAME = "manifest.json"


class ShardEntry(BaseModel):
    file: str  # relative to the dataset folder, "/"-separated
    rows: int
    sha256: str
    bytes: int
    mtime_ns: int | None = None  # as listed when hashed: unchanged size and time -> the entry is reused


class TableEntry(BaseModel):
    rows: int
    shards: list[ShardEntry]


class Manifest(BaseModel):
    schema_version: str = SCHEMA_VERSION
    created_at: UtcDatetime = Field(default_factory=utc_now)
    tables: dict[str, TableEntry]
    files: list[ShardEntry] = Field(default_factory=list)  # root-level Parquet files, e.g. dead_letter.parquet


def _entry(store: DatasetStore, rel: str, mtime_ns: int | None = None) -> ShardEntry:
    data = store.read_bytes(rel)
    return ShardEntry(file=rel, rows=pq.read_metadata(pa.BufferReader(data)).num_rows,
                      sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), mtime_ns=mtime_ns)


def _tables(store: DatasetStore) -> dict[str, list[str]]:
    """Table folders (named like a table) and their finished shards, compacted ones first."""
    out = {}
    for name in store.list_dirs():
        if TABLE_PATTERN.fullmatch(name):
            shards = compacted_shards(store, name) + visible_shards(store, name)
            if shards:
                out[name] = shards
    return out


def _root_files(store: DatasetStore) -> list[str]:
    return store.list_files("", suffix=".parquet")


def _listed(store: DatasetStore, folder: str) -> dict[str, tuple[int, int]]:
    prefix = f"{folder}/" if folder else ""
    return {f"{prefix}{n}": (size, mtime) for n, size, mtime in store.list_infos(folder, suffix=".parquet")}


def build_manifest(dataset_dir: DatasetLike, *, full: bool = False) -> Manifest:
    """Describe every finished shard and root Parquet file, and write ``manifest.json`` atomically. Entries of files
    unchanged since the previous manifest (same size and time) are kept as they were unless ``full``."""
    store = DatasetStore.of(dataset_dir)
    previous: dict[str, ShardEntry] = {}
    if not full:
        try:
            old = load_manifest(store)
            previous = {e.file: e for t in old.tables.values() for e in t.shards} | {e.file: e for e in old.files}
        except (FileNotFoundError, ValueError):
            previous = {}

    def entry(rel: str, listed: dict[str, tuple[int, int]]) -> ShardEntry:
        size, mtime = listed.get(rel, (None, None))
        known = previous.get(rel)
        if known is not None and known.bytes == size and known.mtime_ns == mtime and mtime:
            return known
        return _entry(store, rel, mtime)

    tables = {}
    for name, names in _tables(store).items():
        listed = _listed(store, name)
        shards = [entry(rel, listed) for rel in names]
        tables[name] = TableEntry(rows=sum(s.rows for s in shards), shards=shards)
    root = _listed(store, "")
    manifest = Manifest(tables=tables, files=[entry(rel, root) for rel in _root_files(store)])
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
    except Exception as exc:  # noqa: BLE001 — any unreadable file is a finding, not a crash of the check
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
