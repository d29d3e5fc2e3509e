"""Parquet shards: validated, atomic, deterministically named, replaced per key; plus the reader.

Layout: ``<dataset>/<table>/<table>-<key>-<NNNNN>.parquet``. A key (a video or batch id) is the unit of commit:
writing a key again replaces all of its shards, so a rerun never duplicates rows. The dataset is a
``schemas.store.DatasetStore`` (a local folder or an object-store prefix): every part is written whole to a local
temp file, then moved into place (locally: fsync and ``os.replace`` in the same folder; on an object store: one
PUT, atomic by the protocol); readers only see finished files. A key that spans several parts carries a write id
and part count in each footer, so a crash between two parts landing is detected on read instead of silently mixing
two writes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.arrow import RECORD_KEY, VERSION_KEY, arrow_schema, from_table, to_row
from schemas.records import ALL_RECORDS, SCHEMA_VERSION, DeadLetter, StageName, utc_now
from schemas.store import DatasetLike, DatasetStore, sha256_file

DEAD_LETTER_TABLE = "dead_letter"
TABLE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Starts with an alphanumeric so it can never be hidden, relative or a temp file; ".." is rejected separately.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Keeps the longest temp file name, even for a derived "<table>.<key>" dead-letter key, under 255 bytes.
MAX_KEY_CHARS = 128
BATCH_ROWS = 10_000  # rows validated and written per row group
COMPRESSION = "zstd"

_KEY, _PART, _PARTS, _WRITE_ID = b"saven.key", b"saven.part", b"saven.parts", b"saven.write_id"
# A compacted shard (``schemas.compaction``) holds the rows of many keys, in key order: its footer lists them with
# their row counts. "~" is in no key, so the name can never be a key's shard.
KEY_ROWS = b"saven.key_rows"
COMPACT_MARK = "~c"


class SchemaVersionError(ValueError):
    """A shard written under an incompatible schema (different major version, or another record)."""


class ShardIntegrityError(RuntimeError):
    """The visible parts of one key do not come from one complete write (a crash between renames)."""


class ShardInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    file: str  # relative to the dataset root, "/"-separated
    uri: str  # where it is: a local path or an object-store URL
    table: str
    rows: int
    sha256: str
    schema_version: str

    @property
    def path(self) -> Path:
        """The shard's local file (meaningful for a local dataset only)."""
        if "://" in self.uri:
            raise ValueError(f"{self.uri} is not a local file")
        return Path(self.uri)


class ShardWriteResult(BaseModel):
    shards: list[ShardInfo]
    dead_letters: list[DeadLetter]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


def _check_name(table: str, key: str) -> None:
    if not TABLE_PATTERN.fullmatch(table):
        raise ValueError(f"unsafe table name {table!r}")
    if not KEY_PATTERN.fullmatch(key) or ".." in key or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"unsafe shard key {key!r}: use an id matching {KEY_PATTERN.pattern}, at most "
                         f"{MAX_KEY_CHARS} characters, without '..'")


def shard_name(table: str, key: str, part: int = 0) -> str:
    """The shard's name relative to the dataset root."""
    _check_name(table, key)
    return _name(table, key, part)


def _name(table: str, key: str, part: int) -> str:
    # Unchecked: also for the derived "<table>.<key>" dead-letter keys, which may pass MAX_KEY_CHARS.
    return f"{table}/{table}-{key}-{part:05d}.parquet"


def shard_path(dataset: DatasetLike, table: str, key: str, part: int = 0) -> Path | str:
    """The shard's local path (a ``Path``) or, on an object store, its URL."""
    store = DatasetStore.of(dataset)
    name = shard_name(table, key, part)
    return store.local_path(name) if store.local else store.url(name)


def _name_re(table: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(table)}-(?P<key>.+)-(?P<part>\d{{5}})\.parquet")


def visible_shards(dataset: DatasetLike, table: str) -> list[str]:
    """Finished shards of a table (names relative to the dataset root) in a deterministic order; temp files are
    hidden and end in .tmp."""
    name_re = _name_re(table)
    store = DatasetStore.of(dataset)
    return [f"{table}/{n}" for n in store.list_files(table, prefix=f"{table}-", suffix=".parquet")
            if name_re.fullmatch(n)]


def _compact_re(table: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(table)}{re.escape(COMPACT_MARK)}(?P<seq>\d{{6}})\.parquet")


def compacted_name(table: str, seq: int) -> str:
    return f"{table}/{table}{COMPACT_MARK}{seq:06d}.parquet"


def compacted_shards(dataset: DatasetLike, table: str) -> list[str]:
    """The compacted shards of a table (names relative to the dataset root), in order."""
    store = DatasetStore.of(dataset)
    name_re = _compact_re(table)
    return [f"{table}/{n}" for n in store.list_files(table, prefix=f"{table}{COMPACT_MARK}", suffix=".parquet")
            if name_re.fullmatch(n)]


def key_rows_of(metadata: dict[bytes, bytes] | None) -> list[tuple[str, int]]:
    """The (key, rows) a compacted shard's footer lists, in row order."""
    raw = (metadata or {}).get(KEY_ROWS)
    return [(k, int(n)) for k, n in json.loads(raw)] if raw else []


def compacted_keys(dataset: DatasetLike, table: str) -> dict[str, list[tuple[str, int]]]:
    """Compacted shard -> the keys it holds (read from the footers only)."""
    store = DatasetStore.of(dataset)
    out = {}
    for name in compacted_shards(store, table):
        with store.open_input_file(name) as f:
            out[name] = key_rows_of(pq.read_metadata(f).metadata)
    return out


def _loose_key(rel: str, table: str) -> str:
    return _name_re(table).fullmatch(rel.rsplit("/", 1)[1])["key"]


def loose_keys(dataset: DatasetLike, table: str) -> set[str]:
    """Keys that have shards of their own in a table (by file name; no footer is read)."""
    return {_loose_key(rel, table) for rel in visible_shards(dataset, table)}


def shard_keys(dataset: DatasetLike, table: str) -> set[str]:
    """Keys committed to a table (in its own shards or in compacted ones): what a resumed run can skip."""
    store = DatasetStore.of(dataset)
    keys = {_loose_key(rel, table) for rel in visible_shards(store, table)}
    for held in compacted_keys(store, table).values():
        keys.update(k for k, _ in held)
    return keys


def _key_parts(store: DatasetStore, table: str, key: str) -> list[str]:
    name_re = _name_re(table)
    return [rel for rel in visible_shards(store, table) if name_re.fullmatch(rel.rsplit("/", 1)[1])["key"] == key]


# --- atomic files -------------------------------------------------------------------------------------------


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace the local file ``path`` with ``data`` so that a reader sees the old file or the new one, never a
    part. (Files of a dataset go through ``DatasetStore.write_bytes``, which does this locally.)"""
    DatasetStore.of(Path(path).parent).write_bytes(Path(path).name, data)


# --- writing ------------------------------------------------------------------------------------------------


def _dead_letter(row: Any, key: str, index: int, error_class: str, message: str) -> DeadLetter:
    if isinstance(row, BaseModel):
        row = row.model_dump(mode="json")
    fields = row if isinstance(row, dict) else {}
    video_id = fields.get("video_id")
    item_id = next((fields[k] for k in ("item_id", "qa_id", "clip_id", "video_id")
                    if isinstance(fields.get(k), str) and fields[k]), None)
    return DeadLetter(stage=StageName.write, video_id=video_id if isinstance(video_id, str) and video_id else key,
                      item_id=item_id, error_class=error_class, message=f"row {index}: {message}",
                      failed_at=utc_now(), detail=json.dumps(row, default=str, sort_keys=True))


def _summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<row>'}: {e['msg']}" for e in exc.errors())


def _validated_batches(records: Iterable[Any], model_cls: type[BaseModel], schema: pa.Schema, key: str,
                       dead: list[DeadLetter]) -> Iterator[pa.Table]:
    """Arrow batches of the valid rows; every invalid row becomes a dead letter in ``dead``."""
    rows: list[dict[str, Any]] = []
    raw: list[tuple[int, Any]] = []

    def flush() -> pa.Table:
        try:
            return pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            # Valid for pydantic but not for Arrow (e.g. an int beyond int64): find the rows one by one.
            good = []
            for row, (index, original) in zip(rows, raw):
                try:
                    pa.Table.from_pylist([row], schema=schema)
                    good.append(row)
                except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                    dead.append(_dead_letter(original, key, index, type(exc).__name__, str(exc) or repr(exc)))
            return pa.Table.from_pylist(good, schema=schema)

    # A row's key (``Record.key_fields``) names one thing: a later row with a key already written is refused (a dead
    # letter): anything keyed by it (filters, answers, a rerun) would merge the two. Checked as rows stream by.
    fields = getattr(model_cls, "key_fields", ())
    seen: set[tuple] = set()
    for index, record in enumerate(records):
        if isinstance(record, BaseModel) and not isinstance(record, model_cls):
            raise TypeError(f"a {type(record).__name__} cannot be written as {model_cls.__name__}")
        try:
            model = record if isinstance(record, model_cls) else model_cls.model_validate(record)
        except ValidationError as exc:
            dead.append(_dead_letter(record, key, index, "ValidationError", _summary(exc)))
            continue
        if fields:
            row_key = tuple(getattr(model, f) for f in fields)
            if row_key in seen:
                dead.append(_dead_letter(record, key, index, "duplicate_key",
                                         f"{model_cls.__name__} key {dict(zip(fields, row_key))} is already in this "
                                         "shard: the repeat is refused"))
                continue
            seen.add(row_key)
        rows.append(to_row(model))
        raw.append((index, record))
        if len(rows) >= BATCH_ROWS:
            yield flush()
            rows, raw = [], []
    if rows:
        yield flush()


class _Parts:
    """One key's new parts, each a local temp file that stays open until the part count is known. Locally the temp
    files sit beside their targets (a rename puts them in place); for an object store, in a local temp folder."""

    def __init__(self, store: DatasetStore, table: str, key: str, schema: pa.Schema, max_rows: int | None):
        self.store, self.table, self.key, self.max_rows = store, table, key, max_rows
        self.write_id = uuid.uuid4().hex
        self.schema = schema
        self._tmpdir = None if store.local else tempfile.TemporaryDirectory(prefix="saven-shard-")
        self.parts: list[tuple[Path, str, pq.ParquetWriter, Any]] = []  # (temp, final name, writer, file)
        self.rows: list[int] = []

    def _open(self) -> None:
        part = len(self.parts)
        name = _name(self.table, self.key, part)
        beside = self.store.local_path(name) if self.store.local else Path(self._tmpdir.name) / Path(name).name
        beside.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(beside)
        f = open(tmp, "wb")
        meta = {**self.schema.metadata, _KEY: self.key.encode(), _PART: str(part).encode(),
                _WRITE_ID: self.write_id.encode()}
        writer = pq.ParquetWriter(f, self.schema.with_metadata(meta), compression=COMPRESSION)
        self.parts.append((tmp, name, writer, f))
        self.rows.append(0)

    def write(self, batch: pa.Table) -> None:
        while batch.num_rows:
            if not self.parts or (self.max_rows and self.rows[-1] >= self.max_rows):
                self._open()
            room = self.max_rows - self.rows[-1] if self.max_rows else batch.num_rows
            chunk, batch = batch.slice(0, room), batch.slice(room)
            self.parts[-1][2].write_table(chunk)
            self.rows[-1] += chunk.num_rows

    def finish(self) -> list[tuple[Path, str, int, str]]:
        """Close every part with the final part count; returns (temp, final name, rows, sha256)."""
        if not self.parts:
            self._open()  # an empty shard still records that the key was committed
        done = []
        for (tmp, name, writer, f), rows in zip(self.parts, self.rows):
            writer.add_key_value_metadata({_PARTS: str(len(self.parts)).encode()})
            writer.close()
            f.flush()
            os.fsync(f.fileno())
            f.close()
            done.append((tmp, name, rows, sha256_file(tmp)))
        return done

    def abort(self) -> None:
        for tmp, _, writer, f in self.parts:
            try:
                writer.close()
            finally:
                f.close()
                tmp.unlink(missing_ok=True)
        self.cleanup()

    def cleanup(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()


def _commit(store: DatasetStore, table: str, key: str, done: list[tuple[Path, str, int, str]]) -> list[ShardInfo]:
    stale = set(_key_parts(store, table, key)) - {name for _, name, _, _ in done}
    for tmp, name, _, _ in done:
        store.put_file(tmp, name, move=True)
    for name in stale:
        store.delete(name)
    return [ShardInfo(file=name, uri=store.url(name), table=table, rows=rows, sha256=digest,
                      schema_version=SCHEMA_VERSION) for _, name, rows, digest in done]


def _remove_temp_files(store: DatasetStore, table: str, key: str) -> None:
    # Left by a local writer that was killed; the same key is never written by two writers at once. (An object
    # store has no temp objects: a part that was not PUT whole does not exist.)
    if store.local:
        for tmp in store.local_path(table).glob(f".{table}-{key}-[0-9][0-9][0-9][0-9][0-9].parquet.*.tmp"):
            tmp.unlink(missing_ok=True)


def remove_key(dataset: DatasetLike, table: str, key: str) -> None:
    """Delete every shard of ``key`` in ``table`` (e.g. a video whose run did not commit); a compacted shard that
    holds it is rewritten without its rows, in place (one atomic replace of that shard)."""
    store = DatasetStore.of(dataset)
    for name in _key_parts(store, table, key):
        store.delete(name)
    for name, held in compacted_keys(store, table).items():
        if any(k == key for k, _ in held):
            _rewrite_compacted_without(store, name, held, {key})


def _rewrite_compacted_without(store: DatasetStore, name: str, held: list[tuple[str, int]], drop: set[str]) -> None:
    data = store.read_bytes(name)
    table = pq.read_table(pa.BufferReader(data))
    meta = dict(pq.read_metadata(pa.BufferReader(data)).metadata or {})
    keep, pieces, start = [], [], 0
    for key, rows in held:
        if key not in drop:
            keep.append((key, rows))
            pieces.append(table.slice(start, rows))
        start += rows
    if not keep:
        store.delete(name)
        return
    merged = pa.concat_tables(pieces) if pieces else table.slice(0, 0)
    meta[KEY_ROWS] = json.dumps(keep).encode()
    store.write_bytes(name, parquet_bytes(merged.replace_schema_metadata(meta)))


def write_shard(dataset_dir: DatasetLike, table: str, *, key: str, records: Iterable[BaseModel | dict[str, Any]],
                model_cls: type[BaseModel] | None = None, max_rows_per_shard: int | None = None,
                ) -> ShardWriteResult:
    """Validate ``records`` and commit the valid ones as the shards of ``key``, replacing what the key held.

    Invalid rows become ``DeadLetter(stage=write)`` records, committed first to the ``dead_letter`` table under
    the key ``<table>.<key>`` (so a rerun replaces them too). ``records`` may be a generator: rows are validated
    and written in batches, so a large shard is never held in memory whole.
    """
    _check_name(table, key)
    if max_rows_per_shard is not None and max_rows_per_shard < 1:
        raise ValueError("max_rows_per_shard must be at least 1")
    return _write(DatasetStore.of(dataset_dir), table, key, records, model_cls or _model_of(table),
                  max_rows_per_shard)


def _write(store: DatasetStore, table: str, key: str, records: Iterable[Any], model_cls: type[BaseModel],
           max_rows_per_shard: int | None) -> ShardWriteResult:
    _remove_temp_files(store, table, key)

    dead: list[DeadLetter] = []
    parts = _Parts(store, table, key, arrow_schema(model_cls), max_rows_per_shard)
    try:
        for batch in _validated_batches(records, model_cls, parts.schema, key, dead):
            parts.write(batch)
        done = parts.finish()
    except BaseException:
        parts.abort()
        raise
    try:
        # Dead letters land before the shard that marks the key as committed: a crash in between only reruns it.
        dead_key = f"{table}.{key}"
        if dead:
            _write(store, DEAD_LETTER_TABLE, dead_key, dead, DeadLetter, None)
        else:
            remove_key(store, DEAD_LETTER_TABLE, dead_key)
        shards = _commit(store, table, key, done)
    finally:
        for tmp, _, _, _ in done:
            tmp.unlink(missing_ok=True)
        parts.cleanup()
    return ShardWriteResult(shards=shards, dead_letters=dead)


def write_dead_letters(dataset_dir: DatasetLike, key: str, dead_letters: Iterable[DeadLetter]) -> ShardWriteResult:
    """Commit a stage's dead letters for one key (e.g. a video id), replacing those of an earlier run."""
    dead_letters = list(dead_letters)
    if not dead_letters:
        _check_name(DEAD_LETTER_TABLE, key)
        remove_key(dataset_dir, DEAD_LETTER_TABLE, key)
        return ShardWriteResult(shards=[], dead_letters=[])
    return write_shard(dataset_dir, DEAD_LETTER_TABLE, key=key, records=dead_letters, model_cls=DeadLetter)


# --- reading ------------------------------------------------------------------------------------------------


def _model_of(table: str) -> type[BaseModel]:
    try:
        return ALL_RECORDS[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}: pass model_cls (known: {sorted(ALL_RECORDS)})") from None


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def check_shard_schema(path: Path | str, metadata: dict[bytes, bytes] | None, record: str | None = None) -> str:
    """The shard's schema version; raises ``SchemaVersionError`` if this code cannot read it."""
    metadata = metadata or {}
    if VERSION_KEY not in metadata:
        raise SchemaVersionError(f"{path}: no {VERSION_KEY.decode()} in its metadata; not a SAVEn-Vid shard")
    version = metadata[VERSION_KEY].decode()
    if _major(version) != _major(SCHEMA_VERSION):
        raise SchemaVersionError(f"{path}: shard schema version {version} is incompatible with this code's "
                                 f"schema version {SCHEMA_VERSION} (major versions differ)")
    if record is not None and metadata.get(RECORD_KEY, b"").decode() != record:
        raise SchemaVersionError(f"{path}: holds {metadata.get(RECORD_KEY, b'?').decode()} records, not {record}")
    return version


def _check_whole_writes(paths: list[str], metas: list[dict[bytes, bytes]]) -> None:
    by_key: dict[bytes, list[dict[bytes, bytes]]] = defaultdict(list)
    for meta in metas:
        by_key[meta.get(_KEY, b"")].append(meta)
    for key, group in by_key.items():
        ids = {m.get(_WRITE_ID) for m in group}
        counts = {m.get(_PARTS) for m in group}
        parts = sorted(int(m.get(_PART, b"-1")) for m in group)
        if len(ids) != 1 or len(counts) != 1 or parts != list(range(int(counts.pop() or 0))):
            raise ShardIntegrityError(f"{paths[0].rsplit('/', 1)[0]}: shards of key {key.decode()!r} come from more "
                                      "than one write or are incomplete (interrupted rewrite); write that key again")


def _conform(table: pa.Table, target: pa.Schema, path: str) -> pa.Table:
    """A shard of an older minor version as the current schema: added optional fields read as null."""
    extra = set(table.column_names) - set(target.names)
    if extra:
        raise SchemaVersionError(f"{path}: columns {sorted(extra)} are not in the {SCHEMA_VERSION} schema")
    for field in target:
        if field.name not in table.column_names:
            if not field.nullable:
                raise SchemaVersionError(f"{path}: required column {field.name!r} is missing")
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(target.names).cast(target)


def read_table(dataset_dir: DatasetLike, table: str, model_cls: type[BaseModel] | None = None) -> pa.Table:
    """Every finished shard of ``table``, concatenated in shard-name order, as the current Arrow schema."""
    store = DatasetStore.of(dataset_dir)
    model_cls = model_cls or _model_of(table)
    target = arrow_schema(model_cls)
    packed = compacted_shards(store, table)
    packed_blobs = [store.read_bytes(n) for n in packed]
    packed_metas = [pq.read_metadata(pa.BufferReader(b)).metadata or {} for b in packed_blobs]
    covered = {k for meta in packed_metas for k, _ in key_rows_of(meta)}
    # A key's own shards that a compacted shard already holds are leftovers of a compaction that stopped before
    # deleting them: the compacted copy is the one that counts.
    names = [n for n in visible_shards(store, table) if _loose_key(n, table) not in covered]
    blobs = [store.read_bytes(n) for n in names]  # each shard once: footer and rows from the same bytes
    metas = [pq.read_metadata(pa.BufferReader(b)).metadata or {} for b in blobs]
    urls = [store.url(n) for n in names]
    for url, meta in zip([store.url(n) for n in packed] + urls, packed_metas + metas):
        check_shard_schema(url, meta, model_cls.__name__)
    _check_whole_writes(urls, metas)
    tables = [_conform(pq.read_table(pa.BufferReader(b)), target, store.url(n))
              for b, n in zip(packed_blobs + blobs, packed + names)]
    return pa.concat_tables(tables) if tables else target.empty_table()


def read_records(dataset_dir: DatasetLike, table: str, model_cls: type[BaseModel] | None = None) -> list[BaseModel]:
    model_cls = model_cls or _model_of(table)
    return from_table(read_table(dataset_dir, table, model_cls), model_cls)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=COMPRESSION)
    return buf.getvalue()


def consolidate_dead_letters(dataset_dir: DatasetLike) -> ShardInfo:
    """All dead-letter shards as one ``dead_letter.parquet`` at the dataset root (replaced atomically)."""
    store = DatasetStore.of(dataset_dir)
    table = read_table(store, DEAD_LETTER_TABLE, DeadLetter)
    data = parquet_bytes(table)
    name = f"{DEAD_LETTER_TABLE}.parquet"
    store.write_bytes(name, data)
    return ShardInfo(file=name, uri=store.url(name), table=DEAD_LETTER_TABLE, rows=table.num_rows,
                     sha256=hashlib.sha256(data).hexdigest(), schema_version=SCHEMA_VERSION)
