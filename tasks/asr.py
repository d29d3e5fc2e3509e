"""Speech recognition: faster-whisper over a video's waveform in long chunks, then segments mapped onto its clips.

The model is chosen by ``settings.asr``: the embedded profile names a model-cache folder (CTranslate2 Whisper base,
multilingual, int8 on CPU); the GPU profile names a faster-whisper size such as ``large-v3`` and turns on the
batched pipeline (``BatchedInferencePipeline``). Silero VAD (bundled with faster-whisper) skips non-speech, word
timestamps are on, and the language is detected unless configured.

Why long chunks, not one per clip: Whisper conditions on the previous text and needs context; cutting the audio
at every clip bound would cut words and cost one decoder warm-up per clip. Why not one pass over the whole video:
its memory (the VAD pass, the speech it collects) grows with the audio's length. So chunks of up to
``settings.asr.chunk_s`` end on clip bounds (``clip_chunks``), where a sentence is least likely to be cut, and
their times are shifted back onto the source timeline. Afterwards each word belongs to the clip that holds its
midpoint, so a segment spanning a cut is split at a word boundary and no word is counted twice.

Why VAD runs before the model, not inside ``WhisperModel.transcribe``: when VAD keeps nothing (music, ambience,
tones), faster-whisper still detects a language, which is one encoder pass over 30 s of padding (~1.5 s of CPU for
Whisper base, whatever the audio's length). A chunk with no speech skips the model and has no language. A chunk
with speech gets exactly what ``transcribe(vad_filter=True)`` does: the kept speech concatenated, then the times
restored by faster-whisper's own functions.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from schemas.records import Clip, DeadLetter, SpeechSegment, Stage, Word
from schemas.settings import ASR
from tasks.audio import SAMPLE_RATE, audio_path, clip_chunks, load_audio
from tasks.errors import PermanentError, dead_letter_from_exception

log = logging.getLogger("saven.asr")

MIN_WORD_S = 0.01  # Whisper's DTW can give a word zero length; records need end > start
# VAD for transcription: keep sentence pauses inside a chunk so Whisper sees whole sentences.
VAD_PARAMETERS = {"min_silence_duration_ms": 1000, "speech_pad_ms": 300}
LANGUAGE = None  # None: detect (settings has no field yet; see the perception report)

_LOADS: dict[str, int] = {}  # model loads in this process, by model name: the actor proves "once" with it


def load_count(name: str | None = None) -> int:
    return sum(_LOADS.values()) if name is None else _LOADS.get(name, 0)


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


def resolve_model(name: str) -> str:
    """A model-cache name (verified folder), an existing folder, or a faster-whisper size / hub id as given."""
    from tasks import model_cache

    if name in model_cache.PACKAGED:
        return str(model_cache.model_path(name))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    cached = model_cache.cache_dir() / name
    if (cached / "model.bin").is_file():
        return str(cached)
    return name


class WhisperASR:
    """A loaded faster-whisper model plus the transcription options of one ``settings.asr``."""

    def __init__(self, cfg: ASR):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from tasks import model_cache

        self.cfg = cfg
        source = resolve_model(cfg.model)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        self.model = WhisperModel(source, device=cfg.device, compute_type=cfg.compute_type,
                                  cpu_threads=cfg.cpu_threads, download_root=str(model_cache.cache_dir()),
                                  local_files_only=offline)
        self.pipeline = BatchedInferencePipeline(self.model) if cfg.batched else None
        self.name = f"faster-whisper:{cfg.model}"
        _LOADS[cfg.model] = _LOADS.get(cfg.model, 0) + 1

    def transcribe(self, audio: np.ndarray) -> Transcript:
        from faster_whisper.transcribe import restore_speech_timestamps
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        audio = np.ascontiguousarray(audio, dtype=np.float32)
        duration = audio.shape[0] / SAMPLE_RATE
        kwargs = dict(language=LANGUAGE, beam_size=self.cfg.beam_size, word_timestamps=self.cfg.word_timestamps)
        if self.pipeline is not None:
            # The batched pipeline needs VAD chunks to batch: it is always on there. It still detects a language
            # when VAD keeps nothing (one encoder pass on a dummy frame); on the GPU it is meant for, that is cheap.
            segments, info = self.pipeline.transcribe(audio, batch_size=self.cfg.batch_size, vad_filter=True,
                                                      vad_parameters=VAD_PARAMETERS, **kwargs)
        elif self.cfg.vad:
            speech = get_speech_timestamps(audio, VadOptions(**VAD_PARAMETERS))
            if not speech:
                return Transcript(language=None, language_probability=None, duration_s=duration, segments=[])
            kept = np.concatenate(collect_chunks(audio, speech)[0])
            segments, info = self.model.transcribe(kept, vad_filter=False, **kwargs)
            segments = restore_speech_timestamps(segments, speech, SAMPLE_RATE)
        else:
            segments, info = self.model.transcribe(audio, vad_filter=False, **kwargs)
        out = []
        for seg in segments:  # a generator: decoding happens while it is consumed
            text = seg.text.strip()
            if not text:
                continue
            words = [TimedWord(start_s=float(w.start), end_s=float(w.end), word=w.word,
                               probability=float(w.probability)) for w in (seg.words or [])]
            out.append(TranscriptSegment(start_s=float(seg.start), end_s=float(min(seg.end, duration)), text=text,
                                         avg_logprob=float(seg.avg_logprob), no_speech_prob=float(seg.no_speech_prob),
                                         words=words))
        return Transcript(language=info.language, language_probability=float(info.language_probability),
                          duration_s=duration, segments=out)


def _shifted(seg: TranscriptSegment, dt: float) -> TranscriptSegment:
    return seg.model_copy(update={
        "start_s": seg.start_s + dt, "end_s": seg.end_s + dt,
        "words": [w.model_copy(update={"start_s": w.start_s + dt, "end_s": w.end_s + dt}) for w in seg.words]})


def transcribe_spans(asr: WhisperASR, path: Path, spans: list[tuple[float, float]]) -> Transcript:
    """The saved waveform's ``spans`` transcribed one at a time (only that slice is read) on the source timeline.

    The language is that of the span with the most speech (None when no span has any).
    """
    duration = load_audio(path).shape[0] / SAMPLE_RATE
    spans = spans or [(0.0, duration)]  # no clips: the whole audio, which still tells the video's language
    parts = [(start, asr.transcribe(load_audio(path, start, end))) for start, end in spans]
    _, main = max(parts, key=lambda p: sum(s.end_s - s.start_s for s in p[1].segments))
    return Transcript(language=main.language, language_probability=main.language_probability, duration_s=duration,
                      segments=[_shifted(seg, start) for start, part in parts for seg in part.segments])


def _clip_index(clips: list[Clip], starts: list[float], t: float) -> int | None:
    """The clip holding time ``t`` (a time on a cut belongs to the later clip); None outside every clip."""
    k = bisect.bisect_right(starts, t) - 1
    if k >= 0 and (t < clips[k].end_s or (k == len(clips) - 1 and t == clips[k].end_s)):
        return k
    return None


def _record_word(w: TimedWord, clip: Clip) -> Word:
    start = min(max(w.start_s, clip.start_s), clip.end_s - MIN_WORD_S)
    end = min(max(w.end_s, start + MIN_WORD_S), clip.end_s)
    return Word(start_s=round(start, 3), end_s=round(end, 3), word=w.word,
                probability=float(np.clip(w.probability, 0.0, 1.0)))


def speech_segments_for_clips(transcript: Transcript, video_id: str, clips: list[Clip]) -> list[SpeechSegment]:
    """Each transcript segment split onto the clips by word midpoints (by its own midpoint when it has no words)."""
    clips = sorted(clips, key=lambda c: c.start_s)
    starts = [c.start_s for c in clips]
    language_probability = float(np.clip(transcript.language_probability or 0.0, 0, 1))
    out: list[SpeechSegment] = []
    for seg in transcript.segments:
        groups: dict[int, list[TimedWord]] = {}
        if seg.words:
            for w in seg.words:
                k = _clip_index(clips, starts, (w.start_s + w.end_s) / 2)
                if k is not None:
                    groups.setdefault(k, []).append(w)
        else:
            k = _clip_index(clips, starts, (seg.start_s + seg.end_s) / 2)
            if k is not None:
                groups[k] = []
        for k, words in sorted(groups.items()):
            clip = clips[k]
            if words:
                text = "".join(w.word for w in words).strip()
                start, end = words[0].start_s, words[-1].end_s
            else:
                text, start, end = seg.text, seg.start_s, seg.end_s
            if not text:
                continue
            start = min(max(start, clip.start_s), clip.end_s - MIN_WORD_S)
            end = min(max(end, start + MIN_WORD_S), clip.end_s)
            out.append(SpeechSegment(
                start_s=round(start, 3), end_s=round(end, 3), video_id=video_id, clip_id=clip.clip_id, text=text,
                language=transcript.language, language_probability=language_probability,
                avg_logprob=seg.avg_logprob, no_speech_prob=float(np.clip(seg.no_speech_prob, 0, 1)),
                words=[_record_word(w, clip) for w in words]))
    return out


class ASROutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video_id: str
    speech: list[SpeechSegment] = Field(default_factory=list)
    language: str | None = None
    language_probability: float | None = None
    audio_s: float = 0.0
    seconds: float = 0.0
    dead_letters: list[DeadLetter] = Field(default_factory=list)


def transcribe_video(asr: WhisperASR, dataset_dir: Path, video_id: str, clips: list[Clip],
                     chunk_s: float | None = None) -> ASROutput:
    """Speech segments of one video's clips, in chunks of up to ``chunk_s`` (None: ``asr.cfg.chunk_s``) seconds;
    a failure is a dead letter for the video, never an exception."""
    t0 = time.perf_counter()
    try:
        path = audio_path(dataset_dir, video_id)
        if not path.is_file():
            raise PermanentError(Stage.asr, video_id, f"no decoded audio at {path.name}; the audio stage must run "
                                 "first", error_class="audio_missing")
        spans = clip_chunks(clips, asr.cfg.chunk_s if chunk_s is None else chunk_s)
        transcript = transcribe_spans(asr, path, spans)
        speech = speech_segments_for_clips(transcript, video_id, clips)
    except Exception as exc:  # noqa: BLE001 — one bad video must not stop the actor
        if not isinstance(exc, PermanentError):
            log.exception("ASR failed for %s", video_id)
        return ASROutput(video_id=video_id, seconds=time.perf_counter() - t0,
                         dead_letters=[dead_letter_from_exception(exc, Stage.asr, video_id)])
    return ASROutput(video_id=video_id, speech=speech, language=transcript.language,
                     language_probability=transcript.language_probability, audio_s=transcript.duration_s,
                     seconds=time.perf_counter() - t0)


class ASRWorker:
    """Holds one Whisper model for its lifetime (a Ray actor through ``asr_actor``); processes many videos."""

    def __init__(self, cfg: ASR):
        self.asr = WhisperASR(cfg)
        self.videos = 0
        self.clips = 0
        self.seconds = 0.0

    def process(self, dataset_dir: str, video_id: str, clips: list[Clip]) -> ASROutput:
        out = transcribe_video(self.asr, Path(dataset_dir), video_id, clips)
        self.videos += 1
        self.clips += len(clips)
        self.seconds += out.seconds
        return out

    def stats(self) -> dict:
        return {"stage": Stage.asr.value, "model": self.asr.name, "model_loads": load_count(),
                "pid": os.getpid(), "videos": self.videos, "clips": self.clips, "seconds": self.seconds}


def asr_actor(cfg: ASR):
    """``ASRWorker`` as a Ray actor class with the resources ``cfg.resources`` declares."""
    from tasks.ray_stage import as_ray_actor

    return as_ray_actor(ASRWorker, cfg.resources)
