"""Where a dataset lives: a local folder or an object-store prefix (``s3://bucket/prefix``, ``gs://...``), one API.

Every writer of the dataset (shards, commit markers, dead letters, the manifest, the card, a video's files) goes
through a ``DatasetStore``, so the same guarantees hold on both:

- **A reader never sees a partial file.** Locally a file is written to a hidden temp file, fsynced and renamed
  over the target; on an object store a single PUT is atomic by the protocol (the object appears whole or not at
  all), so the object is written straight to its final key.
- **Order is the commit.** A video's shards land before its marker, so a marker means a whole video. Neither
  rename nor PUT order across keys is visible to readers out of order once each call has returned.

The file system is pyarrow's (``pyarrow.fs.FileSystem.from_uri``): local paths, ``s3://`` (credentials from the
environment or the instance role, never from files of ours; ``AWS_ENDPOINT_URL`` for an S3-compatible server),
``gs://``, ``hdfs://`` and whatever else Arrow was built with. Relative names inside the store are
``/``-separated, like keys.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import pyarrow.fs as pafs


# The object-store clients' settings that are no secret: a run forwards them to the Ray workers and jobs it starts.
# Ray shows a job's runtime environment in plain text (its dashboard, `ray job list`, the Jobs API), so the keys
# themselves (``SECRET_ENV``) never travel that way: a cluster's nodes get them from an instance role, a credentials
# file (``AWS_SHARED_CREDENTIALS_FILE``, a path), or the environment their `ray start` ran in; a local Ray's
# workers inherit them from the process that started it.
STORE_CLIENT_ENV = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
                    "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "GOOGLE_APPLICATION_CREDENTIALS")
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class StoreError(RuntimeError):
    """The dataset location cannot be used (unknown scheme, unreachable, refused)."""


def is_remote(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


@dataclass(frozen=True)
class DatasetStore:
    fs: pafs.FileSystem
    root: str  # the file system's path of the dataset root, no trailing "/"
    uri: str  # what the user gave (a path or a URL), for messages

    @classmethod
    def of(cls, location: "DatasetLike") -> "DatasetStore":
        if isinstance(location, DatasetStore):
            return location
        text = str(location)
        if not is_remote(text):
            path = Path(text.removeprefix("file://")).expanduser().resolve()
            return cls(pafs.LocalFileSystem(), path.as_posix(), str(path))
        try:
            fs, root = pafs.FileSystem.from_uri(text)
        except (ValueError, OSError) as exc:
            raise StoreError(f"cannot open dataset location {text!r}: {exc}") from exc
        return cls(fs, root.rstrip("/"), text.rstrip("/"))

    # -- names -------------------------------------------------------------------------------------------------

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, rel: str = "") -> str:
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def local_path(self, rel: str = "") -> Path:
        """The local file of ``rel``; only for a local store (a remote one has no path on this machine)."""
        if not self.local:
            raise StoreError(f"{self.uri} is not a local folder; {rel!r} has no path on this machine")
        return Path(self.path(rel))

    def url(self, rel: str = "") -> str:
        rel = rel.strip("/")
        return f"{self.uri}/{rel}" if rel else self.uri

    def __str__(self) -> str:
        return self.uri

    # -- reading -----------------------------------------------------------------------------------------------

    def info(self, rel: str) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path(rel))

    def exists(self, rel: str) -> bool:
        return self.info(rel).type == pafs.FileType.File

    def is_dir(self, rel: str) -> bool:
        return self.info(rel).type == pafs.FileType.Directory

    def size(self, rel: str) -> int:
        info = self.info(rel)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(self.url(rel))
        return int(info.size)

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if self.info(rel).type == pafs.FileType.NotFound:
                raise FileNotFoundError(self.url(rel)) from exc
            raise

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def open_input_file(self, rel: str):
        """A random-access file (what ``pyarrow.parquet`` reads footers from)."""
        return self.fs.open_input_file(self.path(rel))

    def list_files(self, rel: str = "", *, prefix: str = "", suffix: str = "") -> list[str]:
        """Names of the files directly in folder ``rel`` (not hidden, not temp), sorted."""
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=False)
        names = [Path(i.path).name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]
        return sorted(n for n in names if not n.startswith(".") and n.startswith(prefix) and n.endswith(suffix))

    def list_infos(self, rel: str = "", *, prefix: str = "", suffix: str = "") -> list[tuple[str, int, int]]:
        """(name, bytes, mtime in ns) of the files directly in folder ``rel`` (not hidden), sorted by name: one
        listing, no request per file (an object store returns size and time with its listing)."""
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=False)
        out = []
        for i in self.fs.get_file_info(selector):
            name = Path(i.path).name
            if i.type == pafs.FileType.File and not name.startswith(".") and name.startswith(prefix) \
                    and name.endswith(suffix):
                out.append((name, int(i.size), int(i.mtime_ns or 0)))
        return sorted(out)

    def list_dirs(self, rel: str = "") -> list[str]:
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=False)
        return sorted(Path(i.path).name for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.Directory)

    # -- writing -----------------------------------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data`` so that a reader sees the old file or the new one, never a part."""
        if self.local:
            _write_local_atomic(Path(self.path(rel)), data)
            return
        with self.fs.open_output_stream(self.path(rel)) as f:  # one PUT (multipart under the hood: still atomic)
            f.write(data)

    def put_file(self, local: Path, rel: str, *, move: bool = False) -> None:
        """Copy (or, locally, move) the file ``local`` to ``rel``, atomically as ``write_bytes``."""
        local = Path(local)
        if self.local:
            target = Path(self.path(rel))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                if move:
                    shutil.move(str(local), tmp)  # a rename when scratch and dataset share a file system
                else:
                    shutil.copyfile(local, tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(target.parent)
            return
        pafs.copy_files(local.as_posix(), self.path(rel), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        if move:
            local.unlink(missing_ok=True)

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError:
            if self.info(rel).type != pafs.FileType.NotFound:
                raise

    def delete_dir(self, rel: str) -> None:
        if self.info(rel).type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))

    def make_dirs(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of a local file, read in blocks (a 4 GB video never sits in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_local_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


DatasetLike = Union[str, Path, DatasetStore]
