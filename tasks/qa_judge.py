"""An LLM judge of authored questions: does the visual-only, or the audio-only, timeline answer it?

JointAVBench and OmniClean filter questions one sense answers. Here the judge gets the question and its four
options with one sense's half of the timeline (``tasks.qa_author.timeline_rows``: what was seen, or what was heard
and said) and answers with a letter, or X when that half does not tell. The verdict:

- ``both``: neither half gave the correct letter; the item needs both senses (only these enter AVBench's core set);
- ``visual`` / ``audio``: that half alone answered it;
- ``either``: each half alone answered it.

A judge is a model and can be wrong both ways; its verdict is recorded as a column (``QAItem.judge_verdict``), not
taken as truth, and AVBench's own blind, audio-only and visual-only filters still run.
"""

from __future__ import annotations

import asyncio
import re

from infra.errors import StageError
from infra.llm_client import LLMClient
from schemas.mcq import LETTERS
from schemas.records import JudgeVerdict, StageName
from tasks.prompts import load_prompt, quote_data
from tasks.qa_checks import QADraft

JUDGE_PROMPT = "qa_judge.v1"
_LETTER_RE = re.compile(r"\b([ABCDX])\b")


def parse_letter(text: str) -> str:
    m = _LETTER_RE.search(text.strip().upper()[:40])
    if not m:
        raise ValueError("no letter A-D or X at the start of the reply")
    return m.group(1)


def render_messages(draft: QADraft, rows: list[dict]) -> list[dict[str, str]]:
    options = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, draft.options))
    return load_prompt(JUDGE_PROMPT).messages(timeline_json=quote_data(rows),
                                              question_json=quote_data({"question": draft.question}),
                                              options=quote_data(options.splitlines()))


def verdict_of(visual: str, audio: str, correct: str) -> JudgeVerdict:
    by_sight, by_ear = visual == correct, audio == correct
    return "either" if by_sight and by_ear else "visual" if by_sight else "audio" if by_ear else "both"


async def judge(client: LLMClient, draft: QADraft, halves: dict[str, list[dict]]) -> JudgeVerdict | StageError:
    """The verdict on ``draft`` (its options in their final order) from ``halves``: the video's visual-only and
    audio-only timelines (``timeline_rows(clips, "visual" | "audio")``); a ``StageError`` when a request failed."""
    async def ask(senses: str) -> str:
        reply = await client.complete_text(render_messages(draft, halves[senses]), parse_letter,
                                           reply_name=f"qa_judge_{senses}", stage=StageName.qa,
                                           subject=draft.video_id, max_tokens=4, temperature=0.0, accept_cut=True)
        return reply.value

    try:
        visual, audio = await asyncio.gather(ask("visual"), ask("audio"))
    except StageError as exc:
        return exc
    return verdict_of(visual, audio, LETTERS[draft.answer_index])
