"""The record validators: what the contract between stages accepts and refuses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from schemas.records import (AVBenchItem, Clip, ClipDescription, DeadLetter, QAItem, SpeechSegment, StageName,
                             VideoRecord, Word, hms, parse_hms)

VID = "yt-abc_123"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def clip(**kw):
    return {"clip_id": f"{VID}.c0003", "video_id": VID, "index": 3, "start_s": 31.832, "end_s": 36.803,
            "keyframe_times": [32.0, 36.0]} | kw


def qa(**kw):
    return {"qa_id": f"{VID}.q0123456789ab", "video_id": VID, "kind": "av", "type": "global_av_inference",
            "question": "What is heard while the dog runs?",
            "options": ["A bark", "A bell", "Rain on a roof", "Silence"], "answer_index": 0,
            "evidence_clip_ids": [f"{VID}.c0003"], "generator_model": "qwen"} | kw


def description(**kw):
    return {"clip_id": f"{VID}.c0003", "video_id": VID, "start_s": 31.832, "end_s": 36.803,
            "visual": "a dog runs", "narration": "", "environment": "park", "timbre": "", "event": "bark",
            "emotion": "cheerful", "fused": "From 00:00:31.832 to 00:00:36.803: a dog barks in a park.",
            "model": "qwen"} | kw


def video(**kw):
    return {"video_id": VID, "source": "https://example.org/v", "extractor": "generic", "media_path": "media/x.mp4",
            "duration_s": 60.0, "fps": 25.0, "width": 640, "height": 360, "has_audio": True, "size_bytes": 10,
            "sha256": "0" * 64, "acquired_at": T0} | kw


def test_valid_examples_pass():
    assert Clip(**clip()).clip_id == f"{VID}.c0003"
    assert QAItem(**qa()).kind.value == "av"
    assert ClipDescription(**description()).fused.startswith("From 00:00:31.832")
    assert VideoRecord(**video()).acquired_at == T0
    anchored = QAItem(**qa(kind="av_temporal", type="time_range_anchored", start_s=1.0, end_s=13.0))
    assert (anchored.start_s, anchored.end_s) == (1.0, 13.0)
    point = QAItem(**qa(kind="av_temporal", type="time_point_anchored", start_s=237.48))
    assert point.end_s is None


@pytest.mark.parametrize("bad", [
    {"start_s": -0.5},
    {"start_s": 36.803},  # end == start
    {"start_s": 40.0},  # end < start
    {"end_s": float("nan")},
    {"keyframe_times": [30.0]},  # outside the clip
    {"index": 4},  # clip_id no longer matches
])
def test_clip_rejects(bad):
    with pytest.raises(ValidationError):
        Clip(**clip(**bad))


def test_word_and_segment_times():
    with pytest.raises(ValidationError):
        Word(word="hi", probability=0.9, start_s=2.0, end_s=1.0)
    with pytest.raises(ValidationError):
        Word(word="hi", probability=1.5, start_s=1.0, end_s=2.0)
    with pytest.raises(ValidationError):
        SpeechSegment(video_id=VID, clip_id=f"{VID}.c0000", text="hi", language="en", language_probability=0.9,
                      avg_logprob=-0.2, no_speech_prob=0.1, start_s=-1.0, end_s=1.0)


@pytest.mark.parametrize("bad_id", ["yt-a/b", "yt-../x", "../etc", "yt-a b", "YT-abc", "", "yt-" + "a" * 65])
def test_bad_video_ids(bad_id):
    with pytest.raises(ValidationError):
        VideoRecord(**video(video_id=bad_id))


@pytest.mark.parametrize("field,value", [("clip_id", f"{VID}.c12"), ("clip_id", f"{VID}/c0003"),
                                         ("qa_id", f"{VID}.q0123"), ("qa_id", f"{VID}.qZZZZZZZZZZZZ")])
def test_bad_clip_and_qa_ids(field, value):
    make = Clip if field == "clip_id" else QAItem
    with pytest.raises(ValidationError):
        make(**(clip if make is Clip else qa)(**{field: value}))


@pytest.mark.parametrize("options", [
    ["A", "B", "C"],
    ["A", "B", "C", "D", "E"],
    ["A bark", "a  BARK ", "Rain", "Silence"],  # equal once case and spaces are normalised
    ["A bark", "", "Rain", "Silence"],
])
def test_options_must_be_four_distinct(options):
    with pytest.raises(ValidationError):
        QAItem(**qa(options=options))


@pytest.mark.parametrize("index", [-1, 4])
def test_answer_index_range(index):
    with pytest.raises(ValidationError):
        QAItem(**qa(answer_index=index))


def test_kind_must_match_type():
    with pytest.raises(ValidationError, match="belongs to kind"):
        QAItem(**qa(kind="av_temporal"))
    with pytest.raises(ValidationError, match="belongs to kind"):
        QAItem(**qa(type="temporal_grounding", start_s=1.0, end_s=2.0))


@pytest.mark.parametrize("type_,times", [
    ("global_av_inference", {"start_s": 1.0}),  # not anchored: no times
    ("time_point_anchored", {}),  # needs a point
    ("time_point_anchored", {"start_s": 1.0, "end_s": 2.0}),  # a point, not a range
    ("time_range_anchored", {"start_s": 1.0}),
    ("time_range_anchored", {"start_s": 5.0, "end_s": 5.0}),
    ("temporal_grounding", {"start_s": 9.0, "end_s": 2.0}),
])
def test_anchored_type_rules(type_, times):
    kind = "av" if type_ == "global_av_inference" else "av_temporal"
    with pytest.raises(ValidationError):
        QAItem(**qa(kind=kind, type=type_, **times))


def test_evidence_from_another_video_rejected():
    with pytest.raises(ValidationError, match="not from video"):
        QAItem(**qa(evidence_clip_ids=["yt-other.c0001"]))


@pytest.mark.parametrize("fused", [
    "From 00:00:31.000 to 00:00:36.803: off by the start.",
    "From 00:00:31.832 to 00:00:37.803: off by the end.",
    "From 0:00:31.832 to 00:00:36.803: bad format.",
    "a dog barks, with no prefix.",
])
def test_fused_prefix_must_match_clip(fused):
    with pytest.raises(ValidationError):
        ClipDescription(**description(fused=fused))


def test_naive_datetimes_rejected_and_aware_ones_normalised():
    with pytest.raises(ValidationError, match="timezone-aware"):
        VideoRecord(**video(acquired_at=datetime(2025, 1, 1)))
    with pytest.raises(ValidationError, match="timezone-aware"):
        DeadLetter(stage=StageName.write, source_id=VID, error_class="X", message="m", failed_at="2025-01-01T00:00:00")
    plus2 = datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert VideoRecord(**video(acquired_at=plus2)).acquired_at.utcoffset() == timedelta(0)


def test_avbench_letter_must_match_index():
    base = {k: v for k, v in qa().items() if k != "generator_model"}
    ok = AVBenchItem(**base, item_id="avb-1", answer_letter="A", duration_s=60.0, core=True,
                     benchmark_version="1")
    assert ok.answer_letter == "A"
    with pytest.raises(ValidationError, match="answer_letter"):
        AVBenchItem(**base, item_id="avb-1", answer_letter="C", duration_s=60.0, core=True,
                    benchmark_version="1")


def test_strict_models():
    with pytest.raises(ValidationError):
        Clip(**clip(unknown_field=1))
    c = Clip(**clip())
    with pytest.raises(ValidationError):
        c.end_s = 1.0  # validated on assignment


@pytest.mark.parametrize("seconds,text", [(0.0, "00:00:00.000"), (31.832, "00:00:31.832"),
                                          (237.48, "00:03:57.480"), (3599.9996, "01:00:00.000"),
                                          (5 * 3600 + 7.2, "05:00:07.200")])
def test_hms(seconds, text):
    assert hms(seconds) == text
    assert parse_hms(text) == pytest.approx(round(seconds, 3))


@pytest.mark.parametrize("ms", [0, 1, 999, 59_999, 3_599_999, 36_000_123])
def test_hms_round_trip(ms):
    assert parse_hms(hms(ms / 1000)) == pytest.approx(ms / 1000)
    assert hms(parse_hms(hms(ms / 1000))) == hms(ms / 1000)


@pytest.mark.parametrize("text", ["1:2:3", "00:60", "abc", "00:00:00.1234", ""])
def test_parse_hms_rejects(text):
    with pytest.raises(ValueError):
        parse_hms(text)
