"""The multiple-choice protocol of AVBench and the training data: how a question is put to a model, how its options
rotate for circular evaluation, and how one answer letter is read back from a model's raw text.

Stdlib only on purpose: an lmms-eval export copies this file beside its ``utils.py`` (as ``avbench_mcq.py``), so
outside harnesses ask exactly the same question text and score with exactly the same rules as ``make avbench``.

Reading the letter: ranked patterns; an ambiguous or empty answer gets no letter.

Rules, highest rank first; the first rule that matches decides, and if it finds two different letters the
answer is ambiguous (no letter: scored wrong and counted, never defaulted to A):

1. ``option_exact``  the whole answer is one option's text ("The dog barks.")
2. ``bare``          the whole answer is a letter: "C", "c)", "(B)", "D.", "**A**"
3. ``explicit``      "The answer is (C).", "Answer: C", "the correct option is b" ("answer is B or C": ambiguous;
                     a lower-case "a" here is the article: "the answer is a dog" is not A)
4. ``paren``         a letter in parentheses anywhere: "... so (C)"
5. ``leading``       the answer starts with a labelled letter: "C. The dog barks", "b) ..."
6. ``lone``          standalone capital letters: "I pick B" (the article "A man ..." is not a letter)
7. ``option_text``   the answer contains exactly one option's text
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


# -- the answer's letter ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extraction:
    letter: str | None  # "A".."D", or None when unparsable
    rule: str  # the rule that decided, "ambiguous:<rule>", "empty" or "no_match"


_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
_WRAPPERS = " \t\r\n*_`'\""
_BARE = re.compile(r"[(\[]?\s*([A-Da-d])\s*[)\].:]?")
_EXPLICIT = re.compile(
    r"\b(?i:answer|option|choice)\s*(?i:is|would\s+be|should\s+be|must\s+be|[:=])\s*(?i:option\s+|letter\s+)?"
    r"[(\[]?([A-Db-d])(?![A-Za-z0-9'-])[)\]]?"
    r"(\s*(?i:or|and|/|,)\s*(?i:option\s+)?[(\[]?[A-D](?![A-Za-z0-9'-]))?")
_PAREN = re.compile(r"\(([A-Da-d])\)")
_LEADING = re.compile(r"([A-D])\s*[.:)](?:\s|$)|([a-d])\)(?:\s|$)")
_LONE = re.compile(r"(?<![A-Za-z0-9'\-])([A-D])(?![A-Za-z0-9'\-])")
# "A" followed by a lower-case word is the article, unless that word is one that talks about an option.
_ARTICLE_EXCEPTIONS = frozenset("is or and seems looks fits matches would should because since as but was".split())
_NORMALISE = re.compile(r"[^\w:.]+")


def normalise_text(text: str) -> str:
    """Case-folded words (timestamps kept whole), single-spaced, without trailing sentence dots."""
    return " ".join(_NORMALISE.sub(" ", text.casefold()).split()).strip(" .")


def _clean(answer: str) -> str:
    text = _THINK.sub(" ", answer or "")
    return text.strip(_WRAPPERS)


def _decide(letters: list[str], rule: str) -> Extraction | None:
    distinct = sorted({x.upper() for x in letters})
    if not distinct:
        return None
    if len(distinct) > 1:
        return Extraction(None, f"ambiguous:{rule}")
    return Extraction(distinct[0], rule)


def _lone_letters(text: str) -> list[str]:
    found = []
    for m in _LONE.finditer(text):
        if m.group(1) == "A":
            after = re.match(r"\s+([a-z][a-z'-]*)", text[m.end():])
            if after and after.group(1) not in _ARTICLE_EXCEPTIONS:
                continue
        found.append(m.group(1))
    return found


def _option_letters(text: str, options: Sequence[str]) -> list[str]:
    """Letters of options whose text the answer contains; a contained option inside a longer one yields the longer."""
    haystack = f" {normalise_text(text)} "
    found = [(i, norm) for i, norm in enumerate(normalise_text(o) for o in options)
             if norm and f" {norm} " in haystack]
    kept = [i for i, norm in found if not any(norm != other and norm in other for _, other in found)]
    return [LETTERS[i] for i in kept]


def extract(answer: str | None, options: Sequence[str] = ()) -> Extraction:
    """The letter ``answer`` chooses among ``options`` (their texts are used by the option rules only)."""
    text = _clean(answer or "")
    if not text:
        return Extraction(None, "empty")
    norm = normalise_text(text)
    exact = [LETTERS[i] for i, o in enumerate(options[:4]) if norm and normalise_text(o) == norm]
    if len(exact) == 1:
        return Extraction(exact[0], "option_exact")
    bare = _BARE.fullmatch(text)
    if bare:
        return Extraction(bare.group(1).upper(), "bare")
    explicit = list(_EXPLICIT.finditer(text))
    if explicit:
        if any(m.group(2) for m in explicit):
            return Extraction(None, "ambiguous:explicit")
        return _decide([m.group(1) for m in explicit], "explicit")  # type: ignore[return-value]
    for rule, letters in (("paren", lambda: [m.group(1) for m in _PAREN.finditer(text)]),
                          ("leading", lambda: [next(g for g in m.groups() if g) for m in [_LEADING.match(text)] if m]),
                          ("lone", lambda: _lone_letters(text)),
                          ("option_text", lambda: _option_letters(text, options[:4]))):
        decided = _decide(letters(), rule)
        if decided is not None:
            return decided
    return Extraction(None, "no_match")


def extract_letter(answer: str | None, options: Sequence[str] = ()) -> str | None:
    return extract(answer, options).letter
