"""What the whole-flow tests share: a generated video with known cuts, a build killed with SIGKILL right after its
first commit, a dataset's content for comparing two runs, and the LLM server's prompt-token counter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from flows.progress import metrics_url_of
from schemas.commit import committed
from schemas.records import VIDEO_TABLES
from schemas.shards import read_table

VOLATILE = {"acquired_at", "failed_at", "committed_at"}  # timestamps: a resumed run's differ
SCENES = ["testsrc2=s=320x240:r=25:d=6", "smptebars=s=320x240:r=25:d=6", "cellauto=s=320x240:r=25:rule=110"]
SOUNDS = ["sine=f=440:r=44100", "anoisesrc=r=44100:a=0.3", "sine=f=880:r=44100"]


def scene_video(path: Path, scenes: int = 2) -> None:
    """6 s per scene with hard cuts between them (test pattern, colour bars, cellular automaton), each with its
    own sound (a 440 Hz tone, noise, an 880 Hz tone)."""
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    for src in SCENES[:scenes] + SOUNDS[:scenes]:
        args += ["-f", "lavfi", "-t", "6", "-i", src]
    video = "".join(f"[{i}:v]" for i in range(scenes))
    audio = "".join(f"[{scenes + i}:a]" for i in range(scenes))
    graph = f"{video}concat=n={scenes}:v=1:a=0,format=yuv420p[v];{audio}concat=n={scenes}:v=0:a=1[a]"
    args += ["-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast",
             "-c:a", "aac", str(path)]
    subprocess.run(args, check=True)


def dataset_content(dataset) -> dict[str, set[str]]:
    """Every table's rows as canonical JSON, timestamps left out: equal for two runs that made the same dataset;
    a row written twice fails."""
    out = {}
    for table in VIDEO_TABLES:
        keys = [json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True, default=str)
                for r in read_table(dataset, table).to_pylist()]
        assert len(keys) == len(set(keys)), f"duplicate row in {table}"
        out[table] = set(keys)
    return out


def prompt_tokens(base_url: str) -> float:
    """The prompt tokens a vLLM server has processed since it started (its Prometheus counter)."""
    text = httpx.get(metrics_url_of(base_url), timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:prompt_tokens_total"))


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


def killed_run_resumes_to_the_same_dataset(first: str, again: str, cmd: list[str], env: dict[str, str],
                                           llm_base_url: str, cwd: str | Path) -> None:
    """``cmd`` builds ``again`` (an object-store prefix) from the sources ``first`` was built from. It starts with
    ``first``'s LLM cache shards only, is killed with SIGKILL after its first commit, and is run again: the resumed
    dataset equals ``first`` by content and verifies, and the LLM server was asked nothing (every reply, including
    a recorded failure, came from the bucket)."""
    from flows.llm_cache import SHARD_DIR
    from schemas.manifest import verify_manifest
    from schemas.store import DatasetStore

    source, target = DatasetStore.of(first), DatasetStore.of(again)
    for name in source.list_files(SHARD_DIR, suffix=".parquet"):
        target.write_bytes(f"{SHARD_DIR}/{name}", source.read_bytes(f"{SHARD_DIR}/{name}"))
    tokens = prompt_tokens(llm_base_url)
    sigkill_after_first_commit(cmd, env, again, cwd=cwd)
    assert len(committed(again)) == 1
    resumed = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert len(committed(again)) == len(committed(first))
    assert dataset_content(again) == dataset_content(first)
    assert verify_manifest(again) == []
    assert prompt_tokens(llm_base_url) == tokens
