"""Training on several processes as on several GPUs: `torchrun --nproc_per_node=2` on CPU (gloo), the tiny preset
over real media. Both ranks finish both stages (only rank 0 writes, every rank gets its checkpoint), the feature
step is shared between the ranks (no rank waits for another to encode every video), the checkpoint loads, and a
run stopped half way resumes where it stopped. What it cannot show: NCCL, GPU memory, speed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devdata.model_sample import BUNNY, CHAPLIN, build_sample_dataset
from model.config import preset_config
from model.features import features_path
from model.generate import SavenVidPredictor
from model.train import METRICS_FILE

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def torchrun(dataset: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SAVEN_BARRIER_TIMEOUT_MIN": "10"}
    return subprocess.run([str(exe), "--standalone", "--nproc_per_node=2", "-m", "model.train", str(dataset),
                           str(out), "--preset", "tiny", "--stage", "both", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


def steps(folder: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (folder / METRICS_FILE).read_text().splitlines()]


def test_two_ranks_finish_both_stages_and_a_stopped_run_resumes(tmp_path, shared_media):
    dataset = build_sample_dataset(tmp_path / "ds", shared_media)
    out = tmp_path / "out"
    first = torchrun(dataset, out, "--steps", "4", "--stop-at", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # the feature step ran on both ranks, one video each, and every video has its features
    assert all(features_path(dataset, "tiny", v).is_file() for v in (BUNNY, CHAPLIN))
    assert "feature step" not in first.stdout  # no video failed
    printed = [line for line in first.stdout.splitlines() if line.startswith(str(out))]
    assert printed == [str(out / "stage2" / "checkpoint-000002")]  # rank 0 prints the path, once
    assert steps(out / "stage1") == [0, 1] and steps(out / "stage2") == [0, 1]

    again = torchrun(dataset, out, "--steps", "4")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from" in again.stdout
    assert steps(out / "stage1") == [0, 1, 2, 3] and steps(out / "stage2") == [0, 1, 2, 3]
    last = out / "stage2" / "checkpoint-000004"
    assert last.is_dir() and not list(out.rglob("*.pt")) and not list(out.rglob("*.bin"))
    predictor = SavenVidPredictor.from_checkpoint(last, device="cpu")
    assert predictor.config.preset == preset_config("tiny").preset
    shutil.rmtree(out)
