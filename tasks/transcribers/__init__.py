"""Transcriber backends of the ASR stage (``settings.asr.kind``): each turns 16 kHz mono audio into a
``Transcript`` on that audio's own timeline. Register one with ``@TRANSCRIBERS.register("name")`` in a module of
this package; it is built as ``cls(cfg: settings.ASR)``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infra.registry import Registry


class TimedWord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_s: float
    end_s: float
    word: str
    probability: float


class TranscriptSegment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_s: float
    end_s: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: list[TimedWord] = Field(default_factory=list)


class Transcript(BaseModel):
    """One video's speech on its source timeline, before it is mapped onto clips. No speech: no language."""

    model_config = ConfigDict(extra="forbid")
    language: str | None
    language_probability: float | None
    duration_s: float
    segments: list[TranscriptSegment]


class Transcriber(Protocol):
    name: str
    cfg: object

    def transcribe(self, audio: np.ndarray) -> Transcript: ...


TRANSCRIBERS: Registry[type[Transcriber]] = Registry("transcriber", package=__name__)
