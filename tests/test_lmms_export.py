"""The lmms-eval export travels: real media made portable (H.264/AAC MP4 + 16 kHz WAV), every path relative to the
task folder, the chat prompt carrying the video and its sound, a copied folder still scoring. lmms-eval itself runs
over such a folder in tests/test_lmms_eval_real.py (make check-lmms)."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import ffmpeg
import pytest

from benchmark.build import BuildConfig, FilterModels
from benchmark.export_media import export_video_media, is_portable_mp4
from benchmark.run import run_avbench
from test_benchmark_support import Constant, make_dataset, video_id

CONFIG = BuildConfig(heldout_fraction=1.0, similarity="token_overlap")
LAVFI_AV = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2", "-f", "lavfi",
            "-i", "sine=frequency=440:duration=2:sample_rate=44100"]


def make_media(path: Path, *codec_args: str, audio: bool = True) -> Path:
    inputs = LAVFI_AV if audio else LAVFI_AV[:4]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, *codec_args, "-shortest", str(path)],
                   check=True)
    return path


def codecs(path: Path) -> dict[str, str]:
    return {s["codec_type"]: s["codec_name"] for s in ffmpeg.probe(str(path))["streams"]}


def load_utils(folder: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, folder / "utils.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    ds = make_dataset(tmp_path_factory.mktemp("ds"), 3)
    media = ds / "media"
    media.mkdir()
    # One already portable (copied), one MPEG-4 Part 2 with MP3 in an .mp4 (re-encoded), one missing.
    make_media(media / f"{video_id(0)}.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")
    make_media(media / f"{video_id(1)}.mp4", "-c:v", "mpeg4", "-c:a", "libmp3lame")
    out = tmp_path_factory.mktemp("out")
    filters = FilterModels(blind=Constant("A"), audio_only=Constant("B"), visual_only=Constant("C"))
    run_avbench(ds, out, ["random:seed=0,sheets=1"], config=CONFIG, filters=filters)
    return ds, out / "lmms_eval_task" / "avbench"


def test_media_made_portable_and_named_by_id(exported):
    ds, task = exported
    summary = json.loads((task / "export.json").read_text())
    assert summary["media"] == {"copied": 1, "re-encoded": 1}
    assert list(summary["videos_without_media"]) == [video_id(2)]
    assert "media file missing" in summary["videos_without_media"][video_id(2)]
    assert summary["tasks"]["avbench"] == summary["tasks"]["avbench_blind"] > 0
    assert sorted(p.name for p in (task / "media").iterdir()) == sorted(
        f"{video_id(i)}{ext}" for i in (0, 1) for ext in (".mp4", ".wav"))
    assert (task / "media" / f"{video_id(0)}.mp4").read_bytes() == (ds / "media" / f"{video_id(0)}.mp4").read_bytes()
    for i in (0, 1):
        assert codecs(task / "media" / f"{video_id(i)}.mp4") == {"video": "h264", "audio": "aac"}
        with wave.open(str(task / "media" / f"{video_id(i)}.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
            assert w.getnframes() == pytest.approx(32_000, abs=1_600)  # the 2 s track
    docs = [json.loads(line) for line in (task / "kept_docs.jsonl").read_text().splitlines()]
    by_video = {d["video_id"]: d for d in docs}
    assert by_video[video_id(0)]["video"] == f"media/{video_id(0)}.mp4"
    assert by_video[video_id(0)]["audio"] == f"media/{video_id(0)}.wav"
    assert by_video[video_id(2)]["video"] is None
    assert str(ds) not in (task / "kept_docs.jsonl").read_text()  # nothing points back into this machine's dataset


def test_copied_folder_prompts_with_its_own_media(exported, tmp_path, monkeypatch):
    _, task = exported
    copy = shutil.copytree(task, tmp_path / "elsewhere" / "avbench")
    utils = load_utils(copy, "copied_avbench_utils")
    doc = next(json.loads(line) for line in (copy / "kept_docs.jsonl").read_text().splitlines()
               if json.loads(line)["video_id"] == video_id(0))
    [turn] = utils.avbench_doc_to_messages(doc, {"audio_as": "path"})
    video, audio, text = turn["content"]
    assert video == {"type": "video", "url": str(copy / "media" / f"{video_id(0)}.mp4")}
    assert audio == {"type": "audio", "url": str(copy / "media" / f"{video_id(0)}.wav")}
    assert text["type"] == "text" and doc["question"] in text["text"] and "A." in text["text"]
    assert utils.avbench_doc_to_visual(doc) == [video["url"]]
    # The API classes get the sound inline: a WAV data URL of the very file.
    [turn] = utils.avbench_doc_to_messages(doc, {"audio_as": "data_url"})
    prefix, payload = turn["content"][1]["url"].split(",", 1)
    assert prefix == "data:audio/wav;base64"
    assert base64.b64decode(payload) == (copy / "media" / f"{video_id(0)}.wav").read_bytes()
    # Media moved elsewhere: one variable points at it, and only a doc path's file name is used there.
    moved = shutil.move(str(copy / "media"), str(tmp_path / "moved"))
    with pytest.raises(FileNotFoundError, match="AVBENCH_MEDIA_DIR"):
        utils.avbench_doc_to_messages(doc)
    monkeypatch.setenv("AVBENCH_MEDIA_DIR", moved)
    assert utils.avbench_doc_to_visual(doc) == [str(Path(moved) / f"{video_id(0)}.mp4")]
    assert utils.avbench_doc_to_visual({**doc, "video": f"../../{video_id(0)}.mp4"}) == [
        str(Path(moved) / f"{video_id(0)}.mp4")]


def test_rerun_keeps_exported_media(exported):
    ds, task = exported
    before = {p.name: p.stat().st_mtime_ns for p in (task / "media").iterdir()}
    from benchmark.build import load_avbench
    from benchmark.context import BenchContext
    from benchmark.export import export_lmms_eval_task

    bench = load_avbench(task.parent.parent / "avbench-v1")
    (task / "media" / "local-gone.mp4").write_bytes(b"a video no longer in the benchmark")
    (task / "media" / f".{video_id(0)}.wav.partial.wav").write_bytes(b"a killed export's partial file")
    export_lmms_eval_task(bench, BenchContext(ds), task.parent)
    assert {p.name: p.stat().st_mtime_ns for p in (task / "media").iterdir()} == before
    assert json.loads((task / "export.json").read_text())["media"] == {"kept": 2}


def test_webm_and_silent_sources(tmp_path):
    webm = make_media(tmp_path / "src.webm", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-c:a", "libopus")
    assert not is_portable_mp4(webm)
    got = export_video_media(webm, tmp_path / "media", "local-abc", has_audio=True)
    assert (got.video, got.audio, got.how) == ("media/local-abc.mp4", "media/local-abc.wav", "re-encoded")
    assert codecs(tmp_path / "media" / "local-abc.mp4") == {"video": "h264", "audio": "aac"}
    silent = make_media(tmp_path / "silent.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p", audio=False)
    got = export_video_media(silent, tmp_path / "media", "local-silent", has_audio=False, link=True)
    assert (got.audio, got.how) == (None, "linked")
    assert not (tmp_path / "media" / "local-silent.wav").exists()
    assert not list((tmp_path / "media").glob(".*partial*"))
