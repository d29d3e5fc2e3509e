"""The audio-events stage: a tagger backend (``tasks.taggers``, picked by ``settings.audio_tagger.kind``) turns a
video's waveform into timed, scored labels, which are then cut onto its clips.

A video's audio is tagged in chunks of up to ``settings.audio_tagger.chunk_s`` that end on clip bounds, so memory
stays bounded on long videos; the spans are shifted back onto the source timeline.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from infra.audio_io import SAMPLE_RATE, clip_chunks, load_audio
from infra.errors import PermanentError
from infra.pipeline import STAGES
from infra.markdown import top_counts
from infra.stage import Stage
from schemas.handoff import StageResult, StageStats, VideoItem
from schemas.records import AudioEvent, Clip, StageName
from schemas.settings import AudioTagger
from tasks.taggers import TAGGERS, Span, Tagger

MIN_EVENT_S = 0.05  # a clip-cut piece shorter than this is a rounding artefact, not an event


def events_for_clips(spans: list[Span], video_id: str, clips: list[Clip], tagger: str) -> list[AudioEvent]:
    """Each span cut at clip bounds: one ``AudioEvent`` per (span, clip) overlap of at least MIN_EVENT_S."""
    out = []
    for clip in sorted(clips, key=lambda c: c.start_s):
        for sp in spans:
            start, end = max(sp.start_s, clip.start_s), min(sp.end_s, clip.end_s)
            if end - start < MIN_EVENT_S:
                continue
            out.append(AudioEvent(start_s=round(start, 3), end_s=round(end, 3), video_id=video_id,
                                  clip_id=clip.clip_id, label=sp.label, axis=sp.axis,
                                  score=float(np.clip(sp.score, 0.0, 1.0)), tagger=tagger))
    return out


def tag_video(tagger: Tagger, audio: np.ndarray | None, video_id: str, clips: list[Clip],
              chunk_s: float = AudioTagger().chunk_s) -> tuple[list[AudioEvent], float]:
    """Audio events of one video's clips from its 16 kHz audio, tagged in chunks of up to ``chunk_s`` seconds;
    also the audio's length in seconds."""
    if audio is None:
        raise PermanentError(StageName.audio_events, video_id, "no decoded audio; the audio stage must run first",
                             error_class="audio_missing")
    spans = [replace(sp, start_s=sp.start_s + start, end_s=sp.end_s + start)
             for start, end in clip_chunks(clips, chunk_s)
             for sp in tagger.tag(np.asarray(load_audio(audio, start, end), dtype=np.float32))]
    return events_for_clips(spans, video_id, clips, tagger.name), load_audio(audio).shape[0] / SAMPLE_RATE


@STAGES.register(StageName.audio_events)
class AudioEventsStage(Stage):
    """Holds one tagger for its lifetime; tags many videos."""

    name = StageName.audio_events
    title = "audio events"
    placement = "actor"
    section = "audio_tagger"
    backends = TAGGERS
    reads = ("clips",)
    writes = {"audio_events": AudioEvent}
    model_column = ("audio_events", "tagger")

    def process(self, item: VideoItem) -> StageResult:
        events, audio_s = tag_video(self.backend, item.load_media().audio, item.video_id, item.clips,
                                    self.cfg.chunk_s)
        return StageResult(tables={"audio_events": events}, counts={"audio_s": audio_s},
                           tallies={"label": dict(Counter(e.label for e in events))})

    @classmethod
    def report_lines(cls, stats: StageStats) -> list[str]:
        labels = stats.tally("label")
        return [f"Audio events: {sum(labels.values())}; most frequent: {top_counts(labels)}."]
