"""Bounding prose that an LLM wrote: cut it, instead of rejecting the whole reply.

The JSON-schema grammar carries no length bound (``infra.llm_client.strict_json_schema``: xgrammar takes seconds
to compile one), so a small model overruns a bound now and then, and each rejected reply costs the CPU server
minutes. Prose survives a cut: at the last sentence end when there is one in the second half, else at a word.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def cut_at_word(text: str, max_chars: int, mark: str = "…") -> str:
    """``text`` shortened to at most ``max_chars`` at a word boundary, ending with ``mark`` when cut."""
    if not isinstance(text, str) or len(text) <= max_chars:
        return text
    head = text[:max_chars - len(mark)]
    return (head.rsplit(" ", 1)[0] if " " in head else head).rstrip(" ,;:") + mark


def cut_at_sentence(text: str, max_chars: int) -> str:
    """``text`` shortened to its whole sentences that fit ``max_chars``, or cut at a word when none fits well."""
    if not isinstance(text, str) or len(text) <= max_chars:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text[:max_chars + 1]) if m.end() <= max_chars]
    if ends and ends[-1] >= max_chars // 2:
        return text[:ends[-1]]
    return cut_at_word(text, max_chars)
