"""``manifest.json``: every shard of a dataset with its row count and checksum, and a check against the files."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from schemas.records import SCHEMA_VERSION, UtcDatetime, utc_now
from schemas.shards import TABLE_PATTERN, sha256_file, visible_shards, write_bytes_atomic

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


def _entry(dataset_dir: Path, path: Path) -> ShardEntry:
    return ShardEntry(file=path.relative_to(dataset_dir).as_posix(), rows=pq.read_metadata(path).num_rows,
                      sha256=sha256_file(path), bytes=path.stat().st_size)


def _tables(dataset_dir: Path) -> dict[str, list[Path]]:
    """Table folders (named like a table) and their finished shards."""
    return {d.name: visible_shards(dataset_dir, d.name) for d in sorted(dataset_dir.iterdir())
            if d.is_dir() and TABLE_PATTERN.fullmatch(d.name) and visible_shards(dataset_dir, d.name)}


def _root_files(dataset_dir: Path) -> list[Path]:
    return sorted(p for p in dataset_dir.glob("*.parquet") if not p.name.startswith("."))


def build_manifest(dataset_dir: Path) -> Manifest:
    """Describe every finished shard and root Parquet file, and write ``manifest.json`` atomically."""
    dataset_dir = Path(dataset_dir)
    tables = {}
    for name, paths in _tables(dataset_dir).items():
        shards = [_entry(dataset_dir, p) for p in paths]
        tables[name] = TableEntry(rows=sum(s.rows for s in shards), shards=shards)
    manifest = Manifest(tables=tables, files=[_entry(dataset_dir, p) for p in _root_files(dataset_dir)])
    write_bytes_atomic(dataset_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode() + b"\n")
    return manifest


def load_manifest(dataset_dir: Path) -> Manifest:
    return Manifest.model_validate_json((Path(dataset_dir) / MANIFEST_NAME).read_bytes())


def _problems(dataset_dir: Path, entry: ShardEntry) -> list[str]:
    path = dataset_dir / entry.file
    if not path.is_file():
        return [f"{entry.file}: missing"]
    problems = []
    if path.stat().st_size != entry.bytes:
        problems.append(f"{entry.file}: size {path.stat().st_size} != {entry.bytes} in the manifest")
    if sha256_file(path) != entry.sha256:
        problems.append(f"{entry.file}: checksum mismatch")
    try:
        rows = pq.read_metadata(path).num_rows
    except Exception as exc:  # any unreadable file is a finding, not a crash of the check
        problems.append(f"{entry.file}: unreadable Parquet ({type(exc).__name__}: {exc})")
    else:
        if rows != entry.rows:
            problems.append(f"{entry.file}: {rows} rows != {entry.rows} in the manifest")
    return problems


def verify_manifest(dataset_dir: Path) -> list[str]:
    """Problems between ``manifest.json`` and the files on disk; an empty list means they agree."""
    dataset_dir = Path(dataset_dir)
    try:
        manifest = load_manifest(dataset_dir)
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
            problems += _problems(dataset_dir, entry)
        if table.rows != sum(s.rows for s in table.shards):
            problems.append(f"{name}: table rows {table.rows} != the sum of its shards")
    for entry in manifest.files:
        listed.add(entry.file)
        problems += _problems(dataset_dir, entry)
    on_disk = [p for paths in _tables(dataset_dir).values() for p in paths] + _root_files(dataset_dir)
    problems += [f"{rel}: not in the manifest" for rel in
                 sorted(p.relative_to(dataset_dir).as_posix() for p in on_disk) if rel not in listed]
    return problems
