"""What one clip shows and sounds like, as short phrases a question can quote: the facts the QA planner works with.

The timeline (``ClipDescription``) carries what perception reported, in the captioners' and the tagger's own words:
keyframe captions ("A bird in the centre; looks like patas (ImageNet); bright, colourful frame mostly blue; some
movement between keyframes.") and five audio axes of labels with their times ("Music x2 (15.7-20.6 s, 22.6-23.0 s);
Bird vocalization, bird call, bird song (16.3-17.8 s)"). A question writer copies whatever it is offered, so the
facts it gets are the parts a person would say, and nothing else:

- **sights**: the objects the detector counted and placed, the on-screen text OCR read, or (only when neither
  exists) the picture's brightness and colours. ImageNet hints are left out: they are guesses ("crutch", "patas")
  that a benchmark must not assert; pixel motion is not something anyone sees.
- **sounds**: the speech (its first words), the tagger's labels (AudioSet names made readable: "bird song", not
  "Bird vocalization, bird call, bird song"), and the signal measures that name a sound ("a pure tone near 440 Hz",
  "a regular beat at 90 bpm", "white noise"). Moods and timbre adjectives are left out: they are judgements. Where
  a measure and a tagger label describe the same stretch of a synthetic sound (a 440 Hz tone that YAMNet calls
  "Sine wave", "Busy signal" and "Telephone"), the measure is kept.

Each fact also carries its **keys** (stemmed content words): two facts with disjoint keys are different things, and
a fact whose keys meet a clip's words may be true of that clip. The planner uses keys to make every wrong option
false and the correct one true (``tasks.qa_plan``). Free-text captions and audio axes (a VLM's or CoCa's caption, an
audio-language model's description) have no clause structure to read: each of their sentences is one fact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Sequence

from schemas.records import AudioCaption, ClipDescription
from tasks.grounding import words

MAX_SPEECH_WORDS = 8
MAX_SIGHTS = 3
MAX_SOUNDS = 4
# Words that say nothing about which thing a fact names: articles, positions, the vocabulary of the medium.
_NOT_KEYS = frozenset(words("""
a an the and or of in on at to with near its it is are was be by from for as this that
centre center left right top bottom middle side screen picture frame image scene view
sound noise heard hear seen see mostly partly some many several one two three four five six seven eight nine ten
reads read word words text on-screen voice saying says said
bright dim dark lit moderately colourful colorful muted black-and-white
"""))

# Signal-measure labels (tasks.taggers.signal_analysis) and how a person says them.
_MEASURES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^pure tone near (\d+) Hz.*$", re.I), r"a pure tone near \1 Hz"),
    (re.compile(r"^regular beat at (\d+) bpm$", re.I), r"a regular beat at \1 bpm"),
    (re.compile(r"^(white|pink|brown) noise, broadband hiss$", re.I), r"\1 noise"),
    (re.compile(r"^short sharp clicks pitched near \d+ Hz$", re.I), r"sharp clicks"),
    (re.compile(r"^sudden loud sound$", re.I), r"a sudden loud sound"),
)
# Descriptors that judge a sound rather than name it (timbre adjectives, voice register).
_JUDGEMENTS = re.compile(r"^(tonal|mixed)\b.*\bsound$|^voice, \w+ register\b", re.I)
_VOICE_RE = re.compile(r"^voice, \w+ register\b", re.I)
_AXIS_TIMES_RE = re.compile(r"\s*(?:x\d+\s*)?\(((?:\d+(?:\.\d+)?-\d+(?:\.\d+)?\s*s(?:,\s*)?)+)"
                            r"(?:\s*and \d+ more)?\)\s*$")
_SPAN_RE = re.compile(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)\s*s")
_UNINTELLIGIBLE = "unintelligible speech"
_OCR_RE = re.compile(r"""on-screen text reads ["'](.+?)["']\s*$""", re.I)
_COLOUR_RE = re.compile(r"^(.*?)\bframe mostly (.+)$", re.I)
_PARENS_RE = re.compile(r"\s*\([^)]*\)")
_OCR_NOISE_RE = re.compile(r"\b\d[\d:.]*\b")


@dataclass(frozen=True)
class Fact:
    """One sight or sound: the phrase a question quotes, its keys, and (sounds) when it is heard."""

    phrase: str
    keys: frozenset[str]
    spans: tuple[tuple[float, float], ...] = ()  # seconds on the video; () when not known (speech, free text)
    kind: str = ""  # sight: object | text | picture | caption; sound: speech | measure | label | description

    def differs_from(self, other: "Fact") -> bool:
        return not (self.keys & other.keys)


def keys_of(text: str) -> frozenset[str]:
    return frozenset(words(text) - _NOT_KEYS)


_SENTENCE_END_RE = re.compile(r"[.!?]+\s+")
_ABBREVIATIONS = frozenset("st mr mrs ms dr vs etc e.g i.e no approx".split())


def _sentences(text: str) -> list[str]:
    """Sentences, whatever case follows the full stop (CoCa and many VLMs write lowercase), never split inside a
    quotation (on-screen text may hold a full stop) or after an abbreviation ("St. Bernard")."""
    out, start = [], 0
    for m in _SENTENCE_END_RE.finditer(text):
        before = text[start:m.start()]
        last_word = before.rsplit(None, 1)[-1].lower() if before.split() else ""
        if before.count('"') % 2 or last_word in _ABBREVIATIONS:
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s.strip(" .!?")]


def _lower_first(text: str) -> str:
    """"A bird in the centre" -> "a bird in the centre"; an acronym or a shouted word stays as it is."""
    first = text.split(" ", 1)[0]
    return text if len(first) > 1 and first.isupper() else text[:1].lower() + text[1:]


def sights_of(visual: str) -> list[Fact]:
    """The sights of a clip's keyframe captions, most telling first, without repeats."""
    objects: list[Fact] = []
    texts: list[Fact] = []
    pictures: list[Fact] = []
    for sentence in _sentences(visual):
        clauses = [c.strip() for c in sentence.rstrip(".!?").split("; ") if c.strip()]
        structured = len(clauses) > 1 or sentence.lower().startswith("no coco object")
        for clause in clauses:
            low = clause.lower()
            if low.startswith("no coco object") or "(imagenet)" in low or "between keyframes" in low:
                continue
            if low in ("a face visible", "faces visible") or re.fullmatch(r"\d+ faces visible", low):
                continue  # the person detector says it better; a face alone is rarely what a frame is about
            if m := _OCR_RE.search(clause):
                shown = " ".join(_OCR_NOISE_RE.sub(" ", m.group(1)).split())
                if len(re.sub(r"[^A-Za-z]", "", shown)) >= 3:
                    texts.append(Fact(f'the on-screen text "{shown}"', keys_of(shown), kind="text"))
                continue
            if m := _COLOUR_RE.match(clause):
                look = m.group(1).strip().rstrip(",")
                phrase = f"a {look + ' ' if look else ''}picture, mostly {m.group(2).strip()}"
                pictures.append(Fact(phrase, keys_of(m.group(2)), kind="picture"))
                continue
            phrase = _lower_first(clause)
            objects.append(Fact(phrase, keys_of(phrase), kind="object" if structured else "caption"))
    ranked = _unique(objects) + _unique(texts)
    if not ranked:
        ranked = _unique(pictures)[:1]
    return ranked[:MAX_SIGHTS]


def _letters(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def _unique(facts: Iterable[Fact]) -> list[Fact]:
    """Without repeats: the same keys, or the same letters ("GENTLE GARDEN" and "GENTLEGARDEN" read twice)."""
    out: list[Fact] = []
    for f in facts:
        if f.keys and all(f.keys != o.keys and _letters(f.phrase) != _letters(o.phrase) for o in out):
            out.append(f)
    return out


def _axis_items(text: str) -> list[tuple[str, tuple[tuple[float, float], ...]]]:
    """``"Music x2 (15.7-20.6 s, 22.6-23.0 s); Ding (1.0-2.0 s)"`` -> [("Music", spans), ("Ding", spans)]."""
    items = []
    for part in (p.strip() for p in text.split("; ")):
        if not part:
            continue
        m = _AXIS_TIMES_RE.search(part)
        spans = tuple((float(a), float(b)) for a, b in _SPAN_RE.findall(m.group(1))) if m else ()
        items.append((part[:m.start()].strip() if m else part, spans))
    return items


def _label_phrase(label: str) -> tuple[str, str] | None:
    """(phrase, kind) for one tagger label or measure; None for a judgement."""
    for pattern, replacement in _MEASURES:
        if pattern.match(label):
            return pattern.sub(replacement, label).lower().replace(" hz", " Hz"), "measure"
    if _JUDGEMENTS.search(label):
        return None
    name = _PARENS_RE.sub("", label).strip()
    parts = [p.strip() for p in name.split(",") if p.strip()]
    place = parts[0].lower() if parts else ""
    if len(parts) > 1 and place in ("inside", "outside", "indoor", "outdoor"):  # AudioSet's acoustic scenes
        return f"{place} ambience", "label"
    if len(parts) > 1 and re.match(r"(?:and|or)\s", parts[-1], re.I):
        # One class that names several things ("Dishes, pots, and pans"): said whole, as a person lists them.
        name = ", ".join(parts[:-1]) + " " + parts[-1]
    elif len(parts) > 1 and all(len(p.split()) <= 3 for p in parts):
        name = parts[-1]  # AudioSet lists synonyms, most specific last ("Bird vocalization, bird call, bird song")
    name = _PLAIN_NAMES.get(name.lower(), name.lower())
    return (_label_sound(name), "label") if name else None


# AudioSet names no one says aloud, and what a person says instead.
_PLAIN_NAMES = {"mastication": "chewing", "man speaking": "a man speaking", "woman speaking": "a woman speaking",
                "kid speaking": "a child speaking", "monologue": "speech", "speech synthesizer": "a synthetic voice",
                "conversation": "people talking", "clip-clop": "hooves clip-clopping", "tick-tock": "a clock ticking"}


# Sounds named without an article: what is heard as a mass, not as one thing sounding.
_MASS_SOUNDS = frozenset("""music silence speech applause laughter rain wind thunder static chatter traffic water fire
steam hubbub cheering clapping crying singing whistling humming breathing snoring typing drumming footsteps
bird song birdsong babbling""".split())


def _label_sound(name: str) -> str:
    """A tagger's class name as a sound: "music", "bird song", "the sound of a car", "the sound of wild animals"."""
    last = name.split()[-1]
    if name.startswith(("a ", "an ", "the ", "people ", "hooves ")) or name in _MASS_SOUNDS or last in _MASS_SOUNDS \
            or last.endswith(("noise", "ing")) or " song" in f" {name}":
        return name
    if last.endswith("s") and not last.endswith("ss"):
        return f"the sound of {name}"
    return f"the sound of {'an' if name[0] in 'aeiou' else 'a'} {name}"


def _speech_phrase(narration: str) -> str:
    said = narration.split()
    quote = " ".join(said[:MAX_SPEECH_WORDS]).rstrip(".,;:!?")
    return f'a voice saying "{quote}{" ..." if len(said) > MAX_SPEECH_WORDS else ""}"'


def _overlap(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """Seconds of ``a`` covered by ``b`` over ``a``'s own seconds (0 when either has no spans)."""
    total = sum(e - s for s, e in a)
    if not total or not b:
        return 0.0
    shared = sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)
    return shared / total


def sounds_of(clip: ClipDescription | AudioCaption, *, speech: bool = True) -> list[Fact]:
    """The sounds of a clip's audio axes, the longest-heard first: speech (unless ``speech=False``), measured
    sounds, tagger labels."""
    facts: list[Fact] = []
    narration = clip.narration.strip() if speech else ""
    # Where a voice is heard: the signal measures time it ("voice, low register, ... (20.8-24.2 s)"); the transcript
    # in the caption has no times of its own.
    voiced = tuple(span for label, spans in _axis_items(clip.timbre) if _VOICE_RE.match(label) for span in spans)
    if narration.lower().startswith(_UNINTELLIGIBLE):
        pass  # the tagger alone heard a voice (it does over silent tracks): a speech claim needs the transcriber
    elif narration:
        facts.append(Fact(_speech_phrase(narration), keys_of(narration) | {"speech"}, voiced, "speech"))
    measured: list[Fact] = []
    labelled: list[Fact] = []
    free: list[Fact] = []
    for axis in ("event", "environment", "timbre"):
        text = getattr(clip, axis).strip()
        if not text:
            continue
        items = _axis_items(text)
        if not any(spans for _, spans in items):
            # Free text (an audio-language model's description, a hand-written caption): sentence by sentence,
            # like a free visual caption; the tagger's labels always carry their times.
            free.extend(Fact(_lower_first(s.rstrip(".!?")), keys_of(s), (), "description") for s in _sentences(text))
            continue
        for label, spans in items:
            said = _label_phrase(label)
            if said is None:
                continue
            phrase, kind = said
            (measured if kind == "measure" else labelled).append(Fact(phrase, keys_of(phrase), spans, kind))
    # A tagger label over the same stretch as a measure names the same synthetic sound less exactly; the clicks of
    # a beat are the beat.
    labelled = [f for f in labelled if not any(_overlap(f.spans, m.spans) > 0.5 for m in measured)]
    beats = [m for m in measured if "beat" in m.keys]
    measured = [m for m in measured if m.phrase != "sharp clicks" or not any(_overlap(m.spans, b.spans) > 0.5
                                                                             for b in beats)]
    # A broader label over the same stretch as a narrower one it shares a word with ("bird" and "bird song").
    labelled = [f for i, f in enumerate(labelled) if not any(
        o is not f and f.keys < o.keys and _overlap(f.spans, o.spans) > 0.5 for o in labelled)]
    # Silence is a sound only where nothing else is heard.
    others = [f for f in measured + labelled if f.keys != keys_of("silence")]
    labelled = [f for f in labelled if f.keys != keys_of("silence") or not any(
        _overlap(f.spans, o.spans) > 0.5 for o in others)]
    heard = sorted(measured + labelled, key=lambda f: -sum(e - s for s, e in f.spans))
    return _unique(facts + heard + free)[:MAX_SOUNDS]


@dataclass(frozen=True)
class ClipFacts:
    """A clip of the timeline as the QA planner sees it."""

    clip: ClipDescription
    sights: tuple[Fact, ...]
    sounds: tuple[Fact, ...]
    # Every word perception reported for the clip, per modality: a wrong option must not meet these.
    seen_words: frozenset[str] = field(default_factory=frozenset)
    heard_words: frozenset[str] = field(default_factory=frozenset)

    @property
    def clip_id(self) -> str:
        return self.clip.clip_id

    @property
    def start_s(self) -> float:
        return self.clip.start_s

    @property
    def end_s(self) -> float:
        return self.clip.end_s

    @cached_property
    def main_sight(self) -> Fact | None:
        return self.sights[0] if self.sights else None

    @cached_property
    def main_sound(self) -> Fact | None:
        return self.sounds[0] if self.sounds else None

    def shows(self, sight: Fact) -> bool:
        """``sight`` may be true of this clip (its keys meet what the captions say)."""
        return bool(sight.keys & self.seen_words)

    def sounds_like(self, sound: Fact) -> bool:
        """``sound`` may be heard in this clip (its keys meet what the audio stages reported)."""
        return bool(sound.keys & self.heard_words)

    def may_hear(self, sound: Fact) -> bool:
        """``sound`` may be heard here. A measured sound by its measure: a tone near 660 Hz is not one near 440 Hz,
        a beat at 150 bpm is the beat at 149 (within ``MEASURE_TOLERANCE``); anything else by shared words."""
        if sound.kind != "measure" or not _MEASURE_NUMBER_RE.search(sound.phrase):
            return self.sounds_like(sound)
        family, value = _measure_of(sound)
        return any(s.kind == "measure" and _measure_of(s)[0] == family
                   and abs(_measure_of(s)[1] - value) <= MEASURE_TOLERANCE * value for s in self.sounds)

    def has_sight(self, sight: Fact) -> bool:
        """This clip's own sights include ``sight`` (the same phrase, not just shared words)."""
        return any(s.phrase == sight.phrase for s in self.sights)

    def has_sound(self, sound: Fact) -> bool:
        return any(s.phrase == sound.phrase for s in self.sounds)

    def has(self, sight: Fact, sound: Fact) -> bool:
        """This clip's own facts include ``sight`` and ``sound`` (the same phrases, not just shared words)."""
        return self.has_sight(sight) and self.has_sound(sound)

    def signature(self) -> tuple[frozenset[str], frozenset[str]]:
        """What tells this clip apart for a question: its main sight's and main sound's keys."""
        return (self.main_sight.keys if self.main_sight else frozenset(),
                self.main_sound.keys if self.main_sound else frozenset())


MEASURE_TOLERANCE = 0.03  # two measures of one sound (a beat at 149 and at 150 bpm) differ by less than this
_MEASURE_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


def _measure_of(fact: Fact) -> tuple[str, float]:
    """("a pure tone near # Hz", 660.0) for "a pure tone near 660 Hz"; the number 0 for a measure without one."""
    m = _MEASURE_NUMBER_RE.search(fact.phrase)
    return _MEASURE_NUMBER_RE.sub("#", fact.phrase), float(m.group()) if m else 0.0


def facts_of(clip: ClipDescription) -> ClipFacts:
    heard = " ".join((clip.narration, clip.environment, clip.timbre, clip.event))
    heard_words = keys_of(heard)
    if clip.narration.strip():
        heard_words |= {"speech", "voice"} | keys_of("speak talk say")
    return ClipFacts(clip, tuple(sights_of(clip.visual)), tuple(sounds_of(clip)), keys_of(clip.visual), heard_words)


# Things no clip of the video may have, to fill the options of a video with too few sights or sounds of its own.
# Everyday, concrete, and each a class the embedded models can report (COCO objects, AudioSet sounds).
SPARE_SIGHTS = ("a dog", "a car", "a bicycle", "a boat", "a horse", "a cat", "a clock", "an umbrella", "a train",
                "a person", "two people", "a potted plant", "a laptop", "a chair")
# Spare sounds in the words the video's own sounds are said in (a tone by its pitch, a beat by its tempo), so a
# spare is not told apart by its style; one that shares a word with any sound of the video is never used.
SPARE_SOUNDS = ("a dog barking", "applause", "a car engine", "rain", "piano music", "a siren", "birdsong",
                "church bells", "a crowd cheering", "thunder", "a telephone ringing", "a guitar",
                "a pure tone near 1200 Hz", "a regular beat at 75 bpm", "brown noise", "the sound of a door knocking",
                "a man speaking", "the sound of an engine idling")
POSITIONS = ("on the left", "in the centre", "on the right")


def spare_facts(phrases: Sequence[str], kind: str) -> list[Fact]:
    return [Fact(p, keys_of(p), (), kind) for p in phrases]
