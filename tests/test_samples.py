"""Synthetic samples: the truth file must describe the media exactly, since other stages are scored against it.

Real ffmpeg, ffprobe, espeak-ng and tesseract throughout; one 75 s sample is rendered once for the module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytesseract
import pytest
from PIL import Image
from pydantic import ValidationError

from devdata.samples import (
    AUDIO_KINDS,
    INJECTION_SENTENCE,
    SampleToolError,
    SampleTruth,
    load_truth,
    make_samples,
    plan_samples,
)

SR = 16_000  # the rate the audio stage decodes to


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, SampleTruth]:
    out = tmp_path_factory.mktemp("samples")
    truths = make_samples(out, seed=0, count=1)
    assert len(truths) == 1
    return out, truths[0]


@pytest.fixture(scope="module")
def gray_frames(sample) -> np.ndarray:
    """Every frame, 160x90 grayscale, as float32 [frames, 90, 160]."""
    out, truth = sample
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out / truth.file), "-vf", "scale=160:90,format=gray",
                          "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 90, 160).astype(np.float32)


@pytest.fixture(scope="module")
def mono16k(sample) -> np.ndarray:
    out, truth = sample
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out / truth.file), "-vn", "-ac", "1", "-ar", str(SR),
                          "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _window(audio: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    return audio[round(start_s * SR): round(end_s * SR)]


def test_media_matches_truth_header(sample):
    out, truth = sample
    assert (out / truth.file).is_file() and (out / f"{truth.name}.truth.json").is_file()
    info = json.loads(subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format",
                                      "-of", "json", str(out / truth.file)], capture_output=True, check=True).stdout)
    assert abs(float(info["format"]["duration"]) - truth.duration_s) <= 0.1
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert len(video) == 1 and len(audio) == 1
    v, a = video[0], audio[0]
    assert (v["codec_name"], v["width"], v["height"], v["r_frame_rate"]) == ("h264", 640, 360, "25/1")
    assert (truth.width, truth.height, truth.fps) == (640, 360, 25.0)
    assert int(v["nb_read_frames"]) == round(truth.duration_s * truth.fps)  # cuts can only be exact if frames are
    assert (a["codec_name"], a["sample_rate"], a["channels"]) == ("aac", "44100", 2)


def test_truth_file_round_trips(sample):
    out, truth = sample
    assert load_truth(out / f"{truth.name}.truth.json") == truth
    assert truth.file == f"{truth.name}.mp4" and "/" not in truth.file


def test_truth_is_consistent(sample):
    _, truth = sample
    scenes = truth.scenes
    assert 5 <= len(scenes) <= 10
    assert scenes[0].start_s == 0 and scenes[-1].end_s == truth.duration_s
    assert all(a.end_s == b.start_s for a, b in pairwise(scenes))
    assert truth.cuts_s == [s.start_s for s in scenes[1:]]
    assert all(abs(c * 25 - round(c * 25)) < 1e-6 for c in truth.cuts_s), "cuts must sit on frame boundaries"
    lengths = [s.end_s - s.start_s for s in scenes]
    assert max(lengths) > 30 and min(lengths) < 2  # one to split, one to merge
    assert len({s.pattern for s in scenes}) == len(scenes)
    for s in scenes:
        assert s.text == "" or all(w.isalpha() and w.isupper() for w in s.text.split(" "))

    audio = truth.audio
    assert audio[0].start_s == 0 and audio[-1].end_s == truth.duration_s
    assert all(a.end_s == b.start_s for a, b in pairwise(audio))
    assert {a.kind for a in audio} == set(AUDIO_KINDS)
    assert all(a.kind != b.kind for a, b in pairwise(audio))
    for edge in (a.end_s for a in audio[:-1]):
        assert min(abs(edge - c) for c in truth.cuts_s) >= 0.5, f"audio edge {edge} too close to a cut"

    speech = [a for a in audio if a.kind == "speech"]
    assert truth.narration
    for line in truth.narration:
        assert any(a.start_s <= line.start_s < line.end_s <= a.end_s for a in speech)
    injections = [line for line in truth.narration if line.injection]
    assert [line.text for line in injections] == [INJECTION_SENTENCE]


def test_truth_validator_rejects_inconsistent_truth(sample):
    _, truth = sample
    data = truth.model_dump()
    gap = json.loads(json.dumps(data))
    gap["scenes"][1]["start_s"] += 0.04
    wrong_cuts = json.loads(json.dumps(data))
    wrong_cuts["cuts_s"][0] += 0.04
    stray_line = json.loads(json.dumps(data))
    silence = next(a for a in data["audio"] if a["kind"] == "silence")
    stray_line["narration"][0].update(start_s=silence["start_s"], end_s=silence["end_s"])
    extra = json.loads(json.dumps(data)) | {"surprise": 1}
    for bad in (gap, wrong_cuts, stray_line, extra):
        with pytest.raises(ValidationError):
            SampleTruth.model_validate(bad)


def test_plan_is_deterministic_and_matches_written_truth(sample):
    _, truth = sample
    first = plan_samples(seed=0, count=3)
    again = plan_samples(seed=0, count=3)
    assert [t.model_dump_json() for t in first] == [t.model_dump_json() for t in again]
    assert first[0] == truth
    assert [t.duration_s for t in first] == [75.0, 100.0, 130.0]
    assert any(s.end_s - s.start_s > 30 for t in first for s in t.scenes)
    other = plan_samples(seed=1, count=1)[0]
    assert other.name != truth.name and other.cuts_s != truth.cuts_s


def test_second_run_keeps_intact_samples(sample):
    out, truth = sample
    mp4, truth_file = out / truth.file, out / f"{truth.name}.truth.json"
    before = (mp4.stat().st_mtime_ns, truth_file.stat().st_mtime_ns)
    assert make_samples(out, seed=0, count=1) == [truth]
    assert (mp4.stat().st_mtime_ns, truth_file.stat().st_mtime_ns) == before


def test_damaged_video_is_rendered_again(sample, tmp_path):
    out, truth = sample
    shutil.copy(out / f"{truth.name}.truth.json", tmp_path)
    data = (out / truth.file).read_bytes()
    (tmp_path / truth.file).write_bytes(data[: len(data) // 3])  # an interrupted copy
    assert make_samples(tmp_path, seed=0, count=1) == [truth]
    assert (tmp_path / truth.file).stat().st_size > len(data) // 2
    assert not list(tmp_path.glob(".*partial*"))


def test_cuts_in_truth_are_the_only_cuts_in_the_frames(sample, gray_frames):
    _, truth = sample
    assert len(gray_frames) == round(truth.duration_s * 25)
    change = np.abs(np.diff(gray_frames, axis=0)).mean(axis=(1, 2))  # change[i]: frame i -> i + 1
    at_cut = np.zeros(len(change), dtype=bool)
    at_cut[[round(c * 25) - 1 for c in truth.cuts_s]] = True
    assert change[at_cut].min() > 15, "the frames on either side of a cut should differ strongly"
    assert change[~at_cut].max() < 10, "frames within a scene should differ little"


def test_audio_segments_in_truth_are_in_the_signal(sample, mono16k):
    _, truth = sample
    assert abs(len(mono16k) / SR - truth.duration_s) < 0.1
    inner = {a: _window(mono16k, a.start_s + 0.1, a.end_s - 0.1) for a in truth.audio}
    loudest_tone = max(_rms(x) for a, x in inner.items() if a.kind == "tone")
    for seg, x in inner.items():
        if seg.kind == "silence":
            assert _rms(x) < 0.01 * loudest_tone
        elif seg.kind == "tone":
            spectrum = np.abs(np.fft.rfft(x))
            peak_hz = np.fft.rfftfreq(len(x), 1 / SR)[int(spectrum.argmax())]
            assert abs(peak_hz - seg.frequency_hz) < 2
        elif seg.kind == "noise":
            assert _rms(x) > 0.02
        elif seg.kind == "rhythm":
            period = 60.0 / seg.bpm
            beats = np.arange(seg.start_s, seg.end_s - period, period)
            on = [_rms(_window(mono16k, b, b + 0.03)) for b in beats]
            off = [_rms(_window(mono16k, b + period / 2, b + period / 2 + 0.03)) for b in beats]
            assert len(beats) >= 3 and min(on) > 10 * max(off)
    for line in truth.narration:
        assert _rms(_window(mono16k, line.start_s, line.end_s)) > 0.3 * loudest_tone
        assert _rms(_window(mono16k, line.start_s - 0.3, line.start_s - 0.05)) < 0.01 * loudest_tone


def test_on_screen_words_are_readable(sample):
    out, truth = sample
    # Flat backgrounds only: this checks the words drawn match the truth, not tesseract on noise patterns.
    calm = [s for s in truth.scenes if s.text and s.pattern in {"bouncing_square", "checker", "gradients",
                                                                   "sliding_bar", "smptebars"}][:2]
    assert calm
    for scene in calm:
        mid = (scene.start_s + scene.end_s) / 2
        raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{mid:.3f}", "-i", str(out / truth.file),
                              "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                             capture_output=True, check=True).stdout
        image = Image.fromarray(np.frombuffer(raw, np.uint8).reshape(truth.height, truth.width))
        assert scene.text in pytesseract.image_to_string(image)


def test_missing_ffmpeg_names_make_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no programs on it
    with pytest.raises(SampleToolError, match="make setup"):
        make_samples(tmp_path / "out", seed=0, count=1)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
