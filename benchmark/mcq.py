"""How an AVBench question is put to a model, and how its options rotate for circular evaluation.

Stdlib only on purpose: the lmms-eval export copies this file beside its ``utils.py`` so outside harnesses ask
exactly the same question text as our adapters do.
"""

from __future__ import annotations

from typing import Sequence

LETTERS = ("A", "B", "C", "D")
INSTRUCTION = "Answer with the option's letter (A, B, C or D)."


def format_options(options: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {' '.join(o.split())}" for i, o in enumerate(options))


def mcq_text(question: str, options: Sequence[str], instruction: str = INSTRUCTION) -> str:
    """The question, its lettered options, and the answer instruction: the text every adapter asks."""
    if len(options) != 4:
        raise ValueError(f"an AVBench question has 4 options, not {len(options)}")
    parts = [f"Question: {' '.join(question.split())}", format_options(options)]
    if instruction:
        parts.append(instruction)
    return "\n".join(parts)


def rotate_options(options: Sequence[str], answer_index: int, k: int) -> tuple[list[str], int]:
    """Options shifted left by ``k`` (rotation k shows option k first) and where the correct one lands."""
    k %= len(options)
    return list(options[k:]) + list(options[:k]), (answer_index - k) % len(options)
