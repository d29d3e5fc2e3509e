"""The audio-events stage: a tagger backend (``tasks.taggers``, picked by ``settings.audio_tagger.kind``) turns a
video's waveform into timed, scored labels, which are then cut onto its clips.

A video's audio is tagged in chunks of up to ``settings.audio_tagger.chunk_s`` that end on clip bounds, so memory
stays bounded on long videos; the spans are shifted back onto the source timeline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from infra.audio_io import SAMPLE_RATE, clip_chunks, load_audio
from infra.errors import PermanentError, dead_letter_from_exception
from infra.worker import StageWorker
from schemas.handoff import AudioEventsOutput, VideoMedia, VideoWork
from schemas.records import AudioEvent, Clip, Stage
from schemas.settings import AudioTagger
from tasks.taggers import TAGGERS, Span, Tagger

log = logging.getLogger("saven.audio_events")

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


def tag_video(tagger: Tagger, media: VideoMedia | Path, video_id: str, clips: list[Clip],
              chunk_s: float = AudioTagger().chunk_s) -> AudioEventsOutput:
    """Audio events of one video's clips (``media``: its audio, or a local folder holding it), tagged in chunks of
    up to ``chunk_s`` seconds; a failure is a dead letter for the video, never an exception."""
    t0 = time.perf_counter()
    try:
        if not isinstance(media, VideoMedia):
            media = VideoMedia.from_folder(media, video_id, [])
        if media.audio is None:
            raise PermanentError(Stage.audio_events, video_id, "no decoded audio; the audio stage must run first",
                                 error_class="audio_missing")
        path = media.audio
        spans = [replace(sp, start_s=sp.start_s + start, end_s=sp.end_s + start)
                 for start, end in clip_chunks(clips, chunk_s)
                 for sp in tagger.tag(np.asarray(load_audio(path, start, end), dtype=np.float32))]
        events = events_for_clips(spans, video_id, clips, tagger.name)
        audio_s = load_audio(path).shape[0] / SAMPLE_RATE
    except Exception as exc:  # noqa: BLE001 — one bad video must not stop the actor
        if not isinstance(exc, PermanentError):
            log.exception("audio tagging failed for %s", video_id)
        return AudioEventsOutput(video_id=video_id, seconds=time.perf_counter() - t0,
                                 dead_letters=[dead_letter_from_exception(exc, Stage.audio_events, video_id)])
    return AudioEventsOutput(video_id=video_id, events=events, audio_s=audio_s,
                             seconds=time.perf_counter() - t0)


class AudioEventsWorker(StageWorker[AudioEventsOutput]):
    """Holds one tagger for its lifetime; processes many videos."""

    stage = Stage.audio_events
    cfg: AudioTagger
    backends = TAGGERS

    def process(self, work: VideoWork, media: VideoMedia) -> AudioEventsOutput:
        return tag_video(self.backend, media, work.video_id, work.clips, self.cfg.chunk_s)
