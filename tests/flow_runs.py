"""A build-dataset process killed with SIGKILL right after its first commit: what the kill -9 and resume tests do."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from schemas.commit import committed


def sigkill_after_first_commit(cmd: list[str], env: dict[str, str], dataset: str | Path,
                               cwd: str | Path | None = None, timeout_s: float = 900) -> None:
    """Run ``cmd`` (a build writing ``dataset``) in its own process group and SIGKILL the group as soon as the
    first video is committed; fails when no video commits in ``timeout_s``."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not committed(dataset) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert committed(dataset), "the run never committed a video"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
