"""lmms-eval hooks for AVBench: media, prompt, target, per-sample grading and aggregation.

The question text and the letter extraction are not re-implemented here: an exported task folder holds a
byte-identical copy of ``schemas/mcq.py`` (as ``avbench_mcq.py``) and this file loads it by path, so an outside model
is asked and graded by exactly the rules ``make avbench`` uses. Inside the repository the module is used directly.

Media paths in the docs are relative to this folder (``media/<video_id>.mp4``, ``media/<video_id>.wav``), so the
folder can be copied anywhere; ``AVBENCH_MEDIA_DIR`` points at the media elsewhere (only the file name of a doc's
path is used there, so a doc cannot name a file outside that folder).

A request lmms-eval could not make (its API classes answer ``[LMMS_EVAL_REQUEST_FAILED ...]`` or
``[LMMS_EVAL_BUDGET_EXCEEDED]``) is not a model's answer: it counts in ``avbench_request_failure_rate`` and is left
out of accuracy and of the parse-failure rate, which are over the answered items.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

MEDIA_DIR_ENV = "AVBENCH_MEDIA_DIR"
REQUEST_FAILURE_MARKERS = ("[LMMS_EVAL_REQUEST_FAILED", "[LMMS_EVAL_BUDGET_EXCEEDED]")


def _load(copy_name: str, package_module: str) -> ModuleType:
    path = Path(__file__).with_name(f"{copy_name}.py")
    if not path.is_file():
        return importlib.import_module(package_module)
    spec = importlib.util.spec_from_file_location(f"_avbench_{copy_name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is being made
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_mcq = _load("avbench_mcq", "schemas.mcq")


def media_path(relative: str) -> str:
    """A doc's media path as an absolute path on this machine."""
    root = os.environ.get(MEDIA_DIR_ENV)
    path = Path(root) / Path(relative).name if root else Path(__file__).resolve().parent / relative
    return str(path.resolve())


def _video(doc: dict) -> str:
    if not doc.get("video"):
        raise FileNotFoundError(f"AVBench item {doc['item_id']}: the export has no video for {doc['video_id']} (its "
                                "media was missing when the task was exported); score it with avbench_blind")
    path = media_path(doc["video"])
    if not Path(path).is_file():
        raise FileNotFoundError(f"AVBench item {doc['item_id']}: {path} does not exist; copy the task folder with its "
                                f"media/ folder, or set {MEDIA_DIR_ENV} to the folder that holds {Path(path).name}")
    return path


def _audio_url(path: str, audio_as: str) -> str:
    if audio_as == "data_url":
        return "data:audio/wav;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
    if audio_as == "path":
        return path
    raise ValueError(f"audio_as must be 'path' or 'data_url', not {audio_as!r}")


def avbench_doc_to_visual(doc: dict) -> list[str]:
    """The simple (non-chat) classes get the MP4; those that read its sound track (qwen2_5_omni) hear it there."""
    return [_video(doc)]


def avbench_blind_doc_to_visual(doc: dict) -> list[str]:
    return []


def avbench_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{_mcq.mcq_text(doc['question'], doc['options'])}" \
           f"{kwargs.get('post_prompt', '')}"


def avbench_doc_to_messages(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list[dict]:
    """The chat classes' user turn: the video, its sound track as an audio block of its own (the omni chat classes
    set ``use_audio_in_video=False`` and would not hear the MP4's track), then the question."""
    kwargs = lmms_eval_specific_kwargs or {}
    content: list[dict] = [{"type": "video", "url": _video(doc)}]
    if doc.get("audio"):
        content.append({"type": "audio", "url": _audio_url(media_path(doc["audio"]), kwargs.get("audio_as", "path"))})
    content.append({"type": "text", "text": avbench_doc_to_text(doc, kwargs)})
    return [{"role": "user", "content": content}]


def avbench_blind_doc_to_messages(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list[dict]:
    """The question alone: how much a model gets from the text and its priors."""
    text = avbench_doc_to_text(doc, lmms_eval_specific_kwargs)
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def avbench_doc_to_target(doc: dict) -> str:
    return doc["answer"]


def is_request_failure(text: str) -> bool:
    return text.lstrip().startswith(REQUEST_FAILURE_MARKERS)


def avbench_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    raw = results[0] if results else ""
    failed = is_request_failure(raw)
    got = _mcq.extract("" if failed else raw, doc["options"])
    record = {"item_id": doc["item_id"], "type": doc["type"], "kind": doc["kind"], "core": doc.get("core", False),
              "answer": doc["answer"], "request_failed": failed, "parsed": None if failed else got.letter,
              "rule": "request_failed" if failed else got.rule,
              "correct": not failed and got.letter is not None and got.letter == doc["answer"]}
    return {"avbench_accuracy": record, "avbench_request_failure_rate": record, "avbench_parse_failure_rate": record}


def _answered(results: list[dict]) -> list[dict]:
    return [r for r in results if not r.get("request_failed")]


def avbench_aggregate_accuracy(results: list[dict]) -> float:
    """Percent of the answered samples whose extracted letter is the answer (an unparsable answer is wrong; a failed
    request is no answer). NaN when no request succeeded: an outage has no accuracy."""
    answered = _answered(results)
    return 100.0 * sum(r["correct"] for r in answered) / len(answered) if answered else float("nan")


def avbench_aggregate_request_failures(results: list[dict]) -> float:
    return 100.0 * sum(bool(r.get("request_failed")) for r in results) / len(results) if results else 0.0


def avbench_aggregate_parse_failures(results: list[dict]) -> float:
    answered = _answered(results)
    return 100.0 * sum(r["parsed"] is None for r in answered) / len(answered) if answered else float("nan")
