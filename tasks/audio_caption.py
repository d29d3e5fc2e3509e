"""The five-axis audio caption of a clip (narration, environment, timbre, event, emotion), as in the paper.

Built from records only: narration is the ASR text of the clip; the other four axes are the clip's audio events
filed under that axis, strongest first, each with the times it is heard (seconds on the source timeline). The
``sentence`` is a short rendering of the top item per axis, for the fusion prompt and for people.

Where an audio-language model described the clip (``tasks.audio_description``, on profiles that enable it), its
words stand on the environment, timbre, event and emotion axes instead of the tagger's labels; who speaks and how
joins the timbre only where the transcriber heard words (a speech claim needs it to agree).

A video gets audio captions only when both audio stages heard it (see ``AudioCaptionStage``).
"""

from __future__ import annotations

import re
from collections import defaultdict

from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import StageResult, VideoItem
from infra.text_bounds import cut_at_sentence
from schemas.records import AudioAxis, AudioCaption, AudioDescription, AudioEvent, Clip, SpeechSegment, StageName

MIN_SCORE = 0.2  # weaker events are noise from the tagger, not something to tell a caption writer
MAX_LABELS_PER_AXIS = 3
SENTENCE_NARRATION_CHARS = 160


def _fmt(t: float) -> str:
    return f"{t:.1f}"


def _axis_items(events: list[AudioEvent], axis: AudioAxis) -> list[tuple[str, list[AudioEvent]]]:
    """(label, its events) for one axis, ranked by heard duration x mean score."""
    by_label: dict[str, list[AudioEvent]] = defaultdict(list)
    for ev in events:
        if ev.axis == axis and ev.score >= MIN_SCORE:
            by_label[ev.label].append(ev)

    def weight(item: tuple[str, list[AudioEvent]]) -> float:
        evs = item[1]
        return sum(e.end_s - e.start_s for e in evs) * sum(e.score for e in evs) / len(evs)

    ranked = sorted(by_label.items(), key=weight, reverse=True)[:MAX_LABELS_PER_AXIS]
    return sorted(ranked, key=lambda item: min(e.start_s for e in item[1]))  # told in the order they are heard


def _times(evs: list[AudioEvent]) -> str:
    evs = sorted(evs, key=lambda e: e.start_s)
    times = ", ".join(f"{_fmt(e.start_s)}-{_fmt(e.end_s)} s" for e in evs[:3])
    return times + (f" and {len(evs) - 3} more" if len(evs) > 3 else "")


def _render_axis(items: list[tuple[str, list[AudioEvent]]]) -> str:
    return "; ".join(f"{label}{f' x{len(evs)}' if len(evs) > 1 else ''} ({_times(evs)})" for label, evs in items)


def _top_label(items: list[tuple[str, list[AudioEvent]]]) -> str:
    if not items:
        return ""
    best = max(items, key=lambda it: sum(e.end_s - e.start_s for e in it[1]))
    return best[0]


def _first_sentence(text: str) -> str:
    return cut_at_sentence(re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0], 100).rstrip(".!?")


def _described_axes(described: AudioDescription | None, narration: str) -> dict[str, str]:
    """The describer's words by axis (the caption's field names), where it wrote any."""
    if described is None:
        return {}
    parts = [t.strip() for t in (described.speakers if narration else "", described.timbre) if t.strip()]
    timbre = " ".join(p if p[-1] in ".!?" else p + "." for p in parts) if len(parts) > 1 else "".join(parts)
    axes = {"environment": described.environment, "timbre": timbre, "event": described.event,
            "emotion": described.emotion}
    return {k: " ".join(v.split()) for k, v in axes.items() if v.strip()}


def caption_clip(clip: Clip, speech: list[SpeechSegment], events: list[AudioEvent],
                 described: AudioDescription | None = None) -> AudioCaption:
    """The clip's caption from its own speech segments and events (others are ignored), and the describer's
    words for it when there are any."""
    speech = sorted((s for s in speech if s.clip_id == clip.clip_id), key=lambda s: s.start_s)
    events = [e for e in events if e.clip_id == clip.clip_id]
    narration = " ".join(s.text.strip() for s in speech).strip()
    axes = {axis: _axis_items(events, axis) for axis in AudioAxis if axis != AudioAxis.narration}
    if not narration:
        # The tagger heard a voice that ASR could not turn into words: say so rather than claim silence.
        voiced = [e for _, evs in _axis_items(events, AudioAxis.narration) for e in evs]
        if voiced:
            narration = f"unintelligible speech ({_times(voiced)})"

    words = _described_axes(described, narration if speech else "")
    clauses = []
    if narration:
        short = narration if len(narration) <= SENTENCE_NARRATION_CHARS else \
            narration[:SENTENCE_NARRATION_CHARS].rsplit(" ", 1)[0] + " ..."
        clauses.append(f'speech: "{short}"' if speech else short)
    for axis, name in ((AudioAxis.environment, "environment"), (AudioAxis.event, "events"),
                       (AudioAxis.timbre, "timbre"), (AudioAxis.emotion, "mood")):
        top = _first_sentence(words[axis.value]) if axis.value in words else _top_label(axes[axis])
        if top:
            clauses.append(f"{name}: {top}")
    sentence = "; ".join(clauses) if clauses else "no audio analysis for this clip"
    sentence = sentence[0].upper() + sentence[1:] + "."
    return AudioCaption(start_s=clip.start_s, end_s=clip.end_s, video_id=clip.video_id, clip_id=clip.clip_id,
                        narration=narration, sentence=sentence,
                        **{axis.value: words.get(axis.value) or _render_axis(axes[axis])
                           for axis in (AudioAxis.environment, AudioAxis.timbre, AudioAxis.event, AudioAxis.emotion)})


def caption_clips(clips: list[Clip], speech: list[SpeechSegment], events: list[AudioEvent],
                  described: list[AudioDescription] = ()) -> list[AudioCaption]:
    by_clip_speech: dict[str, list[SpeechSegment]] = defaultdict(list)
    by_clip_events: dict[str, list[AudioEvent]] = defaultdict(list)
    for s in speech:
        by_clip_speech[s.clip_id].append(s)
    for e in events:
        by_clip_events[e.clip_id].append(e)
    by_clip_described = {d.clip_id: d for d in described}
    return [caption_clip(c, by_clip_speech[c.clip_id], by_clip_events[c.clip_id], by_clip_described.get(c.clip_id))
            for c in sorted(clips, key=lambda c: c.start_s)]


@STAGES.register(StageName.audio_caption)
class AudioCaptionStage(Stage):
    """Code over the two audio stages' rows. It runs on a video only when both heard it (the pipeline runs a stage
    only when every stage it reads from did its work): a caption built without the transcript would say "no
    narration" where there may be some, and one without the tagger would say nothing about the sound as if there
    were none. The stage that failed has its own dead letter saying why captions are missing."""

    name = StageName.audio_caption
    title = "audio captions"
    placement = "driver"
    reads = ("clips", "speech", "audio_events", "audio_descriptions")
    optional = ("audio_descriptions",)  # a pipeline without the describer: the tagger's labels on every axis
    writes = {"audio_captions": AudioCaption}

    def process(self, item: VideoItem) -> StageResult:
        return StageResult(tables={"audio_captions": caption_clips(item.clips, item.rows("speech"),
                                                                   item.rows("audio_events"),
                                                                   item.rows("audio_descriptions"))})
