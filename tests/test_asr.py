"""ASR with the embedded Whisper base model: real speech (JFK), the samples' espeak narration mapped onto clips,
and the word-level split of segments at clip cuts."""

from __future__ import annotations

import re

import numpy as np
import pytest

from perception_sample import prepared_sample
from schemas.records import Clip, clip_id
from schemas.settings import load_settings
from infra.audio_io import SAMPLE_RATE, clip_chunks, decode_audio_array
from schemas.handoff import StageResult, VideoItem, VideoMedia
from tasks.asr import ASRStage, speech_segments_for_clips
from tasks.transcribers import TimedWord, Transcript, TranscriptSegment
from tasks.transcribers.whisper import LANGUAGE, VAD_PARAMETERS, WhisperASR

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.casefold())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


@pytest.fixture(scope="module")
def asr() -> WhisperASR:
    return WhisperASR(load_settings("local-cpu").asr)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return prepared_sample(tmp_path_factory.getbasetemp() / "perception-sample")


@pytest.fixture(scope="module")
def sample_speech(asr, sample):
    return transcribe(asr, sample.dataset_dir, sample.video_id, sample.clips)


def transcribe(asr, folder, video_id, clips, **section) -> StageResult:
    """The ASR stage over one video in a folder, with an already loaded transcriber."""
    stage = ASRStage.standalone(asr.cfg.model_copy(update=section), backend=asr)
    return stage.run(VideoItem.in_folder(folder, video_id, clips))


def speech(result: StageResult) -> list:
    return result.tables.get("speech", [])


def language(result: StageResult) -> str | None:
    return next(iter(result.tallies.get("language", {})), None)


def test_wer_helper():
    assert wer("a b c d", "a b c d") == 0
    assert wer("a b c d", "a x c") == 0.5


def test_jfk_transcript_and_timestamps(asr, shared_media):
    audio = decode_audio_array(shared_media / "jfk.flac", "jfk")
    assert abs(audio.shape[0] / SAMPLE_RATE - 11.0) < 0.1
    transcript = asr.transcribe(audio)
    text = " ".join(s.text for s in transcript.segments)
    assert wer(JFK_TEXT, text) <= 0.15, text
    assert transcript.language == "en" and transcript.language_probability > 0.5
    words = [w for s in transcript.segments for w in s.words]
    assert len(words) >= 15  # word timestamps are on
    for s in transcript.segments:
        assert 0.0 <= s.start_s < s.end_s <= 11.0
        for w in s.words:
            assert 0.0 <= w.start_s <= w.end_s <= 11.0
    assert all(a.start_s <= b.start_s for a, b in zip(words, words[1:]))


def test_sample_narration_is_transcribed_into_its_clips(sample, sample_speech):
    out = sample_speech
    assert not out.dead_letters and language(out) == "en"
    clips = {c.clip_id: c for c in sample.clips}
    for seg in speech(out):
        clip = clips[seg.clip_id]
        assert clip.start_s <= seg.start_s < seg.end_s <= clip.end_s
        assert all(clip.start_s <= w.start_s < w.end_s <= clip.end_s for w in seg.words)
    assert sample.truth.narration
    for line in sample.truth.narration:
        # The clips the line was placed in, and the speech ASR put there during the line.
        # (Words, not segments: a segment may hold two lines of one clip.)
        heard = "".join(w.word for s in speech(out) for w in s.words
                        if line.start_s - 0.3 < (w.start_s + w.end_s) / 2 < line.end_s + 0.3
                        and clips[s.clip_id].start_s < line.end_s and clips[s.clip_id].end_s > line.start_s)
        assert wer(line.text, heard) <= 0.35, (line.text, heard)
    # No speech is put where the truth has none.
    for w in (w for seg in speech(out) for w in seg.words):
        assert any(line.start_s - 0.5 <= w.start_s and w.end_s <= line.end_s + 0.5
                   for line in sample.truth.narration), w


def test_a_line_across_a_cut_is_split_between_the_two_clips(sample, sample_speech):
    cuts = [c.start_s for c in sample.clips[1:]]
    # A second of the line on each side of the cut: a line's truth end includes the voice's fading tail, so a line
    # that runs 0.3 s past a cut may have no word after it (21.24-24.58 s over a cut at 24.24 s: "down." ends 24.24).
    crossing = [(line, cut) for line in sample.truth.narration for cut in cuts
                if line.start_s + 1.0 < cut < line.end_s - 1.0]
    if not crossing:
        pytest.skip("this sample has no narration line across a clip cut")
    out = sample_speech
    line, cut = crossing[0]
    during = [w for s in speech(out) for w in s.words if line.start_s - 0.3 < (w.start_s + w.end_s) / 2 < line.end_s]
    before = [w for w in during if w.end_s <= cut]
    after = [w for w in during if w.start_s >= cut]
    assert before and after
    joined = "".join(w.word for w in before + after)
    assert wer(line.text, joined) <= 0.35
    assert len(words_of(joined)) <= len(words_of(line.text)) + 2  # no word counted on both sides


def _clips(bounds: list[float]) -> list[Clip]:
    vid = "local-abc"
    return [Clip(clip_id=clip_id(vid, i), video_id=vid, index=i, start_s=a, end_s=b)
            for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]


def test_clip_chunks_group_consecutive_clips_up_to_the_limit():
    clips = _clips([0.0, 10.0, 20.0, 25.0, 70.0, 80.0])
    assert clip_chunks(clips, 30.0) == [(0.0, 25.0), (25.0, 70.0), (70.0, 80.0)]  # a 45 s clip is a chunk alone
    assert clip_chunks(clips[::-1], 30.0) == clip_chunks(clips, 30.0)
    assert clip_chunks(clips, 20.0) == [(0.0, 20.0), (20.0, 25.0), (25.0, 70.0), (70.0, 80.0)]  # exactly the limit fits
    assert clip_chunks(clips, 0) == clip_chunks(clips, -1.0) == clip_chunks(clips, 1e9) == [(0.0, 80.0)]
    assert clip_chunks([], 30.0) == []


def test_two_recordings_back_to_back_transcribe_as_alone(asr, shared_media, tmp_path):
    """No text carried across a cut: JFK, then 12 s of another speaker, one clip each; each clip's transcript is that
    recording's own, word for word, on the video's timeline."""
    jfk = decode_audio_array(shared_media / "jfk.flac", "jfk")
    other = decode_audio_array(shared_media / "multilingual.mp3", "multilingual")[: 12 * SAMPLE_RATE]
    both = np.concatenate([jfk, other])
    cut = jfk.shape[0] / SAMPLE_RATE
    clips = _clips([0.0, cut, both.shape[0] / SAMPLE_RATE])
    stage = ASRStage.standalone(asr.cfg, backend=asr)
    item = VideoItem(source="local-abc", video_id="local-abc", tables={"clips": clips},
                     media=VideoMedia("local-abc", both))
    out = stage.run(item)
    assert not out.dead_letters
    said = {c.clip_id: " ".join(s.text for s in speech(out) if s.clip_id == c.clip_id) for c in clips}
    alone = [" ".join(s.text for s in asr.transcribe(part).segments) for part in (jfk, other)]
    assert wer(JFK_TEXT, said[clips[0].clip_id]) <= 0.15
    assert words_of(said[clips[1].clip_id]) == words_of(alone[1]) and alone[1].strip()
    assert not set(words_of(said[clips[1].clip_id])) & {"fellow", "americans", "country"}
    assert all(clips[1].start_s <= w.start_s for s in speech(out) if s.clip_id == clips[1].clip_id for w in s.words)


def test_words_are_assigned_by_midpoint_and_nothing_is_lost():
    clips = _clips([0.0, 5.0, 10.0])
    words = [TimedWord(start_s=s, end_s=e, word=f" w{i}", probability=0.9)
             for i, (s, e) in enumerate([(3.0, 3.5), (4.6, 5.2), (4.9, 5.5), (6.0, 6.0)])]
    seg = TranscriptSegment(start_s=3.0, end_s=6.0, text="w0 w1 w2 w3", avg_logprob=-0.2, no_speech_prob=0.01,
                            words=words)
    bare = TranscriptSegment(start_s=8.0, end_s=9.0, text="no words", avg_logprob=-0.3, no_speech_prob=0.1)
    out = speech_segments_for_clips(Transcript(language="en", language_probability=0.9, duration_s=10.0,
                                               segments=[seg, bare]), "local-abc", clips)
    assert [(s.clip_id[-5:], s.text) for s in out] == [("c0000", "w0 w1"), ("c0001", "w2 w3"), ("c0001", "no words")]
    first, second = out[0], out[1]
    assert first.end_s <= 5.0 and second.start_s >= 5.0
    assert second.words[-1].end_s > second.words[-1].start_s  # a zero-length word still makes a valid record
    assert sum(len(s.words) for s in out) == 4


def test_missing_audio_is_a_dead_letter(asr, tmp_path):
    clips = _clips([0.0, 5.0])
    out = transcribe(asr, tmp_path, "local-abc", clips)
    assert speech(out) == [] and len(out.dead_letters) == 1 and out.failed
    dl = out.dead_letters[0]
    assert dl.stage == "asr" and dl.error_class == "audio_missing" and dl.video_id == "local-abc"


def test_silence_yields_no_speech(asr, tmp_path):
    transcript = asr.transcribe(np.zeros(SAMPLE_RATE * 5, dtype=np.float32))
    assert transcript.segments == []


def test_audio_without_speech_skips_the_model_and_has_no_language(asr):
    # Whisper would detect a language even here (one encoder pass over 30 s of padding): the VAD gate runs first.
    t = np.arange(SAMPLE_RATE * 4) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = (0.15 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    for audio in (tone, noise):
        transcript = asr.transcribe(audio)
        assert transcript.segments == [] and transcript.language is None
        assert transcript.language_probability is None and transcript.duration_s == pytest.approx(4.0)
    plain, _ = asr.model.transcribe(tone, vad_filter=True, vad_parameters=VAD_PARAMETERS)
    assert list(plain) == []  # the same verdict as faster-whisper's own VAD


def test_vad_gate_gives_what_faster_whisper_gives_with_its_own_vad(asr, shared_media):
    # The sentence starts after 3 s of silence and is split by a 4 s tone: the kept speech is concatenated, so every
    # time must be mapped back onto the original timeline, as faster-whisper does inside transcribe(vad_filter=True).
    jfk = decode_audio_array(shared_media / "jfk.flac", "jfk")
    cut = int(2.8 * SAMPLE_RATE)  # in the pause after "And so my fellow Americans"
    t = np.arange(SAMPLE_RATE * 4) / SAMPLE_RATE
    tone = (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    audio = np.concatenate([np.zeros(SAMPLE_RATE * 3, np.float32), jfk[:cut], tone, jfk[cut:]])
    ours = asr.transcribe(audio)
    segments, info = asr.model.transcribe(audio, language=LANGUAGE, beam_size=asr.cfg.beam_size,
                                          word_timestamps=True, vad_filter=True, vad_parameters=VAD_PARAMETERS)
    plain = [s for s in segments if s.text.strip()]
    assert ours.language == info.language == "en"
    assert [s.text for s in ours.segments] == [s.text.strip() for s in plain]
    assert wer(JFK_TEXT, " ".join(s.text for s in ours.segments)) <= 0.15
    assert [t for s in ours.segments for t in (s.start_s, s.end_s)] == \
        pytest.approx([t for s in plain for t in (s.start, s.end)], abs=1e-6)
    words = [w for s in ours.segments for w in s.words]
    assert [(w.word, w.start_s) for w in words] == [(w.word, pytest.approx(w.start, abs=1e-6))
                                                    for s in plain for w in s.words]
    tone_at = 3.0 + 2.8
    assert words[0].start_s >= 2.9 and not any(tone_at + 0.35 < w.start_s < tone_at + 4.0 - 0.35 for w in words)
    assert any(w.start_s >= tone_at + 4.0 - 0.35 for w in words)


def test_batched_pipeline_path_transcribes_with_words(shared_media):
    # The GPU profile's code path (BatchedInferencePipeline), run here on CPU with the small English model.
    cfg = load_settings("local-cpu").asr.model_copy(update={"model": "whisper-tiny.en", "batched": True,
                                                            "batch_size": 4, "beam_size": 1})
    transcript = WhisperASR(cfg).transcribe(decode_audio_array(shared_media / "jfk.flac", "jfk"))
    text = " ".join(s.text for s in transcript.segments)
    assert wer(JFK_TEXT, text) <= 0.3, text
    assert transcript.language == "en"
    words = [w for s in transcript.segments for w in s.words]
    assert words and all(0.0 <= w.start_s <= w.end_s <= 11.0 for w in words)
