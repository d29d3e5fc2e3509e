"""Deduplication: one spelling per video before download (offline canonical ids), and after download the same bytes,
a re-encode (another bitrate and size) and a repeated shot, each decision with the kept id and the distance."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.media_chain import builtin_media_stages, media_task
from flows.sources import dedup_sources
from schemas.records import Clip, KeyframeHash, VideoRecord, video_id_of_clip
from schemas.settings import Dedup, load_settings
from tasks.acquire import canonical_video_id
from tasks.dedup import DedupIndex

SPELLINGS = ["https://www.youtube.com/watch?v=dQw4w9WgXcQ", "https://youtu.be/dQw4w9WgXcQ?t=42",
             "https://m.youtube.com/watch?v=dQw4w9WgXcQ&feature=share",
             "https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PLx&index=3"]


def test_one_video_under_four_spellings_is_kept_once():
    assert {canonical_video_id(s) for s in SPELLINGS} == {"youtube-dQw4w9WgXcQ"}
    other = "https://www.youtube.com/watch?v=aaaaaaaaaaa"
    kept, dups = dedup_sources([*SPELLINGS, other, "https://example.org/a.mp4", "https://example.org/a.mp4?x=1"],
                               canonical_video_id, {})
    assert kept == [SPELLINGS[0], other, "https://example.org/a.mp4", "https://example.org/a.mp4?x=1"]
    assert [(d.source, d.video_id, d.kept) for d in dups] == [(s, "youtube-dQw4w9WgXcQ", SPELLINGS[0])
                                                               for s in SPELLINGS[1:]]
    # a spelling of a video the dataset already holds (committed under another source)
    kept, dups = dedup_sources(SPELLINGS[1:2], canonical_video_id, {"youtube-dQw4w9WgXcQ": SPELLINGS[0]})
    assert kept == [] and dups[0].kept == SPELLINGS[0]
    # a playlist or a URL no extractor claims is kept as it is (expanded or tried later)
    assert canonical_video_id("https://www.youtube.com/playlist?list=PLx") is None


def test_local_paths_to_one_file_are_one_video(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    spellings = [str(clip), f"{tmp_path}/./a.mp4", f"{tmp_path}/sub/../a.mp4"]
    kept, dups = dedup_sources(spellings, canonical_video_id, {})
    assert kept == spellings[:1] and len(dups) == 2


def _reencode(src: Path, dst: Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-vf", "scale=240:-2", "-b:v", "150k",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "64k", str(dst)], check=True)


def _splice(a: Path, b: Path, dst: Path) -> None:
    """The first 8 s of ``a`` then 8 s of ``b``: footage of ``a`` repeated inside another video."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-t", "8", "-i", str(a), "-t", "8", "-i", str(b),
                    "-filter_complex", "[0:v]scale=320:180,setsar=1,fps=25[v0];[1:v]scale=320:180,setsar=1,fps=25[v1];"
                    "[0:a]aresample=44100[a0];[1:a]aresample=44100[a1];[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
                    "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(dst)],
                   check=True)


@pytest.fixture(scope="module")
def media(shared_media, tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    cfg = load_settings("local-cpu").model_copy(deep=True)
    cfg.paths.scratch_dir = root / "scratch"
    original = shared_media / "big_buck_bunny_0_30.webm"
    copy = root / "same-bytes.webm"
    shutil.copyfile(original, copy)
    reencoded = root / "reencoded.mp4"
    _reencode(original, reencoded)
    spliced = root / "spliced.mp4"
    _splice(original, shared_media / "chaplin.mp4", spliced)
    out = {}
    for name, path in (("original", original), ("copy", copy), ("reencoded", reencoded), ("spliced", spliced),
                       ("other", shared_media / "chaplin.mp4")):
        item, _ = media_task(str(path), str(root / "ds"), cfg, builtin_media_stages())
        assert not item.failed_stages, item.dead_letters
        out[name] = Media(item.rows("videos")[0], item.rows("fingerprints"), item.clips)
    return out


@dataclass
class Media:
    video: VideoRecord
    fingerprints: list[KeyframeHash]
    clips: list[Clip]


def test_the_same_bytes_and_a_reencode_are_caught_after_download(media):
    index = DedupIndex(Dedup())
    original = media["original"]
    assert original.fingerprints and all(len(h.dhash) == 16 for h in original.fingerprints)
    assert index.check(original.video, original.fingerprints) == (None, [])
    same, _ = index.check(media["copy"].video, media["copy"].fingerprints)
    assert same.kind == "content" and same.kept_id == original.video.video_id and same.distance == 0.0
    again, _ = index.check(media["reencoded"].video, media["reencoded"].fingerprints)
    assert again is not None and again.kind == "perceptual" and again.kept_id == original.video.video_id
    assert 0.0 <= again.distance <= Dedup().video_max_distance and again.method == "dhash64"
    other, flags = index.check(media["other"].video, media["other"].fingerprints)
    assert other is None and flags == []  # different footage: kept, nothing flagged


def test_footage_repeated_inside_another_video_flags_its_clips(media):
    index = DedupIndex(Dedup())
    index.check(media["original"].video, media["original"].fingerprints)
    index.check(media["other"].video, media["other"].fingerprints)
    spliced = media["spliced"]
    decision, flags = index.check(spliced.video, spliced.fingerprints)
    assert decision is None  # a new video (another duration, other footage after 8 s) ...
    # ... whose clips repeat footage kept before: the first 8 s the original's, the next 8 s the other film's
    starts = {c.clip_id: c.start_s for c in spliced.clips}
    kept_video = {f.clip_id: video_id_of_clip(f.kept_id) for f in flags}
    assert kept_video and all(f.kind == "clip" and f.distance <= Dedup().clip_max_distance for f in flags)
    assert {kept_video[c] for c in kept_video if starts[c] < 8.0} == {media["original"].video.video_id}
    assert {kept_video[c] for c in kept_video if starts[c] >= 8.0} <= {media["other"].video.video_id}


@pytest.mark.flow
@pytest.mark.llm
@pytest.mark.prefect
@pytest.mark.slow
def test_a_run_processes_one_video_once_however_it_is_listed(prefect_server, llm_server, tmp_path):
    """Four spellings of one file and a re-encoded copy of it: one video is processed and committed; the other
    spellings are dead letters before any download, the copy after its download; none counts as a failure."""
    import pyarrow.parquet as pq
    import yaml

    from flows.build_dataset import build_dataset
    from schemas.commit import committed
    from flow_runs import scene_video

    folder = tmp_path / "media"
    (folder / "sub").mkdir(parents=True)
    video = folder / "scenes.mp4"
    scene_video(video)
    copy = folder / "scenes-small.mp4"
    _reencode(video, copy)
    spellings = [str(video), f"{folder}/./scenes.mp4", f"{folder}/sub/../scenes.mp4", f"{folder}//scenes.mp4"]
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump([*spellings, str(copy)]))
    summary = build_dataset(sources=str(sources), output=str(tmp_path / "ds"))
    assert summary["videos_ok"] == 1 and summary["videos_failed"] == 0 and summary["duplicates"] == 4
    (marker,) = committed(tmp_path / "ds").values()
    # The file and its copy race through download and decoding: the one whose media is ready first is kept (a
    # busy machine decoded the smaller copy first once), the other is the duplicate found after download.
    assert marker.source in (spellings[0], str(copy))
    other = str(copy) if marker.source == spellings[0] else spellings[0]
    dead = pq.read_table(tmp_path / "ds" / "dead_letter.parquet").to_pylist()
    dups = {d["source_id"]: d for d in dead if d["error_class"] == "duplicate"}
    assert set(dups) == set(spellings[1:]) | {other}
    original = marker.video_id if marker.source == spellings[0] else dups[spellings[0]]["video_id"]
    assert all(dups[s]["message"].startswith(f"duplicate_of={original}") for s in spellings[1:])  # before download
    assert dups[other]["message"].startswith(f"duplicate_of={marker.video_id}")
    after = json.loads(dups[other]["detail"])  # the decision after download: method and distance kept
    assert after["kind"] == "perceptual" and after["kept_id"] == marker.video_id and after["distance"] <= 6
