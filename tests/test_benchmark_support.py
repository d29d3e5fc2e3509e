"""Helpers shared by the benchmark tests (no tests here): a hand-made pipeline dataset and small adapters.

The dataset is written with the real shard writer; its QA items are varied enough that no two questions of one
video are near-duplicates, so a planted duplicate is the only one.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from benchmark.adapters import ModelAdapter
from schemas.mcq import LETTERS
from schemas.records import (KIND_OF_TYPE, PAPER_TYPES, AVBenchItem, Clip, ClipDescription, QAItem, QAType,
                             SpeechSegment, VideoRecord, hms)
from schemas.shards import write_shard

DURATIONS = (40.0, 150.0, 600.0, 2400.0)  # one per duration bucket
SUBJECTS = ["dog", "violinist", "train", "chef", "crowd", "parrot", "drummer", "kettle", "fountain", "cyclist",
            "toddler", "blacksmith", "choir", "tractor", "seagull", "typist", "referee", "waterfall", "owl", "barber"]
PLACES = ["kitchen", "station", "beach", "forest", "stadium", "workshop", "church", "market", "library", "farm",
          "harbour", "garage", "studio", "bridge", "cave", "rooftop", "subway", "meadow", "bakery", "arena"]
SOUNDS = ["barking", "humming", "whistling", "sizzling", "cheering", "squawking", "drumming", "bubbling",
          "splashing", "ringing", "giggling", "clanging", "singing", "rumbling", "screeching", "clicking",
          "buzzing", "roaring", "hooting", "snipping"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "pink", "brown",
           "golden", "silver", "teal", "maroon", "violet", "beige", "navy", "olive", "crimson"]
FIXED_TIME = datetime(2025, 1, 1, tzinfo=timezone.utc)


def qa_id(video_id: str, salt: str) -> str:
    return f"{video_id}.q{hashlib.sha256(f'{video_id}:{salt}'.encode()).hexdigest()[:12]}"


def video_id(i: int) -> str:
    return f"local-vid{i:04d}"


def _words(i: int, k: int) -> tuple[str, str, str, str]:
    n = len(SUBJECTS)
    return SUBJECTS[(i + k) % n], PLACES[(3 * i + k) % n], SOUNDS[(7 * i + 2 * k) % n], COLOURS[(11 * i + 5 * k) % n]


def make_question(vid: str, i: int, qtype: QAType, clips: list[Clip], salt: str = "") -> QAItem:
    subj, place, sound, colour = _words(i, list(QAType).index(qtype))
    c0, c1 = clips[0], clips[1]
    start = end = None
    if qtype == QAType.global_av_inference:
        q = f"Why does the {subj} in the {place} keep {sound} throughout the video?"
        opts = [f"It reacts to the {colour} light flashing", f"It is answering a distant {subj}",
                f"It is startled by falling {place} debris", "It copies a recording played nearby"]
    elif qtype == QAType.cross_scene_transition:
        q = f"How does the mood change when the scene cuts from the {place} to the {colour} room?"
        opts = [f"Calm {sound} gives way to tense silence", "Laughter turns into applause",
                "A loud alarm fades into birdsong", "Quiet speech becomes a crowded chant"]
    elif qtype == QAType.time_point_anchored:
        start = c0.start_s + 1.0
        q = f"At {hms(start)}, what combination of sounds and visuals shows the {subj}?"
        opts = [f"A {colour} {subj} while {sound} is heard", f"An empty {place} with distant thunder",
                "A close-up of hands and a ticking clock", "A crowd waving flags to a brass band"]
    elif qtype == QAType.time_range_anchored:
        start, end = c0.start_s, c1.end_s
        q = f"From {hms(start)} to {hms(end)}, how do the {sound} sounds relate to the {place} shown?"
        opts = [f"They grow louder as the camera nears the {subj}", "They stop when the lights go out",
                "They are drowned out by rain on the windows", "They echo because the room is empty"]
    elif qtype == QAType.temporal_grounding:
        q = f"Which time range best captures the {colour} {subj} {sound} in the {place}?"
        opts = [f"From {hms(c.start_s)} to {hms(c.end_s)}" for c in clips[:4]]
        start, end = clips[0].start_s, clips[0].end_s
    else:  # the reasoning types: unanchored questions about the whole video
        q = f"Which of these happens first while the {subj} is {sound} in the {place}?"
        opts = [f"The {colour} {subj} turns away", f"A {place} door closes", "A bell rings twice",
                "The lights dim slowly"]
    return QAItem(qa_id=qa_id(vid, f"{qtype.value}{salt}"), video_id=vid, kind=KIND_OF_TYPE[qtype], type=qtype,
                  question=q, options=opts, answer_index=0, evidence_clip_ids=[c0.clip_id], start_s=start,
                  end_s=end, generator_model="hand-made", checks_passed=["hand-made"])


def make_video(vid: str, i: int) -> tuple[VideoRecord, list[Clip], list[ClipDescription], list[SpeechSegment]]:
    duration = DURATIONS[i % len(DURATIONS)]
    video = VideoRecord(video_id=vid, source=f"/data/{vid}.mp4", extractor="local", media_path=f"media/{vid}.mp4",
                        duration_s=duration, fps=25.0, width=320, height=240, has_audio=True, size_bytes=1000,
                        sha256="0" * 64, acquired_at=FIXED_TIME)
    step = duration / 4
    clips = [Clip(clip_id=f"{vid}.c{k:04d}", video_id=vid, index=k, start_s=k * step, end_s=(k + 1) * step)
             for k in range(4)]
    descs, speech = [], []
    for k, c in enumerate(clips):
        subj, place, sound, colour = _words(i, k)
        visual = f"A {colour} {subj} in a {place}."
        descs.append(ClipDescription(
            start_s=c.start_s, end_s=c.end_s, video_id=vid, clip_id=c.clip_id, visual=visual,
            narration=f"Someone says the {subj} is here.", environment=f"{sound} in the background", timbre="",
            event=sound, emotion="calm", model="hand-made",
            fused=f"From {hms(c.start_s)} to {hms(c.end_s)}: we see a {colour} {subj} and hear {sound}."))
        speech.append(SpeechSegment(start_s=c.start_s, end_s=c.start_s + 1.0, video_id=vid, clip_id=c.clip_id,
                                    text=f"Look at the {subj}.", language="en", language_probability=0.9,
                                    avg_logprob=-0.2, no_speech_prob=0.1))
    return video, clips, descs, speech


def make_dataset(root: Path, n_videos: int = 30, *, extra_qa: Sequence[QAItem] = (),
                 drop_videos: Sequence[str] = ()) -> Path:
    """``n_videos`` videos x 5 question types, written as real shards (one key per table keeps the test fast)."""
    root = Path(root)
    tables: dict[str, list] = {"videos": [], "clips": [], "descriptions": [], "speech": [], "qa": []}
    for i in range(n_videos):
        vid = video_id(i)
        video, clips, descs, speech = make_video(vid, i)
        if vid not in drop_videos:
            tables["videos"].append(video)
        tables["clips"] += clips
        tables["descriptions"] += descs
        tables["speech"] += speech
        tables["qa"] += [make_question(vid, i, t, clips) for t in PAPER_TYPES]
        tables["qa"] += [q for q in extra_qa if q.video_id == vid]
    for table, records in tables.items():
        write_shard(root, table, key="all", records=records)
    return root


def clips_of(i: int) -> list[Clip]:
    return make_video(video_id(i), i)[1]


class KnowsAnswers(ModelAdapter):
    """A deterministic stand-in for an LLM: right on the items it 'knows' (by qa id), 'A' on every other one."""

    registry_name = "test-knows"

    def __init__(self, known: dict[str, str], name: str = "knows"):
        super().__init__()
        self.known, self._name, self.calls = known, name, 0

    @property
    def model_name(self) -> str:
        return self._name

    def fingerprint(self) -> str:
        return f"knows:{self._name}:{sorted(self.known.items())}"

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors, self.calls = {}, self.calls + len(items)
        out = []
        for it in items:
            text = self.known.get(it.qa_id)
            out.append(f"The answer is ({LETTERS[it.options.index(text)]})." if text in it.options else "A")
        return out


class Failing(ModelAdapter):
    """Injects what a real server cannot produce on demand: every request fails."""

    registry_name = "test-failing"

    def fingerprint(self) -> str:
        return "failing"

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {i: "APIConnectionError: connection refused" for i in range(len(items))}
        return [""] * len(items)


class Constant(ModelAdapter):
    registry_name = "test-constant"

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def fingerprint(self) -> str:
        return f"constant:{self.text}"

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        return [self.text] * len(items)


class Oracle(ModelAdapter):
    registry_name = "test-oracle"

    def fingerprint(self) -> str:
        return "oracle"

    def answer(self, items: Sequence[AVBenchItem]) -> list[str]:
        self.errors = {}
        return [f"{it.answer_letter}. {it.options[it.answer_index]}" for it in items]
