"""A real two-node Ray cluster on this machine for the job tests (``conftest.two_node_cluster``)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

DASHBOARD_PORT = 8297


@dataclass(frozen=True)
class TwoNodes:
    dashboard: str  # the job API, e.g. http://127.0.0.1:8297
    address: str  # the GCS address a driver connects to (RAY_ADDRESS)


def submit_when_agent_ready(args: list[str], timeout_s: float = 180.0) -> subprocess.CompletedProcess:
    """The dashboard answers before its job agent registers ("No available agent"): retry until it takes the job."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc = subprocess.run(args, text=True, capture_output=True, timeout=1800)
        if "No available agent" not in proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(3)
