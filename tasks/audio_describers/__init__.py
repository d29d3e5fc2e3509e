"""Backends of the audio-description stage (``settings.audio_describer.kind``).

A describer has a ``name`` and ``describe(waves) -> [HeardAxes]`` over the 16 kHz mono waveforms of ONE video's
clips, in time order (one description per clip; an exception for a clip is raised from the returned list's
element, so the stage can make that clip alone a dead letter). Register one with
``@AUDIO_DESCRIBERS.register("name")`` in a module of this package; it is built as
``cls(cfg: settings.AudioDescriber)`` once per worker.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infra.registry import Registry


class HeardAxes(BaseModel):
    """One clip's audio on the paper's five axes, as the model writes them (the JSON it is asked for)."""

    model_config = ConfigDict(extra="forbid")
    speakers: str = Field(description="who speaks and how (not the words); empty if no one speaks")
    environment: str = Field(description="the place and background sound")
    timbre: str = Field(description="the quality of the main voices or instruments")
    events: str = Field(description="distinct sound events, in the order heard")
    emotion: str = Field(description="the mood the sound conveys")


class AudioDescriber(Protocol):
    name: str

    def describe(self, waves: list[np.ndarray]) -> list[HeardAxes | Exception]: ...


AUDIO_DESCRIBERS: Registry[type[AudioDescriber]] = Registry("audio describer", package=__name__)
