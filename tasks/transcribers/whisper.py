"""faster-whisper (CTranslate2 Whisper) with Silero VAD before the model.

The model is chosen by ``settings.asr.model``: the embedded profile names a model-cache folder (CTranslate2
Whisper base, multilingual, int8 on CPU); the GPU profile names a faster-whisper size such as ``large-v3`` and
turns on the batched pipeline (``BatchedInferencePipeline``). Word timestamps are on, and the language is detected.

Why VAD runs before the model, not inside ``WhisperModel.transcribe``: when VAD keeps nothing (music, ambience,
tones), faster-whisper still detects a language, which is one encoder pass over 30 s of padding (~1.5 s of CPU for
Whisper base, whatever the audio's length). A chunk with no speech skips the model and has no language. A chunk
with speech gets exactly what ``transcribe(vad_filter=True)`` does: the kept speech concatenated, then the times
restored by faster-whisper's own functions.
"""

from __future__ import annotations

import os

import numpy as np

from infra import model_cache
from schemas.handoff import SAMPLE_RATE
from schemas.settings import ASR
from tasks.transcribers import TRANSCRIBERS, TimedWord, Transcript, TranscriptSegment

# VAD for transcription: keep sentence pauses inside a chunk so Whisper sees whole sentences.
VAD_PARAMETERS = {"min_silence_duration_ms": 1000, "speech_pad_ms": 300}
LANGUAGE = None  # None: detect (settings has no field yet; see the perception report)


@TRANSCRIBERS.register("faster-whisper")
class WhisperASR:
    """A loaded faster-whisper model plus the transcription options of one ``settings.asr``."""

    @staticmethod
    def models(cfg: ASR) -> list[str]:
        return [cfg.model]

    @staticmethod
    def model_card(cfg: ASR) -> str:
        return f"Whisper `{cfg.model}` on faster-whisper (CTranslate2, {cfg.device}, {cfg.compute_type})"

    def __init__(self, cfg: ASR):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.cfg = cfg
        source = model_cache.resolve(cfg.model)  # a cache name, a prefetched hub repository or a folder
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        self.model = WhisperModel(source, device=cfg.device, compute_type=cfg.compute_type,
                                  cpu_threads=cfg.cpu_threads, download_root=str(model_cache.cache_dir()),
                                  local_files_only=offline)
        self.pipeline = BatchedInferencePipeline(self.model) if cfg.batched else None
        self.name = f"faster-whisper:{cfg.model}"

    def transcribe(self, audio: np.ndarray) -> Transcript:
        from faster_whisper.transcribe import restore_speech_timestamps
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        audio = np.ascontiguousarray(audio, dtype=np.float32)
        duration = audio.shape[0] / SAMPLE_RATE
        # Each 30 s window decoded without the previous one's text as its prompt: with it, a wrong or unrelated
        # sentence is carried into the next window (and from one speech region into another, VAD joins them).
        kwargs = dict(language=LANGUAGE, beam_size=self.cfg.beam_size, word_timestamps=self.cfg.word_timestamps,
                      condition_on_previous_text=False)
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
