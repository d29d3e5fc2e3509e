"""Export a built AVBench as an lmms-eval task folder that travels, so outside models are scored on the same items
and rules.

``<dest>/avbench/`` gets three tasks over the same docs format: ``avbench`` (the kept set) and ``avbench_core`` (the
core set), whose chat prompt carries the video and its sound track, and ``avbench_blind`` (the kept set, the question
alone); their docs as JSONL; ``media/`` (each benchmark video as H.264/AAC MP4 and its sound as 16 kHz WAV, named by
video id); ``utils.py`` (the hooks); a byte-identical copy of ``schemas/mcq.py`` (question text, answer letter); and
``export.json`` (what was exported, and any video whose media was missing). Every path inside is relative to the
folder, so it can be copied to another machine as is. Run with
``lmms-eval --tasks avbench --include_path <dest>/avbench ...``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchmark.context import BenchContext
from benchmark.build import BuiltBench, is_kept
import ffmpeg

from benchmark.export_media import ExportMediaError, ExportedMedia, export_video_media

log = logging.getLogger(__name__)

TASK_DIR = Path(__file__).resolve().parent / "lmms_eval_task"
MCQ_MODULE = Path(__file__).resolve().parents[1] / "schemas" / "mcq.py"
MCQ_COPY = "avbench_mcq.py"
MEDIA_FOLDER = "media"


@dataclass(frozen=True)
class TaskVariant:
    """One exported lmms-eval task: which items, and which hooks build its prompt."""
    name: str
    subset: str  # "kept" or "core"
    doc_to_visual: str
    doc_to_messages: str


VARIANTS = (
    TaskVariant("avbench", "kept", "avbench_doc_to_visual", "avbench_doc_to_messages"),
    TaskVariant("avbench_core", "core", "avbench_doc_to_visual", "avbench_doc_to_messages"),
    TaskVariant("avbench_blind", "kept", "avbench_blind_doc_to_visual", "avbench_blind_doc_to_messages"),
)


def lmms_doc(item, media: ExportedMedia | None) -> dict:
    return {"item_id": item.item_id, "video_id": item.video_id,
            "video": media.video if media else None, "audio": media.audio if media else None,
            "question": item.question, "options": list(item.options), "answer": item.answer_letter,
            "type": item.type.value, "kind": item.kind.value, "duration_s": item.duration_s,
            "start_s": item.start_s, "end_s": item.end_s, "core": item.core,
            "benchmark_version": item.benchmark_version}


def export_media(video_ids: list[str], context: BenchContext, folder: Path, *, link: bool = False
                 ) -> tuple[dict[str, ExportedMedia], dict[str, str]]:
    """Each video's exported media, and the reason for each video that has none (missing or unreadable source)."""
    exported: dict[str, ExportedMedia] = {}
    missing: dict[str, str] = {}
    for video_id in video_ids:
        video = context.video(video_id)
        source = (context.dataset_dir / video.media_path) if video is not None and context.dataset_dir else None
        if source is None or not source.is_file():
            missing[video_id] = "no video record" if video is None else f"media file missing: {video.media_path}"
            continue
        try:
            exported[video_id] = export_video_media(source, folder / MEDIA_FOLDER, video_id,
                                                    has_audio=video.has_audio, link=link)
        except (ExportMediaError, ffmpeg.Error, OSError) as exc:  # one bad file must not cost the others theirs
            missing[video_id] = f"{type(exc).__name__}: {exc}"
    if missing:
        log.warning("lmms-eval export: %d of %d videos have no media (%s); only avbench_blind can score their items",
                    len(missing), len(video_ids), "; ".join(f"{k}: {v}" for k, v in missing.items()))
    return exported, missing


def export_lmms_eval_task(bench: BuiltBench, context: BenchContext, dest: Path, *, link_media: bool = False) -> Path:
    """Write the task folder; returns it."""
    from schemas.shards import write_bytes_atomic

    folder = Path(dest) / "avbench"
    folder.mkdir(parents=True, exist_ok=True)
    subsets = {"kept": [it for it in bench.items if is_kept(it)], "core": [it for it in bench.items if it.core]}
    video_ids = sorted({it.video_id for items in subsets.values() for it in items})
    media, missing = export_media(video_ids, context, folder, link=link_media)
    for stale in (folder / MEDIA_FOLDER).glob("*") if (folder / MEDIA_FOLDER).is_dir() else ():
        if stale.stem not in media:  # a video no longer in the benchmark (or a partial file of a killed export)
            stale.unlink()

    template = (TASK_DIR / "avbench.yaml").read_text()
    for variant in VARIANTS:
        docs = f"{variant.subset}_docs.jsonl"
        text = template.replace("__DOC_TO_VISUAL__", variant.doc_to_visual).replace(
            "__DOC_TO_MESSAGES__", variant.doc_to_messages)
        for key, value in (("__TASK__", variant.name), ("__DOCS__", docs), ("__VERSION__", bench.manifest.version),
                           ("__HASH__", bench.manifest.content_hash)):
            text = text.replace(key, json.dumps(value))  # a JSON string is a valid YAML scalar
        write_bytes_atomic(folder / f"{variant.name}.yaml", text.encode())
    for subset, items in subsets.items():
        lines = [json.dumps(lmms_doc(it, media.get(it.video_id)), sort_keys=True, ensure_ascii=False) for it in items]
        write_bytes_atomic(folder / f"{subset}_docs.jsonl", "".join(line + "\n" for line in lines).encode())
    for stale in ("avbench_docs.jsonl", "avbench_core_docs.jsonl"):  # the names before the docs were shared
        (folder / stale).unlink(missing_ok=True)
    shutil.copyfile(TASK_DIR / "utils.py", folder / "utils.py")
    shutil.copyfile(MCQ_MODULE, folder / MCQ_COPY)
    summary = {"benchmark_version": bench.manifest.version, "content_hash": bench.manifest.content_hash,
               "tasks": {v.name: len(subsets[v.subset]) for v in VARIANTS},
               "videos": len(video_ids), "media": dict(Counter(m.how for m in media.values())),
               "videos_without_media": missing}
    write_bytes_atomic(folder / "export.json", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return folder


def export_note(folder: Path) -> str:
    """One line on an export's media, from its export.json."""
    summary = json.loads((folder / "export.json").read_text())
    media = ", ".join(f"{n} {how}" for how, n in sorted(summary["media"].items())) or "none"
    missing = len(summary["videos_without_media"])
    return f"{summary['videos']} videos; media {media}" + (f"; {missing} without media" if missing else "")
