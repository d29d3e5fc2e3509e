"""Per-video QA from the clip timeline: redundancy check, a plan made by code, question sentences by the LLM, checks.

1. Redundancy (code): a clip whose sight and sound are those of the clip before it adds nothing to ask about and is
   left out of the plan (``dropped_clip_ids``).
2. Plan (code, ``tasks.qa_plan``): for each of the five types, every question the timeline's facts allow, each with
   its target, the phrases it must name and four options of which exactly one is true; a seeded order.
3. Questions (LLM): the cards of the questions still wanted, several per request (``questions_per_request``), and
   one short reply that phrases each of them in numbered lines. Everything the prompt holds is the cards, so a
   request costs ~100 prompt tokens per question. The reply is plain text that code parses (``parse_questions``):
   no grammar to build before the request is scheduled, no JSON frame to generate. Code writes the anchors
   ("At t, ...", "From a to b, ...") and shuffles the options with a seeded RNG.
4. Checks (``tasks.qa_checks``): a question that fails one becomes a ``DeadLetter`` (``check:<name>``), the others
   ``QAItem`` with ``checks_passed``. A type short of its accepted questions (``questions_wanted``: at least
   ``questions_per_type``, more for a video with more clips and minutes) asks again with the next targets of its
   plan, up to ``attempts_per_type`` rounds.

The paper's LLM consistency pass over the fused descriptions is gone: the questions no longer read the fused prose,
and the fusion stage itself rejects a description that names what perception never reported (``tasks.fuse``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
from collections import Counter
from dataclasses import replace
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.records import (AUTHORED_ONLY_TYPES, KIND_OF_TYPE, ClipDescription, DeadLetter, QAItem, QAType, StageName,
                             VideoRecord, utc_now)
from schemas.handoff import StageResult, StageStats, VideoItem
from schemas.settings import QAOptions
from infra.errors import StageError
from infra.llm_client import LLMClient
from infra.llm_stage import LLMStage
from infra.markdown import escape_cell, table
from infra.pipeline import STAGES
from tasks.clip_facts import facts_of
from tasks.prompts import load_prompt, quote_data
from tasks.qa_checks import (LEADING_ANCHOR_RE, CheckOutcome, QADraft, VideoContext, question_key, run_checks)
from tasks.qa_author import AUTHORED_TYPES, author_questions, authored_draft, timeline_rows
from tasks.qa_judge import judge
from tasks.qa_plan import PlannedQuestion, VideoPlan, stable_seed

QA_PROMPT = "qa.v3"
ATTEMPT_SEED_STRIDE = 100  # round k asks with seed + k*stride, clear of the client's own retry seeds (+1, +2)
ATTEMPT_TEMPERATURE_STEP = 0.25  # and warmer: at the same temperature a small model repeats its mistake
_QUESTION_WORDS = frozenset("what which how why who where when is are does do did can was were".split())
_STEM_NOISE_RE = re.compile(r"^\s*(?:(?:q(?:uestion)?\s*\d*|\d+)\s*[:.)-]\s*)+", re.IGNORECASE)


class QAResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video_id: str
    items: list[QAItem] = Field(default_factory=list)
    dead_letters: list[DeadLetter] = Field(default_factory=list)
    timeline: list[ClipDescription] = Field(default_factory=list)
    dropped_clip_ids: list[str] = Field(default_factory=list)  # by the redundancy check
    skipped_types: dict[str, str] = Field(default_factory=dict)  # type -> why no question was asked
    drafts: int = 0  # phrased questions that went through the checks
    check_failures: dict[str, int] = Field(default_factory=dict)  # check name -> drafts it rejected


# -- pure helpers ----------------------------------------------------------------------------------------------


def drop_redundant(timeline: Sequence[ClipDescription]) -> tuple[list[ClipDescription], list[str]]:
    """Drop each clip whose main sight and main sound are those of the previous kept clip."""
    kept: list[ClipDescription] = []
    dropped: list[str] = []
    last = None
    for clip in sorted(timeline, key=lambda c: c.start_s):
        signature = facts_of(clip).signature()
        if kept and signature == last and any(signature):
            dropped.append(clip.clip_id)
        else:
            kept.append(clip)
            last = signature
    return kept, dropped


def shuffle_options(correct: str, wrong: Sequence[str], *, seed: int) -> tuple[list[str], int]:
    """The correct answer and the wrong ones in a seeded random order, and the correct answer's index."""
    options = [correct, *wrong]
    order = list(range(len(options)))
    random.Random(seed).shuffle(order)
    return [options[i] for i in order], order.index(0)


def balanced_letter(video_id: str, seed: int, k: int) -> int:
    """Where the ``k``-th accepted item of a video has its correct option: a seeded order of the four letters,
    repeated, so that each letter is correct a quarter of the time within one item per video (a random shuffle
    left B correct in 16% of the demo's 61 items and C in 31%, something a model can learn)."""
    order = list(range(4))
    random.Random(stable_seed(seed, video_id, "letters", k // 4)).shuffle(order)
    return order[k % 4]


def with_answer_at(draft: QADraft, index: int) -> QADraft:
    """The draft with its correct option moved to ``index``, the wrong ones keeping their seeded order."""
    if not 0 <= draft.answer_index < len(draft.options) or not 0 <= index < len(draft.options):
        return draft
    wrong = [o for i, o in enumerate(draft.options) if i != draft.answer_index]
    options = wrong[:index] + [draft.options[draft.answer_index]] + wrong[index:]
    return draft.model_copy(update={"options": options, "answer_index": index})


def qa_id_for(draft: QADraft) -> str:
    """The item's id: its video, and a hash of what makes it this item (the question, its options in order and the
    correct one). Two items of one video worded alike with other options are two ids, never one."""
    what = json.dumps([draft.question, list(draft.options), draft.answer_index], ensure_ascii=False)
    return f"{draft.video_id}.q{hashlib.sha256(what.encode()).hexdigest()[:12]}"


def clean_stem(text: str) -> str:
    """The model's sentence without numbering ("Q1:", "2."), quotes around it or an anchor of its own."""
    stem = _STEM_NOISE_RE.sub("", " ".join(text.split()), count=1).strip().strip('"').strip()
    return LEADING_ANCHOR_RE.sub("", stem, count=1).strip()


def anchored_question(anchor: str, question: str) -> str:
    """``anchor`` (e.g. "At 00:00:12.500") + the model's question with any anchor of its own removed."""
    rest = LEADING_ANCHOR_RE.sub("", question.strip(), count=1).strip()
    if rest.split(" ", 1)[0].casefold() in _QUESTION_WORDS:
        rest = rest[0].lower() + rest[1:]
    return f"{anchor}, {rest}".rstrip()


_NUMBERED_RE = re.compile(r"^\s*(?:\*\*)?(?:q(?:uestion)?\s*)?(\d{1,2})\s*[.):]\**\s*(.*\S)\s*$", re.IGNORECASE)


def parse_questions(n: int):
    """A parser of the model's reply: the lines "1. ..." to "n. ...", in card order, ``None`` for a number the reply
    lacks (other lines, such as a heading, are ignored; of a number written twice the first line counts). A reply with
    no numbered line at all is unusable. A reply cut at its token limit is parsed as it is: its last, cut line fails
    the checks like any other poor sentence, and the lines before it are kept. Judging the sentences is the checks'
    job; a card without a line is asked again in the next round."""

    def parse(text: str) -> list[str | None]:
        found: dict[int, str] = {}
        for line in text.splitlines():
            m = _NUMBERED_RE.match(line)
            if m and 1 <= int(m.group(1)) <= n:
                found.setdefault(int(m.group(1)), m.group(2))
        if not found:
            raise ValueError(f"no numbered line for any of the {n} question(s)")
        return [found.get(i) for i in range(1, n + 1)]

    return parse


def render_messages(cards: Sequence[PlannedQuestion]) -> list[dict[str, str]]:
    return load_prompt(QA_PROMPT).messages(cards_json=quote_data([c.card(i) for i, c in enumerate(cards, 1)]),
                                           count=len(cards))


def draft_of(video_id: str, planned: PlannedQuestion, stem: str, *, seed: int) -> QADraft:
    """A candidate item: code's anchor, the model's sentence, code's options in a seeded order."""
    stem = clean_stem(stem)
    question = anchored_question(planned.anchor, stem) if planned.anchor else stem
    order_seed = stable_seed(seed, video_id, planned.type.value, question)
    options, answer = shuffle_options(planned.options[0], planned.options[1:], seed=order_seed)
    return QADraft(video_id=video_id, type=planned.type, question=question, options=options, answer_index=answer,
                   evidence_clip_ids=list(planned.clip_ids), start_s=planned.start_s, end_s=planned.end_s,
                   cues=list(planned.cues))


def check_dead_letter(draft: QADraft, failed: Sequence[tuple[str, str]]) -> DeadLetter:
    return DeadLetter(stage=StageName.qa, video_id=draft.video_id, item_id=qa_id_for(draft),
                      error_class=f"check:{failed[0][0]}", message="; ".join(f"{n}: {r}" for n, r in failed),
                      failed_at=utc_now(), detail=draft.model_dump_json())


def missing_line_dead_letter(video_id: str, planned: PlannedQuestion) -> DeadLetter:
    return DeadLetter(stage=StageName.qa, video_id=video_id, error_class="NoLineForCard",
                      message=f"the reply had no line for the {planned.type.value} question of clip(s) "
                              f"{', '.join(planned.clip_ids)}", failed_at=utc_now())


def to_item(draft: QADraft, *, checks_passed: Sequence[str], model: str, judge_verdict: str | None = None) -> QAItem:
    return QAItem(qa_id=qa_id_for(draft), video_id=draft.video_id,
                  kind=KIND_OF_TYPE[draft.type], type=draft.type, question=draft.question, options=draft.options,
                  answer_index=draft.answer_index, evidence_clip_ids=draft.evidence_clip_ids, start_s=draft.start_s,
                  end_s=draft.end_s, generator_model=model, checks_passed=list(checks_passed),
                  judge_verdict=judge_verdict)


def _interleaved(by_type: dict[QAType, list[PlannedQuestion]]) -> list[PlannedQuestion]:
    """One of each type in turn, so that a request that fails costs every type a little, not one type all."""
    out: list[PlannedQuestion] = []
    queues = [list(q) for q in by_type.values()]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


# -- the LLM pass ------------------------------------------------------------------------------------------------


async def _phrase(client: LLMClient, video_id: str, cards: list[PlannedQuestion], round_no: int,
                  options: QAOptions) -> list[str | None] | StageError:
    """The model's sentence for each card, in card order; a ``StageError`` when the request failed."""
    try:
        reply = await client.complete_text(
            render_messages(cards), parse_questions(len(cards)), reply_name=f"qa_questions_{len(cards)}",
            stage=StageName.qa, subject=video_id, seed=client.seed + round_no * ATTEMPT_SEED_STRIDE,
            temperature=min(1.0, client.temperature + round_no * ATTEMPT_TEMPERATURE_STEP),
            max_tokens=len(cards) * options.tokens_per_question + 16, accept_cut=True)
    except StageError as exc:
        return exc
    return reply.value


def questions_wanted(options: QAOptions, n_types: int, clips: int, duration_s: float) -> int:
    """How many accepted questions of each type a video asks for: its share of a total that grows with its clips
    and minutes (``QAOptions``), at least ``questions_per_type``."""
    if not n_types:
        return 0
    total = max(options.questions_per_clip * clips, options.questions_per_minute * duration_s / 60)
    total = min(total, options.max_questions_per_video)
    return max(options.questions_per_type, math.ceil(total / n_types))


class _Acceptor:
    """What a video's accepted questions share: the checks' context, the keys of accepted questions (duplicates),
    the tallies, and where each accepted question's correct option goes."""

    def __init__(self, result: QAResult, ctx: VideoContext, seed: int):
        self.result, self.ctx, self.seed = result, ctx, seed
        self.accepted: Counter[QAType] = Counter()
        self.keys: list[str] = []
        self.failures: Counter[str] = Counter()
        self.placed = 0

    def check(self, draft: QADraft) -> tuple[QADraft, CheckOutcome] | None:
        """The draft with its answer placed, if it passes every check (its key then counts as accepted); else
        None and a dead letter."""
        outcome: CheckOutcome = run_checks(draft, replace(self.ctx, accepted_questions=tuple(self.keys)))
        self.result.drafts += 1
        self.failures.update(name for name, _ in outcome.failed)
        if not outcome.ok:
            self.result.dead_letters.append(check_dead_letter(draft, outcome.failed))
            return None
        self.keys.append(question_key(draft))
        draft = with_answer_at(draft, balanced_letter(self.ctx.video_id, self.seed, self.placed))
        self.placed += 1
        return draft, outcome

    def accept(self, draft: QADraft, outcome: CheckOutcome, model: str, verdict: str | None = None) -> None:
        try:
            item = to_item(draft, checks_passed=outcome.passed, model=model, judge_verdict=verdict)
        except ValidationError as exc:  # an invariant of the record the checks did not cover
            self.result.dead_letters.append(check_dead_letter(draft, [("qa_item_schema", str(exc))]))
            return
        self.accepted[draft.type] += 1
        self.result.items.append(item)


async def generate_qa(client: LLMClient, video: VideoRecord, timeline: Sequence[ClipDescription],
                      options: QAOptions | None = None, *, vocabulary: frozenset[str],
                      not_asked: frozenset[str] = frozenset()) -> QAResult:
    """QA for one video from its timeline; every failure is a dead letter, the run always completes.
    ``vocabulary``: what the run's perception models can name (``tasks.grounding``). ``not_asked``: clips no
    question is about (footage already in the dataset); they still count where a question counts or orders."""
    options = options or QAOptions()
    result = QAResult(video_id=video.video_id)
    timeline = sorted((c for c in timeline if c.video_id == video.video_id), key=lambda c: c.start_s)
    asked = [c for c in timeline if c.clip_id not in not_asked]
    if not asked:
        result.dead_letters.append(DeadLetter(stage=StageName.qa, source_id=video.source, video_id=video.video_id,
                                              error_class="EmptyTimeline",
                                              message="no clip descriptions for this video", failed_at=utc_now()))
        return result
    result.timeline = list(asked)
    kept, result.dropped_clip_ids = drop_redundant(asked)
    plan = VideoPlan.build(video.video_id, video.duration_s, kept, seed=client.seed, every=timeline)
    authored = [t for t in options.types if t in AUTHORED_TYPES] if options.mode == "authored" else []
    planned = [t for t in options.types if t not in authored and plan.candidates.get(t)]
    per_type = questions_wanted(options, len(planned) + len(authored), len(kept), video.duration_s)
    result.skipped_types = {
        t.value: (f"written only in the authored mode (qa.mode: {options.mode})" if t in AUTHORED_ONLY_TYPES else
                  f"the timeline's {len(kept)} clip(s) give no {t.value} question with four options of which "
                  f"exactly one is true")
        for t in options.types if t not in authored and t not in planned}

    ctx = VideoContext(video.video_id, video.duration_s, tuple(timeline), vocabulary=vocabulary)
    acceptor = _Acceptor(result, ctx, client.seed)
    await _ask_planned(client, video, plan, planned, per_type, acceptor, options)
    if authored:
        await _ask_authored(client, video, kept, authored, per_type, acceptor, options)
    result.check_failures = dict(acceptor.failures)
    return result


async def _ask_planned(client: LLMClient, video: VideoRecord, plan: VideoPlan, types: list[QAType], per_type: int,
                       acceptor: _Acceptor, options: QAOptions) -> None:
    """The planned types: rounds of cards phrased by the model, until each type has ``per_type`` accepted."""
    result, accepted = acceptor.result, acceptor.accepted
    for round_no in range(options.attempts_per_type):
        wanted = {t: plan.take(t, per_type - accepted[t]) for t in types if accepted[t] < per_type}
        cards = _interleaved(wanted)
        if not cards:
            break
        size = options.questions_per_request
        chunks = [cards[i:i + size] for i in range(0, len(cards), size)]
        replies = await asyncio.gather(*(_phrase(client, video.video_id, c, round_no, options) for c in chunks))
        # In card order, so which of two duplicates survives does not depend on reply timing.
        for chunk, stems in zip(chunks, replies):
            if isinstance(stems, StageError):
                result.dead_letters.append(stems.to_dead_letter())
                continue
            for planned, stem in zip(chunk, stems):
                if stem is None:
                    result.dead_letters.append(missing_line_dead_letter(video.video_id, planned))
                    plan.give_back(planned)
                    continue
                draft = draft_of(video.video_id, planned, stem, seed=client.seed + round_no * ATTEMPT_SEED_STRIDE)
                passed = acceptor.check(draft)
                if passed is not None:
                    acceptor.accept(*passed, model=client.model)


async def _ask_authored(client: LLMClient, video: VideoRecord, clips: list[ClipDescription], types: list[QAType],
                        per_type: int, acceptor: _Acceptor, options: QAOptions) -> None:
    """The authored types: rounds of questions the model writes from the timeline, each checked, then judged."""
    result, accepted = acceptor.result, acceptor.accepted
    rows = timeline_rows(clips)
    halves = {senses: timeline_rows(clips, senses) for senses in ("visual", "audio")}  # what the judge reads
    for round_no in range(options.attempts_per_type):
        wanted = {t: per_type - accepted[t] for t in types if accepted[t] < per_type}
        if not wanted:
            break
        # Requests of at most questions_per_request questions, each with the whole timeline (a shared prefix the
        # server caches), so a long video's many questions do not make one reply run past its token limit.
        asks = [t for t, n in wanted.items() for _ in range(n)]
        size = options.questions_per_request
        chunks = [Counter(asks[i:i + size]) for i in range(0, len(asks), size)]
        replies = await asyncio.gather(*(author_questions(client, video.video_id, rows, dict(chunk), round_no,
                                                          options, seed=client.seed + round_no * ATTEMPT_SEED_STRIDE
                                                          + k) for k, chunk in enumerate(chunks)))
        written = []
        for reply in replies:
            if isinstance(reply, StageError):
                result.dead_letters.append(reply.to_dead_letter())
            else:
                written += reply
        passed = []
        for q in written:
            problem = q.problem(list(wanted))
            if problem is not None:
                result.dead_letters.append(DeadLetter(
                    stage=StageName.qa, video_id=video.video_id, error_class="AuthoredItemIncomplete",
                    message=problem, failed_at=utc_now(), detail=json.dumps(q.__dict__, ensure_ascii=False)))
                continue
            checked = acceptor.check(authored_draft(video.video_id, q, clips))
            if checked is not None:
                passed.append(checked)
        verdicts = await asyncio.gather(*(judge(client, d, halves) for d, _ in passed)) if options.judge else \
            [None] * len(passed)
        for (draft, outcome), verdict in zip(passed, verdicts):
            if isinstance(verdict, StageError):  # no verdict, no item: an unjudged item could pass for core
                result.dead_letters.append(verdict.to_dead_letter())
                continue
            acceptor.accept(draft, outcome, model=client.model, verdict=verdict)


@STAGES.register(StageName.qa)
class QAStage(LLMStage):
    """Questions of every type per video: planned from the clip facts and phrased by the LLM, or (``qa.mode:
    authored``) written by the LLM and judged; all checked in code. A clip that repeats footage already in the
    dataset is described, but no question is written about it again."""

    name = StageName.qa
    title = "QA"
    section = "qa"
    reads = ("videos", "descriptions", "dedup")
    optional = ("dedup",)  # a pipeline without deduplication has no repeated footage to leave out
    writes = {"qa": QAItem}

    async def process_async(self, item: VideoItem) -> StageResult:
        repeated = frozenset(r.clip_id for r in item.rows("dedup"))
        result = await generate_qa(self.client, item.rows("videos")[0], item.rows("descriptions"), self.cfg,
                                   vocabulary=self.context.vocabulary, not_asked=repeated)
        return StageResult(tables={"qa": result.items}, dead_letters=result.dead_letters,
                           counts={"drafts": result.drafts},
                           tallies={"check_failures": result.check_failures,
                                    "type": dict(Counter(i.type.value for i in result.items)),
                                    "judge": dict(Counter(i.judge_verdict for i in result.items if i.judge_verdict))})

    @classmethod
    def report_lines(cls, stats: StageStats) -> list[str]:
        drafts = stats.counts.get("drafts", 0)
        rows = [[escape_cell(name), n, f"{1 - n / drafts:.3f}" if drafts else "-"]
                for name, n in stats.tally("check_failures").most_common()]
        return [f"QA: {stats.rows['qa']} of {drafts:g} phrased questions accepted.",
                table(["QA check", "drafts rejected", "pass rate"], rows or [["-", 0, "-"]]),
                table(["QA type", "items"], sorted(stats.tally("type").items()) or [["-", 0]])] + (
                    [table(["judge: answered by", "authored items"], sorted(stats.tally("judge").items()))]
                    if stats.tally("judge") else [])
