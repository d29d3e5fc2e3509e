"""Audio tagger backends of the audio-events stage (``settings.audio_tagger.kind``).

A tagger turns 16 kHz mono audio into timed, scored labels (``Span``, seconds from its first sample); the stage
(``tasks.audio_events``) cuts them onto clips. Register one with ``@TAGGERS.register("name")`` in a module of this
package; it is built as ``cls(cfg: settings.AudioTagger)``. Each label gets one of the paper's five axes from
``axis_of_label`` (what a caption writer would file it under). Window taggers share ``windows`` and
``merge_window_labels``: neighbouring windows with the same label merge into one span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from infra.registry import Registry
from schemas.handoff import SAMPLE_RATE
from schemas.records import AudioAxis


@dataclass(frozen=True)
class Span:
    """One labelled stretch of the waveform (seconds from its first sample)."""

    start_s: float
    end_s: float
    label: str
    axis: AudioAxis
    score: float


class Tagger(Protocol):
    name: str

    def tag(self, audio: np.ndarray) -> list[Span]: ...


TAGGERS: Registry[type[Tagger]] = Registry("audio tagger", package=__name__)

# Keyword -> axis, checked in this order; anything unmatched is a discrete sound event.
_AXIS_KEYWORDS: tuple[tuple[AudioAxis, tuple[str, ...]], ...] = (
    (AudioAxis.emotion, ("happy", "sad", "tender", "exciting", "angry", "scary", "funny", "tense", "calm",
                         "laugh", "crying", "sob", "scream", "cheer")),
    (AudioAxis.narration, ("speech", "speaking", "narration", "conversation", "talk", "whisper", "babbl",
                           "monologue")),
    (AudioAxis.timbre, ("piano", "guitar", "violin", "fiddle", "drum", "bass", "trumpet", "saxophone", "flute",
                        "organ", "synth", "orchestra", "string", "brass", "choir", "singing", "voice", "vocal",
                        "cello", "harp", "clarinet", "percussion", "keyboard (musical)", "ukulele", "banjo",
                        "sitar", "accordion", "harmonica", "bell", "male", "female", "child")),
    (AudioAxis.environment, ("music", "silence", "wind", "rain", "water", "stream", "ocean", "waves", "traffic",
                             "crowd", "ambient", "noise", "room", "outside", "inside", "urban", "rural",
                             "hubbub", "environmental", "thunder", "bird", "insect", "cricket", "hum", "static",
                             "white noise", "pink noise", "background")),
)


def axis_of_label(label: str) -> AudioAxis:
    text = label.casefold()
    for axis, words in _AXIS_KEYWORDS:
        if any(w in text for w in words):
            return axis
    return AudioAxis.event


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, SAMPLE_RATE)
    return resample_poly(audio, rate // g, SAMPLE_RATE // g).astype(np.float32)


def centred_windows(audio: np.ndarray, window_s: float, hop_s: float) -> list[tuple[float, float, np.ndarray]]:
    """Windows of ``window_s`` (what a model was trained on, e.g. AST's 10.24 s) every ``hop_s``, each labelling the
    ``hop_s`` at its centre: (start_s, end_s of that centre, the window's samples, zero-padded at the edges)."""
    win, hop = int(round(window_s * SAMPLE_RATE)), max(1, int(round(hop_s * SAMPLE_RATE)))
    padded = np.pad(np.asarray(audio, dtype=np.float32), ((win - hop) // 2, win))
    out = []
    for lo in range(0, audio.shape[0], hop):
        out.append((lo / SAMPLE_RATE, min(lo + hop, audio.shape[0]) / SAMPLE_RATE, padded[lo:lo + win]))
    return out


def windows(audio: np.ndarray, window_s: float) -> list[tuple[float, float, np.ndarray]]:
    """Windows of ``window_s`` as (start_s, end_s, samples); a short tail joins the window before it."""
    step = max(1, int(round(window_s * SAMPLE_RATE)))
    out = []
    for lo in range(0, audio.shape[0], step):
        piece = audio[lo:lo + step]
        if piece.shape[0] < step // 4 and out:  # a short tail joins the previous window
            start, _, prev = out[-1]
            out[-1] = (start, (lo + piece.shape[0]) / SAMPLE_RATE, np.concatenate([prev, piece]))
            continue
        out.append((lo / SAMPLE_RATE, (lo + piece.shape[0]) / SAMPLE_RATE, piece))
    return out


def merge_window_labels(labelled: list[tuple[float, float, list[tuple[str, float]]]]) -> list[Span]:
    """Per-window (label, score) lists -> spans; a label in consecutive windows is one span (mean score)."""
    open_: dict[str, tuple[float, float, list[float]]] = {}
    spans: list[Span] = []
    for start, end, labels in labelled:
        present = dict(labels)
        for label in list(open_):
            if label not in present:
                s, e, scores = open_.pop(label)
                spans.append(Span(s, e, label, axis_of_label(label), float(np.mean(scores))))
        for label, score in present.items():
            if label in open_:
                s, _, scores = open_[label]
                open_[label] = (s, end, scores + [score])
            else:
                open_[label] = (start, end, [score])
    for label, (s, e, scores) in open_.items():
        spans.append(Span(s, e, label, axis_of_label(label), float(np.mean(scores))))
    return sorted(spans, key=lambda sp: (sp.start_s, sp.label))
