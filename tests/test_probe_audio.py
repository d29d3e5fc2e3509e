"""Probe and audio decode on real media (tests/../shared/media) and on small generated videos."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from schemas.records import StageName
from schemas.settings import load_settings
from infra.audio_io import SAMPLE_RATE, decode_audio_array, load_audio
from infra.frame_reader import FrameReader
from schemas.paths import audio_path
from tasks.audio import decode_audio
from infra.errors import PermanentError
from flows.media_chain import MediaResult, process_source
from tasks.probe import probe


def make_video(path: Path, seconds: float, *, audio: str | None = "sine=frequency=440") -> Path:
    args = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"{audio}:duration={seconds}", "-c:a", "aac"]
    subprocess.run([*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest",
                    str(path)], check=True)
    return path


def test_probe_states_streams_fps_size_and_audio(shared_media):
    facts = probe(shared_media / "big_buck_bunny_0_30.webm", "x")
    assert (facts.width, facts.height, facts.fps) == (1280, 720, 24.0)
    assert facts.has_audio and facts.audio_codec == "vorbis" and facts.audio_sample_rate == 44100
    assert facts.duration_s == pytest.approx(30.0, abs=0.05) and facts.duration_from == "format"


def test_duration_from_packets_when_the_container_states_none(shared_media):
    path = shared_media / "no_duration.webm"
    facts = probe(path, "x")
    assert facts.duration_from == "packets"
    # 74 frames at 15000/1001 fps is 4.938 s; the decode must agree with the probe, frame for frame.
    assert facts.duration_s == pytest.approx(74 / facts.fps, abs=1e-3)
    reader = FrameReader(path, width=64, height=36, fps_fraction=facts.fps_fraction, source_id="x")
    assert sum(1 for _ in reader) == 74
    reader.check_complete(facts.duration_s)


def test_bbb_audio_is_30_s_at_16_khz_and_loads_back(shared_media, tmp_path):
    result = decode_audio(shared_media / "big_buck_bunny_0_30.webm", tmp_path, "test-bbb")
    assert result.sample_rate == SAMPLE_RATE == 16_000
    assert result.duration_s == pytest.approx(30.0, abs=0.1)
    assert result.path == "audio/test-bbb.npy" and audio_path(tmp_path, "test-bbb").is_file()
    wave = load_audio(tmp_path / result.path)
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.shape[0] == result.num_samples
    assert 0.02 < float(np.sqrt(np.mean(np.square(wave)))) < 0.5  # music and effects, not silence or clipping
    assert float(np.abs(wave).max()) <= 1.0
    part = load_audio(tmp_path / result.path, 10.0, 12.5)
    assert part.shape[0] == int(2.5 * SAMPLE_RATE)
    assert np.array_equal(part, wave[10 * SAMPLE_RATE: int(12.5 * SAMPLE_RATE)])


def test_decoded_tone_has_the_right_pitch(tmp_path):
    src = make_video(tmp_path / "tone.mp4", 2.0, audio="sine=frequency=1000")
    wave = decode_audio_array(src, "x")
    spectrum = np.abs(np.fft.rfft(wave[:SAMPLE_RATE]))
    peak_hz = int(np.argmax(spectrum))  # a 1 s window: bin k is k Hz
    assert abs(peak_hz - 1000) <= 2


def test_video_with_failing_audio_decodes(shared_media, tmp_path):
    path = shared_media / "video_with_failing_audio.mp4"
    facts = probe(path, "x")
    result = decode_audio(path, tmp_path, "test-fail")
    assert result.duration_s == pytest.approx(facts.duration_s, abs=0.5)
    assert np.isfinite(load_audio(tmp_path / result.path)).all()


def test_media_chain_on_real_footage_with_failing_audio(shared_media, tmp_path):
    result = process_source(str(shared_media / "video_with_failing_audio.mp4"), tmp_path, load_settings())
    assert isinstance(result, MediaResult), result
    assert result.video.extractor == "local" and (tmp_path / result.video.media_path).is_file()
    assert result.audio.duration_s == pytest.approx(result.video.duration_s, abs=0.5)
    assert result.decode_passes == {"video": 1, "audio": 1}
    assert result.clips[-1].end_s == pytest.approx(result.video.duration_s, abs=0.1)


def test_no_audio_stream_is_a_permanent_error(tmp_path):
    src = make_video(tmp_path / "silent.mp4", 1.0, audio=None)
    assert probe(src, "x").has_audio is False
    with pytest.raises(PermanentError) as err:
        decode_audio(src, tmp_path, "test-silent")
    assert err.value.stage == StageName.audio and err.value.error_class == "no_audio_stream"
    assert not audio_path(tmp_path, "test-silent").exists()


@pytest.mark.parametrize(("content", "error_class"), [
    (b"", "empty_file"),
    (b"plain text pretending to be a video\n" * 10, "not_media"),
])
def test_probe_rejects_non_media(tmp_path, content, error_class):
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with pytest.raises(PermanentError) as err:
        probe(path, "x")
    assert err.value.error_class == error_class and err.value.message


def test_probe_rejects_audio_only(shared_media):
    with pytest.raises(PermanentError) as err:
        probe(shared_media / "jfk.flac", "x")
    assert err.value.error_class == "no_video_stream"


def test_truncated_file_is_caught_by_decode_not_silently_shortened(tmp_path):
    full = tmp_path / "full.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=6",
                    "-c:v", "libx264", "-preset", "ultrafast", "-movflags", "+faststart", str(full)], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    facts = probe(cut, "x")  # the index is intact: the container still claims 6 s
    assert facts.duration_s == pytest.approx(6.0, abs=0.1)
    reader = FrameReader(cut, width=80, height=60, fps_fraction=facts.fps_fraction, source_id="x")
    frames = sum(1 for _ in reader)
    assert 0 < frames < 150
    with pytest.raises(PermanentError) as err:
        reader.check_complete(facts.duration_s)
    assert err.value.error_class == "truncated" and "6.00 s" in err.value.message


def test_stages_in_ray_hold_the_resources_their_profile_declares():
    from flows.placement import media_resources
    from infra.pipeline import Pipeline

    cfg = load_settings()
    pipeline = Pipeline.from_settings(cfg)
    media = media_resources(pipeline, cfg)  # the media chain is decode-bound: it takes the segment stage's resources
    assert (media.num_cpus, media.num_gpus) == (cfg.segment.resources.num_cpus, cfg.segment.resources.num_gpus)
    actors = pipeline.of("actor")
    assert [s.section for s in actors] == ["asr", "audio_tagger", "visual_captioner"]
    for stage in actors:
        section = getattr(cfg, stage.section)
        options = stage.in_ray(cfg)._default_options
        assert (options["num_cpus"], options["num_gpus"]) == (section.resources.num_cpus, section.resources.num_gpus)
