"""Checks a generated question must pass before it becomes a ``QAItem``: small, named, pure functions.

Each check takes the candidate (``QADraft``) and what is known about its video (``VideoContext``) and returns
``None`` when the candidate passes, or a reason a person can read. The function's name is the check's name: it is
recorded in ``QAItem.checks_passed`` and, for a failure, in the dead letter's ``error_class`` as ``check:<name>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from pydantic import BaseModel, ConfigDict

from schemas.records import ClipDescription, QAType, hms, parse_hms
from tasks.clip_facts import facts_of, keys_of
from tasks.grounding import TIMESTAMP_RE, ungrounded_names, words

TIME_TOLERANCE_S = 0.0015  # timestamps are printed to the millisecond
INTERVAL_OPTION_RE = re.compile(r"^From (\d{2}:\d{2}:\d{2}\.\d{3}) to (\d{2}:\d{2}:\d{2}\.\d{3})$")
LEADING_ANCHOR_RE = re.compile(
    r"^\s*(?:at\s+\d{1,2}:\d{2}:\d{2}(?:\.\d{1,3})?|from\s+\d{1,2}:\d{2}:\d{2}(?:\.\d{1,3})?\s+to\s+"
    r"\d{1,2}:\d{2}:\d{2}(?:\.\d{1,3})?)\s*[,:]?\s*", re.IGNORECASE)
MIN_QUESTION_WORDS = 4
MAX_QUESTION_CHARS = 240  # beyond the anchor: a question that long has stopped asking
DUPLICATE_OVERLAP = 0.9  # token Jaccard at or above which two questions count as the same question

ANCHORED_TYPES = (QAType.time_point_anchored, QAType.time_range_anchored, QAType.temporal_grounding)
UNANCHORED_TYPES = tuple(t for t in QAType if t not in ANCHORED_TYPES)
# Types whose options are intervals or counts: they name no sight or sound, so only the question is read for them.
NAMELESS_OPTION_TYPES = (QAType.temporal_grounding, QAType.counting)
LENGTH_MARGIN = 1.3  # the correct option this many times longer (or shorter) than every wrong one stands out

# Words that carry no content of either modality: function words, and the meta-vocabulary of the task itself
# ("what sound is heard in the scene") that would otherwise count as mentioning both sight and sound.
STOPWORDS = frozenset("""
a about above after again against all also an and any are around as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having he
her here hers him his how i if in into is it its itself just me more most my no nor not now of off on once only
or other our out over own same she should so some such than that the their theirs them then there these they
this those through to too under until up very was we were what when where which while who whom why will with
would you your one two three first second next last then while
clip clips scene scenes video videos audio visual visuals sound sounds heard hear hears hearing seen see sees
seeing shown show shows showing time times moment range moments happen happens happening occur occurs
combination combine combined change changes changing describe described description best captures capture
something someone thing things way kind type point start end begins ends
""".split())


class QADraft(BaseModel):
    """A question as generated, before checks; lenient on purpose so that a bad one can be named, not crash."""

    model_config = ConfigDict(extra="forbid")
    video_id: str
    type: QAType
    question: str
    options: list[str]
    answer_index: int
    evidence_clip_ids: list[str]
    start_s: float | None = None
    end_s: float | None = None
    cues: list[str] = []  # phrases of the timeline the question was asked to name (tasks.qa_plan)
    authored: bool = False  # written whole by the LLM (tasks.qa_author): its wrong options are not known false


@dataclass(frozen=True)
class VideoContext:
    video_id: str
    duration_s: float
    clips: tuple[ClipDescription, ...]  # every clip of the video with a description
    accepted_questions: tuple[str, ...] = ()  # ``question_key`` of the items already accepted for this video
    # What the run's perception models can name (``tasks.grounding.nameable_words``): a word of it that the video's
    # perception never reported is an invention.
    vocabulary: frozenset[str] = frozenset()
    by_id: dict[str, ClipDescription] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {c.clip_id: c for c in self.clips})


Check = Callable[[QADraft, VideoContext], "str | None"]


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Lower-cased, crudely stemmed words of 3+ letters that are not stopwords."""
    return {_stem(w) for w in re.findall(r"[a-z]{3,}", text.casefold()) if w not in STOPWORDS}


def normalise_text(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.casefold()))


def token_overlap(a: str, b: str) -> float:
    """Jaccard overlap of content words (1.0 for two texts with no content words that are equal)."""
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return 1.0 if normalise_text(a) == normalise_text(b) else 0.0
    return len(wa & wb) / len(wa | wb)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TIME_TOLERANCE_S


# -- the checks ------------------------------------------------------------------------------------------------


def question_is_substantive(d: QADraft, ctx: VideoContext) -> str | None:
    """Beyond its anchor, the question has words of its own (a model may write only a time, or nothing), and not
    too many. Content words are not required: a question whose options carry the sights and sounds ("which sight
    and which sound occur together here?") names none on purpose."""
    rest = LEADING_ANCHOR_RE.sub("", d.question, count=1)
    if len(re.findall(r"[A-Za-z]+", rest)) < MIN_QUESTION_WORDS:
        return f"the question says nothing beyond its anchor: {d.question!r}"
    if len(rest) > MAX_QUESTION_CHARS:
        return f"the question runs to {len(rest)} characters (at most {MAX_QUESTION_CHARS}): {d.question[:80]!r}..."
    return None


def question_is_a_question(d: QADraft, ctx: VideoContext) -> str | None:
    """One sentence that asks: it ends with "?" and has no second sentence before it (a model may write a
    statement, or an answer followed by a question)."""
    rest = LEADING_ANCHOR_RE.sub("", d.question, count=1).strip()
    if not rest.endswith("?"):
        return f"not a question: {d.question!r}"
    if re.search(r"[.!?]\s+[A-Z]", rest[:-1]):
        return f"more than one sentence: {d.question!r}"
    return None


def quotes_are_whole(d: QADraft, ctx: VideoContext) -> str | None:
    """Quoted speech opens and closes, and no escape character is left in the text (a model may copy a cue's
    backslash-escaped quote, or drop the closing quote of a cut phrase: 'saying "Please watch the sun ...?')."""
    for text in (d.question, *d.options):
        if "\\" in text:
            return f"a backslash in the text: {text[:100]!r}"
        if text.count('"') % 2 or text.count("\u201c") != text.count("\u201d"):
            return f"a quote that does not close: {text[:100]!r}"
    return None


_MOMENT_RE = re.compile(r"\b(?:this|that|a given|the given) (?:moment|instant|time|point)\b|\bright now\b", re.I)


def question_is_anchored_as_its_type(d: QADraft, ctx: VideoContext) -> str | None:
    """A question about the whole video, or about a change of scene, does not speak of "this moment": it has no
    moment (a model rewriting one question may borrow the words of another type)."""
    if d.type in UNANCHORED_TYPES and _MOMENT_RE.search(d.question):
        return f"a {d.type.value} question speaks of a moment it does not state: {d.question!r}"
    return None


def question_names_its_cues(d: QADraft, ctx: VideoContext) -> str | None:
    """The question names each phrase it was asked to name (one of the phrase's key words at least): without it a
    grounding or transition question does not say what it is about."""
    said = words(d.question)
    missing = [cue for cue in d.cues if keys_of(cue) and not keys_of(cue) & said]
    if missing:
        return f"does not name {missing}"
    return None


def pointing_words(question: str, options: list[str], answer_index: int) -> str | None:
    """Why the question's words single out the correct option, or None: the question has a key word that the
    correct option has and no wrong option has, or it shares more key words with the correct option than with every
    wrong one. A cue counts too: a question that quotes speech naming the answer ("while a man says 'catch it'" ->
    "a man throws a frisbee and the dog catches it") gives it away as surely as one the model wrote."""
    asked = keys_of(LEADING_ANCHOR_RE.sub("", question, count=1))
    correct = keys_of(options[answer_index])
    wrong = frozenset().union(*(keys_of(o) for i, o in enumerate(options) if i != answer_index))
    telling = sorted(asked & (correct - wrong))
    if telling:
        return f"the question names {telling}, which only the correct option has"
    shared = [len(asked & keys_of(o)) for o in options]
    best = shared[answer_index]
    if best and all(best > n for i, n in enumerate(shared) if i != answer_index):
        return "the question shares more words with the correct option than with any wrong one"
    return None


def question_does_not_point_to_answer(d: QADraft, ctx: VideoContext) -> str | None:
    """No word of the question singles out the correct option (``pointing_words``); interval options are exempt."""
    if d.type in NAMELESS_OPTION_TYPES or not 0 <= d.answer_index < len(d.options):
        return None
    return pointing_words(d.question, d.options, d.answer_index)


def singled_out_by_length(options: list[str] | tuple[str, ...], answer_index: int) -> str | None:
    """Why the correct option stands out by its length, or None: it is longer (or shorter) than every wrong option
    by ``LENGTH_MARGIN`` (a reader who picks the longest option must not score)."""
    correct = len(options[answer_index])
    wrong = [len(o) for i, o in enumerate(options) if i != answer_index]
    if correct >= LENGTH_MARGIN * max(wrong):
        return f"the correct option ({correct} characters) is much the longest (the others at most {max(wrong)})"
    if LENGTH_MARGIN * correct <= min(wrong):
        return f"the correct option ({correct} characters) is much the shortest (the others at least {min(wrong)})"
    return None


def options_not_singled_out_by_length(d: QADraft, ctx: VideoContext) -> str | None:
    """The correct option is not told apart by its length (``singled_out_by_length``); intervals and counts are
    exempt."""
    if d.type in NAMELESS_OPTION_TYPES or not 0 <= d.answer_index < len(d.options) or len(d.options) < 2:
        return None
    return singled_out_by_length(d.options, d.answer_index)


def answer_index_valid(d: QADraft, ctx: VideoContext) -> str | None:
    if len(d.options) != 4:
        return f"{len(d.options)} options, need 4"
    if not 0 <= d.answer_index < 4:
        return f"answer_index {d.answer_index} is not in 0..3"
    return None


def options_distinct(d: QADraft, ctx: VideoContext) -> str | None:
    normalised = [normalise_text(o) for o in d.options]
    if any(not n for n in normalised):
        return "an option is empty"
    if len(set(normalised)) != len(normalised):
        return f"options repeat: {d.options}"
    return None


_NEGATION_RE = re.compile(r"\b(?:not|no|never|doesn't|does not|isn't|is not|don't|do not|without)\b", re.I)


def options_not_negations_of_each_other(d: QADraft, ctx: VideoContext) -> str | None:
    """No two options are the same words but for a negation ("X is heard" / "X is not heard"): such options test
    reading, not watching and listening."""
    bare = [" ".join(re.sub(r"(?:es|s)$", "", w) for w in normalise_text(_NEGATION_RE.sub(" ", o)).split()
                     if w not in ("do", "does", "did")) for o in d.options]
    if len(set(bare)) < len(bare):
        return f"options differ only by a negation: {d.options}"
    return None


LONG_RANGE_FRACTION = 0.25  # of the video's length between the evidence of a long-range question (tasks.qa_plan)


def evidence_fits_the_type(d: QADraft, ctx: VideoContext) -> str | None:
    """The evidence a type needs: an order needs two clips at least, a long-range question two stretches at least
    a quarter of the video apart."""
    clips = sorted((ctx.by_id[c] for c in set(d.evidence_clip_ids) if c in ctx.by_id), key=lambda c: c.start_s)
    if d.type == QAType.temporal_ordering and len(clips) < 2:
        return "an ordering question needs evidence in two clips at least"
    if d.type == QAType.long_range:
        gap = max((b.start_s - a.end_s for a, b in zip(clips, clips[1:])), default=-1.0)
        if gap < LONG_RANGE_FRACTION * ctx.duration_s:
            return (f"a long-range question needs evidence at least {LONG_RANGE_FRACTION:.0%} of the video apart "
                    f"(its clips are {max(gap, 0):.1f} s apart)")
    return None


# Words that relate a sight to a sound in an option ("X goes with Y", "X while Y is heard"), not things reported.
_RELATION_WORDS = frozenset(content_words("goes go with while when heard hears hear seen sees see shown shows show "
                                          "plays playing makes making sound sounds is are"))
_QUOTED_RE = re.compile(r'"([^"]{3,})"')


def _reported_words(clip: ClipDescription) -> set[str]:
    """The content words of a clip's timeline row: its sights' and sounds' phrases and its transcript."""
    facts = facts_of(clip)
    return content_words(" ".join([*(f.phrase for f in facts.sights), *(f.phrase for f in facts.sounds),
                                   clip.narration]))


CORRECT_OPTION_COVERAGE = 0.75  # of a correct option's words in its clip's row ("running" where the row says "runs")


def _share_of_option_reported(option: str, clip: ClipDescription) -> float:
    """The share of the option's words that the clip's row reports (a word matches one it starts or is started by,
    three letters at least: the crude stems of "runs" and "running" differ)."""
    said = content_words(option) - _RELATION_WORDS
    row = _reported_words(clip)
    found = [w for w in said if w in row or any(min(len(w), len(r)) >= 3 and (w.startswith(r) or r.startswith(w))
                                                 for r in row)]
    return len(found) / len(said) if said else 0.0


def _may_be_true_of(option: str, clip: ClipDescription) -> bool:
    """Every word the option reports is in the clip's row: nothing in it says the clip lacks what it names."""
    return _share_of_option_reported(option, clip) == 1.0


def _said_in(clip: ClipDescription, question: str) -> bool:
    """A phrase the question quotes is in the clip's transcript."""
    spoken = normalise_text(clip.narration)
    return any(normalise_text(q) in spoken for q in _QUOTED_RE.findall(question) if normalise_text(q))


_IS_RE = re.compile(r"\s+(?:is|are|was|were)\s+", re.IGNORECASE)


def options_not_tautologies(d: QADraft, ctx: VideoContext) -> str | None:
    """No option says a thing is itself ("the bird in the centre is a bird in the centre"): true of anything, it
    answers nothing."""
    for option in d.options:
        halves = _IS_RE.split(option.rstrip(".!? "), maxsplit=1)
        if len(halves) == 2 and content_words(halves[0]) and content_words(halves[0]) == content_words(halves[1]):
            return f"the option {option!r} says a thing is itself"
    return None


def authored_wrong_options_are_false(d: QADraft, ctx: VideoContext) -> str | None:
    """An authored pairing question's wrong options pair no sight with a sound that one clip has together (its
    words meet what the clip shows, and other words what it sounds like; or every word of it is in the clip's row:
    "the dark, black-and-white picture goes with the music" where that picture's clip has music); an authored
    speech-picture link's wrong options are not shown where the phrase is said. Code planned the planned mode's
    wrong options to be false; an LLM's may be true."""
    if not d.authored or d.type not in (QAType.global_av_inference, QAType.time_point_anchored,
                                        QAType.speech_picture_link):
        return None
    clips = [c for c in ctx.clips if _said_in(c, d.question)] if d.type == QAType.speech_picture_link else ctx.clips
    for i, option in enumerate(d.options):
        if i == d.answer_index:
            continue
        said = keys_of(option)
        for clip in clips:
            seen = said & keys_of(clip.visual)
            heard = said & keys_of(" ".join((clip.narration, clip.environment, clip.timbre, clip.event)))
            if (seen and heard and heard - seen) or _may_be_true_of(option, clip):
                return f"the wrong option {option!r} may be true of {clip.clip_id} (its row reports " \
                       f"{sorted(content_words(option) & _reported_words(clip))})"
    return None


def authored_correct_option_is_reported(d: QADraft, ctx: VideoContext) -> str | None:
    """An authored pairing, speech-picture, attribution or cause question's correct option is in the timeline: most
    words it reports are in one evidence clip's row (for a speech-picture link, the clip where the quoted phrase is
    said). A small model's "correct" option may belong to another clip than the one its question is about ("why does
    the team finish early?" -> "the tv makes the sound of a busy signal", heard elsewhere). A cause is an inference,
    but one from what the clip shows and sounds like, so its words are still the clip's."""
    if not d.authored or d.type not in (QAType.global_av_inference, QAType.speech_picture_link,
                                        QAType.source_attribution, QAType.causal_inference):
        return None
    evidence = [ctx.by_id[c] for c in d.evidence_clip_ids if c in ctx.by_id]
    if d.type == QAType.speech_picture_link:
        evidence = [c for c in ctx.clips if _said_in(c, d.question)]
        if not evidence:
            return "the quoted phrase is said in no clip's transcript"
    correct = d.options[d.answer_index]
    if not any(_share_of_option_reported(correct, c) >= CORRECT_OPTION_COVERAGE for c in evidence):
        return f"the correct option {correct!r} is not what the evidence clips report"
    return None


def evidence_clips_known(d: QADraft, ctx: VideoContext) -> str | None:
    if not d.evidence_clip_ids:
        return "no evidence clips"
    unknown = [c for c in d.evidence_clip_ids if c not in ctx.by_id]
    if unknown:
        return f"evidence clips not in video {ctx.video_id}: {unknown}"
    if d.type == QAType.cross_scene_transition and len(set(d.evidence_clip_ids)) < 2:
        return "a transition question needs two distinct evidence clips"
    return None


def timestamps_in_video(d: QADraft, ctx: VideoContext) -> str | None:
    """Every time the item states (anchor, timestamps written in the question or options) lies in the video."""
    times = [t for t in (d.start_s, d.end_s) if t is not None]
    for text in (d.question, *d.options):
        times += [parse_hms(m) for m in TIMESTAMP_RE.findall(text)]
    outside = [t for t in times if t < 0 or t > ctx.duration_s + TIME_TOLERANCE_S]
    if outside:
        return f"times {[hms(t) for t in outside]} outside the video (0 to {hms(ctx.duration_s)})"
    return None


def timestamps_match_clips(d: QADraft, ctx: VideoContext) -> str | None:
    """The anchor agrees with the evidence clips' bounds, and the question states the anchor it is about."""
    evidence = [ctx.by_id[c] for c in d.evidence_clip_ids if c in ctx.by_id]
    if not evidence:
        return "no known evidence clip to anchor to"
    stated = [parse_hms(m) for m in TIMESTAMP_RE.findall(d.question)]
    if d.type in UNANCHORED_TYPES:
        if d.start_s is not None or d.end_s is not None:
            return f"{d.type.value} is not anchored but has start_s/end_s"
        return None
    if d.start_s is None:
        return "anchored question without start_s"
    lo, hi = min(c.start_s for c in evidence), max(c.end_s for c in evidence)
    if d.type == QAType.time_point_anchored:
        if not any(c.start_s <= d.start_s <= c.end_s for c in evidence):
            return f"time point {hms(d.start_s)} is in none of the evidence clips"
        if not any(_close(t, d.start_s) for t in stated):
            return f"the question does not state its time point {hms(d.start_s)}"
        return None
    if d.end_s is None or not (_close(d.start_s, lo) and _close(d.end_s, hi)):
        return f"range {d.start_s}-{d.end_s} differs from the evidence clips' bounds {hms(lo)}-{hms(hi)}"
    if d.type == QAType.time_range_anchored:
        if not (any(_close(t, d.start_s) for t in stated) and any(_close(t, d.end_s) for t in stated)):
            return f"the question does not state its range {hms(d.start_s)} to {hms(d.end_s)}"
    elif stated:  # grounding: a timestamp in the question would give the answer away
        return "a grounding question must not state timestamps"
    return None


def grounding_options_are_clip_intervals(d: QADraft, ctx: VideoContext) -> str | None:
    """Grounding options are real clip intervals of this video, and the correct one is the anchored clip's."""
    if d.type != QAType.temporal_grounding:
        return None
    intervals = {(hms(c.start_s), hms(c.end_s)) for c in ctx.clips}
    for option in d.options:
        m = INTERVAL_OPTION_RE.match(option)
        if not m or m.groups() not in intervals:
            return f"option {option!r} is not a clip interval of {ctx.video_id}"
    if d.start_s is None or d.end_s is None or not 0 <= d.answer_index < len(d.options):
        return "no anchored answer"
    if d.options[d.answer_index] != f"From {hms(d.start_s)} to {hms(d.end_s)}":
        return "the correct option is not the anchored clip's interval"
    return None


def involves_seen_and_heard(d: QADraft, ctx: VideoContext) -> str | None:
    """The question and its correct answer use content words of the visual and of the audio side of the evidence
    clips, and not only words both sides share ("dog" in "a dog runs" and "dog barking" alone speaks for neither)."""
    evidence = [ctx.by_id[c] for c in d.evidence_clip_ids if c in ctx.by_id]
    seen_words: set[str] = set()
    heard_words: set[str] = set()
    for c in evidence:
        seen_words |= content_words(c.visual)
        heard_words |= content_words(" ".join((c.narration, c.environment, c.timbre, c.event, c.emotion)))
    text = d.question
    if d.type not in NAMELESS_OPTION_TYPES and 0 <= d.answer_index < len(d.options):
        text += " " + d.options[d.answer_index]
    words = content_words(text)
    seen_hits, heard_hits = words & seen_words, words & heard_words
    if not seen_hits:
        return "mentions nothing seen in the evidence clips"
    if not heard_hits:
        return "mentions nothing heard in the evidence clips"
    if seen_hits == heard_hits:
        return f"only words that both the images and the sound share ({sorted(seen_hits)})"
    return None


def names_only_what_the_timeline_has(d: QADraft, ctx: VideoContext) -> str | None:
    """The question and its correct answer name no entity, number or nameable thing that the video's perception
    (keyframe captions with objects and OCR text, transcript, audio event labels) never reported
    (``tasks.grounding``). The fused descriptions are not evidence here: they are an LLM's words too."""
    timeline = [t for c in ctx.clips for t in (c.visual, c.narration, c.environment, c.timbre, c.event, c.emotion)]
    text = d.question
    if d.type not in NAMELESS_OPTION_TYPES and 0 <= d.answer_index < len(d.options):
        text += " " + d.options[d.answer_index]
    missing = ungrounded_names(text, timeline, vocabulary=ctx.vocabulary)
    if missing:
        return f"names what the video's perception never reported: {missing}"
    return None


def question_key(d: QADraft) -> str:
    """What makes two items the same item: the question and its correct answer (two questions worded alike about
    different moments or with different answers are different items)."""
    correct = d.options[d.answer_index] if 0 <= d.answer_index < len(d.options) else ""
    return f"{d.question} || {correct}"


def no_duplicate_question(d: QADraft, ctx: VideoContext) -> str | None:
    mine = question_key(d)
    for other in ctx.accepted_questions:
        if normalise_text(other) == normalise_text(mine) or (
                token_overlap(other, mine) >= DUPLICATE_OVERLAP and _numbers(other) == _numbers(mine)):
            return f"duplicates an accepted question: {other.split(' || ')[0]!r}"
    return None


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+", text)


CHECKS: tuple[Check, ...] = (
    question_is_substantive,
    question_is_a_question,
    quotes_are_whole,
    question_is_anchored_as_its_type,
    question_names_its_cues,
    question_does_not_point_to_answer,
    options_not_singled_out_by_length,
    answer_index_valid,
    options_distinct,
    options_not_negations_of_each_other,
    evidence_clips_known,
    evidence_fits_the_type,
    authored_wrong_options_are_false,
    authored_correct_option_is_reported,
    options_not_tautologies,
    timestamps_in_video,
    timestamps_match_clips,
    grounding_options_are_clip_intervals,
    involves_seen_and_heard,
    names_only_what_the_timeline_has,
    no_duplicate_question,
)
CHECK_NAMES = tuple(c.__name__ for c in CHECKS)


@dataclass(frozen=True)
class CheckOutcome:
    passed: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (name, reason)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_checks(draft: QADraft, ctx: VideoContext, checks: tuple[Check, ...] = CHECKS) -> CheckOutcome:
    """All checks (not just up to the first failure), so a dead letter can list every reason."""
    passed, failed = [], []
    for check in checks:
        reason = check(draft, ctx)
        if reason is None:
            passed.append(check.__name__)
        else:
            failed.append((check.__name__, reason))
    return CheckOutcome(tuple(passed), tuple(failed))
