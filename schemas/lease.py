"""One writer at a time per dataset: a lease file beside the data, taken with a conditional create, renewed while
the run lives, and taken over only once it has expired (or, on the same machine, once its holder's process is gone).

A run that writes a dataset (``saven build``, a deployment run, a Ray job, ``saven compact``) holds the lease for
its whole life; a second one stops at once with an error naming the holder (host, pid, command, since when). Two
writers would lose data: a sweep deletes the shards of any video without a marker, including those another run is
writing, and two compactions both rewrite the last, still-filling compacted shard.

Conditional writes are what make it safe, so each kind of store brings its own:
- a local folder: a hard link of a fully written file to create (it fails when the lease exists; ``O_EXCL`` would
  show readers an empty file for a moment), and an ``flock`` around every read-compare-replace;
- S3 (and S3-compatible servers): ``PutObject`` with ``If-None-Match: *`` to create and ``If-Match: <etag>`` to
  renew or take over (S3's conditional writes; boto3 talks to it, with the same endpoint and credentials as the
  rest of the store).
A store with neither is refused with a clear error rather than written without a lease.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from schemas.store import DatasetLike, DatasetStore, StoreError

log = logging.getLogger("saven.lease")
LEASE_FILE = "_lease.json"
DEFAULT_TTL_S = 120.0
DEFAULT_RENEW_S = 30.0


class DatasetBusy(RuntimeError):
    """Another run holds the dataset's lease."""


class LeaseLost(RuntimeError):
    """This run's lease was taken over (it was not renewed in time): it must stop writing."""


class _Changed(Exception):
    """A conditional write found another version than the one it was based on."""


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # a fresh id per lease
    host: str
    pid: int
    command: str
    started_at: float
    renewed_at: float
    ttl_s: float

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return (f"pid {self.pid} on {self.host} ({self.command}), since {since}, renewed "
                f"{max(0.0, time.time() - self.renewed_at):.0f} s ago, expires after {self.ttl_s:.0f} s without "
                "renewal")

    def expired(self, now: float) -> bool:
        return now - self.renewed_at > self.ttl_s

    def process_gone(self) -> bool:
        """Its holder was a process of this machine that no longer runs (a run killed with -9)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class _Conditional(Protocol):
    def read(self) -> tuple[bytes, str] | None: ...
    def create(self, data: bytes) -> str: ...  # raises _Changed when the file exists
    def replace(self, data: bytes, etag: str) -> str: ...  # raises _Changed when it is no longer ``etag``
    def delete(self, etag: str) -> None: ...


class _LocalFile:
    """The lease as a local file; an flock on a sidecar file makes read-compare-replace one step."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LEASE_FILE
        self.lock_path = folder / f".{LEASE_FILE}.lock"

    @staticmethod
    def _etag(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def _locked(self):
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _unlock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data, self._etag(data)

    def create(self, data: bytes) -> str:
        # Written whole to a temporary file, then hard-linked into place (the link fails when the lease exists): a
        # reader never sees the lease file empty, as it could between an O_EXCL create and its write.
        fd = self._locked()
        tmp = self.path.with_name(f".{LEASE_FILE}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                raise _Changed() from None
            return self._etag(data)
        finally:
            tmp.unlink(missing_ok=True)
            self._unlock(fd)

    def replace(self, data: bytes, etag: str) -> str:
        fd = self._locked()
        try:
            current = self.read()
            if current is None or current[1] != etag:
                raise _Changed()
            tmp = self.path.with_name(f".{LEASE_FILE}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
            return self._etag(data)
        finally:
            self._unlock(fd)

    def delete(self, etag: str) -> None:
        fd = self._locked()
        try:
            current = self.read()
            if current is not None and current[1] == etag:
                self.path.unlink(missing_ok=True)
        finally:
            self._unlock(fd)


class _S3Object:
    """The lease as an S3 object, through S3's conditional writes."""

    def __init__(self, store: DatasetStore):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = store.root.partition("/")
        self.bucket, self.key = bucket, f"{prefix}/{LEASE_FILE}" if prefix else LEASE_FILE
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = boto3.client("s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 3}))

    def _code(self, exc: Exception) -> str:
        return getattr(exc, "response", {}).get("Error", {}).get("Code", "")

    def read(self) -> tuple[bytes, str] | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        return got["Body"].read(), got["ETag"]

    def _put(self, data: bytes, **condition: str) -> str:
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **condition)["ETag"]
        except self.client.exceptions.ClientError as exc:
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"):
                raise _Changed() from None
            raise

    def create(self, data: bytes) -> str:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, etag: str) -> str:
        return self._put(data, IfMatch=etag)

    def delete(self, etag: str) -> None:
        current = self.read()
        if current is not None and current[1] == etag:  # S3 deletes are not conditional: best effort
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


def _conditional(store: DatasetStore) -> _Conditional:
    if store.local:
        return _LocalFile(store.local_path())
    if type(store.fs).__name__ == "S3FileSystem":
        return _S3Object(store)
    raise StoreError(f"{store.uri}: no conditional write is known for this store, so no lease can keep a second "
                     "writer out; write the dataset on a local folder or S3")


class DatasetLease:
    """Hold ``dataset``'s lease: ``with DatasetLease(dataset, "saven build"):`` (raises ``DatasetBusy``)."""

    def __init__(self, dataset: DatasetLike, command: str, *, ttl_s: float = DEFAULT_TTL_S,
                 renew_every_s: float = DEFAULT_RENEW_S):
        if renew_every_s >= ttl_s:
            raise ValueError("the lease must be renewed more often than it expires")
        self.store = DatasetStore.of(dataset)
        self.command, self.ttl_s, self.renew_every_s = command, ttl_s, renew_every_s
        self.holder = uuid.uuid4().hex
        self._cond = _conditional(self.store)
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record: LeaseRecord | None = None

    def _mine(self, started_at: float) -> LeaseRecord:
        return LeaseRecord(holder=self.holder, host=socket.gethostname(), pid=os.getpid(), command=self.command,
                           started_at=started_at, renewed_at=time.time(), ttl_s=self.ttl_s)

    @staticmethod
    def _encode(record: LeaseRecord) -> bytes:
        return json.dumps(asdict(record), sort_keys=True).encode()

    def current(self) -> LeaseRecord | None:
        found = self._cond.read()
        return LeaseRecord(**json.loads(found[0])) if found else None

    def acquire(self) -> "DatasetLease":
        started = time.time()
        for _ in range(5):  # lost races retry; each round reads what is there now
            found = self._cond.read()
            mine = self._mine(started)
            try:
                if found is None:
                    self._etag = self._cond.create(self._encode(mine))
                else:
                    held = LeaseRecord(**json.loads(found[0]))
                    if not (held.expired(time.time()) or held.process_gone()):
                        raise DatasetBusy(f"{self.store.uri} is being written by another run: {held.describe()}. "
                                          "One writer at a time: wait for it, or stop it; a lease whose holder "
                                          "died is taken over once it expires.")
                    log.warning("taking over the lease of %s from %s", self.store.uri, held.describe())
                    self._etag = self._cond.replace(self._encode(mine), found[1])
            except _Changed:
                continue
            self._record = mine
            self._thread = threading.Thread(target=self._renew, name="dataset-lease", daemon=True)
            self._thread.start()
            return self
        raise DatasetBusy(f"{self.store.uri}: another run keeps taking the lease; try again")

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            try:
                record = self._mine(self._record.started_at)
                self._etag = self._cond.replace(self._encode(record), self._etag)
                self._record = record
            except _Changed:
                self._lost = f"the lease of {self.store.uri} was taken over by another run"
                log.error("%s: this run must stop writing", self._lost)
                return
            except Exception as exc:  # noqa: BLE001 — a passing store error: try again at the next renewal
                log.warning("could not renew the lease of %s: %r", self.store.uri, exc)

    def ensure(self) -> None:
        """Raise ``LeaseLost`` when another run has taken the lease (call before writing)."""
        if self._lost:
            raise LeaseLost(self._lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._etag is not None and not self._lost:
            try:
                self._cond.delete(self._etag)
            except Exception as exc:  # noqa: BLE001 — it expires by itself: a failed release only delays the next run
                log.warning("could not release the lease of %s: %r", self.store.uri, exc)
        self._etag = None

    def __enter__(self) -> "DatasetLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def command_line() -> str:
    """What this process is, for a lease's holder (the program and its verb, never arguments that may hold secrets)."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:2]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)
