"""The authored mode: the LLM reads a video's timeline and writes whole questions, which code then checks.

The planned mode (``tasks.qa_plan``) can only ask what code can plan from the facts. A 7B+ LLM (or a VLM's rich
captions) can ask more: who or what on screen makes a sound, why something happens, what two far-apart moments
share. So in the authored mode the LLM gets the timeline (each clip's sights, sounds and words, numbered) and writes,
per question, its type, the question, the correct answer, three wrong answers and the clips that hold the evidence,
as plain ``key: value`` lines that code parses (no grammar: see ``tasks.qa``). Nothing it writes is trusted:

- ``tasks.qa_checks`` runs every check on it (cited clips exist, every time inside the video, options distinct and
  not singled out by length, the question does not point at the answer, nothing named that perception never
  reported, both senses named);
- ``tasks.qa_judge`` asks whether the visual-only or the audio-only timeline answers it; the verdict is a column,
  and only items that need both enter AVBench's core set.

Types with a time anchor (time point, time range, grounding) stay planned by code in this mode: their times and
intervals are exact by construction, and a model's arithmetic on timestamps is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from infra.errors import StageError
from infra.llm_client import LLMClient
from schemas.records import ClipDescription, QAType, StageName, hms
from schemas.settings import QAOptions
from tasks.clip_facts import facts_of, keys_of
from tasks.prompts import load_prompt, quote_data
from tasks.qa_checks import ANCHORED_TYPES, QADraft, content_words, token_overlap

AUTHOR_PROMPT = "qa_author.v2"
AUTHORED_TYPES = tuple(t for t in QAType if t not in ANCHORED_TYPES)
MAX_SAID_CHARS = 240  # of a clip's transcript in the timeline the author reads
TOKENS_PER_AUTHORED_QUESTION = 110
GUIDE_OVERLAP = 0.5  # content-word overlap of a question with its type's description that marks a copy
GENERIC_QUESTION_TYPES = (QAType.global_av_inference, QAType.temporal_ordering)

# How to write each type, as the prompt tells it: an instruction naming the timeline's fields, not a question (a 1.5B
# model copied v1's question-like descriptions ("how many separate times something is seen ...") as its questions).
TYPE_GUIDES: dict[QAType, str] = {
    QAType.global_av_inference: "pick one clip and ask which of four sight-and-sound pairs happens in the video; each "
                                "wrong pair joins a sight and a sound that are never in the same clip",
    QAType.cross_scene_transition: "pick two neighbouring clips with different sights, name both sights, and ask how "
                                   "the sound changes when the picture changes from the first to the second",
    QAType.temporal_ordering: "pick four clips and ask which of their sight-with-sound moments comes first (or last)",
    QAType.counting: "pick a sight and a sound that are together in two or more separate clips and ask how many "
                     "times they are",
    QAType.long_range: "pick a sound heard in two clips far apart and ask what is on screen the first (or the "
                       "second) time it is heard",
    QAType.speech_picture_link: "quote a phrase from one clip's said text and ask what is on screen while it is said",
    QAType.source_attribution: "pick a sound and ask which thing on screen makes it, or quote a phrase and ask which "
                               "person on screen says it",
    QAType.causal_inference: "ask why something seen or heard happens, or what a sound suggests about what is seen",
}
# Words any question of a type may use: a question made of only these asks about nothing of this video.
_GENERIC_QUESTION_WORDS = frozenset(content_words(
    "who what which why how many times time screen makes make made sound sounds heard hear seen see shown show "
    "happens happen something someone person thing things video clip picture moment first last second"))
_FIELD_RE = re.compile(r"^\s*(?:[-*]\s*)?(?:\*\*)?(type|question|answer|wrong|clips)(?:\*\*)?\s*[:：]\s*(.*\S)?\s*$",
                       re.IGNORECASE)


@dataclass
class AuthoredQuestion:
    """One question as the model wrote it (fields may be missing: ``problem`` says what is wrong)."""

    type: str = ""
    question: str = ""
    answer: str = ""
    wrong: list[str] = field(default_factory=list)
    clips: list[int] = field(default_factory=list)

    def problem(self, allowed: Sequence[QAType]) -> str | None:
        if self.type not in {t.value for t in allowed}:
            return f"type {self.type!r} is not one of those asked ({', '.join(t.value for t in allowed)})"
        if not self.question or not self.answer:
            return "no question or no correct answer"
        if len(self.wrong) != 3:
            return f"{len(self.wrong)} wrong answers, need 3"
        guide = TYPE_GUIDES.get(QAType(self.type), "")
        # A small model copies the type's description; the pairing and ordering questions are generic by design
        # (their options carry the sights and sounds), the others must ask about something of this video.
        if QAType(self.type) not in GENERIC_QUESTION_TYPES:
            specific = content_words(self.question) - content_words(guide) - _GENERIC_QUESTION_WORDS
            if token_overlap(self.question, guide) >= GUIDE_OVERLAP or not specific:
                return f"the question restates the type's description ({guide!r}) instead of asking about the video"
        return None


def timeline_rows(timeline: Sequence[ClipDescription], senses: str = "both") -> list[dict]:
    """The timeline as the author (``senses="both"``) or a judge (``"visual"`` / ``"audio"``) reads it: clips
    numbered from 1, their bounds, and the sights, sounds and words perception reported."""
    rows = []
    for n, clip in enumerate(sorted(timeline, key=lambda c: c.start_s), 1):
        facts = facts_of(clip)
        row: dict = {"clip": n, "from": hms(clip.start_s), "to": hms(clip.end_s)}
        if senses in ("both", "visual"):
            row["seen"] = [s.phrase for s in facts.sights]
        if senses in ("both", "audio"):
            row["heard"] = [s.phrase for s in facts.sounds if s.kind != "speech"]
            said = " ".join(clip.narration.split())
            if said and not said.lower().startswith("unintelligible speech"):
                row["said"] = said[:MAX_SAID_CHARS] + (" ..." if len(said) > MAX_SAID_CHARS else "")
        rows.append(row)
    return rows


def parse_authored(text: str) -> list[AuthoredQuestion]:
    """The model's reply as questions: a question starts at each ``type:`` line; ``wrong:`` lines add wrong
    answers (or one line with three separated by " | "); ``clips:`` lists clip numbers. A reply without any
    question is unusable (``ValueError``, asked again)."""
    out: list[AuthoredQuestion] = []
    for line in text.splitlines():
        m = _FIELD_RE.match(line)
        if not m:
            continue
        key, value = m.group(1).lower(), (m.group(2) or "").strip("*` ")
        if len(value) > 1 and value[0] == value[-1] == '"' and value.count('"') == 2:
            value = value[1:-1].strip()  # wholly quoted; a quote inside (on-screen text "X") is the value's own
        if key == "type":
            out.append(AuthoredQuestion(type=value.lower().replace(" ", "_")))
        elif not out:
            continue
        elif key == "question":
            out[-1].question = value
        elif key == "answer":
            out[-1].answer = value
        elif key == "wrong":
            out[-1].wrong += [w.strip() for w in value.split(" | ") if w.strip()]
        else:
            out[-1].clips = [int(n) for n in re.findall(r"\d+", value)]
    if not out:
        raise ValueError("no question (no 'type:' line) in the reply")
    return out


def render_messages(rows: list[dict], wanted: dict[QAType, int]) -> list[dict[str, str]]:
    asks = [{"type": t.value, "how_to_write": TYPE_GUIDES[t], "how_many": n} for t, n in wanted.items()]
    return load_prompt(AUTHOR_PROMPT).messages(timeline_json=quote_data(rows), types_json=quote_data(asks),
                                               count=sum(wanted.values()))


async def author_questions(client: LLMClient, video_id: str, rows: list[dict], wanted: dict[QAType, int],
                           round_no: int, options: QAOptions, *, seed: int) -> list[AuthoredQuestion] | StageError:
    """One request for ``wanted`` questions of each type; a ``StageError`` when it failed."""
    try:
        reply = await client.complete_text(
            render_messages(rows, wanted), parse_authored, reply_name="qa_authored", stage=StageName.qa,
            subject=video_id, seed=seed, temperature=min(1.0, client.temperature + 0.25 * round_no),
            max_tokens=sum(wanted.values()) * TOKENS_PER_AUTHORED_QUESTION + 32, accept_cut=True)
    except StageError as exc:
        return exc
    return reply.value


MAX_INFERRED_EVIDENCE = 3


def inferred_evidence(q: AuthoredQuestion, ordered: Sequence[ClipDescription]) -> list[str]:
    """The clips a question without a ``clips:`` line is about: those whose reported sights and sounds share the
    most words with its correct answer (at most ``MAX_INFERRED_EVIDENCE``; none when no clip shares one). A small
    model often leaves the line out; the checks then hold the inferred clips to the same rules as cited ones (an
    ordering or long-range question needs two clips, and one clip is not inferred as two)."""
    said = keys_of(q.answer)
    scored = []
    for clip in ordered:
        facts = facts_of(clip)
        scored.append((len(said & (facts.seen_words | facts.heard_words)), clip.clip_id))
    best = max((n for n, _ in scored), default=0)
    hits = [c for n, c in scored if n == best and best > 0]
    return hits if len(hits) <= MAX_INFERRED_EVIDENCE else []


def authored_draft(video_id: str, q: AuthoredQuestion, clips: Sequence[ClipDescription]) -> QADraft:
    """The question as a draft for the checks: the correct answer first (``tasks.qa`` places it), evidence clips by
    number (a number outside the timeline is kept as it is, and the evidence check names it), or inferred from the
    correct answer where the model cited none."""
    ordered = sorted(clips, key=lambda c: c.start_s)
    evidence = [ordered[n - 1].clip_id if 1 <= n <= len(ordered) else f"{video_id}.c{9999:04d}" for n in q.clips] \
        if q.clips else inferred_evidence(q, ordered)
    return QADraft(video_id=video_id, type=QAType(q.type), question=" ".join(q.question.split()),
                   options=[" ".join(o.split()) for o in (q.answer, *q.wrong)], answer_index=0,
                   evidence_clip_ids=list(dict.fromkeys(evidence)), authored=True)
