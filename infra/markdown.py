"""Markdown for run reports and dataset cards: tables, and cells that hold text from videos and models as data."""

from __future__ import annotations

from collections import Counter


def escape_cell(text: object) -> str:
    """Labels come from models and OCR'd video text: data, never table syntax."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def top_counts(counts: Counter, n: int = 8) -> str:
    """The ``n`` most frequent labels with their counts, escaped ("Music (4), Speech (2)"), or "-"."""
    return ", ".join(f"{escape_cell(k)} ({v})" for k, v in counts.most_common(n)) or "-"
