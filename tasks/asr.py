"""The ASR stage: a transcriber backend over each clip of a video, its segments on the video's timeline.

``settings.asr.kind`` picks the backend from ``tasks.transcribers`` (faster-whisper with Silero VAD by default).

Why one call per clip: text must never carry across a scene cut. Whisper decoding one stream over two unrelated
recordings wrote the second speaker's sentence as the first's words carried on ("again in the Confu"), and a
question quoted it; the same recording alone transcribes correctly. A clip is where the picture (and usually the
speaker) changes, so each clip is decoded alone (with a second of context either side) and without the previous
window's text as its prompt. Memory stays
bounded by the longest clip; a clip with no speech costs only the VAD pass. Each word belongs to the clip that holds
its midpoint (``speech_segments_for_clips``), so no word is counted twice.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np

from infra.audio_io import SAMPLE_RATE, load_audio
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


CUT_CONTEXT_S = 1.0  # audio either side of a clip the model hears, so a word across a cut is decoded whole


def _inside(seg: TranscriptSegment, start_s: float, end_s: float, last: bool) -> TranscriptSegment | None:
    """The part of ``seg`` whose words' midpoints lie in the clip [start_s, end_s) (closed for the last clip)."""
    def holds(t: float) -> bool:
        return start_s <= t < end_s or (last and t == end_s)

    if not seg.words:
        return seg if holds((seg.start_s + seg.end_s) / 2) else None
    words = [w for w in seg.words if holds((w.start_s + w.end_s) / 2)]
    if not words:
        return None
    if len(words) == len(seg.words):
        return seg
    return seg.model_copy(update={"words": words, "text": "".join(w.word for w in words).strip(),
                                  "start_s": words[0].start_s, "end_s": words[-1].end_s})


def transcribe_clips(asr: Transcriber, path: Path | np.ndarray, clips: list[Clip]) -> Transcript:
    """Each clip of the waveform (a saved file or the array) transcribed alone, on the source timeline.

    The model hears ``CUT_CONTEXT_S`` beyond each bound (cut in the middle of a word, Whisper invents an ending:
    "cold to I'll see you in the next video"), and only the words whose midpoints lie in the clip are kept. The
    language is that of the clip with the most speech (None when no clip has any); no clips: the whole audio.
    """
    duration = load_audio(path).shape[0] / SAMPLE_RATE
    bounds = [(c.start_s, c.end_s) for c in sorted(clips, key=lambda c: c.start_s)] or [(0.0, duration)]
    parts, segments = [], []
    for k, (start, end) in enumerate(bounds):
        heard_from = max(0.0, start - CUT_CONTEXT_S)
        part = asr.transcribe(load_audio(path, heard_from, min(duration, end + CUT_CONTEXT_S)))
        kept = [seg for seg in (_inside(_shifted(s, heard_from), start, end, k == len(bounds) - 1)
                                for s in part.segments) if seg is not None]
        parts.append((part, sum(s.end_s - s.start_s for s in kept)))
        segments += kept
    main, _ = max(parts, key=lambda p: p[1])
    return Transcript(language=main.language, language_probability=main.language_probability, duration_s=duration,
                      segments=segments)


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


def transcribe_video(asr: Transcriber, audio: np.ndarray | None, video_id: str, clips: list[Clip]
                     ) -> tuple[Transcript, list[SpeechSegment]]:
    """Speech segments of one video's clips from its 16 kHz audio, each clip transcribed alone."""
    if audio is None:
        raise PermanentError(StageName.asr, video_id, "no decoded audio; the audio stage must run first",
                             error_class="audio_missing")
    transcript = transcribe_clips(asr, audio, clips)
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
