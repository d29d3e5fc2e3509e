"""Acquisition against a real loopback HTTP server and real yt-dlp, and the media chain's dead letters.

Every bad input must end in a DeadLetter with a clear reason, and nothing may be written outside the output folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from yt_dlp.networking import Response
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, UnsupportedError

from schemas.records import VIDEO_ID_PATTERN, DeadLetter, StageName, VideoRecord
from schemas.settings import Settings, load_settings
from tasks.acquire import (SourceExpander, acquire, classify_error, expand_source, local_video_id,
                           make_video_id)
from infra.errors import PermanentError
from flows.media_chain import MediaResult, process_source

FAST = 0.05  # backoff base in seconds: retries stay real but quick


def make_video(path: Path, seconds: float = 3.0, *, audio: bool = True, faststart: bool = False) -> Path:
    args = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest"]
    if faststart:
        args += ["-movflags", "+faststart"]
    subprocess.run([*args, str(path)], check=True)
    return path


@pytest.fixture()
def out(tmp_path) -> Path:
    return tmp_path / "out"


def settings_with(**acquire) -> Settings:
    cfg = load_settings()
    return cfg.model_copy(update={"acquire": cfg.acquire.model_copy(update=acquire)})


def tree(root: Path, skip: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_relative_to(skip)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- good sources


def test_http_file_downloads_byte_identical_and_gets_a_record(server, out):
    src = make_video(server.www / "a.mp4")
    result = process_source(f"{server.base}/a.mp4", out, settings_with(rate_limit="50M"), backoff_s=FAST)
    assert isinstance(result, MediaResult), result
    video = result.video
    assert isinstance(video, VideoRecord)
    assert video.video_id.startswith("generic-")
    assert video.media_path == f"media/{video.video_id}.mp4"
    stored = out / video.media_path
    assert stored.read_bytes() == src.read_bytes()
    assert video.sha256 == sha256(src) and video.size_bytes == src.stat().st_size
    assert video.source == f"{server.base}/a.mp4" and video.webpage_url == f"{server.base}/a.mp4"
    assert video.has_audio and video.width == 320 and video.height == 240 and video.fps == 25.0
    assert abs(video.duration_s - 3.0) < 0.1
    assert result.decode_passes == {"video": 1, "audio": 1}
    assert result.clips and result.clips[-1].end_s == pytest.approx(3.0, abs=0.05)
    # Nothing but the dataset layout: no temp folders or part files left behind.
    assert {p.name for p in out.iterdir()} == {"media", "audio", "keyframes"}
    assert [p.name for p in (out / "media").iterdir()] == [stored.name]


def test_same_url_same_id_and_ids_never_come_from_titles(server, out):
    make_video(server.www / "a.mp4")
    cfg = load_settings().acquire
    first = acquire(f"{server.base}/a.mp4", out, cfg, backoff_s=FAST)
    second = acquire(f"{server.base}/a.mp4", out, cfg, backoff_s=FAST)
    assert first.video_id == second.video_id
    assert len(list((out / "media").iterdir())) == 1


def test_video_id_rules():
    assert make_video_id("Youtube", "dQw4w9WgXcQ", "https://youtu.be/dQw4w9WgXcQ") == "youtube-dQw4w9WgXcQ"
    # The generic extractor names videos by URL basename: two sites' "video.mp4" must not collide.
    a = make_video_id("Generic", "video", "https://a.example/video.mp4")
    b = make_video_id("Generic", "video", "https://b.example/video.mp4")
    assert a != b and a.startswith("generic-")
    unsafe = make_video_id("Vimeo", "../../etc/passwd", "https://vimeo.com/x")
    assert "/" not in unsafe and ".." not in unsafe
    for vid in (a, b, unsafe, local_video_id(Path("some/file name (1).mp4"))):
        assert re.fullmatch(VIDEO_ID_PATTERN, vid), vid


def test_title_with_dot_dot_lands_under_the_id(server, out, tmp_path):
    make_video(server.www / "clip.mp4")
    evil = "../../escaped/../../x"
    (server.www / "page.html").write_text(
        f'<html><head><title>{evil}</title><meta property="og:title" content="{evil}"></head>'
        '<body><video src="clip.mp4"></video></body></html>')
    before = tree(tmp_path, out)
    result = process_source(f"{server.base}/page.html", out, settings_with(), backoff_s=FAST)
    assert isinstance(result, MediaResult), result
    assert "../" in result.video.title  # the title is kept as data ...
    assert result.video.media_path == f"media/{result.video.video_id}.mp4"  # ... and never names a file
    assert (out / result.video.media_path).read_bytes() == (server.www / "clip.mp4").read_bytes()
    assert tree(tmp_path, out) == before
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "x").exists()


def test_local_path_and_file_url(tmp_path, out):
    src = make_video(tmp_path / "my video (final).mp4")
    local = process_source(str(src), out, settings_with(), backoff_s=FAST)
    assert isinstance(local, MediaResult), local
    assert local.video.extractor == "local" and local.video.video_id == local_video_id(src)
    assert local.video.media_path == f"media/{local.video.video_id}.mp4"
    assert (out / local.video.media_path).read_bytes() == src.read_bytes()
    assert src.exists()  # copied or hard-linked, never moved

    as_url = process_source(src.as_uri(), out, settings_with(), backoff_s=FAST)
    assert isinstance(as_url, MediaResult), as_url
    assert (out / as_url.video.media_path).read_bytes() == src.read_bytes()


def test_cookies_file_is_used_but_left_unchanged(server, out, tmp_path):
    make_video(server.www / "a.mp4")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc\n")
    before = cookies.read_bytes()
    acquired = acquire(f"{server.base}/a.mp4", out, settings_with(cookies_file=cookies).acquire, backoff_s=FAST)
    assert (out / acquired.media_path).is_file()
    assert cookies.read_bytes() == before


def make_feed(server, episodes: int) -> str:
    """An RSS feed of ``episodes`` one-second videos on the server; returns its URL."""
    for i in range(episodes):
        make_video(server.www / f"ep{i}.mp4", 1.0)
    items = "".join(f'<item><title>Episode {i}</title><enclosure url="{server.base}/ep{i}.mp4" '
                    f'type="video/mp4" length="1"/></item>' for i in range(episodes))
    (server.www / "feed.xml").write_text(f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed</title>'
                                         f"{items}</channel></rss>")
    return f"{server.base}/feed.xml"


def test_playlist_is_expanded_with_a_cap(server):
    urls = expand_source(make_feed(server, 5), settings_with(playlist_cap=3).acquire, backoff_s=FAST)
    assert len(urls) == 3
    assert all(f"/ep{i}.mp4" in url for i, url in enumerate(urls))
    # A single video expands to itself.
    assert expand_source(f"{server.base}/ep0.mp4", settings_with().acquire) == [f"{server.base}/ep0.mp4"]


def test_one_expander_serves_a_whole_sources_list_and_survives_a_bad_source(server, monkeypatch):
    feed = make_feed(server, 4)
    cfg = settings_with(playlist_cap=3).acquire
    alone = expand_source(feed, cfg, backoff_s=FAST)
    built = []
    real_instance = SourceExpander._instance

    def counting(self, file_urls):
        if file_urls not in self._ydl:
            built.append(file_urls)
        return real_instance(self, file_urls)

    monkeypatch.setattr(SourceExpander, "_instance", counting)
    local = str(server.www / "ep3.mp4")
    with SourceExpander(cfg, backoff_s=FAST) as expander:
        first = expander.expand(f"{server.base}/ep0.mp4").urls
        with pytest.raises(PermanentError):
            expander.expand(f"{server.base}/missing.mp4")
        playlist = expander.expand(feed).urls
        after = expander.expand(f"  {server.base}/ep1.mp4 ").urls
        file_url = expander.expand((server.www / "ep2.mp4").as_uri()).urls
        assert expander.expand(local).urls == [local]
    # What per-source expansion gives, from one yt-dlp instance per kind of URL (web, file) for the whole list.
    assert first == [f"{server.base}/ep0.mp4"] and after == [f"{server.base}/ep1.mp4"]
    assert playlist == alone and len(playlist) == 3
    assert file_url == [(server.www / "ep2.mp4").as_uri()]
    assert built == [False, True]


# ---------------------------------------------------------------- retries


def _http_failure(status: int) -> DownloadError:
    """The exception chain yt-dlp raises when a page answers ``status`` (built from its own classes)."""
    err = HTTPError(Response(io.BytesIO(b""), "http://127.0.0.1/x", {}, status=status))
    extractor = ExtractorError(f"Unable to download webpage: {err}", cause=err)
    return DownloadError(f"ERROR: {extractor}", exc_info=(type(extractor), extractor, None))


@pytest.mark.parametrize(("exc", "transient", "error_class"), [
    (_http_failure(429), True, "http_429"),
    (_http_failure(503), True, "http_503"),
    (_http_failure(404), False, "http_404"),
    (_http_failure(403), False, "http_403"),
    (ExtractorError("Private video. Sign in if you've been granted access", expected=True), False, "unavailable"),
    (ExtractorError("Video unavailable. This video has been removed by the uploader", expected=True), False,
     "unavailable"),
    (ExtractorError("This video is temporarily unavailable"), True, "network"),
    (DownloadError("ERROR: timed out", exc_info=(TransportError, TransportError("timed out"), None)), True,
     "network"),
    (DownloadError("ERROR: Unsupported URL: https://example.com/", exc_info=(
        UnsupportedError, UnsupportedError("https://example.com/"), None)), False, "unsupported_url"),
])
def test_failures_are_classified(exc, transient, error_class):
    err = classify_error(exc, "src")
    assert err.transient is transient and err.error_class == error_class and err.stage == StageName.acquire
    assert not err.message.startswith("ERROR:")



def test_transient_429_is_retried_then_succeeds(server, out):
    make_video(server.www / "a.mp4")
    server.fail_count, server.fail_status = 2, 429
    result = process_source(f"{server.base}/flaky/a.mp4", out, settings_with(retries=3), backoff_s=FAST)
    assert isinstance(result, MediaResult), result
    assert server.requests["/flaky/a.mp4"] >= 3
    assert (out / result.video.media_path).read_bytes() == (server.www / "a.mp4").read_bytes()


def test_transient_errors_give_up_after_the_retry_budget(server, out):
    make_video(server.www / "a.mp4")
    server.fail_count, server.fail_status = 100, 503
    result = process_source(f"{server.base}/flaky/a.mp4", out, settings_with(retries=2), backoff_s=FAST)
    assert isinstance(result, DeadLetter)
    assert result.stage == StageName.acquire and result.error_class == "http_503"
    assert result.attempts == 3 and server.requests["/flaky/a.mp4"] == 3
    assert "503" in result.message


# ---------------------------------------------------------------- bad inputs


def _serve_bad(server, name: str) -> str:
    www = server.www
    if name == "truncated.mp4":  # index at the end: the cut removes it
        data = make_video(www / "full.mp4").read_bytes()
        (www / name).write_bytes(data[: len(data) // 2])
    elif name == "truncated-faststart.mp4":  # index first: probes fine, but half the frames are missing
        data = make_video(www / "full-fs.mp4", 3.0, faststart=True).read_bytes()
        (www / name).write_bytes(data[: len(data) // 2])
    elif name == "text.mp4":
        (www / name).write_text("this is a text file, not a video\n" * 20)
    elif name == "silent.mp4":
        make_video(www / name, audio=False)
    elif name == "empty.mp4":
        (www / name).write_bytes(b"")
    elif name == "long.mp4":
        make_video(www / name, 4.0)
    elif name == "large.mp4":
        (www / name).write_bytes(make_video(www / "src.mp4").read_bytes() + bytes(2_000_000))
    return f"{server.base}/{name}"


@pytest.mark.parametrize(("name", "stage", "error_class", "reason"), [
    ("missing.mp4", StageName.acquire, "http_404", "404"),
    ("truncated.mp4", StageName.probe, "not_media", "moov atom not found"),
    ("truncated-faststart.mp4", StageName.segment, "truncated", "truncated"),
    ("text.mp4", StageName.probe, "not_media", "Invalid data"),
    ("silent.mp4", StageName.audio, "no_audio_stream", "no audio stream"),
    ("empty.mp4", StageName.acquire, "empty_file", "empty"),
    ("long.mp4", StageName.acquire, "too_long", "max_duration_s"),
    ("large.mp4", StageName.acquire, "too_large", "max-filesize"),
])
def test_bad_input_ends_in_a_dead_letter(server, out, tmp_path, name, stage, error_class, reason):
    url = _serve_bad(server, name)
    before = tree(tmp_path, out)
    cfg = settings_with(max_duration_s=3.5, max_filesize_mb=1.5, retries=2)
    result = process_source(url, out, cfg, backoff_s=FAST)
    assert isinstance(result, DeadLetter), result
    assert (result.stage, result.error_class) == (stage, error_class), result
    assert reason in result.message
    assert result.attempts == 1  # permanent: never retried
    assert server.requests[f"/{name}"] <= 3  # extraction, header probe (tasks.acquire), download; no retries
    assert url in (result.source_id, result.detail.removeprefix("source: "))  # the source can be fetched again
    assert tree(tmp_path, out) == before
    # The failed video leaves no media, audio or keyframes behind.
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == []


def test_url_with_shell_metacharacters_is_only_a_url(server, out, tmp_path):
    marker = tmp_path / "pwned"
    url = f"{server.base}/a.mp4;touch${{IFS}}{marker};$(touch {marker})`touch {marker}`"
    before = tree(tmp_path, out)
    result = process_source(url, out, settings_with(), backoff_s=FAST)
    assert isinstance(result, DeadLetter) and result.error_class == "http_404", result
    assert not marker.exists()
    assert tree(tmp_path, out) == before


def test_stated_duration_refuses_before_downloading(server, out):
    make_video(server.www / "stream.mp4", 2.0)
    ld = {"@context": "https://schema.org", "@type": "VideoObject", "name": "A three-hour stream",
          "duration": "PT3H", "contentUrl": f"{server.base}/stream.mp4", "uploadDate": "2024-05-01"}
    (server.www / "watch.html").write_text(f'<html><head><title>stream</title><script type="application/ld+json">'
                                           f"{json.dumps(ld)}</script></head><body></body></html>")
    result = process_source(f"{server.base}/watch.html", out, settings_with(max_duration_s=3600), backoff_s=FAST)
    assert isinstance(result, DeadLetter), result
    assert result.error_class == "too_long" and "before download" in result.message
    assert not any("stream.mp4" in path for path in server.requests)  # not one byte of the video was fetched


def test_empty_source_and_missing_local_file(out, tmp_path):
    for source in ("", str(tmp_path / "nope.mp4"), str(tmp_path)):
        result = process_source(source, out, settings_with(), backoff_s=FAST)
        assert isinstance(result, DeadLetter) and result.stage == StageName.acquire, result



def test_downloads_at_once_each_have_a_private_folder_outside_the_dataset(server, out, monkeypatch, tmp_path):
    """Batches in flight download into one dataset at once. Each download's private folder (the cookie jar's copy)
    is its own, made by the system in the temp folder, never inside the dataset, and gone when it ends (a shared
    work folder in the dataset once came back as FileNotFoundError in the fault run)."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    make_video(server.www / "other.mp4")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc\n")
    cfg = settings_with(cookies_file=cookies)
    with ThreadPoolExecutor(2) as pool:
        missing, other = pool.map(lambda src: process_source(src, out, cfg, backoff_s=FAST),
                                  [f"{server.base}/missing.mp4", f"{server.base}/other.mp4"])
    assert isinstance(missing, DeadLetter) and missing.error_class == "http_404", missing
    assert isinstance(other, MediaResult) and (out / other.video.media_path).is_file()
    assert not [p for p in out.rglob("*") if "acquire" in p.name or p.name == "cookies.txt"]
    assert list((tmp_path / "tmp").iterdir()) == []
