"""The run's LLM request cache where the dataset lives: a sqlite file beside a local dataset, shards on an object
store.

sqlite is not safe on a network file system or an object store. For a dataset on an object store the cache is a
local sqlite file on the flow's machine (in the scratch folder), seeded at the start of a run from the cache
shards under ``<dataset>/_cache/llm/`` and, after each batch has committed its videos, extended by one more shard
holding the replies that batch received. A resumed run on a fresh cluster therefore re-sends nothing that an
earlier run got an answer to. A local dataset keeps its sqlite file at ``<dataset>/_cache/llm.sqlite``, as before.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from infra.llm_client import RequestCache
from schemas.shards import parquet_bytes
from schemas.store import DatasetStore

SHARD_DIR = "_cache/llm"
LOCAL_FILE = "_cache/llm.sqlite"
_SCHEMA = pa.schema([("key", pa.string()), ("model", pa.string()), ("schema_name", pa.string()),
                     ("content", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
                     ("created_at", pa.float64())])


def cache_path(store: DatasetStore, scratch: Path | None = None) -> Path:
    """The sqlite file the run's LLM clients share."""
    if store.local:
        return store.local_path(LOCAL_FILE)
    digest = hashlib.sha256(store.uri.encode()).hexdigest()[:16]
    base = Path(scratch) if scratch else Path(tempfile.gettempdir()) / "saven-scratch"
    return base / "llm-cache" / f"{digest}.sqlite"


def restore(store: DatasetStore, path: Path) -> int:
    """Load every cache shard of an object-store dataset into the local file; returns the replies added."""
    if store.local:
        return 0
    cache = RequestCache(path)
    try:
        added = 0
        for name in store.list_files(SHARD_DIR, suffix=".parquet"):
            table = pq.read_table(pa.BufferReader(store.read_bytes(f"{SHARD_DIR}/{name}")))
            rows = [tuple(r[c] for c in RequestCache.COLUMNS) for r in table.to_pylist()]
            added += cache.add_rows(rows)
        return added
    finally:
        cache.close()


def save_since(store: DatasetStore, path: Path, since: float) -> int:
    """Put the replies the local file received since ``since`` into one new cache shard of an object-store
    dataset; returns how many. (Replies another batch received in the same window may be saved twice: loading keeps
    the first of equal keys, and equal keys hold equal replies.)"""
    if store.local or not path.is_file():
        return 0
    cache = RequestCache(path)
    try:
        rows = cache.rows_since(since)
    finally:
        cache.close()
    if not rows:
        return 0
    table = pa.Table.from_pylist([dict(zip(RequestCache.COLUMNS, r)) for r in rows], schema=_SCHEMA)
    name = f"{SHARD_DIR}/llm-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    store.write_bytes(name, parquet_bytes(table))
    return len(rows)
