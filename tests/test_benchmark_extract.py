"""Letter extraction on a fixed table of answers: ranked rules, ambiguity and emptiness are failures, never A."""

from __future__ import annotations

import pytest

from schemas import mcq
from schemas.mcq import extract, extract_letter
from schemas.records import LETTERS

OPTIONS = ["A dog barks at the mailman.", "Rain falls on a tin roof.", "A choir sings in a church.",
           "From 00:00:05.000 to 00:00:09.000"]

TABLE = [
    # (raw answer, expected letter, expected rule)
    ("The answer is (C).", "C", "explicit"),
    ("C", "C", "bare"),
    ("c)", "C", "bare"),
    ("(B)", "B", "bare"),
    ("D.", "D", "bare"),
    ("**A**", "A", "bare"),
    ("Answer: D", "D", "explicit"),
    ("The correct option is b", "B", "explicit"),
    ("I think B or C", None, "ambiguous:lone"),
    ("The answer is B or C.", None, "ambiguous:explicit"),
    ("(A) or maybe (B)", None, "ambiguous:paren"),
    ("Looking at the sounds, I'd go with (D)", "D", "paren"),
    ("B. Rain falls on a tin roof", "B", "leading"),
    ("b) the rain", "B", "leading"),
    ("I would pick D because of the sound.", "D", "lone"),
    ("Rain falls on a tin roof.", "B", "option_exact"),
    ("a choir sings in a church", "C", "option_exact"),
    ("From 00:00:05.000 to 00:00:09.000", "D", "option_exact"),
    ("Clearly the scene where a choir sings in a church, with its echo", "C", "option_text"),
    ("<think>maybe A, maybe B</think>C", "C", "bare"),
    ("", None, "empty"),
    ("   \n ", None, "empty"),
    ("A man walks past.", None, "no_match"),  # the article, not option A
    ("The answer is a dog.", None, "no_match"),
    ("None of the options fit.", None, "no_match"),
    ("D-Day footage", None, "no_match"),
]


@pytest.mark.parametrize("raw,letter,rule", TABLE)
def test_extraction_table(raw, letter, rule):
    got = extract(raw, OPTIONS)
    assert (got.letter, got.rule) == (letter, rule)


def test_unparsable_is_never_defaulted_to_a():
    for raw in ("", "I think B or C", "no idea", None):
        assert extract_letter(raw, OPTIONS) is None


def test_option_text_needs_the_options():
    assert extract_letter("Rain falls on a tin roof.") is None
    assert extract_letter("Rain falls on a tin roof.", OPTIONS) == "B"


def test_two_option_texts_are_ambiguous():
    assert extract("Either the rain falls on a tin roof or a choir sings in a church", OPTIONS).letter is None


def test_the_protocol_module_is_stdlib_only_and_the_records_use_its_letters():
    # schemas/mcq.py is copied into the lmms-eval export, where this project is not installed.
    import ast
    from pathlib import Path

    tree = ast.parse(Path(mcq.__file__).read_text())
    imported = {n.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "re", "dataclasses", "typing"}, imported
    assert mcq.LETTERS is LETTERS


def test_mcq_prompt_snapshot():
    # A refactor must not silently change what every model is asked.
    assert mcq.mcq_text("What is heard?  ", ["x", "y  z", "w", "v"]) == (
        "Question: What is heard?\nA. x\nB. y z\nC. w\nD. v\nAnswer with the option's letter (A, B, C or D).")
    with pytest.raises(ValueError):
        mcq.mcq_text("q", ["a", "b", "c"])
