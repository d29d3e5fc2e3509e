"""One sqlite table in a file that several processes may share: WAL journal, a busy timeout, autocommit, one lock
per connection. The LLM request cache and AVBench's answer cache are both such a store."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, ClassVar


class SqliteStore:
    TABLE: ClassVar[str]
    SCHEMA: ClassVar[str]  # the CREATE TABLE IF NOT EXISTS statement of TABLE

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(self.SCHEMA)

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def execute(self, *statements: tuple[str, tuple[Any, ...]]) -> tuple | None:
        """Run the statements under one lock; returns the first row of the last one."""
        with self._lock:
            row = None
            for sql, args in statements:
                row = self._db.execute(sql, args).fetchone()
            return row

    def __len__(self) -> int:
        return int(self.one(f"SELECT COUNT(*) FROM {self.TABLE}")[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
