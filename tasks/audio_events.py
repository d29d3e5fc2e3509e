"""Audio events: a tagger turns a video's waveform into timed, scored labels, which are then cut onto its clips.

A tagger is anything with a ``name`` and ``tag(audio) -> list[Span]`` (16 kHz mono in, spans in seconds from the
first sample out). ``settings.audio_tagger.kind`` picks one:

- ``signal-analysis``: ``tasks.audio_signal`` (Silero VAD + waveform measures), the embedded profile, since no
  tagger weights can be had offline. Its records say ``tagger="signal-analysis-v1"``.
- ``audioset``: a transformers ``AutoModelForAudioClassification`` checkpoint trained on AudioSet (e.g. AST),
  multi-label: sigmoid scores per window, labels above a threshold.
- ``clap``: a transformers CLAP checkpoint scoring ``settings.audio_tagger.labels`` zero-shot per window.

A video's audio is tagged in chunks of up to ``settings.audio_tagger.chunk_s`` that end on clip bounds, so memory
stays bounded on long videos; the spans are shifted back onto the source timeline. Windows of ``window_s`` are
tagged independently; neighbouring windows with the same label merge into one span.
Each label gets one of the paper's five axes from ``axis_of_label`` (what a caption writer would file it under).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from schemas.records import AudioAxis, AudioEvent, Clip, DeadLetter, Stage
from schemas.settings import AudioTagger
from tasks.audio import SAMPLE_RATE, audio_path, clip_chunks, load_audio
from tasks.audio_signal import TAGGER_NAME as SIGNAL_TAGGER_NAME
from tasks.audio_signal import Span, analyse
from tasks.errors import PermanentError, dead_letter_from_exception

log = logging.getLogger("saven.audio_events")

AUDIOSET_THRESHOLD = 0.3  # sigmoid score a label needs in a window (AudioSet taggers are multi-label)
CLAP_THRESHOLD = 0.2  # softmax share over the vocabulary a label needs in a window
TOP_K = 3  # labels kept per window at most
BATCH_WINDOWS = 16
MIN_EVENT_S = 0.05  # a clip-cut piece shorter than this is a rounding artefact, not an event
DEFAULT_CLAP_LABELS = (
    "speech", "a man speaking", "a woman speaking", "a crowd talking", "laughter", "crying", "singing", "music",
    "piano", "guitar", "drums", "violin", "orchestra", "electronic music", "silence", "wind", "rain", "water",
    "birds chirping", "a dog barking", "traffic", "a car engine", "footsteps", "applause", "an explosion",
    "a door closing", "typing on a keyboard", "a siren", "happy music", "sad music", "tense music",
    "calm ambient sound",
)
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


class Tagger(Protocol):
    name: str

    def tag(self, audio: np.ndarray) -> list[Span]: ...


_LOADS: dict[str, int] = {}


def load_count() -> int:
    return sum(_LOADS.values())


class SignalTagger:
    """The embedded tagger: Silero VAD plus waveform measures (``tasks.audio_signal``); nothing to load but VAD."""

    name = SIGNAL_TAGGER_NAME

    def __init__(self, cfg: AudioTagger | None = None):
        from faster_whisper.vad import get_vad_model

        get_vad_model()  # the ONNX session, cached for the process: loaded here, not on the first video
        _LOADS[self.name] = _LOADS.get(self.name, 0) + 1

    def tag(self, audio: np.ndarray) -> list[Span]:
        return analyse(audio)


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, SAMPLE_RATE)
    return resample_poly(audio, rate // g, SAMPLE_RATE // g).astype(np.float32)


def _windows(audio: np.ndarray, window_s: float) -> list[tuple[float, float, np.ndarray]]:
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


def merge_window_labels(windows: list[tuple[float, float, list[tuple[str, float]]]]) -> list[Span]:
    """Per-window (label, score) lists -> spans; a label in consecutive windows is one span (mean score)."""
    open_: dict[str, tuple[float, float, list[float]]] = {}
    spans: list[Span] = []
    for start, end, labels in windows:
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


class TransformersTagger:
    """An AudioSet classifier (``audioset``) or a CLAP model scoring a label vocabulary (``clap``)."""

    def __init__(self, cfg: AudioTagger, device: str | None = None):
        import torch
        from transformers import AutoFeatureExtractor

        if not cfg.model:
            raise ValueError(f"audio_tagger.kind={cfg.kind} needs audio_tagger.model (a transformers name or path)")
        self.cfg = cfg
        self.kind = cfg.kind
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.extractor = AutoFeatureExtractor.from_pretrained(cfg.model)
        self.rate = int(getattr(self.extractor, "sampling_rate", SAMPLE_RATE))
        if cfg.kind == "audioset":
            from transformers import AutoModelForAudioClassification

            self.model = AutoModelForAudioClassification.from_pretrained(cfg.model).to(self.device).eval()
            self.labels = [self.model.config.id2label[i] for i in range(len(self.model.config.id2label))]
        elif cfg.kind == "clap":
            from transformers import AutoTokenizer, ClapModel

            self.model = ClapModel.from_pretrained(cfg.model).to(self.device).eval()
            self.labels = list(cfg.labels or DEFAULT_CLAP_LABELS)
            tokenizer = AutoTokenizer.from_pretrained(cfg.model)
            text = tokenizer([f"the sound of {label}" for label in self.labels], padding=True, return_tensors="pt")
            self.text_inputs = {k: v.to(self.device) for k, v in text.items()}
        else:
            raise ValueError(f"TransformersTagger does not handle audio_tagger.kind={cfg.kind!r}")
        self.name = f"{cfg.kind}:{Path(cfg.model).name if Path(cfg.model).exists() else cfg.model}"
        _LOADS[self.name] = _LOADS.get(self.name, 0) + 1

    def _scores(self, pieces: list[np.ndarray]):
        import torch

        inputs = self.extractor([_resample(p, self.rate) for p in pieces], sampling_rate=self.rate,
                                return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            if self.kind == "audioset":
                return torch.sigmoid(self.model(**inputs).logits).float().cpu().numpy()
            out = self.model(**self.text_inputs, **inputs)
            return torch.softmax(out.logits_per_audio, dim=-1).float().cpu().numpy()

    def tag(self, audio: np.ndarray) -> list[Span]:
        threshold = AUDIOSET_THRESHOLD if self.kind == "audioset" else CLAP_THRESHOLD
        windows = _windows(np.asarray(audio, dtype=np.float32), self.cfg.window_s)
        labelled = []
        for i in range(0, len(windows), BATCH_WINDOWS):
            batch = windows[i:i + BATCH_WINDOWS]
            scores = self._scores([w[2] for w in batch])
            for (start, end, _), row in zip(batch, scores):
                top = np.argsort(-row)[:TOP_K]
                labelled.append((start, end, [(self.labels[j], float(row[j])) for j in top if row[j] >= threshold]))
        return merge_window_labels(labelled)


def load_tagger(cfg: AudioTagger) -> Tagger:
    if cfg.kind == "signal-analysis":
        return SignalTagger(cfg)
    return TransformersTagger(cfg)


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


class AudioEventsOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video_id: str
    events: list[AudioEvent] = Field(default_factory=list)
    audio_s: float = 0.0
    seconds: float = 0.0
    dead_letters: list[DeadLetter] = Field(default_factory=list)


def tag_video(tagger: Tagger, dataset_dir: Path, video_id: str, clips: list[Clip],
              chunk_s: float = AudioTagger().chunk_s) -> AudioEventsOutput:
    """Audio events of one video's clips, tagged in chunks of up to ``chunk_s`` seconds; a failure is a dead letter
    for the video, never an exception."""
    t0 = time.perf_counter()
    try:
        path = audio_path(dataset_dir, video_id)
        if not path.is_file():
            raise PermanentError(Stage.audio_events, video_id, f"no decoded audio at {path.name}; the audio stage "
                                 "must run first", error_class="audio_missing")
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


class AudioEventsWorker:
    """Holds one tagger for its lifetime (a Ray actor through ``audio_events_actor``)."""

    def __init__(self, cfg: AudioTagger):
        self.tagger = load_tagger(cfg)
        self.chunk_s = cfg.chunk_s
        self.videos = 0
        self.clips = 0
        self.seconds = 0.0

    def process(self, dataset_dir: str, video_id: str, clips: list[Clip]) -> AudioEventsOutput:
        out = tag_video(self.tagger, Path(dataset_dir), video_id, clips, self.chunk_s)
        self.videos += 1
        self.clips += len(clips)
        self.seconds += out.seconds
        return out

    def stats(self) -> dict:
        return {"stage": Stage.audio_events.value, "model": self.tagger.name, "model_loads": load_count(),
                "pid": os.getpid(), "videos": self.videos, "clips": self.clips, "seconds": self.seconds}


def audio_events_actor(cfg: AudioTagger):
    from tasks.ray_stage import as_ray_actor

    return as_ray_actor(AudioEventsWorker, cfg.resources)
