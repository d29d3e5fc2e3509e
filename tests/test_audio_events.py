"""Audio events and five-axis captions: the signal-analysis tagger against the samples' audio truth and a real
film excerpt; the transformers taggers (AST, CLAP) through their real loading code with tiny random weights."""

from __future__ import annotations

import re

import numpy as np
import pytest

from perception_sample import prepared_sample
from schemas.records import AudioAxis, AudioEvent, Clip, SpeechSegment, clip_id
from schemas.settings import AudioTagger
from infra.audio_io import SAMPLE_RATE, clip_chunks, decode_audio_array
from schemas.handoff import VideoItem
from tasks.audio_caption import caption_clip, caption_clips
from tasks.audio_events import AudioEventsStage, events_for_clips, tag_video
from tasks.taggers import TAGGERS, Span, axis_of_label, merge_window_labels
from tasks.taggers.signal_analysis import SOUND_CLASSES, TAGGER_NAME, analyse


SIGNAL = AudioTagger(kind="signal-analysis")  # the model-free fallback these tests measure against the truth


def load_tagger(cfg: AudioTagger):
    return TAGGERS.get(cfg.kind)(cfg)

TRUTH_MARGIN_S = 0.6  # boundaries are judged by what is heard on either side, so the edges are left out


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return prepared_sample(tmp_path_factory.getbasetemp() / "perception-sample")


@pytest.fixture(scope="module")
def sample_spans(sample) -> list[Span]:
    return analyse(sample.audio())


def coverage(spans: list[Span], label: str, start: float, end: float) -> float:
    covered = sum(max(0.0, min(s.end_s, end) - max(s.start_s, start)) for s in spans if s.label == label)
    return covered / (end - start)


def test_sample_sound_classes_match_the_truth_at_their_times(sample, sample_spans):
    classes = [s for s in sample_spans if s.label in SOUND_CLASSES]
    # the class spans tile the waveform: one class at every moment
    assert classes[0].start_s == 0.0
    assert all(abs(a.end_s - b.start_s) < 1e-6 for a, b in zip(classes, classes[1:]))
    kinds = {seg.kind for seg in sample.truth.audio}
    assert {"tone", "noise", "silence", "rhythm"} <= kinds
    for seg in sample.truth.audio:
        if seg.kind == "speech":
            continue
        got = coverage(classes, seg.kind, seg.start_s + TRUTH_MARGIN_S, seg.end_s - TRUTH_MARGIN_S)
        assert got >= 0.9, (seg, [s for s in classes if s.start_s < seg.end_s and s.end_s > seg.start_s])
    for line in sample.truth.narration:
        assert coverage(classes, "speech", line.start_s, line.end_s) >= 0.9, line
    speech_truth = [(a.start_s, a.end_s) for a in sample.truth.audio if a.kind == "speech"]
    for s in classes:
        if s.label == "speech":  # never outside the truth's speech segments
            assert any(a - 0.3 <= s.start_s and s.end_s <= b + 0.3 for a, b in speech_truth), s


def test_sample_descriptors_measure_pitch_tempo_and_noise_colour(sample, sample_spans):
    def inside(seg, axis):
        return [s for s in sample_spans if s.axis == axis and s.label not in SOUND_CLASSES
                and s.start_s < seg.end_s - TRUTH_MARGIN_S and s.end_s > seg.start_s + TRUTH_MARGIN_S]

    for seg in sample.truth.audio:
        if seg.kind == "tone":
            (timbre,) = [s for s in inside(seg, AudioAxis.timbre) if s.label.startswith("pure tone")]
            hz = float(re.search(r"near (\d+) Hz", timbre.label).group(1))
            assert abs(hz - seg.frequency_hz) / seg.frequency_hz < 0.01, (timbre, seg)
        elif seg.kind == "rhythm":
            (beat,) = [s for s in inside(seg, AudioAxis.event) if s.label.startswith("regular beat")]
            bpm = float(re.search(r"at (\d+) bpm", beat.label).group(1))
            assert abs(bpm - seg.bpm) / seg.bpm < 0.02, (beat, seg)
        elif seg.kind == "noise":
            (timbre,) = [s for s in inside(seg, AudioAxis.timbre) if "noise" in s.label]
            assert timbre.label.startswith(seg.noise_color), (timbre, seg)
        elif seg.kind == "speech":
            voice = [s for s in inside(seg, AudioAxis.timbre) if s.label.startswith("voice")]
            assert voice and "Hz" in voice[0].label
    for s in sample_spans:
        assert 0.0 <= s.score <= 1.0 and s.start_s < s.end_s


def test_film_excerpt_is_music_and_sound_without_speech(shared_media):
    audio = decode_audio_array(shared_media / "big_buck_bunny_0_30.webm", "bbb")
    spans = analyse(audio)
    duration = audio.shape[0] / SAMPLE_RATE
    assert coverage(spans, "speech", 0.0, duration) == 0.0
    sounding = sum(coverage(spans, label, 0.0, duration) for label in ("music", "tone", "noise", "sound", "rhythm"))
    assert sounding >= 0.7, [s for s in spans if s.label in SOUND_CLASSES]
    assert coverage(spans, "music", 0.0, duration) >= 0.5
    assert not [s for s in spans if s.axis == AudioAxis.narration]


def test_video_events_are_cut_onto_clips(sample):
    stage = AudioEventsStage.standalone(SIGNAL)
    out = stage.run(VideoItem.in_folder(sample.dataset_dir, sample.video_id, sample.clips))
    events = out.tables["audio_events"]
    assert not out.dead_letters and events
    clips = {c.clip_id: c for c in sample.clips}
    assert set(clips) == {e.clip_id for e in events}
    for e in events:
        c = clips[e.clip_id]
        assert c.start_s <= e.start_s < e.end_s <= c.end_s and e.tagger == TAGGER_NAME
    assert out.tallies["label"] and sum(out.tallies["label"].values()) == len(events)
    assert stage.worker_stats().clips == len(sample.clips) and stage.worker_stats().model_loads >= 1


def test_chunked_tagging_is_on_the_source_timeline(sample):
    tagger = load_tagger(SIGNAL)
    assert len(clip_chunks(sample.clips, 20.0)) >= 4
    audio = VideoItem.in_folder(sample.dataset_dir, sample.video_id, sample.clips).load_media().audio
    whole, whole_s = tag_video(tagger, audio, sample.video_id, sample.clips, chunk_s=0)
    chunked, chunked_s = tag_video(tagger, audio, sample.video_id, sample.clips, chunk_s=20.0)
    assert chunked_s == whole_s > 74.0
    clips = {c.clip_id: c for c in sample.clips}
    assert all(clips[e.clip_id].start_s <= e.start_s < e.end_s <= clips[e.clip_id].end_s for e in chunked)
    for line in sample.truth.narration:
        assert coverage(chunked, "speech", line.start_s, line.end_s) >= 0.9, line

    def classes_at(events: list[AudioEvent], t: float) -> set[str]:
        return {e.label for e in events if e.label in SOUND_CLASSES and e.start_s <= t < e.end_s}

    # The same sound at almost every moment: only near a chunk's edge may it differ (two clicks make no rhythm).
    times = np.arange(0.0, whole_s, 0.1)
    agree = np.mean([classes_at(whole, t) == classes_at(chunked, t) for t in times])
    assert agree >= 0.9, agree

    def labels(events: list[AudioEvent], clip: str) -> set[str]:  # measured numbers (Hz, bpm) may move a little
        return {re.sub(r"\d+", "#", e.label) for e in events if e.clip_id == clip}

    assert sum(labels(whole, c) == labels(chunked, c) for c in clips) >= len(clips) - 2


def test_five_axis_captions_follow_speech_and_events(sample, sample_spans):
    clips = sample.clips
    events = events_for_clips(sample_spans, sample.video_id, clips, TAGGER_NAME)
    line = sample.truth.narration[0]
    speaking = sample.clip_at((line.start_s + line.end_s) / 2)
    speech = [SpeechSegment(start_s=line.start_s, end_s=min(line.end_s, speaking.end_s), video_id=sample.video_id,
                            clip_id=speaking.clip_id, text=line.text, language="en", language_probability=0.99,
                            avg_logprob=-0.2, no_speech_prob=0.01)]
    captions = caption_clips(clips, speech, events)
    assert [c.clip_id for c in captions] == [c.clip_id for c in clips]
    by_clip = {c.clip_id: c for c in captions}
    assert by_clip[speaking.clip_id].narration == line.text
    assert line.text[:20] in by_clip[speaking.clip_id].sentence
    for clip in clips:
        cap = by_clip[clip.clip_id]
        assert (cap.start_s, cap.end_s) == (clip.start_s, clip.end_s) and cap.sentence
        truth_here = [a for a in sample.truth.audio if a.end_s - TRUTH_MARGIN_S > clip.start_s + 1.0
                      and a.start_s + TRUTH_MARGIN_S < clip.end_s - 1.0]
        kinds = {a.kind for a in truth_here}
        if "silence" in kinds:
            assert "silence (" in cap.environment, cap
        if "tone" in kinds:
            assert "pure tone near" in cap.timbre, cap
        if "rhythm" in kinds:
            assert "regular beat at" in cap.event, cap
        if kinds and kinds <= {"tone", "silence"}:
            assert cap.narration == ""
    # times in an axis text are the clip's own event times
    first = captions[0]
    assert "0.0-" in first.environment + first.event + first.timbre


def test_caption_without_transcript_reports_unintelligible_speech():
    vid = "local-abc"
    clip = Clip(clip_id=clip_id(vid, 0), video_id=vid, index=0, start_s=0.0, end_s=10.0)
    events = [AudioEvent(start_s=2.0, end_s=4.0, video_id=vid, clip_id=clip.clip_id, label="speech",
                         axis=AudioAxis.narration, score=0.8, tagger=TAGGER_NAME),
              AudioEvent(start_s=0.0, end_s=10.0, video_id=vid, clip_id=clip.clip_id, label="music",
                         axis=AudioAxis.environment, score=0.9, tagger=TAGGER_NAME),
              AudioEvent(start_s=5.0, end_s=6.0, video_id=vid, clip_id=clip.clip_id, label="dog bark",
                         axis=AudioAxis.event, score=0.1, tagger=TAGGER_NAME)]  # too weak to mention
    cap = caption_clip(clip, [], events)
    assert cap.narration == "unintelligible speech (2.0-4.0 s)"
    assert cap.environment == "music (0.0-10.0 s)" and cap.event == ""
    empty = caption_clip(clip, [], [])
    assert empty.narration == empty.environment == "" and empty.sentence


def test_window_labels_merge_into_spans_and_axes_are_assigned():
    spans = merge_window_labels([(0.0, 1.0, [("Speech", 0.8), ("Music", 0.4)]), (1.0, 2.0, [("Speech", 0.6)]),
                                 (2.0, 3.0, [("Dog", 0.5)]), (3.0, 4.0, [("Speech", 0.9)])])
    got = sorted((s.label, s.start_s, s.end_s, round(s.score, 2)) for s in spans)
    assert got == [("Dog", 2.0, 3.0, 0.5), ("Music", 0.0, 1.0, 0.4), ("Speech", 0.0, 2.0, 0.7),
                   ("Speech", 3.0, 4.0, 0.9)]
    assert axis_of_label("Male speech, man speaking") == AudioAxis.narration
    assert axis_of_label("Piano") == AudioAxis.timbre
    assert axis_of_label("Rain on surface") == AudioAxis.environment
    assert axis_of_label("Sad music") == AudioAxis.emotion
    assert axis_of_label("Door") == AudioAxis.event


def test_missing_audio_is_a_dead_letter(tmp_path):
    out = AudioEventsStage.standalone(SIGNAL).run(VideoItem.in_folder(tmp_path, "local-abc", []))
    assert not out.tables and out.dead_letters[0].error_class == "audio_missing" and out.failed
    assert out.dead_letters[0].stage == "audio_events" and out.dead_letters[0].video_id == "local-abc"


# ---------------------------------------------------------------- transformers taggers, tiny random weights

AST_LABELS = ["Speech", "Music", "Silence", "Dog", "Piano", "Happy music"]


@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory):
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    folder = tmp_path_factory.mktemp("tiny-ast")
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    num_mel_bins=32, max_length=100, id2label=dict(enumerate(AST_LABELS)),
                    label2id={label: i for i, label in enumerate(AST_LABELS)})
    torch.manual_seed(0)
    model = ASTForAudioClassification(cfg)
    model.save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=100).save_pretrained(folder)
    return folder, model


def test_audioset_tagger_loads_saved_weights_and_tags_windows(tiny_ast):
    import torch

    folder, saved = tiny_ast
    tagger = load_tagger(AudioTagger(kind="audioset", model=str(folder), window_s=1.0))
    assert tagger.labels == AST_LABELS
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, tagger.model.state_dict()[name]), name
    audio = (np.random.default_rng(0).standard_normal(SAMPLE_RATE * 5) * 0.1).astype(np.float32)
    spans = tagger.tag(audio)
    assert spans and all(s.label in AST_LABELS for s in spans)
    assert all(0.0 <= s.start_s < s.end_s <= 5.0 and 0.0 <= s.score <= 1.0 for s in spans)
    assert all(s.axis == axis_of_label(s.label) for s in spans)
    # the same scores as the model gives directly for the first window
    inputs = tagger.extractor([audio[:SAMPLE_RATE]], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.inference_mode():
        probs = torch.sigmoid(saved.eval()(**inputs).logits)[0]
    first = {s.label for s in spans if s.start_s == 0.0}
    expected = {AST_LABELS[i] for i in torch.argsort(probs, descending=True)[:3].tolist() if probs[i] >= 0.3}
    assert first == expected
    vid = "local-abc"
    clips = [Clip(clip_id=clip_id(vid, i), video_id=vid, index=i, start_s=a, end_s=b)
             for i, (a, b) in enumerate([(0.0, 2.5), (2.5, 5.0)])]
    events = events_for_clips(spans, vid, clips, tagger.name)
    assert {e.clip_id for e in events} <= {c.clip_id for c in clips} and events
    assert all(e.tagger.startswith("audioset:") for e in events)


def test_clap_tagger_scores_its_vocabulary(tmp_path):
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the sound of speech music rain a dog barking"], vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                               unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    tok.save_pretrained(tmp_path)
    cfg = ClapConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id),
                     audio_config=dict(depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=16,
                                       hidden_size=32, spec_size=64, window_size=4, num_mel_bins=16),
                     projection_dim=16)
    torch.manual_seed(0)
    ClapModel(cfg).save_pretrained(tmp_path)
    ClapFeatureExtractor(feature_size=16, max_length_s=1, truncation="rand_trunc").save_pretrained(tmp_path)
    labels = ["speech", "music", "rain", "a dog barking"]
    tagger = load_tagger(AudioTagger(kind="clap", model=str(tmp_path), labels=labels, window_s=1.0))
    assert tagger.extractor.sampling_rate == 48_000  # CLAP hears 48 kHz: the tagger resamples
    audio = (np.random.default_rng(1).standard_normal(SAMPLE_RATE * 3) * 0.1).astype(np.float32)
    scores = tagger._scores([audio[:SAMPLE_RATE]])
    assert scores.shape == (1, len(labels)) and abs(float(scores.sum()) - 1.0) < 1e-4
    spans = tagger.tag(audio)
    assert spans and all(s.label in labels and 0.0 <= s.start_s < s.end_s <= 3.0 for s in spans)


def test_short_runs_join_their_longer_neighbour_and_speech_is_kept():
    from tasks.taggers.signal_analysis import _absorb_short, runs_of

    s, m, n, sp = (SOUND_CLASSES.index(c) for c in ("silence", "music", "noise", "speech"))
    cls = np.array([m] * 20 + [n] * 3 + [m] * 10 + [s] * 2 + [n] * 2 + [s] * 30 + [sp] * 2 + [s] * 20)
    out = _absorb_short(cls, min_frames=5)
    assert [(v, e - b) for v, b, e in runs_of(out)] == [(m, 35), (s, 32), (sp, 2), (s, 20)]
    long = np.tile(np.array([m] * 3 + [n] * 2), 20_000)  # 100k frames of flicker: one pass, not quadratic
    assert len(runs_of(_absorb_short(long, min_frames=16))) == 1
