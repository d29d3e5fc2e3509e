"""Where text from a video may appear in what is sent to the LLM: only inside JSON string literals of the user
message, never in the system message, and never able to close the data block it sits in."""

from __future__ import annotations

import json
import re

INJECTION_RE = re.compile(r"ignore\W+(?:all\W+)?previous\W+instructions|banana", re.IGNORECASE)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
BLOCK_TAGS = ("clip_data", "timeline", "target")


def quoting_problems(messages: list[dict[str, str]], pattern: re.Pattern[str] = INJECTION_RE) -> list[str]:
    """Every way ``pattern``'s matches break the rule above (empty: the text was sent as quoted data only)."""
    problems = []
    for m in messages:
        content = m.get("content") or ""
        hits = list(pattern.finditer(content))
        if m.get("role") != "user":
            problems += [f"{m.get('role')} message contains {h.group(0)!r}" for h in hits]
            continue
        literals = [(s.start(), s.end()) for s in _JSON_STRING.finditer(content)]
        for h in hits:
            inside = next(((a, b) for a, b in literals if a < h.start() and h.end() < b), None)
            if inside is None:
                problems.append(f"{h.group(0)!r} at {h.start()} is not inside a JSON string")
                continue
            try:
                json.loads(content[inside[0]:inside[1]])
            except ValueError:
                problems.append(f"{h.group(0)!r} sits in a malformed JSON string")
        for tag in BLOCK_TAGS:
            opened, closed = content.count(f"<{tag}>"), content.count(f"</{tag}>")
            if opened != closed or opened > 1 and tag != "target":
                problems.append(f"<{tag}> opened {opened} times, closed {closed} times")
        for block in re.findall(r"<(?:clip_data|timeline|target)>\n(.*?)\n</", content, re.DOTALL):
            try:
                json.loads(block)
            except ValueError:
                problems.append("a data block is not JSON")
    return problems
