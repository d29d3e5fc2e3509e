"""lmms-eval hooks for AVBench: prompt, target, per-sample grading and aggregation.

The question text and the letter extraction are not re-implemented here: an exported task folder holds a
byte-identical copy of ``schemas/mcq.py`` (as ``avbench_mcq.py``) and this file loads it by path, so an outside model
is asked and graded by exactly the rules ``make avbench`` uses. Inside the repository the module is used directly.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


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


def avbench_doc_to_visual(doc: dict) -> list[str]:
    return [doc["video_path"]]


def avbench_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{_mcq.mcq_text(doc['question'], doc['options'])}" \
           f"{kwargs.get('post_prompt', '')}"


def avbench_doc_to_target(doc: dict) -> str:
    return doc["answer"]


def avbench_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    raw = results[0] if results else ""
    got = _mcq.extract(raw, doc["options"])
    record = {"item_id": doc["item_id"], "type": doc["type"], "kind": doc["kind"], "core": doc.get("core", False),
              "answer": doc["answer"], "parsed": got.letter, "rule": got.rule,
              "correct": got.letter is not None and got.letter == doc["answer"]}
    return {"avbench_accuracy": record, "avbench_parse_failure_rate": record}


def avbench_aggregate_accuracy(results: list[dict]) -> float:
    """Percent of samples whose extracted letter is the answer (an unparsable answer is wrong)."""
    return 100.0 * sum(r["correct"] for r in results) / len(results) if results else 0.0


def avbench_aggregate_parse_failures(results: list[dict]) -> float:
    return 100.0 * sum(r["parsed"] is None for r in results) / len(results) if results else 0.0
