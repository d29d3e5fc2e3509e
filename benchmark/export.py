"""Export a built AVBench as an lmms-eval task folder, so outside models are scored on the same items and rules.

``<dest>/avbench/`` gets: ``avbench.yaml`` (the kept set) and ``avbench_core.yaml`` (the core set), their docs
as JSONL, ``utils.py`` (the hooks) and a byte-identical copy of ``schemas/mcq.py`` (question text, answer letter).
Run with ``lmms-eval --tasks avbench --include_path <dest>/avbench ...``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmark.adapters import BenchContext
from benchmark.build import BuiltBench, is_kept

TASK_DIR = Path(__file__).resolve().parent / "lmms_eval_task"
MCQ_MODULE = Path(__file__).resolve().parents[1] / "schemas" / "mcq.py"
MCQ_COPY = "avbench_mcq.py"


def lmms_doc(item, video_path: str) -> dict:
    return {"item_id": item.item_id, "video_id": item.video_id, "video_path": video_path,
            "question": item.question, "options": list(item.options), "answer": item.answer_letter,
            "type": item.type.value, "kind": item.kind.value, "duration_s": item.duration_s,
            "start_s": item.start_s, "end_s": item.end_s, "core": item.core,
            "benchmark_version": item.benchmark_version}


def export_lmms_eval_task(bench: BuiltBench, context: BenchContext, dest: Path) -> Path:
    """Write the task folder; returns it. Video paths are absolute paths into the dataset folder."""
    from schemas.shards import write_bytes_atomic

    folder = Path(dest) / "avbench"
    folder.mkdir(parents=True, exist_ok=True)

    def video_path(video_id: str) -> str:
        video = context.video(video_id)
        if video is None or context.dataset_dir is None:
            return ""
        return str((context.dataset_dir / video.media_path).resolve())

    template = (TASK_DIR / "avbench.yaml").read_text()
    sets = {"avbench": [it for it in bench.items if is_kept(it)], "avbench_core": [it for it in bench.items if it.core]}
    for task, items in sets.items():
        docs = folder / f"{task}_docs.jsonl"
        lines = [json.dumps(lmms_doc(it, video_path(it.video_id)), sort_keys=True, ensure_ascii=False)
                 for it in items]
        write_bytes_atomic(docs, "".join(line + "\n" for line in lines).encode())
        text = template
        for key, value in (("__TASK__", task), ("__DOCS__", str(docs.resolve())),
                           ("__VERSION__", bench.manifest.version), ("__HASH__", bench.manifest.content_hash)):
            text = text.replace(key, json.dumps(value))  # a JSON string is a valid YAML scalar
        write_bytes_atomic(folder / f"{task}.yaml", text.encode())
    shutil.copyfile(TASK_DIR / "utils.py", folder / "utils.py")
    shutil.copyfile(MCQ_MODULE, folder / MCQ_COPY)
    return folder
