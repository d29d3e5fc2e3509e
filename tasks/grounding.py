"""What a generated question may name: only what the video's perception timeline holds.

A small LLM writes fluent questions about things nobody saw or heard ("the 2015 Summer Olympics, filmed on a
bridge in Venice"). ``ungrounded_names`` finds the content a text names that the timeline (keyframe captions with
their objects and OCR text, the transcript, the audio event labels) does not:

- **named entities**: capitalised words inside a sentence ("Olympics", "Venice"), unless the timeline has the word;
- **numbers** (years, counts) outside timestamps, unless the timeline has them (as digits or, up to ten, words);
- **nameable things**: words of the classes the perception models can name (COCO objects, ImageNet classes,
  AudioSet sounds) that this video's timeline does not name. A question about a "bridge" or a "violin" needs the
  detector or the tagger to have reported one. Other words (verbs, adjectives, abstract nouns) are not judged:
  without a tagger of parts of speech they cannot be told from content, and they are not what small models invent.

The vocabulary is that of the backends the profile runs: each perception backend declares the class names it can
report (``vocabulary``), and the run joins those of its stages (``infra.pipeline.Pipeline.labels``).
"""

from __future__ import annotations

import re
from typing import Iterable

from infra.pipeline import Pipeline
from schemas.settings import Settings


WORD_RE = re.compile(r"[A-Za-z][A-Za-z'-]*")
NUMBER_RE = re.compile(r"(?<![\d:.])\d+(?:\.\d+)?(?![\d:])")
TIMESTAMP_RE = re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d{1,3})?\b")
# Ids and times the timeline itself prints: clip ids ("local-0777d8c27df1c0a6.c0002") and event times ("0.5-5.8 s").
IDS_RE = re.compile(r"\b[a-z]+-[0-9a-f]{8,}(?:\.c\d{4})?\b")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Vocabulary words too generic to be a claim about this video (they name the medium or a whole category).
GENERIC = frozenset("""
sound sounds noise music musical speech voice voices thing things object objects animal animals person people
man men woman women scene frame image picture video clip background foreground left right centre center top bottom
light dark colour color side front back part view screen text sign
start effect system unit space site record track scale signal stage rule etc file maker helper player killer pick
spot cover clear call aid bit case hand head home star pulse press close hot inside outside place tone watch stock
store block board card chain line shade slide switch pack pad plant gear tool metal liquid material wood paper
scope shop market maze set lot kit mini semi hack pal bank match grand dial drop fill hip can""".split())
# AudioSet names some sounds by what makes them ("Run", "Walk, footsteps"): as words they are actions, not things.
VERBS = frozenset("""
run walk shuffle sniff chew clap knock tap squeak squeal slam slap smash crash shatter break bang boom burst pop
crack snap rub scrape scratch roll drip splash pour fill spray stir whistle hum sing cry laugh shout yell scream
groan grunt sigh gasp cough sneeze breathe snore pant gargle whisper speak talk babble chant rap yodel hiccup burp
fart growl bark howl whine purr meow moo bleat neigh oink cluck crow coo quack hiss buzz rumble roar ring tick
clang clatter rattle jingle zip creak thump thud flap beep honk skid accelerate idle drum strum pluck play""".split())
# Capitalised words that are the language of a question, not names.
CAPITALISED_OK = frozenset("""
i a an the what which who whom whose when where why how is are was were do does did at from to in on during
after before while between both and or not no yes it its this that these those there he she they we you""".split())


def _norm(word: str) -> str:
    """Lower case, crude stem: "birds" and "bird", "chirping" and "chirp", "puppies" and "puppy" meet."""
    w = word.casefold().strip("'-")
    for suffix in ("'s", "ies", "ing", "es", "ed", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return w


def words(text: str) -> set[str]:
    return {_norm(w) for w in WORD_RE.findall(text)}


def head_nouns(label: str) -> set[str]:
    """The head noun of each comma-separated name of a class ("Walk, footsteps" -> walk, footstep; "golden
    retriever" -> retriever; "Whimper (dog)" -> whimper): English compounds end in the thing they name."""
    out = set()
    for part in re.sub(r"\([^)]*\)", " ", label).split(","):
        found = WORD_RE.findall(part)
        if found:
            out.add(_norm(found[-1]))
    return out


def nameable_words(labels: Iterable[str]) -> frozenset[str]:
    """The head nouns of class names (``labels``: what the run's perception models can report, each stage's
    backend declares them), minus generic words, verbs and the words of a question: what a text may name only when
    the video's perception reported it."""
    names = [part for label in labels for part in label.split(",")]
    vocab = {w for name in names for w in head_nouns(name) if len(w) >= 3}
    return frozenset(vocab - {_norm(g) for g in GENERIC | VERBS} - {_norm(w) for w in CAPITALISED_OK})


def run_vocabulary(settings: Settings) -> frozenset[str]:
    """What a run of ``settings`` may name only when perception reported it: ``nameable_words`` of the labels its
    pipeline's backends declare."""
    return nameable_words(Pipeline.from_settings(settings).labels(settings))


def _digits(text: str) -> set[str]:
    """Numbers written in digits, timestamps left out ("2015", "3.5")."""
    text = IDS_RE.sub(" ", TIMESTAMP_RE.sub(" ", text))
    return {str(float(n)).rstrip("0").rstrip(".") for n in NUMBER_RE.findall(text)}


def _known_numbers(text: str) -> set[str]:
    """What a timeline says in numbers: its digits and, up to ten, number words ("two people" has 2)."""
    return _digits(text) | {str(i) for i, w in enumerate(NUMBER_WORDS) if re.search(rf"\b{w}\b", text, re.I)}


def _capitalised(text: str) -> set[str]:
    """Capitalised words that do not start a sentence, a quote or a clause after a colon."""
    out = set()
    for m in WORD_RE.finditer(text):
        w = m.group()
        if not w[0].isupper() or w.casefold() in CAPITALISED_OK:
            continue
        before = text[:m.start()].rstrip()
        if not before or before[-1] in ".!?:;\"'(" or before.endswith(("From", "from")):
            continue
        out.add(_norm(w))
    return out


def ungrounded_names(text: str, timeline: Iterable[str], *, vocabulary: frozenset[str]) -> list[str]:
    """The names, numbers and nameable things (``vocabulary``, from ``nameable_words``) ``text`` mentions that no
    ``timeline`` text has, sorted."""
    text = IDS_RE.sub(" ", text)
    known_text = " ".join(timeline)
    known = words(known_text)
    missing = {w for w in _capitalised(text) if w not in known}
    missing |= _digits(text) - _known_numbers(known_text)
    missing |= {w for w in words(text) & vocabulary if w not in known}
    return sorted(missing)
