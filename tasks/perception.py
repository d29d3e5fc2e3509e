"""The three perception stages over one video's clips, in one process: ASR, audio events (+ five-axis audio
captions), keyframe captions.

The pipeline runs the same workers as Ray actors (``asr_actor``, ``audio_events_actor``, ``visual_caption_actor``;
see ``flows/video_pipeline.py``); this module is the in-process form for the benchmark, the demo and debugging.
Audio captions are built only when both audio stages succeeded: a caption without the transcript would claim
"no narration" where there may be some (the stage's dead letter says why it is missing).
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.records import AudioCaption, AudioEvent, Clip, DeadLetter, SpeechSegment, VisualCaption
from schemas.settings import Settings
from tasks.asr import ASROutput, ASRWorker
from tasks.audio_caption import caption_clips
from tasks.audio_events import AudioEventsOutput, AudioEventsWorker
from tasks.visual_caption import VisualCaptionOutput, VisualCaptionWorker


class PerceptionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video_id: str
    speech: list[SpeechSegment] = Field(default_factory=list)
    audio_events: list[AudioEvent] = Field(default_factory=list)
    audio_captions: list[AudioCaption] = Field(default_factory=list)
    visual_captions: list[VisualCaption] = Field(default_factory=list)
    language: str | None = None
    dead_letters: list[DeadLetter] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)


def assemble(clips: list[Clip], asr: ASROutput, events: AudioEventsOutput,
             visual: VisualCaptionOutput) -> PerceptionResult:
    """One video's perception records from the three stage outputs (in-process or from actors)."""
    t = time.perf_counter()
    captions = caption_clips(clips, asr.speech, events.events) if not (asr.dead_letters or events.dead_letters) else []
    return PerceptionResult(
        video_id=asr.video_id, speech=asr.speech, audio_events=events.events, audio_captions=captions,
        visual_captions=visual.captions, language=asr.language,
        dead_letters=asr.dead_letters + events.dead_letters + visual.dead_letters,
        seconds={"asr": asr.seconds, "audio_events": events.seconds, "audio_caption": time.perf_counter() - t,
                 "visual_caption": visual.seconds})


class PerceptionModels:
    """The three workers in this process, each model loaded once here and reused for every video."""

    def __init__(self, cfg: Settings):
        self.asr = ASRWorker(cfg.asr)
        self.audio_events = AudioEventsWorker(cfg.audio_tagger)
        self.visual = VisualCaptionWorker(cfg.visual_captioner)

    def process(self, dataset_dir: Path, video_id: str, clips: list[Clip]) -> PerceptionResult:
        dataset = str(dataset_dir)
        return assemble(clips, self.asr.process(dataset, video_id, clips),
                        self.audio_events.process(dataset, video_id, clips),
                        self.visual.process(dataset, video_id, clips))

    def stats(self) -> list[dict]:
        return [self.asr.stats(), self.audio_events.stats(), self.visual.stats()]
