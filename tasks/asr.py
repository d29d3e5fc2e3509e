"""The ASR stage: a transcriber backend over a video's waveform in long chunks, then segments mapped onto its clips.

``settings.asr.kind`` picks the backend from ``tasks.transcribers`` (faster-whisper with Silero VAD by default).

Why long chunks, not one per clip: Whisper conditions on the previous text and needs context; cutting the audio
at every clip bound would cut words and cost one decoder warm-up per clip. Why not one pass over the whole video:
its memory (the VAD pass, the speech it collects) grows with the audio's length. So chunks of up to
``settings.asr.chunk_s`` end on clip bounds (``clip_chunks``), where a sentence is least likely to be cut, and
their times are shifted back onto the source timeline. Afterwards each word belongs to the clip that holds its
midpoint, so a segment spanning a cut is split at a word boundary and no word is counted twice.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np

from infra.audio_io import SAMPLE_RATE, clip_chunks, load_audio
from infra.errors import PermanentError
from infra.pipeline import STAGES
from infra.stage import Stage
from schemas.handoff import StageResult, VideoItem
from schemas.records import Clip, SpeechSegment, StageName, Word
from tasks.transcribers import TRANSCRIBERS, TimedWord, Transcriber, Transcript, TranscriptSegment

MIN_WORD_S = 0.01  # Whisper's DTW can give a word zero length; records need end > start


def _shifted(seg: TranscriptSegment, dt: float) -> TranscriptSegment:
    return seg.model_copy(update={
        "start_s": seg.start_s + dt, "end_s": seg.end_s + dt,
        "words": [w.model_copy(update={"start_s": w.start_s + dt, "end_s": w.end_s + dt}) for w in seg.words]})


def transcribe_spans(asr: Transcriber, path: Path | np.ndarray, spans: list[tuple[float, float]]) -> Transcript:
    """The waveform's ``spans`` (a saved file or the array) transcribed one at a time (only that slice is read) on
    the source timeline.

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


def transcribe_video(asr: Transcriber, audio: np.ndarray | None, video_id: str, clips: list[Clip],
                     chunk_s: float | None = None) -> tuple[Transcript, list[SpeechSegment]]:
    """Speech segments of one video's clips from its 16 kHz audio, in chunks of up to ``chunk_s`` (None:
    ``asr.cfg.chunk_s``) seconds."""
    if audio is None:
        raise PermanentError(StageName.asr, video_id, "no decoded audio; the audio stage must run first",
                             error_class="audio_missing")
    spans = clip_chunks(clips, asr.cfg.chunk_s if chunk_s is None else chunk_s)
    transcript = transcribe_spans(asr, audio, spans)
    return transcript, speech_segments_for_clips(transcript, video_id, clips)


@STAGES.register(StageName.asr)
class ASRStage(Stage):
    """Holds one transcriber for its lifetime; transcribes many videos."""

    name = StageName.asr
    title = "ASR"
    placement = "actor"
    section = "asr"
    backends = TRANSCRIBERS
    reads = ("clips",)
    writes = {"speech": SpeechSegment}

    def process(self, item: VideoItem) -> StageResult:
        transcript, speech = transcribe_video(self.backend, item.load_media().audio, item.video_id, item.clips)
        return StageResult(tables={"speech": speech},
                           counts={"audio_s": transcript.duration_s, "words": sum(len(s.words) for s in speech)},
                           tallies={"language": {transcript.language: 1}} if transcript.language else {})
