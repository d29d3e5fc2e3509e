"""`saven avbench` scores the checkpoint the user trained last, whether `make train` or `make demo` wrote it."""

from __future__ import annotations

import os
from pathlib import Path

from flows.cli import _newest_checkpoint
from model.train import STATE_FILE


def _checkpoint(train_dir: Path, stage: str, step: int, mtime: float) -> Path:
    folder = train_dir / stage / f"checkpoint-{step:06d}"
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text("{}")
    os.utime(folder, (mtime, mtime))
    return folder


def test_newest_checkpoint_across_train_folders(tmp_path: Path):
    train, demo = tmp_path / "train", tmp_path / "demo" / "train"
    assert _newest_checkpoint(train, demo) is None
    demo2 = _checkpoint(demo, "stage2", 12, 2000)
    _checkpoint(demo, "stage1", 40, 3000)  # an earlier stage never wins over stage 2 of the same run
    assert _newest_checkpoint(train, demo) == demo2
    newer = _checkpoint(train, "stage1", 5, 4000)
    assert _newest_checkpoint(train, demo) == newer
    (train / "stage1" / "checkpoint-000006").mkdir()  # no state file: an unfinished save, ignored
    assert _newest_checkpoint(train, demo) == newer
