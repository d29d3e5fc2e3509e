"""What each question of a video is about and what its four options are: chosen by code from the clip facts.

A small LLM writes fluent question sentences but unreliable answers: on the embedded default it wrote options
such as "Speech / Event / Timbre / Emotion" and marked whichever it liked as correct. So the planner, not the
model, decides what is true. For each question it picks a target on the timeline, the facts the question names
(its *cues*), and four options of which exactly one is true by the timeline's own facts (``tasks.clip_facts``):
the wrong ones are sights and sounds of the same video that the target does not have (true elsewhere in the video,
so a reader cannot rule them out without watching and listening), or everyday things no clip of the video has
when the video has too few of its own. The LLM then only phrases the question from a card (``QuestionCard``);
code adds the anchor and shuffles the options.

Each type is designed so that one modality alone does not answer it:

- **global AV inference** and **time-point anchored**: which sight goes with which sound (in the video / at a time
  point). The options cross a sight and a sound: (A, X) true; (A, Z), (B, X), (B, Z) false, where A never comes with
  Z and B never with X. Someone who only saw (or only heard) can rule out two options, not three.
- **time-range anchored**: what is on screen while a named sound is heard in a range. Over two neighbouring clips the
  range shows two sights; the sound picks one of them.
- **cross-scene transition**: how the sound changes where the picture changes from one named sight to the next
  ("X, then Y"; wrong: the reverse, or a sound that is not heard on that side of the cut).
- **temporal grounding**: which clip interval shows a named sight while a named sound is heard; the wrong intervals
  are other clips that lack the sight or the sound (those lacking only one of them first: they need both senses).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from schemas.records import ClipDescription, QAType, clip_index_of, hms, parse_hms
from tasks.qa_checks import LONG_RANGE_FRACTION, NAMELESS_OPTION_TYPES, pointing_words, singled_out_by_length
from tasks.clip_facts import POSITIONS, keys_of, SPARE_SIGHTS, SPARE_SOUNDS, ClipFacts, Fact, facts_of, spare_facts

# Draft questions per type, in a few wordings (one picked per question with a seeded RNG). The model rewrites the
# draft in its own words; a small model often keeps it nearly as it is, which is still a correct question.
DRAFTS: dict[QAType, tuple[str, ...]] = {
    QAType.global_av_inference: (
        "Which sight and which sound occur together somewhere in this video?",
        "In this video, which of these is seen at the same time as the sound paired with it?",
        "Which pairing of something seen and something heard actually happens in the video?",
    ),
    QAType.time_point_anchored: (
        "what is on screen, and what is heard at that moment?",
        "which sight and which sound occur together at this moment?",
        "what can be seen and heard at this instant?",
    ),
    QAType.time_range_anchored: (
        "what is on screen while {sound} is heard?",
        "which of these is shown while {sound} can be heard?",
        "what do we see during the part where {sound} is heard?",
    ),
    QAType.cross_scene_transition: (
        "When the picture changes from {first} to {second}, how does the sound change?",
        "As the view cuts from {first} to {second}, what happens to the sound?",
    ),
    QAType.temporal_grounding: (
        "Which time range best captures the moment when {sight} is seen and {sound} is heard?",
        "When is {sight} visible while {sound} can be heard?",
    ),
    QAType.temporal_ordering: (
        "Which of these moments comes first in the video?",
        "Of these sights with their sounds, which happens earliest in the video?",
        "Which of these happens before the other three?",
    ),
    QAType.counting: (
        "How many separate times is {sight} seen while {sound} is heard?",
        "How often does the video show {sight} together with {sound}?",
    ),
    QAType.long_range: (
        "{Sound} is heard at two separate times; what is on screen the {ordinal} time?",
        "What is shown the {ordinal} time that {sound} is heard?",
    ),
    QAType.speech_picture_link: (
        "What is on screen when you hear {sound}?",
        "Which of these is shown while there is {sound}?",
    ),
}


MIN_POINT_SPAN_S = 1.0  # a time point sits in a stretch of its sound at least this long, inside the clip


def stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def interval_text(start_s: float, end_s: float) -> str:
    return f"From {hms(start_s)} to {hms(end_s)}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def pair_option(sight: Fact, sound: Fact) -> str:
    return _cap(f"{sight.phrase}, with {sound.phrase}")


def sequence_option(first: Fact, then: Fact) -> str:
    return _cap(f"{first.phrase}, then {then.phrase}")


@dataclass(frozen=True)
class PlannedQuestion:
    """One question before it is phrased: its target, cues and options (the correct one first)."""

    type: QAType
    clip_ids: tuple[str, ...]  # the evidence
    options: tuple[str, str, str, str]  # options[0] is correct
    cues: tuple[str, ...] = ()  # phrases the question must name
    anchor: str = ""  # "At hh:mm:ss.mmm" / "From a to b" / "" (written by code before the question)
    start_s: float | None = None
    end_s: float | None = None
    key: str = ""  # what the target is (a clip, a time, a sound)
    ordinal: str = ""  # long range: "first" or "second", the occurrence the question asks about
    rank: int = 0  # lower is asked first: designs that need both senses before those one sense can answer

    draft: str = ""  # the question in code's words, for the model to rewrite

    def card(self, n: int) -> dict:
        """What the LLM reads to phrase this question (quoted as data in the prompt)."""
        out: dict = {"n": n, "draft": self.draft}
        if self.cues:
            out["keep"] = list(self.cues)
        return out


@dataclass
class VideoPlan:
    """Every question each type can ask about one video, in a seeded order; ``take`` hands them out in rounds."""

    video_id: str
    duration_s: float
    facts: list[ClipFacts]  # the clips questions are about (a clip repeating the one before it is left out)
    seed: int = 0
    # Every clip of the video, repeats included: what counts and "the second time" are counted on. Empty when the
    # timeline has a gap (a clip without a description), where a count could miss a time.
    timeline: list[ClipFacts] = field(default_factory=list)
    candidates: dict[QAType, list[PlannedQuestion]] = field(default_factory=dict)
    _taken: dict[QAType, int] = field(default_factory=dict)
    _returned: dict[QAType, list[PlannedQuestion]] = field(default_factory=dict)

    @classmethod
    def build(cls, video_id: str, duration_s: float, timeline: Sequence[ClipDescription], seed: int = 0,
              every: Sequence[ClipDescription] | None = None) -> "VideoPlan":
        """``timeline``: the clips to ask about; ``every``: all clips of the video (default: ``timeline``)."""
        facts = [facts_of(c) for c in sorted(timeline, key=lambda c: c.start_s)]
        by_id = {f.clip_id: f for f in facts}
        whole = [by_id.get(c.clip_id) or facts_of(c) for c in sorted(every or timeline, key=lambda c: c.start_s)]
        complete = [_index(f.clip_id) for f in whole] == list(range(len(whole)))
        plan = cls(video_id, duration_s, facts, seed, whole if complete else [])
        plan.candidates = {t: [] for t in QAType}  # a type code cannot plan (authored only) has none
        for qa_type, planner in PLANNERS.items():
            found = [_with_draft(q, plan) for q in _distinct(planner(plan))]
            random.Random(stable_seed(seed, video_id, qa_type.value)).shuffle(found)
            plan.candidates[qa_type] = sorted(found, key=lambda q: q.rank)  # stable: seeded order within a rank
        return plan

    def take(self, qa_type: QAType, n: int) -> list[PlannedQuestion]:
        """The next ``n`` questions of a type: first those given back unphrased, then new candidates."""
        returned = self._returned.get(qa_type, [])
        out, returned[:] = returned[:n], returned[n:]
        start = self._taken.get(qa_type, 0)
        fresh = self.candidates.get(qa_type, [])[start:start + n - len(out)]
        self._taken[qa_type] = start + len(fresh)
        return out + fresh

    def give_back(self, planned: PlannedQuestion) -> None:
        """A question the model never phrased (its reply had no line for it): asked again in the next round."""
        self._returned.setdefault(planned.type, []).append(planned)

    # -- what the facts allow --------------------------------------------------------------------------------

    def sights(self) -> list[Fact]:
        return _distinct_facts(s for f in self.facts for s in f.sights)

    def sounds(self) -> list[Fact]:
        return _distinct_facts(s for f in self.facts for s in f.sounds)

    def spare_sights(self) -> list[Fact]:
        """Everyday things no clip shows; placed like the detector places its own ("a dog on the left") when the
        video's sights are, so that a spare does not stand out by its wording."""
        placed = any(s.phrase.endswith(POSITIONS) for s in self.sights())
        spares = [s for s in spare_facts(SPARE_SIGHTS, "spare") if not any(f.shows(s) for f in self.facts)]
        if placed:
            spares = [replace(s, phrase=f"{s.phrase} {self.rng('spare', s.phrase).choice(POSITIONS)}")
                      for s in spares]
        return spares

    def spare_sounds(self) -> list[Fact]:
        return [s for s in spare_facts(SPARE_SOUNDS, "spare") if not any(f.sounds_like(s) for f in self.facts)]

    def ever_together(self, sight: Fact, sound: Fact) -> bool:
        return any(f.shows(sight) and f.sounds_like(sound) for f in self.facts)

    def rng(self, *parts: object) -> random.Random:
        return random.Random(stable_seed(self.seed, self.video_id, *parts))


def _with_draft(q: PlannedQuestion, plan: "VideoPlan") -> PlannedQuestion:
    wordings = DRAFTS[q.type]
    wording = wordings[plan.rng("draft", q.type.value, q.key).randrange(len(wordings))]
    names = {"sound": q.cues[-1] if q.cues else "", "sight": q.cues[0] if q.cues else "", "ordinal": q.ordinal}
    names["Sound"] = _cap(names["sound"])
    if q.type == QAType.cross_scene_transition:
        names = {"first": q.cues[0], "second": q.cues[1]}
    return replace(q, draft=wording.format(**names))


def _distinct_facts(facts: Iterable[Fact]) -> list[Fact]:
    out: list[Fact] = []
    for f in facts:
        if f.keys and all(f.differs_from(o) for o in out):
            out.append(f)
    return out


def _distinct(questions: list[PlannedQuestion]) -> list[PlannedQuestion]:
    """Each question once, with four different options, none whose cues alone point at the answer (a sound cue
    whose words name the correct sight: the planner's own giveaway, not a model's) and none whose correct option
    stands out by its length."""
    seen: set[tuple] = set()
    out = []
    for q in questions:
        ident = (q.anchor, q.options[0], q.cues)
        named = q.type not in NAMELESS_OPTION_TYPES
        pointed = named and q.cues and pointing_words(" ".join(q.cues), list(q.options), 0)
        if named and singled_out_by_length(q.options, 0):
            continue
        if ident not in seen and len({o.casefold() for o in q.options}) == 4 and not pointed:
            seen.add(ident)
            out.append(q)
    return out


LENGTH_BAND = 8  # characters: wrong options are drawn from the band nearest the correct phrase's length first


def _pick(pool: Sequence[Fact], ok, rng: random.Random, n: int = 1, avoid: Sequence[Fact] = (),
          near: int | None = None) -> list[Fact]:
    """Up to ``n`` facts of ``pool`` (seeded order) for which ``ok`` holds, that differ from ``avoid`` and each
    other. ``near``: the correct phrase's length; candidates of a similar length come first, so that the correct
    option is not the one a reader could pick by its length (a seeded order within each band)."""
    candidates = list(pool)
    rng.shuffle(candidates)
    if near is not None:
        candidates.sort(key=lambda f: abs(len(f.phrase) - near) // LENGTH_BAND)
    chosen: list[Fact] = []
    for f in candidates:
        if ok(f) and all(f.differs_from(o) for o in [*avoid, *chosen]):
            chosen.append(f)
            if len(chosen) == n:
                break
    return chosen


def _own_then_spare(own: Sequence[Fact], spare: Sequence[Fact], ok, rng: random.Random, n: int,
                    avoid: Sequence[Fact], near: int | None = None) -> list[Fact]:
    """Wrong facts from the video's own first (plausible to anyone who did not watch and listen), then spares."""
    chosen = _pick(own, ok, rng, n, avoid, near)
    if len(chosen) < n:
        chosen += _pick(spare, ok, rng, n - len(chosen), [*avoid, *chosen], near)
    return chosen


# -- planners, one per type --------------------------------------------------------------------------------------


def _crossed(plan: VideoPlan, sight: Fact, sound: Fact, rng: random.Random, *, never_with) -> tuple[str, ...] | None:
    """The four crossed options (correct first): (A, X), (A, Z), (B, X), (B, Z)."""
    wrong_sound = _own_then_spare(plan.sounds(), plan.spare_sounds(), lambda z: never_with(sight, z), rng, 1,
                                  [sound], near=len(sound.phrase))
    wrong_sight = _own_then_spare(plan.sights(), plan.spare_sights(),
                                  lambda b: never_with(b, sound) and (not wrong_sound or never_with(b, wrong_sound[0])),
                                  rng, 1, [sight], near=len(sight.phrase))
    if not wrong_sound or not wrong_sight:
        return None
    z, b = wrong_sound[0], wrong_sight[0]
    return pair_option(sight, sound), pair_option(sight, z), pair_option(b, sound), pair_option(b, z)


def _weak(sight: Fact) -> int:
    """1 for a sight that is only the picture's brightness and colours: asked after objects and on-screen text."""
    return 1 if sight.kind == "picture" else 0


def plan_global(plan: VideoPlan) -> list[PlannedQuestion]:
    out = []
    for f in plan.facts:
        for sight in f.sights[:1]:
            for sound in f.sounds[:2]:
                rng = plan.rng("global", f.clip_id, sound.phrase)
                options = _crossed(plan, sight, sound, rng,
                                   never_with=lambda a, x: not plan.ever_together(a, x))
                if options is None:
                    continue
                # Evidence: the clips that have this very sight and sound (not just a word of them: "a pure tone near
                # 698 Hz" is not the 2976 Hz tone of another clip).
                evidence = tuple(g.clip_id for g in plan.facts if g.has(sight, sound))
                out.append(PlannedQuestion(QAType.global_av_inference, evidence, options, key=f.clip_id,
                                           rank=_weak(sight)))
    return out


def _time_point(f: ClipFacts, sound: Fact) -> float | None:
    """A time inside the clip where ``sound`` is heard (the middle of its longest span there), on the
    millisecond grid the question prints. A free-text description of the clip's sound (no label times at all)
    covers the clip; speech without times does not: a moment could fall between its words."""
    if not sound.spans and sound.kind == "description" and not any(s.spans for s in f.sounds):
        return parse_hms(hms((f.start_s + f.end_s) / 2))
    spans = [(max(s, f.start_s), min(e, f.end_s)) for s, e in sound.spans]
    spans = [(s, e) for s, e in spans if e - s >= MIN_POINT_SPAN_S]
    if not spans:
        return None
    s, e = max(spans, key=lambda se: se[1] - se[0])
    return parse_hms(hms((s + e) / 2))


def plan_time_point(plan: VideoPlan) -> list[PlannedQuestion]:
    out = []
    for f in plan.facts:
        for sight in f.sights[:1]:
            for sound in f.sounds:
                t = _time_point(f, sound)
                if t is None:  # speech and free-text sounds have no times: the moment could miss them
                    continue
                rng = plan.rng("point", f.clip_id, sound.phrase)
                options = _crossed(plan, sight, sound, rng,
                                   never_with=lambda a, x, f=f: not (f.shows(a) and f.sounds_like(x)))
                if options is None:
                    continue
                out.append(PlannedQuestion(QAType.time_point_anchored, (f.clip_id,), options,
                                           anchor=f"At {hms(t)}", start_s=t, key=f"{f.clip_id}@{t}",
                                           rank=_weak(sight)))
    return out


def plan_time_range(plan: VideoPlan) -> list[PlannedQuestion]:
    out = []
    facts = plan.facts
    for a, b in zip(facts, facts[1:]):
        if _index(b.clip_id) != _index(a.clip_id) + 1 or not a.main_sight or not b.main_sight:
            continue
        # Over two neighbouring clips: the sound heard only in one of them picks its sight out of the two seen.
        for here, there in ((a, b), (b, a)):
            sight, other_sight = here.main_sight, there.main_sight
            if not sight.differs_from(other_sight) or here.shows(other_sight) or there.shows(sight):
                continue
            for sound in here.sounds[:2]:
                if there.sounds_like(sound):
                    continue
                rng = plan.rng("range2", here.clip_id, sound.phrase)
                wrong = _own_then_spare(plan.sights(), plan.spare_sights(),
                                        lambda s, a=a, b=b: not a.shows(s) and not b.shows(s), rng, 2,
                                        [sight, other_sight], near=len(sight.phrase))
                if len(wrong) < 2:
                    continue
                options = (_cap(sight.phrase), _cap(other_sight.phrase), *(_cap(w.phrase) for w in wrong))
                out.append(PlannedQuestion(QAType.time_range_anchored, (a.clip_id, b.clip_id), options,
                                           cues=(sound.phrase,), anchor=interval_text(a.start_s, b.end_s),
                                           start_s=a.start_s, end_s=b.end_s, key=f"{here.clip_id}+{sound.phrase}"))
    for f in facts:  # one clip: what is seen while its sound is heard
        for sight in f.sights[:1]:
            for sound in f.sounds[:2]:
                rng = plan.rng("range1", f.clip_id, sound.phrase)
                wrong = _own_then_spare(plan.sights(), plan.spare_sights(), lambda s, f=f: not f.shows(s), rng, 3,
                                        [sight], near=len(sight.phrase))
                if len(wrong) < 3:
                    continue
                options = (_cap(sight.phrase), *(_cap(w.phrase) for w in wrong))
                # One sense answers it (the range shows one sight): asked after the two-clip questions.
                out.append(PlannedQuestion(QAType.time_range_anchored, (f.clip_id,), options, cues=(sound.phrase,),
                                           anchor=interval_text(f.start_s, f.end_s), start_s=f.start_s,
                                           end_s=f.end_s, key=f"{f.clip_id}+{sound.phrase}", rank=1))
    return out


def _index(clip_id: str) -> int:
    return clip_index_of(clip_id)


def plan_transition(plan: VideoPlan) -> list[PlannedQuestion]:
    out = []
    facts = plan.facts
    for a, b in zip(facts, facts[1:]):
        if not (a.main_sight and b.main_sight and a.sounds and b.sounds):
            continue
        first, second = a.main_sight, b.main_sight
        if not first.differs_from(second) or b.shows(first) or a.shows(second):
            continue  # the picture must really change
        # The same change of picture elsewhere in the video would make the question ambiguous.
        if any(c.shows(first) and d.shows(second) for c, d in zip(facts, facts[1:]) if c is not a):
            continue
        # The sounds either side of the cut: the last heard before it, the first heard after it (those with times
        # first; a sound without times covers its clip).
        x = next((s for s in sorted(a.sounds, key=lambda s: -max((e for _, e in s.spans), default=a.end_s))
                  if not b.sounds_like(s)), None)
        y = next((s for s in sorted(b.sounds, key=lambda s: min((t for t, _ in s.spans), default=b.start_s))
                  if not a.sounds_like(s)), None)
        if x is None or y is None or not x.differs_from(y):
            continue  # the sound must really change too
        rng = plan.rng("transition", a.clip_id)
        w = _own_then_spare(plan.sounds(), plan.spare_sounds(), lambda s, b=b: not b.sounds_like(s), rng, 1, [x, y],
                            near=len(y.phrase))
        v = _own_then_spare(plan.sounds(), plan.spare_sounds(), lambda s, a=a: not a.sounds_like(s), rng, 1,
                            [x, y, *w], near=len(x.phrase))
        if not w or not v:
            continue
        options = (sequence_option(x, y), sequence_option(y, x), sequence_option(x, w[0]), sequence_option(v[0], y))
        out.append(PlannedQuestion(QAType.cross_scene_transition, (a.clip_id, b.clip_id), options,
                                   cues=(first.phrase, second.phrase), key=a.clip_id))
    return out


def plan_grounding(plan: VideoPlan) -> list[PlannedQuestion]:
    out = []
    for f in plan.facts:
        for sight in f.sights[:1]:
            for sound in f.sounds[:2]:
                others = [g for g in plan.facts if g is not f and not (g.shows(sight) and g.sounds_like(sound))]
                if len(others) < 3 or any(g is not f and g.shows(sight) and g.sounds_like(sound) for g in plan.facts):
                    continue  # another clip has both: two options would be right
                rng = plan.rng("grounding", f.clip_id, sound.phrase)
                rng.shuffle(others)
                # Clips with one of the two first: ruling them out takes both senses.
                others.sort(key=lambda g: 0 if (g.shows(sight) or g.sounds_like(sound)) else 1)
                options = tuple(interval_text(g.start_s, g.end_s) for g in [f, *others[:3]])
                out.append(PlannedQuestion(QAType.temporal_grounding, (f.clip_id,), options,  # type: ignore[arg-type]
                                           cues=(sight.phrase, sound.phrase), start_s=f.start_s, end_s=f.end_s,
                                           key=f"{f.clip_id}+{sound.phrase}", rank=_weak(sight)))
    return out


# -- reasoning types: order, count, long range, what is seen when a voice says something ---------------------------


def _runs(plan: VideoPlan, holds) -> list[list[ClipFacts]]:
    """The separate stretches of the whole timeline (neighbouring clips joined) where ``holds(clip)`` is true."""
    runs: list[list[ClipFacts]] = []
    last = None
    for f in plan.timeline:
        if holds(f):
            if runs and last is not None and _index(f.clip_id) == _index(last.clip_id) + 1 and holds(last):
                runs[-1].append(f)
            else:
                runs.append([f])
        last = f
    return runs


def plan_ordering(plan: VideoPlan) -> list[PlannedQuestion]:
    """Which of four moments (a sight with a sound, each of a different clip) comes first. Every option is true of
    its own clip; the wrong ones are true of no clip up to the correct one's (so only the correct one is first)."""
    out = []
    if not plan.timeline:
        return out  # a clip without a description could hold an option earlier
    # Each clip's main sight with each of its first sounds (a voice in every clip must not leave only one moment).
    events = [(f, f.main_sight, s) for f in plan.facts if f.main_sight for s in f.sounds[:3]]
    for first, sight, sound in events:
        later = [(g, a, x) for g, a, x in events if g.start_s > first.start_s
                 and a.differs_from(sight) and x.differs_from(sound)
                 and not any(h.shows(a) and h.may_hear(x) for h in plan.timeline if h.start_s <= first.start_s)]
        rng = plan.rng("ordering", first.clip_id)
        rng.shuffle(later)
        chosen: list[tuple[ClipFacts, Fact, Fact]] = []
        for g, a, x in later:
            if all(g is not h and a.differs_from(b) and x.differs_from(y) for h, b, y in chosen):
                chosen.append((g, a, x))
            if len(chosen) == 3:
                break
        if len(chosen) < 3:
            continue
        options = (pair_option(sight, sound), *(pair_option(a, x) for _, a, x in chosen))
        evidence = tuple(sorted({first.clip_id, *(g.clip_id for g, _, _ in chosen)}, key=_index))
        out.append(PlannedQuestion(QAType.temporal_ordering, evidence, options, key=f"{first.clip_id}+{sound.phrase}",
                                   rank=_weak(sight)))
    return out


COUNT_WORDS = ("Once", "Twice", "Three times", "Four times", "Five times")


def plan_counting(plan: VideoPlan) -> list[PlannedQuestion]:
    """How many separate times a sight is seen while a sound is heard: the stretches of the whole timeline whose
    clips have both (these very phrases). Asked only where no other clip may have them too (a clip whose words meet
    the sight and the sound without those phrases would make the count uncertain)."""
    out = []
    seen: set[tuple[str, str]] = set()
    for f in plan.facts:
        for sight in f.sights[:1]:
            for sound in f.sounds[:2]:
                if (sight.phrase, sound.phrase) in seen:
                    continue
                seen.add((sight.phrase, sound.phrase))
                sure = _runs(plan, lambda g, a=sight, x=sound: g.has(a, x))
                maybe = _runs(plan, lambda g, a=sight, x=sound: g.shows(a) and g.may_hear(x))
                n = len(sure)
                # Once is not asked: in short videos nearly every pair is seen once, and "Once" would be the answer
                # a reader learns to pick without looking.
                if sure != maybe or not 2 <= n <= len(COUNT_WORDS):
                    continue
                rng = plan.rng("counting", sight.phrase, sound.phrase)
                others = sorted((c for c in range(1, len(COUNT_WORDS) + 1) if c != n),
                                key=lambda c: (abs(c - n), rng.random()))[:3]
                options = (COUNT_WORDS[n - 1], *(COUNT_WORDS[c - 1] for c in others))
                # Both senses: the sight alone, or the sound alone, would be counted differently.
                alone = {len(_runs(plan, lambda g, a=sight: g.has_sight(a))),
                         len(_runs(plan, lambda g, x=sound: g.has_sound(x)))}
                evidence = tuple(g.clip_id for run in sure for g in run)
                out.append(PlannedQuestion(QAType.counting, evidence, options, cues=(sight.phrase, sound.phrase),
                                           key=f"{sight.phrase}+{sound.phrase}",
                                           rank=(0 if alone != {n} else 1) + _weak(sight)))
    return out




def plan_long_range(plan: VideoPlan) -> list[PlannedQuestion]:
    """A sound heard at two times far apart, and what is on screen the first or the second time: the other time's
    sight is among the wrong options, so a reader must find the right occurrence by ear and then look."""
    out = []
    for sound in plan.sounds():
        sure = _runs(plan, lambda g, x=sound: g.has_sound(x))
        if len(sure) != 2 or sure != _runs(plan, lambda g, x=sound: g.may_hear(x)):
            continue
        early, late = sure[0][0], sure[1][0]
        gap = late.start_s - sure[0][-1].end_s
        if gap < LONG_RANGE_FRACTION * plan.duration_s or _index(late.clip_id) - _index(sure[0][-1].clip_id) < 2:
            continue
        if not (early.main_sight and late.main_sight) or not early.main_sight.differs_from(late.main_sight):
            continue
        evidence = tuple(g.clip_id for run in sure for g in run)
        for which, here, there in (("first", sure[0], sure[1]), ("second", sure[1], sure[0])):
            # What is on screen as the sound starts again; nothing of a wrong option is shown while it is heard.
            sight, trap = here[0].main_sight, there[0].main_sight
            if any(h.shows(trap) for h in here) or any(t.shows(sight) for t in there):
                continue
            rng = plan.rng("long_range", sound.phrase, which)
            wrong = _own_then_spare(plan.sights(), plan.spare_sights(),
                                    lambda s, here=here: not any(h.shows(s) for h in here), rng, 2, [sight, trap],
                                    near=len(sight.phrase))
            if len(wrong) < 2:
                continue
            options = (_cap(sight.phrase), _cap(trap.phrase), *(_cap(w.phrase) for w in wrong))
            out.append(PlannedQuestion(QAType.long_range, evidence, options,
                                       cues=(sound.phrase,), key=f"{sound.phrase}@{which}", ordinal=which,
                                       rank=_weak(sight)))
    return out


def plan_speech_picture(plan: VideoPlan) -> list[PlannedQuestion]:
    """What is on screen while a voice says a quoted phrase: the words pick the clip (by ear), the sight answers."""
    out = []
    for f in plan.facts:
        speech = next((s for s in f.sounds if s.kind == "speech"), None)
        if speech is None or not f.main_sight:
            continue
        # The quoted words must be this clip's alone: said elsewhere too, the moment is not one.
        said = keys_of(f.clip.narration)
        if not plan.timeline or any(g.clip_id != f.clip_id and said <= keys_of(g.clip.narration)
                                    for g in plan.timeline):
            continue
        sight = f.main_sight
        rng = plan.rng("speech", f.clip_id)
        wrong = _own_then_spare(plan.sights(), plan.spare_sights(), lambda s, f=f: not f.shows(s), rng, 3, [sight],
                                near=len(sight.phrase))
        if len(wrong) < 3:
            continue
        options = (_cap(sight.phrase), *(_cap(w.phrase) for w in wrong))
        out.append(PlannedQuestion(QAType.speech_picture_link, (f.clip_id,), options, cues=(speech.phrase,),
                                   key=f.clip_id, rank=_weak(sight)))
    return out


PLANNERS = {
    QAType.global_av_inference: plan_global,
    QAType.cross_scene_transition: plan_transition,
    QAType.time_point_anchored: plan_time_point,
    QAType.time_range_anchored: plan_time_range,
    QAType.temporal_grounding: plan_grounding,
    QAType.temporal_ordering: plan_ordering,
    QAType.counting: plan_counting,
    QAType.long_range: plan_long_range,
    QAType.speech_picture_link: plan_speech_picture,
}
