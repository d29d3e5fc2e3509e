"""Per-video QA generation from the fused timeline: consistency check, redundancy check, five question types.

1. Consistency (LLM): the model lists contradictions, each with a corrected description; code applies the fixes
   (keeping each clip's own "From .. to ..:" prefix) and keeps the list as ``QAResult.issues``.
2. Redundancy (code): a description that repeats the previous kept one (content-word overlap >= a threshold) is
   dropped from what the question writer sees, so no fact, and no grounding interval, appears twice.
3. Questions (LLM, JSON-schema decoding): one request per question type and attempt. Code picks what each attempt
   is about (a clip, a time point, a range, a pair of consecutive clips; rotating with a seeded start) and writes
   the anchors ("At t, ...", "From a to b, ...") and grounding options (real clip intervals) itself; the model
   writes the question, the correct answer and three wrong answers as separate fields, and code shuffles them
   with a seeded RNG and sets ``answer_index`` (DESIGN.md §5: small models pick anchors and indices badly). What
   the model does choose is an enum of this video in the schema (the evidence clip ids of a global question).
   A wrong answer that repeats another option is swapped for a temporal distractor (another clip's facts).
4. Checks (``tasks.qa_checks``): a candidate that fails one becomes a ``DeadLetter`` (error_class
   ``check:<name>``); the others become ``QAItem`` with ``checks_passed``. A type is retried with a new seed up
   to ``attempts_per_type`` times until it has ``questions_per_type`` accepted questions.

Which types a timeline allows (``allowed_types``), counted on the clips left after the redundancy check:
- global AV inference, time-point anchored, time-range anchored: 1 clip or more;
- cross-scene transition: 2 clips or more (a transition is between two consecutive clips);
- temporal grounding: 4 clips or more: its 4 options are 4 distinct, non-overlapping real clip intervals, and
  spans built from several clips would overlap the correct one and make a second option partly right.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, create_model

from schemas.records import (KIND_OF_TYPE, ClipDescription, DeadLetter, QAItem, QAType, Stage, VideoRecord, hms,
                             parse_hms, utc_now)
from schemas.settings import LLM
from schemas.settings import QAOptions  # noqa: F401  (re-exported: the QA stage's options live in the profile)
from infra.errors import StageError
from infra.llm_client import LLMClient
from tasks.prompts import load_prompt, quote_data
from infra.text_bounds import cut_at_sentence, cut_at_word
from tasks.qa_checks import (LEADING_ANCHOR_RE, CheckOutcome, QADraft, VideoContext, no_duplicate_question,
                             normalise_text, run_checks, token_overlap)

QA_PROMPT = "qa.v1"
CONSISTENCY_PROMPT = "consistency.v1"
MIN_CLIPS: dict[QAType, int] = {
    QAType.global_av_inference: 1,
    QAType.cross_scene_transition: 2,
    QAType.time_point_anchored: 1,
    QAType.time_range_anchored: 1,
    QAType.temporal_grounding: 4,
}
MAX_QUESTION_CHARS = 200
MAX_ANSWER_CHARS = 120
MAX_CORRECTION_CHARS = 300
MAX_CONSISTENCY_ISSUES = 3  # bounds the reply's length (and the model's appetite for inventing issues)
ATTEMPT_SEED_STRIDE = 100  # attempt k asks with seed + k*stride, clear of the client's own retry seeds (+1, +2)
ATTEMPT_TEMPERATURE_STEP = 0.25  # and a warmer temperature: at the same one a small model repeats its mistake
_QUESTION_WORDS = frozenset("what which how why who where when is are does do did can was were".split())

Question = Annotated[str, StringConstraints(min_length=10, max_length=MAX_QUESTION_CHARS)]
MAX_PROBLEM_CHARS = 150


# The grammar carries no length bound (``strict_json_schema``), and a 0.5B model overruns a bound often enough that
# rejecting the reply wasted most of the server's time (measured with Qwen2.5-0.5B: every consistency attempt failed
# on `problem`, ~300 tokens each; global questions failed on answers of 150+ characters). Prose about a clip and
# answer options are cut at a word instead; a question is not (a cut question is not a question). Answers are cut
# without a mark: an ellipsis would flag the longest option, usually the correct one.
Answer = Annotated[str, BeforeValidator(lambda t: cut_at_word(t, MAX_ANSWER_CHARS, mark="")),
                   StringConstraints(min_length=1, max_length=MAX_ANSWER_CHARS)]
Correction = Annotated[str, BeforeValidator(lambda t: cut_at_sentence(t, MAX_CORRECTION_CHARS)),
                       StringConstraints(min_length=10, max_length=MAX_CORRECTION_CHARS)]
Problem = Annotated[str, BeforeValidator(lambda t: cut_at_word(t, MAX_PROBLEM_CHARS)),
                    StringConstraints(min_length=5, max_length=MAX_PROBLEM_CHARS)]
_STRICT = ConfigDict(extra="forbid")


class ConsistencyIssue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_id: str
    problem: str
    original: str
    corrected: str
    applied: bool  # False when the correction was empty or unchanged


class QAResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video_id: str
    items: list[QAItem] = Field(default_factory=list)
    dead_letters: list[DeadLetter] = Field(default_factory=list)
    timeline: list[ClipDescription] = Field(default_factory=list)  # after consistency fixes
    issues: list[ConsistencyIssue] = Field(default_factory=list)
    dropped_clip_ids: list[str] = Field(default_factory=list)  # by the redundancy check
    skipped_types: dict[str, str] = Field(default_factory=dict)  # type -> why no question was asked
    drafts: int = 0  # schema-valid candidates that went through the checks
    check_failures: dict[str, int] = Field(default_factory=dict)  # check name -> drafts it rejected


class QABatch(BaseModel):
    """The QA of a batch's videos and the LLM counters of the one client they shared (per-video counters do not
    exist: the videos' requests interleave)."""

    model_config = ConfigDict(extra="forbid")
    results: list[QAResult]
    llm: dict[str, int] = Field(default_factory=dict)


# -- pure helpers ----------------------------------------------------------------------------------------------


def body_of(description: ClipDescription) -> str:
    """The fused text without its "From .. to ..: " prefix."""
    return description.fused.split(": ", 1)[1]


def with_body(description: ClipDescription, body: str) -> ClipDescription:
    body = " ".join(body.split())
    fused = f"From {hms(description.start_s)} to {hms(description.end_s)}: {body}"
    return ClipDescription.model_validate({**description.model_dump(), "fused": fused})


def drop_redundant(timeline: Sequence[ClipDescription], threshold: float) -> tuple[list[ClipDescription], list[str]]:
    """Drop each description that repeats the previous kept one (content-word Jaccard >= ``threshold``)."""
    kept: list[ClipDescription] = []
    dropped: list[str] = []
    for clip in sorted(timeline, key=lambda c: c.start_s):
        if kept and token_overlap(body_of(kept[-1]), body_of(clip)) >= threshold:
            dropped.append(clip.clip_id)
        else:
            kept.append(clip)
    return kept, dropped


def allowed_types(n_clips: int, wanted: Sequence[QAType] = tuple(QAType)) -> tuple[list[QAType], dict[str, str]]:
    """The types a timeline of ``n_clips`` (after the redundancy check) allows, and why the others are skipped."""
    allowed, skipped = [], {}
    for t in wanted:
        if n_clips >= MIN_CLIPS[t]:
            allowed.append(t)
        else:
            skipped[t.value] = f"needs at least {MIN_CLIPS[t]} clips, the timeline has {n_clips}"
    return allowed, skipped


def stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def shuffle_options(correct: str, wrong: Sequence[str], *, seed: int) -> tuple[list[str], int]:
    """The correct answer and the wrong ones in a seeded random order, and the correct answer's index."""
    options = [correct, *wrong]
    order = list(range(len(options)))
    random.Random(seed).shuffle(order)
    return [options[i] for i in order], order.index(0)


def qa_id_for(video_id: str, question: str) -> str:
    return f"{video_id}.q{hashlib.sha256(question.encode()).hexdigest()[:12]}"


def anchored_question(anchor: str, question: str) -> str:
    """``anchor`` (e.g. "At 00:00:12.500") + the model's question with any anchor of its own removed."""
    rest = LEADING_ANCHOR_RE.sub("", question.strip(), count=1).strip()
    if rest.split(" ", 1)[0].casefold() in _QUESTION_WORDS:
        rest = rest[0].lower() + rest[1:]
    return f"{anchor}, {rest}".rstrip()


def interval_text(clip: ClipDescription) -> str:
    return f"From {hms(clip.start_s)} to {hms(clip.end_s)}"


# Clauses of a keyframe caption that measure pixels (brightness, colours, motion) rather than name what is seen,
# and the model names a caption adds to a hint: the question writer copies whatever it is offered verbatim.
_PIXEL_CLAUSE_RE = re.compile(r"\bframe\b|between keyframes|^no coco object detected$", re.IGNORECASE)
_EVENT_TIMES_RE = re.compile(r"\s*\((?:\d[\d.]*-\d[\d.]* s(?:, |; )?)+(?: and \d+ more)?\)|\s+x\d+\b")


def seen_of(clip: ClipDescription) -> str:
    """What a clip's first keyframe caption names (objects, hints, on-screen text), without its pixel measures;
    the whole first sentence when it names nothing else."""
    first = re.split(r"(?<=[.!?])\s", clip.visual.strip(), maxsplit=1)[0].rstrip(".!?")
    named = [c.replace(" (ImageNet)", "") for c in first.split("; ") if not _PIXEL_CLAUSE_RE.search(c.strip())]
    return "; ".join(named) if named else first


def heard_of(clip: ClipDescription) -> str:
    """The most concrete thing a clip's sound carries: its events, else ambience, speech, timbre or mood (the
    labels, without the times and counts the caption lists them with)."""
    for text in (clip.event, clip.environment, clip.narration, clip.timbre, clip.emotion):
        if text.strip():
            return _EVENT_TIMES_RE.sub("", text.strip()).rstrip(".") or text.strip().rstrip(".")
    return "silence"


def timeline_data(timeline: Sequence[ClipDescription]) -> list[dict[str, Any]]:
    """What the consistency checker and the question writer read per clip."""
    out = []
    for c in timeline:
        # Labels without the times and counts inside the clip: the clip has its range, a writer copies such
        # "(5.8-11.8 s)" into answers, and every character is prefill on a CPU server.
        heard = {axis: _EVENT_TIMES_RE.sub("", getattr(c, axis)) for axis in
                 ("narration", "environment", "timbre", "event", "emotion") if getattr(c, axis)}
        out.append({"clip_id": c.clip_id, "from": hms(c.start_s), "to": hms(c.end_s), "description": body_of(c),
                    "seen": c.visual, "heard": heard})
    return out


# -- per-video plan: what each question type may be about ---------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What one question is about, chosen by code: its clips and, for anchored types, its anchor."""

    clip_ids: tuple[str, ...]
    start_s: float | None = None
    end_s: float | None = None
    anchor: str = ""  # "At hh:mm:ss.mmm" / "From a to b" / "" (not anchored)
    focus: str = ""  # global questions: the clip whose sight and sound the prompt offers as an example


class VideoPlan:
    """The targets each question type can take on one video's kept timeline, and the reply schema per type.

    Code, not the model, picks the target of each attempt (rotating through the candidates with a seeded start):
    a small model chooses anchors badly, and a prompt focused on the target's facts gets grounded answers. What the
    model still chooses is constrained by enums of this video (the evidence clip ids of a global question).
    """

    def __init__(self, video: VideoRecord, kept: Sequence[ClipDescription]):
        self.video = video
        self.kept = list(kept)
        self.by_id = {c.clip_id: c for c in self.kept}
        self.clip_ids = [c.clip_id for c in self.kept]

    def targets(self, qa_type: QAType) -> list[Target]:
        kept = self.kept
        if qa_type == QAType.global_av_inference:
            return [Target(tuple(self.clip_ids), focus=c) for c in self.clip_ids]
        if qa_type == QAType.cross_scene_transition:
            return [Target((a.clip_id, b.clip_id)) for a, b in zip(kept, kept[1:])]
        if qa_type == QAType.time_point_anchored:
            out = []
            for c in kept:
                label = hms((c.start_s + c.end_s) / 2)
                out.append(Target((c.clip_id,), start_s=parse_hms(label), anchor=f"At {label}"))
            return out
        if qa_type == QAType.time_range_anchored:
            out = [Target((c.clip_id,), c.start_s, c.end_s, interval_text(c)) for c in kept]
            for a, b in zip(kept, kept[1:]):
                if _clip_index(b.clip_id) == _clip_index(a.clip_id) + 1:  # neighbours on the video, nothing between
                    out.append(Target((a.clip_id, b.clip_id), a.start_s, b.end_s,
                                      f"From {hms(a.start_s)} to {hms(b.end_s)}"))
            return out
        return [Target((c.clip_id,), c.start_s, c.end_s, interval_text(c)) for c in kept]

    def target_for(self, qa_type: QAType, attempt: int, seed: int) -> Target:
        candidates = self.targets(qa_type)
        first = stable_seed(seed, self.video.video_id, qa_type.value) % len(candidates)
        return candidates[(first + attempt) % len(candidates)]

    def reply_model(self, qa_type: QAType) -> type[BaseModel]:
        """The JSON schema the model fills for ``qa_type``: the question first, then the answers."""
        name = f"QA_{qa_type.value}"
        if qa_type == QAType.temporal_grounding:
            return create_model(name, __config__=_STRICT, question=(Question, ...))
        fields: dict[str, Any] = {"question": (Question, ...), "correct_answer": (Answer, ...),
                                  "wrong_answer_1": (Answer, ...), "wrong_answer_2": (Answer, ...),
                                  "wrong_answer_3": (Answer, ...)}
        if qa_type == QAType.global_av_inference:
            fields["evidence_clip_ids"] = (Annotated[list[_enum(self.clip_ids)],
                                                     Field(min_length=1, max_length=min(3, len(self.clip_ids)))], ...)
        return create_model(name, __config__=_STRICT, **fields)

    def task_variables(self, qa_type: QAType, target: Target) -> dict[str, str]:
        """What a task section names: labels, the target's facts, and its sight and sound as quoted literals."""
        clips = [self.by_id[c] for c in target.clip_ids]
        first, last = clips[0], clips[-1]
        focus = {"clip": first.clip_id, "seen": seen_of(first), "heard": heard_of(first)}
        if qa_type == QAType.global_av_inference:  # the whole timeline is the target; one clip is the example
            focus = {"clip": target.focus, "seen": seen_of(self.by_id[target.focus]),
                     "heard": heard_of(self.by_id[target.focus])}
        elif len(clips) > 1:
            focus.update(seen="; then ".join(map(seen_of, clips)), heard="; then ".join(map(heard_of, clips)))
        variables = {"target_json": quote_data(timeline_data(clips)), "first_clip": first.clip_id,
                     "second_clip": last.clip_id, "time_point": target.anchor.removeprefix("At "),
                     "time_range": target.anchor, "first_seen": seen_of(first), "first_heard": heard_of(first),
                     "second_seen": seen_of(last), "second_heard": heard_of(last), **focus}
        return {k: quote_data(v) if k.endswith(("seen", "heard")) else v for k, v in variables.items()}

    def replace_repeated(self, correct: str, wrong: Sequence[str], target: Target, *, seed: int) -> list[str]:
        """``wrong`` with each answer that repeats the correct one or an earlier option swapped for a temporal
        distractor: a sound heard in a clip outside the target, true of the video but wrong for the anchor.

        Small models often write the same sentence four times; AVBench's options are exactly such other moments.
        Only for anchored and transition questions: for a question about the whole video, another clip's sound
        could be a right answer. Nothing is swapped when no clip outside the target has a new sound.
        """
        pool = [heard_of(c) for c in self.kept if c.clip_id not in target.clip_ids]
        random.Random(seed).shuffle(pool)
        used = {normalise_text(correct)}
        out = []
        for answer in wrong:
            if normalise_text(answer) in used or not normalise_text(answer):
                answer = next((p for p in pool if normalise_text(p) not in used), answer)
            used.add(normalise_text(answer))
            out.append(answer)
        return out

    def draft(self, qa_type: QAType, target: Target, reply: BaseModel, *, seed: int) -> QADraft:
        """A candidate item from a schema-valid reply: anchors, options and answer index are set here."""
        video_id = self.video.video_id
        question = " ".join(reply.question.split())
        if target.anchor and qa_type != QAType.temporal_grounding:
            question = anchored_question(target.anchor, question)
        order_seed = stable_seed(seed, video_id, qa_type.value, question)
        if qa_type == QAType.temporal_grounding:
            clip = self.by_id[target.clip_ids[0]]
            others = [c for c in self.kept if c.clip_id != clip.clip_id]
            distractors = [interval_text(c) for c in random.Random(order_seed).sample(others, 3)]
            options, answer = shuffle_options(interval_text(clip), distractors, seed=order_seed)
        else:
            correct = " ".join(reply.correct_answer.split())
            wrong = [" ".join(w.split()) for w in (reply.wrong_answer_1, reply.wrong_answer_2, reply.wrong_answer_3)]
            if qa_type != QAType.global_av_inference:
                wrong = self.replace_repeated(correct, wrong, target, seed=order_seed)
            options, answer = shuffle_options(correct, wrong, seed=order_seed)
        evidence = (list(dict.fromkeys(reply.evidence_clip_ids)) if qa_type == QAType.global_av_inference
                    else list(target.clip_ids))
        return QADraft(video_id=video_id, type=qa_type, question=question, options=options, answer_index=answer,
                       evidence_clip_ids=evidence, start_s=target.start_s, end_s=target.end_s)


def _clip_index(clip_id: str) -> int:
    return int(clip_id.rsplit(".c", 1)[1])


def _enum(values: Sequence[str]) -> Any:
    if not values:
        raise ValueError("an enum needs at least one value")
    return Literal[tuple(values)]  # type: ignore[valid-type]


def consistency_model(clip_ids: Sequence[str]) -> type[BaseModel]:
    issue = create_model("ConsistencyIssueReply", __config__=_STRICT, clip_id=(_enum(clip_ids), ...),
                         problem=(Problem, ...),
                         corrected_description=(Correction, ...))
    issues = Annotated[list[issue], Field(max_length=min(len(clip_ids), MAX_CONSISTENCY_ISSUES))]  # type: ignore
    return create_model("ConsistencyReply", __config__=_STRICT, issues=(issues, ...))


def _timeline_size(clips: Sequence[ClipDescription]) -> int:
    return len(quote_data(timeline_data(clips)))


def timeline_near(timeline: Sequence[ClipDescription], focus_ids: Sequence[str], budget_chars: int
                  ) -> list[ClipDescription]:
    """The clips nearest (in clip order) to ``focus_ids`` whose quoted timeline fits ``budget_chars``, in time order;
    the whole timeline when it fits. The focus clips themselves are always kept."""
    if _timeline_size(timeline) <= budget_chars:
        return list(timeline)
    index = {c.clip_id: i for i, c in enumerate(timeline)}
    centres = [index[f] for f in focus_ids if f in index] or [0]
    order = sorted(range(len(timeline)), key=lambda i: (min(abs(i - c) for c in centres), i))
    chosen: set[int] = set()
    for i in order:
        trial = chosen | {i}
        if chosen and timeline[i].clip_id not in focus_ids and \
                _timeline_size([timeline[j] for j in sorted(trial)]) > budget_chars:
            break
        chosen = trial
    return [timeline[i] for i in sorted(chosen)]


def timeline_windows(timeline: Sequence[ClipDescription], budget_chars: int) -> list[list[ClipDescription]]:
    """Consecutive windows of the timeline, each fitting ``budget_chars`` (a single oversize clip is its own)."""
    windows: list[list[ClipDescription]] = [[]]
    for clip in timeline:
        if windows[-1] and _timeline_size([*windows[-1], clip]) > budget_chars:
            windows.append([])
        windows[-1].append(clip)
    return [w for w in windows if w]


def render_qa_messages(plan: VideoPlan, qa_type: QAType, target: Target,
                       timeline_chars: int = QAOptions().timeline_chars) -> list[dict[str, str]]:
    template = load_prompt(QA_PROMPT)
    task = template.section(f"task:{qa_type.value}", **plan.task_variables(qa_type, target))
    focus = [target.focus] if target.focus else list(target.clip_ids)
    shown = timeline_near(plan.kept, focus, timeline_chars)
    return template.messages(duration=hms(plan.video.duration_s), timeline_json=quote_data(timeline_data(shown)),
                             task=task)


def render_consistency_messages(timeline: Sequence[ClipDescription]) -> list[dict[str, str]]:
    return load_prompt(CONSISTENCY_PROMPT).messages(timeline_json=quote_data(timeline_data(timeline)))


def check_dead_letter(draft: QADraft, failed: Sequence[tuple[str, str]]) -> DeadLetter:
    return DeadLetter(stage=Stage.qa, video_id=draft.video_id, item_id=qa_id_for(draft.video_id, draft.question),
                      error_class=f"check:{failed[0][0]}", message="; ".join(f"{n}: {r}" for n, r in failed),
                      failed_at=utc_now(), detail=draft.model_dump_json())


def to_item(draft: QADraft, *, checks_passed: Sequence[str], model: str) -> QAItem:
    return QAItem(qa_id=qa_id_for(draft.video_id, draft.question), video_id=draft.video_id,
                  kind=KIND_OF_TYPE[draft.type], type=draft.type, question=draft.question, options=draft.options,
                  answer_index=draft.answer_index, evidence_clip_ids=draft.evidence_clip_ids, start_s=draft.start_s,
                  end_s=draft.end_s, generator_model=model, checks_passed=list(checks_passed))


# -- LLM passes -------------------------------------------------------------------------------------------------


async def check_consistency(client: LLMClient, video_id: str, timeline: Sequence[ClipDescription], *,
                            max_tokens: int | None = None) -> tuple[list[ClipDescription], list[ConsistencyIssue]]:
    """The timeline with the model's corrections applied, and the issues it reported."""
    reply = await client.complete_json(
        render_consistency_messages(timeline), consistency_model([c.clip_id for c in timeline]),
        schema_name="consistency_check", stage=Stage.qa, subject=video_id, max_tokens=max_tokens)
    fixed = {c.clip_id: c for c in timeline}
    issues = []
    for issue in reply.value.issues:
        clip = fixed[issue.clip_id]
        original = body_of(clip)
        corrected = " ".join(issue.corrected_description.split())
        applied = bool(corrected) and corrected != original
        if applied:
            fixed[issue.clip_id] = with_body(clip, corrected)
        issues.append(ConsistencyIssue(clip_id=issue.clip_id, problem=issue.problem, original=original,
                                       corrected=corrected, applied=applied))
    return [fixed[c.clip_id] for c in timeline], issues


async def _questions_of_type(client: LLMClient, plan: VideoPlan, ctx: VideoContext, qa_type: QAType,
                             options: QAOptions
                             ) -> tuple[list[tuple[QADraft, tuple[str, ...]]], list[DeadLetter], list[CheckOutcome]]:
    """Up to ``questions_per_type`` accepted drafts (with the checks they passed) for one type, the rejects, and
    every draft's check outcome."""
    accepted: list[tuple[QADraft, tuple[str, ...]]] = []
    dead: list[DeadLetter] = []
    outcomes: list[CheckOutcome] = []
    reply_model = plan.reply_model(qa_type)
    for attempt in range(options.attempts_per_type):
        if len(accepted) >= options.questions_per_type:
            break
        seed = client.seed + attempt * ATTEMPT_SEED_STRIDE
        target = plan.target_for(qa_type, attempt, client.seed)
        messages = render_qa_messages(plan, qa_type, target, options.timeline_chars)
        try:
            temperature = min(1.0, client.temperature + attempt * ATTEMPT_TEMPERATURE_STEP)
            reply = await client.complete_json(messages, reply_model, schema_name=f"qa_{qa_type.value}",
                                               stage=Stage.qa, subject=plan.video.video_id, seed=seed,
                                               temperature=temperature, max_tokens=options.qa_max_tokens)
        except StageError as exc:
            dead.append(exc.to_dead_letter())
            continue
        draft = plan.draft(qa_type, target, reply.value, seed=seed)
        outcome = run_checks(draft, VideoContext(ctx.video_id, ctx.duration_s, ctx.clips,
                                                 tuple(d.question for d, _ in accepted)))
        outcomes.append(outcome)
        if outcome.ok:
            accepted.append((draft, outcome.passed))
        else:
            dead.append(check_dead_letter(draft, outcome.failed))
    return accepted, dead, outcomes


async def generate_qa(client: LLMClient, video: VideoRecord, timeline: Sequence[ClipDescription],
                      options: QAOptions | None = None) -> QAResult:
    """QA for one video from its fused timeline; every failure is a dead letter, the run always completes."""
    options = options or QAOptions()
    result = QAResult(video_id=video.video_id)
    timeline = sorted((c for c in timeline if c.video_id == video.video_id), key=lambda c: c.start_s)
    if not timeline:
        result.dead_letters.append(DeadLetter(stage=Stage.qa, source_id=video.source, video_id=video.video_id,
                                              error_class="EmptyTimeline",
                                              message="no clip descriptions for this video", failed_at=utc_now()))
        return result
    if options.consistency_check:
        checked: list[ClipDescription] = []
        for window in timeline_windows(timeline, options.timeline_chars):
            try:
                fixed, issues = await check_consistency(client, video.video_id, window,
                                                        max_tokens=options.consistency_max_tokens)
                checked += fixed
                result.issues += issues
            except StageError as exc:
                # Nothing is lost: questions are still written from the unchecked window; the letter says so.
                checked += window
                letter = exc.to_dead_letter()
                result.dead_letters.append(letter.model_copy(update={
                    "message": f"consistency check skipped: {letter.message}"}))
        timeline = checked
    result.timeline = list(timeline)
    kept, result.dropped_clip_ids = drop_redundant(timeline, options.redundancy_overlap)
    types, result.skipped_types = allowed_types(len(kept), options.types)

    plan = VideoPlan(video, kept)
    ctx = VideoContext(video.video_id, video.duration_s, tuple(timeline))
    per_type = await asyncio.gather(*(_questions_of_type(client, plan, ctx, t, options) for t in types))

    # Across types in a fixed order, so which of two duplicates survives does not depend on reply timing.
    questions: list[str] = []
    failures: Counter[str] = Counter()
    for accepted, dead, outcomes in per_type:
        result.drafts += len(outcomes)
        failures.update(name for o in outcomes for name, _ in o.failed)
        result.dead_letters.extend(dead)
        for draft, passed in accepted:
            reason = no_duplicate_question(draft, VideoContext(ctx.video_id, ctx.duration_s, ctx.clips,
                                                               tuple(questions)))
            if reason is not None:
                failures[no_duplicate_question.__name__] += 1
                result.dead_letters.append(check_dead_letter(draft, [(no_duplicate_question.__name__, reason)]))
                continue
            try:
                item = to_item(draft, checks_passed=passed, model=client.model)
            except ValidationError as exc:  # an invariant of the record the checks did not cover
                result.dead_letters.append(check_dead_letter(draft, [("qa_item_schema", str(exc))]))
                continue
            questions.append(draft.question)
            result.items.append(item)
    result.check_failures = dict(failures)
    return result


async def generate_qa_many(client: LLMClient, videos: Sequence[tuple[VideoRecord, Sequence[ClipDescription]]],
                           options: QAOptions | None = None) -> list[QAResult]:
    return list(await asyncio.gather(*(generate_qa(client, v, t, options) for v, t in videos)))


def run_qa(videos: Sequence[tuple[VideoRecord, Sequence[ClipDescription]]], *, llm: LLM, cache_path: Path | None,
           options: QAOptions | None = None) -> QABatch:
    """Synchronous stage entry point: all videos of a batch share one client, so the server sees them together."""
    client = LLMClient.from_settings(llm, cache_path=cache_path)

    async def main() -> list[QAResult]:
        async with client:
            return await generate_qa_many(client, videos, options)

    try:
        results = asyncio.run(main())
    finally:
        client.close()
    return QABatch(results=results, llm=client.stats.snapshot())
