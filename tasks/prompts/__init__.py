"""Versioned prompt templates (``<name>.v<N>.md`` beside this file) and their rendering.

A template file holds sections introduced by a line ``## <section>``: ``system`` and ``user`` become chat messages;
other sections (e.g. ``task:temporal_grounding``) are text blocks a stage slots into the user message. Text before
the first section is a header for people and is never sent. Placeholders use ``string.Template`` (``$name``) so the
JSON in a prompt needs no brace escaping; a missing variable raises instead of rendering a hole.

Changing the wording of a sent prompt means a new version file: cached LLM replies are keyed by the rendered text,
and the snapshot tests pin what each version renders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any

PROMPT_DIR = Path(__file__).resolve().parent
_SECTION_RE = re.compile(r"^## (\S+)[ \t]*$", re.MULTILINE)
# Characters that could end a delimited data block or a markdown fence if they appeared raw inside it.
_DATA_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "`": "\\u0060"}


@dataclass(frozen=True)
class PromptTemplate:
    name: str  # e.g. "fuse.v1"
    sections: dict[str, str]

    def section(self, key: str, **variables: Any) -> str:
        if key not in self.sections:
            raise KeyError(f"prompt {self.name} has no section {key!r}; it has {sorted(self.sections)}")
        return Template(self.sections[key]).substitute(variables)

    def messages(self, **variables: Any) -> list[dict[str, str]]:
        """The chat messages: ``system`` (if present) then ``user``, both rendered with ``variables``."""
        out = []
        if "system" in self.sections:
            out.append({"role": "system", "content": self.section("system", **variables)})
        out.append({"role": "user", "content": self.section("user", **variables)})
        return out


@lru_cache(maxsize=None)
def load_prompt(name: str) -> PromptTemplate:
    """``load_prompt("fuse.v1")`` reads ``fuse.v1.md``."""
    if not re.fullmatch(r"[a-z_]+\.v[0-9]+", name):
        raise ValueError(f"prompt names look like 'fuse.v1', got {name!r}")
    path = PROMPT_DIR / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {path}")
    text = path.read_text(encoding="utf-8")
    parts = _SECTION_RE.split(text)
    # parts = [header, key1, body1, key2, body2, ...]
    sections = {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts), 2)}
    if "user" not in sections:
        raise ValueError(f"prompt {name} has no '## user' section")
    return PromptTemplate(name=name, sections=sections)


def quote_data(value: Any) -> str:
    """``value`` as JSON safe to put between data delimiters in a prompt.

    Transcripts and on-screen text come from the video and may contain anything, including text posing as
    instructions or a fake closing delimiter. JSON quoting keeps them inside string literals, and escaping
    ``<``, ``>`` and backticks (valid JSON escapes) makes it impossible for data to close the block it sits in.
    A list renders one element per line so a small model can follow the timeline.
    """
    if isinstance(value, list):
        body = "[\n" + ",\n".join(json.dumps(v, ensure_ascii=False) for v in value) + "\n]"
    else:
        body = json.dumps(value, ensure_ascii=False)
    for raw, escaped in _DATA_ESCAPES.items():
        body = body.replace(raw, escaped)
    return body
